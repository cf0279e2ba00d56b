-- Kuota's schema for MySQL 8 and MariaDB 10.11 (InnoDB).
--
-- Times are BIGINT milliseconds since the Unix epoch (UTC). Identifiers the engine compares
-- byte for byte (event ids, category codes, e-mail addresses) use binary collations, so that
-- the database never calls two values equal that the engine tells apart. Idempotency keys are
-- VARBINARY because they may end in spaces, which PAD SPACE collations would ignore.

CREATE TABLE events (
    id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name TEXT NOT NULL,
    opens_at BIGINT NULL,
    closes_at BIGINT NULL,
    hold_ttl_seconds BIGINT NOT NULL,
    waitlist_length_max BIGINT NOT NULL,
    idempotency_entries_max BIGINT NOT NULL,
    idempotency_retention_seconds BIGINT NOT NULL,
    -- Taking ownership of the event (loading it) increments the epoch; every write-behind
    -- transaction checks it, so that a former owner's writes are fenced.
    epoch BIGINT NOT NULL DEFAULT 0,
    -- The seq of the latest effect committed; effects at or below it are skipped.
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE categories (
    event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    position SMALLINT NOT NULL,
    code VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name TEXT NOT NULL,
    capacity BIGINT NOT NULL,
    PRIMARY KEY (event_id, position),
    UNIQUE KEY categories_code (event_id, code)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE registrations (
    event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    number BIGINT NOT NULL,
    category_code VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- The normalized (trimmed, lower-cased) e-mail address.
    email VARCHAR(254) NOT NULL,
    -- The e-mail address while the registration is active (held, confirmed, waitlisted) and
    -- NULL once it ended: unique with the event, it enforces one active registration per
    -- registrant in the database too (NULLs never collide).
    active_email VARCHAR(254) NULL,
    full_name VARCHAR(200) NOT NULL,
    phone VARCHAR(32) NULL,
    attributes_json TEXT NULL,
    status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    hold_expires_at BIGINT NULL,
    -- The position on the waitlist when the registration joined it; NULL once it left it.
    waitlist_position BIGINT NULL,
    -- Not unique: a key may be decided afresh once its retention has passed.
    idempotency_key VARBINARY(255) NULL,
    body_fingerprint BIGINT NULL,
    access_token_hash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, number),
    UNIQUE KEY registrations_active_registrant (event_id, active_email),
    KEY registrations_by_status (event_id, status, number),
    CONSTRAINT registrations_status CHECK (status IN ('held', 'confirmed', 'waitlisted', 'cancelled', 'expired')),
    CONSTRAINT registrations_active CHECK (
        (status IN ('held', 'confirmed', 'waitlisted')) = (active_email IS NOT NULL)
    ),
    CONSTRAINT registrations_hold CHECK ((status = 'held') = (hold_expires_at IS NOT NULL))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE idempotency_entries (
    event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    idempotency_key VARBINARY(255) NOT NULL,
    fingerprint BIGINT NOT NULL,
    -- The engine's `Decision`, serialized with serde_json.
    decision_json VARCHAR(1024) NOT NULL,
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, idempotency_key),
    KEY idempotency_entries_by_age (event_id, decided_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE settings (
    name VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Append-only: one row per effect, written in the transaction that commits the effect.
CREATE TABLE audit_log (
    id BIGINT NOT NULL AUTO_INCREMENT,
    event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    seq BIGINT NOT NULL,
    registration_number BIGINT NULL,
    kind VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    detail_json TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (id),
    -- An effect is recorded at most once; the writer skips seqs already committed, and this
    -- index refuses the transaction should it ever try.
    UNIQUE KEY audit_log_effect (event_id, seq),
    KEY audit_log_by_event (event_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Post-registration work (e-mail, payment, webhooks) for a delivery worker, written in the
-- same transaction as the registration change it announces.
CREATE TABLE outbox (
    id BIGINT NOT NULL AUTO_INCREMENT,
    event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    registration_number BIGINT NOT NULL,
    kind VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    payload_json TEXT NOT NULL,
    -- pending → delivered, or dead after too many attempts.
    status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'pending',
    attempts INT NOT NULL DEFAULT 0,
    available_at BIGINT NOT NULL,
    last_error TEXT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    KEY outbox_due (status, available_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
