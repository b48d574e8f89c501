//! Every message of the protocol (spec section "Messages").
//!
//! Each message is a JSON object whose `type` member names it; the other members are
//! the variant's fields. [`ClientMessage`] travels client to server, [`ServerMessage`]
//! server to client. Both enums are `#[non_exhaustive]`: later versions add messages,
//! and a receiver treats a `type` it does not know as the spec says (see
//! [`crate::codec::decode_message`]).

use serde::{Deserialize, Serialize};

use crate::caps::{CallDigest, Capabilities};
use crate::error::ErrorCode;
use crate::ids::{CallId, Endpoint, Password, ReqId, SessionId, TerminalId, UserId};
use crate::media::MediaDescription;
use crate::resume::ResumeToken;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// How a terminal identifies its capabilities at login.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoginWith {
    /// The capabilities themselves (claims C2, C7).
    Capabilities(Capabilities),
    /// A terminal identifier whose capabilities the server stored in advance
    /// (claims C3, C8).
    TerminalId(TerminalId),
}

/// A message from a client to the server.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// Log in (the first message on a connection).
    Login {
        /// Protocol version; must be [`PROTOCOL_VERSION`].
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzz::input::version))]
        version: u32,
        /// Account name.
        user: UserId,
        /// Password.
        password: Password,
        /// The terminal's capabilities or identifier.
        with: LoginWith,
    },
    /// Take a detached session over on a new connection instead of logging in (the
    /// first message on a connection; spec section "Resumable sessions").
    Resume {
        /// Protocol version; must be [`PROTOCOL_VERSION`].
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzz::input::version))]
        version: u32,
        /// The token `login_ok` issued.
        token: ResumeToken,
        /// The number of the last table frame (`online`, `offline`, `contact_added`,
        /// `contact_removed`) the client processed: counted from the `seq` of the last
        /// `resumed` (0 after `login_ok`) for each one received after `synced`; absent
        /// if the table was never complete (the server then sends a snapshot).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen: Option<u64>,
    },
    /// Log out: the server tells contacts and closes the session.
    Logout {},
    /// Heartbeat; the server answers [`ServerMessage::Pong`].
    Ping {},
    /// This terminal's capabilities changed.
    UpdateCaps {
        /// Request tag echoed in [`ServerMessage::CapsAck`].
        req: ReqId,
        /// The new capabilities.
        capabilities: Capabilities,
    },
    /// Add a user to this user's contact list.
    AddContact {
        /// Request tag echoed in [`ServerMessage::ContactAdded`].
        req: ReqId,
        /// The user to add.
        user: UserId,
    },
    /// Remove a user from this user's contact list.
    RemoveContact {
        /// Request tag echoed in [`ServerMessage::ContactRemoved`].
        req: ReqId,
        /// The user to remove.
        user: UserId,
    },
    /// Place a call to an online terminal of a contact.
    Call {
        /// Request tag echoed in [`ServerMessage::CallRinging`] or the error.
        req: ReqId,
        /// The terminal called.
        to: Endpoint,
        /// Fingerprints of the two capability sets the caller negotiated from.
        digest: CallDigest,
        /// The caller's capabilities, sent only on the fallback path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capabilities: Option<Capabilities>,
        /// The caller's media description, relayed to the callee (spec 10.8).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaDescription>,
    },
    /// Repeat a call's request with the caller's capabilities, after the callee
    /// answered [`ClientMessage::NeedCaps`].
    CallRetry {
        /// The call.
        call: CallId,
        /// The caller's capabilities.
        capabilities: Capabilities,
    },
    /// The callee accepts the call.
    Accept {
        /// The call.
        call: CallId,
        /// The callee's capabilities, sent only when the caller's digest named stale
        /// callee capabilities (fallback path).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capabilities: Option<Capabilities>,
        /// The callee's media description, relayed to the caller (spec 10.8).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaDescription>,
    },
    /// The callee declines the call.
    Reject {
        /// The call.
        call: CallId,
    },
    /// The callee does not hold the caller's capabilities the digest names and asks
    /// for them (fallback path).
    NeedCaps {
        /// The call.
        call: CallId,
    },
    /// End a call, ringing or established.
    Hangup {
        /// The call.
        call: CallId,
    },
    /// Ask a contact terminal for its capabilities (the query-first baseline, spec
    /// section 10.7: what a client without pushed capabilities does before a call).
    QueryCaps {
        /// Request tag echoed in [`ServerMessage::CapsResult`] or the error.
        req: ReqId,
        /// The terminal asked.
        to: Endpoint,
    },
    /// Answer to [`ServerMessage::CapsQuery`]: this terminal's capabilities.
    CapsReply {
        /// The terminal that asked.
        to: Endpoint,
        /// Its request tag.
        req: ReqId,
        /// This terminal's current capabilities.
        capabilities: Capabilities,
    },
}

/// An online terminal and its capabilities, as pushed to contacts.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Presence {
    /// The user logged in on the terminal.
    pub user: UserId,
    /// The terminal's session.
    pub session: SessionId,
    /// The terminal's capabilities.
    pub capabilities: Capabilities,
}

impl Presence {
    /// The terminal this presence describes.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            user: self.user.clone(),
            session: self.session,
        }
    }
}

/// Why a call ended.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// The other party hung up.
    Hangup,
    /// The callee rejected the call.
    Rejected,
    /// The other party's session ended.
    PeerGone,
    /// The parties are no longer mutual contacts.
    NotReachable,
    /// The callee did not answer within the server's ring timeout.
    Timeout,
    /// A reason from a newer version of the protocol.
    #[serde(other)]
    Unknown,
}

/// A message from the server to a client.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// Login succeeded. The snapshot of online contacts follows as
    /// [`ServerMessage::Online`] messages, ended by [`ServerMessage::Synced`].
    LoginOk {
        /// Protocol version the server speaks on this connection.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzz::input::version))]
        version: u32,
        /// The user logged in.
        user: UserId,
        /// This terminal's session.
        session: SessionId,
        /// This terminal's capabilities as the server records them (for a login by
        /// terminal identifier, the registered ones).
        capabilities: Capabilities,
        /// The user's contact list.
        contacts: Vec<UserId>,
        /// The credential for `resume` if the connection drops; absent if the server
        /// does not resume sessions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<ResumeToken>,
    },
    /// A `resume` succeeded: the session is attached to this connection. What the
    /// client missed follows, ended by [`ServerMessage::Synced`]: only the table frames
    /// after `seen` if `contacts` is absent, or a full snapshot (the contact list here,
    /// then an `online` per visible terminal) if it is present.
    Resumed {
        /// Protocol version the server speaks on this connection.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzz::input::version))]
        version: u32,
        /// The session resumed.
        session: SessionId,
        /// This terminal's capabilities as the server records them.
        capabilities: Capabilities,
        /// Table frames the server has numbered for this session once the catch-up
        /// is sent (0 after a snapshot); the client's count continues from it after
        /// [`ServerMessage::Synced`].
        seq: u64,
        /// Present for a snapshot: the whole contact list, replacing the client's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contacts: Option<Vec<UserId>>,
    },
    /// The end of the login snapshot (or of a resume's catch-up): the client's table is
    /// now complete.
    Synced {},
    /// A contact's terminal is online with these capabilities, or its capabilities
    /// changed (claims C1, C6). Replaces anything held for that terminal.
    Online(Presence),
    /// A contact's terminal went offline (claims C4, C9).
    Offline(Endpoint),
    /// A user was added to this user's contact list.
    ContactAdded {
        /// Echo of the request's tag, on the session that asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The user added.
        user: UserId,
    },
    /// A user was removed from this user's contact list; the client deletes every
    /// terminal of that user.
    ContactRemoved {
        /// Echo of the request's tag, on the session that asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The user removed.
        user: UserId,
    },
    /// The server recorded this terminal's new capabilities and pushed them.
    CapsAck {
        /// Echo of the request's tag.
        req: ReqId,
    },
    /// The call request was relayed to the callee.
    CallRinging {
        /// Echo of the request's tag.
        req: ReqId,
        /// The call's identifier.
        call: CallId,
    },
    /// A call for this terminal.
    CallIncoming {
        /// The call.
        call: CallId,
        /// The calling terminal.
        from: Endpoint,
        /// Fingerprints the caller negotiated from.
        digest: CallDigest,
        /// The caller's capabilities (fallback path only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capabilities: Option<Capabilities>,
        /// The caller's media description, if its request carried one (spec 10.8).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaDescription>,
    },
    /// The callee accepted.
    CallAccepted {
        /// The call.
        call: CallId,
        /// The callee's capabilities (fallback path only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capabilities: Option<Capabilities>,
        /// The callee's media description, if its acceptance carried one (spec 10.8).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaDescription>,
    },
    /// The callee needs the caller's capabilities; the caller answers
    /// [`ClientMessage::CallRetry`].
    CallNeedCaps {
        /// The call.
        call: CallId,
    },
    /// The call ended.
    CallEnded {
        /// The call.
        call: CallId,
        /// Why.
        reason: EndReason,
    },
    /// Answer to [`ClientMessage::Ping`].
    Pong {},
    /// Answer to [`ClientMessage::Logout`]; the server closes the connection next.
    LoggedOut {},
    /// A contact terminal asks for this terminal's capabilities; the client answers
    /// [`ClientMessage::CapsReply`] (query-first baseline).
    CapsQuery {
        /// The terminal asking.
        from: Endpoint,
        /// Its request tag, to echo.
        req: ReqId,
    },
    /// The answer to this terminal's [`ClientMessage::QueryCaps`].
    CapsResult {
        /// Echo of the request's tag.
        req: ReqId,
        /// The terminal that answered.
        from: Endpoint,
        /// Its capabilities.
        capabilities: Capabilities,
    },
    /// A request failed.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// The failed request's tag, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The call concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call: Option<CallId>,
        /// Human-readable detail; not for machines.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
        /// For a throttled request (`login_throttled`, `rate_limited`,
        /// `too_many_connections`): how many milliseconds to wait before trying again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerMessage {
    /// An error message with no request tag, call, or detail.
    pub fn error(code: ErrorCode) -> Self {
        Self::error_with(code, String::new())
    }

    /// An error message with a human-readable detail and no request tag or call.
    pub fn error_with(code: ErrorCode, detail: String) -> Self {
        ServerMessage::Error {
            code,
            req: None,
            call: None,
            detail,
            retry_after_ms: None,
        }
    }
}

/// What the codec and the harnesses need to know about a message enum
/// ([`ClientMessage`] or [`ServerMessage`]) beyond its serde shape.
pub trait WireMessage: Serialize + serde::de::DeserializeOwned {
    /// Every `type` value of this enum, in spec order.
    const TYPES: &'static [&'static str];
    /// The `type` values that carry a protocol `version`.
    const VERSIONED: &'static [&'static str];
    /// The message's `type` value.
    fn type_name(&self) -> &'static str;
    /// The protocol version the message announces, if it is of a versioned type.
    fn version(&self) -> Option<u32>;
    /// The capabilities this message carries at call time (the fallback paths, the
    /// prior-art call and the query-first baseline), if any.
    fn call_capabilities(&self) -> Option<&Capabilities>;
}

impl WireMessage for ClientMessage {
    const TYPES: &'static [&'static str] = &[
        "login",
        "resume",
        "logout",
        "ping",
        "update_caps",
        "add_contact",
        "remove_contact",
        "call",
        "call_retry",
        "accept",
        "reject",
        "need_caps",
        "hangup",
        "query_caps",
        "caps_reply",
    ];
    const VERSIONED: &'static [&'static str] = &["login", "resume"];
    fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Login { .. } => "login",
            ClientMessage::Resume { .. } => "resume",
            ClientMessage::Logout {} => "logout",
            ClientMessage::Ping {} => "ping",
            ClientMessage::UpdateCaps { .. } => "update_caps",
            ClientMessage::AddContact { .. } => "add_contact",
            ClientMessage::RemoveContact { .. } => "remove_contact",
            ClientMessage::Call { .. } => "call",
            ClientMessage::CallRetry { .. } => "call_retry",
            ClientMessage::Accept { .. } => "accept",
            ClientMessage::Reject { .. } => "reject",
            ClientMessage::NeedCaps { .. } => "need_caps",
            ClientMessage::Hangup { .. } => "hangup",
            ClientMessage::QueryCaps { .. } => "query_caps",
            ClientMessage::CapsReply { .. } => "caps_reply",
        }
    }
    fn version(&self) -> Option<u32> {
        match self {
            ClientMessage::Login { version, .. } | ClientMessage::Resume { version, .. } => {
                Some(*version)
            }
            _ => None,
        }
    }
    fn call_capabilities(&self) -> Option<&Capabilities> {
        match self {
            ClientMessage::Call { capabilities, .. }
            | ClientMessage::Accept { capabilities, .. } => capabilities.as_ref(),
            ClientMessage::CallRetry { capabilities, .. }
            | ClientMessage::CapsReply { capabilities, .. } => Some(capabilities),
            _ => None,
        }
    }
}

impl WireMessage for ServerMessage {
    const TYPES: &'static [&'static str] = &[
        "login_ok",
        "resumed",
        "synced",
        "online",
        "offline",
        "contact_added",
        "contact_removed",
        "caps_ack",
        "call_ringing",
        "call_incoming",
        "call_accepted",
        "call_need_caps",
        "call_ended",
        "pong",
        "logged_out",
        "caps_query",
        "caps_result",
        "error",
    ];
    const VERSIONED: &'static [&'static str] = &["login_ok", "resumed"];
    fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::LoginOk { .. } => "login_ok",
            ServerMessage::Resumed { .. } => "resumed",
            ServerMessage::Synced {} => "synced",
            ServerMessage::Online(_) => "online",
            ServerMessage::Offline(_) => "offline",
            ServerMessage::ContactAdded { .. } => "contact_added",
            ServerMessage::ContactRemoved { .. } => "contact_removed",
            ServerMessage::CapsAck { .. } => "caps_ack",
            ServerMessage::CallRinging { .. } => "call_ringing",
            ServerMessage::CallIncoming { .. } => "call_incoming",
            ServerMessage::CallAccepted { .. } => "call_accepted",
            ServerMessage::CallNeedCaps { .. } => "call_need_caps",
            ServerMessage::CallEnded { .. } => "call_ended",
            ServerMessage::Pong {} => "pong",
            ServerMessage::LoggedOut {} => "logged_out",
            ServerMessage::CapsQuery { .. } => "caps_query",
            ServerMessage::CapsResult { .. } => "caps_result",
            ServerMessage::Error { .. } => "error",
        }
    }
    fn version(&self) -> Option<u32> {
        match self {
            ServerMessage::LoginOk { version, .. } | ServerMessage::Resumed { version, .. } => {
                Some(*version)
            }
            _ => None,
        }
    }
    fn call_capabilities(&self) -> Option<&Capabilities> {
        match self {
            ServerMessage::CallIncoming { capabilities, .. }
            | ServerMessage::CallAccepted { capabilities, .. } => capabilities.as_ref(),
            ServerMessage::CapsResult { capabilities, .. } => Some(capabilities),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::CallDigest;
    use crate::ids::{CallId, SessionId};
    use crate::testing::caps;

    /// The capabilities a server message carries at call time (what the fast path
    /// avoids, INV-FAST-PATH): present exactly on the fallback and baseline messages.
    #[test]
    fn server_messages_report_the_capabilities_they_carry_at_call_time() {
        let c = caps(&["h264"], 640, 30);
        let from = Endpoint {
            user: UserId::new("bob").unwrap(),
            session: SessionId(2),
        };
        let incoming = |capabilities| ServerMessage::CallIncoming {
            call: CallId(1),
            from: from.clone(),
            digest: CallDigest {
                caller: c.fingerprint(),
                callee: c.fingerprint(),
            },
            capabilities,
            media: None,
        };
        assert_eq!(incoming(Some(c.clone())).call_capabilities(), Some(&c));
        assert_eq!(incoming(None).call_capabilities(), None);
        let accepted = ServerMessage::CallAccepted {
            call: CallId(1),
            capabilities: Some(c.clone()),
            media: None,
        };
        assert_eq!(accepted.call_capabilities(), Some(&c));
        let result = ServerMessage::CapsResult {
            req: ReqId(3),
            from,
            capabilities: c.clone(),
        };
        assert_eq!(result.call_capabilities(), Some(&c));
        assert_eq!(ServerMessage::Pong {}.call_capabilities(), None);
    }
}
