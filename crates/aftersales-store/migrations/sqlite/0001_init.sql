-- The engine's tables (see `aftersales_core::store` for what each holds).
-- Times are unix milliseconds from the engine's clock; JSON is stored as TEXT.
-- Append-only: never edit a migration that has been merged, add a new file.

CREATE TABLE definitions (
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    hash        TEXT    NOT NULL,
    deployed_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) STRICT;

CREATE TABLE instances (
    id              TEXT    NOT NULL PRIMARY KEY,
    parent_id       TEXT,
    workflow        TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    business_line   TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN
                        ('running', 'completed', 'rejected', 'closed', 'failed', 'cancelled')),
    idempotency_key TEXT    UNIQUE,
    request_hash    TEXT    NOT NULL,
    search_key      TEXT,
    input           TEXT    NOT NULL,
    params          TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    due_at          INTEGER,
    needs_attention INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    lease_version   INTEGER NOT NULL DEFAULT 0,
    wake            INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

-- The due queue: `claim_due` and `next_due_at` read running instances by due time.
CREATE INDEX instances_due ON instances (status, due_at, id);
CREATE INDEX instances_search_key ON instances (search_key);
CREATE INDEX instances_line_created ON instances (business_line, created_at);
CREATE INDEX instances_parent ON instances (parent_id);
CREATE INDEX instances_attention ON instances (id) WHERE needs_attention = 1;

CREATE TABLE inbox (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('signal', 'event', 'child_done', 'cancel')),
    name        TEXT    NOT NULL,
    correlation TEXT,
    dedupe_id   TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    consumed    INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Signals, cancellations and child notices are deduplicated per instance by the sender's id.
-- Events are not: their dedupe is global on (name, dedupe id) in `seen_events`, so two
-- different events that share a platform id can both reach one instance.
CREATE UNIQUE INDEX inbox_dedupe ON inbox (instance_id, kind, dedupe_id) WHERE kind <> 'event';
CREATE INDEX inbox_pending ON inbox (instance_id, consumed, id);

CREATE TABLE waits (
    instance_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    correlation TEXT NOT NULL,
    PRIMARY KEY (instance_id, name, correlation)
) STRICT;

CREATE INDEX waits_correlation ON waits (correlation);

CREATE TABLE buffered_events (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    correlation TEXT    NOT NULL,
    dedupe_id   TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    received_at INTEGER NOT NULL
) STRICT;

CREATE INDEX buffered_events_correlation ON buffered_events (correlation);

CREATE TABLE seen_events (
    name      TEXT NOT NULL,
    dedupe_id TEXT NOT NULL,
    PRIMARY KEY (name, dedupe_id)
) STRICT;

CREATE TABLE history (
    instance_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    step        TEXT,
    attempt     INTEGER,
    data        TEXT    NOT NULL,
    PRIMARY KEY (instance_id, seq)
) STRICT;
