-- How far each user has read each room (the last seq read), from the read
-- markers on sb.inbound: so a database rebuilt from the topic has them too.
-- A position only moves forward; a history reset clears the room's.
CREATE TABLE read_positions (
    room TEXT NOT NULL,
    user_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (room, user_id)
);
