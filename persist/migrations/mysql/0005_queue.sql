-- The queue in front of a queued event's opening (docs/api.md, "Queue").
--
-- An event's queue settings live on its row; NULL `queue_lobby_opens_at` means no queue. The
-- draw seed (64 hex characters of 32 random bytes) is chosen when the event is created and kept
-- here: the draw's order is a pure function of it and the ticket ids, so recovery recomputes
-- every ticket's place instead of storing it. Its SHA-256 is what the API publishes first.
ALTER TABLE events
    ADD COLUMN queue_lobby_opens_at BIGINT NULL,
    ADD COLUMN queue_pass_ttl_seconds BIGINT NULL,
    -- overbook in thousandths (1.0 = 1000).
    ADD COLUMN queue_overbook_permille BIGINT NULL,
    -- admit_per_second × 1000; NULL for no pacing.
    ADD COLUMN queue_admit_per_kilosecond BIGINT NULL,
    ADD COLUMN queue_max BIGINT NULL,
    ADD COLUMN queue_draw_seed CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL;

-- One row per ticket, numbered from 1 per event in decision (= commit) order. `lobby`: joined
-- before opens_at, so placed by the draw. `lobby` and `sold_out` are readings of 'waiting' and
-- never stored.
CREATE TABLE queue_tickets (
    event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    number BIGINT NOT NULL,
    -- The normalized e-mail address: one ticket per registrant per event.
    email VARCHAR(254) NOT NULL,
    lobby BOOLEAN NOT NULL,
    status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    pass_expires_at BIGINT NULL,
    -- The registration its pass made, once used.
    registration_number BIGINT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, number),
    UNIQUE KEY queue_tickets_registrant (event_id, email),
    CONSTRAINT queue_tickets_status CHECK (status IN ('waiting', 'admitted', 'used', 'expired')),
    CONSTRAINT queue_tickets_pass CHECK ((status = 'admitted') = (pass_expires_at IS NOT NULL))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
