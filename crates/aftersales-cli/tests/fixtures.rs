//! Data-driven checks of `aftersales validate` on the fixture workflows under
//! `tests/fixtures/workflows/`: every bad file fails with the code its first line names,
//! and its full rendered diagnostics are pinned by a snapshot; every good file and every
//! shipped workflow validates clean.

#![allow(clippy::unwrap_used)] // Test helpers fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn aftersales(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .current_dir(repo_root())
        .args(args)
        .output()
        .expect("run aftersales");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn fixtures(kind: &str) -> Vec<String> {
    let dir = repo_root().join("tests/fixtures/workflows").join(kind);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    names
}

#[test]
fn bad_fixtures_fail_with_their_code_and_pinned_message() {
    let names = fixtures("bad");
    assert!(names.len() >= 25, "only {} bad fixtures", names.len());
    for name in names {
        let rel = format!("tests/fixtures/workflows/bad/{name}");
        let text = std::fs::read_to_string(repo_root().join(&rel)).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{rel}: first line must be `# expect: AS-WF-NNNN`"))
            .trim()
            .to_owned();
        let run = aftersales(&["validate", &rel]);
        let warning_only = run.stderr.contains(&format!("warning[{expect}]"));
        assert!(
            run.stderr.contains(&format!("[{expect}]")),
            "{rel}: expected {expect} in:\n{}",
            run.stderr
        );
        if warning_only && !run.stderr.contains("error[") {
            assert_eq!(run.code, 0, "{rel}: warnings alone must not fail");
            let strict = aftersales(&["validate", "--deny-warnings", &rel]);
            assert_eq!(strict.code, 1, "{rel}: --deny-warnings must fail");
        } else {
            assert_eq!(run.code, 1, "{rel}: must exit 1\n{}", run.stderr);
        }
        let snapshot = format!("{}--- stdout\n{}", run.stderr, run.stdout);
        insta::assert_snapshot!(name.trim_end_matches(".toml"), snapshot);
    }
}

#[test]
fn good_fixtures_and_shipped_workflows_validate_clean() {
    for name in fixtures("good") {
        let rel = format!("tests/fixtures/workflows/good/{name}");
        let run = aftersales(&["validate", "--deny-warnings", &rel, "workflows/"]);
        assert_eq!(run.code, 0, "{rel}:\n{}", run.stderr);
        assert!(run.stderr.is_empty(), "{rel}:\n{}", run.stderr);
    }
    let run = aftersales(&["validate", "--deny-warnings", "workflows/"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);
}

#[test]
fn json_output_lists_every_diagnostic_with_position() {
    let run = aftersales(&[
        "validate",
        "--format",
        "json",
        "tests/fixtures/workflows/bad/many_errors_at_once.toml",
    ]);
    assert_eq!(run.code, 1);
    let diags: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let diags = diags.as_array().unwrap();
    assert!(diags.len() >= 4, "{diags:#?}");
    for d in diags {
        assert!(d["line"].as_u64().unwrap() > 0);
        assert!(d["column"].as_u64().unwrap() > 0);
        assert!(d["code"].as_str().unwrap().starts_with("AS-WF-"));
        assert_eq!(
            d["file"],
            "tests/fixtures/workflows/bad/many_errors_at_once.toml"
        );
    }
}

#[test]
fn the_same_workflow_twice_is_refused() {
    let dir = tempdir();
    let text =
        std::fs::read_to_string(repo_root().join("workflows/virtual/exchange.toml")).unwrap();
    std::fs::write(dir.join("a.toml"), &text).unwrap();
    std::fs::write(dir.join("b.toml"), &text).unwrap();
    let run = aftersales(&["validate", dir.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("error[AS-WF-0124]: workflow `virtual.exchange@1` is also defined in"),
        "{}",
        run.stderr
    );
}

#[test]
fn graphs_render_in_both_formats() {
    let mermaid = aftersales(&["graph", "workflows/physical/return_refund.toml"]);
    assert_eq!(mermaid.code, 0, "{}", mermaid.stderr);
    assert!(mermaid.stdout.contains("flowchart TD"));
    // A wait's timeout is drawn as a dashed edge labelled with the duration.
    assert!(
        mermaid
            .stdout
            .contains("s_await_shipment -.->|\"after params.buyer_ship_within\"| s_cancel_rma"),
        "{}",
        mermaid.stdout
    );
    // Compensation edges are drawn differently.
    assert!(
        mermaid
            .stdout
            .contains("s_create_return -.-|\"compensate\"| s_create_return__undo")
    );
    // Conditions label the branches.
    assert!(
        mermaid
            .stdout
            .contains("|\"steps.await_receipt.inspection_passed\"| s_restock")
    );

    let dot = aftersales(&[
        "graph",
        "--format",
        "dot",
        "workflows/virtual/refund_revoke.toml",
    ]);
    assert_eq!(dot.code, 0, "{}", dot.stderr);
    assert!(
        dot.stdout
            .starts_with("digraph \"virtual.refund_revoke@1\" {")
    );
    assert!(
        dot.stdout
            .contains("subgraph \"cluster_refund_and_revoke_money\"")
    );
    assert!(dot.stdout.contains("style=dashed, arrowhead=empty"));
    insta::assert_snapshot!("graph_refund_revoke_dot", dot.stdout);
}

#[test]
fn graph_of_a_broken_file_explains_why() {
    let run = aftersales(&[
        "graph",
        "tests/fixtures/workflows/bad/unknown_next_step.toml",
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("AS-WF-0102"));
    assert!(run.stderr.contains("fix them to draw its graph"));
}

#[test]
fn missing_paths_are_reported() {
    let run = aftersales(&["validate", "no/such/file.toml"]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "error: no/such/file.toml: no such file or directory\n"
    );
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "aftersales-test-{}-{}",
        std::process::id(),
        line!()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
