-- Webhooks (Standard Webhooks v1): see the MySQL migration of the same number for the columns.

CREATE TABLE webhook_endpoints (
    id TEXT NOT NULL PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT NULL,
    event_types TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT NULL,
    previous_secret_expires_at INTEGER NULL,
    disabled_reason TEXT NULL,
    failing_since INTEGER NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE webhook_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id TEXT NOT NULL,
    outbox_id INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    claimed_by TEXT NULL,
    last_error TEXT NULL,
    created_at INTEGER NOT NULL,
    settled_at INTEGER NULL
);
CREATE UNIQUE INDEX webhook_messages_fan_out ON webhook_messages (endpoint_id, outbox_id);
CREATE INDEX webhook_messages_due ON webhook_messages (status, available_at, id);
CREATE INDEX webhook_messages_by_status ON webhook_messages (status, id);
CREATE INDEX webhook_messages_order ON webhook_messages (endpoint_id, ordering_key, status, id);

CREATE TABLE webhook_event_states (
    event_id TEXT NOT NULL PRIMARY KEY,
    sold_out INTEGER NOT NULL
);
