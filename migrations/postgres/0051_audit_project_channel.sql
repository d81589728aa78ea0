-- The security audit log, and each project's chat channel. Keep in step with ../sqlite.

-- One row per security event: who (actor; null once the account is deleted, or for a failed
-- login of an unknown account), what (action), on what (target), in which team (null for
-- account events such as logins), extra facts as JSON (never secrets, passwords or e-mail
-- addresses), from where (IP, user agent; erased with the account) and when. No foreign key
-- to the team, so a team's deletion stays on record.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    team_id     TEXT,
    actor_id    TEXT REFERENCES users(id) ON DELETE SET NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    ip          TEXT,
    user_agent  TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX audit_log_team ON audit_log(team_id, id);
CREATE INDEX audit_log_actor ON audit_log(actor_id, id);

-- A project's channel: task changes are posted there as system messages (author null).
ALTER TABLE chat_channels ADD COLUMN project_id TEXT REFERENCES projects(id) ON DELETE CASCADE;
CREATE UNIQUE INDEX chat_channels_project ON chat_channels(project_id);
