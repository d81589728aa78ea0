-- Recordings count towards their team's storage quota: the bytes of a recording's files, set when
-- it finishes (or is found interrupted at startup). Keep in step with ../postgres.
ALTER TABLE recordings ADD COLUMN size_bytes INTEGER NOT NULL DEFAULT 0;
