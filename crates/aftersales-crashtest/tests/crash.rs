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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_worker_killed_at_random_moments_applies_every_effect_exactly_once() {
    let Ok(base) = std::env::var("AFTERSALES_TEST_PG_URL") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "AFTERSALES_TEST_PG_URL is not set, and under CI a missing PostgreSQL is a failure"
            );
        }
        eprintln!(
            "skipped: AFTERSALES_TEST_PG_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
        return;
    };
    let n = env_usize("AFTERSALES_CRASH_N", 60);
    let kills = env_usize("AFTERSALES_CRASH_KILLS", 8);
    let seed = seed();
    eprintln!("AFTERSALES_CRASH_SEED={seed}");
    // A database of its own, dropped at the end.
    let db = format!(
        "aftersales_crash_{}_{}",
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
    let dir = temp_dir("pg");
    let ledger = dir.join("ledger.txt");
    let store = aftersales_store::open_store(&url).await.unwrap();
    start_instances(store.clone(), n).await;
    run_with_kills(&url, &ledger, &store, kills, &mut Rng(seed)).await;
    assert_exactly_once(&store, &ledger, n).await;
    drop(store);
    let _ = sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&admin)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}
