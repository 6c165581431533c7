//! `{field}` templates for paths, query values and JSON bodies.
//!
//! A template is text with placeholders: `{amount.minor}` reads field `minor` of input
//! `amount`, `{lines.0.sku}` the `sku` of the first line, `{idempotency_key}` the engine's
//! key, and `{amount|decimal}` formats money in major units (`"12.34"`). `{{` and `}}` are
//! literal braces.
//!
//! In a body, a string that is exactly one placeholder keeps the input's JSON type (a
//! number stays a number, an object an object); any other string is text. A body value or
//! query value whose placeholder names an absent input is left out, so optional inputs map
//! to optional platform fields. A path cannot leave a segment out: there an absent input is
//! an error.

use aftersales_money::Money;
use serde_json::{Map, Value};

/// The placeholder that reads the engine's idempotency key.
pub(crate) const KEY_PLACEHOLDER: &str = "idempotency_key";

/// A parsed text template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(Placeholder),
}

/// One `{path|filter}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placeholder {
    /// The path: the input field, then keys or list indices inside it.
    pub(crate) path: Vec<String>,
    /// The optional filter after `|`.
    pub(crate) filter: Option<Filter>,
}

/// What a filter does to the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Money as a decimal string in major units (`"12.34"`, `"500"` for JPY).
    Decimal,
    /// Any scalar as its text (`1234` becomes `"1234"`).
    String,
}

impl Placeholder {
    /// The input field this placeholder reads (or [`KEY_PLACEHOLDER`]).
    pub(crate) fn field(&self) -> &str {
        self.path.first().map_or("", String::as_str)
    }

    /// The placeholder as written, for messages.
    pub(crate) fn display(&self) -> String {
        let filter = match self.filter {
            None => "",
            Some(Filter::Decimal) => "|decimal",
            Some(Filter::String) => "|string",
        };
        format!("{{{}{filter}}}", self.path.join("."))
    }
}

/// What templates read: the action's input as JSON, and the key for mutating calls.
pub(crate) struct Vars<'a> {
    pub(crate) input: &'a Value,
    pub(crate) key: Option<&'a str>,
}

impl Vars<'_> {
    /// The value a placeholder names, with its filter applied; `None` when absent or null.
    fn resolve(&self, p: &Placeholder) -> Result<Option<Value>, String> {
        let raw = if p.field() == KEY_PLACEHOLDER && p.path.len() == 1 {
            self.key.map(|k| Value::String(k.to_owned()))
        } else {
            let mut at = Some(self.input);
            for seg in &p.path {
                at = match at {
                    Some(Value::Object(m)) => m.get(seg),
                    Some(Value::Array(items)) => {
                        seg.parse::<usize>().ok().and_then(|i| items.get(i))
                    }
                    _ => None,
                };
            }
            at.filter(|v| !v.is_null()).cloned()
        };
        let Some(value) = raw else {
            return Ok(None);
        };
        match p.filter {
            None => Ok(Some(value)),
            Some(Filter::Decimal) => {
                let money: Money = serde_json::from_value(value)
                    .map_err(|_| format!("{}: `decimal` needs a money value", p.display()))?;
                Ok(Some(Value::String(money.to_decimal_string())))
            }
            Some(Filter::String) => scalar_text(&value)
                .map(|t| Some(Value::String(t)))
                .ok_or_else(|| {
                    format!("{}: `string` needs a text, number or boolean", p.display())
                }),
        }
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Template {
    /// Parses `text`; the error says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => {
                    return Err(format!(
                        "`{text}`: unmatched `}}` (write `}}}}` for a brace)"
                    ));
                }
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!(
                                    "`{text}`: unclosed `{{` (write `{{{{` for a brace)"
                                ));
                            }
                            Some(c) => inner.push(c),
                        }
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(parse_placeholder(text, &inner)?));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// Every placeholder, in order.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f),
            Part::Text(_) => None,
        })
    }

    /// The text, with placeholders replaced by their values' text and passed through
    /// `escape`. `Ok(None)` when a placeholder names an absent input.
    pub(crate) fn render_text(
        &self,
        vars: &Vars<'_>,
        escape: impl Fn(&str) -> String,
    ) -> Result<Option<String>, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(p) => {
                    let Some(v) = vars.resolve(p)? else {
                        return Ok(None);
                    };
                    let text = scalar_text(&v).ok_or_else(|| {
                        format!(
                            "{} is a list or object and cannot be written into text",
                            p.display()
                        )
                    })?;
                    out.push_str(&escape(&text));
                }
            }
        }
        Ok(Some(out))
    }

    /// The JSON value: a lone placeholder keeps its value's type, anything else is text.
    /// `Ok(None)` when a placeholder names an absent input.
    fn render_value(&self, vars: &Vars<'_>) -> Result<Option<Value>, String> {
        if let [Part::Field(p)] = self.parts.as_slice() {
            return vars.resolve(p);
        }
        Ok(self.render_text(vars, str::to_owned)?.map(Value::String))
    }
}

fn parse_placeholder(text: &str, inner: &str) -> Result<Placeholder, String> {
    let (path, filter) = match inner.split_once('|') {
        None => (inner, None),
        Some((path, "decimal")) => (path, Some(Filter::Decimal)),
        Some((path, "string")) => (path, Some(Filter::String)),
        Some((_, other)) => {
            return Err(format!(
                "`{text}`: unknown filter `{other}` (known: decimal, string)"
            ));
        }
    };
    let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
    let valid = |s: &String| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !path.iter().all(valid) {
        return Err(format!(
            "`{text}`: `{{{inner}}}` is not a field path such as `{{amount.minor}}`"
        ));
    }
    Ok(Placeholder { path, filter })
}

/// A JSON body template: a JSON value whose strings are [`Template`]s.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BodyTemplate {
    /// A string template.
    Text(Template),
    /// A list; items that render to nothing are left out.
    List(Vec<BodyTemplate>),
    /// An object; members that render to nothing are left out.
    Object(Vec<(String, BodyTemplate)>),
    /// A number, boolean or null, sent as written.
    Literal(Value),
}

impl BodyTemplate {
    /// Parses every string of `value` as a template; the error names the JSON path.
    pub(crate) fn parse(value: &Value) -> Result<BodyTemplate, String> {
        fn walk(value: &Value, at: &str) -> Result<BodyTemplate, String> {
            Ok(match value {
                Value::String(s) => {
                    BodyTemplate::Text(Template::parse(s).map_err(|e| format!("{at}: {e}"))?)
                }
                Value::Array(items) => BodyTemplate::List(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| walk(v, &format!("{at}[{i}]")))
                        .collect::<Result<_, _>>()?,
                ),
                Value::Object(m) => BodyTemplate::Object(
                    m.iter()
                        .map(|(k, v)| Ok((k.clone(), walk(v, &format!("{at}.{k}"))?)))
                        .collect::<Result<_, String>>()?,
                ),
                other => BodyTemplate::Literal(other.clone()),
            })
        }
        walk(value, "body")
    }

    /// Every placeholder, in order.
    pub(crate) fn placeholders(&self) -> Vec<&Placeholder> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Placeholder>) {
        match self {
            BodyTemplate::Text(t) => out.extend(t.placeholders()),
            BodyTemplate::List(items) => items.iter().for_each(|i| i.collect(out)),
            BodyTemplate::Object(members) => members.iter().for_each(|(_, v)| v.collect(out)),
            BodyTemplate::Literal(_) => {}
        }
    }

    /// The body; `Ok(None)` when the whole body rendered to nothing.
    pub(crate) fn render(&self, vars: &Vars<'_>) -> Result<Option<Value>, String> {
        Ok(match self {
            BodyTemplate::Text(t) => t.render_value(vars)?,
            BodyTemplate::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.extend(item.render(vars)?);
                }
                Some(Value::Array(out))
            }
            BodyTemplate::Object(members) => {
                let mut out = Map::new();
                for (k, v) in members {
                    if let Some(v) = v.render(vars)? {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Value::Object(out))
            }
            BodyTemplate::Literal(v) => Some(v.clone()),
        })
    }
}

/// Percent-encodes one path segment: everything but `A-Z a-z 0-9 - . _ ~`.
pub(crate) fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(input: &Value) -> Vars<'_> {
        Vars {
            input,
            key: Some("k-1"),
        }
    }

    #[test]
    fn parses_fields_filters_and_braces() {
        let t = Template::parse("/p/{payment_id}/r{{x}}/{amount.minor|string}").unwrap();
        let names: Vec<String> = t.placeholders().map(Placeholder::display).collect();
        assert_eq!(names, ["{payment_id}", "{amount.minor|string}"]);
        let input = json!({"payment_id": "pay 1/2", "amount": {"minor": 5, "currency": "CNY"}});
        assert_eq!(
            t.render_text(&vars(&input), encode_segment).unwrap(),
            Some("/p/pay%201%2F2/r{x}/5".into())
        );
        assert_eq!(
            Template::parse("{a").unwrap_err(),
            "`{a`: unclosed `{` (write `{{` for a brace)"
        );
        assert_eq!(
            Template::parse("a}").unwrap_err(),
            "`a}`: unmatched `}` (write `}}` for a brace)"
        );
        assert_eq!(
            Template::parse("{a|upper}").unwrap_err(),
            "`{a|upper}`: unknown filter `upper` (known: decimal, string)"
        );
        assert!(Template::parse("{}").is_err());
        assert!(Template::parse("{a b}").is_err());
    }

    #[test]
    fn lone_placeholders_keep_their_type_and_absent_inputs_are_left_out() {
        let body = BodyTemplate::parse(&json!({
            "amount": "{amount.minor}",
            "currency": "{amount.currency}",
            "yuan": "{amount|decimal}",
            "note": "refund for {service_order_id}",
            "reason": "{reason}",
            "key": "{idempotency_key}",
            "first_sku": "{lines.0.sku}",
            "tags": ["{reason}", "fixed", 3],
            "live": true,
        }))
        .unwrap();
        let input = json!({
            "amount": {"minor": 1234, "currency": "CNY"},
            "lines": [{"sku": "s-1"}],
            "reason": null,
        });
        assert_eq!(
            body.render(&vars(&input)).unwrap(),
            Some(json!({
                "amount": 1234,
                "currency": "CNY",
                "yuan": "12.34",
                "key": "k-1",
                "first_sku": "s-1",
                "tags": ["fixed", 3],
                "live": true,
            }))
        );
    }

    #[test]
    fn values_that_cannot_be_text_are_errors() {
        let t = Template::parse("x-{lines}").unwrap();
        let input = json!({"lines": [1]});
        assert_eq!(
            t.render_text(&vars(&input), str::to_owned).unwrap_err(),
            "{lines} is a list or object and cannot be written into text"
        );
        let t = Template::parse("{lines|decimal}").unwrap();
        assert_eq!(
            t.render_value(&vars(&input)).unwrap_err(),
            "{lines|decimal}: `decimal` needs a money value"
        );
    }
}
