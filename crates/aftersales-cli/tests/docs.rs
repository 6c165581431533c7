//! Every complete workflow example in docs/workflow-format.md, and every complete business
//! line in docs/business-lines.md, validates clean, so the formats' documentation cannot
//! drift from the parsers and validators. Every diagnostic code has a page.

#![allow(clippy::unwrap_used)] // Test helpers fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The ```toml blocks of a Markdown file that hold a whole workflow.
fn workflow_blocks(markdown: &str) -> Vec<String> {
    toml_blocks(markdown, "[workflow]")
}

/// The ```toml blocks of a Markdown file that contain `marker`.
fn toml_blocks(markdown: &str, marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start() == "```toml" => current = Some(String::new()),
            Some(block) if line.trim_start() == "```" => {
                if block.contains(marker) {
                    out.push(std::mem::take(block));
                }
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_format_example_validates_clean() {
    let root = repo_root();
    let doc = std::fs::read_to_string(root.join("docs/workflow-format.md")).unwrap();
    let blocks = workflow_blocks(&doc);
    assert!(
        blocks.len() >= 14,
        "expected an example per feature, found {}",
        blocks.len()
    );
    let dir = std::env::temp_dir().join(format!("aftersales-docs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.join(format!("example_{i:02}.toml"));
        std::fs::write(&file, block).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
            .current_dir(&root)
            .args(["validate", "--deny-warnings"])
            .arg(&file)
            .arg("workflows/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "example {i} of docs/workflow-format.md does not validate:\n{}\n{block}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_business_line_example_validates_clean() {
    let root = repo_root();
    let doc = std::fs::read_to_string(root.join("docs/business-lines.md")).unwrap();
    let blocks = toml_blocks(&doc, "[business_line]");
    assert!(
        blocks.len() >= 2,
        "expected a complete example line, found {}",
        blocks.len()
    );
    let dir = std::env::temp_dir().join(format!("aftersales-bl-docs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The complete example is the shipped apparel line, word for word.
    let apparel = std::fs::read_to_string(root.join("config/business-lines/apparel.toml")).unwrap();
    assert!(
        blocks.contains(&apparel),
        "docs/business-lines.md must show config/business-lines/apparel.toml as it is"
    );
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.join(format!("line_{i:02}.toml"));
        std::fs::write(&file, block).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
            .current_dir(&root)
            .args(["validate", "--deny-warnings", "workflows/"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "example {i} of docs/business-lines.md does not validate:\n{}\n{block}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_diagnostic_code_has_a_page() {
    let root = repo_root();
    let mut codes = Vec::new();
    for file in [
        "crates/aftersales-core/src/parse.rs",
        "crates/aftersales-core/src/validate.rs",
        "crates/aftersales-runtime/src/business_line.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("pub const ")
                && let Some((_, value)) = rest.split_once("= \"")
            {
                let value = value.trim_end_matches("\";");
                // Only diagnostic codes; other string constants live beside them.
                if value.starts_with("AS-") {
                    codes.push(value.to_owned());
                }
            }
        }
    }
    assert!(codes.len() >= 30, "{codes:?}");
    for code in codes {
        let page = root.join("docs/errors").join(format!("{code}.md"));
        assert!(page.exists(), "no page for {code}");
        let index = std::fs::read_to_string(root.join("docs/errors/README.md")).unwrap();
        assert!(
            index.contains(&code),
            "{code} missing from docs/errors/README.md"
        );
    }
}
