//! The persistence contract of the engine: what a store must do, not how.
//!
//! The engine talks to storage only through [`Store`]. `aftersales-store` implements it on
//! SQLite and PostgreSQL; [`memory::MemoryStore`] is the reference implementation the engine's
//! own tests run on. Every method names an instance (or a correlation key that leads to
//! one), so instances can later be partitioned by shard.
//!
//! Times are unix milliseconds taken from the engine's clock and passed in: a store never
//! reads the wall clock itself.

pub mod memory;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Errors a store reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The same idempotency key was used before with a different request.
    #[error(
        "idempotency key `{key}` was already used for a different request (instance {existing})"
    )]
    KeyConflict {
        /// The key.
        key: String,
        /// The instance it started.
        existing: String,
    },
    /// A definition with this name and version exists with different content.
    #[error(
        "workflow `{name}@{version}` is already deployed with different content; deploy a new version"
    )]
    DefinitionConflict {
        /// Workflow name.
        name: String,
        /// Version.
        version: u32,
    },
    /// A create that said how many instances it had read under its search key found more
    /// stored ([`NewInstance::search_seen`]): another was created since. Nothing was
    /// written; read again and decide again.
    #[error(
        "instances of `{business_line}` with search key `{key}` changed since they were read \
         ({seen} read, {stored} stored); read them again and retry"
    )]
    SearchKeyMoved {
        /// The business line.
        business_line: String,
        /// The search key.
        key: String,
        /// How many the caller had read.
        seen: u64,
        /// How many are stored.
        stored: u64,
    },
    /// The database is unreachable or refused the operation; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Data in the store could not be decoded (a bug or a corrupted row).
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
}

/// The lifecycle status of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Running, waiting or sleeping.
    Running,
    /// Ended `completed`.
    Completed,
    /// Ended `rejected`.
    Rejected,
    /// Ended `closed`.
    Closed,
    /// Ended `failed` (a person should look).
    Failed,
    /// Cancelled on request, after compensation.
    Cancelled,
}

impl InstanceStatus {
    /// The name stored and shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            InstanceStatus::Running => "running",
            InstanceStatus::Completed => "completed",
            InstanceStatus::Rejected => "rejected",
            InstanceStatus::Closed => "closed",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<InstanceStatus> {
        Some(match s {
            "running" => InstanceStatus::Running,
            "completed" => InstanceStatus::Completed,
            "rejected" => InstanceStatus::Rejected,
            "closed" => InstanceStatus::Closed,
            "failed" => InstanceStatus::Failed,
            "cancelled" => InstanceStatus::Cancelled,
            _ => return None,
        })
    }

    /// True once the instance has ended.
    pub fn is_final(&self) -> bool {
        *self != InstanceStatus::Running
    }
}

/// A workflow definition as deployed: instances are pinned to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionRecord {
    /// Workflow name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// The TOML source, so an instance can finish on it after the file is gone.
    pub source: String,
    /// SHA-256 of the source, hex.
    pub hash: String,
    /// When it was first deployed.
    pub deployed_at: i64,
}

/// A request to start an instance.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// The instance id (UUID v7, or derived from the parent for children).
    pub id: String,
    /// The caller's idempotency key: the same key returns the same instance.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the canonical request, to tell a repeat from a conflicting reuse.
    pub request_hash: String,
    /// Workflow name.
    pub workflow: String,
    /// Pinned version.
    pub version: u32,
    /// The business line it runs for.
    pub business_line: String,
    /// Validated input.
    pub input: Value,
    /// The business line's parameters, frozen at start.
    pub params: Value,
    /// The engine's initial execution state.
    pub state: Value,
    /// The caller's record attached to the instance (the after-sales service order); opaque
    /// to the engine, `null` when none. Written once, with the instance.
    pub meta: Value,
    /// The parent instance, for sub-workflows.
    pub parent_id: Option<String>,
    /// A searchable key (the order id), optional.
    pub search_key: Option<String>,
    /// With a search key: how many instances of this business line with this key the caller
    /// read before deciding to create this one. When more are stored by the time of the
    /// create (in one transaction with it), it fails with [`StoreError::SearchKeyMoved`]
    /// and writes nothing. Creates that say this are serialised per (business line, key),
    /// so a caller deciding from the instances already stored (how much of an order is
    /// still refundable) never races a concurrent create under the same key, whichever
    /// process makes it. Checked after the idempotency key and the id: a repeat still
    /// returns its instance. `None`: no check.
    pub search_seen: Option<u64>,
    /// Creation time.
    pub now: i64,
    /// The first history event.
    pub history: Vec<NewHistory>,
}

impl NewInstance {
    /// The (business line, search key) this create is guarded on, when it says how many
    /// instances it read there ([`NewInstance::search_seen`]).
    pub fn search_guard(&self) -> Option<(&str, &str)> {
        match (&self.search_key, self.search_seen) {
            (Some(key), Some(_)) => Some((self.business_line.as_str(), key.as_str())),
            _ => None,
        }
    }

    /// [`StoreError::SearchKeyMoved`] when this create is guarded and `stored` instances
    /// under its guard are not the number it read.
    pub fn check_search_seen(&self, stored: u64) -> Result<(), StoreError> {
        match (&self.search_key, self.search_seen) {
            (Some(key), Some(seen)) if seen != stored => Err(StoreError::SearchKeyMoved {
                business_line: self.business_line.clone(),
                key: key.clone(),
                seen,
                stored,
            }),
            _ => Ok(()),
        }
    }

    /// The record every store keeps for this create: running, due at once, created and
    /// updated at [`NewInstance::now`]. What a read right after the create returns, before
    /// any worker has advanced it.
    pub fn record(&self) -> InstanceRecord {
        InstanceRecord {
            id: self.id.clone(),
            parent_id: self.parent_id.clone(),
            workflow: self.workflow.clone(),
            version: self.version,
            business_line: self.business_line.clone(),
            status: InstanceStatus::Running,
            idempotency_key: self.idempotency_key.clone(),
            search_key: self.search_key.clone(),
            input: self.input.clone(),
            params: self.params.clone(),
            state: self.state.clone(),
            meta: self.meta.clone(),
            due_at: Some(self.now),
            needs_attention: false,
            created_at: self.now,
            updated_at: self.now,
        }
    }
}

/// JSON serialised once by its producer and stored as it is: an instance's execution state
/// in a [`Commit`]. The engine encodes its state straight to text on its own task, so a
/// store's single writer binds the text instead of encoding a [`Value`] inside its
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// Serialises `value`.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<JsonText, StoreError> {
        serde_json::to_string(value)
            .map(JsonText)
            .map_err(|e| StoreError::Corrupt(format!("encoding JSON to store: {e}")))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parsed back.
    pub fn decode(&self) -> Result<Value, StoreError> {
        serde_json::from_str(&self.0)
            .map_err(|e| StoreError::Corrupt(format!("stored JSON does not parse: {e}")))
    }
}

/// The outcome of [`Store::create_instance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new instance was stored.
    New(String),
    /// The idempotency key was used before with the same request: the existing instance.
    Existing(String),
}

impl Created {
    /// The instance id either way.
    pub fn id(&self) -> &str {
        match self {
            Created::New(id) | Created::Existing(id) => id,
        }
    }
}

/// An instance as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// Id.
    pub id: String,
    /// Parent instance, for sub-workflows.
    pub parent_id: Option<String>,
    /// Workflow name.
    pub workflow: String,
    /// Pinned version.
    pub version: u32,
    /// Business line.
    pub business_line: String,
    /// Status.
    pub status: InstanceStatus,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Searchable key.
    pub search_key: Option<String>,
    /// Input.
    pub input: Value,
    /// Parameters.
    pub params: Value,
    /// The engine's execution state (opaque to the store).
    pub state: Value,
    /// The caller's record attached at start (`null` when none).
    pub meta: Value,
    /// When the engine wants to look at it next; `None` when finished.
    pub due_at: Option<i64>,
    /// Flagged for a person (a compensation that could not succeed, a step failed past the
    /// pivot).
    pub needs_attention: bool,
    /// Creation time.
    pub created_at: i64,
    /// Last update.
    pub updated_at: i64,
}

/// A message waiting in an instance's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Store-assigned id, increasing per instance.
    pub id: i64,
    /// What kind of message.
    pub kind: MessageKind,
    /// Signal or event name (`merchant.decision`, `warehouse.return.received`).
    pub name: String,
    /// The correlation key of an event.
    pub correlation: Option<String>,
    /// The sender's dedupe id.
    pub dedupe_id: String,
    /// Payload.
    pub payload: Value,
    /// When it arrived.
    pub received_at: i64,
}

/// Kinds of inbox message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A signal sent to the instance by id.
    Signal,
    /// An external event correlated by key.
    Event,
    /// A child instance finished (payload: status, reason, output).
    ChildDone,
    /// A request to cancel.
    Cancel,
}

/// Something to deliver to instances.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A signal to one instance.
    Signal {
        /// The instance.
        instance_id: String,
        /// Signal name.
        name: String,
        /// The sender's dedupe id: the same id twice is recorded once.
        dedupe_id: String,
        /// Payload.
        payload: Value,
    },
    /// An event for whichever instance waits on `(name, correlation)`; kept until one does.
    Event {
        /// Event name.
        name: String,
        /// Correlation key.
        correlation: String,
        /// The platform's event id.
        dedupe_id: String,
        /// Payload.
        payload: Value,
    },
    /// A cancellation request.
    Cancel {
        /// The instance.
        instance_id: String,
        /// Why, for the history.
        reason: String,
    },
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Stored in these instances' inboxes; they are due now.
    Accepted(Vec<String>),
    /// An event no instance waits for yet: kept, handed over when one registers.
    Buffered,
    /// The same dedupe id was delivered before; nothing changed.
    Duplicate,
    /// No such instance.
    UnknownInstance,
    /// The instance has ended; nothing changed.
    Finished(InstanceStatus),
}

/// An instance claimed by a worker, with its inbox.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The instance.
    pub instance: InstanceRecord,
    /// The lease version: every commit must present it (fencing).
    pub lease_version: i64,
    /// Unconsumed inbox messages, oldest first.
    pub inbox: Vec<InboxMessage>,
    /// The instance's wake counter at claim time: every message put in its inbox bumps it.
    /// A commit hands it back; if it moved meanwhile, a message arrived that this worker has
    /// not seen, and the store keeps the instance due now instead of the committed `due_at`.
    pub wake: i64,
}

/// A history event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewHistory {
    /// When.
    pub at: i64,
    /// What happened (`step_completed`, `signal_received`, ...).
    pub kind: String,
    /// The step concerned.
    pub step: Option<String>,
    /// The attempt concerned.
    pub attempt: Option<u32>,
    /// Details.
    pub data: Value,
}

/// A history event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// Sequence number within the instance, from 1.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub event: NewHistory,
}

/// One instance's state change, applied atomically and fenced by the lease version.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The instance.
    pub instance_id: String,
    /// The lease version from the claim; a newer claim makes this commit fail.
    pub lease_version: i64,
    /// New status.
    pub status: InstanceStatus,
    /// New execution state, as JSON text.
    pub state: JsonText,
    /// Next time to look at it (`None` once finished). When the stored due time and this
    /// one are both at or before `now`, the stored one is kept: both mean "due now", and
    /// leaving the indexed column alone lets PostgreSQL update the row in place (a
    /// heap-only update, no index writes) on every step of a running saga.
    pub due_at: Option<i64>,
    /// Give up the lease (the worker is done with it for now).
    pub release: bool,
    /// Unless releasing: hold the lease until at least this time (ms), in the same write, so
    /// a worker about to make a call longer than its lease needs no second transaction.
    /// A later `lease_until` already stored is kept.
    pub lease_until: Option<i64>,
    /// Flag for a person.
    pub needs_attention: bool,
    /// History to append.
    pub history: Vec<NewHistory>,
    /// Inbox messages consumed.
    pub consumed: Vec<i64>,
    /// The complete set of `(event name, correlation key)` this instance now waits on.
    pub waits: Vec<(String, String)>,
    /// Children to create (ignored when an instance with the id exists).
    pub children: Vec<NewInstance>,
    /// On finishing, a message for the parent: `(parent id, payload)`.
    pub notify_parent: Option<(String, Value)>,
    /// Cancel requests to deliver to these children.
    pub cancel_children: Vec<String>,
    /// The wake counter from the claim (see [`Claimed::wake`]).
    pub wake_seen: i64,
    /// Commit time.
    pub now: i64,
}

/// One operation on a named lock, for [`Store::lock_ops`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOp {
    /// [`Store::try_lock`].
    Take {
        /// The lock.
        name: String,
        /// Who takes it.
        holder: String,
        /// The caller's now (unix ms).
        now: i64,
        /// How long it holds, unless released first.
        ttl_ms: i64,
    },
    /// [`Store::unlock`].
    Release {
        /// The lock.
        name: String,
        /// Who releases it.
        holder: String,
    },
}

impl LockOp {
    /// The lock's name.
    pub fn name(&self) -> &str {
        match self {
            LockOp::Take { name, .. } | LockOp::Release { name, .. } => name,
        }
    }
}

/// The result of one [`Commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Applied.
    Applied,
    /// Another worker claimed the instance since; nothing was written.
    Fenced,
}

/// Filters for [`Store::list_instances`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<InstanceStatus>,
    /// Only this business line.
    pub business_line: Option<String>,
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this search key.
    pub search_key: Option<String>,
    /// Created at or after.
    pub created_from: Option<i64>,
    /// Created before.
    pub created_to: Option<i64>,
    /// Only instances flagged for a person.
    pub needs_attention: Option<bool>,
    /// Continue after this id (ids sort by creation time).
    pub after_id: Option<String>,
    /// Page size.
    pub limit: usize,
}

/// Counts for metrics and readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Instances running (including waiting).
    pub running: u64,
    /// Running instances due now.
    pub due: u64,
    /// Instances flagged for a person.
    pub needs_attention: u64,
}

/// The history event a store appends when a signal or cancel changes nothing (a duplicate,
/// or the instance has ended), so the instance's story shows it arrived and was ignored.
pub fn ignored_history(msg: &InboxMessage, now: i64, why: &str) -> NewHistory {
    let kind = match msg.kind {
        MessageKind::Cancel => "cancel_ignored",
        MessageKind::Event => "event_ignored",
        _ => "signal_ignored",
    };
    NewHistory {
        at: now,
        kind: kind.to_owned(),
        step: None,
        attempt: None,
        data: serde_json::json!({"name": msg.name, "dedupe_id": msg.dedupe_id, "why": why}),
    }
}

/// Units sold, as a sales feed reports them: the denominator of return rates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleRecord {
    /// The business line.
    pub business_line: String,
    /// The product category.
    pub category: String,
    /// The SKU.
    pub sku: String,
    /// Units sold.
    pub quantity: u64,
    /// When (unix ms).
    pub at: i64,
    /// The feed's id for this record; a record whose id was seen before is ignored.
    pub dedupe_id: String,
}

/// Units sold per business line, category and SKU over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesTotal {
    /// The business line.
    pub business_line: String,
    /// The product category.
    pub category: String,
    /// The SKU.
    pub sku: String,
    /// Units sold.
    pub quantity: u64,
}

/// The engine's persistence.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a definition; the same name, version and hash again is a no-op, a different
    /// hash is [`StoreError::DefinitionConflict`].
    async fn put_definition(&self, def: &DefinitionRecord) -> Result<(), StoreError>;

    /// Every deployed definition.
    async fn definitions(&self) -> Result<Vec<DefinitionRecord>, StoreError>;

    /// Creates an instance, or returns the one its idempotency key started.
    async fn create_instance(&self, new: NewInstance) -> Result<Created, StoreError>;

    /// Creates several instances, in one transaction where the store can (group commit for
    /// starts). Each gets the answer [`Store::create_instance`] would give it alone, as if
    /// they were written one after another (requests with the same key in arrival order), so
    /// a later one sees an earlier one's id and key; a failure of the store itself fails the
    /// call and writes none of them. Answers come back in request order.
    async fn create_instances(
        &self,
        news: Vec<NewInstance>,
    ) -> Result<Vec<Result<Created, StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(news.len());
        for new in news {
            out.push(self.create_instance(new).await);
        }
        Ok(out)
    }

    /// Claims up to `limit` running instances that are due at `now` and not leased by a live
    /// worker, leasing them to `owner` until `now + lease_ms`.
    async fn claim_due(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Applies commits, each atomically and fenced; several may share one transaction.
    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>, StoreError>;

    /// Delivers a signal, event or cancellation.
    async fn deliver(&self, delivery: Delivery, now: i64) -> Result<Delivered, StoreError>;

    /// One instance.
    async fn get_instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError>;

    /// The instance an idempotency key started.
    async fn find_by_key(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError>;

    /// A page of instances, newest first.
    async fn list_instances(&self, filter: &ListFilter) -> Result<Vec<InstanceRecord>, StoreError>;

    /// An instance's history after `after_seq`, oldest first.
    async fn history(
        &self,
        id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError>;

    /// The earliest `due_at` of a running instance not leased at `now`, if any.
    async fn next_due_at(&self, now: i64) -> Result<Option<i64>, StoreError>;

    /// Extends the leases of `owner` on these instances to at least `now + lease_ms` (a lease
    /// already running longer is kept); returns the ids still held. A lease that lapsed
    /// (`lease_until <= now`) is not renewed: another worker may have claimed it.
    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[String],
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// Counts for metrics.
    async fn stats(&self, now: i64) -> Result<StoreStats, StoreError>;

    /// Records units sold (for return rates); records whose `dedupe_id` was seen before are
    /// ignored. Returns how many were new.
    async fn record_sales(&self, sales: &[SaleRecord]) -> Result<u64, StoreError>;

    /// Units sold with `from <= at < to`, summed per business line, category and SKU.
    async fn sales_totals(&self, from: i64, to: i64) -> Result<Vec<SalesTotal>, StoreError>;

    /// Takes the lock `name` for `holder` until `now + ttl_ms`, when it is free, expired
    /// (`expires_at <= now`) or already held by `holder` (which extends it). Returns whether
    /// `holder` holds it now. Every daemon on one database sees the same locks, so this is
    /// the mutual exclusion between nodes (one submit at a time per order); the expiry frees
    /// a lock whose holder crashed.
    async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Releases the lock `name` if `holder` holds it; otherwise does nothing.
    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Several [`Store::try_lock`]s and [`Store::unlock`]s in one durable write, applied in
    /// the order given among operations on one name, each answered as if alone (an unlock
    /// answers `true`). The engine's lock committer gathers concurrent callers' operations
    /// into one call. The default applies them one by one; the SQL stores use one
    /// transaction, taking the names in sorted order so that two such transactions on
    /// different nodes cannot deadlock.
    async fn lock_ops(&self, ops: &[LockOp]) -> Result<Vec<bool>, StoreError> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op {
                LockOp::Take {
                    name,
                    holder,
                    now,
                    ttl_ms,
                } => self.try_lock(name, holder, *now, *ttl_ms).await?,
                LockOp::Release { name, holder } => {
                    self.unlock(name, holder).await?;
                    true
                }
            });
        }
        Ok(out)
    }

    /// The store's own time in unix milliseconds, for a store several nodes share: every
    /// node reads leases, timers and lock expiries against this one clock (see
    /// [`crate::engine::DatabaseClock`]), so a node whose clock is off cannot steal a live
    /// lease or fire a timer early. `None` (the default) for a store with no clock of its own,
    /// where the local clock is the only one.
    async fn clock_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    /// A feed of wake-ups from other processes sharing the store: one message whenever
    /// something may have become due there (an instance started, a signal or event
    /// delivered). Bursts coalesce, and a notification may be lost (a dropped connection),
    /// so a worker still polls as a fallback. `None` (the default) when the store has no
    /// such channel.
    async fn due_feed(&self) -> Result<Option<DueFeed>, StoreError> {
        Ok(None)
    }

    /// How many commit batches a worker has in flight at once unless told otherwise
    /// ([`crate::engine::WorkerConfig::commit_writers`]). 1 (the default) for a store that
    /// writes one transaction at a time and gains nothing from a second batch waiting; a
    /// client-server database, where a transaction's round trips rather than the database's
    /// work bound one writer, gains from overlapping them, and so does a store that writes
    /// batches queued together in one transaction (SQLite).
    fn commit_writers(&self) -> usize {
        1
    }
}

/// Wake-ups from other processes sharing a store ([`Store::due_feed`]). The sender side
/// stops when the receiver is dropped.
pub type DueFeed = tokio::sync::mpsc::Receiver<()>;
