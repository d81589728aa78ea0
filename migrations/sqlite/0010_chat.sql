-- Chat (channels, direct messages, messages, reactions, mentions, read markers) and
-- notifications. Ids are UUIDv7 text; times are unix milliseconds. Keep in step with ../postgres.

-- kind: 'public' and 'private' channels belong to a team; 'dm' channels (1:1 and small groups)
-- belong to no team and are found again by `dm_key`, the sorted member ids.
CREATE TABLE chat_channels (
    id         TEXT PRIMARY KEY,
    team_id    TEXT REFERENCES teams(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('public', 'private', 'dm')),
    name       TEXT,
    topic      TEXT,
    dm_key     TEXT UNIQUE,
    created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CHECK ((kind = 'dm') = (team_id IS NULL))
);
CREATE UNIQUE INDEX chat_channels_team_name ON chat_channels(team_id, name);

-- last_read_id: the newest message the member has read ('' sorts before every id).
-- notify: which messages notify the member; muted: no notifications at all.
CREATE TABLE chat_members (
    channel_id   TEXT NOT NULL REFERENCES chat_channels(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at    INTEGER NOT NULL,
    last_read_id TEXT NOT NULL DEFAULT '',
    notify       TEXT NOT NULL CHECK (notify IN ('all', 'mentions', 'none')),
    muted        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members(user_id);

-- Deleted messages keep their row (threads and read markers point at ids) with an empty body.
CREATE TABLE chat_messages (
    id            TEXT PRIMARY KEY,
    channel_id    TEXT NOT NULL REFERENCES chat_channels(id) ON DELETE CASCADE,
    author_id     TEXT REFERENCES users(id) ON DELETE SET NULL,
    body          TEXT NOT NULL,
    reply_to      TEXT REFERENCES chat_messages(id) ON DELETE CASCADE,
    client_msg_id TEXT,
    pinned_by     TEXT REFERENCES users(id) ON DELETE SET NULL,
    pinned_at     INTEGER,
    created_at    INTEGER NOT NULL,
    edited_at     INTEGER,
    deleted_at    INTEGER
);
CREATE INDEX chat_messages_channel ON chat_messages(channel_id, id);
CREATE INDEX chat_messages_reply ON chat_messages(reply_to);
CREATE UNIQUE INDEX chat_messages_client ON chat_messages(channel_id, author_id, client_msg_id);

CREATE TABLE chat_reactions (
    message_id TEXT NOT NULL REFERENCES chat_messages(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);

CREATE TABLE chat_mentions (
    message_id TEXT NOT NULL REFERENCES chat_messages(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX chat_mentions_user ON chat_mentions(user_id);

-- kind: info/warning/error/success (how to show it); reason: why it exists (mention, dm, message).
CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    team_id    TEXT REFERENCES teams(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('info', 'warning', 'error', 'success')),
    reason     TEXT NOT NULL,
    title      TEXT NOT NULL,
    message    TEXT NOT NULL,
    channel_id TEXT REFERENCES chat_channels(id) ON DELETE CASCADE,
    message_id TEXT REFERENCES chat_messages(id) ON DELETE CASCADE,
    read_at    INTEGER,
    emailed_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX notifications_user ON notifications(user_id, id);
CREATE INDEX notifications_unsent ON notifications(emailed_at, read_at);
