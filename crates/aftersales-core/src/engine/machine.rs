//! The engine's state machine: pure functions from (definition, state, inbox, results, now)
//! to a new state and the effects to carry out. No I/O, no clock, no randomness: the worker
//! feeds time in and carries effects out, so every transition can be tested step by step
//! and replayed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::keys;
use super::state::*;
use crate::expr::{Scope, fields_of};
use crate::model::*;
use crate::store::memory::name_matches;
use crate::store::{InboxMessage, InstanceStatus, MessageKind, NewHistory};

/// Default policy for compensations without their own: persistent.
fn default_compensation_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 25,
        initial: Duration::from_secs(1),
        multiplier: 2.0,
        max_delay: Duration::from_secs(600),
        jitter: Jitter::Full,
        retry_on: vec![
            RetryOn::Transient,
            RetryOn::UnknownOutcome,
            RetryOn::Timeout,
        ],
        span: 0..0,
    }
}

/// Default per-attempt timeout when neither the step nor `[defaults]` gives one.
pub const DEFAULT_TIMEOUT_MS: i64 = 30_000;
/// First poll of a pending action, and the cap on the poll interval.
const POLL_FIRST_MS: i64 = 30_000;
const POLL_MAX_MS: i64 = 30 * 60_000;

/// What the machine needs to know about the instance besides its state.
pub struct Ctx<'a> {
    /// Instance id.
    pub instance_id: &'a str,
    /// The pinned definition.
    pub def: &'a Workflow,
    /// Business line.
    pub business_line: &'a str,
    /// Prepared input (defaults applied, optional absent fields null).
    pub input: &'a Value,
    /// Prepared parameters.
    pub params: &'a Value,
    /// When the instance started.
    pub started_at: i64,
    /// Now.
    pub now: i64,
}

/// What to dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchReq {
    /// What the result belongs to.
    pub target: Target,
    /// `system.action`.
    pub action: String,
    /// Input object.
    pub input: Value,
    /// Idempotency key.
    pub key: String,
    /// Per-attempt timeout.
    pub timeout_ms: i64,
}

/// Whose dispatch it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A fiber's task attempt.
    Task(u32),
    /// A fiber's poll of a pending action.
    Poll(u32),
    /// The compensation in progress.
    Compensation,
}

/// A child instance to start.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildReq {
    /// Its id (derived, so a repeat creates nothing new).
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// Version, or the newest.
    pub version: Option<u32>,
    /// Input.
    pub input: Value,
}

/// The effects of one round.
#[derive(Debug, Default)]
pub struct Effects {
    /// History to append.
    pub history: Vec<NewHistory>,
    /// Calls to make after committing.
    pub dispatches: Vec<DispatchReq>,
    /// Inbox messages consumed.
    pub consumed: Vec<i64>,
    /// Children to start.
    pub children: Vec<ChildReq>,
    /// Children to cancel.
    pub cancel_children: Vec<String>,
}

/// How an action call ended, as the machine sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// Finished with this output object.
    Done(Value),
    /// Accepted, final result later.
    Pending {
        /// Correlation key of the completion event.
        correlation: String,
        /// Output so far.
        output: Value,
        /// Poll action and input.
        poll: Option<(String, Value)>,
        /// Completion event names.
        events: Vec<String>,
    },
    /// Failed.
    Failed {
        /// Class.
        class: FailureClass,
        /// Why.
        message: String,
    },
}

/// Classes of failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailureClass {
    /// Retry later (with the platform's `Retry-After`, if any).
    Transient {
        /// Milliseconds the platform asked to wait.
        retry_after_ms: Option<i64>,
    },
    /// The call may have happened.
    UnknownOutcome,
    /// The attempt outlived its timeout (an unknown outcome too).
    Timeout,
    /// Never retry.
    Permanent,
}

impl<'a> Ctx<'a> {
    /// What expressions of a step read: borrowed from the instance, each root built only
    /// when an expression reads it.
    fn scope<'s>(&'s self, st: &'s ExecState, own: Option<(&'s str, &'s Value)>) -> StepScope<'s> {
        StepScope { cx: self, st, own }
    }

    fn hist(
        &self,
        fx: &mut Effects,
        kind: &str,
        step: Option<&str>,
        attempt: Option<u32>,
        data: Value,
    ) {
        fx.history.push(NewHistory {
            at: self.now,
            kind: kind.to_owned(),
            step: step.map(str::to_owned),
            attempt,
            data,
        });
    }

    fn duration_ms(&self, d: &DurationSpec) -> Result<i64, String> {
        match d {
            DurationSpec::Fixed(f) => Ok(f.value.as_millis() as i64),
            DurationSpec::Param(p) => {
                let text = self
                    .params
                    .get(&p.value)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("parameter `{}` is not set", p.value))?;
                crate::duration::parse(text)
                    .map(|d| d.as_millis() as i64)
                    .map_err(|e| format!("parameter `{}`: {e}", p.value))
            }
        }
    }
}

/// Formats unix milliseconds as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The roots of [`crate::expr`] over an instance: `input` and `params` lent as they are,
/// `steps` the outputs so far (plus, while compensating, the output of the step being
/// undone), `workflow` and `now` built when read. An expression that selects named steps
/// (`steps.refund.amount`) gets copies of those outputs only.
struct StepScope<'s> {
    cx: &'s Ctx<'s>,
    st: &'s ExecState,
    own: Option<(&'s str, &'s Value)>,
}

impl StepScope<'_> {
    fn step(&self, id: &str) -> Option<&Value> {
        match self.own {
            Some((own, out)) if own == id => Some(out),
            _ => self.st.outputs.get(id),
        }
    }
}

impl Scope for StepScope<'_> {
    fn root(&self, name: &str) -> Option<Cow<'_, Value>> {
        Some(match name {
            "input" => Cow::Borrowed(self.cx.input),
            "params" => Cow::Borrowed(self.cx.params),
            "steps" => {
                let mut steps: Map<String, Value> = self
                    .st
                    .outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if let Some((id, out)) = self.own {
                    steps.insert(id.to_owned(), out.clone());
                }
                Cow::Owned(Value::Object(steps))
            }
            "workflow" => Cow::Owned(json!({
                "instance_id": self.cx.instance_id,
                "name": self.cx.def.name.value,
                "version": self.cx.def.version.value,
                "business_line": self.cx.business_line,
                "started_at": rfc3339(self.cx.started_at),
            })),
            "now" => Cow::Owned(Value::String(rfc3339(self.cx.now))),
            _ => return None,
        })
    }

    fn fields(&self, root: &str, fields: &[String]) -> Option<Map<String, Value>> {
        if root == "steps" {
            return Some(
                fields
                    .iter()
                    .filter_map(|f| self.step(f).map(|v| (f.clone(), v.clone())))
                    .collect(),
            );
        }
        fields_of(self.root(root)?.as_ref(), fields)
    }
}

fn eval_args<S: Scope + ?Sized>(args: &[Arg], scope: &S) -> Result<Value, String> {
    let mut m = Map::new();
    for a in args {
        let v = a.value.eval(scope).map_err(|e| e.to_string())?;
        m.insert(a.name.value.clone(), v);
    }
    Ok(Value::Object(m))
}

/// Where the machine finds steps: the definition, flattened, with each step's successor in
/// file order and its branch.
struct Index<'d> {
    steps: BTreeMap<&'d str, (&'d Step, Option<&'d str>)>,
}

impl<'d> Index<'d> {
    fn new(def: &'d Workflow) -> Index<'d> {
        fn walk<'d>(steps: &'d [Step], out: &mut BTreeMap<&'d str, (&'d Step, Option<&'d str>)>) {
            for (i, s) in steps.iter().enumerate() {
                let following = steps.get(i + 1).map(|n| n.id.value.as_str());
                out.insert(&s.id.value, (s, following));
                if let StepKind::Parallel(p) = &s.kind {
                    for b in &p.branches {
                        walk(&b.steps, out);
                    }
                }
            }
        }
        let mut steps = BTreeMap::new();
        walk(&def.steps, &mut steps);
        Index { steps }
    }

    fn step(&self, id: &str) -> Option<&'d Step> {
        self.steps.get(id).map(|(s, _)| *s)
    }

    fn following(&self, id: &str) -> Option<&'d str> {
        self.steps.get(id).and_then(|(_, f)| *f)
    }
}

/// The machine for one instance.
pub struct Machine<'a> {
    cx: &'a Ctx<'a>,
    idx: Index<'a>,
}

impl<'a> Machine<'a> {
    /// Builds the machine for a context.
    pub fn new(cx: &'a Ctx<'a>) -> Machine<'a> {
        Machine {
            cx,
            idx: Index::new(cx.def),
        }
    }

    /// Runs the instance as far as it can go without calling anything: consumes inbox
    /// messages, starts ready steps, fires due timers, and collects the dispatches due now.
    /// The caller commits the state, then carries out `fx.dispatches`.
    pub fn advance(&self, st: &mut ExecState, inbox: &[InboxMessage], fx: &mut Effects) {
        for _ in 0..10_000 {
            let mut progressed = self.take_inbox(st, inbox, fx);
            progressed |= self.step_fibers(st, fx);
            progressed |= self.step_compensation(st, fx);
            if !progressed {
                break;
            }
        }
        self.collect_dispatches(st, fx);
    }

    /// Applies the result of a dispatch made from this state.
    pub fn apply(&self, st: &mut ExecState, target: Target, result: CallResult, fx: &mut Effects) {
        match target {
            Target::Task(fid) => self.task_result(st, fid, result, fx),
            Target::Poll(fid) => self.poll_result(st, fid, result, fx),
            Target::Compensation => self.compensation_result(st, result, fx),
        }
    }

    /// Records that these task attempts are being handed to dispatch: from the commit that
    /// follows, a crash leaves them possibly made (compensated if the saga unwinds).
    pub fn mark_in_flight(&self, st: &mut ExecState, dispatches: &[DispatchReq]) {
        for d in dispatches {
            if let Target::Task(fid) = d.target
                && let Some(f) = st.fibers.get_mut(&fid)
                && let Run::Task(a) = &mut f.run
            {
                a.in_flight = true;
            }
        }
    }

    /// The earliest time something is due, if any.
    pub fn next_due(&self, st: &ExecState) -> Option<i64> {
        if st.end.is_some() {
            return None;
        }
        let mut due: Option<i64> = None;
        let mut at = |t: i64| due = Some(due.map_or(t, |d| d.min(t)));
        if let Some(c) = &st.compensation {
            match &c.current {
                Some((_, a)) => at(a.due_at),
                None => at(self.cx.now),
            }
            return due;
        }
        for f in st.fibers.values() {
            match &f.run {
                Run::Ready => at(self.cx.now),
                Run::Task(a) => {
                    at(a.due_at);
                    if let Some(d) = a.deadline_at {
                        at(d);
                    }
                }
                Run::Pending(p) => {
                    if p.poll.is_some() {
                        at(p.poll_at);
                    }
                    if let Some(d) = p.deadline_at {
                        at(d);
                    }
                }
                Run::Waiting(w) => {
                    if let Some(t) = w.timeout_at {
                        at(t);
                    }
                }
                Run::Sleeping { until } => at(*until),
                Run::Joining { .. } | Run::Calling { .. } => {}
            }
        }
        due
    }

    /// The `(event name, correlation)` pairs the instance waits on.
    pub fn waits(&self, st: &ExecState) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for f in st.fibers.values() {
            match &f.run {
                Run::Waiting(w) if w.event => {
                    if let Some(c) = &w.correlation {
                        out.push((w.name.clone(), c.clone()));
                    }
                }
                Run::Pending(p) => {
                    for e in &p.events {
                        out.push((e.clone(), p.correlation.clone()));
                    }
                }
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }

    // ---- inbox ----

    fn take_inbox(&self, st: &mut ExecState, inbox: &[InboxMessage], fx: &mut Effects) -> bool {
        let mut progressed = false;
        for msg in inbox {
            if fx.consumed.contains(&msg.id) {
                continue;
            }
            if st.end.is_some() {
                break;
            }
            let taken = match msg.kind {
                MessageKind::Cancel => {
                    self.cancel(st, msg, fx);
                    true
                }
                MessageKind::ChildDone => self.child_done(st, msg, fx),
                MessageKind::Signal | MessageKind::Event => self.deliver(st, msg, fx),
            };
            if taken {
                fx.consumed.push(msg.id);
                progressed = true;
            }
        }
        progressed
    }

    fn cancel(&self, st: &mut ExecState, msg: &InboxMessage, fx: &mut Effects) {
        let reason = msg
            .payload
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("cancelled")
            .to_owned();
        if st.compensation.is_some() {
            self.cx.hist(
                fx,
                "cancel_ignored",
                None,
                None,
                json!({"reason": reason, "why": "already compensating"}),
            );
            return;
        }
        if st.pivot_passed {
            self.cx.hist(
                fx,
                "cancel_refused",
                None,
                None,
                json!({"reason": reason, "why": "past the point of no return"}),
            );
            return;
        }
        self.cx.hist(
            fx,
            "cancel_requested",
            None,
            None,
            json!({"reason": reason}),
        );
        self.begin_compensation(
            st,
            format!("cancelled: {reason}"),
            InstanceStatus::Cancelled,
            fx,
        );
    }

    fn child_done(&self, st: &mut ExecState, msg: &InboxMessage, fx: &mut Effects) -> bool {
        let Some(child) = msg.correlation.as_deref() else {
            return true;
        };
        let fid = st
            .fibers
            .iter()
            .find(|(_, f)| matches!(&f.run, Run::Calling { child: c } if c == child))
            .map(|(id, _)| *id);
        let Some(fid) = fid else {
            // A child we no longer wait for (cancelled): nothing to do.
            return true;
        };
        let status = msg
            .payload
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("failed");
        let step = st.fibers[&fid].step.clone();
        if status == "failed" || status == "cancelled" {
            let reason = msg
                .payload
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            self.cx
                .hist(fx, "child_failed", Some(&step), None, msg.payload.clone());
            self.fail_fiber(
                st,
                fid,
                format!("child workflow {child} ended {status}: {reason}"),
                fx,
            );
        } else {
            let mut out = msg.payload.get("output").cloned().unwrap_or(json!({}));
            if let Value::Object(m) = &mut out {
                m.insert("status".to_owned(), json!(status));
                m.insert(
                    "reason".to_owned(),
                    msg.payload.get("reason").cloned().unwrap_or(json!("")),
                );
            }
            self.cx.hist(
                fx,
                "child_completed",
                Some(&step),
                None,
                msg.payload.clone(),
            );
            self.complete_step(st, fid, out, fx);
        }
        true
    }

    fn deliver(&self, st: &mut ExecState, msg: &InboxMessage, fx: &mut Effects) -> bool {
        let is_event = msg.kind == MessageKind::Event;
        let waiting = st.fibers.iter().find_map(|(id, f)| match &f.run {
            Run::Waiting(w)
                if w.event == is_event
                    && (if is_event {
                        name_matches(&w.name, &msg.name)
                    } else {
                        w.name == msg.name
                    })
                    && (!is_event || w.correlation == msg.correlation) =>
            {
                Some(*id)
            }
            _ => None,
        });
        if let Some(fid) = waiting {
            let step = st.fibers[&fid].step.clone();
            let kind = if is_event {
                "event_received"
            } else {
                "signal_received"
            };
            self.cx.hist(
                fx,
                kind,
                Some(&step),
                None,
                json!({"name": msg.name, "dedupe_id": msg.dedupe_id, "payload": msg.payload}),
            );
            let out = match &msg.payload {
                Value::Object(_) => msg.payload.clone(),
                other => json!({ "value": other }),
            };
            let out = self.with_declared_payload(&step, out);
            self.complete_step(st, fid, out, fx);
            return true;
        }
        if is_event {
            let pending = st.fibers.iter().find_map(|(id, f)| match &f.run {
                Run::Pending(p)
                    if p.events.iter().any(|e| e == &msg.name)
                        && msg.correlation.as_deref() == Some(p.correlation.as_str()) =>
                {
                    Some(*id)
                }
                _ => None,
            });
            if let Some(fid) = pending {
                let step = st.fibers[&fid].step.clone();
                self.cx.hist(
                    fx,
                    "completion_received",
                    Some(&step),
                    None,
                    json!({"name": msg.name, "dedupe_id": msg.dedupe_id, "payload": msg.payload}),
                );
                let Run::Pending(p) = st.fibers[&fid].run.clone() else {
                    return true;
                };
                if msg.name.ends_with(".succeeded") {
                    let mut out = p.output.clone();
                    if let Value::Object(m) = &mut out {
                        m.insert("status".to_owned(), json!("succeeded"));
                    }
                    self.complete_step(st, fid, out, fx);
                } else {
                    self.fail_fiber(st, fid, format!("{} ended: {}", p.action, msg.name), fx);
                }
                return true;
            }
        }
        false
    }

    /// Makes sure every declared payload field is present (absent optional ones as null),
    /// so expressions reading them do not fail.
    fn with_declared_payload(&self, step: &str, mut out: Value) -> Value {
        if let Some(Step {
            kind: StepKind::Wait(w),
            ..
        }) = self.idx.step(step)
            && let Value::Object(m) = &mut out
        {
            for f in &w.payload {
                m.entry(f.name.value.clone()).or_insert(Value::Null);
            }
        }
        out
    }

    // ---- fibers ----

    fn step_fibers(&self, st: &mut ExecState, fx: &mut Effects) -> bool {
        if st.end.is_some() || st.compensation.is_some() {
            return false;
        }
        let now = self.cx.now;
        let ids: Vec<u32> = st.fibers.keys().copied().collect();
        let mut progressed = false;
        for fid in ids {
            let Some(f) = st.fibers.get(&fid) else {
                continue;
            };
            if st.end.is_some() || st.compensation.is_some() {
                break;
            }
            match f.run.clone() {
                Run::Ready => {
                    self.start_step(st, fid, fx);
                    progressed = true;
                }
                Run::Waiting(w) if w.timeout_at.is_some_and(|t| t <= now) => {
                    let step = f.step.clone();
                    self.cx.hist(
                        fx,
                        "wait_timed_out",
                        Some(&step),
                        None,
                        json!({"name": w.name}),
                    );
                    let target = match self.idx.step(&step).map(|s| &s.kind) {
                        Some(StepKind::Wait(wd)) => wd.on_timeout.as_ref().map(|t| t.value.clone()),
                        _ => None,
                    };
                    match target {
                        Some(t) => self.goto(st, fid, &t),
                        None => self.fail_fiber(st, fid, format!("wait `{step}` timed out"), fx),
                    }
                    progressed = true;
                }
                Run::Sleeping { until } if until <= now => {
                    let step = f.step.clone();
                    self.cx
                        .hist(fx, "timer_fired", Some(&step), None, json!({}));
                    self.complete_step(st, fid, json!({}), fx);
                    progressed = true;
                }
                Run::Task(a) if a.deadline_at.is_some_and(|d| d <= now) && a.due_at > now => {
                    let step = f.step.clone();
                    self.cx.hist(
                        fx,
                        "deadline_passed",
                        Some(&step),
                        Some(a.attempt),
                        json!({}),
                    );
                    self.fail_fiber(st, fid, format!("step `{step}` passed its deadline"), fx);
                    progressed = true;
                }
                Run::Pending(p) if p.deadline_at.is_some_and(|d| d <= now) => {
                    let step = f.step.clone();
                    self.cx.hist(
                        fx,
                        "deadline_passed",
                        Some(&step),
                        None,
                        json!({"pending": true}),
                    );
                    self.fail_fiber(
                        st,
                        fid,
                        format!("step `{step}` passed its deadline while pending"),
                        fx,
                    );
                    progressed = true;
                }
                _ => {}
            }
        }
        progressed
    }

    fn goto(&self, st: &mut ExecState, fid: u32, target: &str) {
        if let Some(f) = st.fibers.get_mut(&fid) {
            f.step = target.to_owned();
            f.run = Run::Ready;
        }
    }

    fn start_step(&self, st: &mut ExecState, fid: u32, fx: &mut Effects) {
        let step_id = st.fibers[&fid].step.clone();
        let Some(step) = self.idx.step(&step_id) else {
            self.fail_fiber(
                st,
                fid,
                format!("step `{step_id}` is not in the definition"),
                fx,
            );
            return;
        };
        let visit = st.visits.get(&step_id).copied().unwrap_or(0) + 1;
        st.visits.insert(step_id.clone(), visit);
        if let Some(phase) = &step.phase {
            st.phase = Some(phase.value.clone());
        }
        if let Some(f) = st.fibers.get_mut(&fid) {
            f.visit = visit;
        }
        if let Some(max) = &step.max_visits
            && visit > max.value
        {
            self.fail_fiber(
                st,
                fid,
                format!("step `{step_id}` ran more than max_visits = {}", max.value),
                fx,
            );
            return;
        }
        let now = self.cx.now;
        let scope = self.cx.scope(st, None);
        match &step.kind {
            StepKind::Task(t) => {
                let input = match eval_args(&t.input, &scope) {
                    Ok(v) => v,
                    Err(e) => {
                        self.fail_fiber(st, fid, format!("input of step `{step_id}`: {e}"), fx);
                        return;
                    }
                };
                let timeout = t.timeout.as_ref().or(self.cx.def.defaults.timeout.as_ref());
                let deadline = t.deadline.as_ref().map(|d| self.cx.duration_ms(d));
                let timeout_ms = match timeout.map(|d| self.cx.duration_ms(d)) {
                    None => DEFAULT_TIMEOUT_MS,
                    Some(Ok(ms)) => ms,
                    Some(Err(e)) => {
                        self.fail_fiber(st, fid, e, fx);
                        return;
                    }
                };
                let deadline_at = match deadline {
                    None => None,
                    Some(Ok(ms)) => Some(now + ms),
                    Some(Err(e)) => {
                        self.fail_fiber(st, fid, e, fx);
                        return;
                    }
                };
                let key = keys::idempotency_key(
                    self.cx.instance_id,
                    &step_id,
                    keys::Direction::Forward,
                    visit,
                );
                self.cx.hist(
                    fx,
                    "step_scheduled",
                    Some(&step_id),
                    Some(1),
                    json!({"action": t.action.value, "input": input, "key": key, "visit": visit}),
                );
                set_run(
                    st,
                    fid,
                    Run::Task(Attempt {
                        action: t.action.value.clone(),
                        key,
                        input,
                        attempt: 1,
                        due_at: now,
                        first_at: now,
                        deadline_at,
                        timeout_ms,
                        maybe_applied: false,
                        in_flight: false,
                    }),
                );
            }
            StepKind::Wait(w) => {
                let timeout_at = match w.timeout.as_ref().map(|d| self.cx.duration_ms(d)) {
                    None => None,
                    Some(Ok(ms)) => Some(now + ms),
                    Some(Err(e)) => {
                        self.fail_fiber(st, fid, e, fx);
                        return;
                    }
                };
                let correlation = match &w.correlate {
                    None => None,
                    Some(t) => match t.eval(&scope) {
                        Ok(Value::String(s)) => Some(s),
                        Ok(other) => Some(other.to_string()),
                        Err(e) => {
                            self.fail_fiber(
                                st,
                                fid,
                                format!("correlation of `{step_id}`: {e}"),
                                fx,
                            );
                            return;
                        }
                    },
                };
                let event = w.kind == WaitKind::Event;
                self.cx.hist(
                    fx,
                    "wait_started",
                    Some(&step_id),
                    None,
                    json!({"kind": if event { "event" } else { "signal" }, "name": w.name.value, "correlation": correlation, "timeout_at": timeout_at.map(rfc3339)}),
                );
                set_run(
                    st,
                    fid,
                    Run::Waiting(WaitRun {
                        event,
                        name: w.name.value.clone(),
                        correlation,
                        timeout_at,
                    }),
                );
            }
            StepKind::Sleep(s) => {
                let until = match s {
                    Sleep::For(d) => self.cx.duration_ms(d).map(|ms| now + ms),
                    Sleep::Until(t) => t
                        .eval(&scope)
                        .map_err(|e| e.to_string())
                        .and_then(|v| parse_instant(&v)),
                };
                match until {
                    Ok(until) => {
                        self.cx.hist(
                            fx,
                            "timer_started",
                            Some(&step_id),
                            None,
                            json!({"until": rfc3339(until)}),
                        );
                        set_run(st, fid, Run::Sleeping { until });
                    }
                    Err(e) => self.fail_fiber(st, fid, format!("sleep of `{step_id}`: {e}"), fx),
                }
            }
            StepKind::Choice => self.complete_step(st, fid, Value::Null, fx),
            StepKind::Parallel(p) => {
                let mut children = Vec::new();
                for (i, b) in p.branches.iter().enumerate() {
                    let Some(first) = b.steps.first() else {
                        continue;
                    };
                    let cid = st.next_fiber;
                    st.next_fiber += 1;
                    st.fibers.insert(
                        cid,
                        Fiber {
                            step: first.id.value.clone(),
                            visit: 0,
                            branch: Some(BranchOf {
                                parent: fid,
                                index: i,
                            }),
                            run: Run::Ready,
                        },
                    );
                    children.push(cid);
                }
                let n = children.len();
                self.cx.hist(
                    fx,
                    "parallel_started",
                    Some(&step_id),
                    None,
                    json!({"join": p.join.as_str(), "branches": p.branches.iter().map(|b| b.id.value.clone()).collect::<Vec<_>>()}),
                );
                set_run(
                    st,
                    fid,
                    Run::Joining {
                        children,
                        done: vec![None; n],
                    },
                );
            }
            StepKind::Call(c) => {
                let input = match eval_args(&c.input, &scope) {
                    Ok(v) => v,
                    Err(e) => {
                        self.fail_fiber(st, fid, format!("input of step `{step_id}`: {e}"), fx);
                        return;
                    }
                };
                let child = keys::child_id(self.cx.instance_id, &step_id, visit);
                self.cx.hist(
                    fx,
                    "child_started",
                    Some(&step_id),
                    None,
                    json!({"child": child, "workflow": c.workflow.value, "version": c.version.as_ref().map(|v| v.value)}),
                );
                fx.children.push(ChildReq {
                    id: child.clone(),
                    workflow: c.workflow.value.clone(),
                    version: c.version.as_ref().map(|v| v.value),
                    input,
                });
                set_run(st, fid, Run::Calling { child });
            }
            StepKind::End(e) => {
                let reason = match &e.reason {
                    None => String::new(),
                    Some(t) => match t.eval(&scope) {
                        Ok(Value::String(s)) => s,
                        Ok(other) => other.to_string(),
                        Err(err) => format!("(reason could not be rendered: {err})"),
                    },
                };
                let output =
                    eval_args(&e.output, &scope).unwrap_or_else(|err| json!({"error": err}));
                let status = match e.status.value {
                    EndStatus::Completed => InstanceStatus::Completed,
                    EndStatus::Rejected => InstanceStatus::Rejected,
                    EndStatus::Closed => InstanceStatus::Closed,
                    EndStatus::Failed => InstanceStatus::Failed,
                };
                // A workflow that ends itself `failed` says a person must look (the
                // format's meaning of `failed`), so it is flagged like an engine failure.
                if status == InstanceStatus::Failed {
                    st.needs_attention = true;
                }
                self.finish(st, status, reason, output, Some(&step_id), fx);
            }
        }
    }

    /// A step finished with an output: record it and move the fiber on.
    fn complete_step(&self, st: &mut ExecState, fid: u32, output: Value, fx: &mut Effects) {
        let Some(f) = st.fibers.get(&fid) else { return };
        let step_id = f.step.clone();
        let visit = f.visit;
        let Some(step) = self.idx.step(&step_id) else {
            return;
        };
        if !output.is_null() {
            st.outputs.insert(step_id.clone(), output.clone());
        }
        if let StepKind::Task(t) = &step.kind {
            if t.compensate.is_some() {
                st.undo.push(UndoEntry {
                    step: step_id.clone(),
                    visit,
                    output: output.clone(),
                });
            }
            if t.pivot.as_ref().is_some_and(|p| p.value) {
                st.pivot_passed = true;
                self.cx
                    .hist(fx, "pivot_passed", Some(&step_id), None, json!({}));
            }
        }
        let target = match &step.next {
            Next::To(t) => Some(t.value.clone()),
            Next::Cases(cases) => {
                // Only conditions read the scope: built here, not for every step.
                let scope = self.cx.scope(st, None);
                let mut chosen = None;
                for c in cases {
                    match &c.when {
                        None => {
                            chosen = Some(c.goto.value.clone());
                            break;
                        }
                        Some(cond) => match cond.eval_bool(&scope) {
                            Ok(true) => {
                                chosen = Some(c.goto.value.clone());
                                break;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                self.fail_fiber(
                                    st,
                                    fid,
                                    format!("condition of `{step_id}`: {e}"),
                                    fx,
                                );
                                return;
                            }
                        },
                    }
                }
                chosen
            }
            Next::Implicit => self.idx.following(&step_id).map(str::to_owned),
        };
        match target {
            Some(t) => {
                if matches!(&step.next, Next::Cases(_)) {
                    self.cx
                        .hist(fx, "branch_taken", Some(&step_id), None, json!({"to": t}));
                }
                self.goto(st, fid, &t);
            }
            None => match st.fibers.get(&fid).and_then(|f| f.branch.clone()) {
                Some(b) => self.branch_done(st, fid, b, true, fx),
                None => {
                    let reason = format!("step `{step_id}` has nowhere to go");
                    self.finish(st, InstanceStatus::Failed, reason, Value::Null, None, fx);
                }
            },
        }
    }

    /// A step failed for good.
    fn fail_fiber(&self, st: &mut ExecState, fid: u32, reason: String, fx: &mut Effects) {
        let Some(f) = st.fibers.get(&fid) else { return };
        let step_id = f.step.clone();
        self.cx.hist(
            fx,
            "step_failed",
            Some(&step_id),
            None,
            json!({"reason": reason}),
        );
        let on_failure = match self.idx.step(&step_id).map(|s| &s.kind) {
            Some(StepKind::Task(t)) => t.on_failure.as_ref(),
            Some(StepKind::Call(c)) => c.on_failure.as_ref(),
            Some(StepKind::Parallel(p)) => p.on_failure.as_ref(),
            _ => None,
        };
        if let Some(target) = on_failure {
            let t = target.value.clone();
            st.outputs.insert(step_id, json!({"error": reason}));
            self.goto(st, fid, &t);
            return;
        }
        if let Some(b) = st.fibers.get(&fid).and_then(|f| f.branch.clone()) {
            self.branch_done(st, fid, b, false, fx);
            return;
        }
        if st.pivot_passed {
            st.needs_attention = true;
            let reason = format!("{reason} (after the point of no return; needs a person)");
            self.finish(st, InstanceStatus::Failed, reason, Value::Null, None, fx);
        } else {
            self.begin_compensation(st, reason, InstanceStatus::Failed, fx);
        }
    }

    fn branch_done(&self, st: &mut ExecState, fid: u32, b: BranchOf, ok: bool, fx: &mut Effects) {
        st.fibers.remove(&fid);
        let Some(parent) = st.fibers.get_mut(&b.parent) else {
            return;
        };
        let Run::Joining { children, done } = &mut parent.run else {
            return;
        };
        if let Some(slot) = done.get_mut(b.index) {
            *slot = Some(ok);
        }
        let step_id = parent.step.clone();
        let children = children.clone();
        let done = done.clone();
        let join = match self.idx.step(&step_id).map(|s| &s.kind) {
            Some(StepKind::Parallel(p)) => p.join,
            _ => Join::All,
        };
        let branch_name = match self.idx.step(&step_id).map(|s| &s.kind) {
            Some(StepKind::Parallel(p)) => p
                .branches
                .get(b.index)
                .map(|br| br.id.value.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        self.cx.hist(
            fx,
            "branch_finished",
            Some(&step_id),
            None,
            json!({"branch": branch_name, "ok": ok}),
        );
        let all_done = done.iter().all(Option::is_some);
        let any_failed = done.contains(&Some(false));
        let any_ok = done.contains(&Some(true));
        let outcome = match join {
            Join::All if all_done => Some(!any_failed),
            Join::All => None,
            Join::FirstFailure if any_failed => Some(false),
            Join::FirstFailure if all_done => Some(true),
            Join::FirstFailure => None,
            Join::Any if any_ok => Some(true),
            Join::Any if all_done => Some(false),
            Join::Any => None,
        };
        let Some(success) = outcome else { return };
        // Cancel branches still running.
        for c in children {
            self.cancel_fiber(st, c, fx);
        }
        self.cx.hist(
            fx,
            "joined",
            Some(&step_id),
            None,
            json!({"join": join.as_str(), "ok": success}),
        );
        if success {
            self.complete_step(st, b.parent, Value::Null, fx);
        } else {
            self.fail_fiber(
                st,
                b.parent,
                format!("parallel step `{step_id}` failed ({} join)", join.as_str()),
                fx,
            );
        }
    }

    /// Drops a fiber that no longer matters. An attempt whose outcome is unknown may have
    /// taken effect, so a compensable one is remembered for undoing.
    fn cancel_fiber(&self, st: &mut ExecState, fid: u32, fx: &mut Effects) {
        let Some(f) = st.fibers.remove(&fid) else {
            return;
        };
        match &f.run {
            // An attempt handed to dispatch may have been made by a worker that crashed
            // before recording its result; one with an unknown outcome may have taken effect.
            Run::Task(a) if a.maybe_applied || a.in_flight => {
                if let Some(Step {
                    kind: StepKind::Task(t),
                    ..
                }) = self.idx.step(&f.step)
                    && t.compensate.is_some()
                {
                    st.undo.push(UndoEntry {
                        step: f.step.clone(),
                        visit: f.visit,
                        output: json!({}),
                    });
                }
            }
            // The platform accepted it: it will happen, so it must be undone.
            Run::Pending(p) => {
                if let Some(Step {
                    kind: StepKind::Task(t),
                    ..
                }) = self.idx.step(&f.step)
                    && t.compensate.is_some()
                {
                    st.undo.push(UndoEntry {
                        step: f.step.clone(),
                        visit: f.visit,
                        output: p.output.clone(),
                    });
                }
            }
            Run::Calling { child } => fx.cancel_children.push(child.clone()),
            Run::Joining { children, .. } => {
                for c in children.clone() {
                    self.cancel_fiber(st, c, fx);
                }
            }
            _ => {}
        }
        self.cx
            .hist(fx, "step_cancelled", Some(&f.step), None, json!({}));
    }

    fn finish(
        &self,
        st: &mut ExecState,
        status: InstanceStatus,
        reason: String,
        output: Value,
        step: Option<&str>,
        fx: &mut Effects,
    ) {
        let ids: Vec<u32> = st.fibers.keys().copied().collect();
        for fid in ids {
            if let Some(f) = st.fibers.remove(&fid)
                && let Run::Calling { child } = f.run
            {
                fx.cancel_children.push(child);
            }
        }
        self.cx.hist(
            fx,
            &format!("instance_{}", status.as_str()),
            step,
            None,
            json!({"reason": reason, "output": output}),
        );
        st.end = Some(EndRecord {
            status,
            reason,
            output,
        });
        st.compensation = None;
    }

    // ---- tasks ----

    fn task_result(&self, st: &mut ExecState, fid: u32, result: CallResult, fx: &mut Effects) {
        let Some(f) = st.fibers.get(&fid) else { return };
        let Run::Task(a) = f.run.clone() else { return };
        let step_id = f.step.clone();
        match result {
            CallResult::Done(out) => {
                self.cx.hist(
                    fx,
                    "step_completed",
                    Some(&step_id),
                    Some(a.attempt),
                    json!({"output": out}),
                );
                self.complete_step(st, fid, out, fx);
            }
            CallResult::Pending {
                correlation,
                output,
                poll,
                events,
            } => {
                self.cx.hist(
                    fx,
                    "step_pending",
                    Some(&step_id),
                    Some(a.attempt),
                    json!({"correlation": correlation, "output": output, "events": events}),
                );
                if let Some(f) = st.fibers.get_mut(&fid) {
                    f.run = Run::Pending(PendingRun {
                        action: a.action.clone(),
                        key: a.key.clone(),
                        correlation,
                        events,
                        output,
                        poll,
                        poll_at: self.cx.now + POLL_FIRST_MS,
                        polls: 0,
                        deadline_at: a.deadline_at,
                    });
                }
            }
            CallResult::Failed { class, message } => {
                let policy = match self.idx.step(&step_id).map(|s| &s.kind) {
                    Some(StepKind::Task(t)) => t
                        .retry
                        .as_ref()
                        .or(self.cx.def.defaults.retry.as_ref())
                        .cloned(),
                    _ => None,
                };
                match self.next_attempt(&a, policy.as_ref(), class) {
                    Ok(next) => {
                        self.cx.hist(
                            fx,
                            "retry_scheduled",
                            Some(&step_id),
                            Some(a.attempt),
                            json!({"error": message, "class": class_name(class), "next_attempt": next.attempt, "at": rfc3339(next.due_at)}),
                        );
                        if let Some(f) = st.fibers.get_mut(&fid) {
                            f.run = Run::Task(next);
                        }
                    }
                    Err(why) => {
                        self.cx.hist(
                            fx,
                            "attempt_failed",
                            Some(&step_id),
                            Some(a.attempt),
                            json!({"error": message, "class": class_name(class), "final": why}),
                        );
                        // The attempt has answered, so it is no longer in flight. A
                        // definitive refusal to a retry with the same idempotency key also
                        // settles what earlier attempts with unknown outcomes did: had one
                        // taken effect, the platform would have answered with its result.
                        // Only an attempt that may have taken effect is compensated.
                        if let Some(f) = st.fibers.get_mut(&fid) {
                            f.run = Run::Task(Attempt {
                                in_flight: false,
                                maybe_applied: match class {
                                    FailureClass::Permanent => false,
                                    FailureClass::UnknownOutcome | FailureClass::Timeout => true,
                                    FailureClass::Transient { .. } => a.maybe_applied,
                                },
                                ..a.clone()
                            });
                        }
                        self.fail_fiber(st, fid, format!("{message} ({why})"), fx);
                    }
                }
            }
        }
    }

    /// The next attempt, or why there is none.
    fn next_attempt(
        &self,
        a: &Attempt,
        policy: Option<&RetryPolicy>,
        class: FailureClass,
    ) -> Result<Attempt, String> {
        let on = match class {
            FailureClass::Permanent => return Err("permanent error".to_owned()),
            FailureClass::Transient { .. } => RetryOn::Transient,
            FailureClass::UnknownOutcome => RetryOn::UnknownOutcome,
            FailureClass::Timeout => RetryOn::Timeout,
        };
        let Some(policy) = policy else {
            return Err("no retry policy".to_owned());
        };
        if !policy.retries(on) {
            return Err(format!("{} errors are not retried", on.as_str()));
        }
        if a.attempt >= policy.max_attempts {
            return Err(format!("gave up after {} attempts", a.attempt));
        }
        let random = keys::unit_random(&a.key, a.attempt);
        let mut delay = policy.delay(a.attempt, random).as_millis() as i64;
        if let FailureClass::Transient {
            retry_after_ms: Some(ms),
        } = class
        {
            delay = delay.max(ms);
        }
        let due_at = self.cx.now + delay;
        if let Some(d) = a.deadline_at
            && due_at > d
        {
            return Err("the next attempt would pass the step deadline".to_owned());
        }
        Ok(Attempt {
            attempt: a.attempt + 1,
            in_flight: false,
            due_at,
            maybe_applied: a.maybe_applied
                || matches!(class, FailureClass::UnknownOutcome | FailureClass::Timeout),
            ..a.clone()
        })
    }

    fn poll_result(&self, st: &mut ExecState, fid: u32, result: CallResult, fx: &mut Effects) {
        let Some(f) = st.fibers.get(&fid) else { return };
        let Run::Pending(mut p) = f.run.clone() else {
            return;
        };
        let step_id = f.step.clone();
        p.polls += 1;
        let status = match &result {
            CallResult::Done(out) => out.get("status").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        self.cx.hist(
            fx,
            "polled",
            Some(&step_id),
            None,
            json!({"poll": p.polls, "status": status, "error": match &result { CallResult::Failed { message, .. } => Some(message.clone()), _ => None }}),
        );
        match status.as_deref() {
            Some("succeeded") => {
                let mut out = p.output.clone();
                if let Value::Object(m) = &mut out {
                    m.insert("status".to_owned(), json!("succeeded"));
                }
                self.complete_step(st, fid, out, fx);
            }
            Some("failed" | "canceled" | "cancelled") => {
                self.fail_fiber(
                    st,
                    fid,
                    format!("{} ended {}", p.action, status.unwrap_or_default()),
                    fx,
                );
            }
            _ => {
                let interval = (POLL_FIRST_MS << p.polls.min(8)).min(POLL_MAX_MS);
                p.poll_at = self.cx.now + interval;
                if let Some(f) = st.fibers.get_mut(&fid) {
                    f.run = Run::Pending(p);
                }
            }
        }
    }

    // ---- compensation ----

    fn begin_compensation(
        &self,
        st: &mut ExecState,
        reason: String,
        final_status: InstanceStatus,
        fx: &mut Effects,
    ) {
        let ids: Vec<u32> = st.fibers.keys().copied().collect();
        for fid in ids {
            self.cancel_fiber(st, fid, fx);
        }
        let steps: Vec<String> = st.undo.iter().rev().map(|u| u.step.clone()).collect();
        self.cx.hist(
            fx,
            "compensation_started",
            None,
            None,
            json!({"reason": reason, "undo": steps}),
        );
        st.compensation = Some(Compensating {
            reason,
            final_status,
            current: None,
        });
    }

    fn step_compensation(&self, st: &mut ExecState, fx: &mut Effects) -> bool {
        let Some(c) = &st.compensation else {
            return false;
        };
        if c.current.is_some() {
            return false;
        }
        let Some(entry) = st.undo.pop() else {
            let (status, reason) = (c.final_status, c.reason.clone());
            self.finish(st, status, reason, Value::Null, None, fx);
            return true;
        };
        let Some(Step {
            kind: StepKind::Task(t),
            ..
        }) = self.idx.step(&entry.step)
        else {
            return true;
        };
        let Some(comp) = &t.compensate else {
            return true;
        };
        let scope = self.cx.scope(st, Some((&entry.step, &entry.output)));
        let input = match eval_args(&comp.input, &scope) {
            Ok(v) => v,
            Err(e) => {
                self.compensation_failed(st, &entry.step, format!("input: {e}"), fx);
                return true;
            }
        };
        let timeout_ms = comp
            .timeout
            .as_ref()
            .or(self.cx.def.defaults.timeout.as_ref())
            .and_then(|d| self.cx.duration_ms(d).ok())
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        let key = keys::idempotency_key(
            self.cx.instance_id,
            &entry.step,
            keys::Direction::Compensation,
            entry.visit,
        );
        self.cx.hist(
            fx,
            "compensation_scheduled",
            Some(&entry.step),
            Some(1),
            json!({"action": comp.action.value, "input": input, "key": key}),
        );
        let attempt = Attempt {
            action: comp.action.value.clone(),
            key,
            input,
            attempt: 1,
            due_at: self.cx.now,
            first_at: self.cx.now,
            deadline_at: None,
            timeout_ms,
            maybe_applied: false,
            in_flight: false,
        };
        if let Some(c) = st.compensation.as_mut() {
            c.current = Some((entry, attempt));
        }
        true
    }

    fn compensation_result(&self, st: &mut ExecState, result: CallResult, fx: &mut Effects) {
        let Some((entry, a)) = st.compensation.as_ref().and_then(|c| c.current.clone()) else {
            return;
        };
        match result {
            CallResult::Done(out) | CallResult::Pending { output: out, .. } => {
                self.cx.hist(
                    fx,
                    "compensation_completed",
                    Some(&entry.step),
                    Some(a.attempt),
                    json!({"output": out}),
                );
                if let Some(c) = st.compensation.as_mut() {
                    c.current = None;
                }
            }
            CallResult::Failed { class, message } => {
                let policy = match self.idx.step(&entry.step).map(|s| &s.kind) {
                    Some(StepKind::Task(t)) => t.compensate.as_ref().and_then(|c| c.retry.clone()),
                    _ => None,
                }
                .unwrap_or_else(default_compensation_retry);
                match self.next_attempt(&a, Some(&policy), class) {
                    Ok(next) => {
                        self.cx.hist(
                            fx,
                            "compensation_retry_scheduled",
                            Some(&entry.step),
                            Some(a.attempt),
                            json!({"error": message, "class": class_name(class), "at": rfc3339(next.due_at)}),
                        );
                        if let Some(c) = st.compensation.as_mut() {
                            c.current = Some((entry, next));
                        }
                    }
                    Err(why) => {
                        self.compensation_failed(st, &entry.step, format!("{message} ({why})"), fx)
                    }
                }
            }
        }
    }

    fn compensation_failed(&self, st: &mut ExecState, step: &str, why: String, fx: &mut Effects) {
        self.cx.hist(
            fx,
            "compensation_failed",
            Some(step),
            None,
            json!({"error": why}),
        );
        st.needs_attention = true;
        let reason = match &st.compensation {
            Some(c) => format!(
                "{}; compensation of `{step}` could not succeed: {why}; needs a person",
                c.reason
            ),
            None => format!("compensation of `{step}` could not succeed: {why}"),
        };
        self.finish(st, InstanceStatus::Failed, reason, Value::Null, None, fx);
    }

    // ---- dispatch collection ----

    fn collect_dispatches(&self, st: &ExecState, fx: &mut Effects) {
        if st.end.is_some() {
            return;
        }
        let now = self.cx.now;
        if let Some(c) = &st.compensation {
            if let Some((_, a)) = &c.current
                && a.due_at <= now
            {
                fx.dispatches.push(DispatchReq {
                    target: Target::Compensation,
                    action: a.action.clone(),
                    input: a.input.clone(),
                    key: a.key.clone(),
                    timeout_ms: a.timeout_ms,
                });
            }
            return;
        }
        for (fid, f) in &st.fibers {
            match &f.run {
                Run::Task(a) if a.due_at <= now => fx.dispatches.push(DispatchReq {
                    target: Target::Task(*fid),
                    action: a.action.clone(),
                    input: a.input.clone(),
                    key: a.key.clone(),
                    timeout_ms: a.timeout_ms,
                }),
                Run::Pending(p) if p.poll_at <= now => {
                    if let Some((action, input)) = &p.poll {
                        fx.dispatches.push(DispatchReq {
                            target: Target::Poll(*fid),
                            action: action.clone(),
                            input: input.clone(),
                            key: p.key.clone(),
                            timeout_ms: DEFAULT_TIMEOUT_MS,
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

fn set_run(st: &mut ExecState, fid: u32, run: Run) {
    if let Some(f) = st.fibers.get_mut(&fid) {
        f.run = run;
    }
}

fn class_name(c: FailureClass) -> &'static str {
    match c {
        FailureClass::Transient { .. } => "transient",
        FailureClass::UnknownOutcome => "unknown_outcome",
        FailureClass::Timeout => "timeout",
        FailureClass::Permanent => "permanent",
    }
}

fn parse_instant(v: &Value) -> Result<i64, String> {
    match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("`{s}` is not an RFC 3339 instant: {e}")),
        Value::Number(n) => n.as_i64().ok_or_else(|| "not an instant".to_owned()),
        other => Err(format!("{other} is not an instant")),
    }
}
