//! The workflow definition model: what a parsed and validated workflow file says.
//!
//! Produced by [`crate::parse`]; positions (`Sp`) are kept on everything a later check
//! refers to, so the validator can point at the right line and column.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use crate::expr::{Expr, Template};

/// A value with the byte range it was written at in its source file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Byte range in the source text.
    pub span: Range<usize>,
}

impl<T> Sp<T> {
    /// Wraps a value with its position.
    pub fn new(value: T, span: Range<usize>) -> Sp<T> {
        Sp { value, span }
    }
}

impl<T: fmt::Display> fmt::Display for Sp<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// The declared type of an input, a parameter, a payload field or an action field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueType {
    /// Text.
    String,
    /// 64-bit signed integer.
    Int,
    /// Boolean.
    Bool,
    /// `{ minor = 1234, currency = "CNY" }`.
    Money,
    /// RFC 3339 instant.
    Timestamp,
    /// `"48h"`, `"7d"`.
    Duration,
    /// A list, optionally of one item type.
    List(Option<Box<ValueType>>),
    /// A key/value object.
    Object,
    /// Anything; not checked statically.
    Any,
}

impl ValueType {
    /// Parses a type name as written in a workflow file.
    pub fn parse(name: &str) -> Option<ValueType> {
        Some(match name {
            "string" => ValueType::String,
            "int" => ValueType::Int,
            "bool" => ValueType::Bool,
            "money" => ValueType::Money,
            "timestamp" => ValueType::Timestamp,
            "duration" => ValueType::Duration,
            "list" => ValueType::List(None),
            "object" => ValueType::Object,
            "any" => ValueType::Any,
            _ => return None,
        })
    }

    /// The names [`ValueType::parse`] accepts.
    pub const NAMES: [&'static str; 9] = [
        "string",
        "int",
        "bool",
        "money",
        "timestamp",
        "duration",
        "list",
        "object",
        "any",
    ];

    /// Whether a value of type `other` may be used where `self` is expected.
    pub fn accepts(&self, other: &ValueType) -> bool {
        match (self, other) {
            (ValueType::Any, _) | (_, ValueType::Any) => true,
            (ValueType::List(a), ValueType::List(b)) => match (a, b) {
                (Some(a), Some(b)) => a.accepts(b),
                _ => true,
            },
            // Timestamps and durations travel as strings.
            (ValueType::Timestamp | ValueType::Duration, ValueType::String) => true,
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::String => f.write_str("string"),
            ValueType::Int => f.write_str("int"),
            ValueType::Bool => f.write_str("bool"),
            ValueType::Money => f.write_str("money"),
            ValueType::Timestamp => f.write_str("timestamp"),
            ValueType::Duration => f.write_str("duration"),
            ValueType::List(None) => f.write_str("list"),
            ValueType::List(Some(t)) => write!(f, "list of {t}"),
            ValueType::Object => f.write_str("object"),
            ValueType::Any => f.write_str("any"),
        }
    }
}

/// A declared field: a workflow input, a business-line parameter or a signal payload field.
#[derive(Debug, Clone)]
pub struct FieldDecl {
    /// The field name.
    pub name: Sp<String>,
    /// Its type.
    pub ty: ValueType,
    /// Must the caller give it? (Parameters with a default are never required.)
    pub required: bool,
    /// The default value, as JSON.
    pub default: Option<serde_json::Value>,
    /// What it means, for people.
    pub description: Option<String>,
}

/// A parsed workflow definition.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// `physical.return_refund`.
    pub name: Sp<String>,
    /// Version, ≥ 1. Instances are pinned to the version they started on.
    pub version: Sp<u32>,
    /// What it does, for people.
    pub description: Option<String>,
    /// The first step; defaults to the first `[[step]]`.
    pub start: Option<Sp<String>>,
    /// The typed inputs the workflow needs from the request.
    pub inputs: Vec<FieldDecl>,
    /// The business-line parameters it reads, with defaults.
    pub params: Vec<FieldDecl>,
    /// Retry and timeout applied to task steps that give none.
    pub defaults: Defaults,
    /// Top-level steps in file order (parallel branches hold their own).
    pub steps: Vec<Step>,
    /// Byte range of the `[workflow]` table.
    pub span: Range<usize>,
}

/// Workflow-wide defaults for task steps.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Retry policy for steps without their own.
    pub retry: Option<RetryPolicy>,
    /// Per-attempt timeout for steps without their own.
    pub timeout: Option<DurationSpec>,
}

/// One step of a workflow.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique within the workflow (branches included).
    pub id: Sp<String>,
    /// What the step does.
    pub kind: StepKind,
    /// Where to go when it completes.
    pub next: Next,
    /// How many times the step may run in one instance (a loop guard).
    pub max_visits: Option<Sp<u32>>,
    /// The phase the instance enters with this step (`under_review`, `refunding`): a label
    /// for people and for the layer above the engine, which maps it to its own states. An
    /// instance keeps the phase of the last step it entered that declared one.
    pub phase: Option<Sp<String>>,
    /// What it is for, for people.
    pub description: Option<String>,
    /// Byte range of the step's table.
    pub span: Range<usize>,
}

/// The kinds of step.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StepKind {
    /// Call an adapter action.
    Task(Box<Task>),
    /// Wait for a signal or an external event.
    Wait(Wait),
    /// A durable timer.
    Sleep(Sleep),
    /// Branch on a condition, doing nothing else.
    Choice,
    /// Run branches side by side and join them.
    Parallel(Parallel),
    /// Run another workflow as a child and wait for it.
    Call(Call),
    /// Finish the instance.
    End(End),
}

impl StepKind {
    /// A short name for the kind: `task`, `wait`, ...
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Task(_) => "task",
            StepKind::Wait(_) => "wait",
            StepKind::Sleep(_) => "sleep",
            StepKind::Choice => "choice",
            StepKind::Parallel(_) => "parallel",
            StepKind::Call(_) => "call",
            StepKind::End(_) => "end",
        }
    }
}

/// A named input of an action or call, built from a template.
#[derive(Debug, Clone)]
pub struct Arg {
    /// The field name.
    pub name: Sp<String>,
    /// How its value is built.
    pub value: Template,
}

/// A step that calls `system.action`.
#[derive(Debug, Clone)]
pub struct Task {
    /// `payment.refund`.
    pub action: Sp<String>,
    /// The action's inputs.
    pub input: Vec<Arg>,
    /// The retry policy (else the workflow default, else one attempt).
    pub retry: Option<RetryPolicy>,
    /// Per-attempt timeout.
    pub timeout: Option<DurationSpec>,
    /// Overall deadline for the step, all attempts included.
    pub deadline: Option<DurationSpec>,
    /// How to undo the step when the saga unwinds.
    pub compensate: Option<Compensation>,
    /// The point of no return (usually the refund).
    pub pivot: Option<Sp<bool>>,
    /// Where to go when the step fails for good, instead of unwinding the saga.
    pub on_failure: Option<Sp<String>>,
}

/// The undo action of a compensable step.
#[derive(Debug, Clone)]
pub struct Compensation {
    /// `order.clear_after_sales`.
    pub action: Sp<String>,
    /// Its inputs; may read the step's own outputs.
    pub input: Vec<Arg>,
    /// Its retry policy (compensations default to a persistent one).
    pub retry: Option<RetryPolicy>,
    /// Per-attempt timeout.
    pub timeout: Option<DurationSpec>,
    /// Byte range of the `compensate` table.
    pub span: Range<usize>,
}

/// What a wait step waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    /// A signal sent to the instance (a person's decision, an API call).
    Signal,
    /// An external event correlated by key (a webhook from the WMS).
    Event,
}

/// A step that parks the instance until a signal or event arrives, or the timeout fires.
#[derive(Debug, Clone)]
pub struct Wait {
    /// Signal or event.
    pub kind: WaitKind,
    /// `merchant.decision`, `warehouse.return.received`.
    pub name: Sp<String>,
    /// For events: the correlation key, e.g. `"${input.order_id}"`.
    pub correlate: Option<Template>,
    /// How long to wait.
    pub timeout: Option<DurationSpec>,
    /// Where to go when the timeout fires.
    pub on_timeout: Option<Sp<String>>,
    /// The declared payload fields, readable as `steps.<id>.<field>`.
    pub payload: Vec<FieldDecl>,
    /// Byte range of the `wait` table.
    pub span: Range<usize>,
}

/// A durable timer.
#[derive(Debug, Clone)]
pub enum Sleep {
    /// Sleep for a duration.
    For(DurationSpec),
    /// Sleep until an instant computed from a template.
    Until(Template),
}

/// How a parallel step joins its branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Wait for every branch; fail after all finished if any failed.
    All,
    /// Continue when the first branch succeeds; cancel the others. Fail when all failed.
    Any,
    /// Wait for every branch, but fail as soon as one fails and cancel the others.
    FirstFailure,
}

impl Join {
    /// The name used in files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Join::All => "all",
            Join::Any => "any",
            Join::FirstFailure => "first_failure",
        }
    }
}

/// A step that runs branches side by side.
#[derive(Debug, Clone)]
pub struct Parallel {
    /// The join rule.
    pub join: Join,
    /// The branches.
    pub branches: Vec<Branch>,
    /// Where to go when the join fails, instead of unwinding the saga.
    pub on_failure: Option<Sp<String>>,
}

/// One branch of a parallel step: a small sequence of steps of its own.
#[derive(Debug, Clone)]
pub struct Branch {
    /// The branch name, unique within the step.
    pub id: Sp<String>,
    /// Its steps; the first is the entry, a step without `next` ends the branch.
    pub steps: Vec<Step>,
    /// Byte range of the branch table.
    pub span: Range<usize>,
}

/// A step that runs another workflow as a child.
#[derive(Debug, Clone)]
pub struct Call {
    /// The child workflow's name.
    pub workflow: Sp<String>,
    /// A fixed version, or the newest at the time the call starts (then pinned).
    pub version: Option<Sp<u32>>,
    /// The child's inputs.
    pub input: Vec<Arg>,
    /// Where to go when the child fails, instead of unwinding the saga.
    pub on_failure: Option<Sp<String>>,
}

/// How an instance ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndStatus {
    /// Done as asked.
    Completed,
    /// Refused (merchant, inspection, rules).
    Rejected,
    /// Withdrawn or timed out (the buyer never shipped).
    Closed,
    /// Needs a human.
    Failed,
}

impl EndStatus {
    /// The name used in files.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndStatus::Completed => "completed",
            EndStatus::Rejected => "rejected",
            EndStatus::Closed => "closed",
            EndStatus::Failed => "failed",
        }
    }

    /// Parses a name used in files.
    pub fn parse(s: &str) -> Option<EndStatus> {
        Some(match s {
            "completed" => EndStatus::Completed,
            "rejected" => EndStatus::Rejected,
            "closed" => EndStatus::Closed,
            "failed" => EndStatus::Failed,
            _ => return None,
        })
    }
}

/// An end step.
#[derive(Debug, Clone)]
pub struct End {
    /// The final status.
    pub status: Sp<EndStatus>,
    /// Why, for people and audits.
    pub reason: Option<Template>,
    /// The instance's output (a parent's `call` step reads it).
    pub output: Vec<Arg>,
}

/// Where a step goes next.
#[derive(Debug, Clone)]
pub enum Next {
    /// The following step in the file (or the end of the branch).
    Implicit,
    /// One fixed step.
    To(Sp<String>),
    /// The first case whose condition holds; the last case has none.
    Cases(Vec<Case>),
}

/// One conditional transition.
#[derive(Debug, Clone)]
pub struct Case {
    /// The condition; `None` on the default case.
    pub when: Option<Expr>,
    /// The target step.
    pub goto: Sp<String>,
}

/// A duration, fixed or read from a business-line parameter.
#[derive(Debug, Clone)]
pub enum DurationSpec {
    /// `"48h"`.
    Fixed(Sp<Duration>),
    /// `"${params.merchant_response}"`.
    Param(Sp<String>),
}

impl DurationSpec {
    /// The span it was written at.
    pub fn span(&self) -> Range<usize> {
        match self {
            DurationSpec::Fixed(d) => d.span.clone(),
            DurationSpec::Param(p) => p.span.clone(),
        }
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationSpec::Fixed(d) => f.write_str(&crate::duration::format(d.value)),
            DurationSpec::Param(p) => write!(f, "params.{}", p.value),
        }
    }
}

/// Which error classes a retry policy retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// Network errors, 5xx, 429.
    Transient,
    /// The call may or may not have happened; retried with the same key.
    UnknownOutcome,
    /// The attempt ran past its timeout (an unknown outcome too).
    Timeout,
}

impl RetryOn {
    /// The name used in files.
    pub fn as_str(&self) -> &'static str {
        match self {
            RetryOn::Transient => "transient",
            RetryOn::UnknownOutcome => "unknown_outcome",
            RetryOn::Timeout => "timeout",
        }
    }
}

/// How jitter spreads retry delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the computed delay.
    None,
    /// Uniform in [0, delay].
    Full,
    /// Uniform in [delay/2, delay].
    Equal,
}

/// A retry policy: exponential backoff with jitter, bounded.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (≥ 1).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Growth factor per attempt (≥ 1).
    pub multiplier: f64,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// Jitter.
    pub jitter: Jitter,
    /// Which error classes are retried; permanent errors never are.
    pub retry_on: Vec<RetryOn>,
    /// Byte range of the `retry` table.
    pub span: Range<usize>,
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, given a random number in [0, 1).
    ///
    /// `attempt` counts from 1 (the attempt that just failed).
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = self.initial.as_secs_f64() * exp;
        let capped = base.min(self.max_delay.as_secs_f64()).max(0.0);
        let r = random.clamp(0.0, 1.0);
        let secs = match self.jitter {
            Jitter::None => capped,
            Jitter::Full => capped * r,
            Jitter::Equal => capped / 2.0 + capped / 2.0 * r,
        };
        Duration::from_secs_f64(secs)
    }

    /// Whether an error of the given class is retried by this policy.
    pub fn retries(&self, on: RetryOn) -> bool {
        self.retry_on.contains(&on)
    }
}

impl Workflow {
    /// Every step, branches included, in file order.
    pub fn all_steps(&self) -> Vec<&Step> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
            for s in steps {
                out.push(s);
                if let StepKind::Parallel(p) = &s.kind {
                    for b in &p.branches {
                        walk(&b.steps, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.steps, &mut out);
        out
    }

    /// Finds a step by id, branches included.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.all_steps().into_iter().find(|s| s.id.value == id)
    }

    /// The id of the first step.
    pub fn start_id(&self) -> Option<&str> {
        match &self.start {
            Some(s) => Some(&s.value),
            None => self.steps.first().map(|s| s.id.value.as_str()),
        }
    }

    /// `name@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.name.value, self.version.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_secs(2),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            jitter,
            retry_on: vec![RetryOn::Transient],
            span: 0..0,
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy(Jitter::None);
        assert_eq!(p.delay(1, 0.5), Duration::from_secs(2));
        assert_eq!(p.delay(2, 0.5), Duration::from_secs(4));
        assert_eq!(p.delay(5, 0.5), Duration::from_secs(32));
        assert_eq!(p.delay(6, 0.5), Duration::from_secs(60));
        assert_eq!(p.delay(1000, 0.5), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let full = policy(Jitter::Full);
        assert_eq!(full.delay(2, 0.0), Duration::ZERO);
        assert_eq!(full.delay(2, 0.5), Duration::from_secs(2));
        let equal = policy(Jitter::Equal);
        assert_eq!(equal.delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(equal.delay(2, 1.0), Duration::from_secs(4));
    }

    #[test]
    fn type_compatibility() {
        assert!(ValueType::Any.accepts(&ValueType::Money));
        assert!(ValueType::Timestamp.accepts(&ValueType::String));
        assert!(!ValueType::Money.accepts(&ValueType::Int));
        assert!(ValueType::List(None).accepts(&ValueType::List(Some(Box::new(ValueType::Int)))));
    }
}
