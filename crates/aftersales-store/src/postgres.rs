//! The PostgreSQL store: several engine processes may share one database.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use aftersales_core::store::{
    Claimed, Commit, CommitOutcome, Created, DefinitionRecord, Delivered, Delivery, DueFeed,
    HistoryRecord, InboxMessage, InstanceRecord, ListFilter, LockOp, MessageKind, NewInstance,
    SaleRecord, SalesTotal, Store, StoreError, StoreStats,
};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Postgres, QueryBuilder, Transaction};

use crate::error::db;
use crate::logic::{self, Append, Head, HeadRow, InstanceUpdate, Tx, heads};
use crate::rows::{
    DefinitionRow, HistoryRow, InstanceRow, MessageRow, claimed, count, json_text, kind_str,
    sql_limit,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Connections per store.
const MAX_CONNECTIONS: u32 = 10;

/// How long an operation waits for a free connection before reporting the store unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first key of every advisory lock this store takes (ASCII "ASTR"), so its locks on
/// correlation keys cannot collide with another application's advisory locks.
const LOCK_SPACE: i32 = 0x4153_5452;

/// The advisory-lock space of guarded creates' (business line, search key) pairs
/// ([`NewInstance::search_seen`]), apart from the correlation keys' so the two never collide.
const SEARCH_LOCK_SPACE: i32 = 0x4153_534b;

const INSTANCE_COLS: &str = "id, parent_id, workflow, version, business_line, status, \
     idempotency_key, search_key, input::text AS input, params::text AS params, \
     state::text AS state, due_at, needs_attention, created_at, updated_at, lease_version, wake, \
     meta::text AS meta";

const INBOX_COLS: &str =
    "id, instance_id, kind, name, correlation, dedupe_id, payload::text AS payload, received_at";

/// The shared store: PostgreSQL (12 or later), JSON in `JSONB` columns.
///
/// Claims use `FOR UPDATE SKIP LOCKED`, so workers in any number of processes never claim the
/// same instance; an instance whose row another transaction holds at that moment is simply
/// left for the next claim. Every operation runs in one `READ COMMITTED` transaction.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    wake: Arc<Notifier>,
}

/// The `LISTEN`/`NOTIFY` channel on which stores tell each other that something became due.
const DUE_CHANNEL: &str = "aftersales_due";

/// Sends `NOTIFY aftersales_due` after writes that make an instance due, coalescing bursts:
/// while one notification is on its way, further pokes are covered by it (the flag is
/// cleared before sending, so a write committed before the send is always covered).
#[derive(Debug, Default)]
struct Notifier {
    sending: AtomicBool,
}

impl Notifier {
    fn poke(self: &Arc<Self>, pool: &PgPool) {
        if self.sending.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        let pool = pool.clone();
        tokio::spawn(async move {
            this.sending.store(false, Ordering::Release);
            // Best effort: a lost notification is covered by the workers' polling.
            if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(DUE_CHANNEL)
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "sending a due notification failed");
            }
        });
    }
}

/// `try_lock`: insert, or take over a lock that expired or is the holder's already.
const TAKE_LOCK: &str = "INSERT INTO named_locks (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE named_locks.expires_at <= $4 OR named_locks.holder = excluded.holder";

/// `unlock`: only the holder's own lock.
const RELEASE_LOCK: &str = "DELETE FROM named_locks WHERE name = $1 AND holder = $2";

impl PgStore {
    /// Connects to `postgres://...` and applies the migrations to the connection's default
    /// schema (the first of its `search_path`, normally `public`).
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(db("postgres connect"))?;
        let pool = pool_options()
            .connect_with(options)
            .await
            .map_err(db("postgres connect"))?;
        PgStore::migrated(pool).await
    }

    /// Connects with every table in `schema`: creates the schema if missing, sets
    /// `search_path` to it on every pooled connection, and applies the migrations there.
    /// Separate schemas are separate stores in one database (tests use one each).
    pub async fn connect_schema(url: &str, schema: &str) -> Result<PgStore, StoreError> {
        let quoted = quote_ident(schema)?;
        let options = PgConnectOptions::from_str(url).map_err(db("postgres connect"))?;
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(db("postgres connect"))?;
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {quoted}").as_str())
            .await
            .map_err(db("postgres create schema"))?;
        conn.close().await.map_err(db("postgres connect"))?;
        let set_path: Arc<str> = format!("SET search_path TO {quoted}").into();
        let pool = pool_options()
            .after_connect(move |conn, _| {
                let set_path = Arc::clone(&set_path);
                Box::pin(async move {
                    conn.execute(&*set_path).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(db("postgres connect"))?;
        PgStore::migrated(pool).await
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrated(pool: PgPool) -> Result<PgStore, StoreError> {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| db("postgres migrate")(e.into()))?;
        Ok(PgStore {
            pool,
            wake: Arc::new(Notifier::default()),
        })
    }

    async fn begin(&self, op: &'static str) -> Result<PgTx, StoreError> {
        Ok(PgTx(self.pool.begin().await.map_err(db(op))?))
    }
}

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

/// A schema name as a quoted SQL identifier.
fn quote_ident(name: &str) -> Result<String, StoreError> {
    if name.is_empty() || name.contains('\0') {
        return Err(StoreError::Unavailable(format!(
            "invalid PostgreSQL schema name {name:?}"
        )));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Drops a schema and everything in it (test clean-up).
#[cfg(feature = "conformance")]
pub(crate) async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    let quoted = quote_ident(schema)?;
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(db("postgres connect"))?;
    conn.execute(format!("DROP SCHEMA IF EXISTS {quoted} CASCADE").as_str())
        .await
        .map_err(db("postgres drop schema"))?;
    conn.close().await.map_err(db("postgres close"))?;
    Ok(())
}

/// The second key of the advisory lock for a correlation key: 32-bit FNV-1a of its UTF-8
/// bytes. Fixed, so every process computes the same one; two keys that collide only share a
/// lock.
fn correlation_lock(key: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// One `READ COMMITTED` transaction.
struct PgTx(Transaction<'static, Postgres>);

impl PgTx {
    /// Takes these transaction-scoped advisory locks of `space`, one at a time in ascending
    /// order, each once.
    async fn advisory_locks(
        &mut self,
        space: i32,
        mut locks: Vec<i32>,
        what: &'static str,
    ) -> Result<(), StoreError> {
        locks.sort_unstable();
        locks.dedup();
        if locks.is_empty() {
            return Ok(());
        }
        // One round trip for all of them. The function scan returns the array's elements in
        // order and each row's lock is taken as it is produced, so they are taken ascending
        // (no sort or join in the plan could reorder them).
        sqlx::query("SELECT pg_advisory_xact_lock($1, l) FROM unnest($2::int4[]) AS l")
            .bind(space)
            .bind(locks)
            .execute(&mut *self.0)
            .await
            .map_err(db(what))?;
        Ok(())
    }
}

impl PgTx {
    async fn commit(self, op: &'static str) -> Result<(), StoreError> {
        self.0.commit().await.map_err(db(op))
    }
}

#[async_trait]
impl Tx for PgTx {
    async fn lock_correlations(
        &mut self,
        keys: &[String],
        waits_of: &[String],
    ) -> Result<(), StoreError> {
        let mut locks: Vec<i32> = keys.iter().map(|k| correlation_lock(k)).collect();
        if !waits_of.is_empty() {
            // Only the lease holder changes an instance's waits, so this read cannot race
            // with a change that matters.
            let current: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT correlation FROM waits WHERE instance_id = ANY($1)",
            )
            .bind(waits_of)
            .fetch_all(&mut *self.0)
            .await
            .map_err(db("read waits"))?;
            locks.extend(current.iter().map(|k| correlation_lock(k)));
        }
        // In ascending order: the global lock order that rules out deadlocks.
        self.advisory_locks(LOCK_SPACE, locks, "lock correlation key")
            .await
    }

    async fn lock_instances(&mut self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // `FOR UPDATE` above the sort: rows are locked in id order.
        sqlx::query("SELECT id FROM instances WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(ids)
            .execute(&mut *self.0)
            .await
            .map_err(db("lock instances"))?;
        Ok(())
    }

    async fn lock_heads(&mut self, ids: &[String]) -> Result<HashMap<String, Head>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        // `FOR UPDATE` above the sort: rows are locked in id order.
        let rows: Vec<HeadRow> = sqlx::query_as(
            "SELECT id, status, lease_version, wake, due_at, needs_attention FROM instances \
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("lock instances"))?;
        heads(rows)
    }

    async fn existing_ids(&mut self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        let found: Vec<String> =
            sqlx::query_scalar("SELECT id FROM instances WHERE id = ANY($1::text[])")
                .bind(ids)
                .fetch_all(&mut *self.0)
                .await
                .map_err(db("read instances"))?;
        Ok(found.into_iter().collect())
    }

    async fn guard_search_keys(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), u64>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let locks = keys
            .iter()
            .map(|(line, key)| correlation_lock(&format!("{line}\n{key}")))
            .collect();
        // In ascending order, before any row is written: guarded creates take nothing else
        // first, so they cannot deadlock on these.
        self.advisory_locks(SEARCH_LOCK_SPACE, locks, "lock search key")
            .await?;
        // A statement after the locks: under READ COMMITTED it sees every create that held
        // one of them before.
        let (lines, search): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            // The line as a filter, not a condition: the search key's index, never the
            // line's (every instance of the line).
            "SELECT k.line, k.key, (SELECT count(*) FILTER (WHERE i.business_line = k.line) \
                 FROM instances AS i WHERE i.search_key = k.key) \
             FROM UNNEST($1::text[], $2::text[]) AS k(line, key)",
        )
        .bind(lines)
        .bind(search)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("count instances by search key"))?;
        Ok(rows
            .into_iter()
            .map(|(line, key, n)| ((line, key), u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    async fn key_owners(
        &mut self,
        keys: &[&str],
    ) -> Result<HashMap<String, (String, String)>, StoreError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT idempotency_key, id, request_hash FROM instances \
             WHERE idempotency_key = ANY($1::text[])",
        )
        .bind(keys)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("read idempotency keys"))?;
        Ok(rows.into_iter().map(|(k, id, h)| (k, (id, h))).collect())
    }

    async fn insert_instances(
        &mut self,
        news: &[&NewInstance],
    ) -> Result<HashSet<String>, StoreError> {
        if news.is_empty() {
            return Ok(HashSet::new());
        }
        let text = |f: fn(&NewInstance) -> &serde_json::Value| -> Result<Vec<String>, StoreError> {
            news.iter().map(|n| json_text(f(n))).collect()
        };
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO instances (id, parent_id, workflow, version, business_line, status, \
             idempotency_key, request_hash, search_key, input, params, state, due_at, \
             created_at, updated_at, meta) \
             SELECT u.id, u.parent_id, u.workflow, u.version, u.line, 'running', u.key, \
                 u.hash, u.search_key, u.input::jsonb, u.params::jsonb, u.state::jsonb, \
                 u.now, u.now, u.now, u.meta::jsonb \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                 $12::int8[], $13::text[]) WITH ORDINALITY \
                 AS u(id, parent_id, workflow, version, line, key, hash, search_key, input, \
                     params, state, now, meta, ord) \
             ORDER BY u.ord \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(news.iter().map(|n| n.id.as_str()).collect::<Vec<_>>())
        .bind(
            news.iter()
                .map(|n| n.parent_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(news.iter().map(|n| n.workflow.as_str()).collect::<Vec<_>>())
        .bind(
            news.iter()
                .map(|n| i64::from(n.version))
                .collect::<Vec<_>>(),
        )
        .bind(
            news.iter()
                .map(|n| n.business_line.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            news.iter()
                .map(|n| n.idempotency_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            news.iter()
                .map(|n| n.request_hash.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            news.iter()
                .map(|n| n.search_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(text(|n| &n.input)?)
        .bind(text(|n| &n.params)?)
        .bind(text(|n| &n.state)?)
        .bind(news.iter().map(|n| n.now).collect::<Vec<_>>())
        .bind(text(|n| &n.meta)?)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("insert instances"))?;
        Ok(inserted.into_iter().collect())
    }

    async fn append_histories(&mut self, items: &[Append<'_>]) -> Result<(), StoreError> {
        let rows = items.iter().map(|a| a.events.len()).sum();
        let mut ids: Vec<&str> = Vec::with_capacity(rows);
        let mut ords: Vec<i64> = Vec::with_capacity(rows);
        let mut ats: Vec<i64> = Vec::with_capacity(rows);
        let mut kinds: Vec<&str> = Vec::with_capacity(rows);
        let mut steps: Vec<Option<&str>> = Vec::with_capacity(rows);
        let mut attempts: Vec<Option<i64>> = Vec::with_capacity(rows);
        let mut data: Vec<String> = Vec::with_capacity(rows);
        for item in items {
            // Each event's place among its instance's new ones, from 1.
            let mut ord: i64 = 0;
            for (k, h) in item.events.iter().enumerate() {
                ord += 1;
                ids.push(item.id);
                ords.push(ord);
                ats.push(h.at);
                kinds.push(&h.kind);
                steps.push(h.step.as_deref());
                attempts.push(h.attempt.map(i64::from));
                data.push(item.text(k)?.into_owned());
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        // The subquery reads the statement's snapshot, which does not hold the rows being
        // inserted: each instance's events follow its last sequence number in order.
        sqlx::query(
            "INSERT INTO history (instance_id, seq, at, kind, step, attempt, data) \
             SELECT u.id, COALESCE((SELECT MAX(h.seq) FROM history h \
                 WHERE h.instance_id = u.id), 0) + u.ord, \
             u.at, u.kind, u.step, u.attempt, u.data::jsonb \
             FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], \
                 $6::int8[], $7::text[]) AS u(id, ord, at, kind, step, attempt, data)",
        )
        .bind(ids)
        .bind(ords)
        .bind(ats)
        .bind(kinds)
        .bind(steps)
        .bind(attempts)
        .bind(data)
        .execute(&mut *self.0)
        .await
        .map_err(db("append history"))?;
        Ok(())
    }

    async fn update_instances(&mut self, updates: &[InstanceUpdate<'_>]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = updates.iter().map(|u| u.id).collect();
        let statuses: Vec<&str> = updates.iter().map(|u| u.status.as_str()).collect();
        let states: Vec<&str> = updates.iter().map(|u| u.state.as_str()).collect();
        let due: Vec<Option<i64>> = updates.iter().map(|u| u.due_at).collect();
        let attention: Vec<bool> = updates.iter().map(|u| u.needs_attention).collect();
        let now: Vec<i64> = updates.iter().map(|u| u.now).collect();
        let release: Vec<bool> = updates.iter().map(|u| u.release).collect();
        let extend: Vec<i64> = updates.iter().map(|u| u.extend_lease).collect();
        sqlx::query(
            "UPDATE instances AS i SET status = u.status, state = u.state::jsonb, \
             due_at = u.due_at, needs_attention = u.attention, updated_at = u.now, \
             lease_owner = CASE WHEN u.release THEN NULL ELSE i.lease_owner END, \
             lease_until = CASE WHEN u.release THEN 0 \
                 ELSE GREATEST(i.lease_until, u.extend) END \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[], \
                 $6::int8[], $7::bool[], $8::int8[]) \
                 AS u(id, status, state, due_at, attention, now, release, extend) \
             WHERE i.id = u.id",
        )
        .bind(ids)
        .bind(statuses)
        .bind(states)
        .bind(due)
        .bind(attention)
        .bind(now)
        .bind(release)
        .bind(extend)
        .execute(&mut *self.0)
        .await
        .map_err(db("update instance"))?;
        Ok(())
    }

    async fn mark_consumed(&mut self, pairs: &[(&str, i64)]) -> Result<(), StoreError> {
        let (ids, msgs): (Vec<&str>, Vec<i64>) = pairs.iter().copied().unzip();
        sqlx::query(
            "UPDATE inbox SET consumed = TRUE \
             FROM UNNEST($1::text[], $2::int8[]) AS u(instance_id, id) \
             WHERE inbox.instance_id = u.instance_id AND inbox.id = u.id",
        )
        .bind(ids)
        .bind(msgs)
        .execute(&mut *self.0)
        .await
        .map_err(db("consume messages"))?;
        Ok(())
    }

    async fn replace_waits(
        &mut self,
        items: &[(&str, &[(String, String)])],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = items.iter().map(|(id, _)| *id).collect();
        sqlx::query("DELETE FROM waits WHERE instance_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *self.0)
            .await
            .map_err(db("replace waits"))?;
        let mut owners: Vec<&str> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let mut correlations: Vec<&str> = Vec::new();
        for (id, waits) in items {
            for (name, correlation) in *waits {
                owners.push(id);
                names.push(name);
                correlations.push(correlation);
            }
        }
        if owners.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO waits (instance_id, name, correlation) \
             SELECT w.instance_id, w.name, w.correlation \
             FROM UNNEST($1::text[], $2::text[], $3::text[]) AS w(instance_id, name, correlation) \
             ON CONFLICT DO NOTHING",
        )
        .bind(owners)
        .bind(names)
        .bind(correlations)
        .execute(&mut *self.0)
        .await
        .map_err(db("replace waits"))?;
        Ok(())
    }

    async fn buffered_for(
        &mut self,
        correlations: &[String],
    ) -> Result<Vec<InboxMessage>, StoreError> {
        let rows: Vec<MessageRow> = sqlx::query_as(
            "SELECT id, '' AS instance_id, 'event' AS kind, name, correlation, dedupe_id, \
             payload::text AS payload, received_at FROM buffered_events \
             WHERE correlation = ANY($1) ORDER BY id",
        )
        .bind(correlations)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("read buffered events"))?;
        rows.into_iter().map(MessageRow::into_message).collect()
    }

    async fn delete_buffered(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM buffered_events WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *self.0)
            .await
            .map_err(db("hand over buffered events"))?;
        Ok(())
    }

    async fn inbox_has(
        &mut self,
        id: &str,
        dedupe_id: &str,
        kind: Option<MessageKind>,
    ) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM inbox WHERE instance_id = $1 AND dedupe_id = $2 \
             AND ($3::text IS NULL OR kind = $3))",
        )
        .bind(id)
        .bind(dedupe_id)
        .bind(kind.map(kind_str))
        .fetch_one(&mut *self.0)
        .await
        .map_err(db("read inbox"))
    }

    async fn insert_inbox(&mut self, id: &str, msg: &InboxMessage) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO inbox (instance_id, kind, name, correlation, dedupe_id, payload, \
             received_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(kind_str(msg.kind))
        .bind(&msg.name)
        .bind(&msg.correlation)
        .bind(&msg.dedupe_id)
        .bind(json_text(&msg.payload)?)
        .bind(msg.received_at)
        .execute(&mut *self.0)
        .await
        .map_err(db("insert message"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn bump_wake(&mut self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE instances SET wake = wake + 1, \
             due_at = CASE WHEN due_at IS NULL OR due_at > $2 THEN $2 ELSE due_at END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *self.0)
        .await
        .map_err(db("wake instance"))?;
        Ok(())
    }

    async fn mark_event_seen(&mut self, name: &str, dedupe_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO seen_events (name, dedupe_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(dedupe_id)
        .execute(&mut *self.0)
        .await
        .map_err(db("record event"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn waiters(&mut self, correlation: &str) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as("SELECT instance_id, name FROM waits WHERE correlation = $1")
            .bind(correlation)
            .fetch_all(&mut *self.0)
            .await
            .map_err(db("read waits"))
    }

    async fn buffer_event(&mut self, msg: &InboxMessage) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO buffered_events (name, correlation, dedupe_id, payload, received_at) \
             VALUES ($1, $2, $3, $4::jsonb, $5)",
        )
        .bind(&msg.name)
        .bind(&msg.correlation)
        .bind(&msg.dedupe_id)
        .bind(json_text(&msg.payload)?)
        .bind(msg.received_at)
        .execute(&mut *self.0)
        .await
        .map_err(db("buffer event"))?;
        Ok(())
    }

    async fn take_lock(
        &mut self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(TAKE_LOCK)
            .bind(name)
            .bind(holder)
            .bind(now.saturating_add(ttl_ms))
            .bind(now)
            .execute(&mut *self.0)
            .await
            .map_err(db("try_lock"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lock(&mut self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(RELEASE_LOCK)
            .bind(name)
            .bind(holder)
            .execute(&mut *self.0)
            .await
            .map_err(db("unlock"))?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn put_definition(&self, def: &DefinitionRecord) -> Result<(), StoreError> {
        let mut tx = self.begin("put_definition").await?;
        sqlx::query(
            "INSERT INTO definitions (name, version, source, hash, deployed_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&def.name)
        .bind(i64::from(def.version))
        .bind(&def.source)
        .bind(&def.hash)
        .bind(def.deployed_at)
        .execute(&mut *tx.0)
        .await
        .map_err(db("put_definition"))?;
        let hash: String =
            sqlx::query_scalar("SELECT hash FROM definitions WHERE name = $1 AND version = $2")
                .bind(&def.name)
                .bind(i64::from(def.version))
                .fetch_one(&mut *tx.0)
                .await
                .map_err(db("put_definition"))?;
        if hash != def.hash {
            return Err(StoreError::DefinitionConflict {
                name: def.name.clone(),
                version: def.version,
            });
        }
        tx.commit("put_definition").await
    }

    async fn definitions(&self) -> Result<Vec<DefinitionRecord>, StoreError> {
        let rows: Vec<DefinitionRow> = sqlx::query_as(
            "SELECT name, version, source, hash, deployed_at FROM definitions \
             ORDER BY name, version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("definitions"))?;
        rows.into_iter().map(DefinitionRow::into_record).collect()
    }

    async fn create_instance(&self, new: NewInstance) -> Result<Created, StoreError> {
        let mut tx = self.begin("create_instance").await?;
        let created = logic::create_instance(&mut tx, &new).await?;
        tx.commit("create_instance").await?;
        if matches!(created, Created::New(_)) {
            self.wake.poke(&self.pool);
        }
        Ok(created)
    }

    async fn create_instances(
        &self,
        news: Vec<NewInstance>,
    ) -> Result<Vec<Result<Created, StoreError>>, StoreError> {
        let mut tx = self.begin("create_instance").await?;
        let out = logic::create_instances(&mut tx, &news).await?;
        tx.commit("create_instance").await?;
        if out.iter().any(|c| matches!(c, Ok(Created::New(_)))) {
            self.wake.poke(&self.pool);
        }
        Ok(out)
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin("claim_due").await?;
        // One statement picks, locks and leases; `SKIP LOCKED` passes over rows another
        // transaction (a claim, a commit, a delivery) holds, and the re-check under the lock
        // drops rows that another claim leased since this statement's snapshot.
        let rows: Vec<InstanceRow> = sqlx::query_as(&format!(
            "WITH picked AS MATERIALIZED ( \
                 SELECT id AS picked_id FROM instances \
                 WHERE status = 'running' AND due_at <= $3 AND lease_until <= $3 \
                 ORDER BY due_at, id LIMIT $4 \
                 FOR UPDATE SKIP LOCKED) \
             UPDATE instances SET lease_owner = $1, lease_until = $2, \
                 lease_version = lease_version + 1 \
             FROM picked WHERE id = picked_id \
             RETURNING {INSTANCE_COLS}"
        ))
        .bind(owner)
        .bind(now.saturating_add(lease_ms))
        .bind(now)
        .bind(sql_limit(limit))
        .fetch_all(&mut *tx.0)
        .await
        .map_err(db("claim_due"))?;
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let messages: Vec<MessageRow> = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(&format!(
                "SELECT {INBOX_COLS} FROM inbox WHERE NOT consumed AND instance_id = ANY($1) \
                 ORDER BY id"
            ))
            .bind(&ids)
            .fetch_all(&mut *tx.0)
            .await
            .map_err(db("claim_due"))?
        };
        tx.commit("claim_due").await?;
        Ok(claimed(rows, messages))
    }

    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>, StoreError> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        // A commit that starts children or tells a parent its child ended makes another
        // instance due, which may belong to another node's worker.
        let wakes_others = commits
            .iter()
            .any(|c| !c.children.is_empty() || c.notify_parent.is_some());
        let mut tx = self.begin("commit").await?;
        let out = logic::commit(&mut tx, &commits, None).await?;
        tx.commit("commit").await?;
        if wakes_others {
            self.wake.poke(&self.pool);
        }
        Ok(out)
    }

    async fn deliver(&self, delivery: Delivery, now: i64) -> Result<Delivered, StoreError> {
        let mut tx = self.begin("deliver").await?;
        let out = logic::deliver(&mut tx, delivery, now).await?;
        tx.commit("deliver").await?;
        if matches!(out, Delivered::Accepted(_)) {
            self.wake.poke(&self.pool);
        }
        Ok(out)
    }

    async fn get_instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let row: Option<InstanceRow> = sqlx::query_as(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("get_instance"))?;
        row.map(InstanceRow::into_record).transpose()
    }

    async fn find_by_key(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let row: Option<InstanceRow> = sqlx::query_as(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE idempotency_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("find_by_key"))?;
        row.map(InstanceRow::into_record).transpose()
    }

    async fn list_instances(&self, f: &ListFilter) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {INSTANCE_COLS} FROM instances WHERE TRUE"));
        if let Some(status) = f.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(line) = &f.business_line {
            q.push(" AND business_line = ").push_bind(line.clone());
        }
        if let Some(workflow) = &f.workflow {
            q.push(" AND workflow = ").push_bind(workflow.clone());
        }
        if let Some(key) = &f.search_key {
            q.push(" AND search_key = ").push_bind(key.clone());
        }
        if let Some(from) = f.created_from {
            q.push(" AND created_at >= ").push_bind(from);
        }
        if let Some(to) = f.created_to {
            q.push(" AND created_at < ").push_bind(to);
        }
        if let Some(attention) = f.needs_attention {
            q.push(" AND needs_attention = ").push_bind(attention);
        }
        if let Some(after) = &f.after_id {
            q.push(" AND id < ").push_bind(after.clone());
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(sql_limit(f.limit.max(1)));
        let rows: Vec<InstanceRow> = q
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(db("list_instances"))?;
        rows.into_iter().map(InstanceRow::into_record).collect()
    }

    async fn history(
        &self,
        id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let rows: Vec<HistoryRow> = sqlx::query_as(
            "SELECT seq, at, kind, step, attempt, data::text AS data FROM history \
             WHERE instance_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id)
        .bind(after_seq)
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("history"))?;
        rows.into_iter().map(HistoryRow::into_record).collect()
    }

    async fn next_due_at(&self, now: i64) -> Result<Option<i64>, StoreError> {
        static SQL: LazyLock<String> =
            LazyLock::new(|| logic::next_due_sql("GREATEST", "$1::BIGINT"));
        sqlx::query_scalar(&SQL)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(db("next_due_at"))
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[String],
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One statement; it locks the rows in id order, the order commits lock instance rows
        // in, so a heartbeat cannot deadlock with a commit.
        let held: Vec<String> = sqlx::query_scalar(
            "WITH mine AS MATERIALIZED ( \
                 SELECT id AS mine_id FROM instances WHERE id = ANY($1) ORDER BY id FOR UPDATE) \
             UPDATE instances SET lease_until = GREATEST(lease_until, $4) \
             FROM mine WHERE id = mine_id AND lease_owner = $2 AND lease_until > $3 \
             RETURNING id",
        )
        .bind(ids)
        .bind(owner)
        .bind(now)
        .bind(now.saturating_add(lease_ms))
        .fetch_all(&self.pool)
        .await
        .map_err(db("renew_leases"))?;
        let held: std::collections::HashSet<String> = held.into_iter().collect();
        Ok(ids
            .iter()
            .filter(|id| held.contains(*id))
            .cloned()
            .collect())
    }

    async fn stats(&self, now: i64) -> Result<StoreStats, StoreError> {
        let (running, due, attention): (i64, i64, i64) = sqlx::query_as(
            "SELECT \
               COUNT(*) FILTER (WHERE status = 'running'), \
               COUNT(*) FILTER (WHERE status = 'running' AND due_at <= $1), \
               COUNT(*) FILTER (WHERE needs_attention) \
             FROM instances",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db("stats"))?;
        Ok(StoreStats {
            running: count(running)?,
            due: count(due)?,
            needs_attention: count(attention)?,
        })
    }

    async fn record_sales(&self, sales: &[SaleRecord]) -> Result<u64, StoreError> {
        let mut tx = self.begin("record_sales").await?;
        let mut new = 0u64;
        for s in sales {
            let quantity = i64::try_from(s.quantity).map_err(|_| {
                StoreError::Corrupt(format!("sale {}: quantity too large", s.dedupe_id))
            })?;
            let done = sqlx::query(
                "INSERT INTO sales (dedupe_id, business_line, category, sku, quantity, at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&s.dedupe_id)
            .bind(&s.business_line)
            .bind(&s.category)
            .bind(&s.sku)
            .bind(quantity)
            .bind(s.at)
            .execute(&mut *tx.0)
            .await
            .map_err(db("record_sales"))?;
            new += done.rows_affected();
        }
        tx.commit("record_sales").await?;
        Ok(new)
    }

    async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin("try_lock").await?;
        let held = tx.take_lock(name, holder, now, ttl_ms).await?;
        tx.commit("try_lock").await?;
        Ok(held)
    }

    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut tx = self.begin("unlock").await?;
        tx.release_lock(name, holder).await?;
        tx.commit("unlock").await
    }

    async fn lock_ops(&self, ops: &[LockOp]) -> Result<Vec<bool>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin("lock_ops").await?;
        let out = logic::lock_ops(&mut tx, ops).await?;
        tx.commit("lock_ops").await?;
        Ok(out)
    }

    /// Two: on the 2-core machine of docs/benchmarks.md a second commit transaction in
    /// flight bought 17–20% more saga steps/s; more bought nothing further.
    fn commit_writers(&self) -> usize {
        2
    }

    async fn clock_ms(&self) -> Result<Option<i64>, StoreError> {
        let ms: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(&self.pool)
                .await
                .map_err(db("clock"))?;
        Ok(Some(ms))
    }

    async fn due_feed(&self) -> Result<Option<DueFeed>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(db("listen"))?;
        listener.listen(DUE_CHANNEL).await.map_err(db("listen"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    got = listener.try_recv() => match got {
                        Ok(Some(_)) => {
                            // A full channel already holds a wake-up: this one coalesces.
                            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) =
                                tx.try_send(())
                            {
                                return;
                            }
                        }
                        // The connection dropped; the next call reconnects and listens
                        // again. Notifications sent meanwhile are lost: wake once, since
                        // something may have become due while deaf.
                        Ok(None) => {
                            if tx.try_send(()).is_err() && tx.is_closed() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "listening for due notifications failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Some(rx))
    }

    async fn sales_totals(&self, from: i64, to: i64) -> Result<Vec<SalesTotal>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT business_line, category, sku, CAST(SUM(quantity) AS BIGINT) FROM sales \
             WHERE at >= $1 AND at < $2 GROUP BY business_line, category, sku \
             ORDER BY business_line, category, sku",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(db("sales_totals"))?;
        Ok(rows
            .into_iter()
            .map(|(business_line, category, sku, quantity)| SalesTotal {
                business_line,
                category,
                sku,
                quantity: u64::try_from(quantity).unwrap_or(0),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("t_1").unwrap(), "\"t_1\"");
        assert_eq!(quote_ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert!(quote_ident("").is_err());
    }

    #[test]
    fn correlation_locks_are_stable() {
        // FNV-1a test vectors: the lock key must never change between releases.
        assert_eq!(correlation_lock(""), 0x811c_9dc5_u32 as i32);
        assert_eq!(correlation_lock("a"), 0xe40c_292c_u32 as i32);
        assert_eq!(correlation_lock("foobar"), 0xbf9c_f968_u32 as i32);
    }
}
