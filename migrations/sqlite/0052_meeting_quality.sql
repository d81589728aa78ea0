-- Connection quality of meeting participants (issue #5 analytics): the media plane reports each
-- participant's loss, bitrate and round-trip time every few seconds; one row per participant and
-- session sums them, so the table grows with attendance, not with time. Keep in step with ../postgres.
CREATE TABLE room_quality (
    session_id     TEXT NOT NULL REFERENCES room_sessions(id) ON DELETE CASCADE,
    participant_id TEXT NOT NULL,
    -- Milliseconds measured, and media bytes from / to the participant in them.
    measured_ms    INTEGER NOT NULL,
    bytes_up       INTEGER NOT NULL,
    bytes_down     INTEGER NOT NULL,
    -- Sum of loss fraction × milliseconds (mean loss = loss_ms / measured_ms); worst one-second loss.
    loss_ms        REAL NOT NULL,
    max_loss       REAL NOT NULL,
    -- Sum and count of round-trip time samples (windows where one was measured).
    rtt_ms_sum     INTEGER NOT NULL,
    rtt_samples    INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (session_id, participant_id)
);
