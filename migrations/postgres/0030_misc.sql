-- Focus timer, files, notes, the search index and GDPR exports.
-- Ids are UUIDv7 text; times are unix milliseconds. Keep in step with ../sqlite.

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
    planned_minutes BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'paused', 'completed', 'cancelled')),
    started_at      BIGINT NOT NULL,
    paused_at       BIGINT,
    paused_ms       BIGINT NOT NULL DEFAULT 0,
    ended_at        BIGINT,
    focus_ms        BIGINT,
    notes           TEXT,
    updated_at      BIGINT NOT NULL
);
-- At most one session per user is open (running or paused).
CREATE UNIQUE INDEX focus_sessions_open ON focus_sessions(user_id) WHERE ended_at IS NULL;
CREATE INDEX focus_sessions_user ON focus_sessions(user_id, started_at);
CREATE INDEX focus_sessions_team ON focus_sessions(team_id, started_at);

CREATE TABLE focus_interruptions (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES focus_sessions(id) ON DELETE CASCADE,
    reason     TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX focus_interruptions_session ON focus_interruptions(session_id);

-- day: YYYY-MM-DD in the user's calendar.
CREATE TABLE focus_goals (
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    day            TEXT NOT NULL,
    target_minutes BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
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
    size         BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    uploaded_by  TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX files_team ON files(team_id, id);

CREATE TABLE notes (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    project_id TEXT,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    updated_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX notes_team ON notes(team_id, id);

-- Earlier versions of a note (the newest few are kept).
CREATE TABLE note_versions (
    note_id   TEXT NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
    version   BIGINT NOT NULL,
    title     TEXT NOT NULL,
    body      TEXT NOT NULL,
    edited_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    edited_at BIGINT NOT NULL,
    PRIMARY KEY (note_id, version)
);

CREATE TABLE data_exports (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    progress    BIGINT NOT NULL,
    size        BIGINT,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX data_exports_user ON data_exports(user_id);

-- Search: one row per searchable item, kept current by triggers on the source tables, so every
-- write (from any feature) updates the index in the same transaction. team_id/channel_id say
-- who may see a hit. A new kind = triggers on its table + a visibility rule in api/src/search.
-- The 'simple' configuration (no stemming) matches SQLite's unicode61 tokenizer.
CREATE TABLE search_documents (
    kind       TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    team_id    TEXT,
    channel_id TEXT,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    tsv        tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', body), 'B')
    ) STORED,
    PRIMARY KEY (kind, item_id)
);
CREATE INDEX search_documents_tsv ON search_documents USING GIN (tsv);
CREATE INDEX search_documents_team ON search_documents(team_id);

CREATE FUNCTION search_put(k TEXT, item TEXT, team TEXT, channel TEXT, t TEXT, b TEXT) RETURNS void AS $$
    INSERT INTO search_documents (kind, item_id, team_id, channel_id, title, body)
    VALUES (k, item, team, channel, t, b)
    ON CONFLICT (kind, item_id) DO UPDATE SET team_id = EXCLUDED.team_id, channel_id = EXCLUDED.channel_id,
        title = EXCLUDED.title, body = EXCLUDED.body;
$$ LANGUAGE sql;

CREATE FUNCTION notes_search() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM search_documents WHERE kind = 'note' AND item_id = OLD.id;
        RETURN OLD;
    END IF;
    PERFORM search_put('note', NEW.id, NEW.team_id, NULL, NEW.title, NEW.body);
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER notes_search AFTER INSERT OR UPDATE OR DELETE ON notes FOR EACH ROW EXECUTE FUNCTION notes_search();

CREATE FUNCTION files_search() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM search_documents WHERE kind = 'file' AND item_id = OLD.id;
        RETURN OLD;
    END IF;
    PERFORM search_put('file', NEW.id, NEW.team_id, NULL, NEW.name, '');
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER files_search AFTER INSERT OR UPDATE OR DELETE ON files FOR EACH ROW EXECUTE FUNCTION files_search();

CREATE FUNCTION teams_search() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM search_documents WHERE team_id = OLD.id;
        RETURN OLD;
    END IF;
    PERFORM search_put('team', NEW.id, NEW.id, NULL, NEW.name, COALESCE(NEW.description, ''));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER teams_search AFTER INSERT OR UPDATE OR DELETE ON teams FOR EACH ROW EXECUTE FUNCTION teams_search();

CREATE FUNCTION rooms_search() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM search_documents WHERE kind = 'room' AND item_id = OLD.id;
        RETURN OLD;
    END IF;
    PERFORM search_put('room', NEW.id, NEW.team_id, NULL, NEW.name, '');
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER rooms_search AFTER INSERT OR UPDATE OR DELETE ON rooms FOR EACH ROW EXECUTE FUNCTION rooms_search();

CREATE FUNCTION chat_channels_search() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM search_documents WHERE channel_id = OLD.id;
        RETURN OLD;
    END IF;
    IF NEW.kind <> 'dm' THEN
        PERFORM search_put('channel', NEW.id, NEW.team_id, NEW.id, COALESCE(NEW.name, ''), COALESCE(NEW.topic, ''));
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER chat_channels_search AFTER INSERT OR UPDATE OR DELETE ON chat_channels
    FOR EACH ROW EXECUTE FUNCTION chat_channels_search();

CREATE FUNCTION chat_messages_search() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM search_documents WHERE kind = 'message' AND item_id = OLD.id;
        RETURN OLD;
    END IF;
    IF NEW.deleted_at IS NOT NULL THEN
        DELETE FROM search_documents WHERE kind = 'message' AND item_id = NEW.id;
    ELSE
        PERFORM search_put('message', NEW.id, c.team_id, NEW.channel_id, '', NEW.body)
        FROM chat_channels c WHERE c.id = NEW.channel_id;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER chat_messages_search AFTER INSERT OR UPDATE OR DELETE ON chat_messages
    FOR EACH ROW EXECUTE FUNCTION chat_messages_search();

-- projects and tasks (migration 0020)
CREATE FUNCTION projects_search() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM search_documents WHERE kind = 'project' AND item_id = OLD.id;
        RETURN OLD;
    END IF;
    PERFORM search_put('project', NEW.id, NEW.team_id, NULL, NEW.name, COALESCE(NEW.description, ''));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER projects_search AFTER INSERT OR UPDATE OR DELETE ON projects FOR EACH ROW EXECUTE FUNCTION projects_search();

CREATE FUNCTION tasks_search() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM search_documents WHERE kind = 'task' AND item_id = OLD.id;
        RETURN OLD;
    END IF;
    PERFORM search_put('task', NEW.id, p.team_id, NULL, NEW.title, COALESCE(NEW.description, ''))
    FROM projects p WHERE p.id = NEW.project_id;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER tasks_search AFTER INSERT OR UPDATE OR DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_search();

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
