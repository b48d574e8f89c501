//! `precall-load crash` at a small size, as real processes: a real `precall-server` on
//! a temporary SQLite store is SIGKILLed at a random point of each round of changes and
//! restarted on the same file; every acknowledged contact change must be in the store,
//! and every client must log in again and rebuild a correct table (INV-ONLINE-EXACT).
//! A seeded fault (the verifier expects an acknowledged change that never happened)
//! shows that the check catches a loss.
//!
//! The server binary is the one next to `precall-load`, built first under `cargo test`
//! (`cargo test -p precall-client` does not build other packages' binaries).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{server_bin, LOAD};

/// What a run printed and reported.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
}

/// Runs `precall-load crash` with a JSON report.
fn run(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let started = Instant::now();
    let out = Command::new(LOAD)
        .arg("crash")
        .args(args)
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--json")
        .arg(&json)
        .args(["--wait-s", "30"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no report ({e}):\n{stdout}\n{stderr}"));
    let report: Value = serde_json::from_str(&text).unwrap();
    eprintln!("precall-load crash {args:?}: {:?}", started.elapsed());
    Run {
        code: out.status.code(),
        stdout,
        stderr,
        report,
    }
}

/// Small sizes: a few seconds per run in a debug build.
const SMALL: [&str; 10] = [
    "--users",
    "150",
    "--contacts",
    "8",
    "--rounds",
    "3",
    "--round-ms",
    "800",
    "--rate",
    "200",
];

#[test]
fn kills_lose_no_acknowledged_change_and_every_table_is_rebuilt() {
    // Building the server is not part of the budget.
    server_bin();
    let started = Instant::now();
    let r = run(&SMALL);
    let (rep, f) = (&r.report, &r.report["figures"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("verified: true"), "{}", r.stdout);
    assert_eq!(rep["verified"], true, "{rep:#}");
    assert_eq!(rep["mismatches"], 0, "{rep:#}");
    // The kills happened, with acknowledged changes before each.
    assert_eq!(f["kills"], 3, "{rep:#}");
    let rounds = f["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "{rep:#}");
    for round in rounds {
        assert!(round["acked"].as_u64().unwrap() > 0, "{rep:#}");
        assert!(round["kill_at_ms"].as_f64().unwrap() > 0.0, "{rep:#}");
        assert!(
            round["connections_dropped"].as_u64().unwrap() > 0,
            "{rep:#}"
        );
        assert_eq!(round["lost"], 0, "{rep:#}");
        assert_eq!(round["tables_checked"], 150, "{rep:#}");
        assert_eq!(round["table_mismatches"], 0, "{rep:#}");
        assert!(round["recover_ms"].is_number(), "{rep:#}");
    }
    assert!(f["acked_total"].as_u64().unwrap() > 0, "{rep:#}");
    assert_eq!(f["lost_total"], 0, "{rep:#}");
    assert_eq!(f["unexpected_total"], 0, "{rep:#}");
    assert_eq!(f["missing_records_total"], 0, "{rep:#}");
    assert_eq!(f["failed_logins"], 0, "{rep:#}");
    assert_eq!(f["violations"], 0, "{rep:#}");
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the run took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_verifier_expecting_a_change_that_never_happened_reports_a_loss() {
    server_bin();
    let mut args = SMALL.to_vec();
    args[5] = "1";
    args.extend(["--seed-fault", "drop-ack"]);
    let r = run(&args);
    let (rep, f) = (&r.report, &r.report["figures"]);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("verified: false"), "{}", r.stdout);
    assert_eq!(rep["verified"], false, "{rep:#}");
    assert_eq!(f["lost_total"], 1, "{rep:#}");
    assert_eq!(f["kills"], 1, "{rep:#}");
    assert!(
        r.stdout
            .contains("lost acknowledged change: the store lacks"),
        "{}",
        r.stdout
    );
    // Only the seeded expectation is wrong: the store and the tables are right.
    assert_eq!(f["unexpected_total"], 0, "{rep:#}");
    assert_eq!(f["table_mismatches_total"], 0, "{rep:#}");
}
