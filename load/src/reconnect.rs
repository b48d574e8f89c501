//! `reconnect-storm`: every session's connection is cut at once and every session
//! resumes (spec section 9.9) against a server that throttles new connections.
//!
//! The tool starts the server on a fresh store with an accept-rate limit
//! (`--max-accepts-per-second`) and the resume settings, and runs `--sessions` sessions
//! plus a few more (`--connected-percent`) that will stay connected, all in this
//! process. In order:
//!
//! 1. Every session logs in (retrying when the server refuses the connection, no
//!    sooner than its `retry_after_ms`) and every table is verified (INV-ONLINE-EXACT,
//!    [`crate::verify`]).
//! 2. The connection of every session but the connected few is cut at once: each
//!    socket is closed with a reset, without a word, and the core's client is told
//!    (`connection_closed`: the session is detached, its table kept). The tool waits
//!    until the server's log shows every session detached.
//! 3. While they are away, each connected session makes one change in turn: a
//!    capability change, a logout, or a logout followed by a new login, so that the
//!    away sessions that list them miss table frames.
//! 4. Every away session reconnects at once, each after a random wait from the core's
//!    [`Backoff`](precall_protocol::Backoff) (full jitter), and sends `resume`, through
//!    the shared driver ([`precall_client::Driver::reconnect`]). A connection the
//!    server refuses (`rate_limited` with `retry_after_ms`, ...) leaves the session
//!    detached (the core's rule) and is tried again after
//!    `Backoff::next_delay(random, retry_after)`. A `resume_failed` is counted as a
//!    failure, and the session logs in again with its password so that its table can
//!    still be checked.
//! 5. Once every session is back, every table is verified again, against the online
//!    sessions as the clients now hold them.
//!
//! Password hashes: the server logs `checking credentials` (debug, module
//! `precall_server::serve`) each time it hands a login to the store thread, which runs
//! exactly one argon2 verification per login; the tool runs the server with that
//! module's debug log and counts those lines, and the `session resumed` and
//! `session started` lines, between the start of the reconnections and the end of the
//! storm. The run fails (exit 1) if a session did not resume, a table is wrong, a
//! password was checked during the storm, or a connected contact saw an away session
//! go offline.
//!
//! With `--seed-fault skip-catchup` the tool drops the catch-up of one resumed session
//! (the table frames between its `resumed` and `synced`) instead of handing them to
//! its client: the final verification must then fail.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use precall_client::{Clock, Driver, Event as Wire, Login, Start, Tap};
use precall_protocol::client::Status;
use precall_protocol::codec::{decode_message, FrameDecoder, MIN_MAX_FRAME};
use precall_protocol::{Capabilities, Client, ClientConfig, ClientEvent, ErrorCode, ServerMessage};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout_at, Instant};

use crate::population::Population;
use crate::report::{ms, Report, Stats};
use crate::rng::Rng;
use crate::serverproc::Target;
use crate::verify::{Checker, DirEntry, Directory, Verdict};
use crate::ReconnectArgs;

/// How long tables may take to become exact once every session is back.
const SETTLE: Duration = Duration::from_secs(5);

/// How often the coordinator polls.
const POLL: Duration = Duration::from_millis(20);

/// A deliberate defect of the tool, to show that the verification can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// One resumed session's catch-up (the table frames between `resumed` and
    /// `synced`) is dropped instead of reaching its client.
    SkipCatchup,
}

/// What the coordinator tells a session.
#[derive(Debug)]
enum Cmd {
    /// Connect and log in with the password.
    Login,
    /// Close the connection abruptly (a reset, nothing said).
    Cut,
    /// Connect and resume the detached session.
    Resume,
    /// Log out.
    Logout,
    /// Change capabilities.
    Caps(Capabilities),
    /// End the task.
    Close,
}

/// What a session tells the coordinator.
#[derive(Clone, Debug)]
enum Note {
    /// The table is complete (after a login or a resume).
    Synced,
    /// The connection was cut; the session is detached.
    Cut,
    /// A capability change was acknowledged.
    CapsAck,
    /// A requested logout completed.
    LoggedOut,
    /// Something went wrong: the session cannot go on.
    Failed(String),
}

/// How a connection is taken into use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Login,
    Resume,
}

/// One session's client and what the tool recorded about it.
struct Sess {
    client: Client,
    /// Its user in the population.
    user: usize,
    /// Whether its catch-up is dropped (the seeded fault).
    faulty: bool,
    /// Catch-up frames dropped by the seeded fault.
    dropped_frames: u64,
    /// Connection attempts, and those the server refused (`retry_after_ms`), by mode.
    attempts: [u64; 2],
    refused: [u64; 2],
    /// TCP connects that failed.
    connect_errors: u64,
    /// `Resumed` events, and whether the last one was a snapshot.
    resumes: u64,
    snapshot: Option<bool>,
    /// Table changes delivered between `Resumed` and `Synced`.
    catchup: u64,
    in_catchup: bool,
    /// `resume_failed` answers.
    resume_failed: u64,
    /// A logout was requested.
    leaving: bool,
    /// Logged out on request (not expected online).
    out: bool,
    /// `offline` pushes (not a snapshot's clean-up) about a session that was cut.
    offline_about_cut: u64,
    /// Messages the core refused; `error` messages other than `resume_failed`.
    violations: u64,
    errors: u64,
    /// When the session was told to resume, and when its table was complete again.
    resume_sent: Option<Instant>,
    back: Option<Instant>,
}

impl AsMut<Client> for Sess {
    fn as_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// What the coordinator and the session tasks share.
struct Shared {
    addr: SocketAddr,
    pop: Arc<Population>,
    /// Users below this index are the ones cut.
    cut_users: usize,
    slots: Vec<Arc<Mutex<Sess>>>,
    /// The clients' clock.
    clock: Clock,
    notes: mpsc::UnboundedSender<(usize, Note, Instant)>,
    backoff: (Duration, Duration),
    seed: u64,
    /// Set once the cut happened.
    cut: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn slot(&self, k: usize) -> MutexGuard<'_, Sess> {
        self.slots[k]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note(&self, k: usize, note: Note) {
        // The coordinator stopped listening: nothing left to tell.
        let _ = self.notes.send((k, note, Instant::now()));
    }

    fn total(&self, f: impl Fn(&Sess) -> u64) -> u64 {
        (0..self.slots.len()).map(|k| f(&self.slot(k))).sum()
    }
}

/// The task of session `k` (user `k`).
async fn session_task(sh: Arc<Shared>, k: usize, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut rng = Rng::new(sh.seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7e5u64);
    let login = Login {
        user: sh.pop.name(k),
        password: sh.pop.password(k),
        with: sh.pop.login_with(k),
    };
    let (base, max) = sh.backoff;
    // Connection attempts retry after the core's back-off while the server refuses
    // the connection or cannot be reached; a `resume_failed` session logs in again
    // with its password, so that its table can still be checked (the failure is
    // counted).
    let mut driver = Driver::new(sh.slots[k].clone(), sh.clock, sh.addr.to_string())
        .with_login(login)
        .with_reconnect(base, max, move || rng.next_u64());
    // The mode of the attempt under way.
    let mut mode = Mode::Login;
    loop {
        if !driver.is_connected() && !driver.is_reconnecting() {
            match cmds.recv().await {
                Some(Cmd::Login) => driver.reconnect(Start::Now),
                Some(Cmd::Resume) => {
                    // Every session reconnects "at once": spread by the jitter of the
                    // first wait.
                    sh.slot(k).resume_sent = Some(Instant::now());
                    driver.reconnect(Start::AfterBackoff);
                }
                Some(Cmd::Close) | None => return,
                Some(other) => tracing::debug!(user = k, ?other, "not connected: command ignored"),
            }
            continue;
        }
        let mut lost = false;
        tokio::select! {
            ev = driver.next() => {
                let Some(ev) = ev else { continue };
                let mut batch = vec![ev];
                batch.extend(std::iter::from_fn(|| driver.poll()));
                for ev in &batch {
                    match ev {
                        Wire::Attempt { resume } => {
                            mode = if *resume { Mode::Resume } else { Mode::Login };
                            attempt(&sh, k, &mut driver, mode);
                        }
                        Wire::ConnectFailed(why) => {
                            tracing::debug!(user = k, why, "connect failed");
                            sh.slot(k).connect_errors += 1;
                        }
                        Wire::Disconnected(_) => lost |= !driver.is_reconnecting(),
                        _ => {}
                    }
                }
                drain(&sh, k, mode, batch);
            }
            cmd = cmds.recv() => {
                let now = sh.clock.now();
                let mut slot = sh.slot(k);
                let result = match cmd {
                    Some(Cmd::Cut) => {
                        drop(slot);
                        // A reset: nothing more is said; the session is detached.
                        driver.cut();
                        let events = std::iter::from_fn(|| driver.poll()).collect();
                        drain(&sh, k, mode, events);
                        sh.note(k, Note::Cut);
                        continue;
                    }
                    Some(Cmd::Logout) => {
                        slot.leaving = true;
                        slot.client.logout(now)
                    }
                    Some(Cmd::Caps(caps)) => slot.client.update_caps(caps, now).map(drop),
                    Some(Cmd::Login | Cmd::Resume) => Ok(()),
                    Some(Cmd::Close) | None => return,
                };
                if let Err(e) = result {
                    tracing::warn!(user = k, error = %e, "command refused by the core");
                }
            }
        }
        if driver.is_reconnecting() {
            continue;
        }
        let (status, leaving) = {
            let s = sh.slot(k);
            (s.client.status(), s.leaving)
        };
        if status == Status::Idle {
            driver.close();
            let events = std::iter::from_fn(|| driver.poll()).collect();
            drain(&sh, k, mode, events);
            if leaving {
                let mut s = sh.slot(k);
                s.leaving = false;
                s.out = true;
                drop(s);
                sh.note(k, Note::LoggedOut);
            } else {
                sh.note(k, Note::Failed("the session ended".into()));
            }
        } else if lost {
            sh.note(k, Note::Failed("the connection dropped".into()));
        }
    }
}

/// A connection attempt starts: counted; the faulty session's resume gets the filter
/// that drops its catch-up.
fn attempt(sh: &Shared, k: usize, driver: &mut Driver<Arc<Mutex<Sess>>>, mode: Mode) {
    let faulty = {
        let mut s = sh.slot(k);
        s.attempts[mode as usize] += 1;
        if mode == Mode::Login {
            s.out = false;
        }
        s.faulty
    };
    let tap: Option<Box<dyn Tap>> = (faulty && mode == Mode::Resume).then(|| {
        Box::new(SkipCatchup {
            sess: sh.slots[k].clone(),
            decoder: FrameDecoder::new(MIN_MAX_FRAME),
            resumed: false,
            done: false,
        }) as Box<dyn Tap>
    });
    driver.set_tap(tap);
}

/// The seeded fault: a resumed session's catch-up (the table frames between
/// `resumed` and `synced`) does not reach its client.
struct SkipCatchup {
    sess: Arc<Mutex<Sess>>,
    decoder: FrameDecoder,
    /// `resumed` was seen.
    resumed: bool,
    /// `synced` was seen: the rest passes.
    done: bool,
}

impl Tap for SkipCatchup {
    fn received<'a>(&mut self, data: &'a [u8]) -> Cow<'a, [u8]> {
        if self.done {
            return Cow::Borrowed(data);
        }
        let mut kept = Vec::new();
        let mut input = data;
        let mut dropped = 0;
        while let Ok(Some(payload)) = self.decoder.decode(&mut input) {
            let msg = decode_message::<ServerMessage>(&payload);
            let skip = self.resumed
                && matches!(
                    msg,
                    Ok(ServerMessage::Online(_)
                        | ServerMessage::Offline(_)
                        | ServerMessage::ContactAdded { .. }
                        | ServerMessage::ContactRemoved { .. })
                );
            match msg {
                Ok(ServerMessage::Resumed { .. }) => self.resumed = true,
                Ok(ServerMessage::Synced {}) => self.done = true,
                _ => {}
            }
            if skip {
                dropped += 1;
                continue;
            }
            kept.extend_from_slice(
                &u32::try_from(payload.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            kept.extend_from_slice(&payload);
        }
        if self.done {
            kept.extend_from_slice(input);
        }
        if dropped > 0 {
            let mut s = self
                .sess
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.dropped_frames += dropped;
        }
        Cow::Owned(kept)
    }
}

/// Handles a batch of events (those of one read): counts them and tells the
/// coordinator the milestones.
fn drain(sh: &Shared, k: usize, mode: Mode, batch: Vec<Wire>) {
    let mut notes = Vec::new();
    let at = Instant::now();
    let cut_happened = sh.cut.load(std::sync::atomic::Ordering::SeqCst);
    let mut s = sh.slot(k);
    // A snapshot's `Resumed` follows the clean-up of the old table (`PeerOffline` for
    // every entry): those are not pushes.
    let cleanup = batch
        .iter()
        .position(|e| matches!(e, Wire::Client(ClientEvent::Resumed { snapshot: true, .. })))
        .unwrap_or(0);
    for (i, ev) in batch.iter().enumerate() {
        let Wire::Client(ev) = ev else {
            continue;
        };
        match ev {
            ClientEvent::Resumed { snapshot, .. } => {
                s.resumes += 1;
                s.snapshot = Some(*snapshot);
                s.in_catchup = true;
            }
            ClientEvent::Synced => {
                if s.in_catchup {
                    s.in_catchup = false;
                    s.back = Some(at);
                }
                notes.push(Note::Synced);
            }
            ClientEvent::PeerOnline { .. }
            | ClientEvent::PeerUpdated { .. }
            | ClientEvent::ContactsChanged { .. }
                if s.in_catchup =>
            {
                s.catchup += 1;
            }
            ClientEvent::PeerOffline { endpoint } => {
                if s.in_catchup {
                    s.catchup += 1;
                }
                let about_cut = sh
                    .pop
                    .index_of(&endpoint.user)
                    .is_some_and(|u| u < sh.cut_users);
                if cut_happened && about_cut && i >= cleanup {
                    s.offline_about_cut += 1;
                }
            }
            ClientEvent::CapsAcknowledged { .. } => notes.push(Note::CapsAck),
            ClientEvent::ServerError { code, .. } => {
                if code.refuses_connection() {
                    // The server did not look at the session: it stays detached (or,
                    // for a login, there is none yet); the driver tries again.
                    s.refused[mode as usize] += 1;
                } else if *code == ErrorCode::ResumeFailed {
                    s.resume_failed += 1;
                } else {
                    s.errors += 1;
                    tracing::warn!(user = k, ?code, "server error");
                }
            }
            ClientEvent::Violation(v) => {
                s.violations += 1;
                tracing::warn!(user = k, violation = %v, "the core refused a message");
            }
            _ => {}
        }
    }
    drop(s);
    for n in notes {
        sh.note(k, n);
    }
}

/// Counts phrases in the server's log, reading only what was appended since the last
/// look.
struct LogCounter {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    counts: HashMap<&'static str, u64>,
}

/// The log lines counted.
const PHRASES: [&str; 4] = [
    "checking credentials",
    "session started",
    "session resumed",
    "session detached",
];

impl LogCounter {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
            counts: HashMap::new(),
        }
    }

    /// Reads the new complete lines; returns the counts so far.
    fn update(&mut self) -> Result<&HashMap<&'static str, u64>> {
        let mut f = std::fs::File::open(&self.path)
            .with_context(|| format!("cannot open the server's log {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut new = Vec::new();
        f.read_to_end(&mut new)?;
        self.offset += new.len() as u64;
        self.partial.extend_from_slice(&new);
        let complete = self
            .partial
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let lines: Vec<u8> = self.partial.drain(..complete).collect();
        for line in lines.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            for p in PHRASES {
                if line.contains(p) {
                    *self.counts.entry(p).or_default() += 1;
                }
            }
        }
        Ok(&self.counts)
    }
}

/// Every online session, as directory entries.
fn directory(sh: &Shared) -> Directory {
    Directory::from_entries((0..sh.slots.len()).filter_map(|k| {
        let s = sh.slot(k);
        let c = &s.client;
        if c.status() != Status::Online {
            return None;
        }
        Some(DirEntry {
            user: u32::try_from(s.user).ok()?,
            session: c.session()?,
            fp: c.capabilities()?.fingerprint(),
        })
    }))
}

/// Waits (at most `limit`) until every online session's table is exact, then checks
/// every one in full. Sessions that are not online count as mismatches.
async fn verify_all(sh: &Shared, limit: Duration) -> Verdict {
    let dir = directory(sh);
    let mut checker = Checker::default();
    let deadline = Instant::now() + limit;
    loop {
        let pending = (0..sh.slots.len()).any(|k| {
            let s = sh.slot(k);
            s.client.status() == Status::Online
                && checker
                    .check(&sh.pop, &dir, s.user, &s.client, false)
                    .is_err()
        });
        if !pending || Instant::now() >= deadline {
            break;
        }
        sleep(POLL).await;
    }
    let mut verdict = Verdict::default();
    for k in 0..sh.slots.len() {
        let s = sh.slot(k);
        if s.out {
            continue;
        }
        verdict.entries += s.client.peers().count();
        verdict.record(checker.check(&sh.pop, &dir, s.user, &s.client, true));
    }
    verdict
}

/// Waits until every session in `want` has sent a note `done` accepts (or failed), at
/// most until `deadline`. Returns the sessions that failed or never answered, and when
/// the last one answered.
async fn await_notes(
    notes: &mut mpsc::UnboundedReceiver<(usize, Note, Instant)>,
    want: &[usize],
    deadline: Instant,
    mut done: impl FnMut(usize, &Note) -> bool,
) -> (Vec<(usize, String)>, Option<Instant>) {
    let mut left: HashMap<usize, ()> = want.iter().map(|&k| (k, ())).collect();
    let mut failed = Vec::new();
    let mut last = None;
    while !left.is_empty() {
        match timeout_at(deadline, notes.recv()).await {
            Ok(Some((k, note, at))) => {
                if !left.contains_key(&k) {
                    continue;
                }
                if let Note::Failed(why) = &note {
                    left.remove(&k);
                    failed.push((k, why.clone()));
                } else if done(k, &note) {
                    left.remove(&k);
                    last = Some(at);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut missing: Vec<usize> = left.into_keys().collect();
    missing.sort_unstable();
    failed.extend(
        missing
            .into_iter()
            .map(|k| (k, "no answer in time".to_string())),
    );
    (failed, last)
}

/// The change connected session `i` (of the connected ones) makes while the others
/// are away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Caps,
    Logout,
    Relogin,
}

fn change_of(i: usize) -> Change {
    match i % 3 {
        0 => Change::Caps,
        1 => Change::Logout,
        _ => Change::Relogin,
    }
}

/// Runs the scenario.
pub async fn run(a: &ReconnectArgs) -> Result<Report> {
    if a.common.connect.is_some() {
        bail!("reconnect-storm starts its own server (it sets its limits and reads its log)");
    }
    if !(a.connected_percent.is_finite() && (0.0..=100.0).contains(&a.connected_percent)) {
        bail!("--connected-percent must be between 0 and 100");
    }
    if a.backoff_base_ms == 0 || a.backoff_max_ms < a.backoff_base_ms {
        bail!("--backoff-base-ms must be positive and at most --backoff-max-ms");
    }
    let n = usize::try_from(a.sessions).context("--sessions")?;
    let keep = ((n as f64 * a.connected_percent / 100.0).round() as usize).max(1);
    let users = n + keep;
    let pop = Arc::new(Population::generate(users, a.contacts, a.common.seed)?);
    let mut opts = a.common.server_opts();
    opts.extra_args = vec![
        "--max-accepts-per-second".into(),
        a.max_accepts_per_second.to_string(),
        "--resume-grace-ms".into(),
        a.resume_grace_ms.to_string(),
        "--resume-log-frames".into(),
        a.resume_log_frames.to_string(),
    ];
    // The credential checks and session lines are what the storm is judged by.
    opts.log_filter = format!("{},precall_server::serve=debug", opts.log_filter);
    let (mut target, import) = Target::spawn(&opts, &pop)?;
    let result = storm(a, &target, pop, n, keep, import).await;
    if result.is_err() {
        eprintln!("{}", target.log_tail());
    }
    target.stop();
    result
}

async fn storm(
    a: &ReconnectArgs,
    target: &Target,
    pop: Arc<Population>,
    n: usize,
    keep: usize,
    import: Duration,
) -> Result<Report> {
    let users = n + keep;
    let Some(log_path) = target.log_path() else {
        bail!("the server's log is not available");
    };
    let mut log = LogCounter::new(log_path.to_path_buf());
    let mut report = Report::new(
        "reconnect-storm",
        json!({
            "sessions": n,
            "connected": keep,
            "contacts_requested": a.contacts,
            "contacts_per_user": pop.contact_entries() as f64 / users.max(1) as f64,
            "max_accepts_per_second": a.max_accepts_per_second,
            "resume_grace_ms": a.resume_grace_ms,
            "resume_log_frames": a.resume_log_frames,
            "away_ms": a.away_ms,
            "backoff_ms": {"base": a.backoff_base_ms, "max": a.backoff_max_ms},
            "seed": a.common.seed,
            "seed_fault": a.seed_fault.map(|f| format!("{f:?}")),
            "import_s": import.as_secs_f64(),
            "argon2": {"m_kib": a.common.argon2_m_kib, "t": a.common.argon2_t},
        }),
    );
    // The faulty session: an away user who lists a connected one (so its catch-up
    // holds frames).
    let faulty = a.seed_fault.and_then(|_| {
        (0..n).find(|&u| {
            pop.contacts(u)
                .iter()
                .any(|&c| (c as usize) >= n && pop.lists(c as usize, u))
        })
    });
    let (tx, mut notes) = mpsc::unbounded_channel();
    let sh = Arc::new(Shared {
        addr: target.addr(),
        pop: pop.clone(),
        cut_users: n,
        slots: (0..users)
            .map(|u| {
                Arc::new(Mutex::new(Sess {
                    client: Client::new(ClientConfig::default()),
                    user: u,
                    faulty: Some(u) == faulty,
                    dropped_frames: 0,
                    attempts: [0; 2],
                    refused: [0; 2],
                    connect_errors: 0,
                    resumes: 0,
                    snapshot: None,
                    catchup: 0,
                    in_catchup: false,
                    resume_failed: 0,
                    leaving: false,
                    out: false,
                    offline_about_cut: 0,
                    violations: 0,
                    errors: 0,
                    resume_sent: None,
                    back: None,
                }))
            })
            .collect(),
        clock: Clock::new(),
        notes: tx,
        backoff: (
            Duration::from_millis(a.backoff_base_ms),
            Duration::from_millis(a.backoff_max_ms),
        ),
        seed: a.common.seed,
        cut: std::sync::atomic::AtomicBool::new(false),
    });
    let cmds: Vec<_> = (0..users)
        .map(|k| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(session_task(sh.clone(), k, rx));
            tx
        })
        .collect();
    let wait = a.common.wait();
    let all: Vec<usize> = (0..users).collect();
    let away: Vec<usize> = (0..n).collect();

    // 1. Everyone logs in; every table is verified.
    let t0 = Instant::now();
    for tx in &cmds {
        let _ = tx.send(Cmd::Login);
    }
    let (failed, _) = await_notes(&mut notes, &all, t0 + wait, |_, note| {
        matches!(note, Note::Synced)
    })
    .await;
    let login_s = t0.elapsed().as_secs_f64();
    if !failed.is_empty() {
        report.verified = false;
        report.note(format!(
            "{} logins failed, e.g. user {}: {}",
            failed.len(),
            failed[0].0,
            failed[0].1
        ));
    }
    let initial = verify_all(&sh, wait.min(Duration::from_secs(30))).await;
    record(&mut report, "initial", &initial);
    let login_refused = sh.total(|s| s.refused[0]);
    tracing::info!(
        users,
        secs = login_s,
        refused = login_refused,
        mismatches = initial.mismatches,
        "everyone online and verified; cutting"
    );

    // 2. The cut.
    while notes.try_recv().is_ok() {}
    sh.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    let t_cut = Instant::now();
    let detached_before = log.update()?.get("session detached").copied().unwrap_or(0);
    for &k in &away {
        let _ = cmds[k].send(Cmd::Cut);
    }
    let (failed, _) = await_notes(&mut notes, &away, t_cut + wait, |_, note| {
        matches!(note, Note::Cut)
    })
    .await;
    if !failed.is_empty() {
        report.verified = false;
        report.note(format!("{} sessions could not be cut", failed.len()));
    }
    // The server must have noticed every drop before the changes, so that every
    // change lands while the sessions are detached.
    let detach_deadline = Instant::now() + wait.min(Duration::from_secs(30));
    let mut detached = 0;
    while Instant::now() < detach_deadline {
        detached = log.update()?.get("session detached").copied().unwrap_or(0) - detached_before;
        if detached >= n as u64 {
            break;
        }
        sleep(POLL).await;
    }
    let detach_s = t_cut.elapsed().as_secs_f64();
    if detached < n as u64 {
        report.note(format!(
            "the server's log shows {detached} of {n} sessions detached before the changes"
        ));
    }

    // 3. The connected sessions change things while the others are away.
    let t_changes = Instant::now();
    let mut rng = Rng::new(a.common.seed ^ 0x5eed_c4a9);
    let mut kinds = [0u64; 3];
    let mut relogins = Vec::new();
    for i in 0..keep {
        let k = n + i;
        let change = change_of(i);
        kinds[change as usize] += 1;
        let cmd = match change {
            Change::Caps => {
                let current = sh
                    .slot(k)
                    .client
                    .capabilities()
                    .map(Capabilities::fingerprint);
                let profiles = pop.profiles();
                let pick = (0..16)
                    .map(|_| &profiles[rng.below(profiles.len())])
                    .find(|c| Some(c.fingerprint()) != current)
                    .cloned();
                match pick {
                    Some(c) => Cmd::Caps(c),
                    None => Cmd::Logout,
                }
            }
            Change::Logout => Cmd::Logout,
            Change::Relogin => {
                relogins.push(k);
                Cmd::Logout
            }
        };
        let _ = cmds[k].send(cmd);
    }
    let connected: Vec<usize> = (n..users).collect();
    let (failed, _) = await_notes(&mut notes, &connected, t_changes + wait, |_, note| {
        matches!(note, Note::CapsAck | Note::LoggedOut)
    })
    .await;
    for &k in &relogins {
        let _ = cmds[k].send(Cmd::Login);
    }
    let (failed2, _) = await_notes(&mut notes, &relogins, Instant::now() + wait, |_, note| {
        matches!(note, Note::Synced)
    })
    .await;
    let changes_s = t_changes.elapsed().as_secs_f64();
    if !failed.is_empty() || !failed2.is_empty() {
        report.verified = false;
        report.note(format!(
            "{} changes of the connected sessions failed",
            failed.len() + failed2.len()
        ));
    }
    sleep(Duration::from_millis(a.away_ms)).await;

    // 4. The storm: everyone away reconnects at once and resumes.
    while notes.try_recv().is_ok() {}
    let before = log.update()?.clone();
    let t_storm = Instant::now();
    for &k in &away {
        let _ = cmds[k].send(Cmd::Resume);
    }
    let (failed, last_back) = await_notes(&mut notes, &away, t_storm + wait, |_, note| {
        matches!(note, Note::Synced)
    })
    .await;
    let storm_s = last_back.map_or(0.0, |t| t.saturating_duration_since(t_storm).as_secs_f64());
    let after = log.update()?.clone();
    let delta = |p: &str| after.get(p).copied().unwrap_or(0) - before.get(p).copied().unwrap_or(0);
    let (hashes, started, resumed_lines) = (
        delta("checking credentials"),
        delta("session started"),
        delta("session resumed"),
    );

    // 5. Every table again.
    let fin = verify_all(&sh, SETTLE).await;
    let t_verified = Instant::now();
    record(&mut report, "final", &fin);
    let cut_to_verified = t_verified.saturating_duration_since(t_cut).as_secs_f64();

    // Figures.
    let mut reconnect_us = Vec::new();
    let (mut resumed, mut snapshots, mut deltas, mut nonempty, mut catchup_frames) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut never_resumed = Vec::new();
    let mut attempts_per_session = Vec::new();
    for &k in &away {
        let s = sh.slot(k);
        if s.resumes == 1 && s.back.is_some() && s.resume_failed == 0 {
            resumed += 1;
        } else {
            never_resumed.push(k);
        }
        match s.snapshot {
            Some(true) => snapshots += 1,
            Some(false) => {
                deltas += 1;
                if s.catchup > 0 {
                    nonempty += 1;
                }
            }
            None => {}
        }
        catchup_frames += s.catchup;
        attempts_per_session.push(s.attempts[1]);
        if let (Some(sent), Some(back)) = (s.resume_sent, s.back) {
            reconnect_us.push(crate::worker::duration_us(
                back.saturating_duration_since(sent),
            ));
        }
    }
    let reconnect = Stats::of(&mut reconnect_us);
    let attempts = Stats::of(&mut attempts_per_session);
    let resume_failed = sh.total(|s| s.resume_failed);
    let storm_refused = sh.total(|s| s.refused[1]);
    let storm_attempts = sh.total(|s| s.attempts[1]);
    let connect_errors = sh.total(|s| s.connect_errors);
    let offline_about_cut = sh.total(|s| s.offline_about_cut);
    let violations = sh.total(|s| s.violations);
    let errors = sh.total(|s| s.errors);
    let dropped_frames = sh.total(|s| s.dropped_frames);
    if !failed.is_empty() || !never_resumed.is_empty() || resume_failed > 0 {
        report.verified = false;
        report.note(format!(
            "{} sessions did not resume ({} failed, {} resume_failed)",
            never_resumed.len(),
            failed.len(),
            resume_failed
        ));
        if let Some((k, why)) = failed.first() {
            report.note(format!("e.g. user {k}: {why}"));
        }
    }
    if hashes > 0 || started > 0 {
        report.verified = false;
        report.note(format!(
            "{hashes} password checks and {started} logins at the server during the storm"
        ));
    }
    if offline_about_cut > 0 {
        report.verified = false;
        report.note(format!(
            "{offline_about_cut} offline pushes about sessions that were only away"
        ));
    }
    if violations + errors > 0 {
        report.verified = false;
        report.note(format!("{violations} violations, {errors} server errors"));
    }
    if let Some(k) = faulty {
        report.note(format!(
            "seeded fault: {dropped_frames} catch-up frames of user {k} dropped by the tool"
        ));
    }
    for tx in &cmds {
        let _ = tx.send(Cmd::Close);
    }

    report.figures = json!({
        "sessions": n,
        "connected": keep,
        "resumed": resumed,
        "resumed_delta": deltas,
        "resumed_delta_nonempty": nonempty,
        "resumed_snapshot": snapshots,
        "catchup_table_changes": catchup_frames,
        "resume_failed": resume_failed,
        "not_resumed": never_resumed.len(),
        "storm_connections": storm_attempts,
        "rate_limited_retries": storm_refused,
        "login_phase_rate_limited": login_refused,
        "connect_errors": connect_errors,
        "attempts_per_session": {
            "p50": attempts.p50, "p99": attempts.p99, "max": attempts.max, "mean": attempts.mean
        },
        "reconnect_ms": reconnect.ms_json(),
        "storm_s": storm_s,
        "cut_to_all_verified_s": cut_to_verified,
        "detach_seen_s": detach_s,
        "changes": {"caps": kinds[0], "logout": kinds[1], "relogin": kinds[2], "s": changes_s},
        "server_log_during_storm": {
            "password_checks": hashes,
            "sessions_started": started,
            "sessions_resumed": resumed_lines,
        },
        "offline_pushes_about_away_sessions": offline_about_cut,
        "initial_login_s": login_s,
        "initial_tables": initial.checked,
        "final_tables": fin.checked,
        "final_entries": fin.entries,
        "violations": violations,
        "server_errors": errors,
        "seeded_fault_dropped_frames": dropped_frames,
    });
    report.row(["metric", "value"]);
    report.row([
        "sessions resumed (of cut)".to_string(),
        format!("{resumed} of {n}"),
    ]);
    report.row([
        "  with a delta (non-empty) / a snapshot".to_string(),
        format!("{deltas} ({nonempty}) / {snapshots}"),
    ]);
    report.row(["resume failures".to_string(), resume_failed.to_string()]);
    report.row([
        "connections in the storm / refused (rate limited)".to_string(),
        format!("{storm_attempts} / {storm_refused}"),
    ]);
    report.row([
        "attempts per session p50 / p99 / max".to_string(),
        format!("{} / {} / {}", attempts.p50, attempts.p99, attempts.max),
    ]);
    report.row([
        "reconnect time p50 / p99 / max".to_string(),
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            ms(reconnect.p50),
            ms(reconnect.p99),
            ms(reconnect.max)
        ),
    ]);
    report.row([
        "storm: first resume to last back".to_string(),
        format!("{storm_s:.2} s"),
    ]);
    report.row([
        "cut to every table verified".to_string(),
        format!("{cut_to_verified:.2} s"),
    ]);
    report.row([
        "changes while away (caps/logout/relogin)".to_string(),
        format!("{}/{}/{}", kinds[0], kinds[1], kinds[2]),
    ]);
    report.row([
        "server during the storm: password checks / logins / resumes".to_string(),
        format!("{hashes} / {started} / {resumed_lines}"),
    ]);
    report.row([
        "offline pushes about away sessions".to_string(),
        offline_about_cut.to_string(),
    ]);
    report.row([
        "tables verified (initial / final)".to_string(),
        format!(
            "{} / {} ({} mismatches)",
            initial.checked,
            fin.checked,
            initial.mismatches + fin.mismatches
        ),
    ]);
    report.target(
        "sessions resumed",
        format!("{n}"),
        resumed.to_string(),
        resumed == n as u64,
    );
    report.target(
        "resume failures",
        "0",
        resume_failed.to_string(),
        resume_failed == 0,
    );
    report.target(
        "password checks during the storm",
        "0",
        hashes.to_string(),
        hashes == 0,
    );
    report.target(
        "storm throttled (rate-limited retries)",
        "> 0",
        storm_refused.to_string(),
        storm_refused > 0,
    );
    Ok(report)
}

fn record(report: &mut Report, when: &str, v: &Verdict) {
    if v.mismatches > 0 {
        report.verified = false;
        report.mismatches += v.mismatches;
        for e in &v.examples {
            report.note(format!("{when} mismatch: {e}"));
        }
    }
}
