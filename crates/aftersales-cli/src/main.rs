//! The `aftersales` binary: validate workflows and business lines, draw workflows, run
//! the daemon, and serve the simulator (`aftersales sim serve`).

#[cfg(feature = "adapter-sim")]
mod bench;
mod client;
#[cfg(feature = "adapter-sim")]
mod demo;
mod serve;
#[cfg(feature = "adapter-sim")]
mod sim;

/// mimalloc instead of the system allocator: the engine allocates many small, short-lived
/// values per step (JSON state, history, expression scopes), and glibc's malloc and free were
/// about a sixth of the daemon's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aftersales_core::diag::{self, Source};
use aftersales_core::graph;
use aftersales_core::model::Workflow;
use aftersales_core::validate::check_sources;
use aftersales_runtime::business_line::{self, CrossCheck};
use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "aftersales",
    version,
    about = "Durable after-sales workflows: refunds, returns, exchanges"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: client::Remote,
}

#[derive(Subcommand)]
enum Command {
    /// Check workflow and business-line files (or directories of them) and report every
    /// problem. A file with a top-level `[business_line]` table is a business line; it is
    /// cross-checked against the workflows given alongside it.
    Validate {
        /// Files or directories; directories are searched for *.toml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Run the daemon: validate every workflow and business line, open the store, run the
    /// workers and the HTTP API until SIGTERM or SIGINT.
    Serve {
        /// The configuration file; every setting has a default, and `AFTERSALES_LISTEN`,
        /// `AFTERSALES_STORE_URL` and `AFTERSALES_WORKERS` override it.
        #[arg(long, default_value = "config/aftersales.toml")]
        config: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Plain, env = "AFTERSALES_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Run the daemon on a SQLite file with the simulator behind every business line, push
    /// about a thousand after-sales requests through its API on a fast clock, and print a
    /// summary.
    #[cfg(feature = "adapter-sim")]
    Demo(demo::DemoArgs),
    /// Measure the engine on a real store: a 5-step saga of simulator calls over N
    /// instances (workflows/s, steps/s, latencies, RSS, bytes per instance) beside the
    /// store's raw commit limits; `--waiting N` parks and drains 7-day waits; `--http` loads
    /// `POST /v1/after-sales` on the in-process daemon. Results: docs/benchmarks.md.
    #[cfg(feature = "adapter-sim")]
    Bench(bench::BenchArgs),
    /// The simulated platform: `aftersales sim serve` runs it as a local HTTP server.
    #[cfg(feature = "adapter-sim")]
    Sim {
        #[command(subcommand)]
        command: sim::SimCommand,
    },
    /// Talk to a running daemon (`--url`, `--token`, `--json`; or AFTERSALES_URL and
    /// AFTERSALES_TOKEN).
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Draw a workflow as a Mermaid flowchart or a Graphviz digraph.
    Graph {
        /// The workflow file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

fn main() -> ExitCode {
    huge_pages_off();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set (then
/// mimalloc does as it says).
///
/// mimalloc asks the kernel for huge pages on its arenas, so each first touch of a range
/// (again after mimalloc hands idle memory back) has the kernel zero a whole 2 MiB page: 9%
/// of the saga benchmark's samples were that zeroing (`clear_page_erms`). With 4 KiB pages
/// the saga ran a quarter to a third more steps/s in alternated runs (docs/benchmarks.md,
/// fifth session of 2026-12-07). Best effort: a kernel without the call leaves things as
/// they were.
fn huge_pages_off() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // Process-wide (the flag is on the address space), inherited by children.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate {
            paths,
            format,
            deny_warnings,
        } => validate(&paths, format, deny_warnings),
        Command::Graph { file, format } => graph(&file, format),
        Command::Client(cmd) => client::run(cmd, cli.remote),
        #[cfg(feature = "adapter-sim")]
        Command::Sim { command } => sim::run(command),
        #[cfg(feature = "adapter-sim")]
        Command::Bench(args) => {
            // Only what went wrong, so the figures stay readable; `RUST_LOG` for more.
            init_logging(LogFormat::Plain, "warn");
            bench::run(args)
        }
        #[cfg(feature = "adapter-sim")]
        Command::Demo(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(demo::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, log_format } => {
            init_logging(log_format, "info");
            let explicit = std::env::args().any(|a| a == "--config" || a.starts_with("--config="));
            let config = serve::load_config(&config, explicit)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default`), as text or JSON lines.
fn init_logging(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Expands directories into their `*.toml` files, sorted, keeping the order given.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).with_context(|| format!("reading directory {}", p.display()))?;
            found.sort();
            if found.is_empty() {
                bail!("no *.toml files under {}", p.display());
            }
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

fn read_all(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    files
        .iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            Ok((f.display().to_string(), text))
        })
        .collect()
}

fn validate(
    paths: &[PathBuf],
    format: OutputFormat,
    deny_warnings: bool,
) -> anyhow::Result<ExitCode> {
    let files = collect_files(paths)?;
    let texts = read_all(&files)?;
    let (line_texts, workflow_texts): (Vec<_>, Vec<_>) = texts
        .iter()
        .partition(|(_, t)| business_line::is_business_line(t));
    let sources: Vec<Source> = workflow_texts
        .iter()
        .map(|(n, t)| Source::new(n, t))
        .collect();
    // A call must resolve when whole directories are checked; a lone file gets warnings.
    let calls_must_resolve = paths.iter().any(|p| p.is_dir());
    let report = check_sources(
        &sources,
        &aftersales_runtime::catalogue::builtin(),
        calls_must_resolve,
    );
    let mut diagnostics = report.diagnostics.clone();
    let mut lines = Vec::new();
    if !line_texts.is_empty() {
        let line_sources: Vec<Source> = line_texts.iter().map(|(n, t)| Source::new(n, t)).collect();
        let workflows: Vec<&Workflow> = report.workflows.iter().map(|(_, w)| w).collect();
        let registry = aftersales_adapters::builtin();
        let checked = business_line::check_sources(
            &line_sources,
            &CrossCheck {
                workflows: &workflows,
                registry: &registry,
                refs_must_resolve: calls_must_resolve,
            },
        );
        diagnostics.extend(checked.diagnostics);
        lines = checked.lines;
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let failed = errors > 0 || (deny_warnings && warnings > 0);
    match format {
        OutputFormat::Json => println!("{}", diag::render_json(&diagnostics)),
        OutputFormat::Human => {
            eprint!("{}", diag::render_human(&diagnostics));
            if diagnostics.is_empty() {
                print_summary(&report.workflows, workflow_texts.len(), &lines);
            } else {
                let verdict = if failed { "failed" } else { "ok" };
                println!(
                    "{verdict}: {} file(s), {errors} error(s), {warnings} warning(s)",
                    files.len(),
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What a clean run checked: each workflow, and each business line with its workflows.
fn print_summary(
    workflows: &[(String, Workflow)],
    workflow_files: usize,
    lines: &[(String, business_line::BusinessLine)],
) {
    if lines.is_empty() {
        println!("ok: {workflow_files} workflow file(s) valid");
    } else {
        println!(
            "ok: {workflow_files} workflow file(s), {} business line(s) valid",
            lines.len()
        );
    }
    for (_, wf) in workflows {
        println!("  {}  ({} steps)", wf.key(), wf.all_steps().len());
    }
    for (_, line) in lines {
        let runs: Vec<String> = line
            .workflows
            .iter()
            .map(|(kind, r)| format!("{kind} → {r}"))
            .collect();
        println!(
            "  business line {} ({}): {}",
            line.id.as_str(),
            business_line::goods_name(line.goods),
            runs.join(", ")
        );
    }
}

fn graph(file: &Path, format: GraphFormat) -> anyhow::Result<ExitCode> {
    // Sibling files are loaded too, so calls to other workflows resolve.
    let mut files = vec![file.to_path_buf()];
    if let Some(dir) = file
        .parent()
        .filter(|d| d.is_dir() && !d.as_os_str().is_empty())
    {
        for f in collect_files(&[dir.to_path_buf()]).unwrap_or_default() {
            if f != file {
                files.push(f);
            }
        }
    }
    let texts = read_all(&files)?;
    let sources: Vec<Source> = texts.iter().map(|(n, t)| Source::new(n, t)).collect();
    let report = check_sources(&sources, &aftersales_runtime::catalogue::builtin(), false);
    let own: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.file == sources[0].name && d.is_error())
        .cloned()
        .collect();
    if !own.is_empty() {
        eprint!("{}", diag::render_human(&own));
        eprintln!(
            "error: {} has errors; fix them to draw its graph",
            file.display()
        );
        return Ok(ExitCode::from(1));
    }
    let Some((_, wf)) = report.workflows.iter().find(|(f, _)| f == sources[0].name) else {
        bail!("{}: no workflow found", file.display());
    };
    let fmt = match format {
        GraphFormat::Mermaid => graph::Format::Mermaid,
        GraphFormat::Dot => graph::Format::Dot,
    };
    print!("{}", graph::render(wf, fmt));
    Ok(ExitCode::SUCCESS)
}
