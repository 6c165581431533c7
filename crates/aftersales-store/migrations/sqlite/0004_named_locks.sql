-- Named locks with an expiry, shared by every daemon on the database: one submit at a
-- time per order across nodes (Store::try_lock / unlock).
CREATE TABLE named_locks (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
