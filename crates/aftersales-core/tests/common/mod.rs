//! Test harness for the engine: a small action catalogue, a scripted dispatcher that
//! records every call, and helpers to run an engine on the in-memory store with a manual
//! clock.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use aftersales_core::catalogue::{ActionSig, Catalogue, FieldSig};
use aftersales_core::engine::{
    ActionCall, CallResult, Dispatcher, Engine, FailureClass, ManualClock, StartRequest,
    WorkerConfig,
};
use aftersales_core::model::ValueType;
use aftersales_core::store::memory::MemoryStore;
use aftersales_core::store::{HistoryRecord, InstanceRecord, InstanceStatus, Store};
use async_trait::async_trait;
use serde_json::{Value, json};

/// 2026-11-25T00:00:00Z.
pub const T0: i64 = 1_795_564_800_000;
pub const SEC: i64 = 1_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

fn field(name: &str, ty: ValueType, required: bool) -> FieldSig {
    FieldSig {
        name: name.to_owned(),
        ty,
        required,
    }
}

fn action(name: &str, mutating: bool, inputs: Vec<FieldSig>, outputs: Vec<FieldSig>) -> ActionSig {
    ActionSig {
        name: name.to_owned(),
        mutating,
        inputs,
        outputs,
    }
}

/// The test catalogue: a stock system, a payment system and a notifier.
pub fn catalogue() -> Catalogue {
    use ValueType::*;
    let mut c = Catalogue::new();
    c.insert(action(
        "stock.reserve",
        true,
        vec![field("order_id", String, true)],
        vec![field("reservation", String, true)],
    ));
    c.insert(action(
        "stock.release",
        true,
        vec![field("reservation", String, true)],
        vec![],
    ));
    c.insert(action(
        "stock.check",
        false,
        vec![field("order_id", String, true)],
        vec![field("status", String, true)],
    ));
    c.insert(action(
        "pay.refund",
        true,
        vec![
            field("order_id", String, true),
            field("amount", Money, true),
        ],
        vec![
            field("refund_id", String, true),
            field("status", String, true),
        ],
    ));
    c.insert(action(
        "pay.refund_status",
        false,
        vec![field("refund_id", String, true)],
        vec![field("status", String, true)],
    ));
    c.insert(action(
        "note.send",
        true,
        vec![field("text", String, true)],
        vec![],
    ));
    c.insert(action(
        "note.unsend",
        true,
        vec![field("text", String, true)],
        vec![],
    ));
    c
}

/// What the scripted dispatcher answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer this.
    R(CallResult),
    /// Never answer (the engine's timeout fires).
    Hang,
}

pub fn transient() -> Reply {
    Reply::R(CallResult::Failed {
        class: FailureClass::Transient {
            retry_after_ms: None,
        },
        message: "503 from the platform".to_owned(),
    })
}

pub fn permanent(msg: &str) -> Reply {
    Reply::R(CallResult::Failed {
        class: FailureClass::Permanent,
        message: msg.to_owned(),
    })
}

pub fn unknown() -> Reply {
    Reply::R(CallResult::Failed {
        class: FailureClass::UnknownOutcome,
        message: "connection reset after the request was sent".to_owned(),
    })
}

/// A dispatcher that answers from a per-action script (then a default success) and
/// records every call.
#[derive(Default)]
pub struct Script {
    plan: Mutex<HashMap<String, VecDeque<Reply>>>,
    calls: Mutex<Vec<ActionCall>>,
}

impl Script {
    pub fn push(&self, action: &str, reply: Reply) {
        self.plan
            .lock()
            .unwrap()
            .entry(action.to_owned())
            .or_default()
            .push_back(reply);
    }

    pub fn calls(&self) -> Vec<ActionCall> {
        self.calls.lock().unwrap().clone()
    }

    /// `action` names of calls for one instance, in order.
    pub fn actions_of(&self, instance: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.instance_id == instance)
            .map(|c| c.action)
            .collect()
    }

    fn default_reply(call: &ActionCall) -> CallResult {
        let short = &call.key[3..11];
        CallResult::Done(match call.action.as_str() {
            "stock.reserve" => json!({"reservation": format!("res-{short}")}),
            "stock.check" => json!({"status": "ok"}),
            "pay.refund" => json!({"refund_id": format!("rf-{short}"), "status": "succeeded"}),
            "pay.refund_status" => json!({"status": "succeeded"}),
            _ => json!({}),
        })
    }
}

#[async_trait]
impl Dispatcher for Script {
    async fn dispatch(&self, call: ActionCall) -> CallResult {
        self.calls.lock().unwrap().push(call.clone());
        let next = self
            .plan
            .lock()
            .unwrap()
            .get_mut(&call.action)
            .and_then(VecDeque::pop_front);
        match next {
            Some(Reply::R(r)) => r,
            Some(Reply::Hang) => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            None => Script::default_reply(&call),
        }
    }
}

pub struct Harness {
    pub engine: Arc<Engine>,
    pub clock: ManualClock,
    pub script: Arc<Script>,
    pub store: Arc<dyn Store>,
    pub cfg: WorkerConfig,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::on(Arc::new(MemoryStore::new()))
    }

    pub fn on(store: Arc<dyn Store>) -> Harness {
        let clock = ManualClock::new(T0);
        let script = Arc::new(Script::default());
        let engine = Arc::new(Engine::new(
            store.clone(),
            Arc::new(clock.clone()),
            script.clone(),
            catalogue(),
        ));
        Harness {
            engine,
            clock,
            script,
            store,
            cfg: WorkerConfig::default(),
        }
    }

    pub async fn deploy(&self, sources: &[&str]) {
        let files: Vec<(String, String)> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("wf{i}.toml"), (*s).to_owned()))
            .collect();
        if let Err(e) = self.engine.deploy(&files).await {
            panic!("deploy failed: {e}");
        }
    }

    pub async fn start(&self, workflow: &str, input: Value) -> String {
        self.start_with(workflow, input, None).await
    }

    pub async fn start_with(&self, workflow: &str, input: Value, key: Option<&str>) -> String {
        let started = self
            .engine
            .start(StartRequest {
                workflow: workflow.to_owned(),
                version: None,
                business_line: "test".to_owned(),
                input,
                params: json!({}),
                idempotency_key: key.map(str::to_owned),
                search_key: None,
                search_seen: None,
                meta: serde_json::Value::Null,
                id: None,
            })
            .await
            .unwrap();
        started.id
    }

    /// Runs until nothing is due now.
    pub async fn run(&self) {
        self.engine.run_until_idle(&self.cfg).await.unwrap();
    }

    /// Moves the clock and runs what came due.
    pub async fn advance(&self, ms: i64) {
        self.clock.advance(ms);
        self.run().await;
    }

    pub async fn get(&self, id: &str) -> InstanceRecord {
        self.engine.get(id).await.unwrap().unwrap()
    }

    pub async fn status(&self, id: &str) -> InstanceStatus {
        self.get(id).await.status
    }

    pub async fn history(&self, id: &str) -> Vec<HistoryRecord> {
        self.engine.history(id, 0, 10_000).await.unwrap()
    }

    /// `kind` or `kind:step` of each history event.
    pub async fn story(&self, id: &str) -> Vec<String> {
        self.history(id)
            .await
            .into_iter()
            .map(|h| match h.event.step {
                Some(s) => format!("{}:{s}", h.event.kind),
                None => h.event.kind,
            })
            .collect()
    }

    pub async fn output(&self, id: &str) -> Value {
        self.get(id).await.state["end"]["output"].clone()
    }

    pub async fn reason(&self, id: &str) -> String {
        self.get(id).await.state["end"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub fn money(minor: i64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
}
