-- One row per admission: a registration's creation is no outbox row of its own either. The
-- delivery worker derives `registration_created` from the registration rows, walking each
-- event's registrations by primary key past a durable cursor (see persist/src/store/creations.rs).
--
-- `created_through`: every registration of the event numbered up to it has been delivered.
-- A worker claims a cursor as it claims outbox entries (`claimed_by`, and `available_at` moved
-- to the claim's end), so that two nodes never deliver one creation at once; `attempts` counts
-- the failed rounds of the creation just past the cursor since its last success.
CREATE TABLE outbox_cursors (
    event_id TEXT NOT NULL,
    created_through INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    claimed_by TEXT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NULL,
    PRIMARY KEY (event_id)
);

-- Registrations stored before this migration announced their creation through the outbox:
-- each event's cursor starts past them.
INSERT INTO outbox_cursors (event_id, created_through, available_at)
SELECT e.id, COALESCE((SELECT MAX(r.number) FROM registrations r WHERE r.event_id = e.id), 0), 0
FROM events e;

-- A creation's messages have no outbox entry: they are stored with outbox id 0, and the
-- registration (their ordering key) tells them apart; a creation fanned out twice (its worker
-- died before it advanced the cursor) adds nothing, as an outbox entry fanned out twice.
DROP INDEX webhook_messages_fan_out;
CREATE UNIQUE INDEX webhook_messages_fan_out ON webhook_messages (endpoint_id, ordering_key, outbox_id);
