//! The core's [`ClientEvent`]s as one uniffi enum ([`Event`]): a sealed class in
//! Kotlin (`Event.PeerOnline`, ...), an enum in Swift, classes in Python. One variant
//! per core event, with the same fields; identifiers as plain values.

use precall_protocol::{ClientEvent, MediaDescription};

use crate::types::{wire_name, CallParams, Capabilities, Endpoint, SetupPath};

/// Something the application should know ([`ClientEvent`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Event {
    /// Login succeeded ([`ClientEvent::LoggedIn`]).
    LoggedIn {
        /// This terminal's session.
        session: u64,
    },
    /// The table holds every online contact terminal ([`ClientEvent::Synced`]).
    Synced,
    /// The connection dropped but the session is resumable: reconnect and call
    /// `resume` ([`ClientEvent::Detached`]).
    Detached,
    /// A resume succeeded; the catch-up follows, ended by `Synced`
    /// ([`ClientEvent::Resumed`]).
    Resumed {
        /// The session (the same as before).
        session: u64,
        /// Whether the table was rebuilt from a full snapshot.
        snapshot: bool,
    },
    /// A contact terminal came online with its parameters ready (claim C1;
    /// [`ClientEvent::PeerOnline`]).
    PeerOnline {
        /// The terminal.
        peer: Endpoint,
        /// The pre-computed parameters.
        params: CallParams,
    },
    /// A contact terminal's capabilities changed ([`ClientEvent::PeerUpdated`]).
    PeerUpdated {
        /// The terminal.
        peer: Endpoint,
        /// The new parameters.
        params: CallParams,
    },
    /// A contact terminal went offline; its entry is deleted (claim C4;
    /// [`ClientEvent::PeerOffline`]).
    PeerOffline {
        /// The terminal.
        peer: Endpoint,
    },
    /// The contact list changed ([`ClientEvent::ContactsChanged`]).
    ContactsChanged {
        /// The request tag, on the terminal that asked.
        req: Option<u32>,
        /// The user added or removed.
        user: String,
        /// `true` if added.
        added: bool,
    },
    /// The server recorded this terminal's new capabilities
    /// ([`ClientEvent::CapsAcknowledged`]).
    CapsAcknowledged {
        /// The tag `update_caps` returned.
        req: u32,
    },
    /// A placed call is ringing ([`ClientEvent::CallRinging`]).
    CallRinging {
        /// The tag the call command returned.
        req: u32,
        /// The call.
        call: u64,
        /// The terminal called.
        to: Endpoint,
    },
    /// A call for this terminal: answer it ([`ClientEvent::IncomingCall`]).
    IncomingCall {
        /// The call.
        call: u64,
        /// The caller (the core's `from`).
        caller: Endpoint,
        /// The parameters from this end.
        params: CallParams,
        /// The caller's media description, if it sent one (spec 10.8).
        media: Option<String>,
    },
    /// A call is established ([`ClientEvent::CallEstablished`]).
    CallEstablished {
        /// The call.
        call: u64,
        /// The parameters from this end.
        params: CallParams,
        /// Fast or fallback.
        path: SetupPath,
        /// The callee's media description, if its acceptance carried one.
        media: Option<String>,
    },
    /// A call ended ([`ClientEvent::CallEnded`]).
    CallEnded {
        /// The call.
        call: u64,
        /// The wire's reason: `hangup`, `rejected`, `peer_gone`, `not_reachable`,
        /// `timeout`, `unknown`.
        reason: String,
    },
    /// The answer to `query_caps` ([`ClientEvent::CapsResult`]).
    CapsResult {
        /// The tag.
        req: u32,
        /// The terminal that answered (the core's `from`).
        peer: Endpoint,
        /// Its capabilities.
        capabilities: Capabilities,
        /// The parameters a call with it would use.
        params: CallParams,
    },
    /// A call request failed before ringing ([`ClientEvent::CallFailed`]).
    CallFailed {
        /// The tag.
        req: u32,
        /// The terminal called.
        to: Endpoint,
        /// The server's error code (spec "Error codes").
        code: String,
        /// For people.
        detail: String,
    },
    /// The server reported an error ([`ClientEvent::ServerError`]).
    ServerError {
        /// The server's error code.
        code: String,
        /// The request concerned.
        req: Option<u32>,
        /// The call concerned.
        call: Option<u64>,
        /// How long to wait before trying again, if the server said.
        retry_after_ms: Option<u64>,
        /// For people.
        detail: String,
    },
    /// The session is over; everything was deleted (claim C5;
    /// [`ClientEvent::LoggedOut`]).
    LoggedOut,
    /// The server sent something the spec forbids now; it was ignored
    /// ([`ClientEvent::Violation`]).
    Violation {
        /// What.
        detail: String,
    },
    /// An event of a newer core that this facade does not name yet.
    Other {
        /// The event, for people.
        detail: String,
    },
}

fn media(m: Option<MediaDescription>) -> Option<String> {
    m.map(|m| m.as_str().to_owned())
}

impl From<ClientEvent> for Event {
    fn from(ev: ClientEvent) -> Self {
        match ev {
            ClientEvent::LoggedIn { session } => Self::LoggedIn { session: session.0 },
            ClientEvent::Synced => Self::Synced,
            ClientEvent::Detached => Self::Detached,
            ClientEvent::Resumed { session, snapshot } => Self::Resumed {
                session: session.0,
                snapshot,
            },
            ClientEvent::PeerOnline { endpoint, params } => Self::PeerOnline {
                peer: (&endpoint).into(),
                params: (&params).into(),
            },
            ClientEvent::PeerUpdated { endpoint, params } => Self::PeerUpdated {
                peer: (&endpoint).into(),
                params: (&params).into(),
            },
            ClientEvent::PeerOffline { endpoint } => Self::PeerOffline {
                peer: (&endpoint).into(),
            },
            ClientEvent::ContactsChanged { req, user, added } => Self::ContactsChanged {
                req: req.map(|r| r.0),
                user: user.as_str().to_owned(),
                added,
            },
            ClientEvent::CapsAcknowledged { req } => Self::CapsAcknowledged { req: req.0 },
            ClientEvent::CallRinging { req, call, to } => Self::CallRinging {
                req: req.0,
                call: call.0,
                to: (&to).into(),
            },
            ClientEvent::IncomingCall {
                call,
                from,
                params,
                media: m,
            } => Self::IncomingCall {
                call: call.0,
                caller: (&from).into(),
                params: (&params).into(),
                media: media(m),
            },
            ClientEvent::CallEstablished {
                call,
                params,
                path,
                media: m,
            } => Self::CallEstablished {
                call: call.0,
                params: (&params).into(),
                path: path.into(),
                media: media(m),
            },
            ClientEvent::CallEnded { call, reason } => Self::CallEnded {
                call: call.0,
                reason: wire_name(&reason),
            },
            ClientEvent::CapsResult {
                req,
                from,
                capabilities,
                params,
            } => Self::CapsResult {
                req: req.0,
                peer: (&from).into(),
                capabilities: (&capabilities).into(),
                params: (&params).into(),
            },
            ClientEvent::CallFailed {
                req,
                to,
                code,
                detail,
            } => Self::CallFailed {
                req: req.0,
                to: (&to).into(),
                code: wire_name(&code),
                detail,
            },
            ClientEvent::ServerError {
                code,
                req,
                call,
                retry_after,
                detail,
            } => Self::ServerError {
                code: wire_name(&code),
                req: req.map(|r| r.0),
                call: call.map(|c| c.0),
                retry_after_ms: retry_after.map(precall_protocol::time::millis),
                detail,
            },
            ClientEvent::LoggedOut => Self::LoggedOut,
            ClientEvent::Violation(v) => Self::Violation {
                detail: v.to_string(),
            },
            other => Self::Other {
                detail: format!("{other:?}"),
            },
        }
    }
}
