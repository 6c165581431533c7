//! The execution state of one instance, persisted as JSON in the store's `state` column.
//!
//! This is a serialization boundary: the field names are the stored format. `v` is the
//! format version; a change to these types that old rows cannot decode needs a new version
//! and a conversion.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::InstanceStatus;

/// Current version of the stored format.
pub const STATE_VERSION: u32 = 1;

/// Everything the engine needs to resume an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecState {
    /// Format version.
    pub v: u32,
    /// Live threads of execution: one at the top level, one more per running branch.
    pub fibers: BTreeMap<u32, Fiber>,
    /// Id of the next fiber created.
    pub next_fiber: u32,
    /// Latest output of every completed step, by step id.
    pub outputs: BTreeMap<String, Value>,
    /// How many times each step has started.
    pub visits: BTreeMap<String, u32>,
    /// Completed compensable steps, in completion order (undone in reverse).
    pub undo: Vec<UndoEntry>,
    /// True once the pivot step completed: no more compensation.
    pub pivot_passed: bool,
    /// Set while the saga unwinds.
    pub compensation: Option<Compensating>,
    /// Set once the instance ended.
    pub end: Option<EndRecord>,
    /// Flagged for a person.
    pub needs_attention: bool,
    /// The phase of the last step entered that declared one (`phase = "..."` in the
    /// workflow), for the layer above the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl ExecState {
    /// A fresh state with one fiber ready at `start`.
    pub fn new(start: &str) -> ExecState {
        let mut fibers = BTreeMap::new();
        fibers.insert(
            0,
            Fiber {
                step: start.to_owned(),
                visit: 0,
                branch: None,
                run: Run::Ready,
            },
        );
        ExecState {
            v: STATE_VERSION,
            fibers,
            next_fiber: 1,
            outputs: BTreeMap::new(),
            visits: BTreeMap::new(),
            undo: Vec::new(),
            pivot_passed: false,
            compensation: None,
            end: None,
            needs_attention: false,
            phase: None,
        }
    }
}

/// One thread of execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fiber {
    /// The step it is at.
    pub step: String,
    /// Which visit of that step this is (1 for the first).
    pub visit: u32,
    /// For a branch fiber: its parallel parent and branch index.
    pub branch: Option<BranchOf>,
    /// What it is doing.
    pub run: Run,
}

/// Where a branch fiber belongs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchOf {
    /// The parent fiber (at the parallel step).
    pub parent: u32,
    /// The branch index in the parallel step.
    pub index: usize,
}

/// What a fiber is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Run {
    /// About to start its step.
    Ready,
    /// A task attempt scheduled (due now, or later for a retry).
    Task(Attempt),
    /// The action answered pending; waiting for its completion event or a poll.
    Pending(PendingRun),
    /// Waiting for a signal or an event.
    Waiting(WaitRun),
    /// A durable timer.
    Sleeping {
        /// When it fires.
        until: i64,
    },
    /// At a parallel step, waiting for its branches.
    Joining {
        /// Branch fibers, by branch index.
        children: Vec<u32>,
        /// Per branch: running (`None`), succeeded or failed.
        done: Vec<Option<bool>>,
    },
    /// Waiting for a child instance.
    Calling {
        /// The child instance id.
        child: String,
    },
}

/// One scheduled attempt of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// `system.action`.
    pub action: String,
    /// The idempotency key (the same for every attempt).
    pub key: String,
    /// The evaluated input.
    pub input: Value,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// When to dispatch it.
    pub due_at: i64,
    /// When the first attempt was scheduled.
    pub first_at: i64,
    /// When the step gives up, all attempts included.
    pub deadline_at: Option<i64>,
    /// Per-attempt timeout in milliseconds.
    pub timeout_ms: i64,
    /// True once an attempt ended with an unknown outcome (the effect may have happened).
    pub maybe_applied: bool,
    /// True from the commit that hands this attempt to dispatch until its result is
    /// recorded: after a crash, the call may have been made.
    #[serde(default)]
    pub in_flight: bool,
}

/// An action that answered pending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRun {
    /// The action that is pending.
    pub action: String,
    /// Its key.
    pub key: String,
    /// What the completion event is correlated by.
    pub correlation: String,
    /// Event names that finish it (`payment.refund.succeeded`, ...).
    pub events: Vec<String>,
    /// The output known so far.
    pub output: Value,
    /// A read-only action to learn the final state.
    pub poll: Option<(String, Value)>,
    /// When to poll next.
    pub poll_at: i64,
    /// Polls so far.
    pub polls: u32,
    /// When the step gives up.
    pub deadline_at: Option<i64>,
}

/// A wait for a signal or an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitRun {
    /// Signal (`false`) or event (`true`).
    pub event: bool,
    /// The name waited for.
    pub name: String,
    /// For events: the correlation key.
    pub correlation: Option<String>,
    /// When the wait times out.
    pub timeout_at: Option<i64>,
}

/// A completed compensable step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndoEntry {
    /// The step.
    pub step: String,
    /// Its visit.
    pub visit: u32,
    /// Its output then (compensation inputs may read it).
    pub output: Value,
}

/// The saga is unwinding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compensating {
    /// Why.
    pub reason: String,
    /// How the instance ends once unwound.
    pub final_status: InstanceStatus,
    /// The compensation in progress.
    pub current: Option<(UndoEntry, Attempt)>,
}

/// How the instance ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndRecord {
    /// Final status.
    pub status: InstanceStatus,
    /// Why.
    pub reason: String,
    /// Output (a parent's call step reads it).
    pub output: Value,
}

/// What one fiber of an instance is waiting on, for people and the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitingOn {
    /// The step.
    pub step: String,
    /// `attempt`, `retry`, `pending`, `signal`, `event`, `timer`, `branches`, `child`,
    /// `compensation`.
    pub kind: &'static str,
    /// The action, signal or event name, or the child id.
    pub what: Option<String>,
    /// For events and pending actions: the correlation key.
    pub correlation: Option<String>,
    /// When it fires, times out or retries (unix ms).
    pub until: Option<i64>,
}

impl ExecState {
    /// What the instance is waiting on now; empty once it has ended.
    pub fn waiting_on(&self) -> Vec<WaitingOn> {
        if self.end.is_some() {
            return Vec::new();
        }
        if let Some(c) = &self.compensation {
            return c
                .current
                .iter()
                .map(|(u, a)| WaitingOn {
                    step: u.step.clone(),
                    kind: "compensation",
                    what: Some(a.action.clone()),
                    correlation: None,
                    until: Some(a.due_at),
                })
                .collect();
        }
        self.fibers
            .values()
            .filter_map(|f| {
                let (kind, what, correlation, until) = match &f.run {
                    Run::Ready => return None,
                    Run::Task(a) if a.attempt > 1 => {
                        ("retry", Some(a.action.clone()), None, Some(a.due_at))
                    }
                    Run::Task(a) => ("attempt", Some(a.action.clone()), None, Some(a.due_at)),
                    Run::Pending(p) => (
                        "pending",
                        Some(p.action.clone()),
                        Some(p.correlation.clone()),
                        p.deadline_at,
                    ),
                    Run::Waiting(w) => (
                        if w.event { "event" } else { "signal" },
                        Some(w.name.clone()),
                        w.correlation.clone(),
                        w.timeout_at,
                    ),
                    Run::Sleeping { until } => ("timer", None, None, Some(*until)),
                    Run::Joining { .. } => ("branches", None, None, None),
                    Run::Calling { child } => ("child", Some(child.clone()), None, None),
                };
                Some(WaitingOn {
                    step: f.step.clone(),
                    kind,
                    what,
                    correlation,
                    until,
                })
            })
            .collect()
    }
}
