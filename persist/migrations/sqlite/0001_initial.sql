-- Kuota's schema for SQLite (the embedded default). The same tables and rules as the MySQL
-- schema; SQLite compares TEXT byte for byte (BINARY collation) and never pads, so plain TEXT
-- columns tell apart every value the engine tells apart.
--
-- Times are INTEGER milliseconds since the Unix epoch (UTC).

CREATE TABLE events (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    opens_at INTEGER NULL,
    closes_at INTEGER NULL,
    hold_ttl_seconds INTEGER NOT NULL,
    waitlist_length_max INTEGER NOT NULL,
    idempotency_entries_max INTEGER NOT NULL,
    idempotency_retention_seconds INTEGER NOT NULL,
    -- Taking ownership of the event (loading it) increments the epoch; every write-behind
    -- transaction checks it, so that a former owner's writes are fenced.
    epoch INTEGER NOT NULL DEFAULT 0,
    -- The seq of the latest effect committed; effects at or below it are skipped.
    last_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE categories (
    event_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    code TEXT NOT NULL,
    name TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    PRIMARY KEY (event_id, position),
    UNIQUE (event_id, code)
) WITHOUT ROWID;

CREATE TABLE registrations (
    event_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    category_code TEXT NOT NULL,
    -- The normalized (trimmed, lower-cased) e-mail address.
    email TEXT NOT NULL,
    -- The e-mail address while the registration is active and NULL once it ended: unique with
    -- the event, it enforces one active registration per registrant in the database too.
    active_email TEXT NULL,
    full_name TEXT NOT NULL,
    phone TEXT NULL,
    attributes_json TEXT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('held', 'confirmed', 'waitlisted', 'cancelled', 'expired')),
    hold_expires_at INTEGER NULL,
    -- The position on the waitlist when the registration joined it; NULL once it left it.
    waitlist_position INTEGER NULL,
    -- Not unique: a key may be decided afresh once its retention has passed.
    idempotency_key TEXT NULL,
    body_fingerprint INTEGER NULL,
    access_token_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, number),
    CHECK ((status IN ('held', 'confirmed', 'waitlisted')) = (active_email IS NOT NULL)),
    CHECK ((status = 'held') = (hold_expires_at IS NOT NULL))
) WITHOUT ROWID;

CREATE UNIQUE INDEX registrations_active_registrant ON registrations (event_id, active_email);
CREATE INDEX registrations_by_status ON registrations (event_id, status, number);

CREATE TABLE idempotency_entries (
    event_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint INTEGER NOT NULL,
    -- The engine's `Decision`, serialized with serde_json.
    decision_json TEXT NOT NULL,
    decided_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, idempotency_key)
) WITHOUT ROWID;

CREATE INDEX idempotency_entries_by_age ON idempotency_entries (event_id, decided_at);

CREATE TABLE settings (
    name TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

-- Append-only: one row per effect, written in the transaction that commits the effect.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    registration_number INTEGER NULL,
    kind TEXT NOT NULL,
    detail_json TEXT NOT NULL,
    at INTEGER NOT NULL
);

-- An effect is recorded at most once; the writer skips seqs already committed, and this
-- index refuses the transaction should it ever try.
CREATE UNIQUE INDEX audit_log_effect ON audit_log (event_id, seq);
CREATE INDEX audit_log_by_event ON audit_log (event_id, id);

-- Post-registration work (e-mail, payment, webhooks) for a delivery worker, written in the
-- same transaction as the registration change it announces.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    registration_number INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    -- pending → delivered, or dead after too many attempts.
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    last_error TEXT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX outbox_due ON outbox (status, available_at, id);
