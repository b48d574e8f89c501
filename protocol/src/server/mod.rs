//! The server state machine (spec section "Server state machine").
//!
//! [`Server`] owns every connection's framing, every session, the in-memory contact
//! lists of online users and every call; it decides every message the server sends.
//! It performs no I/O: the embedder feeds it events ([`Server::connect`],
//! [`Server::receive`], [`Server::connection_closed`], [`Server::complete_auth`],
//! [`Server::handle_timeout`], [`Server::change_roster`]) and drains
//! [`Server::poll_event`] for frames to write, connections to close, credential checks
//! to run and roster changes to persist.
//!
//! Credential checks may be slow (a password hash), so the core never performs them:
//! it emits [`ServerEvent::Authenticate`] and continues serving everyone else until the
//! embedder calls [`Server::complete_auth`] with the verdict.
//!
//! One file per concern: `config` ([`ServerConfig`], [`Limits`]); `events` (what the
//! embedder is asked, [`ServerEvent`], and what it answers, [`AuthVerdict`],
//! [`StoreOutcome`]); `input` (connections, framing, dispatch, deadlines); `admission`
//! (who may connect and log in, credential checks one source at a time); `session`
//! (sessions, detach and resume); `users` (online users and their contact lists, with
//! user names interned: a dense number per name, so visibility checks and the fan-out
//! compare integers); `roster` (contact-list changes, visibility, presence fan-out);
//! `call` (call relay); `cluster` (sessions of other nodes, spec "Clustering"). This file holds the state they share and the read-only views.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::caps::Capabilities;
use crate::codec::{encode_frame, FrameDecoder};
use crate::error::ErrorCode;
use crate::ids::{CallId, ConnId, Endpoint, ReqId, SessionId, TerminalId, UserId};
use crate::message::{ClientMessage, LoginWith, ServerMessage};
use crate::resume::ResumeToken;
use crate::time::{millis, Time};

mod admission;
mod call;
mod cluster;
mod config;
mod events;
mod input;
mod roster;
mod session;
mod users;

pub use admission::source_key;
pub use cluster::RemoteView;
pub use config::{Limits, ServerConfig, MAX_CONTACTS};
pub use events::{
    AuthRequest, AuthTicket, AuthVerdict, RelayMessage, ServerError, ServerEvent, SessionRecord,
    StoreOutcome, StoreRequest, StoreTicket,
};

pub use users::Contacts;

use admission::Window;
use call::{Call, CallRequest};
use cluster::Remote;
use users::Users;

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
///
/// ```
/// use precall_protocol::codec::encode_frame;
/// use precall_protocol::{
///     Capabilities, ClientMessage, ConnId, LoginWith, Password, Server, ServerConfig,
///     ServerEvent, Time, UserId, PROTOCOL_VERSION,
/// };
///
/// let mut server = Server::new(ServerConfig::default());
/// server.connect(ConnId(7), Time(0)).unwrap();
/// let caps = Capabilities::builder().codecs(["vp8"]).screen(640, 360).bandwidth(500, 500).build()?;
/// let login = ClientMessage::Login {
///     version: PROTOCOL_VERSION,
///     user: UserId::new("bob")?,
///     password: Password::new("pw")?,
///     with: LoginWith::Capabilities(caps),
/// };
/// server.receive(ConnId(7), &encode_frame(&login), Time(1));
/// // The core never checks a password itself: it asks the embedder to.
/// let Some(ServerEvent::Authenticate(req)) = server.poll_event() else { panic!() };
/// assert_eq!((req.conn, req.user.as_str()), (ConnId(7), "bob"));
/// # Ok::<(), precall_protocol::InvalidValue>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Server {
    config: ServerConfig,
    conns: BTreeMap<ConnId, Conn>,
    sessions: BTreeMap<SessionId, Session>,
    /// Sessions of other nodes (clustered nodes only), also listed among their users'
    /// sessions in `users`.
    remote: BTreeMap<SessionId, Remote>,
    /// Online users and the names they list, interned; compared and hashed by content.
    users: Users,
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

/// Whether `n` exceeds the limit `max` (0 = no limit).
fn over(n: usize, max: usize) -> bool {
    max != 0 && n > max
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

impl Conn {
    /// Whether this connection's input waits: for the store (a request stalled behind
    /// its changes, or `max_unstored` changes waiting), or for its frame rate.
    fn paused(&self, max_unstored: usize) -> bool {
        self.stalled.is_some() || self.unstored >= max_unstored || self.throttled.is_some()
    }
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

impl Server {
    /// A server with no connections.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            remote: BTreeMap::new(),
            users: Users::default(),
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

    /// The next thing the embedder must do, in order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.out.pop_front()
    }

    /// When [`Server::handle_timeout`] must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deadlines.first().map(|(t, _)| *t)
    }

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
    pub fn contacts_of(&self, user: &UserId) -> Option<Contacts<'_>> {
        let (_, online) = self.users.by_name(user)?;
        Some(Contacts::new(&self.users, online))
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
}
