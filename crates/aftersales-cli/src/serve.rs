//! `aftersales serve`: the daemon. Loads and validates every workflow and business line
//! (refusing to start on any error, printing all of them), opens the store, deploys the
//! workflows, builds each line's adapters, and runs the workers and the HTTP API until
//! SIGTERM or SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aftersales_adapter::WebhookVerifier;
use aftersales_core::diag::{self, Source};
use aftersales_core::engine::{DatabaseClock, Engine, WorkerConfig};
use aftersales_core::model::Workflow;
use aftersales_core::validate::check_sources;
use aftersales_runtime::AdapterDispatcher;
use aftersales_runtime::business_line::{self, CrossCheck};
use aftersales_server::{AppState, Auth, Scope, Token};
use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The daemon's configuration file (`config/aftersales.toml`). Every field has a default;
/// environment variables override the file: `AFTERSALES_LISTEN`, `AFTERSALES_STORE_URL`,
/// `AFTERSALES_WORKERS`. Secrets (tokens) are only ever read from the environment.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    workers: WorkersConfig,
    #[serde(default)]
    paths: PathsConfig,
    #[serde(default)]
    auth: AuthConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerConfig {
    listen: String,
    body_limit_bytes: usize,
    shutdown_grace: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".to_owned(),
            body_limit_bytes: 1024 * 1024,
            shutdown_grace: "20s".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StoreConfig {
    url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://data/aftersales.db".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WorkersConfig {
    concurrency: usize,
    lease: String,
    idle_poll: String,
    /// Most commits in one store transaction.
    commit_batch: usize,
    /// Commit transactions in flight at once; absent: the store's default (2 on SQLite and
    /// on PostgreSQL).
    commit_writers: Option<usize>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            concurrency: 32,
            lease: "15s".to_owned(),
            idle_poll: "2s".to_owned(),
            commit_batch: WorkerConfig::default().commit_batch,
            commit_writers: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PathsConfig {
    workflows: PathBuf,
    business_lines: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            workflows: PathBuf::from("workflows"),
            business_lines: PathBuf::from("config/business-lines"),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuthConfig {
    #[serde(default)]
    tokens: Vec<TokenConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenConfig {
    /// A name for logs.
    name: String,
    /// The environment variable holding the secret.
    env: String,
    /// `read`, `submit`, `operate`, `admin`.
    scopes: Vec<String>,
}

/// Reads the configuration file; a missing file at the default path means all defaults.
pub fn load_config(path: &Path, explicit: bool) -> anyhow::Result<Config> {
    let mut config: Config = match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Config::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if let Ok(v) = std::env::var("AFTERSALES_LISTEN") {
        config.server.listen = v;
    }
    if let Ok(v) = std::env::var("AFTERSALES_STORE_URL") {
        config.store.url = v;
    }
    if let Ok(v) = std::env::var("AFTERSALES_WORKERS") {
        config.workers.concurrency = v
            .parse()
            .with_context(|| format!("AFTERSALES_WORKERS must be a number, got `{v}`"))?;
    }
    if config.workers.commit_batch == 0 {
        bail!(
            "{}: workers.commit_batch must be at least 1",
            path.display()
        );
    }
    if config.workers.commit_writers == Some(0) {
        bail!(
            "{}: workers.commit_writers must be at least 1",
            path.display()
        );
    }
    Ok(config)
}

fn duration_ms(name: &str, text: &str) -> anyhow::Result<i64> {
    aftersales_core::duration::parse(text)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

/// Everything the daemon loads before it opens the store.
pub struct Loaded {
    workflow_files: Vec<(String, String)>,
    dispatcher: AdapterDispatcher,
    lines: Vec<String>,
    webhooks: HashMap<String, Arc<dyn WebhookVerifier>>,
    service_lines: Vec<aftersales_runtime::service::Line>,
}

/// The checked workflow files and business lines, before any adapter is built.
pub struct Definitions {
    /// Workflow files, as (path, text).
    pub workflow_files: Vec<(String, String)>,
    /// Business lines, with their file.
    pub lines: Vec<(String, business_line::BusinessLine)>,
}

/// Loads and checks the workflows and business lines; every error is reported at once.
pub fn load_definitions(config: &Config) -> anyhow::Result<Definitions> {
    let files = crate::read_all(&crate::collect_files(std::slice::from_ref(
        &config.paths.workflows,
    ))?)?;
    let sources: Vec<Source> = files.iter().map(|(n, t)| Source::new(n, t)).collect();
    let report = check_sources(&sources, &aftersales_runtime::catalogue::builtin(), true);
    if !report.is_ok() {
        eprint!("{}", diag::render_human(&report.diagnostics));
        bail!(
            "{} error(s) in the workflows under {}; not starting",
            report.error_count(),
            config.paths.workflows.display()
        );
    }
    let workflows: Vec<&Workflow> = report.workflows.iter().map(|(_, w)| w).collect();
    let registry = aftersales_adapters::builtin();
    let lines = business_line::load_dir(
        &config.paths.business_lines,
        &CrossCheck {
            workflows: &workflows,
            registry: &registry,
            refs_must_resolve: true,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}\nnot starting"))?;
    Ok(Definitions {
        workflow_files: files,
        lines: lines.lines,
    })
}

/// Loads and checks the workflows and business lines, and builds every line's adapters.
pub fn load(config: &Config) -> anyhow::Result<Loaded> {
    let Definitions {
        workflow_files: files,
        lines,
    } = load_definitions(config)?;
    let registry = aftersales_adapters::builtin();
    let env = |k: &str| std::env::var(k).ok();
    let mut dispatcher = AdapterDispatcher::new();
    let mut names = Vec::new();
    let mut webhooks: HashMap<String, Arc<dyn WebhookVerifier>> = HashMap::new();
    let mut service_lines = Vec::new();
    for (file, line) in &lines {
        let (set, verifiers) = registry.build_line(&line.adapters, &env).with_context(|| {
            format!(
                "building the adapters of business line `{}` ({file})",
                line.id
            )
        })?;
        let set = Arc::new(set);
        dispatcher.bind(line.id.to_string(), set.clone());
        names.push(line.id.to_string());
        service_lines.push(aftersales_runtime::service::Line {
            config: line.clone(),
            adapters: set,
        });
        // Each system whose platform sends webhooks gets `POST /v1/webhooks/<line>.<system>`.
        for (system, verifier) in verifiers {
            webhooks.insert(format!("{}.{}", line.id, system.as_str()), verifier);
        }
    }
    Ok(Loaded {
        workflow_files: files,
        dispatcher,
        lines: names,
        webhooks,
        service_lines,
    })
}

fn tokens(config: &Config) -> anyhow::Result<Auth> {
    let mut out = Vec::new();
    for t in &config.auth.tokens {
        let secret = std::env::var(&t.env).with_context(|| {
            format!(
                "token `{}`: environment variable `{}` is not set",
                t.name, t.env
            )
        })?;
        let mut scopes = Vec::new();
        for s in &t.scopes {
            scopes.push(Scope::parse(s).with_context(|| {
                format!(
                    "token `{}`: unknown scope `{s}`; one of read, submit, operate, admin",
                    t.name
                )
            })?);
        }
        out.push(Token::new(t.name.clone(), secret, scopes));
    }
    Ok(Auth::new(out))
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How often a daemon re-reads the database's clock against drift.
const CLOCK_SYNC: Duration = Duration::from_secs(30);

/// Runs the daemon until a shutdown signal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let loaded = load(&config)?;
    let auth = tokens(&config)?;
    if auth.is_open() {
        tracing::warn!(
            "no API tokens configured: every request is allowed (configure [auth] for production)"
        );
    }
    let store = aftersales_store::open_store(&config.store.url)
        .await
        .context("opening the store")?;
    // Every node on one database reads time from the database: leases, timers and lock
    // expiries then agree whatever each machine's clock says (SQLite: the local clock).
    let clock = DatabaseClock::new(store.clone())
        .await
        .context("reading the store's clock")?;
    let engine = Arc::new(Engine::new(
        store,
        clock.clone(),
        Arc::new(loaded.dispatcher),
        aftersales_runtime::catalogue::builtin(),
    ));
    let deployed = engine
        .deploy(&loaded.workflow_files)
        .await
        .context("deploying the workflows")?;
    let mut endpoints: Vec<&String> = loaded.webhooks.keys().collect();
    endpoints.sort();
    tracing::info!(workflows = deployed.len(), business_lines = ?loaded.lines, webhooks = ?endpoints, "loaded");

    let worker_cfg = WorkerConfig {
        concurrency: config.workers.concurrency.max(1),
        lease_ms: duration_ms("workers.lease", &config.workers.lease)?,
        idle_poll_ms: duration_ms("workers.idle_poll", &config.workers.idle_poll)?,
        commit_batch: config.workers.commit_batch,
        commit_writers: config.workers.commit_writers,
        ..WorkerConfig::default()
    };
    let grace = Duration::from_millis(duration_ms(
        "server.shutdown_grace",
        &config.server.shutdown_grace,
    )? as u64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine.clone().run(worker_cfg, stop_rx.clone()));
    tokio::spawn(clock.keep_synced(CLOCK_SYNC, stop_rx));

    let metrics = aftersales_server::install_metrics()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    let app = aftersales_server::router(AppState {
        engine: engine.clone(),
        auth: Arc::new(auth),
        body_limit: config.server.body_limit_bytes,
        metrics: Some(metrics),
        webhooks: Arc::new(loaded.webhooks),
        service: Some(Arc::new(aftersales_runtime::service::AfterSales::new(
            engine.clone(),
            loaded.service_lines,
        ))),
    });
    let addr: SocketAddr = config.server.listen.parse().with_context(|| {
        format!(
            "server.listen `{}` is not an address such as 127.0.0.1:8080",
            config.server.listen
        )
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "serving");
    // A line a parent process can wait for.
    println!("aftersales listening on http://{bound}");

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("shutting down: intake stopped, letting in-flight steps commit");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(grace, worker).await {
        Ok(_) => tracing::info!("workers stopped"),
        Err(_) => tracing::warn!(
            "workers did not stop within {grace:?}; in-flight instances resume when their leases lapse"
        ),
    }
    Ok(())
}
