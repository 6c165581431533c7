//! A worker for the crash test: `crash-worker <store-url> <ledger-file>`. Runs until killed.

use std::path::PathBuf;
use std::sync::Arc;

use aftersales_core::engine::{DatabaseClock, Engine, WorkerConfig};
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
    // Warnings (a lease lost, a fenced commit) go to stderr, which the test may keep.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let store = aftersales_store::open_store(&url).await?;
    let recorder = aftersales_crashtest::Recorder::open(&ledger)?;
    // Several workers may share a PostgreSQL store: they read time from it.
    let clock = DatabaseClock::new(store.clone()).await?;
    let engine = Arc::new(Engine::new(
        store,
        clock,
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
