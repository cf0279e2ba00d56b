-- When a ticket's pass was granted, kept after the pass ends; see the MySQL migration of the
-- same number.
ALTER TABLE queue_tickets ADD COLUMN pass_granted_at INTEGER NULL;
