//! Business lines by configuration: one TOML file per line in `config/business-lines/`.
//!
//! A business line says what it sells (physical, virtual or bundle goods), which after-sales
//! types it offers and which workflow (`name@version`) runs each, its rule parameters
//! ([`RuleParams`]), its timeouts, whether it routes buyers to retention, its return-rate
//! alert threshold, the parameters every instance of its workflows receives, and which
//! adapter serves each system. The format is described in `docs/business-lines.md`.
//!
//! Loading is two passes, like workflows:
//!
//! 1. [`parse_business_line`] reads one file and reports every problem it can find on its
//!    own (syntax, unknown fields, wrong types, missing fields, bad values), each at its
//!    `file:line:column`, as [`Diagnostic`]s with stable `AS-BL-NNNN` codes.
//! 2. [`cross_check`] checks a loaded line against the validated workflows and the adapter
//!    [`Registry`]: references resolve, workflow parameters are satisfied, workflows fit the
//!    goods kind, adapter kinds are registered and support every action the line's
//!    workflows call.
//!
//! [`check_sources`] runs both over a set of files and refuses duplicate ids; `aftersales
//! validate` calls it, and so does [`load_dir`], which daemon start-up will call.
//!
//! Each section of a file is decoded on its own, so a problem in `[rules]` does not hide
//! one in `[adapters]`; inside one serde-decoded section (`[business_line]`, `[rules]`,
//! `[return_rate]`, one adapter) the first problem is reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use aftersales_adapter::{AdapterConfig, AdapterSet, AdapterSetConfig, Registry, RegistryError};
use aftersales_core::diag::{Diagnostic, Severity, Source, did_you_mean, render_human};
use aftersales_core::engine::prepare::prepare;
use aftersales_core::model::{StepKind, Workflow};
use aftersales_domain::{
    AfterSalesType, BASIS_POINTS, BusinessLineId, DomainError, GoodsKind, RateThreshold, RuleParams,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Stable codes of the problems found in business-line files; each has a page in
/// `docs/errors/`.
pub mod codes {
    /// The file is not valid TOML.
    pub const SYNTAX: &str = "AS-BL-0001";
    /// A field or section the format does not know.
    pub const UNKNOWN_FIELD: &str = "AS-BL-0002";
    /// A value of the wrong type.
    pub const WRONG_TYPE: &str = "AS-BL-0003";
    /// A required field or section is missing.
    pub const MISSING_FIELD: &str = "AS-BL-0004";
    /// A value of the right type that is not allowed.
    pub const INVALID_VALUE: &str = "AS-BL-0005";
    /// A duration that does not parse, or is zero.
    pub const BAD_DURATION: &str = "AS-BL-0006";
    /// Two files define the same business line id.
    pub const DUPLICATE_ID: &str = "AS-BL-0007";
    /// A workflow reference (`name@version`) that no loaded workflow matches.
    pub const UNKNOWN_WORKFLOW: &str = "AS-BL-0101";
    /// A workflow parameter that is missing or of the wrong type.
    pub const WORKFLOW_PARAM: &str = "AS-BL-0102";
    /// A workflow written for another goods kind.
    pub const GOODS_KIND_MISMATCH: &str = "AS-BL-0103";
    /// An adapter that cannot be built: unknown kind, bad settings, wrong system.
    pub const ADAPTER: &str = "AS-BL-0104";
    /// An adapter that does not support an action the line's workflows call.
    pub const UNSUPPORTED_ACTION: &str = "AS-BL-0105";
    /// A parameter or timeout no workflow of the line reads (warning).
    pub const UNUSED_PARAM: &str = "AS-BL-0106";
    /// Retention is on but no workflow of the line has a retention step (warning).
    pub const RETENTION_UNUSED: &str = "AS-BL-0107";
    /// A workflow step declares a phase that is not a service order state.
    pub const UNKNOWN_PHASE: &str = "AS-BL-0108";
    /// Two systems of the line would pay the buyer: its payment adapter refunds, and an
    /// action of another system it calls moves money too.
    pub const TWO_REFUND_PATHS: &str = "AS-BL-0109";
}

/// The workflow parameter that carries the line's `retention` switch.
pub const RETENTION_PARAM: &str = "retention";

/// The five systems of an adapter set, in the order the file lists them.
const SYSTEMS: [&str; 5] = ["order", "warehouse", "fulfillment", "payment", "notify"];

/// The top-level sections of a business-line file.
const SECTIONS: [&str; 7] = [
    "business_line",
    "after_sales",
    "rules",
    "timeouts",
    "return_rate",
    "workflow_params",
    "adapters",
];

const AFTER_SALES_TYPES: [AfterSalesType; 4] = [
    AfterSalesType::CancelAfterPayment,
    AfterSalesType::RefundOnly,
    AfterSalesType::ReturnRefund,
    AfterSalesType::Exchange,
];

/// One business line, as loaded from its file.
///
/// Built only by [`parse_business_line`] (and the functions over it), so every value has
/// been checked and positions are known for the cross-checks.
#[derive(Debug, Clone)]
pub struct BusinessLine {
    /// `apparel`, `online_courses`: lowercase letters, digits and `_`.
    pub id: BusinessLineId,
    /// For people: `Apparel`.
    pub name: String,
    /// What the line sells, for people.
    pub description: Option<String>,
    /// What kind of goods it sells.
    pub goods: GoodsKind,
    /// Whether buyers are routed to a sales agent before a refund (挽留); passed to
    /// workflows as the `retention` parameter.
    pub retention: bool,
    /// The after-sales types the line offers, each with the workflow that runs it. A type
    /// that is absent is not offered.
    pub workflows: BTreeMap<AfterSalesType, WorkflowRef>,
    /// The eligibility and refund rule parameters.
    pub rules: RuleParams,
    /// The merchant and buyer deadlines, passed to workflows as parameters.
    pub timeouts: Timeouts,
    /// The return-rate alert threshold.
    pub return_rate: RateThreshold,
    /// Other parameters passed to every instance of the line's workflows.
    pub workflow_params: Map<String, Value>,
    /// Which adapter serves each system.
    pub adapters: AdapterSetConfig,
    /// The timeouts as written (`"48h"`), passed to workflows verbatim.
    timeout_texts: BTreeMap<&'static str, String>,
    spans: Spans,
}

impl BusinessLine {
    /// The workflow that runs `kind`, or `None` when the line does not offer it.
    pub fn workflow(&self, kind: AfterSalesType) -> Option<&WorkflowRef> {
        self.workflows.get(&kind)
    }

    /// The parameters every instance of this line's workflows starts with: the
    /// `[workflow_params]`, the timeouts that are set (as duration strings), and
    /// `retention`.
    pub fn instance_params(&self) -> Value {
        let mut out = self.workflow_params.clone();
        for (name, d) in self.timeouts.entries() {
            if let Some(d) = d {
                let text = self
                    .timeout_texts
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| aftersales_core::duration::format(d));
                out.insert(name.to_owned(), Value::String(text));
            }
        }
        out.insert(RETENTION_PARAM.to_owned(), Value::Bool(self.retention));
        Value::Object(out)
    }

    /// Builds the line's adapters. `env` reads environment variables (secrets are named by
    /// settings, never written in the file).
    pub fn build_adapters(
        &self,
        registry: &Registry,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AdapterSet, RegistryError> {
        registry.build_set(&self.adapters, env)
    }
}

/// A pinned workflow: `physical.return_refund@1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkflowRef {
    /// The workflow's name.
    pub name: String,
    /// Its version.
    pub version: u32,
}

impl WorkflowRef {
    /// Reads `name@version`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<WorkflowRef, String> {
        let Some((name, version)) = text.rsplit_once('@') else {
            return Err(format!(
                "`{text}` has no version; write `name@version`, e.g. `physical.return_refund@1`"
            ));
        };
        let name_ok = !name.is_empty()
            && name.split('.').all(|part| {
                part.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !name_ok {
            return Err(format!(
                "`{name}` is not a workflow name (dot-separated lowercase words)"
            ));
        }
        match version.parse::<u32>() {
            Ok(v) if v >= 1 && version.chars().all(|c| c.is_ascii_digit()) => Ok(WorkflowRef {
                name: name.to_owned(),
                version: v,
            }),
            _ => Err(format!(
                "`{version}` is not a version; versions are whole numbers from 1"
            )),
        }
    }

    /// The goods kind a workflow serves by its name's first part (`physical.`, `virtual.`,
    /// `bundle.`); `None` for a kind-neutral name.
    pub fn goods_kind(&self) -> Option<GoodsKind> {
        goods_kind_of(&self.name)
    }
}

impl fmt::Display for WorkflowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// The goods kind a workflow name is written for, by its first part.
fn goods_kind_of(name: &str) -> Option<GoodsKind> {
    match name.split('.').next() {
        Some("physical") => Some(GoodsKind::Physical),
        Some("virtual") => Some(GoodsKind::Virtual),
        Some("bundle") => Some(GoodsKind::Bundle),
        _ => None,
    }
}

/// The name of a goods kind as config writes it: `physical`, `virtual`, `bundle`.
pub fn goods_name(g: GoodsKind) -> &'static str {
    match g {
        GoodsKind::Physical => "physical",
        GoodsKind::Virtual => "virtual",
        GoodsKind::Bundle => "bundle",
    }
}

/// A line's deadlines. Each is passed to its workflows as the parameter of the same name;
/// one that is not set leaves the workflow's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// The merchant answers a request within this, or it is approved automatically.
    pub merchant_response: Option<Duration>,
    /// The buyer ships the return within this, or the request closes automatically.
    pub buyer_ship_within: Option<Duration>,
    /// The merchant confirms receipt of the return within this, or the refund is paid
    /// automatically.
    pub receipt_within: Option<Duration>,
}

impl Timeouts {
    /// The timeout names, as written in `[timeouts]` and passed to workflows.
    pub const NAMES: [&'static str; 3] =
        ["merchant_response", "buyer_ship_within", "receipt_within"];

    /// Each timeout with its name.
    pub fn entries(&self) -> [(&'static str, Option<Duration>); 3] {
        [
            ("merchant_response", self.merchant_response),
            ("buyer_ship_within", self.buyer_ship_within),
            ("receipt_within", self.receipt_within),
        ]
    }

    fn set(&mut self, name: &str, d: Duration) {
        match name {
            "merchant_response" => self.merchant_response = Some(d),
            "buyer_ship_within" => self.buyer_ship_within = Some(d),
            _ => self.receipt_within = Some(d),
        }
    }
}

/// Where things are in the file, for the cross-checks.
#[derive(Debug, Clone, Default)]
struct Spans {
    id: Range<usize>,
    goods: Range<usize>,
    retention: Range<usize>,
    after_sales: BTreeMap<AfterSalesType, Range<usize>>,
    timeouts: BTreeMap<&'static str, Range<usize>>,
    workflow_params: BTreeMap<String, Range<usize>>,
    /// The `kind` value of each system's adapter (or its table).
    adapters: BTreeMap<&'static str, Range<usize>>,
}

/// What the cross-checks check against.
pub struct CrossCheck<'a> {
    /// Every validated workflow.
    pub workflows: &'a [&'a Workflow],
    /// The adapter kinds the binary registers.
    pub registry: &'a Registry,
    /// Whether a reference to a workflow not in `workflows` is an error (directories,
    /// daemon start-up) or only a warning (lone files checked on their own).
    pub refs_must_resolve: bool,
}

/// The outcome of checking a set of business-line files.
#[derive(Debug, Default)]
pub struct Report {
    /// The lines that loaded, with their file; a line whose file has load errors is absent.
    pub lines: Vec<(String, BusinessLine)>,
    /// Every diagnostic, file by file.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// True when no diagnostic is an error.
    pub fn is_ok(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Why [`load_dir`] could not load the business lines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusinessLineError {
    /// A directory or file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Some files have errors; `rendered` shows them all, as `aftersales validate` does.
    #[error("{count} error(s) in business-line files:\n{rendered}")]
    Invalid {
        /// How many errors.
        count: usize,
        /// Every diagnostic, warnings included.
        diagnostics: Vec<Diagnostic>,
        /// The diagnostics rendered for people.
        rendered: String,
    },
}

/// True when a file is a business line rather than a workflow: it has a top-level
/// `[business_line]` table header on a line of its own. Decided on the text, so a file with
/// a TOML syntax error is still recognised.
pub fn is_business_line(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.split('#').next().unwrap_or("").trim();
        l == "[business_line]"
    })
}

/// Reads every `*.toml` file of `dir` (not its subdirectories), checks them together and
/// cross-checks them. Warnings are returned in the report; any error refuses the lot.
pub fn load_dir(dir: &Path, cx: &CrossCheck<'_>) -> Result<Report, BusinessLineError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| BusinessLineError::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(io(f))?;
        texts.push((f.display().to_string(), text));
    }
    let sources: Vec<Source<'_>> = texts.iter().map(|(n, t)| Source::new(n, t)).collect();
    let report = check_sources(&sources, cx);
    let count = report.diagnostics.iter().filter(|d| d.is_error()).count();
    if count > 0 {
        let rendered = render_human(&report.diagnostics);
        return Err(BusinessLineError::Invalid {
            count,
            diagnostics: report.diagnostics,
            rendered,
        });
    }
    Ok(report)
}

/// Loads a set of business-line files, refuses duplicate ids, and cross-checks every line
/// that loaded. Returns every diagnostic.
pub fn check_sources(sources: &[Source<'_>], cx: &CrossCheck<'_>) -> Report {
    let mut report = Report::default();
    let mut loaded = Vec::new();
    for src in sources {
        let (line, diags) = parse_business_line(src);
        report.diagnostics.extend(diags);
        if let Some(line) = line {
            loaded.push((src, line));
        }
    }
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut duplicates = Vec::new();
    for (i, (src, line)) in loaded.iter().enumerate() {
        if let Some(first) = seen.insert(line.id.to_string(), src.name) {
            let mut d = src.diag(
                Severity::Error,
                codes::DUPLICATE_ID,
                Some(line.spans.id.clone()),
                format!("business line `{}` is also defined in {first}", line.id),
            );
            d.hint = Some("every business line needs its own id".to_owned());
            report.diagnostics.push(d);
            duplicates.push(i);
        }
    }
    for (i, (src, line)) in loaded.into_iter().enumerate() {
        report.diagnostics.extend(cross_check(src, &line, cx));
        if !duplicates.contains(&i) {
            report.lines.push((src.name.to_owned(), line));
        }
    }
    report
}

// ---------------------------------------------------------------------------------------
// Loading one file.

type Val<'i> = Spanned<DeValue<'i>>;

struct Cx<'s, 'a> {
    src: &'s Source<'a>,
    diags: Vec<Diagnostic>,
}

impl Cx<'_, '_> {
    fn error(
        &mut self,
        code: &'static str,
        span: Range<usize>,
        msg: impl Into<String>,
        hint: Option<String>,
    ) {
        let mut d = self.src.diag(Severity::Error, code, Some(span), msg);
        d.hint = hint;
        self.diags.push(d);
    }

    fn wrong_type(&mut self, v: &Val<'_>, what: &str, expected: &str) {
        self.error(
            codes::WRONG_TYPE,
            v.span(),
            format!("{what} must be {expected}, not {}", type_name(v.get_ref())),
            None,
        );
    }

    /// Reports a serde error from decoding `what`, classified by its kind.
    fn serde_error(&mut self, e: &toml::de::Error, fallback: Range<usize>, what: &str) {
        let span = e.span().unwrap_or(fallback);
        let msg = e.message().trim_end_matches('\n').trim_end_matches('.');
        if let Some(rest) = msg.strip_prefix("unknown field ") {
            let names = backticked(rest);
            let field = names.first().copied().unwrap_or("?");
            let expected = names.get(1..).unwrap_or_default();
            let hint = did_you_mean(field, expected.iter().copied()).or_else(|| {
                (!expected.is_empty()).then(|| format!("expected one of: {}", expected.join(", ")))
            });
            self.error(
                codes::UNKNOWN_FIELD,
                span,
                format!("unknown field `{field}` in {what}"),
                hint,
            );
        } else if let Some(rest) = msg.strip_prefix("missing field ") {
            let field = backticked(rest).first().copied().unwrap_or("?").to_owned();
            self.error(
                codes::MISSING_FIELD,
                span,
                format!("{what} is missing required field `{field}`"),
                None,
            );
        } else if msg.starts_with("invalid type") {
            let hint = msg.contains("floating point").then(|| {
                "amounts are integer minor units: { minor = 1250, currency = \"CNY\" } is 12.50 CNY"
                    .to_owned()
            });
            self.error(codes::WRONG_TYPE, span, format!("{what}: {msg}"), hint);
        } else {
            self.error(codes::INVALID_VALUE, span, format!("{what}: {msg}"), None);
        }
    }
}

/// The `…` parts of a serde message, in order.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a bool",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn entries<'a, 'i>(
    t: &'a DeTable<'i>,
) -> impl Iterator<Item = (&'a str, Range<usize>, &'a Val<'i>)> {
    t.iter().map(|(k, v)| (k.get_ref().as_ref(), k.span(), v))
}

fn as_table<'a, 'i>(cx: &mut Cx, v: &'a Val<'i>, what: &str) -> Option<&'a DeTable<'i>> {
    match v.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => {
            cx.wrong_type(v, what, "a table");
            None
        }
    }
}

/// Decodes a table with serde, keeping the file's positions in errors.
fn de_table<T: DeserializeOwned>(cx: &mut Cx, v: &Val<'_>, what: &str) -> Option<T> {
    let t = as_table(cx, v, what)?;
    let de = toml::de::Deserializer::from(Spanned::new(v.span(), t.clone()));
    match T::deserialize(de) {
        Ok(x) => Some(x),
        Err(e) => {
            cx.serde_error(&e, v.span(), what);
            None
        }
    }
}

/// `[business_line]`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    id: Spanned<String>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    goods: Spanned<GoodsKind>,
    #[serde(default)]
    retention: Option<Spanned<bool>>,
}

/// `[return_rate]`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReturnRate {
    alert_above_bp: Spanned<u32>,
    #[serde(default = "min_sold_one")]
    min_sold: u64,
}

fn min_sold_one() -> u64 {
    1
}

fn valid_id(id: &str) -> bool {
    id.len() <= 64
        && id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parses one business-line file. Returns the line when the file has no error, and every
/// diagnostic found.
pub fn parse_business_line(src: &Source<'_>) -> (Option<BusinessLine>, Vec<Diagnostic>) {
    let mut cx = Cx {
        src,
        diags: Vec::new(),
    };
    let (doc, errors) = DeTable::parse_recoverable(src.text);
    if !errors.is_empty() {
        for e in &errors {
            let msg = e.message().trim_end_matches('\n').trim_end_matches('.');
            cx.error(
                codes::SYNTAX,
                e.span().unwrap_or(0..0),
                format!("invalid TOML: {msg}"),
                None,
            );
        }
        // Decoding a broken tree gives confusing follow-up errors; stop at syntax.
        return (None, cx.diags);
    }
    let root_span = doc.span();
    let root = doc.into_inner();
    let mut sections: BTreeMap<&str, &Val<'_>> = BTreeMap::new();
    for (key, key_span, v) in entries(&root) {
        match SECTIONS.iter().find(|s| **s == key) {
            Some(s) => {
                sections.insert(s, v);
            }
            None => {
                let hint = did_you_mean(key, SECTIONS)
                    .or_else(|| Some(format!("expected one of: {}", SECTIONS.join(", "))));
                cx.error(
                    codes::UNKNOWN_FIELD,
                    key_span,
                    format!("unknown section `{key}`"),
                    hint,
                );
            }
        }
    }
    let file_start = root_span.start..root_span.start;
    let required = |cx: &mut Cx, name: &str| {
        let v = sections.get(name).copied();
        if v.is_none() {
            cx.error(
                codes::MISSING_FIELD,
                file_start.clone(),
                format!("the file is missing required section `[{name}]`"),
                None,
            );
        }
        v
    };
    let header_v = required(&mut cx, "business_line");
    let after_sales_v = required(&mut cx, "after_sales");
    let rules_v = required(&mut cx, "rules");
    let return_rate_v = required(&mut cx, "return_rate");
    let adapters_v = required(&mut cx, "adapters");

    let mut spans = Spans::default();
    let header = header_v.and_then(|v| decode_header(&mut cx, v, &mut spans));
    let goods = header.as_ref().map(|h| h.goods);
    let workflows = after_sales_v.and_then(|v| decode_after_sales(&mut cx, v, goods, &mut spans));
    let rules = rules_v.and_then(|v| decode_rules(&mut cx, v));
    let timeouts = match sections.get("timeouts") {
        Some(v) => decode_timeouts(&mut cx, v, &mut spans),
        None => Some((Timeouts::default(), BTreeMap::new())),
    };
    let return_rate = return_rate_v.and_then(|v| decode_return_rate(&mut cx, v));
    let workflow_params = match sections.get("workflow_params") {
        Some(v) => decode_workflow_params(&mut cx, v, &mut spans),
        None => Some(Map::new()),
    };
    let adapters = adapters_v.and_then(|v| decode_adapters(&mut cx, v, &mut spans));

    if cx.diags.iter().any(Diagnostic::is_error) {
        return (None, cx.diags);
    }
    let (
        Some(header),
        Some(workflows),
        Some(rules),
        Some((timeouts, timeout_texts)),
        Some((max_bp, min_sold)),
        Some(workflow_params),
        Some(adapters),
    ) = (
        header,
        workflows,
        rules,
        timeouts,
        return_rate,
        workflow_params,
        adapters,
    )
    else {
        return (None, cx.diags);
    };
    let id = BusinessLineId::new(header.id.as_str());
    let line = BusinessLine {
        return_rate: RateThreshold {
            business_line: id.clone(),
            max_bp,
            min_sold,
        },
        id,
        name: header.name,
        description: header.description,
        goods: header.goods,
        retention: header.retention,
        workflows,
        rules,
        timeouts,
        workflow_params,
        adapters,
        timeout_texts,
        spans,
    };
    (Some(line), cx.diags)
}

/// The checked header.
struct Header {
    id: String,
    name: String,
    description: Option<String>,
    goods: GoodsKind,
    retention: bool,
}

fn decode_header(cx: &mut Cx, v: &Val<'_>, spans: &mut Spans) -> Option<Header> {
    let raw: RawHeader = de_table(cx, v, "[business_line]")?;
    let mut ok = true;
    if !valid_id(raw.id.get_ref()) {
        cx.error(
            codes::INVALID_VALUE,
            raw.id.span(),
            format!("`{}` is not a business line id", raw.id.get_ref()),
            Some(
                "use lowercase letters, digits and `_`, starting with a letter (at most 64)"
                    .to_owned(),
            ),
        );
        ok = false;
    }
    if raw.name.trim().is_empty() {
        cx.error(
            codes::INVALID_VALUE,
            v.span(),
            "[business_line] `name` is empty",
            Some("give the line a name people recognise, e.g. \"Apparel\"".to_owned()),
        );
        ok = false;
    }
    spans.id = raw.id.span();
    spans.goods = raw.goods.span();
    spans.retention = raw.retention.as_ref().map_or(v.span(), Spanned::span);
    ok.then(|| Header {
        id: raw.id.into_inner(),
        name: raw.name,
        description: raw.description,
        goods: raw.goods.into_inner(),
        retention: raw.retention.is_some_and(Spanned::into_inner),
    })
}

fn decode_after_sales(
    cx: &mut Cx,
    v: &Val<'_>,
    goods: Option<GoodsKind>,
    spans: &mut Spans,
) -> Option<BTreeMap<AfterSalesType, WorkflowRef>> {
    let t = as_table(cx, v, "[after_sales]")?;
    let names: Vec<&str> = AFTER_SALES_TYPES.iter().map(|k| k.as_str()).collect();
    let mut out = BTreeMap::new();
    let errors_before = cx.diags.len();
    for (key, key_span, val) in entries(t) {
        let Some(kind) = AFTER_SALES_TYPES
            .iter()
            .copied()
            .find(|k| k.as_str() == key)
        else {
            let hint = did_you_mean(key, names.iter().copied())
                .or_else(|| Some(format!("expected one of: {}", names.join(", "))));
            cx.error(
                codes::UNKNOWN_FIELD,
                key_span,
                format!("unknown after-sales type `{key}` in [after_sales]"),
                hint,
            );
            continue;
        };
        let DeValue::String(text) = val.get_ref() else {
            cx.wrong_type(
                val,
                &format!("after_sales.{key}"),
                "a workflow reference such as \"physical.return_refund@1\"",
            );
            continue;
        };
        match WorkflowRef::parse(text) {
            Ok(r) => {
                if goods == Some(GoodsKind::Virtual)
                    && matches!(
                        kind,
                        AfterSalesType::CancelAfterPayment | AfterSalesType::RefundOnly
                    )
                {
                    cx.error(
                        codes::INVALID_VALUE,
                        key_span,
                        format!(
                            "{key} is not offered for virtual goods: they are delivered at payment"
                        ),
                        Some(
                            "remove it; a virtual refund is return_refund (refund and revoke)"
                                .to_owned(),
                        ),
                    );
                    continue;
                }
                spans.after_sales.insert(kind, val.span());
                out.insert(kind, r);
            }
            Err(why) => cx.error(
                codes::INVALID_VALUE,
                val.span(),
                format!("after_sales.{key}: {why}"),
                None,
            ),
        }
    }
    if out.is_empty() && cx.diags.len() == errors_before {
        cx.error(
            codes::MISSING_FIELD,
            v.span(),
            "[after_sales] enables no after-sales type",
            Some(format!(
                "map at least one of {} to a workflow",
                names.join(", ")
            )),
        );
    }
    (cx.diags.len() == errors_before).then_some(out)
}

fn decode_rules(cx: &mut Cx, v: &Val<'_>) -> Option<RuleParams> {
    let rules: RuleParams = de_table(cx, v, "[rules]")?;
    if let Err(problems) = rules.validate() {
        let t = as_table(cx, v, "[rules]")?;
        for p in problems {
            // Point at the parameter's own key when the problem names one.
            let span = match &p {
                DomainError::InvalidParams { field, .. } => {
                    let top = field.split('.').next().unwrap_or(field);
                    entries(t)
                        .find(|(k, _, _)| *k == top)
                        .map_or(v.span(), |(_, _, val)| val.span())
                }
                _ => v.span(),
            };
            cx.error(codes::INVALID_VALUE, span, format!("[rules]: {p}"), None);
        }
        return None;
    }
    Some(rules)
}

fn decode_timeouts(
    cx: &mut Cx,
    v: &Val<'_>,
    spans: &mut Spans,
) -> Option<(Timeouts, BTreeMap<&'static str, String>)> {
    let t = as_table(cx, v, "[timeouts]")?;
    let mut out = Timeouts::default();
    let mut texts = BTreeMap::new();
    let errors_before = cx.diags.len();
    for (key, key_span, val) in entries(t) {
        let Some(name) = Timeouts::NAMES.iter().copied().find(|n| *n == key) else {
            let hint = did_you_mean(key, Timeouts::NAMES)
                .or_else(|| Some(format!("expected one of: {}", Timeouts::NAMES.join(", "))));
            cx.error(
                codes::UNKNOWN_FIELD,
                key_span,
                format!("unknown timeout `{key}` in [timeouts]"),
                hint,
            );
            continue;
        };
        let DeValue::String(text) = val.get_ref() else {
            cx.wrong_type(
                val,
                &format!("timeouts.{key}"),
                "a duration such as \"48h\"",
            );
            continue;
        };
        match aftersales_core::duration::parse(text) {
            Ok(d) if d.is_zero() => cx.error(
                codes::BAD_DURATION,
                val.span(),
                format!("timeouts.{key} is zero"),
                Some("a deadline must leave some time; use e.g. \"48h\"".to_owned()),
            ),
            Ok(d) => {
                out.set(name, d);
                texts.insert(name, text.to_string());
                spans.timeouts.insert(name, val.span());
            }
            Err(why) => cx.error(
                codes::BAD_DURATION,
                val.span(),
                format!("timeouts.{key}: invalid duration `{text}`: {why}"),
                Some(
                    "write e.g. \"500ms\", \"30s\", \"10m\", \"48h\", \"7d\" or \"1h30m\""
                        .to_owned(),
                ),
            ),
        }
    }
    (cx.diags.len() == errors_before).then_some((out, texts))
}

fn decode_return_rate(cx: &mut Cx, v: &Val<'_>) -> Option<(u32, u64)> {
    let raw: RawReturnRate = de_table(cx, v, "[return_rate]")?;
    if *raw.alert_above_bp.get_ref() > BASIS_POINTS {
        cx.error(
            codes::INVALID_VALUE,
            raw.alert_above_bp.span(),
            format!(
                "return_rate.alert_above_bp is {}, above 10000 (100%)",
                raw.alert_above_bp.get_ref()
            ),
            Some("basis points: 300 is 3%, 2500 is 25%".to_owned()),
        );
        return None;
    }
    Some((raw.alert_above_bp.into_inner(), raw.min_sold))
}

fn decode_workflow_params(
    cx: &mut Cx,
    v: &Val<'_>,
    spans: &mut Spans,
) -> Option<Map<String, Value>> {
    let t = as_table(cx, v, "[workflow_params]")?;
    let mut out = Map::new();
    let errors_before = cx.diags.len();
    for (key, key_span, val) in entries(t) {
        if Timeouts::NAMES.contains(&key) {
            cx.error(
                codes::INVALID_VALUE,
                key_span,
                format!("`{key}` is a timeout; set it under [timeouts]"),
                None,
            );
            continue;
        }
        if key == RETENTION_PARAM {
            cx.error(
                codes::INVALID_VALUE,
                key_span,
                "`retention` is set in [business_line]".to_owned(),
                Some("write `retention = true` under [business_line]".to_owned()),
            );
            continue;
        }
        if let Some(json) = to_json(cx, val, &format!("workflow_params.{key}")) {
            spans.workflow_params.insert(key.to_owned(), key_span);
            out.insert(key.to_owned(), json);
        }
    }
    (cx.diags.len() == errors_before).then_some(out)
}

/// A TOML value as JSON; floats are refused (money is integer minor units).
fn to_json(cx: &mut Cx, v: &Val<'_>, what: &str) -> Option<Value> {
    Some(match v.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Value::from(n),
            Err(_) => {
                cx.error(
                    codes::INVALID_VALUE,
                    v.span(),
                    format!("{what}: integer out of range"),
                    None,
                );
                return None;
            }
        },
        DeValue::Float(_) => {
            cx.error(
                codes::INVALID_VALUE,
                v.span(),
                format!("{what}: floats are not allowed"),
                Some(
                    "write money as { minor = 1234, currency = \"CNY\" } and shares in basis points"
                        .to_owned(),
                ),
            );
            return None;
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(to_json(cx, item, &format!("{what}[{i}]"))?);
            }
            Value::Array(out)
        }
        DeValue::Table(t) => {
            let mut out = Map::new();
            for (key, _, item) in entries(t) {
                out.insert(key.to_owned(), to_json(cx, item, &format!("{what}.{key}"))?);
            }
            Value::Object(out)
        }
    })
}

fn decode_adapters(cx: &mut Cx, v: &Val<'_>, spans: &mut Spans) -> Option<AdapterSetConfig> {
    let t = as_table(cx, v, "[adapters]")?;
    let errors_before = cx.diags.len();
    let mut found: BTreeMap<&'static str, AdapterConfig> = BTreeMap::new();
    for (key, key_span, val) in entries(t) {
        let Some(system) = SYSTEMS.iter().copied().find(|s| *s == key) else {
            let hint = did_you_mean(key, SYSTEMS)
                .or_else(|| Some(format!("expected one of: {}", SYSTEMS.join(", "))));
            cx.error(
                codes::UNKNOWN_FIELD,
                key_span,
                format!("unknown system `{key}` in [adapters]"),
                hint,
            );
            continue;
        };
        let what = format!("[adapters.{system}]");
        let Some(config) = de_table::<AdapterConfig>(cx, val, &what) else {
            continue;
        };
        let kind_span = match val.get_ref() {
            DeValue::Table(at) => entries(at)
                .find(|(k, _, _)| *k == "kind")
                .map_or(val.span(), |(_, _, kv)| kv.span()),
            _ => val.span(),
        };
        spans.adapters.insert(system, kind_span);
        found.insert(system, config);
    }
    let missing: Vec<&str> = SYSTEMS
        .iter()
        .copied()
        .filter(|s| !found.contains_key(s) && !t.iter().any(|(k, _)| k.get_ref().as_ref() == *s))
        .collect();
    if !missing.is_empty() {
        cx.error(
            codes::MISSING_FIELD,
            v.span(),
            format!(
                "[adapters] is missing {}",
                missing
                    .iter()
                    .map(|s| format!("[adapters.{s}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("every system needs an adapter; `kind = \"sim\"` simulates one".to_owned()),
        );
    }
    if cx.diags.len() != errors_before {
        return None;
    }
    let mut take = |s: &str| found.remove(s);
    Some(AdapterSetConfig {
        order: take("order")?,
        warehouse: take("warehouse")?,
        fulfillment: take("fulfillment")?,
        payment: take("payment")?,
        notify: take("notify")?,
    })
}

// ---------------------------------------------------------------------------------------
// Cross-checks.

/// Finds `name` at `version`, or its newest version when `version` is `None`.
fn find_workflow<'w>(
    workflows: &[&'w Workflow],
    name: &str,
    version: Option<u32>,
) -> Option<&'w Workflow> {
    workflows
        .iter()
        .copied()
        .filter(|w| w.name.value == name && version.is_none_or(|v| w.version.value == v))
        .max_by_key(|w| w.version.value)
}

/// What one walk over a line's workflows found.
#[derive(Default)]
struct Walk {
    /// Every parameter a workflow of the line declares.
    declared: BTreeSet<String>,
    /// Every action called, with the workflows (and after-sales types) that call it.
    actions: BTreeMap<String, BTreeSet<String>>,
}

/// Diagnostics of one line's cross-checks, without repeats.
struct Out<'s, 'a> {
    src: &'s Source<'a>,
    diags: Vec<Diagnostic>,
}

impl Out<'_, '_> {
    fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        span: Range<usize>,
        msg: String,
        hint: Option<String>,
    ) {
        let mut d = self.src.diag(severity, code, Some(span), msg);
        d.hint = hint;
        if !self.diags.contains(&d) {
            self.diags.push(d);
        }
    }
}

/// Checks a loaded line against the workflows and the adapter registry; returns every
/// problem found.
pub fn cross_check(src: &Source<'_>, line: &BusinessLine, cx: &CrossCheck<'_>) -> Vec<Diagnostic> {
    let mut out = Out {
        src,
        diags: Vec::new(),
    };
    let params = line.instance_params();
    let mut walk = Walk::default();
    let mut all_resolved = true;
    for (kind, r) in &line.workflows {
        let span = line.spans.after_sales.get(kind).cloned().unwrap_or(0..0);
        let Some(wf) = find_workflow(cx.workflows, &r.name, Some(r.version)) else {
            all_resolved = false;
            unknown_workflow(&mut out, cx, *kind, r, span);
            continue;
        };
        if let Some(wf_goods) = r.goods_kind()
            && wf_goods != line.goods
        {
            out.push(
                Severity::Error,
                codes::GOODS_KIND_MISMATCH,
                span.clone(),
                format!(
                    "workflow `{r}` is written for {} goods, but `{}` sells {} goods",
                    goods_name(wf_goods),
                    line.id,
                    goods_name(line.goods)
                ),
                Some(format!(
                    "use a `{}.*` workflow for {kind}",
                    goods_name(line.goods)
                )),
            );
        }
        check_phases(&mut out, wf, r, span.clone());
        let mut walker = Walker {
            out: &mut out,
            line,
            cx,
            ref_span: span,
            kind: *kind,
            root: r,
            walk: &mut walk,
            visited: BTreeSet::new(),
        };
        walker.visit(wf, None, &params);
    }
    check_adapters(&mut out, line, cx, &walk);
    if all_resolved {
        check_unused(&mut out, line, &walk);
    }
    out.diags
}

/// The phases a workflow's steps may declare: the service order states a request passes
/// through (the final ones come from how the workflow ends).
const PHASES: &[&str] = &[
    "requested",
    "under_review",
    "retention",
    "approved",
    "awaiting_return_shipment",
    "in_transit",
    "received",
    "inspected",
    "refunding",
    "refunded",
    "reshipping",
    "delivered",
];

fn check_phases(out: &mut Out<'_, '_>, wf: &Workflow, r: &WorkflowRef, span: Range<usize>) {
    fn each<'s>(steps: &'s [aftersales_core::model::Step], found: &mut Vec<(&'s str, &'s str)>) {
        for step in steps {
            if let Some(p) = &step.phase {
                found.push((step.id.value.as_str(), p.value.as_str()));
            }
            if let aftersales_core::model::StepKind::Parallel(par) = &step.kind {
                for b in &par.branches {
                    each(&b.steps, found);
                }
            }
        }
    }
    let mut found = Vec::new();
    each(&wf.steps, &mut found);
    for (step, phase) in found {
        if !PHASES.contains(&phase) {
            out.push(
                Severity::Error,
                codes::UNKNOWN_PHASE,
                span.clone(),
                format!(
                    "workflow `{r}` step `{step}` declares phase `{phase}`, which is not a service order state"
                ),
                Some(format!(
                    "use one of {}; final states come from the workflow's `end` steps",
                    PHASES.join(", ")
                )),
            );
        }
    }
}

fn unknown_workflow(
    out: &mut Out<'_, '_>,
    cx: &CrossCheck<'_>,
    kind: AfterSalesType,
    r: &WorkflowRef,
    span: Range<usize>,
) {
    let versions: Vec<String> = cx
        .workflows
        .iter()
        .filter(|w| w.name.value == r.name)
        .map(|w| w.version.value.to_string())
        .collect();
    let hint = if cx.workflows.is_empty() {
        Some(
            "no workflow files were given; validate them together, e.g. \
             `aftersales validate workflows/ config/business-lines/`"
                .to_owned(),
        )
    } else if !versions.is_empty() {
        Some(format!(
            "`{}` exists in version(s) {}",
            r.name,
            versions.join(", ")
        ))
    } else {
        did_you_mean(&r.name, cx.workflows.iter().map(|w| w.name.value.as_str()))
    };
    let severity = if cx.refs_must_resolve {
        Severity::Error
    } else {
        Severity::Warning
    };
    out.push(
        severity,
        codes::UNKNOWN_WORKFLOW,
        span,
        format!("{kind} runs workflow `{r}`, which is not among the workflows loaded"),
        hint,
    );
}

/// Adapters: registered kinds, the right systems, and every action the workflows call.
fn check_adapters(out: &mut Out<'_, '_>, line: &BusinessLine, cx: &CrossCheck<'_>, walk: &Walk) {
    // Actions outside payment that pay the buyer by themselves, with their system's span.
    let mut money_movers: Vec<(String, String, Range<usize>)> = Vec::new();
    for (system, config) in [
        ("order", &line.adapters.order),
        ("warehouse", &line.adapters.warehouse),
        ("fulfillment", &line.adapters.fulfillment),
        ("payment", &line.adapters.payment),
        ("notify", &line.adapters.notify),
    ] {
        let span = line.spans.adapters.get(system).cloned().unwrap_or(0..0);
        // Validation learns capabilities without secrets (`aftersales validate` works on a
        // machine that holds none); daemon start-up builds with the real environment.
        let built = match cx.registry.build_for_validation(config) {
            Ok(b) => b,
            Err(e) => {
                let hint = match &e {
                    RegistryError::UnknownKind { kind, known } => {
                        did_you_mean(kind, known.iter().map(String::as_str))
                    }
                    _ => None,
                };
                out.push(
                    Severity::Error,
                    codes::ADAPTER,
                    span,
                    format!("[adapters.{system}]: {e}"),
                    hint,
                );
                continue;
            }
        };
        let caps = match system {
            "order" => built.order.map(|a| a.capabilities()),
            "warehouse" => built.warehouse.map(|a| a.capabilities()),
            "fulfillment" => built.fulfillment.map(|a| a.capabilities()),
            "payment" => built.payment.map(|a| a.capabilities()),
            _ => built.notify.map(|a| a.capabilities()),
        };
        let Some(caps) = caps else {
            out.push(
                Severity::Error,
                codes::ADAPTER,
                span,
                format!(
                    "[adapters.{system}]: adapter `{}` does not serve the {system} system",
                    config.kind
                ),
                None,
            );
            continue;
        };
        for action in walk.actions.keys() {
            if system != "payment"
                && action.split_once('.').map(|(s, _)| s) == Some(system)
                && caps.moves_money(action)
            {
                money_movers.push((action.clone(), config.kind.clone(), span.clone()));
            }
        }
        for (action, callers) in &walk.actions {
            if action.split_once('.').map(|(s, _)| s) != Some(system) || caps.supports(action) {
                continue;
            }
            let callers: Vec<&str> = callers.iter().map(String::as_str).collect();
            out.push(
                Severity::Error,
                codes::UNSUPPORTED_ACTION,
                span.clone(),
                format!(
                    "adapter `{}` does not support `{action}`, which {} call(s)",
                    config.kind,
                    callers.join(", ")
                ),
                Some(format!(
                    "bind the {system} system to an adapter that supports it, or run a \
                     workflow that does not need it"
                )),
            );
        }
    }
    if walk.actions.contains_key("payment.refund") {
        for (action, kind, span) in money_movers {
            out.push(
                Severity::Error,
                codes::TWO_REFUND_PATHS,
                span,
                format!(
                    "adapter `{kind}` moves money in `{action}`, and the line's payment \
                     adapter refunds too (`payment.refund`): the buyer would be paid twice"
                ),
                Some(format!(
                    "configure `{kind}` to record refunds without moving money, or refund \
                     only through it and drop `payment.refund` from the workflows"
                )),
            );
        }
    }
}

/// Parameters nothing reads: probably a typo, or a setting for a workflow the line does not
/// run. Called only when every workflow was found, so the list of readers is complete.
fn check_unused(out: &mut Out<'_, '_>, line: &BusinessLine, walk: &Walk) {
    let declared: Vec<&str> = walk.declared.iter().map(String::as_str).collect();
    for (name, span) in &line.spans.workflow_params {
        if walk.declared.contains(name) {
            continue;
        }
        let hint = did_you_mean(name, declared.iter().copied()).or_else(|| {
            Some(if declared.is_empty() {
                "the line's workflows read no parameters".to_owned()
            } else {
                format!("the line's workflows read: {}", declared.join(", "))
            })
        });
        out.push(
            Severity::Warning,
            codes::UNUSED_PARAM,
            span.clone(),
            format!(
                "parameter `{name}` is not read by any workflow of `{}`",
                line.id
            ),
            hint,
        );
    }
    for (name, span) in &line.spans.timeouts {
        if !walk.declared.contains(*name) {
            out.push(
                Severity::Warning,
                codes::UNUSED_PARAM,
                span.clone(),
                format!(
                    "timeout `{name}` is not read by any workflow of `{}`",
                    line.id
                ),
                Some("remove it, or run a workflow that waits on it".to_owned()),
            );
        }
    }
    if line.retention && !walk.declared.contains(RETENTION_PARAM) {
        out.push(
            Severity::Warning,
            codes::RETENTION_UNUSED,
            line.spans.retention.clone(),
            format!(
                "retention is on, but no workflow of `{}` declares the `retention` parameter",
                line.id
            ),
            Some("run workflows with a retention step, or set `retention = false`".to_owned()),
        );
    }
}

/// Walks one after-sales type's workflow and the workflows it calls.
struct Walker<'o, 's, 'a, 'l> {
    out: &'o mut Out<'s, 'a>,
    line: &'l BusinessLine,
    cx: &'l CrossCheck<'l>,
    ref_span: Range<usize>,
    kind: AfterSalesType,
    root: &'l WorkflowRef,
    walk: &'o mut Walk,
    visited: BTreeSet<String>,
}

impl Walker<'_, '_, '_, '_> {
    /// Checks the parameters `given` against `wf`'s declarations, records its actions, and
    /// follows its calls with the parameters a child receives (the parent's, prepared, as
    /// the engine does).
    fn visit(&mut self, wf: &Workflow, called_by: Option<&str>, given: &Value) {
        if !self.visited.insert(wf.key()) {
            return;
        }
        let kind = self.kind;
        let who = match called_by {
            None => format!("workflow `{}` ({kind})", self.root),
            Some(parent) => format!("workflow `{}`, called by `{parent}` ({kind}),", wf.key()),
        };
        let prepared = match prepare("params", &wf.params, given, true) {
            Ok(p) => p,
            Err(errors) => {
                for e in errors {
                    let name = e.path.strip_prefix("params.").unwrap_or(&e.path).to_owned();
                    let spans = &self.line.spans;
                    let (span, hint) = if let Some(s) = spans.workflow_params.get(&name) {
                        (s.clone(), None)
                    } else if let Some(s) = spans.timeouts.get(name.as_str()) {
                        (s.clone(), None)
                    } else if Timeouts::NAMES.contains(&name.as_str()) {
                        (
                            self.ref_span.clone(),
                            Some(format!("set `{name}` under [timeouts]")),
                        )
                    } else {
                        (
                            self.ref_span.clone(),
                            Some(format!("set `{name}` under [workflow_params]")),
                        )
                    };
                    self.out.push(
                        Severity::Error,
                        codes::WORKFLOW_PARAM,
                        span,
                        format!("{who} needs parameter `{name}`: {}", e.message),
                        hint,
                    );
                }
                given.clone()
            }
        };
        for d in &wf.params {
            self.walk.declared.insert(d.name.value.clone());
        }
        let caller = format!("`{}` ({kind})", wf.key());
        for step in wf.all_steps() {
            match &step.kind {
                StepKind::Task(task) => {
                    let compensation = task.compensate.as_ref().map(|c| &c.action.value);
                    for a in std::iter::once(&task.action.value).chain(compensation) {
                        self.walk
                            .actions
                            .entry(a.clone())
                            .or_default()
                            .insert(caller.clone());
                    }
                }
                StepKind::Call(call) => {
                    let version = call.version.as_ref().map(|v| v.value);
                    // An unknown callee is the workflow validator's to report (AS-WF-0119).
                    if let Some(child) =
                        find_workflow(self.cx.workflows, &call.workflow.value, version)
                    {
                        self.visit(child, Some(&wf.key()), &prepared);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_refs_parse_strictly() {
        let r = WorkflowRef::parse("physical.return_refund@1").unwrap();
        assert_eq!(r.name, "physical.return_refund");
        assert_eq!(r.version, 1);
        assert_eq!(r.to_string(), "physical.return_refund@1");
        assert_eq!(r.goods_kind(), Some(GoodsKind::Physical));
        assert_eq!(WorkflowRef::parse("demo.x@2").unwrap().goods_kind(), None);
        for bad in [
            "physical.return_refund",
            "physical.return_refund@0",
            "physical.return_refund@v1",
            "physical.return_refund@+1",
            "Physical.x@1",
            "@1",
            "a..b@1",
        ] {
            assert!(WorkflowRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn business_lines_are_recognised_by_their_header() {
        assert!(is_business_line("# x\n[business_line]\nid = \"a\"\n"));
        assert!(is_business_line("[business_line]   # the header\n"));
        assert!(!is_business_line("[workflow]\nname = \"business_line\"\n"));
        assert!(!is_business_line("# [business_line]\n"));
    }

    #[test]
    fn serde_messages_are_split_into_names() {
        assert_eq!(
            backticked("`foo`, expected one of `a`, `b`"),
            ["foo", "a", "b"]
        );
    }
}
