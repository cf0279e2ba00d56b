-- The delivery worker claims a round of outbox entries with one statement and finds them again
-- by its claim token (see persist/src/store/maintenance.rs); NULL when no worker holds the entry.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT NULL;
