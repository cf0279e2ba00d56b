-- One row per queue join: a keyed join that made a ticket keeps its idempotency key, its
-- decision (for replays of the key, serialized like idempotency_entries.decision_json) and its
-- audit in the ticket's row, instead of an idempotency_entries row and two audit_log rows
-- (`queue_joined` and `decision_recorded`). See persist/src/store/queue.rs, `JoinDecision`.
--
-- `created_seq` is the seq of the ticket's `queue_joined` entry, whose detail is the ticket's
-- number; `decision_seq` that of its `decision_recorded` entry, whose detail is the key and
-- the decision; both are at `created_at`. The audit read merges them with audit_log by seq
-- (persist/src/store/mod.rs, `audit_page`). Recovery loads the key while it is within the
-- event's retention, as it loads idempotency entries. NULL in tickets stored before this
-- migration (their keys and audit stay in those tables), and `decision_seq` and the key NULL
-- for a join without a key.
ALTER TABLE queue_tickets
    ADD COLUMN idempotency_key VARBINARY(255) NULL,
    ADD COLUMN body_fingerprint BIGINT NULL,
    ADD COLUMN decision_json VARCHAR(1024) NULL,
    ADD COLUMN decision_seq BIGINT NULL,
    ADD COLUMN created_seq BIGINT NULL,
    ADD KEY queue_tickets_by_created_seq (event_id, created_seq);
