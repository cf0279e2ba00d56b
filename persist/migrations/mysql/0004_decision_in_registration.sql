-- The decision that created a registration, serialized like idempotency_entries.decision_json,
-- for replays of the key that created it. Such a key has no idempotency_entries row: one row
-- fewer per admitted registration (see persist/src/store/plan.rs). NULL without a key, and in
-- rows stored before this migration (their keys stay in idempotency_entries).
ALTER TABLE registrations ADD COLUMN decision_json VARCHAR(1024) NULL;
