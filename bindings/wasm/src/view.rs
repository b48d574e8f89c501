//! What the client holds, as plain objects: the table (online contact terminals with
//! the parameters pre-computed for each, then contacts with none), one peer's entry,
//! the calls, and the session's status. Read from the core's accessors; snake_case
//! members like the events.

use precall_protocol::{
    CallId, CallParams, CallState, Capabilities, Client, Direction, Endpoint, Fingerprint, Role,
    SessionId, Status, UserId,
};
use serde::Serialize;

/// One row of [`table`]: `{user, session, online: true, send, recv}` for an online
/// contact terminal, `{user, online: false}` for a contact with none (the rows of the
/// reference client's `table` event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The contact.
    pub user: UserId,
    /// The terminal's session, if online.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    /// Whether this row is an online terminal.
    pub online: bool,
    /// What this terminal would send to it (`{video: {...}}` or `{off: reason}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<Direction>,
    /// What this terminal would receive from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv: Option<Direction>,
}

/// The table: every online contact terminal with its pre-computed parameters (the
/// core's order), then every contact with no online terminal.
pub fn table(client: &Client) -> Vec<Row> {
    let mut rows: Vec<Row> = client
        .peers()
        .map(|(endpoint, peer)| Row {
            user: endpoint.user.clone(),
            session: Some(endpoint.session),
            online: true,
            send: Some(peer.params.send.clone()),
            recv: Some(peer.params.recv.clone()),
        })
        .collect();
    for user in client.contacts() {
        if !client.peers().any(|(e, _)| e.user == *user) {
            rows.push(Row {
                user: user.clone(),
                session: None,
                online: false,
                send: None,
                recv: None,
            });
        }
    }
    rows
}

/// One table entry in full ([`Client::peer`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerEntry {
    /// The user.
    pub user: UserId,
    /// The terminal's session.
    pub session: SessionId,
    /// Its capabilities as last pushed, in the wire's JSON form.
    pub capabilities: Capabilities,
    /// Their fingerprint (32 hex digits).
    pub fingerprint: Fingerprint,
    /// The parameters of a call with it, from this end.
    pub params: CallParams,
}

/// The table entry of `endpoint`, if it is an online contact terminal.
pub fn peer(client: &Client, endpoint: &Endpoint) -> Option<PeerEntry> {
    client.peer(endpoint).map(|p| PeerEntry {
        user: endpoint.user.clone(),
        session: endpoint.session,
        capabilities: p.capabilities.clone(),
        fingerprint: p.fingerprint,
        params: p.params.clone(),
    })
}

/// One call of this terminal ([`Client::calls`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallRow {
    /// The call number.
    pub call: CallId,
    /// The other terminal.
    pub peer: Endpoint,
    /// `caller` or `callee`.
    pub role: &'static str,
    /// `ringing`, `awaiting_caller_caps`, `incoming` or `established`.
    pub state: &'static str,
    /// The parameters from this end, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<CallParams>,
    /// `fast` or `fallback` (whether capabilities travelled in its signalling so far).
    pub path: &'static str,
}

/// The calls, in call order.
pub fn calls(client: &Client) -> Vec<CallRow> {
    client
        .calls()
        .map(|(id, c)| CallRow {
            call: *id,
            peer: c.peer.clone(),
            role: match c.role {
                Role::Caller => "caller",
                Role::Callee => "callee",
            },
            state: match c.state {
                CallState::Ringing => "ringing",
                CallState::AwaitingCallerCaps => "awaiting_caller_caps",
                CallState::Incoming => "incoming",
                CallState::Established => "established",
                _ => "unknown",
            },
            params: c.params.clone(),
            path: c.path().name(),
        })
        .collect()
}

/// The client's [`Status`] in snake_case: `idle`, `logging_in`, `online`,
/// `logging_out`, `detached` or `resuming`.
pub fn status(client: &Client) -> &'static str {
    match client.status() {
        Status::Idle => "idle",
        Status::LoggingIn => "logging_in",
        Status::Online => "online",
        Status::LoggingOut => "logging_out",
        Status::Detached => "detached",
        Status::Resuming => "resuming",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use precall_protocol::{Direction, NoVideo};
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_carry_each_direction_as_the_wire_writes_it() {
        let online = Row {
            user: UserId::new("bob").unwrap(),
            session: Some(SessionId(3)),
            online: true,
            send: Some(Direction::Off(NoVideo::NoCamera)),
            recv: Some(Direction::Off(NoVideo::NoCommonCodec)),
        };
        assert_eq!(
            serde_json::to_value(online).unwrap(),
            json!({"user": "bob", "session": 3, "online": true, "send": {"off": "no_camera"},
                   "recv": {"off": "no_common_codec"}})
        );
        let offline = Row {
            user: UserId::new("carol").unwrap(),
            session: None,
            online: false,
            send: None,
            recv: None,
        };
        assert_eq!(
            serde_json::to_value(offline).unwrap(),
            json!({"user": "carol", "online": false})
        );
    }

    #[test]
    fn an_idle_client_holds_nothing() {
        let client = Client::new(Default::default());
        assert_eq!(status(&client), "idle");
        assert!(table(&client).is_empty());
        assert!(calls(&client).is_empty());
    }
}
