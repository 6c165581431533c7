//! `aftersales bench`: the engine's throughput and latency on a real store, next to what that
//! store can do on its own on this machine.
//!
//! Three workloads, one per run:
//!
//! - the default: N instances of a 5-step sequential saga whose steps are simulator calls
//!   with no added latency, started by C concurrent clients while the real workers
//!   ([`Engine::run`], group commit and all) drive them to completion; then the store's raw
//!   limits (`raw`) measured on the same store kind;
//! - `--waiting N`: N instances parked on a 7-day timeout; memory and bytes per parked
//!   instance; then the clock jumps 7 days and the drain rate is measured;
//! - `--http`: the daemon's `POST /v1/after-sales` under a concurrent loopback client (`http`).
//!
//! Figures come from the engine's own records where it keeps them (history timestamps) and
//! from a timing wrapper around the dispatcher where it does not (when a call starts).
//! Nothing here changes how the engine or the store work.

mod calls;
mod http;
mod raw;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aftersales_adapter_sim::{Sim, SimConfig};
use aftersales_core::engine::machine::CallResult;
use aftersales_core::engine::{
    ActionCall, Clock, Dispatcher, Engine, ManualClock, StartRequest, SystemClock, WorkerConfig,
};
use aftersales_core::store::Store;
use aftersales_runtime::AdapterDispatcher;
use anyhow::{Context as _, bail};
use async_trait::async_trait;
use serde_json::json;
use tokio::sync::Notify;

/// The 5-step saga: five sequential simulator calls, nothing else.
const SAGA: &str = r#"
[workflow]
name = "bench.saga5"
version = 1
description = "Benchmark: five sequential simulator calls."

[input]
n = "int"

[defaults]
timeout = "30s"
retry = { max_attempts = 3, initial = "1s" }

[[step]]
id = "s1"
action = "notify.send"
input = { to = "buyer", template = "bench.1", data = { n = "${input.n}" } }

[[step]]
id = "s2"
action = "notify.send"
input = { to = "buyer", template = "bench.2", data = { n = "${input.n}" } }

[[step]]
id = "s3"
action = "notify.send"
input = { to = "buyer", template = "bench.3", data = { n = "${input.n}" } }

[[step]]
id = "s4"
action = "notify.send"
input = { to = "buyer", template = "bench.4", data = { n = "${input.n}" } }

[[step]]
id = "s5"
action = "notify.send"
input = { to = "buyer", template = "bench.5", data = { n = "${input.n}" } }

[[step]]
id = "done"
end = "completed"
"#;

/// Parks on a signal that never comes, with a 7-day timeout; on waking, one call and the end.
const WAIT: &str = r#"
[workflow]
name = "bench.wait7d"
version = 1
description = "Benchmark: park on a 7-day wait, then one simulator call."

[input]
n = "int"

[defaults]
timeout = "30s"

[[step]]
id = "park"
wait = { signal = "bench.never", timeout = "7d", on_timeout = "woke" }
next = "woke"

[[step]]
id = "woke"
action = "notify.send"
input = { to = "buyer", template = "bench.woke", data = { n = "${input.n}" } }

[[step]]
id = "done"
end = "completed"
"#;

const SAGA_STEPS: u32 = 5;
const LINE: &str = "bench";

/// Which store kind to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A SQLite file in a temporary directory (WAL, synchronous=FULL, as the store opens it).
    Sqlite,
    /// A scratch database `aftersales_bench` on the PostgreSQL server of `--store-url`,
    /// created for the run and dropped after it.
    Postgres,
}

/// Options of `aftersales bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The store kind.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// PostgreSQL server to use with `--store postgres` (its database is only used to create
    /// and drop the scratch database `aftersales_bench`).
    #[arg(
        long,
        env = "AFTERSALES_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub store_url: String,
    /// Instances to run (or requests to send with `--http`).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub instances: usize,
    /// Concurrent clients starting instances (or sending requests with `--http`).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub concurrency: usize,
    /// Instances the workers process at once (`WorkerConfig::concurrency`).
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// Most commits per store transaction (`WorkerConfig::commit_batch`).
    #[arg(long, default_value_t = 256)]
    pub commit_batch: usize,
    /// Commit transactions written at once (`WorkerConfig::commit_writers`); the store's
    /// own default when absent (2 on SQLite and on PostgreSQL).
    #[arg(long)]
    pub commit_writers: Option<usize>,
    /// Instead of the saga: park this many instances on a 7-day wait, then make them due
    /// and measure how fast they drain.
    #[arg(long, value_name = "N", conflicts_with = "http")]
    pub waiting: Option<usize>,
    /// Instead of the saga: run the daemon in process and load `POST /v1/after-sales` from a
    /// loopback client (run from the repository root: it loads workflows/ and config/).
    #[arg(long)]
    pub http: bool,
    /// With `--waiting`: seconds to sit idle with every instance parked, measuring CPU.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
    /// How long each raw store measurement runs, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub raw_ms: u64,
    /// Skip the raw store measurements.
    #[arg(long)]
    pub no_raw: bool,
    /// Saga: run it this many times, each on a fresh scratch store, and end with each run's
    /// steps/s and their median. A shared machine's speed drifts by more than most changes
    /// are worth; compare medians (and alternate the binaries being compared).
    #[arg(long, default_value_t = 1, conflicts_with_all = ["http", "waiting"])]
    pub rounds: usize,
    /// Saga and `--waiting`: answer every call at once with an empty output instead of
    /// through the simulator, which keeps every call, message and idempotency answer in
    /// memory; what is left is the engine and the store (their CPU and their memory).
    #[arg(long, conflicts_with = "http")]
    pub no_sim: bool,
}

/// Runs `aftersales bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.instances == 0 || args.concurrency == 0 || args.workers == 0 || args.rounds == 0 {
        bail!("-n, -c, --workers and --rounds must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        if args.http {
            http::run(&args).await
        } else if let Some(n) = args.waiting {
            waiting(&args, n).await
        } else {
            sagas(&args).await
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// The scratch store.

/// A store made for one run and removed after it.
pub(crate) struct Scratch {
    kind: StoreKind,
    /// What `open_store` opens.
    url: String,
    /// PostgreSQL: the server's own database, to create and drop the scratch one.
    admin_url: Option<String>,
    /// SQLite: the temporary directory and the database file in it.
    dir: Option<tempfile::TempDir>,
    file: Option<PathBuf>,
    /// PostgreSQL: one connection to the scratch database, for its size.
    pg: Option<sqlx::PgPool>,
}

/// The scratch database's name on PostgreSQL.
const PG_DB: &str = "aftersales_bench";

impl Scratch {
    pub(crate) async fn create(kind: StoreKind, pg_url: &str) -> anyhow::Result<Scratch> {
        match kind {
            StoreKind::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("aftersales-bench-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                let file = dir.path().join("bench.db");
                Ok(Scratch {
                    kind,
                    url: file.display().to_string(),
                    admin_url: None,
                    dir: Some(dir),
                    file: Some(file),
                    pg: None,
                })
            }
            StoreKind::Postgres => {
                use sqlx::Connection as _;
                let mut admin = sqlx::PgConnection::connect(pg_url)
                    .await
                    .context("connecting to PostgreSQL (--store-url / AFTERSALES_BENCH_PG_URL)")?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .context("dropping an old scratch database")?;
                sqlx::query(&format!("CREATE DATABASE {PG_DB}"))
                    .execute(&mut admin)
                    .await
                    .context("creating the scratch database")?;
                let _ = admin.close().await;
                let url = with_database(pg_url, PG_DB)?;
                let pg = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .context("connecting to the scratch database")?;
                Ok(Scratch {
                    kind,
                    url,
                    admin_url: Some(pg_url.to_owned()),
                    dir: None,
                    file: None,
                    pg: Some(pg),
                })
            }
        }
    }

    pub(crate) async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        aftersales_store::open_store(&self.url)
            .await
            .context("opening the store")
    }

    /// Where the store is, for people (no password: the URL is printed without it).
    pub(crate) fn describe(&self) -> String {
        match self.kind {
            StoreKind::Sqlite => format!(
                "sqlite {} (WAL, synchronous=FULL)",
                self.file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default()
            ),
            StoreKind::Postgres => format!("postgres, scratch database {PG_DB}"),
        }
    }

    /// The store's size now: SQLite's database file plus its WAL (the `-shm` index is not
    /// data and not counted), or `pg_database_size` of the scratch database.
    pub(crate) async fn bytes(&self) -> anyhow::Result<StoreBytes> {
        match (self.kind, &self.file, &self.pg) {
            (StoreKind::Sqlite, Some(file), _) => {
                let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                let wal = PathBuf::from(format!("{}-wal", file.display()));
                Ok(StoreBytes {
                    main: size(file.clone()),
                    wal: size(wal),
                })
            }
            (StoreKind::Postgres, _, Some(pg)) => {
                let (n,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
                    .fetch_one(pg)
                    .await
                    .context("reading pg_database_size")?;
                Ok(StoreBytes {
                    main: u64::try_from(n).unwrap_or(0),
                    wal: 0,
                })
            }
            _ => bail!("scratch store without its handle"),
        }
    }

    /// Measures the store kind's raw limits beside the engine's store.
    pub(crate) async fn raw(&self, ms: u64) -> anyhow::Result<raw::Limits> {
        match self.kind {
            StoreKind::Sqlite => {
                let dir = self
                    .dir
                    .as_ref()
                    .map(|d| d.path().to_path_buf())
                    .context("no temporary directory")?;
                raw::sqlite(&dir.join("raw.db"), Duration::from_millis(ms)).await
            }
            StoreKind::Postgres => raw::postgres(&self.url, Duration::from_millis(ms)).await,
        }
    }

    /// Drops the scratch database (PostgreSQL) or removes the directory (SQLite).
    pub(crate) async fn remove(mut self) -> anyhow::Result<()> {
        if let Some(pg) = self.pg.take() {
            pg.close().await;
        }
        if let Some(admin_url) = &self.admin_url {
            use sqlx::Connection as _;
            let mut admin = sqlx::PgConnection::connect(admin_url)
                .await
                .context("connecting to PostgreSQL to drop the scratch database")?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .context("dropping the scratch database")?;
            let _ = admin.close().await;
        }
        if let Some(dir) = self.dir.take() {
            dir.close().context("removing the temporary directory")?;
        }
        Ok(())
    }
}

/// A store's size in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreBytes {
    main: u64,
    wal: u64,
}

impl StoreBytes {
    fn total(self) -> u64 {
        self.main + self.wal
    }
}

/// The same PostgreSQL URL naming another database.
fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .map(|i| i + 3)
        .context("--store-url must look like postgres://user@host:port/db")?;
    let head = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{head}/{db}?{q}"),
        None => format!("{head}/{db}"),
    })
}

// ---------------------------------------------------------------------------------------
// Timing around the dispatcher.

/// Wraps the real dispatcher and records, per instance, when each call starts and returns.
///
/// "Due" for step 1 is the moment `Engine::start` returned (the instance is committed and
/// due); for step k > 1 it is the moment step k-1's call returned (a sequential saga's next
/// step is due as soon as the previous one's result is in). The gap to the next call's start
/// is what the engine spends between the two: claim (step 1 only), apply, advance, the
/// durable commit through the group committer, and the hand-off to the call.
pub(crate) struct Timed {
    inner: Arc<dyn Dispatcher>,
    track: bool,
    /// Per instance: when its next step became due, and how many calls it has made.
    open: Mutex<HashMap<String, (Instant, u32)>>,
    /// Dispatch latency of step 1, and of steps 2.., in microseconds.
    first: Mutex<Vec<u64>>,
    later: Mutex<Vec<u64>>,
    /// Calls returned, and the count at which `all_returned` fires.
    returned: AtomicUsize,
    expect: AtomicUsize,
    all_returned: Notify,
}

impl Timed {
    pub(crate) fn new(inner: Arc<dyn Dispatcher>, track: bool) -> Timed {
        Timed {
            inner,
            track,
            open: Mutex::new(HashMap::new()),
            first: Mutex::new(Vec::new()),
            later: Mutex::new(Vec::new()),
            returned: AtomicUsize::new(0),
            expect: AtomicUsize::new(usize::MAX),
            all_returned: Notify::new(),
        }
    }

    /// Step 1 of this instance is due now.
    fn due(&self, id: &str) {
        if self.track {
            lock(&self.open).insert(id.to_owned(), (Instant::now(), 0));
        }
    }

    /// Waits until `n` calls in all have returned.
    async fn wait_returned(&self, n: usize) {
        self.expect.store(n, Ordering::SeqCst);
        loop {
            let notified = self.all_returned.notified();
            if self.returned.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl Dispatcher for Timed {
    async fn dispatch(&self, call: ActionCall) -> CallResult {
        if self.track {
            let now = Instant::now();
            let gap = {
                let mut open = lock(&self.open);
                open.get_mut(&call.instance_id).map(|(due, calls)| {
                    *calls += 1;
                    (now.saturating_duration_since(*due), *calls)
                })
            };
            if let Some((gap, calls)) = gap {
                let us = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
                if calls == 1 {
                    lock(&self.first).push(us);
                } else {
                    lock(&self.later).push(us);
                }
            }
        }
        let id = call.instance_id.clone();
        let r = self.inner.dispatch(call).await;
        if self.track
            && let Some((due, _)) = lock(&self.open).get_mut(&id)
        {
            *due = Instant::now();
        }
        let n = self.returned.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.expect.load(Ordering::SeqCst) {
            self.all_returned.notify_waiters();
        }
        r
    }
}

// ---------------------------------------------------------------------------------------
// Shared pieces.

/// What answers the calls, for the run's header.
fn callee(args: &BenchArgs) -> &'static str {
    if args.no_sim {
        "calls answered at once, nothing kept (--no-sim)"
    } else {
        "simulator calls (no latency, no faults)"
    }
}

/// Answers every call at once with an empty output and keeps nothing (`--no-sim`).
struct Ack;

#[async_trait]
impl Dispatcher for Ack {
    async fn dispatch(&self, _call: ActionCall) -> CallResult {
        CallResult::Done(json!({}))
    }
}

/// The simulator with no latency and no faults, behind the business line `bench`; with
/// `--no-sim`, [`Ack`].
fn sim_dispatcher(
    args: &BenchArgs,
    clock: impl Fn() -> SystemTime + Send + Sync + 'static,
) -> Arc<dyn Dispatcher> {
    if args.no_sim {
        return Arc::new(Ack);
    }
    let sim = Sim::new(SimConfig::quiet(7), clock);
    let mut d = AdapterDispatcher::new();
    d.bind(LINE, Arc::new(sim.adapter_set()));
    Arc::new(d)
}

fn worker_config(args: &BenchArgs) -> WorkerConfig {
    WorkerConfig {
        owner: "bench".to_owned(),
        concurrency: args.workers,
        commit_batch: args.commit_batch,
        commit_writers: args.commit_writers,
        ..WorkerConfig::default()
    }
}

/// Starts instances `0..n` of `workflow` from `clients` concurrent tasks; ids are
/// `bench-{i}`. Returns the ids.
async fn start_all(
    engine: &Arc<Engine>,
    timed: &Arc<Timed>,
    workflow: &'static str,
    n: usize,
    clients: usize,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients.min(n) {
        let engine = engine.clone();
        let timed = timed.clone();
        let next = next.clone();
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let id = format!("bench-{i:08}");
                let started = engine
                    .start(StartRequest {
                        workflow: workflow.to_owned(),
                        version: None,
                        business_line: LINE.to_owned(),
                        input: json!({ "n": i }),
                        params: json!({}),
                        idempotency_key: Some(id.clone()),
                        search_key: None,
                        search_seen: None,
                        meta: serde_json::Value::Null,
                        id: Some(id.clone()),
                    })
                    .await
                    .with_context(|| format!("starting instance {i}"))?;
                if !started.created {
                    bail!("instance {i} already existed");
                }
                timed.due(&id);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("a starter task failed")??;
    }
    Ok((0..n).map(|i| format!("bench-{i:08}")).collect())
}

/// Waits until no instance is running (all reached their end and were committed).
async fn wait_finished(store: &dyn Store, clock: &dyn Clock) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = store.stats(clock.now_ms()).await?;
        if s.running == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} instances still running after 10 minutes", s.running);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// CPU time this process used so far, user plus system, in clock ticks (100 per second).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    at(11) + at(12)
}

/// Peak and current resident set size, from /proc/self/status, in KiB.
pub(crate) fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{}.{} MiB", kib / 1024, (kib % 1024) * 10 / 1024)
}

/// Nearest-rank percentile of a sorted slice.
pub(crate) fn pct(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() as u64 * p).div_ceil(100).max(1);
    sorted[usize::try_from(rank - 1).unwrap_or(0).min(sorted.len() - 1)]
}

/// Microseconds as milliseconds with two decimals.
pub(crate) fn ms(us: u64) -> String {
    format!("{}.{:02}", us / 1000, (us % 1000) / 10)
}

pub(crate) fn p3(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    format!(
        "{} / {} / {} ms",
        ms(pct(&v, 50)),
        ms(pct(&v, 95)),
        ms(pct(&v, 99))
    )
}

/// A rate with no decimals for big numbers, one for small ones.
pub(crate) fn rate(count: f64, secs: f64) -> String {
    let r = if secs > 0.0 { count / secs } else { 0.0 };
    if r >= 100.0 {
        group(r.round() as u64)
    } else {
        format!("{r:.1}")
    }
}

/// 1234567 → "1,234,567".
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn engine_on(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    timed: Arc<Timed>,
) -> anyhow::Result<Arc<Engine>> {
    let engine = Arc::new(Engine::new(
        store,
        clock,
        timed,
        aftersales_runtime::catalogue::builtin(),
    ));
    engine
        .deploy(&[
            ("bench/saga5.toml".to_owned(), SAGA.to_owned()),
            ("bench/wait7d.toml".to_owned(), WAIT.to_owned()),
        ])
        .await
        .context("deploying the bench workflows")?;
    Ok(engine)
}

// ---------------------------------------------------------------------------------------
// The saga.

/// The saga `--rounds` times, then each round's steps/s and their median.
async fn sagas(args: &BenchArgs) -> anyhow::Result<()> {
    let calls = calls::StoreCalls::install();
    let mut rates = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round} of {}:", args.rounds);
        }
        rates.push(saga(args, calls.as_ref()).await?);
    }
    if args.rounds > 1 {
        let each: Vec<String> = rates.iter().map(|r| group(*r as u64)).collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "steps/s over {} rounds: {}; median {}, min {}, max {}",
            args.rounds,
            each.join(", "),
            group(median(&rates) as u64),
            group(rates[0] as u64),
            group(rates[rates.len() - 1] as u64)
        );
    }
    Ok(())
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One saga run on a fresh scratch store; its steps/s.
async fn saga(args: &BenchArgs, calls: Option<&calls::StoreCalls>) -> anyhow::Result<f64> {
    let n = args.instances;
    if let Some(calls) = calls {
        // What the previous round's engine did after its figures were printed.
        calls.reset();
    }
    let scratch = Scratch::create(args.store, &args.store_url).await?;
    let store = scratch.open().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let timed = Arc::new(Timed::new(sim_dispatcher(args, SystemTime::now), true));
    let engine = engine_on(store.clone(), clock.clone(), timed.clone()).await?;
    println!(
        "aftersales bench: {}; {n} instances of a {SAGA_STEPS}-step saga of {}; {} starting \
         clients, {} workers, commit batch {}, {} commit writers",
        scratch.describe(),
        callee(args),
        args.concurrency,
        args.workers,
        args.commit_batch,
        worker_config(args).commit_writers_on(store.as_ref())
    );
    let before = scratch.bytes().await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine.clone().run(worker_config(args), stop_rx));
    let t0 = Instant::now();
    let cpu0 = cpu_ticks();
    let ids = start_all(&engine, &timed, "bench.saga5", n, args.concurrency).await?;
    let started_in = t0.elapsed();
    timed
        .wait_returned(n * usize::try_from(SAGA_STEPS).unwrap_or(5))
        .await;
    wait_finished(store.as_ref(), clock.as_ref()).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_secs = cpu_ticks().saturating_sub(cpu0) as f64 / 100.0;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    let (hwm, rss) = rss_kib();
    let after = scratch.bytes().await?;

    // Start → completion, from the history the engine wrote (1 ms resolution).
    let mut completed = 0usize;
    let mut e2e = Vec::with_capacity(ids.len());
    for id in &ids {
        let h = engine.history(id, 0, 100).await?;
        let at = |kind: &str| h.iter().find(|r| r.event.kind == kind).map(|r| r.event.at);
        if let (Some(s), Some(c)) = (at("instance_started"), at("instance_completed")) {
            completed += 1;
            e2e.push(u64::try_from(c - s).unwrap_or(0) * 1000);
        }
    }
    let steps = (n as f64) * f64::from(SAGA_STEPS);
    let first = std::mem::take(&mut *lock(&timed.first));
    let later = std::mem::take(&mut *lock(&timed.later));
    let grown = after.total().saturating_sub(before.total());
    println!("  completed:                 {completed} / {n}");
    println!(
        "  elapsed:                   {elapsed:.3} s (all starts issued in {:.3} s)",
        started_in.as_secs_f64()
    );
    println!("  workflows/s:               {}", rate(n as f64, elapsed));
    let steps_per_s = if elapsed > 0.0 { steps / elapsed } else { 0.0 };
    println!("  steps/s:                   {}", rate(steps, elapsed));
    println!(
        "  CPU while running:         {cpu_secs:.2} s = {:.0} µs per step, {:.2} of {} cores   (user + system of this process{})",
        cpu_secs * 1e6 / steps,
        cpu_secs / elapsed.max(1e-9),
        std::thread::available_parallelism().map_or(1, usize::from),
        if args.store == StoreKind::Postgres {
            "; PostgreSQL's own is not counted"
        } else {
            ""
        }
    );
    println!(
        "  start→completion p50/p95/p99: {}   (history timestamps, 1 ms resolution)",
        p3(e2e)
    );
    println!(
        "  dispatch latency step 1 p50/p95/p99:    {}   (start() returned → first call began: claim + commit)",
        p3(first)
    );
    println!(
        "  dispatch latency steps 2-5 p50/p95/p99: {}   (previous call returned → next call began: apply + durable commit)",
        p3(later)
    );
    println!(
        "  peak RSS (VmHWM):          {}   (VmRSS now {}; engine, simulator and load client in one process{})",
        mib(hwm),
        mib(rss),
        if args.rounds > 1 {
            "; the peak of every round so far"
        } else {
            ""
        }
    );
    println!(
        "  store bytes per instance:  {}   ({} → {} bytes{})",
        group(grown / n as u64),
        group(before.total()),
        group(after.total()),
        if args.store == StoreKind::Sqlite {
            format!(
                ", of which WAL {}; the database file alone grew {} per instance",
                group(after.wal),
                group(after.main.saturating_sub(before.main) / n as u64)
            )
        } else {
            ", pg_database_size".to_owned()
        }
    );
    if let Some(calls) = calls {
        calls.print(elapsed);
    }
    if !args.no_raw {
        println!(
            "store raw limits (same store kind, scratch table, {} ms each, nothing else running):",
            args.raw_ms
        );
        let limits = scratch.raw(args.raw_ms).await?;
        limits.print(steps_per_s);
    }
    drop(engine);
    drop(store);
    scratch.remove().await?;
    Ok(steps_per_s)
}

// ---------------------------------------------------------------------------------------
// Waiting instances.

async fn waiting(args: &BenchArgs, n: usize) -> anyhow::Result<()> {
    let calls = calls::StoreCalls::install();
    let scratch = Scratch::create(args.store, &args.store_url).await?;
    let store = scratch.open().await?;
    let manual = ManualClock::new(now_ms());
    let sim_clock = manual.clone();
    let clock: Arc<dyn Clock> = Arc::new(manual.clone());
    let timed = Arc::new(Timed::new(
        sim_dispatcher(args, move || {
            UNIX_EPOCH + Duration::from_millis(u64::try_from(sim_clock.now_ms()).unwrap_or(0))
        }),
        false,
    ));
    let engine = engine_on(store.clone(), clock.clone(), timed.clone()).await?;
    println!(
        "aftersales bench --waiting: {}; {n} instances parked on a 7-day wait, then the clock \
         jumps 7 days and each makes one call ({}); {} starting clients, {} workers, commit \
         batch {}",
        scratch.describe(),
        callee(args),
        args.concurrency,
        args.workers,
        args.commit_batch
    );
    let before = scratch.bytes().await?;
    let (_, rss0) = rss_kib();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine.clone().run(worker_config(args), stop_rx));
    let t0 = Instant::now();
    start_all(&engine, &timed, "bench.wait7d", n, args.concurrency).await?;
    // Parked: every instance has had its first round (nothing due) and none has ended.
    loop {
        let s = store.stats(clock.now_ms()).await?;
        if s.due == 0 {
            if s.running != n as u64 {
                bail!("{} of {n} instances are running after parking", s.running);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let park_secs = t0.elapsed().as_secs_f64();
    let (hwm1, rss1) = rss_kib();
    let parked = scratch.bytes().await?;
    let grown = parked.total().saturating_sub(before.total());
    println!(
        "  parked:                    {n} in {park_secs:.3} s ({} starts+parks/s)",
        rate(n as f64, park_secs)
    );
    println!(
        "  RSS while parked:          {} (before the starts {}, peak so far {})",
        mib(rss1),
        mib(rss0),
        mib(hwm1)
    );
    println!(
        "  RSS per parked instance:   {} bytes",
        group(rss1.saturating_sub(rss0) * 1024 / n as u64)
    );
    println!(
        "  store bytes per instance:  {}   ({} → {} bytes)",
        group(grown / n as u64),
        group(before.total()),
        group(parked.total())
    );
    if let Some(calls) = &calls {
        calls.print(park_secs);
    }

    // Idle: nothing is due for 7 days; what does the daemon burn meanwhile?
    let idle = Duration::from_secs(args.idle_secs);
    if !idle.is_zero() {
        let (ticks0, t) = (cpu_ticks(), Instant::now());
        tokio::time::sleep(idle).await;
        let used = cpu_ticks().saturating_sub(ticks0) as f64 / 100.0;
        println!(
            "  idle CPU while parked:     {:.2}% of one core over {:.1} s (utime+stime, 100 Hz ticks)",
            100.0 * used / t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }

    // The clock jumps past the timeout: every instance is due at once.
    if let Some(calls) = &calls {
        calls.reset();
    }
    let t1 = Instant::now();
    manual.advance(7 * 24 * 3_600_000 + 60_000);
    engine.notify();
    timed.wait_returned(n).await;
    wait_finished(store.as_ref(), clock.as_ref()).await?;
    let drain = t1.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    let (hwm2, _) = rss_kib();
    let done = store.stats(clock.now_ms()).await?;
    println!(
        "  completed:                 {} / {n}",
        n as u64 - done.running.min(n as u64)
    );
    println!(
        "  drained in:                {drain:.3} s = {} wake-ups/s   (timeout fires → one call → end)",
        rate(n as f64, drain)
    );
    if let Some(calls) = &calls {
        calls.print(drain);
    }
    println!("  peak RSS (VmHWM):          {}", mib(hwm2));
    drop(engine);
    drop(store);
    scratch.remove().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x").ok(),
            Some("postgres://postgres@127.0.0.1:5432/x".to_owned())
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x").ok(),
            Some("postgres://u:p@h/x?sslmode=disable".to_owned())
        );
        assert_eq!(
            with_database("postgres://h:5432", "x").ok(),
            Some("postgres://h:5432/x".to_owned())
        );
    }

    #[test]
    fn percentiles_and_numbers() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(pct(&v, 50), 50);
        assert_eq!(pct(&v, 99), 99);
        assert_eq!(pct(&[7], 99), 7);
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(12), "12");
        assert_eq!(ms(1_234), "1.23");
        assert_eq!(median(&[1.0, 5.0, 9.0]), 5.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
    }
}
