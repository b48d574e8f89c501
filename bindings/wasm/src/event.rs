//! The core's [`ClientEvent`]s as plain JavaScript objects: one [`Event`] per core
//! event, `type` naming it in snake_case (the names of the reference client's JSON
//! events, `reference-client/JSON.md`), the other members the core event's fields.
//!
//! | `type` | members | core event |
//! |---|---|---|
//! | `logged_in` | `user`, `session` | [`ClientEvent::LoggedIn`] |
//! | `synced` | | [`ClientEvent::Synced`] |
//! | `detached` | | [`ClientEvent::Detached`] |
//! | `resumed` | `session`, `snapshot` | [`ClientEvent::Resumed`] |
//! | `peer_online` | `user`, `session`, `params` | [`ClientEvent::PeerOnline`] |
//! | `peer_updated` | `user`, `session`, `params` | [`ClientEvent::PeerUpdated`] |
//! | `peer_offline` | `user`, `session` | [`ClientEvent::PeerOffline`] |
//! | `contacts_changed` | `req` (absent for a change made elsewhere), `user`, `added` | [`ClientEvent::ContactsChanged`] |
//! | `caps_acknowledged` | `req` | [`ClientEvent::CapsAcknowledged`] |
//! | `call_ringing` | `req`, `call`, `to` | [`ClientEvent::CallRinging`] |
//! | `incoming_call` | `call`, `from`, `params`, and `sdp_answer` or `sdp_error` | [`ClientEvent::IncomingCall`] |
//! | `call_established` | `call`, `params`, `path` (`fast` or `fallback`) | [`ClientEvent::CallEstablished`] |
//! | `call_ended` | `call`, `reason` | [`ClientEvent::CallEnded`] |
//! | `caps_result` | `req`, `from`, `capabilities`, `params` | [`ClientEvent::CapsResult`] |
//! | `call_failed` | `req`, `to`, `code`, `detail` | [`ClientEvent::CallFailed`] |
//! | `server_error` | `code`, `req`, `call`, `retry_after_ms` (each absent when the server gave none), `detail` | [`ClientEvent::ServerError`] |
//! | `logged_out` | | [`ClientEvent::LoggedOut`] |
//! | `violation` | `detail` | [`ClientEvent::Violation`] |
//! | `unknown` | `detail` | a core event newer than this facade |
//!
//! `params` are the core's [`CallParams`] as the wire writes them: `{send, recv}`, each
//! `{video: {codec, width, height, fps, bitrate_kbps}}` or `{off: "no_camera" |
//! "no_common_codec" | "insufficient_resources"}`. `to` and `from` are endpoints,
//! `{user, session}`. `code` and `reason` are the wire's snake_case codes. Numbers
//! (`session`, `call`, `req`) are JavaScript numbers.
//!
//! Two members are added to the core's fields, both as the reference client adds them:
//! the `user` of `logged_in`, and the `sdp_answer` of `incoming_call` (the `m=video`
//! section the callee could answer with at once, [`crate::sdp::answer_for`]; its
//! `sdp_error` when there is none). Where the reference client's JSON differs: its
//! `error` event is `server_error` here (a command the core refuses throws instead of
//! becoming an event), its `synced` carries the table (here `table()` gives it), its
//! endpoints are `"user/session"` texts (here `{user, session}` objects), and the
//! request tags (`req`) it leaves out are kept here.

use precall_protocol::{
    CallId, CallParams, Capabilities, Client, ClientEvent, EndReason, Endpoint, ErrorCode, ReqId,
    SessionId, UserId,
};
use serde::Serialize;

use crate::sdp;

/// One event for the page, as [`crate::PrecallClient::poll_event`] returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(missing_docs)] // the fields are the core event's, documented there
pub enum Event {
    /// [`ClientEvent::LoggedIn`], with the user logged in.
    LoggedIn { user: UserId, session: SessionId },
    /// [`ClientEvent::Synced`].
    Synced,
    /// [`ClientEvent::Detached`].
    Detached,
    /// [`ClientEvent::Resumed`].
    Resumed { session: SessionId, snapshot: bool },
    /// [`ClientEvent::PeerOnline`].
    PeerOnline {
        user: UserId,
        session: SessionId,
        params: CallParams,
    },
    /// [`ClientEvent::PeerUpdated`].
    PeerUpdated {
        user: UserId,
        session: SessionId,
        params: CallParams,
    },
    /// [`ClientEvent::PeerOffline`].
    PeerOffline { user: UserId, session: SessionId },
    /// [`ClientEvent::ContactsChanged`].
    ContactsChanged {
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        user: UserId,
        added: bool,
    },
    /// [`ClientEvent::CapsAcknowledged`].
    CapsAcknowledged { req: ReqId },
    /// [`ClientEvent::CallRinging`].
    CallRinging {
        req: ReqId,
        call: CallId,
        to: Endpoint,
    },
    /// [`ClientEvent::IncomingCall`], with the SDP answer this end could send.
    IncomingCall {
        call: CallId,
        from: Endpoint,
        params: CallParams,
        #[serde(skip_serializing_if = "Option::is_none")]
        sdp_answer: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sdp_error: Option<String>,
        /// The caller's media description (spec 10.8), if its call carried one.
        #[serde(skip_serializing_if = "Option::is_none")]
        media: Option<String>,
    },
    /// [`ClientEvent::CallEstablished`].
    CallEstablished {
        call: CallId,
        params: CallParams,
        /// The callee's media description (spec 10.8), at the caller, if its
        /// acceptance carried one.
        #[serde(skip_serializing_if = "Option::is_none")]
        media: Option<String>,
        path: &'static str,
    },
    /// [`ClientEvent::CallEnded`].
    CallEnded { call: CallId, reason: EndReason },
    /// [`ClientEvent::CapsResult`].
    CapsResult {
        req: ReqId,
        from: Endpoint,
        capabilities: Capabilities,
        params: CallParams,
    },
    /// [`ClientEvent::CallFailed`].
    CallFailed {
        req: ReqId,
        to: Endpoint,
        code: ErrorCode,
        detail: String,
    },
    /// [`ClientEvent::ServerError`].
    ServerError {
        code: ErrorCode,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<CallId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        detail: String,
    },
    /// [`ClientEvent::LoggedOut`].
    LoggedOut,
    /// [`ClientEvent::Violation`], as its text.
    Violation { detail: String },
    /// An event of a newer core than this facade knows (the core's enum is
    /// non-exhaustive), as its debug text.
    Unknown { detail: String },
}

impl Event {
    /// The page's form of a core event. `client` is the client the event came from
    /// (for the SDP answer of an incoming call), `user` the configured account name
    /// (for `logged_in`).
    pub fn from_client(ev: ClientEvent, client: &Client, user: &UserId) -> Event {
        match ev {
            ClientEvent::LoggedIn { session } => Event::LoggedIn {
                user: client.user().unwrap_or(user).clone(),
                session,
            },
            ClientEvent::Synced => Event::Synced,
            ClientEvent::Detached => Event::Detached,
            ClientEvent::Resumed { session, snapshot } => Event::Resumed { session, snapshot },
            ClientEvent::PeerOnline { endpoint, params } => Event::PeerOnline {
                user: endpoint.user,
                session: endpoint.session,
                params,
            },
            ClientEvent::PeerUpdated { endpoint, params } => Event::PeerUpdated {
                user: endpoint.user,
                session: endpoint.session,
                params,
            },
            ClientEvent::PeerOffline { endpoint } => Event::PeerOffline {
                user: endpoint.user,
                session: endpoint.session,
            },
            ClientEvent::ContactsChanged { req, user, added } => {
                Event::ContactsChanged { req, user, added }
            }
            ClientEvent::CapsAcknowledged { req } => Event::CapsAcknowledged { req },
            ClientEvent::CallRinging { req, call, to } => Event::CallRinging { req, call, to },
            ClientEvent::IncomingCall {
                call,
                from,
                params,
                media,
            } => {
                let (sdp_answer, sdp_error) = match sdp::answer_for(client, &from, &params) {
                    Ok(section) => (Some(section.to_string()), None),
                    Err(e) => (None, Some(e.message)),
                };
                Event::IncomingCall {
                    call,
                    from,
                    params,
                    sdp_answer,
                    sdp_error,
                    media: media.map(String::from),
                }
            }
            ClientEvent::CallEstablished {
                call,
                params,
                path,
                media,
            } => Event::CallEstablished {
                call,
                params,
                media: media.map(String::from),
                path: path.name(),
            },
            ClientEvent::CallEnded { call, reason } => Event::CallEnded { call, reason },
            ClientEvent::CapsResult {
                req,
                from,
                capabilities,
                params,
            } => Event::CapsResult {
                req,
                from,
                capabilities,
                params,
            },
            ClientEvent::CallFailed {
                req,
                to,
                code,
                detail,
            } => Event::CallFailed {
                req,
                to,
                code,
                detail,
            },
            ClientEvent::ServerError {
                code,
                req,
                call,
                retry_after,
                detail,
            } => Event::ServerError {
                code,
                req,
                call,
                retry_after_ms: retry_after.map(precall_protocol::time::millis),
                detail,
            },
            ClientEvent::LoggedOut => Event::LoggedOut,
            ClientEvent::Violation(v) => Event::Violation {
                detail: v.to_string(),
            },
            other => Event::Unknown {
                detail: format!("{other:?}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use precall_protocol::{negotiate_pair, SetupPath};
    use precall_protocol::{ClientConfig, CpuClass};
    use serde_json::{json, Value};

    use super::*;
    use precall_protocol::client::Violation;

    fn ep(user: &str, session: u64) -> Endpoint {
        Endpoint {
            user: UserId::new(user).unwrap(),
            session: SessionId(session),
        }
    }

    fn caps(codecs: &[&str], width: u16) -> Capabilities {
        Capabilities::builder()
            .codecs(codecs.iter().copied())
            .screen(width, width / 16 * 9)
            .camera(width, width / 16 * 9, 30)
            .cpu(CpuClass::High)
            .bandwidth(8000, 8000)
            .build()
            .unwrap()
    }

    fn shown(ev: ClientEvent) -> Value {
        let client = Client::new(ClientConfig::default());
        let user = UserId::new("alice").unwrap();
        serde_json::to_value(Event::from_client(ev, &client, &user)).unwrap()
    }

    /// Every core event, and the object a page receives for it.
    #[test]
    fn every_core_event_becomes_a_plain_object_named_by_its_type() {
        let params = negotiate_pair(&caps(&["h264"], 1280), &caps(&["h264", "vp8"], 640));
        let p = serde_json::to_value(&params).unwrap();
        let bob = ep("bob", 3);
        let cases = vec![
            (
                ClientEvent::LoggedIn {
                    session: SessionId(1),
                },
                json!({"type": "logged_in", "user": "alice", "session": 1}),
            ),
            (ClientEvent::Synced, json!({"type": "synced"})),
            (ClientEvent::Detached, json!({"type": "detached"})),
            (
                ClientEvent::Resumed {
                    session: SessionId(1),
                    snapshot: true,
                },
                json!({"type": "resumed", "session": 1, "snapshot": true}),
            ),
            (
                ClientEvent::PeerOnline {
                    endpoint: bob.clone(),
                    params: params.clone(),
                },
                json!({"type": "peer_online", "user": "bob", "session": 3, "params": p}),
            ),
            (
                ClientEvent::PeerUpdated {
                    endpoint: bob.clone(),
                    params: params.clone(),
                },
                json!({"type": "peer_updated", "user": "bob", "session": 3, "params": p}),
            ),
            (
                ClientEvent::PeerOffline {
                    endpoint: bob.clone(),
                },
                json!({"type": "peer_offline", "user": "bob", "session": 3}),
            ),
            (
                ClientEvent::ContactsChanged {
                    req: Some(ReqId(2)),
                    user: UserId::new("carol").unwrap(),
                    added: true,
                },
                json!({"type": "contacts_changed", "req": 2, "user": "carol", "added": true}),
            ),
            (
                ClientEvent::ContactsChanged {
                    req: None,
                    user: UserId::new("carol").unwrap(),
                    added: false,
                },
                json!({"type": "contacts_changed", "user": "carol", "added": false}),
            ),
            (
                ClientEvent::CapsAcknowledged { req: ReqId(4) },
                json!({"type": "caps_acknowledged", "req": 4}),
            ),
            (
                ClientEvent::CallRinging {
                    req: ReqId(5),
                    call: CallId(9),
                    to: bob.clone(),
                },
                json!({"type": "call_ringing", "req": 5, "call": 9, "to": {"user": "bob", "session": 3}}),
            ),
            (
                // A client that is not logged in has no capabilities to answer with.
                ClientEvent::IncomingCall {
                    call: CallId(9),
                    from: bob.clone(),
                    params: params.clone(),
                    media: None,
                },
                json!({"type": "incoming_call", "call": 9, "from": {"user": "bob", "session": 3},
                       "params": p, "sdp_error": "not logged in: this terminal's capabilities are not known"}),
            ),
            (
                ClientEvent::CallEstablished {
                    call: CallId(9),
                    params: params.clone(),
                    path: SetupPath::Fallback,
                    media: None,
                },
                json!({"type": "call_established", "call": 9, "params": p, "path": "fallback"}),
            ),
            (
                ClientEvent::CallEnded {
                    call: CallId(9),
                    reason: EndReason::PeerGone,
                },
                json!({"type": "call_ended", "call": 9, "reason": "peer_gone"}),
            ),
            (
                ClientEvent::CapsResult {
                    req: ReqId(6),
                    from: bob.clone(),
                    capabilities: caps(&["vp8"], 640),
                    params: params.clone(),
                },
                json!({"type": "caps_result", "req": 6, "from": {"user": "bob", "session": 3},
                       "capabilities": serde_json::to_value(caps(&["vp8"], 640)).unwrap(), "params": p}),
            ),
            (
                ClientEvent::CallFailed {
                    req: ReqId(7),
                    to: bob.clone(),
                    code: ErrorCode::NotReachable,
                    detail: String::new(),
                },
                json!({"type": "call_failed", "req": 7, "to": {"user": "bob", "session": 3},
                       "code": "not_reachable", "detail": ""}),
            ),
            (
                ClientEvent::ServerError {
                    code: ErrorCode::CapsThrottled,
                    req: Some(ReqId(8)),
                    call: None,
                    retry_after: Some(Duration::from_millis(1500)),
                    detail: "slow down".into(),
                },
                json!({"type": "server_error", "code": "caps_throttled", "req": 8,
                       "retry_after_ms": 1500, "detail": "slow down"}),
            ),
            (ClientEvent::LoggedOut, json!({"type": "logged_out"})),
            (
                ClientEvent::Violation(Violation::UnexpectedLogin),
                json!({"type": "violation", "detail": "unexpected login_ok"}),
            ),
        ];
        for (ev, want) in cases {
            assert_eq!(shown(ev.clone()), want, "{ev:?}");
        }
        // The params read back as the core's parameters.
        let back: CallParams = serde_json::from_value(p).unwrap();
        assert_eq!(back, params);
    }
}
