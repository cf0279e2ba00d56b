-- Webhooks (Standard Webhooks v1): the organizer's endpoints, and one row per message and
-- endpoint for the delivery worker (see persist/src/store/webhooks.rs). The outbox stays as it
-- is: its worker fans each entry out into these rows, outside the registration's transaction.

CREATE TABLE webhook_endpoints (
    id VARCHAR(40) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    url TEXT NOT NULL,
    description TEXT NULL,
    -- Comma-separated event types, e.g. `registration.created,event.sold_out`.
    event_types VARCHAR(512) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- `whsec_` + base64; the signing key must be at hand, so it is stored as such.
    secret VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- The secret before the latest rotation, signed with too until `previous_secret_expires_at`.
    previous_secret VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    previous_secret_expires_at BIGINT NULL,
    -- NULL while enabled; `gone` (the receiver answered 410) or `failing`.
    disabled_reason VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NULL,
    -- The first failure since the latest success; NULL while the endpoint succeeds.
    failing_since BIGINT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE webhook_messages (
    id BIGINT NOT NULL AUTO_INCREMENT,
    endpoint_id VARCHAR(40) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    outbox_id BIGINT NOT NULL,
    -- The `webhook-id` header: the same on every attempt.
    message_id VARCHAR(40) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_type VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- Messages with one key go to one endpoint in order: `<event>.<registration>`, or the
    -- event's id for event-wide types.
    ordering_key VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    body TEXT NOT NULL,
    -- pending → succeeded, or dead after the retry schedule or a 410.
    status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    -- When the next attempt is due; while claimed, when the claim ends.
    available_at BIGINT NOT NULL,
    claimed_by VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    last_error TEXT NULL,
    created_at BIGINT NOT NULL,
    settled_at BIGINT NULL,
    PRIMARY KEY (id),
    -- An outbox entry fanned out twice (its worker died before settling it) adds nothing. Outbox
    -- ids are never reused (InnoDB keeps its counter across restarts; SQLite's is AUTOINCREMENT).
    UNIQUE KEY webhook_messages_fan_out (endpoint_id, outbox_id),
    KEY webhook_messages_due (status, available_at, id),
    KEY webhook_messages_by_status (status, id),
    KEY webhook_messages_order (endpoint_id, ordering_key, status, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Whether an event's sold-out was announced: a node announces the change from open to sold
-- out once, whichever node owns the event then (see api/src/webhooks/sold_out.rs).
CREATE TABLE webhook_event_states (
    event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    sold_out INT NOT NULL,
    PRIMARY KEY (event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
