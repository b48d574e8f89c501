//! The uniffi facade on the host: [`PrecallClient`] wired to the real server core
//! (`Server`) with the in-memory credential store, next to other facade clients and
//! native core clients (`common`). Every value the facade returns is checked against
//! what the core computes natively, converted by the test's own code.

mod common;

use std::sync::Arc;

use common::*;
use precall_ffi::{
    capabilities_from_json, capabilities_to_json, fingerprint, negotiate_pair, Bandwidth, CallInfo,
    CallState, Camera, Capabilities, CpuClass, Direction, Endpoint, Event, LoginWith, PeerEntry,
    PrecallClient, PrecallError, Role, SetupPath, Size, Status,
};
use precall_protocol as core;
use precall_protocol::sim::sample_caps;
use precall_protocol::{ServerConfig, TerminalId, UserId};

/// Alice (facade) and Bob (facade) online and mutual contacts, their events drained.
fn both_online() -> (World, Arc<PrecallClient>, Arc<PrecallClient>) {
    let mut w = World::new();
    let alice = w.add_ffi("alice", ffi_client("alice", alice_caps()));
    let bob = w.add_ffi("bob", ffi_client("bob", bob_caps()));
    w.ffi_login("alice");
    w.ffi_login("bob");
    assert_eq!(alice.peers().len(), 1, "alice sees bob");
    assert_eq!(bob.peers().len(), 1, "bob sees alice");
    drain(&alice);
    drain(&bob);
    (w, alice, bob)
}

/// Alice (facade) and Bob (native core client) online, Alice's events drained.
fn alice_and_native_bob() -> (World, Arc<PrecallClient>, Endpoint) {
    let mut w = World::new();
    let alice = w.add_ffi("alice", ffi_client("alice", alice_caps()));
    w.add_core("bob");
    w.ffi_login("alice");
    w.core_login("bob", bob_core_caps());
    let bob = ffi_endpoint(&w.core("bob").client.endpoint().expect("bob is online"));
    drain(&alice);
    w.core("bob").events.clear();
    (w, alice, bob)
}

fn is_invalid<T: std::fmt::Debug>(r: Result<T, PrecallError>) -> bool {
    match r {
        Err(e @ PrecallError::InvalidValue { .. }) => {
            assert!(e.to_string().starts_with("invalid_value: "), "{e}");
            true
        }
        other => {
            eprintln!("expected InvalidValue, got {other:?}");
            false
        }
    }
}

// ---- 1. login and the table ------------------------------------------------------------

#[test]
fn alice_logs_in_and_holds_bob_with_the_cores_parameters_and_fingerprint() {
    let mut w = World::new();
    let bob = w.add_ffi("bob", ffi_client("bob", bob_caps()));
    w.ffi_login("bob");
    let bob_ep = bob.endpoint().expect("bob is online");
    assert_eq!(bob_ep.user, "bob");
    assert_eq!(
        drain(&bob),
        vec![
            Event::LoggedIn {
                session: bob_ep.session
            },
            Event::Synced
        ]
    );

    let alice = w.add_ffi("alice", ffi_client("alice", alice_caps()));
    assert_eq!(alice.status(), Status::Idle);
    assert_eq!(alice.endpoint(), None);
    assert_eq!(alice.capabilities(), None);
    assert!(alice.peers().is_empty() && alice.contacts().is_empty());
    assert_eq!(alice.poll_timeout(), None, "no timer before login");
    w.connect("alice");
    alice.login(w.now).unwrap();
    assert_eq!(alice.status(), Status::LoggingIn);
    assert!(!alice.is_synced());
    // What Alice's accessors say after each frame the server sends her.
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let (log, watched) = (seen.clone(), alice.clone());
    w.observer = Some(Box::new(move |name: &str, frame: &[u8]| {
        if name == "alice" {
            let kind = frame_json(frame)["type"].as_str().unwrap().to_owned();
            log.borrow_mut().push((
                kind,
                watched.status(),
                watched.is_synced(),
                watched.peers().len(),
            ));
        }
    }));
    w.pump();
    w.observer = None;
    assert_eq!(
        *seen.borrow(),
        vec![
            ("login_ok".to_owned(), Status::Online, false, 0),
            ("online".to_owned(), Status::Online, false, 1),
            ("synced".to_owned(), Status::Online, true, 1),
        ],
        "online at login_ok, synced only at synced"
    );
    assert_eq!(alice.status(), Status::Online);
    assert!(alice.is_synced());
    assert!(w.errors("alice").is_empty());

    let alice_ep = alice.endpoint().expect("alice is online");
    assert_eq!(alice_ep.user, "alice");
    assert_ne!(alice_ep.session, bob_ep.session);
    let core_params = core::negotiate_pair(&alice_core_caps(), &bob_core_caps());
    let params = ffi_params(&core_params);
    assert_eq!(negotiate_pair(alice_caps(), bob_caps()).unwrap(), params);
    assert!(
        matches!(params.send, Direction::Video { .. })
            && matches!(params.recv, Direction::Video { .. }),
        "both ways video: {params:?}"
    );
    let events = drain(&alice);
    assert_eq!(
        events,
        vec![
            Event::LoggedIn {
                session: alice_ep.session
            },
            Event::PeerOnline {
                peer: bob_ep.clone(),
                params: params.clone()
            },
            Event::Synced,
        ]
    );

    // A native core Alice in the same world sees the same events and the same table.
    let mut twin = World::new();
    twin.add_ffi("bob", ffi_client("bob", bob_caps()));
    twin.ffi_login("bob");
    twin.add_core("alice");
    twin.core_login("alice", alice_core_caps());
    let native: Vec<Event> = twin.core("alice").events.iter().map(ffi_event).collect();
    assert_eq!(events, native);
    let native_table: Vec<PeerEntry> = twin
        .core("alice")
        .client
        .peers()
        .map(|(e, p)| PeerEntry {
            endpoint: ffi_endpoint(e),
            capabilities: ffi_caps(&p.capabilities),
            fingerprint: p.fingerprint.to_string(),
            params: ffi_params(&p.params),
        })
        .collect();

    let fp = bob_core_caps().fingerprint().to_string();
    assert_eq!(fp.len(), 32);
    assert!(fp
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(fingerprint(bob_caps()).unwrap(), fp);
    assert_ne!(fingerprint(alice_caps()).unwrap(), fp);
    let entry = PeerEntry {
        endpoint: bob_ep.clone(),
        capabilities: bob_caps(),
        fingerprint: fp,
        params,
    };
    assert_eq!(alice.peers(), vec![entry.clone()]);
    assert_eq!(alice.peers(), native_table);
    assert_eq!(alice.peer(bob_ep.clone()).unwrap(), Some(entry));
    let elsewhere = Endpoint {
        user: "bob".into(),
        session: bob_ep.session + 1_000,
    };
    assert_eq!(alice.peer(elsewhere).unwrap(), None);
    assert!(is_invalid(alice.peer(Endpoint {
        user: "Bob".into(),
        session: bob_ep.session
    })));

    assert_eq!(alice.capabilities(), Some(alice_caps()));
    assert_eq!(alice.contacts(), vec!["bob".to_owned()]);
    assert!(!alice.can_resume() && !alice.caps_in_flight());
    assert!(alice.calls().is_empty());

    // Bob's side: Alice with the mirrored parameters, which his own negotiation gives.
    let mirrored_params = negotiate_pair(bob_caps(), alice_caps()).unwrap();
    assert_eq!(
        mirrored_params,
        mirrored(&negotiate_pair(alice_caps(), bob_caps()).unwrap())
    );
    assert_eq!(
        drain(&bob),
        vec![Event::PeerOnline {
            peer: alice_ep,
            params: mirrored_params
        }]
    );
}

// ---- 2. calls ---------------------------------------------------------------------------

#[test]
fn a_fast_path_call_rings_is_established_and_hung_up() {
    let (mut w, alice, bob) = both_online();
    let (alice_ep, bob_ep) = (alice.endpoint().unwrap(), bob.endpoint().unwrap());
    let p = negotiate_pair(alice_caps(), bob_caps()).unwrap();

    let tag = alice.place_call(bob_ep.clone(), w.now).unwrap();
    // The request carries the digest, no capabilities.
    let frame = alice.poll_transmit().expect("the call frame");
    assert_eq!(alice.poll_transmit(), None);
    let json = frame_json(&frame);
    assert_eq!(json["type"], "call");
    assert_eq!(json["req"], tag);
    assert!(
        json.get("capabilities").is_none_or(|c| c.is_null()),
        "{json}"
    );
    assert!(alice.calls().is_empty(), "dialing is not a call yet");
    w.inject("alice", &frame);
    w.pump();

    let ev = drain(&alice);
    let call = match ev.as_slice() {
        [Event::CallRinging { req, call, to }] if *req == tag && *to == bob_ep => *call,
        other => panic!("alice after the call: {other:?}"),
    };
    assert_eq!(
        alice.calls(),
        vec![CallInfo {
            call,
            peer: bob_ep.clone(),
            role: Role::Caller,
            state: CallState::Ringing,
            params: Some(p.clone()),
            path: SetupPath::Fast,
        }]
    );
    assert_eq!(
        drain(&bob),
        vec![Event::IncomingCall {
            call,
            caller: alice_ep.clone(),
            params: mirrored(&p),
            media: None
        }]
    );
    assert_eq!(
        bob.calls(),
        vec![CallInfo {
            call,
            peer: alice_ep.clone(),
            role: Role::Callee,
            state: CallState::Incoming,
            params: Some(mirrored(&p)),
            path: SetupPath::Fast,
        }]
    );

    bob.answer(call, true, w.now).unwrap();
    w.pump();
    assert_eq!(
        drain(&bob),
        vec![Event::CallEstablished {
            call,
            params: mirrored(&p),
            path: SetupPath::Fast,
            media: None
        }]
    );
    assert_eq!(
        drain(&alice),
        vec![Event::CallEstablished {
            call,
            params: p.clone(),
            path: SetupPath::Fast,
            media: None
        }]
    );
    assert_eq!(alice.calls()[0].state, CallState::Established);
    assert_eq!(bob.calls()[0].state, CallState::Established);
    assert!(
        matches!(
            alice.update_caps(alice_caps(), w.now),
            Ok(t) if t > tag
        ),
        "an established call allows a capability change"
    );
    w.pump();
    drain(&alice);
    drain(&bob);

    alice.hangup(call, w.now).unwrap();
    assert!(alice.calls().is_empty());
    w.pump();
    assert_eq!(
        drain(&bob),
        vec![Event::CallEnded {
            call,
            reason: "hangup".into()
        }]
    );
    assert_eq!(drain(&alice), vec![]);
    assert!(bob.calls().is_empty());
    assert!(matches!(
        alice.hangup(call, w.now),
        Err(PrecallError::UnknownCall { .. })
    ));

    // A rejected call ends with `rejected` at the caller.
    let tag2 = alice.place_call(bob_ep.clone(), w.now).unwrap();
    assert_ne!(tag2, tag);
    w.pump();
    let call2 = match drain(&alice).as_slice() {
        [Event::CallRinging { req, call, .. }] if *req == tag2 => *call,
        other => panic!("{other:?}"),
    };
    assert_ne!(call2, call);
    assert!(matches!(drain(&bob).as_slice(), [Event::IncomingCall { call, .. }] if *call == call2));
    bob.answer(call2, false, w.now).unwrap();
    w.pump();
    assert_eq!(
        drain(&alice),
        vec![Event::CallEnded {
            call: call2,
            reason: "rejected".into()
        }]
    );
    assert!(alice.calls().is_empty() && bob.calls().is_empty());
    assert!(w.errors("alice").is_empty() && w.errors("bob").is_empty());
}

#[test]
fn media_descriptions_ride_in_the_call_and_the_acceptance() {
    let (mut w, alice, bob) = both_online();
    let bob_ep = bob.endpoint().unwrap();
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=alice's offer\r\n";
    let answer = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=bob's answer\r\n";
    for bad in [
        "".to_owned(),
        "v=0\u{0}".to_owned(),
        "x".repeat(16 * 1024 + 1),
    ] {
        assert!(is_invalid(alice.place_call_with_media(
            bob_ep.clone(),
            bad,
            w.now
        )));
        assert_eq!(alice.poll_transmit(), None, "a refused call sends nothing");
    }
    let tag = alice
        .place_call_with_media(bob_ep.clone(), offer.into(), w.now)
        .unwrap();
    w.pump();
    let call = match drain(&alice).as_slice() {
        [Event::CallRinging { req, call, .. }] if *req == tag => *call,
        other => panic!("{other:?}"),
    };
    match drain(&bob).as_slice() {
        [Event::IncomingCall { call: c, media, .. }] => {
            assert_eq!(*c, call);
            assert_eq!(media.as_deref(), Some(offer));
        }
        other => panic!("{other:?}"),
    }
    assert!(is_invalid(bob.accept_with_media(
        call,
        "\u{7f}".into(),
        w.now
    )));
    assert!(matches!(
        bob.accept_with_media(call + 1, answer.into(), w.now),
        Err(PrecallError::UnknownCall { .. })
    ));
    assert_eq!(bob.poll_transmit(), None);
    bob.accept_with_media(call, answer.into(), w.now).unwrap();
    w.pump();
    let p = negotiate_pair(alice_caps(), bob_caps()).unwrap();
    assert_eq!(
        drain(&alice),
        vec![Event::CallEstablished {
            call,
            params: p.clone(),
            path: SetupPath::Fast,
            media: Some(answer.into())
        }]
    );
    assert_eq!(
        drain(&bob),
        vec![Event::CallEstablished {
            call,
            params: mirrored(&p),
            path: SetupPath::Fast,
            media: None
        }]
    );
}

#[test]
fn the_prior_art_call_goes_the_fallback_path_and_the_query_answers_bobs_capabilities() {
    let (mut w, alice, bob) = both_online();
    let bob_ep = bob.endpoint().unwrap();
    let p = negotiate_pair(alice_caps(), bob_caps()).unwrap();

    let q = alice.query_caps(bob_ep.clone(), w.now).unwrap();
    w.pump();
    assert_eq!(
        drain(&alice),
        vec![Event::CapsResult {
            req: q,
            peer: bob_ep.clone(),
            capabilities: bob_caps(),
            params: p.clone()
        }]
    );
    drain(&bob);

    let tag = alice
        .place_call_exchanging_capabilities(bob_ep.clone(), w.now)
        .unwrap();
    let frame = alice.poll_transmit().unwrap();
    let json = frame_json(&frame);
    assert_eq!(json["type"], "call");
    assert_eq!(json["capabilities"], caps_json(&alice_caps()), "{json}");
    w.inject("alice", &frame);
    w.pump();
    let call = drain(&bob)
        .into_iter()
        .find_map(|e| match e {
            Event::IncomingCall { call, .. } => Some(call),
            _ => None,
        })
        .expect("bob is called");
    bob.answer(call, true, w.now).unwrap();
    w.pump();
    let ev = drain(&alice);
    assert_eq!(
        ev.last(),
        Some(&Event::CallEstablished {
            call,
            params: p,
            path: SetupPath::Fallback,
            media: None
        }),
        "{ev:?}"
    );
    assert!(
        matches!(ev.first(), Some(Event::CallRinging { req, .. }) if *req == tag),
        "{ev:?}"
    );
    assert_eq!(alice.calls()[0].path, SetupPath::Fallback);
}

// ---- 3. detach and resume ---------------------------------------------------------------

/// Logs Alice in (facade or native) with a native Bob, drops her connection, and
/// resumes on a new one; returns her events after the resume, as the facade's.
fn resume_events_of_a_native_alice() -> Vec<Event> {
    let mut w = World::new();
    w.add_core("alice");
    w.add_core("bob");
    w.core_login("alice", alice_core_caps());
    w.core_login("bob", bob_core_caps());
    w.drop_connection("alice");
    w.pump();
    w.connect("alice");
    let now = w.time();
    w.core("alice").events.clear();
    w.core("alice").client.resume(now).unwrap();
    w.pump();
    w.core("alice").events.iter().map(ffi_event).collect()
}

#[test]
fn a_dropped_connection_detaches_and_resume_takes_the_session_over() {
    let (mut w, alice, bob_ep) = alice_and_native_bob();
    let alice_ep = alice.endpoint().unwrap();
    let table = alice.peers();
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].endpoint, bob_ep);
    assert!(matches!(
        alice.resume(w.now),
        Err(PrecallError::NotDetached { .. })
    ));

    w.drop_connection("alice");
    assert_eq!(drain(&alice), vec![Event::Detached]);
    assert_eq!(alice.status(), Status::Detached);
    assert!(alice.can_resume());
    assert!(!alice.is_synced());
    assert_eq!(alice.peers(), table, "the table is kept");
    assert_eq!(alice.endpoint(), Some(alice_ep.clone()));
    assert_eq!(alice.poll_timeout(), None, "no ping while detached");
    assert!(matches!(
        alice.place_call(bob_ep.clone(), w.now),
        Err(PrecallError::NotLoggedIn { .. })
    ));
    assert!(matches!(
        alice.logout(w.now),
        Err(PrecallError::NotLoggedIn { .. })
    ));
    w.pump();
    assert_eq!(drain(&alice), vec![]);

    w.now += 500;
    w.connect("alice");
    alice.resume(w.now).unwrap();
    assert_eq!(alice.status(), Status::Resuming);
    assert!(!alice.can_resume());
    let frame = alice.poll_transmit().unwrap();
    assert_eq!(frame_json(&frame)["type"], "resume");
    assert!(
        frame_json(&frame).get("password").is_none(),
        "no password in a resume"
    );
    w.inject("alice", &frame);
    w.pump();
    let events = drain(&alice);
    let snapshot = match events.first() {
        Some(Event::Resumed { session, snapshot }) if *session == alice_ep.session => *snapshot,
        other => panic!("after resume: {other:?} in {events:?}"),
    };
    assert_eq!(events.last(), Some(&Event::Synced));
    assert_eq!(events, resume_events_of_a_native_alice(), "as the core");
    if !snapshot {
        assert_eq!(events.len(), 2, "nothing happened meanwhile: {events:?}");
    }
    assert_eq!(alice.status(), Status::Online);
    assert!(alice.is_synced() && !alice.can_resume());
    assert_eq!(alice.peers(), table, "the table is unchanged");
    assert_eq!(alice.endpoint(), Some(alice_ep));
    assert!(matches!(
        alice.resume(w.now),
        Err(PrecallError::NotDetached { .. })
    ));
    // Online again: a call goes through.
    alice.place_call(bob_ep, w.now).unwrap();
    w.pump();
    assert!(matches!(
        drain(&alice).as_slice(),
        [Event::CallRinging { .. }]
    ));
    assert!(w.errors("alice").is_empty());
}

#[test]
fn a_drop_ends_the_calls_with_peer_gone_and_abandon_deletes_everything() {
    let (mut w, alice, bob_ep) = alice_and_native_bob();
    let old_session = alice.endpoint().unwrap().session;
    let tag = alice.place_call(bob_ep.clone(), w.now).unwrap();
    w.pump();
    let call = match drain(&alice).as_slice() {
        [Event::CallRinging { req, call, .. }] if *req == tag => *call,
        other => panic!("{other:?}"),
    };
    let native_call = w
        .core("bob")
        .events
        .iter()
        .find_map(|e| match e {
            core::ClientEvent::IncomingCall { call, .. } => Some(*call),
            _ => None,
        })
        .expect("bob is called");
    assert_eq!(native_call.0, call);
    let now = w.time();
    w.core("bob").client.answer(native_call, true, now).unwrap();
    w.pump();
    assert!(matches!(
        drain(&alice).as_slice(),
        [Event::CallEstablished {
            path: SetupPath::Fast,
            ..
        }]
    ));

    w.drop_connection("alice");
    assert_eq!(
        drain(&alice),
        vec![
            Event::CallEnded {
                call,
                reason: "peer_gone".into()
            },
            Event::Detached
        ]
    );
    assert!(alice.calls().is_empty());
    w.pump();
    let bob_ended: Vec<_> = w
        .core("bob")
        .events
        .iter()
        .filter_map(|e| match e {
            core::ClientEvent::CallEnded { call, reason } => Some((*call, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(bob_ended, vec![(native_call, core::EndReason::PeerGone)]);

    alice.abandon(w.now);
    assert_eq!(drain(&alice), vec![Event::LoggedOut]);
    assert_eq!(alice.status(), Status::Idle);
    assert!(!alice.can_resume());
    assert!(alice.peers().is_empty() && alice.contacts().is_empty());
    assert_eq!(alice.endpoint(), None);
    assert!(matches!(
        alice.resume(w.now),
        Err(PrecallError::NotDetached { .. })
    ));
    alice.abandon(w.now);
    assert_eq!(drain(&alice), vec![], "abandon when idle does nothing");

    // A new login works and makes a new session.
    w.ffi_login("alice");
    let ev = drain(&alice);
    match ev.first() {
        Some(Event::LoggedIn { session }) => assert_ne!(*session, old_session),
        other => panic!("{other:?}"),
    }
    assert_eq!(ev.last(), Some(&Event::Synced));
}

// ---- 4. logout ----------------------------------------------------------------------------

#[test]
fn logouts_delete_the_peer_everywhere_and_everything_at_home() {
    let (mut w, alice, bob) = both_online();
    let bob_ep = bob.endpoint().unwrap();

    bob.logout(w.now).unwrap();
    assert_eq!(bob.status(), Status::LoggingOut);
    assert!(bob.peers().is_empty(), "deleted at once (C5)");
    assert_eq!(bob.endpoint(), None);
    w.pump();
    assert_eq!(drain(&bob), vec![Event::LoggedOut]);
    assert_eq!(bob.status(), Status::Idle);
    assert_eq!(
        drain(&alice),
        vec![Event::PeerOffline {
            peer: bob_ep.clone()
        }]
    );
    assert!(alice.peers().is_empty());
    assert_eq!(alice.peer(bob_ep.clone()).unwrap(), None);
    assert!(matches!(
        alice.place_call(bob_ep, w.now),
        Err(PrecallError::UnknownPeer { .. })
    ));
    assert_eq!(
        alice.contacts(),
        vec!["bob".to_owned()],
        "bob is still a contact"
    );

    alice.logout(w.now).unwrap();
    assert_eq!(alice.status(), Status::LoggingOut);
    assert!(alice.contacts().is_empty() && alice.capabilities().is_none());
    let frame = alice.poll_transmit().expect("the logout frame");
    assert_eq!(frame_json(&frame)["type"], "logout");
    w.inject("alice", &frame);
    w.pump();
    assert_eq!(drain(&alice), vec![Event::LoggedOut]);
    assert_eq!(alice.status(), Status::Idle);
    assert!(alice.peers().is_empty() && alice.contacts().is_empty() && alice.calls().is_empty());
    assert_eq!(alice.endpoint(), None);
    assert_eq!(alice.poll_timeout(), None);
    assert!(matches!(
        alice.logout(w.now),
        Err(PrecallError::NotLoggedIn { .. })
    ));
}

// ---- 5. errors ------------------------------------------------------------------------------

#[test]
fn commands_before_login_are_refused_and_send_nothing() {
    let alice = ffi_client("alice", alice_caps());
    let bob = Endpoint {
        user: "bob".into(),
        session: 1,
    };
    let not_logged_in = |r: Result<(), PrecallError>, what: &str| {
        assert!(
            matches!(&r, Err(PrecallError::NotLoggedIn { detail }) if !detail.is_empty()),
            "{what}: {r:?}"
        );
    };
    not_logged_in(alice.place_call(bob.clone(), 0).map(drop), "place_call");
    not_logged_in(
        alice
            .place_call_with_media(bob.clone(), "v=0".into(), 0)
            .map(drop),
        "place_call_with_media",
    );
    not_logged_in(
        alice
            .place_call_exchanging_capabilities(bob.clone(), 0)
            .map(drop),
        "place_call_exchanging_capabilities",
    );
    not_logged_in(alice.query_caps(bob, 0).map(drop), "query_caps");
    not_logged_in(alice.answer(1, true, 0), "answer");
    not_logged_in(
        alice.accept_with_media(1, "v=0".into(), 0),
        "accept_with_media",
    );
    not_logged_in(alice.hangup(1, 0), "hangup");
    not_logged_in(alice.update_caps(bob_caps(), 0).map(drop), "update_caps");
    not_logged_in(
        alice.add_contact("carol".into(), 0).map(drop),
        "add_contact",
    );
    not_logged_in(
        alice.remove_contact("bob".into(), 0).map(drop),
        "remove_contact",
    );
    not_logged_in(alice.logout(0), "logout");
    let e = alice.logout(0).unwrap_err();
    assert!(e.to_string().starts_with("not_logged_in: "), "{e}");
    assert!(matches!(
        alice.resume(0),
        Err(PrecallError::NotDetached { .. })
    ));
    assert_eq!(alice.poll_transmit(), None);
    assert_eq!(alice.poll_event(), None);
    assert_eq!(alice.status(), Status::Idle);
}

#[test]
fn refusals_while_online_name_their_cause() {
    let (mut w, alice, bob) = both_online();
    let bob_ep = bob.endpoint().unwrap();
    for stranger in [
        Endpoint {
            user: "carol".into(),
            session: 99,
        },
        Endpoint {
            user: "bob".into(),
            session: bob_ep.session + 7,
        },
    ] {
        let e = alice.place_call(stranger.clone(), w.now).unwrap_err();
        assert!(
            matches!(&e, PrecallError::UnknownPeer { detail } if detail.contains(&stranger.user)),
            "{e:?}"
        );
    }
    assert!(matches!(
        alice.answer(12_345, true, w.now),
        Err(PrecallError::UnknownCall { .. })
    ));
    assert!(matches!(
        alice.login(w.now),
        Err(PrecallError::AlreadyLoggedIn { .. })
    ));
    assert!(matches!(
        alice.resume(w.now),
        Err(PrecallError::NotDetached { .. })
    ));
    assert!(is_invalid(alice.place_call(
        Endpoint {
            user: "Bob".into(),
            session: bob_ep.session
        },
        w.now
    )));
    assert!(is_invalid(alice.add_contact("Carol".into(), w.now)));
    assert!(is_invalid(alice.remove_contact(String::new(), w.now)));
    assert_eq!(alice.poll_transmit(), None, "no refusal sent anything");

    // The query-first baseline does not use the table: the server answers for a
    // stranger, with the query's tag.
    let stranger = Endpoint {
        user: "carol".into(),
        session: 99,
    };
    let q = alice.query_caps(stranger, w.now).unwrap();
    w.pump();
    expect_one_server_error(&drain(&alice), "not_reachable", q);

    // While the login is in flight, a second one is refused too.
    let carol = w.add_ffi("carol", ffi_client("carol", bob_caps()));
    w.connect("carol");
    carol.login(w.now).unwrap();
    assert!(matches!(
        carol.login(w.now),
        Err(PrecallError::AlreadyLoggedIn { .. })
    ));
    // A call setup in progress refuses a capability change.
    alice.place_call(bob_ep, w.now).unwrap();
    assert!(matches!(
        alice.update_caps(bob_caps(), w.now),
        Err(PrecallError::CallSetupInProgress { .. })
    ));
    w.pump();
    assert!(
        matches!(
            alice.update_caps(bob_caps(), w.now),
            Err(PrecallError::CallSetupInProgress { .. })
        ),
        "ringing is still a setup"
    );
    assert_eq!(carol.status(), Status::Online);
}

/// Capability sets the core refuses, and the reason.
fn bad_caps() -> Vec<(&'static str, Capabilities)> {
    let ok = alice_caps;
    let mut v = Vec::new();
    let mut c = ok();
    c.encode = vec!["H264".into()];
    v.push(("an upper-case codec", c));
    let mut c = ok();
    c.decode = vec!["h264".into(), String::new()];
    v.push(("an empty codec", c));
    let mut c = ok();
    c.encode = vec!["h 264".into()];
    v.push(("a codec with a space", c));
    let mut c = ok();
    c.decode = vec!["vp8".into(), "vp8".into()];
    v.push(("a duplicate codec", c));
    let mut c = ok();
    c.encode = (0..17).map(|i| format!("c{i}")).collect();
    v.push(("17 codecs", c));
    let mut c = ok();
    c.screen.width = 0;
    v.push(("a screen 0 wide", c));
    let mut c = ok();
    c.screen.height = 16_385;
    v.push(("a screen too high", c));
    let mut c = ok();
    c.camera = Some(Camera {
        max: Size {
            width: 640,
            height: 360,
        },
        max_fps: 0,
    });
    v.push(("a camera of 0 fps", c));
    let mut c = ok();
    c.camera = Some(Camera {
        max: Size {
            width: 0,
            height: 360,
        },
        max_fps: 30,
    });
    v.push(("a camera 0 wide", c));
    let mut c = ok();
    c.bandwidth.down_kbps = 10_000_001;
    v.push(("too much bandwidth", c));
    v
}

#[test]
fn invalid_values_are_refused_by_the_constructor_the_commands_and_the_free_functions() {
    let ok = alice_caps();
    for (what, bad) in bad_caps() {
        let core_says = serde_json::from_value::<core::Capabilities>(caps_json(&bad));
        assert!(core_says.is_err(), "the core accepts {what}");
        assert!(
            is_invalid(PrecallClient::new(config("alice", bad.clone()))),
            "{what}"
        );
        assert!(
            is_invalid(negotiate_pair(bad.clone(), ok.clone())),
            "{what}"
        );
        assert!(
            is_invalid(negotiate_pair(ok.clone(), bad.clone())),
            "{what}"
        );
        assert!(is_invalid(fingerprint(bad.clone())), "{what}");
        assert!(is_invalid(capabilities_to_json(bad.clone())), "{what}");
    }
    // Each valid one is accepted (the list above only breaks what it says).
    assert!(serde_json::from_value::<core::Capabilities>(caps_json(&ok)).is_ok());

    // Empty codec lists are valid: no video either way, as the core says.
    let mut mute = ok.clone();
    mute.encode.clear();
    mute.decode.clear();
    assert!(PrecallClient::new(config("alice", mute.clone())).is_ok());
    let core_mute: core::Capabilities = serde_json::from_value(caps_json(&mute)).unwrap();
    let p = negotiate_pair(mute.clone(), bob_caps()).unwrap();
    assert_eq!(
        p,
        ffi_params(&core::negotiate_pair(&core_mute, &bob_core_caps()))
    );
    assert_eq!(
        p,
        precall_ffi::CallParams {
            send: Direction::Off {
                reason: "no_common_codec".into()
            },
            recv: Direction::Off {
                reason: "no_common_codec".into()
            },
        }
    );

    // Names, passwords and terminal identifiers.
    let long = "a".repeat(65);
    for user in ["Alice", "", "a b", long.as_str()] {
        let mut c = config("alice", ok.clone());
        c.user = user.into();
        assert!(is_invalid(PrecallClient::new(c)), "user {user:?}");
        assert!(UserId::new(user).is_err(), "the core accepts {user:?}");
    }
    let mut c = config("alice", ok.clone());
    c.user = "a".repeat(64);
    assert!(PrecallClient::new(c).is_ok(), "64 bytes are allowed");
    let mut c = config("alice", ok.clone());
    c.password = String::new();
    assert!(is_invalid(PrecallClient::new(c)), "an empty password");
    for id in ["kiosk 1", "", "kiosk/1"] {
        let mut c = config("alice", ok.clone());
        c.login = LoginWith::TerminalId { id: id.into() };
        assert!(is_invalid(PrecallClient::new(c)), "terminal id {id:?}");
        assert!(TerminalId::new(id).is_err());
    }
}

#[test]
fn bytes_that_break_the_framing_throw_framing_and_detach() {
    let (mut w, alice, _bob) = both_online();
    let e = alice.receive(vec![0, 0, 0, 0], w.now).unwrap_err();
    assert!(matches!(&e, PrecallError::Framing { .. }), "{e:?}");
    assert!(e.to_string().starts_with("framing: "), "{e}");
    assert_eq!(drain(&alice), vec![Event::Detached]);
    assert_eq!(alice.status(), Status::Detached);
    assert!(alice.can_resume());
    w.drop_connection("alice");
    assert_eq!(drain(&alice), vec![], "already detached");

    // A length prefix over the limit; the limit follows `max_frame`.
    let huge = (64 * 1024 + 1u32).to_be_bytes().to_vec();
    let plain = ffi_client("carol", bob_caps());
    assert!(matches!(
        plain.receive(huge.clone(), 0),
        Err(PrecallError::Framing { .. })
    ));
    assert!(matches!(
        plain.receive(vec![0xff; 4], 0),
        Err(PrecallError::Framing { .. })
    ));
    assert_eq!(
        plain.poll_event(),
        None,
        "an idle client has no session to end"
    );
    let mut c = config("carol", bob_caps());
    c.max_frame = Some(1 << 20);
    let roomy = PrecallClient::new(c).unwrap();
    roomy.receive(huge, 0).expect("within a 1 MiB limit");
    assert!(
        matches!(
            roomy
                .receive([0x00, 0x20, 0x00, 0x00].to_vec(), 0)
                .and_then(|()| roomy.receive(vec![b'{'; 4], 0)),
            Ok(())
        ),
        "still reading the first frame's payload"
    );
}

#[test]
fn a_server_of_another_version_throws_unsupported_version() {
    let mut w = World::new();
    let alice = w.add_ffi("alice", ffi_client("alice", alice_caps()));
    w.connect("alice");
    alice.login(w.now).unwrap();
    let login = alice.poll_transmit().unwrap();
    assert_eq!(frame_json(&login)["type"], "login");
    let e = alice
        .receive(frame_of(br#"{"type":"login_ok","version":99}"#), w.now)
        .unwrap_err();
    assert!(
        matches!(&e, PrecallError::UnsupportedVersion { detail } if detail.contains("99")),
        "{e:?}"
    );
    assert_eq!(drain(&alice), vec![Event::LoggedOut]);
    assert_eq!(alice.status(), Status::Idle);

    // Messages the client refuses are violations, not errors.
    let idle = ffi_client("alice", alice_caps());
    idle.receive(frame_of(br#"{"type":"synced"}"#), 0).unwrap();
    idle.receive(frame_of(br#"{"type":"teleport"}"#), 0)
        .unwrap();
    assert_eq!(
        drain(&idle),
        vec![
            Event::Violation {
                detail: core::Violation::NotOnline("synced").to_string()
            },
            Event::Violation {
                detail: core::Violation::UnknownType("teleport".into()).to_string()
            },
        ]
    );
}

#[test]
fn login_frames_are_the_cores_and_a_terminal_id_login_gets_the_registered_capabilities() {
    // The frame a login by capabilities sends is byte for byte the core's.
    let alice = ffi_client("alice", alice_caps());
    alice.login(0).unwrap();
    let mut native = core::Client::new(core::ClientConfig::default());
    let pw = core::Password::new("alice-pw").unwrap();
    native
        .login(
            UserId::new("alice").unwrap(),
            pw.clone(),
            core::LoginWith::Capabilities(alice_core_caps()),
            core::Time(0),
        )
        .unwrap();
    assert_eq!(
        alice.poll_transmit().unwrap(),
        native.poll_transmit().unwrap().to_vec()
    );

    let mut w = World::new();
    let kiosk = TerminalId::new("kiosk-1").unwrap();
    w.directory
        .register(&kiosk, &UserId::new("alice").unwrap(), alice_core_caps());
    let mut c = config("alice", bob_caps());
    c.login = LoginWith::TerminalId {
        id: "kiosk-1".into(),
    };
    let alice = w.add_ffi("alice", PrecallClient::new(c).unwrap());
    w.connect("alice");
    alice.login(w.now).unwrap();
    let frame = alice.poll_transmit().unwrap();
    let json = frame_json(&frame);
    assert_eq!(json["type"], "login");
    assert_eq!(json["user"], "alice");
    assert_eq!(json["password"], "alice-pw");
    assert_eq!(
        json["with"],
        serde_json::json!({"terminal_id": "kiosk-1"}),
        "{json}"
    );
    let mut native = core::Client::new(core::ClientConfig::default());
    native
        .login(
            UserId::new("alice").unwrap(),
            pw,
            core::LoginWith::TerminalId(kiosk),
            w.time(),
        )
        .unwrap();
    assert_eq!(frame, native.poll_transmit().unwrap().to_vec());

    w.inject("alice", &frame);
    w.pump();
    let ev = drain(&alice);
    assert!(
        matches!(ev.as_slice(), [Event::LoggedIn { .. }, Event::Synced]),
        "{ev:?}"
    );
    assert_eq!(
        alice.capabilities(),
        Some(alice_caps()),
        "the registered ones"
    );
}

#[test]
fn bad_credentials_end_in_a_server_error_and_logged_out() {
    let mut w = World::new();
    let mut c = config("alice", alice_caps());
    c.password = "wrong".into();
    let alice = w.add_ffi("alice", PrecallClient::new(c).unwrap());
    w.ffi_login("alice");
    let ev = drain(&alice);
    match ev.as_slice() {
        [Event::ServerError {
            code,
            req: None,
            call: None,
            retry_after_ms: None,
            ..
        }, Event::LoggedOut] => assert_eq!(code, "bad_credentials"),
        other => panic!("{other:?}"),
    }
    assert_eq!(alice.status(), Status::Idle);
}

#[test]
fn the_ping_interval_sets_the_timer_and_the_timer_sends_a_ping() {
    let mut w = World::new();
    let mut c = config("alice", alice_caps());
    c.ping_interval_ms = Some(5_000);
    let alice = w.add_ffi("alice", PrecallClient::new(c).unwrap());
    let bob = w.add_ffi("bob", ffi_client("bob", bob_caps()));
    let login_at = w.now;
    w.ffi_login("alice");
    w.ffi_login("bob");
    assert_eq!(alice.poll_timeout(), Some(login_at + 5_000));
    assert_eq!(
        bob.poll_timeout(),
        Some(login_at + 20_000),
        "the core's default"
    );
    alice.handle_timeout(login_at + 4_999);
    assert_eq!(alice.poll_transmit(), None, "not yet");
    alice.handle_timeout(login_at + 5_000);
    let ping = alice.poll_transmit().expect("a ping at the deadline");
    assert_eq!(frame_json(&ping)["type"], "ping");
    assert_eq!(alice.poll_timeout(), Some(login_at + 10_000));
}

// ---- 6. conversions and acknowledgements --------------------------------------------------

#[test]
fn capabilities_json_round_trips_and_bad_json_is_an_invalid_value() {
    for core_caps in [
        alice_core_caps(),
        bob_core_caps(),
        core::Capabilities::builder()
            .encode(["h264"])
            .decode(["vp9", "h264"])
            .screen(1920, 1080)
            .camera(1280, 720, 25)
            .cpu(core::CpuClass::Mid)
            .bandwidth(1_500, 3_000)
            .build()
            .unwrap(),
        core::Capabilities::builder()
            .codecs(["av1"])
            .screen(320, 240)
            .cpu(core::CpuClass::Low)
            .bandwidth(0, 7)
            .build()
            .unwrap(),
    ] {
        let caps = ffi_caps(&core_caps);
        let json = capabilities_to_json(caps.clone()).unwrap();
        assert_eq!(json, serde_json::to_string(&core_caps).unwrap());
        assert_eq!(capabilities_from_json(json).unwrap(), caps);
        assert_eq!(
            serde_json::to_value(&core_caps).unwrap(),
            caps_json(&caps),
            "the test's own JSON agrees"
        );
    }
    let mut upper = caps_json(&alice_caps());
    upper["encode"] = serde_json::json!(["H264"]);
    let mut narrow = caps_json(&alice_caps());
    narrow["screen"]["width"] = serde_json::json!(0);
    for bad in [
        "{".to_owned(),
        "null".to_owned(),
        "[]".to_owned(),
        r#"{"encode":["h264"]}"#.to_owned(),
        upper.to_string(),
        narrow.to_string(),
    ] {
        assert!(is_invalid(capabilities_from_json(bad.clone())), "{bad}");
    }
}

#[test]
fn every_cpu_class_round_trips_through_the_core_and_the_server() {
    let classes = [
        (core::CpuClass::Low, CpuClass::Low, "low"),
        (core::CpuClass::Mid, CpuClass::Mid, "mid"),
        (core::CpuClass::High, CpuClass::High, "high"),
        (core::CpuClass::Ultra, CpuClass::Ultra, "ultra"),
    ];
    assert_eq!(
        core::CpuClass::ALL.len(),
        classes.len(),
        "a class this test misses"
    );
    let mut prints = std::collections::BTreeSet::new();
    for (core_class, class, word) in classes {
        let core_caps = core::Capabilities::builder()
            .codecs(["h264"])
            .screen(1280, 720)
            .camera(1280, 720, 30)
            .cpu(core_class)
            .bandwidth(4_000, 4_000)
            .build()
            .unwrap();
        let caps = ffi_caps(&core_caps);
        assert_eq!(caps.cpu, class);
        let json = capabilities_to_json(caps.clone()).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap()["cpu"],
            word
        );
        assert_eq!(capabilities_from_json(json).unwrap().cpu, class);
        let fp = fingerprint(caps.clone()).unwrap();
        assert_eq!(fp, core_caps.fingerprint().to_string());
        prints.insert(fp);
        assert_eq!(
            negotiate_pair(caps.clone(), bob_caps()).unwrap(),
            ffi_params(&core::negotiate_pair(&core_caps, &bob_core_caps()))
        );

        // Through the wire: logged in with it, Alice holds it and Bob sees it.
        let mut w = World::new();
        let alice = w.add_ffi("alice", ffi_client("alice", caps.clone()));
        w.add_core("bob");
        w.ffi_login("alice");
        w.core_login("bob", bob_core_caps());
        assert_eq!(alice.capabilities().map(|c| c.cpu), Some(class));
        let seen: Vec<core::Capabilities> = w
            .core("bob")
            .client
            .peers()
            .map(|(_, p)| p.capabilities.clone())
            .collect();
        assert_eq!(seen, vec![core_caps], "bob's view of alice with {word}");
    }
    assert_eq!(prints.len(), 4, "each class has its own fingerprint");
}

#[test]
fn no_video_directions_carry_the_wires_words() {
    let cameraless = {
        let mut c = bob_caps();
        c.camera = None;
        c
    };
    let core_cameraless: core::Capabilities =
        serde_json::from_value(caps_json(&cameraless)).unwrap();
    let off = |reason: &str| Direction::Off {
        reason: reason.into(),
    };

    // A sender without a camera sends nothing: `no_camera`.
    let p = negotiate_pair(cameraless.clone(), alice_caps()).unwrap();
    assert_eq!(p.send, off("no_camera"));
    assert!(matches!(p.recv, Direction::Video { .. }), "{p:?}");
    assert_eq!(
        p,
        ffi_params(&core::negotiate_pair(&core_cameraless, &alice_core_caps()))
    );
    let p = negotiate_pair(alice_caps(), cameraless.clone()).unwrap();
    assert_eq!(p.recv, off("no_camera"));
    assert!(matches!(p.send, Direction::Video { .. }), "{p:?}");

    // Nothing in common: `no_common_codec` both ways.
    let vp8 = ffi_caps(&sample_caps(&["vp8"], 1280, 30));
    let p = negotiate_pair(vp8.clone(), bob_caps()).unwrap();
    assert_eq!(
        (p.send.clone(), p.recv.clone()),
        (off("no_common_codec"), off("no_common_codec"))
    );
    assert_eq!(
        p,
        ffi_params(&core::negotiate_pair(
            &sample_caps(&["vp8"], 1280, 30),
            &bob_core_caps()
        ))
    );

    // No bandwidth: `insufficient_resources`.
    let mut starved = alice_caps();
    starved.bandwidth = Bandwidth {
        up_kbps: 0,
        down_kbps: 0,
    };
    let core_starved: core::Capabilities = serde_json::from_value(caps_json(&starved)).unwrap();
    let p = negotiate_pair(starved.clone(), bob_caps()).unwrap();
    assert_eq!(
        p,
        ffi_params(&core::negotiate_pair(&core_starved, &bob_core_caps()))
    );
    assert_eq!(p.send, off("insufficient_resources"));

    // The same words reach the table through the server.
    let mut w = World::new();
    let alice = w.add_ffi("alice", ffi_client("alice", alice_caps()));
    w.add_ffi("bob", ffi_client("bob", cameraless.clone()));
    w.ffi_login("alice");
    w.ffi_login("bob");
    let table = alice.peers();
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].params.recv, off("no_camera"));
    assert_eq!(table[0].capabilities.camera, None);
}

#[test]
fn update_caps_is_acknowledged_with_its_tag_and_recomputes_both_tables() {
    let (mut w, alice, bob) = both_online();
    let alice_ep = alice.endpoint().unwrap();
    // Encode and decode lists that differ, so that neither can stand for the other.
    let new_core = core::Capabilities::builder()
        .encode(["h264"])
        .decode(["vp8", "h264"])
        .screen(1920, 1080)
        .camera(1920, 1080, 60)
        .cpu(core::CpuClass::High)
        .bandwidth(8_000, 8_000)
        .build()
        .unwrap();
    let new = ffi_caps(&new_core);
    assert!(is_invalid(
        alice.update_caps(bad_caps()[0].1.clone(), w.now)
    ));
    assert!(!alice.caps_in_flight(), "a refused change changes nothing");
    let tag = alice.update_caps(new.clone(), w.now).unwrap();
    assert!(alice.caps_in_flight());
    assert_eq!(alice.capabilities(), Some(new.clone()));
    let p = negotiate_pair(new.clone(), bob_caps()).unwrap();
    assert_eq!(
        p,
        ffi_params(&core::negotiate_pair(&new_core, &bob_core_caps()))
    );
    assert_ne!(
        p,
        negotiate_pair(alice_caps(), bob_caps()).unwrap(),
        "a change that shows"
    );
    assert_eq!(alice.peers()[0].params, p, "recomputed at once");
    w.pump();
    assert_eq!(drain(&alice), vec![Event::CapsAcknowledged { req: tag }]);
    assert!(!alice.caps_in_flight());
    assert_eq!(
        drain(&bob),
        vec![Event::PeerUpdated {
            peer: alice_ep,
            params: negotiate_pair(bob_caps(), new.clone()).unwrap()
        }]
    );
    let entry = &bob.peers()[0];
    assert_eq!(entry.capabilities, new);
    assert_eq!(entry.fingerprint, new_core.fingerprint().to_string());
}

#[test]
fn contact_changes_and_a_server_error_carry_their_tags() {
    let (mut w, alice, _bob) = both_online();
    let add = alice.add_contact("carol".into(), w.now).unwrap();
    w.pump();
    assert_eq!(
        drain(&alice),
        vec![Event::ContactsChanged {
            req: Some(add),
            user: "carol".into(),
            added: true
        }]
    );
    assert_eq!(alice.contacts(), vec!["bob".to_owned(), "carol".to_owned()]);
    let remove = alice.remove_contact("carol".into(), w.now).unwrap();
    assert_ne!(remove, add);
    w.pump();
    assert_eq!(
        drain(&alice),
        vec![Event::ContactsChanged {
            req: Some(remove),
            user: "carol".into(),
            added: false
        }]
    );
    assert_eq!(alice.contacts(), vec!["bob".to_owned()]);

    // Oneself is not a contact: the server says `invalid_contact` for that tag.
    let me = alice.add_contact("alice".into(), w.now).unwrap();
    w.pump();
    expect_one_server_error(&drain(&alice), "invalid_contact", me);
    assert_eq!(alice.status(), Status::Online, "not fatal");
}

#[test]
fn a_call_to_a_terminal_the_server_no_longer_holds_fails_with_not_reachable() {
    let (mut w, alice, bob_ep) = alice_and_native_bob();
    let now = w.time();
    w.core("bob").client.logout(now).unwrap();
    w.send_up("bob"); // the server has Bob offline; Alice has not heard yet
    assert_eq!(alice.peers().len(), 1);
    let tag = alice.place_call(bob_ep.clone(), w.now).unwrap();
    w.pump();
    match drain(&alice).as_slice() {
        [Event::PeerOffline { peer }, Event::CallFailed { req, to, code, .. }] => {
            assert_eq!(*peer, bob_ep);
            assert_eq!((*req, to, code.as_str()), (tag, &bob_ep, "not_reachable"));
        }
        other => panic!("{other:?}"),
    }
    assert!(alice.calls().is_empty());
}

#[test]
fn a_throttled_capability_change_carries_retry_after_and_is_retried_on_the_timer() {
    let mut w = World::with_config(ServerConfig::default());
    let mut c = config("alice", alice_caps());
    c.ping_interval_ms = Some(600_000);
    let alice = w.add_ffi("alice", PrecallClient::new(c).unwrap());
    w.ffi_login("alice");
    drain(&alice);
    let variants = [
        sample_caps(&["h264"], 640, 15),
        sample_caps(&["h264"], 640, 30),
        sample_caps(&["h264"], 1280, 15),
        sample_caps(&["h264"], 1280, 30),
        sample_caps(&["vp8"], 640, 15),
        sample_caps(&["vp8"], 640, 30),
        sample_caps(&["vp8"], 1280, 15),
    ];
    let mut throttled = None;
    for (i, v) in variants.iter().enumerate() {
        let tag = alice.update_caps(ffi_caps(v), w.now).unwrap();
        w.pump();
        match drain(&alice).as_slice() {
            [Event::CapsAcknowledged { req }] => assert_eq!(*req, tag),
            [Event::ServerError {
                code,
                req,
                call: None,
                retry_after_ms: Some(ms),
                ..
            }] => {
                assert_eq!(code, "caps_throttled");
                assert_eq!(*req, Some(tag));
                throttled = Some((i, tag, *ms));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let (i, tag, ms) = throttled.expect("the server throttles within seven changes");
    assert!(ms > 0 && ms <= 60_000, "{ms}");
    assert!(alice.caps_in_flight(), "waiting to be sent again");
    assert_eq!(
        alice.poll_timeout(),
        Some(w.now + ms),
        "the retry's deadline"
    );
    w.now += ms;
    alice.handle_timeout(w.now);
    let frame = alice.poll_transmit().expect("the retry");
    let json = frame_json(&frame);
    assert_eq!(json["type"], "update_caps");
    assert_eq!(json["capabilities"], caps_json(&ffi_caps(&variants[i])));
    w.inject("alice", &frame);
    w.pump();
    assert_eq!(
        drain(&alice),
        vec![Event::CapsAcknowledged { req: tag + 1 }]
    );
    assert!(!alice.caps_in_flight());
}

#[test]
fn the_facade_is_shared_between_threads() {
    let (mut w, alice, bob) = both_online();
    let bob_ep = bob.endpoint().unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let a = alice.clone();
            let to = bob_ep.clone();
            std::thread::spawn(move || a.query_caps(to, 5_000).unwrap())
        })
        .collect();
    let mut tags: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(tags.len(), 4, "every command got its own tag");
    w.pump();
    let answered = drain(&alice)
        .into_iter()
        .filter(|e| matches!(e, Event::CapsResult { req, .. } if tags.contains(req)))
        .count();
    assert_eq!(answered, 4);
}

/// The events are exactly one `ServerError` with this code for this request tag, with no
/// call and no retry delay.
fn expect_one_server_error(events: &[Event], want: &str, tag: u32) {
    match events {
        [Event::ServerError {
            code,
            req,
            call: None,
            retry_after_ms: None,
            ..
        }] => {
            assert_eq!(code, want);
            assert_eq!(*req, Some(tag));
        }
        other => panic!("{other:?}"),
    }
}
