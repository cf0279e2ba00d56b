-- Fewer index entries per registration, measured on the write-behind's hot path (a flash
-- crowd writes an audit entry and an idempotency entry for every registration).
--
-- The audit log is keyed by (event, seq): the seq of the effect is the entry's id within its
-- event (the keyset cursor of the audit pages), so the separate AUTO_INCREMENT id and its two
-- extra indexes go. The primary key still refuses an effect recorded twice.
ALTER TABLE audit_log
    DROP COLUMN id,
    DROP INDEX audit_log_effect,
    DROP INDEX audit_log_by_event,
    ADD PRIMARY KEY (event_id, seq);

-- Recovery reads all of an event's idempotency entries anyway (filtering by age as it goes);
-- an index on their age cost every keyed registration one more insert.
ALTER TABLE idempotency_entries DROP INDEX idempotency_entries_by_age;
