//! Reads a workflow file into the [`crate::model`], reporting every problem at once.
//!
//! The TOML is parsed with recovery into a tree that keeps byte spans on every key and
//! value, then decoded by hand (not by serde) so that one bad field does not hide the next:
//! unknown keys, wrong types, missing keys, bad durations and bad expressions are all
//! collected with their positions and a hint.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, Severity, Source, WithHint, did_you_mean};
use crate::expr::{Expr, Template, parse_string_template};
use crate::model::*;

/// Stable codes of the problems the parser reports; each has a page in `docs/errors/`.
pub mod codes {
    /// The file is not valid TOML.
    pub const SYNTAX: &str = "AS-WF-0001";
    /// A key the format does not know.
    pub const UNKNOWN_KEY: &str = "AS-WF-0002";
    /// A value of the wrong TOML type.
    pub const WRONG_TYPE: &str = "AS-WF-0003";
    /// A required key is missing.
    pub const MISSING_KEY: &str = "AS-WF-0004";
    /// A value of the right type but not allowed (out of range, unknown name).
    pub const INVALID_VALUE: &str = "AS-WF-0005";
    /// A duration that does not parse.
    pub const BAD_DURATION: &str = "AS-WF-0006";
    /// A step with no kind or with several.
    pub const STEP_KIND: &str = "AS-WF-0007";
    /// An expression or template that does not parse.
    pub const BAD_EXPRESSION: &str = "AS-WF-0008";
    /// A name or id with characters the format does not allow.
    pub const BAD_IDENT: &str = "AS-WF-0009";
    /// A float where the format wants exact numbers.
    pub const FLOAT_VALUE: &str = "AS-WF-0010";
}

type Val<'i> = Spanned<DeValue<'i>>;

/// Decoding state: the source and the diagnostics found so far.
pub(crate) struct Cx<'s, 'a> {
    pub(crate) src: &'s Source<'a>,
    pub(crate) diags: Vec<Diagnostic>,
}

impl Cx<'_, '_> {
    pub(crate) fn error(&mut self, code: &'static str, span: Range<usize>, msg: impl Into<String>) {
        let d = self.src.diag(Severity::Error, code, Some(span), msg);
        self.diags.push(d);
    }

    pub(crate) fn error_hint(
        &mut self,
        code: &'static str,
        span: Range<usize>,
        msg: impl Into<String>,
        hint: Option<String>,
    ) {
        let d = self
            .src
            .diag(Severity::Error, code, Some(span), msg)
            .maybe_hint(hint);
        self.diags.push(d);
    }
}

/// A TOML table being decoded: remembers which keys were asked for, so the rest can be
/// reported as unknown.
pub(crate) struct Tbl<'a, 'i> {
    map: &'a DeTable<'i>,
    pub(crate) span: Range<usize>,
    what: String,
    known: Vec<&'static str>,
    /// Keys that belong to other variants, with the reason they do not apply here.
    misplaced: Vec<(&'static str, String)>,
}

impl<'a, 'i> Tbl<'a, 'i> {
    pub(crate) fn get(&mut self, key: &'static str) -> Option<&'a Val<'i>> {
        self.known.push(key);
        self.map
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.iter().any(|(k, _)| k.get_ref().as_ref() == key)
    }

    pub(crate) fn req(&mut self, cx: &mut Cx, key: &'static str) -> Option<&'a Val<'i>> {
        let v = self.get(key);
        if v.is_none() {
            cx.error(
                codes::MISSING_KEY,
                self.span.clone(),
                format!("{} is missing required key `{key}`", self.what),
            );
        }
        v
    }

    pub(crate) fn misplaced(&mut self, key: &'static str, why: String) {
        self.misplaced.push((key, why));
    }

    pub(crate) fn entries(
        &self,
    ) -> impl Iterator<Item = (&'a Spanned<std::borrow::Cow<'i, str>>, &'a Val<'i>)> {
        self.map.iter()
    }

    pub(crate) fn finish(self, cx: &mut Cx) {
        for (k, _) in self.map.iter() {
            let key = k.get_ref().as_ref();
            if self.known.contains(&key) {
                continue;
            }
            if let Some((_, why)) = self.misplaced.iter().find(|(m, _)| *m == key) {
                cx.error(codes::UNKNOWN_KEY, k.span(), why.clone());
                continue;
            }
            let mut known = self.known.clone();
            known.sort_unstable();
            known.dedup();
            let hint = did_you_mean(key, known.iter().copied())
                .or_else(|| Some(format!("expected one of: {}", known.join(", "))));
            cx.error_hint(
                codes::UNKNOWN_KEY,
                k.span(),
                format!("unknown key `{key}` in {}", self.what),
                hint,
            );
        }
    }
}

pub(crate) fn type_name(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn wrong_type(cx: &mut Cx, v: &Val, what: &str, expected: &str) {
    cx.error(
        codes::WRONG_TYPE,
        v.span(),
        format!(
            "{what} must be {expected}, found {}",
            type_name(v.get_ref())
        ),
    );
}

pub(crate) fn table<'a, 'i>(cx: &mut Cx, v: &'a Val<'i>, what: &str) -> Option<Tbl<'a, 'i>> {
    match v.get_ref() {
        DeValue::Table(map) => Some(Tbl {
            map,
            span: v.span(),
            what: what.to_owned(),
            known: Vec::new(),
            misplaced: Vec::new(),
        }),
        _ => {
            wrong_type(cx, v, what, "a table");
            None
        }
    }
}

pub(crate) fn string(cx: &mut Cx, v: &Val, what: &str) -> Option<Sp<String>> {
    match v.get_ref() {
        DeValue::String(s) => Some(Sp::new(s.to_string(), v.span())),
        _ => {
            wrong_type(cx, v, what, "a string");
            None
        }
    }
}

pub(crate) fn integer(cx: &mut Cx, v: &Val, what: &str) -> Option<Sp<i64>> {
    match v.get_ref() {
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(Sp::new(n, v.span())),
            Err(_) => {
                cx.error(
                    codes::INVALID_VALUE,
                    v.span(),
                    format!("{what} is out of range"),
                );
                None
            }
        },
        _ => {
            wrong_type(cx, v, what, "an integer");
            None
        }
    }
}

pub(crate) fn positive_u32(cx: &mut Cx, v: &Val, what: &str) -> Option<Sp<u32>> {
    let n = integer(cx, v, what)?;
    match u32::try_from(n.value) {
        Ok(x) if x >= 1 => Some(Sp::new(x, n.span)),
        _ => {
            cx.error(
                codes::INVALID_VALUE,
                n.span,
                format!(
                    "{what} must be a whole number from 1 to {}, found {}",
                    u32::MAX,
                    n.value
                ),
            );
            None
        }
    }
}

pub(crate) fn boolean(cx: &mut Cx, v: &Val, what: &str) -> Option<Sp<bool>> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(Sp::new(*b, v.span())),
        _ => {
            wrong_type(cx, v, what, "true or false");
            None
        }
    }
}

/// A step id, branch id or field name: lowercase letters, digits and `_`, starting with a
/// letter.
pub(crate) fn ident(cx: &mut Cx, v: &Val, what: &str) -> Option<Sp<String>> {
    let s = string(cx, v, what)?;
    if is_ident(&s.value) {
        Some(s)
    } else {
        cx.error_hint(
            codes::BAD_IDENT,
            s.span.clone(),
            format!("{what} `{}` is not a valid identifier", s.value),
            Some("use lowercase letters, digits and `_`, starting with a letter".to_owned()),
        );
        None
    }
}

pub(crate) fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 64
}

/// A dotted name such as `physical.return_refund` or `merchant.decision`.
pub(crate) fn dotted_name(cx: &mut Cx, v: &Val, what: &str) -> Option<Sp<String>> {
    let s = string(cx, v, what)?;
    if !s.value.is_empty()
        && s.value.len() <= 128
        && s.value
            .split('.')
            .all(|seg| is_ident(seg) || seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty())
    {
        Some(s)
    } else {
        cx.error_hint(
            codes::BAD_IDENT,
            s.span.clone(),
            format!("{what} `{}` is not a valid name", s.value),
            Some("use dot-separated lowercase words, e.g. `physical.return_refund`".to_owned()),
        );
        None
    }
}

pub(crate) fn duration(cx: &mut Cx, v: &Val, what: &str) -> Option<DurationSpec> {
    let s = string(cx, v, what)?;
    let text = s.value.trim();
    if let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
        let inner = inner.trim();
        if let Some(name) = inner.strip_prefix("params.")
            && is_ident(name)
        {
            return Some(DurationSpec::Param(Sp::new(name.to_owned(), s.span)));
        }
        cx.error_hint(
            codes::BAD_DURATION,
            s.span,
            format!("{what} `{}` is not a duration", s.value),
            Some(
                "write a duration such as \"30s\" or \"48h\", or a parameter as \"${params.name}\""
                    .to_owned(),
            ),
        );
        return None;
    }
    match crate::duration::parse(text) {
        Ok(d) => Some(DurationSpec::Fixed(Sp::new(d, s.span))),
        Err(why) => {
            cx.error_hint(
                codes::BAD_DURATION,
                s.span,
                format!("{what} `{}` is not a duration: {why}", s.value),
                Some(
                    "durations look like \"500ms\", \"30s\", \"10m\", \"48h\", \"7d\" or \"1h30m\""
                        .to_owned(),
                ),
            );
            None
        }
    }
}

/// Where a string value's text starts in the file (after the opening quotes).
fn string_text_offset(src: &Source, span: &Range<usize>) -> usize {
    let raw = src.text.get(span.clone()).unwrap_or("");
    let open = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        let after = &raw[3..];
        3 + if after.starts_with("\r\n") {
            2
        } else if after.starts_with('\n') {
            1
        } else {
            0
        }
    } else if raw.starts_with('"') || raw.starts_with('\'') {
        1
    } else {
        0
    };
    span.start + open
}

pub(crate) fn template(cx: &mut Cx, v: &Val, what: &str) -> Option<Template> {
    let span = v.span();
    match v.get_ref() {
        DeValue::String(s) => {
            let offset = string_text_offset(cx.src, &span);
            match parse_string_template(s, offset, span.clone()) {
                Ok(t) => Some(t),
                Err((msg, bad)) => {
                    cx.error_hint(
                        codes::BAD_EXPRESSION,
                        bad,
                        format!("{what}: {msg}"),
                        Some("expressions are CEL, e.g. \"${input.amount}\" or \"${steps.refund.refund_id}\"".to_owned()),
                    );
                    None
                }
            }
        }
        DeValue::Integer(_) => {
            integer(cx, v, what).map(|n| Template::Literal(serde_json::Value::from(n.value), span))
        }
        DeValue::Boolean(b) => Some(Template::Literal(serde_json::Value::Bool(*b), span)),
        DeValue::Datetime(d) => Some(Template::Literal(
            serde_json::Value::String(d.to_string()),
            span,
        )),
        DeValue::Float(_) => {
            cx.error_hint(
                codes::FLOAT_VALUE,
                span,
                format!("{what} is a float; workflow values never use floats"),
                Some(
                    "write money as { minor = 1250, currency = \"CNY\" } and counts as integers"
                        .to_owned(),
                ),
            );
            None
        }
        DeValue::Array(items) => {
            let mut out = Vec::new();
            let mut ok = true;
            for item in items.iter() {
                match template(cx, item, what) {
                    Some(t) => out.push(t),
                    None => ok = false,
                }
            }
            ok.then_some(Template::List(out, span))
        }
        DeValue::Table(map) => {
            let mut out = Vec::new();
            let mut ok = true;
            for (k, item) in map.iter() {
                let name = format!("{what}.{}", k.get_ref());
                match template(cx, item, &name) {
                    Some(t) => out.push((k.get_ref().to_string(), t)),
                    None => ok = false,
                }
            }
            if ok {
                // A literal-only table is a literal value (money, for instance).
                if out.iter().all(|(_, t)| matches!(t, Template::Literal(..))) {
                    let mut m = serde_json::Map::new();
                    for (k, t) in out {
                        if let Template::Literal(v, _) = t {
                            m.insert(k, v);
                        }
                    }
                    Some(Template::Literal(serde_json::Value::Object(m), span))
                } else {
                    Some(Template::Object(out, span))
                }
            } else {
                None
            }
        }
    }
}

/// A plain CEL condition (no `${}`), as in `if = "steps.x.ok"`.
pub(crate) fn condition(cx: &mut Cx, v: &Val, what: &str) -> Option<Expr> {
    let s = string(cx, v, what)?;
    let offset = string_text_offset(cx.src, &s.span);
    let text = s.value.trim();
    let text = text
        .strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    match Expr::compile(text, offset..offset + s.value.len()) {
        Ok(e) => Some(e),
        Err(msg) => {
            cx.error_hint(
                codes::BAD_EXPRESSION,
                s.span,
                format!("{what} `{}` does not parse: {msg}", s.value),
                Some(
                    "conditions are CEL, e.g. \"steps.intercept.result == 'too_late'\"".to_owned(),
                ),
            );
            None
        }
    }
}

fn args(cx: &mut Cx, v: &Val, what: &str) -> Vec<Arg> {
    let Some(tbl) = table(cx, v, what) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, item) in tbl.entries() {
        let name = Sp::new(k.get_ref().to_string(), k.span());
        if let Some(value) = template(cx, item, &format!("{what}.{}", name.value)) {
            out.push(Arg { name, value });
        }
    }
    out
}

fn field_decls(cx: &mut Cx, v: &Val, what: &str, is_param: bool) -> Vec<FieldDecl> {
    let Some(tbl) = table(cx, v, what) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, item) in tbl.entries() {
        let key = k.get_ref().as_ref();
        let fwhat = format!("{what}.{key}");
        if !is_ident(key) {
            cx.error_hint(
                codes::BAD_IDENT,
                k.span(),
                format!("field name `{key}` in {what} is not a valid identifier"),
                Some("use lowercase letters, digits and `_`, starting with a letter".to_owned()),
            );
            continue;
        }
        let name = Sp::new(key.to_owned(), k.span());
        // Shorthand: `order_id = "string"`.
        let (ty_val, required_val, default_val, desc_val, items_val, mut tbl_opt) =
            match item.get_ref() {
                DeValue::String(_) => (Some(item), None, None, None, None, None),
                DeValue::Table(_) => {
                    let Some(mut t) = table(cx, item, &fwhat) else {
                        continue;
                    };
                    let ty = t.req(cx, "type");
                    let required = if is_param { None } else { t.get("required") };
                    let default = t.get("default");
                    let desc = t.get("description");
                    let items = t.get("items");
                    (ty, required, default, desc, items, Some(t))
                }
                _ => {
                    wrong_type(cx, item, &fwhat, "a type name or a table with `type`");
                    continue;
                }
            };
        if let Some(t) = tbl_opt.take() {
            t.finish(cx);
        }
        let Some(ty_val) = ty_val else { continue };
        let Some(ty_name) = string(cx, ty_val, &format!("{fwhat}.type")) else {
            continue;
        };
        let Some(mut ty) = ValueType::parse(&ty_name.value) else {
            let hint = did_you_mean(&ty_name.value, ValueType::NAMES)
                .or_else(|| Some(format!("types are: {}", ValueType::NAMES.join(", "))));
            cx.error_hint(
                codes::INVALID_VALUE,
                ty_name.span,
                format!("unknown type `{}` for {fwhat}", ty_name.value),
                hint,
            );
            continue;
        };
        if let Some(items) = items_val
            && let Some(items_name) = string(cx, items, &format!("{fwhat}.items"))
        {
            match (ValueType::parse(&items_name.value), &ty) {
                (Some(inner), ValueType::List(_)) => ty = ValueType::List(Some(Box::new(inner))),
                (None, _) => cx.error(
                    codes::INVALID_VALUE,
                    items_name.span,
                    format!("unknown item type `{}` for {fwhat}", items_name.value),
                ),
                (Some(_), _) => cx.error(
                    codes::INVALID_VALUE,
                    items_name.span,
                    format!("{fwhat} has `items` but is not a list"),
                ),
            }
        }
        let default = default_val.and_then(|d| {
            let t = template(cx, d, &format!("{fwhat}.default"))?;
            match t {
                Template::Literal(v, _) => Some(v),
                other => {
                    cx.error(
                        codes::INVALID_VALUE,
                        other.span(),
                        format!("{fwhat}.default must be a literal value, not an expression"),
                    );
                    None
                }
            }
        });
        if let (Some(d), ValueType::Duration) = (&default, &ty)
            && let Some(text) = d.as_str()
            && let Err(why) = crate::duration::parse(text)
        {
            cx.error(
                codes::BAD_DURATION,
                default_val.map_or(name.span.clone(), Spanned::span),
                format!("{fwhat}.default `{text}` is not a duration: {why}"),
            );
        }
        let required = match required_val {
            Some(r) => boolean(cx, r, &format!("{fwhat}.required")).is_none_or(|b| b.value),
            None => default.is_none(),
        };
        let description = desc_val
            .and_then(|d| string(cx, d, &format!("{fwhat}.description")))
            .map(|s| s.value);
        out.push(FieldDecl {
            name,
            ty,
            required,
            default,
            description,
        });
    }
    out
}

fn retry_policy(cx: &mut Cx, v: &Val, what: &str) -> Option<RetryPolicy> {
    let mut t = table(cx, v, what)?;
    let max_attempts = t
        .get("max_attempts")
        .and_then(|v| positive_u32(cx, v, &format!("{what}.max_attempts")))
        .map_or(3, |s| s.value);
    let initial = t
        .get("initial")
        .and_then(|v| fixed_duration(cx, v, &format!("{what}.initial")))
        .unwrap_or(std::time::Duration::from_secs(1));
    let max_delay_val = t.get("max_delay");
    let max_delay = max_delay_val
        .and_then(|v| fixed_duration(cx, v, &format!("{what}.max_delay")))
        .unwrap_or(std::time::Duration::from_secs(300));
    let multiplier = match t.get("multiplier") {
        None => 2.0,
        Some(m) => match m.get_ref() {
            DeValue::Integer(i) => {
                i64::from_str_radix(i.as_str(), i.radix()).map_or(-1.0, |n| n as f64)
            }
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().unwrap_or(-1.0),
            _ => {
                wrong_type(cx, m, &format!("{what}.multiplier"), "a number");
                2.0
            }
        },
    };
    if !(1.0..=10.0).contains(&multiplier) {
        cx.error(
            codes::INVALID_VALUE,
            t.get("multiplier").map_or(t.span.clone(), Spanned::span),
            format!("{what}.multiplier must be between 1 and 10"),
        );
    }
    let jitter = match t.get("jitter") {
        None => Jitter::Full,
        Some(j) => match string(cx, j, &format!("{what}.jitter")) {
            Some(s) => match s.value.as_str() {
                "none" => Jitter::None,
                "full" => Jitter::Full,
                "equal" => Jitter::Equal,
                other => {
                    cx.error_hint(
                        codes::INVALID_VALUE,
                        s.span,
                        format!("unknown jitter `{other}`"),
                        Some("jitter is one of: none, full, equal".to_owned()),
                    );
                    Jitter::Full
                }
            },
            None => Jitter::Full,
        },
    };
    let retry_on = match t.get("on") {
        None => vec![
            RetryOn::Transient,
            RetryOn::UnknownOutcome,
            RetryOn::Timeout,
        ],
        Some(list) => match list.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    if let Some(s) = string(cx, item, &format!("{what}.on")) {
                        match s.value.as_str() {
                            "transient" => out.push(RetryOn::Transient),
                            "unknown_outcome" => out.push(RetryOn::UnknownOutcome),
                            "timeout" => out.push(RetryOn::Timeout),
                            other => cx.error_hint(
                                codes::INVALID_VALUE,
                                s.span,
                                format!("unknown error kind `{other}` in {what}.on"),
                                Some("retryable kinds are: transient, unknown_outcome, timeout (permanent errors never retry)".to_owned()),
                            ),
                        }
                    }
                }
                out
            }
            _ => {
                wrong_type(cx, list, &format!("{what}.on"), "an array of error kinds");
                Vec::new()
            }
        },
    };
    if initial > max_delay {
        cx.error(
            codes::INVALID_VALUE,
            max_delay_val.map_or(t.span.clone(), Spanned::span),
            format!("{what}.max_delay is shorter than {what}.initial"),
        );
    }
    let span = t.span.clone();
    t.finish(cx);
    Some(RetryPolicy {
        max_attempts,
        initial,
        multiplier,
        max_delay,
        jitter,
        retry_on,
        span,
    })
}

fn fixed_duration(cx: &mut Cx, v: &Val, what: &str) -> Option<std::time::Duration> {
    match duration(cx, v, what)? {
        DurationSpec::Fixed(d) => Some(d.value),
        DurationSpec::Param(p) => {
            cx.error(
                codes::BAD_DURATION,
                p.span,
                format!("{what} must be a fixed duration, not a parameter"),
            );
            None
        }
    }
}

const KIND_KEYS: [&str; 6] = ["action", "wait", "sleep", "parallel", "call", "end"];
const TASK_KEYS: [&str; 7] = [
    "action",
    "input",
    "retry",
    "timeout",
    "deadline",
    "compensate",
    "pivot",
];

fn next(cx: &mut Cx, v: &Val) -> Next {
    match v.get_ref() {
        DeValue::String(_) => match ident(cx, v, "next") {
            Some(s) => Next::To(s),
            None => Next::Implicit,
        },
        DeValue::Array(items) => {
            let mut cases = Vec::new();
            for item in items.iter() {
                let Some(mut t) = table(cx, item, "a `next` case") else {
                    continue;
                };
                let when = t.get("if").and_then(|c| condition(cx, c, "`if`"));
                let goto = t.req(cx, "goto").and_then(|g| ident(cx, g, "goto"));
                t.finish(cx);
                if let Some(goto) = goto {
                    cases.push(Case { when, goto });
                }
            }
            Next::Cases(cases)
        }
        _ => {
            wrong_type(cx, v, "next", "a step id or an array of { if, goto } cases");
            Next::Implicit
        }
    }
}

fn step(cx: &mut Cx, v: &Val, in_branch: bool) -> Option<Step> {
    let mut t = table(cx, v, "step")?;
    let id = t.req(cx, "id").and_then(|v| ident(cx, v, "step id"));
    let what = match &id {
        Some(id) => format!("step `{}`", id.value),
        None => "step".to_owned(),
    };
    t.what = what.clone();
    let description = t
        .get("description")
        .and_then(|v| string(cx, v, "description"))
        .map(|s| s.value);
    let max_visits = t
        .get("max_visits")
        .and_then(|v| positive_u32(cx, v, "max_visits"));
    let phase = t.get("phase").and_then(|v| ident(cx, v, "phase"));
    let next_val = t.get("next");
    let present: Vec<&str> = KIND_KEYS.iter().copied().filter(|k| t.has(k)).collect();
    let kind_name = match present.as_slice() {
        [] if next_val.is_some() => "choice",
        [] => {
            cx.error_hint(
                codes::STEP_KIND,
                t.span.clone(),
                format!("{what} has no kind"),
                Some("give it one of: action, wait, sleep, parallel, call, end (or only `next` cases for a choice)".to_owned()),
            );
            "none"
        }
        [one] => one,
        [first, second, ..] => {
            cx.error_hint(
                codes::STEP_KIND,
                t.span.clone(),
                format!("{what} has more than one kind: `{first}` and `{second}`"),
                Some("split it into two steps".to_owned()),
            );
            "none"
        }
    };
    let kind_label = match kind_name {
        "action" => "task",
        other => other,
    };
    // Keys that belong to other kinds get a precise message rather than "unknown key".
    for key in TASK_KEYS
        .iter()
        .chain(["on_failure", "branch", "reason", "output"].iter())
    {
        t.misplaced(
            key,
            format!("key `{key}` does not apply to a {kind_label} step"),
        );
    }
    for key in KIND_KEYS {
        if key != kind_name {
            t.misplaced(
                key,
                format!("{what} has more than one kind: `{kind_name}` and `{key}`"),
            );
        }
    }
    let on_failure =
        |cx: &mut Cx, t: &mut Tbl| t.get("on_failure").and_then(|v| ident(cx, v, "on_failure"));
    let kind = match kind_name {
        "action" => {
            let action = t.get("action").and_then(|v| dotted_name(cx, v, "action"));
            let input = t
                .get("input")
                .map(|v| args(cx, v, "input"))
                .unwrap_or_default();
            let retry = t.get("retry").and_then(|v| retry_policy(cx, v, "retry"));
            let timeout = t.get("timeout").and_then(|v| duration(cx, v, "timeout"));
            let deadline = t.get("deadline").and_then(|v| duration(cx, v, "deadline"));
            let compensate = t.get("compensate").and_then(|v| compensation(cx, v));
            let pivot = t.get("pivot").and_then(|v| boolean(cx, v, "pivot"));
            let on_failure = on_failure(cx, &mut t);
            action.map(|action| {
                StepKind::Task(Box::new(Task {
                    action,
                    input,
                    retry,
                    timeout,
                    deadline,
                    compensate,
                    pivot,
                    on_failure,
                }))
            })
        }
        "wait" => t.get("wait").and_then(|v| wait(cx, v)).map(StepKind::Wait),
        "sleep" => t
            .get("sleep")
            .and_then(|v| sleep(cx, v))
            .map(StepKind::Sleep),
        "choice" => Some(StepKind::Choice),
        "parallel" => {
            let join = t.get("parallel").and_then(|v| join(cx, v));
            let branches = match t.req(cx, "branch") {
                Some(b) => branches(cx, b, in_branch),
                None => Vec::new(),
            };
            let on_failure = on_failure(cx, &mut t);
            join.map(|join| {
                StepKind::Parallel(Parallel {
                    join,
                    branches,
                    on_failure,
                })
            })
        }
        "call" => {
            let call = t.get("call").and_then(|v| call(cx, v));
            let input = t
                .get("input")
                .map(|v| args(cx, v, "input"))
                .unwrap_or_default();
            let on_failure = on_failure(cx, &mut t);
            call.map(|(workflow, version)| {
                StepKind::Call(Call {
                    workflow,
                    version,
                    input,
                    on_failure,
                })
            })
        }
        "end" => {
            let status = t.get("end").and_then(|v| {
                let s = string(cx, v, "end")?;
                match EndStatus::parse(&s.value) {
                    Some(st) => Some(Sp::new(st, s.span)),
                    None => {
                        let hint =
                            did_you_mean(&s.value, ["completed", "rejected", "closed", "failed"])
                                .or_else(|| {
                                    Some(
                                        "end states are: completed, rejected, closed, failed"
                                            .to_owned(),
                                    )
                                });
                        cx.error_hint(
                            codes::INVALID_VALUE,
                            s.span,
                            format!("unknown end state `{}`", s.value),
                            hint,
                        );
                        None
                    }
                }
            });
            let reason = t.get("reason").and_then(|v| template(cx, v, "reason"));
            let output = t
                .get("output")
                .map(|v| args(cx, v, "output"))
                .unwrap_or_default();
            if in_branch {
                cx.error_hint(
                    codes::STEP_KIND,
                    t.span.clone(),
                    format!("{what} is an end step inside a parallel branch"),
                    Some(
                        "a branch ends when a step has no `next`; end the instance after the join"
                            .to_owned(),
                    ),
                );
            }
            status.map(|status| {
                StepKind::End(End {
                    status,
                    reason,
                    output,
                })
            })
        }
        _ => None,
    };
    let next = match next_val {
        Some(v) => {
            if kind_name == "end" {
                cx.error(
                    codes::UNKNOWN_KEY,
                    v.span(),
                    format!("{what} is an end step and cannot have `next`"),
                );
                Next::Implicit
            } else {
                next(cx, v)
            }
        }
        None => Next::Implicit,
    };
    let span = t.span.clone();
    t.finish(cx);
    Some(Step {
        id: id?,
        kind: kind?,
        next,
        max_visits,
        phase,
        description,
        span,
    })
}

fn compensation(cx: &mut Cx, v: &Val) -> Option<Compensation> {
    let mut t = table(cx, v, "compensate")?;
    let action = t
        .req(cx, "action")
        .and_then(|v| dotted_name(cx, v, "compensate.action"));
    let input = t
        .get("input")
        .map(|v| args(cx, v, "compensate.input"))
        .unwrap_or_default();
    let retry = t
        .get("retry")
        .and_then(|v| retry_policy(cx, v, "compensate.retry"));
    let timeout = t
        .get("timeout")
        .and_then(|v| duration(cx, v, "compensate.timeout"));
    let span = t.span.clone();
    t.finish(cx);
    Some(Compensation {
        action: action?,
        input,
        retry,
        timeout,
        span,
    })
}

fn wait(cx: &mut Cx, v: &Val) -> Option<Wait> {
    let mut t = table(cx, v, "wait")?;
    let signal = t.get("signal");
    let event = t.get("event");
    let (kind, name) = match (signal, event) {
        (Some(s), None) => (WaitKind::Signal, dotted_name(cx, s, "wait.signal")),
        (None, Some(e)) => (WaitKind::Event, dotted_name(cx, e, "wait.event")),
        (Some(_), Some(e)) => {
            cx.error(
                codes::INVALID_VALUE,
                e.span(),
                "a wait names either a `signal` or an `event`, not both",
            );
            (WaitKind::Signal, None)
        }
        (None, None) => {
            cx.error_hint(
                codes::MISSING_KEY,
                t.span.clone(),
                "wait is missing `signal` or `event`",
                Some("e.g. wait = { signal = \"merchant.decision\", timeout = \"48h\", on_timeout = \"approve\" }".to_owned()),
            );
            (WaitKind::Signal, None)
        }
    };
    let correlate = t
        .get("correlate")
        .and_then(|v| template(cx, v, "wait.correlate"));
    if kind == WaitKind::Signal
        && let Some(c) = &correlate
    {
        cx.error_hint(
            codes::INVALID_VALUE,
            c.span(),
            "`correlate` applies to events, not signals",
            Some(
                "signals are sent to an instance by id; events find it by their correlation key"
                    .to_owned(),
            ),
        );
    }
    let timeout = t
        .get("timeout")
        .and_then(|v| duration(cx, v, "wait.timeout"));
    let on_timeout = t
        .get("on_timeout")
        .and_then(|v| ident(cx, v, "wait.on_timeout"));
    let payload = t
        .get("payload")
        .map(|v| field_decls(cx, v, "wait.payload", false))
        .unwrap_or_default();
    let span = t.span.clone();
    t.finish(cx);
    Some(Wait {
        kind,
        name: name?,
        correlate,
        timeout,
        on_timeout,
        payload,
        span,
    })
}

fn sleep(cx: &mut Cx, v: &Val) -> Option<Sleep> {
    match v.get_ref() {
        DeValue::String(_) => duration(cx, v, "sleep").map(Sleep::For),
        DeValue::Table(_) => {
            let mut t = table(cx, v, "sleep")?;
            let r#for = t.get("for");
            let until = t.get("until");
            let out = match (r#for, until) {
                (Some(f), None) => duration(cx, f, "sleep.for").map(Sleep::For),
                (None, Some(u)) => template(cx, u, "sleep.until").map(Sleep::Until),
                _ => {
                    cx.error_hint(
                        codes::INVALID_VALUE,
                        t.span.clone(),
                        "sleep needs exactly one of `for` and `until`",
                        Some("sleep = \"48h\", sleep = { for = \"48h\" } or sleep = { until = \"${input.deadline}\" }".to_owned()),
                    );
                    None
                }
            };
            t.finish(cx);
            out
        }
        _ => {
            wrong_type(
                cx,
                v,
                "sleep",
                "a duration or a table with `for` or `until`",
            );
            None
        }
    }
}

fn join(cx: &mut Cx, v: &Val) -> Option<Join> {
    let s = match v.get_ref() {
        DeValue::Table(_) => {
            let mut t = table(cx, v, "parallel")?;
            let j = t.get("join").and_then(|v| string(cx, v, "parallel.join"));
            t.finish(cx);
            j.unwrap_or_else(|| Sp::new("all".to_owned(), v.span()))
        }
        DeValue::String(_) => string(cx, v, "parallel")?,
        _ => {
            wrong_type(cx, v, "parallel", "a join rule or a table with `join`");
            return None;
        }
    };
    match s.value.as_str() {
        "all" => Some(Join::All),
        "any" => Some(Join::Any),
        "first_failure" => Some(Join::FirstFailure),
        other => {
            let hint = did_you_mean(other, ["all", "any", "first_failure"])
                .or_else(|| Some("join is one of: all, any, first_failure".to_owned()));
            cx.error_hint(
                codes::INVALID_VALUE,
                s.span,
                format!("unknown join `{other}`"),
                hint,
            );
            None
        }
    }
}

fn branches(cx: &mut Cx, v: &Val, nested: bool) -> Vec<Branch> {
    let DeValue::Array(items) = v.get_ref() else {
        wrong_type(cx, v, "branch", "an array of tables ([[step.branch]])");
        return Vec::new();
    };
    if nested {
        cx.error_hint(
            codes::STEP_KIND,
            v.span(),
            "parallel steps cannot be nested inside a branch",
            Some("call a sub-workflow from the branch instead".to_owned()),
        );
    }
    let mut out = Vec::new();
    for item in items.iter() {
        let Some(mut t) = table(cx, item, "branch") else {
            continue;
        };
        let id = t.req(cx, "id").and_then(|v| ident(cx, v, "branch id"));
        let mut steps = Vec::new();
        if let Some(list) = t.req(cx, "step") {
            match list.get_ref() {
                DeValue::Array(items) => {
                    for s in items.iter() {
                        if let Some(s) = step(cx, s, true) {
                            steps.push(s);
                        }
                    }
                }
                _ => wrong_type(
                    cx,
                    list,
                    "branch.step",
                    "an array of tables ([[step.branch.step]])",
                ),
            }
        }
        let span = t.span.clone();
        t.finish(cx);
        if let Some(id) = id {
            out.push(Branch { id, steps, span });
        }
    }
    out
}

fn call(cx: &mut Cx, v: &Val) -> Option<(Sp<String>, Option<Sp<u32>>)> {
    match v.get_ref() {
        DeValue::String(_) => dotted_name(cx, v, "call").map(|n| (n, None)),
        DeValue::Table(_) => {
            let mut t = table(cx, v, "call")?;
            let name = t
                .req(cx, "workflow")
                .and_then(|v| dotted_name(cx, v, "call.workflow"));
            let version = t
                .get("version")
                .and_then(|v| positive_u32(cx, v, "call.version"));
            t.finish(cx);
            name.map(|n| (n, version))
        }
        _ => {
            wrong_type(cx, v, "call", "a workflow name or a table with `workflow`");
            None
        }
    }
}

/// Parses one workflow file. Returns the workflow when the file is complete enough to
/// build one (it may still carry errors), and every diagnostic found.
pub fn parse_workflow(src: &Source) -> (Option<Workflow>, Vec<Diagnostic>) {
    let mut cx = Cx {
        src,
        diags: Vec::new(),
    };
    let (doc, errors) = DeTable::parse_recoverable(src.text);
    for e in &errors {
        let span = e.span().unwrap_or(0..0);
        cx.error_hint(
            codes::SYNTAX,
            span,
            format!(
                "invalid TOML: {}",
                e.message().trim_end_matches('\n').trim_end_matches('.')
            ),
            None,
        );
    }
    if !errors.is_empty() {
        // Decoding a broken tree produces confusing follow-up errors; stop at syntax.
        return (None, cx.diags);
    }
    let root_span = doc.span();
    let root = Spanned::new(root_span.clone(), DeValue::Table(doc.into_inner()));
    let Some(mut root_t) = table(&mut cx, &root, "the file") else {
        return (None, cx.diags);
    };
    root_t.what = "the file (top level)".to_owned();
    let header = root_t.req(&mut cx, "workflow");
    let mut name = None;
    let mut version = None;
    let mut description = None;
    let mut start = None;
    let mut span = 0..0;
    if let Some(h) = header
        && let Some(mut t) = table(&mut cx, h, "[workflow]")
    {
        span = t.span.clone();
        name = t
            .req(&mut cx, "name")
            .and_then(|v| dotted_name(&mut cx, v, "workflow name"));
        version = t
            .req(&mut cx, "version")
            .and_then(|v| positive_u32(&mut cx, v, "version"));
        description = t
            .get("description")
            .and_then(|v| string(&mut cx, v, "description"))
            .map(|s| s.value);
        start = t.get("start").and_then(|v| ident(&mut cx, v, "start"));
        t.finish(&mut cx);
    }
    let inputs = root_t
        .get("input")
        .map(|v| field_decls(&mut cx, v, "[input]", false))
        .unwrap_or_default();
    let params = root_t
        .get("params")
        .map(|v| field_decls(&mut cx, v, "[params]", true))
        .unwrap_or_default();
    let mut defaults = Defaults::default();
    if let Some(d) = root_t.get("defaults")
        && let Some(mut t) = table(&mut cx, d, "[defaults]")
    {
        defaults.retry = t
            .get("retry")
            .and_then(|v| retry_policy(&mut cx, v, "defaults.retry"));
        defaults.timeout = t
            .get("timeout")
            .and_then(|v| duration(&mut cx, v, "defaults.timeout"));
        t.finish(&mut cx);
    }
    let mut steps = Vec::new();
    if let Some(list) = root_t.req(&mut cx, "step") {
        match list.get_ref() {
            DeValue::Array(items) => {
                for s in items.iter() {
                    if let Some(s) = step(&mut cx, s, false) {
                        steps.push(s);
                    }
                }
            }
            _ => wrong_type(&mut cx, list, "step", "an array of tables ([[step]])"),
        }
    }
    root_t.finish(&mut cx);
    let wf = match (name, version) {
        (Some(name), Some(version)) => Some(Workflow {
            name,
            version,
            description,
            start,
            inputs,
            params,
            defaults,
            steps,
            span,
        }),
        _ => None,
    };
    cx.diags.sort_by_key(|d| (d.line, d.column));
    (wf, cx.diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Option<Workflow>, Vec<Diagnostic>) {
        let src = Source::new("t.toml", text);
        parse_workflow(&src)
    }

    const MINIMAL: &str = r#"
[workflow]
name = "demo.minimal"
version = 1

[input]
order_id = "string"
amount = { type = "money", description = "to refund" }

[[step]]
id = "refund"
action = "payment.refund"
input = { payment_id = "${input.order_id}", amount = "${input.amount}" }
retry = { max_attempts = 5, initial = "1s", max_delay = "1m" }
pivot = true

[[step]]
id = "done"
end = "completed"
reason = "refunded ${input.amount.minor}"
"#;

    #[test]
    fn parses_a_minimal_workflow() {
        let (wf, diags) = parse(MINIMAL);
        assert!(diags.is_empty(), "{diags:?}");
        let wf = wf.unwrap();
        assert_eq!(wf.key(), "demo.minimal@1");
        assert_eq!(wf.inputs.len(), 2);
        assert!(wf.inputs.iter().all(|f| f.required));
        assert_eq!(wf.steps.len(), 2);
        let StepKind::Task(task) = &wf.steps[0].kind else {
            panic!("task")
        };
        assert_eq!(task.action.value, "payment.refund");
        assert_eq!(task.retry.as_ref().unwrap().max_attempts, 5);
        assert!(matches!(wf.steps[1].kind, StepKind::End(_)));
    }

    #[test]
    fn reports_several_errors_at_once() {
        let text = MINIMAL
            .replace("pivot = true", "pivot = \"yes\"\nretyr = 1")
            .replace("version = 1", "version = 0");
        let (_, diags) = parse(&text);
        let codes: Vec<_> = diags.iter().map(|d| d.code).collect();
        assert_eq!(
            codes,
            [codes::INVALID_VALUE, codes::WRONG_TYPE, codes::UNKNOWN_KEY],
            "{diags:#?}"
        );
        assert_eq!(diags[2].hint.as_deref(), Some("did you mean `retry`?"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let (wf, diags) = parse("[workflow]\nname = \"x\nversion = 1\n");
        assert!(wf.is_none());
        assert_eq!(diags[0].code, codes::SYNTAX);
        assert_eq!(diags[0].line, 2);
    }
}
