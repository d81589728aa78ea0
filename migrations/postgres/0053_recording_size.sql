-- Recordings count towards their team's storage quota: the bytes of a recording's files, set when
-- it finishes (or is found interrupted at startup). Keep in step with ../sqlite.
ALTER TABLE recordings ADD COLUMN size_bytes BIGINT NOT NULL DEFAULT 0;
