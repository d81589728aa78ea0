-- Connection quality of meeting participants (issue #5 analytics): the media plane reports each
-- participant's loss, bitrate and round-trip time every few seconds; one row per participant and
-- session sums them, so the table grows with attendance, not with time. Keep in step with ../sqlite.
CREATE TABLE room_quality (
    session_id     TEXT NOT NULL REFERENCES room_sessions(id) ON DELETE CASCADE,
    participant_id TEXT NOT NULL,
    -- Milliseconds measured, and media bytes from / to the participant in them.
    measured_ms    BIGINT NOT NULL,
    bytes_up       BIGINT NOT NULL,
    bytes_down     BIGINT NOT NULL,
    -- Sum of loss fraction × milliseconds (mean loss = loss_ms / measured_ms); worst one-second loss.
    loss_ms        DOUBLE PRECISION NOT NULL,
    max_loss       DOUBLE PRECISION NOT NULL,
    -- Sum and count of round-trip time samples (windows where one was measured).
    rtt_ms_sum     BIGINT NOT NULL,
    rtt_samples    BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (session_id, participant_id)
);
