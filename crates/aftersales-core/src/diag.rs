//! Diagnostics: what is wrong (or suspicious) in a file, where, and how to fix it.
//!
//! Every diagnostic carries a stable code (`AS-WF-0102`), documented in `docs/errors/`,
//! the file and a 1-based line and column, the source line for the caret, and an optional
//! hint. [`render_human`] prints them the way rustc does; [`render_json`] for tools.

use std::fmt::Write as _;
use std::ops::Range;

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// The file works but probably not as meant.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One finding, positioned in a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable code, e.g. `AS-WF-0102`; see `docs/errors/<code>.md`.
    pub code: &'static str,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// The file, as given by the caller.
    pub file: String,
    /// 1-based line; 0 when the diagnostic is about the file as a whole.
    pub line: usize,
    /// 1-based column in characters; 0 when the diagnostic is about the file as a whole.
    pub column: usize,
    /// How many characters the caret underlines on that line.
    #[serde(skip)]
    pub width: usize,
    /// The source line, for rendering.
    #[serde(skip)]
    pub source_line: String,
    /// How to fix it, when there is something useful to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A source file's text with the means to turn byte offsets into lines and columns.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The path as the caller named it; used verbatim in diagnostics.
    pub name: &'a str,
    /// The whole text.
    pub text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    /// Indexes a file's text.
    pub fn new(name: &'a str, text: &'a str) -> Source<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            name,
            text,
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset; the column counts characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    fn line_text(&self, line: usize) -> &'a str {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |e| e.saturating_sub(1));
        self.text
            .get(start..end)
            .unwrap_or("")
            .trim_end_matches('\r')
    }

    /// Builds a diagnostic positioned at `span` (a byte range into the text).
    pub fn diag(
        &self,
        severity: Severity,
        code: &'static str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column, width, source_line) = match span {
            Some(span) => {
                let (line, column) = self.line_col(span.start);
                let text = self.line_text(line);
                let (_, end_col) = self.line_col(span.end.max(span.start));
                let on_line = (text.chars().count() + 1).saturating_sub(column);
                let width = if self.line_col(span.end).0 == line {
                    end_col.saturating_sub(column)
                } else {
                    on_line
                };
                // Never underline past the end of the line (plus one for "end of line").
                let width = width.clamp(1, on_line.max(1));
                (line, column, width, text.to_owned())
            }
            None => (0, 0, 0, String::new()),
        };
        Diagnostic {
            severity,
            code,
            message: message.into(),
            file: self.name.to_owned(),
            line,
            column,
            width,
            source_line,
            hint: None,
        }
    }
}

/// Adds a hint to a diagnostic under construction.
pub(crate) trait WithHint {
    fn hint(self, hint: impl Into<String>) -> Self;
    fn maybe_hint(self, hint: Option<String>) -> Self;
}

impl WithHint for Diagnostic {
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    fn maybe_hint(mut self, hint: Option<String>) -> Self {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }
}

/// Renders diagnostics like rustc: a header with file:line:column, the source line, a
/// caret under the offending text, and the hint.
pub fn render_human(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        if d.line == 0 {
            let _ = writeln!(
                out,
                "{}: {}[{}]: {}",
                d.file,
                d.severity.as_str(),
                d.code,
                d.message
            );
        } else {
            let _ = writeln!(
                out,
                "{}:{}:{}: {}[{}]: {}",
                d.file,
                d.line,
                d.column,
                d.severity.as_str(),
                d.code,
                d.message
            );
            let num = d.line.to_string();
            let pad = " ".repeat(num.len());
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {}", d.source_line);
            let _ = writeln!(
                out,
                "{pad} | {}{}",
                " ".repeat(d.column.saturating_sub(1)),
                "^".repeat(d.width)
            );
        }
        if let Some(hint) = &d.hint {
            let _ = writeln!(out, "hint: {hint}");
        }
        out.push('\n');
    }
    out
}

/// Renders diagnostics as a JSON array.
pub fn render_json(diags: &[Diagnostic]) -> String {
    serde_json::to_string_pretty(diags).unwrap_or_else(|_| "[]".to_owned())
}

/// Suggests the closest of `candidates` to `word`, when one is close enough to be a typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score > 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = Source::new("f.toml", "a = 1\nbé = \"x\"\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        // "bé = " — the é is two bytes but one column.
        assert_eq!(src.line_col(11), (2, 5));
    }

    #[test]
    fn human_rendering_points_at_the_span() {
        let src = Source::new("w.toml", "[workflow]\nname = 12\n");
        let d = src
            .diag(Severity::Error, "AS-WF-0003", Some(18..20), "bad")
            .hint("use a string");
        let text = render_human(&[d]);
        assert_eq!(
            text,
            "w.toml:2:8: error[AS-WF-0003]: bad\n  |\n2 | name = 12\n  |        ^^\nhint: use a string\n\n"
        );
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(
            did_you_mean("refnd", ["refund", "approve"]),
            Some("did you mean `refund`?".to_owned())
        );
        assert_eq!(did_you_mean("zzz", ["refund", "approve"]), None);
    }
}
