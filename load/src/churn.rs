//! `churn`: presence under steady change.
//!
//! Every user logs in and every table is verified first. Then, at a steady rate, the
//! tool picks a random user and, a third of the time each, logs an online user out,
//! logs an offline user back in, or changes an online user's capabilities
//! (`update_caps` with another profile). Each change is stamped with the time its
//! command was given (the approximation of "the event at the server"); each watcher's
//! client records when the push it caused arrived (`PeerOffline`, or `PeerOnline` /
//! `PeerUpdated` carrying the new capabilities, matched by endpoint and fingerprint).
//! At the end, once every change has completed and presence is quiet, every table is
//! verified again.
//!
//! A run is one or more steps (`--rates`, `--sweep`): each makes changes at its rate for
//! `--secs`, waits until every change completed and presence is quiet, and checks every
//! table. Each step reports the deliveries per second, the push latency, and the CPU
//! time the server process and this tool used from the start of the changes to the
//! last delivery ([`crate::cpu`]), per delivery. Several servers (`--server-bin` given
//! more than once) each get their own sessions; the steps run on each in turn, and the
//! figures are printed side by side.
//!
//! All sessions live in this process (one socket each, so up to about 19,000 users).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use precall_protocol::{Client, ClientEvent, Fingerprint, SessionId};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::cpu::{CpuTimes, CpuUse, Meter};
use crate::phases::{await_tables, dir_entries, login_all};
use crate::plot;
use crate::population::Population;
use crate::report::{median, ms, Report, Stats, TcpCounters};
use crate::rng::Rng;
use crate::serverproc::Target;
use crate::session::{Cmd, Hub, Note, Notes, Observer};
use crate::verify::{Directory, Verdict};

/// A change the tool made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Logout,
    Login,
    Caps,
}

/// One change, as the watchers will see it.
#[derive(Clone, Debug)]
struct Op {
    kind: Kind,
    sent: Instant,
    /// The capabilities the pushes must carry (login, capability change).
    fp: Option<Fingerprint>,
    /// The session that ends (logout).
    session: Option<SessionId>,
}

/// Matches pushes to changes and collects the latencies.
struct Tracker {
    pop: Arc<Population>,
    /// Every change of the current step, by user (held bytes reach the clients after
    /// the step's window, so a push is matched against all of them).
    ops: Mutex<HashMap<usize, Vec<Op>>>,
    /// Push latencies by the kind of change (logout, login, capability change).
    latencies_us: Mutex<[Vec<u64>; 3]>,
    /// The current step's window: presence events whose bytes arrived in it are
    /// counted in `in_window`.
    window: Mutex<Option<(Instant, Instant)>>,
    in_window: AtomicU64,
}

impl Tracker {
    fn record(&self, user: usize, op: Op) {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(user)
            .or_default()
            .push(op);
    }

    /// Starts a step: its window, no changes yet, no latencies.
    fn start(&self, window: (Instant, Instant)) {
        *self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(window);
        self.in_window.store(0, Ordering::Relaxed);
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        drop(std::mem::take(
            &mut *self
                .latencies_us
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ));
    }
}

impl Observer for Tracker {
    fn on_event(
        &self,
        _watcher: usize,
        client: &Client,
        event: &ClientEvent,
        snapshot: bool,
        at: Instant,
    ) {
        let (endpoint, online) = match event {
            ClientEvent::PeerOnline { endpoint, .. }
            | ClientEvent::PeerUpdated { endpoint, .. } => (endpoint, true),
            ClientEvent::PeerOffline { endpoint } => (endpoint, false),
            _ => return,
        };
        let window = *self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.is_some_and(|(from, to)| from <= at && at < to) {
            self.in_window.fetch_add(1, Ordering::Relaxed);
        }
        if snapshot {
            // A login snapshot shows the state; it is not the push a change caused.
            return;
        }
        let Some(subject) = self.pop.index_of(&endpoint.user) else {
            return;
        };
        let fp = client.peer(endpoint).map(|p| p.fingerprint);
        let matched = {
            let ops = self
                .ops
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(q) = ops.get(&subject) else { return };
            q.iter()
                .rev()
                .find(|op| {
                    op.sent <= at
                        && if online {
                            op.kind != Kind::Logout && op.fp.is_some() && op.fp == fp
                        } else {
                            op.kind == Kind::Logout && op.session == Some(endpoint.session)
                        }
                })
                .map(|op| (op.kind, op.sent))
        };
        if let Some((kind, sent)) = matched {
            self.latencies_us
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)[kind as usize]
                .push(crate::worker::duration_us(
                    at.saturating_duration_since(sent),
                ));
        }
    }
}

/// The churn scenario's parameters.
pub struct Params {
    /// The offered change rate of each step, in changes per second, in order (one
    /// rate: a plain run).
    pub rates: Vec<f64>,
    /// How long each step makes changes, in seconds.
    pub secs: f64,
    /// Longest wait for logins, complete tables, and the end of each step's changes.
    pub wait: Duration,
    /// The push-latency p99 (ms) that ends a sweep: a server is measured no further
    /// after its first step whose p99 reached it; the capacity is the most deliveries
    /// per second of a step below it. `None`: every step is run.
    pub stop_at_p99_ms: Option<f64>,
    /// Where to write the plot of the steps (SVG), if anywhere.
    pub plot: Option<PathBuf>,
    /// How many times each rate is repeated in `rates` (consecutively): a sweep
    /// judges a rate by the medians over its repetitions.
    pub reps: usize,
    /// How many users (the first ones) make the changes; the others only watch.
    pub actors: usize,
    /// Whether the observers hold the bytes they read during a step's window
    /// ([`Cmd::Hold`]), so that they cost little while the server is measured.
    pub hold: bool,
}

/// The p99 limit that defines the capacity when no other is given (the target's).
pub const P99_LIMIT_MS: f64 = 50.0;

/// A server under test and its name in the report.
pub struct Server<'a> {
    /// The name in tables and the plot.
    pub label: String,
    /// The server.
    pub target: &'a Target,
}

/// One server's sessions and the scheduler's view of them.
struct Lane {
    label: String,
    pids: Vec<u32>,
    hub: Arc<Hub>,
    cmds: Vec<mpsc::UnboundedSender<Cmd>>,
    notes: Notes,
    tracker: Arc<Tracker>,
    online: Vec<bool>,
    busy: Vec<bool>,
    rng: Rng,
    /// Logins that failed during the steps.
    failed: u64,
    /// The sweep is over for this server (its p99 crossed the limit).
    done: bool,
}

/// What one step of one server measured.
struct StepResult {
    lane: usize,
    label: String,
    /// Index of the step (its place in the list of rates).
    step: usize,
    rate: f64,
    issued: [u64; 3],
    skipped: u64,
    window_s: f64,
    d_window: u64,
    /// Deliveries from the start of the step to quiet (the changes' pushes all
    /// delivered).
    d_total: u64,
    /// From the start of the step to quiet.
    span_s: f64,
    lat: Stats,
    by_kind: [Stats; 3],
    /// CPU from the start of the step to quiet.
    cpu: CpuUse,
    /// CPU during the window only (while observers hold their bytes, the tool's part
    /// is reading; the decoding comes after it).
    cpu_window: CpuUse,
    tcp: TcpCounters,
    verdict: Verdict,
    online_at_end: usize,
    unfinished: usize,
    failed: u64,
    violations: u64,
    errors: u64,
}

impl StepResult {
    fn deliveries_per_s(&self) -> f64 {
        self.d_window as f64 / self.window_s.max(1e-9)
    }

    fn sustained(&self) -> f64 {
        self.d_total as f64 / self.span_s.max(1e-9)
    }

    fn ops(&self) -> u64 {
        self.issued.iter().sum()
    }

    fn ok(&self) -> bool {
        self.verdict.mismatches == 0
            && self.unfinished == 0
            && self.failed == 0
            && self.violations + self.errors == 0
    }

    fn json(&self) -> Value {
        json!({
            "server": self.label,
            "step": self.step,
            "rate_offered": self.rate,
            "deliveries_in_window": self.d_window,
            "window_s": self.window_s,
            "deliveries_per_s": self.deliveries_per_s(),
            "deliveries_total": self.d_total,
            "deliveries_per_s_including_drain": self.sustained(),
            "ops": {"logout": self.issued[0], "login": self.issued[1], "caps": self.issued[2], "skipped": self.skipped},
            "ops_per_s_achieved": self.ops() as f64 / self.window_s.max(1e-9),
            "latency_ms": self.lat.ms_json(),
            "latency_ms_by_change": {
                "logout": self.by_kind[0].ms_json(),
                "login": self.by_kind[1].ms_json(),
                "caps": self.by_kind[2].ms_json(),
            },
            "cpu": self.cpu.json(self.d_total, "delivery"),
            "cpu_window": self.cpu_window.json(self.d_window, "delivery"),
            "tcp": self.tcp,
            "final_tables": self.verdict.checked,
            "final_mismatches": self.verdict.mismatches,
            "online_at_end": self.online_at_end,
            "unfinished_changes": self.unfinished,
            "failed_logins": self.failed,
            "violations": self.violations,
            "server_errors": self.errors,
        })
    }

    /// The server's CPU per delivery, user / system / total, µs.
    fn server_us(&self) -> Option<[f64; 3]> {
        self.cpu.server_us_per(self.d_total)
    }
}

/// Runs the churn scenario with every user of `pop` on each server: every user logs
/// in on each, then the steps run (each rate on each server in turn, the order of the
/// servers alternating from step to step: A B, B A, A B, ...), each verified at its end.
pub async fn run(servers: &[Server<'_>], pop: Arc<Population>, p: &Params) -> Result<Report> {
    let n = pop.len();
    let labels: Vec<&str> = servers.iter().map(|s| s.label.as_str()).collect();
    let mut report = Report::new(
        "churn",
        json!({
            "users": n,
            "contacts_per_user": pop.contact_entries() as f64 / n.max(1) as f64,
            "rate_ops_per_s": p.rates.first(),
            "rates_ops_per_s": p.rates,
            "secs": p.secs,
            "stop_at_p99_ms": p.stop_at_p99_ms,
            "actors": p.actors.min(n),
            "servers": labels,
            "seed": pop.seed,
        }),
    );

    // Everyone online on every server and verified first.
    let mut lanes = Vec::new();
    let mut initial_tables = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let tracker = Arc::new(Tracker {
            pop: pop.clone(),
            ops: Mutex::new(HashMap::new()),
            latencies_us: Mutex::new([Vec::new(), Vec::new(), Vec::new()]),
            window: Mutex::new(None),
            in_window: AtomicU64::new(0),
        });
        let users: Vec<usize> = (0..n).collect();
        let observer: Arc<dyn Observer> = tracker.clone();
        let (hub, mut notes) =
            Hub::new(s.target.addrs.clone(), pop.clone(), &users, Some(observer));
        let cmds: Vec<_> = (0..n).map(|k| hub.spawn(k)).collect();
        let logins = login_all(&cmds, &mut notes, p.wait).await;
        let dir = Directory::from_entries(dir_entries(&hub));
        let initial = await_tables(&hub, &dir, p.wait).await;
        tracing::info!(
            server = s.label,
            logged_in = logins.logged.len(),
            failed = logins.failed.len(),
            mismatches = initial.mismatches,
            "everyone online"
        );
        record_verdict(&mut report, &format!("{} initial", s.label), &initial);
        if !logins.failed.is_empty() {
            report.verified = false;
            report.note(format!(
                "{}: {} initial logins failed",
                s.label,
                logins.failed.len()
            ));
        }
        initial_tables.push(json!({"server": s.label, "checked": initial.checked, "mismatches": initial.mismatches}));
        let mut online = vec![false; n];
        for &(k, ..) in &logins.logged {
            online[k] = true;
        }
        lanes.push(Lane {
            label: s.label.clone(),
            pids: s.target.pids.clone(),
            hub,
            cmds,
            notes,
            tracker,
            online,
            busy: vec![false; n],
            rng: Rng::new(pop.seed ^ 0xc4a2_7e11 ^ (i as u64).wrapping_mul(0x9e37_79b9)),
            failed: 0,
            done: false,
        });
    }

    // The steps.
    let mut results: Vec<StepResult> = Vec::new();
    for (k, &rate) in p.rates.iter().enumerate() {
        let order: Vec<usize> = if k % 2 == 0 {
            (0..lanes.len()).collect()
        } else {
            (0..lanes.len()).rev().collect()
        };
        for i in order {
            if lanes[i].done {
                continue;
            }
            tracing::info!(server = lanes[i].label, rate, step = k, "churning");
            let mut r = step(&mut lanes[i], &pop, rate, p).await;
            r.lane = i;
            r.step = k;
            tracing::info!(
                server = r.label,
                rate,
                deliveries_per_s = r.deliveries_per_s() as u64,
                p99_ms = ms(r.lat.p99),
                server_us_per_delivery = r.server_us().map(|u| u[2]),
                "step done"
            );
            record_verdict(
                &mut report,
                &format!("{} step {k} ({rate}/s)", r.label),
                &r.verdict,
            );
            if !r.ok() {
                report.verified = false;
                report.note(format!(
                    "{} step {k}: {} violations, {} server errors, {} changes unfinished, {} failed logins",
                    r.label, r.violations, r.errors, r.unfinished, r.failed
                ));
            }
            results.push(r);
            // After the last repetition of a rate: the sweep is over for this server
            // if the rate's median p99 reached the limit.
            if let Some(limit) = p.stop_at_p99_ms {
                let reps = p.reps.max(1);
                if (k + 1) % reps == 0 {
                    let at = rate_point(&results, i, k / reps, reps);
                    if at.is_none_or(|a| !a.ok || a.p99_us >= limit * 1000.0) {
                        lanes[i].done = true;
                    }
                }
            }
        }
        if lanes.iter().all(|l| l.done) {
            break;
        }
    }
    for lane in &lanes {
        for tx in &lane.cmds {
            let _ = tx.send(Cmd::Close);
        }
    }

    let limit_ms = p.stop_at_p99_ms.unwrap_or(P99_LIMIT_MS);
    let reps = p.reps.max(1);
    let groups = p.rates.len().div_ceil(reps);
    let capacity: Vec<Option<RatePoint>> = (0..lanes.len())
        .map(|i| {
            (0..groups)
                .filter_map(|g| rate_point(&results, i, g, reps))
                .filter(|a| a.ok && a.p99_us < limit_ms * 1000.0)
                .max_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s))
        })
        .collect();
    report.figures = json!({
        "steps": results.iter().map(StepResult::json).collect::<Vec<_>>(),
        "initial_tables": initial_tables,
        "p99_limit_ms": limit_ms,
        "capacity": lanes.iter().zip(&capacity).map(|(l, c)| json!({
            "server": l.label,
            "deliveries_per_s": c.map(|r| r.deliveries_per_s),
            "rate_offered": c.map(|r| r.rate),
            "p99_ms": c.map(|r| ms(r.p99_us)),
            "reps": c.map(|r| r.n),
        })).collect::<Vec<_>>(),
    });
    if lanes.len() == 1 && results.len() == 1 {
        // A plain run: its figures at the top, as before sweeps existed.
        if let (Some(f), Value::Object(one)) = (report.figures.as_object_mut(), results[0].json()) {
            f.extend(one);
        }
        single_rows(&mut report, &results[0]);
    } else {
        step_rows(&mut report, &results);
        if lanes.len() > 1 {
            side_by_side(&mut report, &lanes, &results, p.rates.len());
        }
        let mut cap = vec![vec![
            "server".to_string(),
            format!("capacity: most deliveries/s with p99 < {limit_ms} ms (medians over --reps)"),
            "at changes/s".into(),
            "p99".into(),
        ]];
        for (l, c) in lanes.iter().zip(&capacity) {
            cap.push(vec![
                l.label.clone(),
                c.map_or("none".into(), |r| format!("{:.0}", r.deliveries_per_s)),
                c.map_or("-".into(), |r| format!("{:.0}", r.rate)),
                c.map_or("-".into(), |r| format!("{:.3} ms", ms(r.p99_us))),
            ]);
        }
        report.table("capacity", cap);
    }

    // Targets, per server.
    for (i, l) in lanes.iter().enumerate() {
        let prefix = if lanes.len() > 1 {
            format!("{}: ", l.label)
        } else {
            String::new()
        };
        let mine: Vec<&StepResult> = results.iter().filter(|r| r.lane == i).collect();
        if let Some(first) = mine.first() {
            let per = first.server_us();
            report.target(
                format!(
                    "{prefix}server CPU per delivery at {} changes/s",
                    first.rate
                ),
                "<= 1.5 µs",
                per.map_or("unknown".into(), |u| format!("{:.2} µs", u[2])),
                per.is_some_and(|u| u[2] <= 1.5),
            );
        }
        if results.len() == 1 {
            let r = &results[0];
            let rate = r.deliveries_per_s();
            report.target(
                "presence deliveries/s",
                ">= 200000",
                format!("{rate:.0}"),
                rate >= 200_000.0,
            );
            report.target(
                "push latency p99",
                "< 50 ms",
                format!("{:.3} ms", ms(r.lat.p99)),
                r.lat.n > 0 && r.lat.p99 < 50_000.0,
            );
        } else {
            let c = capacity[i];
            report.target(
                format!("{prefix}deliveries/s with push latency p99 < {limit_ms} ms"),
                ">= 200000",
                c.map_or("none".into(), |r| {
                    format!("{:.0} (at {:.0} changes/s)", r.deliveries_per_s, r.rate)
                }),
                c.is_some_and(|r| r.deliveries_per_s >= 200_000.0),
            );
        }
    }

    if let Some(path) = &p.plot {
        let series: Vec<plot::Series> = lanes
            .iter()
            .enumerate()
            .map(|(i, l)| plot::Series {
                label: l.label.clone(),
                // One point per rate: the medians of its repetitions.
                points: (0..groups)
                    .filter_map(|g| rate_point(&results, i, g, reps))
                    .filter(|a| a.n > 0)
                    .map(|a| plot::Point {
                        deliveries_per_s: a.deliveries_per_s,
                        p50_ms: ms(a.p50_us),
                        p99_ms: ms(a.p99_us),
                    })
                    .collect(),
            })
            .collect();
        plot::write_svg(path, &series, limit_ms)?;
        report.note(format!("plot written to {}", path.display()));
        report.figures["plot"] = json!(path.display().to_string());
    }
    Ok(report)
}

/// One step on one server: changes at `rate` for `secs`, then until quiet, then every
/// table checked.
async fn step(lane: &mut Lane, pop: &Arc<Population>, rate: f64, p: &Params) -> StepResult {
    let (secs, wait) = (p.secs, p.wait);
    let Lane {
        label,
        pids,
        hub,
        cmds,
        notes,
        tracker,
        online,
        busy,
        rng,
        failed,
        ..
    } = lane;
    // The users who make changes: the first `actors` (the population's indices are
    // not related to its contact graph).
    let n = p.actors.min(online.len()).max(1);
    // Milestones left from before (the initial logins' `synced`, or a late one).
    while let Ok((local, note, _)) = notes.try_recv() {
        settle_note(online, busy, failed, local, &note);
    }
    let failed_before = *failed;
    if p.hold {
        for tx in cmds.iter() {
            let _ = tx.send(Cmd::Hold(true));
        }
    }
    let mut issued = [0u64; 3];
    let mut skipped = 0u64;
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let window = Duration::from_secs_f64(secs.max(0.0));
    let tcp_before = TcpCounters::read();
    let meter = Meter::start(pids);
    let d0 = hub.deliveries.load(Ordering::Relaxed);
    let t_start = Instant::now();
    let end = t_start + window;
    tracker.start((t_start, end));
    let mut k = 0u32;
    loop {
        let next = t_start + period * k;
        if next >= end {
            break;
        }
        tokio::select! {
            biased;
            Some((local, note, _)) = notes.recv() => {
                settle_note(online, busy, failed, local, &note);
            }
            () = sleep_until(next) => {
                k += 1;
                let kind = match rng.below(3) {
                    0 => Kind::Logout,
                    1 => Kind::Login,
                    _ => Kind::Caps,
                };
                let want_online = kind != Kind::Login;
                let pick = (0..64)
                    .map(|_| rng.below(n))
                    .find(|&u| online[u] == want_online && !busy[u]);
                let (kind, user) = match (kind, pick) {
                    (_, Some(u)) => (kind, u),
                    (Kind::Login, None) => {
                        match (0..64).map(|_| rng.below(n)).find(|&u| online[u] && !busy[u]) {
                            Some(u) => (Kind::Caps, u),
                            None => { skipped += 1; continue; }
                        }
                    }
                    (_, None) => { skipped += 1; continue; }
                };
                let op = prepare(hub, pop, rng, kind, user);
                let Some((op, cmd)) = op else { skipped += 1; continue; };
                tracker.record(user, op);
                busy[user] = true;
                issued[kind as usize] += 1;
                let _ = cmds[user].send(cmd);
            }
        }
    }
    let window_real = t_start.elapsed();
    let in_window = meter.stop(None);

    // Let every change complete (the actors' bytes are not held).
    let deadline = Instant::now() + wait;
    while busy.iter().any(|&b| b) {
        match timeout_at(deadline, notes.recv()).await {
            Ok(Some((local, note, _))) => settle_note(online, busy, failed, local, &note),
            _ => break,
        }
    }
    let unfinished = busy.iter().filter(|&&b| b).count();
    let span = if p.hold {
        // The observers still hold what they read, so that the pushes still coming are
        // timed as they arrive, not behind the decoding of everything held; the step's
        // traffic is over when (almost) nothing more arrives: the clients' pings are
        // answered all the time, about 20 bytes per session every 20 s.
        let floor = QUIET_BYTES.max(2 * online.len() as u64);
        let (_, last) = quiet(
            Instant::now() + wait.min(MAX_DRAIN),
            || hub.bytes_read.load(Ordering::Relaxed),
            floor,
        )
        .await;
        for tx in cmds.iter() {
            let _ = tx.send(Cmd::Hold(false));
        }
        last
    } else {
        quiet(
            Instant::now() + wait,
            || hub.deliveries.load(Ordering::Relaxed),
            0,
        )
        .await
        .1
    };
    // The server's part ends at the last arrival: the quiet wait after it is not
    // counted.
    let span = span.saturating_duration_since(t_start);
    let cpu = meter.stop(None);
    // Every presence decoded (held bytes included) and counted.
    quiet(
        Instant::now() + wait,
        || hub.deliveries.load(Ordering::Relaxed),
        0,
    )
    .await;
    let tool_all = meter.stop(None).tool;
    let cpu = CpuUse {
        wall_s: span.as_secs_f64(),
        tool: tool_all,
        ..cpu
    };
    let d_total = hub.deliveries.load(Ordering::Relaxed) - d0;
    // Presence whose bytes arrived during the window (held bytes are decoded after it).
    let d_window = tracker.in_window.load(Ordering::Relaxed);
    *tracker
        .window
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;

    // Every table again.
    let dir = Directory::from_entries(dir_entries(hub));
    let verdict = await_tables(hub, &dir, Duration::from_secs(5)).await;
    let mut by_kind = std::mem::take(
        &mut *tracker
            .latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mut all: Vec<u64> = by_kind.iter().flatten().copied().collect();
    StepResult {
        lane: 0,
        label: label.clone(),
        step: 0,
        rate,
        issued,
        skipped,
        window_s: window_real.as_secs_f64(),
        d_window,
        d_total,
        span_s: span.as_secs_f64(),
        lat: Stats::of(&mut all),
        by_kind: [
            Stats::of(&mut by_kind[0]),
            Stats::of(&mut by_kind[1]),
            Stats::of(&mut by_kind[2]),
        ],
        cpu,
        cpu_window: in_window,
        tcp: TcpCounters::read().since(tcp_before),
        online_at_end: dir.len(),
        verdict,
        unfinished,
        failed: *failed - failed_before,
        violations: hub.total(|s| s.violations),
        errors: hub.total(|s| s.errors),
    }
}

/// How often the end of a step polls for quiet.
const QUIET_POLL: Duration = Duration::from_millis(50);
/// A step is over once no presence was delivered (or, while observers hold their
/// bytes, no more than a floor of bytes was read) for this long.
const QUIET: Duration = Duration::from_millis(300);
/// The least floor of bytes per [`QUIET`] that counts as quiet while observers hold.
const QUIET_BYTES: u64 = 4096;
/// The longest wait for quiet while observers hold their bytes (then what still
/// arrives is decoded as it comes).
const MAX_DRAIN: Duration = Duration::from_secs(10);

/// Waits until `counter` grew by no more than `floor` over [`QUIET`] (or `deadline`).
/// Returns the counter then, and when it last grew by more than the floor.
async fn quiet(deadline: Instant, counter: impl Fn() -> u64, floor: u64) -> (u64, Instant) {
    let mut since = Instant::now();
    let mut base = counter();
    loop {
        sleep(QUIET_POLL).await;
        let now = counter();
        if now.saturating_sub(base) > floor {
            base = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET || Instant::now() >= deadline {
            return (now, since);
        }
    }
}

/// One rate of one server, over its repetitions: the medians.
#[derive(Clone, Copy, Debug)]
struct RatePoint {
    rate: f64,
    deliveries_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    /// Repetitions with pushes matched.
    n: usize,
    /// Every repetition verified, completed, and matched pushes.
    ok: bool,
}

/// The medians of server `lane`'s repetitions of rate group `group` (steps
/// `group * reps ..`), if it ran.
fn rate_point(results: &[StepResult], lane: usize, group: usize, reps: usize) -> Option<RatePoint> {
    let mine: Vec<&StepResult> = results
        .iter()
        .filter(|r| r.lane == lane && r.step / reps == group)
        .collect();
    let first = mine.first()?;
    Some(RatePoint {
        rate: first.rate,
        deliveries_per_s: median(mine.iter().map(|r| r.deliveries_per_s()).collect()),
        p50_us: median(mine.iter().map(|r| r.lat.p50).collect()),
        p99_us: median(mine.iter().map(|r| r.lat.p99).collect()),
        n: mine.iter().filter(|r| r.lat.n > 0).count(),
        ok: mine.iter().all(|r| r.ok() && r.lat.n > 0),
    })
}

/// The human table of a plain run (one server, one step).
fn single_rows(report: &mut Report, r: &StepResult) {
    report.row(["metric", "value"]);
    report.row([
        "changes made (logout/login/caps)".to_string(),
        format!(
            "{}/{}/{} ({} skipped)",
            r.issued[0], r.issued[1], r.issued[2], r.skipped
        ),
    ]);
    report.row([
        "change rate achieved".to_string(),
        format!("{:.0}/s", r.ops() as f64 / r.window_s.max(1e-9)),
    ]);
    report.row([
        "presence deliveries in window".to_string(),
        format!("{} in {:.2} s", r.d_window, r.window_s),
    ]);
    report.row([
        "deliveries/s (window)".to_string(),
        format!("{:.0}", r.deliveries_per_s()),
    ]);
    report.row([
        "deliveries/s (incl. drain)".to_string(),
        format!("{:.0}", r.sustained()),
    ]);
    report.row([
        "push latency p50 / p99 / max".to_string(),
        format!(
            "{:.3} / {:.3} / {:.3} ms ({} pushes matched)",
            ms(r.lat.p50),
            ms(r.lat.p99),
            ms(r.lat.max),
            r.lat.n
        ),
    ]);
    for (name, st) in [
        ("  after logout (offline)", &r.by_kind[0]),
        ("  after login (online)", &r.by_kind[1]),
        ("  after caps change (online)", &r.by_kind[2]),
    ] {
        report.row([
            name.to_string(),
            format!(
                "{:.3} / {:.3} / {:.3} ms",
                ms(st.p50),
                ms(st.p99),
                ms(st.max)
            ),
        ]);
    }
    report.row([
        "CPU measured over".to_string(),
        format!(
            "{:.2} s (start of the changes to the last delivery; {} deliveries)",
            r.cpu.wall_s, r.d_total
        ),
    ]);
    for row in r.cpu.rows(r.d_total, "delivery") {
        report.row(row);
    }
    report.row([
        "during the window: server / tool cores".to_string(),
        format!(
            "{} / {} (tool {} per delivery arrived)",
            cores(r.cpu_window.server, r.cpu_window.wall_s),
            cores(r.cpu_window.tool, r.cpu_window.wall_s),
            r.cpu_window
                .tool_us_per(r.d_window)
                .map_or("-".into(), |t| format!("{t:.2} µs"))
        ),
    ]);
    report.row([
        "accept-queue overflows / SYN retransmits".to_string(),
        format!("{} / {}", r.tcp.listen_overflows, r.tcp.syn_retransmits),
    ]);
    report.row([
        "tables verified at end".to_string(),
        format!(
            "{} ({} mismatches)",
            r.verdict.checked, r.verdict.mismatches
        ),
    ]);
}

/// The human table of a sweep or comparison: one row per step and server.
fn step_rows(report: &mut Report, results: &[StepResult]) {
    report.row([
        "server",
        "offered/s",
        "changes/s",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "server µs/delivery usr/sys/total",
        "server cores",
        "tool µs/delivery window/all",
        "tool cores window",
        "machine busy",
        "tables ok",
    ]);
    for r in results {
        report.row([
            r.label.clone(),
            format!("{:.0}", r.rate),
            format!("{:.0}", r.ops() as f64 / r.window_s.max(1e-9)),
            format!("{:.0}", r.deliveries_per_s()),
            format!("{:.3}", ms(r.lat.p50)),
            format!("{:.3}", ms(r.lat.p99)),
            r.server_us().map_or("-".into(), |u| {
                format!("{:.2} / {:.2} / {:.2}", u[0], u[1], u[2])
            }),
            cores(r.cpu.server, r.cpu.wall_s),
            format!(
                "{} / {}",
                r.cpu_window
                    .tool_us_per(r.d_window)
                    .map_or("-".into(), |t| format!("{t:.2}")),
                r.cpu
                    .tool_us_per(r.d_total)
                    .map_or("-".into(), |t| format!("{t:.2}"))
            ),
            cores(r.cpu_window.tool, r.cpu_window.wall_s),
            r.cpu
                .machine_busy()
                .map_or("-".into(), |f| format!("{:.0} %", f * 100.0)),
            format!(
                "{}/{}",
                r.verdict.checked - r.verdict.mismatches,
                r.verdict.checked
            ),
        ]);
    }
}

/// One figure of a step, if it has it.
type Figure = fn(&StepResult) -> Option<f64>;

/// Each step's figures of every server side by side, with their ratio to the first
/// server's.
fn side_by_side(report: &mut Report, lanes: &[Lane], results: &[StepResult], steps: usize) {
    let base = &lanes[0].label;
    let mut head = vec!["changes/s offered".to_string()];
    let metrics: [(&str, Figure); 5] = [
        ("deliveries/s", |r| Some(r.deliveries_per_s())),
        ("p50 ms", |r| (r.lat.n > 0).then(|| ms(r.lat.p50))),
        ("p99 ms", |r| (r.lat.n > 0).then(|| ms(r.lat.p99))),
        ("server µs/delivery", |r| r.server_us().map(|u| u[2])),
        ("tool µs/delivery", |r| r.cpu.tool_us_per(r.d_total)),
    ];
    for (m, _) in &metrics {
        for l in lanes {
            head.push(format!("{m} {}", l.label));
        }
        for l in &lanes[1..] {
            head.push(format!("{} / {base}", l.label));
        }
    }
    let mut rows = vec![head];
    for k in 0..steps {
        let of: Vec<Option<&StepResult>> = (0..lanes.len())
            .map(|i| results.iter().find(|r| r.step == k && r.lane == i))
            .collect();
        let Some(rate) = of.iter().flatten().next().map(|r| r.rate) else {
            continue;
        };
        let mut row = vec![format!("{rate:.0}")];
        for (_, f) in &metrics {
            let vals: Vec<Option<f64>> = of.iter().map(|r| r.and_then(f)).collect();
            for v in &vals {
                row.push(v.map_or("-".into(), fmt_num));
            }
            for v in &vals[1..] {
                row.push(match (vals[0], v) {
                    (Some(a), Some(b)) if a > 0.0 => format!("{:.3}", b / a),
                    _ => "-".into(),
                });
            }
        }
        rows.push(row);
    }
    report.table("side by side (ratio: each server over the first)", rows);
}

/// CPU time over a phase's length, in cores.
fn cores(t: Option<CpuTimes>, wall_s: f64) -> String {
    t.map_or("-".into(), |t| {
        format!("{:.2}", t.total_s() / wall_s.max(1e-9))
    })
}

/// A figure with as many decimals as it needs.
fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// Builds the command and the record of a change, or `None` if the user cannot make it
/// now.
fn prepare(
    hub: &Hub,
    pop: &Population,
    rng: &mut Rng,
    kind: Kind,
    user: usize,
) -> Option<(Op, Cmd)> {
    let sent = Instant::now();
    match kind {
        Kind::Logout => {
            let session = hub.slot(user).client.session()?;
            Some((
                Op {
                    kind,
                    sent,
                    fp: None,
                    session: Some(session),
                },
                Cmd::Logout,
            ))
        }
        Kind::Login => Some((
            Op {
                kind,
                sent,
                fp: Some(pop.caps(user).fingerprint()),
                session: None,
            },
            Cmd::Login,
        )),
        Kind::Caps => {
            let current = hub.slot(user).client.capabilities()?.fingerprint();
            let profiles = pop.profiles();
            let caps = (0..8)
                .map(|_| &profiles[rng.below(profiles.len())])
                .find(|c| c.fingerprint() != current)?
                .clone();
            Some((
                Op {
                    kind,
                    sent,
                    fp: Some(caps.fingerprint()),
                    session: None,
                },
                Cmd::UpdateCaps(caps),
            ))
        }
    }
}

/// Applies a session milestone to the scheduler's view.
fn settle_note(
    online: &mut [bool],
    busy: &mut [bool],
    failed: &mut u64,
    local: usize,
    note: &Note,
) {
    match note {
        Note::LoggedIn(_) => online[local] = true,
        // A login completes when its snapshot is complete.
        Note::Synced | Note::CapsAck => busy[local] = false,
        Note::LoggedOut => {
            online[local] = false;
            busy[local] = false;
        }
        Note::Failed(why) => {
            tracing::warn!(user = local, why, "login failed");
            *failed += 1;
            online[local] = false;
            busy[local] = false;
        }
    }
}

fn record_verdict(report: &mut Report, when: &str, v: &Verdict) {
    if v.mismatches > 0 {
        report.verified = false;
        report.mismatches += v.mismatches;
        for e in &v.examples {
            report.note(format!("{when} mismatch: {e}"));
        }
    }
}
