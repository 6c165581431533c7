//! `aftersales sim serve`: the in-memory simulator as a local HTTP server, for HTTP-level
//! tests and the demo. The endpoints are `aftersales_adapter_sim::serve`'s; the HTTP
//! adapter configuration that speaks to them is `config/examples/http-against-sim.toml`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use aftersales_adapter_sim::{Sim, SimConfig, SystemClock};
use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use serde_json::{Map, Value};

#[derive(Subcommand)]
pub(crate) enum SimCommand {
    /// Serve the simulated platform over HTTP until SIGTERM or SIGINT: the platform
    /// endpoints (`/v1/...`) the HTTP adapter is configured against, and the control
    /// endpoints (`/sim/...`) that set the world up, script faults and read the ledger
    /// (adapters/sim/README.md). Prints `sim listening on http://ADDR` first.
    Serve {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        /// Seeds every random draw (faults, business outcomes): a seed repeats a run.
        #[arg(long)]
        seed: Option<u64>,
        /// Whether refunds succeed at once or stay pending until they settle.
        #[arg(long, value_enum)]
        refunds: Option<Refunds>,
        /// How long a pending refund takes to settle, such as `30s`.
        #[arg(long)]
        settle_after: Option<String>,
        /// A TOML file of simulator settings, the keys a business line gives `kind = "sim"`
        /// (`latency`, `faults`, `action_faults`, `business`, `webhook_secret_env`, ...);
        /// the flags above override it.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Refunds {
    Immediate,
    Pending,
}

pub(crate) fn run(command: SimCommand) -> anyhow::Result<ExitCode> {
    match command {
        SimCommand::Serve {
            listen,
            seed,
            refunds,
            settle_after,
            settings,
        } => {
            let mut values = match &settings {
                Some(path) => read_settings(path)?,
                None => Map::new(),
            };
            if let Some(seed) = seed {
                values.insert("seed".into(), seed.into());
            }
            if let Some(refunds) = refunds {
                let mode = match refunds {
                    Refunds::Immediate => "immediate",
                    Refunds::Pending => "pending",
                };
                values.insert("refunds".into(), mode.into());
            }
            if let Some(after) = settle_after {
                values.insert("settle_after".into(), after.into());
            }
            let config =
                SimConfig::from_settings(&Value::Object(values), &|name| std::env::var(name).ok())
                    .context("reading the simulator settings")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(Sim::new(config, SystemClock), &listen))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_settings(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: not a TOML table", path.display()))
}

async fn serve(sim: Sim, listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    // The first stdout line is the contract scripts and tests wait for.
    println!("sim listening on http://{bound}");
    use std::io::Write as _;
    std::io::stdout().flush().context("writing to stdout")?;
    let serving =
        aftersales_adapter_sim::serve::serve(sim, listener, crate::serve::shutdown_signal());
    // A request held by a `hang` fault would keep a graceful shutdown waiting for an hour;
    // its effect is already applied, so stop anyway after a grace period.
    let grace = async {
        crate::serve::shutdown_signal().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serving => served.context("serving the simulator"),
        () = grace => {
            eprintln!(
                "sim: requests still in flight {}s after the signal were dropped",
                SHUTDOWN_GRACE.as_secs()
            );
            Ok(())
        }
    }
}

/// How long in-flight requests may finish after SIGTERM or SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
