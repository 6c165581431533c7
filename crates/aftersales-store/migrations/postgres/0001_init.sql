-- The engine's tables (see `aftersales_core::store` for what each holds).
-- Times are unix milliseconds from the engine's clock; JSON is stored as JSONB.
-- Keys that are ordered on (`instances.id`, `definitions.name`) use the "C" collation so they
-- sort bytewise whatever the database's locale, exactly as the memory store sorts them.
-- Append-only: never edit a migration that has been merged, add a new file.

CREATE TABLE definitions (
    name        TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    source      TEXT   NOT NULL,
    hash        TEXT   NOT NULL,
    deployed_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE instances (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    parent_id       TEXT COLLATE "C",
    workflow        TEXT    NOT NULL,
    version         BIGINT  NOT NULL,
    business_line   TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN
                        ('running', 'completed', 'rejected', 'closed', 'failed', 'cancelled')),
    idempotency_key TEXT    UNIQUE,
    request_hash    TEXT    NOT NULL,
    search_key      TEXT,
    input           JSONB   NOT NULL,
    params          JSONB   NOT NULL,
    state           JSONB   NOT NULL,
    due_at          BIGINT,
    needs_attention BOOLEAN NOT NULL DEFAULT FALSE,
    lease_owner     TEXT,
    lease_until     BIGINT  NOT NULL DEFAULT 0,
    lease_version   BIGINT  NOT NULL DEFAULT 0,
    wake            BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);

-- The due queue: `claim_due` and `next_due_at` read running instances by due time.
CREATE INDEX instances_due ON instances (status, due_at, id);
CREATE INDEX instances_search_key ON instances (search_key);
CREATE INDEX instances_line_created ON instances (business_line, created_at);
CREATE INDEX instances_parent ON instances (parent_id);
CREATE INDEX instances_attention ON instances (id) WHERE needs_attention;

CREATE TABLE inbox (
    id          BIGSERIAL PRIMARY KEY,
    instance_id TEXT COLLATE "C" NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('signal', 'event', 'child_done', 'cancel')),
    name        TEXT    NOT NULL,
    correlation TEXT,
    dedupe_id   TEXT    NOT NULL,
    payload     JSONB   NOT NULL,
    received_at BIGINT  NOT NULL,
    consumed    BOOLEAN NOT NULL DEFAULT FALSE
);

-- Signals, cancellations and child notices are deduplicated per instance by the sender's id.
-- Events are not: their dedupe is global on (name, dedupe id) in `seen_events`, so two
-- different events that share a platform id can both reach one instance.
CREATE UNIQUE INDEX inbox_dedupe ON inbox (instance_id, kind, dedupe_id) WHERE kind <> 'event';
CREATE INDEX inbox_pending ON inbox (instance_id, consumed, id);

CREATE TABLE waits (
    instance_id TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    correlation TEXT NOT NULL,
    PRIMARY KEY (instance_id, name, correlation)
);

CREATE INDEX waits_correlation ON waits (correlation);

CREATE TABLE buffered_events (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT   NOT NULL,
    correlation TEXT   NOT NULL,
    dedupe_id   TEXT   NOT NULL,
    payload     JSONB  NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE INDEX buffered_events_correlation ON buffered_events (correlation);

CREATE TABLE seen_events (
    name      TEXT NOT NULL,
    dedupe_id TEXT NOT NULL,
    PRIMARY KEY (name, dedupe_id)
);

CREATE TABLE history (
    instance_id TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    step        TEXT,
    attempt     BIGINT,
    data        JSONB  NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
