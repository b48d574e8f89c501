//! The server-alone figures of `precall-load` (issue 16), as real processes at a tiny
//! size: the server's CPU time per delivery and per login next to the tool's own, a
//! sweep of two steps over two server binaries side by side, and its SVG plot. The
//! figures must exist and be plausible (time was used, per-unit figures are finite);
//! nothing here asserts how fast anything is.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;

use common::{server_bin, LOAD};

/// Runs one scenario with a JSON report (and `--server-bin` once unless `args` names
/// binaries); returns the report and the printed table.
fn run(args: &[&str], dir: &Path) -> (Value, String) {
    let json = dir.join("report.json");
    let mut cmd = Command::new(LOAD);
    cmd.args(args);
    if !args.contains(&"--server-bin") {
        cmd.arg("--server-bin").arg(server_bin());
    }
    let out = cmd
        .arg("--json")
        .arg(&json)
        .args(["--wait-s", "30"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "precall-load {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["verified"], true, "{report:#}");
    assert_eq!(report["mismatches"], 0, "{report:#}");
    (report, stdout)
}

/// A number of the report, which must be there.
fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// Checks a phase's CPU figures: the server and the tool used time, and the per-unit
/// figures are finite and add up.
fn plausible_cpu(cpu: &Value, unit: &str) {
    let su = num(&cpu["server_user_s"], "server user");
    let ss = num(&cpu["server_system_s"], "server system");
    assert!(
        su >= 0.0 && ss >= 0.0 && su + ss > 0.0,
        "server CPU: {cpu:#}"
    );
    let tool = num(&cpu["tool_user_s"], "tool user") + num(&cpu["tool_system_s"], "tool system");
    assert!(tool > 0.0, "tool CPU: {cpu:#}");
    assert_eq!(cpu["unit"], unit, "{cpu:#}");
    let units = num(&cpu["units"], "units");
    assert!(units > 0.0, "{cpu:#}");
    let per = num(&cpu["server_us_per_unit"], "server per unit");
    assert!(per.is_finite() && per > 0.0, "{cpu:#}");
    let sum = num(&cpu["server_user_us_per_unit"], "user per unit")
        + num(&cpu["server_system_us_per_unit"], "system per unit");
    assert!((sum - per).abs() <= 1e-6 * per.max(1.0), "{cpu:#}");
    // The per-unit figure is the phase's server time over its units.
    assert!(
        (per - (su + ss) * 1e6 / units).abs() <= 1e-6 * per,
        "{cpu:#}"
    );
    assert!(num(&cpu["tool_us_per_unit"], "tool per unit").is_finite());
    let busy = num(&cpu["machine_busy_fraction"], "machine busy");
    assert!((0.0..=1.0).contains(&busy), "{cpu:#}");
}

#[test]
fn server_cpu_figures_sweep_side_by_side_and_plot() {
    server_bin();
    let dir = tempfile::tempdir().unwrap();

    // Churn, one step: the server's CPU per delivery, user and system.
    let (r, table) = run(
        &["churn", "--users", "200", "--rate", "200", "--secs", "2"],
        dir.path(),
    );
    let f = &r["figures"];
    assert!(f["deliveries_total"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(f["cpu"]["units"], f["deliveries_total"], "{r:#}");
    plausible_cpu(&f["cpu"], "delivery");
    assert!(
        table.contains("server CPU per delivery user / system / total"),
        "{table}"
    );
    assert!(table.contains("load tool CPU per delivery"), "{table}");

    // Login storm over two worker processes: the server's CPU per login, and the
    // tool's including its workers' (they report theirs).
    let (r, table) = run(
        &[
            "login-storm",
            "--users",
            "300",
            "--contacts",
            "10",
            "--procs",
            "2",
            "--settle-ms",
            "50",
        ],
        dir.path(),
    );
    let f = &r["figures"];
    assert_eq!(f["cpu"]["units"], 300, "{r:#}");
    plausible_cpu(&f["cpu"], "login");
    assert!(table.contains("server CPU per login"), "{table}");
    let coordinator_only = num(&f["cpu_logins"]["tool_user_s"], "tool")
        + num(&f["cpu_logins"]["tool_system_s"], "tool");
    assert!(coordinator_only > 0.0, "{r:#}");

    // A sweep of two steps on two server binaries (the same one under two names),
    // alternating A B, B A; its plot.
    let bin = server_bin();
    let bin = bin.to_str().unwrap();
    let plot = dir.path().join("sweep.svg");
    let (r, table) = run(
        &[
            "churn",
            "--users",
            "100",
            "--rates",
            "50,100",
            "--secs",
            "1",
            "--p99-limit-ms",
            "1000000",
            "--server-bin",
            bin,
            "--label",
            "a",
            "--server-bin",
            bin,
            "--label",
            "b",
            "--plot",
            plot.to_str().unwrap(),
        ],
        dir.path(),
    );
    let steps = r["figures"]["steps"].as_array().unwrap();
    let order: Vec<(&str, f64)> = steps
        .iter()
        .map(|s| {
            (
                s["server"].as_str().unwrap(),
                num(&s["rate_offered"], "rate"),
            )
        })
        .collect();
    assert_eq!(
        order,
        [("a", 50.0), ("b", 50.0), ("b", 100.0), ("a", 100.0)],
        "{r:#}"
    );
    for s in steps {
        assert_eq!(s["final_mismatches"], 0, "{s:#}");
        assert!(s["final_tables"].as_u64().unwrap() > 0, "{s:#}");
        assert!(num(&s["deliveries_per_s"], "deliveries/s") > 0.0, "{s:#}");
        plausible_cpu(&s["cpu"], "delivery");
    }
    let capacity = r["figures"]["capacity"].as_array().unwrap();
    assert_eq!(capacity.len(), 2, "{r:#}");
    for c in capacity {
        assert!(num(&c["deliveries_per_s"], "capacity") > 0.0, "{r:#}");
    }
    assert!(table.contains("side by side"), "{table}");
    assert!(table.contains("b / a"), "{table}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(svg.contains("a p99") && svg.contains("b p50"), "{svg}");
    // Well-formed enough: every element opened is closed.
    assert_eq!(
        svg.matches("<text").count(),
        svg.matches("</text>").count(),
        "{svg}"
    );
    assert!(svg.matches("<polyline").count() >= 4, "{svg}");
}
