-- The caller's record attached to an instance (the after-sales service order), opaque to
-- the engine, stored in the same row so the record and the instance are created together.
ALTER TABLE instances ADD COLUMN meta JSONB NOT NULL DEFAULT 'null'::jsonb;
