-- Room recordings: one row per recording; the files live in <data dir>/recordings/<id>/ with a
-- manifest.json naming them. At most one recording per room runs at a time. Keep in step with
-- ../postgres.
CREATE TABLE recordings (
    id          TEXT PRIMARY KEY,
    room_id     TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    started_by  TEXT REFERENCES users(id) ON DELETE SET NULL,
    status      TEXT NOT NULL CHECK (status IN ('recording', 'finished', 'interrupted', 'failed')),
    error       TEXT,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    duration_ms INTEGER
);
CREATE INDEX recordings_room ON recordings(room_id, id);
CREATE UNIQUE INDEX recordings_one_running ON recordings(room_id) WHERE status = 'recording';
