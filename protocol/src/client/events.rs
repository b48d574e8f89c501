//! What the client core tells its application: events, protocol violations by the
//! server, and the errors of commands and input.

use std::time::Duration;

use thiserror::Error;

use super::SetupPath;
use crate::caps::{CallParams, Capabilities};
use crate::error::{ErrorCode, FrameError};
use crate::ids::{CallId, Endpoint, ReqId, SessionId, UserId};
use crate::media::MediaDescription;
use crate::message::EndReason;

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
    /// with back-off ([`crate::resume::Backoff`]) and call [`Client::resume`](crate::Client::resume).
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
    /// The contact list changed: the answer to [`Client::add_contact`](crate::Client::add_contact) or
    /// [`Client::remove_contact`](crate::Client::remove_contact) (`req` is the tag it returned), or a change made by
    /// another terminal of this user or by an administrator (`req` is `None`).
    ContactsChanged {
        /// The tag the request returned, on the terminal that asked.
        req: Option<ReqId>,
        /// The user added or removed.
        user: UserId,
        /// `true` if added.
        added: bool,
    },
    /// The server recorded this terminal's new capabilities and pushed them to its
    /// watchers: the answer to [`Client::update_caps`](crate::Client::update_caps).
    CapsAcknowledged {
        /// The tag [`Client::update_caps`](crate::Client::update_caps) returned.
        req: ReqId,
    },
    /// A placed call is ringing at the callee.
    CallRinging {
        /// The tag [`Client::place_call`](crate::Client::place_call) returned.
        req: ReqId,
        /// The call.
        call: CallId,
        /// The terminal called.
        to: Endpoint,
    },
    /// A call for this terminal; answer with [`Client::answer`](crate::Client::answer).
    IncomingCall {
        /// The call.
        call: CallId,
        /// The caller.
        from: Endpoint,
        /// The parameters the call will use, from this end.
        params: CallParams,
        /// The caller's media description, if its request carried one (spec 10.8).
        media: Option<MediaDescription>,
    },
    /// A call is established.
    CallEstablished {
        /// The call.
        call: CallId,
        /// The parameters, from this end.
        params: CallParams,
        /// Fast or fallback.
        path: SetupPath,
        /// The callee's media description, if its acceptance carried one (spec 10.8);
        /// always `None` at the callee, which wrote it.
        media: Option<MediaDescription>,
    },
    /// A call ended.
    CallEnded {
        /// The call.
        call: CallId,
        /// Why.
        reason: EndReason,
    },
    /// The answer to [`Client::query_caps`](crate::Client::query_caps) (query-first baseline): the terminal's
    /// capabilities and the parameters negotiated from them. The table is not changed.
    CapsResult {
        /// The tag [`Client::query_caps`](crate::Client::query_caps) returned.
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
        /// The tag [`Client::place_call`](crate::Client::place_call) returned.
        req: ReqId,
        /// The terminal called.
        to: Endpoint,
        /// The server's error code (`not_reachable` when the connection dropped first).
        code: ErrorCode,
        /// The server's human-readable detail, if any; not for machines.
        detail: String,
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
        /// The server's human-readable detail, if any; not for machines.
        detail: String,
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
    /// [`Client::resume`](crate::Client::resume) without a detached session.
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
    /// The server speaks a protocol version this client does not: the connection is
    /// unusable (close it); the session is detached if resumable, else over.
    #[error("server speaks unsupported protocol version {0}")]
    UnsupportedVersion(u64),
    /// The server's byte stream broke the framing: the connection is unusable (close
    /// it); the session is detached if resumable, else over.
    #[error("framing error: {0}")]
    Framing(#[from] FrameError),
}
