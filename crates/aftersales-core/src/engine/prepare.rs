//! Checks a start request's input and parameters against what the workflow declares, before
//! anything is stored: types, required fields, defaults, unknown fields.

use serde_json::{Map, Value};

use crate::model::{FieldDecl, ValueType};

/// A field that did not fit its declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Where: `input.order_id`, `params.no_reason_window`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Checks `given` (a JSON object) against `decls` and returns the prepared object: defaults
/// filled in, absent optional fields set to null. `root` names the object in errors.
/// Every problem is reported, not only the first.
pub fn prepare(
    root: &str,
    decls: &[FieldDecl],
    given: &Value,
    allow_unknown: bool,
) -> Result<Value, Vec<FieldError>> {
    let mut errors = Vec::new();
    let empty = Map::new();
    let obj = match given {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(vec![FieldError {
                path: root.to_owned(),
                message: format!("expected an object, got {}", kind_of(other)),
            }]);
        }
    };
    let mut out = Map::new();
    for d in decls {
        let name = &d.name.value;
        let path = format!("{root}.{name}");
        match obj.get(name) {
            Some(v) if !v.is_null() => match check(&d.ty, v) {
                Ok(()) => {
                    out.insert(name.clone(), v.clone());
                }
                Err(message) => errors.push(FieldError { path, message }),
            },
            _ => match &d.default {
                Some(def) => {
                    out.insert(name.clone(), def.clone());
                }
                None if d.required => errors.push(FieldError {
                    path,
                    message: format!("required {} is missing", d.ty),
                }),
                None => {
                    out.insert(name.clone(), Value::Null);
                }
            },
        }
    }
    for (k, v) in obj {
        if decls.iter().any(|d| &d.name.value == k) {
            continue;
        }
        if allow_unknown {
            out.insert(k.clone(), v.clone());
        } else {
            let known: Vec<&str> = decls.iter().map(|d| d.name.value.as_str()).collect();
            errors.push(FieldError {
                path: format!("{root}.{k}"),
                message: format!("unknown field; declared fields are: {}", known.join(", ")),
            });
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(errors)
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a fractional number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Whether `v` is a valid value of type `ty`.
pub fn check(ty: &ValueType, v: &Value) -> Result<(), String> {
    let bad = || Err(format!("expected {ty}, got {}", kind_of(v)));
    match ty {
        ValueType::Any => Ok(()),
        ValueType::String => {
            if v.is_string() {
                Ok(())
            } else {
                bad()
            }
        }
        ValueType::Int => {
            if v.is_i64() {
                Ok(())
            } else {
                bad()
            }
        }
        ValueType::Bool => {
            if v.is_boolean() {
                Ok(())
            } else {
                bad()
            }
        }
        ValueType::Object => {
            if v.is_object() {
                Ok(())
            } else {
                bad()
            }
        }
        ValueType::Timestamp => match v.as_str() {
            Some(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|_| ())
                .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp: {e}")),
            None => bad(),
        },
        ValueType::Duration => match v.as_str() {
            Some(s) => crate::duration::parse(s)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => bad(),
        },
        ValueType::Money => {
            let Some(m) = v.as_object() else { return bad() };
            let minor_ok = m.get("minor").is_some_and(Value::is_i64);
            let cur_ok = m
                .get("currency")
                .and_then(Value::as_str)
                .is_some_and(|c| c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()));
            let extra = m.keys().find(|k| *k != "minor" && *k != "currency");
            if let Some(k) = extra {
                return Err(format!(
                    "money has an unknown field `{k}`; it is {{ minor, currency }}"
                ));
            }
            if !minor_ok {
                return Err(
                    "money needs `minor`, an integer count of minor units (never a float)"
                        .to_owned(),
                );
            }
            if !cur_ok {
                return Err("money needs `currency`, an ISO 4217 code such as \"CNY\"".to_owned());
            }
            Ok(())
        }
        ValueType::List(item) => {
            let Some(items) = v.as_array() else {
                return bad();
            };
            if let Some(item) = item {
                for (i, x) in items.iter().enumerate() {
                    check(item, x).map_err(|e| format!("item {i}: {e}"))?;
                }
            }
            Ok(())
        }
        #[allow(unreachable_patterns)]
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sp;
    use serde_json::json;

    fn decl(name: &str, ty: ValueType, required: bool, default: Option<Value>) -> FieldDecl {
        FieldDecl {
            name: Sp::new(name.to_owned(), 0..0),
            ty,
            required,
            default,
            description: None,
        }
    }

    #[test]
    fn fills_defaults_and_nulls_and_reports_every_problem() {
        let decls = vec![
            decl("order_id", ValueType::String, true, None),
            decl("amount", ValueType::Money, true, None),
            decl("note", ValueType::String, false, None),
            decl("window", ValueType::Duration, false, Some(json!("7d"))),
        ];
        let ok = prepare(
            "input",
            &decls,
            &json!({"order_id": "o1", "amount": {"minor": 100, "currency": "CNY"}}),
            false,
        )
        .unwrap();
        assert_eq!(ok["note"], Value::Null);
        assert_eq!(ok["window"], json!("7d"));

        let errs = prepare(
            "input",
            &decls,
            &json!({"amount": {"minor": 1.5, "currency": "CNY"}, "extra": 1}),
            false,
        )
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["input.order_id", "input.amount", "input.extra"]);
        assert!(
            errs[1].message.contains("never a float"),
            "{}",
            errs[1].message
        );
    }

    #[test]
    fn rejects_a_non_object() {
        let errs = prepare("input", &[], &json!([1]), false).unwrap_err();
        assert_eq!(errs[0].to_string(), "input: expected an object, got a list");
    }
}
