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
//! All sessions live in this process (one socket each, so up to about 19,000 users).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use precall_protocol::{Client, ClientEvent, Fingerprint, SessionId};
use serde_json::json;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::phases::{await_tables, dir_entries, login_all};
use crate::population::Population;
use crate::report::{ms, Report, Stats, TcpCounters};
use crate::rng::Rng;
use crate::serverproc::Target;
use crate::session::{Cmd, Hub, Note, Observer};
use crate::verify::{Directory, Verdict};

/// How many recent changes per user are kept for matching pushes.
const KEEP_OPS: usize = 4;

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
    ops: Mutex<HashMap<usize, VecDeque<Op>>>,
    /// Push latencies by the kind of change (logout, login, capability change).
    latencies_us: Mutex<[Vec<u64>; 3]>,
}

impl Tracker {
    fn record(&self, user: usize, op: Op) {
        let mut ops = self
            .ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = ops.entry(user).or_default();
        if q.len() == KEEP_OPS {
            q.pop_front();
        }
        q.push_back(op);
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
        if snapshot {
            // A login snapshot shows the state; it is not the push a change caused.
            return;
        }
        let (endpoint, online) = match event {
            ClientEvent::PeerOnline { endpoint, .. }
            | ClientEvent::PeerUpdated { endpoint, .. } => (endpoint, true),
            ClientEvent::PeerOffline { endpoint } => (endpoint, false),
            _ => return,
        };
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
    /// Changes per second.
    pub rate: f64,
    /// How long changes are made.
    pub secs: f64,
    /// Longest wait for logins, complete tables, and the end of the changes.
    pub wait: Duration,
}

/// Runs the churn scenario on `target` with every user of `pop`.
pub async fn run(target: &Target, pop: Arc<Population>, p: &Params) -> Result<Report> {
    let n = pop.len();
    let tracker = Arc::new(Tracker {
        pop: pop.clone(),
        ops: Mutex::new(HashMap::new()),
        latencies_us: Mutex::new([Vec::new(), Vec::new(), Vec::new()]),
    });
    let users: Vec<usize> = (0..n).collect();
    let observer: Arc<dyn Observer> = tracker.clone();
    let (hub, mut notes) = Hub::new(target.addr, pop.clone(), &users, Some(observer));
    let cmds: Vec<_> = (0..n).map(|k| hub.spawn(k)).collect();
    let mut report = Report::new(
        "churn",
        json!({
            "users": n,
            "contacts_per_user": pop.contact_entries() as f64 / n.max(1) as f64,
            "rate_ops_per_s": p.rate,
            "secs": p.secs,
            "seed": pop.seed,
        }),
    );

    // Everyone online and verified first.
    let logins = login_all(&cmds, &mut notes, p.wait).await;
    let dir = Directory::from_entries(dir_entries(&hub));
    let initial = await_tables(&hub, &dir, p.wait).await;
    tracing::info!(
        logged_in = logins.logged.len(),
        failed = logins.failed.len(),
        mismatches = initial.mismatches,
        "everyone online; churning"
    );
    record_verdict(&mut report, "initial", &initial);
    if !logins.failed.is_empty() {
        report.verified = false;
        report.note(format!("{} initial logins failed", logins.failed.len()));
    }

    // The changes. Milestones of the initial logins are stale now.
    while notes.try_recv().is_ok() {}
    let mut online = vec![false; n];
    for &(k, ..) in &logins.logged {
        online[k] = true;
    }
    let mut busy = vec![false; n];
    let mut rng = Rng::new(pop.seed ^ 0xc4a2_7e11);
    let mut issued = [0u64; 3];
    let (mut skipped, mut failed) = (0u64, 0u64);
    let period = Duration::from_secs_f64(1.0 / p.rate.max(0.001));
    let window = Duration::from_secs_f64(p.secs.max(0.0));
    let d0 = hub.deliveries.load(Ordering::Relaxed);
    let tcp_before = TcpCounters::read();
    let t_start = Instant::now();
    let end = t_start + window;
    let mut k = 0u32;
    loop {
        let next = t_start + period * k;
        if next >= end {
            break;
        }
        tokio::select! {
            biased;
            Some((local, note, _)) = notes.recv() => {
                settle_note(&mut online, &mut busy, &mut failed, local, &note);
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
                let op = prepare(&hub, &pop, &mut rng, kind, user);
                let Some((op, cmd)) = op else { skipped += 1; continue; };
                tracker.record(user, op);
                busy[user] = true;
                issued[kind as usize] += 1;
                let _ = cmds[user].send(cmd);
            }
        }
    }
    let window_real = t_start.elapsed();
    let d_window = hub.deliveries.load(Ordering::Relaxed) - d0;

    // Let every change complete, then wait for quiet.
    let deadline = Instant::now() + p.wait;
    while busy.iter().any(|&b| b) {
        match timeout_at(deadline, notes.recv()).await {
            Ok(Some((local, note, _))) => {
                settle_note(&mut online, &mut busy, &mut failed, local, &note)
            }
            _ => break,
        }
    }
    let unfinished = busy.iter().filter(|&&b| b).count();
    let mut last = hub.deliveries.load(Ordering::Relaxed);
    let quiet_deadline = Instant::now() + p.wait;
    loop {
        sleep(Duration::from_millis(300)).await;
        let now = hub.deliveries.load(Ordering::Relaxed);
        if now == last || Instant::now() >= quiet_deadline {
            break;
        }
        last = now;
    }
    let d_total = hub.deliveries.load(Ordering::Relaxed) - d0;
    let drain = t_start.elapsed();

    // Every table again.
    let dir = Directory::from_entries(dir_entries(&hub));
    let fin = await_tables(&hub, &dir, Duration::from_secs(5)).await;
    record_verdict(&mut report, "final", &fin);
    let violations = hub.total(|s| s.violations);
    let errors = hub.total(|s| s.errors);
    if violations + errors > 0 || unfinished > 0 || failed > 0 {
        report.verified = false;
        report.note(format!(
            "{violations} violations, {errors} server errors, {unfinished} changes unfinished, {failed} failed logins"
        ));
    }
    for tx in &cmds {
        let _ = tx.send(Cmd::Close);
    }

    let mut by_kind = tracker
        .latencies_us
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut all: Vec<u64> = by_kind.iter().flatten().copied().collect();
    let lat = Stats::of(&mut all);
    let [lat_logout, lat_login, lat_caps] = [
        Stats::of(&mut by_kind[0]),
        Stats::of(&mut by_kind[1]),
        Stats::of(&mut by_kind[2]),
    ];
    let tcp = TcpCounters::read().since(tcp_before);
    let secs = window_real.as_secs_f64();
    let rate = d_window as f64 / secs.max(1e-9);
    let ops: u64 = issued.iter().sum();
    let sustained = d_total as f64 / drain.as_secs_f64().max(1e-9);
    report.figures = json!({
        "deliveries_in_window": d_window,
        "window_s": secs,
        "deliveries_per_s": rate,
        "deliveries_total": d_total,
        "deliveries_per_s_including_drain": sustained,
        "ops": {"logout": issued[0], "login": issued[1], "caps": issued[2], "skipped": skipped},
        "ops_per_s_achieved": ops as f64 / secs.max(1e-9),
        "latency_ms": lat.ms_json(),
        "latency_ms_by_change": {
            "logout": lat_logout.ms_json(),
            "login": lat_login.ms_json(),
            "caps": lat_caps.ms_json(),
        },
        "tcp": tcp,
        "final_tables": fin.checked,
        "online_at_end": dir.len(),
        "violations": violations,
        "server_errors": errors,
    });
    report.row(["metric", "value"]);
    report.row([
        "changes made (logout/login/caps)".to_string(),
        format!(
            "{}/{}/{} ({} skipped)",
            issued[0], issued[1], issued[2], skipped
        ),
    ]);
    report.row([
        "change rate achieved".to_string(),
        format!("{:.0}/s", ops as f64 / secs.max(1e-9)),
    ]);
    report.row([
        "presence deliveries in window".to_string(),
        format!("{d_window} in {secs:.2} s"),
    ]);
    report.row(["deliveries/s (window)".to_string(), format!("{rate:.0}")]);
    report.row([
        "deliveries/s (incl. drain)".to_string(),
        format!("{sustained:.0}"),
    ]);
    report.row([
        "push latency p50 / p99 / max".to_string(),
        format!(
            "{:.3} / {:.3} / {:.3} ms ({} pushes matched)",
            ms(lat.p50),
            ms(lat.p99),
            ms(lat.max),
            lat.n
        ),
    ]);
    for (name, st) in [
        ("  after logout (offline)", &lat_logout),
        ("  after login (online)", &lat_login),
        ("  after caps change (online)", &lat_caps),
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
        "accept-queue overflows / SYN retransmits".to_string(),
        format!("{} / {}", tcp.listen_overflows, tcp.syn_retransmits),
    ]);
    report.row([
        "tables verified at end".to_string(),
        format!("{} ({} mismatches)", fin.checked, fin.mismatches),
    ]);
    report.target(
        "presence deliveries/s",
        ">= 200000",
        format!("{rate:.0}"),
        rate >= 200_000.0,
    );
    report.target(
        "push latency p99",
        "< 50 ms",
        format!("{:.3} ms", ms(lat.p99)),
        lat.n > 0 && lat.p99 < 50_000.0,
    );
    Ok(report)
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
