//! Static validation of parsed workflows: references, types, saga shape, reachability,
//! loops, waits and calls. Returns every finding at once, errors and warnings apart.
//!
//! `aftersales validate` and daemon start-up call the same [`check_sources`], so what
//! validates on a laptop is exactly what the daemon accepts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use crate::catalogue::{ActionSig, Catalogue};
use crate::diag::{Diagnostic, Severity, Source, WithHint, did_you_mean};
use crate::expr::{Expr, ROOTS, Template};
use crate::model::*;
use crate::parse::parse_workflow;

/// Stable codes of the problems the validator reports; each has a page in `docs/errors/`.
pub mod codes {
    /// Two steps (or branches) share an id.
    pub const DUPLICATE_ID: &str = "AS-WF-0101";
    /// A transition names a step that does not exist.
    pub const UNKNOWN_STEP: &str = "AS-WF-0102";
    /// A task calls an action the catalogue does not have.
    pub const UNKNOWN_ACTION: &str = "AS-WF-0103";
    /// A required action input is not given.
    pub const MISSING_INPUT: &str = "AS-WF-0104";
    /// An input the action does not declare.
    pub const UNKNOWN_INPUT: &str = "AS-WF-0105";
    /// A value whose type is known and wrong.
    pub const TYPE_MISMATCH: &str = "AS-WF-0106";
    /// An expression names an unknown input, parameter, step or field.
    pub const UNKNOWN_NAME: &str = "AS-WF-0107";
    /// An expression reads a step that cannot have run before it.
    pub const NOT_YET_RUN: &str = "AS-WF-0108";
    /// A step no path reaches.
    pub const UNREACHABLE: &str = "AS-WF-0109";
    /// A loop with no wait, timer or visit limit.
    pub const UNBOUNDED_LOOP: &str = "AS-WF-0110";
    /// A compensable step after the pivot.
    pub const COMPENSABLE_AFTER_PIVOT: &str = "AS-WF-0111";
    /// A step after the pivot that does not retry.
    pub const NO_RETRY_AFTER_PIVOT: &str = "AS-WF-0112";
    /// More than one pivot on one path.
    pub const SEVERAL_PIVOTS: &str = "AS-WF-0113";
    /// A wait with no timeout, or a timeout with nowhere to go.
    pub const WAIT_TIMEOUT: &str = "AS-WF-0114";
    /// No end state is reachable, or a step can never reach one.
    pub const NO_END: &str = "AS-WF-0115";
    /// The last step falls off the end of the workflow.
    pub const FALLS_OFF: &str = "AS-WF-0116";
    /// A compensation that cannot work.
    pub const BAD_COMPENSATION: &str = "AS-WF-0117";
    /// A transition into or out of a parallel branch.
    pub const BRANCH_ESCAPE: &str = "AS-WF-0118";
    /// A call to a workflow (or version) that does not exist.
    pub const UNKNOWN_WORKFLOW: &str = "AS-WF-0119";
    /// Conditional `next` cases with no default.
    pub const NO_DEFAULT_CASE: &str = "AS-WF-0120";
    /// An input or parameter that nothing reads.
    pub const UNUSED: &str = "AS-WF-0121";
    /// A zero or negative duration.
    pub const ZERO_DURATION: &str = "AS-WF-0122";
    /// A parallel step with fewer than two branches, or an empty branch.
    pub const THIN_PARALLEL: &str = "AS-WF-0123";
    /// Two files define the same workflow name and version.
    pub const DUPLICATE_WORKFLOW: &str = "AS-WF-0124";
}

/// What the validator checks against besides the file itself.
pub struct Context<'a> {
    /// The callable actions.
    pub catalogue: &'a Catalogue,
    /// Every workflow known, for `call` steps.
    pub workflows: &'a [&'a Workflow],
    /// Whether a call to a workflow not in `workflows` is an error (daemon start-up,
    /// directories) or only a warning (a single file checked on its own).
    pub calls_must_resolve: bool,
}

/// The outcome of checking a set of files.
#[derive(Debug, Default)]
pub struct Report {
    /// The workflows that parsed (with or without validation errors), with their file.
    pub workflows: Vec<(String, Workflow)>,
    /// Every diagnostic, file by file.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// True when no diagnostic is an error.
    pub fn is_ok(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// Parses and validates a set of workflow files together (calls resolve among them).
pub fn check_sources(
    sources: &[Source],
    catalogue: &Catalogue,
    calls_must_resolve: bool,
) -> Report {
    let mut parsed = Vec::new();
    let mut report = Report::default();
    for src in sources {
        let (wf, diags) = parse_workflow(src);
        let parse_failed = diags.iter().any(Diagnostic::is_error);
        report.diagnostics.extend(diags);
        if let Some(wf) = wf {
            parsed.push((src, wf, parse_failed));
        }
    }
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (src, wf, _) in &parsed {
        if let Some(first) = seen.insert(wf.key(), src.name) {
            report.diagnostics.push(
                src.diag(
                    Severity::Error,
                    codes::DUPLICATE_WORKFLOW,
                    Some(wf.name.span.clone()),
                    format!("workflow `{}` is also defined in {first}", wf.key()),
                )
                .hint("give the new definition a higher version"),
            );
        }
    }
    let all: Vec<&Workflow> = parsed.iter().map(|(_, wf, _)| wf).collect();
    let cx = Context {
        catalogue,
        workflows: &all,
        calls_must_resolve,
    };
    for (src, wf, parse_failed) in &parsed {
        if !parse_failed {
            report.diagnostics.extend(validate(wf, src, &cx));
        }
    }
    report.workflows = parsed
        .into_iter()
        .map(|(src, wf, _)| (src.name.to_owned(), wf))
        .collect();
    report
}

/// Where a step sits: at the top level or inside a branch of a parallel step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Top,
    Branch(String, String),
}

struct Node<'w> {
    step: &'w Step,
    scope: Scope,
    /// The step that follows in file order within the same list, if any.
    following: Option<&'w str>,
}

struct V<'w, 'c, 's, 'a> {
    wf: &'w Workflow,
    cx: &'c Context<'c>,
    src: &'s Source<'a>,
    nodes: BTreeMap<&'w str, Node<'w>>,
    order: Vec<&'w str>,
    diags: Vec<Diagnostic>,
    used: BTreeSet<String>,
    /// Steps reachable from the start; ordering checks skip the others (already warned).
    reach: BTreeSet<&'w str>,
}

/// Validates one parsed workflow.
pub fn validate(wf: &Workflow, src: &Source, cx: &Context) -> Vec<Diagnostic> {
    let mut v = V {
        wf,
        cx,
        src,
        nodes: BTreeMap::new(),
        order: Vec::new(),
        diags: Vec::new(),
        used: BTreeSet::new(),
        reach: BTreeSet::new(),
    };
    v.collect_nodes(&wf.steps, Scope::Top);
    v.check_transitions();
    let succ = v.successors();
    let reach = v.reachable(&succ);
    v.check_reachability(&succ, &reach);
    v.reach = reach;
    v.check_loops(&succ);
    v.check_steps(&succ);
    v.check_saga(&succ);
    v.check_unused();
    v.diags.sort_by_key(|d| (d.line, d.column, d.code));
    v.diags
}

impl<'w> V<'w, '_, '_, '_> {
    fn err(
        &mut self,
        code: &'static str,
        span: Range<usize>,
        msg: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Severity::Error, code, span, msg)
    }

    fn warn(
        &mut self,
        code: &'static str,
        span: Range<usize>,
        msg: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Severity::Warning, code, span, msg)
    }

    fn push(
        &mut self,
        sev: Severity,
        code: &'static str,
        span: Range<usize>,
        msg: impl Into<String>,
    ) -> &mut Diagnostic {
        let d = self.src.diag(sev, code, Some(span), msg);
        self.diags.push(d);
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    fn collect_nodes(&mut self, steps: &'w [Step], scope: Scope) {
        for (i, s) in steps.iter().enumerate() {
            let following = steps.get(i + 1).map(|n| n.id.value.as_str());
            if let Some(prev) = self.nodes.get(s.id.value.as_str()) {
                let prev_line = self.src.line_col(prev.step.id.span.start).0;
                self.err(
                    codes::DUPLICATE_ID,
                    s.id.span.clone(),
                    format!(
                        "step id `{}` is already used on line {prev_line}",
                        s.id.value
                    ),
                )
                .hint =
                    Some("step ids are unique across the workflow, branches included".to_owned());
                continue;
            }
            self.order.push(&s.id.value);
            self.nodes.insert(
                &s.id.value,
                Node {
                    step: s,
                    scope: scope.clone(),
                    following,
                },
            );
            if let StepKind::Parallel(p) = &s.kind {
                let mut branch_ids = BTreeSet::new();
                for b in &p.branches {
                    if !branch_ids.insert(b.id.value.as_str()) {
                        self.err(
                            codes::DUPLICATE_ID,
                            b.id.span.clone(),
                            format!(
                                "branch id `{}` is used twice in step `{}`",
                                b.id.value, s.id.value
                            ),
                        );
                    }
                    self.collect_nodes(
                        &b.steps,
                        Scope::Branch(s.id.value.clone(), b.id.value.clone()),
                    );
                }
            }
        }
    }

    fn step_ids(&self) -> Vec<&'w str> {
        self.order.clone()
    }

    /// Checks one transition target: it exists and stays within its scope.
    fn check_target(&mut self, from: &Scope, target: &Sp<String>, what: &str) {
        match self.nodes.get(target.value.as_str()) {
            None => {
                let ids = self.step_ids();
                let hint = did_you_mean(&target.value, ids.iter().copied());
                self.err(
                    codes::UNKNOWN_STEP,
                    target.span.clone(),
                    format!("{what} refers to unknown step `{}`", target.value),
                )
                .hint = hint;
            }
            Some(node) if &node.scope != from => {
                let msg = match (&node.scope, from) {
                    (Scope::Branch(p, b), _) => format!(
                        "{what} jumps into branch `{b}` of parallel step `{p}` from outside it"
                    ),
                    (Scope::Top, Scope::Branch(_, b)) => {
                        format!("{what} leaves branch `{b}` for step `{}`", target.value)
                    }
                    _ => format!("{what} crosses a branch boundary"),
                };
                self.err(codes::BRANCH_ESCAPE, target.span.clone(), msg).hint = Some(
                    "a branch runs from its first step until a step without `next`; the parallel step's own `next` continues after the join".to_owned(),
                );
            }
            Some(_) => {}
        }
    }

    fn check_transitions(&mut self) {
        if let Some(start) = &self.wf.start {
            self.check_target(&Scope::Top, start, "`start`");
        }
        if self.wf.steps.is_empty() {
            self.err(
                codes::NO_END,
                self.wf.span.clone(),
                "the workflow has no steps",
            );
        }
        let ids = self.step_ids();
        for id in ids {
            let node = &self.nodes[id];
            let step = node.step;
            let scope = node.scope.clone();
            let label = format!("step `{id}`");
            match &step.next {
                Next::To(t) => self.check_target(&scope, t, &label),
                Next::Cases(cases) => {
                    for c in cases {
                        self.check_target(&scope, &c.goto, &label);
                    }
                    let defaults = cases.iter().filter(|c| c.when.is_none()).count();
                    let last_is_default = cases.last().is_some_and(|c| c.when.is_none());
                    if defaults != 1 || !last_is_default {
                        self.err(
                            codes::NO_DEFAULT_CASE,
                            step.span.clone(),
                            format!("the `next` cases of step `{id}` need exactly one default case, last"),
                        )
                        .hint = Some("end the list with { goto = \"...\" } (no `if`), taken when no condition holds".to_owned());
                    }
                }
                Next::Implicit => {
                    if matches!(step.kind, StepKind::Choice) {
                        self.err(
                            codes::NO_DEFAULT_CASE,
                            step.span.clone(),
                            format!("choice step `{id}` has no cases"),
                        );
                    } else if node.following.is_none()
                        && scope == Scope::Top
                        && !matches!(step.kind, StepKind::End(_))
                    {
                        self.err(
                            codes::FALLS_OFF,
                            step.id.span.clone(),
                            format!("step `{id}` is the last step but not an end step, and has no `next`"),
                        )
                        .hint = Some("add `next = \"...\"`, or finish with a step like `end = \"completed\"`".to_owned());
                    }
                }
            }
            match &step.kind {
                StepKind::Task(t) => {
                    if let Some(f) = &t.on_failure {
                        self.check_target(&scope, f, &format!("`on_failure` of step `{id}`"));
                    }
                }
                StepKind::Call(c) => {
                    if let Some(f) = &c.on_failure {
                        self.check_target(&scope, f, &format!("`on_failure` of step `{id}`"));
                    }
                }
                StepKind::Parallel(p) => {
                    if let Some(f) = &p.on_failure {
                        self.check_target(&scope, f, &format!("`on_failure` of step `{id}`"));
                    }
                    if p.branches.len() < 2 {
                        self.warn(
                            codes::THIN_PARALLEL,
                            step.id.span.clone(),
                            format!(
                                "parallel step `{id}` has {} branch(es); nothing runs side by side",
                                p.branches.len()
                            ),
                        );
                    }
                    for b in &p.branches {
                        if b.steps.is_empty() {
                            self.err(
                                codes::THIN_PARALLEL,
                                b.span.clone(),
                                format!("branch `{}` has no steps", b.id.value),
                            );
                        }
                    }
                }
                StepKind::Wait(w) => {
                    if let Some(t) = &w.on_timeout {
                        self.check_target(&scope, t, &format!("`on_timeout` of step `{id}`"));
                    }
                }
                _ => {}
            }
        }
    }

    /// Edges of the step graph: id → successors (normal, failure and timeout paths, and
    /// from a parallel step into its branches' entries).
    fn successors(&self) -> BTreeMap<&'w str, Vec<&'w str>> {
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (&id, node) in &self.nodes {
            let s = node.step;
            let mut succ: Vec<&str> = Vec::new();
            match &s.next {
                Next::To(t) => succ.push(&t.value),
                Next::Cases(cs) => succ.extend(cs.iter().map(|c| c.goto.value.as_str())),
                Next::Implicit => {
                    if !matches!(s.kind, StepKind::End(_)) {
                        match (node.following, &node.scope) {
                            (Some(f), _) => succ.push(f),
                            // The last step of a branch leads, through the join, to
                            // wherever the parallel step continues.
                            (None, Scope::Branch(parallel, _)) => {
                                succ.extend(self.continuation(parallel));
                            }
                            (None, Scope::Top) => {}
                        }
                    }
                }
            }
            match &s.kind {
                StepKind::Task(t) => succ.extend(t.on_failure.as_ref().map(|f| f.value.as_str())),
                StepKind::Call(c) => succ.extend(c.on_failure.as_ref().map(|f| f.value.as_str())),
                StepKind::Wait(w) => succ.extend(w.on_timeout.as_ref().map(|f| f.value.as_str())),
                StepKind::Parallel(p) => {
                    succ.extend(p.on_failure.as_ref().map(|f| f.value.as_str()));
                    for b in &p.branches {
                        succ.extend(b.steps.first().map(|f| f.id.value.as_str()));
                    }
                }
                _ => {}
            }
            succ.retain(|t| self.nodes.contains_key(t));
            succ.dedup();
            out.insert(id, succ);
        }
        out
    }

    /// Where a step goes when it completes normally (its `next`, else the following step).
    fn continuation(&self, id: &str) -> Vec<&'w str> {
        let Some(node) = self.nodes.get(id) else {
            return Vec::new();
        };
        match &node.step.next {
            Next::To(t) => vec![t.value.as_str()],
            Next::Cases(cs) => cs.iter().map(|c| c.goto.value.as_str()).collect(),
            Next::Implicit => node.following.into_iter().collect(),
        }
    }

    fn reach_from(
        &self,
        succ: &BTreeMap<&'w str, Vec<&'w str>>,
        from: &'w str,
    ) -> BTreeSet<&'w str> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            if seen.insert(n)
                && let Some(next) = succ.get(n)
            {
                stack.extend(next.iter().copied());
            }
        }
        seen
    }

    fn reachable(&self, succ: &BTreeMap<&'w str, Vec<&'w str>>) -> BTreeSet<&'w str> {
        match self.wf.start_id().and_then(|s| self.nodes.get_key_value(s)) {
            Some((&start, _)) => self.reach_from(succ, start),
            None => BTreeSet::new(),
        }
    }

    fn check_reachability(
        &mut self,
        succ: &BTreeMap<&'w str, Vec<&'w str>>,
        reach: &BTreeSet<&'w str>,
    ) {
        for id in self.step_ids() {
            if !reach.contains(id) {
                let span = self.nodes[id].step.id.span.clone();
                self.warn(
                    codes::UNREACHABLE,
                    span,
                    format!("step `{id}` is never reached"),
                )
                .hint = Some("no `next`, `on_timeout` or `on_failure` leads here".to_owned());
            }
        }
        let ends: Vec<&str> = self
            .step_ids()
            .into_iter()
            .filter(|id| matches!(self.nodes[id].step.kind, StepKind::End(_)))
            .collect();
        if !ends.iter().any(|e| reach.contains(e)) {
            if !self.wf.steps.is_empty() {
                self.err(
                    codes::NO_END,
                    self.wf.name.span.clone(),
                    "no end step is reachable from the start",
                )
                .hint =
                    Some("finish every path with a step such as `end = \"completed\"`".to_owned());
            }
            return;
        }
        // Every reachable top-level step must be able to reach an end.
        for id in self.step_ids() {
            if !reach.contains(id) || self.nodes[id].scope != Scope::Top {
                continue;
            }
            let from_here = self.reach_from(succ, id);
            if !ends.iter().any(|e| from_here.contains(e)) {
                let span = self.nodes[id].step.id.span.clone();
                self.err(
                    codes::NO_END,
                    span,
                    format!("no end step can be reached from step `{id}`"),
                )
                .hint = Some("the path from here loops forever; give it an exit".to_owned());
            }
        }
    }

    fn check_loops(&mut self, succ: &BTreeMap<&'w str, Vec<&'w str>>) {
        let sccs = tarjan(&self.step_ids(), succ);
        for comp in sccs {
            let cyclic = comp.len() > 1 || succ.get(comp[0]).is_some_and(|n| n.contains(&comp[0]));
            if !cyclic {
                continue;
            }
            let bounded = comp.iter().any(|id| {
                let s = self.nodes[id].step;
                s.max_visits.is_some() || matches!(s.kind, StepKind::Wait(_) | StepKind::Sleep(_))
            });
            if !bounded {
                let first = comp
                    .iter()
                    .min_by_key(|id| self.nodes[*id].step.span.start)
                    .copied()
                    .unwrap_or(comp[0]);
                let span = self.nodes[first].step.id.span.clone();
                let mut ids: Vec<&str> = comp.clone();
                ids.sort_by_key(|id| self.nodes[id].step.span.start);
                self.err(
                    codes::UNBOUNDED_LOOP,
                    span,
                    format!(
                        "steps {} form a loop with no wait, timer or visit limit",
                        ids.iter()
                            .map(|i| format!("`{i}`"))
                            .collect::<Vec<_>>()
                            .join(" → ")
                    ),
                )
                .hint = Some(
                    "add `max_visits = N` to a step of the loop, or a wait or sleep inside it"
                        .to_owned(),
                );
            }
        }
    }

    fn check_duration(&mut self, d: &DurationSpec, what: &str) {
        match d {
            DurationSpec::Fixed(f) if f.value.is_zero() => {
                self.err(
                    codes::ZERO_DURATION,
                    f.span.clone(),
                    format!("{what} is zero"),
                );
            }
            DurationSpec::Fixed(_) => {}
            DurationSpec::Param(p) => {
                self.used.insert(format!("params.{}", p.value));
                match self.wf.params.iter().find(|f| f.name.value == p.value) {
                    None => {
                        let hint = did_you_mean(&p.value, self.wf.params.iter().map(|f| f.name.value.as_str()))
                            .or_else(|| Some(format!("declare it under [params]: {} = {{ type = \"duration\", default = \"48h\" }}", p.value)));
                        self.err(
                            codes::UNKNOWN_NAME,
                            p.span.clone(),
                            format!("{what} reads unknown parameter `{}`", p.value),
                        )
                        .hint = hint;
                    }
                    Some(f) if f.ty != ValueType::Duration => {
                        let msg = format!(
                            "{what} reads parameter `{}` of type {}, expected duration",
                            p.value, f.ty
                        );
                        self.err(codes::TYPE_MISMATCH, p.span.clone(), msg);
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// The fields a step's outputs have, when known: `None` means not statically known.
    fn outputs_of(&self, id: &str) -> Result<Option<Vec<(String, ValueType)>>, &'static str> {
        let Some(node) = self.nodes.get(id) else {
            return Err("unknown");
        };
        match &node.step.kind {
            StepKind::Task(t) => Ok(self.cx.catalogue.get(&t.action.value).map(|a| {
                let mut fields: Vec<(String, ValueType)> = a
                    .outputs
                    .iter()
                    .map(|f| (f.name.clone(), f.ty.clone()))
                    .collect();
                // On the `on_failure` path, `error` says why the step failed.
                if t.on_failure.is_some() && !fields.iter().any(|(n, _)| n == "error") {
                    fields.push(("error".to_owned(), ValueType::String));
                }
                fields
            })),
            StepKind::Wait(w) => Ok(Some(
                w.payload
                    .iter()
                    .map(|f| (f.name.value.clone(), f.ty.clone()))
                    .collect(),
            )),
            StepKind::Call(c) => Ok(self.called(c).map(|child| {
                // The child's end status and reason, then whatever its end steps output.
                let mut fields: Vec<(String, ValueType)> = vec![
                    ("status".to_owned(), ValueType::String),
                    ("reason".to_owned(), ValueType::String),
                ];
                if c.on_failure.is_some() {
                    fields.push(("error".to_owned(), ValueType::String));
                }
                for s in child.all_steps() {
                    if let StepKind::End(e) = &s.kind {
                        for a in &e.output {
                            if !fields.iter().any(|(n, _)| n == &a.name.value) {
                                fields.push((a.name.value.clone(), ValueType::Any));
                            }
                        }
                    }
                }
                fields
            })),
            StepKind::Sleep(_) => Err("a sleep"),
            StepKind::Choice => Err("a choice"),
            StepKind::Parallel(_) => Err("a parallel step"),
            StepKind::End(_) => Err("an end step"),
        }
    }

    fn called(&self, c: &Call) -> Option<&Workflow> {
        let mut candidates: Vec<&&Workflow> = self
            .cx
            .workflows
            .iter()
            .filter(|w| w.name.value == c.workflow.value)
            .collect();
        candidates.sort_by_key(|w| w.version.value);
        match &c.version {
            Some(v) => candidates
                .into_iter()
                .find(|w| w.version.value == v.value)
                .copied(),
            None => candidates.last().copied().copied(),
        }
    }

    /// Type of a plain reference, for type checks; also records what is used.
    fn ref_type(&self, path: &[String]) -> ValueType {
        let field = |decls: &[FieldDecl], name: &str| {
            decls
                .iter()
                .find(|f| f.name.value == name)
                .map(|f| f.ty.clone())
        };
        let base = match (path.first().map(String::as_str), path.get(1)) {
            (Some("input"), Some(n)) => field(&self.wf.inputs, n),
            (Some("params"), Some(n)) => field(&self.wf.params, n),
            (Some("steps"), Some(s)) => match (path.get(2), self.outputs_of(s)) {
                (Some(f), Ok(Some(fields))) => {
                    fields.into_iter().find(|(n, _)| n == f).map(|(_, t)| t)
                }
                _ => None,
            },
            (Some("workflow"), Some(n)) if n == "version" => Some(ValueType::Int),
            (Some("workflow"), Some(_)) => Some(ValueType::String),
            (Some("now"), None) => Some(ValueType::Timestamp),
            _ => None,
        };
        let consumed = if path.first().map(String::as_str) == Some("steps") {
            3
        } else {
            2
        };
        match (base, path.get(consumed)) {
            (Some(ValueType::Money), Some(sub)) if sub == "minor" => ValueType::Int,
            (Some(ValueType::Money), Some(sub)) if sub == "currency" => ValueType::String,
            (Some(t), None) => t,
            _ => ValueType::Any,
        }
    }

    /// Checks every name an expression reads; `at` is the step it is evaluated in and
    /// `own_outputs` whether that step's own outputs are available (conditions of its
    /// `next`, its compensation).
    fn check_expr(
        &mut self,
        e: &Expr,
        at: Option<&'w str>,
        own_outputs: bool,
        succ: &BTreeMap<&'w str, Vec<&'w str>>,
    ) {
        for r in e.references() {
            let root = r.path[0].as_str();
            let span = r.span.clone();
            match root {
                "input" | "params" => {
                    let Some(name) = r.path.get(1) else { continue };
                    let decls = if root == "input" {
                        &self.wf.inputs
                    } else {
                        &self.wf.params
                    };
                    self.used.insert(format!("{root}.{name}"));
                    match decls.iter().find(|f| &f.name.value == name) {
                        None => {
                            let hint =
                                did_you_mean(name, decls.iter().map(|f| f.name.value.as_str()))
                                    .or_else(|| Some(format!("declare it under [{root}]")));
                            let kind = if root == "input" {
                                "input"
                            } else {
                                "parameter"
                            };
                            self.err(
                                codes::UNKNOWN_NAME,
                                span,
                                format!("`{}` reads unknown {kind} `{name}`", r.path.join(".")),
                            )
                            .hint = hint;
                        }
                        Some(f) => {
                            if let (ValueType::Money, Some(sub)) = (&f.ty, r.path.get(2))
                                && sub != "minor"
                                && sub != "currency"
                            {
                                let msg = format!(
                                    "`{}`: money has only `minor` and `currency`",
                                    r.path.join(".")
                                );
                                self.err(codes::UNKNOWN_NAME, span, msg);
                            }
                        }
                    }
                }
                "steps" => {
                    let Some(sid) = r.path.get(1) else { continue };
                    match self.outputs_of(sid) {
                        Err("unknown") => {
                            let hint = did_you_mean(sid, self.step_ids());
                            self.err(
                                codes::UNKNOWN_NAME,
                                span,
                                format!("`{}` reads unknown step `{sid}`", r.path.join(".")),
                            )
                            .hint = hint;
                            continue;
                        }
                        Err(kind) => {
                            let msg = format!(
                                "`{}` reads step `{sid}`, {kind}, which has no outputs",
                                r.path.join(".")
                            );
                            self.err(codes::UNKNOWN_NAME, span, msg);
                            continue;
                        }
                        Ok(fields) => {
                            if let (Some(field), Some(fields)) = (r.path.get(2), fields)
                                && !fields.iter().any(|(n, _)| n == field)
                            {
                                let names: Vec<&str> =
                                    fields.iter().map(|(n, _)| n.as_str()).collect();
                                let hint =
                                    did_you_mean(field, names.iter().copied()).or_else(|| {
                                        if names.is_empty() {
                                            Some(format!("step `{sid}` has no output fields"))
                                        } else {
                                            Some(format!(
                                                "step `{sid}` outputs: {}",
                                                names.join(", ")
                                            ))
                                        }
                                    });
                                self.err(
                                    codes::UNKNOWN_NAME,
                                    span.clone(),
                                    format!("step `{sid}` has no output `{field}`"),
                                )
                                .hint = hint;
                            }
                        }
                    }
                    if let Some(at) = at
                        && self.reach.contains(at)
                    {
                        let ok = (own_outputs && sid == at) || {
                            let s = sid.as_str();
                            self.nodes.get_key_value(s).is_some_and(|(&k, _)| {
                                k != at && self.reach_from(succ, k).contains(at)
                            })
                        };
                        if !ok {
                            self.err(
                                codes::NOT_YET_RUN,
                                span,
                                format!(
                                    "step `{at}` reads `{}`, but step `{sid}` never runs before it",
                                    r.path.join(".")
                                ),
                            )
                            .hint = Some(
                                "a step can read the outputs of steps on a path leading to it"
                                    .to_owned(),
                            );
                        }
                    }
                }
                "workflow" => {
                    if let Some(f) = r.path.get(1)
                        && ![
                            "instance_id",
                            "name",
                            "version",
                            "business_line",
                            "started_at",
                        ]
                        .contains(&f.as_str())
                    {
                        self.err(
                            codes::UNKNOWN_NAME,
                            span,
                            format!("`workflow.{f}` is not known"),
                        )
                        .hint = Some(
                            "workflow has: instance_id, name, version, business_line, started_at"
                                .to_owned(),
                        );
                    }
                }
                "now" => {}
                other => {
                    let hint = did_you_mean(other, ROOTS).or_else(|| {
                        Some(
                            "expressions start from input, params, steps, workflow or now"
                                .to_owned(),
                        )
                    });
                    self.err(codes::UNKNOWN_NAME, span, format!("unknown name `{other}`"))
                        .hint = hint;
                }
            }
        }
    }

    fn check_template(
        &mut self,
        t: &Template,
        at: Option<&'w str>,
        own: bool,
        succ: &BTreeMap<&'w str, Vec<&'w str>>,
    ) {
        for e in t.exprs() {
            let e = e.clone();
            self.check_expr(&e, at, own, succ);
        }
    }

    /// Checks the inputs of an action call against its signature.
    fn check_args(&mut self, sig: &ActionSig, args: &[Arg], call_span: Range<usize>, what: &str) {
        for f in &sig.inputs {
            if f.required && !args.iter().any(|a| a.name.value == f.name) {
                self.err(
                    codes::MISSING_INPUT,
                    call_span.clone(),
                    format!(
                        "{what} is missing required input `{}` of `{}`",
                        f.name, sig.name
                    ),
                )
                .hint = Some(format!(
                    "`{}` takes: {}",
                    sig.name,
                    describe_fields(&sig.inputs)
                ));
            }
        }
        for a in args {
            match sig.inputs.iter().find(|f| f.name == a.name.value) {
                None => {
                    let hint =
                        did_you_mean(&a.name.value, sig.inputs.iter().map(|f| f.name.as_str()))
                            .or_else(|| {
                                Some(format!(
                                    "`{}` takes: {}",
                                    sig.name,
                                    describe_fields(&sig.inputs)
                                ))
                            });
                    self.err(
                        codes::UNKNOWN_INPUT,
                        a.name.span.clone(),
                        format!("`{}` has no input `{}`", sig.name, a.name.value),
                    )
                    .hint = hint;
                }
                Some(f) => {
                    let got = a.value.static_type(&|p| self.ref_type(p));
                    if !f.ty.accepts(&got) {
                        self.err(
                            codes::TYPE_MISMATCH,
                            a.value.span(),
                            format!(
                                "input `{}` of `{}` expects {}, but this is {got}",
                                f.name, sig.name, f.ty
                            ),
                        )
                        .hint = type_hint(&f.ty);
                    }
                }
            }
        }
    }

    fn check_action(&mut self, action: &Sp<String>) -> Option<ActionSig> {
        match self.cx.catalogue.get(&action.value) {
            Some(a) => Some(a.clone()),
            None => {
                let system = action.value.split('.').next().unwrap_or("");
                let systems = self.cx.catalogue.systems();
                let hint = did_you_mean(&action.value, self.cx.catalogue.names()).or_else(|| {
                    if systems.contains(&system) {
                        let actions: Vec<&str> = self
                            .cx
                            .catalogue
                            .names()
                            .filter(|n| n.starts_with(&format!("{system}.")))
                            .collect();
                        Some(format!("`{system}` has: {}", actions.join(", ")))
                    } else {
                        Some(format!("systems are: {}", systems.join(", ")))
                    }
                });
                self.err(
                    codes::UNKNOWN_ACTION,
                    action.span.clone(),
                    format!("unknown action `{}`", action.value),
                )
                .hint = hint;
                None
            }
        }
    }

    fn check_steps(&mut self, succ: &BTreeMap<&'w str, Vec<&'w str>>) {
        for id in self.step_ids() {
            let step = self.nodes[id].step;
            if let Next::Cases(cases) = &step.next {
                for c in cases {
                    if let Some(w) = &c.when {
                        self.check_expr(w, Some(id), true, succ);
                    }
                }
            }
            match &step.kind {
                StepKind::Task(t) => {
                    if let Some(sig) = self.check_action(&t.action) {
                        self.check_args(&sig, &t.input, step.span.clone(), &format!("step `{id}`"));
                        if let Some(c) = &t.compensate
                            && !sig.mutating
                        {
                            self.warn(
                                codes::BAD_COMPENSATION,
                                c.span.clone(),
                                format!(
                                    "step `{id}` compensates `{}`, which changes nothing",
                                    sig.name
                                ),
                            );
                        }
                    }
                    for a in &t.input {
                        self.check_template(&a.value, Some(id), false, succ);
                    }
                    for d in [&t.timeout, &t.deadline].into_iter().flatten() {
                        self.check_duration(d, &format!("timeout of step `{id}`"));
                    }
                    if let Some(c) = &t.compensate {
                        if c.action.value == t.action.value {
                            self.err(
                                codes::BAD_COMPENSATION,
                                c.action.span.clone(),
                                format!("step `{id}` compensates `{}` with itself", c.action.value),
                            );
                        }
                        if let Some(sig) = self.check_action(&c.action) {
                            self.check_args(
                                &sig,
                                &c.input,
                                c.span.clone(),
                                &format!("the compensation of step `{id}`"),
                            );
                        }
                        for a in &c.input {
                            self.check_template(&a.value, Some(id), true, succ);
                        }
                        if let Some(d) = &c.timeout {
                            self.check_duration(d, &format!("compensation timeout of step `{id}`"));
                        }
                    }
                }
                StepKind::Wait(w) => {
                    match (&w.timeout, &w.on_timeout) {
                        (None, _) => {
                            self.err(codes::WAIT_TIMEOUT, w.span.clone(), format!("wait step `{id}` has no timeout"))
                                .hint = Some("every wait needs `timeout` and `on_timeout`, e.g. timeout = \"7d\", on_timeout = \"auto_close\"".to_owned());
                        }
                        (Some(t), None) => {
                            self.err(
                                codes::WAIT_TIMEOUT,
                                t.span(),
                                format!("wait step `{id}` has a timeout but no `on_timeout`"),
                            )
                            .hint =
                                Some("name the step to go to when the timeout fires".to_owned());
                        }
                        (Some(_), Some(_)) => {}
                    }
                    if let Some(t) = &w.timeout {
                        self.check_duration(t, &format!("timeout of step `{id}`"));
                    }
                    if let Some(c) = &w.correlate {
                        self.check_template(c, Some(id), false, succ);
                    }
                    if w.kind == WaitKind::Event && w.correlate.is_none() {
                        self.err(codes::WAIT_TIMEOUT, w.span.clone(), format!("event wait `{id}` has no `correlate` key"))
                            .hint = Some("events find their instance by key, e.g. correlate = \"${input.order_id}\"".to_owned());
                    }
                }
                StepKind::Sleep(Sleep::For(d)) => {
                    self.check_duration(d, &format!("sleep of step `{id}`"))
                }
                StepKind::Sleep(Sleep::Until(t)) => self.check_template(t, Some(id), false, succ),
                StepKind::Call(c) => {
                    for a in &c.input {
                        self.check_template(&a.value, Some(id), false, succ);
                    }
                    match self.called(c) {
                        Some(child) => {
                            let sig = ActionSig {
                                name: child.key(),
                                mutating: true,
                                inputs: child
                                    .inputs
                                    .iter()
                                    .map(|f| crate::catalogue::FieldSig {
                                        name: f.name.value.clone(),
                                        ty: f.ty.clone(),
                                        required: f.required,
                                    })
                                    .collect(),
                                outputs: Vec::new(),
                            };
                            self.check_args(
                                &sig,
                                &c.input,
                                step.span.clone(),
                                &format!("step `{id}`"),
                            );
                        }
                        None => {
                            let known: Vec<&str> = self
                                .cx
                                .workflows
                                .iter()
                                .map(|w| w.name.value.as_str())
                                .collect();
                            let exists = known.contains(&c.workflow.value.as_str());
                            let msg = match (&c.version, exists) {
                                (Some(v), true) => format!(
                                    "workflow `{}` has no version {}",
                                    c.workflow.value, v.value
                                ),
                                _ => format!("call to unknown workflow `{}`", c.workflow.value),
                            };
                            let hint = did_you_mean(&c.workflow.value, known.iter().copied());
                            let sev = if self.cx.calls_must_resolve || exists {
                                Severity::Error
                            } else {
                                Severity::Warning
                            };
                            self.push(sev, codes::UNKNOWN_WORKFLOW, c.workflow.span.clone(), msg)
                                .hint = hint.or_else(|| {
                                Some(
                                    "validate the called workflow's file together with this one"
                                        .to_owned(),
                                )
                            });
                        }
                    }
                }
                StepKind::End(e) => {
                    if let Some(r) = &e.reason {
                        self.check_template(r, Some(id), false, succ);
                    }
                    for a in &e.output {
                        self.check_template(&a.value, Some(id), false, succ);
                    }
                }
                StepKind::Choice | StepKind::Parallel(_) => {}
            }
        }
        if let Some(d) = &self.wf.defaults.timeout {
            let d = d.clone();
            self.check_duration(&d, "defaults.timeout");
        }
    }

    fn effective_retry<'t>(&'t self, t: &'t Task) -> Option<&'t RetryPolicy> {
        t.retry.as_ref().or(self.wf.defaults.retry.as_ref())
    }

    fn check_saga(&mut self, succ: &BTreeMap<&'w str, Vec<&'w str>>) {
        let pivots: Vec<&'w str> = self
            .step_ids()
            .into_iter()
            .filter(|id| matches!(&self.nodes[id].step.kind, StepKind::Task(t) if t.pivot.as_ref().is_some_and(|p| p.value)))
            .collect();
        let mut reported = BTreeSet::new();
        for &p in &pivots {
            let after = self.reach_from(succ, p);
            for id in self.step_ids() {
                if id == p || !after.contains(id) {
                    continue;
                }
                let step = self.nodes[id].step;
                let StepKind::Task(t) = &step.kind else {
                    continue;
                };
                if pivots.contains(&id) && reported.insert((p, id)) {
                    self.err(
                        codes::SEVERAL_PIVOTS,
                        step.id.span.clone(),
                        format!("step `{id}` is a pivot, but pivot `{p}` already ran on this path"),
                    )
                    .hint = Some("a saga has one point of no return per path".to_owned());
                }
                if let Some(c) = &t.compensate
                    && reported.insert((p, id))
                {
                    self.err(
                        codes::COMPENSABLE_AFTER_PIVOT,
                        c.span.clone(),
                        format!("step `{id}` is compensable but runs after the pivot `{p}`"),
                    )
                    .hint = Some("after the point of no return, steps must be retried until they succeed, not undone; move it before the pivot or drop `compensate`".to_owned());
                }
                let retries = self.effective_retry(t).is_some_and(|r| r.max_attempts > 1);
                if !retries && reported.insert((p, id)) {
                    self.err(
                        codes::NO_RETRY_AFTER_PIVOT,
                        step.id.span.clone(),
                        format!("step `{id}` runs after the pivot `{p}` but does not retry"),
                    )
                    .hint = Some("give it retry = { max_attempts = 20, initial = \"1s\", max_delay = \"10m\" } (or set [defaults] retry)".to_owned());
                }
            }
        }
    }

    fn check_unused(&mut self) {
        for (root, decls) in [("input", &self.wf.inputs), ("params", &self.wf.params)] {
            for f in decls {
                if !self.used.contains(&format!("{root}.{}", f.name.value)) {
                    let what = if root == "input" {
                        "input"
                    } else {
                        "parameter"
                    };
                    let d = self.src.diag(
                        Severity::Warning,
                        codes::UNUSED,
                        Some(f.name.span.clone()),
                        format!("{what} `{}` is declared but never read", f.name.value),
                    );
                    self.diags.push(d);
                }
            }
        }
    }
}

fn describe_fields(fields: &[crate::catalogue::FieldSig]) -> String {
    if fields.is_empty() {
        return "no inputs".to_owned();
    }
    fields
        .iter()
        .map(|f| {
            format!(
                "{} ({}{})",
                f.name,
                f.ty,
                if f.required { "" } else { ", optional" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_hint(t: &ValueType) -> Option<String> {
    match t {
        ValueType::Money => Some(
            "money is { minor = 1234, currency = \"CNY\" } or a money-typed reference".to_owned(),
        ),
        ValueType::Int => Some("write an integer, or reference an int field".to_owned()),
        ValueType::Bool => Some("write true or false".to_owned()),
        ValueType::String => {
            Some("quote the value, or interpolate it: \"${...}\" inside text".to_owned())
        }
        _ => None,
    }
}

/// Strongly connected components (Tarjan), iteratively to stay stack-safe on big graphs.
fn tarjan<'w>(nodes: &[&'w str], succ: &BTreeMap<&'w str, Vec<&'w str>>) -> Vec<Vec<&'w str>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut low: HashMap<&str, usize> = HashMap::new();
    let mut on_stack: BTreeSet<&str> = BTreeSet::new();
    let mut stack: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    let mut counter = 0;
    for &root in nodes {
        if index.contains_key(root) {
            continue;
        }
        // Each frame: node and the position in its successor list.
        let mut frames: Vec<(&str, usize)> = vec![(root, 0)];
        index.insert(root, counter);
        low.insert(root, counter);
        counter += 1;
        stack.push(root);
        on_stack.insert(root);
        while let Some(&mut (v, ref mut i)) = frames.last_mut() {
            let next = succ.get(v).and_then(|s| s.get(*i)).copied();
            *i += 1;
            match next {
                Some(w) => {
                    if !index.contains_key(w) {
                        index.insert(w, counter);
                        low.insert(w, counter);
                        counter += 1;
                        stack.push(w);
                        on_stack.insert(w);
                        frames.push((w, 0));
                    } else if on_stack.contains(w) {
                        let lw = index[w];
                        let lv = low[v];
                        low.insert(v, lv.min(lw));
                    }
                }
                None => {
                    frames.pop();
                    if let Some(&(parent, _)) = frames.last() {
                        let lv = low[v];
                        let lp = low[parent];
                        low.insert(parent, lp.min(lv));
                    }
                    if low[v] == index[v] {
                        let mut comp = Vec::new();
                        while let Some(w) = stack.pop() {
                            on_stack.remove(w);
                            comp.push(w);
                            if w == v {
                                break;
                            }
                        }
                        out.push(comp);
                    }
                }
            }
        }
    }
    out
}
