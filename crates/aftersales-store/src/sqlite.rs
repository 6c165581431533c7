//! The SQLite store: one file, WAL, one writer.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use aftersales_core::store::{
    Claimed, Commit, CommitOutcome, Created, DefinitionRecord, Delivered, Delivery, HistoryRecord,
    InboxMessage, InstanceRecord, ListFilter, LockOp, MessageKind, NewHistory, NewInstance,
    SaleRecord, SalesTotal, Store, StoreError, StoreStats,
};
use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use crate::error::db;
use crate::logic::{self, Head, InstanceUpdate, Tx, heads};
use crate::rows::{
    DefinitionRow, HistoryRow, InstanceRow, MessageRow, claimed, count, json_text, kind_str,
    sql_limit,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections for reads; WAL lets them run beside the one writer.
const READERS: u32 = 4;

const INSTANCE_COLS: &str = "id, parent_id, workflow, version, business_line, status, \
     idempotency_key, search_key, input, params, state, due_at, needs_attention, created_at, \
     updated_at, lease_version, wake, meta";

const INBOX_COLS: &str =
    "id, instance_id, kind, name, correlation, dedupe_id, payload, received_at";

/// The embedded store: everything in one SQLite file.
///
/// The file is opened in WAL journal mode with `synchronous=FULL`: in WAL mode `NORMAL` is safe
/// from corruption, but a power cut can roll back the last transactions after they reported
/// success, and a store that records refunds must not forget a committed write; `FULL` syncs
/// the WAL on every commit, which group commit keeps affordable. `busy_timeout` is 5 s.
///
/// Writes go through a pool of exactly one connection, and each write transaction starts with
/// `BEGIN IMMEDIATE`, so writers queue instead of failing with `SQLITE_BUSY` (also against
/// another process on the same file); reads use a separate small pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at a file path or a `sqlite:` URL
    /// (`sqlite://data/aftersales.db`, `sqlite:aftersales.db?mode=rwc`, `sqlite::memory:`),
    /// and applies the migrations.
    pub async fn open(path_or_url: &str) -> Result<SqliteStore, StoreError> {
        if is_memory(path_or_url) {
            return SqliteStore::in_memory().await;
        }
        let options = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url).map_err(db("sqlite open"))?
        } else {
            SqliteConnectOptions::new().filename(path_or_url)
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT);
        // A missing file is created, and so is its directory.
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("sqlite open: creating {}: {e}", dir.display()))
            })?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(db("sqlite open"))?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| db("sqlite migrate")(e.into()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await
            .map_err(db("sqlite open"))?;
        Ok(SqliteStore { writer, reader })
    }

    /// A fresh, empty in-memory database (for tests): one connection that lives as long as
    /// the store, used for reads and writes alike.
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db("sqlite open"))?
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db("sqlite open"))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| db("sqlite migrate")(e.into()))?;
        Ok(SqliteStore {
            writer: pool.clone(),
            reader: pool,
        })
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn begin(&self, op: &'static str) -> Result<SqliteTx, StoreError> {
        Ok(SqliteTx(
            self.writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(db(op))?,
        ))
    }
}

/// `try_lock`: insert, or take over a lock that expired or is the holder's already.
const TAKE_LOCK: &str = "INSERT INTO named_locks (name, holder, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE named_locks.expires_at <= ?4 OR named_locks.holder = excluded.holder";

/// `unlock`: only the holder's own lock.
const RELEASE_LOCK: &str = "DELETE FROM named_locks WHERE name = ?1 AND holder = ?2";

fn is_memory(path_or_url: &str) -> bool {
    path_or_url == ":memory:" || path_or_url.contains(":memory:") || {
        path_or_url.starts_with("sqlite:") && path_or_url.contains("mode=memory")
    }
}

/// A JSON array of values, for `IN (SELECT value FROM json_each(?))`.
fn json_list<T: serde::Serialize>(items: &[T]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| crate::error::json_corrupt("id list", e))
}

/// A write transaction (`BEGIN IMMEDIATE` on the single writer connection).
struct SqliteTx(Transaction<'static, Sqlite>);

impl SqliteTx {
    async fn commit(self, op: &'static str) -> Result<(), StoreError> {
        self.0.commit().await.map_err(db(op))
    }
}

#[async_trait]
impl Tx for SqliteTx {
    async fn lock_correlations(&mut self, _: &[String], _: &[String]) -> Result<(), StoreError> {
        // One writer at a time: the transaction already excludes every other writer.
        Ok(())
    }

    async fn lock_instances(&mut self, _: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_heads(&mut self, ids: &[String]) -> Result<HashMap<String, Head>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        // The write transaction already excludes every other writer: reading is locking.
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT id, status, lease_version, wake FROM instances \
             WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(ids)?)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("read instances"))?;
        heads(rows)
    }

    async fn existing_ids(&mut self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM instances WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(ids)?)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("read instances"))?;
        Ok(found.into_iter().collect())
    }

    async fn key_owners(
        &mut self,
        keys: &[&str],
    ) -> Result<HashMap<String, (String, String)>, StoreError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT idempotency_key, id, request_hash FROM instances \
             WHERE idempotency_key IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(keys)?)
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
        // One JSON array of rows; the JSON columns as strings, stored exactly as serialised.
        let rows = news
            .iter()
            .map(|n| {
                Ok(json!([
                    n.id,
                    n.parent_id,
                    n.workflow,
                    n.version,
                    n.business_line,
                    n.idempotency_key,
                    n.request_hash,
                    n.search_key,
                    json_text(&n.input)?,
                    json_text(&n.params)?,
                    json_text(&n.state)?,
                    n.now,
                    json_text(&n.meta)?
                ]))
            })
            .collect::<Result<Vec<Value>, StoreError>>()?;
        // `WHERE true`: SQLite's grammar needs it between a SELECT and an upsert clause.
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO instances (id, parent_id, workflow, version, business_line, status, \
             idempotency_key, request_hash, search_key, input, params, state, due_at, \
             created_at, updated_at, meta) \
             SELECT u.value ->> 0, u.value ->> 1, u.value ->> 2, u.value ->> 3, u.value ->> 4, \
                 'running', u.value ->> 5, u.value ->> 6, u.value ->> 7, u.value ->> 8, \
                 u.value ->> 9, u.value ->> 10, u.value ->> 11, u.value ->> 11, \
                 u.value ->> 11, u.value ->> 12 \
             FROM json_each(?1) AS u WHERE true ORDER BY u.key \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(json_text(&Value::Array(rows))?)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("insert instances"))?;
        Ok(inserted.into_iter().collect())
    }

    async fn append_histories(
        &mut self,
        items: &[(&str, &[NewHistory])],
    ) -> Result<(), StoreError> {
        // One JSON array of rows for the whole batch: `[id, ord, at, kind, step, attempt,
        // data]`, with the data as a string so it is stored exactly as serialised.
        let mut rows: Vec<Value> = Vec::new();
        for (id, events) in items {
            for (ord, h) in (1i64..).zip(events.iter()) {
                rows.push(json!([
                    id,
                    ord,
                    h.at,
                    h.kind,
                    h.step,
                    h.attempt,
                    json_text(&h.data)?
                ]));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        // SQLite runs a SELECT that reads the table it inserts into to completion first, so
        // each instance's events follow its last sequence number in order.
        sqlx::query(
            "INSERT INTO history (instance_id, seq, at, kind, step, attempt, data) \
             SELECT u.value ->> 0, COALESCE((SELECT MAX(h.seq) FROM history h \
                 WHERE h.instance_id = u.value ->> 0), 0) + (u.value ->> 1), \
             u.value ->> 2, u.value ->> 3, u.value ->> 4, u.value ->> 5, u.value ->> 6 \
             FROM json_each(?1) AS u",
        )
        .bind(json_text(&Value::Array(rows))?)
        .execute(&mut *self.0)
        .await
        .map_err(db("append history"))?;
        Ok(())
    }

    async fn update_instances(&mut self, updates: &[InstanceUpdate<'_>]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let rows = updates
            .iter()
            .map(|u| {
                Ok(json!([
                    u.id,
                    u.status.as_str(),
                    json_text(u.state)?,
                    u.due_at,
                    u.needs_attention,
                    u.now,
                    u.release,
                    u.extend_lease
                ]))
            })
            .collect::<Result<Vec<Value>, StoreError>>()?;
        sqlx::query(
            "UPDATE instances SET status = u.value ->> 1, state = u.value ->> 2, \
             due_at = u.value ->> 3, needs_attention = u.value ->> 4, updated_at = u.value ->> 5, \
             lease_owner = CASE WHEN u.value ->> 6 THEN NULL ELSE lease_owner END, \
             lease_until = CASE WHEN u.value ->> 6 THEN 0 \
                 ELSE MAX(lease_until, u.value ->> 7) END \
             FROM json_each(?1) AS u WHERE instances.id = u.value ->> 0",
        )
        .bind(json_text(&Value::Array(rows))?)
        .execute(&mut *self.0)
        .await
        .map_err(db("update instance"))?;
        Ok(())
    }

    async fn mark_consumed(&mut self, pairs: &[(&str, i64)]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE inbox SET consumed = 1 FROM json_each(?1) AS u \
             WHERE inbox.id = u.value ->> 1 AND inbox.instance_id = u.value ->> 0",
        )
        .bind(json_list(pairs)?)
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
        sqlx::query("DELETE FROM waits WHERE instance_id IN (SELECT value FROM json_each(?1))")
            .bind(json_list(&ids)?)
            .execute(&mut *self.0)
            .await
            .map_err(db("replace waits"))?;
        let rows: Vec<(&str, &str, &str)> = items
            .iter()
            .flat_map(|(id, waits)| {
                waits
                    .iter()
                    .map(move |(n, k)| (*id, n.as_str(), k.as_str()))
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        // `WHERE true` tells the parser the `ON CONFLICT` is the upsert clause.
        sqlx::query(
            "INSERT INTO waits (instance_id, name, correlation) \
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1) WHERE true \
             ON CONFLICT DO NOTHING",
        )
        .bind(json_list(&rows)?)
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
             payload, received_at FROM buffered_events \
             WHERE correlation IN (SELECT value FROM json_each(?1)) ORDER BY id",
        )
        .bind(json_list(correlations)?)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("read buffered events"))?;
        rows.into_iter().map(MessageRow::into_message).collect()
    }

    async fn delete_buffered(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM buffered_events WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(json_list(ids)?)
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
            "SELECT EXISTS (SELECT 1 FROM inbox WHERE instance_id = ?1 AND dedupe_id = ?2 \
             AND (?3 IS NULL OR kind = ?3))",
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
             received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
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
             due_at = CASE WHEN due_at IS NULL OR due_at > ?2 THEN ?2 ELSE due_at END \
             WHERE id = ?1",
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
            "INSERT INTO seen_events (name, dedupe_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(dedupe_id)
        .execute(&mut *self.0)
        .await
        .map_err(db("record event"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn waiters(&mut self, correlation: &str) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as("SELECT instance_id, name FROM waits WHERE correlation = ?1")
            .bind(correlation)
            .fetch_all(&mut *self.0)
            .await
            .map_err(db("read waits"))
    }

    async fn buffer_event(&mut self, msg: &InboxMessage) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO buffered_events (name, correlation, dedupe_id, payload, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
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
impl Store for SqliteStore {
    async fn put_definition(&self, def: &DefinitionRecord) -> Result<(), StoreError> {
        let mut tx = self.begin("put_definition").await?;
        sqlx::query(
            "INSERT INTO definitions (name, version, source, hash, deployed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
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
            sqlx::query_scalar("SELECT hash FROM definitions WHERE name = ?1 AND version = ?2")
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
        .fetch_all(&self.reader)
        .await
        .map_err(db("definitions"))?;
        rows.into_iter().map(DefinitionRow::into_record).collect()
    }

    async fn create_instance(&self, new: NewInstance) -> Result<Created, StoreError> {
        let mut tx = self.begin("create_instance").await?;
        let created = logic::create_instance(&mut tx, &new).await?;
        tx.commit("create_instance").await?;
        Ok(created)
    }

    async fn create_instances(
        &self,
        news: Vec<NewInstance>,
    ) -> Result<Vec<Result<Created, StoreError>>, StoreError> {
        let mut tx = self.begin("create_instance").await?;
        let out = logic::create_instances(&mut tx, &news).await?;
        tx.commit("create_instance").await?;
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
        let rows: Vec<InstanceRow> = sqlx::query_as(&format!(
            "UPDATE instances SET lease_owner = ?1, lease_until = ?2, \
             lease_version = lease_version + 1 \
             WHERE id IN (SELECT id FROM instances WHERE status = 'running' \
                 AND due_at IS NOT NULL AND due_at <= ?3 AND lease_until <= ?3 \
                 ORDER BY due_at, id LIMIT ?4) \
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
        let messages: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {INBOX_COLS} FROM inbox WHERE consumed = 0 \
             AND instance_id IN (SELECT value FROM json_each(?1)) ORDER BY id"
        ))
        .bind(json_list(&ids)?)
        .fetch_all(&mut *tx.0)
        .await
        .map_err(db("claim_due"))?;
        tx.commit("claim_due").await?;
        claimed(rows, messages)
    }

    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>, StoreError> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin("commit").await?;
        let out = logic::commit(&mut tx, &commits).await?;
        tx.commit("commit").await?;
        Ok(out)
    }

    async fn deliver(&self, delivery: Delivery, now: i64) -> Result<Delivered, StoreError> {
        let mut tx = self.begin("deliver").await?;
        let out = logic::deliver(&mut tx, delivery, now).await?;
        tx.commit("deliver").await?;
        Ok(out)
    }

    async fn get_instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let row: Option<InstanceRow> = sqlx::query_as(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db("get_instance"))?;
        row.map(InstanceRow::into_record).transpose()
    }

    async fn find_by_key(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let row: Option<InstanceRow> = sqlx::query_as(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE idempotency_key = ?1"
        ))
        .bind(key)
        .fetch_optional(&self.reader)
        .await
        .map_err(db("find_by_key"))?;
        row.map(InstanceRow::into_record).transpose()
    }

    async fn list_instances(&self, f: &ListFilter) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {INSTANCE_COLS} FROM instances WHERE 1 = 1"));
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
            .fetch_all(&self.reader)
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
            "SELECT seq, at, kind, step, attempt, data FROM history \
             WHERE instance_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(id)
        .bind(after_seq)
        .bind(sql_limit(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db("history"))?;
        rows.into_iter().map(HistoryRow::into_record).collect()
    }

    async fn next_due_at(&self, now: i64) -> Result<Option<i64>, StoreError> {
        let pool = &self.reader;
        logic::next_due_at(now, |due, id| async move {
            sqlx::query_as(
                "SELECT due_at, id, lease_until FROM instances \
                 WHERE status = 'running' AND due_at IS NOT NULL \
                 AND (due_at > ?2 OR (due_at = ?2 AND id > ?3)) \
                 ORDER BY due_at, id LIMIT ?1",
            )
            .bind(logic::NEXT_DUE_PAGE)
            .bind(due)
            .bind(id)
            .fetch_all(pool)
            .await
            .map_err(db("next_due_at"))
        })
        .await
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
        let mut tx = self.begin("renew_leases").await?;
        let mut held = Vec::new();
        for id in ids {
            let done = sqlx::query(
                "UPDATE instances SET lease_until = MAX(lease_until, ?4) \
                 WHERE id = ?1 AND lease_owner = ?2 AND lease_until > ?3",
            )
            .bind(id)
            .bind(owner)
            .bind(now)
            .bind(now.saturating_add(lease_ms))
            .execute(&mut *tx.0)
            .await
            .map_err(db("renew_leases"))?;
            if done.rows_affected() == 1 {
                held.push(id.clone());
            }
        }
        tx.commit("renew_leases").await?;
        Ok(held)
    }

    async fn stats(&self, now: i64) -> Result<StoreStats, StoreError> {
        let (running, due, attention): (i64, i64, i64) = sqlx::query_as(
            "SELECT \
               (SELECT COUNT(*) FROM instances WHERE status = 'running'), \
               (SELECT COUNT(*) FROM instances \
                  WHERE status = 'running' AND due_at IS NOT NULL AND due_at <= ?1), \
               (SELECT COUNT(*) FROM instances WHERE needs_attention = 1)",
        )
        .bind(now)
        .fetch_one(&self.reader)
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
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

    async fn sales_totals(&self, from: i64, to: i64) -> Result<Vec<SalesTotal>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT business_line, category, sku, CAST(SUM(quantity) AS BIGINT) FROM sales \
             WHERE at >= ?1 AND at < ?2 GROUP BY business_line, category, sku \
             ORDER BY business_line, category, sku",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.reader)
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
