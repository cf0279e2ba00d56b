-- One row per admission: a registration's creation is no outbox row of its own either. The
-- delivery worker derives `registration_created` from the registration rows, walking each
-- event's registrations by primary key past a durable cursor (see persist/src/store/creations.rs).
--
-- `created_through`: every registration of the event numbered up to it has been delivered.
-- A worker claims a cursor as it claims outbox entries (`claimed_by`, and `available_at` moved
-- to the claim's end), so that two nodes never deliver one creation at once; `attempts` counts
-- the failed rounds of the creation just past the cursor since its last success.
CREATE TABLE outbox_cursors (
    event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_through BIGINT NOT NULL,
    available_at BIGINT NOT NULL,
    claimed_by VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    attempts INT NOT NULL DEFAULT 0,
    last_error TEXT NULL,
    PRIMARY KEY (event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Registrations stored before this migration announced their creation through the outbox:
-- each event's cursor starts past them. (Run with every node stopped: a node of the version
-- before would still write creation entries, and their creations would be announced twice.)
INSERT INTO outbox_cursors (event_id, created_through, available_at)
SELECT e.id, COALESCE((SELECT MAX(r.number) FROM registrations r WHERE r.event_id = e.id), 0), 0
FROM events e;

-- A creation's messages have no outbox entry: they are stored with outbox id 0, and the
-- registration (their ordering key) tells them apart; a creation fanned out twice (its worker
-- died before it advanced the cursor) adds nothing, as an outbox entry fanned out twice.
ALTER TABLE webhook_messages
    DROP INDEX webhook_messages_fan_out,
    ADD UNIQUE KEY webhook_messages_fan_out (endpoint_id, ordering_key, outbox_id);
