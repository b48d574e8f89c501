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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use crate::caps::{CallDigest, CallParams, Capabilities, Fingerprint};
use crate::codec::{decode_message, encode_frame, FrameDecoder, DEFAULT_MAX_FRAME, MIN_MAX_FRAME};
use crate::error::{DecodeError, ErrorCode, FrameError};
use crate::ids::{CallId, Endpoint, Password, ReqId, SessionId, UserId};
use crate::message::{ClientMessage, EndReason, LoginWith, Presence, ServerMessage, WireMessage};
use crate::negotiate::negotiate_pair;
use crate::resume::ResumeToken;
use crate::time::Time;

/// Client timers and limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientConfig {
    /// Largest frame payload accepted from the server; values below
    /// [`crate::codec::MIN_MAX_FRAME`] act as that minimum.
    pub max_frame: u32,
    /// How long the client may stay silent while logged in before it sends `ping`;
    /// must be well below the server's idle timeout.
    pub ping_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            ping_interval: Duration::from_secs(20),
        }
    }
}

/// A contact terminal in the table: its capabilities and the parameters of a call
/// with it, computed when its capabilities arrived.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The terminal's capabilities, as last pushed by the server.
    pub capabilities: Capabilities,
    /// Their fingerprint.
    pub fingerprint: Fingerprint,
    /// The call parameters from this terminal's point of view.
    pub params: CallParams,
}

/// How a call's parameters were agreed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetupPath {
    /// From the pre-computed table: no capability crossed the wire during set-up.
    Fast,
    /// At least one party's capabilities travelled in the call signalling.
    Fallback,
}

/// This end's role in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// This terminal placed the call.
    Caller,
    /// This terminal was called.
    Callee,
}

/// Where a call stands, from this end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallState {
    /// Caller: the request is relayed; waiting for the callee.
    Ringing,
    /// Callee: the caller's capabilities were asked for.
    AwaitingCallerCaps,
    /// Callee: waiting for the application to accept or reject.
    Incoming,
    /// Media may flow with the call's parameters.
    Established,
}

/// A call of this terminal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Call {
    /// The other terminal.
    pub peer: Endpoint,
    /// This end's role.
    pub role: Role,
    /// Where it stands.
    pub state: CallState,
    /// The parameters, from this end's point of view (known once ringing or incoming).
    pub params: Option<CallParams>,
    /// Whether any capabilities travelled in this call's signalling so far.
    pub caps_on_wire: bool,
    /// Whether this end must send its capabilities when it accepts (callee only).
    send_caps_on_accept: bool,
    /// The digest the caller sent.
    pub digest: CallDigest,
}

impl Call {
    /// The path, once established.
    pub fn path(&self) -> SetupPath {
        if self.caps_on_wire {
            SetupPath::Fallback
        } else {
            SetupPath::Fast
        }
    }
}

/// A call request waiting for the server's `call_ringing`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Dialing {
    peer: Endpoint,
    /// The pre-computed parameters; `None` for a prior-art call, whose parameters are
    /// computed from the callee's answer.
    params: Option<CallParams>,
    digest: CallDigest,
    caps_sent: bool,
}

/// What the client is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
struct Online {
    user: UserId,
    session: SessionId,
    caps: Capabilities,
    fingerprint: Fingerprint,
    contacts: BTreeSet<UserId>,
    peers: BTreeMap<Endpoint, Peer>,
    synced: bool,
    /// The resume credential from `login_ok`.
    token: Option<ResumeToken>,
    /// The number of the last table frame processed; `None` until `synced`.
    seen: Option<u64>,
    /// What `seen` becomes at the next `synced` (the `seq` of `resumed`).
    seen_at_sync: u64,
    /// Tags of `update_caps` requests not yet acknowledged.
    caps_in_flight: BTreeSet<ReqId>,
    /// When to send the own capabilities again, after the server refused an
    /// `update_caps` with `caps_throttled` (section 8.5).
    caps_retry: Option<Time>,
    dialing: BTreeMap<ReqId, Dialing>,
    /// Tags of capability queries (query-first baseline) not yet answered.
    queries: BTreeSet<ReqId>,
    calls: BTreeMap<CallId, Call>,
    /// Messages the session decided to send on its own (the automatic answers of the
    /// fallback paths), drained into the transmit queue after each message.
    outbox: Vec<ClientMessage>,
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

/// Something the application should know.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Login succeeded.
    LoggedIn {
        /// This terminal's session.
        session: SessionId,
    },
    /// The login snapshot (or a resume's catch-up) is complete: the table holds every
    /// online contact terminal.
    Synced,
    /// The connection dropped but the session is resumable: the table is kept; calls
    /// ended ([`ClientEvent::CallEnded`] with `peer_gone` precede this). Reconnect
    /// with back-off ([`crate::resume::Backoff`]) and call [`Client::resume`].
    Detached,
    /// A resume succeeded; the catch-up follows, ended by [`ClientEvent::Synced`].
    Resumed {
        /// This terminal's session (the same as before).
        session: SessionId,
        /// Whether the server sent a full snapshot (the table was rebuilt) rather than
        /// only what was missed.
        snapshot: bool,
    },
    /// A contact terminal came online; its parameters are ready (claim C1).
    PeerOnline {
        /// The terminal.
        endpoint: Endpoint,
        /// The pre-computed parameters.
        params: CallParams,
    },
    /// A contact terminal's capabilities changed; its parameters were recomputed.
    PeerUpdated {
        /// The terminal.
        endpoint: Endpoint,
        /// The new parameters.
        params: CallParams,
    },
    /// A contact terminal went offline; its entry is deleted (claim C4).
    PeerOffline {
        /// The terminal.
        endpoint: Endpoint,
    },
    /// The contact list changed.
    ContactsChanged {
        /// The user added or removed.
        user: UserId,
        /// `true` if added.
        added: bool,
    },
    /// The server recorded this terminal's new capabilities.
    CapsAcknowledged,
    /// A placed call is ringing at the callee.
    CallRinging {
        /// The tag [`Client::place_call`] returned.
        req: ReqId,
        /// The call.
        call: CallId,
    },
    /// A call for this terminal; answer with [`Client::answer`].
    IncomingCall {
        /// The call.
        call: CallId,
        /// The caller.
        from: Endpoint,
        /// The parameters the call will use, from this end.
        params: CallParams,
    },
    /// A call is established.
    CallEstablished {
        /// The call.
        call: CallId,
        /// The parameters, from this end.
        params: CallParams,
        /// Fast or fallback.
        path: SetupPath,
    },
    /// A call ended.
    CallEnded {
        /// The call.
        call: CallId,
        /// Why.
        reason: EndReason,
    },
    /// The answer to [`Client::query_caps`] (query-first baseline): the terminal's
    /// capabilities and the parameters negotiated from them. The table is not changed.
    CapsResult {
        /// The tag [`Client::query_caps`] returned.
        req: ReqId,
        /// The terminal that answered.
        from: Endpoint,
        /// Its capabilities.
        capabilities: Capabilities,
        /// The parameters a call with it would use, from this end.
        params: CallParams,
    },
    /// A call request failed before ringing.
    CallFailed {
        /// The tag [`Client::place_call`] returned.
        req: ReqId,
        /// The server's error code.
        code: ErrorCode,
    },
    /// The server reported an error.
    ServerError {
        /// The code.
        code: ErrorCode,
        /// The request concerned.
        req: Option<ReqId>,
        /// The call concerned.
        call: Option<CallId>,
        /// How long to wait before trying again, if the server said.
        retry_after: Option<Duration>,
    },
    /// The session is over (logout completed, login or resume refused, fatal error,
    /// the connection was lost without a resumable session, or the resumable session
    /// was abandoned); everything was deleted.
    LoggedOut,
    /// The server sent something the spec forbids in this state; it was ignored.
    Violation(Violation),
}

/// A server message the client refused (spec "Client state machine", rejections).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum Violation {
    /// A message that needs a session arrived outside one.
    #[error("{0} outside a session")]
    NotOnline(&'static str),
    /// `login_ok` when no login was pending.
    #[error("unexpected login_ok")]
    UnexpectedLogin,
    /// `online` for a user not in the contact list, or for this user.
    #[error("presence of a non-contact {0}")]
    NotAContact(UserId),
    /// A call message for a call this terminal does not have, or in the wrong state.
    #[error("unexpected {what} for call {call}")]
    UnexpectedCall {
        /// The message type.
        what: &'static str,
        /// The call.
        call: CallId,
    },
    /// An answer for a request tag this terminal did not send.
    #[error("unexpected {what} for request {req}")]
    UnexpectedReq {
        /// The message type.
        what: &'static str,
        /// The tag.
        req: ReqId,
    },
    /// A message this client never expects in its current state.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    /// A message type this client does not know (ignored, as the spec says).
    #[error("unknown message type {0}")]
    UnknownType(String),
    /// A payload that does not decode.
    #[error("malformed message from server: {0}")]
    Malformed(String),
}

/// A command the client cannot carry out in its current state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The command needs a logged-in session.
    #[error("not logged in")]
    NotLoggedIn,
    /// [`Client::resume`] without a detached session.
    #[error("no detached session to resume")]
    NotDetached,
    /// `login` while a session exists or is being set up.
    #[error("already logged in or logging in")]
    AlreadyLoggedIn,
    /// No online terminal with that endpoint in the table.
    #[error("{0} is not an online contact terminal")]
    UnknownPeer(Endpoint),
    /// No such call in a state that allows the command.
    #[error("call {0} does not exist or cannot do that now")]
    UnknownCall(CallId),
    /// A capability change while a call is being set up would make the call's
    /// parameters ambiguous: wait until it is established or ended.
    #[error("a call is being set up")]
    CallSetupInProgress,
    /// The server answered the login with a protocol version this client does not
    /// speak; the session is over.
    #[error("server speaks unsupported protocol version {0}")]
    UnsupportedVersion(u64),
    /// The server's byte stream broke the framing; the session is over.
    #[error("framing error: {0}")]
    Framing(#[from] FrameError),
}

/// The client state machine. See the module documentation.
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

    // ----- commands --------------------------------------------------------------

    /// Sends a login with the user's credentials and either the terminal's
    /// capabilities (claim C2) or its registered identifier (claim C3).
    pub fn login(
        &mut self,
        user: UserId,
        password: Password,
        with: LoginWith,
        now: Time,
    ) -> Result<(), ClientError> {
        match self.state {
            State::Idle => {}
            // A new login gives up the detached session and its table.
            State::Detached(_) => self.abandon(now),
            _ => return Err(ClientError::AlreadyLoggedIn),
        }
        self.decoder = FrameDecoder::new(self.config.max_frame.max(MIN_MAX_FRAME));
        self.state = State::LoggingIn;
        self.send(
            &ClientMessage::Login {
                version: crate::message::PROTOCOL_VERSION,
                user,
                password,
                with,
            },
            now,
        );
        Ok(())
    }

    /// The user logs out: sends `logout` and deletes every received capability and
    /// every computed parameter at once (claim C5).
    pub fn logout(&mut self, now: Time) -> Result<(), ClientError> {
        match self.state {
            State::Online(_) | State::LoggingIn => {
                self.send(&ClientMessage::Logout {}, now);
                self.state = State::LoggingOut;
                Ok(())
            }
            _ => Err(ClientError::NotLoggedIn),
        }
    }

    /// The transport connection was lost. A logged-in session with a resume token is
    /// detached: its calls end, the table is kept, and [`Client::resume`] may take it
    /// over on a new connection (spec "Resumable sessions"). Otherwise everything is
    /// deleted and the client is idle.
    pub fn connection_lost(&mut self, now: Time) {
        let _ = now;
        self.out.clear();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {}
            State::Online(mut on) | State::Resuming(mut on) if on.token.is_some() => {
                for call in std::mem::take(&mut on.calls).into_keys() {
                    let reason = EndReason::PeerGone;
                    self.events
                        .push_back(ClientEvent::CallEnded { call, reason });
                }
                for req in std::mem::take(&mut on.dialing).into_keys() {
                    let code = ErrorCode::NotReachable;
                    self.events.push_back(ClientEvent::CallFailed { req, code });
                }
                // What was in flight may or may not have reached the server; `resumed`
                // tells which capabilities it holds.
                on.caps_in_flight.clear();
                on.caps_retry = None;
                on.queries.clear();
                on.outbox.clear();
                self.state = State::Detached(on);
                self.events.push_back(ClientEvent::Detached);
            }
            State::Detached(on) => self.state = State::Detached(on),
            _ => self.events.push_back(ClientEvent::LoggedOut),
        }
    }

    /// Takes the detached session over on a new connection: sends `resume` with the
    /// token and the number of table frames processed (spec "Resumable sessions").
    /// No password is needed.
    pub fn resume(&mut self, now: Time) -> Result<(), ClientError> {
        // A refused command changes nothing (section 8.2).
        let State::Detached(on) = &self.state else {
            return Err(ClientError::NotDetached);
        };
        let Some(token) = on.token.clone() else {
            return Err(ClientError::NotDetached);
        };
        let seen = on.seen;
        let State::Detached(on) = std::mem::replace(&mut self.state, State::Idle) else {
            return Err(ClientError::NotDetached);
        };
        self.decoder = FrameDecoder::new(self.config.max_frame.max(MIN_MAX_FRAME));
        self.state = State::Resuming(on);
        self.send(
            &ClientMessage::Resume {
                version: crate::message::PROTOCOL_VERSION,
                token,
                seen,
            },
            now,
        );
        Ok(())
    }

    /// Gives up a detached (or resuming) session: everything is deleted and the client
    /// is idle, as after a logout (claim C5). The server ends the session when its
    /// grace runs out.
    pub fn abandon(&mut self, now: Time) {
        let _ = now;
        if matches!(self.state, State::Detached(_) | State::Resuming(_)) {
            self.out.clear();
            self.state = State::Idle;
            self.events.push_back(ClientEvent::LoggedOut);
        }
    }

    /// This terminal's capabilities changed: recompute every parameter at once and
    /// tell the server. Returns the request tag.
    pub fn update_caps(&mut self, caps: Capabilities, now: Time) -> Result<ReqId, ClientError> {
        // Taken only if the command is carried out: a refused one changes nothing.
        let req = ReqId(self.next_req);
        let on = self.online_mut()?;
        let setting_up =
            on.calls.values().any(|c| c.state != CallState::Established) || !on.dialing.is_empty();
        if setting_up {
            return Err(ClientError::CallSetupInProgress);
        }
        on.fingerprint = caps.fingerprint();
        on.caps = caps.clone();
        on.caps_in_flight.insert(req);
        // This request carries the newest capabilities: a pending retry is superseded.
        on.caps_retry = None;
        let own = on.caps.clone();
        for peer in on.peers.values_mut() {
            peer.params = negotiate_pair(&own, &peer.capabilities);
        }
        self.next_req();
        self.send(
            &ClientMessage::UpdateCaps {
                req,
                capabilities: caps,
            },
            now,
        );
        Ok(req)
    }

    /// Asks the server to add a user to the contact list.
    pub fn add_contact(&mut self, user: UserId, now: Time) -> Result<ReqId, ClientError> {
        self.online_mut()?;
        let req = self.next_req();
        self.send(&ClientMessage::AddContact { req, user }, now);
        Ok(req)
    }

    /// Asks the server to remove a user from the contact list.
    pub fn remove_contact(&mut self, user: UserId, now: Time) -> Result<ReqId, ClientError> {
        self.online_mut()?;
        let req = self.next_req();
        self.send(&ClientMessage::RemoveContact { req, user }, now);
        Ok(req)
    }

    /// Calls an online contact terminal with the pre-computed parameters. The request
    /// carries the digest only, never capabilities, even while a change of this
    /// terminal's capabilities is unacknowledged: the server relays the change to the
    /// callee before it relays the call (spec "Call set-up"). The callee falls back
    /// only if its own capabilities changed or its view of the caller does not match
    /// the digest. Returns the request tag that [`ClientEvent::CallRinging`] or
    /// [`ClientEvent::CallFailed`] echoes.
    pub fn place_call(&mut self, to: &Endpoint, now: Time) -> Result<ReqId, ClientError> {
        let on = self.online_mut()?;
        let peer = on
            .peers
            .get(to)
            .ok_or_else(|| ClientError::UnknownPeer(to.clone()))?;
        let digest = CallDigest {
            caller: on.fingerprint,
            callee: peer.fingerprint,
        };
        let params = Some(peer.params.clone());
        Ok(self.dial(to, params, digest, None, now))
    }

    /// Calls an online contact terminal the way the patent's prior art does (spec
    /// "Call set-up", prior-art call): the request carries this terminal's
    /// capabilities and names no callee capabilities (an all-zero
    /// [`CallDigest::callee`]), so the callee negotiates from the request and answers
    /// with its own capabilities, and this end computes the parameters from that answer.
    /// The table is not used. Exists as the baseline the fast path is measured against.
    pub fn place_call_exchanging_capabilities(
        &mut self,
        to: &Endpoint,
        now: Time,
    ) -> Result<ReqId, ClientError> {
        let on = self.online_mut()?;
        if !on.peers.contains_key(to) {
            return Err(ClientError::UnknownPeer(to.clone()));
        }
        let digest = CallDigest {
            caller: on.fingerprint,
            callee: Fingerprint::NONE,
        };
        let capabilities = Some(on.caps.clone());
        Ok(self.dial(to, None, digest, capabilities, now))
    }

    /// Records a call request as dialing and sends it. The request tag is taken only
    /// here, once the command is carried out: a refused command changes nothing.
    fn dial(
        &mut self,
        to: &Endpoint,
        params: Option<CallParams>,
        digest: CallDigest,
        capabilities: Option<Capabilities>,
        now: Time,
    ) -> ReqId {
        let req = self.next_req();
        if let State::Online(on) = &mut self.state {
            let dialing = Dialing {
                peer: to.clone(),
                params,
                digest,
                caps_sent: capabilities.is_some(),
            };
            on.dialing.insert(req, dialing);
        }
        let to = to.clone();
        self.send(
            &ClientMessage::Call {
                req,
                to,
                digest,
                capabilities,
            },
            now,
        );
        req
    }

    /// Asks a terminal for its capabilities, the way a client without pushed
    /// capabilities must before a call (the query-first baseline, spec section 10.7).
    /// The answer arrives as [`ClientEvent::CapsResult`]; the table is not used.
    pub fn query_caps(&mut self, to: &Endpoint, now: Time) -> Result<ReqId, ClientError> {
        let req = ReqId(self.next_req);
        self.online_mut()?.queries.insert(req);
        self.next_req();
        self.send(
            &ClientMessage::QueryCaps {
                req,
                to: to.clone(),
            },
            now,
        );
        Ok(req)
    }

    /// Accepts or rejects an incoming call.
    pub fn answer(&mut self, call: CallId, accept: bool, now: Time) -> Result<(), ClientError> {
        let on = self.online_mut()?;
        let Some(c) = on
            .calls
            .get_mut(&call)
            .filter(|c| c.state == CallState::Incoming)
        else {
            return Err(ClientError::UnknownCall(call));
        };
        if !accept {
            on.calls.remove(&call);
            self.send(&ClientMessage::Reject { call }, now);
            return Ok(());
        }
        c.state = CallState::Established;
        let caps = c.send_caps_on_accept.then(|| on.caps.clone());
        c.caps_on_wire |= caps.is_some();
        let (params, path) = (c.params.clone(), c.path());
        self.send(
            &ClientMessage::Accept {
                call,
                capabilities: caps,
            },
            now,
        );
        if let Some(params) = params {
            self.events
                .push_back(ClientEvent::CallEstablished { call, params, path });
        }
        Ok(())
    }

    /// Ends a call, ringing or established.
    pub fn hangup(&mut self, call: CallId, now: Time) -> Result<(), ClientError> {
        let on = self.online_mut()?;
        if on.calls.remove(&call).is_none() {
            return Err(ClientError::UnknownCall(call));
        }
        self.send(&ClientMessage::Hangup { call }, now);
        Ok(())
    }

    // ----- events in -------------------------------------------------------------

    /// Bytes arrived from the server. Messages the spec says to reject are ignored and
    /// reported as [`ClientEvent::Violation`]; a framing error ends the session.
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
                        self.connection_lost(now);
                        return Err(ClientError::UnsupportedVersion(v));
                    }
                    Err(e) => self.violation(Violation::Malformed(e.to_string())),
                },
                Err(e) => {
                    self.connection_lost(now);
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

    /// Sends the own current capabilities again after a `caps_throttled`; while a call
    /// is being set up (when `update_caps` is not allowed) tries again a second later.
    fn retry_caps(&mut self, now: Time) {
        let Some(own) = self.online().map(|o| o.caps.clone()) else {
            return;
        };
        if self.update_caps(own, now).is_err() {
            if let State::Online(on) = &mut self.state {
                on.caps_retry = Some(now.after(Duration::from_secs(1)));
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
                    ..
                },
            ) => {
                let retry_after = retry_after_ms.map(Duration::from_millis);
                self.server_error(code, req, call, retry_after, now)
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

    // ----- outputs ---------------------------------------------------------------

    /// The next frame to write to the server.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must next be called (the next ping, or the
    /// retry of a throttled `update_caps`, whichever comes first), if logged in.
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

    // ----- read-only views -------------------------------------------------------

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

    // ----- internals -------------------------------------------------------------

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

    /// Sends what [`Online::handle`] decided to send (the automatic answers of the
    /// fallback paths).
    fn flush_pending(&mut self, now: Time) {
        let msgs = match &mut self.state {
            State::Online(on) => std::mem::take(&mut on.outbox),
            _ => return,
        };
        for m in msgs {
            self.send(&m, now);
        }
    }

    /// A `login_ok` or `resumed` of another protocol version: the session is over.
    fn wrong_version(&mut self) {
        self.state = State::Idle;
        self.events.push_back(ClientEvent::ServerError {
            code: ErrorCode::UnsupportedVersion,
            req: None,
            call: None,
            retry_after: None,
        });
        self.events.push_back(ClientEvent::LoggedOut);
    }

    /// `resumed` for this session: online again; a snapshot replaces the table. If the
    /// server holds other capabilities than this terminal has (an `update_caps` lost
    /// with the connection), they are sent again.
    fn resumed(&mut self, caps: Capabilities, seq: u64, contacts: Option<Vec<UserId>>, now: Time) {
        let State::Resuming(mut on) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        let snapshot = contacts.is_some();
        if let Some(contacts) = contacts {
            for endpoint in std::mem::take(&mut on.peers).into_keys() {
                self.events.push_back(ClientEvent::PeerOffline { endpoint });
            }
            on.contacts = contacts.into_iter().collect();
        }
        // Counting resumes at `synced`: a catch-up cut short is not counted as seen,
        // so the next resume gets a snapshot.
        on.seen = None;
        on.seen_at_sync = seq;
        on.synced = false;
        let session = on.session;
        let own = on.caps.clone();
        let stale = caps.fingerprint() != on.fingerprint;
        self.state = State::Online(on);
        self.events
            .push_back(ClientEvent::Resumed { session, snapshot });
        if stale {
            // Cannot fail: online, and no call exists after a drop.
            let _ = self.update_caps(own, now);
        }
    }

    fn server_error(
        &mut self,
        code: ErrorCode,
        req: Option<ReqId>,
        call: Option<CallId>,
        retry_after: Option<Duration>,
        now: Time,
    ) {
        let event = ClientEvent::ServerError {
            code,
            req,
            call,
            retry_after,
        };
        let resuming = matches!(self.state, State::Resuming(_));
        if code.is_fatal() && code.refuses_connection() && resuming {
            // The server refused the connection without looking at the `resume`: the
            // session is still detached there (section 9.9.6).
            if let State::Resuming(on) = std::mem::replace(&mut self.state, State::Idle) {
                self.state = State::Detached(on);
            }
            self.out.clear();
            self.events.push_back(event);
            self.events.push_back(ClientEvent::Detached);
            return;
        }
        if code.is_fatal() {
            // The server closes the connection next; nothing may be kept (C5).
            if self.state != State::Idle {
                self.state = State::Idle;
                self.events.push_back(event);
                self.events.push_back(ClientEvent::LoggedOut);
            }
            return;
        }
        if let (State::Online(on), Some(r)) = (&mut self.state, req) {
            if on.dialing.remove(&r).is_some() {
                self.events
                    .push_back(ClientEvent::CallFailed { req: r, code });
                return;
            }
            if on.caps_in_flight.remove(&r) && code == ErrorCode::CapsThrottled {
                // Not applied: the same (or newer) capabilities go again when allowed.
                let wait = retry_after.unwrap_or(Duration::from_secs(1));
                on.caps_retry = Some(now.after(wait));
            }
            on.queries.remove(&r);
        }
        if let (State::Online(on), Some(c)) = (&mut self.state, call) {
            on.calls.remove(&c);
        }
        self.events.push_back(event);
    }
}

impl Online {
    /// Handles a message while logged in. Returns a violation if the message must be
    /// refused.
    fn handle(
        &mut self,
        msg: ServerMessage,
        events: &mut VecDeque<ClientEvent>,
    ) -> Option<Violation> {
        // Every table frame after `synced` counts for a resume, whatever it does here
        // (the server numbered it when it sent it).
        if matches!(
            msg,
            ServerMessage::Online(_)
                | ServerMessage::Offline(_)
                | ServerMessage::ContactAdded { .. }
                | ServerMessage::ContactRemoved { .. }
        ) {
            if let Some(n) = self.seen.as_mut() {
                *n += 1;
            }
        }
        match msg {
            ServerMessage::Synced {} => {
                self.synced = true;
                self.seen.get_or_insert(self.seen_at_sync);
                events.push_back(ClientEvent::Synced);
            }
            ServerMessage::Online(p) => return self.online(p, events),
            ServerMessage::Offline(endpoint) => {
                if self.peers.remove(&endpoint).is_some() {
                    events.push_back(ClientEvent::PeerOffline { endpoint });
                }
            }
            ServerMessage::ContactAdded { user, .. } => {
                self.contacts.insert(user.clone());
                events.push_back(ClientEvent::ContactsChanged { user, added: true });
            }
            ServerMessage::ContactRemoved { user, .. } => {
                self.contacts.remove(&user);
                let gone: Vec<Endpoint> = self
                    .peers
                    .keys()
                    .filter(|e| e.user == user)
                    .cloned()
                    .collect();
                for endpoint in gone {
                    self.peers.remove(&endpoint);
                    events.push_back(ClientEvent::PeerOffline { endpoint });
                }
                events.push_back(ClientEvent::ContactsChanged { user, added: false });
            }
            ServerMessage::CapsAck { req } => {
                if !self.caps_in_flight.remove(&req) {
                    return Some(Violation::UnexpectedReq {
                        what: "caps_ack",
                        req,
                    });
                }
                events.push_back(ClientEvent::CapsAcknowledged);
            }
            ServerMessage::CallRinging { req, call } => {
                let Some(d) = self.dialing.remove(&req) else {
                    return Some(Violation::UnexpectedReq {
                        what: "call_ringing",
                        req,
                    });
                };
                self.calls.insert(
                    call,
                    Call {
                        peer: d.peer,
                        role: Role::Caller,
                        state: CallState::Ringing,
                        params: d.params,
                        caps_on_wire: d.caps_sent,
                        send_caps_on_accept: false,
                        digest: d.digest,
                    },
                );
                events.push_back(ClientEvent::CallRinging { req, call });
            }
            ServerMessage::CallIncoming {
                call,
                from,
                digest,
                capabilities,
            } => return self.incoming(call, from, digest, capabilities, events),
            ServerMessage::CallAccepted { call, capabilities } => {
                let own = self.caps.clone();
                let c = match self.ringing_as_caller(call, "call_accepted") {
                    Ok(c) => c,
                    Err(v) => return Some(v),
                };
                if let Some(theirs) = capabilities {
                    // The callee's capabilities changed since they were pushed, or this
                    // is a prior-art call.
                    c.params = Some(negotiate_pair(&own, &theirs));
                    c.caps_on_wire = true;
                }
                if c.params.is_none() {
                    // A prior-art call must be answered with the callee's capabilities.
                    return Some(Violation::UnexpectedCall {
                        what: "call_accepted",
                        call,
                    });
                }
                c.state = CallState::Established;
                if let Some(params) = c.params.clone() {
                    events.push_back(ClientEvent::CallEstablished {
                        call,
                        params,
                        path: c.path(),
                    });
                }
            }
            ServerMessage::CallNeedCaps { call } => {
                match self.ringing_as_caller(call, "call_need_caps") {
                    Ok(c) => c.caps_on_wire = true,
                    Err(v) => return Some(v),
                }
                self.outbox.push(ClientMessage::CallRetry {
                    call,
                    capabilities: self.caps.clone(),
                });
            }
            ServerMessage::CapsQuery { from, req } => {
                if !self.is_contact(&from.user) {
                    return Some(Violation::NotAContact(from.user));
                }
                self.outbox.push(ClientMessage::CapsReply {
                    to: from,
                    req,
                    capabilities: self.caps.clone(),
                });
            }
            ServerMessage::CapsResult {
                req,
                from,
                capabilities,
            } => {
                if !self.is_contact(&from.user) {
                    return Some(Violation::NotAContact(from.user));
                }
                if !self.queries.remove(&req) {
                    return Some(Violation::UnexpectedReq {
                        what: "caps_result",
                        req,
                    });
                }
                events.push_back(ClientEvent::CapsResult {
                    req,
                    from,
                    params: negotiate_pair(&self.caps, &capabilities),
                    capabilities,
                });
            }
            ServerMessage::CallEnded { call, reason } => {
                if self.calls.remove(&call).is_some() {
                    events.push_back(ClientEvent::CallEnded { call, reason });
                }
            }
            other => return Some(Violation::Unexpected(other.type_name())),
        }
        None
    }

    /// A call this terminal placed that is ringing; `what` names the message for the
    /// violation otherwise.
    fn ringing_as_caller(
        &mut self,
        call: CallId,
        what: &'static str,
    ) -> Result<&mut Call, Violation> {
        self.calls
            .get_mut(&call)
            .filter(|c| c.role == Role::Caller && c.state == CallState::Ringing)
            .ok_or(Violation::UnexpectedCall { what, call })
    }

    /// Whether `user` is in the contact list and not this client's own user: the only
    /// users whose capabilities the client may hold (section 8.3).
    fn is_contact(&self, user: &UserId) -> bool {
        *user != self.user && self.contacts.contains(user)
    }

    fn online(&mut self, p: Presence, events: &mut VecDeque<ClientEvent>) -> Option<Violation> {
        if !self.is_contact(&p.user) {
            return Some(Violation::NotAContact(p.user));
        }
        let endpoint = p.endpoint();
        let params = negotiate_pair(&self.caps, &p.capabilities);
        let peer = Peer {
            fingerprint: p.capabilities.fingerprint(),
            capabilities: p.capabilities,
            params: params.clone(),
        };
        let event = if self.peers.insert(endpoint.clone(), peer).is_some() {
            ClientEvent::PeerUpdated { endpoint, params }
        } else {
            ClientEvent::PeerOnline { endpoint, params }
        };
        events.push_back(event);
        None
    }

    fn incoming(
        &mut self,
        call: CallId,
        from: Endpoint,
        digest: CallDigest,
        capabilities: Option<Capabilities>,
        events: &mut VecDeque<ClientEvent>,
    ) -> Option<Violation> {
        match self.calls.get(&call).map(|c| c.state) {
            None => {}
            // The retry that carries the capabilities asked for.
            Some(CallState::AwaitingCallerCaps) if capabilities.is_some() => {}
            Some(_) => {
                return Some(Violation::UnexpectedCall {
                    what: "call_incoming",
                    call,
                })
            }
        }
        let send_caps_on_accept = digest.callee != self.fingerprint;
        let (params, caps_on_wire) = match (&capabilities, self.peers.get(&from)) {
            (Some(theirs), _) => (negotiate_pair(&self.caps, theirs), true),
            (None, Some(peer)) if peer.fingerprint == digest.caller => (peer.params.clone(), false),
            (None, _) => {
                // The caller's capabilities here are not the ones it negotiated from:
                // ask for them before bothering the user.
                self.calls.insert(
                    call,
                    Call {
                        peer: from,
                        role: Role::Callee,
                        state: CallState::AwaitingCallerCaps,
                        params: None,
                        caps_on_wire: true,
                        send_caps_on_accept,
                        digest,
                    },
                );
                self.outbox.push(ClientMessage::NeedCaps { call });
                return None;
            }
        };
        self.calls.insert(
            call,
            Call {
                peer: from.clone(),
                role: Role::Callee,
                state: CallState::Incoming,
                params: Some(params.clone()),
                caps_on_wire,
                send_caps_on_accept,
                digest,
            },
        );
        events.push_back(ClientEvent::IncomingCall { call, from, params });
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::caps;

    fn login_ok(user: &UserId) -> ServerMessage {
        ServerMessage::LoginOk {
            version: crate::message::PROTOCOL_VERSION,
            user: user.clone(),
            session: SessionId(7),
            capabilities: caps(&["h264"], 1280, 30),
            contacts: vec![],
            resume_token: None,
        }
    }

    /// A client that has sent its login.
    fn logging_in(user: &UserId) -> Client {
        let mut c = Client::new(ClientConfig::default());
        let with = LoginWith::Capabilities(caps(&["h264"], 1280, 30));
        let password = Password::new("pw").unwrap();
        c.login(user.clone(), password, with, Time::ZERO).unwrap();
        c
    }

    #[test]
    fn logout_while_logging_in_drops_a_late_login_ok() {
        let alice = UserId::new("alice").unwrap();
        let mut c = logging_in(&alice);
        c.logout(Time::ZERO).unwrap();
        // The server completed the login before it read the logout.
        c.handle_message(login_ok(&alice), Time::ZERO);
        assert_eq!(c.status(), Status::LoggingOut);
        assert!(c.session().is_none());
        c.handle_message(ServerMessage::LoggedOut {}, Time::ZERO);
        assert_eq!(c.status(), Status::Idle);
        let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
        assert_eq!(events, vec![ClientEvent::LoggedOut]);
    }

    #[test]
    fn login_ok_of_another_version_ends_the_login() {
        let alice = UserId::new("alice").unwrap();
        let mut c = logging_in(&alice);
        let mut frame = login_ok(&alice);
        if let ServerMessage::LoginOk { version, .. } = &mut frame {
            *version = 2;
        }
        let bytes = crate::codec::encode_frame(&frame);
        assert_eq!(
            c.receive(&bytes, Time::ZERO),
            Err(ClientError::UnsupportedVersion(2))
        );
        assert_eq!(c.status(), Status::Idle);
    }

    #[test]
    fn decoded_login_ok_of_another_version_ends_the_login_too() {
        let alice = UserId::new("alice").unwrap();
        let mut c = logging_in(&alice);
        let mut msg = login_ok(&alice);
        if let ServerMessage::LoginOk { version, .. } = &mut msg {
            *version = 9;
        }
        c.handle_message(msg, Time::ZERO);
        assert_eq!(c.status(), Status::Idle);
        assert!(c.session().is_none());
    }

    #[test]
    fn a_frame_limit_below_the_minimum_acts_as_the_minimum() {
        let alice = UserId::new("alice").unwrap();
        let config = ClientConfig {
            max_frame: 10,
            ..ClientConfig::default()
        };
        let mut c = Client::new(config);
        let with = LoginWith::Capabilities(caps(&["h264"], 1280, 30));
        c.login(
            alice.clone(),
            Password::new("pw").unwrap(),
            with,
            Time::ZERO,
        )
        .unwrap();
        let frame = crate::codec::encode_frame(&login_ok(&alice));
        assert!(frame.len() > 10);
        c.receive(&frame, Time::ZERO).unwrap();
        assert_eq!(c.status(), Status::Online);
    }

    fn drain(c: &mut Client) -> Vec<ClientEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    fn sent(c: &mut Client) -> Vec<ClientMessage> {
        std::iter::from_fn(|| c.poll_transmit())
            .map(|f| {
                let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
                let payload = d.decode(&mut &f[..]).unwrap().unwrap();
                decode_message(&payload).unwrap()
            })
            .collect()
    }

    /// A client logged in at `at` (its `login` queued then), with a resume token if
    /// `resumable`; frames and events drained.
    fn online_at(user: &UserId, resumable: bool, at: Time) -> Client {
        let mut c = Client::new(ClientConfig::default());
        let with = LoginWith::Capabilities(caps(&["h264"], 1280, 30));
        c.login(user.clone(), Password::new("pw").unwrap(), with, at)
            .unwrap();
        let mut ok = login_ok(user);
        if let ServerMessage::LoginOk { resume_token, .. } = &mut ok {
            *resume_token = resumable.then(|| {
                ResumeToken::derive(&crate::resume::ResumeSecret::default(), SessionId(7))
            });
        }
        c.handle_message(ok, at);
        c.handle_message(ServerMessage::Synced {}, at);
        sent(&mut c);
        drain(&mut c);
        c
    }

    /// Section 8.9: while Online, when the time since the last queued frame reaches
    /// `ping_interval`, the client sends `ping`, and not before; the deadline it
    /// reports through `poll_timeout` is exactly that moment, and any frame restarts it.
    #[test]
    fn a_silent_client_pings_when_its_interval_elapses_and_not_before() {
        let alice = UserId::new("alice").unwrap();
        let start = Time(5_000);
        let mut c = online_at(&alice, false, start);
        let interval = ClientConfig::default().ping_interval;
        let due = start.after(interval);
        assert_eq!(c.poll_timeout(), Some(due));

        c.handle_timeout(Time(due.0 - 1));
        assert!(c.poll_transmit().is_none(), "pinged before the interval");
        c.handle_timeout(due);
        assert_eq!(sent(&mut c), vec![ClientMessage::Ping {}]);
        assert_eq!(c.poll_timeout(), Some(due.after(interval)));

        // Any frame restarts the interval.
        let later = Time(due.0 + 7_000);
        c.add_contact(UserId::new("bob").unwrap(), later).unwrap();
        sent(&mut c);
        assert_eq!(c.poll_timeout(), Some(later.after(interval)));
        c.handle_timeout(due.after(interval));
        assert!(c.poll_transmit().is_none(), "the add_contact restarted it");
    }

    /// Sections 8.5 step 4 and 8.7 step 2: only `caps_throttled` for an unacknowledged
    /// `update_caps` schedules the resend; the same code for a tag the client never
    /// sent, or another error for an unacknowledged tag, schedules nothing.
    #[test]
    fn only_a_throttled_update_caps_schedules_a_resend() {
        let alice = UserId::new("alice").unwrap();
        let start = Time(5_000);
        let mut c = online_at(&alice, false, start);
        let ping = c.poll_timeout();
        let error = |code, req| ServerMessage::Error {
            code,
            req: Some(req),
            call: None,
            detail: String::new(),
            retry_after_ms: Some(1_000),
        };
        c.handle_message(error(ErrorCode::CapsThrottled, ReqId(99)), start);
        assert_eq!(c.poll_timeout(), ping, "a tag never sent");
        assert!(!c.caps_in_flight());
        let own = c.capabilities().unwrap().clone();
        let req = c.update_caps(own.clone(), start).unwrap();
        sent(&mut c);
        c.handle_message(error(ErrorCode::Unknown, req), start);
        assert_eq!(c.poll_timeout(), ping, "another error");
        assert!(!c.caps_in_flight());
        let req = c.update_caps(own, start).unwrap();
        sent(&mut c);
        c.handle_message(error(ErrorCode::CapsThrottled, req), start);
        assert_eq!(
            c.poll_timeout(),
            Some(Time(6_000)),
            "throttled: resend at the hint"
        );
        assert!(c.caps_in_flight());
    }

    /// Section 8.9: the client does not ping outside Online, so it reports no deadline.
    #[test]
    fn no_ping_deadline_outside_online() {
        let alice = UserId::new("alice").unwrap();
        let mut c = Client::new(ClientConfig::default());
        assert_eq!(c.poll_timeout(), None);
        let mut c2 = logging_in(&alice);
        assert_eq!(c2.poll_timeout(), None);
        c2.handle_timeout(Time(u64::MAX));
        sent(&mut c2);
        assert!(c2.poll_transmit().is_none());
        c.handle_timeout(Time(u64::MAX));
        assert!(c.poll_transmit().is_none());
    }

    /// Section 8.2, Detached row "command login": delete everything; then as in Idle.
    #[test]
    fn a_login_while_detached_abandons_the_session_and_logs_in_afresh() {
        let alice = UserId::new("alice").unwrap();
        let mut c = online_at(&alice, true, Time::ZERO);
        c.connection_lost(Time(10));
        assert_eq!(c.status(), Status::Detached);
        assert_eq!(drain(&mut c), vec![ClientEvent::Detached]);

        let with = LoginWith::Capabilities(caps(&["vp8"], 640, 30));
        c.login(alice.clone(), Password::new("pw").unwrap(), with, Time(20))
            .expect("a login from Detached is carried out");
        assert_eq!(c.status(), Status::LoggingIn);
        assert_eq!(drain(&mut c), vec![ClientEvent::LoggedOut]);
        assert!(c.user().is_none() && c.session().is_none());
        assert!(!c.can_resume());
        assert!(matches!(
            sent(&mut c).as_slice(),
            [ClientMessage::Login { .. }]
        ));
    }

    /// Section 8.2, Resuming row "`resumed` for the own session, `version` 1", and
    /// 8.3: a `resumed` of another version ends the session, also for an embedder that
    /// decodes frames itself and bypasses the decoder's check.
    #[test]
    fn decoded_resumed_of_another_version_ends_the_session() {
        let alice = UserId::new("alice").unwrap();
        let mut c = online_at(&alice, true, Time::ZERO);
        c.connection_lost(Time(10));
        c.resume(Time(20)).unwrap();
        drain(&mut c);
        c.handle_message(
            ServerMessage::Resumed {
                version: 2,
                session: SessionId(7),
                capabilities: caps(&["h264"], 1280, 30),
                seq: 0,
                contacts: None,
            },
            Time(30),
        );
        assert_eq!(c.status(), Status::Idle);
        assert!(c.user().is_none());
        let events = drain(&mut c);
        assert!(matches!(
            events.as_slice(),
            [
                ClientEvent::ServerError {
                    code: ErrorCode::UnsupportedVersion,
                    ..
                },
                ClientEvent::LoggedOut
            ]
        ));
    }

    /// Section 8.1: Online, Detached and Resuming hold the own endpoint; the other
    /// states hold nothing.
    #[test]
    fn the_own_user_is_known_exactly_while_a_session_is_held() {
        let alice = UserId::new("alice").unwrap();
        assert_eq!(Client::new(ClientConfig::default()).user(), None);
        assert_eq!(logging_in(&alice).user(), None);
        let mut c = online_at(&alice, true, Time::ZERO);
        assert_eq!(c.user(), Some(&alice));
        c.connection_lost(Time(1));
        assert_eq!(c.user(), Some(&alice));
        c.resume(Time(2)).unwrap();
        assert_eq!(c.user(), Some(&alice));
        c.abandon(Time(3));
        assert_eq!(c.user(), None);
    }

    /// Section 8.2, row "connection lost": nothing happens in Idle (there is no
    /// session to end, so the application is not told one ended), for example when
    /// the server closes the connection after `logged_out`.
    #[test]
    fn a_connection_lost_while_idle_reports_nothing() {
        let alice = UserId::new("alice").unwrap();
        let mut c = online_at(&alice, false, Time::ZERO);
        c.logout(Time(1)).unwrap();
        c.handle_message(ServerMessage::LoggedOut {}, Time(2));
        assert_eq!(drain(&mut c), vec![ClientEvent::LoggedOut]);
        c.connection_lost(Time(3));
        assert_eq!(c.status(), Status::Idle);
        assert_eq!(drain(&mut c), vec![], "the session was reported over twice");
    }

    /// Alice online with bob listed and bob's terminal (session 2) in her table.
    fn alice_with_bob() -> (Client, Endpoint) {
        let alice = UserId::new("alice").unwrap();
        let bob = UserId::new("bob").unwrap();
        let mut c = logging_in(&alice);
        let mut ok = login_ok(&alice);
        if let ServerMessage::LoginOk { contacts, .. } = &mut ok {
            *contacts = vec![bob.clone()];
        }
        c.handle_message(ok, Time::ZERO);
        c.handle_message(
            ServerMessage::Online(Presence {
                user: bob.clone(),
                session: SessionId(2),
                capabilities: caps(&["h264"], 1280, 30),
            }),
            Time::ZERO,
        );
        c.handle_message(ServerMessage::Synced {}, Time::ZERO);
        sent(&mut c);
        drain(&mut c);
        let endpoint = Endpoint {
            user: bob,
            session: SessionId(2),
        };
        (c, endpoint)
    }

    /// Section 8.3, unexpected call: `call_accepted` for a call that is not this
    /// client's call as caller in state ringing, here one already established.
    #[test]
    fn a_second_call_accepted_for_an_established_call_is_a_violation() {
        let (mut c, bob) = alice_with_bob();
        let req = c.place_call(&bob, Time(1)).unwrap();
        let call = CallId(40);
        c.handle_message(ServerMessage::CallRinging { req, call }, Time(2));
        let accepted = ServerMessage::CallAccepted {
            call,
            capabilities: None,
        };
        c.handle_message(accepted.clone(), Time(3));
        assert!(matches!(
            drain(&mut c).last(),
            Some(ClientEvent::CallEstablished { .. })
        ));
        c.handle_message(accepted, Time(4));
        assert_eq!(
            drain(&mut c),
            vec![ClientEvent::Violation(Violation::UnexpectedCall {
                what: "call_accepted",
                call
            })]
        );
    }

    /// Sections 8.3 and 8.6.2: a `call_incoming` for a call the callee already has is a
    /// violation, except the retry that carries the capabilities it asked for.
    #[test]
    fn a_repeated_call_incoming_without_the_capabilities_asked_for_is_a_violation() {
        let (mut c, bob) = alice_with_bob();
        let call = CallId(41);
        // The digest names caller capabilities alice does not hold: she asks for them.
        let digest = CallDigest {
            caller: Fingerprint([9; 16]),
            callee: c.capabilities().unwrap().fingerprint(),
        };
        let incoming = |capabilities| ServerMessage::CallIncoming {
            call,
            from: bob.clone(),
            digest,
            capabilities,
        };
        c.handle_message(incoming(None), Time(1));
        assert_eq!(sent(&mut c), vec![ClientMessage::NeedCaps { call }]);
        assert!(drain(&mut c).is_empty());
        c.handle_message(incoming(None), Time(2));
        assert_eq!(
            drain(&mut c),
            vec![ClientEvent::Violation(Violation::UnexpectedCall {
                what: "call_incoming",
                call
            })]
        );
        // The retry with the capabilities is taken.
        c.handle_message(incoming(Some(caps(&["h264"], 640, 30))), Time(3));
        assert!(matches!(
            drain(&mut c).as_slice(),
            [ClientEvent::IncomingCall { .. }]
        ));
    }

    /// The fuzz oracle's comparison ignores only the count of table frames seen.
    #[cfg(feature = "arbitrary")]
    #[test]
    fn eq_but_seen_ignores_only_the_seen_count() {
        let (a, _) = alice_with_bob();
        let mut b = a.clone();
        if let State::Online(on) = &mut b.state {
            on.seen = Some(99);
        }
        assert!(a.eq_but_seen(&b) && a != b);
        let mut d = a.clone();
        d.next_req += 1;
        assert!(!a.eq_but_seen(&d));
    }

    #[test]
    fn login_ok_out_of_the_blue_is_a_violation() {
        let mut c = Client::new(ClientConfig::default());
        c.handle_message(login_ok(&UserId::new("eve").unwrap()), Time::ZERO);
        assert_eq!(c.status(), Status::Idle);
        assert_eq!(
            c.poll_event(),
            Some(ClientEvent::Violation(Violation::UnexpectedLogin))
        );
    }
}
