//! The parser and the validator never panic, whatever bytes they are given: arbitrary text,
//! and shipped workflows mutated at random (bytes deleted, inserted, lines swapped).

#![allow(clippy::unwrap_used)] // Test helpers fail loudly by design.

use aftersales_core::catalogue::{ActionSig, Catalogue, FieldSig};
use aftersales_core::diag::Source;
use aftersales_core::model::ValueType;
use aftersales_core::validate::check_sources;
use proptest::prelude::*;

const SHIPPED: &[&str] = &[
    include_str!("../../../workflows/physical/return_refund.toml"),
    include_str!("../../../workflows/physical/cancel_after_payment.toml"),
    include_str!("../../../workflows/physical/exchange.toml"),
    include_str!("../../../workflows/physical/refund_only.toml"),
    include_str!("../../../workflows/virtual/refund_revoke.toml"),
    include_str!("../../../workflows/virtual/exchange.toml"),
    include_str!("../../../workflows/bundle/return_refund.toml"),
];

fn catalogue() -> Catalogue {
    let mut c = Catalogue::new();
    let f = |name: &str, ty: ValueType| FieldSig {
        name: name.to_owned(),
        ty,
        required: true,
    };
    c.insert(ActionSig {
        name: "payment.refund".to_owned(),
        mutating: true,
        inputs: vec![
            f("payment_id", ValueType::String),
            f("amount", ValueType::Money),
        ],
        outputs: vec![f("refund_id", ValueType::String)],
    });
    c
}

fn check(texts: &[String]) {
    let names: Vec<String> = (0..texts.len()).map(|i| format!("f{i}.toml")).collect();
    let sources: Vec<Source> = texts
        .iter()
        .zip(&names)
        .map(|(t, n)| Source::new(n, t))
        .collect();
    let report = check_sources(&sources, &catalogue(), true);
    // Rendering must not panic either, and every positioned diagnostic points inside
    // its file.
    let _ = aftersales_core::diag::render_human(&report.diagnostics);
    for d in &report.diagnostics {
        let lines = texts[names.iter().position(|n| *n == d.file).unwrap()]
            .lines()
            .count()
            .max(1);
        assert!(d.line <= lines + 1, "{d:?}");
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "\"",
                "'",
                "[",
                "]",
                "{",
                "}",
                "${",
                "}",
                "=",
                "\n",
                "[[step]]\n",
                "next = \"x\"\n",
                "id = \"refund\"\n",
                "pivot = true\n",
                ".",
                "#",
                "\\",
                "é",
                "\u{0}",
                "((((",
                "0",
                "-9223372036854775808",
                "1e400",
                "max_visits = 0\n",
                "wait = { signal = \"a.b\" }\n",
            ])
            .prop_map(str::to_owned)
        )
            .prop_map(|(a, s)| Edit::Insert(a, s)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        match e {
            Edit::Delete(at, n) if !bytes.is_empty() => {
                let at = at % bytes.len();
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Delete(..) => {}
            Edit::Insert(at, s) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, s.bytes());
            }
            Edit::SwapLines(a, b) => {
                let s = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let (a, b) = (a % lines.len(), b % lines.len());
                    lines.swap(a, b);
                }
                bytes = lines.join("\n").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&[String::from_utf8_lossy(&bytes).into_owned()]);
    }

    #[test]
    fn arbitrary_toml_shaped_text_never_panics(text in "(\\[\\[step\\]\\]\n|\\[workflow\\]\n|[a-z_]{1,8} = (\"[a-z${}. ]{0,12}\"|[0-9]{1,3}|true|\\{ [a-z]{1,5} = \"[a-z${}.]{0,10}\" \\})\n){0,30}") {
        check(&[text]);
    }

    #[test]
    fn mutated_shipped_workflows_never_panic(which in 0..SHIPPED.len(), edits in prop::collection::vec(edit(), 1..6)) {
        let mutated = apply(SHIPPED[which], &edits);
        let mut all: Vec<String> = SHIPPED.iter().map(|s| (*s).to_owned()).collect();
        all[which] = mutated;
        check(&all);
    }
}

#[test]
fn deeply_nested_input_is_refused_not_overflowed() {
    let deep = format!(
        "[workflow]\nname = \"a.b\"\nversion = 1\n[[step]]\nid = \"x\"\nend = \"completed\"\nreason = \"${{{}1{}}}\"\n",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    check(&[deep]);
    let deep_toml = format!("a = {}1{}\n", "[".repeat(5_000), "]".repeat(5_000));
    check(&[deep_toml]);
}
