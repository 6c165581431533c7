//! The real binary's after-sales front door over HTTP: `aftersales demo --serve` on a free
//! port (the daemon with the simulated platforms and a few untouched orders), driven with
//! reqwest through an idempotent submit, a refusal, the merchant's and the buyer's signals,
//! the warehouse's signed webhook, the refund in the history, a forged webhook, and SIGTERM.

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

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn start_demo(dir: &std::path::Path) -> Daemon {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .args([
            "demo",
            "--serve",
            "--requests",
            "20",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            dir.join("demo.db").to_str().unwrap(),
        ])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the demo exited early:\n{seen}");
        seen.push_str(&line);
        if line.contains("Time now runs at its real pace") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not come up:\n{seen}"
        );
    }
    assert!(
        seen.contains("Service orders by type and final state"),
        "{seen}"
    );
    assert!(seen.contains("TRY-1"), "{seen}");
    // Keep draining stdout so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    Daemon {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn send(
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, url);
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

async fn wait_for_state(base: &str, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = send(
            reqwest::Method::GET,
            &format!("{base}/v1/after-sales/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
        if v["state"] == state {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "service order {id} never reached {state}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_and_refund_through_the_real_binary_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start_demo(dir.path());
    let b = d.base.clone();
    let body = json!({
        "business_line": "apparel", "order_id": "TRY-1", "type": "return_refund",
        "lines": [{"line_id": "l1", "quantity": 1}], "reason": "wrong_size",
        "evidence": ["img://try-1/photo.jpg"]
    });

    // Idempotent submit: created once; the same key and body answer with the same order;
    // the same key with another body is a conflict.
    let (status, so) = send(
        reqwest::Method::POST,
        &format!("{b}/v1/after-sales"),
        Some("e2e-1"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 201, "{so}");
    let id = so["id"].as_str().unwrap().to_owned();
    assert_eq!(
        so["approved_amount"],
        json!({"minor": 29_900, "currency": "CNY"})
    );
    let (status, again) = send(
        reqwest::Method::POST,
        &format!("{b}/v1/after-sales"),
        Some("e2e-1"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], so["id"]);
    let mut other = body.clone();
    other["reason"] = json!("no_reason");
    let (status, conflict) = send(
        reqwest::Method::POST,
        &format!("{b}/v1/after-sales"),
        Some("e2e-1"),
        Some(other),
    )
    .await;
    assert_eq!(status, 409, "{conflict}");
    // No key: refused before anything.
    let (status, _) = send(
        reqwest::Method::POST,
        &format!("{b}/v1/after-sales"),
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 400);
    // A second request on the same line while the first is open: the rules refuse it.
    let (status, refusal) = send(
        reqwest::Method::POST,
        &format!("{b}/v1/after-sales"),
        Some("e2e-2"),
        Some(json!({
            "business_line": "apparel", "order_id": "TRY-1", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"
        })),
    )
    .await;
    assert_eq!(status, 422, "{refusal}");
    assert_eq!(refusal["rule"]["code"], "open_request_exists", "{refusal}");
    // A malformed body names the field.
    let (status, bad) = send(
        reqwest::Method::POST,
        &format!("{b}/v1/after-sales"),
        Some("e2e-3"),
        Some(
            json!({"business_line": "apparel", "order_id": "TRY-2", "type": "return_refund",
            "lines": [{"line_id": "l1", "quantity": "two"}], "reason": "no_reason"}),
        ),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["detail"]
            .as_str()
            .unwrap()
            .contains("lines[0].quantity"),
        "{bad}"
    );

    // The merchant approves, the buyer ships, the warehouse receives.
    wait_for_state(&b, &id, "under_review").await;
    let (status, v) = send(
        reqwest::Method::POST,
        &format!("{b}/v1/after-sales/{id}/signals/merchant.decision"),
        Some("approve-1"),
        Some(json!({"payload": {"approved": true}})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    wait_for_state(&b, &id, "awaiting_return_shipment").await;
    let (status, v) = send(
        reqwest::Method::POST,
        &format!("{b}/v1/after-sales/{id}/signals/buyer.shipped"),
        Some("ship-1"),
        Some(json!({"payload": {"carrier": "SF Express", "tracking_no": "SF1234567890"}})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    wait_for_state(&b, &id, "in_transit").await;

    // A forged warehouse webhook is refused and changes nothing.
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{b}/v1/webhooks/sim"))
        .header("content-type", "application/json")
        .header("sim-signature", "t=1,v1=deadbeef")
        .body(r#"{"name":"warehouse.return.received","correlation":"rma_1","dedupe_id":"x","payload":{"inspection_passed":true}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let v = wait_for_state(&b, &id, "in_transit").await;
    assert!(v.get("refunded_amount").is_none(), "{v}");

    // The simulated warehouse receives the parcel and sends its signed webhook.
    let (status, v) = send(
        reqwest::Method::POST,
        &format!("{b}/demo/returns/{id}/receive"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let done = wait_for_state(&b, &id, "completed").await;
    assert_eq!(done["refunded_amount"]["minor"], 29_900, "{done}");
    let (status, h) = send(
        reqwest::Method::GET,
        &format!("{b}/v1/after-sales/{id}/history"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let events = h["events"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["step"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for expected in [
        ("signal_received", "merchant_review"),
        ("signal_received", "await_shipment"),
        ("event_received", "await_receipt"),
        ("step_completed", "refund"),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }
    // Listed with its state; the business lines are there.
    let (status, list) = send(
        reqwest::Method::GET,
        &format!("{b}/v1/after-sales?order_id=TRY-1&state=completed"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (status, lines) = send(
        reqwest::Method::GET,
        &format!("{b}/v1/business-lines"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(lines["items"].as_array().unwrap().len() >= 5, "{lines}");

    // The sales feed (a record sent twice counts once) and the return rates over it.
    let sales = json!({"sales": [
        {"id": "feed-1", "business_line": "apparel", "category": "apparel.jeans", "sku": "jeans-m", "quantity": 40, "at": "2026-01-01T00:00:00Z"},
        {"id": "feed-1", "business_line": "apparel", "category": "apparel.jeans", "sku": "jeans-m", "quantity": 40, "at": "2026-01-01T00:00:00Z"}
    ]});
    let (status, v) = send(
        reqwest::Method::POST,
        &format!("{b}/v1/sales"),
        None,
        Some(sales),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"recorded": 1, "duplicates": 1}));
    let (status, rates) = send(
        reqwest::Method::GET,
        &format!(
            "{b}/v1/analytics/return-rates?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z&business_line=apparel"
        ),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{rates}");
    let jeans = rates["rates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scope"] == json!({"kind": "category", "value": "apparel.jeans"}))
        .unwrap_or_else(|| panic!("{rates:#}"));
    assert_eq!(
        jeans["ratio"],
        json!({"returned": 1, "sold": 40}),
        "{rates:#}"
    );
    let (status, bad) = send(
        reqwest::Method::GET,
        &format!("{b}/v1/analytics/return-rates?from=yesterday&to=2100-01-01T00:00:00Z"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 400, "{bad}");

    // SIGTERM: exits 0.
    let pid = d.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
