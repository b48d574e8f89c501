//! The login storm, and the idle sessions of `held` that reuse it: every user of a
//! population logs in at once, spread over worker processes, and every table must
//! become exactly what INV-ONLINE-EXACT says.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;
use tokio::time::sleep;

use crate::cpu::{CpuTimes, CpuUse, Meter};
use crate::report::{Report, Stats, TcpCounters};
use crate::serverproc::{Memory, Target};
use crate::verify::{DirEntry, Verdict};
use crate::worker::{FromWorker, ToWorker, Workers};

/// What one storm measured.
#[derive(Debug, Default)]
pub struct Storm {
    /// Sessions that logged in.
    pub logged_in: usize,
    /// Sessions whose login failed, with the first few reasons.
    pub failed: usize,
    /// The first few failure reasons.
    pub failures: Vec<String>,
    /// From the first connect to the last `login_ok`, µs.
    pub login_span_us: u64,
    /// Per-session login latency (login written → `login_ok`), µs.
    pub login_latency: Stats,
    /// Per-session connection time (connect started → connected), µs.
    pub connect_latency: Stats,
    /// For each table: from the last `login_ok` of the run to the table being complete,
    /// µs (0 for tables complete before it).
    pub complete_after_last: Stats,
    /// Tables that never became complete.
    pub incomplete: usize,
    /// The full check of every table.
    pub verdict: Verdict,
    /// `online` messages received by all clients.
    pub online_msgs: u64,
    /// Entries the tables must hold in total (each delivered once).
    pub expected_entries: usize,
    /// Messages the clients' cores refused, and `error` messages received.
    pub violations: u64,
    /// `error` messages received.
    pub errors: u64,
    /// Accept-queue overflows and SYN retransmissions during the logins.
    pub tcp: TcpCounters,
    /// The server before any login.
    pub baseline: Option<Memory>,
    /// The server after the tables were complete and `settle` passed.
    pub settled: Option<Memory>,
    /// CPU from the start barrier to the last `login_ok` (every worker's answer).
    pub cpu_logins: CpuUse,
    /// CPU from the start barrier to every table complete and checked.
    pub cpu: CpuUse,
}

impl Storm {
    /// Whether every login succeeded and every table was exact.
    pub fn ok(&self) -> bool {
        self.failed == 0
            && self.incomplete == 0
            && self.verdict.mismatches == 0
            && self.verdict.checked == self.logged_in
            && self.violations == 0
            && self.errors == 0
    }

    /// Adds the verification figures to a report.
    pub fn verification(&self, report: &mut Report) {
        report.verified &= self.ok();
        report.mismatches += self.verdict.mismatches + self.incomplete;
        for e in &self.verdict.examples {
            report.note(format!("mismatch: {e}"));
        }
        for f in &self.failures {
            report.note(format!("failed login: {f}"));
        }
    }

    /// The figures as JSON.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "logged_in": self.logged_in,
            "failed_logins": self.failed,
            "login_span_ms": self.login_span_us as f64 / 1000.0,
            "logins_per_s": self.logins_per_s(),
            "login_latency_ms": self.login_latency.ms_json(),
            "connect_latency_ms": self.connect_latency.ms_json(),
            "complete_after_last_login_ms": self.complete_after_last.ms_json(),
            "incomplete_tables": self.incomplete,
            "tables_checked": self.verdict.checked,
            "table_entries": self.verdict.entries,
            "expected_entries": self.expected_entries,
            "presence_deliveries": self.online_msgs,
            "violations": self.violations,
            "server_errors": self.errors,
            "tcp_during_logins": self.tcp,
            "server_baseline": self.baseline,
            "server_settled": self.settled,
            "cpu_logins": self.cpu_logins.json(self.logged_in as u64, "login"),
            "cpu": self.cpu.json(self.logged_in as u64, "login"),
            "cpu_per_presence_delivery": self.cpu.json(self.online_msgs, "delivery"),
        })
    }

    /// Logins admitted per second, first connect to last `login_ok`.
    pub fn logins_per_s(&self) -> f64 {
        if self.login_span_us == 0 {
            return 0.0;
        }
        self.logged_in as f64 / (self.login_span_us as f64 / 1e6)
    }
}

/// Runs a storm of population `(users, contacts, seed)` on `target` over `procs`
/// worker processes, then waits `settle` and reads the server's memory. The workers
/// are stopped after the server.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    exe: &Path,
    target: &mut Target,
    users: usize,
    contacts: usize,
    seed: u64,
    procs: usize,
    settle: Duration,
    wait: Duration,
) -> Result<Storm> {
    let mut s = Storm {
        baseline: target.memory(),
        ..Storm::default()
    };
    let procs = procs.clamp(1, users.max(1));
    let mut workers =
        Workers::start(exe, &target.addrs, users, contacts, seed, procs, wait).await?;
    tracing::info!(users, procs, "workers ready; logging in");
    let tcp_before = TcpCounters::read();
    let meter = Meter::start(&target.pids);
    workers.send_all(&ToWorker::Go).await?;
    let mut workers_cpu: Vec<Option<CpuTimes>> = Vec::new();
    let mut entries = Vec::new();
    let mut first_connect = u64::MAX;
    let mut last_login = 0u64;
    let mut latencies = Vec::new();
    let mut connects = Vec::new();
    for msg in workers.recv_all(wait).await? {
        let FromWorker::Logins {
            first_connect_us,
            logged,
            failed,
            cpu,
        } = msg
        else {
            bail!("unexpected worker message {msg:?}");
        };
        workers_cpu.push(cpu);
        first_connect = first_connect.min(first_connect_us);
        for l in logged {
            last_login = last_login.max(l.at_us);
            latencies.push(l.latency_us);
            connects.push(l.connect_us);
            entries.push(DirEntry {
                user: l.user,
                session: l.session,
                fp: l.fp,
            });
        }
        s.failed += failed.len();
        for (user, why) in failed.into_iter().take(5) {
            if s.failures.len() < 5 {
                s.failures.push(format!("u{user:06}: {why}"));
            }
        }
    }
    s.cpu_logins = meter.stop(sum(&workers_cpu));
    s.tcp = TcpCounters::read().since(tcp_before);
    s.logged_in = entries.len();
    s.login_span_us = last_login.saturating_sub(first_connect);
    s.login_latency = Stats::of(&mut latencies);
    s.connect_latency = Stats::of(&mut connects);
    tracing::info!(
        logged_in = s.logged_in,
        failed = s.failed,
        span_ms = s.login_span_us / 1000,
        "logins done; waiting for complete tables"
    );
    let dir = crate::verify::Directory::from_entries(entries.iter().cloned());
    let pop = crate::population::Population::generate(users, contacts, seed)?;
    s.expected_entries = entries
        .iter()
        .map(|e| dir.expected_len(&pop, e.user as usize))
        .sum();
    workers.send_all(&ToWorker::Directory { entries }).await?;
    let mut after = Vec::new();
    let mut workers_cpu: Vec<Option<CpuTimes>> = Vec::new();
    for msg in workers.recv_all(wait).await? {
        let FromWorker::Tables {
            complete_us,
            incomplete,
            verdict,
            online_msgs,
            offline_msgs: _,
            violations,
            errors,
            cpu,
        } = msg
        else {
            bail!("unexpected worker message {msg:?}");
        };
        workers_cpu.push(cpu);
        after.extend(complete_us.iter().map(|&c| c.saturating_sub(last_login)));
        s.incomplete += incomplete;
        s.verdict.merge(verdict);
        s.online_msgs += online_msgs;
        s.violations += violations;
        s.errors += errors;
    }
    s.cpu = meter.stop(sum(&workers_cpu));
    s.complete_after_last = Stats::of(&mut after);
    tracing::info!(
        p99_ms = s.complete_after_last.p99 / 1000.0,
        mismatches = s.verdict.mismatches,
        "tables complete; settling"
    );
    sleep(settle).await;
    s.settled = target.memory();
    target.stop();
    workers.quit().await;
    Ok(s)
}

/// The sum of the workers' CPU times; unknown if any worker's is.
fn sum(each: &[Option<CpuTimes>]) -> Option<CpuTimes> {
    each.iter()
        .try_fold(CpuTimes::default(), |acc, one| Some(acc.plus((*one)?)))
}
