//! The abuse limits of spec section 13.6, against the server core: each limit is hit
//! and answered with its own fatal error code (and `retry_after_ms` where waiting
//! helps), another session keeps working, and with the limit off (0) the same input is
//! served. The end-to-end tests hit the same limits through real sockets.

use std::net::{IpAddr, Ipv4Addr};

use precall_protocol::codec::encode_frame;
use precall_protocol::message::{ClientMessage, LoginWith, ServerMessage};
use precall_protocol::server::{AuthVerdict, Limits, ServerEvent};
use precall_protocol::{Capabilities, Codec, ConnId, ErrorCode, Server, Time};

mod common;
use common::*;

/// What the server did: messages per connection and closed connections. Credential
/// checks succeed for password "pw" and fail otherwise.
#[derive(Default)]
struct Seen {
    msgs: Vec<(ConnId, ServerMessage)>,
    closed: Vec<ConnId>,
    checks: usize,
}

fn pump(s: &mut Server, now: Time, seen: &mut Seen) {
    while let Some(ev) = s.poll_event() {
        match ev {
            ServerEvent::Transmit { conn, frame } => {
                let m = decode_server(&frame);
                seen.msgs.push((conn, m));
            }
            ServerEvent::Close { conn } => seen.closed.push(conn),
            ServerEvent::Authenticate(req) => {
                seen.checks += 1;
                let verdict = if req.password.expose() == "pw" {
                    accepted(&[], None)
                } else {
                    AuthVerdict::Rejected
                };
                s.complete_auth(req.ticket, verdict, now).unwrap();
            }
            _ => {}
        }
    }
}

/// The error a connection got, with its retry hint.
fn error_of(seen: &Seen, conn: ConnId) -> Option<(ErrorCode, Option<u64>)> {
    seen.msgs.iter().find_map(|(c, m)| match m {
        ServerMessage::Error {
            code,
            retry_after_ms,
            ..
        } if *c == conn => Some((*code, *retry_after_ms)),
        _ => None,
    })
}

/// A logged-in bystander on connection 1000, to show it keeps working.
fn bystander(s: &mut Server, seen: &mut Seen) -> ConnId {
    let c = ConnId(1000);
    s.connect_from(c, Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1))), Time(0))
        .unwrap();
    s.receive(c, &plain_login_frame("bystander", "pw"), Time(0));
    pump(s, Time(0), seen);
    assert!(seen
        .msgs
        .iter()
        .any(|(k, m)| *k == c && matches!(m, ServerMessage::LoginOk { .. })));
    c
}

fn still_served(s: &mut Server, c: ConnId, now: Time) {
    let mut seen = Seen::default();
    s.receive(c, &encode_frame(&ClientMessage::Ping {}), now);
    pump(s, now, &mut seen);
    assert!(seen
        .msgs
        .iter()
        .any(|(k, m)| *k == c && *m == ServerMessage::Pong {}));
    assert!(!seen.closed.contains(&c));
}

#[test]
fn failed_logins_throttle_the_account_with_a_retry_hint() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_login_failures_per_account = 3;
        limits.max_login_failures_per_source = 0;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    let by = bystander(&mut s, &mut seen);
    for i in 0..3 {
        let c = ConnId(i);
        s.connect_from(
            c,
            Some(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8))),
            Time(0),
        )
        .unwrap();
        s.receive(c, &plain_login_frame("alice", "wrong"), Time(0));
        pump(&mut s, Time(0), &mut seen);
        assert_eq!(error_of(&seen, c), Some((ErrorCode::BadCredentials, None)));
    }
    let checks = seen.checks;
    // The fourth try, even with the right password and from elsewhere, is refused
    // without a credential check, and told to wait for the rest of the window.
    let c = ConnId(10);
    s.connect_from(c, Some(B), Time(5_000)).unwrap();
    s.receive(c, &plain_login_frame("alice", "pw"), Time(5_000));
    pump(&mut s, Time(5_000), &mut seen);
    assert_eq!(
        error_of(&seen, c),
        Some((ErrorCode::LoginThrottled, Some(55_000)))
    );
    assert!(seen.closed.contains(&c));
    assert_eq!(seen.checks, checks, "no credential check while throttled");
    // Another account is not throttled, and the bystander is served.
    let d = ConnId(11);
    s.connect_from(d, Some(B), Time(5_000)).unwrap();
    s.receive(d, &plain_login_frame("bob", "pw"), Time(5_000));
    pump(&mut s, Time(5_000), &mut seen);
    assert!(seen
        .msgs
        .iter()
        .any(|(k, m)| *k == d && matches!(m, ServerMessage::LoginOk { .. })));
    still_served(&mut s, by, Time(5_000));
    // After the window, alice may log in again.
    let e = ConnId(12);
    s.connect_from(e, Some(B), Time(60_001)).unwrap();
    s.receive(e, &plain_login_frame("alice", "pw"), Time(60_001));
    pump(&mut s, Time(60_001), &mut seen);
    assert!(seen
        .msgs
        .iter()
        .any(|(k, m)| *k == e && matches!(m, ServerMessage::LoginOk { .. })));
}

#[test]
fn failed_logins_throttle_the_source_address() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_login_failures_per_account = 0;
        limits.max_login_failures_per_source = 2;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    for (i, user) in ["u1", "u2"].iter().enumerate() {
        let c = ConnId(i as u64);
        s.connect_from(c, Some(A), Time(0)).unwrap();
        s.receive(c, &plain_login_frame(user, "wrong"), Time(0));
        pump(&mut s, Time(0), &mut seen);
    }
    let c = ConnId(5);
    s.connect_from(c, Some(A), Time(1_000)).unwrap();
    s.receive(c, &plain_login_frame("u3", "pw"), Time(1_000));
    pump(&mut s, Time(1_000), &mut seen);
    assert_eq!(
        error_of(&seen, c),
        Some((ErrorCode::LoginThrottled, Some(59_000)))
    );
    // Another address is fine.
    let d = ConnId(6);
    s.connect_from(d, Some(B), Time(1_000)).unwrap();
    s.receive(d, &plain_login_frame("u3", "pw"), Time(1_000));
    pump(&mut s, Time(1_000), &mut seen);
    assert!(seen
        .msgs
        .iter()
        .any(|(k, m)| *k == d && matches!(m, ServerMessage::LoginOk { .. })));
}

#[test]
fn connections_are_capped_in_total_and_per_source() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_connections = 4;
        limits.max_connections_per_source = 2;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    let by = bystander(&mut s, &mut seen);
    for i in 0..3 {
        s.connect_from(ConnId(i), Some(A), Time(0)).unwrap();
    }
    pump(&mut s, Time(0), &mut seen);
    assert_eq!(error_of(&seen, ConnId(0)), None);
    assert_eq!(error_of(&seen, ConnId(1)), None);
    assert_eq!(
        error_of(&seen, ConnId(2)),
        Some((ErrorCode::TooManyConnections, Some(1_000)))
    );
    // Freed slots count again; the total cap holds across addresses.
    s.connect_from(ConnId(3), Some(B), Time(0)).unwrap();
    s.connect_from(ConnId(4), Some(B), Time(0)).unwrap();
    pump(&mut s, Time(0), &mut seen);
    assert_eq!(error_of(&seen, ConnId(3)), None);
    assert_eq!(
        error_of(&seen, ConnId(4)).map(|e| e.0),
        Some(ErrorCode::TooManyConnections)
    );
    s.connection_closed(ConnId(0), Time(0));
    s.connect_from(ConnId(5), Some(A), Time(0)).unwrap();
    pump(&mut s, Time(0), &mut seen);
    assert_eq!(error_of(&seen, ConnId(5)), None, "a freed slot is usable");
    still_served(&mut s, by, Time(0));
}

#[test]
fn accept_rate_limit_turns_a_reconnect_storm_away_until_the_next_second() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_accepts_per_second = 3;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    for i in 0..5 {
        s.connect_from(ConnId(i), Some(A), Time(400)).unwrap();
    }
    pump(&mut s, Time(400), &mut seen);
    let refused: Vec<_> = (0..5).filter_map(|i| error_of(&seen, ConnId(i))).collect();
    // The window is the second [0, 1000): the rest of it is 600 ms.
    assert_eq!(refused, vec![(ErrorCode::RateLimited, Some(600)); 2]);
    s.connect_from(ConnId(9), Some(A), Time(1_500)).unwrap();
    pump(&mut s, Time(1_500), &mut seen);
    assert_eq!(
        error_of(&seen, ConnId(9)),
        None,
        "the next second admits again"
    );
}

#[test]
fn accept_rate_per_source_turns_one_source_away_and_not_the_others() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_accepts_per_second_per_source = 3;
        limits
    };
    assert_eq!(Limits::default().max_accepts_per_second, 0, "no total cap");
    let mut s = server(limits);
    let mut seen = Seen::default();
    for i in 0..5 {
        s.connect_from(ConnId(i), Some(A), Time(400)).unwrap();
        // Each closes at once: open connections are not what is counted.
        s.connection_closed(ConnId(i), Time(400));
    }
    s.connect_from(ConnId(5), Some(B), Time(400)).unwrap();
    pump(&mut s, Time(400), &mut seen);
    let refused: Vec<_> = (0..6).filter_map(|i| error_of(&seen, ConnId(i))).collect();
    assert_eq!(refused, vec![(ErrorCode::RateLimited, Some(600)); 2]);
    assert_eq!(error_of(&seen, ConnId(5)), None, "another source gets in");
    for i in 6..9 {
        s.connect_from(ConnId(i), Some(A), Time(1_400)).unwrap();
    }
    pump(&mut s, Time(1_400), &mut seen);
    assert!(
        (6..9).all(|i| error_of(&seen, ConnId(i)).is_none()),
        "the next second admits three again"
    );
}

#[test]
fn oversized_capability_documents_are_refused() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_caps_bytes = 300;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    let big: Vec<Codec> = (0..16)
        .map(|i| Codec::new(format!("codec-{i:09}")).unwrap())
        .collect();
    let huge = Capabilities::new(
        big.clone(),
        big,
        plain_caps().screen(),
        plain_caps().camera(),
        plain_caps().cpu(),
        plain_caps().bandwidth(),
    )
    .unwrap();
    let c = ConnId(1);
    s.connect_from(c, Some(A), Time(0)).unwrap();
    s.receive(
        c,
        &login_frame("alice", "pw", LoginWith::Capabilities(huge.clone())),
        Time(0),
    );
    pump(&mut s, Time(0), &mut seen);
    assert_eq!(error_of(&seen, c), Some((ErrorCode::CapsTooLarge, None)));
    assert_eq!(seen.checks, 0, "refused before the credential check");
    // A small login works; growing the document later is refused the same way.
    let d = ConnId(2);
    s.connect_from(d, Some(A), Time(0)).unwrap();
    s.receive(d, &plain_login_frame("bob", "pw"), Time(0));
    pump(&mut s, Time(0), &mut seen);
    let update = ClientMessage::UpdateCaps {
        req: precall_protocol::ReqId(1),
        capabilities: huge,
    };
    s.receive(d, &encode_frame(&update), Time(0));
    pump(&mut s, Time(0), &mut seen);
    assert_eq!(error_of(&seen, d), Some((ErrorCode::CapsTooLarge, None)));
}

/// Section 13.4: one source cannot queue more than `max_auth_checks_per_source`
/// credential checks at once; the next login from it is refused `rate_limited` (with a
/// retry hint) before any check, another source is not affected, and a finished or
/// abandoned check frees its place.
#[test]
fn credential_checks_per_source_are_capped() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_auth_checks_per_source = 2;
        limits
    };
    let mut s = server(limits);
    let mut held = Vec::new();
    for i in 0..3u64 {
        let c = ConnId(i);
        s.connect_from(c, Some(A), Time(0)).unwrap();
        s.receive(c, &plain_login_frame("alice", "pw"), Time(0));
        while let Some(ev) = s.poll_event() {
            match ev {
                ServerEvent::Authenticate(req) => held.push(req),
                ServerEvent::Transmit { conn, frame } => {
                    let m = decode_server(&frame);
                    assert_eq!(conn, ConnId(2), "only the third is answered");
                    assert!(matches!(
                        m,
                        ServerMessage::Error {
                            code: ErrorCode::RateLimited,
                            retry_after_ms: Some(1000),
                            ..
                        }
                    ));
                }
                _ => {}
            }
        }
    }
    assert_eq!(held.len(), 2, "two checks from source A at once");
    // Source B is not held back by A.
    s.connect_from(ConnId(10), Some(B), Time(0)).unwrap();
    s.receive(ConnId(10), &plain_login_frame("bob", "pw"), Time(0));
    assert!(
        std::iter::from_fn(|| s.poll_event()).any(|e| matches!(e, ServerEvent::Authenticate(_)))
    );
    // A's first client leaves before its check ran: the embedder is told to skip it,
    // and the place is free again.
    s.connection_closed(ConnId(0), Time(1));
    let events = drain(&mut s);
    assert!(events.contains(&ServerEvent::AuthCancelled(held[0].ticket)));
    s.connect_from(ConnId(3), Some(A), Time(1)).unwrap();
    s.receive(ConnId(3), &plain_login_frame("alice", "pw"), Time(1));
    assert!(
        std::iter::from_fn(|| s.poll_event()).any(|e| matches!(e, ServerEvent::Authenticate(_)))
    );
    // A finished check frees its place too.
    s.complete_auth(held[1].ticket, accepted(&[], None), Time(2))
        .unwrap();
    let _ = drain(&mut s);
    s.connect_from(ConnId(4), Some(A), Time(2)).unwrap();
    s.receive(ConnId(4), &plain_login_frame("carol", "pw"), Time(2));
    assert!(
        std::iter::from_fn(|| s.poll_event()).any(|e| matches!(e, ServerEvent::Authenticate(_)))
    );
}

/// Section 13.6: a login over the session limit counts as a failed login, so a flood of
/// valid logins over the limit is throttled like one of wrong passwords.
#[test]
fn logins_over_the_session_limit_are_throttled() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_login_failures_per_account = 3;
        limits
    };
    let mut s = Server::new({
        let mut config = config_with_limits(limits);
        config.max_sessions_per_user = 1;
        config
    });
    let mut seen = Seen::default();
    for i in 0..5u64 {
        let c = ConnId(i);
        s.connect_from(c, Some(A), Time(0)).unwrap();
        s.receive(c, &plain_login_frame("alice", "pw"), Time(0));
        pump(&mut s, Time(0), &mut seen);
    }
    let codes: Vec<Option<ErrorCode>> = (0..5u64)
        .map(|i| error_of(&seen, ConnId(i)).map(|(c, _)| c))
        .collect();
    assert_eq!(
        codes,
        [
            None,
            Some(ErrorCode::TooManySessions),
            Some(ErrorCode::TooManySessions),
            Some(ErrorCode::TooManySessions),
            Some(ErrorCode::LoginThrottled),
        ]
    );
    assert_eq!(
        seen.checks, 4,
        "the throttled login got no credential check"
    );
}

/// Spec 13.6: failed-login counters are kept only for the current window, so their
/// memory is bounded by the accounts and sources that failed within one window.
#[test]
fn failure_counters_are_forgotten_when_their_window_ends() {
    let mut s = server(Limits::default());
    let mut seen = Seen::default();
    let window = Limits::default().login_failure_window;
    let fail = |s: &mut Server, seen: &mut Seen, i: u8, now: Time| {
        let c = ConnId(u64::from(i) + 100 * now.0);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 0, i));
        s.connect_from(c, Some(ip), now).unwrap();
        s.receive(c, &plain_login_frame(&format!("user{i}"), "wrong"), now);
        pump(s, now, seen);
    };
    for i in 0..3 {
        fail(&mut s, &mut seen, i, Time(0));
    }
    assert_eq!(s.failure_counters(), 6, "three accounts, three sources");
    // Within the window they stay.
    let late = u64::try_from(window.as_millis()).unwrap() - 1;
    fail(&mut s, &mut seen, 3, Time(late));
    assert_eq!(s.failure_counters(), 8);
    // Once the first three windows have ended, they go at the next failure.
    fail(&mut s, &mut seen, 4, Time(late + 1));
    assert_eq!(s.failure_counters(), 4, "only the two recent ones");
}

/// The per-source count goes down by one as each connection closes, not to nothing.
#[test]
fn a_closed_connection_frees_one_slot_of_its_source() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_connections_per_source = 2;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    for i in 1..=2 {
        s.connect_from(ConnId(i), Some(A), Time(0)).unwrap();
    }
    s.connection_closed(ConnId(1), Time(0));
    // One slot is free again: the first newcomer gets it, the second does not.
    for i in 3..=4 {
        s.connect_from(ConnId(i), Some(A), Time(0)).unwrap();
    }
    pump(&mut s, Time(0), &mut seen);
    assert_eq!(seen.closed, [ConnId(4)]);
    assert_eq!(
        error_of(&seen, ConnId(4)).map(|e| e.0),
        Some(ErrorCode::TooManyConnections)
    );
}
