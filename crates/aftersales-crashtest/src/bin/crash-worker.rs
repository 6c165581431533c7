//! A worker for the crash test: `crash-worker <store-url> <ledger-file>`. Runs until killed.

use std::path::PathBuf;
use std::sync::Arc;

use aftersales_core::engine::{Engine, SystemClock, WorkerConfig};
use anyhow::Context as _;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: crash-worker <store-url> <ledger-file>")?;
    let ledger = PathBuf::from(
        args.next()
            .context("usage: crash-worker <store-url> <ledger-file>")?,
    );
    let store = aftersales_store::open_store(&url).await?;
    let recorder = aftersales_crashtest::Recorder::open(&ledger)?;
    let engine = Arc::new(Engine::new(
        store,
        Arc::new(SystemClock),
        Arc::new(recorder),
        aftersales_crashtest::catalogue(),
    ));
    let cfg = WorkerConfig {
        lease_ms: 1_500,
        concurrency: 16,
        idle_poll_ms: 50,
        ..WorkerConfig::default()
    };
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    engine.run(cfg, stop_rx).await;
    Ok(())
}
