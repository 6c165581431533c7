//! One reliability run: the simulator, the daemons on one store, the world seeded, the
//! requests pushed, the actors played, the daemons killed (and PostgreSQL restarted), then
//! the checks and the summary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::api::Api;
use crate::procs::{self, Cluster, TOKEN_ENV};
use crate::world::{self, Rng, decide};

/// Where the daemons keep their state.
pub enum StoreKind {
    /// A scratch database on the server of `AFTERSALES_TEST_PG_URL`.
    Postgres { base: String },
    /// One SQLite file.
    Sqlite,
}

/// What a run does.
pub struct Spec {
    pub name: &'static str,
    pub store: StoreKind,
    pub daemons: usize,
    /// Requests at scale 1.
    pub orders: usize,
    /// A daemon is killed every this many milliseconds (drawn in the range); `None`: never.
    pub kill_every_ms: Option<(u64, u64)>,
    /// Stop PostgreSQL once half the requests are in, check readiness, start it again.
    pub pg_outage: Option<PgCluster>,
}

/// How to stop and start the PostgreSQL server the tests use.
pub struct PgCluster {
    pub version: String,
}

impl PgCluster {
    /// The `pg_ctlcluster` cluster, or the reason it cannot be used.
    pub fn find() -> Result<PgCluster, String> {
        let ok = std::process::Command::new("pg_ctlcluster")
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !ok {
            return Err("`pg_ctlcluster` is not on the PATH".into());
        }
        let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .map_err(|e| format!("/etc/postgresql: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        match versions.as_slice() {
            [v] => Ok(PgCluster { version: v.clone() }),
            other => Err(format!(
                "expected one cluster version under /etc/postgresql, found {other:?}"
            )),
        }
    }

    fn ctl(&self, action: &str) {
        let out = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main", action])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctlcluster {} main {action}: {}{}",
            self.version,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `AFTERSALES_RELIABILITY_SEED`, or one from the time.
pub fn seed() -> u64 {
    std::env::var("AFTERSALES_RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_000
        })
}

/// `AFTERSALES_RELIABILITY_SCALE`: a multiplier of the number of requests (default 1).
pub fn scale() -> f64 {
    std::env::var("AFTERSALES_RELIABILITY_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0)
}

/// The simulator's faults: transient errors, lost answers and lost requests on every
/// action, calls that hang past the adapter's timeout, refunds refused for good now and
/// then, interceptions too late, carriers that fail to bring a parcel back.
fn sim_settings(seed: u64) -> String {
    format!(
        r#"seed = {seed}
faults = {{ transient = 30, lost_answer = 10, lost_request = 5, hang = 2 }}
business = {{ intercept_too_late = 150, carrier_intercept_fails = 200 }}

[action_faults."payment.refund"]
transient = 60
permanent = 3
lost_answer = 20
lost_request = 10
hang = 3
"#
    )
}

/// The shipped business lines with their adapters replaced by the HTTP adapter of
/// `config/examples/http-against-sim.toml`, pointed at the simulator.
fn write_business_lines(dir: &Path, sim_base: &str) {
    let root = procs::repo_root();
    let example =
        std::fs::read_to_string(root.join("config/examples/http-against-sim.toml")).unwrap();
    let mut example: toml::Table = toml::from_str(&example).unwrap();
    let mut adapters = example.remove("adapters").unwrap();
    for (_, system) in adapters.as_table_mut().unwrap().iter_mut() {
        let settings = system["settings"].as_table_mut().unwrap();
        settings.insert("base_url".into(), sim_base.into());
        // Shorter than the lease, so a hanging call is given up long before its lease lapses.
        settings.insert("timeout".into(), "3s".into());
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("config/business-lines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let mut line: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        line.insert("adapters".into(), adapters.clone());
        std::fs::write(
            dir.join(path.file_name().unwrap()),
            toml::to_string(&line).unwrap(),
        )
        .unwrap();
        n += 1;
    }
    assert!(
        n >= 5,
        "expected the five shipped business lines, found {n}"
    );
}

/// Copies the shipped workflows into the run's directory, so editing the repository during
/// a long run cannot change what a restarted daemon deploys.
fn copy_workflows(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_workflows(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn write_daemon_config(path: &Path, store_url: &str, lines: &Path, workflows: &Path) {
    std::fs::write(
        path,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[store]
url = "{store_url}"

[workers]
concurrency = 16
lease = "6s"
idle_poll = "500ms"

[paths]
workflows = "{}"
business_lines = "{}"

[[auth.tokens]]
name = "reliability"
env = "{TOKEN_ENV}"
scopes = ["admin"]
"#,
            workflows.display(),
            lines.display()
        ),
    )
    .unwrap();
}

/// A scratch PostgreSQL database, dropped when the run ends.
struct PgScratch {
    base: String,
    db: String,
    url: String,
}

impl PgScratch {
    async fn create(base: &str, name: &str, seed: u64) -> PgScratch {
        let admin = sqlx::PgPool::connect(base)
            .await
            .unwrap_or_else(|e| panic!("connecting to {base}: {e}"));
        let db = format!("aftersales_rel_{name}_{}_{seed}", std::process::id());
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&admin)
            .await;
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
        PgScratch {
            base: base.to_owned(),
            db,
            url,
        }
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        // A runtime of its own: this also runs while a test unwinds.
        let (base, db) = (self.base.clone(), self.db.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = sqlx::PgPool::connect(&base).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&admin)
                    .await
                    .ok()?;
                admin.close().await;
                Some(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the scratch database {}", self.db);
        }
    }
}

/// Keeps the run's directory (logs, configs, the SQLite file) when the test fails.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            let path = dir.keep();
            eprintln!(
                "reliability run failed: logs, configs and stores kept in {}",
                path.display()
            );
        }
    }
}

/// Kills every child when the run ends, however it ends.
struct KillOnDrop(Arc<Cluster>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill_all();
    }
}

/// What the run saw, shared by its tasks.
struct State {
    seed: u64,
    api: Api,
    stop: AtomicBool,
    pause_chaos: AtomicBool,
    /// Plan index → service order id.
    accepted: Mutex<BTreeMap<usize, String>>,
    refused: Mutex<BTreeMap<String, u64>>,
    submits_done: AtomicBool,
    signals: AtomicUsize,
    receipts: AtomicUsize,
    events: AtomicUsize,
    /// Events and signals sent a second time (same dedupe id), on purpose.
    duplicates: AtomicUsize,
    /// Events held back a round, so they arrive after newer ones.
    late: AtomicUsize,
    /// Every event body relayed, for the late replay at the end.
    relayed: Mutex<Vec<Value>>,
    crashes: Mutex<Vec<String>>,
    outage: Mutex<Option<String>>,
}

async fn start_daemon(cluster: &Arc<Cluster>, i: usize, patience: Duration) {
    let started = Instant::now();
    loop {
        let c = cluster.clone();
        match tokio::task::spawn_blocking(move || c.start(i))
            .await
            .unwrap()
        {
            Ok(_) => return,
            Err(e) => {
                assert!(
                    started.elapsed() < patience,
                    "daemon {i} would not start for {patience:?}: {e}\nits log ends:\n{}",
                    cluster.log_tail(i, 30)
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn sleep_unless_stopped(state: &State, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !state.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills a random daemon with SIGKILL every few seconds and starts it again.
async fn chaos(state: Arc<State>, range: (u64, u64)) {
    let cluster = state.api.cluster.clone();
    let mut rng = Rng::new(state.seed ^ 0x000C_4A05);
    loop {
        let wait = range.0 + rng.below(range.1 - range.0 + 1);
        sleep_unless_stopped(&state, Duration::from_millis(wait)).await;
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
        if state.pause_chaos.load(Ordering::Relaxed) {
            continue;
        }
        let i = rng.below(cluster.len() as u64) as usize;
        if !cluster.kill(i) {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        start_daemon(&cluster, i, Duration::from_secs(120)).await;
    }
}

/// Takes the simulator's outbox (a warehouse received a return, a refund settled) and
/// delivers each event to a daemon through `POST /v1/events`, as a webhook relay would, and
/// as badly as real ones do: one event in ten is delivered twice (to another daemon, same
/// dedupe id), one in ten is held back a round so it arrives after newer ones.
async fn relay(state: Arc<State>) {
    let mut rng = Rng::new(state.seed ^ 0x5E1A_7000);
    let mut held: Vec<Value> = Vec::new();
    loop {
        let stopping = state.stop.load(Ordering::Relaxed);
        let drained = state
            .api
            .sim(Method::POST, "/sim/events/drain", None)
            .await
            .body;
        let events = drained["events"].as_array().cloned().unwrap_or_default();
        let mut batch: Vec<Value> = std::mem::take(&mut held);
        for e in &events {
            let body = json!({
                "name": e["name"], "correlation": e["correlation"],
                "dedupe_id": e["dedupe_id"], "payload": e["payload"],
            });
            if !stopping && rng.chance(100) {
                state.late.fetch_add(1, Ordering::Relaxed);
                held.push(body);
            } else {
                batch.push(body);
            }
        }
        let quiet = batch.is_empty() && held.is_empty();
        for body in batch {
            let copies = if rng.chance(100) { 2 } else { 1 };
            for _ in 0..copies {
                deliver_event(&state, &body).await;
            }
            if copies > 1 {
                state.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            state.events.fetch_add(1, Ordering::Relaxed);
            state.relayed.lock().unwrap().push(body);
        }
        if stopping && quiet {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn deliver_event(state: &State, body: &Value) {
    let a = state
        .api
        .call(Method::POST, "/v1/events", Some(body), None)
        .await;
    assert!(
        a.status == 200 || a.status == 202,
        "POST /v1/events {body} answered {}: {}",
        a.status,
        a.body
    );
}

/// After the run: every event relayed is delivered again, late, and every final service
/// order gets a signal it is no longer waiting for (a new dedupe id). None of it may change
/// a state or move money; the ledger checks that follow see the result.
async fn replay_late(state: &Arc<State>, all: &[Value]) -> (usize, usize) {
    let events = state.relayed.lock().unwrap().clone();
    let next = Arc::new(AtomicUsize::new(0));
    let events = Arc::new(events);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (state, events, next) = (state.clone(), events.clone(), next.clone());
        set.spawn(async move {
            while let Some(body) = events.get(next.fetch_add(1, Ordering::Relaxed)) {
                deliver_event(&state, body).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let mut signals = 0;
    for o in all.iter().step_by(4) {
        let id = o["id"].as_str().unwrap();
        let a = state
            .api
            .call(
                Method::POST,
                &format!("/v1/after-sales/{id}/signals/merchant.decision"),
                Some(&json!({"payload": {"approved": true}})),
                Some(&format!("{id}-late-decision")),
            )
            .await;
        assert!(
            matches!(a.status, 200 | 202 | 409),
            "a late signal to {id} answered {}: {}",
            a.status,
            a.body
        );
        signals += 1;
    }
    (events.len(), signals)
}

/// Pushes the planned requests through `POST /v1/after-sales`, `workers` at a time.
async fn submit_all(state: Arc<State>, requests: Arc<Vec<world::Planned>>, run: String) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (state, requests, next, run) =
            (state.clone(), requests.clone(), next.clone(), run.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = requests.get(i) else {
                    return;
                };
                let key = format!("{run}-submit-{i}");
                let a = state
                    .api
                    .call(
                        Method::POST,
                        "/v1/after-sales",
                        Some(&p.request),
                        Some(&key),
                    )
                    .await;
                match a.status {
                    200..=202 => {
                        let id = a.body["id"].as_str().unwrap().to_owned();
                        state.accepted.lock().unwrap().insert(i, id);
                        if p.ship_after_submit {
                            let order = p.request["order_id"].as_str().unwrap();
                            state
                                .api
                                .sim(
                                    Method::POST,
                                    &format!("/sim/orders/{order}/shipment"),
                                    Some(&json!({"state": "shipped"})),
                                )
                                .await;
                        }
                    }
                    422 => {
                        let code = a.body["rule"]["code"]
                            .as_str()
                            .unwrap_or("invalid")
                            .to_owned();
                        *state.refused.lock().unwrap().entry(code).or_default() += 1;
                    }
                    s => panic!(
                        "POST /v1/after-sales (key {key}) answered {s}: {}\nrequest: {}",
                        a.body, p.request
                    ),
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    state.submits_done.store(true, Ordering::Relaxed);
}

/// Stops PostgreSQL once half the requests are in, checks that the daemons say they are
/// not ready, starts it again, and checks that they recover.
async fn outage(state: Arc<State>, pg: PgCluster, half: usize) {
    while state.accepted.lock().unwrap().len() < half {
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cluster = state.api.cluster.clone();
    state.pause_chaos.store(true, Ordering::Relaxed);
    // Let a restart in progress finish, so every daemon is up when the database goes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.live().len() < cluster.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let version = pg.version.clone();
    let pg = Arc::new(pg);
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.ctl("stop"))
        .await
        .unwrap();
    eprintln!(
        "[{}] PostgreSQL {version} stopped",
        state.api.cluster.dir.display()
    );
    // Every live daemon's /readyz must say 503 while the database is away.
    let live = cluster.live();
    let mut not_ready: BTreeSet<String> = BTreeSet::new();
    let observe_until = Instant::now() + Duration::from_secs(15);
    while not_ready.len() < live.len() && Instant::now() < observe_until {
        for base in &live {
            if let Ok(r) = state.api.http.get(format!("{base}/readyz")).send().await
                && r.status().as_u16() == 503
            {
                not_ready.insert(base.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.ctl("start"))
        .await
        .unwrap();
    let down = started.elapsed();
    state.pause_chaos.store(false, Ordering::Relaxed);
    let mut recovered = 0;
    for base in &live {
        if procs::wait_ready(&state.api.http, base, Duration::from_secs(60)).await {
            recovered += 1;
        }
    }
    let report = format!(
        "PostgreSQL down {:.1}s; /readyz said not ready on {}/{} daemons while it was down; {recovered}/{} ready again afterwards",
        down.as_secs_f64(),
        not_ready.len(),
        live.len(),
        live.len()
    );
    eprintln!("{report}");
    assert_eq!(
        not_ready.len(),
        live.len(),
        "every live daemon should report not ready while PostgreSQL is down: {report}"
    );
    *state.outage.lock().unwrap() = Some(report);
}

/// Plays the people around the service orders: the merchant decides, the sales agent
/// reports, the buyer ships, the warehouse receives the parcel.
async fn act(
    state: &Arc<State>,
    all: &[Value],
    in_flight: &mut HashMap<(String, String), Instant>,
    set: &mut tokio::task::JoinSet<()>,
) {
    let needs_returns = all.iter().any(|o| {
        o["waiting"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["what"] == "warehouse.return.received"))
    });
    let returns: Vec<Value> = if needs_returns {
        state.api.sim(Method::GET, "/sim/returns", None).await.body["returns"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut awaiting: HashMap<String, String> = HashMap::new();
    for r in &returns {
        if r["state"] == "awaiting_arrival"
            && let (Some(so), Some(rma)) = (r["service_order_id"].as_str(), r["rma_id"].as_str())
        {
            awaiting.insert(so.to_owned(), rma.to_owned());
        }
    }
    for o in all {
        let id = o["id"].as_str().unwrap_or_default().to_owned();
        let Some(waiting) = o["waiting"].as_array() else {
            continue;
        };
        for w in waiting {
            let Some(what) = w["what"].as_str() else {
                continue;
            };
            let k = (id.clone(), what.to_owned());
            // One action at a time per service order and wait, repeated only if nothing
            // moved for a while (a signal lost with a killed daemon is sent again, same key).
            if in_flight
                .get(&k)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(8))
            {
                continue;
            }
            let d = decide(state.seed, &id, what);
            let action = match what {
                "merchant.decision" => Some((
                    what,
                    if d < 80 {
                        json!({"approved": false, "reason": "the photos show wear"})
                    } else {
                        json!({"approved": true})
                    },
                )),
                "retention.result" => Some((what, json!({"kept": d < 200}))),
                "buyer.shipped" => Some((
                    what,
                    json!({"carrier": "SF Express", "tracking_no": format!("SF{d:06}")}),
                )),
                "warehouse.return.received" => None,
                _ => continue,
            };
            let rma = if action.is_none() {
                match awaiting.get(&id) {
                    Some(r) => Some(r.clone()),
                    None => continue,
                }
            } else {
                None
            };
            in_flight.insert(k, Instant::now());
            let action = action.map(|(name, payload)| (name.to_owned(), payload));
            let state = state.clone();
            let id = id.clone();
            set.spawn(async move {
                match (action, rma) {
                    (Some((name, payload)), _) => {
                        // One signal in ten is sent twice (same dedupe id), as a client
                        // that did not see the first answer would.
                        let copies = if d % 10 == 3 { 2 } else { 1 };
                        for _ in 0..copies {
                            let a = state
                                .api
                                .call(
                                    Method::POST,
                                    &format!("/v1/after-sales/{id}/signals/{name}"),
                                    Some(&json!({ "payload": payload })),
                                    Some(&format!("{id}-{name}")),
                                )
                                .await;
                            assert!(
                                matches!(a.status, 200 | 202 | 409),
                                "signal {name} to {id} answered {}: {}",
                                a.status,
                                a.body
                            );
                        }
                        if copies > 1 {
                            state.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        state.signals.fetch_add(1, Ordering::Relaxed);
                    }
                    (None, Some(rma)) => {
                        let body = if d < 60 {
                            json!({"inspection": "fail", "note": "a different item came back"})
                        } else {
                            json!({"inspection": "pass"})
                        };
                        let a = state
                            .api
                            .sim(
                                Method::POST,
                                &format!("/sim/returns/{rma}/receive"),
                                Some(&body),
                            )
                            .await;
                        assert!(
                            matches!(a.status, 200 | 409),
                            "the warehouse could not receive {rma}: {} {}",
                            a.status,
                            a.body
                        );
                        state.receipts.fetch_add(1, Ordering::Relaxed);
                    }
                    (None, None) => {}
                }
            });
        }
    }
}

fn is_final(o: &Value) -> bool {
    matches!(
        o["state"].as_str(),
        Some("completed" | "rejected" | "closed" | "failed")
    )
}

fn describe(o: &Value) -> String {
    format!(
        "{} {} {} {} state={} waiting={} needs_attention={}",
        o["id"].as_str().unwrap_or("?"),
        o["business_line"].as_str().unwrap_or("?"),
        o["type"].as_str().unwrap_or("?"),
        o["order_id"].as_str().unwrap_or("?"),
        o["state"].as_str().unwrap_or("?"),
        o["waiting"],
        o["needs_attention"]
    )
}

fn count_by(all: &[Value], f: impl Fn(&Value) -> String) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in all {
        *m.entry(f(o)).or_default() += 1;
    }
    m
}

/// Runs `spec` to the end and checks it; panics with the reason on any failure.
pub async fn run(spec: Spec) {
    let started = Instant::now();
    let seed = seed();
    let scale = scale();
    let orders = ((spec.orders as f64) * scale).round().max(1.0) as usize;
    eprintln!(
        "reliability {}: seed {seed} (AFTERSALES_RELIABILITY_SEED replays it), scale {scale}, {orders} requests, {} daemon(s) on {}",
        spec.name,
        spec.daemons,
        match &spec.store {
            StoreKind::Postgres { .. } => "PostgreSQL",
            StoreKind::Sqlite => "SQLite",
        }
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_owned();
    let _keep = KeepOnPanic(Some(tmp));

    // The store.
    let (store_url, _pg) = match &spec.store {
        StoreKind::Postgres { base } => {
            let pg = PgScratch::create(base, spec.name, seed).await;
            (pg.url.clone(), Some(pg))
        }
        StoreKind::Sqlite => (
            format!("sqlite://{}", dir.join("aftersales.db").display()),
            None,
        ),
    };
    // The simulated platform, faults on.
    let settings = dir.join("sim.toml");
    std::fs::write(&settings, sim_settings(seed)).unwrap();
    let sim = Cluster::start_sim(&dir, &settings);
    let lines = dir.join("business-lines");
    write_business_lines(&lines, &sim.1);
    let workflows = dir.join("workflows");
    copy_workflows(&procs::repo_root().join("workflows"), &workflows);

    let configs: Vec<PathBuf> = (0..spec.daemons)
        .map(|i| {
            let p = dir.join(format!("daemon-{i}.toml"));
            write_daemon_config(&p, &store_url, &lines, &workflows);
            p
        })
        .collect();
    let cluster = Arc::new(Cluster::new(&dir, sim, configs));
    let _kill = KillOnDrop(cluster.clone());
    // The first start migrates the database: one daemon first, then the others.
    for i in 0..spec.daemons {
        start_daemon(&cluster, i, Duration::from_secs(60)).await;
    }
    let api = Api::new(cluster.clone());
    for i in 0..spec.daemons {
        let base = cluster.base_of(i).unwrap();
        assert!(
            procs::wait_ready(&api.http, &base, Duration::from_secs(60)).await,
            "daemon {i} at {base} never became ready:\n{}",
            cluster.log_tail(i, 30)
        );
    }
    let state = Arc::new(State {
        seed,
        api,
        stop: AtomicBool::new(false),
        pause_chaos: AtomicBool::new(false),
        accepted: Mutex::new(BTreeMap::new()),
        refused: Mutex::new(BTreeMap::new()),
        submits_done: AtomicBool::new(false),
        signals: AtomicUsize::new(0),
        receipts: AtomicUsize::new(0),
        events: AtomicUsize::new(0),
        duplicates: AtomicUsize::new(0),
        late: AtomicUsize::new(0),
        relayed: Mutex::new(Vec::new()),
        crashes: Mutex::new(Vec::new()),
        outage: Mutex::new(None),
    });

    // The world: stock for exchanges, the orders, where their goods are.
    let run_id = format!("{}{seed}", spec.name);
    let mut rng = Rng::new(seed);
    let planned: Vec<world::Planned> = (0..orders)
        .map(|i| world::plan(&mut rng, &run_id, i))
        .collect();
    for (sku, units) in world::stock() {
        let a = state
            .api
            .sim(
                Method::PUT,
                &format!("/sim/stock/{sku}"),
                Some(&json!({ "units": units })),
            )
            .await;
        assert_eq!(a.status, 200, "PUT /sim/stock/{sku}: {}", a.body);
    }
    let planned = Arc::new(planned);
    {
        let next = Arc::new(AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (state, planned, next) = (state.clone(), planned.clone(), next.clone());
            set.spawn(async move {
                while let Some(p) = planned.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let a = state
                        .api
                        .sim(Method::POST, "/sim/orders", Some(&p.order))
                        .await;
                    assert_eq!(a.status, 201, "POST /sim/orders {}: {}", p.order, a.body);
                    let order = p.order["order_id"].as_str().unwrap();
                    if let Some(s) = p.shipment {
                        let a = state
                            .api
                            .sim(
                                Method::POST,
                                &format!("/sim/orders/{order}/shipment"),
                                Some(&json!({ "state": s })),
                            )
                            .await;
                        assert_eq!(a.status, 200, "shipment of {order}: {}", a.body);
                    }
                    if p.consumed > 0 {
                        for l in a.body["lines"].as_array().into_iter().flatten() {
                            if let Some(ent) = l["entitlement_id"].as_str() {
                                let c = state
                                    .api
                                    .sim(
                                        Method::POST,
                                        &format!("/sim/entitlements/{ent}/consume"),
                                        Some(&json!({"units": p.consumed})),
                                    )
                                    .await;
                                assert_eq!(c.status, 200, "consume {ent}: {}", c.body);
                            }
                        }
                    }
                }
            });
        }
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let seeded = started.elapsed();

    // Everything at once: requests, actors, the relay, the killer, the outage.
    let run_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(submit_all(state.clone(), planned.clone(), run_id.clone()));
    tasks.spawn(relay(state.clone()));
    if let Some(range) = spec.kill_every_ms {
        tasks.spawn(chaos(state.clone(), range));
    }
    if let Some(pg) = spec.pg_outage {
        tasks.spawn(outage(state.clone(), pg, orders / 2));
    }
    // Generous: debug builds on two cores, three daemons, retries with backoff.
    let deadline = Duration::from_secs(240) + Duration::from_millis(100 * orders as u64);
    let mut in_flight: HashMap<(String, String), Instant> = HashMap::new();
    let mut actions = tokio::task::JoinSet::new();
    let mut last_print = Instant::now();
    let all = loop {
        while let Some(r) = actions.try_join_next() {
            if let Err(e) = r {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        while let Some(r) = tasks.try_join_next() {
            if let Err(e) = r {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        for (i, crash) in cluster.exited_on_their_own() {
            // A daemon that died by itself is started again so the run can finish; the
            // crash fails the test at the end.
            eprintln!("{crash}\nits log ends:\n{}", cluster.log_tail(i, 20));
            state.crashes.lock().unwrap().push(crash);
            start_daemon(&cluster, i, Duration::from_secs(120)).await;
        }
        let all = state.api.list_all("/v1/after-sales").await;
        let done = all.iter().filter(|o| is_final(o)).count();
        let submitted = state.submits_done.load(Ordering::Relaxed);
        let accepted = state.accepted.lock().unwrap().len();
        if last_print.elapsed() > Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!(
                "  {:>5.1}s: {accepted} accepted, {done}/{} final, {} kills, {} signals, {} receipts, {} events",
                run_started.elapsed().as_secs_f64(),
                all.len(),
                cluster.kills.load(Ordering::Relaxed),
                state.signals.load(Ordering::Relaxed),
                state.receipts.load(Ordering::Relaxed),
                state.events.load(Ordering::Relaxed),
            );
        }
        if submitted && done == all.len() && all.len() >= accepted && actions.is_empty() {
            break all;
        }
        if run_started.elapsed() > deadline {
            let stuck: Vec<String> = all
                .iter()
                .filter(|o| !is_final(o))
                .take(40)
                .map(describe)
                .collect();
            panic!(
                "{}: not finished after {deadline:?}: {done}/{} service orders final, submits done: {submitted}; by state {:?}\nstuck (first 40):\n  {}\nlast log lines of daemon 0:\n{}",
                spec.name,
                all.len(),
                count_by(&all, |o| o["state"].as_str().unwrap_or("?").to_owned()),
                stuck.join("\n  "),
                cluster.log_tail(0, 20)
            );
        }
        act(&state, &all, &mut in_flight, &mut actions).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let finished = run_started.elapsed();
    state.stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let kills = cluster.kills.load(Ordering::Relaxed);

    // Late and repeated deliveries change nothing.
    let (late_events, late_signals) = replay_late(&state, &all).await;
    let after = state.api.list_all("/v1/after-sales").await;
    let before: HashMap<&str, &Value> =
        all.iter().map(|o| (o["id"].as_str().unwrap(), o)).collect();
    let mut moved = Vec::new();
    for o in &after {
        let id = o["id"].as_str().unwrap();
        match before.get(id) {
            Some(b) if b["state"] == o["state"] && b["refunded_amount"] == o["refunded_amount"] => {
            }
            Some(b) => moved.push(format!(
                "{id}: {} {} → {} {}",
                b["state"], b["refunded_amount"], o["state"], o["refunded_amount"]
            )),
            None => moved.push(format!("{id}: appeared after the run")),
        }
    }
    assert!(
        moved.is_empty() && after.len() == all.len(),
        "late events and signals changed service orders:\n  {}",
        moved.join("\n  ")
    );

    // Checks. 1: one service order per accepted request, each final.
    let accepted = state.accepted.lock().unwrap().clone();
    let accepted_ids: BTreeSet<String> = accepted.values().cloned().collect();
    assert_eq!(
        accepted_ids.len(),
        accepted.len(),
        "two requests were given the same service order"
    );
    let listed: BTreeSet<String> = all
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    let extra: Vec<&String> = listed.difference(&accepted_ids).collect();
    let missing: Vec<&String> = accepted_ids.difference(&listed).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "service orders stored but never answered to a request (a retried submit made a second one?): {extra:?}; answered but not stored: {missing:?}"
    );
    let crashes = state.crashes.lock().unwrap().clone();
    assert!(
        crashes.is_empty(),
        "daemons crashed by themselves: {crashes:?}"
    );

    // 2: the ledger — every refunded service order refunded exactly what it says, once.
    let ledger = state.api.sim(Method::GET, "/sim/ledger", None).await.body;
    let entries = ledger["entries"].as_array().cloned().unwrap_or_default();
    let by_id: HashMap<String, &Value> = all
        .iter()
        .map(|o| (o["id"].as_str().unwrap().to_owned(), o))
        .collect();
    let mut refunds: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    let mut other_moves: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    for e in &entries {
        let so = e["service_order_id"].as_str().unwrap_or("").to_owned();
        let kind = e["kind"].as_str().unwrap_or("?");
        if let Some(k) = e["key"].as_str() {
            *keys.entry(format!("{kind}:{k}")).or_default() += 1;
        }
        if !by_id.contains_key(&so) {
            problems.push(format!(
                "a money movement for an unknown service order: {e}"
            ));
            continue;
        }
        if kind == "refund" {
            let order = by_id[&so]["order_id"].as_str().unwrap_or("");
            if e["payment_id"].as_str() == Some(&format!("pay_{order}")) {
                if e["status"] == "succeeded" {
                    refunds.entry(so).or_default().push(e);
                } else {
                    problems.push(format!("a refund that did not succeed: {e}"));
                }
                continue;
            }
        }
        *other_moves
            .entry((so, format!("{kind}@{}", e["payment_id"])))
            .or_default() += 1;
    }
    for (k, n) in &keys {
        if *n > 1 {
            problems.push(format!("the ledger holds key {k} {n} times"));
        }
    }
    for ((so, what), n) in &other_moves {
        if *n > 1 {
            problems.push(format!("{so}: {n} × {what}"));
        }
    }
    let mut refunded_orders = 0usize;
    let mut refunded_total = 0i64;
    for o in &all {
        let id = o["id"].as_str().unwrap();
        let expected = o["refunded_amount"]["minor"].as_i64();
        let paid: Vec<&Value> = refunds.get(id).cloned().unwrap_or_default();
        let sum: i64 = paid
            .iter()
            .map(|e| e["amount"]["minor"].as_i64().unwrap())
            .sum();
        // A textbook bundle pays two refunds (the book, then the course); all others one.
        let parts = if o["business_line"] == "course_with_textbook" {
            2
        } else {
            1
        };
        match expected {
            Some(x) if x > 0 => {
                refunded_orders += 1;
                refunded_total += x;
                if sum != x || paid.is_empty() || paid.len() > parts {
                    problems.push(format!(
                        "{}: says {x} refunded, the ledger holds {} refund(s) totalling {sum}: {paid:?}",
                        describe(o),
                        paid.len()
                    ));
                }
            }
            _ => {
                if !paid.is_empty() {
                    problems.push(format!(
                        "{}: says nothing refunded, the ledger holds {paid:?}",
                        describe(o)
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} ledger problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );

    // 3: no step completed twice in any instance (service orders and their children), and
    // each instance ended once.
    let instances = state.api.list_all("/v1/instances").await;
    let ids: Vec<String> = instances
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    let twice = Arc::new(Mutex::new(Vec::<String>::new()));
    let steps_total = Arc::new(AtomicUsize::new(0));
    let retries_total = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(ids);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (state, ids, next, twice, steps_total, retries_total) = (
            state.clone(),
            ids.clone(),
            next.clone(),
            twice.clone(),
            steps_total.clone(),
            retries_total.clone(),
        );
        set.spawn(async move {
            while let Some(id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                let h = state
                    .api
                    .get(&format!("/v1/instances/{id}/history?limit=5000"))
                    .await;
                let events = h["events"].as_array().cloned().unwrap_or_default();
                let mut completed: BTreeMap<String, usize> = BTreeMap::new();
                let mut ends = 0;
                for e in &events {
                    let kind = e["kind"].as_str().unwrap_or("");
                    if kind == "step_completed" || kind == "compensation_completed" {
                        *completed
                            .entry(format!("{kind}:{}", e["step"].as_str().unwrap_or("")))
                            .or_default() += 1;
                        steps_total.fetch_add(1, Ordering::Relaxed);
                    }
                    if kind == "retry_scheduled" {
                        retries_total.fetch_add(1, Ordering::Relaxed);
                    }
                    if kind.starts_with("instance_")
                        && kind != "instance_started"
                        && kind != "instance_stuck"
                    {
                        ends += 1;
                    }
                }
                let mut t = twice.lock().unwrap();
                for (k, n) in completed {
                    if n > 1 {
                        t.push(format!("{id}: {k} × {n}"));
                    }
                }
                if ends != 1 {
                    t.push(format!("{id}: ended {ends} times"));
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let twice = twice.lock().unwrap().clone();
    assert!(
        twice.is_empty(),
        "{} histories with a step completed twice (or not ended once):\n  {}",
        twice.len(),
        twice.join("\n  ")
    );

    // The summary.
    let refused = state.refused.lock().unwrap().clone();
    let r = &state.api.retries;
    eprintln!(
        "reliability {} (seed {seed}): {} requests, {} accepted, {} refused by the rules {:?}",
        spec.name,
        orders,
        accepted.len(),
        refused.values().sum::<u64>(),
        refused
    );
    eprintln!(
        "  final states: {:?}",
        count_by(&all, |o| format!(
            "{}/{}",
            o["type"].as_str().unwrap_or("?"),
            o["state"].as_str().unwrap_or("?")
        ))
    );
    eprintln!(
        "  flagged for a person: {}",
        all.iter().filter(|o| o["needs_attention"] == true).count()
    );
    eprintln!(
        "  ledger: {} entries; {refunded_orders} service orders refunded, {} in all (minor units), each exactly once",
        entries.len(),
        refunded_total
    );
    eprintln!(
        "  {} instances checked: {} steps completed, none twice; {} retries scheduled",
        instances.len(),
        steps_total.load(Ordering::Relaxed),
        retries_total.load(Ordering::Relaxed)
    );
    eprintln!(
        "  {kills} SIGKILLs, {} daemon starts; {} signals, {} warehouse receipts, {} events relayed",
        cluster.starts.load(Ordering::Relaxed),
        state.signals.load(Ordering::Relaxed),
        state.receipts.load(Ordering::Relaxed),
        state.events.load(Ordering::Relaxed)
    );
    eprintln!(
        "  {} events and signals delivered twice, {} events delivered late (after newer ones); afterwards {late_events} events replayed and {late_signals} signals sent to final service orders: nothing changed",
        state.duplicates.load(Ordering::Relaxed),
        state.late.load(Ordering::Relaxed)
    );
    eprintln!(
        "  client retries: {} broken connections, {} × 503, {} other 5xx {:?}",
        r.connection.load(Ordering::Relaxed),
        r.unavailable.load(Ordering::Relaxed),
        r.server_errors.load(Ordering::Relaxed),
        r.samples.lock().unwrap()
    );
    if let Some(o) = state.outage.lock().unwrap().as_ref() {
        eprintln!("  {o}");
    }
    eprintln!(
        "  duration: {:.1}s (seeding {:.1}s, run to the last final state {:.1}s, checks {:.1}s)",
        started.elapsed().as_secs_f64(),
        seeded.as_secs_f64(),
        finished.as_secs_f64(),
        (started.elapsed() - seeded - finished).as_secs_f64()
    );
    cluster.kill_all();
}
