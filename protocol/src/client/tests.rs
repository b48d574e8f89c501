//! Unit tests of the module.

use super::*;
use crate::caps::{CallDigest, Fingerprint};
use crate::codec::DEFAULT_MAX_FRAME;
use crate::error::ErrorCode;
use crate::ids::Password;
use crate::message::{LoginWith, Presence};
use crate::resume::ResumeToken;
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
        *resume_token = resumable
            .then(|| ResumeToken::derive(&crate::resume::ResumeSecret::default(), SessionId(7)));
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
    c.connection_closed(Time(10));
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
    c.connection_closed(Time(10));
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
    c.connection_closed(Time(1));
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
fn a_connection_closed_while_idle_reports_nothing() {
    let alice = UserId::new("alice").unwrap();
    let mut c = online_at(&alice, false, Time::ZERO);
    c.logout(Time(1)).unwrap();
    c.handle_message(ServerMessage::LoggedOut {}, Time(2));
    assert_eq!(drain(&mut c), vec![ClientEvent::LoggedOut]);
    c.connection_closed(Time(3));
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
        media: None,
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
        media: None,
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

/// The paths are named as the spec writes them (the client binary's `--json` and the
/// demo print these names).
#[test]
fn setup_paths_are_named_as_the_spec_writes_them() {
    assert_eq!(SetupPath::Fast.name(), "fast");
    assert_eq!(SetupPath::Fallback.name(), "fallback");
}
