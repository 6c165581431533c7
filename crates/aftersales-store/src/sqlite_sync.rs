//! The SQLite store's write transactions, run whole on a blocking thread.
//!
//! Through sqlx every statement is a round trip between the async task and the connection's
//! worker thread, and a commit of a batch takes seven or more of them; measured, the writer spent
//! more of each transaction waiting between statements than running them. Here a
//! transaction's statements run back to back on one thread, as prepared statements kept
//! between transactions, with the same row logic (`crate::logic`) as the PostgreSQL store.
//!
//! The connection is the store's second handle on the file. It writes only while its caller
//! holds the store's write slot, so the store still has one writer at a time and
//! `BEGIN IMMEDIATE` never waits on the file lock inside the process.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use aftersales_core::store::{InboxMessage, MessageKind, NewHistory, NewInstance, StoreError};
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::logic::{Head, InstanceUpdate, Tx, heads};
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
#[derive(Debug, Clone)]
pub(crate) struct SyncWriter {
    /// `None` once the store is closed.
    conn: Arc<Mutex<Option<Connection>>>,
}

impl SyncWriter {
    /// Opens the database file (already created and migrated through sqlx) with the pragmas
    /// the sqlx connections have: WAL, `synchronous=FULL`, foreign keys, the busy timeout.
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<SyncWriter, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sdb("sqlite open"))?;
        conn.busy_timeout(busy_timeout)
            .map_err(sdb("sqlite open"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(sdb("sqlite open"))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(SyncWriter {
            conn: Arc::new(Mutex::new(Some(conn))),
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

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction on a blocking thread, committing when
    /// it returns `Ok` and rolling back otherwise (also when it panics). `slot` is the
    /// store's write slot, held until the transaction has ended even if the caller stops
    /// waiting for it.
    pub(crate) async fn transaction<S, T, F>(
        &self,
        op: &'static str,
        slot: S,
        work: F,
    ) -> Result<T, StoreError>
    where
        S: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&mut SyncTx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let conn = conn
                .as_mut()
                .ok_or_else(|| StoreError::Unavailable(format!("{op}: the store is closed")))?;
            let mut tx = SyncTx::begin(conn, op)?;
            let out = work(&mut tx)?;
            tx.commit(op)?;
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("{op}: the write thread failed: {e}")))?
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
    /// their unconsumed messages.
    /// `Store::claim_due`'s rows and their unconsumed messages, undecoded: the caller decodes
    /// them ([`crate::rows::claimed`]) after giving the write slot back.
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

    async fn append_histories(
        &mut self,
        items: &[(&str, &[NewHistory])],
    ) -> Result<(), StoreError> {
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
        for (id, events) in items {
            if events.is_empty() {
                continue;
            }
            let mut seq: i64 = last
                .query_row([id], |r| r.get(0))
                .map_err(sdb("append history"))?;
            for h in *events {
                seq += 1;
                insert
                    .execute(params![
                        id,
                        seq,
                        h.at,
                        h.kind,
                        h.step,
                        h.attempt,
                        json_text(&h.data)?
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
