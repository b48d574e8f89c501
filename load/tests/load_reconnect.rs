//! The reconnect storm of the resumable-sessions issue, as real processes:
//! `precall-load reconnect-storm` starts a real `precall-server` with an accept-rate
//! limit on a temporary store, logs 5,000 sessions in (plus a few that stay connected),
//! cuts every one of their TCP connections at once, and has them all resume. Every
//! session must resume (each with `resumed`, none refused), no password may be checked
//! during the storm, the rate limit must actually have throttled it, and every table
//! must verify (INV-ONLINE-EXACT). A second, small run with a seeded fault (the tool
//! drops one session's catch-up) must fail verification and exit 1.
//!
//! The server binary is the one next to `precall-load`, built first under `cargo test`
//! (`cargo test -p precall-client` does not build other packages' binaries).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{server_bin, LOAD};

/// Runs `precall-load reconnect-storm ARGS` with a JSON report; returns the process
/// output and the report.
fn run(args: &[&str]) -> (Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let started = Instant::now();
    let out = Command::new(LOAD)
        .arg("reconnect-storm")
        .args(args)
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--json")
        .arg(&json)
        .args(["--wait-s", "60"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "precall-load reconnect-storm {args:?}: {:?}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); status {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, serde_json::from_str(&text).unwrap())
}

#[test]
fn five_thousand_sessions_cut_at_once_all_resume_with_correct_tables() {
    // Building the server is not part of the budget.
    server_bin();
    let started = Instant::now();
    let (out, r) = run(&["--sessions", "5000"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["verified"], true, "{r:#}");
    assert_eq!(r["mismatches"], 0, "{r:#}");
    let f = &r["figures"];
    assert_eq!(f["resumed"], 5000, "{r:#}");
    assert_eq!(f["not_resumed"], 0, "{r:#}");
    assert_eq!(f["resume_failed"], 0, "{r:#}");
    assert!(f["resumed_delta"].as_u64().unwrap() > 0, "{r:#}");
    assert!(f["resumed_delta_nonempty"].as_u64().unwrap() > 0, "{r:#}");
    assert!(f["rate_limited_retries"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(f["server_log_during_storm"]["password_checks"], 0, "{r:#}");
    assert_eq!(f["server_log_during_storm"]["sessions_started"], 0, "{r:#}");
    assert_eq!(
        f["server_log_during_storm"]["sessions_resumed"], 5000,
        "{r:#}"
    );
    assert_eq!(f["offline_pushes_about_away_sessions"], 0, "{r:#}");
    // Every table: the 5,000 resumed and the connected ones still logged in.
    assert!(f["final_tables"].as_u64().unwrap() >= 5000, "{r:#}");
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the storm run took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_dropped_catch_up_is_caught_and_the_run_exits_1() {
    server_bin();
    let (out, r) = run(&["--sessions", "300", "--seed-fault", "skip-catchup"]);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["verified"], false, "{r:#}");
    assert!(r["mismatches"].as_u64().unwrap() >= 1, "{r:#}");
    assert!(
        r["figures"]["seeded_fault_dropped_frames"]
            .as_u64()
            .unwrap()
            >= 1,
        "{r:#}"
    );
    // Everything else went right: only the table of the faulty session is wrong.
    assert_eq!(r["figures"]["resumed"], 300, "{r:#}");
    let notes = r["notes"].to_string();
    assert!(notes.contains("final mismatch"), "{notes}");
}
