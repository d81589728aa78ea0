-- Calendar events (with recurrence), meetings, room moderation, the durable job table and team
-- webhooks. Ids are UUIDv7 text; times are unix milliseconds. Keep in step with ../postgres.

-- starts_at/ends_at: the first occurrence, in UTC. time_zone: the IANA zone the rule repeats in
-- (so a weekly 09:00 stays at 09:00 across a DST change). series_end: the end of the last
-- occurrence (NULL when the rule never ends), so a range query finds every series it overlaps.
CREATE TABLE calendar_events (
    id          TEXT PRIMARY KEY,
    team_id     TEXT REFERENCES teams(id) ON DELETE CASCADE,
    organizer   TEXT REFERENCES users(id) ON DELETE SET NULL,
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    location    TEXT NOT NULL DEFAULT '',
    event_type  TEXT NOT NULL CHECK (event_type IN ('meeting', 'deadline', 'reminder', 'other')),
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    time_zone   TEXT NOT NULL,
    all_day     INTEGER NOT NULL DEFAULT 0,
    rrule       TEXT,
    series_end  INTEGER,
    room_id     TEXT REFERENCES rooms(id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    CHECK (ends_at >= starts_at)
);
CREATE INDEX calendar_events_range ON calendar_events(starts_at, series_end);
CREATE INDEX calendar_events_team ON calendar_events(team_id);

CREATE TABLE event_attendees (
    event_id TEXT NOT NULL REFERENCES calendar_events(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    rsvp     TEXT NOT NULL CHECK (rsvp IN ('pending', 'accepted', 'declined', 'tentative')),
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX event_attendees_user ON event_attendees(user_id);

CREATE TABLE event_reminders (
    event_id       TEXT NOT NULL REFERENCES calendar_events(id) ON DELETE CASCADE,
    minutes_before INTEGER NOT NULL,
    PRIMARY KEY (event_id, minutes_before)
);

-- One occurrence of a series, by its original start: removed (EXDATE) or moved/retitled.
CREATE TABLE event_exceptions (
    event_id       TEXT NOT NULL REFERENCES calendar_events(id) ON DELETE CASCADE,
    original_start INTEGER NOT NULL,
    cancelled      INTEGER NOT NULL DEFAULT 0,
    title          TEXT,
    starts_at      INTEGER,
    ends_at        INTEGER,
    PRIMARY KEY (event_id, original_start)
);

-- A user's private iCalendar feed: the token is stored hashed.
CREATE TABLE calendar_feeds (
    user_id    TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- Moderation state of a room. lobby: joiners wait until a host admits them.
ALTER TABLE rooms ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN lobby INTEGER NOT NULL DEFAULT 0;

CREATE TABLE room_lobby (
    room_id    TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    state      TEXT NOT NULL CHECK (state IN ('waiting', 'admitted', 'denied')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Durable work: due jobs are claimed (locked_until) and retried with backoff; survives restarts.
-- dedupe_key: one job per key, so rescheduling a reminder replaces instead of duplicating.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    dedupe_key   TEXT UNIQUE,
    run_at       INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    locked_until INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs(state, run_at);

CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    event_types TEXT NOT NULL,
    created_by  TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX webhooks_team ON webhooks(team_id);

-- One row per event sent to a webhook; attempts and the last outcome are updated in place.
CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY,
    webhook_id   TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    status_code  INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, id);

-- Live sessions of a room and who attended them, recorded from the media plane's room events
-- (meeting analytics). participant_id is the media identity (a user id for joins via the API).
CREATE TABLE room_sessions (
    id         TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER
);
CREATE INDEX room_sessions_room ON room_sessions(room_id, started_at);

CREATE TABLE room_attendance (
    id             TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL REFERENCES room_sessions(id) ON DELETE CASCADE,
    participant_id TEXT NOT NULL,
    joined_at      INTEGER NOT NULL,
    left_at        INTEGER
);
CREATE INDEX room_attendance_session ON room_attendance(session_id, joined_at);
