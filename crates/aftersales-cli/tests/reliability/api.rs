//! The client side of a reliability run: requests to whichever daemon is alive, retried on
//! another one when a daemon was killed under them (same body, same `Idempotency-Key`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::procs::{Cluster, TOKEN};

/// Counts of what went wrong on the way and was retried.
#[derive(Default)]
pub struct Retries {
    /// The connection failed or broke: the daemon was killed (or not up yet).
    pub connection: AtomicUsize,
    /// 503 answers: the store unavailable, a per-order lock held by a killed daemon.
    pub unavailable: AtomicUsize,
    /// Other 5xx answers.
    pub server_errors: AtomicUsize,
    /// The first few 5xx bodies other than 503, for the report.
    pub samples: Mutex<Vec<String>>,
}

pub struct Api {
    pub http: reqwest::Client,
    pub cluster: Arc<Cluster>,
    pub retries: Retries,
    /// How long one logical request may keep failing over before the run gives up.
    pub patience: Duration,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Api {
    pub fn new(cluster: Arc<Cluster>) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            cluster,
            retries: Retries::default(),
            patience: Duration::from_secs(180),
        }
    }

    /// Sends one request to a live daemon, and again to another one (or the same one once
    /// restarted) while the connection fails or the answer is a 5xx.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Answer {
        let started = Instant::now();
        let mut last = String::from("no daemon was up");
        loop {
            assert!(
                started.elapsed() < self.patience,
                "{method} {path} kept failing for {:?}: {last}",
                self.patience
            );
            let Some(base) = self.cluster.pick() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut req = self
                .http
                .request(method.clone(), format!("{base}{path}"))
                .bearer_auth(TOKEN);
            if let Some(k) = key {
                req = req.header("Idempotency-Key", k);
            }
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.retries.connection.fetch_add(1, Ordering::Relaxed);
                    last = format!("{base}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    self.retries.connection.fetch_add(1, Ordering::Relaxed);
                    last = format!("{base}: reading the answer: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let body: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            if status >= 500 {
                if status == 503 {
                    self.retries.unavailable.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.retries.server_errors.fetch_add(1, Ordering::Relaxed);
                    let mut s = self.retries.samples.lock().unwrap();
                    if s.len() < 5 {
                        s.push(format!("{method} {path} → {status}: {body}"));
                    }
                }
                last = format!("{base}: {status} {body}");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            return Answer { status, body };
        }
    }

    /// `GET` through [`Api::call`], expecting 200.
    pub async fn get(&self, path: &str) -> Value {
        let a = self.call(Method::GET, path, None, None).await;
        assert_eq!(a.status, 200, "GET {path}: {}", a.body);
        a.body
    }

    /// Every page of a list endpoint (`items` and `next_cursor`).
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=500&cursor={c}"),
                None => format!("{path}{sep}limit=500"),
            };
            let page = self.get(&url).await;
            if let Some(items) = page["items"].as_array() {
                out.extend(items.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// A request to the simulator (never killed; its control endpoints inject no faults).
    pub async fn sim(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.cluster.sim_base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("the simulator did not answer {method} {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}
