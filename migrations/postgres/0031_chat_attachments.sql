-- Uploaded files attached to chat messages, in the order given.
CREATE TABLE chat_attachments (
    message_id TEXT NOT NULL REFERENCES chat_messages(id) ON DELETE CASCADE,
    file_id    TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    PRIMARY KEY (message_id, file_id)
);
CREATE INDEX chat_attachments_file ON chat_attachments(file_id);
