-- Fewer index entries per registration, measured on the write-behind's hot path (a flash
-- crowd writes an audit entry and an idempotency entry for every registration).
--
-- The audit log is keyed by (event, seq): the seq of the effect is the entry's id within its
-- event (the keyset cursor of the audit pages), so the separate id and its two extra indexes
-- go. SQLite cannot change a primary key in place: the table is rebuilt.
CREATE TABLE audit_log_keyed (
    event_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    registration_number INTEGER NULL,
    kind TEXT NOT NULL,
    detail_json TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (event_id, seq)
) WITHOUT ROWID;

INSERT INTO audit_log_keyed (event_id, seq, registration_number, kind, detail_json, at)
    SELECT event_id, seq, registration_number, kind, detail_json, at FROM audit_log;

DROP TABLE audit_log;

ALTER TABLE audit_log_keyed RENAME TO audit_log;

-- Recovery reads all of an event's idempotency entries anyway (filtering by age as it goes);
-- an index on their age cost every keyed registration one more insert.
DROP INDEX idempotency_entries_by_age;
