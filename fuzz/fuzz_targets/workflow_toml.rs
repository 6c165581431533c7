//! Workflow files: any bytes through the parser, the validator (against the real action
//! catalogue), both diagnostic renderers and both graph renderers. None may panic; errors
//! are the expected answer to most inputs.
//!
//! An input may hold several files separated by a line `#---`, so calls between workflows
//! and duplicate names are reached too.

#![no_main]

use aftersales_core::diag::{Source, render_human, render_json};
use aftersales_core::graph::{Format, render};
use aftersales_core::validate::check_sources;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let files: Vec<(String, &str)> = text
        .split("\n#---\n")
        .take(4)
        .enumerate()
        .map(|(i, t)| (format!("fuzz{i}.toml"), t))
        .collect();
    let sources: Vec<Source> = files.iter().map(|(n, t)| Source::new(n, t)).collect();
    let report = check_sources(&sources, &aftersales_runtime::catalogue::builtin(), true);
    let _ = render_human(&report.diagnostics);
    let _ = render_json(&report.diagnostics);
    for (_, wf) in &report.workflows {
        let _ = render(wf, Format::Mermaid);
        let _ = render(wf, Format::Dot);
    }
});
