-- One schema for PostgreSQL and SQLite: only TEXT and BIGINT columns, times
-- in milliseconds since the Unix epoch.

CREATE TABLE rooms (
    id TEXT PRIMARY KEY,
    -- 'public' (anyone may join; created on first use) or 'private' (members only).
    kind TEXT NOT NULL DEFAULT 'public',
    -- Changes when the room's history is reset, so clients never splice two histories.
    epoch BIGINT NOT NULL DEFAULT 1,
    -- Highest seq assigned; the next message gets last_seq + 1 (gapless).
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE room_members (
    room TEXT NOT NULL REFERENCES rooms (id),
    user_id TEXT NOT NULL,
    PRIMARY KEY (room, user_id)
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE messages (
    room TEXT NOT NULL REFERENCES rooms (id),
    seq BIGINT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    client_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (room, seq),
    -- The idempotency key: a replayed or retried send finds its stored row.
    UNIQUE (room, sender, client_id)
);
