//! Expressions and value templates.
//!
//! Conditions and computed values use CEL (the Common Expression Language, through the
//! `cel` crate): side-effect free, always terminating, no I/O. Roots an expression may
//! read: `input`, `params`, `steps`, `workflow` and `now`.
//!
//! A template is any TOML value in an `input`, `output` or `reason` table. Strings may hold
//! `${ expression }`: a string that is exactly one `${...}` takes the expression's value
//! with its type (a number stays a number, money stays money); `${...}` inside longer
//! text is interpolated as text; `$${` writes a literal `${`. Everything else is literal.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr as Node, IdedExpr};

use crate::model::ValueType;

/// The names an expression may start from.
pub const ROOTS: [&str; 5] = ["input", "params", "steps", "workflow", "now"];

/// Longest expression accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;
/// Deepest bracket nesting accepted; deeper input is refused before parsing.
pub const MAX_EXPR_DEPTH: usize = 48;

/// CEL's standard functions and macros, built once: building them takes longer than
/// evaluating a typical condition.
static STDLIB: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// What expressions read: the roots (`input`, `params`, `steps`, `workflow`, `now`). A JSON
/// object holding them is a scope; the engine lends its state instead, so a step does not
/// copy the instance's input and every step output to evaluate one argument.
pub trait Scope {
    /// A root, whole; `None` when there is no such root.
    fn root(&self, name: &str) -> Option<Cow<'_, serde_json::Value>>;

    /// The named fields of a root that is an object (those it has), without building the
    /// rest of it; `None` when the root is missing or not an object.
    fn fields(
        &self,
        root: &str,
        fields: &[String],
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        fields_of(self.root(root)?.as_ref(), fields)
    }
}

impl Scope for serde_json::Value {
    fn root(&self, name: &str) -> Option<Cow<'_, serde_json::Value>> {
        self.get(name).map(Cow::Borrowed)
    }
}

/// The named fields of `v` when it is an object (see [`Scope::fields`]).
pub fn fields_of(
    v: &serde_json::Value,
    fields: &[String],
) -> Option<serde_json::Map<String, serde_json::Value>> {
    match v {
        serde_json::Value::Object(map) => Some(
            fields
                .iter()
                .filter_map(|f| map.get(f).map(|x| (f.clone(), x.clone())))
                .collect(),
        ),
        _ => None,
    }
}

/// A compiled CEL expression and where it was written.
#[derive(Clone)]
pub struct Expr {
    /// The expression text.
    pub source: String,
    /// Byte range of the text in its file.
    pub span: Range<usize>,
    program: Arc<cel::Program>,
    /// What of the scope evaluation needs, worked out once at compile time.
    reads: Arc<[RootRead]>,
}

/// A root the expression reads, and how much of it.
#[derive(Debug)]
struct RootRead {
    root: String,
    /// The fields it selects directly under the root (`steps.refund` → `refund`), when
    /// every use of the root selects one; `None` when the root is used whole (`size(steps)`,
    /// `steps[k]`), so all of it is converted.
    fields: Option<Vec<String>>,
}

fn root_reads(program: &cel::Program) -> Vec<RootRead> {
    let mut found = Vec::new();
    walk(program.expression(), &mut Vec::new(), &mut found);
    let mut reads: Vec<RootRead> = Vec::new();
    for (path, _) in found {
        let Some(root) = path.first() else { continue };
        let field = path.get(1).cloned();
        match reads.iter_mut().find(|r| &r.root == root) {
            Some(read) => match (&mut read.fields, field) {
                (Some(fields), Some(f)) => {
                    if !fields.contains(&f) {
                        fields.push(f);
                    }
                }
                (fields, _) => *fields = None,
            },
            None => reads.push(RootRead {
                root: root.clone(),
                fields: field.map(|f| vec![f]),
            }),
        }
    }
    reads
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

/// A name an expression reads, such as `steps.refund.refund_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The path segments: `["steps", "refund", "refund_id"]`.
    pub path: Vec<String>,
    /// Byte range in the file, as close as it can be told.
    pub span: Range<usize>,
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expression `{expr}` failed: {message}")]
pub struct EvalError {
    /// The expression text.
    pub expr: String,
    /// What went wrong.
    pub message: String,
}

impl Expr {
    /// Compiles an expression; `span` is where its text sits in the file.
    pub fn compile(source: &str, span: Range<usize>) -> Result<Expr, String> {
        let trimmed = source.trim();
        if trimmed.is_empty() {
            return Err("empty expression".to_owned());
        }
        if source.len() > MAX_EXPR_LEN {
            return Err(format!("expression longer than {MAX_EXPR_LEN} bytes"));
        }
        let mut depth = 0usize;
        let mut max_depth = 0usize;
        for c in source.chars() {
            match c {
                '(' | '[' | '{' => {
                    depth += 1;
                    max_depth = max_depth.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if max_depth > MAX_EXPR_DEPTH {
            return Err(format!(
                "expression nested deeper than {MAX_EXPR_DEPTH} levels"
            ));
        }
        let compiled = catch_unwind(AssertUnwindSafe(|| cel::Program::compile(source)));
        match compiled {
            Ok(Ok(program)) => Ok(Expr {
                source: source.to_owned(),
                span,
                reads: root_reads(&program).into(),
                program: Arc::new(program),
            }),
            Ok(Err(errors)) => Err(errors
                .errors
                .first()
                .map(|e| e.msg.clone())
                .unwrap_or_else(|| "syntax error".to_owned())),
            Err(_) => Err("expression could not be parsed".to_owned()),
        }
    }

    /// Every root-based name the expression reads, with the longest field path written.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        let mut locals = Vec::new();
        walk(self.program.expression(), &mut locals, &mut out);
        out.into_iter()
            .map(|(path, _)| {
                let text = path.join(".");
                let start = self
                    .source
                    .find(&text)
                    .or_else(|| self.source.find(&path[0]))
                    .unwrap_or(0);
                let span = (self.span.start + start)..(self.span.start + start + text.len());
                Reference { path, span }
            })
            .collect()
    }

    /// The path when the whole expression is one plain reference (`input.order_id`).
    pub fn as_path(&self) -> Option<Vec<String>> {
        path_of(self.program.expression())
    }

    /// Evaluates the expression against a scope (a JSON object holding the roots, or
    /// anything else that lends them).
    pub fn eval<S: Scope + ?Sized>(&self, scope: &S) -> Result<serde_json::Value, EvalError> {
        let fail = |message: String| EvalError {
            expr: self.source.clone(),
            message,
        };
        let mut ctx = cel::Context::with_env(STDLIB.clone());
        // Only what the expression reads is converted to CEL values: a root it selects
        // fields of gets just those fields (the others could not be read anyway).
        for read in self.reads.iter() {
            let part = read
                .fields
                .as_ref()
                .and_then(|fields| scope.fields(&read.root, fields));
            let value = match part {
                Some(part) => cel::to_value(serde_json::Value::Object(part)),
                None => match scope.root(&read.root) {
                    Some(v) => cel::to_value(v.as_ref()),
                    None => continue,
                },
            }
            .map_err(|e| fail(e.to_string()))?;
            ctx.add_variable_from_value(read.root.as_str(), value);
        }
        let value = self
            .program
            .execute(&ctx)
            .map_err(|e| fail(e.to_string()))?;
        value.json().map_err(|e| fail(e.to_string()))
    }

    /// Evaluates a condition; anything but a boolean is an error.
    pub fn eval_bool<S: Scope + ?Sized>(&self, scope: &S) -> Result<bool, EvalError> {
        match self.eval(scope)? {
            serde_json::Value::Bool(b) => Ok(b),
            other => Err(EvalError {
                expr: self.source.clone(),
                message: format!("expected a boolean, got {other}"),
            }),
        }
    }
}

fn path_of(e: &IdedExpr) -> Option<Vec<String>> {
    match &e.expr {
        Node::Ident(name) => Some(vec![name.clone()]),
        Node::Select(s) if !s.test => {
            let mut p = path_of(&s.operand)?;
            p.push(s.field.clone());
            Some(p)
        }
        _ => None,
    }
}

fn walk(e: &IdedExpr, locals: &mut Vec<String>, out: &mut Vec<(Vec<String>, u64)>) {
    match &e.expr {
        Node::Ident(name) => {
            if !locals.contains(name) {
                out.push((vec![name.clone()], e.id));
            }
        }
        Node::Select(s) => match path_of(&s.operand) {
            Some(mut p) if !locals.contains(&p[0]) => {
                p.push(s.field.clone());
                out.push((p, e.id));
            }
            Some(_) => {}
            None => walk(&s.operand, locals, out),
        },
        Node::Call(c) => {
            if let Some(t) = &c.target {
                walk(t, locals, out);
            }
            for a in &c.args {
                walk(a, locals, out);
            }
        }
        Node::Comprehension(c) => {
            walk(&c.iter_range, locals, out);
            let before = locals.len();
            locals.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                locals.push(v.clone());
            }
            locals.push(c.accu_var.clone());
            walk(&c.accu_init, locals, out);
            walk(&c.loop_cond, locals, out);
            walk(&c.loop_step, locals, out);
            walk(&c.result, locals, out);
            locals.truncate(before);
        }
        Node::List(l) => {
            for x in &l.elements {
                walk(x, locals, out);
            }
        }
        Node::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(me) => {
                        walk(&me.key, locals, out);
                        walk(&me.value, locals, out);
                    }
                    EntryExpr::StructField(f) => walk(&f.value, locals, out),
                }
            }
        }
        Node::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(me) => {
                        walk(&me.key, locals, out);
                        walk(&me.value, locals, out);
                    }
                    EntryExpr::StructField(f) => walk(&f.value, locals, out),
                }
            }
        }
        Node::Literal(_) | Node::Unspecified => {}
    }
}

/// One piece of an interpolated string.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// An expression rendered as text.
    Expr(Expr),
}

/// A value built at run time from literals and expressions.
#[derive(Debug, Clone)]
pub enum Template {
    /// A literal value.
    Literal(serde_json::Value, Range<usize>),
    /// A string that is exactly one `${...}`: the expression's value, typed.
    Expr(Expr),
    /// A string mixing text and `${...}`: always a string.
    Interp(Vec<Piece>, Range<usize>),
    /// A table of templates.
    Object(Vec<(String, Template)>, Range<usize>),
    /// An array of templates.
    List(Vec<Template>, Range<usize>),
}

impl Template {
    /// Where the template was written.
    pub fn span(&self) -> Range<usize> {
        match self {
            Template::Literal(_, s)
            | Template::Interp(_, s)
            | Template::Object(_, s)
            | Template::List(_, s) => s.clone(),
            Template::Expr(e) => e.span.clone(),
        }
    }

    /// Every expression inside, depth first.
    pub fn exprs(&self) -> Vec<&Expr> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Expr>) {
        match self {
            Template::Literal(..) => {}
            Template::Expr(e) => out.push(e),
            Template::Interp(parts, _) => {
                for p in parts {
                    if let Piece::Expr(e) = p {
                        out.push(e);
                    }
                }
            }
            Template::Object(fields, _) => {
                for (_, t) in fields {
                    t.collect(out);
                }
            }
            Template::List(items, _) => {
                for t in items {
                    t.collect(out);
                }
            }
        }
    }

    /// Builds the value against a scope.
    pub fn eval<S: Scope + ?Sized>(&self, scope: &S) -> Result<serde_json::Value, EvalError> {
        Ok(match self {
            Template::Literal(v, _) => v.clone(),
            Template::Expr(e) => e.eval(scope)?,
            Template::Interp(parts, _) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Piece::Text(t) => s.push_str(t),
                        Piece::Expr(e) => match e.eval(scope)? {
                            serde_json::Value::String(t) => s.push_str(&t),
                            other => s.push_str(&other.to_string()),
                        },
                    }
                }
                serde_json::Value::String(s)
            }
            Template::Object(fields, _) => {
                let mut map = serde_json::Map::new();
                for (k, t) in fields {
                    map.insert(k.clone(), t.eval(scope)?);
                }
                serde_json::Value::Object(map)
            }
            Template::List(items, _) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|t| t.eval(scope))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// The type the value will have, as far as can be told without running it; `lookup`
    /// gives the type of a plain reference such as `input.amount`.
    pub fn static_type(&self, lookup: &dyn Fn(&[String]) -> ValueType) -> ValueType {
        match self {
            Template::Literal(v, _) => json_type(v),
            Template::Expr(e) => match e.as_path() {
                Some(path) => lookup(&path),
                None => ValueType::Any,
            },
            Template::Interp(..) => ValueType::String,
            Template::Object(fields, _) => {
                let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                if keys == ["currency", "minor"] {
                    ValueType::Money
                } else {
                    ValueType::Object
                }
            }
            Template::List(..) => ValueType::List(None),
        }
    }
}

/// The type of a literal JSON value.
pub fn json_type(v: &serde_json::Value) -> ValueType {
    match v {
        serde_json::Value::Null => ValueType::Any,
        serde_json::Value::Bool(_) => ValueType::Bool,
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => ValueType::Int,
        serde_json::Value::Number(_) => ValueType::Any,
        serde_json::Value::String(_) => ValueType::String,
        serde_json::Value::Array(_) => ValueType::List(None),
        serde_json::Value::Object(m) => {
            if m.len() == 2
                && m.get("minor").is_some_and(|v| v.is_i64())
                && m.get("currency").is_some_and(|v| v.is_string())
            {
                ValueType::Money
            } else {
                ValueType::Object
            }
        }
    }
}

/// Splits a template string into pieces; `offset` is where the string's text starts in the
/// file. Errors carry the byte range of the bad part.
pub fn parse_string_template(
    text: &str,
    offset: usize,
    span: Range<usize>,
) -> Result<Template, (String, Range<usize>)> {
    if !text.contains('$') {
        return Ok(Template::Literal(
            serde_json::Value::String(text.to_owned()),
            span,
        ));
    }
    let mut parts = Vec::new();
    let mut lit = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("$${") {
            lit.push_str("${");
            i += 3;
        } else if text[i..].starts_with("${") {
            let start = i + 2;
            let mut depth = 1usize;
            let mut j = start;
            let mut quote: Option<u8> = None;
            while j < bytes.len() {
                let c = bytes[j];
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) if c == b'\\' => j += 1,
                    Some(_) => {}
                    None => match c {
                        b'\'' | b'"' => quote = Some(c),
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    },
                }
                j += 1;
            }
            if j >= bytes.len() {
                return Err((
                    "unclosed `${` in template".to_owned(),
                    (offset + i)..(offset + text.len()),
                ));
            }
            let src = &text[start..j];
            let expr_span = (offset + start)..(offset + j);
            let expr = Expr::compile(src, expr_span.clone()).map_err(|m| (m, expr_span))?;
            if !lit.is_empty() {
                parts.push(Piece::Text(std::mem::take(&mut lit)));
            }
            parts.push(Piece::Expr(expr));
            i = j + 1;
        } else {
            let ch = text[i..].chars().next().map_or(1, char::len_utf8);
            lit.push_str(&text[i..i + ch]);
            i += ch;
        }
    }
    if !lit.is_empty() {
        parts.push(Piece::Text(lit));
    }
    Ok(match parts.len() {
        1 if matches!(parts[0], Piece::Expr(_)) => match parts.pop() {
            Some(Piece::Expr(e)) => Template::Expr(e),
            _ => unreachable_template(span),
        },
        1 => match parts.pop() {
            Some(Piece::Text(t)) => Template::Literal(serde_json::Value::String(t), span),
            _ => unreachable_template(span),
        },
        _ => Template::Interp(parts, span),
    })
}

fn unreachable_template(span: Range<usize>) -> Template {
    Template::Literal(serde_json::Value::Null, span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refs(src: &str) -> Vec<String> {
        Expr::compile(src, 0..src.len())
            .unwrap()
            .references()
            .into_iter()
            .map(|r| r.path.join("."))
            .collect()
    }

    #[test]
    fn references_follow_selects_and_skip_locals() {
        assert_eq!(refs("input.amount.minor > 0"), ["input.amount.minor"]);
        assert_eq!(
            refs("steps.intercept.result == 'too_late' && params.convert"),
            ["steps.intercept.result", "params.convert"]
        );
        assert_eq!(refs("input.lines.all(l, l.quantity > 0)"), ["input.lines"]);
        assert_eq!(refs("input.lines[0].sku == 'x'"), ["input.lines"]);
        assert_eq!(refs("size(nothing) > 0"), ["nothing"]);
    }

    #[test]
    fn evaluates_against_json_scope() {
        let scope = json!({"input": {"amount": {"minor": 500, "currency": "CNY"}, "n": 3}});
        let e = Expr::compile("input.amount.minor * input.n", 0..1).unwrap();
        assert_eq!(e.eval(&scope).unwrap(), json!(1500));
        let c = Expr::compile("input.amount.currency == 'CNY'", 0..1).unwrap();
        assert!(c.eval_bool(&scope).unwrap());
        let bad = Expr::compile("input.missing.x", 0..1).unwrap();
        assert!(bad.eval(&scope).is_err());
    }

    #[test]
    fn reads_only_what_it_needs_and_sees_the_same_values() {
        let scope = json!({
            "steps": {"a": {"x": 2}, "b": {"x": 3}, "c": {"x": 4}},
            "params": {"k": true},
        });
        let cases = [
            ("steps.a.x + steps.b.x", json!(5)),
            ("has(steps.a) && !has(steps.zz)", json!(true)),
            // The root used whole: every step is there.
            ("size(steps)", json!(3)),
            ("steps.a.x == 2 && size(steps) == 3", json!(true)),
            ("steps.all(k, steps[k].x > 1)", json!(true)),
            ("[1, 2].exists(steps, steps == 2)", json!(true)),
            ("params.k ? steps.c.x : 0", json!(4)),
        ];
        for (src, want) in cases {
            let e = Expr::compile(src, 0..src.len()).unwrap();
            assert_eq!(e.eval(&scope).unwrap(), want, "{src}");
        }
        let e = Expr::compile("steps.a.x", 0..1).unwrap();
        let read = &e.reads[0];
        assert_eq!(read.root, "steps");
        assert_eq!(read.fields.as_deref(), Some(&["a".to_owned()][..]));
    }

    #[test]
    fn refuses_bad_and_pathological_expressions() {
        assert!(Expr::compile("a +", 0..3).is_err());
        assert!(Expr::compile("", 0..0).is_err());
        let deep = format!("{}1{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(
            Expr::compile(&deep, 0..1).unwrap_err(),
            format!("expression nested deeper than {MAX_EXPR_DEPTH} levels")
        );
    }

    #[test]
    fn templates_keep_types_or_interpolate() {
        let scope =
            json!({"input": {"order_id": "o-1", "amount": {"minor": 5, "currency": "CNY"}}});
        let t = parse_string_template("${input.amount}", 0, 0..1).unwrap();
        assert_eq!(
            t.eval(&scope).unwrap(),
            json!({"minor": 5, "currency": "CNY"})
        );
        let t = parse_string_template("order ${input.order_id}!", 0, 0..1).unwrap();
        assert_eq!(t.eval(&scope).unwrap(), json!("order o-1!"));
        let t = parse_string_template("cost $${x}", 0, 0..1).unwrap();
        assert_eq!(t.eval(&scope).unwrap(), json!("cost ${x}"));
        let t = parse_string_template("${ {'a': 1}.a }", 0, 0..1).unwrap();
        assert_eq!(t.eval(&scope).unwrap(), json!(1));
        let (msg, span) = parse_string_template("x ${input.a", 10, 0..1).unwrap_err();
        assert_eq!(msg, "unclosed `${` in template");
        assert_eq!(span, 12..21);
    }
}
