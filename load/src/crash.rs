//! `crash`: the server is SIGKILLed at random points under load; nothing acknowledged
//! is lost and every client rebuilds a correct table.
//!
//! The tool starts the server on a fresh store holding the population, logs every user
//! in and verifies every table. Then, for each round, it makes changes at a steady rate
//! through the core's client, one at a time per user: contact additions and removals
//! (persisted by the server; the `contact_added` / `contact_removed` answer echoing the
//! request's tag is the acknowledgement, after which the change must survive a crash,
//! spec 9.6), capability changes, logouts and logins. At a random point of the round
//! (drawn from the seeded generator) it sends a burst of contact changes and, 0-3 ms
//! later, SIGKILLs the server (so that some requests are in flight). It waits until
//! every client has seen its connection drop (`Client::connection_closed`, then
//! `Client::abandon` of the session kept for resuming), and reads the store as the
//! crash left it (`precall-server admin user list`, `terminal list`, `contact dump`):
//!
//! - every user and registered terminal of the population is still there;
//! - every contact-list entry is what the acknowledged changes say: for each (user,
//!   contact) pair the last acknowledged change holds, unless a later request for the
//!   pair was sent but not acknowledged before the kill (*in doubt*: either outcome is
//!   right); a pair whose last acknowledged change is not in the store is a **lost**
//!   change, and a pair nobody asked to change that differs is an **unexpected** one.
//!
//! It then restarts the server on the same SQLite file (on the same port when it can
//! still be bound). Every client reconnects with the core's jittered back-off while the
//! server is not listening yet and logs in anew (a full login: a restarted server has
//! no session to resume); users the load had logged out log in too. Once all are
//! logged in and synced, each client's contact list must equal the store's and each
//! table must be INV-ONLINE-EXACT over the store's contact graph (the online sessions
//! of mutual contacts, parameters `negotiate_pair`). The next round starts from the
//! store's state.
//!
//! The table check is [`crate::verify`]'s ([`Checker::check_in`]), applied to the
//! contact graph the store holds rather than the generated one (contact changes move
//! it away from the population).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use precall_client::{Clock, Driver, Event as Wire, Login, Start};
use precall_protocol::client::Status;
use precall_protocol::{Capabilities, Client, ClientConfig, ClientEvent, ReqId, UserId};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};

use crate::population::Population;
use crate::report::{Report, Stats};
use crate::rng::Rng;
use crate::serverproc::Target;
use crate::verify::{Checker, DirEntry, Directory, Verdict};
use crate::CrashArgs;

/// How often the coordinator polls the sessions while it waits.
const POLL: Duration = Duration::from_millis(10);

/// Longest pause between two connection attempts (the backoff doubles up to it).
const MAX_BACKOFF_MS: u64 = 200;

/// Logins in a row that may end before `login_ok` before a session gives up.
const MAX_FLAPS: u32 = 20;

/// A deliberate defect of the verifier, to show that its check can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// At the first kill the verifier records one acknowledged contact addition that
    /// was never requested, so the store is found to have "lost" it.
    DropAck,
}

// ----- sessions ----------------------------------------------------------------------

/// A change a session is told to make.
#[derive(Debug)]
enum Op {
    /// `add_contact` of this user index.
    Add(usize),
    /// `remove_contact` of this user index.
    Remove(usize),
    /// `update_caps`.
    Caps(Capabilities),
    /// `logout`.
    Logout,
}

/// What the coordinator tells a session.
#[derive(Debug)]
enum Cmd {
    /// Connect (retrying while refused) and log in; ignored while connected.
    Login,
    /// Make a change, unless the server was killed since it was decided (`epoch`).
    Op {
        /// Identifies the change in the answering [`Note::Refused`].
        id: u64,
        /// The kill count when it was decided.
        epoch: u64,
        /// The change.
        op: Op,
    },
    /// End the task.
    Close,
}

/// What a session tells the coordinator.
#[derive(Debug)]
enum Note {
    /// `login_ok` arrived.
    LoggedIn,
    /// The login snapshot is complete.
    Synced,
    /// A contact change was sent with this tag.
    Sent {
        /// The request's tag.
        req: ReqId,
        /// The contact (user index).
        contact: usize,
        /// Addition or removal.
        added: bool,
    },
    /// The answer echoing a contact request's tag: the change is acknowledged.
    Acked {
        /// The tag echoed.
        req: ReqId,
        /// The contact it names, if one of the population.
        contact: Option<usize>,
        /// `contact_added` (or `contact_removed`).
        added: bool,
    },
    /// The server answered a request with an error.
    ReqError,
    /// The server acknowledged a capability change.
    CapsAck,
    /// A change was not made (not logged in, refused by the core, or decided before
    /// the last kill).
    Refused {
        /// The change.
        id: u64,
    },
    /// The session ended with a logout.
    LoggedOut,
    /// The connection dropped without a logout; the session reconnects by itself.
    Lost,
    /// The session could not log in (server unreachable for too long, or refused).
    Failed(String),
}

/// One session's client and counters.
struct Sess {
    client: Client,
    /// Messages the core refused (must stay 0).
    violations: u64,
    /// `error` messages from the server (must stay 0).
    errors: u64,
}

impl AsMut<Client> for Sess {
    fn as_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// What the coordinator and the session tasks share.
struct Shared {
    pop: Arc<Population>,
    /// Where the server listens now (it changes if a restart needs a new port).
    addr: Mutex<SocketAddr>,
    /// Kills so far: changes decided before the last one are not made.
    epoch: AtomicU64,
    /// One session per user, by user index.
    slots: Vec<Arc<Mutex<Sess>>>,
    /// Connection attempts refused or failed (then retried).
    connect_retries: AtomicU64,
    /// How long a session keeps trying to connect.
    reconnect_for: Duration,
    notes: mpsc::UnboundedSender<(usize, Note)>,
    /// The clients' clock.
    clock: Clock,
}

impl Shared {
    /// Locks a slot (a poisoned lock means a session task panicked: its client is still
    /// what it was).
    fn slot(&self, k: usize) -> MutexGuard<'_, Sess> {
        self.slots[k]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn addr(&self) -> SocketAddr {
        *self
            .addr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_addr(&self, addr: SocketAddr) {
        *self
            .addr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addr;
    }

    fn note(&self, k: usize, note: Note) {
        // The coordinator stopped listening: nothing left to tell.
        let _ = self.notes.send((k, note));
    }

    fn total(&self, f: impl Fn(&Sess) -> u64) -> u64 {
        (0..self.slots.len()).map(|k| f(&self.slot(k))).sum()
    }
}

/// How a connection ended.
enum End {
    /// [`Cmd::Close`].
    Close,
    /// The user logged out.
    LoggedOut,
    /// The connection dropped (or the server ended the session) without a logout.
    Lost {
        /// Whether `login_ok` had arrived.
        was_online: bool,
    },
    /// The login was refused.
    Refused(String),
    /// No connection could be made for `reconnect_for`.
    Unreachable,
}

/// The task of session `k`: logs in on [`Cmd::Login`] and stays logged in, logging
/// in anew whenever its connection drops, until the user logs out.
async fn session_task(sh: Arc<Shared>, k: usize, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut rng = Rng::new((k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x0c4a_5b10);
    let login = Login {
        user: sh.pop.name(k),
        password: sh.pop.password(k),
        with: sh.pop.login_with(k),
    };
    // The core's jittered back-off: 10 ms doubling up to MAX_BACKOFF_MS.
    let mut driver = Driver::new(sh.slots[k].clone(), sh.clock, sh.addr().to_string())
        .with_login(login)
        .with_reconnect(
            Duration::from_millis(10),
            Duration::from_millis(MAX_BACKOFF_MS),
            move || rng.next_u64(),
        );
    let mut want_online = false;
    let mut flaps = 0u32;
    loop {
        if !want_online {
            match cmds.recv().await {
                Some(Cmd::Login) => want_online = true,
                Some(Cmd::Op { id, .. }) => {
                    sh.note(k, Note::Refused { id });
                    continue;
                }
                Some(Cmd::Close) | None => return,
            }
        }
        // Every arm notes the end before the next `.await`, so a coordinator that sees
        // the client idle has the note already.
        match connection(&sh, k, &mut driver, &mut cmds).await {
            End::Close => return,
            End::Unreachable => {
                want_online = false;
                sh.note(
                    k,
                    Note::Failed(format!("cannot connect within {:?}", sh.reconnect_for)),
                );
            }
            End::LoggedOut => {
                want_online = false;
                sh.note(k, Note::LoggedOut);
            }
            End::Lost { was_online } => {
                sh.note(k, Note::Lost);
                flaps = if was_online { 0 } else { flaps + 1 };
                if flaps > MAX_FLAPS {
                    want_online = false;
                    sh.note(
                        k,
                        Note::Failed(format!("{flaps} connections ended before login_ok")),
                    );
                }
            }
            End::Refused(why) => {
                want_online = false;
                sh.note(k, Note::Failed(why));
            }
        }
    }
}

/// One connection's life: connects to the server's current address (retrying after
/// the core's back-off for at most `reconnect_for`), logs in, then moves commands.
async fn connection(
    sh: &Arc<Shared>,
    k: usize,
    driver: &mut Driver<Arc<Mutex<Sess>>>,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
) -> End {
    driver.set_addr(sh.addr().to_string());
    driver.reconnect(Start::Now);
    let deadline = Instant::now() + sh.reconnect_for;
    let mut was_online = false;
    let mut logging_out = false;
    let mut refused = None;
    loop {
        tokio::select! {
            ev = driver.next() => match ev {
                Some(Wire::Client(ev)) => on_event(sh, k, ev, &mut was_online, &mut refused),
                Some(Wire::ConnectFailed(why)) => {
                    sh.connect_retries.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() >= deadline {
                        tracing::warn!(why, "giving up connecting");
                        driver.stop_reconnecting();
                        return End::Unreachable;
                    }
                    // The server may listen elsewhere after a restart.
                    driver.set_addr(sh.addr().to_string());
                }
                Some(Wire::Disconnected(_)) => {
                    // A restarted server knows no session to resume: the client gives
                    // it up at once and logs in anew (a full login) on a new connection.
                    driver.stop_reconnecting();
                    let now = sh.clock.now();
                    driver.with(|c| {
                        if c.status() != Status::Idle {
                            c.abandon(now);
                        }
                    });
                    drain(sh, k, driver, &mut was_online, &mut refused);
                    return if logging_out {
                        End::LoggedOut
                    } else {
                        End::Lost { was_online }
                    };
                }
                Some(_) => {}
                None => return End::Lost { was_online },
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Close) | None => return End::Close,
                Some(Cmd::Login) => {}
                Some(Cmd::Op { id, epoch, op }) => {
                    command(sh, k, id, epoch, op, &mut logging_out);
                }
            },
        }
        if driver.is_reconnecting() || driver.with(|c| c.status()) != Status::Idle {
            continue;
        }
        // The session ended on this connection: the rest of its events, then the end
        // (dropping the connection closes it).
        drain(sh, k, driver, &mut was_online, &mut refused);
        driver.close();
        return if logging_out {
            End::LoggedOut
        } else if was_online {
            End::Lost { was_online }
        } else {
            End::Refused(refused.unwrap_or_else(|| "session ended before login_ok".into()))
        };
    }
}

/// Handles the events already there.
fn drain(
    sh: &Shared,
    k: usize,
    driver: &mut Driver<Arc<Mutex<Sess>>>,
    was_online: &mut bool,
    refused: &mut Option<String>,
) {
    while let Some(ev) = driver.poll() {
        if let Wire::Client(ev) = ev {
            on_event(sh, k, ev, was_online, refused);
        }
    }
}

/// Carries out a change, unless it was decided before the last kill.
fn command(sh: &Shared, k: usize, id: u64, epoch: u64, op: Op, logging_out: &mut bool) {
    if epoch != sh.epoch.load(Ordering::SeqCst) {
        sh.note(k, Note::Refused { id });
        return;
    }
    let now = sh.clock.now();
    let mut s = sh.slot(k);
    let result = match op {
        Op::Add(c) => s
            .client
            .add_contact(sh.pop.name(c), now)
            .map(|req| Some((req, c, true))),
        Op::Remove(c) => s
            .client
            .remove_contact(sh.pop.name(c), now)
            .map(|req| Some((req, c, false))),
        Op::Caps(caps) => s.client.update_caps(caps, now).map(|_| None),
        Op::Logout => s.client.logout(now).map(|()| {
            *logging_out = true;
            None
        }),
    };
    drop(s);
    match result {
        Ok(Some((req, contact, added))) => sh.note(
            k,
            Note::Sent {
                req,
                contact,
                added,
            },
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(user = k, error = %e, "change refused by the core");
            sh.note(k, Note::Refused { id });
        }
    }
}

/// Handles one event of the client: counts and notes it.
fn on_event(
    sh: &Shared,
    k: usize,
    ev: ClientEvent,
    was_online: &mut bool,
    refused: &mut Option<String>,
) {
    let note = {
        let mut s = sh.slot(k);
        match ev {
            ClientEvent::LoggedIn { .. } => {
                *was_online = true;
                Some(Note::LoggedIn)
            }
            ClientEvent::Synced => Some(Note::Synced),
            ClientEvent::CapsAcknowledged { .. } => Some(Note::CapsAck),
            // The answer to this session's own contact request (other terminals' and
            // the administrator's changes carry no tag).
            ClientEvent::ContactsChanged {
                req: Some(req),
                user,
                added,
            } => Some(Note::Acked {
                req,
                contact: sh.pop.index_of(&user),
                added,
            }),
            ClientEvent::ServerError { code, req, .. } => {
                s.errors += 1;
                tracing::warn!(user = k, ?code, ?req, "server error");
                *refused = Some(format!("server error {code:?}"));
                req.map(|_| Note::ReqError)
            }
            ClientEvent::Violation(v) => {
                s.violations += 1;
                tracing::warn!(user = k, violation = %v, "the core refused a message");
                None
            }
            _ => None,
        }
    };
    if let Some(n) = note {
        sh.note(k, n);
    }
}

// ----- the expected store ------------------------------------------------------------

/// The last thing that happened to a (user, contact) pair in the current round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// A change acknowledged: the store must hold it.
    Acked(bool),
    /// A change requested but not acknowledged before the kill: either outcome.
    Doubt(bool),
}

/// What the store must hold: the contact graph as of the last check plus the changes
/// acknowledged since, and the pairs in doubt.
struct Ledger {
    /// Contact lists by user index, with every acknowledged change applied.
    model: Vec<BTreeSet<u32>>,
    /// This round's last event per (user, contact) pair.
    events: HashMap<(u32, u32), Event>,
}

/// The store compared with the ledger.
#[derive(Debug, Default)]
struct StoreCheck {
    /// Pairs whose last acknowledged change the store does not hold.
    lost: u64,
    /// Pairs nobody asked to change that differ from the ledger.
    unexpected: u64,
    /// Pairs in doubt the store shows changed as requested.
    doubt_applied: u64,
    /// Pairs in doubt the store shows unchanged.
    doubt_not_applied: u64,
    /// The first few differences.
    examples: Vec<String>,
}

impl Ledger {
    fn new(pop: &Population) -> Self {
        Self {
            model: (0..pop.len())
                .map(|u| pop.contacts(u).iter().copied().collect())
                .collect(),
            events: HashMap::new(),
        }
    }

    /// Records an acknowledged change.
    fn ack(&mut self, user: u32, contact: u32, added: bool) {
        if let Some(list) = self.model.get_mut(user as usize) {
            if added {
                list.insert(contact);
            } else {
                list.remove(&contact);
            }
        }
        self.events.insert((user, contact), Event::Acked(added));
    }

    /// Records a change whose outcome is unknown.
    fn doubt(&mut self, user: u32, contact: u32, added: bool) {
        self.events.insert((user, contact), Event::Doubt(added));
    }

    /// Compares the store's contact lists with the ledger.
    fn compare(&self, store: &[BTreeSet<u32>], pop: &Population) -> StoreCheck {
        let mut c = StoreCheck::default();
        for (&(u, v), ev) in &self.events {
            if let Event::Doubt(added) = *ev {
                let has = store.get(u as usize).is_some_and(|l| l.contains(&v));
                if has == added {
                    c.doubt_applied += 1;
                } else {
                    c.doubt_not_applied += 1;
                }
            }
        }
        let empty = BTreeSet::new();
        for u in 0..self.model.len().max(store.len()) {
            let want = self.model.get(u).unwrap_or(&empty);
            let have = store.get(u).unwrap_or(&empty);
            for &v in want.symmetric_difference(have) {
                let key = (index(u), v);
                let held = have.contains(&v);
                let what = match self.events.get(&key) {
                    Some(Event::Doubt(_)) => continue,
                    Some(Event::Acked(_)) => {
                        c.lost += 1;
                        "lost acknowledged change"
                    }
                    None => {
                        c.unexpected += 1;
                        "unexpected change"
                    }
                };
                if c.examples.len() < 5 {
                    c.examples.push(format!(
                        "{what}: the store {} {} listing {}",
                        if held { "has" } else { "lacks" },
                        pop.name(u),
                        pop.name(v as usize)
                    ));
                }
            }
        }
        c
    }

    /// Starts the next round from what the store holds.
    fn rebase(&mut self, store: Vec<BTreeSet<u32>>) {
        self.model = store;
        self.events.clear();
    }
}

/// A user index as the ledger stores it (populations are far below 2^32 users).
fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The store as `precall-server admin` prints it.
struct StoreDump {
    /// Contact lists by user index.
    graph: Vec<BTreeSet<u32>>,
    /// Users of the population without an account, and terminals without their
    /// registration (or with another owner).
    missing: Vec<String>,
    /// Records that name no user of the population.
    foreign: u64,
}

/// Runs `precall-server admin --db STORE ARGS` and returns its standard output.
async fn admin(target: &Target, args: &[&str]) -> Result<String> {
    let Some(mut cmd) = target.admin_command() else {
        bail!("no store to read: the server was not started by this tool");
    };
    cmd.args(args);
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .with_context(|| format!("cannot run admin {args:?}"))?;
    if !out.status.success() {
        bail!(
            "admin {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("admin {args:?}: output not UTF-8"))
}

/// Reads every account, registered terminal and contact-list entry of the store.
async fn dump_store(target: &Target, pop: &Population) -> Result<StoreDump> {
    let users = admin(target, &["user", "list"]).await?;
    let terminals = admin(target, &["terminal", "list"]).await?;
    let contacts = admin(target, &["contact", "dump"]).await?;
    let mut d = StoreDump {
        graph: vec![BTreeSet::new(); pop.len()],
        missing: Vec::new(),
        foreign: 0,
    };
    let index_of = |name: &str| UserId::new(name).ok().and_then(|u| pop.index_of(&u));
    let accounts: HashSet<usize> = users.lines().filter_map(|l| index_of(l.trim())).collect();
    d.foreign += users.lines().count().saturating_sub(accounts.len()) as u64;
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for line in terminals.lines() {
        if let Some((id, owner)) = line.split_once(' ') {
            owners.insert(id, owner.trim());
        }
    }
    for u in 0..pop.len() {
        if !accounts.contains(&u) {
            d.missing.push(format!("account {}", pop.name(u)));
        }
        let name = pop.name(u);
        let id = pop.terminal(u);
        if owners.get(id.as_str()) != Some(&name.as_str()) {
            d.missing.push(format!("terminal {id} of {name}"));
        }
    }
    for line in contacts.lines() {
        let pair = line
            .split_once(' ')
            .and_then(|(u, c)| Some((index_of(u)?, index_of(c.trim())?)));
        match pair {
            Some((u, c)) => {
                d.graph[u].insert(index(c));
            }
            None => d.foreign += 1,
        }
    }
    Ok(d)
}

// ----- tables ------------------------------------------------------------------------

/// Whether user `u`'s client holds exactly the store's contact list (its `login_ok`
/// list, read from the store at login).
fn contacts_match(pop: &Population, graph: &[BTreeSet<u32>], u: usize, client: &Client) -> bool {
    let have: BTreeSet<u32> = client
        .contacts()
        .map(|c| pop.index_of(c).map_or(u32::MAX, index))
        .collect();
    graph.get(u) == Some(&have)
}

// ----- the coordinator ---------------------------------------------------------------

/// A change in flight, one per user at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Busy {
    /// A contact change (id of the op).
    Contact(u64),
    /// A capability change.
    Caps(u64),
    /// A logout.
    Logout(u64),
    /// A login (until the snapshot is complete).
    Login,
}

impl Busy {
    fn id(self) -> Option<u64> {
        match self {
            Busy::Contact(id) | Busy::Caps(id) | Busy::Logout(id) => Some(id),
            Busy::Login => None,
        }
    }
}

/// The coordinator's view of the sessions and the changes.
struct Coord {
    sh: Arc<Shared>,
    cmds: Vec<mpsc::UnboundedSender<Cmd>>,
    notes: mpsc::UnboundedReceiver<(usize, Note)>,
    busy: Vec<Option<Busy>>,
    /// Contact requests sent and not yet answered, by session: tag -> (contact, added).
    sent: Vec<HashMap<ReqId, (usize, bool)>>,
    ledger: Ledger,
    /// Changes acknowledged in this round.
    acked_round: u64,
    /// Changes put in doubt in this round.
    doubt_round: u64,
    /// Answers whose tag or contact matched no request sent (must stay 0).
    unmatched: u64,
    /// Connections dropped while the server ran (not by a kill).
    drops_while_up: u64,
    /// Connections dropped, in all.
    lost_notes: u64,
    /// Failed logins.
    failed: u64,
    /// Whether the server is down (killed, not yet restarted).
    down: bool,
}

impl Coord {
    /// Applies one note.
    fn settle(&mut self, k: usize, note: Note) {
        let u = index(k);
        match note {
            Note::LoggedIn => {}
            Note::Synced => {
                if self.busy[k] == Some(Busy::Login) {
                    self.busy[k] = None;
                }
            }
            Note::Sent {
                req,
                contact,
                added,
            } => {
                self.sent[k].insert(req, (contact, added));
            }
            Note::Acked {
                req,
                contact,
                added,
            } => {
                match self.sent[k].remove(&req) {
                    Some((c, a)) if Some(c) == contact && a == added => {
                        self.ledger.ack(u, index(c), a);
                        self.acked_round += 1;
                    }
                    other => {
                        self.unmatched += 1;
                        tracing::warn!(
                            user = k,
                            ?req,
                            ?contact,
                            added,
                            ?other,
                            "answer matches no request"
                        );
                    }
                }
                self.finish(k);
            }
            Note::ReqError | Note::CapsAck => self.finish(k),
            Note::Refused { id } => {
                if self.busy[k].and_then(Busy::id) == Some(id) {
                    self.busy[k] = None;
                }
            }
            Note::LoggedOut => self.busy[k] = None,
            Note::Lost => {
                self.lost_notes += 1;
                if !self.down {
                    self.drops_while_up += 1;
                }
                self.unanswered(k);
                self.busy[k] = None;
            }
            Note::Failed(why) => {
                tracing::warn!(user = k, why, "login failed");
                self.failed += 1;
                self.busy[k] = None;
            }
        }
    }

    /// The answer to the change in flight arrived.
    fn finish(&mut self, k: usize) {
        if matches!(self.busy[k], Some(Busy::Contact(_) | Busy::Caps(_))) {
            self.busy[k] = None;
        }
    }

    /// Session `k`'s unanswered contact requests are in doubt.
    fn unanswered(&mut self, k: usize) {
        for (_, (c, added)) in self.sent[k].drain() {
            self.ledger.doubt(index(k), index(c), added);
            self.doubt_round += 1;
        }
    }

    /// Applies every note already there.
    fn drain_notes(&mut self) {
        while let Ok((k, note)) = self.notes.try_recv() {
            self.settle(k, note);
        }
    }

    /// Waits until `done` holds over the sessions (checked every [`POLL`], notes
    /// applied meanwhile), at most until `deadline`. Returns whether it held.
    async fn wait_until(&mut self, deadline: Instant, done: impl Fn(&Shared) -> bool) -> bool {
        loop {
            self.drain_notes();
            if done(&self.sh) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL).await;
        }
    }

    fn send(&self, k: usize, cmd: Cmd) {
        // A session task that ended has nothing to do.
        let _ = self.cmds[k].send(cmd);
    }
}

/// What one verification (after the initial logins, or after a restart) found.
struct Recovery {
    /// Sessions not logged in and synced by the deadline.
    not_online: usize,
    /// When every session was logged in and synced.
    all_online: Option<Instant>,
    /// When every table was complete (all checked quickly), if they were.
    complete: Option<Instant>,
    /// The full check of every table.
    tables: Verdict,
    /// Clients whose contact list differs from the store's.
    contacts_differ: usize,
    /// The first such difference.
    contacts_example: Option<String>,
}

/// Logs every session in, waits until all are logged in and synced, then until every
/// table holds exactly what `graph` and the online sessions say, and checks each in
/// full (tables and contact lists).
async fn log_in_and_verify(co: &mut Coord, graph: &[BTreeSet<u32>], limit: Duration) -> Recovery {
    let deadline = Instant::now() + limit;
    let n = co.sh.slots.len();
    for k in 0..n {
        co.send(k, Cmd::Login);
    }
    let online = co
        .wait_until(deadline, |sh| {
            (0..sh.slots.len()).all(|k| sh.slot(k).client.is_synced())
        })
        .await;
    let all_online = online.then(Instant::now);
    let pop = co.sh.pop.clone();
    let dir = Directory::from_entries((0..n).filter_map(|k| {
        let s = co.sh.slot(k);
        Some(DirEntry {
            user: index(k),
            session: s.client.session()?,
            fp: s.client.capabilities()?.fingerprint(),
        })
    }));
    let mut tables = Checker::default();
    let mut pending: Vec<usize> = (0..n).collect();
    let complete = loop {
        co.drain_notes();
        pending.retain(|&k| {
            let s = co.sh.slot(k);
            tables
                .check_in(&pop, graph, &dir, k, &s.client, false)
                .is_err()
        });
        if pending.is_empty() {
            break Some(Instant::now());
        }
        if Instant::now() >= deadline {
            break None;
        }
        sleep(POLL).await;
    };
    let mut verdict = Verdict::default();
    let (mut contacts_differ, mut contacts_example) = (0, None);
    let mut not_online = 0;
    for k in 0..n {
        let s = co.sh.slot(k);
        if !s.client.is_synced() {
            not_online += 1;
        }
        verdict.entries += s.client.peers().count();
        verdict.record(tables.check_in(&pop, graph, &dir, k, &s.client, true));
        if !contacts_match(&pop, graph, k, &s.client) {
            contacts_differ += 1;
            contacts_example.get_or_insert_with(|| {
                format!(
                    "{}: contact list differs from the store's ({} entries, store {})",
                    pop.name(k),
                    s.client.contacts().count(),
                    graph.get(k).map_or(0, BTreeSet::len)
                )
            });
        }
    }
    Recovery {
        not_online,
        all_online,
        complete,
        tables: verdict,
        contacts_differ,
        contacts_example,
    }
}

/// One round's figures.
#[derive(Debug, Default, serde::Serialize)]
struct RoundFigures {
    round: u64,
    kill_at_ms: f64,
    ops: u64,
    acked: u64,
    acked_total: u64,
    in_doubt: u64,
    doubt_applied: u64,
    doubt_not_applied: u64,
    lost: u64,
    unexpected: u64,
    missing_records: usize,
    foreign_records: u64,
    connections_dropped: u64,
    restart_ms: f64,
    all_logged_in_ms: Option<f64>,
    recover_ms: Option<f64>,
    tables_checked: usize,
    table_mismatches: usize,
    contact_lists_differing: usize,
    not_logged_in: usize,
}

/// Runs the crash scenario.
pub async fn run(a: &CrashArgs) -> Result<Report> {
    if a.common.connect.is_some() {
        bail!("crash starts, kills and restarts its own server: --connect does not apply");
    }
    if !(a.rate.is_finite() && a.rate > 0.0) {
        bail!("--rate must be positive");
    }
    let users = usize::try_from(a.users).context("--users")?;
    let round = Duration::from_millis(a.round_ms);
    let seed = a.common.seed;
    let pop = Arc::new(Population::generate(users, a.contacts, seed)?);
    let mut params = json!({
        "users": users,
        "contacts_per_user": pop.contact_entries() as f64 / users.max(1) as f64,
        "rounds": a.rounds,
        "rate_ops_per_s": a.rate,
        "round_ms": a.round_ms,
        "seed": seed,
        "seed_fault": a
            .seed_fault
            .and_then(|f| f.to_possible_value())
            .map(|v| v.get_name().to_string()),
    });
    let mut target = a.common.target(&pop, &mut params)?;
    let result = drive(a, &mut target, pop, round, params).await;
    if result.is_err() {
        eprintln!("{}", target.log_tail());
    }
    target.stop();
    result
}

/// The scenario proper, on a started server.
async fn drive(
    a: &CrashArgs,
    target: &mut Target,
    pop: Arc<Population>,
    round: Duration,
    params: serde_json::Value,
) -> Result<Report> {
    let n = pop.len();
    let wait = a.common.wait();
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let sh = Arc::new(Shared {
        pop: pop.clone(),
        addr: Mutex::new(target.addr()),
        epoch: AtomicU64::new(0),
        slots: (0..n)
            .map(|_| {
                Arc::new(Mutex::new(Sess {
                    client: Client::new(ClientConfig::default()),
                    violations: 0,
                    errors: 0,
                }))
            })
            .collect(),
        connect_retries: AtomicU64::new(0),
        reconnect_for: wait,
        notes: notes_tx,
        clock: Clock::new(),
    });
    let cmds = (0..n)
        .map(|k| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(session_task(sh.clone(), k, rx));
            tx
        })
        .collect();
    let mut co = Coord {
        sh: sh.clone(),
        cmds,
        notes,
        busy: vec![None; n],
        sent: vec![HashMap::new(); n],
        ledger: Ledger::new(&pop),
        acked_round: 0,
        doubt_round: 0,
        unmatched: 0,
        drops_while_up: 0,
        lost_notes: 0,
        failed: 0,
        down: false,
    };
    let mut report = Report::new("crash", params);

    // The store holds the population; everyone logs in; every table is verified.
    let initial_store = dump_store(target, &pop).await?;
    let initial_check = co.ledger.compare(&initial_store.graph, &pop);
    if initial_check.lost + initial_check.unexpected > 0 || !initial_store.missing.is_empty() {
        mismatch(
            &mut report,
            format!(
                "the imported store differs from the population: {:?} {:?}",
                initial_check.examples, initial_store.missing
            ),
        );
    }
    let graph = co.ledger.model.clone();
    let t0 = Instant::now();
    let initial = log_in_and_verify(&mut co, &graph, wait).await;
    let initial_ms = initial.complete.map(|t| ms(t - t0));
    tracing::info!(
        users = n,
        mismatches = initial.tables.mismatches,
        took_ms = ?initial_ms,
        "everyone online and verified; crashing"
    );
    let mut table_mismatches = check_recovery(&mut report, "initial", &initial);

    let mut rng = Rng::new(pop.seed ^ 0xc7a5_4e11);
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let mut rounds: Vec<RoundFigures> = Vec::new();
    let mut next_id = 0u64;
    let mut acked_total = 0u64;
    for r in 1..=a.rounds {
        co.acked_round = 0;
        co.doubt_round = 0;
        let round_ms = u64::try_from(round.as_millis()).unwrap_or(u64::MAX).max(5);
        let kill_after = Duration::from_millis(
            round_ms / 5 + rng.below(usize::try_from(round_ms * 4 / 5).unwrap_or(1)) as u64,
        );
        let t_round = Instant::now();
        let kill_at = t_round + kill_after;
        let mut ops = 0u64;
        let mut tick = 0u32;

        // Changes at a steady rate until the kill.
        loop {
            let next = t_round + period * tick;
            if next >= kill_at {
                break;
            }
            tokio::select! {
                biased;
                Some((k, note)) = co.notes.recv() => co.settle(k, note),
                () = sleep_until(next) => {
                    tick += 1;
                    let epoch = co.sh.epoch.load(Ordering::SeqCst);
                    let next = pick(&co, &pop, &mut rng, &mut next_id, epoch, false);
                    if let Some((k, cmd, busy)) = next {
                        co.busy[k] = Some(busy);
                        co.send(k, cmd);
                        ops += 1;
                    }
                }
            }
        }
        sleep_until(kill_at).await;
        // A burst of contact changes right before the kill, so that some are in flight
        // when it falls (a kill 0-3 ms later, drawn from the generator).
        let epoch = co.sh.epoch.load(Ordering::SeqCst);
        let mut burst = 0u64;
        for _ in 0..a.burst {
            if let Some((k, cmd, busy)) = pick(&co, &pop, &mut rng, &mut next_id, epoch, true) {
                co.busy[k] = Some(busy);
                co.send(k, cmd);
                burst += 1;
            }
        }
        ops += burst;
        if burst > 0 {
            sleep(Duration::from_micros(rng.below(3000) as u64)).await;
        }

        // SIGKILL; every change decided before it is void; wait until every client has
        // seen its connection drop.
        co.sh.epoch.fetch_add(1, Ordering::SeqCst);
        co.down = true;
        target.kill9()?;
        let killed_at = Instant::now();
        let kill_at_ms = ms(killed_at - t_round);
        let lost_before = co.lost_notes;
        let all_dropped = co
            .wait_until(killed_at + wait, |sh| {
                (0..sh.slots.len()).all(|k| sh.slot(k).client.status() == Status::Idle)
            })
            .await;
        if !all_dropped {
            mismatch(
                &mut report,
                format!("round {r}: some clients never saw the connection drop"),
            );
        }
        // Anything still unanswered is in doubt too.
        for k in 0..n {
            co.unanswered(k);
            co.busy[k] = None;
        }
        let dropped = co.lost_notes - lost_before;

        // The store as the crash left it.
        let store = dump_store(target, &pop).await?;
        if r == 1 && a.seed_fault == Some(Fault::DropAck) {
            seed_drop_ack(&mut co, &mut report, &pop, &mut rng);
        }
        let check = co.ledger.compare(&store.graph, &pop);
        acked_total += co.acked_round;
        for e in &check.examples {
            report.note(format!("round {r}: {e}"));
        }
        let differ = usize::try_from(check.lost + check.unexpected).unwrap_or(usize::MAX);
        if differ > 0 {
            report.verified = false;
            report.mismatches += differ;
        }
        if !store.missing.is_empty() {
            report.mismatches += store.missing.len();
            mismatch(
                &mut report,
                format!(
                    "round {r}: {} records missing from the store, e.g. {}",
                    store.missing.len(),
                    store.missing[0]
                ),
            );
        }
        co.ledger.rebase(store.graph.clone());

        // Restart on the same store; everyone logs in anew; every table is verified.
        let t_restart = Instant::now();
        let restart = target.restart()?;
        co.sh.set_addr(target.addr());
        co.down = false;
        let rec = log_in_and_verify(&mut co, &store.graph, wait).await;
        table_mismatches += check_recovery(&mut report, &format!("round {r}"), &rec);
        let f = RoundFigures {
            round: r,
            kill_at_ms,
            ops,
            acked: co.acked_round,
            acked_total,
            in_doubt: co.doubt_round,
            doubt_applied: check.doubt_applied,
            doubt_not_applied: check.doubt_not_applied,
            lost: check.lost,
            unexpected: check.unexpected,
            missing_records: store.missing.len(),
            foreign_records: store.foreign,
            connections_dropped: dropped,
            restart_ms: ms(restart),
            all_logged_in_ms: rec.all_online.map(|t| ms(t - t_restart)),
            recover_ms: rec.complete.map(|t| ms(t - t_restart)),
            tables_checked: rec.tables.checked,
            table_mismatches: rec.tables.mismatches,
            contact_lists_differing: rec.contacts_differ,
            not_logged_in: rec.not_online,
        };
        tracing::info!(?f, "round done");
        rounds.push(f);
    }
    co.drain_notes();
    for k in 0..n {
        co.send(k, Cmd::Close);
    }
    finish_report(
        &mut report,
        &co,
        &rounds,
        table_mismatches,
        initial_ms,
        &initial,
    );
    Ok(report)
}

/// The seeded fault: the ledger gets an acknowledged addition nobody requested.
fn seed_drop_ack(co: &mut Coord, report: &mut Report, pop: &Population, rng: &mut Rng) {
    let n = pop.len();
    for _ in 0..1000 {
        let (u, v) = (rng.below(n), rng.below(n));
        let key = (index(u), index(v));
        if u == v || co.ledger.model[u].contains(&key.1) || co.ledger.events.contains_key(&key) {
            continue;
        }
        co.ledger.ack(key.0, key.1, true);
        report.note(format!(
            "seeded fault drop-ack: the verifier expects an acknowledged change that never happened ({} adds {})",
            pop.name(u),
            pop.name(v)
        ));
        return;
    }
}

/// Records a failed check.
fn mismatch(report: &mut Report, what: String) {
    report.verified = false;
    report.note(what);
}

/// Records a verification's failures in the report; returns its table mismatches
/// (contact lists included).
fn check_recovery(report: &mut Report, when: &str, rec: &Recovery) -> usize {
    let bad = rec.tables.mismatches + rec.contacts_differ;
    if bad > 0 || rec.not_online > 0 || rec.complete.is_none() {
        report.verified = false;
    }
    report.mismatches += bad;
    for e in &rec.tables.examples {
        report.note(format!("{when}: table mismatch: {e}"));
    }
    if let Some(e) = &rec.contacts_example {
        report.note(format!("{when}: {e}"));
    }
    if rec.not_online > 0 {
        report.note(format!(
            "{when}: {} sessions not logged in and synced",
            rec.not_online
        ));
    }
    bad
}

/// Picks the next change: a random user with nothing in flight; a logged-out one logs
/// in; a logged-in one adds a contact (4 in 10; half the time one who lists it), removes
/// one (4 in 10), changes capabilities (1 in 10) or logs out (1 in 10). With
/// `contacts_only`, only contact additions and removals (half each).
fn pick(
    co: &Coord,
    pop: &Population,
    rng: &mut Rng,
    next_id: &mut u64,
    epoch: u64,
    contacts_only: bool,
) -> Option<(usize, Cmd, Busy)> {
    let n = pop.len();
    let k = (0..64)
        .map(|_| rng.below(n))
        .find(|&k| co.busy[k].is_none())?;
    let s = co.sh.slot(k);
    match s.client.status() {
        Status::Idle if !contacts_only => return Some((k, Cmd::Login, Busy::Login)),
        Status::Online if s.client.is_synced() => {}
        _ => return None,
    }
    let listed: BTreeSet<u32> = s
        .client
        .contacts()
        .filter_map(|c| pop.index_of(c))
        .map(index)
        .collect();
    let current = s.client.capabilities().map(Capabilities::fingerprint);
    drop(s);
    *next_id += 1;
    let id = *next_id;
    let op = match rng.below(if contacts_only { 8 } else { 10 }) {
        0..=3 => {
            let back: Vec<usize> = if rng.below(2) == 0 {
                (0..n)
                    .filter(|&c| {
                        c != k
                            && co.ledger.model[c].contains(&index(k))
                            && !listed.contains(&index(c))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let c = if back.is_empty() {
                (0..8)
                    .map(|_| rng.below(n))
                    .find(|&c| c != k && !listed.contains(&index(c)))?
            } else {
                back[rng.below(back.len())]
            };
            Op::Add(c)
        }
        4..=7 => {
            let list: Vec<u32> = listed.iter().copied().collect();
            if list.is_empty() {
                return None;
            }
            Op::Remove(list[rng.below(list.len())] as usize)
        }
        8 => {
            let profiles = pop.profiles();
            let caps = (0..8)
                .map(|_| &profiles[rng.below(profiles.len())])
                .find(|c| Some(c.fingerprint()) != current)?
                .clone();
            Op::Caps(caps)
        }
        _ => Op::Logout,
    };
    let busy = match op {
        Op::Add(_) | Op::Remove(_) => Busy::Contact(id),
        Op::Caps(_) => Busy::Caps(id),
        Op::Logout => Busy::Logout(id),
    };
    Some((k, Cmd::Op { id, epoch, op }, busy))
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// The table, the figures, the targets and the verdict.
fn finish_report(
    report: &mut Report,
    co: &Coord,
    rounds: &[RoundFigures],
    table_mismatches: usize,
    initial_ms: Option<f64>,
    initial: &Recovery,
) {
    let sh = &co.sh;
    let violations = sh.total(|s| s.violations);
    let errors = sh.total(|s| s.errors);
    let retries = sh.connect_retries.load(Ordering::Relaxed);
    let sum = |f: fn(&RoundFigures) -> u64| rounds.iter().map(f).sum::<u64>();
    let (lost, unexpected) = (sum(|r| r.lost), sum(|r| r.unexpected));
    let (acked, in_doubt) = (sum(|r| r.acked), sum(|r| r.in_doubt));
    let mut recover_us: Vec<u64> = rounds
        .iter()
        .filter_map(|r| r.recover_ms)
        .map(|m| (m * 1000.0) as u64)
        .collect();
    let recover = Stats::of(&mut recover_us);
    if violations + errors > 0 || co.failed > 0 || co.unmatched > 0 {
        report.verified = false;
        report.note(format!(
            "{violations} violations, {errors} server errors, {} failed logins, {} unmatched answers",
            co.failed, co.unmatched
        ));
    }
    if co.drops_while_up > 0 {
        report.note(format!(
            "{} connections dropped while the server was up",
            co.drops_while_up
        ));
    }
    report.row([
        "round",
        "kill at",
        "ops",
        "acked (total)",
        "in doubt (applied)",
        "lost",
        "unexpected",
        "restart",
        "all logged in",
        "tables verified",
        "tables (mismatches)",
    ]);
    let opt = |m: Option<f64>| m.map_or("-".to_string(), |m| format!("{m:.0} ms"));
    for r in rounds {
        report.row([
            r.round.to_string(),
            format!("{:.0} ms", r.kill_at_ms),
            r.ops.to_string(),
            format!("{} ({})", r.acked, r.acked_total),
            format!("{} ({})", r.in_doubt, r.doubt_applied),
            r.lost.to_string(),
            r.unexpected.to_string(),
            format!("{:.0} ms", r.restart_ms),
            opt(r.all_logged_in_ms),
            opt(r.recover_ms),
            format!(
                "{} ({})",
                r.tables_checked,
                r.table_mismatches + r.contact_lists_differing
            ),
        ]);
    }
    report.figures = json!({
        "kills": rounds.len(),
        "acked_total": acked,
        "in_doubt_total": in_doubt,
        "lost_total": lost,
        "unexpected_total": unexpected,
        "missing_records_total": rounds.iter().map(|r| r.missing_records).sum::<usize>(),
        "table_mismatches_total": table_mismatches,
        "recover_ms": recover.ms_json(),
        "initial_tables_ms": initial_ms,
        "initial_tables_checked": initial.tables.checked,
        "connect_retries": retries,
        "connections_dropped_while_up": co.drops_while_up,
        "failed_logins": co.failed,
        "unmatched_answers": co.unmatched,
        "violations": violations,
        "server_errors": errors,
        "rounds": rounds,
    });
    report.target(
        "acknowledged contact changes lost",
        "0",
        lost.to_string(),
        lost == 0,
    );
    report.target(
        "unexpected contact changes",
        "0",
        unexpected.to_string(),
        unexpected == 0,
    );
    report.target(
        "restart -> every table verified, max",
        "<= 10 s",
        format!("{:.3} s", recover.max / 1e6),
        recover.n == rounds.len() && recover.max <= 10e6,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(pop: &Population) -> Vec<BTreeSet<u32>> {
        (0..pop.len())
            .map(|u| pop.contacts(u).iter().copied().collect())
            .collect()
    }

    #[test]
    fn acknowledged_changes_must_hold_and_doubts_go_either_way() {
        let pop = Population::generate(6, 2, 3).unwrap();
        let mut ledger = Ledger::new(&pop);
        let mut store = graph(&pop);
        let c = ledger.compare(&store, &pop);
        assert_eq!((c.lost, c.unexpected), (0, 0));

        // u0 removes its first contact (acknowledged) and adds a user it does not list
        // (in doubt); the store has the removal and not the addition.
        let first = *store[0].iter().next().unwrap();
        let other = (1..6u32).find(|v| !store[0].contains(v)).unwrap();
        ledger.ack(0, first, false);
        ledger.doubt(0, other, true);
        store[0].remove(&first);
        let c = ledger.compare(&store, &pop);
        assert_eq!((c.lost, c.unexpected), (0, 0), "{:?}", c.examples);
        assert_eq!((c.doubt_applied, c.doubt_not_applied), (0, 1));
        // The doubted addition applied is as right.
        store[0].insert(other);
        let c = ledger.compare(&store, &pop);
        assert_eq!((c.lost, c.unexpected, c.doubt_applied), (0, 0, 1));

        // The store without the acknowledged removal: lost.
        let mut forgot = store.clone();
        forgot[0].insert(first);
        let c = ledger.compare(&forgot, &pop);
        assert_eq!((c.lost, c.unexpected), (1, 0));
        assert!(c.examples[0].contains("lost acknowledged change"), "{c:?}");

        // A pair nobody touched that differs: unexpected.
        let mut odd = store.clone();
        let (u, v) = (
            3usize,
            (0..6u32)
                .find(|&v| v != 3 && !store[3].contains(&v))
                .unwrap(),
        );
        odd[u].insert(v);
        let c = ledger.compare(&odd, &pop);
        assert_eq!((c.lost, c.unexpected), (0, 1));

        // A later acknowledgement settles an earlier doubt; rebasing clears the round.
        ledger.ack(0, other, false);
        store[0].remove(&other);
        assert_eq!(ledger.compare(&store, &pop).lost, 0);
        store[0].insert(other);
        assert_eq!(ledger.compare(&store, &pop).lost, 1);
        ledger.rebase(store.clone());
        assert!(ledger.events.is_empty());
        assert_eq!(ledger.compare(&store, &pop).lost, 0);
    }
}
