//! The SQLite store's write transactions, run whole on a blocking thread.
//!
//! Through sqlx every statement is a round trip between the async task and the connection's
//! worker thread, and a commit of a batch takes seven or more of them; measured, the writer spent
//! more of each transaction waiting between statements than running them. Here a
//! transaction's statements run back to back on one thread, as prepared statements kept
//! between transactions, with the same row logic (`crate::logic`) as the PostgreSQL store.
//!
//! The connection is the store's second handle on the file. It writes only while holding the
//! store's write slot, so the store still has one writer at a time and `BEGIN IMMEDIATE`
//! never waits on the file lock inside the process.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use aftersales_core::store::{InboxMessage, MessageKind, NewInstance, StoreError};
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::logic::{Append, Head, InstanceUpdate, Tx, heads};
use crate::rows::{InstanceRow, MessageRow, json_text, kind_str, sql_limit};
use crate::sqlite::{INBOX_COLS, INSTANCE_COLS};

/// `try_lock`: insert, or take over a lock that expired or is the holder's already.
const TAKE_LOCK: &str = "INSERT INTO named_locks (name, holder, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE named_locks.expires_at <= ?4 OR named_locks.holder = excluded.holder";

/// `update_instances`' statement for each set of changed columns: bit 0 `status`, bit 1
/// `due_at`, bit 2 `needs_attention`.
static UPDATE_INSTANCE: LazyLock<[String; 8]> = LazyLock::new(|| {
    std::array::from_fn(|bits| {
        format!(
            "UPDATE instances SET state = ?3, updated_at = ?6, \
             lease_owner = CASE WHEN ?7 THEN NULL ELSE lease_owner END, \
             lease_until = CASE WHEN ?7 THEN 0 ELSE MAX(lease_until, ?8) END{}{}{} \
             WHERE id = ?1",
            if bits & 1 != 0 { ", status = ?2" } else { "" },
            if bits & 2 != 0 { ", due_at = ?4" } else { "" },
            if bits & 4 != 0 {
                ", needs_attention = ?5"
            } else {
                ""
            },
        )
    })
});

/// `unlock`: only the holder's own lock.
const RELEASE_LOCK: &str = "DELETE FROM named_locks WHERE name = ?1 AND holder = ?2";

/// Maps a rusqlite error from operation `op`, as [`crate::error::db`] maps sqlx's: a value
/// that does not read back is [`StoreError::Corrupt`], anything else (a busy file, I/O, a
/// refused statement) [`StoreError::Unavailable`], and the transaction wrote nothing.
fn sdb(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(format!("{op}: {e}")),
        other => StoreError::Unavailable(format!("{op}: {other}")),
    }
}

/// The write connection, shared by the store's clones.
#[derive(Clone)]
pub(crate) struct SyncWriter {
    /// `None` once the store is closed.
    conn: Arc<Mutex<Option<Connection>>>,
    /// The store's one write slot: every write transaction, on this connection or on the
    /// sqlx one, runs while holding it, so they take turns in the process instead of
    /// waiting on the file lock.
    slot: Arc<tokio::sync::Mutex<()>>,
    /// Writes waiting for the next transaction, and whether a thread is writing them.
    queue: Arc<Mutex<Queue>>,
}

impl std::fmt::Debug for SyncWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncWriter").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    leading: bool,
}

/// What a queued write answers once its transaction has ended: `Ok` when it committed.
type Reply = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A queued write. Given the open transaction, it runs its work and says whether it wrote
/// (`false`: its work failed, and its savepoint is to be rolled back) and how to answer;
/// given an error (no transaction could be opened), it answers with that error.
type Job =
    Box<dyn for<'t, 'c> FnOnce(Result<&'t mut SyncTx<'c>, &StoreError>) -> (bool, Reply) + Send>;

impl SyncWriter {
    /// Opens the database file (already created and migrated through sqlx) with the pragmas
    /// the sqlx connections have: WAL, `synchronous=FULL`, foreign keys, the busy timeout;
    /// and temporary storage in memory. Each queued write runs in a savepoint, which keeps
    /// the pages it changes in a sub-journal until it is released; on disk (the default
    /// past 64 KiB, which a batch of step commits passes) every write created, wrote and
    /// deleted a temporary file, 11% of the writing thread's time (docs/benchmarks.md).
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<SyncWriter, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sdb("sqlite open"))?;
        conn.busy_timeout(busy_timeout)
            .map_err(sdb("sqlite open"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(sdb("sqlite open"))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(SyncWriter {
            conn: Arc::new(Mutex::new(Some(conn))),
            slot: Arc::new(tokio::sync::Mutex::new(())),
            queue: Arc::default(),
        })
    }

    /// Closes the connection once the transaction running on it (if any) has ended; later
    /// writes fail as [`StoreError::Unavailable`].
    pub(crate) async fn close(&self) {
        let conn = self.conn.clone();
        let closed = tokio::task::spawn_blocking(move || {
            conn.lock().unwrap_or_else(PoisonError::into_inner).take()
        })
        .await;
        if let Ok(Some(conn)) = closed
            && let Err((_, e)) = conn.close()
        {
            tracing::warn!(error = %e, "closing the SQLite write connection failed");
        }
    }

    /// The store's write slot; see [`SyncWriter::slot`].
    pub(crate) async fn slot(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.slot).lock_owned().await
    }

    /// Runs `work` in a write transaction on a blocking thread and answers once that
    /// transaction has committed (its writes are then durable), or with the error that
    /// rolled them back.
    ///
    /// Writes that arrive while a transaction is being written wait, and the next
    /// transaction takes all of them: each runs in a savepoint, in arrival order, and one
    /// `COMMIT` (one WAL sync) ends them all. A write whose work fails (or panics) is rolled
    /// back to its savepoint and answered with its error; the others are unaffected, exactly
    /// as if each had been a transaction of its own, run one after another. A claim, a start
    /// and a batch of step commits queued together so cost one sync instead of three.
    pub(crate) async fn transaction<T, F>(&self, op: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SyncTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |open: Result<&mut SyncTx<'_>, &StoreError>| {
            let out = match open {
                Ok(t) => work(t),
                Err(e) => Err(StoreError::Unavailable(format!("{op}: {e}"))),
            };
            match out {
                Ok(value) => (
                    true,
                    Box::new(move |committed: Result<(), &StoreError>| {
                        let answer = match committed {
                            Ok(()) => Ok(value),
                            Err(e) => Err(StoreError::Unavailable(format!(
                                "{op}: the commit failed, nothing was written: {e}"
                            ))),
                        };
                        let _ = tx.send(answer);
                    }) as Reply,
                ),
                Err(e) => (
                    false,
                    Box::new(move |_: Result<(), &StoreError>| {
                        let _ = tx.send(Err(e));
                    }) as Reply,
                ),
            }
        });
        let lead = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.jobs.push(job);
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            let leader = Leader {
                writer: self.clone(),
                done: false,
            };
            tokio::task::spawn_blocking(move || leader.run());
        }
        rx.await.map_err(|_| {
            StoreError::Unavailable(format!("{op}: the write failed (its thread panicked)"))
        })?
    }
}

/// The one thread writing queued jobs (`Queue::leading`).
struct Leader {
    writer: SyncWriter,
    /// Set once it has found the queue empty and stepped down.
    done: bool,
}

impl Leader {
    /// Writes queued jobs, a transaction for everything queued at a time, until none are
    /// left.
    fn run(mut self) {
        let w = &self.writer;
        loop {
            let jobs = {
                let mut queue = w.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.jobs.is_empty() {
                    queue.leading = false;
                    self.done = true;
                    return;
                }
                std::mem::take(&mut queue.jobs)
            };
            let _slot = w.slot.blocking_lock();
            let mut conn = w.conn.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(conn) = conn.as_mut() else {
                fail_all(
                    jobs,
                    &StoreError::Unavailable("the store is closed".to_owned()),
                );
                continue;
            };
            write_jobs(conn, jobs);
        }
    }
}

impl Drop for Leader {
    /// A leader dropped before it stepped down (its runtime shut down before the blocking
    /// task ran, or it panicked) steps down here, so the next write starts a new one
    /// instead of queueing behind nobody.
    fn drop(&mut self) {
        if !self.done {
            self.writer
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .leading = false;
        }
    }
}

/// Answers every job with `e`, running none.
fn fail_all(jobs: Vec<Job>, e: &StoreError) {
    for job in jobs {
        let (_, reply) = job(Err(e));
        reply(Err(e));
    }
}

/// One transaction for `jobs`, each in a savepoint; see [`SyncWriter::transaction`].
fn write_jobs(conn: &mut Connection, jobs: Vec<Job>) {
    let op = "write";
    let mut tx = match SyncTx::begin(conn, op) {
        Ok(tx) => tx,
        Err(e) => return fail_all(jobs, &e),
    };
    let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        if let Err(e) = tx.conn.execute_batch("SAVEPOINT job").map_err(sdb(op)) {
            answer(replies, Err(&e));
            return fail_all(jobs.collect(), &e);
        }
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(&mut tx))));
        let end = match ran {
            Ok((wrote, reply)) => {
                replies.push(reply);
                if wrote {
                    "RELEASE job"
                } else {
                    "ROLLBACK TO job; RELEASE job"
                }
            }
            // Its answer went with it: the caller hears that the write failed.
            Err(_) => "ROLLBACK TO job; RELEASE job",
        };
        if let Err(e) = tx.conn.execute_batch(end).map_err(sdb(op)) {
            // The transaction is in an unknown state: it is rolled back whole (on drop).
            answer(replies, Err(&e));
            return fail_all(jobs.collect(), &e);
        }
    }
    let committed = tx.commit(op);
    answer(replies, committed.as_ref().map(|_| ()));
}

fn answer(replies: Vec<Reply>, committed: Result<(), &StoreError>) {
    for reply in replies {
        reply(committed);
    }
}

/// Drives a future that never waits (the row logic over a [`SyncTx`], whose methods return
/// at once) to its end on the current thread.
pub(crate) fn complete<T>(
    op: &'static str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => Err(StoreError::Unavailable(format!(
            "{op}: a synchronous store transaction waited"
        ))),
    }
}

/// An open write transaction on the sync connection; rolled back when dropped uncommitted.
pub(crate) struct SyncTx<'c> {
    conn: &'c mut Connection,
    open: bool,
}

impl<'c> SyncTx<'c> {
    fn begin(conn: &'c mut Connection, op: &'static str) -> Result<SyncTx<'c>, StoreError> {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(sdb(op))?;
        Ok(SyncTx { conn, open: true })
    }

    fn commit(mut self, op: &'static str) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT").map_err(sdb(op))?;
        self.open = false;
        Ok(())
    }

    fn exec(
        &self,
        op: &'static str,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(args))
            .map_err(sdb(op))
    }
}

impl SyncTx<'_> {
    /// `Store::claim_due`: leases up to `limit` due instances, oldest due first, and reads
    /// their unconsumed messages, undecoded: the caller decodes them
    /// ([`crate::rows::claimed`]) after the transaction, outside the write slot.
    pub(crate) fn claim_due(
        &mut self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<(Vec<InstanceRow>, Vec<MessageRow>), StoreError> {
        let op = "claim_due";
        let mut claim = self
            .conn
            .prepare_cached(&format!(
                "UPDATE instances SET lease_owner = ?1, lease_until = ?2, \
                 lease_version = lease_version + 1 \
                 WHERE id IN (SELECT id FROM instances WHERE status = 'running' \
                     AND due_at IS NOT NULL AND due_at <= ?3 AND lease_until <= ?3 \
                     ORDER BY due_at, id LIMIT ?4) \
                 RETURNING {INSTANCE_COLS}"
            ))
            .map_err(sdb(op))?;
        let rows = claim
            .query_map(
                params![owner, now.saturating_add(lease_ms), now, sql_limit(limit)],
                instance_row,
            )
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sdb(op))?;
        drop(claim);
        let mut pending = self
            .conn
            .prepare_cached(&format!(
                "SELECT {INBOX_COLS} FROM inbox WHERE instance_id = ?1 AND consumed = 0 \
                 ORDER BY id"
            ))
            .map_err(sdb(op))?;
        let mut messages = Vec::new();
        for row in &rows {
            let found = pending
                .query_map([&row.id], message_row)
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(sdb(op))?;
            messages.extend(found);
        }
        Ok((rows, messages))
    }

    /// `Store::renew_leases`: the ids whose lease this owner still held and now holds longer.
    pub(crate) fn renew_leases(
        &mut self,
        owner: &str,
        ids: &[String],
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut renew = self
            .conn
            .prepare_cached(
                "UPDATE instances SET lease_until = MAX(lease_until, ?4) \
                 WHERE id = ?1 AND lease_owner = ?2 AND lease_until > ?3",
            )
            .map_err(sdb("renew_leases"))?;
        let mut held = Vec::new();
        for id in ids {
            let done = renew
                .execute(params![id, owner, now, now.saturating_add(lease_ms)])
                .map_err(sdb("renew_leases"))?;
            if done == 1 {
                held.push(id.clone());
            }
        }
        Ok(held)
    }
}

/// An `instances` row selected as `INSTANCE_COLS`, in that order.
fn instance_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok(InstanceRow {
        id: r.get(0)?,
        parent_id: r.get(1)?,
        workflow: r.get(2)?,
        version: r.get(3)?,
        business_line: r.get(4)?,
        status: r.get(5)?,
        idempotency_key: r.get(6)?,
        search_key: r.get(7)?,
        input: r.get(8)?,
        params: r.get(9)?,
        state: r.get(10)?,
        due_at: r.get(11)?,
        needs_attention: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
        lease_version: r.get(15)?,
        wake: r.get(16)?,
        meta: r.get(17)?,
    })
}

/// An `inbox` row selected as `INBOX_COLS`, in that order.
fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        instance_id: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        correlation: r.get(4)?,
        dedupe_id: r.get(5)?,
        payload: r.get(6)?,
        received_at: r.get(7)?,
    })
}

impl Drop for SyncTx<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            // Nothing of a failed transaction is kept; a rollback that fails leaves SQLite to
            // roll back when the connection next begins or closes.
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a failed SQLite write failed");
            }
        }
    }
}

#[async_trait]
impl Tx for SyncTx<'_> {
    async fn lock_correlations(&mut self, _: &[String], _: &[String]) -> Result<(), StoreError> {
        // One writer at a time: the transaction already excludes every other writer.
        Ok(())
    }

    async fn lock_instances(&mut self, _: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_heads(&mut self, ids: &[String]) -> Result<HashMap<String, Head>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, status, lease_version, wake, due_at, needs_attention \
                 FROM instances WHERE id = ?1",
            )
            .map_err(sdb("read instances"))?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = stmt
                .query_row([id], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .optional()
                .map_err(sdb("read instances"))?
            {
                rows.push(row);
            }
        }
        heads(rows)
    }

    async fn existing_ids(&mut self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM instances WHERE id = ?1)")
            .map_err(sdb("read instances"))?;
        let mut found = HashSet::new();
        for id in ids {
            if stmt
                .query_row([id], |r| r.get::<_, bool>(0))
                .map_err(sdb("read instances"))?
            {
                found.insert((*id).to_owned());
            }
        }
        Ok(found)
    }

    async fn guard_search_keys(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), u64>, StoreError> {
        // One writer at a time: the transaction already excludes every other create.
        let mut stmt = self
            .conn
            // `+business_line`: the search key's index, never the line's (every instance of
            // the line), whatever the planner would guess.
            .prepare_cached(
                "SELECT count(*) FROM instances WHERE search_key = ?1 AND +business_line = ?2",
            )
            .map_err(sdb("count instances by search key"))?;
        let mut out = HashMap::new();
        for (line, key) in keys {
            let n: i64 = stmt
                .query_row([key, line], |r| r.get(0))
                .map_err(sdb("count instances by search key"))?;
            out.insert(
                ((*line).to_owned(), (*key).to_owned()),
                u64::try_from(n).unwrap_or(0),
            );
        }
        Ok(out)
    }

    async fn key_owners(
        &mut self,
        keys: &[&str],
    ) -> Result<HashMap<String, (String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, request_hash FROM instances WHERE idempotency_key = ?1")
            .map_err(sdb("read idempotency keys"))?;
        let mut owners = HashMap::new();
        for key in keys {
            if let Some(owner) = stmt
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(sdb("read idempotency keys"))?
            {
                owners.insert((*key).to_owned(), owner);
            }
        }
        Ok(owners)
    }

    async fn insert_instances(
        &mut self,
        news: &[&NewInstance],
    ) -> Result<HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO instances (id, parent_id, workflow, version, business_line, status, \
                 idempotency_key, request_hash, search_key, input, params, state, due_at, \
                 created_at, updated_at, meta) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?12, \
                 ?13) ON CONFLICT DO NOTHING",
            )
            .map_err(sdb("insert instances"))?;
        let mut inserted = HashSet::new();
        for n in news {
            let done = stmt
                .execute(params![
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
                    json_text(&n.meta)?,
                ])
                .map_err(sdb("insert instances"))?;
            if done == 1 {
                inserted.insert(n.id.clone());
            }
        }
        Ok(inserted)
    }

    async fn append_histories(&mut self, items: &[Append<'_>]) -> Result<(), StoreError> {
        let mut last = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM history WHERE instance_id = ?1")
            .map_err(sdb("append history"))?;
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO history (instance_id, seq, at, kind, step, attempt, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(sdb("append history"))?;
        for item in items {
            if item.events.is_empty() {
                continue;
            }
            let mut seq: i64 = last
                .query_row([item.id], |r| r.get(0))
                .map_err(sdb("append history"))?;
            for (k, h) in item.events.iter().enumerate() {
                seq += 1;
                insert
                    .execute(params![
                        item.id,
                        seq,
                        h.at,
                        h.kind,
                        h.step,
                        h.attempt,
                        item.text(k)?
                    ])
                    .map_err(sdb("append history"))?;
            }
        }
        Ok(())
    }

    async fn update_instances(&mut self, updates: &[InstanceUpdate<'_>]) -> Result<(), StoreError> {
        for u in updates {
            // Only the columns that change: a step of a running saga sets neither status nor
            // due time nor flag, and so writes the row alone, no index and no CHECK.
            let c = u.changed;
            let variant = usize::from(c.status)
                | usize::from(c.due_at) << 1
                | usize::from(c.needs_attention) << 2;
            let mut stmt = self
                .conn
                .prepare_cached(&UPDATE_INSTANCE[variant])
                .map_err(sdb("update instance"))?;
            stmt.execute(params![
                u.id,
                u.status.as_str(),
                u.state.as_str(),
                u.due_at,
                u.needs_attention,
                u.now,
                u.release,
                u.extend_lease
            ])
            .map_err(sdb("update instance"))?;
        }
        Ok(())
    }

    async fn mark_consumed(&mut self, pairs: &[(&str, i64)]) -> Result<(), StoreError> {
        for (id, message) in pairs {
            self.exec(
                "consume messages",
                "UPDATE inbox SET consumed = 1 WHERE id = ?2 AND instance_id = ?1",
                params![id, message],
            )?;
        }
        Ok(())
    }

    async fn replace_waits(
        &mut self,
        items: &[(&str, &[(String, String)])],
    ) -> Result<(), StoreError> {
        for (id, waits) in items {
            self.exec(
                "replace waits",
                "DELETE FROM waits WHERE instance_id = ?1",
                [id],
            )?;
            for (name, correlation) in *waits {
                self.exec(
                    "replace waits",
                    "INSERT INTO waits (instance_id, name, correlation) VALUES (?1, ?2, ?3) \
                     ON CONFLICT DO NOTHING",
                    params![id, name, correlation],
                )?;
            }
        }
        Ok(())
    }

    async fn buffered_for(
        &mut self,
        correlations: &[String],
    ) -> Result<Vec<InboxMessage>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, name, correlation, dedupe_id, payload, received_at \
                 FROM buffered_events WHERE correlation = ?1",
            )
            .map_err(sdb("read buffered events"))?;
        let mut rows = Vec::new();
        for correlation in correlations {
            let found = stmt
                .query_map([correlation], |r| {
                    Ok(MessageRow {
                        id: r.get(0)?,
                        instance_id: String::new(),
                        kind: "event".to_owned(),
                        name: r.get(1)?,
                        correlation: r.get(2)?,
                        dedupe_id: r.get(3)?,
                        payload: r.get(4)?,
                        received_at: r.get(5)?,
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(sdb("read buffered events"))?;
            rows.extend(found);
        }
        // Oldest first across every key, as one `ORDER BY id` gives it.
        rows.sort_by_key(|r| r.id);
        rows.into_iter().map(MessageRow::into_message).collect()
    }

    async fn delete_buffered(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        for id in ids {
            self.exec(
                "hand over buffered events",
                "DELETE FROM buffered_events WHERE id = ?1",
                [id],
            )?;
        }
        Ok(())
    }

    async fn inbox_has(
        &mut self,
        id: &str,
        dedupe_id: &str,
        kind: Option<MessageKind>,
    ) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM inbox WHERE instance_id = ?1 AND dedupe_id = ?2 \
                 AND (?3 IS NULL OR kind = ?3))",
            )
            .and_then(|mut s| s.query_row(params![id, dedupe_id, kind.map(kind_str)], |r| r.get(0)))
            .map_err(sdb("read inbox"))
    }

    async fn insert_inbox(&mut self, id: &str, msg: &InboxMessage) -> Result<bool, StoreError> {
        let done = self.exec(
            "insert message",
            "INSERT INTO inbox (instance_id, kind, name, correlation, dedupe_id, payload, \
             received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            params![
                id,
                kind_str(msg.kind),
                msg.name,
                msg.correlation,
                msg.dedupe_id,
                json_text(&msg.payload)?,
                msg.received_at
            ],
        )?;
        Ok(done == 1)
    }

    async fn bump_wake(&mut self, id: &str, now: i64) -> Result<(), StoreError> {
        self.exec(
            "wake instance",
            "UPDATE instances SET wake = wake + 1, \
             due_at = CASE WHEN due_at IS NULL OR due_at > ?2 THEN ?2 ELSE due_at END \
             WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    async fn mark_event_seen(&mut self, name: &str, dedupe_id: &str) -> Result<bool, StoreError> {
        let done = self.exec(
            "record event",
            "INSERT INTO seen_events (name, dedupe_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![name, dedupe_id],
        )?;
        Ok(done == 1)
    }

    async fn waiters(&mut self, correlation: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.conn
            .prepare_cached("SELECT instance_id, name FROM waits WHERE correlation = ?1")
            .and_then(|mut s| {
                s.query_map([correlation], |r| Ok((r.get(0)?, r.get(1)?)))
                    .and_then(|rows| rows.collect())
            })
            .map_err(sdb("read waits"))
    }

    async fn buffer_event(&mut self, msg: &InboxMessage) -> Result<(), StoreError> {
        self.exec(
            "buffer event",
            "INSERT INTO buffered_events (name, correlation, dedupe_id, payload, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                msg.name,
                msg.correlation,
                msg.dedupe_id,
                json_text(&msg.payload)?,
                msg.received_at
            ],
        )?;
        Ok(())
    }

    async fn take_lock(
        &mut self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = self.exec(
            "try_lock",
            TAKE_LOCK,
            params![name, holder, now.saturating_add(ttl_ms), now],
        )?;
        Ok(done == 1)
    }

    async fn release_lock(&mut self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.exec("unlock", RELEASE_LOCK, params![name, holder])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_writer_keeps_its_savepoint_journals_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        // The store creates and migrates the file through sqlx before it opens this.
        drop(Connection::open(&path).unwrap());
        let writer = SyncWriter::open(&path, Duration::from_secs(1)).unwrap();
        let conn = writer.conn.lock().unwrap();
        let conn = conn.as_ref().unwrap();
        let temp_store: i64 = conn
            .query_row("PRAGMA temp_store", [], |r| r.get(0))
            .unwrap();
        assert_eq!(temp_store, 2, "2 is MEMORY");
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
    }
}
