//! The processes of a reliability run: one `aftersales sim serve` and N `aftersales serve`
//! daemons, started from the real binary, killed with SIGKILL and restarted. Every child is
//! killed when the [`Cluster`] is dropped (also on a panic), and the logs are kept when the
//! run failed.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The token every request carries (`admin` scope), read by the daemons from this variable.
pub const TOKEN_ENV: &str = "AFTERSALES_RELIABILITY_TOKEN";
pub const TOKEN: &str = "reliability-secret";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_aftersales")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Spawns `command`, waits for its first stdout line that contains `listening on http://`
/// and returns the child with the URL; the rest of stdout is drained by a thread.
fn spawn_listening(mut command: Command, what: &str) -> Result<(Child, String), String> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {what}: {e}"))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(format!("{what}: no stdout"));
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut sent = false;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if !sent && line.contains("listening on http://") {
                        let _ = tx.send(line.trim().to_owned());
                        sent = true;
                    }
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => {
            let url = line
                .split("listening on ")
                .nth(1)
                .unwrap_or_default()
                .trim()
                .to_owned();
            Ok((child, url))
        }
        Err(e) => {
            let _ = child.kill();
            let status = child.wait().ok();
            Err(format!(
                "{what} did not print its listening line ({e}); exit status {status:?}"
            ))
        }
    }
}

struct Slot {
    child: Option<Child>,
    base: Option<String>,
    log: PathBuf,
    config: PathBuf,
}

/// The simulator and the daemons.
pub struct Cluster {
    sim: Mutex<Option<Child>>,
    pub sim_base: String,
    slots: Vec<Mutex<Slot>>,
    rr: AtomicUsize,
    pub dir: PathBuf,
    pub kills: AtomicUsize,
    pub starts: AtomicUsize,
}

impl Cluster {
    /// Starts the simulator with `settings` (a TOML file of `SimConfig` settings).
    pub fn start_sim(dir: &Path, settings: &Path) -> (Child, String) {
        let log = std::fs::File::create(dir.join("sim.log")).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["sim", "serve", "--listen", "127.0.0.1:0", "--settings"])
            .arg(settings)
            .current_dir(repo_root())
            .stderr(Stdio::from(log));
        spawn_listening(cmd, "the simulator").unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn new(dir: &Path, sim: (Child, String), configs: Vec<PathBuf>) -> Cluster {
        let slots = configs
            .into_iter()
            .enumerate()
            .map(|(i, config)| {
                Mutex::new(Slot {
                    child: None,
                    base: None,
                    log: dir.join(format!("daemon-{i}.log")),
                    config,
                })
            })
            .collect();
        Cluster {
            sim: Mutex::new(Some(sim.0)),
            sim_base: sim.1,
            slots,
            rr: AtomicUsize::new(0),
            dir: dir.to_owned(),
            kills: AtomicUsize::new(0),
            starts: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Starts daemon `i` (blocking: call it from `spawn_blocking`); its log is appended to.
    pub fn start(&self, i: usize) -> Result<String, String> {
        let (config, log) = {
            let slot = self.slots[i].lock().unwrap();
            assert!(slot.child.is_none(), "daemon {i} is already running");
            (slot.config.clone(), slot.log.clone())
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("opening {}: {e}", log.display()))?;
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(repo_root())
            .env(TOKEN_ENV, TOKEN)
            .env("RUST_LOG", "warn")
            .env_remove("AFTERSALES_LISTEN")
            .env_remove("AFTERSALES_STORE_URL")
            .env_remove("AFTERSALES_WORKERS")
            .stderr(Stdio::from(log));
        let (child, base) = spawn_listening(cmd, &format!("daemon {i}"))?;
        let mut slot = self.slots[i].lock().unwrap();
        slot.child = Some(child);
        slot.base = Some(base.clone());
        self.starts.fetch_add(1, Ordering::Relaxed);
        Ok(base)
    }

    /// SIGKILL to daemon `i` (std's `Child::kill` is SIGKILL on Unix), and reaps it.
    pub fn kill(&self, i: usize) -> bool {
        let child = {
            let mut slot = self.slots[i].lock().unwrap();
            slot.base = None;
            slot.child.take()
        };
        match child {
            Some(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
                self.kills.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The URLs of the daemons running now.
    pub fn live(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter_map(|s| s.lock().unwrap().base.clone())
            .collect()
    }

    pub fn base_of(&self, i: usize) -> Option<String> {
        self.slots[i].lock().unwrap().base.clone()
    }

    /// The next daemon in turn among the live ones.
    pub fn pick(&self) -> Option<String> {
        let live = self.live();
        if live.is_empty() {
            return None;
        }
        let n = self.rr.fetch_add(1, Ordering::Relaxed);
        Some(live[n % live.len()].clone())
    }

    /// Reports daemons that died on their own (not killed by the test): a crash is a finding.
    pub fn exited_on_their_own(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let mut slot = s.lock().unwrap();
            if let Some(c) = slot.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                out.push((i, format!("daemon {i} exited by itself: {status}")));
                slot.child = None;
                slot.base = None;
            }
        }
        out
    }

    pub fn kill_all(&self) {
        for i in 0..self.slots.len() {
            let child = {
                let Ok(mut slot) = self.slots[i].lock() else {
                    continue;
                };
                slot.base = None;
                slot.child.take()
            };
            if let Some(mut c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Ok(mut sim) = self.sim.lock()
            && let Some(mut c) = sim.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of a daemon's log, for a panic message.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let path = self.slots[i].lock().map(|s| s.log.clone()).ok();
        let text = path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Waits until `GET {base}/readyz` answers 200.
pub async fn wait_ready(http: &reqwest::Client, base: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
