//! The `client` target: arbitrary server messages and bytes, in any order, between
//! arbitrary commands, into one [`Client`].

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::caps::Capabilities;
use crate::client::{CallState, Client, ClientConfig, ClientEvent, Role, Status, Violation};
use crate::codec::{decode_message, HEADER_LEN};
use crate::ids::{CallId, Endpoint, Password, UserId};
use crate::invariant;
use crate::message::{ClientMessage, LoginWith, Presence, ServerMessage, PROTOCOL_VERSION};
use crate::time::Time;

/// One step of a client's life.
#[derive(Arbitrary, Debug)]
enum Step {
    /// A decoded message from the server.
    Deliver(ServerMessage),
    /// Raw bytes from the server (partial frames, garbage, unknown types).
    Bytes(Vec<u8>),
    /// A command from the application.
    Command(Command),
    /// Time passes, in milliseconds.
    Advance(u16),
}

/// An application command; indices pick among what the client holds.
#[derive(Arbitrary, Debug)]
enum Command {
    Login(UserId, Password, LoginWith),
    Logout,
    ConnectionLost,
    Resume,
    Abandon,
    UpdateCaps(Capabilities),
    AddContact(UserId),
    RemoveContact(UserId),
    QueryCaps(Endpoint),
    Call {
        peer: u8,
        prior_art: bool,
        otherwise: Endpoint,
    },
    Answer {
        call: u8,
        accept: bool,
    },
    Hangup {
        call: u8,
    },
}

/// What the spec (section 8.2, 8.3) says of a message in the client's state.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// A violation of this kind: ignored, nothing changes.
    Refused(&'static str),
    /// Not a violation.
    Taken,
    /// Depends on state the public views do not show (call and request details).
    Either,
}

fn kind(v: &Violation) -> &'static str {
    match v {
        Violation::NotOnline(_) => "not online",
        Violation::UnexpectedLogin => "unexpected login",
        Violation::NotAContact(_) => "not a contact",
        Violation::UnexpectedCall { .. } => "unexpected call",
        Violation::UnexpectedReq { .. } => "unexpected request",
        Violation::Unexpected(_) => "unexpected",
        Violation::UnknownType(_) => "unknown type",
        Violation::Malformed(_) => "malformed",
    }
}

/// The spec's verdict on `msg` arriving at `c`, from `c`'s observable state.
fn expect(c: &Client, msg: &ServerMessage) -> Expect {
    use ServerMessage as M;
    let status = c.status();
    match (status, msg) {
        (_, M::Pong {} | M::Error { .. }) => Expect::Taken,
        (Status::Resuming, M::Resumed { session, .. }) if Some(*session) == c.session() => {
            Expect::Taken
        }
        (Status::Detached | Status::Resuming, M::LoginOk { .. }) => {
            Expect::Refused("unexpected login")
        }
        (Status::Detached | Status::Resuming, _) => Expect::Refused("not online"),
        (Status::Online, M::Resumed { .. }) => Expect::Refused("unexpected"),
        (Status::Idle | Status::Online, M::LoginOk { .. }) => Expect::Refused("unexpected login"),
        (_, M::LoginOk { .. }) => Expect::Taken,
        (Status::Online, M::LoggedOut {}) => Expect::Refused("unexpected"),
        (Status::Idle | Status::LoggingIn, _) => Expect::Refused("not online"),
        (Status::LoggingOut, _) => Expect::Taken,
        (_, M::Online(Presence { user, .. }))
        | (
            _,
            M::CapsQuery {
                from: Endpoint { user, .. },
                ..
            },
        )
        | (
            _,
            M::CapsResult {
                from: Endpoint { user, .. },
                ..
            },
        ) if Some(user) == c.user() || !c.contacts().any(|u| u == user) => {
            Expect::Refused("not a contact")
        }
        (_, M::Online(_) | M::CapsQuery { .. }) => Expect::Taken,
        (_, M::CapsAck { .. }) if !c.caps_in_flight() => Expect::Refused("unexpected request"),
        (_, M::CallRinging { .. }) if c.dialing() == 0 => Expect::Refused("unexpected request"),
        (_, M::CallAccepted { call, .. } | M::CallNeedCaps { call }) => {
            let ringing = c.calls().any(|(id, k)| {
                id == call && k.role == Role::Caller && k.state == CallState::Ringing
            });
            match (ringing, msg) {
                (false, _) => Expect::Refused("unexpected call"),
                (true, M::CallNeedCaps { .. }) => Expect::Taken,
                (true, _) => Expect::Either,
            }
        }
        (_, M::Synced {} | M::Offline(_) | M::ContactAdded { .. } | M::ContactRemoved { .. })
        | (_, M::CallEnded { .. }) => Expect::Taken,
        _ => Expect::Either,
    }
}

/// Drains the client's events and transmits: the events, and how many frames it
/// sent. Every frame must be a well-formed client message.
fn drain(c: &mut Client) -> (Vec<ClientEvent>, usize) {
    let mut sent = 0;
    while let Some(frame) = c.poll_transmit() {
        let payload = frame.get(HEADER_LEN..).unwrap_or_default();
        if let Err(e) = decode_message::<ClientMessage>(payload) {
            panic!("the client sent a frame that does not decode: {e}");
        }
        sent += 1;
    }
    (std::iter::from_fn(|| c.poll_event()).collect(), sent)
}

/// The checks that hold after every step.
fn check(c: &Client) {
    if let Err(v) = invariant::always([c]) {
        panic!("{v}");
    }
    for (e, _) in c.peers() {
        assert!(Some(&e.user) != c.user(), "{e} is this client's own user");
        assert!(
            c.contacts().any(|u| *u == e.user),
            "{e} is not a listed contact"
        );
    }
}

fn deliver(c: &mut Client, msg: ServerMessage, now: Time) {
    let before = c.clone();
    let expected = expect(c, &msg);
    c.handle_message(msg.clone(), now);
    let (events, sent) = drain(c);
    let refused: Vec<&'static str> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Violation(v) => Some(kind(v)),
            _ => None,
        })
        .collect();
    match (&expected, refused.first()) {
        (Expect::Refused(k), Some(got)) => assert_eq!(k, got, "{msg:?}: wrong rejection"),
        (Expect::Refused(k), None) => panic!("{msg:?} accepted; the spec says {k}"),
        (Expect::Taken, Some(got)) => panic!("{msg:?} refused as {got}; the spec takes it"),
        _ => {}
    }
    if refused.is_empty() {
        applied(c, &before, &msg);
    } else {
        // "Violation means the message is ignored (no state change, no reply)".
        assert_eq!(sent, 0, "{msg:?}: a refused message was answered");
        assert!(
            c.eq_but_seen(&before),
            "{msg:?}: a refused message changed the client:\n{c:?}\n{before:?}"
        );
    }
}

/// What taking a message must have done (sections 8.2 and 8.4).
fn applied(c: &Client, before: &Client, msg: &ServerMessage) {
    use ServerMessage as M;
    match msg {
        M::LoginOk { version, .. }
            if before.status() == Status::LoggingIn && *version != PROTOCOL_VERSION =>
        {
            assert_eq!(
                c.status(),
                Status::Idle,
                "a login_ok of another version ends it"
            );
        }
        M::LoginOk {
            capabilities,
            session,
            ..
        } if before.status() == Status::LoggingIn => {
            assert_eq!(c.status(), Status::Online);
            assert_eq!(c.capabilities(), Some(capabilities));
            assert_eq!(c.session(), Some(*session));
            assert_eq!(c.peers().count(), 0, "a fresh session has an empty table");
        }
        M::Resumed { version, .. }
            if before.status() == Status::Resuming && *version != PROTOCOL_VERSION =>
        {
            assert_eq!(
                c.status(),
                Status::Idle,
                "a resumed of another version ends it"
            );
            assert_eq!(c.peers().count(), 0);
        }
        M::Resumed {
            session, contacts, ..
        } if before.status() == Status::Resuming => {
            assert_eq!(c.status(), Status::Online);
            assert_eq!(c.session(), Some(*session));
            assert!(!c.is_synced(), "the catch-up follows");
            match contacts {
                // A snapshot replaces the table and the contact list.
                Some(list) => {
                    assert_eq!(c.peers().count(), 0, "a snapshot starts from nothing");
                    let held: Vec<&UserId> = c.contacts().collect();
                    let mut want: Vec<&UserId> = list.iter().collect();
                    want.sort();
                    want.dedup();
                    assert_eq!(held, want);
                }
                // A delta keeps both.
                None => {
                    assert!(c.peers().eq(before.peers()), "a delta keeps the table");
                    assert!(c.contacts().eq(before.contacts()));
                }
            }
        }
        M::Online(p) if c.status() == Status::Online => {
            let held = c.peer(&p.endpoint()).map(|peer| &peer.capabilities);
            assert_eq!(
                held,
                Some(&p.capabilities),
                "online not stored at once (C1)"
            );
        }
        M::Offline(e) => assert!(c.peer(e).is_none(), "offline did not delete {e} (C4)"),
        M::ContactRemoved { user, .. } => {
            assert!(
                c.peers().all(|(e, _)| e.user != *user),
                "{user}'s entries kept"
            );
            assert!(c.contacts().all(|u| u != user));
        }
        M::Error { code, .. }
            if code.refuses_connection() && before.status() == Status::Resuming =>
        {
            assert_eq!(
                c.status(),
                Status::Detached,
                "a refused connection keeps it"
            );
            assert!(c.peers().eq(before.peers()));
        }
        M::Error { code, .. } if code.is_fatal() => {
            assert_eq!(c.status(), Status::Idle, "a fatal error ends the session");
        }
        M::LoggedOut {} if before.status() == Status::LoggingOut => {
            assert_eq!(c.status(), Status::Idle);
        }
        _ => {}
    }
}

fn command(c: &mut Client, cmd: Command, now: Time) {
    let before = c.clone();
    let peers: Vec<Endpoint> = c.peers().map(|(e, _)| e.clone()).collect();
    let calls: Vec<CallId> = c.calls().map(|(id, _)| *id).collect();
    let pick_call = |i: u8| {
        calls
            .get(usize::from(i) % calls.len().max(1))
            .copied()
            .unwrap_or(CallId(i.into()))
    };
    let r = match cmd {
        Command::Login(user, pw, with) => c.login(user, pw, with, now),
        Command::Logout => c.logout(now),
        Command::ConnectionLost => {
            c.connection_closed(now);
            Ok(())
        }
        Command::Resume => c.resume(now),
        Command::Abandon => {
            c.abandon(now);
            Ok(())
        }
        Command::UpdateCaps(caps) => c.update_caps(caps, now).map(drop),
        Command::AddContact(u) => c.add_contact(u, now).map(drop),
        Command::RemoveContact(u) => c.remove_contact(u, now).map(drop),
        Command::Call {
            peer,
            prior_art,
            otherwise,
        } => {
            let to = peers
                .get(usize::from(peer) % peers.len().max(1))
                .cloned()
                .unwrap_or(otherwise);
            if prior_art {
                c.place_call_exchanging_capabilities(&to, now).map(drop)
            } else {
                c.place_call(&to, now).map(drop)
            }
        }
        Command::Answer { call, accept } => c.answer(pick_call(call), accept, now),
        Command::Hangup { call } => c.hangup(pick_call(call), now),
        Command::QueryCaps(to) => c.query_caps(&to, now).map(drop),
    };
    if r.is_err() {
        // "Refuse means the command fails locally and nothing is sent" (section 8.2).
        assert!(
            c.poll_transmit().is_none(),
            "a refused command sent something"
        );
        assert_eq!(*c, before, "a refused command changed the client");
    }
    drain(c);
}

/// Runs the target on one input. Panics when a property breaks.
pub fn client(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut c = Client::new(ClientConfig::default());
    let mut now = Time::ZERO;
    while !u.is_empty() {
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        match step {
            Step::Deliver(msg) => deliver(&mut c, msg, now),
            Step::Bytes(bytes) => {
                if c.receive(&bytes, now).is_err() {
                    // The connection is over: the session ends, or is detached to be
                    // resumed on a new one.
                    assert!(
                        matches!(c.status(), Status::Idle | Status::Detached),
                        "a broken stream ends the connection: {:?}",
                        c.status()
                    );
                }
                drain(&mut c);
            }
            Step::Command(cmd) => command(&mut c, cmd, now),
            Step::Advance(ms) => {
                now = now.after(Duration::from_millis(ms.into()));
                c.handle_timeout(now);
                drain(&mut c);
            }
        }
        check(&c);
    }
}
