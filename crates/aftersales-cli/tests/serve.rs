//! The real `aftersales serve` binary on a free port and a fresh SQLite file, driven over
//! HTTP: tokens, an idempotent submit, the worker picking the instance up, SIGTERM with exit
//! code 0, and a restart that finds everything where it was.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
    base: String,
}

fn start(dir: &std::path::Path, port: u16) -> Daemon {
    let config = dir.join("aftersales.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{}"
[workers]
idle_poll = "200ms"
commit_batch = 64
commit_writers = 2
[[auth.tokens]]
name = "shop"
env = "TEST_TOKEN_SHOP"
scopes = ["submit", "read"]
[[auth.tokens]]
name = "ops"
env = "TEST_TOKEN_OPS"
scopes = ["admin"]
"#,
            dir.join("data/aftersales.db").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(root())
        .env("TEST_TOKEN_SHOP", "shop-secret")
        .env("TEST_TOKEN_OPS", "ops-secret")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "daemon said: {line}");
    Daemon {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

fn sigterm(d: &mut Daemon) -> std::process::ExitStatus {
    let pid = d.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn send(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
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
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn submission() -> Value {
    json!({
        "workflow": "physical.return_refund",
        "business_line": "apparel",
        "search_key": "o-serve-1",
        "input": {
            "service_order_id": "so-serve-1",
            "order_id": "o-serve-1",
            "payment_id": "pay_o-serve-1",
            "lines": [{"line_id": "l1", "sku": "tshirt-m", "quantity": 1}],
            "refund_amount": {"minor": 9_000, "currency": "CNY"}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_authenticates_processes_and_stops_cleanly() {
    let dir = std::env::temp_dir().join(format!("aftersales-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut d = start(&dir, port);
    let url = |p: &str| format!("{}{p}", d.base);

    let (s, _) = send(reqwest::Method::GET, &url("/healthz"), None, None, None).await;
    assert_eq!(s, 200);
    let (s, p) = send(
        reqwest::Method::POST,
        &url("/v1/instances"),
        Some("nope"),
        Some("k1"),
        Some(submission()),
    )
    .await;
    assert_eq!(s, 401, "{p}");
    let (s, first) = send(
        reqwest::Method::POST,
        &url("/v1/instances"),
        Some("shop-secret"),
        Some("k1"),
        Some(submission()),
    )
    .await;
    assert_eq!(s, 201, "{first}");
    let (s, again) = send(
        reqwest::Method::POST,
        &url("/v1/instances"),
        Some("shop-secret"),
        Some("k1"),
        Some(submission()),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(first["id"], again["id"]);
    let id = first["id"].as_str().unwrap().to_owned();

    // The worker picks it up: its first step is scheduled and run.
    let deadline = Instant::now() + Duration::from_secs(20);
    let history = loop {
        let (_, h) = send(
            reqwest::Method::GET,
            &url(&format!("/v1/instances/{id}/history")),
            Some("shop-secret"),
            None,
            None,
        )
        .await;
        let kinds: Vec<String> = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect();
        if kinds
            .iter()
            .any(|k| k == "step_completed" || k == "step_failed" || k == "retry_scheduled")
            || Instant::now() > deadline
        {
            break kinds;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(history[0], "instance_started");
    assert!(
        history.contains(&"step_scheduled".to_owned()),
        "{history:?}"
    );

    // The CLI client reads the same instance.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
            .args(args)
            .env("AFTERSALES_URL", &d.base)
            .env("AFTERSALES_TOKEN", "shop-secret")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["status", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("physical.return_refund") && out.contains(&id),
        "{out}"
    );
    let (code, out, _) = cli(&["history", &id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("instance_started"), "{out}");
    let (code, out, _) = cli(&["list", "--search-key", "o-serve-1"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&id), "{out}");
    let (code, out, _) = cli(&["status", &id, "--json"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], json!(id));
    // The shop token may not cancel: a problem with its code, exit code 1.
    let (code, _, err) = cli(&["cancel", &id, "--reason", "test"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("AS-API-0403"), "{err}");
    // Submitting again with the same key through the CLI returns the same instance.
    let input = submission()["input"].to_string();
    let (code, out, err) = cli(&[
        "submit",
        "--workflow",
        "physical.return_refund",
        "--business-line",
        "apparel",
        "--key",
        "k1",
        "--search-key",
        "o-serve-1",
        "--input",
        &input,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&id), "{out}");

    let status = sigterm(&mut d);
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    // Restart on the same file: the instance and its history are there.
    let mut d2 = start(&dir, port);
    let (s, inst) = send(
        reqwest::Method::GET,
        &format!("{}/v1/instances/{id}", d2.base),
        Some("ops-secret"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{inst}");
    assert_eq!(inst["workflow"], "physical.return_refund");
    let (_, h) = send(
        reqwest::Method::GET,
        &format!("{}/v1/instances/{id}/history", d2.base),
        Some("ops-secret"),
        None,
        None,
    )
    .await;
    assert!(h["events"].as_array().unwrap().len() >= history.len());
    assert!(sigterm(&mut d2).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_daemon_refuses_to_start_on_a_broken_config_and_names_it() {
    let dir = std::env::temp_dir().join(format!("aftersales-serve-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("aftersales.toml");
    // Starts the daemon on `text`; it must refuse, naming the file. Its stderr.
    let refused = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("aftersales.toml"), "{err}");
        err
    };
    let err = refused("[server]\nlisten = \"127.0.0.1:1\"\nlisten_twice = true\n");
    assert!(err.contains("listen_twice"), "{err}");
    assert!(err.contains("line 3"), "{err}");

    // A value the daemon cannot run with is refused before anything is opened.
    let err = refused("[workers]\ncommit_writers = 0\n");
    assert!(
        err.contains("workers.commit_writers must be at least 1"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
