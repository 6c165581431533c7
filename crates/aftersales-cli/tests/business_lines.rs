//! Data-driven checks of `aftersales validate` on business-line files: every bad fixture
//! under `tests/fixtures/business-lines/bad/` fails (or warns) with the code its first line
//! names and its rendered diagnostics are pinned by a snapshot; the good fixtures and the
//! shipped lines in `config/business-lines/` validate clean against the workflows.
//!
//! Bad fixtures are checked together with the fixture workflows
//! (`tests/fixtures/business-lines/workflows/`) and `good/minimal.toml`, so a duplicate id
//! has something to collide with and the snapshots do not change when shipped workflows do.

#![allow(clippy::unwrap_used)] // Test helpers fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &str = "tests/fixtures/business-lines";

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
    let dir = repo_root().join(FIXTURES).join(kind);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    names
}

/// Runs `validate` on one bad fixture with the fixture workflows and the minimal line.
fn check_bad(rel: &str, extra: &[&str]) -> Run {
    let workflows = format!("{FIXTURES}/workflows/");
    let minimal = format!("{FIXTURES}/good/minimal.toml");
    let mut args = vec!["validate"];
    args.extend_from_slice(extra);
    args.extend([workflows.as_str(), minimal.as_str(), rel]);
    aftersales(&args)
}

#[test]
fn bad_fixtures_fail_with_their_code_and_pinned_message() {
    let names = fixtures("bad");
    assert!(names.len() >= 20, "only {} bad fixtures", names.len());
    let mut codes_seen = Vec::new();
    for name in names {
        let rel = format!("{FIXTURES}/bad/{name}");
        let text = std::fs::read_to_string(repo_root().join(&rel)).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{rel}: first line must be `# expect: AS-BL-NNNN`"))
            .trim()
            .to_owned();
        codes_seen.push(expect.clone());
        let run = check_bad(&rel, &[]);
        assert!(
            run.stderr.contains(&format!("[{expect}]")),
            "{rel}: expected {expect} in:\n{}",
            run.stderr
        );
        // Every diagnostic is about the bad file; the good ones around it stay clean.
        for header in run.stderr.lines().filter(|l| l.contains("]: ")) {
            assert!(header.starts_with(&rel), "{rel}: stray diagnostic {header}");
        }
        let warning_only = !run.stderr.contains("error[");
        if warning_only {
            assert_eq!(run.code, 0, "{rel}: warnings alone must not fail");
            let strict = check_bad(&rel, &["--deny-warnings"]);
            assert_eq!(strict.code, 1, "{rel}: --deny-warnings must fail");
        } else {
            assert_eq!(run.code, 1, "{rel}: must exit 1\n{}", run.stderr);
        }
        let snapshot = format!("{}--- stdout\n{}", run.stderr, run.stdout);
        insta::assert_snapshot!(name.trim_end_matches(".toml"), snapshot);
    }
    // The cases the format promises to catch, at least one fixture each.
    for code in [
        "AS-BL-0001", // TOML syntax
        "AS-BL-0002", // unknown field
        "AS-BL-0003", // wrong type
        "AS-BL-0004", // missing field
        "AS-BL-0005", // value not allowed
        "AS-BL-0006", // bad duration
        "AS-BL-0007", // duplicate id
        "AS-BL-0101", // unknown workflow reference
        "AS-BL-0102", // missing or mistyped workflow parameter
        "AS-BL-0103", // workflow for another goods kind
        "AS-BL-0104", // unknown adapter kind
        "AS-BL-0106", // parameter nothing reads
        "AS-BL-0107", // retention nothing handles
        "AS-BL-0109", // two refund paths
    ] {
        assert!(
            codes_seen.iter().any(|c| c == code),
            "no bad fixture for {code}"
        );
    }
}

#[test]
fn good_fixtures_validate_clean() {
    for name in fixtures("good") {
        let rel = format!("{FIXTURES}/good/{name}");
        let workflows = format!("{FIXTURES}/workflows/");
        let run = aftersales(&["validate", "--deny-warnings", &workflows, &rel]);
        assert_eq!(run.code, 0, "{rel}:\n{}", run.stderr);
        assert!(run.stderr.is_empty(), "{rel}:\n{}", run.stderr);
    }
}

#[test]
fn shipped_business_lines_validate_clean_against_shipped_workflows() {
    let run = aftersales(&[
        "validate",
        "--deny-warnings",
        "workflows/",
        "config/business-lines/",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("ok: ") && run.stdout.contains("business line(s) valid"),
        "{}",
        run.stdout
    );
    for id in [
        "apparel",
        "electronics_3c",
        "online_courses",
        "membership",
        "course_with_textbook",
    ] {
        assert!(
            run.stdout.contains(&format!("  business line {id} (")),
            "{id} missing from:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains(
            "business line course_with_textbook (bundle): return_refund → bundle.return_refund@2"
        ),
        "{}",
        run.stdout
    );
}

/// The lines wired to real platforms (Shopify + Stripe + ShipBob, Alipay) validate with no
/// secret in the environment: validation builds adapters without reading them.
#[test]
fn platform_business_lines_validate_clean_without_secrets() {
    let run = aftersales(&[
        "validate",
        "--deny-warnings",
        "workflows/",
        "config/platforms/",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    for line in [
        "business line us_shopify (physical): cancel_after_payment → \
         physical.cancel_after_payment_platform@1",
        "business line cn_alipay (physical)",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line} missing from:\n{}",
            run.stdout
        );
    }
}

#[test]
fn json_output_carries_business_line_diagnostics_with_positions() {
    let rel = format!("{FIXTURES}/bad/many_errors_at_once.toml");
    let run = check_bad(&rel, &["--format", "json"]);
    assert_eq!(run.code, 1);
    let diags: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let diags = diags.as_array().unwrap();
    assert!(diags.len() >= 6, "{diags:#?}");
    for d in diags {
        assert!(d["line"].as_u64().unwrap() > 0);
        assert!(d["column"].as_u64().unwrap() > 0);
        assert!(d["code"].as_str().unwrap().starts_with("AS-BL-"));
        assert_eq!(d["file"], rel.as_str());
    }
}

#[test]
fn a_line_checked_without_its_workflows_says_how_to_check_it() {
    // A lone file: unresolved references are warnings, with a hint to pass the workflows.
    let run = aftersales(&["validate", "config/business-lines/apparel.toml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("warning[AS-BL-0101]"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("hint: no workflow files were given; validate them together"),
        "{}",
        run.stderr
    );
    // A directory: they are errors.
    let run = aftersales(&["validate", "config/business-lines/"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("error[AS-BL-0101]"), "{}", run.stderr);
}
