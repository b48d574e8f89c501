//! The client state machine (spec section "Client state machine").
//!
//! [`Client`] holds one terminal's session: its contact list, the table of online
//! contact terminals with their capabilities and the call parameters pre-computed for
//! each (claim C1), and its calls. The application drives it with commands
//! ([`Client::login`], [`Client::place_call`], ...), the embedder feeds it the bytes the
//! server sent ([`Client::receive`]) and the passage of time
//! ([`Client::handle_timeout`]), and drains frames to send ([`Client::poll_transmit`])
//! and events for the application ([`Client::poll_event`]).
//!
//! The table is the point of the protocol: when the user presses "call", the
//! parameters are already there, and the call request carries two fingerprints instead
//! of capabilities (the fast path). The fallback paths that carry capabilities are taken
//! only when the callee's capabilities changed since they were pushed, or when the
//! callee's view of the caller does not match the digest (spec "Call set-up").
//!
//! One file per concern: `config` ([`ClientConfig`]); `events` (what the application is
//! told, [`ClientEvent`], and the typed errors, [`ClientError`], [`Violation`]); `session`
//! (log in, log out, detach and resume, the session's own requests); `table` (the online
//! state: contacts, the parameter table and the pushes that change it); `call` (placing,
//! answering and ending calls). This file holds the state they share, the input and the
//! outputs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::caps::Capabilities;
use crate::codec::{decode_message, encode_frame, FrameDecoder, MIN_MAX_FRAME};
use crate::error::DecodeError;
use crate::ids::{CallId, Endpoint, ReqId, SessionId, UserId};
use crate::message::{ClientMessage, ServerMessage, WireMessage};
use crate::time::Time;

mod call;
mod config;
mod events;
mod session;
mod table;

pub use call::{Call, CallState, Role, SetupPath};
pub use config::ClientConfig;
pub use events::{ClientError, ClientEvent, Violation};
pub use table::Peer;

use call::Dialing;
use table::Online;

/// What the client is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Not logged in; holds nothing.
    Idle,
    /// `login` sent; waiting for `login_ok`.
    LoggingIn,
    /// Logged in.
    Online,
    /// `logout` sent; everything already deleted (claim C5).
    LoggingOut,
    /// The connection dropped; the session is resumable ([`Client::resume`]) and the
    /// table is kept, but no command can be carried out.
    Detached,
    /// `resume` sent on a new connection; waiting for `resumed`.
    Resuming,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum State {
    Idle,
    LoggingIn,
    Online(Box<Online>),
    LoggingOut,
    Detached(Box<Online>),
    Resuming(Box<Online>),
}

/// The client state machine. See the module documentation, and the crate's "Driving a
/// client over a socket" for the loop around it.
///
/// ```
/// use precall_protocol::{Capabilities, Client, ClientConfig, LoginWith, Password, Status, Time, UserId};
///
/// let mut client = Client::new(ClientConfig::default());
/// let caps = Capabilities::builder().codecs(["h264"]).screen(1280, 720).bandwidth(1_000, 1_000).build()?;
/// client.login(UserId::new("alice")?, Password::new("pw")?, LoginWith::Capabilities(caps), Time(0)).unwrap();
/// // A command only queues frames: the embedder writes them.
/// let login = client.poll_transmit().expect("the login frame");
/// assert!(login.len() > 4);
/// assert_eq!(client.status(), Status::LoggingIn);
/// // No deadline until the login is answered: pings start once online.
/// assert_eq!(client.poll_timeout(), None);
/// # Ok::<(), precall_protocol::InvalidValue>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    config: ClientConfig,
    decoder: FrameDecoder,
    state: State,
    next_req: u32,
    last_sent: Time,
    out: VecDeque<Bytes>,
    events: VecDeque<ClientEvent>,
}

#[cfg(test)]
mod tests;

impl Client {
    /// A client that is not logged in.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            decoder: FrameDecoder::new(config.max_frame.max(MIN_MAX_FRAME)),
            config,
            state: State::Idle,
            next_req: 1,
            last_sent: Time::ZERO,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Bytes arrived from the server. Messages the spec says to reject are ignored and
    /// reported as [`ClientEvent::Violation`].
    ///
    /// An error (the stream broke the framing, or the server speaks another protocol
    /// version) ends the *connection*: close the socket. The session then goes as on
    /// [`Client::connection_closed`]: a resumable one is detached
    /// ([`ClientEvent::Detached`]; resume it on a new connection), any other is over
    /// ([`ClientEvent::LoggedOut`]).
    pub fn receive(&mut self, mut data: &[u8], now: Time) -> Result<(), ClientError> {
        while !data.is_empty() {
            match self.decoder.decode(&mut data) {
                Ok(None) => break,
                Ok(Some(payload)) => match decode_message::<ServerMessage>(&payload) {
                    Ok(msg) => self.handle_message(msg, now),
                    Err(DecodeError::UnknownType(t)) => {
                        self.violation(Violation::UnknownType(t));
                    }
                    // A server speaking another version: nothing else it says can be
                    // understood, so the session ends here.
                    Err(DecodeError::UnsupportedVersion(v)) => {
                        self.connection_closed(now);
                        return Err(ClientError::UnsupportedVersion(v));
                    }
                    Err(e) => self.violation(Violation::Malformed(e.to_string())),
                },
                Err(e) => {
                    self.connection_closed(now);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Sends the own capabilities again if a `caps_throttled` refusal's wait is over
    /// (section 8.5), and a `ping` if the client has been silent for the ping interval.
    pub fn handle_timeout(&mut self, now: Time) {
        let retry = self.online().and_then(|o| o.caps_retry);
        if retry.is_some_and(|t| now >= t) {
            self.retry_caps(now);
        }
        if let Some(t) = self.ping_deadline() {
            if now >= t {
                self.send(&ClientMessage::Ping {}, now);
            }
        }
    }

    /// Handles one decoded server message (also used by embedders that decode
    /// themselves).
    pub fn handle_message(&mut self, msg: ServerMessage, now: Time) {
        match (&mut self.state, msg) {
            // Embedders that decode themselves bypass the decoder's version check.
            (State::LoggingIn, ServerMessage::LoginOk { version, .. })
                if version != crate::message::PROTOCOL_VERSION =>
            {
                self.wrong_version();
            }
            (
                State::LoggingIn,
                ServerMessage::LoginOk {
                    user,
                    session,
                    capabilities,
                    contacts,
                    resume_token,
                    ..
                },
            ) => {
                self.state = State::Online(Box::new(Online {
                    user,
                    session,
                    fingerprint: capabilities.fingerprint(),
                    caps: capabilities,
                    contacts: contacts.into_iter().collect(),
                    peers: BTreeMap::new(),
                    synced: false,
                    token: resume_token,
                    seen: None,
                    seen_at_sync: 0,
                    caps_in_flight: BTreeSet::new(),
                    caps_retry: None,
                    dialing: BTreeMap::new(),
                    queries: BTreeSet::new(),
                    calls: BTreeMap::new(),
                    outbox: Vec::new(),
                }));
                self.events.push_back(ClientEvent::LoggedIn { session });
            }
            (
                State::Resuming(on),
                ServerMessage::Resumed {
                    version, session, ..
                },
            ) if session == on.session && version != crate::message::PROTOCOL_VERSION => {
                self.wrong_version();
            }
            (
                State::Resuming(on),
                ServerMessage::Resumed {
                    session,
                    capabilities,
                    seq,
                    contacts,
                    ..
                },
            ) if session == on.session => self.resumed(capabilities, seq, contacts, now),
            // The login completed before the server saw the logout: `logged_out` follows.
            (State::LoggingOut, ServerMessage::LoginOk { .. }) => {}
            (_, ServerMessage::LoginOk { .. }) => self.violation(Violation::UnexpectedLogin),
            (_, ServerMessage::Pong {}) => {}
            (State::LoggingOut, ServerMessage::LoggedOut {}) => {
                self.state = State::Idle;
                self.events.push_back(ClientEvent::LoggedOut);
            }
            (
                _,
                ServerMessage::Error {
                    code,
                    req,
                    call,
                    retry_after_ms,
                    detail,
                },
            ) => {
                let retry_after = retry_after_ms.map(Duration::from_millis);
                self.server_error(code, req, call, retry_after, detail, now)
            }
            // Anything else in flight when the user logged out is dropped: the client
            // holds nothing after logout (C5).
            (State::LoggingOut, _) => {}
            (State::Online(on), msg) => {
                if let Some(v) = on.handle(msg, &mut self.events) {
                    self.violation(v);
                }
                self.flush_pending(now);
            }
            (_, msg) => self.violation(Violation::NotOnline(msg.type_name())),
        }
    }

    /// The next frame to write to the server.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must next be called (the next ping, or the
    /// retry of a throttled `update_caps`, whichever comes first), if logged in.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let retry = self.online().and_then(|o| o.caps_retry);
        match (self.ping_deadline(), retry) {
            (Some(ping), Some(retry)) => Some(ping.min(retry)),
            (ping, retry) => ping.or(retry),
        }
    }

    /// When the next `ping` is due, if logged in.
    fn ping_deadline(&self) -> Option<Time> {
        matches!(self.state, State::Online(_))
            .then(|| self.last_sent.after(self.config.ping_interval))
    }

    /// What the client is doing.
    pub fn status(&self) -> Status {
        match self.state {
            State::Idle => Status::Idle,
            State::LoggingIn => Status::LoggingIn,
            State::Online(_) => Status::Online,
            State::LoggingOut => Status::LoggingOut,
            State::Detached(_) => Status::Detached,
            State::Resuming(_) => Status::Resuming,
        }
    }

    /// The session held: online, or detached or resuming (whose table is kept).
    fn online(&self) -> Option<&Online> {
        match &self.state {
            State::Online(on) | State::Detached(on) | State::Resuming(on) => Some(on),
            _ => None,
        }
    }

    /// The logged-in user.
    pub fn user(&self) -> Option<&UserId> {
        self.online().map(|o| &o.user)
    }

    /// This terminal's session.
    pub fn session(&self) -> Option<SessionId> {
        self.online().map(|o| o.session)
    }

    /// This terminal's endpoint.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.online().map(|o| Endpoint {
            user: o.user.clone(),
            session: o.session,
        })
    }

    /// This terminal's current capabilities.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.online().map(|o| &o.caps)
    }

    /// The contact list.
    pub fn contacts(&self) -> impl Iterator<Item = &UserId> {
        self.online().into_iter().flat_map(|o| o.contacts.iter())
    }

    /// The table: every online contact terminal with its capabilities and parameters.
    /// Empty unless logged in.
    pub fn peers(&self) -> impl Iterator<Item = (&Endpoint, &Peer)> {
        self.online().into_iter().flat_map(|o| o.peers.iter())
    }

    /// One table entry.
    pub fn peer(&self, endpoint: &Endpoint) -> Option<&Peer> {
        self.online()?.peers.get(endpoint)
    }

    /// Whether the client is online and its table complete (the login snapshot or a
    /// resume's catch-up has been received completely).
    pub fn is_synced(&self) -> bool {
        matches!(&self.state, State::Online(on) if on.synced)
    }

    /// Whether a session could be resumed now ([`Client::resume`]).
    pub fn can_resume(&self) -> bool {
        matches!(&self.state, State::Detached(on) if on.token.is_some())
    }

    /// Whether a capability change is not yet acknowledged (sent, or refused with
    /// `caps_throttled` and waiting to be sent again).
    pub fn caps_in_flight(&self) -> bool {
        self.online()
            .is_some_and(|o| !o.caps_in_flight.is_empty() || o.caps_retry.is_some())
    }

    /// The calls, in call order.
    pub fn calls(&self) -> impl Iterator<Item = (&CallId, &Call)> {
        self.online().into_iter().flat_map(|o| o.calls.iter())
    }

    /// Number of call requests waiting for `call_ringing`.
    pub fn dialing(&self) -> usize {
        self.online().map_or(0, |o| o.dialing.len())
    }

    /// Whether two clients are equal but for the count of table frames seen, which a
    /// refused table frame still advances (section 8.2): for the fuzz oracle.
    #[cfg(feature = "arbitrary")]
    pub(crate) fn eq_but_seen(&self, other: &Client) -> bool {
        let mut a = self.clone();
        if let (State::Online(x), State::Online(y)) = (&mut a.state, &other.state) {
            x.seen = y.seen;
        }
        a == *other
    }

    fn next_req(&mut self) -> ReqId {
        let r = ReqId(self.next_req);
        self.next_req = self.next_req.wrapping_add(1);
        r
    }

    fn online_mut(&mut self) -> Result<&mut Online, ClientError> {
        match &mut self.state {
            State::Online(on) => Ok(on),
            _ => Err(ClientError::NotLoggedIn),
        }
    }

    fn send(&mut self, msg: &ClientMessage, now: Time) {
        self.out.push_back(encode_frame(msg));
        self.last_sent = now;
    }

    fn violation(&mut self, v: Violation) {
        self.events.push_back(ClientEvent::Violation(v));
    }
}
