//! The crash test (issue 3): a worker runs as a child process over N instances of a
//! multi-step saga with a recording adapter; it is killed with SIGKILL at random moments
//! and restarted, again and again; then every instance must have reached its end state,
//! every effect key must have reached the platform (none missing, none extra: a step run
//! twice would show a second key), and no step may have completed twice.
//!
//! Sized for CI by default; `AFTERSALES_CRASH_N` (instances) and `AFTERSALES_CRASH_KILLS`
//! scale it up. `AFTERSALES_CRASH_SEED` replays a run.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aftersales_core::engine::keys::{Direction, idempotency_key};
use aftersales_core::engine::{
    ActionCall, CallResult, Dispatcher, Engine, StartRequest, SystemClock,
};
use aftersales_core::store::{InstanceStatus, ListFilter, Store};
use aftersales_crashtest::{SAGA, catalogue, read_ledger};
use async_trait::async_trait;
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: enough randomness for kill timings, replayable from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

struct Refuse;

#[async_trait]
impl Dispatcher for Refuse {
    async fn dispatch(&self, _call: ActionCall) -> CallResult {
        unreachable!("the test process never runs instances")
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "aftersales-crash-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start_instances(store: Arc<dyn Store>, n: usize) {
    let engine = Engine::new(store, Arc::new(SystemClock), Arc::new(Refuse), catalogue());
    engine
        .deploy(&[("crash.toml".to_owned(), SAGA.to_owned())])
        .await
        .unwrap();
    for i in 0..n {
        let order_id = if i % 10 == 3 {
            format!("fail-{i}")
        } else {
            format!("o-{i}")
        };
        engine
            .start(StartRequest {
                workflow: "crash.saga".into(),
                version: None,
                business_line: "crash".into(),
                input: json!({"order_id": order_id, "amount": {"minor": 1000 + i as i64, "currency": "CNY"}}),
                params: json!({}),
                idempotency_key: Some(format!("crash-{i}")),
                search_key: Some(order_id.clone()),
                search_seen: None,
                meta: serde_json::Value::Null,
                id: None,
            })
            .await
            .unwrap();
    }
}

async fn running(store: &Arc<dyn Store>) -> u64 {
    store.stats(0).await.unwrap().running
}

/// Starts the worker, kills it at random moments, restarts it; then lets a last run
/// finish everything.
async fn run_with_kills(
    url: &str,
    ledger: &Path,
    store: &Arc<dyn Store>,
    kills: usize,
    rng: &mut Rng,
) {
    let bin = env!("CARGO_BIN_EXE_crash-worker");
    let spawn = || {
        Command::new(bin)
            .args([url, ledger.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for k in 0..kills {
        let mut child = spawn();
        let ms = rng.between(100, 800);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!(
            "kill {}/{kills} after {ms} ms: {} instances still running",
            k + 1,
            running(store).await
        );
    }
    let mut child = spawn();
    let deadline = Instant::now() + Duration::from_secs(180);
    while running(store).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn assert_exactly_once(store: &Arc<dyn Store>, ledger: &Path, n: usize) {
    let instances = store
        .list_instances(&ListFilter {
            limit: n + 10,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(instances.len(), n);
    let lines = read_ledger(ledger).unwrap();
    let mut calls: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in &lines {
        calls
            .entry(l.instance.clone())
            .or_default()
            .push(l.key.clone());
    }
    let mut repeated = 0;
    for inst in &instances {
        let fail = inst
            .search_key
            .as_deref()
            .unwrap_or_default()
            .starts_with("fail-");
        let id = &inst.id;
        let fwd = |s: &str| idempotency_key(id, s, Direction::Forward, 1);
        let comp = |s: &str| idempotency_key(id, s, Direction::Compensation, 1);
        let (status, expected_keys, completed_steps): (_, BTreeSet<String>, &[&str]) = if fail {
            (
                InstanceStatus::Failed,
                [
                    fwd("reserve"),
                    fwd("note"),
                    fwd("refund"),
                    comp("note"),
                    comp("reserve"),
                ]
                .into(),
                &["reserve", "note"],
            )
        } else {
            (
                InstanceStatus::Completed,
                [fwd("reserve"), fwd("note"), fwd("refund"), fwd("notice")].into(),
                &["reserve", "note", "refund", "notice"],
            )
        };
        assert_eq!(inst.status, status, "instance {id} ({:?})", inst.search_key);
        assert!(!inst.needs_attention, "instance {id} flagged");
        let seen = calls.get(id).cloned().unwrap_or_default();
        repeated += seen.len() - seen.iter().collect::<BTreeSet<_>>().len();
        let distinct: BTreeSet<String> = seen.into_iter().collect();
        assert_eq!(distinct, expected_keys, "effect keys of instance {id}");

        let history = store.history(id, 0, 10_000).await.unwrap();
        let mut completed: BTreeMap<String, usize> = BTreeMap::new();
        for h in &history {
            if h.event.kind == "step_completed" || h.event.kind == "compensation_completed" {
                *completed
                    .entry(format!(
                        "{}:{}",
                        h.event.kind,
                        h.event.step.clone().unwrap_or_default()
                    ))
                    .or_default() += 1;
            }
        }
        for s in completed_steps {
            assert_eq!(
                completed.get(&format!("step_completed:{s}")),
                Some(&1),
                "{id} step {s}"
            );
        }
        assert!(
            completed.values().all(|c| *c == 1),
            "{id}: something completed twice: {completed:?}"
        );
        if fail {
            assert_eq!(completed.get("compensation_completed:note"), Some(&1));
            assert_eq!(completed.get("compensation_completed:reserve"), Some(&1));
        }
        let ends = history
            .iter()
            .filter(|h| h.event.kind.starts_with("instance_") && h.event.kind != "instance_started")
            .count();
        assert_eq!(ends, 1, "{id} ended once");
    }
    eprintln!(
        "crash test: {n} instances, {} calls reached the platform, {repeated} of them repeats of a key (retries after a crash or a 503)",
        lines.len()
    );
}

fn seed() -> u64 {
    std::env::var("AFTERSALES_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_worker_killed_at_random_moments_applies_every_effect_exactly_once() {
    let n = env_usize("AFTERSALES_CRASH_N", 60);
    let kills = env_usize("AFTERSALES_CRASH_KILLS", 8);
    let seed = seed();
    eprintln!("AFTERSALES_CRASH_SEED={seed}");
    let dir = temp_dir("sqlite");
    let url = format!("sqlite://{}", dir.join("crash.db").display());
    let ledger = dir.join("ledger.txt");
    let store = aftersales_store::open_store(&url).await.unwrap();
    start_instances(store.clone(), n).await;
    run_with_kills(&url, &ledger, &store, kills, &mut Rng(seed)).await;
    assert_exactly_once(&store, &ledger, n).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch PostgreSQL database of its own: (admin pool, database name, URL). `None`
/// (with the reason printed) when `AFTERSALES_TEST_PG_URL` is unset outside CI.
async fn scratch_pg(tag: &str, seed: u64) -> Option<(sqlx::PgPool, String, String)> {
    let Ok(base) = std::env::var("AFTERSALES_TEST_PG_URL") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "AFTERSALES_TEST_PG_URL is not set, and under CI a missing PostgreSQL is a failure"
            );
        }
        eprintln!(
            "skipped: AFTERSALES_TEST_PG_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
        return None;
    };
    let db = format!(
        "aftersales_crash_{tag}_{}_{}",
        std::process::id(),
        seed % 1_000_000
    );
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = match base.rsplit_once('/') {
        Some((head, _)) => format!("{head}/{db}"),
        None => panic!("AFTERSALES_TEST_PG_URL has no database part: {base}"),
    };
    Some((admin, db, url))
}

async fn drop_pg(admin: &sqlx::PgPool, db: &str) {
    let _ = sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(admin)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_worker_killed_at_random_moments_applies_every_effect_exactly_once() {
    let n = env_usize("AFTERSALES_CRASH_N", 60);
    let kills = env_usize("AFTERSALES_CRASH_KILLS", 8);
    let seed = seed();
    eprintln!("AFTERSALES_CRASH_SEED={seed}");
    let Some((admin, db, url)) = scratch_pg("one", seed).await else {
        return;
    };
    let dir = temp_dir("pg");
    let ledger = dir.join("ledger.txt");
    let store = aftersales_store::open_store(&url).await.unwrap();
    start_instances(store.clone(), n).await;
    run_with_kills(&url, &ledger, &store, kills, &mut Rng(seed)).await;
    assert_exactly_once(&store, &ledger, n).await;
    drop(store);
    drop_pg(&admin, &db).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One of the workers in the multi-worker run (its stderr goes to a log file).
struct Worker {
    child: std::process::Child,
}

impl Worker {
    fn spawn(url: &str, ledger: &Path, log: &Path) -> Worker {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_crash-worker"))
            .args([url, ledger.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        Worker { child }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.child.id());
    }
}

/// Kills every worker still running when the test ends, even on a panic.
struct Workers(Vec<Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-CONT", &w.child.id().to_string()])
                .status();
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

/// Three workers share one PostgreSQL database. While they run, one at a time is either
/// killed with SIGKILL and restarted, or paused with SIGSTOP for longer than its lease (so
/// another worker takes its instances over) and then resumed with SIGCONT, when it tries
/// to go on with the copies it held: its commits must be fenced off. At the end every
/// instance has reached its end, every effect key reached the platform, none is missing or
/// extra, and no step completed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_postgres_workers_killed_and_paused_apply_every_effect_exactly_once() {
    let n = env_usize("AFTERSALES_CRASH_N", 60) * 4;
    let events = env_usize("AFTERSALES_CRASH_KILLS", 8) * 2;
    let seed = seed();
    eprintln!("AFTERSALES_CRASH_SEED={seed}");
    let Some((admin, db, url)) = scratch_pg("three", seed).await else {
        return;
    };
    let dir = temp_dir("pg3");
    let ledger = dir.join("ledger.txt");
    let store = aftersales_store::open_store(&url).await.unwrap();
    start_instances(store.clone(), n).await;
    let mut rng = Rng(seed);
    let mut spawned = 0;
    let mut log = || {
        spawned += 1;
        dir.join(format!("worker-{spawned}.log"))
    };
    let mut workers = Workers(
        (0..3)
            .map(|_| Worker::spawn(&url, &ledger, &log()))
            .collect(),
    );
    let (mut kills, mut pauses) = (0, 0);
    for _ in 0..events {
        if running(&store).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.between(200, 700))).await;
        let i = rng.between(0, 3) as usize;
        if rng.between(0, 2) == 0 {
            let w = &mut workers.0[i];
            w.child.kill().unwrap(); // SIGKILL
            w.child.wait().unwrap();
            *w = Worker::spawn(&url, &ledger, &log());
            kills += 1;
        } else {
            // Past its 1.5 s lease: the others take its instances over meanwhile.
            workers.0[i].signal("-STOP");
            tokio::time::sleep(Duration::from_millis(rng.between(2_000, 3_000))).await;
            workers.0[i].signal("-CONT");
            pauses += 1;
        }
        eprintln!(
            "event: {kills} kills, {pauses} pauses; {} instances still running",
            running(&store).await
        );
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while running(&store).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(workers);
    assert_exactly_once(&store, &ledger, n).await;
    let mut lost = 0;
    for i in 1..=spawned {
        let text = std::fs::read_to_string(dir.join(format!("worker-{i}.log"))).unwrap_or_default();
        lost += text.matches("lease lost to another worker").count();
    }
    eprintln!(
        "three workers: {n} instances, {kills} kills, {pauses} pauses past the lease, {lost} commits fenced off"
    );
    drop(store);
    drop_pg(&admin, &db).await;
    let _ = std::fs::remove_dir_all(&dir);
}
