-- Each room has one chat channel (a private channel of its team) for the meeting's participants.
ALTER TABLE chat_channels ADD COLUMN room_id TEXT REFERENCES rooms(id) ON DELETE CASCADE;
CREATE UNIQUE INDEX chat_channels_room ON chat_channels(room_id);
