//! What the client prints: the core's [`ClientEvent`]s, enriched with what the binary
//! knows (the table, the callee of a request, the measured set-up time), and the
//! answers to local commands; each as one JSON line (`--json`) or one human line.

use std::fmt::Write as _;

use precall_protocol::client::SetupPath;
use precall_protocol::message::EndReason;
use precall_protocol::{
    CallId, CallParams, Capabilities, Client, ClientEvent, Direction, Endpoint, ErrorCode,
    SessionId, UserId,
};
use serde::Serialize;
use serde_json::{json, Value};

/// One entry of a printed table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// An online contact terminal and the parameters pre-negotiated with it.
    Online {
        /// The terminal.
        endpoint: Endpoint,
        /// The parameters from this terminal's point of view.
        params: CallParams,
    },
    /// A contact with no online terminal.
    Offline {
        /// The contact.
        user: UserId,
    },
}

/// Something to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The answer to `query`: a contact terminal's capabilities and the parameters a
    /// call with it would use (the table is not changed).
    CapsResult {
        /// The terminal that answered.
        from: Endpoint,
        /// Its capabilities.
        capabilities: Capabilities,
        /// The parameters, from this end.
        params: CallParams,
    },
    /// Login succeeded.
    LoggedIn {
        /// The user.
        user: UserId,
        /// The session.
        session: SessionId,
    },
    /// The login snapshot is complete; the table as it now stands.
    Synced {
        /// Online contact terminals.
        table: Vec<Row>,
    },
    /// The answer to the `table` command.
    Table {
        /// Online contact terminals, then contacts with none.
        table: Vec<Row>,
    },
    /// A contact terminal came online.
    PeerOnline {
        /// The terminal.
        endpoint: Endpoint,
        /// The pre-negotiated parameters.
        params: CallParams,
    },
    /// A contact terminal changed capabilities.
    PeerUpdated {
        /// The terminal.
        endpoint: Endpoint,
        /// The new parameters.
        params: CallParams,
    },
    /// A contact terminal went offline.
    PeerOffline {
        /// The terminal.
        endpoint: Endpoint,
    },
    /// The contact list changed.
    ContactsChanged {
        /// The user.
        user: UserId,
        /// Added or removed.
        added: bool,
    },
    /// The server recorded this terminal's new capabilities.
    CapsAcknowledged,
    /// A placed call rings at the callee.
    CallRinging {
        /// The call.
        call: CallId,
        /// The callee, if the request is known.
        to: Option<Endpoint>,
    },
    /// Someone calls.
    IncomingCall {
        /// The call.
        call: CallId,
        /// The caller.
        from: Endpoint,
        /// The parameters.
        params: CallParams,
        /// The SDP answer this terminal could send at once (`precall-sdp`), or why
        /// there is none.
        sdp_answer: Result<String, String>,
    },
    /// A call is established.
    CallEstablished {
        /// The call.
        call: CallId,
        /// Fast or fallback.
        path: SetupPath,
        /// The parameters, from this end.
        params: CallParams,
        /// The other terminal, if known.
        peer: Option<Endpoint>,
        /// Caller only: microseconds from writing the call request to establishment.
        setup_us: Option<u64>,
    },
    /// A call ended.
    CallEnded {
        /// The call.
        call: CallId,
        /// Why.
        reason: EndReason,
    },
    /// A call request failed before ringing.
    CallFailed {
        /// The server's code.
        code: ErrorCode,
        /// The callee, if the request is known.
        to: Option<Endpoint>,
    },
    /// A server error or a refused local command.
    Error {
        /// A wire error code, or a local one (`unknown_command`, `not_in_table`, ...).
        code: String,
        /// For people.
        detail: String,
    },
    /// The server broke the protocol; the message was ignored.
    Violation {
        /// What happened.
        detail: String,
    },
    /// The connection dropped; the session is resumable and its table kept (calls
    /// ended first). The client reconnects unless told not to.
    Detached,
    /// The session was taken over on a new connection; what was missed follows, then
    /// `synced`.
    Resumed {
        /// The session (the same as before the drop).
        session: SessionId,
        /// Whether the server sent a full snapshot (the table was rebuilt) rather
        /// than only what was missed.
        snapshot: bool,
    },
    /// The session is over.
    LoggedOut,
}

/// What the binary adds to a [`ClientEvent`].
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// For `call_established` at the caller: the measured set-up time.
    pub setup_us: Option<u64>,
}

impl Event {
    /// The printable form of a core event; `client` supplies the table and the calls,
    /// `user` the login name if the client no longer holds it. `None` for an event this
    /// binary does not know (the core's enum is non-exhaustive).
    pub fn from_client(
        ev: ClientEvent,
        client: &Client,
        user: &UserId,
        extra: Extra,
    ) -> Option<Event> {
        Some(match ev {
            ClientEvent::LoggedIn { session } => Event::LoggedIn {
                user: client.user().unwrap_or(user).clone(),
                session,
            },
            ClientEvent::Synced => Event::Synced {
                table: table(client, false),
            },
            ClientEvent::PeerOnline { endpoint, params } => Event::PeerOnline { endpoint, params },
            ClientEvent::PeerUpdated { endpoint, params } => {
                Event::PeerUpdated { endpoint, params }
            }
            ClientEvent::PeerOffline { endpoint } => Event::PeerOffline { endpoint },
            ClientEvent::ContactsChanged { user, added, .. } => {
                Event::ContactsChanged { user, added }
            }
            ClientEvent::CapsAcknowledged { .. } => Event::CapsAcknowledged,
            ClientEvent::CallRinging { call, to, .. } => Event::CallRinging { call, to: Some(to) },
            ClientEvent::IncomingCall {
                call,
                from,
                params,
                media: _,
            } => Event::IncomingCall {
                sdp_answer: sdp_answer(client, &from, &params),
                call,
                from,
                params,
            },
            ClientEvent::CallEstablished {
                call,
                params,
                path,
                media: _,
            } => Event::CallEstablished {
                call,
                path,
                params,
                peer: client
                    .calls()
                    .find(|(id, _)| **id == call)
                    .map(|(_, c)| c.peer.clone()),
                setup_us: extra.setup_us,
            },
            ClientEvent::CallEnded { call, reason } => Event::CallEnded { call, reason },
            ClientEvent::CallFailed { code, to, .. } => Event::CallFailed { code, to: Some(to) },
            ClientEvent::ServerError {
                code,
                req,
                call,
                retry_after,
                detail: said,
            } => {
                let mut detail = format!("server error {}", wire_name(&code));
                if !said.is_empty() {
                    let _ = write!(detail, ": {said}");
                }
                if let Some(r) = req {
                    let _ = write!(detail, " (request {r})");
                }
                if let Some(c) = call {
                    let _ = write!(detail, " (call {c})");
                }
                if let Some(d) = retry_after {
                    let _ = write!(detail, " (retry after {} ms)", d.as_millis());
                }
                Event::Error {
                    code: wire_name(&code),
                    detail,
                }
            }
            ClientEvent::CapsResult {
                from,
                capabilities,
                params,
                ..
            } => Event::CapsResult {
                from,
                capabilities,
                params,
            },
            ClientEvent::LoggedOut => Event::LoggedOut,
            ClientEvent::Detached => Event::Detached,
            ClientEvent::Resumed { session, snapshot } => Event::Resumed { session, snapshot },
            ClientEvent::Violation(v) => Event::Violation {
                detail: v.to_string(),
            },
            _ => return None,
        })
    }

    /// A refused local command.
    pub fn error(code: impl Into<String>, detail: impl Into<String>) -> Event {
        Event::Error {
            code: code.into(),
            detail: detail.into(),
        }
    }

    /// The JSON object, with an `event` member.
    pub fn to_json(&self) -> Value {
        match self {
            Event::LoggedIn { user, session } => {
                json!({"event": "logged_in", "user": user, "session": session})
            }
            Event::Synced { table } => json!({"event": "synced", "table": rows_json(table)}),
            Event::Table { table } => json!({"event": "table", "table": rows_json(table)}),
            Event::PeerOnline { endpoint, params } => peer_json("peer_online", endpoint, params),
            Event::PeerUpdated { endpoint, params } => peer_json("peer_updated", endpoint, params),
            Event::PeerOffline { endpoint } => json!({
                "event": "peer_offline", "user": endpoint.user, "session": endpoint.session
            }),
            Event::ContactsChanged { user, added } => {
                json!({"event": "contacts_changed", "user": user, "added": added})
            }
            Event::CapsAcknowledged => json!({"event": "caps_acknowledged"}),
            Event::CallRinging { call, to } => {
                let mut v = json!({"event": "call_ringing", "call": call});
                if let Some(to) = to {
                    v["to"] = json!(to.to_string());
                }
                v
            }
            Event::IncomingCall {
                call,
                from,
                params,
                sdp_answer,
            } => {
                let mut v = json!({
                    "event": "incoming_call", "call": call, "from": from.to_string(), "params": params
                });
                match sdp_answer {
                    Ok(sdp) => v["sdp_answer"] = json!(sdp),
                    Err(why) => v["sdp_error"] = json!(why),
                }
                v
            }
            Event::CallEstablished {
                call,
                path,
                params,
                peer,
                setup_us,
            } => {
                let mut v = json!({
                    "event": "call_established", "call": call, "path": path_name(*path),
                    "params": params
                });
                if let Some(peer) = peer {
                    v["peer"] = json!(peer.to_string());
                }
                if let Some(us) = setup_us {
                    v["setup_us"] = json!(us);
                }
                v
            }
            Event::CallEnded { call, reason } => {
                json!({"event": "call_ended", "call": call, "reason": reason})
            }
            Event::CallFailed { code, to } => {
                let mut v = json!({"event": "call_failed", "code": code});
                if let Some(to) = to {
                    v["to"] = json!(to.to_string());
                }
                v
            }
            Event::Error { code, detail } => {
                json!({"event": "error", "code": code, "detail": detail})
            }
            Event::Violation { detail } => json!({"event": "violation", "detail": detail}),
            Event::Detached => json!({"event": "detached"}),
            Event::CapsResult {
                from,
                capabilities,
                params,
            } => json!({
                "event": "caps_result", "from": from.to_string(),
                "capabilities": capabilities, "params": params
            }),
            Event::Resumed { session, snapshot } => {
                json!({"event": "resumed", "session": session, "snapshot": snapshot})
            }
            Event::LoggedOut => json!({"event": "logged_out"}),
        }
    }

    /// The text for people (may span several lines for tables).
    pub fn to_human(&self) -> String {
        match self {
            Event::LoggedIn { user, session } => format!("logged in as {user} (session {session})"),
            Event::Synced { table } => {
                format!(
                    "synced: {} online contact terminal(s){}",
                    table.len(),
                    rows_human(table)
                )
            }
            Event::Table { table } if table.is_empty() => "table: no contacts".to_owned(),
            Event::Table { table } => format!("table:{}", rows_human(table)),
            Event::PeerOnline { endpoint, params } => {
                format!("{endpoint} online: {}", params_human(params))
            }
            Event::PeerUpdated { endpoint, params } => {
                format!("{endpoint} updated: {}", params_human(params))
            }
            Event::PeerOffline { endpoint } => format!("{endpoint} offline"),
            Event::ContactsChanged { user, added: true } => format!("contact {user} added"),
            Event::ContactsChanged { user, added: false } => format!("contact {user} removed"),
            Event::CapsAcknowledged => "capabilities acknowledged".to_owned(),
            Event::CapsResult { from, params, .. } => {
                format!("{from} answered the query: {}", params_human(params))
            }
            Event::CallRinging { call, to: Some(to) } => format!("call {call} ringing at {to}"),
            Event::CallRinging { call, to: None } => format!("call {call} ringing"),
            Event::IncomingCall {
                call, from, params, ..
            } => format!(
                "incoming call {call} from {from}: {} (answer {call} / reject {call})",
                params_human(params)
            ),
            Event::CallEstablished {
                call,
                path,
                params,
                peer,
                setup_us,
            } => {
                let mut s = format!("call {call} established");
                if let Some(peer) = peer {
                    let _ = write!(s, " with {peer}");
                }
                let _ = write!(s, " ({} path", path_name(*path));
                if let Some(us) = setup_us {
                    let _ = write!(s, ", set-up {us} µs");
                }
                let _ = write!(s, "): {}", params_human(params));
                s
            }
            Event::CallEnded { call, reason } => {
                format!("call {call} ended: {}", wire_name(reason))
            }
            Event::CallFailed { code, to: Some(to) } => {
                format!("call to {to} failed: {}", wire_name(code))
            }
            Event::CallFailed { code, to: None } => format!("call failed: {}", wire_name(code)),
            Event::Error { code, detail } => format!("error {code}: {detail}"),
            Event::Violation { detail } => format!("protocol violation by the server: {detail}"),
            Event::Detached => "connection lost; session detached".to_owned(),
            Event::Resumed {
                session,
                snapshot: true,
            } => format!("resumed session {session} (snapshot)"),
            Event::Resumed {
                session,
                snapshot: false,
            } => format!("resumed session {session} (what was missed)"),
            Event::LoggedOut => "logged out".to_owned(),
        }
    }
}

/// The table as the client holds it: every online contact terminal with its
/// pre-negotiated parameters and, if `offline` is set, every contact without one.
pub fn table(client: &Client, offline: bool) -> Vec<Row> {
    let mut rows: Vec<Row> = client
        .peers()
        .map(|(endpoint, peer)| Row::Online {
            endpoint: endpoint.clone(),
            params: peer.params.clone(),
        })
        .collect();
    if offline {
        for user in client.contacts() {
            if !client.peers().any(|(e, _)| e.user == *user) {
                rows.push(Row::Offline { user: user.clone() });
            }
        }
    }
    rows
}

fn rows_json(rows: &[Row]) -> Value {
    rows.iter()
        .map(|row| match row {
            Row::Online { endpoint, params } => json!({
                "user": endpoint.user, "session": endpoint.session, "online": true,
                "send": params.send, "recv": params.recv
            }),
            Row::Offline { user } => json!({"user": user, "online": false}),
        })
        .collect()
}

fn rows_human(rows: &[Row]) -> String {
    let mut s = String::new();
    for row in rows {
        match row {
            Row::Online { endpoint, params } => {
                let _ = write!(s, "\n  {endpoint:<20} {}", params_human(params));
            }
            Row::Offline { user } => {
                let _ = write!(s, "\n  {user:<20} offline");
            }
        }
    }
    s
}

/// The `m=video` section of the SDP answer the callee of `call` could send at once: the
/// caller's offer is what `precall_sdp::offer` gives for the caller's capabilities (in
/// the table since it came online) and the caller's view of the parameters; the answer
/// is this terminal's, from its own capabilities. No capability exchange is needed.
fn sdp_answer(client: &Client, from: &Endpoint, params: &CallParams) -> Result<String, String> {
    let own = client
        .capabilities()
        .ok_or("this terminal's capabilities are not known yet")?;
    let caller = client
        .peer(from)
        .ok_or_else(|| format!("{from} is not in the table"))?;
    precall_sdp::callee_answer(own, &caller.capabilities, params)
        .map(|a| a.to_string())
        .map_err(|e| e.to_string())
}

fn peer_json(event: &str, endpoint: &Endpoint, params: &CallParams) -> Value {
    json!({"event": event, "user": endpoint.user, "session": endpoint.session, "params": params})
}

fn params_human(p: &CallParams) -> String {
    format!(
        "send {}, recv {}",
        direction_human(&p.send),
        direction_human(&p.recv)
    )
}

fn direction_human(d: &Direction) -> String {
    match d {
        Direction::Video(v) => format!(
            "{} {}x{}@{} {} kbit/s",
            v.codec, v.width, v.height, v.fps, v.bitrate_kbps
        ),
        Direction::Off(why) => format!("no video ({})", wire_name(why)),
    }
}

fn path_name(p: SetupPath) -> &'static str {
    p.name()
}

/// A unit enum's wire name (`not_reachable`, `hangup`, `no_camera`).
fn wire_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use precall_protocol::caps::{NoVideo, StreamParams};
    use precall_protocol::client::Violation;
    use precall_protocol::{ClientConfig, Codec, ReqId};

    fn u(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn bob3() -> Endpoint {
        Endpoint {
            user: u("bob"),
            session: SessionId(3),
        }
    }

    fn params() -> CallParams {
        CallParams {
            send: Direction::Video(StreamParams {
                codec: Codec::new("h264").unwrap(),
                width: 1280,
                height: 720,
                fps: 30,
                bitrate_kbps: 1500,
            }),
            recv: Direction::Off(NoVideo::NoCamera),
        }
    }

    fn params_json() -> Value {
        json!({
            "send": {"video": {"codec": "h264", "width": 1280, "height": 720, "fps": 30,
                               "bitrate_kbps": 1500}},
            "recv": {"off": "no_camera"}
        })
    }

    thread_local! {
        /// Every event [`render`] produced on this thread, for the documentation check.
        static RENDERED: std::cell::RefCell<Vec<Value>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Renders a core event through a client that is not logged in.
    fn render(ev: ClientEvent, extra: Extra) -> Value {
        let client = Client::new(ClientConfig::default());
        let v = Event::from_client(ev, &client, &u("alice"), extra)
            .unwrap()
            .to_json();
        RENDERED.with(|r| r.borrow_mut().push(v.clone()));
        v
    }

    /// The event examples of `JSON.md`, one JSON object per line.
    fn documented_events() -> Vec<Value> {
        include_str!("../JSON.md")
            .lines()
            .filter(|l| l.starts_with("{\"event\""))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    fn keys(v: &Value) -> std::collections::BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    #[allow(clippy::vec_init_then_push)] // one push per event, as JSON.md lists them
    fn core_events_render_as_the_contract_says() {
        let none = Extra::default;
        let mut shown = Vec::new();
        shown.push(render(
            ClientEvent::LoggedIn {
                session: SessionId(1),
            },
            none(),
        ));
        shown.push(render(ClientEvent::Synced, none()));
        shown.push(render(
            ClientEvent::PeerOnline {
                endpoint: bob3(),
                params: params(),
            },
            none(),
        ));
        shown.push(render(
            ClientEvent::PeerUpdated {
                endpoint: bob3(),
                params: params(),
            },
            none(),
        ));
        shown.push(render(
            ClientEvent::PeerOffline { endpoint: bob3() },
            none(),
        ));
        shown.push(render(
            ClientEvent::ContactsChanged {
                req: Some(ReqId(4)),
                user: u("carol"),
                added: true,
            },
            none(),
        ));
        shown.push(render(
            ClientEvent::CapsAcknowledged { req: ReqId(3) },
            none(),
        ));
        shown.push(render(
            ClientEvent::CallRinging {
                req: ReqId(2),
                call: CallId(5),
                to: bob3(),
            },
            none(),
        ));
        shown.push(render(
            ClientEvent::IncomingCall {
                call: CallId(5),
                from: bob3(),
                params: params(),
                media: None,
            },
            none(),
        ));
        shown.push(render(
            ClientEvent::CallEstablished {
                call: CallId(5),
                params: params(),
                path: SetupPath::Fast,
                media: None,
            },
            Extra {
                setup_us: Some(840),
            },
        ));
        shown.push(render(
            ClientEvent::CallEstablished {
                call: CallId(6),
                params: params(),
                path: SetupPath::Fallback,
                media: None,
            },
            none(),
        ));
        shown.push(render(
            ClientEvent::CallEnded {
                call: CallId(5),
                reason: EndReason::Hangup,
            },
            none(),
        ));
        shown.push(render(
            ClientEvent::CallFailed {
                req: ReqId(2),
                to: bob3(),
                code: ErrorCode::NotReachable,
                detail: String::new(),
            },
            none(),
        ));
        shown.push(render(
            ClientEvent::ServerError {
                code: ErrorCode::Busy,
                req: Some(ReqId(3)),
                call: None,
                retry_after: None,
                detail: "at the limit".into(),
            },
            none(),
        ));
        shown.push(render(
            ClientEvent::Violation(Violation::Unexpected("logged_out")),
            none(),
        ));
        shown.push(render(ClientEvent::LoggedOut, none()));
        shown.push(render(ClientEvent::Detached, none()));
        shown.push(render(
            ClientEvent::Resumed {
                session: SessionId(4),
                snapshot: false,
            },
            none(),
        ));
        render(
            ClientEvent::CapsResult {
                req: precall_protocol::ReqId(2),
                from: bob3(),
                capabilities: precall_protocol::sim::sample_caps(&["h264"], 1280, 30),
                params: params(),
            },
            none(),
        );
        // The shapes, one JSON line per event, as the contract (JSON.md) shows them.
        let lines: Vec<String> = shown.iter().map(Value::to_string).collect();
        insta::assert_snapshot!(lines.join("\n"));
        // Every event the client prints is documented in JSON.md with the same members
        // (`setup_us` may be left out where it does not apply), and every
        // documented event is one the client prints.
        let mut rendered = RENDERED.with(|r| r.borrow().clone());
        rendered.push(Event::Table { table: vec![] }.to_json());
        let documented = documented_events();
        // `setup_us` only where it applies; an incoming call carries `sdp_answer` or,
        // when none can be made, `sdp_error`.
        let optional: std::collections::BTreeSet<String> = ["setup_us", "sdp_answer", "sdp_error"]
            .map(String::from)
            .into();
        for v in &rendered {
            let doc = documented
                .iter()
                .find(|d| d["event"] == v["event"])
                .unwrap_or_else(|| panic!("{} is not documented in JSON.md", v["event"]));
            let (have, shown) = (keys(v), keys(doc));
            assert!(
                have.difference(&shown).all(|k| optional.contains(k))
                    && shown.difference(&have).all(|k| optional.contains(k)),
                "JSON.md shows {} with {shown:?}, the client prints {have:?}",
                v["event"]
            );
        }
        for d in &documented {
            assert!(
                rendered.iter().any(|v| v["event"] == d["event"]),
                "JSON.md documents {} that the client never prints",
                d["event"]
            );
        }
    }

    #[test]
    fn tables_and_local_errors_render() {
        let rows = vec![
            Row::Online {
                endpoint: bob3(),
                params: params(),
            },
            Row::Offline { user: u("carol") },
        ];
        let mut expected_rows = json!([
            {"user": "bob", "session": 3, "online": true},
            {"user": "carol", "online": false}
        ]);
        expected_rows[0]["send"] = params_json()["send"].clone();
        expected_rows[0]["recv"] = params_json()["recv"].clone();
        assert_eq!(
            Event::Table {
                table: rows.clone()
            }
            .to_json(),
            json!({"event": "table", "table": expected_rows})
        );
        assert_eq!(
            Event::error("not_in_table", "bob has no online terminal").to_json(),
            json!({"event": "error", "code": "not_in_table", "detail": "bob has no online terminal"})
        );
        let human = Event::Table { table: rows }.to_human();
        assert!(human.contains("bob/3"), "{human}");
        assert!(human.contains("h264 1280x720@30 1500 kbit/s"), "{human}");
        assert!(human.contains("no video (no_camera)"), "{human}");
        assert!(
            human.contains("carol") && human.contains("offline"),
            "{human}"
        );
    }

    #[test]
    fn human_lines_name_the_essentials() {
        let est = Event::CallEstablished {
            call: CallId(5),
            path: SetupPath::Fast,
            params: params(),
            peer: Some(bob3()),
            setup_us: Some(900),
        };
        assert_eq!(
            est.to_human(),
            "call 5 established with bob/3 (fast path, set-up 900 µs): \
             send h264 1280x720@30 1500 kbit/s, recv no video (no_camera)"
        );
        assert_eq!(
            Event::CallEnded {
                call: CallId(5),
                reason: EndReason::Rejected
            }
            .to_human(),
            "call 5 ended: rejected"
        );
        assert_eq!(Event::LoggedOut.to_human(), "logged out");
        assert_eq!(
            Event::Resumed {
                session: SessionId(4),
                snapshot: true
            }
            .to_human(),
            "resumed session 4 (snapshot)"
        );
        assert_eq!(
            Event::Detached.to_human(),
            "connection lost; session detached"
        );
    }
}
