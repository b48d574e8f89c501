//! `precall-load`, every scenario at a tiny size, as real processes: each starts a real
//! `precall-server` on a temporary store, drives real sockets, and must report its
//! tables verified (INV-ONLINE-EXACT) and, for call set-up, a fast path with one round
//! trip and no capability bytes.
//!
//! The server binary is the one next to `precall-load`, built first under `cargo test`
//! (`cargo test -p precall-client` does not build other packages' binaries).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{server_bin, LOAD};

/// Runs one scenario with a JSON report; returns the report.
fn run(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let started = Instant::now();
    let out = Command::new(LOAD)
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "precall-load {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("verified: true"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["verified"], true, "{report:#}");
    assert_eq!(report["mismatches"], 0, "{report:#}");
    eprintln!("precall-load {args:?}: {:?}", started.elapsed());
    report
}

#[test]
fn every_scenario_runs_small_and_verifies() {
    // Building the server is not part of the budget.
    server_bin();
    let started = Instant::now();

    let r = run(&["call-setup", "--calls", "3", "--delay-ms", "5"]);
    let fast = &r["figures"]["fast"];
    assert_eq!(fast["capability_bytes_per_call"]["max"], 0, "{r:#}");
    assert_eq!(fast["round_trips_counted"]["min"], 1, "{r:#}");
    assert_eq!(fast["round_trips_counted"]["max"], 1, "{r:#}");
    assert_eq!(fast["fast_path_calls"], 3, "{r:#}");
    for m in ["prior_art", "query_first"] {
        assert!(
            r["figures"][m]["capability_bytes_per_call"]["min"]
                .as_u64()
                .unwrap()
                > 0,
            "{r:#}"
        );
    }
    assert_eq!(r["figures"]["query_first"]["round_trips_counted"]["max"], 2);

    let r = run(&[
        "login-storm",
        "--users",
        "200",
        "--contacts",
        "5",
        "--procs",
        "2",
        "--settle-ms",
        "100",
    ]);
    let f = &r["figures"];
    assert_eq!(f["logged_in"], 200, "{r:#}");
    assert_eq!(f["failed_logins"], 0, "{r:#}");
    assert_eq!(f["presence_deliveries"], f["expected_entries"], "{r:#}");

    let r = run(&["churn", "--users", "100", "--secs", "2", "--rate", "50"]);
    assert!(
        r["figures"]["deliveries_total"].as_u64().unwrap() > 0,
        "{r:#}"
    );

    let r = run(&["held", "--counts", "100", "--settle-ms", "100"]);
    assert_eq!(r["figures"]["counts"][0]["logged_in"], 100, "{r:#}");
    assert!(
        r["figures"]["counts"][0]["bytes_per_terminal"].is_number(),
        "{r:#}"
    );

    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the smoke run took {:?}",
        started.elapsed()
    );
}
