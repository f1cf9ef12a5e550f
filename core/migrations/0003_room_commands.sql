-- Room commands the persister has applied (from the admin API and
-- `sbctl rooms`), by id. Applying one again (a batch replayed after a crash
-- or a failed publish) finds it here and changes nothing: a history reset
-- applied twice would otherwise start two epochs. Operators also read here
-- who changed a room, how and when.
CREATE TABLE room_commands (
    id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    action TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    -- The room's epoch once the command was applied (0: no such room).
    epoch BIGINT NOT NULL
);

-- Ids of messages a history reset deleted. A send found here was stored
-- before the reset: applied again (a retried batch, a replay over a
-- database that has the reset) it must stay deleted, not come back as a
-- message of the new epoch.
CREATE TABLE reset_messages (
    id TEXT PRIMARY KEY,
    room TEXT NOT NULL
);

-- When a user's display name last changed depended on how the persister
-- happened to batch the sends (and on the order it handled partitions), so
-- a replay of the topic could not write it again; nothing read it.
ALTER TABLE users DROP COLUMN updated_at;
