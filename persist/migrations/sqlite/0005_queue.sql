-- The queue in front of a queued event's opening (docs/api.md, "Queue"); see the MySQL
-- migration of the same number for what each column means.
ALTER TABLE events ADD COLUMN queue_lobby_opens_at INTEGER NULL;
ALTER TABLE events ADD COLUMN queue_pass_ttl_seconds INTEGER NULL;
ALTER TABLE events ADD COLUMN queue_overbook_permille INTEGER NULL;
ALTER TABLE events ADD COLUMN queue_admit_per_kilosecond INTEGER NULL;
ALTER TABLE events ADD COLUMN queue_max INTEGER NULL;
ALTER TABLE events ADD COLUMN queue_draw_seed TEXT NULL;

CREATE TABLE queue_tickets (
    event_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    email TEXT NOT NULL,
    lobby INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('waiting', 'admitted', 'used', 'expired')),
    pass_expires_at INTEGER NULL,
    registration_number INTEGER NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, number),
    UNIQUE (event_id, email),
    CHECK ((status = 'admitted') = (pass_expires_at IS NOT NULL))
);
