//! Many client sessions in one process: one tokio task per session moves bytes between
//! its TCP socket and its [`Client`], time to the client's ping timer, and commands from
//! the scenario to the client; it records when things happened. Every protocol decision
//! is the core's.
//!
//! A session's state lives in a [`Slot`] behind a mutex that the task holds only while
//! it calls into the client (never across an `.await`), so the scenario can inspect
//! every client's table while the sessions run. Milestones (logged in, synced, change
//! acknowledged, logged out, failed) go to the scenario as [`Note`]s on one channel;
//! table changes are counted in the slot and reported to an optional [`Observer`].

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use precall_protocol::client::Status;
use precall_protocol::{Capabilities, Client, ClientConfig, ClientEvent, SessionId, Time};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::population::Population;

/// Bytes read from a socket at once (one buffer per thread, shared by its sessions).
const READ_BUF: usize = 64 * 1024;

thread_local! {
    static READ: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

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

/// What a scenario asks a session to do.
#[derive(Debug)]
pub enum Cmd {
    /// Connect and log in (ignored while connected).
    Login,
    /// Log out; the connection closes when the server confirms.
    Logout,
    /// Change this terminal's capabilities.
    UpdateCaps(Capabilities),
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
    /// The server.
    pub addr: SocketAddr,
    /// The population the sessions belong to.
    pub pop: Arc<Population>,
    /// One slot per session, by local index.
    pub slots: Vec<Arc<Mutex<Slot>>>,
    /// Presence messages (`online` and `offline`) received by all sessions.
    pub deliveries: AtomicU64,
    start: Instant,
    notes: mpsc::UnboundedSender<(usize, Note, Instant)>,
    observer: Option<Arc<dyn Observer>>,
}

/// The scenario's end of the milestones channel.
pub type Notes = mpsc::UnboundedReceiver<(usize, Note, Instant)>;

impl Hub {
    /// Slots for the given users (local index `k` is user `users[k]`), not connected.
    pub fn new(
        addr: SocketAddr,
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
        let hub = Arc::new(Self {
            addr,
            pop,
            slots,
            deliveries: AtomicU64::new(0),
            start: Instant::now(),
            notes,
            observer,
        });
        (hub, rx)
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

    /// The core's clock: milliseconds since the hub was made.
    fn now(&self) -> Time {
        Time(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn instant(&self, t: Time) -> Instant {
        self.start + Duration::from_millis(t.0)
    }

    fn note(&self, local: usize, note: Note) {
        // The scenario stopped listening: nothing left to tell.
        let _ = self.notes.send((local, note, Instant::now()));
    }
}

/// The task of one session: connects on [`Cmd::Login`], runs the session until it
/// ends, and waits for the next login.
async fn run(hub: Arc<Hub>, local: usize, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    loop {
        match cmds.recv().await {
            Some(Cmd::Login) => {}
            Some(Cmd::Close) | None => return,
            Some(other) => {
                tracing::debug!(local, ?other, "not connected: command ignored");
                continue;
            }
        }
        hub.slot(local).connect_started = Some(Instant::now());
        let stream = match TcpStream::connect(hub.addr).await {
            Ok(s) => s,
            Err(e) => {
                let why = format!("connect: {e}");
                hub.slot(local).failure = Some(why.clone());
                hub.note(local, Note::Failed(why));
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay");
        }
        if !session(&hub, local, stream, &mut cmds).await {
            return;
        }
    }
}

/// One connection's life. Returns `false` if the task must end ([`Cmd::Close`]).
async fn session(
    hub: &Hub,
    local: usize,
    mut stream: TcpStream,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
) -> bool {
    {
        let mut slot = hub.slot(local);
        let user = slot.user;
        let (name, password, with) = (
            hub.pop.name(user),
            hub.pop.password(user),
            hub.pop.login_with(user),
        );
        slot.failure = None;
        slot.login_sent = Some(Instant::now());
        if let Err(e) = slot.client.login(name, password, with, hub.now()) {
            let why = format!("login refused locally: {e}");
            slot.failure = Some(why.clone());
            drop(slot);
            hub.note(local, Note::Failed(why));
            return true;
        }
    }
    let mut was_online = false;
    loop {
        if !flush(hub, local, &mut stream).await {
            hub.slot(local).client.connection_lost(hub.now());
        } else {
            let ping_at = hub
                .slot(local)
                .client
                .poll_timeout()
                .map(|t| hub.instant(t));
            tokio::select! {
                ready = stream.readable() => {
                    let now = hub.now();
                    match ready.and_then(|()| read_into(hub, local, &stream, now)) {
                        Ok(true) => {}
                        Ok(false) => hub.slot(local).client.connection_lost(now),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            tracing::debug!(local, error = %e, "read failed");
                            hub.slot(local).client.connection_lost(now);
                        }
                    }
                }
                cmd = cmds.recv() => {
                    let now = hub.now();
                    let mut slot = hub.slot(local);
                    let result = match cmd {
                        Some(Cmd::Logout) => slot.client.logout(now),
                        Some(Cmd::UpdateCaps(caps)) => slot.client.update_caps(caps, now).map(drop),
                        Some(Cmd::Login) => Ok(()),
                        Some(Cmd::Close) | None => return false,
                    };
                    if let Err(e) = result {
                        tracing::warn!(local, user = slot.user, error = %e, "command refused");
                    }
                }
                () = sleep_until(ping_at.unwrap_or_else(Instant::now)), if ping_at.is_some() => {
                    hub.slot(local).client.handle_timeout(hub.now());
                }
            }
        }
        if drain(hub, local, &mut was_online) {
            // The session is over; dropping the stream closes the connection.
            return true;
        }
    }
}

/// Reads what the socket holds into the client. `Ok(false)` at end of stream.
fn read_into(hub: &Hub, local: usize, stream: &TcpStream, now: Time) -> std::io::Result<bool> {
    READ.with(|buf| {
        let mut buf = buf.borrow_mut();
        let n = stream.try_read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        let mut slot = hub.slot(local);
        if let Err(e) = slot.client.receive(&buf[..n], now) {
            // The core ended the session (framing error, unsupported version).
            tracing::warn!(local, error = %e, "session ended by the core");
        }
        Ok(true)
    })
}

/// Writes every frame the client queued. `false` if the connection failed.
async fn flush(hub: &Hub, local: usize, stream: &mut TcpStream) -> bool {
    let bytes: Vec<u8> = {
        let mut slot = hub.slot(local);
        let mut out = Vec::new();
        while let Some(frame) = slot.client.poll_transmit() {
            out.extend_from_slice(&frame);
        }
        out
    };
    if bytes.is_empty() {
        return true;
    }
    match stream.write_all(&bytes).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(local, error = %e, "write failed");
            false
        }
    }
}

/// Handles the client's events. Returns whether the session is over.
fn drain(hub: &Hub, local: usize, was_online: &mut bool) -> bool {
    let at = Instant::now();
    let mut notes = Vec::new();
    let mut slot = hub.slot(local);
    let mut presence = 0;
    while let Some(ev) = slot.client.poll_event() {
        match &ev {
            ClientEvent::LoggedIn { session } => {
                *was_online = true;
                slot.in_snapshot = true;
                slot.logged_in = Some(at);
                notes.push(Note::LoggedIn(*session));
            }
            ClientEvent::Synced => {
                slot.in_snapshot = false;
                notes.push(Note::Synced);
            }
            ClientEvent::PeerOnline { .. } | ClientEvent::PeerUpdated { .. } => {
                slot.online_msgs += 1;
                slot.last_change = Some(at);
                presence += 1;
            }
            ClientEvent::PeerOffline { .. } => {
                slot.offline_msgs += 1;
                slot.last_change = Some(at);
                presence += 1;
            }
            ClientEvent::CapsAcknowledged => notes.push(Note::CapsAck),
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
                if *was_online {
                    notes.push(Note::LoggedOut);
                } else {
                    let why = slot
                        .failure
                        .clone()
                        .unwrap_or_else(|| "connection closed before login_ok".into());
                    notes.push(Note::Failed(why));
                }
            }
            _ => {}
        }
        if let Some(obs) = &hub.observer {
            obs.on_event(slot.user, &slot.client, &ev, slot.in_snapshot, at);
        }
    }
    // The connection is over once the session ended or was detached (a resume needs
    // a new connection).
    let over = matches!(slot.client.status(), Status::Idle | Status::Detached);
    drop(slot);
    if presence > 0 {
        hub.deliveries.fetch_add(presence, Ordering::Relaxed);
    }
    for n in notes {
        hub.note(local, n);
    }
    over
}
