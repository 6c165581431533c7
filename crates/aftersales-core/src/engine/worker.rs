//! The engine: deploys definitions, starts instances, delivers signals and events, and runs
//! the worker loop that claims due instances, advances them through the [`Machine`],
//! commits every transition, and only then dispatches the calls it decided on.
//!
//! The loop for one claimed instance:
//!
//! 1. apply the results of the previous round's calls, then [`Machine::advance`];
//! 2. commit the new state, history, consumed messages, waits, children and the next due
//!    time, fenced by the lease version — nothing is dispatched before this commit lands;
//! 3. dispatch the due calls concurrently, each under its per-attempt timeout;
//! 4. go to 1 with their results; when a round has nothing to dispatch, the commit also
//!    releases the lease and the instance rests in the store until it is due again.
//!
//! A crash anywhere leaves the instance leased until the lease lapses; then any worker
//! claims it and re-dispatches the attempt that was in flight, with the same idempotency key.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::clock::Clock;
use super::machine::{
    CallResult, ChildReq, Ctx, DispatchReq, Effects, FailureClass, Machine, Target,
};
use super::prepare::{FieldError, prepare};
use super::state::ExecState;
use crate::catalogue::Catalogue;
use crate::diag::{Diagnostic, Source, render_human};
use crate::model::{StepKind, WaitKind, Workflow};
use crate::parse::parse_workflow;
use crate::store::*;
use crate::validate::check_sources;

/// One call the engine asks the adapters to make.
#[derive(Debug, Clone)]
pub struct ActionCall {
    /// The instance making it.
    pub instance_id: String,
    /// Its business line (whose adapter set serves the call).
    pub business_line: String,
    /// `system.action`.
    pub action: String,
    /// The input object.
    pub input: Value,
    /// The idempotency key: the same for every attempt of this step visit.
    pub key: String,
}

/// Carries out action calls: the bridge from the engine to the adapters. The engine wraps
/// every call in its per-attempt timeout; an implementation classifies failures.
#[async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    /// Makes one call.
    async fn dispatch(&self, call: ActionCall) -> CallResult;
}

/// Errors of the engine's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Workflow files did not validate; `rendered` holds every diagnostic.
    #[error("{count} error(s) in workflow definitions:\n{rendered}")]
    Invalid {
        /// Number of errors.
        count: usize,
        /// The diagnostics, rendered for people.
        rendered: String,
        /// The diagnostics.
        diagnostics: Vec<Diagnostic>,
    },
    /// No such workflow (or version) is deployed.
    #[error("workflow `{name}`{} is not deployed", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    UnknownWorkflow {
        /// Name asked for.
        name: String,
        /// Version asked for.
        version: Option<u32>,
    },
    /// The input does not fit the workflow's declared inputs.
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidInput(Vec<FieldError>),
    /// A signal's payload does not fit what the instance's waits for that signal declare.
    #[error(
        "the payload of `{signal}` does not fit what step `{step}` of `{workflow}` declares; nothing was stored"
    )]
    InvalidSignalPayload {
        /// The signal.
        signal: String,
        /// The first wait step for that signal.
        step: String,
        /// The instance's workflow.
        workflow: String,
        /// What does not fit that step's declaration.
        errors: Vec<FieldError>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The instances a worker holds a lease on and still needs it for; the heartbeat renews
/// these.
type Held = Arc<std::sync::Mutex<HashSet<String>>>;

fn lock_held(
    held: &std::sync::Mutex<HashSet<String>>,
) -> std::sync::MutexGuard<'_, HashSet<String>> {
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a busy worker waits for an eighth of its slots to free up before it claims
/// for fewer.
const CLAIM_GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's name in leases.
    pub owner: String,
    /// How long a claim lasts without renewal. A heartbeat renews the leases a live worker
    /// holds every third of this, so it is also about how long a crashed or stalled node's
    /// instances wait before another node takes them over.
    pub lease_ms: i64,
    /// Instances processed at once.
    pub concurrency: usize,
    /// Longest idle sleep: the polling fallback when no notification comes (another node
    /// may have made something due).
    pub idle_poll_ms: i64,
    /// Most rounds one claim may run before the instance is released for fairness.
    pub max_rounds: u32,
    /// Most commits written in one store transaction. The default, 256, measured 18–30%
    /// more steps/s than 64 on SQLite and no worse on PostgreSQL (docs/benchmarks.md).
    pub commit_batch: usize,
    /// Commit transactions written at once; `None` (the default) takes the store's
    /// [`Store::commit_writers`]. With 1, a batch is written while the next one gathers;
    /// more overlaps the round trips of several transactions, for a client-server store
    /// where one transaction's latency, not the database, is the limit, or lets a store that
    /// writes what is queued together (SQLite) start on the next batch at once. Safe with any
    /// number: an instance has at most one commit in flight, and a commit transaction locks
    /// its rows in one global order (`aftersales_store::logic::commit`).
    pub commit_writers: Option<usize>,
}

impl WorkerConfig {
    /// The commit transactions written at once on `store`: [`WorkerConfig::commit_writers`],
    /// or the store's own default.
    pub fn commit_writers_on(&self, store: &dyn Store) -> usize {
        self.commit_writers
            .unwrap_or_else(|| store.commit_writers())
    }
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            owner: format!("worker-{}", uuid::Uuid::now_v7()),
            lease_ms: 15_000,
            concurrency: 32,
            idle_poll_ms: 5_000,
            max_rounds: 64,
            commit_batch: 256,
            commit_writers: None,
        }
    }
}

/// A request to start an instance.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// Workflow name.
    pub workflow: String,
    /// Version; the newest deployed when absent. The instance stays on it to the end.
    pub version: Option<u32>,
    /// Business line.
    pub business_line: String,
    /// Input, checked against the workflow's `[input]`.
    pub input: Value,
    /// Business-line parameters, checked against the workflow's `[params]`.
    pub params: Value,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// A searchable key (the order id).
    pub search_key: Option<String>,
    /// With `search_key`: how many instances of the business line with that key the caller
    /// read before deciding to start this one; the start fails with
    /// [`StoreError::SearchKeyMoved`] when another has been stored since
    /// ([`NewInstance::search_seen`]). Not part of the idempotency comparison.
    pub search_seen: Option<u64>,
    /// A record the caller attaches to the instance, stored with it in one write and
    /// returned with it (`Value::Null` when none); the engine never reads it.
    pub meta: Value,
    /// The instance id to use, when the caller names it (a service order id chosen before
    /// the start, so it can be passed in the input); a fresh UUIDv7 when absent. Not part of
    /// the idempotency comparison.
    pub id: Option<String>,
}

/// The answer to a start.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The instance id.
    pub id: String,
    /// False when the idempotency key returned an existing instance.
    pub created: bool,
    /// When created: the instance as this start stored it, before any step ran (what
    /// [`Engine::get`] would have returned at the commit), so a caller answering with the
    /// new instance need not read it back. `None` for an existing instance.
    pub record: Option<InstanceRecord>,
}

type DefKey = (String, u32);

/// The engine. Cheap to share behind an [`Arc`].
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    dispatcher: Arc<dyn Dispatcher>,
    catalogue: Catalogue,
    defs: RwLock<HashMap<DefKey, Arc<Workflow>>>,
    wake: Notify,
    /// The group committer for starts, spawned by the first start.
    starter: std::sync::OnceLock<mpsc::Sender<Queued<NewInstance, Created>>>,
    /// The group committer for named-lock operations, spawned by the first.
    locker: std::sync::OnceLock<mpsc::Sender<Queued<LockOp, bool>>>,
}

/// Most starts written in one store transaction.
const START_BATCH: usize = 64;

/// Most named-lock operations written in one store transaction.
const LOCK_BATCH: usize = 128;

impl Engine {
    /// An engine over a store, a clock and a dispatcher; `catalogue` is what deployed
    /// workflows are validated against.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        dispatcher: Arc<dyn Dispatcher>,
        catalogue: Catalogue,
    ) -> Engine {
        Engine {
            store,
            clock,
            dispatcher,
            catalogue,
            defs: RwLock::new(HashMap::new()),
            wake: Notify::new(),
            starter: std::sync::OnceLock::new(),
            locker: std::sync::OnceLock::new(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Validates a set of workflow files together and deploys them. A name and version
    /// already deployed with the same content is kept; with other content it is refused
    /// ([`StoreError::DefinitionConflict`]): running instances are pinned to it.
    pub async fn deploy(
        &self,
        files: &[(String, String)],
    ) -> Result<Vec<(String, u32)>, EngineError> {
        let sources: Vec<Source> = files.iter().map(|(n, t)| Source::new(n, t)).collect();
        let report = check_sources(&sources, &self.catalogue, true);
        if !report.is_ok() {
            let errors: Vec<Diagnostic> = report
                .diagnostics
                .into_iter()
                .filter(Diagnostic::is_error)
                .collect();
            return Err(EngineError::Invalid {
                count: errors.len(),
                rendered: render_human(&errors),
                diagnostics: errors,
            });
        }
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for (file, wf) in report.workflows {
            let text = files
                .iter()
                .find(|(n, _)| *n == file)
                .map(|(_, t)| t.clone())
                .unwrap_or_default();
            let rec = DefinitionRecord {
                name: wf.name.value.clone(),
                version: wf.version.value,
                hash: hex::encode(Sha256::digest(text.as_bytes())),
                source: text,
                deployed_at: now,
            };
            self.store.put_definition(&rec).await?;
            let key = (rec.name.clone(), rec.version);
            self.write_defs().insert(key.clone(), Arc::new(wf));
            out.push(key);
        }
        Ok(out)
    }

    fn write_defs(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<DefKey, Arc<Workflow>>> {
        self.defs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_defs(&self) -> std::sync::RwLockReadGuard<'_, HashMap<DefKey, Arc<Workflow>>> {
        self.defs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads every definition in the store that this process has not parsed yet (deployed
    /// by another node, or by an earlier run whose files have changed since).
    async fn load_definitions(&self) -> Result<(), EngineError> {
        for d in self.store.definitions().await? {
            let key = (d.name.clone(), d.version);
            if self.read_defs().contains_key(&key) {
                continue;
            }
            let origin = format!("<stored {}@{}>", d.name, d.version);
            let (wf, diags) = parse_workflow(&Source::new(&origin, &d.source));
            match wf {
                Some(wf) if !diags.iter().any(Diagnostic::is_error) => {
                    self.write_defs().insert(key, Arc::new(wf));
                }
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "stored definition {}@{} no longer parses: {}",
                        d.name,
                        d.version,
                        render_human(&diags)
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    /// The definition an instance is pinned to, or the newest of a name.
    pub async fn definition(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Arc<Workflow>, EngineError> {
        if let Some(d) = self.lookup(name, version) {
            return Ok(d);
        }
        self.load_definitions().await?;
        self.lookup(name, version)
            .ok_or_else(|| EngineError::UnknownWorkflow {
                name: name.to_owned(),
                version,
            })
    }

    fn lookup(&self, name: &str, version: Option<u32>) -> Option<Arc<Workflow>> {
        let defs = self.read_defs();
        match version {
            Some(v) => defs.get(&(name.to_owned(), v)).cloned(),
            None => defs
                .iter()
                .filter(|((n, _), _)| n == name)
                .max_by_key(|((_, v), _)| *v)
                .map(|(_, d)| d.clone()),
        }
    }

    /// Every deployed definition, newest version last.
    pub async fn workflows(&self) -> Result<Vec<Arc<Workflow>>, EngineError> {
        self.load_definitions().await?;
        let mut all: Vec<Arc<Workflow>> = self.read_defs().values().cloned().collect();
        all.sort_by(|a, b| (&a.name.value, a.version.value).cmp(&(&b.name.value, b.version.value)));
        Ok(all)
    }

    /// Starts an instance, or returns the one its idempotency key started before (the same
    /// request) — a different request under a used key is [`StoreError::KeyConflict`].
    pub async fn start(&self, req: StartRequest) -> Result<Started, EngineError> {
        let def = self.definition(&req.workflow, req.version).await?;
        let request_hash = request_hash(&req);
        let mut errors = Vec::new();
        let input = prepare("input", &def.inputs, &req.input, false).unwrap_or_else(|e| {
            errors.extend(e);
            Value::Null
        });
        let params = prepare("params", &def.params, &req.params, true).unwrap_or_else(|e| {
            errors.extend(e);
            Value::Null
        });
        if !errors.is_empty() {
            return Err(EngineError::InvalidInput(errors));
        }
        let now = self.clock.now_ms();
        let id = req
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let new = new_instance(NewInstanceParts {
            id,
            idempotency_key: req.idempotency_key.clone(),
            request_hash,
            def: &def,
            business_line: req.business_line.clone(),
            input,
            params,
            parent_id: None,
            search_key: req.search_key.clone(),
            search_seen: req.search_seen,
            meta: req.meta.clone(),
            now,
        })?;
        let record = new.record();
        let created = self.create(new).await?;
        if matches!(created, Created::New(_)) {
            metrics::counter!(
                "aftersales_instances_started_total",
                "workflow" => def.name.value.clone(),
                "business_line" => req.business_line.clone(),
            )
            .increment(1);
            self.wake.notify_one();
        }
        Ok(match created {
            Created::New(id) => Started {
                id,
                created: true,
                record: Some(record),
            },
            Created::Existing(id) => Started {
                id,
                created: false,
                record: None,
            },
        })
    }

    /// Creates an instance through the start committer: concurrent starts share one store
    /// transaction (group commit), and each answers once that transaction is durable.
    async fn create(&self, new: NewInstance) -> Result<Created, StoreError> {
        let starter = self.starter.get_or_init(|| {
            let store = self.store.clone();
            let writers = store.commit_writers();
            group_committer(
                "start",
                START_BATCH,
                writers,
                move |news: Vec<NewInstance>| {
                    let store = store.clone();
                    async move { store.create_instances(news).await }
                },
            )
            .0
        });
        match queue(starter, new, "start").await {
            Ok(answer) => answer,
            // The committer's runtime is gone (an engine kept past its runtime): write alone.
            Err(new) => self.store.create_instance(new).await,
        }
    }

    /// [`Store::try_lock`] at the engine's clock, through the lock committer: concurrent
    /// callers' lock operations share one durable store write.
    pub async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        self.lock_op(LockOp::Take {
            name: name.to_owned(),
            holder: holder.to_owned(),
            now: self.clock.now_ms(),
            ttl_ms,
        })
        .await
    }

    /// [`Store::unlock`], through the lock committer.
    pub async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.lock_op(LockOp::Release {
            name: name.to_owned(),
            holder: holder.to_owned(),
        })
        .await
        .map(|_| ())
    }

    async fn lock_op(&self, op: LockOp) -> Result<bool, StoreError> {
        let locker = self.locker.get_or_init(|| {
            let store = self.store.clone();
            group_committer("lock", LOCK_BATCH, 1, move |ops: Vec<LockOp>| {
                let store = store.clone();
                async move { Ok(store.lock_ops(&ops).await?.into_iter().map(Ok).collect()) }
            })
            .0
        });
        match queue(locker, op, "lock").await {
            Ok(answer) => answer,
            // The committer's runtime is gone (an engine kept past its runtime): write alone.
            Err(op) => self
                .store
                .lock_ops(std::slice::from_ref(&op))
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("the store answered no lock operation".into())),
        }
    }

    /// Sends a signal to an instance. The same `dedupe_id` twice is recorded once.
    pub async fn signal(
        &self,
        instance_id: &str,
        name: &str,
        dedupe_id: &str,
        payload: Value,
    ) -> Result<Delivered, EngineError> {
        self.check_signal_payload(instance_id, name, &payload)
            .await?;
        self.deliver(Delivery::Signal {
            instance_id: instance_id.to_owned(),
            name: name.to_owned(),
            dedupe_id: dedupe_id.to_owned(),
            payload,
        })
        .await
    }

    /// Checks a signal's payload against the payload the instance's waits for that signal
    /// declare, before anything is stored. A wait reads its fields as they come, so
    /// `{"approved": "yes"}` for `approved = "bool"` would be taken and then fail the
    /// instance at the branch that reads it. A payload that fits any one of the waits for
    /// the signal passes (undeclared fields are kept); a signal no wait names, an unknown
    /// instance, or one that has ended is left to the delivery (kept in the inbox, unknown,
    /// or finished).
    async fn check_signal_payload(
        &self,
        instance_id: &str,
        name: &str,
        payload: &Value,
    ) -> Result<(), EngineError> {
        let Some(rec) = self.get(instance_id).await? else {
            return Ok(());
        };
        if rec.status != InstanceStatus::Running {
            return Ok(());
        }
        let wf = self.definition(&rec.workflow, Some(rec.version)).await?;
        let mut first: Option<(String, Vec<FieldError>)> = None;
        for step in wf.all_steps() {
            let StepKind::Wait(w) = &step.kind else {
                continue;
            };
            if w.kind != WaitKind::Signal || w.name.value != name {
                continue;
            }
            match prepare("payload", &w.payload, payload, true) {
                Ok(_) => return Ok(()),
                Err(errors) => {
                    first.get_or_insert((step.id.value.clone(), errors));
                }
            }
        }
        match first {
            None => Ok(()),
            Some((step, errors)) => Err(EngineError::InvalidSignalPayload {
                signal: name.to_owned(),
                step,
                workflow: rec.workflow,
                errors,
            }),
        }
    }

    /// Delivers an external event to whichever instance waits on `(name, correlation)`; one
    /// that arrives before its wait is kept until the wait registers.
    pub async fn event(
        &self,
        name: &str,
        correlation: &str,
        dedupe_id: &str,
        payload: Value,
    ) -> Result<Delivered, EngineError> {
        self.deliver(Delivery::Event {
            name: name.to_owned(),
            correlation: correlation.to_owned(),
            dedupe_id: dedupe_id.to_owned(),
            payload,
        })
        .await
    }

    /// Asks an instance to cancel: it compensates what it did, in reverse, and ends
    /// `cancelled` — unless it has passed its point of no return.
    pub async fn cancel(&self, instance_id: &str, reason: &str) -> Result<Delivered, EngineError> {
        self.deliver(Delivery::Cancel {
            instance_id: instance_id.to_owned(),
            reason: reason.to_owned(),
        })
        .await
    }

    async fn deliver(&self, d: Delivery) -> Result<Delivered, EngineError> {
        let out = self.store.deliver(d, self.clock.now_ms()).await?;
        if matches!(out, Delivered::Accepted(_)) {
            self.wake.notify_one();
        }
        Ok(out)
    }

    /// One instance.
    pub async fn get(&self, id: &str) -> Result<Option<InstanceRecord>, EngineError> {
        Ok(self.store.get_instance(id).await?)
    }

    /// An instance's history, oldest first.
    pub async fn history(
        &self,
        id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, EngineError> {
        Ok(self.store.history(id, after_seq, limit).await?)
    }

    /// Wakes an idle worker (after something became due by another path).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Runs due instances until none is due at the clock's current time. For tests and
    /// tools; the daemon uses [`Engine::run`].
    pub async fn run_until_idle(
        self: &Arc<Self>,
        cfg: &WorkerConfig,
    ) -> Result<usize, EngineError> {
        let mut total = 0;
        let sink = CommitSink::Direct(self.store.clone());
        let (_tx, stop) = watch::channel(false);
        loop {
            let now = self.clock.now_ms();
            let claimed = self
                .store
                .claim_due(&cfg.owner, now, cfg.lease_ms, cfg.concurrency)
                .await?;
            if claimed.is_empty() {
                return Ok(total);
            }
            total += claimed.len();
            let mut set = JoinSet::new();
            // No heartbeat here: the set only keeps `process`'s bookkeeping whole.
            let held = Held::default();
            for c in claimed {
                let engine = self.clone();
                let sink = sink.clone();
                let stop = stop.clone();
                let cfg = cfg.clone();
                let held = held.clone();
                set.spawn(async move { engine.process(c, &sink, &cfg, &stop, &held).await });
            }
            while set.join_next().await.is_some() {}
        }
    }

    /// The worker loop: claims due instances up to `cfg.concurrency` at a time, processes
    /// them, and sleeps when idle until the next due time, a notification, or the polling
    /// fallback. Returns after `shutdown` turns true and in-flight instances are committed.
    pub async fn run(self: Arc<Self>, cfg: WorkerConfig, mut shutdown: watch::Receiver<bool>) {
        let (sink, committer) = CommitSink::batched(
            self.store.clone(),
            cfg.commit_batch,
            cfg.commit_writers_on(self.store.as_ref()),
        );
        let mut set: JoinSet<()> = JoinSet::new();
        // The instances this worker holds, for the heartbeat.
        let held = Held::default();
        let mut background: JoinSet<()> = JoinSet::new();
        background.spawn(self.clone().heartbeat(cfg.clone(), held.clone()));
        match self.store.due_feed().await {
            Ok(Some(mut feed)) => {
                let engine = self.clone();
                background.spawn(async move {
                    while feed.recv().await.is_some() {
                        engine.wake.notify_one();
                    }
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                error = %e,
                "cannot listen for other nodes' notifications; polling every {} ms instead",
                cfg.idle_poll_ms
            ),
        }
        let mut backoff_ms: u64 = 100;
        let claim_min = (cfg.concurrency / 8).max(1);
        loop {
            let stopping = *shutdown.borrow();
            if stopping {
                break;
            }
            let mut free = cfg.concurrency.saturating_sub(set.len());
            if free > 0 && free < claim_min && !set.is_empty() {
                // Busy: a claim costs a store transaction whether it takes one instance or
                // many, so let a few more slots free up first, for at most a moment.
                let wait = tokio::time::sleep(CLAIM_GATHER);
                tokio::pin!(wait);
                while free < claim_min && !set.is_empty() {
                    tokio::select! {
                        _ = set.join_next() => {}
                        _ = &mut wait => break,
                        _ = shutdown.changed() => break,
                    }
                    free = cfg.concurrency.saturating_sub(set.len());
                }
            }
            let mut claimed_n = 0;
            if free > 0 {
                let now = self.clock.now_ms();
                let began = std::time::Instant::now();
                let claimed = self
                    .store
                    .claim_due(&cfg.owner, now, cfg.lease_ms, free)
                    .await;
                metrics::histogram!("aftersales_store_write_seconds", "op" => "claim")
                    .record(began.elapsed().as_secs_f64());
                match claimed {
                    Ok(claimed) => {
                        metrics::histogram!("aftersales_store_batch_items", "op" => "claim")
                            .record(claimed.len() as f64);
                        backoff_ms = 100;
                        claimed_n = claimed.len();
                        for c in claimed {
                            let engine = self.clone();
                            let sink = sink.clone();
                            let stop = shutdown.clone();
                            let cfg = cfg.clone();
                            let held = held.clone();
                            lock_held(&held).insert(c.instance.id.clone());
                            set.spawn(async move {
                                engine.process(c, &sink, &cfg, &stop, &held).await;
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming due instances failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(std::time::Duration::from_millis(backoff_ms)) => {}
                            _ = shutdown.changed() => {}
                        }
                        backoff_ms = (backoff_ms * 2).min(5_000);
                        continue;
                    }
                }
            }
            if claimed_n > 0 && claimed_n == free {
                // Possibly more due: claim again as soon as a slot frees up.
                if set.len() >= cfg.concurrency {
                    tokio::select! {
                        _ = set.join_next() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                continue;
            }
            // Nothing more due now: sleep until something is.
            let now = self.clock.now_ms();
            let next = self.store.next_due_at(now).await.ok().flatten();
            let until = next.map_or(now + cfg.idle_poll_ms, |n| n.min(now + cfg.idle_poll_ms));
            if until <= now && set.is_empty() {
                continue;
            }
            tokio::select! {
                _ = self.clock.sleep_until(until.max(now + 1)) => {}
                _ = self.wake.notified() => {}
                Some(_) = set.join_next(), if !set.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        while set.join_next().await.is_some() {}
        background.shutdown().await;
        drop(sink);
        let _ = committer.await;
    }

    /// Extends the leases of the instances this worker holds, every third of a lease, so a
    /// claim lasts as long as this process is alive and responsive, and lapses soon after it
    /// dies or stalls (then another node takes the instance over, and this worker's commits
    /// are fenced off). A lease already extended further for a long call is kept.
    async fn heartbeat(self: Arc<Self>, cfg: WorkerConfig, held: Held) {
        let every = std::time::Duration::from_millis((cfg.lease_ms / 3).max(1) as u64);
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<String> = lock_held(&held).iter().cloned().collect();
            if ids.is_empty() {
                continue;
            }
            let now = self.clock.now_ms();
            match self
                .store
                .renew_leases(&cfg.owner, &ids, now, cfg.lease_ms)
                .await
            {
                Ok(kept) if kept.len() < ids.len() => {
                    // An instance whose last commit released its lease while the renewal ran
                    // is not renewed either; its task stopped listing it as held before it
                    // sent that commit, so only those still held have lost their lease.
                    let kept: HashSet<&String> = kept.iter().collect();
                    let held_now = lock_held(&held);
                    let lost = ids
                        .iter()
                        .filter(|id| !kept.contains(id) && held_now.contains(*id))
                        .count();
                    drop(held_now);
                    if lost > 0 {
                        metrics::counter!("aftersales_leases_lost_total").increment(lost as u64);
                        tracing::warn!(
                            lost,
                            "leases lapsed before the heartbeat renewed them; their commits will be fenced"
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "renewing leases failed; retrying at the next beat")
                }
            }
        }
    }

    /// Processes one claimed instance until it has nothing to dispatch. `held` lists it
    /// until it sends the commit that gives up its lease (or it stops here for any other
    /// reason), so the heartbeat renews exactly the leases this worker still needs.
    async fn process(
        &self,
        claimed: Claimed,
        sink: &CommitSink,
        cfg: &WorkerConfig,
        stop: &watch::Receiver<bool>,
        held: &Held,
    ) {
        use tracing::Instrument as _;
        let id = claimed.instance.id.clone();
        let span = tracing::info_span!(
            "instance",
            id = %id,
            workflow = %claimed.instance.workflow,
            version = claimed.instance.version,
            business_line = %claimed.instance.business_line,
        );
        if let Err(e) = self
            .process_inner(claimed, sink, cfg, stop, held)
            .instrument(span)
            .await
        {
            tracing::error!(instance = %id, error = %e, "processing an instance failed; it stays leased until the lease lapses");
        }
        lock_held(held).remove(&id);
    }

    async fn process_inner(
        &self,
        claimed: Claimed,
        sink: &CommitSink,
        cfg: &WorkerConfig,
        stop: &watch::Receiver<bool>,
        held: &Held,
    ) -> Result<(), EngineError> {
        let rec = claimed.instance;
        let lease_version = claimed.lease_version;
        let mut lease_until = self.clock.now_ms() + cfg.lease_ms;
        let mut inbox = claimed.inbox;
        let def = match self.definition(&rec.workflow, Some(rec.version)).await {
            Ok(d) => d,
            Err(e) => {
                return self
                    .park_broken(&rec, lease_version, claimed.wake, sink, held, e.to_string())
                    .await;
            }
        };
        let mut st: ExecState = match serde_json::from_value(rec.state.clone()) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .park_broken(
                        &rec,
                        lease_version,
                        claimed.wake,
                        sink,
                        held,
                        format!("state does not decode: {e}"),
                    )
                    .await;
            }
        };
        let mut results: Vec<(Target, CallResult)> = Vec::new();
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            let now = self.clock.now_ms();
            let cx = Ctx {
                instance_id: &rec.id,
                def: &def,
                business_line: &rec.business_line,
                input: &rec.input,
                params: &rec.params,
                started_at: rec.created_at,
                now,
            };
            let m = Machine::new(&cx);
            let mut fx = Effects::default();
            for (target, result) in results.drain(..) {
                m.apply(&mut st, target, result, &mut fx);
            }
            m.advance(&mut st, &inbox, &mut fx);
            let mut children = Vec::new();
            // Children that cannot start fail their call step at once.
            let mut guard = 0;
            while !fx.children.is_empty() && guard < 100 {
                guard += 1;
                for c in std::mem::take(&mut fx.children) {
                    match self.child_instance(&rec, &c, now).await {
                        Ok(ni) => children.push(ni),
                        Err(why) => {
                            let msg = InboxMessage {
                                id: -1,
                                kind: MessageKind::ChildDone,
                                name: "child.done".to_owned(),
                                correlation: Some(c.id.clone()),
                                dedupe_id: format!("child-not-started-{}", c.id),
                                payload: json!({"status": "failed", "reason": format!("could not start: {why}")}),
                                received_at: now,
                            };
                            m.advance(&mut st, std::slice::from_ref(&msg), &mut fx);
                        }
                    }
                }
            }
            fx.consumed.retain(|id| *id >= 0);
            inbox.retain(|msg| !fx.consumed.contains(&msg.id));
            let stopping = *stop.borrow() || rounds >= cfg.max_rounds;
            let mut dispatches = std::mem::take(&mut fx.dispatches);
            if stopping {
                // Leave them scheduled (due now) for whoever claims next.
                dispatches.clear();
            }
            m.mark_in_flight(&mut st, &dispatches);
            let release = dispatches.is_empty();
            let status = st
                .end
                .as_ref()
                .map_or(InstanceStatus::Running, |e| e.status);
            let notify_parent = match (&st.end, &rec.parent_id) {
                (Some(end), Some(parent)) => Some((
                    parent.clone(),
                    json!({"status": end.status.as_str(), "reason": end.reason, "output": end.output}),
                )),
                _ => None,
            };
            let due_at = m.next_due(&st);
            // Hold the lease for as long as the slowest call may take, in the same write.
            let longest = dispatches.iter().map(|d| d.timeout_ms).max().unwrap_or(0);
            let margin = (cfg.lease_ms / 4).min(5_000);
            let extend_to = (!release && now + longest + margin > lease_until)
                .then(|| now + cfg.lease_ms.max(longest + 2 * margin));
            let commit = Commit {
                instance_id: rec.id.clone(),
                lease_version,
                status,
                state: JsonText::encode(&st)?,
                due_at,
                release,
                lease_until: extend_to,
                needs_attention: st.needs_attention,
                history: fx.history,
                consumed: fx.consumed,
                waits: m.waits(&st),
                children,
                notify_parent,
                cancel_children: fx.cancel_children,
                wake_seen: claimed.wake,
                now,
            };
            let kinds: Vec<String> = commit.history.iter().map(|h| h.kind.clone()).collect();
            if release {
                // From here the heartbeat leaves the lease alone: once this commit lands the
                // store no longer lists it as ours, and a renewal that misses it must not be
                // taken for a lost lease.
                lock_held(held).remove(&rec.id);
            }
            match sink.commit(commit).await? {
                CommitOutcome::Applied => {
                    for kind in kinds {
                        metrics::counter!("aftersales_history_events_total", "kind" => kind)
                            .increment(1);
                    }
                    if status.is_final() {
                        metrics::counter!(
                            "aftersales_instances_finished_total",
                            "workflow" => rec.workflow.clone(),
                            "business_line" => rec.business_line.clone(),
                            "status" => status.as_str(),
                        )
                        .increment(1);
                    }
                }
                CommitOutcome::Fenced => {
                    tracing::warn!(instance = %rec.id, "lease lost to another worker; dropping this copy");
                    return Ok(());
                }
            }
            if release {
                return Ok(());
            }
            if let Some(until) = extend_to {
                lease_until = lease_until.max(until);
            }
            results = self.dispatch_all(&rec, dispatches).await;
        }
    }

    async fn dispatch_all(
        &self,
        rec: &InstanceRecord,
        dispatches: Vec<DispatchReq>,
    ) -> Vec<(Target, CallResult)> {
        use tracing::Instrument as _;
        let mut set = JoinSet::new();
        for (i, d) in dispatches.into_iter().enumerate() {
            let dispatcher = self.dispatcher.clone();
            let call = ActionCall {
                instance_id: rec.id.clone(),
                business_line: rec.business_line.clone(),
                action: d.action.clone(),
                input: d.input.clone(),
                key: d.key.clone(),
            };
            let target = d.target;
            let span = tracing::info_span!("dispatch", action = %d.action, key = %d.key);
            let timeout = std::time::Duration::from_millis(d.timeout_ms.max(1) as u64);
            set.spawn(async move {
                let started = std::time::Instant::now();
                let action = call.action.clone();
                let r =
                    match tokio::time::timeout(timeout, dispatcher.dispatch(call).instrument(span))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => CallResult::Failed {
                            class: FailureClass::Timeout,
                            message: format!("no answer within {} ms", timeout.as_millis()),
                        },
                    };
                let outcome = match &r {
                    CallResult::Done(_) => "done",
                    CallResult::Pending { .. } => "pending",
                    CallResult::Failed { class, .. } => match class {
                        FailureClass::Transient { .. } => "transient",
                        FailureClass::UnknownOutcome => "unknown_outcome",
                        FailureClass::Timeout => "timeout",
                        FailureClass::Permanent => "permanent",
                    },
                };
                metrics::histogram!(
                    "aftersales_action_duration_seconds",
                    "action" => action.clone(),
                    "outcome" => outcome,
                )
                .record(started.elapsed().as_secs_f64());
                metrics::counter!("aftersales_action_calls_total", "action" => action, "outcome" => outcome).increment(1);
                (i, target, r)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(error = %e, "a dispatch task panicked"),
            }
        }
        out.sort_by_key(|(i, _, _)| *i);
        out.into_iter().map(|(_, t, r)| (t, r)).collect()
    }

    /// An instance that cannot run (its definition is gone, its state does not decode):
    /// flag it for a person, record why, and look again in an hour.
    async fn park_broken(
        &self,
        rec: &InstanceRecord,
        lease_version: i64,
        wake: i64,
        sink: &CommitSink,
        held: &Held,
        why: String,
    ) -> Result<(), EngineError> {
        let now = self.clock.now_ms();
        lock_held(held).remove(&rec.id);
        tracing::error!(instance = %rec.id, reason = %why, "instance cannot run; flagged for a person");
        sink.commit(Commit {
            instance_id: rec.id.clone(),
            lease_version,
            status: rec.status,
            state: JsonText::encode(&rec.state)?,
            due_at: Some(now + 3_600_000),
            release: true,
            lease_until: None,
            needs_attention: true,
            history: vec![NewHistory {
                at: now,
                kind: "instance_stuck".to_owned(),
                step: None,
                attempt: None,
                data: json!({"reason": why}),
            }],
            consumed: Vec::new(),
            waits: Vec::new(),
            children: Vec::new(),
            notify_parent: None,
            cancel_children: Vec::new(),
            wake_seen: wake,
            now,
        })
        .await?;
        Ok(())
    }

    async fn child_instance(
        &self,
        parent: &InstanceRecord,
        c: &ChildReq,
        now: i64,
    ) -> Result<NewInstance, String> {
        let def = self
            .definition(&c.workflow, c.version)
            .await
            .map_err(|e| e.to_string())?;
        let input = prepare("input", &def.inputs, &c.input, false).map_err(|errs| {
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let params = prepare("params", &def.params, &parent.params, true).map_err(|errs| {
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        new_instance(NewInstanceParts {
            id: c.id.clone(),
            idempotency_key: None,
            request_hash: String::new(),
            def: &def,
            business_line: parent.business_line.clone(),
            input,
            params,
            parent_id: Some(parent.id.clone()),
            search_key: parent.search_key.clone(),
            search_seen: None,
            meta: Value::Null,
            now,
        })
        .map_err(|e| e.to_string())
    }
}

struct NewInstanceParts<'a> {
    id: String,
    idempotency_key: Option<String>,
    request_hash: String,
    def: &'a Workflow,
    business_line: String,
    input: Value,
    params: Value,
    parent_id: Option<String>,
    search_key: Option<String>,
    search_seen: Option<u64>,
    meta: Value,
    now: i64,
}

fn new_instance(p: NewInstanceParts<'_>) -> Result<NewInstance, EngineError> {
    let start = p.def.start_id().unwrap_or_default().to_owned();
    let state = serde_json::to_value(ExecState::new(&start))
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let history = vec![NewHistory {
        at: p.now,
        kind: "instance_started".to_owned(),
        step: None,
        attempt: None,
        data: json!({
            "workflow": p.def.name.value,
            "version": p.def.version.value,
            "business_line": p.business_line,
            "input": p.input,
            "parent": p.parent_id,
        }),
    }];
    Ok(NewInstance {
        id: p.id,
        idempotency_key: p.idempotency_key,
        request_hash: p.request_hash,
        workflow: p.def.name.value.clone(),
        version: p.def.version.value,
        business_line: p.business_line,
        input: p.input,
        params: p.params,
        state,
        parent_id: p.parent_id,
        search_key: p.search_key,
        search_seen: p.search_seen,
        meta: p.meta,
        now: p.now,
        history,
    })
}

/// SHA-256 of the request as the caller made it, with object keys sorted, so the same
/// request under the same key is recognised and a different one is refused.
///
/// The text hashed is the request as one JSON object with the keys `business_line`,
/// `input`, `meta`, `params`, `search_key`, `version`, `workflow`, compact, every object's
/// keys in byte order. Stored instances keep this hash, so the text must not change. It is
/// written straight into the hasher: building it as a string (and the request as a JSON
/// value first) was a tenth of the daemon's CPU under HTTP intake.
fn request_hash(req: &StartRequest) -> String {
    let mut out = Sha256::new();
    out.update(b"{\"business_line\":");
    put_json(&mut out, &req.business_line);
    out.update(b",\"input\":");
    put_canonical(&mut out, &req.input);
    out.update(b",\"meta\":");
    put_canonical(&mut out, &req.meta);
    out.update(b",\"params\":");
    put_canonical(&mut out, &req.params);
    out.update(b",\"search_key\":");
    put_json(&mut out, &req.search_key);
    out.update(b",\"version\":");
    put_json(&mut out, &req.version);
    out.update(b",\"workflow\":");
    put_json(&mut out, &req.workflow);
    out.update(b"}");
    hex::encode(out.finalize())
}

/// Feeds `v` to the hasher as compact JSON with every object's keys in byte order.
fn put_canonical(out: &mut Sha256, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            // Already in order unless serde_json keeps insertion order (`preserve_order`).
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.update(b"{");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                put_json(out, k);
                out.update(b":");
                put_canonical(out, v);
            }
            out.update(b"}");
        }
        Value::Array(items) => {
            out.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                put_canonical(out, item);
            }
            out.update(b"]");
        }
        scalar => put_json(out, scalar),
    }
}

/// Feeds a string, number, boolean, null or option of one to the hasher as compact JSON.
fn put_json<T: serde::Serialize + ?Sized>(out: &mut Sha256, v: &T) {
    // Writing these to a hasher cannot fail: serde_json fails only on the writer's errors
    // and on maps with non-string keys.
    let _ = serde_json::to_writer(IntoHasher(out), v);
}

/// An `io::Write` that feeds a hasher.
struct IntoHasher<'a>(&'a mut Sha256);

impl std::io::Write for IntoHasher<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A write waiting for a group committer, and where its answer goes.
type Queued<I, O> = (I, oneshot::Sender<Result<O, StoreError>>);

/// Hands `item` to the group committer `op` and waits for its answer; gives the item back
/// when the committer's task is gone before taking it.
async fn queue<I, O>(
    committer: &mpsc::Sender<Queued<I, O>>,
    item: I,
    op: &str,
) -> Result<Result<O, StoreError>, I> {
    let (reply, answer) = oneshot::channel();
    if let Err(mpsc::error::SendError((item, _))) = committer.send((item, reply)).await {
        return Err(item);
    }
    Ok(answer.await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "the {op} committer has stopped"
        )))
    }))
}

/// Spawns a task that takes what has queued up (at most `max` at a time) and writes it with
/// one call of `write`, which answers each item in order; a failure of the call fails every
/// item of that batch. Up to `writers` calls run at once; while all are busy the queue
/// fills, so the next batch is as large as the wait allows. The task ends once every sender
/// is dropped and every batch is written.
///
/// Starts and lock operations use one writer: a second measured slower on PostgreSQL
/// (smaller batches, and the database shares the machine's two cores), and SQLite has one
/// writer anyway.
fn group_committer<I, O, F, Fut>(
    op: &'static str,
    max: usize,
    writers: usize,
    write: F,
) -> (mpsc::Sender<Queued<I, O>>, tokio::task::JoinHandle<()>)
where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Vec<Result<O, StoreError>>, StoreError>>
        + Send
        + 'static,
{
    let max = max.max(1);
    let writers = writers.max(1);
    let (tx, mut rx) = mpsc::channel::<Queued<I, O>>(max * 4);
    let handle = tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(writers));
        let mut running = JoinSet::new();
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let Some(first) = rx.recv().await else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let written = write_batch(op, &write, batch);
            while running.try_join_next().is_some() {}
            running.spawn(async move {
                written.await;
                drop(slot);
            });
        }
        while running.join_next().await.is_some() {}
    });
    (tx, handle)
}

/// One batch of a group committer: written with one call, each item answered.
fn write_batch<I, O, F, Fut>(
    op: &'static str,
    write: &F,
    batch: Vec<Queued<I, O>>,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<I>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Result<O, StoreError>>, StoreError>>
        + Send
        + 'static,
{
    let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
    metrics::histogram!("aftersales_store_batch_items", "op" => op).record(items.len() as f64);
    let began = std::time::Instant::now();
    let written = write(items);
    async move {
        let written = written.await;
        metrics::histogram!("aftersales_store_write_seconds", "op" => op)
            .record(began.elapsed().as_secs_f64());
        match written {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
            }
        }
    }
}

/// Where the worker's commits go: straight to the store, or through the group committer.
#[derive(Clone)]
enum CommitSink {
    Direct(Arc<dyn Store>),
    Batched(mpsc::Sender<Queued<Commit, CommitOutcome>>),
}

impl CommitSink {
    /// A sink feeding a committer task that writes whatever has queued up in one store
    /// call: under load many instances share a transaction (group commit); when quiet
    /// each commit goes alone, with no added delay.
    fn batched(
        store: Arc<dyn Store>,
        max: usize,
        writers: usize,
    ) -> (CommitSink, tokio::task::JoinHandle<()>) {
        let (tx, handle) = group_committer("commit", max, writers, move |commits: Vec<Commit>| {
            let store = store.clone();
            async move {
                let outcomes = store.commit(commits).await?;
                Ok(outcomes.into_iter().map(Ok).collect())
            }
        });
        (CommitSink::Batched(tx), handle)
    }

    async fn commit(&self, c: Commit) -> Result<CommitOutcome, StoreError> {
        match self {
            CommitSink::Direct(store) => store.commit(vec![c]).await?.pop().ok_or_else(|| {
                StoreError::Corrupt("the store returned no commit outcome".to_owned())
            }),
            CommitSink::Batched(tx) => queue(tx, c, "commit").await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the commit committer has stopped".to_owned(),
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use sha2::{Digest as _, Sha256};

    use super::{StartRequest, request_hash};

    /// How the hash's text was built before it was streamed into the hasher; stored
    /// instances carry hashes of this text, so the streamed text must equal it.
    fn canonical(v: &Value) -> String {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let parts: Vec<String> = keys
                    .into_iter()
                    .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
            Value::Array(items) => format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            ),
            other => other.to_string(),
        }
    }

    fn reference_hash(req: &StartRequest) -> String {
        let text = canonical(&json!({
            "workflow": req.workflow,
            "version": req.version,
            "business_line": req.business_line,
            "input": req.input,
            "params": req.params,
            "search_key": req.search_key,
            "meta": req.meta,
        }));
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    fn request(input: Value, params: Value, meta: Value) -> StartRequest {
        StartRequest {
            workflow: "refund_only".to_owned(),
            version: None,
            business_line: "apparel".to_owned(),
            input,
            params,
            idempotency_key: Some("k-1".to_owned()),
            search_key: None,
            search_seen: None,
            meta,
            id: None,
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1.0e12f64..1.0e12).prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn the_hash_of_a_known_request_is_unchanged() {
        let mut req = request(
            json!({"order_id": "o-1", "lines": [{"sku": "mug", "qty": 2}], "note": "a \"b\"\n"}),
            json!({"window": "7d"}),
            Value::Null,
        );
        req.version = Some(3);
        req.search_key = Some("o-1".to_owned());
        assert_eq!(request_hash(&req), reference_hash(&req));
        // The same request built with its keys in another order hashes the same.
        let mut again = request(
            json!({"note": "a \"b\"\n", "lines": [{"qty": 2, "sku": "mug"}], "order_id": "o-1"}),
            json!({"window": "7d"}),
            Value::Null,
        );
        again.version = Some(3);
        again.search_key = Some("o-1".to_owned());
        assert_eq!(request_hash(&again), request_hash(&req));
        // And a different one does not.
        again.params = json!({"window": "8d"});
        assert_ne!(request_hash(&again), request_hash(&req));
    }

    proptest! {
        #[test]
        fn the_streamed_hash_equals_the_hash_of_the_canonical_text(
            input in value(),
            params in value(),
            meta in value(),
            version in proptest::option::of(any::<u32>()),
            search_key in proptest::option::of(".{0,10}"),
        ) {
            let mut req = request(input, params, meta);
            req.version = version;
            req.search_key = search_key;
            prop_assert_eq!(request_hash(&req), reference_hash(&req));
        }
    }
}
