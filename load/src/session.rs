//! Many client sessions in one process: one tokio task per session runs the shared
//! driver ([`precall_client::Driver`]: the socket, the clock, the ping timer) and moves
//! commands from the scenario to its [`Client`]; it records when things happened.
//! Every protocol decision is the core's.
//!
//! A session's state lives in a [`Slot`] behind a mutex that the task holds only while
//! it calls into the client (never across an `.await`), so the scenario can inspect
//! every client's table while the sessions run. Milestones (logged in, synced, change
//! acknowledged, logged out, failed) go to the scenario as [`Note`]s on one channel;
//! table changes are counted in the slot and reported to an optional [`Observer`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use precall_client::{Clock, Driver, Event, Login};
use precall_protocol::client::Status;
use precall_protocol::{Capabilities, Client, ClientConfig, ClientEvent, SessionId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::population::Population;

/// One session's client and what the load tool recorded about it.
pub struct Slot {
    /// The core's client.
    pub client: Client,
    /// Index of its user in the population.
    pub user: usize,
    /// When the last connection attempt started.
    pub connect_started: Option<Instant>,
    /// When the last `login` was queued (right after the connection was made).
    pub login_sent: Option<Instant>,
    /// When `login_ok` arrived (the last login's).
    pub logged_in: Option<Instant>,
    /// When the last table change (an entry added, updated or removed) arrived.
    pub last_change: Option<Instant>,
    /// When the table was found to hold exactly the expected entries (set by the
    /// scenario: the time of the change that completed it).
    pub complete: Option<Instant>,
    /// `online` messages received (new and updated entries).
    pub online_msgs: u64,
    /// `offline` messages received that removed an entry.
    pub offline_msgs: u64,
    /// Messages the core refused (must stay 0).
    pub violations: u64,
    /// `error` messages from the server (must stay 0).
    pub errors: u64,
    /// Why the last login failed, if it did.
    pub failure: Option<String>,
    /// Between `LoggedIn` and `Synced`: table changes are the login snapshot.
    in_snapshot: bool,
}

impl AsMut<Client> for Slot {
    fn as_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// What a scenario asks a session to do.
#[derive(Debug)]
pub enum Cmd {
    /// Connect and log in (ignored while connected).
    Login,
    /// Log out; the connection closes when the server confirms.
    Logout,
    /// Change this terminal's capabilities.
    UpdateCaps(Capabilities),
    /// Hold the bytes read while this session makes no change (`true`): they reach the
    /// client, each read with its arrival time, at `Hold(false)`, when the session is
    /// told to make a change (before the change), or when the connection is lost.
    /// Observers then cost a read per wake-up while a scenario measures the server.
    Hold(bool),
    /// Drop the connection and end the task.
    Close,
}

/// A milestone of one session, for the scenario.
#[derive(Clone, Debug)]
pub enum Note {
    /// `login_ok` arrived.
    LoggedIn(SessionId),
    /// The login snapshot is complete.
    Synced,
    /// The server acknowledged a capability change.
    CapsAck,
    /// The session ended after it had been logged in.
    LoggedOut,
    /// The login did not succeed (connection refused or lost, login refused).
    Failed(String),
}

/// Sees every client event as it is drained (used by churn to match pushes to the
/// changes that caused them).
pub trait Observer: Send + Sync {
    /// `client` has just produced `event`, from bytes handed to it at `at`;
    /// `snapshot` says the event belongs to the client's login snapshot (between
    /// `LoggedIn` and `Synced`) rather than to a push.
    fn on_event(
        &self,
        user: usize,
        client: &Client,
        event: &ClientEvent,
        snapshot: bool,
        at: Instant,
    );
}

/// The sessions of one process.
pub struct Hub {
    /// The server, or the nodes of a cluster: user `i` connects to `addrs[i % n]`.
    pub addrs: Vec<SocketAddr>,
    /// The population the sessions belong to.
    pub pop: Arc<Population>,
    /// One slot per session, by local index.
    pub slots: Vec<Arc<Mutex<Slot>>>,
    /// Presence messages (`online` and `offline`) received by all sessions.
    pub deliveries: AtomicU64,
    /// Bytes read by all sessions, held or not (traffic while observers hold it).
    pub bytes_read: Arc<AtomicU64>,
    clock: Clock,
    notes: mpsc::UnboundedSender<(usize, Note, Instant)>,
    observer: Option<Arc<dyn Observer>>,
}

/// The scenario's end of the milestones channel.
pub type Notes = mpsc::UnboundedReceiver<(usize, Note, Instant)>;

impl Hub {
    /// Slots for the given users (local index `k` is user `users[k]`), not connected.
    pub fn new(
        addrs: Vec<SocketAddr>,
        pop: Arc<Population>,
        users: &[usize],
        observer: Option<Arc<dyn Observer>>,
    ) -> (Arc<Self>, Notes) {
        let (notes, rx) = mpsc::unbounded_channel();
        let config = ClientConfig::default();
        let slots = users
            .iter()
            .map(|&user| {
                Arc::new(Mutex::new(Slot {
                    client: Client::new(config.clone()),
                    user,
                    connect_started: None,
                    login_sent: None,
                    logged_in: None,
                    last_change: None,
                    complete: None,
                    online_msgs: 0,
                    offline_msgs: 0,
                    violations: 0,
                    errors: 0,
                    failure: None,
                    in_snapshot: false,
                }))
            })
            .collect();
        assert!(!addrs.is_empty(), "a hub needs a server address");
        let hub = Arc::new(Self {
            addrs,
            pop,
            slots,
            deliveries: AtomicU64::new(0),
            bytes_read: Arc::new(AtomicU64::new(0)),
            clock: Clock::new(),
            notes,
            observer,
        });
        (hub, rx)
    }

    /// Where user `user` connects: node `user % n`.
    pub fn addr_of(&self, user: usize) -> SocketAddr {
        self.addrs[user % self.addrs.len()]
    }

    /// Starts the task of session `local`; it waits for [`Cmd::Login`].
    pub fn spawn(self: &Arc<Self>, local: usize) -> mpsc::UnboundedSender<Cmd> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(self.clone(), local, rx));
        tx
    }

    /// Locks a slot (a poisoned lock means a session task panicked: its data is still
    /// what it recorded).
    pub fn slot(&self, local: usize) -> MutexGuard<'_, Slot> {
        self.slots[local]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sums a counter over all slots.
    pub fn total(&self, f: impl Fn(&Slot) -> u64) -> u64 {
        (0..self.slots.len()).map(|k| f(&self.slot(k))).sum()
    }

    fn note(&self, local: usize, note: Note) {
        // The scenario stopped listening: nothing left to tell.
        let _ = self.notes.send((local, note, Instant::now()));
    }
}

/// The task of one session: connects on [`Cmd::Login`], runs the session until it
/// ends, and waits for the next login.
async fn run(hub: Arc<Hub>, local: usize, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let user = hub.slot(local).user;
    let login = Login {
        user: hub.pop.name(user),
        password: hub.pop.password(user),
        with: hub.pop.login_with(user),
    };
    let mut driver = Driver::new(
        hub.slots[local].clone(),
        hub.clock,
        hub.addr_of(user).to_string(),
    )
    .with_login(login);
    driver.count_reads(hub.bytes_read.clone());
    let mut hold = false;
    loop {
        match cmds.recv().await {
            Some(Cmd::Login) => {}
            Some(Cmd::Close) | None => return,
            Some(Cmd::Hold(on)) => {
                hold = on;
                continue;
            }
            Some(other) => {
                tracing::debug!(local, ?other, "not connected: command ignored");
                continue;
            }
        }
        hub.slot(local).connect_started = Some(Instant::now());
        if let Err(why) = driver.connect().await {
            hub.slot(local).failure = Some(why.clone());
            hub.note(local, Note::Failed(why));
            continue;
        }
        if !session(&hub, local, &mut driver, &mut cmds, &mut hold).await {
            return;
        }
    }
}

/// One connection's life. Returns `false` if the task must end ([`Cmd::Close`]).
/// `hold` is whether the scenario wants the bytes held while the session makes no
/// change ([`Cmd::Hold`]).
async fn session(
    hub: &Hub,
    local: usize,
    driver: &mut Driver<Arc<Mutex<Slot>>>,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    hold: &mut bool,
) -> bool {
    {
        let mut slot = hub.slot(local);
        slot.failure = None;
        slot.login_sent = Some(Instant::now());
    }
    if let Err(e) = driver.login() {
        let why = format!("login refused locally: {e}");
        hub.slot(local).failure = Some(why.clone());
        hub.note(local, Note::Failed(why));
        driver.close();
        return true;
    }
    let mut was_online = false;
    // A change of this session is under way (the login first): its answers must reach
    // the client as they come.
    let mut acting = true;
    driver.hold(false);
    loop {
        tokio::select! {
            ev = driver.next() => match ev {
                // The session is over and its connection closed.
                None => return true,
                Some(ev) => {
                    if handle(hub, local, driver, ev, &mut was_online, &mut acting) {
                        driver.hold(*hold && !acting);
                    }
                }
            },
            cmd = cmds.recv() => {
                let cmd = match cmd {
                    Some(Cmd::Close) | None => return false,
                    Some(Cmd::Hold(on)) => {
                        *hold = on;
                        driver.hold(on && !acting);
                        continue;
                    }
                    Some(cmd) => cmd,
                };
                // What arrived before the change reaches the client before it.
                acting = true;
                driver.hold(false);
                while let Some(ev) = driver.poll() {
                    handle(hub, local, driver, ev, &mut was_online, &mut acting);
                }
                acting = true;
                let now = driver.clock().now();
                let mut slot = hub.slot(local);
                let result = match cmd {
                    Cmd::Logout => slot.client.logout(now),
                    Cmd::UpdateCaps(caps) => slot.client.update_caps(caps, now).map(drop),
                    Cmd::Login | Cmd::Hold(_) | Cmd::Close => Ok(()),
                };
                if let Err(e) = result {
                    tracing::warn!(local, user = slot.user, error = %e, "command refused");
                    acting = false;
                    drop(slot);
                    driver.hold(*hold);
                }
            }
        }
    }
}

/// Handles one event of the driver. Returns whether a change of this session just
/// completed (`acting` went from true to false).
fn handle(
    hub: &Hub,
    local: usize,
    driver: &mut Driver<Arc<Mutex<Slot>>>,
    ev: Event,
    was_online: &mut bool,
    acting: &mut bool,
) -> bool {
    let Event::Client(ev) = ev else {
        // A drop: the core's events follow.
        return false;
    };
    let done = matches!(
        ev,
        ClientEvent::Synced | ClientEvent::CapsAcknowledged { .. } | ClientEvent::LoggedOut
    );
    let at = driver.received_at();
    if on_event(hub, local, ev, at, was_online) {
        // Dropping the connection; the rest of the events follow.
        driver.close();
    }
    let completed = done && *acting;
    if done {
        *acting = false;
    }
    completed
}

/// Handles one client event (from bytes handed to the client at `at`). Returns whether
/// the session is over (ended, or detached: a resume needs a new connection).
fn on_event(hub: &Hub, local: usize, ev: ClientEvent, at: Instant, was_online: &mut bool) -> bool {
    let mut note = None;
    let mut presence = false;
    let mut slot = hub.slot(local);
    match &ev {
        ClientEvent::LoggedIn { session } => {
            *was_online = true;
            slot.in_snapshot = true;
            slot.logged_in = Some(at);
            note = Some(Note::LoggedIn(*session));
        }
        ClientEvent::Synced => {
            slot.in_snapshot = false;
            note = Some(Note::Synced);
        }
        ClientEvent::PeerOnline { .. } | ClientEvent::PeerUpdated { .. } => {
            slot.online_msgs += 1;
            slot.last_change = Some(at);
            presence = true;
        }
        ClientEvent::PeerOffline { .. } => {
            slot.offline_msgs += 1;
            slot.last_change = Some(at);
            presence = true;
        }
        ClientEvent::CapsAcknowledged { .. } => note = Some(Note::CapsAck),
        ClientEvent::ServerError { code, .. } => {
            slot.errors += 1;
            tracing::warn!(user = slot.user, ?code, "server error");
            slot.failure = Some(format!("server error {code:?}"));
        }
        ClientEvent::Violation(v) => {
            slot.violations += 1;
            tracing::warn!(user = slot.user, violation = %v, "the core refused a message");
        }
        ClientEvent::LoggedOut => {
            note = Some(if *was_online {
                Note::LoggedOut
            } else {
                Note::Failed(
                    slot.failure
                        .clone()
                        .unwrap_or_else(|| "connection closed before login_ok".into()),
                )
            });
        }
        _ => {}
    }
    if let Some(obs) = &hub.observer {
        obs.on_event(slot.user, &slot.client, &ev, slot.in_snapshot, at);
    }
    let over = matches!(slot.client.status(), Status::Idle | Status::Detached);
    drop(slot);
    if presence {
        hub.deliveries.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(n) = note {
        hub.note(local, n);
    }
    over
}
