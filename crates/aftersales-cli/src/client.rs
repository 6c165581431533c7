//! The CLI client: `aftersales submit | status | list | signal | cancel | history` against a
//! running daemon. Human tables by default, `--json` for scripts; problems from the API are
//! printed with their stable code and the exit code is 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the daemon is and who we are.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The daemon's base URL.
    #[arg(
        long,
        env = "AFTERSALES_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// A bearer token (never printed).
    #[arg(long, env = "AFTERSALES_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Start a workflow instance (idempotent by `--key`).
    Submit {
        /// Workflow name.
        #[arg(long)]
        workflow: String,
        /// Business line.
        #[arg(long)]
        business_line: String,
        /// The input, as JSON text.
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// The input, from a JSON file.
        #[arg(long)]
        input_file: Option<PathBuf>,
        /// The idempotency key: the same key and body give the same answer.
        #[arg(long)]
        key: String,
        /// A searchable key (the order id).
        #[arg(long)]
        search_key: Option<String>,
        /// Pin a version (the newest by default).
        #[arg(long)]
        version: Option<u32>,
    },
    /// File a buyer's after-sales request (`POST /v1/after-sales`): the business line's rules
    /// and refund calculation run first; idempotent by `--key`.
    Request {
        /// Business line (`apparel`).
        #[arg(long)]
        business_line: String,
        /// The order.
        #[arg(long)]
        order: String,
        /// `cancel_after_payment`, `refund_only`, `return_refund` or `exchange`.
        #[arg(long = "type")]
        kind: String,
        /// A line: `ID` (every unit not yet returned), `ID:QUANTITY`, or for an exchange
        /// `ID:QUANTITY:NEW_SKU`. Repeat for several lines.
        #[arg(long = "line", required = true)]
        lines: Vec<String>,
        /// `no_reason`, `wrong_size`, `damaged`, `wrong_item`, `not_received`, `quality`,
        /// `other`.
        #[arg(long)]
        reason: String,
        /// The refund asked for, in minor units (the most the rules allow when absent).
        #[arg(long)]
        amount_minor: Option<i64>,
        /// The currency of `--amount-minor`.
        #[arg(long, default_value = "CNY")]
        currency: String,
        /// A reference to a photo or text the buyer attached; repeatable.
        #[arg(long)]
        evidence: Vec<String>,
        /// The idempotency key: the same key and body give the same answer.
        #[arg(long)]
        key: String,
    },
    /// List service orders, newest first (`GET /v1/after-sales`).
    Orders {
        /// Only this state (under_review, awaiting_return_shipment, completed, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only this type.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only this business line.
        #[arg(long)]
        business_line: Option<String>,
        /// Only this order.
        #[arg(long)]
        order: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this cursor (printed at the end of a full page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one service order or instance: state, money, what it waits on and until when.
    Status {
        /// Instance id.
        id: String,
    },
    /// List instances, newest first.
    List {
        /// Only this status (running, completed, rejected, closed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only this business line.
        #[arg(long)]
        business_line: Option<String>,
        /// Only this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only this search key.
        #[arg(long)]
        search_key: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this cursor (printed at the end of a full page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Send a signal (merchant decision, buyer shipped, ...).
    Signal {
        /// Instance id.
        id: String,
        /// Signal name (`merchant.decision`).
        name: String,
        /// The payload, as JSON text.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// The dedupe id: sending the same one twice is recorded once.
        #[arg(long)]
        dedupe_id: String,
    },
    /// Ask an instance to cancel; it compensates what it did.
    Cancel {
        /// Instance id.
        id: String,
        /// Why, for the history.
        #[arg(long)]
        reason: String,
    },
    /// Print an instance's history, oldest first.
    History {
        /// Instance id.
        id: String,
    },
}

struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

enum Answer {
    Ok(Value),
    Problem(u16, Value),
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        key: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let mut req = self.http.request(method, &url).query(query);
        if let Some(t) = &self.token {
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
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.context("reading the answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(if status < 400 {
            Answer::Ok(value)
        } else {
            Answer::Problem(status, value)
        })
    }
}

fn parse_json(what: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON"))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn print_service_order(v: &Value) {
    let money = |m: &Value| {
        if m.is_null() {
            return "-".to_owned();
        }
        let minor = m["minor"].as_i64().unwrap_or(0);
        format!(
            "{}.{:02} {}",
            minor / 100,
            (minor % 100).abs(),
            s(&m["currency"])
        )
    };
    let lines: Vec<String> = v["lines"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    format!(
                        "{} ×{} ({})",
                        s(&l["line_id"]),
                        s(&l["quantity"]),
                        s(&l["sku"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let fields = [
        ("id", s(&v["id"])),
        ("business line", s(&v["business_line"])),
        ("type", s(&v["type"])),
        ("state", s(&v["state"])),
        ("order", s(&v["order_id"])),
        ("lines", lines.join(", ")),
        ("reason", s(&v["reason"])),
        ("requested", money(&v["requested_amount"])),
        ("approved", money(&v["approved_amount"])),
        ("refunded", money(&v["refunded_amount"])),
        ("workflow", s(&v["workflow"])),
        ("needs attention", s(&v["needs_attention"])),
        ("outcome", s(&v["outcome"])),
    ];
    for (k, val) in fields {
        println!("{k:<16} {val}");
    }
    let waiting = v["waiting"].as_array().cloned().unwrap_or_default();
    if !waiting.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = waiting
            .iter()
            .map(|w| {
                let until = w["until"]
                    .as_i64()
                    .map(aftersales_core::engine::machine::rfc3339)
                    .unwrap_or_else(|| "-".to_owned());
                vec![s(&w["step"]), s(&w["kind"]), s(&w["what"]), until]
            })
            .collect();
        table(&["step", "waiting on", "what", "until"], &rows);
    }
}

fn print_instance(v: &Value) {
    let fields = [
        ("id", &v["id"]),
        ("workflow", &v["workflow"]),
        ("version", &v["version"]),
        ("business line", &v["business_line"]),
        ("status", &v["status"]),
        ("needs attention", &v["needs_attention"]),
        ("search key", &v["search_key"]),
        ("created", &v["created_at"]),
        ("updated", &v["updated_at"]),
        ("next due", &v["next_due_at"]),
        ("reason", &v["reason"]),
    ];
    for (k, val) in fields {
        println!("{k:<16} {}", s(val));
    }
    if let Some(out) = v.get("output").filter(|o| !o.is_null()) {
        println!("{:<16} {out}", "output");
    }
    let waiting = v["waiting_on"].as_array().cloned().unwrap_or_default();
    if !waiting.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = waiting
            .iter()
            .map(|w| {
                vec![
                    s(&w["step"]),
                    s(&w["kind"]),
                    s(&w["what"]),
                    s(&w["correlation"]),
                    s(&w["until"]),
                ]
            })
            .collect();
        table(
            &["step", "waiting on", "what", "correlation", "until"],
            &rows,
        );
    }
}

/// Runs one client command.
pub fn run(cmd: ClientCommand, remote: Remote) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(cmd, remote))
}

async fn run_async(cmd: ClientCommand, remote: Remote) -> anyhow::Result<ExitCode> {
    let api = Api {
        base: remote.url.clone(),
        token: remote.token.clone(),
        http: reqwest::Client::new(),
    };
    use reqwest::Method;
    let answer = match &cmd {
        ClientCommand::Submit {
            workflow,
            business_line,
            input,
            input_file,
            key,
            search_key,
            version,
        } => {
            let input = match (input, input_file) {
                (Some(text), _) => parse_json("--input", text)?,
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    parse_json(&path.display().to_string(), &text)?
                }
                (None, None) => json!({}),
            };
            let body = json!({
                "workflow": workflow,
                "business_line": business_line,
                "input": input,
                "search_key": search_key,
                "version": version,
            });
            api.send(Method::POST, "/v1/instances", &[], Some(key), Some(body))
                .await?
        }
        ClientCommand::Request {
            business_line,
            order,
            kind,
            lines,
            reason,
            amount_minor,
            currency,
            evidence,
            key,
        } => {
            let mut parsed = Vec::new();
            for l in lines {
                let mut parts = l.splitn(3, ':');
                let id = parts.next().unwrap_or_default();
                let mut line = json!({ "line_id": id });
                if let Some(q) = parts.next().filter(|q| !q.is_empty()) {
                    let q: u32 = q.parse().with_context(|| {
                        format!("--line {l}: the quantity `{q}` is not a whole number")
                    })?;
                    line["quantity"] = json!(q);
                }
                if let Some(sku) = parts.next() {
                    line["exchange_to"] = json!(sku);
                }
                parsed.push(line);
            }
            let mut body = json!({
                "business_line": business_line,
                "order_id": order,
                "type": kind,
                "lines": parsed,
                "reason": reason,
                "evidence": evidence,
            });
            if let Some(minor) = amount_minor {
                body["requested_amount"] = json!({"minor": minor, "currency": currency});
            }
            api.send(Method::POST, "/v1/after-sales", &[], Some(key), Some(body))
                .await?
        }
        ClientCommand::Orders {
            state,
            kind,
            business_line,
            order,
            limit,
            cursor,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("state", state),
                ("type", kind),
                ("business_line", business_line),
                ("order_id", order),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push((k, v.clone()));
                }
            }
            api.send(Method::GET, "/v1/after-sales", &q, None, None)
                .await?
        }
        ClientCommand::Status { id } => {
            // A service order first; any other workflow instance otherwise.
            match api
                .send(
                    Method::GET,
                    &format!("/v1/after-sales/{id}"),
                    &[],
                    None,
                    None,
                )
                .await?
            {
                Answer::Ok(v) => Answer::Ok(v),
                Answer::Problem(..) => {
                    api.send(Method::GET, &format!("/v1/instances/{id}"), &[], None, None)
                        .await?
                }
            }
        }
        ClientCommand::List {
            status,
            business_line,
            workflow,
            search_key,
            limit,
            cursor,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("status", status),
                ("business_line", business_line),
                ("workflow", workflow),
                ("search_key", search_key),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push((k, v.clone()));
                }
            }
            api.send(Method::GET, "/v1/instances", &q, None, None)
                .await?
        }
        ClientCommand::Signal {
            id,
            name,
            payload,
            dedupe_id,
        } => {
            let payload = parse_json("--payload", payload)?;
            let body = json!({"dedupe_id": dedupe_id, "payload": payload});
            api.send(
                Method::POST,
                &format!("/v1/instances/{id}/signals/{name}"),
                &[],
                None,
                Some(body),
            )
            .await?
        }
        ClientCommand::Cancel { id, reason } => {
            api.send(
                Method::POST,
                &format!("/v1/instances/{id}/cancel"),
                &[],
                None,
                Some(json!({"reason": reason})),
            )
            .await?
        }
        ClientCommand::History { id } => {
            api.send(
                Method::GET,
                &format!("/v1/instances/{id}/history"),
                &[("limit", "5000".to_owned())],
                None,
                None,
            )
            .await?
        }
    };
    let value = match answer {
        Answer::Ok(v) => v,
        Answer::Problem(status, p) => {
            if remote.json {
                println!("{p}");
            } else {
                eprintln!(
                    "error: {} {}: {}",
                    status,
                    p["code"].as_str().unwrap_or("?"),
                    p["detail"]
                        .as_str()
                        .map_or_else(|| p.to_string(), str::to_owned)
                );
                if let Some(errors) = p["errors"].as_array() {
                    for e in errors {
                        eprintln!("  {}: {}", s(&e["path"]), s(&e["message"]));
                    }
                }
            }
            return Ok(ExitCode::from(1));
        }
    };
    if remote.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    match cmd {
        ClientCommand::Request { .. } => print_service_order(&value),
        ClientCommand::Status { .. } if value.get("state").is_some() => print_service_order(&value),
        ClientCommand::Submit { .. } | ClientCommand::Status { .. } => print_instance(&value),
        ClientCommand::Orders { .. } => {
            let items = value["items"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    vec![
                        s(&i["id"]),
                        s(&i["business_line"]),
                        s(&i["type"]),
                        s(&i["state"]),
                        s(&i["order_id"]),
                        s(&i["approved_amount"]["minor"]),
                        s(&i["refunded_amount"]["minor"]),
                    ]
                })
                .collect();
            table(
                &[
                    "id",
                    "business line",
                    "type",
                    "state",
                    "order",
                    "approved (minor)",
                    "refunded (minor)",
                ],
                &rows,
            );
            if let Some(c) = value["next_cursor"].as_str() {
                println!("\nmore: --cursor {c}");
            }
        }
        ClientCommand::List { .. } => {
            let items = value["items"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    vec![
                        s(&i["id"]),
                        format!("{}@{}", s(&i["workflow"]), s(&i["version"])),
                        s(&i["business_line"]),
                        s(&i["status"]),
                        s(&i["search_key"]),
                        s(&i["created_at"]),
                    ]
                })
                .collect();
            table(
                &[
                    "id",
                    "workflow",
                    "business line",
                    "status",
                    "search key",
                    "created",
                ],
                &rows,
            );
            if let Some(c) = value["next_cursor"].as_str() {
                println!("\nmore: --cursor {c}");
            }
        }
        ClientCommand::Signal { .. } | ClientCommand::Cancel { .. } => {
            println!("{}", s(&value["delivered"]));
        }
        ClientCommand::History { .. } => {
            let events = value["events"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    let mut detail = e["data"].to_string();
                    if detail.chars().count() > 80 {
                        detail = detail.chars().take(77).collect::<String>() + "...";
                    }
                    vec![
                        s(&e["seq"]),
                        s(&e["at"]),
                        s(&e["kind"]),
                        s(&e["step"]),
                        s(&e["attempt"]),
                        detail,
                    ]
                })
                .collect();
            table(&["seq", "at", "event", "step", "attempt", "detail"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
