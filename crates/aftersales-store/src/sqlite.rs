//! The SQLite store: one file, WAL, one writer.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use aftersales_core::store::{
    Claimed, Commit, CommitOutcome, Created, DefinitionRecord, Delivered, Delivery, HistoryRecord,
    InstanceRecord, ListFilter, LockOp, NewInstance, SaleRecord, SalesTotal, Store, StoreError,
    StoreStats,
};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use crate::error::db;
use crate::logic::{self, Tx};
use crate::rows::{DefinitionRow, HistoryRow, InstanceRow, claimed, count, sql_limit};
use crate::sqlite_sync::{SyncTx, SyncWriter, complete};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections for reads; WAL lets them run beside the one writer.
const READERS: u32 = 4;

/// The columns of an [`InstanceRow`], in its order.
pub(crate) const INSTANCE_COLS: &str = "id, parent_id, workflow, version, business_line, status, \
     idempotency_key, search_key, input, params, state, due_at, needs_attention, created_at, \
     updated_at, lease_version, wake, meta";

/// The columns of a [`crate::rows::MessageRow`], in its order.
pub(crate) const INBOX_COLS: &str =
    "id, instance_id, kind, name, correlation, dedupe_id, payload, received_at";

/// The embedded store: everything in one SQLite file.
///
/// The file is opened in WAL journal mode with `synchronous=FULL`: in WAL mode `NORMAL` is safe
/// from corruption, but a power cut can roll back the last transactions after they reported
/// success, and a store that records refunds must not forget a committed write; `FULL` syncs
/// the WAL on every commit, which group commit keeps affordable. `busy_timeout` is 5 s.
///
/// One write transaction at a time: every writer first takes the store's write slot (an
/// async mutex), and each write transaction starts with `BEGIN IMMEDIATE`, so writers queue
/// instead of failing with `SQLITE_BUSY` (also against another process on the same file);
/// reads use a separate small pool. Definitions and sales are written on the sqlx writer
/// connection; creates, commits, deliveries, claims, lease renewals and lock operations run
/// on a synchronous connection on a blocking thread (`crate::sqlite_sync`).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The synchronous write connection: creates, commits, deliveries, claims, renewals, locks.
    sync: SyncWriter,
    /// The private directory of an in-memory store's file, removed with the last clone.
    _scratch: Option<Arc<tempfile::TempDir>>,
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at a file path or a `sqlite:` URL
    /// (`sqlite://data/aftersales.db`, `sqlite:aftersales.db?mode=rwc`, `sqlite::memory:`),
    /// and applies the migrations.
    pub async fn open(path_or_url: &str) -> Result<SqliteStore, StoreError> {
        if is_memory(path_or_url) {
            return SqliteStore::in_memory().await;
        }
        SqliteStore::open_file(path_or_url).await
    }

    async fn open_file(path_or_url: &str) -> Result<SqliteStore, StoreError> {
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
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(db("sqlite open"))?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| db("sqlite migrate")(e.into()))?;
        let sync = SyncWriter::open(options.get_filename(), BUSY_TIMEOUT)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db("sqlite open"))?;
        Ok(SqliteStore {
            writer,
            reader,
            sync,
            _scratch: None,
        })
    }

    /// A fresh, empty private database (`sqlite::memory:`): a file in a new temporary
    /// directory, removed when the last clone of the store is dropped (a crash leaves it
    /// behind in the system's temporary directory). A file rather than SQLite's in-memory
    /// mode because the store reaches its database through two connections (see
    /// `crate::sqlite_sync`), and an in-memory database belongs to one.
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("aftersales-memory-")
            .tempdir()
            .map_err(|e| {
                StoreError::Unavailable(format!("sqlite open: a temporary directory: {e}"))
            })?;
        let mut store =
            SqliteStore::open_file(&dir.path().join("store.db").to_string_lossy()).await?;
        store._scratch = Some(Arc::new(dir));
        Ok(store)
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.sync.close().await;
        self.writer.close().await;
        self.reader.close().await;
    }

    /// Runs `work` as one write transaction on the synchronous connection, holding the
    /// store's write slot meanwhile, so this transaction and the sqlx ones
    /// ([`SqliteStore::begin`]) take turns instead of waiting on the file lock.
    async fn write<T, F>(&self, op: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SyncTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.sync.transaction(op, work).await
    }

    async fn begin(&self, op: &'static str) -> Result<SqliteTx, StoreError> {
        let slot = self.sync.slot().await;
        let tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db(op))?;
        Ok(SqliteTx { tx, _slot: slot })
    }
}

fn is_memory(path_or_url: &str) -> bool {
    path_or_url == ":memory:" || path_or_url.contains(":memory:") || {
        path_or_url.starts_with("sqlite:") && path_or_url.contains("mode=memory")
    }
}

/// A write transaction (`BEGIN IMMEDIATE` on the sqlx writer connection), holding the
/// store's write slot until it ends.
struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    _slot: tokio::sync::OwnedMutexGuard<()>,
}

impl SqliteTx {
    async fn commit(self, op: &'static str) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(db(op))
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
        .execute(&mut *tx.tx)
        .await
        .map_err(db("put_definition"))?;
        let hash: String =
            sqlx::query_scalar("SELECT hash FROM definitions WHERE name = ?1 AND version = ?2")
                .bind(&def.name)
                .bind(i64::from(def.version))
                .fetch_one(&mut *tx.tx)
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
        self.write("create_instance", move |tx| {
            complete("create_instance", logic::create_instance(tx, &new))
        })
        .await
    }

    async fn create_instances(
        &self,
        news: Vec<NewInstance>,
    ) -> Result<Vec<Result<Created, StoreError>>, StoreError> {
        // The requests go back with the answer, to be dropped on the caller's task.
        self.write("create_instance", move |tx| {
            let out = complete("create_instance", logic::create_instances(tx, &news))?;
            Ok((out, news))
        })
        .await
        .map(|(out, _)| out)
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
        let owner = owner.to_owned();
        let (rows, messages) = self
            .write("claim_due", move |tx| {
                tx.claim_due(&owner, now, lease_ms, limit)
            })
            .await?;
        // Decoded once the write slot is free again: parsing a batch's JSON is most of a
        // claim's cost, and the writer is the store's one serial resource.
        Ok(claimed(rows, messages))
    }

    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>, StoreError> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        // Encoded here, on the caller's task, not by the one writing thread; and the commits
        // go back with the answer, to be dropped here too.
        let texts = logic::history_texts(&commits)?;
        self.write("commit", move |tx| {
            let out = complete("commit", logic::commit(tx, &commits, Some(&texts)))?;
            Ok((out, commits, texts))
        })
        .await
        .map(|(out, ..)| out)
    }

    async fn deliver(&self, delivery: Delivery, now: i64) -> Result<Delivered, StoreError> {
        self.write("deliver", move |tx| {
            complete("deliver", logic::deliver(tx, delivery, now))
        })
        .await
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
        static SQL: LazyLock<String> = LazyLock::new(|| logic::next_due_sql("MAX", "?1"));
        sqlx::query_scalar(&SQL)
            .bind(now)
            .fetch_one(&self.reader)
            .await
            .map_err(db("next_due_at"))
    }

    /// Two: writes queued together share one transaction (`SyncWriter::transaction`), so a
    /// second commit batch in flight joins the transaction being written, or is the next one
    /// at once, instead of waiting for the first batch's answers to come back through the
    /// committer. Saga on the 2-core machine of docs/benchmarks.md: +25–35% steps/s.
    fn commit_writers(&self) -> usize {
        2
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
        let (owner, ids) = (owner.to_owned(), ids.to_vec());
        self.write("renew_leases", move |tx| {
            tx.renew_leases(&owner, &ids, now, lease_ms)
        })
        .await
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
            .execute(&mut *tx.tx)
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
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write("try_lock", move |tx| {
            complete("try_lock", tx.take_lock(&name, &holder, now, ttl_ms))
        })
        .await
    }

    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write("unlock", move |tx| {
            complete("unlock", tx.release_lock(&name, &holder))
        })
        .await
    }

    async fn lock_ops(&self, ops: &[LockOp]) -> Result<Vec<bool>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let ops = ops.to_vec();
        self.write("lock_ops", move |tx| {
            complete("lock_ops", logic::lock_ops(tx, &ops))
        })
        .await
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
