-- One row fewer per admission: a registration's creation is no audit_log row of its own. The
-- registration's row keeps the seq of the effect that created it and the audit detail of that
-- effect (the status, hold and waitlist place it was created with); the audit read merges them
-- with audit_log by seq (see persist/src/store/mod.rs, `audit_page`). NULL in rows stored before
-- this migration: their creations stay in audit_log.
ALTER TABLE registrations ADD COLUMN created_seq INTEGER NULL;
ALTER TABLE registrations ADD COLUMN created_detail_json TEXT NULL;
CREATE INDEX registrations_by_created_seq ON registrations (event_id, created_seq);
