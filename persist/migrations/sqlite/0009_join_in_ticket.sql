-- One row per queue join: a keyed join that made a ticket keeps its idempotency key, its
-- decision and its audit in the ticket's row; see the MySQL migration of the same number for
-- what each column means.
ALTER TABLE queue_tickets ADD COLUMN idempotency_key TEXT NULL;
ALTER TABLE queue_tickets ADD COLUMN body_fingerprint INTEGER NULL;
ALTER TABLE queue_tickets ADD COLUMN decision_json TEXT NULL;
ALTER TABLE queue_tickets ADD COLUMN decision_seq INTEGER NULL;
ALTER TABLE queue_tickets ADD COLUMN created_seq INTEGER NULL;
CREATE INDEX queue_tickets_by_created_seq ON queue_tickets (event_id, created_seq);
