//! The daemon-level reliability battery: the real `aftersales` binary, as operators run it.
//!
//! One `aftersales sim serve` process is the whole outside world (orders, warehouse,
//! fulfillment, payments), with its faults on: transient errors, lost answers, lost requests,
//! calls that hang past the adapter's timeout, refunds refused, interceptions too late.
//! `aftersales serve` daemons run the shipped workflows and business lines, whose adapters
//! are replaced by the generic HTTP adapter pointed at that simulator
//! (`config/examples/http-against-sim.toml`). The test seeds orders in the simulator, pushes
//! buyers' requests through `POST /v1/after-sales` with idempotency keys (a request whose
//! daemon was killed is sent again, same key, to another one), plays the merchant, the
//! sales agent, the buyer and the warehouse, relays the simulator's events to any daemon
//! through `POST /v1/events`, and kills daemons with SIGKILL all along. At the end every
//! service order is final, the simulator's ledger holds exactly one refund per refunded
//! service order with the amount the service order reports (none missing, none twice), and
//! no instance history shows a step completed twice.
//!
//! - `three_daemons_on_postgres_survive_kill_9`: three daemons on one scratch database.
//! - `postgres_restart_mid_run`: the same with PostgreSQL stopped and started mid-run; the
//!   daemons' `/readyz` must say "not ready" while it is down, and they must recover.
//! - `sqlite_daemon_killed_repeatedly`: one daemon on a SQLite file.
//!
//! PostgreSQL tests read `AFTERSALES_TEST_PG_URL` and are skipped when it is unset (a failure
//! under `CI=true`). `AFTERSALES_RELIABILITY_SCALE` multiplies the number of requests (10
//! for a long run by hand); `AFTERSALES_RELIABILITY_SEED` replays a run's mix and faults
//! (kill timings and thread interleavings still vary).

#![allow(clippy::unwrap_used)]

#[path = "reliability/api.rs"]
mod api;
#[path = "reliability/procs.rs"]
mod procs;
#[path = "reliability/run.rs"]
mod run;
#[path = "reliability/world.rs"]
mod world;

use run::{PgCluster, Spec, StoreKind};

/// The tests of this file run one at a time: a PostgreSQL restart must not hit another
/// test's database work, and two runs on two cores would only slow each other down.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The PostgreSQL URL of the tests, or `None` (skipped, with the reason printed); under CI
/// a missing PostgreSQL is a failure.
fn pg_base() -> Option<String> {
    let base = std::env::var("AFTERSALES_TEST_PG_URL").ok();
    if base.is_none() {
        assert!(
            !under_ci(),
            "AFTERSALES_TEST_PG_URL is not set, and under CI a missing PostgreSQL is a failure"
        );
        eprintln!(
            "skipped: AFTERSALES_TEST_PG_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
    }
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_on_postgres_survive_kill_9() {
    let Some(base) = pg_base() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    run::run(Spec {
        name: "pg3",
        store: StoreKind::Postgres { base },
        daemons: 3,
        orders: 2000,
        kill_every_ms: Some((2_000, 5_000)),
        pg_outage: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_mid_run() {
    let Some(base) = pg_base() else {
        return;
    };
    let pg = match PgCluster::find() {
        Ok(pg) => pg,
        Err(why) => {
            assert!(!under_ci(), "cannot restart PostgreSQL under CI: {why}");
            eprintln!("skipped: cannot restart PostgreSQL here: {why}");
            return;
        }
    };
    let _serial = SERIAL.lock().await;
    run::run(Spec {
        name: "pgrestart",
        store: StoreKind::Postgres { base },
        daemons: 3,
        orders: 300,
        kill_every_ms: Some((4_000, 8_000)),
        pg_outage: Some(pg),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_daemon_killed_repeatedly() {
    let _serial = SERIAL.lock().await;
    run::run(Spec {
        name: "sqlite",
        store: StoreKind::Sqlite,
        daemons: 1,
        orders: 500,
        kill_every_ms: Some((3_000, 6_000)),
        pg_outage: None,
    })
    .await;
}
