//! `aftersales bench` runs end to end on SQLite and prints every figure's label. Never a
//! timing assertion: the figures are for docs/benchmarks.md, not for tests.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn bench_on_sqlite_completes_every_instance_and_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .args([
            "bench", "--store", "sqlite", "-n", "20", "-c", "4", "--raw-ms", "100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for label in [
        "workflows/s:",
        "steps/s:",
        "CPU while running:",
        "start→completion p50/p95/p99:",
        "dispatch latency step 1 p50/p95/p99:",
        "dispatch latency steps 2-5 p50/p95/p99:",
        "peak RSS (VmHWM):",
        "store bytes per instance:",
        "store calls (time includes waiting for a connection):",
        "instances per call",
        "single-row commits/s (1 connection):",
        "rows/s in 100-row transactions (1 connection):",
        "our steps/s ÷ this =",
    ] {
        assert!(stdout.contains(label), "missing `{label}` in:\n{stdout}");
    }
    let completed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("completed:"))
        .unwrap_or_else(|| panic!("no `completed:` line in:\n{stdout}"));
    assert_eq!(completed.trim(), "20 / 20", "{stdout}");
}

#[test]
fn rounds_run_the_saga_on_fresh_stores_and_end_with_their_median() {
    let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .args([
            "bench", "--store", "sqlite", "-n", "10", "-c", "2", "--rounds", "3", "--no-raw",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for round in ["round 1 of 3:", "round 2 of 3:", "round 3 of 3:"] {
        assert!(stdout.contains(round), "missing `{round}` in:\n{stdout}");
    }
    // Every round completes all of its own instances: each has a store of its own.
    let completed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("completed:"))
        .map(str::trim)
        .collect();
    assert_eq!(completed, vec!["10 / 10"; 3], "{stdout}");
    // Each round's store calls are its own, not a running total.
    let starts: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("start "))
        .collect();
    assert_eq!(starts.len(), 3, "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("steps/s over 3 rounds: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    assert!(summary.contains("; median "), "{summary}");
    assert_eq!(
        summary.matches(", ").count(),
        4,
        "three rounds, then min and max: {summary}"
    );
}

#[test]
fn waiting_instances_park_and_drain() {
    let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .args([
            "bench",
            "--store",
            "sqlite",
            "--waiting",
            "10",
            "-c",
            "2",
            "--idle-secs",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for label in [
        "RSS while parked:",
        "store bytes per instance:",
        "wake-ups/s",
        "idle CPU while parked:",
        "store calls (time includes waiting for a connection):",
    ] {
        assert!(stdout.contains(label), "missing `{label}` in:\n{stdout}");
    }
    let completed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("completed:"))
        .unwrap_or_else(|| panic!("no `completed:` line in:\n{stdout}"));
    assert_eq!(completed.trim(), "10 / 10", "{stdout}");
}

#[test]
fn without_the_simulator_every_call_is_still_made_and_answered() {
    let out = Command::new(env!("CARGO_BIN_EXE_aftersales"))
        .args([
            "bench", "--store", "sqlite", "-n", "20", "-c", "4", "--no-raw", "--no-sim",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("(--no-sim)"), "{stdout}");
    let completed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("completed:"))
        .unwrap_or_else(|| panic!("no `completed:` line in:\n{stdout}"));
    assert_eq!(completed.trim(), "20 / 20", "{stdout}");
}
