//! The crash test's workload: a five-step saga, its action catalogue, and a recording
//! adapter that appends every call to a ledger file before answering, so the test can tell
//! what reached the "platform" even when the worker is killed the next instant.
//!
//! The saga: reserve stock (compensable), send a note (compensable), sleep (a durable
//! timer), refund (the pivot; it fails for good for orders whose id starts with `fail-`,
//! which unwinds the first two steps in reverse), send a notice (retried after the pivot).

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use aftersales_core::catalogue::{ActionSig, Catalogue, FieldSig};
use aftersales_core::engine::keys::unit_random;
use aftersales_core::engine::{ActionCall, CallResult, Dispatcher, FailureClass};
use aftersales_core::model::ValueType;
use async_trait::async_trait;
use serde_json::json;

/// The saga every instance runs.
pub const SAGA: &str = r#"
[workflow]
name = "crash.saga"
version = 1

[input]
order_id = "string"
amount = "money"

[defaults]
timeout = "2s"
retry = { max_attempts = 20, initial = "50ms", multiplier = 2, max_delay = "500ms" }

[[step]]
id = "reserve"
action = "stock.reserve"
input = { order_id = "${input.order_id}" }
compensate = { action = "stock.release", input = { reservation = "${steps.reserve.reservation}" } }

[[step]]
id = "note"
action = "note.send"
input = { text = "reserved ${steps.reserve.reservation}" }
compensate = { action = "note.unsend", input = { text = "released ${steps.reserve.reservation}" } }

[[step]]
id = "cool_off"
sleep = "200ms"

[[step]]
id = "refund"
action = "pay.refund"
input = { order_id = "${input.order_id}", amount = "${input.amount}" }
pivot = true

[[step]]
id = "notice"
action = "note.send"
input = { text = "refunded ${steps.refund.refund_id}" }

[[step]]
id = "done"
end = "completed"
output = { refund_id = "${steps.refund.refund_id}" }
"#;

fn field(name: &str, ty: ValueType) -> FieldSig {
    FieldSig {
        name: name.to_owned(),
        ty,
        required: true,
    }
}

fn action(name: &str, inputs: Vec<FieldSig>, outputs: Vec<FieldSig>) -> ActionSig {
    ActionSig {
        name: name.to_owned(),
        mutating: true,
        inputs,
        outputs,
    }
}

/// The actions the saga calls.
pub fn catalogue() -> Catalogue {
    let mut c = Catalogue::new();
    c.insert(action(
        "stock.reserve",
        vec![field("order_id", ValueType::String)],
        vec![field("reservation", ValueType::String)],
    ));
    c.insert(action(
        "stock.release",
        vec![field("reservation", ValueType::String)],
        vec![],
    ));
    c.insert(action(
        "pay.refund",
        vec![
            field("order_id", ValueType::String),
            field("amount", ValueType::Money),
        ],
        vec![field("refund_id", ValueType::String)],
    ));
    c.insert(action(
        "note.send",
        vec![field("text", ValueType::String)],
        vec![],
    ));
    c.insert(action(
        "note.unsend",
        vec![field("text", ValueType::String)],
        vec![],
    ));
    c
}

/// One line of the ledger: a call that reached the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    /// The instance.
    pub instance: String,
    /// The action.
    pub action: String,
    /// Its idempotency key.
    pub key: String,
}

/// Reads a ledger file, skipping a torn last line.
pub fn read_ledger(path: &Path) -> std::io::Result<Vec<LedgerLine>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let (instance, action, key, end) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            (end == "ok").then(|| LedgerLine {
                instance: instance.to_owned(),
                action: action.to_owned(),
                key: key.to_owned(),
            })
        })
        .collect())
}

/// The recording adapter: appends each call to the ledger (flushed to the OS before it
/// answers), then answers like an idempotent platform. About one key in five fails
/// transiently on its first call in this process, to exercise durable retries.
pub struct Recorder {
    file: Mutex<std::fs::File>,
    failed_once: Mutex<std::collections::HashSet<String>>,
}

impl Recorder {
    /// Opens (or creates) the ledger for appending.
    pub fn open(path: &Path) -> std::io::Result<Recorder> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Recorder {
            file: Mutex::new(file),
            failed_once: Mutex::new(std::collections::HashSet::new()),
        })
    }
}

#[async_trait]
impl Dispatcher for Recorder {
    async fn dispatch(&self, call: ActionCall) -> CallResult {
        // A little latency, so kills land mid-call too.
        let delay = (unit_random(&call.key, 99) * 15.0) as u64;
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        {
            let line = format!("{} {} {} ok\n", call.instance_id, call.action, call.key);
            let Ok(mut f) = self.file.lock() else {
                return CallResult::Failed {
                    class: FailureClass::Transient {
                        retry_after_ms: None,
                    },
                    message: "ledger lock poisoned".to_owned(),
                };
            };
            if let Err(e) = f.write_all(line.as_bytes()) {
                return CallResult::Failed {
                    class: FailureClass::Transient {
                        retry_after_ms: None,
                    },
                    message: format!("ledger write failed: {e}"),
                };
            }
        }
        let flaky = unit_random(&call.key, 7) < 0.2;
        if flaky
            && let Ok(mut seen) = self.failed_once.lock()
            && seen.insert(call.key.clone())
        {
            return CallResult::Failed {
                class: FailureClass::Transient {
                    retry_after_ms: None,
                },
                message: "simulated 503".to_owned(),
            };
        }
        let short = &call.key[3..13];
        match call.action.as_str() {
            "stock.reserve" => CallResult::Done(json!({"reservation": format!("res-{short}")})),
            "pay.refund" => {
                let order = call.input["order_id"].as_str().unwrap_or_default();
                if order.starts_with("fail-") {
                    CallResult::Failed {
                        class: FailureClass::Permanent,
                        message: "the payment was disputed".to_owned(),
                    }
                } else {
                    CallResult::Done(json!({"refund_id": format!("rf-{short}")}))
                }
            }
            _ => CallResult::Done(json!({})),
        }
    }
}
