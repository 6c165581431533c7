//! The `kind = "http"` settings, checked and compiled into a [`Plan`].
//!
//! Every problem is collected before reporting, and each message names the setting (and
//! the action) it concerns.

use std::collections::BTreeMap;
use std::time::Duration;

use aftersales_adapter::catalogue::{self, ActionSpec, FieldType};
use aftersales_adapter::{BuildContext, RegistryError, Secret};
use reqwest::Method;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::KIND;
use crate::template::{BodyTemplate, KEY_PLACEHOLDER, Placeholder, Template};

/// The settings as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    base_url: String,
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default)]
    idempotency_header: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    auth: AuthKind,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    signature_header: Option<String>,
    #[serde(default)]
    timestamp_header: Option<String>,
    actions: BTreeMap<String, Value>,
}

fn default_timeout() -> String {
    "10s".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AuthKind {
    #[default]
    None,
    Bearer,
    Basic,
    Hmac,
}

/// One action as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionSettings {
    method: String,
    path: String,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    outputs: BTreeMap<String, Value>,
    #[serde(default)]
    on_status: BTreeMap<String, Map<String, Value>>,
    #[serde(default)]
    by_key: Option<RequestSettings>,
}

/// An alternative request (`by_key`) as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestSettings {
    method: String,
    path: String,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
}

/// One output mapping written as a table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputTable {
    #[serde(default)]
    pointer: Option<String>,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    map: BTreeMap<String, Value>,
    #[serde(default)]
    default: Option<Value>,
}

/// The checked configuration the adapter runs from.
pub(crate) struct Plan {
    pub(crate) base_url: String,
    pub(crate) timeout: Duration,
    pub(crate) idempotency_header: Option<HeaderName>,
    pub(crate) headers: HeaderMap,
    pub(crate) error_message: Option<String>,
    pub(crate) auth: Auth,
    pub(crate) actions: BTreeMap<&'static str, ActionPlan>,
}

/// How requests are authenticated. Secrets print as `***`.
#[derive(Debug)]
pub(crate) enum Auth {
    None,
    Bearer(Secret),
    Basic {
        username: String,
        password: Secret,
    },
    Hmac {
        secret: Secret,
        signature_header: HeaderName,
        timestamp_header: HeaderName,
    },
}

/// One configured action.
#[derive(Debug)]
pub(crate) struct ActionPlan {
    pub(crate) spec: &'static ActionSpec,
    pub(crate) request: RequestPlan,
    pub(crate) by_key: Option<RequestPlan>,
    pub(crate) timeout: Duration,
    pub(crate) outputs: Vec<(&'static str, OutputPlan)>,
    pub(crate) on_status: BTreeMap<u16, Map<String, Value>>,
}

/// The request of an action.
#[derive(Debug)]
pub(crate) struct RequestPlan {
    pub(crate) method: Method,
    pub(crate) path: Template,
    pub(crate) query: Vec<(String, Template)>,
    pub(crate) body: Option<BodyTemplate>,
}

/// Where one output comes from.
#[derive(Debug)]
pub(crate) struct OutputPlan {
    pub(crate) source: Source,
    pub(crate) map: BTreeMap<String, Value>,
    pub(crate) default: Option<Value>,
}

#[derive(Debug)]
pub(crate) enum Source {
    Pointer(String),
    Value(Value),
}

impl OutputPlan {
    /// True when the output reads the answer's body.
    pub(crate) fn reads_body(&self) -> bool {
        matches!(self.source, Source::Pointer(_))
    }
}

/// Reads, checks and compiles the settings.
pub(crate) fn plan(cx: &BuildContext<'_>) -> Result<Plan, RegistryError> {
    let s: Settings = cx.settings()?;
    let mut errors: Vec<String> = Vec::new();

    let base_url = s.base_url.trim_end_matches('/').to_owned();
    match Url::parse(&base_url) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => errors.push(format!(
            "base_url: `{}` must be an http or https URL",
            s.base_url
        )),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => errors.push(format!(
            "base_url: `{}` must not have a query or fragment",
            s.base_url
        )),
        Ok(_) => {}
        Err(e) => errors.push(format!("base_url: `{}` is not a URL: {e}", s.base_url)),
    }
    let timeout = duration("timeout", &s.timeout, &mut errors);
    let idempotency_header = s
        .idempotency_header
        .as_deref()
        .and_then(|h| header_name("idempotency_header", h, &mut errors));
    let mut headers = HeaderMap::new();
    for (name, value) in &s.headers {
        let Some(n) = header_name(&format!("headers.{name}"), name, &mut errors) else {
            continue;
        };
        match HeaderValue::from_str(value) {
            Ok(v) => {
                headers.insert(n, v);
            }
            Err(_) => errors.push(format!(
                "headers.{name}: the value is not a valid header value"
            )),
        }
    }
    if let Some(p) = &s.error_message {
        check_pointer("error_message", p, &mut errors);
    }
    check_auth_fields(&s, &mut errors);

    let mut actions = BTreeMap::new();
    for (name, raw) in &s.actions {
        let Some(spec) = catalogue::find_full(name) else {
            errors.push(unknown_action(name));
            continue;
        };
        let at = format!("actions.\"{name}\"");
        let a = match ActionSettings::deserialize(raw) {
            Ok(a) => a,
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                continue;
            }
        };
        if let Some(plan) = action(spec, &at, a, timeout, &idempotency_header, &mut errors) {
            actions.insert(spec.full_name_static(), plan);
        }
    }
    if s.actions.is_empty() {
        errors.push("actions: no action is configured".into());
    }

    if !errors.is_empty() {
        return Err(invalid(errors.join("; ")));
    }
    // Secrets are read once the settings are right: a missing variable is a deployment
    // problem, reported on its own.
    let auth = auth(cx, &s)?;
    Ok(Plan {
        base_url,
        timeout,
        idempotency_header,
        headers,
        error_message: s.error_message,
        auth,
        actions,
    })
}

fn invalid(message: String) -> RegistryError {
    RegistryError::InvalidSettings {
        kind: KIND.into(),
        message,
    }
}

fn unknown_action(name: &str) -> String {
    let best = catalogue::catalogue()
        .iter()
        .map(ActionSpec::full_name_static)
        .min_by_key(|known| strsim::levenshtein(name, known));
    match best.filter(|b| strsim::levenshtein(name, b) <= 3) {
        Some(b) => format!("actions: unknown action `{name}`; did you mean `{b}`?"),
        None => format!(
            "actions: unknown action `{name}`; actions are named `system.action` as in the catalogue"
        ),
    }
}

/// Refuses settings of another auth scheme, and checks header names.
fn check_auth_fields(s: &Settings, errors: &mut Vec<String>) {
    let used: [(&str, bool, AuthKind); 6] = [
        ("token_env", s.token_env.is_some(), AuthKind::Bearer),
        ("username", s.username.is_some(), AuthKind::Basic),
        ("password_env", s.password_env.is_some(), AuthKind::Basic),
        ("secret_env", s.secret_env.is_some(), AuthKind::Hmac),
        (
            "signature_header",
            s.signature_header.is_some(),
            AuthKind::Hmac,
        ),
        (
            "timestamp_header",
            s.timestamp_header.is_some(),
            AuthKind::Hmac,
        ),
    ];
    for (field, set, kind) in used {
        if set && kind != s.auth {
            errors.push(format!(
                "{field}: only used with auth = \"{}\"",
                kind.as_str()
            ));
        }
    }
    if s.auth == AuthKind::Basic && s.username.is_none() {
        errors.push("username: required with auth = \"basic\"".into());
    }
    if s.auth == AuthKind::Hmac {
        header_name("signature_header", s.signature_header(), errors);
        header_name("timestamp_header", s.timestamp_header(), errors);
    }
}

impl AuthKind {
    fn as_str(self) -> &'static str {
        match self {
            AuthKind::None => "none",
            AuthKind::Bearer => "bearer",
            AuthKind::Basic => "basic",
            AuthKind::Hmac => "hmac",
        }
    }
}

impl Settings {
    fn signature_header(&self) -> &str {
        self.signature_header.as_deref().unwrap_or("X-Signature")
    }

    fn timestamp_header(&self) -> &str {
        self.timestamp_header.as_deref().unwrap_or("X-Timestamp")
    }
}

/// Reads the secrets of checked settings.
fn auth(cx: &BuildContext<'_>, s: &Settings) -> Result<Auth, RegistryError> {
    let header = |name: &str| {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{name}` is not a valid header name")))
    };
    Ok(match s.auth {
        AuthKind::None => Auth::None,
        AuthKind::Bearer => Auth::Bearer(cx.secret("token_env")?),
        AuthKind::Basic => Auth::Basic {
            username: s.username.clone().unwrap_or_default(),
            password: cx.secret("password_env")?,
        },
        AuthKind::Hmac => Auth::Hmac {
            secret: cx.secret("secret_env")?,
            signature_header: header(s.signature_header())?,
            timestamp_header: header(s.timestamp_header())?,
        },
    })
}

fn action(
    spec: &'static ActionSpec,
    at: &str,
    a: ActionSettings,
    default_timeout: Duration,
    idempotency_header: &Option<HeaderName>,
    errors: &mut Vec<String>,
) -> Option<ActionPlan> {
    let before = errors.len();
    let name = spec.full_name_static();
    let is_refund_status = name == "payment.refund_status";

    // What the main request may read. `payment.refund_status` has two lookups: by id
    // (main request) and by key (`by_key`).
    let main_fields: Vec<&str> = if is_refund_status {
        vec!["refund_id"]
    } else {
        spec.inputs.iter().map(|f| f.name).collect()
    };
    let request = request_plan(
        spec,
        at,
        RequestSettings {
            method: a.method,
            path: a.path,
            query: a.query,
            body: a.body,
        },
        &main_fields,
        errors,
    );
    let by_key = match a.by_key {
        Some(_) if !is_refund_status => {
            errors.push(format!(
                "{at}.by_key: only `payment.refund_status` has a lookup by key"
            ));
            None
        }
        Some(r) => request_plan(
            spec,
            &format!("{at}.by_key"),
            r,
            &["payment_id", "request_key"],
            errors,
        ),
        None => None,
    };

    if spec.mutating {
        let in_templates = request
            .as_ref()
            .is_some_and(|r| r.placeholders().any(|p| p.field() == KEY_PLACEHOLDER));
        if idempotency_header.is_none() && !in_templates {
            errors.push(format!(
                "{at}: {name} changes state at the platform but does not forward the idempotency key; set `idempotency_header` or use `{{{KEY_PLACEHOLDER}}}` in its path, query or body"
            ));
        }
    }

    let timeout = match &a.timeout {
        Some(t) => duration(&format!("{at}.timeout"), t, errors),
        None => default_timeout,
    };

    let mut outputs = Vec::new();
    for (out, raw) in &a.outputs {
        let Some(field) = spec.outputs.iter().find(|f| f.name == out.as_str()) else {
            errors.push(format!(
                "{at}.outputs.{out}: {name} has no output `{out}` (outputs: {})",
                names(spec.outputs.iter().map(|f| f.name))
            ));
            continue;
        };
        if let Some(o) = output(&format!("{at}.outputs.{out}"), raw, errors) {
            outputs.push((field.name, o));
        }
    }
    for f in spec.outputs.iter().filter(|f| f.required) {
        if !a.outputs.contains_key(f.name) {
            errors.push(format!(
                "{at}.outputs: required output `{}` is not mapped (give a JSON pointer such as `\"/{}\"`)",
                f.name, f.name
            ));
        }
    }

    let mut on_status = BTreeMap::new();
    for (code, fixed) in a.on_status {
        let parsed = code.parse::<u16>().ok().filter(|c| (400..=599).contains(c));
        let Some(parsed) = parsed else {
            errors.push(format!(
                "{at}.on_status.{code}: expected an HTTP status from 400 to 599"
            ));
            continue;
        };
        for out in fixed.keys() {
            if !spec.outputs.iter().any(|f| f.name == out.as_str()) {
                errors.push(format!(
                    "{at}.on_status.{code}: {name} has no output `{out}`"
                ));
            }
        }
        on_status.insert(parsed, fixed);
    }

    if errors.len() > before {
        return None;
    }
    Some(ActionPlan {
        spec,
        request: request?,
        by_key,
        timeout,
        outputs,
        on_status,
    })
}

impl RequestPlan {
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.path
            .placeholders()
            .chain(self.query.iter().flat_map(|(_, t)| t.placeholders()))
            .chain(self.body.iter().flat_map(|b| b.placeholders()))
    }
}

fn request_plan(
    spec: &'static ActionSpec,
    at: &str,
    r: RequestSettings,
    fields: &[&str],
    errors: &mut Vec<String>,
) -> Option<RequestPlan> {
    let before = errors.len();
    let method = match r.method.to_ascii_uppercase().as_str() {
        "GET" => Some(Method::GET),
        "POST" => Some(Method::POST),
        "PUT" => Some(Method::PUT),
        "PATCH" => Some(Method::PATCH),
        "DELETE" => Some(Method::DELETE),
        _ => {
            errors.push(format!(
                "{at}.method: `{}` is not one of GET, POST, PUT, PATCH, DELETE",
                r.method
            ));
            None
        }
    };
    if !r.path.starts_with('/') || r.path.contains('?') || r.path.contains('#') {
        errors.push(format!(
            "{at}.path: `{}` must start with `/` and hold no `?` or `#` (use `query`)",
            r.path
        ));
    }
    let path = Template::parse(&r.path)
        .map_err(|e| errors.push(format!("{at}.path: {e}")))
        .ok();
    if let Some(path) = &path {
        for p in path.placeholders() {
            check_placeholder(spec, &format!("{at}.path"), p, fields, true, errors);
        }
    }
    let mut query = Vec::new();
    for (k, v) in r.query {
        match Template::parse(&v) {
            Ok(t) => {
                for p in t.placeholders() {
                    check_placeholder(spec, &format!("{at}.query.{k}"), p, fields, false, errors);
                }
                query.push((k, t));
            }
            Err(e) => errors.push(format!("{at}.query.{k}: {e}")),
        }
    }
    let body = match &r.body {
        None => None,
        Some(_) if method == Some(Method::GET) => {
            errors.push(format!("{at}.body: a GET request has no body; use `query`"));
            None
        }
        Some(b) => match BodyTemplate::parse(b) {
            Ok(t) => {
                for p in t.placeholders() {
                    check_placeholder(spec, &format!("{at}.body"), p, fields, false, errors);
                }
                Some(t)
            }
            Err(e) => {
                errors.push(format!("{at}.{e}"));
                None
            }
        },
    };
    if errors.len() > before {
        return None;
    }
    Some(RequestPlan {
        method: method?,
        path: path?,
        query,
        body,
    })
}

/// Checks that a placeholder reads a declared input (or the key of a mutating call), with
/// a path and filter that fit the input's type. In a path, optional inputs are refused: a
/// path segment cannot be left out.
fn check_placeholder(
    spec: &'static ActionSpec,
    at: &str,
    p: &Placeholder,
    fields: &[&str],
    in_path: bool,
    errors: &mut Vec<String>,
) {
    let name = spec.full_name_static();
    let shown = p.display();
    if p.field() == KEY_PLACEHOLDER {
        if !spec.mutating {
            errors.push(format!(
                "{at}: {shown}: {name} is read-only and carries no idempotency key"
            ));
        } else if p.path.len() > 1 || p.filter.is_some() {
            errors.push(format!(
                "{at}: {shown}: write `{{{KEY_PLACEHOLDER}}}` alone"
            ));
        }
        return;
    }
    let Some(field) = spec
        .inputs
        .iter()
        .find(|f| f.name == p.field() && fields.contains(&f.name))
    else {
        errors.push(format!(
            "{at}: {shown} names no input of {name} (inputs here: {})",
            names(fields.iter().copied())
        ));
        return;
    };
    let refund_status = name == "payment.refund_status";
    if in_path && !field.required && !refund_status {
        errors.push(format!(
            "{at}: {shown}: input `{}` is optional and a path segment cannot be left out; use `query` or `body`",
            field.name
        ));
    }
    let sub = &p.path[1..];
    let fits = match field.ty {
        FieldType::Money => match sub {
            [] => true,
            [s] => s == "minor" || s == "currency",
            _ => false,
        },
        FieldType::List | FieldType::Object | FieldType::Any => true,
        _ => sub.is_empty(),
    };
    if !fits {
        let hint = if field.ty == FieldType::Money {
            " (money has `minor` and `currency`)"
        } else {
            ""
        };
        errors.push(format!(
            "{at}: {shown}: input `{}` has no `{}`{hint}",
            field.name,
            sub.join(".")
        ));
    }
    if p.filter == Some(crate::template::Filter::Decimal)
        && !(field.ty == FieldType::Money && sub.is_empty())
    {
        errors.push(format!(
            "{at}: {shown}: `decimal` applies to a money input as a whole, such as `{{amount|decimal}}`"
        ));
    }
}

fn output(at: &str, raw: &Value, errors: &mut Vec<String>) -> Option<OutputPlan> {
    let table = match raw {
        Value::String(p) => OutputTable {
            pointer: Some(p.clone()),
            value: None,
            map: BTreeMap::new(),
            default: None,
        },
        Value::Object(_) => match OutputTable::deserialize(raw) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                return None;
            }
        },
        _ => {
            errors.push(format!(
                "{at}: expected a JSON pointer such as \"/id\", or a table with `pointer` or `value`"
            ));
            return None;
        }
    };
    let source = match (table.pointer, table.value) {
        (Some(p), None) => {
            if !check_pointer(at, &p, errors) {
                return None;
            }
            Source::Pointer(p)
        }
        (None, Some(v)) => Source::Value(v),
        _ => {
            errors.push(format!("{at}: give exactly one of `pointer` and `value`"));
            return None;
        }
    };
    Some(OutputPlan {
        source,
        map: table.map,
        default: table.default,
    })
}

fn check_pointer(at: &str, p: &str, errors: &mut Vec<String>) -> bool {
    if p.is_empty() || p.starts_with('/') {
        true
    } else {
        errors.push(format!(
            "{at}: `{p}` is not a JSON pointer; pointers start with `/` (\"/data/id\")"
        ));
        false
    }
}

fn header_name(at: &str, name: &str, errors: &mut Vec<String>) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            errors.push(format!("{at}: `{name}` is not a valid header name"));
            None
        }
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn duration(at: &str, text: &str, errors: &mut Vec<String>) -> Duration {
    match parse_duration(text) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            errors.push(format!("{at}: must be longer than zero"));
            Duration::from_secs(10)
        }
        Err(e) => {
            errors.push(format!("{at}: {e}"));
            Duration::from_secs(10)
        }
    }
}

/// Reads `"250ms"`, `"30s"`, `"5m"`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration such as \"10s\", found \"{text}\""))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("duration \"{text}\" is too large")),
        _ => Err(format!("expected a unit ms, s or m in \"{text}\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("5"),
            Err("expected a unit ms, s or m in \"5\"".into())
        );
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn unknown_actions_suggest_the_closest() {
        assert_eq!(
            unknown_action("payment.refnd"),
            "actions: unknown action `payment.refnd`; did you mean `payment.refund`?"
        );
        assert!(unknown_action("teleport").contains("`system.action`"));
    }
}
