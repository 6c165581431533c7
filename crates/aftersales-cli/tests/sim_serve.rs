//! The real `aftersales sim serve` binary on a free port: its first stdout line names the
//! address, the simulator answers over HTTP with the flags applied, and SIGTERM stops it
//! with exit code 0.

#![cfg(feature = "adapter-sim")]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Kills the child if the test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn send(
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_serve_listens_answers_and_stops_on_sigterm() {
    let (mut running, base) = listening_sim(
        &[
            "--seed",
            "7",
            "--refunds",
            "pending",
            "--settle-after",
            "5m",
        ],
        &[],
    );
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let (status, info) = send(reqwest::Method::GET, &format!("{base}/sim"), None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        info,
        json!({"kind": "sim", "seed": 7, "refunds": {"mode": "pending", "settle_after_ms": 300_000}})
    );
    let order = json!({
        "order_id": "o-1", "buyer_id": "b-1",
        "lines": [{"line_id": "l1", "sku": "mug", "quantity": 1,
                   "unit_price": {"minor": 2_000, "currency": "CNY"}}],
    });
    let (status, created) = send(
        reqwest::Method::POST,
        &format!("{base}/sim/orders"),
        None,
        Some(order),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, refund) = send(
        reqwest::Method::POST,
        &format!("{base}/v1/payments/pay_o-1/refunds"),
        Some("cli-refund-1"),
        Some(json!({"amount": 500, "currency": "CNY"})),
    )
    .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "processing");
    let (status, ledger) = send(
        reqwest::Method::GET,
        &format!("{base}/sim/ledger"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ledger["entries"].as_array().unwrap().len(), 1, "{ledger}");
    assert_eq!(ledger["entries"][0]["key"], "cli-refund-1");

    let pid = running.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sim serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn sim_serve_refuses_bad_settings_before_listening() {
    let dir = std::env::temp_dir().join(format!("aftersales-sim-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = dir.join("sim.toml");
    std::fs::write(&settings, "seed = 3\nfautls = { transient = 50 }\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .args(["sim", "serve", "--listen", "127.0.0.1:0", "--settings"])
        .arg(&settings)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `fautls`"), "{stderr}");
}

/// `config/examples/http-against-sim.toml` pasted into every shipped business line in place
/// of its `kind = "sim"` adapters validates clean: it builds through the registry and serves
/// every action the shipped workflows call.
#[test]
fn the_http_against_sim_example_serves_every_shipped_business_line() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example =
        std::fs::read_to_string(root.join("config/examples/http-against-sim.toml")).unwrap();
    let dir = std::env::temp_dir().join(format!("aftersales-http-lines-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines = 0;
    for entry in std::fs::read_dir(root.join("config/business-lines")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.find("\n[adapters.").unwrap_or(text.len());
        let line = format!("{}\n{example}", &text[..cut]);
        std::fs::write(dir.join(path.file_name().unwrap()), line).unwrap();
        lines += 1;
    }
    assert!(lines >= 5);
    let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .args(["validate", "--deny-warnings", "workflows/"])
        .arg(&dir)
        .current_dir(&root)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        stdout.contains(&format!("{lines} business line(s) valid")),
        "{stdout}"
    );
}

/// The `THP_enabled` line of a running process's status, or `None` on a kernel without it.
#[cfg(target_os = "linux")]
fn thp_enabled(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
}

/// Starts `aftersales sim serve` on a free port with `args` and `env` added; returns it once
/// it listens, with its base URL.
fn listening_sim(args: &[&str], env: &[(&str, &str)]) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .args(["sim", "serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("MIMALLOC_ALLOW_THP")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("sim listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_owned();
    (running, base)
}

/// The binary runs on 4 KiB pages (transparent huge pages off) unless the operator sets
/// `MIMALLOC_ALLOW_THP`, which then decides.
#[cfg(target_os = "linux")]
#[test]
fn the_binary_turns_transparent_huge_pages_off_unless_told_otherwise() {
    let (default, _) = listening_sim(&[], &[]);
    let Some(seen) = thp_enabled(default.0.id()) else {
        eprintln!("skipped: this kernel's /proc/PID/status has no THP_enabled line");
        return;
    };
    assert_eq!(seen, "0", "THP_enabled of the binary by default");
    drop(default);

    let (told, _) = listening_sim(&[], &[("MIMALLOC_ALLOW_THP", "1")]);
    assert_eq!(
        thp_enabled(told.0.id()).unwrap(),
        "1",
        "THP_enabled with MIMALLOC_ALLOW_THP=1"
    );
}
