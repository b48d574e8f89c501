//! The server state machine (spec section "Server state machine").
//!
//! [`Server`] owns every connection's framing, every session, the in-memory contact
//! lists of online users and every call; it decides every message the server sends.
//! It performs no I/O: the embedder feeds it events ([`Server::connect`],
//! [`Server::receive`], [`Server::disconnect`], [`Server::complete_auth`],
//! [`Server::handle_timeout`], [`Server::change_roster`]) and drains
//! [`Server::poll_event`] for frames to write, connections to close, credential checks
//! to run and roster changes to persist.
//!
//! Credential checks may be slow (a password hash), so the core never performs them:
//! it emits [`ServerEvent::Authenticate`] and continues serving everyone else until the
//! embedder calls [`Server::complete_auth`] with the verdict.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use crate::caps::{CallDigest, Capabilities};
use crate::codec::{
    decode_message, encode_frame, encode_payload, FrameDecoder, DEFAULT_MAX_FRAME, HEADER_LEN,
    MIN_MAX_FRAME,
};
use crate::error::{DecodeError, ErrorCode, FrameError};
use crate::ids::{CallId, ConnId, Endpoint, Password, ReqId, SessionId, TerminalId, UserId};
use crate::message::{
    ClientMessage, EndReason, LoginWith, Presence, ServerMessage, PROTOCOL_VERSION,
};
use crate::resume::{ResumeConfig, ResumeToken};
use crate::time::{millis, Time};

/// The largest contact list the protocol allows: with it, the largest `login_ok`
/// (500 names of 64 bytes) still fits in a frame of [`crate::codec::MIN_MAX_FRAME`].
pub const MAX_CONTACTS: usize = 500;

/// Server limits and timers. Every field has a spec-recommended default.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerConfig {
    /// Largest frame payload accepted; values below [`crate::codec::MIN_MAX_FRAME`]
    /// act as that minimum.
    pub max_frame: u32,
    /// A logged-in connection that sends no complete frame for this long is closed
    /// (`idle_timeout`) and its session ends as if dropped.
    pub idle_timeout: Duration,
    /// A connection that has not completed login within this long is closed.
    pub login_timeout: Duration,
    /// Largest number of sessions (terminals online at once) per user.
    pub max_sessions_per_user: usize,
    /// Largest contact list; values above [`MAX_CONTACTS`] act as [`MAX_CONTACTS`].
    pub max_contacts: usize,
    /// Largest number of calls, ringing or established, per session.
    pub max_calls_per_session: usize,
    /// A call not accepted within this long ends with reason `timeout`.
    pub ring_timeout: Duration,
    /// Abuse limits (spec section 13.6).
    pub limits: Limits,
    /// Resumable sessions (spec section "Resumable sessions").
    pub resume: ResumeConfig,
}

/// Abuse limits (spec section 13.6). A refusal is an error with its own code and, where
/// waiting helps, `retry_after_ms`; the frame rate and unstored changes pause the
/// connection's input instead. Zero disables a count limit.
///
/// The defaults are the ones spec section 13.6 lists with the reason for each: safe for
/// a server on a real network. A load test or a deployment behind a proxy that needs
/// more sets its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Connections open at once, in total (`too_many_connections`).
    pub max_connections: usize,
    /// Connections open at once from one source (`too_many_connections`): an IPv4
    /// address, or the /64 prefix of an IPv6 address.
    pub max_connections_per_source: usize,
    /// New connections accepted per second, in total: a reconnect storm beyond it is
    /// told to come back later (`rate_limited`). Off by default: one flooding source
    /// could spend it and keep everyone else out (spec section 13.6).
    pub max_accepts_per_second: u32,
    /// New connections accepted per second from one source; beyond, they are told to
    /// come back later (`rate_limited`).
    pub max_accepts_per_second_per_source: u32,
    /// Complete frames per second the server takes from one connection; beyond, it
    /// takes no more until the second is over (the connection's input pauses, as with
    /// [`Limits::max_unstored_changes`]).
    pub max_frames_per_second: u32,
    /// Failed logins per account within `login_failure_window` before further
    /// attempts for it are refused without a credential check (`login_throttled`).
    pub max_login_failures_per_account: u32,
    /// Failed logins per source within `login_failure_window`.
    pub max_login_failures_per_source: u32,
    /// The window failed logins are counted in, and how long a throttle lasts.
    pub login_failure_window: Duration,
    /// Largest capability document (its canonical JSON) at login or in `update_caps`
    /// (`caps_too_large`).
    pub max_caps_bytes: usize,
    /// `update_caps` one session may make within `caps_update_window`; one more is
    /// refused, not applied, with the non-fatal `caps_throttled` and `retry_after_ms`.
    pub max_caps_updates: u32,
    /// The window `update_caps` are counted in.
    pub caps_update_window: Duration,
    /// Credential checks from one source queued or running at once; a login beyond it
    /// is refused with `rate_limited` before any check (0: no limit).
    pub max_auth_checks_per_source: usize,
    /// Credential checks handed to the embedder at once ([`ServerEvent::Authenticate`]
    /// not yet answered); more wait in the server and are handed out one source at a
    /// time, in turn, so that one source cannot queue ahead of the others (0: every
    /// check at once, first come first served).
    pub max_auth_checks_running: usize,
    /// Contact-list changes of one connection that may wait for the store at once
    /// (spec section 9.6); at the limit the server takes no more input from the
    /// connection until one is stored. At least 1.
    pub max_unstored_changes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_connections_per_source: 256,
            max_accepts_per_second: 0,
            max_accepts_per_second_per_source: 64,
            max_frames_per_second: 100,
            max_login_failures_per_account: 10,
            max_login_failures_per_source: 100,
            login_failure_window: Duration::from_secs(60),
            max_caps_bytes: 4096,
            max_caps_updates: 6,
            caps_update_window: Duration::from_secs(60),
            max_auth_checks_per_source: 8,
            max_auth_checks_running: 4,
            max_unstored_changes: 64,
        }
    }
}

/// A fixed-window counter: how many events since `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Window {
    start: Time,
    count: u32,
}

impl Window {
    /// Counts one event at `now` in windows of `len`; returns the count so far.
    fn hit(&mut self, now: Time, len: Duration) -> u32 {
        if now >= self.start.after(len) {
            *self = Window {
                start: now,
                count: 0,
            };
        }
        self.count = self.count.saturating_add(1);
        self.count
    }

    /// The count of the window current at `now`, and how long until it ends.
    fn current(&self, now: Time, len: Duration) -> (u32, Duration) {
        let end = self.start.after(len);
        if now >= end {
            (0, Duration::ZERO)
        } else {
            (self.count, end.since(now))
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(30),
            max_sessions_per_user: 8,
            max_contacts: MAX_CONTACTS,
            max_calls_per_session: 4,
            ring_timeout: Duration::from_secs(60),
            limits: Limits::default(),
            resume: ResumeConfig::default(),
        }
    }
}

/// Identifies one pending credential check.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AuthTicket(pub u64);

/// A credential check the embedder must run, then answer with
/// [`Server::complete_auth`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AuthRequest {
    /// Echo this in [`Server::complete_auth`].
    pub ticket: AuthTicket,
    /// The connection logging in.
    pub conn: ConnId,
    /// The account name.
    pub user: UserId,
    /// The password to verify.
    pub password: Password,
    /// For a login by terminal identifier (claim C8), the identifier whose registered
    /// capabilities the embedder must look up for this user.
    pub terminal: Option<TerminalId>,
}

/// What the embedder's credential store says about an [`AuthRequest`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum AuthVerdict {
    /// The credentials are good.
    Accepted {
        /// The user's stored contact list.
        contacts: Vec<UserId>,
        /// For a login by terminal identifier: the capabilities registered for that
        /// identifier and this user, or `None` if there are none.
        registered: Option<Capabilities>,
    },
    /// Unknown user or wrong password (indistinguishable on the wire).
    Rejected,
    /// The store failed; the client gets `internal`.
    Failed,
}

/// Identifies one contact-list change waiting for the embedder's store.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct StoreTicket(pub u64);

/// A contact-list change the embedder must make durable, then answer with
/// [`Server::complete_store`]. Tickets are issued in increasing order; the embedder
/// must store the changes in that order (it may commit several in one transaction).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StoreRequest {
    /// Echo this in [`Server::complete_store`].
    pub ticket: StoreTicket,
    /// Whose contact list.
    pub user: UserId,
    /// The contact added or removed.
    pub contact: UserId,
    /// `true` if added. Storing is idempotent: the list may already be as asked.
    pub added: bool,
}

/// What the embedder's store says about a [`StoreRequest`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum StoreOutcome {
    /// The change is durable.
    Stored,
    /// The change cannot be stored (for example the account was removed meanwhile):
    /// it is not applied and the request is answered with `not_stored`.
    Failed,
}

/// Something the embedder must do.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// Write this frame to the connection, after everything queued before it.
    Transmit {
        /// The connection.
        conn: ConnId,
        /// A complete frame. Presence pushes share one buffer among all recipients.
        frame: Bytes,
    },
    /// Flush what was queued for the connection, then close it. The server has already
    /// forgotten it; later events for it are ignored.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Run a credential check.
    Authenticate(AuthRequest),
    /// The connection of a pending credential check closed: skip the check if it has not
    /// run yet (its verdict would be discarded anyway).
    AuthCancelled(AuthTicket),
    /// Store a contact-list change a user asked for, then report the outcome with
    /// [`Server::complete_store`]. The change takes effect (and is acknowledged) only
    /// then, so an acknowledged change is durable (spec section 9.6).
    Store(StoreRequest),
    /// A session began (for logs and metrics).
    SessionStarted {
        /// The connection.
        conn: ConnId,
        /// The terminal.
        endpoint: Endpoint,
    },
    /// A session ended (for logs and metrics). `conn` is the connection it last had.
    SessionEnded {
        /// The connection.
        conn: ConnId,
        /// The terminal.
        endpoint: Endpoint,
    },
    /// A session's connection dropped; the session stays resumable for the grace
    /// period (for logs and metrics).
    SessionDetached {
        /// The connection that dropped.
        conn: ConnId,
        /// The terminal.
        endpoint: Endpoint,
    },
    /// A session was resumed on a new connection (for logs and metrics).
    SessionResumed {
        /// The new connection.
        conn: ConnId,
        /// The terminal.
        endpoint: Endpoint,
        /// Whether the client got a full snapshot rather than only what it missed.
        snapshot: bool,
        /// How many frames the catch-up held (the snapshot's `online` frames, or the
        /// missed table frames).
        frames: usize,
    },
}

/// Misuse of the [`Server`] API by the embedder (never caused by a peer's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServerError {
    /// [`Server::connect`] with an identifier already in use.
    #[error("connection {0} is already open")]
    DuplicateConn(ConnId),
    /// [`Server::complete_auth`] with a ticket that is not pending (already answered,
    /// or the connection went away): nothing happened.
    #[error("no pending credential check {0:?}")]
    UnknownTicket(AuthTicket),
    /// [`Server::change_roster`] would exceed the user's contact-list limit.
    #[error("contact list of {0} is full")]
    RosterFull(UserId),
    /// [`Server::complete_store`] with a ticket that is not pending.
    #[error("no pending store request {0:?}")]
    UnknownStoreTicket(StoreTicket),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ConnState {
    AwaitingLogin,
    Authenticating {
        ticket: AuthTicket,
        user: UserId,
        with: LoginWith,
    },
    Online(SessionId),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Conn {
    state: ConnState,
    decoder: FrameDecoder,
    deadline: Time,
    /// The peer's address, if the embedder gave it.
    source: Option<IpAddr>,
    /// Complete frames received in the current second.
    frames: Window,
    /// Contact-list changes of this connection waiting for the store.
    unstored: usize,
    /// A decoded message that must wait until this connection's changes are stored
    /// (it is processed in order, after their acknowledgements).
    stalled: Option<ClientMessage>,
    /// Bytes received while input is paused, not yet decoded.
    inbox: Vec<u8>,
    /// Until when input is paused because the connection sent
    /// [`Limits::max_frames_per_second`] frames in the current second.
    throttled: Option<Time>,
}

impl Conn {
    /// Whether this connection's input waits: for the store (a request stalled behind
    /// its changes, or `max_unstored` changes waiting), or for its frame rate.
    fn paused(&self, max_unstored: usize) -> bool {
        self.stalled.is_some() || self.unstored >= max_unstored || self.throttled.is_some()
    }
}

/// A contact-list change waiting for the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Unstored {
    conn: ConnId,
    req: ReqId,
    user: UserId,
    contact: UserId,
    added: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Session {
    user: UserId,
    /// The connection, or when the detached session's grace ends.
    link: Link,
    /// The resume credential, if resumption is enabled.
    token: Option<ResumeToken>,
    /// Table frames sent since the client's table was last complete.
    seq: u64,
    /// The latest of them (at most `resume.log_frames`), numbered, for a resume.
    log: VecDeque<(u64, Bytes)>,
    caps: Capabilities,
    terminal: Option<TerminalId>,
    /// The `online` push for this terminal, encoded once and shared by every watcher
    /// and every snapshot.
    online_frame: Bytes,
    calls: BTreeSet<CallId>,
    /// `update_caps` applied in the current `caps_update_window`.
    caps_updates: Window,
}

/// Whether a session has a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Link {
    /// Written to on this connection.
    Attached(ConnId),
    /// The connection `last` dropped; resumable until `until`.
    Detached { last: ConnId, until: Time },
}

impl Link {
    /// The connection, if attached.
    fn conn(self) -> Option<ConnId> {
        match self {
            Link::Attached(c) => Some(c),
            Link::Detached { .. } => None,
        }
    }

    /// The connection it has or last had.
    fn last(self) -> ConnId {
        match self {
            Link::Attached(c) | Link::Detached { last: c, .. } => c,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OnlineUser {
    contacts: BTreeSet<UserId>,
    sessions: BTreeSet<SessionId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum CallState {
    /// Relayed to the callee; `caps_sent` if the caller's capabilities went with it.
    Ringing {
        caps_sent: bool,
    },
    /// The callee asked for the caller's capabilities.
    AwaitingCallerCaps,
    Established,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Call {
    caller: SessionId,
    callee: SessionId,
    digest: CallDigest,
    state: CallState,
    /// Ring deadline, until the call is established.
    deadline: Option<Time>,
}

/// The fields of a `call` request.
struct CallRequest {
    req: ReqId,
    to: Endpoint,
    digest: CallDigest,
    capabilities: Option<Capabilities>,
}

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    /// Login timeout or idle timeout of a connection.
    Conn(ConnId),
    /// Ring timeout of a call.
    Call(CallId),
    /// End of a detached session's grace.
    Detached(SessionId),
    /// End of the second in which a connection sent its maximum of frames.
    Throttle(ConnId),
}

/// A read-only view of one session, for embedders' status pages and for checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView<'a> {
    /// The session's terminal.
    pub endpoint: Endpoint,
    /// Its connection, or `None` while detached (resumable, still online for watchers).
    pub conn: Option<ConnId>,
    /// Its current capabilities.
    pub capabilities: &'a Capabilities,
    /// The registered terminal identifier it logged in with, if any.
    pub terminal: Option<&'a TerminalId>,
}

/// The server state machine. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Server {
    config: ServerConfig,
    conns: BTreeMap<ConnId, Conn>,
    sessions: BTreeMap<SessionId, Session>,
    users: BTreeMap<UserId, OnlineUser>,
    calls: BTreeMap<CallId, Call>,
    tickets: BTreeMap<AuthTicket, ConnId>,
    /// Credential checks pending (waiting or running) per source address.
    checks_per_source: BTreeMap<IpAddr, usize>,
    /// Credential checks not yet handed to the embedder: one non-empty queue per
    /// source with checks waiting, in the order the sources' turns come.
    auth_waiting: VecDeque<(Option<IpAddr>, VecDeque<AuthRequest>)>,
    /// Checks handed to the embedder and not yet answered.
    auth_running: BTreeSet<AuthTicket>,
    /// Resume tokens of live sessions.
    tokens: BTreeMap<ResumeToken, SessionId>,
    deadlines: BTreeSet<(Time, Timer)>,
    next_session: u64,
    next_call: u64,
    next_ticket: u64,
    out: VecDeque<ServerEvent>,
    /// Open connections per source address.
    per_source: BTreeMap<IpAddr, usize>,
    /// Connections accepted in the current second.
    accepts: Window,
    /// Connections accepted in the current second per source; emptied when the second
    /// ends, so it holds at most the sources that connected within one second.
    accepts_by_source: BTreeMap<IpAddr, u32>,
    /// Failed logins per account and per source, in the current window.
    failures_by_user: BTreeMap<UserId, Window>,
    failures_by_source: BTreeMap<IpAddr, Window>,
    /// Contact-list changes waiting for the store, in the order they were asked for.
    unstored: BTreeMap<StoreTicket, Unstored>,
    next_store: u64,
}

impl Server {
    /// A server with no connections.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            users: BTreeMap::new(),
            calls: BTreeMap::new(),
            tickets: BTreeMap::new(),
            checks_per_source: BTreeMap::new(),
            auth_waiting: VecDeque::new(),
            auth_running: BTreeSet::new(),
            tokens: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_session: 1,
            next_call: 1,
            next_ticket: 1,
            out: VecDeque::new(),
            per_source: BTreeMap::new(),
            accepts: Window {
                start: Time::ZERO,
                count: 0,
            },
            accepts_by_source: BTreeMap::new(),
            failures_by_user: BTreeMap::new(),
            failures_by_source: BTreeMap::new(),
            unstored: BTreeMap::new(),
            next_store: 1,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    // ----- events in -------------------------------------------------------------

    /// A transport connection opened.
    pub fn connect(&mut self, conn: ConnId, now: Time) -> Result<(), ServerError> {
        self.connect_from(conn, None, now)
    }

    /// A transport connection opened from `source` (the peer's address), which the
    /// per-source limits and login throttling count by ([`source_key`]: an IPv6 peer
    /// counts by its /64). A connection over a limit is answered with its fatal error
    /// and closed at once (spec section 13.6).
    pub fn connect_from(
        &mut self,
        conn: ConnId,
        source: Option<IpAddr>,
        now: Time,
    ) -> Result<(), ServerError> {
        let source = source.map(source_key);
        if self.conns.contains_key(&conn) {
            return Err(ServerError::DuplicateConn(conn));
        }
        let deadline = now.after(self.config.login_timeout);
        let frames = Window {
            start: now,
            count: 0,
        };
        self.conns.insert(
            conn,
            Conn {
                state: ConnState::AwaitingLogin,
                decoder: FrameDecoder::new(self.config.max_frame.max(MIN_MAX_FRAME)),
                deadline,
                source,
                frames,
                unstored: 0,
                stalled: None,
                inbox: Vec::new(),
                throttled: None,
            },
        );
        if let Some(ip) = source {
            *self.per_source.entry(ip).or_default() += 1;
        }
        self.deadlines.insert((deadline, Timer::Conn(conn)));
        let limits = &self.config.limits;
        let second = Duration::from_secs(1);
        let second_began = self.accepts.start;
        let accepted = self.accepts.hit(now, second);
        if self.accepts.start != second_began {
            self.accepts_by_source.clear();
        }
        let from_source_now = source.map_or(0, |ip| {
            let n = self.accepts_by_source.entry(ip).or_default();
            *n = n.saturating_add(1);
            *n
        });
        let from_source = source.and_then(|ip| self.per_source.get(&ip)).copied();
        let crowded = over(self.conns.len(), limits.max_connections)
            || over(from_source.unwrap_or(0), limits.max_connections_per_source);
        let refusal = if crowded {
            Some((ErrorCode::TooManyConnections, second))
        } else if over(accepted as usize, limits.max_accepts_per_second as usize)
            || over(
                from_source_now as usize,
                limits.max_accepts_per_second_per_source as usize,
            )
        {
            let (_, left) = self.accepts.current(now, second);
            Some((ErrorCode::RateLimited, left))
        } else {
            None
        };
        if let Some((code, retry)) = refusal {
            self.fail_retry(conn, code, retry);
        }
        Ok(())
    }

    /// Bytes arrived on a connection. Bytes for a connection the server does not know
    /// (never opened, or already closed) are ignored.
    ///
    /// While the connection's input is paused ([`Server::accepts_input`] is false) the
    /// bytes are kept, undecoded, and processed in order once it resumes. An embedder
    /// should stop reading from a paused connection (TCP backpressure); one that goes
    /// on past a frame's worth of bytes gets the connection closed with `rate_limited`.
    pub fn receive(&mut self, conn: ConnId, data: &[u8], now: Time) {
        let limit = self.config.max_frame.max(MIN_MAX_FRAME) as usize + 4;
        let max_unstored = self.max_unstored();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.paused(max_unstored) || !c.inbox.is_empty() {
            if c.inbox.len() + data.len() > limit {
                self.fail_retry(conn, ErrorCode::RateLimited, Duration::from_secs(1));
                return;
            }
            c.inbox.extend_from_slice(data);
            return;
        }
        self.decode_input(conn, data, now);
    }

    /// Whether the server takes input from `conn` now. It does not while the
    /// connection has [`Limits::max_unstored_changes`] contact-list changes waiting for
    /// the store, or a request that must wait for them (spec section 9.6), nor for the
    /// rest of a second in which it sent [`Limits::max_frames_per_second`] frames (spec
    /// section 13.6); it resumes by itself in [`Server::complete_store`] and
    /// [`Server::handle_timeout`]. False for an unknown connection.
    pub fn accepts_input(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| !c.paused(self.max_unstored()) && c.inbox.is_empty())
    }

    /// Decodes and handles the frames in `data`, keeping the rest in the connection's
    /// inbox as soon as its input pauses.
    fn decode_input(&mut self, conn: ConnId, mut data: &[u8], now: Time) {
        let max_unstored = self.max_unstored();
        while !data.is_empty() {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.paused(max_unstored) {
                c.inbox.extend_from_slice(data);
                return;
            }
            // At the frame rate limit, the rest waits for the next second.
            let second = Duration::from_secs(1);
            let (frames, left) = c.frames.current(now, second);
            if over_or_at(frames, self.config.limits.max_frames_per_second) {
                let until = now.after(left);
                c.throttled = Some(until);
                c.inbox.extend_from_slice(data);
                self.deadlines.insert((until, Timer::Throttle(conn)));
                return;
            }
            match c.decoder.decode(&mut data) {
                Ok(None) => return,
                Ok(Some(payload)) => {
                    c.frames.hit(now, second);
                    // Only a complete frame counts as activity: a peer trickling a
                    // partial frame cannot hold its session open.
                    if matches!(c.state, ConnState::Online(_)) {
                        let deadline = now.after(self.config.idle_timeout);
                        if deadline != c.deadline {
                            self.deadlines.remove(&(c.deadline, Timer::Conn(conn)));
                            c.deadline = deadline;
                            self.deadlines.insert((deadline, Timer::Conn(conn)));
                        }
                    }
                    match decode_message::<ClientMessage>(&payload) {
                        // Requests after a contact-list change that waits for the store
                        // are answered after its acknowledgement: they wait too (only
                        // further changes may queue up behind it).
                        Ok(msg) if c.unstored > 0 && !is_roster_request(&msg) => {
                            c.stalled = Some(msg);
                        }
                        Ok(msg) => self.handle_message(conn, msg, now),
                        Err(e) => self.refuse(conn, &e),
                    }
                }
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                        FrameError::Empty => ErrorCode::Malformed,
                    };
                    self.fail(conn, code, e.to_string());
                    return;
                }
            }
        }
    }

    /// Processes what a connection's paused input kept, as far as it may go now.
    fn continue_input(&mut self, conn: ConnId, now: Time) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.unstored > 0 && c.stalled.is_some() {
            return;
        }
        if let Some(msg) = c.stalled.take() {
            self.handle_message(conn, msg, now);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let inbox = std::mem::take(&mut c.inbox);
        self.decode_input(conn, &inbox, now);
    }

    /// The effective limit on a connection's contact-list changes waiting for the store.
    fn max_unstored(&self) -> usize {
        self.config.limits.max_unstored_changes.max(1)
    }

    /// The transport connection closed or failed. If resumption is enabled the
    /// session, if any, is detached: it stays online for its watchers and resumable
    /// until the grace ends (spec "Resumable sessions"); its calls end. Otherwise it
    /// ends at once and the user's contacts are told the terminal went offline (claim
    /// C9).
    pub fn disconnect(&mut self, conn: ConnId, now: Time) {
        self.forget_conn(conn, Some(now));
    }

    /// The answer to an [`AuthRequest`].
    pub fn complete_auth(
        &mut self,
        ticket: AuthTicket,
        verdict: AuthVerdict,
        now: Time,
    ) -> Result<(), ServerError> {
        // Only a check handed out in an `Authenticate` can be answered.
        if !self.auth_running.contains(&ticket) {
            return Err(ServerError::UnknownTicket(ticket));
        }
        let source = self
            .tickets
            .get(&ticket)
            .and_then(|c| self.conns.get(c))
            .and_then(|c| c.source);
        let (conn, _) = self
            .end_check(ticket, source)
            .ok_or(ServerError::UnknownTicket(ticket))?;
        self.dispatch_auth();
        let Some(c) = self.conns.get(&conn) else {
            return Err(ServerError::UnknownTicket(ticket));
        };
        let ConnState::Authenticating { user, with, .. } = c.state.clone() else {
            return Err(ServerError::UnknownTicket(ticket));
        };
        let (contacts, registered) = match verdict {
            AuthVerdict::Accepted {
                contacts,
                registered,
            } => (contacts, registered),
            AuthVerdict::Rejected => {
                let source = c.source;
                self.count_failure(Some(user), source, now);
                self.fail(conn, ErrorCode::BadCredentials, String::new());
                return Ok(());
            }
            AuthVerdict::Failed => {
                self.fail(conn, ErrorCode::Internal, "credential store".into());
                return Ok(());
            }
        };
        let (caps, terminal) = match with {
            LoginWith::Capabilities(caps) => (caps, None),
            LoginWith::TerminalId(id) => match registered {
                Some(caps) => (caps, Some(id)),
                None => {
                    self.fail(conn, ErrorCode::UnknownTerminal, String::new());
                    return Ok(());
                }
            },
        };
        // The same registered terminal logging in again replaces its old session.
        if let Some(t) = &terminal {
            let old = self.users.get(&user).and_then(|u| {
                u.sessions
                    .iter()
                    .copied()
                    .find(|s| self.sessions.get(s).and_then(|s| s.terminal.as_ref()) == Some(t))
            });
            if let Some(old) = old {
                self.end_session_with(old, ErrorCode::SessionReplaced);
            }
        }
        let online = self.users.get(&user).map_or(0, |u| u.sessions.len());
        if online >= self.config.max_sessions_per_user {
            // Counted as a failed login, so a flood of valid logins over the limit is
            // throttled like one of wrong passwords.
            let source = self.conns.get(&conn).and_then(|c| c.source);
            self.count_failure(Some(user), source, now);
            self.fail(conn, ErrorCode::TooManySessions, String::new());
            return Ok(());
        }
        self.start_session(conn, user, caps, terminal, contacts, now);
        Ok(())
    }

    /// The outcome of a [`StoreRequest`]. A stored change takes effect now: the
    /// requesting connection gets its acknowledgement (`contact_added` or
    /// `contact_removed` with its `req`), the user's other terminals and the contact's
    /// presence follow (spec section 9.6). A change that could not be stored is not
    /// applied; the request is answered with `not_stored`. Input the connection held
    /// back for it is processed next.
    pub fn complete_store(
        &mut self,
        ticket: StoreTicket,
        outcome: StoreOutcome,
        now: Time,
    ) -> Result<(), ServerError> {
        let u = self
            .unstored
            .remove(&ticket)
            .ok_or(ServerError::UnknownStoreTicket(ticket))?;
        let open = match self.conns.get_mut(&u.conn) {
            Some(c) => {
                c.unstored = c.unstored.saturating_sub(1);
                true
            }
            None => false,
        };
        match outcome {
            StoreOutcome::Stored => {
                let origin = open.then_some((u.conn, u.req));
                self.apply_roster_change(&u.user, &u.contact, u.added, origin);
            }
            StoreOutcome::Failed if open => {
                self.error(u.conn, ErrorCode::NotStored, Some(u.req), None);
            }
            StoreOutcome::Failed => {}
        }
        if open {
            self.continue_input(u.conn, now);
        }
        Ok(())
    }

    /// Fires every deadline that has passed: closes connections that did not log in
    /// in time (`login_timeout`) or went idle (`idle_timeout`), ends calls that rang
    /// too long (reason `timeout`), ends detached sessions whose grace is over, and
    /// processes the held input of connections whose frame-rate pause is over (ask
    /// [`Server::accepts_input`] again for paused connections afterwards).
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&(deadline, timer)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            match timer {
                Timer::Conn(conn) => {
                    let code = match self.conns.get(&conn).map(|c| &c.state) {
                        Some(ConnState::Online(_)) => ErrorCode::IdleTimeout,
                        _ => ErrorCode::LoginTimeout,
                    };
                    self.fail(conn, code, String::new());
                }
                Timer::Call(call) => {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.deadline = None;
                    }
                    self.end_call_both(call, EndReason::Timeout);
                }
                Timer::Detached(session) => {
                    // The grace is over: the terminal goes offline for its watchers.
                    if self
                        .sessions
                        .get(&session)
                        .is_some_and(|s| s.link.conn().is_none())
                    {
                        self.end_session(session);
                    }
                }
                Timer::Throttle(conn) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.throttled = None;
                        self.continue_input(conn, now);
                    }
                }
            }
        }
    }

    /// A contact-list change made outside the protocol (an administrator), applied to
    /// online users as if `user` had sent it; not echoed as
    /// [`ServerEvent::Store`]. Does nothing if `user` is offline: the change
    /// is in the embedder's store, read at the next login.
    ///
    /// Fails with [`ServerError::RosterFull`], changing nothing, if the addition would
    /// exceed the contact-list limit; the embedder should not store it either.
    pub fn change_roster(
        &mut self,
        user: &UserId,
        contact: &UserId,
        added: bool,
        now: Time,
    ) -> Result<(), ServerError> {
        let _ = now;
        // Changes waiting for the store count as made, so the limit holds once they are.
        let Some((has, len)) = self.projected_contacts(user, contact) else {
            return Ok(());
        };
        if user == contact {
            return Ok(());
        }
        if added && !has && len >= self.max_contacts() {
            return Err(ServerError::RosterFull(user.clone()));
        }
        self.apply_roster_change(user, contact, added, None);
        Ok(())
    }

    /// The effective contact-list limit.
    fn max_contacts(&self) -> usize {
        self.config.max_contacts.min(MAX_CONTACTS)
    }

    /// Ends every connection with `server_shutdown`, and every detached session.
    pub fn shutdown(&mut self, now: Time) {
        let _ = now;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.fail(conn, ErrorCode::ServerShutdown, String::new());
        }
        let detached: Vec<SessionId> = self.sessions.keys().copied().collect();
        for session in detached {
            self.end_session(session);
        }
    }

    // ----- outputs ---------------------------------------------------------------

    /// The next thing the embedder must do, in order.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.out.pop_front()
    }

    /// When [`Server::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    // ----- read-only views -------------------------------------------------------

    /// How many accounts and sources the failed-login counters track now (for a
    /// status page): only those that failed within the current window, since ended
    /// windows are forgotten at the next failure (spec section 13.6).
    pub fn failure_counters(&self) -> usize {
        self.failures_by_user.len() + self.failures_by_source.len()
    }

    /// Every session, in session order.
    pub fn sessions(&self) -> impl Iterator<Item = SessionView<'_>> {
        self.sessions.iter().map(|(id, s)| SessionView {
            endpoint: Endpoint {
                user: s.user.clone(),
                session: *id,
            },
            conn: s.link.conn(),
            capabilities: &s.caps,
            terminal: s.terminal.as_ref(),
        })
    }

    /// Number of detached sessions (dropped, resumable, still online for watchers).
    pub fn detached_count(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.link.conn().is_none())
            .count()
    }

    /// The in-memory contact list of an online user.
    pub fn contacts_of(&self, user: &UserId) -> Option<&BTreeSet<UserId>> {
        self.users.get(user).map(|u| &u.contacts)
    }

    /// The session logged in on a connection, if any.
    pub fn session_of(&self, conn: ConnId) -> Option<SessionId> {
        match self.conns.get(&conn)?.state {
            ConnState::Online(s) => Some(s),
            _ => None,
        }
    }

    /// The user logged in on a connection, if any.
    pub fn user_of(&self, conn: ConnId) -> Option<&UserId> {
        self.sessions.get(&self.session_of(conn)?).map(|s| &s.user)
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of calls, ringing or established.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The access rule (spec "Visibility"): `watcher` may see `subject`'s presence and
    /// capabilities iff both are online, are different users, and each lists the other.
    pub fn entitled(&self, watcher: &UserId, subject: &UserId) -> bool {
        watcher != subject
            && self
                .users
                .get(watcher)
                .is_some_and(|w| w.contacts.contains(subject))
            && self
                .users
                .get(subject)
                .is_some_and(|s| s.contacts.contains(watcher))
    }

    // ----- internals -------------------------------------------------------------

    fn send(&mut self, conn: ConnId, msg: &ServerMessage) {
        self.out.push_back(ServerEvent::Transmit {
            conn,
            frame: encode_frame(msg),
        });
    }

    fn send_frame(&mut self, conn: ConnId, frame: Bytes) {
        self.out.push_back(ServerEvent::Transmit { conn, frame });
    }

    fn error(&mut self, conn: ConnId, code: ErrorCode, req: Option<ReqId>, call: Option<CallId>) {
        let detail = String::new();
        self.send(
            conn,
            &ServerMessage::Error {
                code,
                req,
                call,
                detail,
                retry_after_ms: None,
            },
        );
    }

    /// Sends a fatal error and closes the connection.
    /// Fails a connection with a code that tells the peer when to try again.
    fn fail_retry(&mut self, conn: ConnId, code: ErrorCode, retry: Duration) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let msg = ServerMessage::Error {
            code,
            req: None,
            call: None,
            detail: String::new(),
            retry_after_ms: Some(millis(retry)),
        };
        self.send(conn, &msg);
        self.close(conn);
    }

    /// How long logins for `user` from `source` are throttled, if they are.
    fn login_throttle(&self, user: &UserId, source: Option<IpAddr>, now: Time) -> Option<Duration> {
        let l = &self.config.limits;
        let window = l.login_failure_window;
        let by_user = self
            .failures_by_user
            .get(user)
            .map(|w| w.current(now, window))
            .filter(|(n, _)| over_or_at(*n, l.max_login_failures_per_account))
            .map(|(_, left)| left);
        by_user.max(self.source_throttle(source, now))
    }

    /// How long logins and resumes from `source` are throttled, if they are.
    fn source_throttle(&self, source: Option<IpAddr>, now: Time) -> Option<Duration> {
        let l = &self.config.limits;
        source
            .and_then(|ip| self.failures_by_source.get(&ip))
            .map(|w| w.current(now, l.login_failure_window))
            .filter(|(n, _)| over_or_at(*n, l.max_login_failures_per_source))
            .map(|(_, left)| left)
    }

    /// Counts a failed login (for `user`, if one was named) or resume from `source`.
    fn count_failure(&mut self, user: Option<UserId>, source: Option<IpAddr>, now: Time) {
        let window = self.config.limits.login_failure_window;
        let fresh = Window {
            start: now,
            count: 0,
        };
        if let Some(user) = user {
            self.failures_by_user
                .entry(user)
                .or_insert(fresh)
                .hit(now, window);
        }
        if let Some(ip) = source {
            self.failures_by_source
                .entry(ip)
                .or_insert(fresh)
                .hit(now, window);
        }
        self.prune_failures(now);
    }

    /// Whether a capability document exceeds [`Limits::max_caps_bytes`].
    fn caps_too_large(&self, caps: &Capabilities) -> bool {
        over(
            encode_payload(caps).len(),
            self.config.limits.max_caps_bytes,
        )
    }

    /// Forgets failure windows that have ended, so the tables stay bounded by the
    /// accounts and sources that failed within one window.
    fn prune_failures(&mut self, now: Time) {
        let window = self.config.limits.login_failure_window;
        self.failures_by_user
            .retain(|_, w| w.current(now, window).0 > 0);
        self.failures_by_source
            .retain(|_, w| w.current(now, window).0 > 0);
    }

    fn fail(&mut self, conn: ConnId, code: ErrorCode, detail: String) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.send(conn, &ServerMessage::error_with(code, detail));
        self.close(conn);
    }

    fn close(&mut self, conn: ConnId) {
        if self.forget_conn(conn, None) {
            self.out.push_back(ServerEvent::Close { conn });
        }
    }

    /// Ends a session with a fatal error to its connection, or at once if detached.
    fn end_session_with(&mut self, session: SessionId, code: ErrorCode) {
        match self.sessions.get(&session).map(|s| s.link) {
            Some(Link::Attached(conn)) => self.fail(conn, code, String::new()),
            Some(Link::Detached { .. }) => self.end_session(session),
            None => {}
        }
    }

    /// Answers a payload that did not decode.
    fn refuse(&mut self, conn: ConnId, e: &DecodeError) {
        let code = e.code();
        if code.is_fatal() {
            self.fail(conn, code, e.to_string());
        } else {
            self.send(conn, &ServerMessage::error_with(code, e.to_string()));
        }
    }

    /// Drops all state of a connection; its session ends, or with `detach_at` (a drop,
    /// not a close) is detached if resumption is enabled. Returns whether it existed.
    fn forget_conn(&mut self, conn: ConnId, detach_at: Option<Time>) -> bool {
        let Some(c) = self.conns.remove(&conn) else {
            return false;
        };
        self.deadlines.remove(&(c.deadline, Timer::Conn(conn)));
        if let Some(until) = c.throttled {
            self.deadlines.remove(&(until, Timer::Throttle(conn)));
        }
        count_down(&mut self.per_source, c.source);
        match c.state {
            ConnState::AwaitingLogin => {}
            ConnState::Authenticating { ticket, .. } => {
                if let Some((_, true)) = self.end_check(ticket, c.source) {
                    self.out.push_back(ServerEvent::AuthCancelled(ticket));
                    self.dispatch_auth();
                }
            }
            ConnState::Online(session) => match detach_at {
                Some(now) if self.config.resume.enabled() => self.detach(session, now),
                _ => self.end_session(session),
            },
        }
        true
    }

    /// Detaches a session from its connection (already forgotten): its calls end, it
    /// stays online for watchers, and its grace starts.
    fn detach(&mut self, id: SessionId, now: Time) {
        let until = now.after(self.config.resume.grace);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Link::Attached(conn) = s.link else {
            return;
        };
        s.link = Link::Detached { last: conn, until };
        let calls: Vec<CallId> = s.calls.iter().copied().collect();
        let endpoint = Endpoint {
            user: s.user.clone(),
            session: id,
        };
        for call in calls {
            self.end_call(call, id, EndReason::PeerGone);
        }
        self.deadlines.insert((until, Timer::Detached(id)));
        self.out
            .push_back(ServerEvent::SessionDetached { conn, endpoint });
    }

    /// `resume` on a connection awaiting login (spec "Resumable sessions").
    fn resume(&mut self, conn: ConnId, token: &ResumeToken, seen: Option<u64>, now: Time) {
        let source = self.conns.get(&conn).and_then(|c| c.source);
        if let Some(wait) = self.source_throttle(source, now) {
            self.fail_retry(conn, ErrorCode::LoginThrottled, wait);
            return;
        }
        let Some(id) = self.tokens.get(token).copied() else {
            // Counted like a failed login: guessing tokens is throttled per source.
            self.count_failure(None, source, now);
            self.fail(conn, ErrorCode::ResumeFailed, String::new());
            return;
        };
        // A connection the client gave up on (often still open at the server's end,
        // half-dead) is replaced; the session itself is kept.
        let old = self.sessions.get(&id).and_then(|s| s.link.conn());
        if let Some(old) = old {
            self.send(
                old,
                &ServerMessage::error_with(ErrorCode::SessionReplaced, String::new()),
            );
            if self.forget_conn(old, Some(now)) {
                self.out.push_back(ServerEvent::Close { conn: old });
            }
        }
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Link::Detached { until, .. } = s.link {
            self.deadlines.remove(&(until, Timer::Detached(id)));
        }
        s.link = Link::Attached(conn);
        let user = s.user.clone();
        let caps = s.caps.clone();
        // Only what the client missed, if the log reaches back to it and it is
        // cheaper than a snapshot.
        let first_logged = s.log.front().map_or(s.seq + 1, |(n, _)| *n);
        let missed: Option<Vec<Bytes>> = seen
            .filter(|n| *n <= s.seq && n.saturating_add(1) >= first_logged)
            .map(|n| {
                s.log
                    .iter()
                    .filter(|(k, _)| *k > n)
                    .map(|(_, f)| f.clone())
                    .collect()
            });
        self.conn_online(conn, id, now);
        let snapshot = self.snapshot_frames(&user);
        let contacts: Vec<UserId> = self
            .users
            .get(&user)
            .map(|u| u.contacts.iter().cloned().collect())
            .unwrap_or_default();
        let snapshot_bytes = snapshot_cost(&snapshot, &contacts);
        let missed = missed.filter(|m| m.iter().map(Bytes::len).sum::<usize>() <= snapshot_bytes);
        let is_snapshot = missed.is_none();
        let (seq, contacts, frames) = match missed {
            // A logged `online` of a user no longer visible is left out: its
            // capabilities may not reach this user now (INV-VISIBILITY), and a later
            // frame in the log removes that terminal anyway.
            Some(m) => {
                let seq = self.sessions.get(&id).map_or(0, |s| s.seq);
                let frames = m
                    .into_iter()
                    .filter(|f| {
                        let payload = f.get(HEADER_LEN..).unwrap_or_default();
                        match decode_message::<ServerMessage>(payload) {
                            Ok(ServerMessage::Online(p)) => self.entitled(&user, &p.user),
                            _ => true,
                        }
                    })
                    .collect();
                (seq, None, frames)
            }
            None => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.seq = 0;
                    s.log.clear();
                }
                (0, Some(contacts), snapshot)
            }
        };
        let resumed = ServerMessage::Resumed {
            version: PROTOCOL_VERSION,
            session: id,
            capabilities: caps,
            seq,
            contacts,
        };
        self.send(conn, &resumed);
        let count = frames.len();
        for f in frames {
            self.send_frame(conn, f);
        }
        self.send(conn, &ServerMessage::Synced {});
        self.out.push_back(ServerEvent::SessionResumed {
            conn,
            endpoint: Endpoint { user, session: id },
            snapshot: is_snapshot,
            frames: count,
        });
    }

    /// A connection's session is `id` from now on; its idle timer starts.
    fn conn_online(&mut self, conn: ConnId, id: SessionId, now: Time) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Online(id);
            self.deadlines.remove(&(c.deadline, Timer::Conn(conn)));
            c.deadline = now.after(self.config.idle_timeout);
            self.deadlines.insert((c.deadline, Timer::Conn(conn)));
        }
    }

    /// The snapshot for `user`: the shared `online` frame of every terminal it may see.
    fn snapshot_frames(&self, user: &UserId) -> Vec<Bytes> {
        self.visible_sessions(user)
            .iter()
            .filter_map(|s| self.frame_of(*s))
            .collect()
    }

    /// Sends a table frame (`online`, `offline`, `contact_added`, `contact_removed`)
    /// to a session: numbered and logged for a resume, written if attached.
    fn push_table(&mut self, session: SessionId, frame: Bytes) {
        let resume = &self.config.resume;
        let enabled = resume.enabled();
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let keep = match s.link {
            Link::Attached(_) => resume.tail_frames.min(resume.log_frames),
            Link::Detached { .. } => resume.log_frames,
        };
        s.seq += 1;
        if enabled && keep > 0 {
            while s.log.len() >= keep {
                s.log.pop_front();
            }
            s.log.push_back((s.seq, frame.clone()));
        }
        if let Some(conn) = s.link.conn() {
            self.send_frame(conn, frame);
        }
    }

    fn handle_message(&mut self, conn: ConnId, msg: ClientMessage, now: Time) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let source = c.source;
        let session = match (&c.state, msg) {
            (_, ClientMessage::Ping {}) => {
                self.send(conn, &ServerMessage::Pong {});
                return;
            }
            (_, ClientMessage::Logout {}) => {
                self.send(conn, &ServerMessage::LoggedOut {});
                self.close(conn);
                return;
            }
            (
                ConnState::AwaitingLogin,
                ClientMessage::Login {
                    version,
                    user,
                    password,
                    with,
                },
            ) => {
                debug_assert_eq!(version, PROTOCOL_VERSION, "checked by the decoder");
                // A throttled account or source gets no credential check at all.
                if let Some(wait) = self.login_throttle(&user, source, now) {
                    self.fail_retry(conn, ErrorCode::LoginThrottled, wait);
                    return;
                }
                // One source cannot fill the credential checker ahead of everyone else.
                let checks = source
                    .and_then(|ip| self.checks_per_source.get(&ip))
                    .copied();
                if over_or_at(
                    checks.unwrap_or(0),
                    self.config.limits.max_auth_checks_per_source,
                ) {
                    self.fail_retry(conn, ErrorCode::RateLimited, Duration::from_secs(1));
                    return;
                }
                if let LoginWith::Capabilities(caps) = &with {
                    if self.caps_too_large(caps) {
                        self.fail(conn, ErrorCode::CapsTooLarge, String::new());
                        return;
                    }
                }
                self.begin_auth(conn, user, password, with);
                return;
            }
            (
                ConnState::AwaitingLogin,
                ClientMessage::Resume {
                    version,
                    token,
                    seen,
                },
            ) => {
                debug_assert_eq!(version, PROTOCOL_VERSION, "checked by the decoder");
                self.resume(conn, &token, seen, now);
                return;
            }
            (
                ConnState::Online(_) | ConnState::Authenticating { .. },
                ClientMessage::Login { .. } | ClientMessage::Resume { .. },
            ) => {
                self.error(conn, ErrorCode::AlreadyLoggedIn, None, None);
                return;
            }
            (ConnState::Online(s), msg) => (*s, msg),
            (_, msg) => {
                let (req, call) = request_tags(&msg);
                self.error(conn, ErrorCode::NotLoggedIn, req, call);
                return;
            }
        };
        let (session, msg) = session;
        match msg {
            ClientMessage::UpdateCaps { req, capabilities } => {
                if self.caps_too_large(&capabilities) {
                    self.fail(conn, ErrorCode::CapsTooLarge, String::new());
                    return;
                }
                if let Some(wait) = self.caps_throttle(session, now) {
                    self.send(
                        conn,
                        &ServerMessage::Error {
                            code: ErrorCode::CapsThrottled,
                            req: Some(req),
                            call: None,
                            detail: String::new(),
                            retry_after_ms: Some(millis(wait)),
                        },
                    );
                    return;
                }
                self.update_caps(session, capabilities);
                self.send(conn, &ServerMessage::CapsAck { req });
            }
            ClientMessage::AddContact { req, user } => {
                self.roster_request(session, conn, req, user, true)
            }
            ClientMessage::RemoveContact { req, user } => {
                self.roster_request(session, conn, req, user, false)
            }
            ClientMessage::Call {
                req,
                to,
                digest,
                capabilities,
            } => {
                let request = CallRequest {
                    req,
                    to,
                    digest,
                    capabilities,
                };
                self.place_call(session, conn, request, now)
            }
            ClientMessage::CallRetry { call, capabilities } => {
                self.call_retry(session, conn, call, capabilities)
            }
            ClientMessage::Accept { call, capabilities } => {
                self.call_accept(session, conn, call, capabilities)
            }
            ClientMessage::Reject { call } => self.call_reject(session, conn, call),
            ClientMessage::NeedCaps { call } => self.call_need_caps(session, conn, call),
            ClientMessage::Hangup { call } => self.call_hangup(session, conn, call),
            ClientMessage::QueryCaps { req, to } => self.query_caps(session, conn, req, to),
            ClientMessage::CapsReply {
                to,
                req,
                capabilities,
            } => self.caps_reply(session, conn, to, req, capabilities),
            // Handled above; a new variant reaches here only if this match is not
            // updated, and is answered as unknown.
            ClientMessage::Login { .. }
            | ClientMessage::Resume { .. }
            | ClientMessage::Ping {}
            | ClientMessage::Logout {} => self.error(conn, ErrorCode::UnknownMessage, None, None),
        }
    }

    fn begin_auth(&mut self, conn: ConnId, user: UserId, password: Password, with: LoginWith) {
        let ticket = AuthTicket(self.next_ticket);
        self.next_ticket += 1;
        let terminal = match &with {
            LoginWith::TerminalId(t) => Some(t.clone()),
            LoginWith::Capabilities(_) => None,
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Authenticating {
                ticket,
                user: user.clone(),
                with,
            };
        }
        self.tickets.insert(ticket, conn);
        let source = self.conns.get(&conn).and_then(|c| c.source);
        if let Some(ip) = source {
            *self.checks_per_source.entry(ip).or_default() += 1;
        }
        let req = AuthRequest {
            ticket,
            conn,
            user,
            password,
            terminal,
        };
        match self.auth_waiting.iter_mut().find(|(s, _)| *s == source) {
            Some((_, queue)) => queue.push_back(req),
            // A source with nothing waiting takes its turn after those waiting now.
            None => self.auth_waiting.push_back((source, VecDeque::from([req]))),
        }
        self.dispatch_auth();
    }

    /// Hands waiting credential checks to the embedder while fewer than
    /// `max_auth_checks_running` are running: one from each source in turn (spec
    /// section 13.4).
    fn dispatch_auth(&mut self) {
        let max = self.config.limits.max_auth_checks_running;
        while !over_or_at(self.auth_running.len(), max) {
            let Some((source, mut queue)) = self.auth_waiting.pop_front() else {
                return;
            };
            let Some(req) = queue.pop_front() else {
                continue;
            };
            if !queue.is_empty() {
                self.auth_waiting.push_back((source, queue));
            }
            self.auth_running.insert(req.ticket);
            self.out.push_back(ServerEvent::Authenticate(req));
        }
    }

    /// Forgets a pending credential check of a connection from `source`. Returns its
    /// connection and whether the embedder was running it; one that was still waiting
    /// is dropped from its queue.
    fn end_check(&mut self, ticket: AuthTicket, source: Option<IpAddr>) -> Option<(ConnId, bool)> {
        let conn = self.tickets.remove(&ticket)?;
        count_down(&mut self.checks_per_source, source);
        let running = self.auth_running.remove(&ticket);
        if !running {
            for (_, queue) in &mut self.auth_waiting {
                queue.retain(|r| r.ticket != ticket);
            }
            self.auth_waiting.retain(|(_, queue)| !queue.is_empty());
        }
        Some((conn, running))
    }

    fn start_session(
        &mut self,
        conn: ConnId,
        user: UserId,
        caps: Capabilities,
        terminal: Option<TerminalId>,
        contacts: Vec<UserId>,
        now: Time,
    ) {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        let max_contacts = self.max_contacts();
        let entry = self
            .users
            .entry(user.clone())
            .or_insert_with(|| OnlineUser {
                contacts: contacts
                    .into_iter()
                    .filter(|c| *c != user)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .take(max_contacts)
                    .collect(),
                sessions: BTreeSet::new(),
            });
        entry.sessions.insert(id);
        let contact_list: Vec<UserId> = entry.contacts.iter().cloned().collect();
        let online_frame = online_frame(&user, id, &caps);
        let token = self
            .config
            .resume
            .enabled()
            .then(|| ResumeToken::derive(&self.config.resume.secret, id));
        if let Some(t) = &token {
            self.tokens.insert(t.clone(), id);
        }
        self.sessions.insert(
            id,
            Session {
                user: user.clone(),
                link: Link::Attached(conn),
                token: token.clone(),
                seq: 0,
                log: VecDeque::new(),
                caps: caps.clone(),
                terminal,
                online_frame: online_frame.clone(),
                calls: BTreeSet::new(),
                caps_updates: Window {
                    start: now,
                    count: 0,
                },
            },
        );
        self.conn_online(conn, id, now);
        self.send(
            conn,
            &ServerMessage::LoginOk {
                version: PROTOCOL_VERSION,
                user: user.clone(),
                session: id,
                capabilities: caps,
                contacts: contact_list,
                resume_token: token,
            },
        );
        // The snapshot: every online terminal this user may see (C6 at login).
        for frame in self.snapshot_frames(&user) {
            self.send_frame(conn, frame);
        }
        self.send(conn, &ServerMessage::Synced {});
        // The push: every entitled watcher learns this terminal is online (C6).
        self.push_to_watchers(&user, online_frame, None);
        self.out.push_back(ServerEvent::SessionStarted {
            conn,
            endpoint: Endpoint { user, session: id },
        });
    }

    /// Sessions of the contacts of `user` that pass `keep`.
    fn contact_sessions<'a>(
        &'a self,
        user: &UserId,
        keep: impl Fn(&UserId) -> bool + 'a,
    ) -> impl Iterator<Item = SessionId> + 'a {
        self.users
            .get(user)
            .into_iter()
            .flat_map(|u| u.contacts.iter())
            .filter(move |c| keep(c))
            .filter_map(|c| self.users.get(c))
            .flat_map(|c| c.sessions.iter().copied())
    }

    /// Sessions of other users that `user` is entitled to see.
    fn visible_sessions(&self, user: &UserId) -> Vec<SessionId> {
        self.contact_sessions(user, |c| self.entitled(user, c))
            .collect()
    }

    /// Every session, attached or detached, of every user entitled to see `subject`.
    fn watcher_sessions(&self, subject: &UserId) -> Vec<SessionId> {
        self.contact_sessions(subject, |w| self.entitled(w, subject))
            .collect()
    }

    /// Sends one shared frame to every entitled watcher of `subject`, optionally only
    /// those of user `only`.
    fn push_to_watchers(&mut self, subject: &UserId, frame: Bytes, only: Option<&UserId>) {
        for session in self.watcher_sessions(subject) {
            if let Some(only) = only {
                if self.sessions.get(&session).map(|s| &s.user) != Some(only) {
                    continue;
                }
            }
            self.push_table(session, frame.clone());
        }
    }

    fn end_session(&mut self, id: SessionId) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        if let Some(t) = &s.token {
            self.tokens.remove(t);
        }
        if let Link::Detached { until, .. } = s.link {
            self.deadlines.remove(&(until, Timer::Detached(id)));
        }
        for call in &s.calls {
            self.end_call(*call, id, EndReason::PeerGone);
        }
        let endpoint = Endpoint {
            user: s.user.clone(),
            session: id,
        };
        // Watchers are computed while the user's roster is still known (C9).
        let frame = encode_frame(&ServerMessage::Offline(endpoint.clone()));
        self.push_to_watchers(&s.user, frame, None);
        if let Some(u) = self.users.get_mut(&s.user) {
            u.sessions.remove(&id);
            if u.sessions.is_empty() {
                self.users.remove(&s.user);
            }
        }
        self.out.push_back(ServerEvent::SessionEnded {
            conn: s.link.last(),
            endpoint,
        });
    }

    /// Counts an `update_caps` of session `id` at `now`; if the session already made
    /// `max_caps_updates` in the current window, counts nothing and returns how long
    /// until the window ends (spec section 13.6).
    fn caps_throttle(&mut self, id: SessionId, now: Time) -> Option<Duration> {
        let l = &self.config.limits;
        let s = self.sessions.get_mut(&id)?;
        let (count, left) = s.caps_updates.current(now, l.caps_update_window);
        if over_or_at(count, l.max_caps_updates) {
            return Some(left);
        }
        s.caps_updates.hit(now, l.caps_update_window);
        None
    }

    fn update_caps(&mut self, id: SessionId, caps: Capabilities) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.online_frame = online_frame(&s.user, id, &caps);
        s.caps = caps;
        let (user, frame) = (s.user.clone(), s.online_frame.clone());
        self.push_to_watchers(&user, frame, None);
    }

    fn roster_request(
        &mut self,
        session: SessionId,
        conn: ConnId,
        req: ReqId,
        contact: UserId,
        added: bool,
    ) {
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else {
            return;
        };
        if user == contact {
            self.error(conn, ErrorCode::InvalidContact, Some(req), None);
            return;
        }
        let Some((has, len)) = self.projected_contacts(&user, &contact) else {
            return;
        };
        if added && !has && len >= self.max_contacts() {
            self.error(conn, ErrorCode::RosterFull, Some(req), None);
            return;
        }
        // Stored first, applied and acknowledged once durable (`complete_store`).
        let ticket = StoreTicket(self.next_store);
        self.next_store += 1;
        self.unstored.insert(
            ticket,
            Unstored {
                conn,
                req,
                user: user.clone(),
                contact: contact.clone(),
                added,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.unstored += 1;
        }
        self.out.push_back(ServerEvent::Store(StoreRequest {
            ticket,
            user,
            contact,
            added,
        }));
    }

    /// Whether `user`'s contact list will hold `contact`, and its length, once every
    /// change waiting for the store is applied; `None` if `user` is not online.
    fn projected_contacts(&self, user: &UserId, contact: &UserId) -> Option<(bool, usize)> {
        let u = self.users.get(user)?;
        let mut changed: BTreeMap<&UserId, bool> = BTreeMap::new();
        for p in self.unstored.values().filter(|p| &p.user == user) {
            changed.insert(&p.contact, p.added);
        }
        let mut len = u.contacts.len();
        for (c, &added) in &changed {
            match (added, u.contacts.contains(*c)) {
                (true, false) => len += 1,
                (false, true) => len -= 1,
                _ => {}
            }
        }
        let has = changed
            .get(contact)
            .copied()
            .unwrap_or_else(|| u.contacts.contains(contact));
        Some((has, len))
    }

    /// Applies a contact-list change of an online user and the presence it implies.
    /// `origin` is the connection and tag of the request, echoed only to it.
    fn apply_roster_change(
        &mut self,
        user: &UserId,
        contact: &UserId,
        added: bool,
        origin: Option<(ConnId, ReqId)>,
    ) {
        let was_entitled = self.entitled(contact, user);
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        if added {
            u.contacts.insert(contact.clone());
        } else {
            u.contacts.remove(contact);
        }
        let own_sessions: Vec<SessionId> = u.sessions.iter().copied().collect();
        // Every terminal of the user learns the new contact list first ...
        for s in &own_sessions {
            let Some(link) = self.sessions.get(s).map(|s| s.link) else {
                continue;
            };
            let req = origin
                .filter(|(c, _)| link.conn() == Some(*c))
                .map(|(_, r)| r);
            let msg = if added {
                ServerMessage::ContactAdded {
                    req,
                    user: contact.clone(),
                }
            } else {
                ServerMessage::ContactRemoved {
                    req,
                    user: contact.clone(),
                }
            };
            self.push_table(*s, encode_frame(&msg));
        }
        // ... then presence follows the change of entitlement, both ways.
        let now_entitled = self.entitled(contact, user);
        if was_entitled == now_entitled {
            return;
        }
        let contact_sessions: Vec<SessionId> = self
            .users
            .get(contact)
            .map(|c| c.sessions.iter().copied().collect())
            .unwrap_or_default();
        if now_entitled {
            let pushes: Vec<(&UserId, Bytes, &UserId)> = own_sessions
                .iter()
                .filter_map(|s| self.frame_of(*s).map(|f| (user, f, contact)))
                .chain(
                    contact_sessions
                        .iter()
                        .filter_map(|s| self.frame_of(*s).map(|f| (contact, f, user))),
                )
                .collect();
            for (subject, frame, watcher) in pushes {
                self.push_to_watchers(subject, frame, Some(watcher));
            }
        } else {
            // Only a removal breaks entitlement. The user's own terminals dropped every
            // terminal of `contact` on `contact_removed`; the contact, who still lists
            // the user, is told each of the user's terminals went offline.
            for w in &contact_sessions {
                for s in &own_sessions {
                    let msg = ServerMessage::Offline(Endpoint {
                        user: user.clone(),
                        session: *s,
                    });
                    self.push_table(*w, encode_frame(&msg));
                }
            }
            // Calls between the two users end: they may no longer reach each other.
            let between =
                |a: &UserId, b: &UserId| (a == user && b == contact) || (a == contact && b == user);
            let calls: Vec<CallId> = self
                .calls
                .iter()
                .filter(|(_, c)| {
                    match (self.sessions.get(&c.caller), self.sessions.get(&c.callee)) {
                        (Some(a), Some(b)) => between(&a.user, &b.user),
                        _ => false,
                    }
                })
                .map(|(id, _)| *id)
                .collect();
            for id in calls {
                self.end_call_both(id, EndReason::NotReachable);
            }
        }
    }

    fn place_call(&mut self, session: SessionId, conn: ConnId, request: CallRequest, now: Time) {
        let CallRequest {
            req,
            to,
            digest,
            capabilities,
        } = request;
        let Some(caller) = self.sessions.get(&session) else {
            return;
        };
        let caller_user = caller.user.clone();
        if !self.reachable(&caller_user, &to) {
            // The same answer for offline, unknown and non-contact targets: a call
            // must not reveal presence the caller may not see.
            self.error(conn, ErrorCode::NotReachable, Some(req), None);
            return;
        }
        let max = self.config.max_calls_per_session;
        let busy = |s: &SessionId| self.sessions.get(s).is_none_or(|s| s.calls.len() >= max);
        if busy(&session) || busy(&to.session) {
            self.error(conn, ErrorCode::Busy, Some(req), None);
            return;
        }
        let id = CallId(self.next_call);
        self.next_call += 1;
        let caps_sent = capabilities.is_some();
        let deadline = now.after(self.config.ring_timeout);
        self.deadlines.insert((deadline, Timer::Call(id)));
        self.calls.insert(
            id,
            Call {
                caller: session,
                callee: to.session,
                digest,
                state: CallState::Ringing { caps_sent },
                deadline: Some(deadline),
            },
        );
        for s in [session, to.session] {
            if let Some(s) = self.sessions.get_mut(&s) {
                s.calls.insert(id);
            }
        }
        self.send(conn, &ServerMessage::CallRinging { req, call: id });
        let Some(callee_conn) = self.peer_conn(to.session) else {
            return;
        };
        self.send(
            callee_conn,
            &ServerMessage::CallIncoming {
                call: id,
                from: Endpoint {
                    user: caller_user,
                    session,
                },
                digest,
                capabilities,
            },
        );
    }

    /// Whether `to` is an attached terminal of a user `from` may see: the one
    /// condition for relaying anything from `from` to it (calls, capability queries
    /// and replies). A detached terminal cannot answer, so it is not reachable.
    fn reachable(&self, from: &UserId, to: &Endpoint) -> bool {
        self.sessions
            .get(&to.session)
            .is_some_and(|s| s.user == to.user && s.link.conn().is_some())
            && self.entitled(from, &to.user)
    }

    /// Relays a capability query (query-first baseline) to the terminal asked.
    fn query_caps(&mut self, session: SessionId, conn: ConnId, req: ReqId, to: Endpoint) {
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else {
            return;
        };
        let target = self
            .peer_conn(to.session)
            .filter(|_| self.reachable(&user, &to));
        let Some(target) = target else {
            // The same answer as a call to that terminal: no presence is revealed.
            self.error(conn, ErrorCode::NotReachable, Some(req), None);
            return;
        };
        let from = Endpoint { user, session };
        self.send(target, &ServerMessage::CapsQuery { from, req });
    }

    /// Relays the answer to a capability query. The capabilities must be the ones the
    /// server records for the answering session (its own `update_caps` precede the
    /// answer on its connection); an answer to a terminal no longer reachable is
    /// dropped, as the asker is gone or no longer entitled.
    fn caps_reply(
        &mut self,
        session: SessionId,
        conn: ConnId,
        to: Endpoint,
        req: ReqId,
        capabilities: Capabilities,
    ) {
        let Some(me) = self.sessions.get(&session) else {
            return;
        };
        if me.caps != capabilities {
            let detail = "caps_reply differs from the session's capabilities".to_owned();
            let msg = ServerMessage::Error {
                code: ErrorCode::InvalidState,
                req: Some(req),
                call: None,
                detail,
                retry_after_ms: None,
            };
            self.send(conn, &msg);
            return;
        }
        let user = me.user.clone();
        let Some(target) = self
            .peer_conn(to.session)
            .filter(|_| self.reachable(&user, &to))
        else {
            return;
        };
        let from = Endpoint { user, session };
        let msg = ServerMessage::CapsResult {
            req,
            from,
            capabilities,
        };
        self.send(target, &msg);
    }

    /// Looks up a call the sender is a party to, answering `unknown_call` otherwise.
    /// Returns the call and whether the sender is the caller.
    fn party_call(
        &mut self,
        session: SessionId,
        conn: ConnId,
        call: CallId,
    ) -> Option<(Call, bool)> {
        match self.calls.get(&call) {
            Some(c) if c.caller == session => Some((c.clone(), true)),
            Some(c) if c.callee == session => Some((c.clone(), false)),
            _ => {
                self.error(conn, ErrorCode::UnknownCall, None, Some(call));
                None
            }
        }
    }

    /// The shared `online` frame of a session.
    fn frame_of(&self, session: SessionId) -> Option<Bytes> {
        self.sessions.get(&session).map(|s| s.online_frame.clone())
    }

    /// The connection of an attached session.
    fn peer_conn(&self, session: SessionId) -> Option<ConnId> {
        self.sessions.get(&session).and_then(|s| s.link.conn())
    }

    fn call_retry(&mut self, session: SessionId, conn: ConnId, call: CallId, caps: Capabilities) {
        let Some((c, is_caller)) = self.party_call(session, conn, call) else {
            return;
        };
        if !is_caller || c.state != CallState::AwaitingCallerCaps {
            self.error(conn, ErrorCode::InvalidState, None, Some(call));
            return;
        }
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.state = CallState::Ringing { caps_sent: true };
        }
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else {
            return;
        };
        let from = Endpoint { user, session };
        if let Some(peer) = self.peer_conn(c.callee) {
            self.send(
                peer,
                &ServerMessage::CallIncoming {
                    call,
                    from,
                    digest: c.digest,
                    capabilities: Some(caps),
                },
            );
        }
    }

    /// Checks the sender is the callee of a ringing call.
    fn ringing_for_callee(
        &mut self,
        session: SessionId,
        conn: ConnId,
        call: CallId,
    ) -> Option<(Call, bool)> {
        let (c, is_caller) = self.party_call(session, conn, call)?;
        match c.state {
            CallState::Ringing { caps_sent } if !is_caller => Some((c, caps_sent)),
            _ => {
                self.error(conn, ErrorCode::InvalidState, None, Some(call));
                None
            }
        }
    }

    fn call_accept(
        &mut self,
        session: SessionId,
        conn: ConnId,
        call: CallId,
        caps: Option<Capabilities>,
    ) {
        let Some((c, _)) = self.ringing_for_callee(session, conn, call) else {
            return;
        };
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.state = CallState::Established;
            if let Some(d) = entry.deadline.take() {
                self.deadlines.remove(&(d, Timer::Call(call)));
            }
        }
        if let Some(peer) = self.peer_conn(c.caller) {
            self.send(
                peer,
                &ServerMessage::CallAccepted {
                    call,
                    capabilities: caps,
                },
            );
        }
    }

    fn call_need_caps(&mut self, session: SessionId, conn: ConnId, call: CallId) {
        let Some((c, caps_sent)) = self.ringing_for_callee(session, conn, call) else {
            return;
        };
        if caps_sent {
            // The callee already has the caller's capabilities: asking again would loop.
            self.error(conn, ErrorCode::InvalidState, None, Some(call));
            return;
        }
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.state = CallState::AwaitingCallerCaps;
        }
        if let Some(peer) = self.peer_conn(c.caller) {
            self.send(peer, &ServerMessage::CallNeedCaps { call });
        }
    }

    fn call_reject(&mut self, session: SessionId, conn: ConnId, call: CallId) {
        let Some((c, is_caller)) = self.party_call(session, conn, call) else {
            return;
        };
        if is_caller || c.state == CallState::Established {
            self.error(conn, ErrorCode::InvalidState, None, Some(call));
            return;
        }
        self.end_call(call, session, EndReason::Rejected);
    }

    fn call_hangup(&mut self, session: SessionId, conn: ConnId, call: CallId) {
        if self.party_call(session, conn, call).is_some() {
            self.end_call(call, session, EndReason::Hangup);
        }
    }

    /// Removes a call and tells the party other than `by`.
    fn end_call(&mut self, call: CallId, by: SessionId, reason: EndReason) {
        let Some(c) = self.calls.remove(&call) else {
            return;
        };
        if let Some(d) = c.deadline {
            self.deadlines.remove(&(d, Timer::Call(call)));
        }
        for s in [c.caller, c.callee] {
            if let Some(s) = self.sessions.get_mut(&s) {
                s.calls.remove(&call);
            }
        }
        let other = if c.caller == by { c.callee } else { c.caller };
        if let Some(peer) = self.peer_conn(other) {
            self.send(peer, &ServerMessage::CallEnded { call, reason });
        }
    }

    /// Removes a call and tells both parties.
    fn end_call_both(&mut self, call: CallId, reason: EndReason) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let caller = c.caller;
        if let Some(conn) = self.peer_conn(caller) {
            self.send(conn, &ServerMessage::CallEnded { call, reason });
        }
        self.end_call(call, caller, reason);
    }
}

fn online_frame(user: &UserId, session: SessionId, caps: &Capabilities) -> Bytes {
    encode_frame(&ServerMessage::Online(Presence {
        user: user.clone(),
        session,
        capabilities: caps.clone(),
    }))
}

/// The request tag and call a message names, for error replies.
/// Whether `n` exceeds the limit `max` (0 = no limit).
fn over(n: usize, max: usize) -> bool {
    max != 0 && n > max
}

/// The bytes a resume's snapshot is weighed by against a delta (spec section 9.9.4):
/// its `online` frames whole, plus each contact's name with its quotes and comma in
/// `resumed.contacts` (3 bytes).
fn snapshot_cost(frames: &[Bytes], contacts: &[UserId]) -> usize {
    frames.iter().map(Bytes::len).sum::<usize>()
        + contacts.iter().map(|c| c.as_str().len() + 3).sum::<usize>()
}

/// The source a per-source limit counts a peer address by (spec section 13.6): an IPv4
/// address as it is (also one mapped into IPv6), an IPv6 address by its /64 prefix (the
/// rest zero), because one host or site is typically given a whole /64 and could
/// otherwise open every connection from another address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Whether a count has reached the limit `max` (0 = no limit).
fn over_or_at<T: PartialOrd + Default>(n: T, max: T) -> bool {
    max != T::default() && n >= max
}

/// Takes one off a per-source count, forgetting the source at zero.
fn count_down(counts: &mut BTreeMap<IpAddr, usize>, source: Option<IpAddr>) {
    if let Some(ip) = source {
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// Whether a message is a contact-list change (which may queue up behind another).
fn is_roster_request(msg: &ClientMessage) -> bool {
    matches!(
        msg,
        ClientMessage::AddContact { .. } | ClientMessage::RemoveContact { .. }
    )
}

fn request_tags(msg: &ClientMessage) -> (Option<ReqId>, Option<CallId>) {
    match msg {
        ClientMessage::UpdateCaps { req, .. }
        | ClientMessage::AddContact { req, .. }
        | ClientMessage::RemoveContact { req, .. }
        | ClientMessage::Call { req, .. }
        | ClientMessage::QueryCaps { req, .. } => (Some(*req), None),
        ClientMessage::CallRetry { call, .. }
        | ClientMessage::Accept { call, .. }
        | ClientMessage::Reject { call }
        | ClientMessage::NeedCaps { call }
        | ClientMessage::Hangup { call } => (None, Some(*call)),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_weighs_its_frames_and_its_contact_list() {
        let frames = [Bytes::from_static(&[0; 10]), Bytes::from_static(&[0; 7])];
        let contacts = [UserId::new("bob").unwrap(), UserId::new("carol").unwrap()];
        // 17 bytes of frames; `"bob",` and `"carol",`: 6 + 8.
        assert_eq!(snapshot_cost(&frames, &contacts), 17 + 6 + 8);
        assert_eq!(snapshot_cost(&[], &[]), 0);
    }
}
