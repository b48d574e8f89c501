//! Contact-list changes are stored before they take effect (spec section 9.6): the
//! acknowledgement and the presence a change causes leave only after the embedder
//! reports the change durable; a change that cannot be stored is answered with
//! `not_stored` and not applied; requests behind a change wait for it, only further
//! changes may queue up (at most `max_unstored_changes` per connection), and nothing
//! of this holds back another connection.

use precall_protocol::codec::{encode_frame, MIN_MAX_FRAME};
use precall_protocol::message::{ClientMessage, LoginWith, ServerMessage, WireMessage};
use precall_protocol::server::{Limits, ServerEvent, StoreOutcome, StoreRequest};
use precall_protocol::{ConnId, ErrorCode, ReqId, Server, ServerConfig, Time};

mod common;
use common::*;

/// A server core and what it did, with the store under the test's control.
struct World {
    server: Server,
    now: Time,
    msgs: Vec<(ConnId, ServerMessage)>,
    closed: Vec<ConnId>,
    stores: Vec<StoreRequest>,
}

impl World {
    fn new(max_unstored_changes: usize) -> Self {
        let server = server({
            let mut limits = Limits::default();
            limits.max_unstored_changes = max_unstored_changes;
            limits
        });
        World {
            server,
            now: Time(1_000),
            msgs: Vec::new(),
            closed: Vec::new(),
            stores: Vec::new(),
        }
    }

    fn pump(&mut self) {
        while let Some(ev) = self.server.poll_event() {
            match ev {
                ServerEvent::Transmit { conn, frame } => {
                    let m = decode_server(&frame);
                    self.msgs.push((conn, m));
                }
                ServerEvent::Close { conn } => self.closed.push(conn),
                ServerEvent::Authenticate(req) => {
                    let contacts: &[&str] = match req.user.as_str() {
                        "alice" => &["bob"],
                        "bob" => &["alice", "carol", "dave"],
                        "carol" => &["bob"],
                        _ => &[],
                    };
                    let verdict = accepted(contacts, None);
                    self.server
                        .complete_auth(req.ticket, verdict, self.now)
                        .unwrap();
                }
                ServerEvent::Store(req) => self.stores.push(req),
                _ => {}
            }
        }
    }

    /// Logs `user` in on connection `id`.
    fn login(&mut self, id: u64, user: &str) -> ConnId {
        let conn = ConnId(id);
        self.server.connect(conn, self.now).unwrap();
        let login = login(user, "pw", LoginWith::Capabilities(plain_caps()));
        self.send(conn, &[login]);
        conn
    }

    fn send(&mut self, conn: ConnId, msgs: &[ClientMessage]) {
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode_frame(m).to_vec()).collect();
        self.server.receive(conn, &bytes, self.now);
        self.pump();
    }

    /// Reports the oldest change not yet reported.
    fn complete(&mut self, outcome: StoreOutcome) -> StoreRequest {
        let req = self.stores.remove(0);
        self.server
            .complete_store(req.ticket, outcome, self.now)
            .unwrap();
        self.pump();
        req
    }

    /// The messages to `conn` since the last call, their types only.
    fn take(&mut self, conn: ConnId) -> Vec<ServerMessage> {
        let (mine, rest) = std::mem::take(&mut self.msgs)
            .into_iter()
            .partition(|(c, _)| *c == conn);
        self.msgs = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }
}

fn add(req: u32, user: &str) -> ClientMessage {
    ClientMessage::AddContact {
        req: ReqId(req),
        user: u(user),
    }
}

fn remove(req: u32, user: &str) -> ClientMessage {
    ClientMessage::RemoveContact {
        req: ReqId(req),
        user: u(user),
    }
}

fn types(msgs: &[ServerMessage]) -> Vec<&'static str> {
    msgs.iter().map(|m| m.type_name()).collect()
}

/// Dave (listing nobody) and bob (listing alice, carol and dave), both online, their
/// login output taken.
fn dave_and_bob(max_unstored: usize) -> (World, ConnId, ConnId) {
    let mut w = World::new(max_unstored);
    let bob = w.login(2, "bob");
    let dave = w.login(1, "dave");
    w.msgs.clear();
    (w, dave, bob)
}

#[test]
fn the_acknowledgement_and_the_presence_wait_until_the_change_is_stored() {
    // Bob lists dave; dave lists nobody yet.
    let (mut w, dave, bob) = dave_and_bob(64);
    w.send(dave, &[add(5, "bob")]);
    assert_eq!(w.stores.len(), 1, "a change is sent to the store");
    assert_eq!(
        (&w.stores[0].user, &w.stores[0].contact, w.stores[0].added),
        (&u("dave"), &u("bob"), true)
    );
    assert!(
        w.msgs.is_empty(),
        "nothing leaves before it is stored: {:?}",
        w.msgs
    );
    assert!(!w
        .server
        .contacts_of(&u("dave"))
        .unwrap()
        .contains(&u("bob")));

    w.complete(StoreOutcome::Stored);
    assert!(w
        .server
        .contacts_of(&u("dave"))
        .unwrap()
        .contains(&u("bob")));
    let to_dave = w.take(dave);
    assert!(
        matches!(
            to_dave.as_slice(),
            [ServerMessage::ContactAdded { req: Some(ReqId(5)), user }, ServerMessage::Online(p)]
                if *user == u("bob") && p.user == u("bob")
        ),
        "{to_dave:?}"
    );
    // Now mutual: bob sees dave come online.
    assert!(matches!(w.take(bob).as_slice(), [ServerMessage::Online(p)] if p.user == u("dave")));
}

#[test]
fn a_change_that_cannot_be_stored_is_answered_not_stored_and_not_applied() {
    let mut w = World::new(64);
    let bob = w.login(2, "bob");
    let alice = w.login(1, "alice");
    w.msgs.clear();
    // Alice removes bob; the store fails (her account was removed meanwhile).
    w.send(alice, &[remove(9, "bob")]);
    w.complete(StoreOutcome::Failed);
    let to_alice = w.take(alice);
    assert!(
        matches!(
            to_alice.as_slice(),
            [ServerMessage::Error {
                code: ErrorCode::NotStored,
                req: Some(ReqId(9)),
                ..
            }]
        ),
        "{to_alice:?}"
    );
    assert!(w
        .server
        .contacts_of(&u("alice"))
        .unwrap()
        .contains(&u("bob")));
    assert!(w.take(bob).is_empty(), "bob is not told alice went offline");
    // Not fatal: alice's session goes on.
    assert!(w.closed.is_empty());
    w.send(alice, &[ClientMessage::Ping {}]);
    assert_eq!(types(&w.take(alice)), ["pong"]);
}

#[test]
fn requests_behind_a_change_wait_for_it_and_other_connections_do_not() {
    let (mut w, alice, bob) = dave_and_bob(64);
    w.send(
        alice,
        &[add(1, "bob"), ClientMessage::Ping {}, add(2, "carol")],
    );
    assert_eq!(
        w.stores.len(),
        1,
        "the ping waits, and the change behind it too"
    );
    assert!(!w.server.accepts_input(alice));
    assert!(w.msgs.is_empty());
    // Bob is not held back by alice's change.
    w.send(bob, &[ClientMessage::Ping {}]);
    assert_eq!(types(&w.take(bob)), ["pong"]);
    assert!(w.server.accepts_input(bob));

    w.complete(StoreOutcome::Stored);
    // Answered in the order asked: the acknowledgement (and bob's presence, now
    // mutual), the pong; then the second change went to the store.
    assert_eq!(types(&w.take(alice)), ["contact_added", "online", "pong"]);
    assert_eq!(w.stores.len(), 1);
    assert_eq!(w.stores[0].contact, u("carol"));
    assert!(
        w.server.accepts_input(alice),
        "only a change waits: more may queue up"
    );
    w.complete(StoreOutcome::Stored);
    assert_eq!(types(&w.take(alice)), ["contact_added"]);
    assert!(w.server.accepts_input(alice));
}

#[test]
fn changes_queue_up_to_the_limit_then_input_pauses() {
    let (mut w, alice, _bob) = dave_and_bob(2);
    let flood: Vec<ClientMessage> = (1..=6)
        .map(|i| {
            if i % 2 == 1 {
                add(i, "bob")
            } else {
                remove(i, "bob")
            }
        })
        .collect();
    w.send(alice, &flood);
    assert_eq!(w.stores.len(), 2, "two changes may wait at once");
    assert!(!w.server.accepts_input(alice));
    let mut acks = Vec::new();
    while !w.stores.is_empty() {
        w.complete(StoreOutcome::Stored);
        assert!(w.stores.len() <= 2);
        for m in w.take(alice) {
            match m {
                ServerMessage::ContactAdded { req: Some(r), .. }
                | ServerMessage::ContactRemoved { req: Some(r), .. } => acks.push(r.0),
                _ => {}
            }
        }
    }
    assert_eq!(
        acks,
        [1, 2, 3, 4, 5, 6],
        "every change acknowledged, in order"
    );
    assert!(w.server.accepts_input(alice));
}

#[test]
fn limits_count_changes_that_wait_for_the_store() {
    let mut w = World::new(64);
    w.server = Server::new({
        let mut config = ServerConfig::default();
        config.max_contacts = 2;
        config
    });
    let alice = w.login(1, "alice"); // lists bob: one of two
    w.msgs.clear();
    w.send(alice, &[add(1, "carol"), add(2, "dave")]);
    assert_eq!(
        w.stores.len(),
        1,
        "carol would fill the list: dave is refused"
    );
    let refused = w.take(alice);
    assert!(
        matches!(
            refused.as_slice(),
            [ServerMessage::Error {
                code: ErrorCode::RosterFull,
                req: Some(ReqId(2)),
                ..
            }]
        ),
        "{refused:?}"
    );
    // An administrator's addition is refused the same way.
    assert!(w
        .server
        .change_roster(&u("alice"), &u("erin"), true, w.now)
        .is_err());
    // And a pending removal frees a place.
    w.send(alice, &[remove(3, "bob"), add(4, "erin")]);
    assert_eq!(w.stores.len(), 3);
}

#[test]
fn a_connection_gone_before_its_change_is_stored_gets_nothing_and_the_change_applies() {
    let (mut w, alice, bob) = dave_and_bob(64);
    w.send(alice, &[add(1, "bob")]);
    w.server.connection_closed(alice, w.now);
    w.pump();
    w.msgs.clear();
    w.complete(StoreOutcome::Stored);
    assert!(w.take(alice).is_empty(), "nothing for a closed connection");
    // The detached session is still online: the change applies to it.
    assert!(w
        .server
        .contacts_of(&u("dave"))
        .unwrap()
        .contains(&u("bob")));
    assert!(matches!(w.take(bob).as_slice(), [ServerMessage::Online(p)] if p.user == u("dave")));
    // An unknown ticket is the embedder's mistake, reported and harmless.
    let again = w.server.complete_store(
        precall_protocol::server::StoreTicket(999),
        StoreOutcome::Stored,
        w.now,
    );
    assert!(again.is_err());
}

#[test]
fn bytes_pushed_into_a_paused_connection_are_bounded() {
    let (mut w, alice, bob) = dave_and_bob(1);
    w.send(alice, &[add(1, "bob"), ClientMessage::Ping {}]);
    assert!(!w.server.accepts_input(alice));
    // An embedder that ignores `accepts_input` and pushes more than a frame's worth.
    let ping = encode_frame(&ClientMessage::Ping {}).to_vec();
    let mut pushed = 0;
    while !w.closed.contains(&alice) && pushed < 200_000 {
        w.server.receive(alice, &ping, w.now);
        w.pump();
        pushed += ping.len();
    }
    assert!(
        w.closed.contains(&alice),
        "the core does not buffer without bound"
    );
    assert!(pushed <= 70_000, "closed after {pushed} bytes");
    assert!(w.take(alice).iter().any(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::RateLimited,
            ..
        }
    )));
    w.send(bob, &[ClientMessage::Ping {}]);
    assert_eq!(types(&w.take(bob)), ["pong"]);
}

#[test]
fn at_the_limit_of_waiting_changes_input_pauses_with_nothing_buffered() {
    let (mut w, dave, _bob) = dave_and_bob(2);
    w.send(dave, &[add(1, "bob"), remove(2, "bob")]);
    assert_eq!(w.stores.len(), 2);
    assert!(!w.server.accepts_input(dave), "two of two changes wait");
    w.complete(StoreOutcome::Stored);
    assert!(w.server.accepts_input(dave));
    // The configured limit is the one the server reports.
    assert_eq!(w.server.config().limits.max_unstored_changes, 2);
}

/// Section 9.6: a paused connection's unread bytes are kept up to `max_frame` + 4
/// (one frame's worth), not one byte more.
#[test]
fn a_paused_connection_keeps_exactly_one_frame_of_bytes() {
    // The ping waits for the change (decoded, held); nothing else is buffered.
    let (mut w, dave, _bob) = dave_and_bob(2);
    w.send(dave, &[add(1, "bob"), ClientMessage::Ping {}]);
    assert!(!w.server.accepts_input(dave));
    let limit = w.server.config().max_frame.max(MIN_MAX_FRAME) as usize + 4;
    w.server.receive(dave, &vec![0u8; limit - 1], w.now);
    w.server.receive(dave, &[0u8], w.now);
    w.pump();
    assert!(!w.closed.contains(&dave), "{limit} bytes are kept");
    w.server.receive(dave, &[0u8], w.now);
    w.pump();
    assert!(
        w.closed.contains(&dave),
        "one byte more closes the connection"
    );
}

/// A request behind two changes waits for both, not only the first.
#[test]
fn a_request_behind_several_changes_waits_for_all_of_them() {
    let (mut w, dave, _bob) = dave_and_bob(64);
    w.send(
        dave,
        &[add(1, "bob"), add(2, "carol"), ClientMessage::Ping {}],
    );
    assert_eq!(w.stores.len(), 2);
    w.complete(StoreOutcome::Stored);
    let first = types(&w.take(dave));
    assert!(
        !first.contains(&"pong"),
        "the pong overtook a change: {first:?}"
    );
    w.complete(StoreOutcome::Stored);
    assert_eq!(types(&w.take(dave)), ["contact_added", "pong"]);
}

/// A change that fails after its connection closed answers nobody: no frame goes to a
/// connection the server forgot.
#[test]
fn a_failed_change_of_a_closed_connection_sends_nothing() {
    let (mut w, dave, _bob) = dave_and_bob(64);
    w.send(dave, &[add(1, "bob")]);
    w.server.connection_closed(dave, w.now);
    w.pump();
    w.msgs.clear();
    w.complete(StoreOutcome::Failed);
    assert!(w.msgs.is_empty(), "{:?}", w.msgs);
    assert!(!w
        .server
        .contacts_of(&u("dave"))
        .unwrap()
        .contains(&u("bob")));
}
