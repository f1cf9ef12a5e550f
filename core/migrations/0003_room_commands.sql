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
