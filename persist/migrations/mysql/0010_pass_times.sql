-- When a ticket's pass was granted, kept after the pass is used or lapses (its end is the row's
-- `updated_at` then): recovery rebuilds the queue's measured admission rate from these, so that
-- a restarted owner answers the same ETA at once instead of none until the next pass ends
-- (engine `Queue::restore_admission_rate`). NULL for a ticket never admitted, and for tickets
-- admitted before this migration (they are left out of the rebuilt count).
ALTER TABLE queue_tickets ADD COLUMN pass_granted_at BIGINT NULL;
