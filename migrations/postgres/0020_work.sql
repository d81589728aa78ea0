-- Work management: projects, boards and columns, tasks (assignees, labels, subtasks, comments,
-- relations), sprints with daily burndown snapshots, and time entries.
-- Ids are UUIDv7 text; times are unix milliseconds; dates are 'YYYY-MM-DD'; ordering keys
-- (`rank`) are fractional base-36 strings compared byte-wise (COLLATE "C"). Keep in step with ../sqlite.

CREATE TABLE projects (
    id               TEXT PRIMARY KEY,
    team_id          TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT,
    key_prefix       TEXT NOT NULL,
    next_task_number BIGINT NOT NULL DEFAULT 1,
    status           TEXT NOT NULL CHECK (status IN ('planned', 'active', 'paused', 'completed', 'cancelled')),
    start_date       TEXT,
    end_date         TEXT,
    archived_at      BIGINT,
    created_by       TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (team_id, key_prefix)
);

CREATE TABLE boards (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX boards_project ON boards(project_id);

CREATE TABLE board_columns (
    id         TEXT PRIMARY KEY,
    board_id   TEXT NOT NULL REFERENCES boards(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    category   TEXT NOT NULL CHECK (category IN ('backlog', 'todo', 'in_progress', 'done')),
    rank       TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (board_id, rank)
);

CREATE TABLE sprints (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    goal         TEXT,
    start_date   TEXT NOT NULL,
    end_date     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('planned', 'active', 'completed')),
    started_at   BIGINT,
    completed_at BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX sprints_project ON sprints(project_id);
-- At most one running sprint per project, enforced by the database rather than a check-then-write.
CREATE UNIQUE INDEX sprints_one_active ON sprints(project_id) WHERE status = 'active';

CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    number      BIGINT NOT NULL,
    column_id   TEXT NOT NULL REFERENCES board_columns(id) ON DELETE CASCADE,
    sprint_id   TEXT REFERENCES sprints(id) ON DELETE SET NULL,
    title       TEXT NOT NULL,
    description TEXT,
    priority    TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    due_date    TEXT,
    start_date  TEXT,
    estimate    BIGINT,
    rank        TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL DEFAULT 1,
    archived_at BIGINT,
    created_by  TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (project_id, number),
    UNIQUE (column_id, rank)
);
CREATE INDEX tasks_project ON tasks(project_id, id);
CREATE INDEX tasks_sprint ON tasks(sprint_id);

CREATE TABLE task_assignees (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, user_id)
);
CREATE INDEX task_assignees_user ON task_assignees(user_id);

CREATE TABLE labels (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    color      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE task_labels (
    task_id  TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    label_id TEXT NOT NULL REFERENCES labels(id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, label_id)
);
CREATE INDEX task_labels_label ON task_labels(label_id);

CREATE TABLE subtasks (
    id         TEXT PRIMARY KEY,
    task_id    TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    title      TEXT NOT NULL,
    done       BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subtasks_task ON subtasks(task_id);

CREATE TABLE task_comments (
    id         TEXT PRIMARY KEY,
    task_id    TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    author_id  TEXT REFERENCES users(id) ON DELETE SET NULL,
    body       TEXT NOT NULL,
    -- Ids of the team members @-mentioned in the body, comma-separated.
    mentions   TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    edited_at  BIGINT
);
CREATE INDEX task_comments_task ON task_comments(task_id, id);

-- Stored one way: `blocked_by` is the reverse of `blocks`, read from the other end.
CREATE TABLE task_relations (
    id         TEXT PRIMARY KEY,
    source_id  TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    target_id  TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('blocks', 'relates_to', 'duplicates')),
    created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (source_id, target_id, kind)
);
CREATE INDEX task_relations_target ON task_relations(target_id);

-- One row per sprint and day: the sprint's state at the last change of that day.
CREATE TABLE sprint_snapshots (
    sprint_id        TEXT NOT NULL REFERENCES sprints(id) ON DELETE CASCADE,
    day              TEXT NOT NULL,
    total_tasks      BIGINT NOT NULL,
    remaining_tasks  BIGINT NOT NULL,
    total_points     BIGINT NOT NULL,
    remaining_points BIGINT NOT NULL,
    PRIMARY KEY (sprint_id, day)
);

CREATE TABLE time_entries (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    task_id    TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT,
    note       TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX time_entries_task ON time_entries(task_id);
CREATE INDEX time_entries_user ON time_entries(user_id, started_at);
-- A running timer has no end; each user has at most one.
CREATE UNIQUE INDEX time_entries_running ON time_entries(user_id) WHERE ended_at IS NULL;

-- The activity feed: one row per change (a field of an update, a move, a creation...). No
-- foreign key to the task, so a deleted task keeps its history while its project lives.
CREATE TABLE activity (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    task_id    TEXT,
    actor_id   TEXT REFERENCES users(id) ON DELETE SET NULL,
    verb       TEXT NOT NULL,
    entity     TEXT NOT NULL,
    entity_id  TEXT NOT NULL,
    field      TEXT,
    old_value  TEXT,
    new_value  TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX activity_project ON activity(project_id, id);
CREATE INDEX activity_task ON activity(task_id, id);
