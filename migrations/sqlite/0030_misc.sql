-- Focus timer, files, notes, the search index and GDPR exports.
-- Ids are UUIDv7 text; times are unix milliseconds. Keep in step with ../postgres.

-- One session per focus block. While running, focus time is
-- (ended_at or paused_at or now) - started_at - paused_ms; focus_ms is fixed when it ends.
-- task_id refers to the tasks feature (no foreign key: it may live elsewhere).
CREATE TABLE focus_sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    team_id         TEXT REFERENCES teams(id) ON DELETE SET NULL,
    task_id         TEXT,
    focus_type      TEXT NOT NULL CHECK (focus_type IN ('pomodoro', 'custom', 'deep_work')),
    phase           TEXT NOT NULL CHECK (phase IN ('work', 'short_break', 'long_break')),
    planned_minutes INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'paused', 'completed', 'cancelled')),
    started_at      INTEGER NOT NULL,
    paused_at       INTEGER,
    paused_ms       INTEGER NOT NULL DEFAULT 0,
    ended_at        INTEGER,
    focus_ms        INTEGER,
    notes           TEXT,
    updated_at      INTEGER NOT NULL
);
-- At most one session per user is open (running or paused).
CREATE UNIQUE INDEX focus_sessions_open ON focus_sessions(user_id) WHERE ended_at IS NULL;
CREATE INDEX focus_sessions_user ON focus_sessions(user_id, started_at);
CREATE INDEX focus_sessions_team ON focus_sessions(team_id, started_at);

CREATE TABLE focus_interruptions (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES focus_sessions(id) ON DELETE CASCADE,
    reason     TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX focus_interruptions_session ON focus_interruptions(session_id);

-- day: YYYY-MM-DD in the user's calendar.
CREATE TABLE focus_goals (
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    day            TEXT NOT NULL,
    target_minutes INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (user_id, day)
);

-- Content lives on disk under <data dir>/files/<id>; name is for display and downloads only.
CREATE TABLE files (
    id           TEXT PRIMARY KEY,
    team_id      TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    project_id   TEXT,
    task_id      TEXT,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    uploaded_by  TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX files_team ON files(team_id, id);

CREATE TABLE notes (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    project_id TEXT,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    updated_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX notes_team ON notes(team_id, id);

-- Earlier versions of a note (the newest few are kept).
CREATE TABLE note_versions (
    note_id   TEXT NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
    version   INTEGER NOT NULL,
    title     TEXT NOT NULL,
    body      TEXT NOT NULL,
    edited_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    edited_at INTEGER NOT NULL,
    PRIMARY KEY (note_id, version)
);

CREATE TABLE data_exports (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    progress    INTEGER NOT NULL,
    size        INTEGER,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX data_exports_user ON data_exports(user_id);

-- Search: one row per searchable item, kept current by triggers on the source tables, so every
-- write (from any feature) updates the index in the same transaction. team_id/channel_id say
-- who may see a hit. A new kind = triggers on its table + a visibility rule in api/src/search.
CREATE TABLE search_documents (
    rowid      INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    team_id    TEXT,
    channel_id TEXT,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    UNIQUE (kind, item_id)
);
CREATE INDEX search_documents_team ON search_documents(team_id);

CREATE VIRTUAL TABLE search_fts USING fts5(
    title, body, content = 'search_documents', content_rowid = 'rowid', tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER search_documents_ai AFTER INSERT ON search_documents BEGIN
    INSERT INTO search_fts (rowid, title, body) VALUES (new.rowid, new.title, new.body);
END;
CREATE TRIGGER search_documents_ad AFTER DELETE ON search_documents BEGIN
    INSERT INTO search_fts (search_fts, rowid, title, body) VALUES ('delete', old.rowid, old.title, old.body);
END;
CREATE TRIGGER search_documents_au AFTER UPDATE ON search_documents BEGIN
    INSERT INTO search_fts (search_fts, rowid, title, body) VALUES ('delete', old.rowid, old.title, old.body);
    INSERT INTO search_fts (rowid, title, body) VALUES (new.rowid, new.title, new.body);
END;

-- notes
CREATE TRIGGER notes_search_ai AFTER INSERT ON notes BEGIN
    INSERT INTO search_documents (kind, item_id, team_id, title, body) VALUES ('note', new.id, new.team_id, new.title, new.body);
END;
CREATE TRIGGER notes_search_au AFTER UPDATE OF title, body ON notes BEGIN
    UPDATE search_documents SET title = new.title, body = new.body WHERE kind = 'note' AND item_id = new.id;
END;
CREATE TRIGGER notes_search_ad AFTER DELETE ON notes BEGIN
    DELETE FROM search_documents WHERE kind = 'note' AND item_id = old.id;
END;

-- files (by name)
CREATE TRIGGER files_search_ai AFTER INSERT ON files BEGIN
    INSERT INTO search_documents (kind, item_id, team_id, title, body) VALUES ('file', new.id, new.team_id, new.name, '');
END;
CREATE TRIGGER files_search_ad AFTER DELETE ON files BEGIN
    DELETE FROM search_documents WHERE kind = 'file' AND item_id = old.id;
END;

-- teams
CREATE TRIGGER teams_search_ai AFTER INSERT ON teams BEGIN
    INSERT INTO search_documents (kind, item_id, team_id, title, body)
    VALUES ('team', new.id, new.id, new.name, COALESCE(new.description, ''));
END;
CREATE TRIGGER teams_search_au AFTER UPDATE OF name, description ON teams BEGIN
    UPDATE search_documents SET title = new.name, body = COALESCE(new.description, '') WHERE kind = 'team' AND item_id = new.id;
END;
CREATE TRIGGER teams_search_ad AFTER DELETE ON teams BEGIN
    DELETE FROM search_documents WHERE team_id = old.id;
END;

-- video rooms
CREATE TRIGGER rooms_search_ai AFTER INSERT ON rooms BEGIN
    INSERT INTO search_documents (kind, item_id, team_id, title, body) VALUES ('room', new.id, new.team_id, new.name, '');
END;
CREATE TRIGGER rooms_search_au AFTER UPDATE OF name ON rooms BEGIN
    UPDATE search_documents SET title = new.name WHERE kind = 'room' AND item_id = new.id;
END;
CREATE TRIGGER rooms_search_ad AFTER DELETE ON rooms BEGIN
    DELETE FROM search_documents WHERE kind = 'room' AND item_id = old.id;
END;

-- chat channels (team channels only; DMs have no name)
CREATE TRIGGER chat_channels_search_ai AFTER INSERT ON chat_channels WHEN new.kind <> 'dm' BEGIN
    INSERT INTO search_documents (kind, item_id, team_id, channel_id, title, body)
    VALUES ('channel', new.id, new.team_id, new.id, COALESCE(new.name, ''), COALESCE(new.topic, ''));
END;
CREATE TRIGGER chat_channels_search_au AFTER UPDATE OF name, topic ON chat_channels WHEN new.kind <> 'dm' BEGIN
    UPDATE search_documents SET title = COALESCE(new.name, ''), body = COALESCE(new.topic, '')
    WHERE kind = 'channel' AND item_id = new.id;
END;
CREATE TRIGGER chat_channels_search_ad AFTER DELETE ON chat_channels BEGIN
    DELETE FROM search_documents WHERE channel_id = old.id;
END;

-- chat messages (deleted ones leave the index)
CREATE TRIGGER chat_messages_search_ai AFTER INSERT ON chat_messages WHEN new.deleted_at IS NULL BEGIN
    INSERT INTO search_documents (kind, item_id, team_id, channel_id, title, body)
    SELECT 'message', new.id, c.team_id, new.channel_id, '', new.body FROM chat_channels c WHERE c.id = new.channel_id;
END;
CREATE TRIGGER chat_messages_search_au AFTER UPDATE OF body, deleted_at ON chat_messages BEGIN
    DELETE FROM search_documents WHERE kind = 'message' AND item_id = old.id;
    INSERT INTO search_documents (kind, item_id, team_id, channel_id, title, body)
    SELECT 'message', new.id, c.team_id, new.channel_id, '', new.body FROM chat_channels c
    WHERE c.id = new.channel_id AND new.deleted_at IS NULL;
END;
CREATE TRIGGER chat_messages_search_ad AFTER DELETE ON chat_messages BEGIN
    DELETE FROM search_documents WHERE kind = 'message' AND item_id = old.id;
END;

-- projects and tasks (migration 0020)
CREATE TRIGGER projects_search_ai AFTER INSERT ON projects BEGIN
    INSERT INTO search_documents (kind, item_id, team_id, title, body)
    VALUES ('project', new.id, new.team_id, new.name, COALESCE(new.description, ''));
END;
CREATE TRIGGER projects_search_au AFTER UPDATE OF name, description ON projects BEGIN
    UPDATE search_documents SET title = new.name, body = COALESCE(new.description, '')
    WHERE kind = 'project' AND item_id = new.id;
END;
CREATE TRIGGER projects_search_ad AFTER DELETE ON projects BEGIN
    DELETE FROM search_documents WHERE kind = 'project' AND item_id = old.id;
END;
CREATE TRIGGER tasks_search_ai AFTER INSERT ON tasks BEGIN
    INSERT INTO search_documents (kind, item_id, team_id, title, body)
    SELECT 'task', new.id, p.team_id, new.title, COALESCE(new.description, '') FROM projects p WHERE p.id = new.project_id;
END;
CREATE TRIGGER tasks_search_au AFTER UPDATE OF title, description ON tasks BEGIN
    UPDATE search_documents SET title = new.title, body = COALESCE(new.description, '')
    WHERE kind = 'task' AND item_id = new.id;
END;
CREATE TRIGGER tasks_search_ad AFTER DELETE ON tasks BEGIN
    DELETE FROM search_documents WHERE kind = 'task' AND item_id = old.id;
END;

-- What existed before this migration.
INSERT INTO search_documents (kind, item_id, team_id, title, body)
    SELECT 'team', id, id, name, COALESCE(description, '') FROM teams;
INSERT INTO search_documents (kind, item_id, team_id, title, body)
    SELECT 'room', id, team_id, name, '' FROM rooms;
INSERT INTO search_documents (kind, item_id, team_id, channel_id, title, body)
    SELECT 'channel', id, team_id, id, COALESCE(name, ''), COALESCE(topic, '') FROM chat_channels WHERE kind <> 'dm';
INSERT INTO search_documents (kind, item_id, team_id, channel_id, title, body)
    SELECT 'message', m.id, c.team_id, m.channel_id, '', m.body
    FROM chat_messages m JOIN chat_channels c ON c.id = m.channel_id WHERE m.deleted_at IS NULL;
INSERT INTO search_documents (kind, item_id, team_id, title, body)
    SELECT 'project', id, team_id, name, COALESCE(description, '') FROM projects;
INSERT INTO search_documents (kind, item_id, team_id, title, body)
    SELECT 'task', t.id, p.team_id, t.title, COALESCE(t.description, '') FROM tasks t JOIN projects p ON p.id = t.project_id;
