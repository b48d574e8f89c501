//! The limits of spec section 13.6 that slow a sender down instead of closing its
//! connection, and the fair order of credential checks (section 13.4), against the
//! server core (and, for the capability retry, the client core over the in-memory
//! network):
//!
//! - `max_frames_per_second` pauses the connection's input for the rest of the second;
//!   every frame is answered in the end, none is lost, nobody else waits;
//! - `max_caps_updates` refuses one `update_caps` too many with the non-fatal
//!   `caps_throttled` and a retry hint, applying nothing; the client sends its
//!   capabilities again by itself when the hint allows, and its contacts end up with them;
//! - `max_auth_checks_running` hands credential checks to the embedder one source at a
//!   time, so a source with many checks waiting does not delay another's;
//! - per-source limits count an IPv6 peer by its /64.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use precall_protocol::codec::encode_frame;
use precall_protocol::message::{ClientMessage, LoginWith, ServerMessage};
use precall_protocol::server::{source_key, AuthTicket, AuthVerdict, Limits, ServerError};
use precall_protocol::sim::{Directory, Sim};
use precall_protocol::{
    negotiate_pair, Capabilities, ConnId, ErrorCode, Server, ServerEvent, Time,
};

mod common;
use common::*;

/// Every event so far: messages per connection, closed connections, credential checks
/// handed out (not answered).
#[derive(Default)]
struct Seen {
    msgs: Vec<(ConnId, ServerMessage)>,
    closed: Vec<ConnId>,
    checks: Vec<(AuthTicket, ConnId)>,
    cancelled: Vec<AuthTicket>,
}

fn pump(s: &mut Server, seen: &mut Seen) {
    while let Some(ev) = s.poll_event() {
        match ev {
            ServerEvent::Transmit { conn, frame } => {
                let m = decode_server(&frame);
                seen.msgs.push((conn, m));
            }
            ServerEvent::Close { conn } => seen.closed.push(conn),
            ServerEvent::Authenticate(req) => seen.checks.push((req.ticket, req.conn)),
            ServerEvent::AuthCancelled(t) => seen.cancelled.push(t),
            _ => {}
        }
    }
}

fn pongs(seen: &Seen, conn: ConnId) -> usize {
    seen.msgs
        .iter()
        .filter(|(c, m)| *c == conn && *m == ServerMessage::Pong {})
        .count()
}

#[test]
fn frame_rate_limit_pauses_a_flooding_connection_until_the_next_second() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_frames_per_second = 50;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    let (flooder, other) = (ConnId(1), ConnId(2));
    s.connect_from(flooder, Some(A), Time(10)).unwrap();
    s.connect_from(other, Some(A), Time(10)).unwrap();
    let ping = encode_frame(&ClientMessage::Ping {});
    let flood: Vec<u8> = std::iter::repeat_n(ping.to_vec(), 200).flatten().collect();
    s.receive(flooder, &flood, Time(10));
    pump(&mut s, &mut seen);
    assert_eq!(pongs(&seen, flooder), 50, "the frames within the limit");
    assert!(!s.accepts_input(flooder), "the rest waits: stop reading");
    assert_eq!(
        s.poll_timeout(),
        Some(Time(1010)),
        "until the second is over"
    );
    // Another connection (even from the same source) is served meanwhile.
    s.receive(other, &ping, Time(10));
    pump(&mut s, &mut seen);
    assert_eq!(pongs(&seen, other), 1);
    assert!(s.accepts_input(other));
    // Nothing moves before the second is over; then 50 more each second.
    s.handle_timeout(Time(1009));
    pump(&mut s, &mut seen);
    assert_eq!(pongs(&seen, flooder), 50);
    for (second, total) in [(1010, 100), (2010, 150), (3010, 200)] {
        s.handle_timeout(Time(second));
        pump(&mut s, &mut seen);
        assert_eq!(pongs(&seen, flooder), total, "at {second} ms");
    }
    assert!(
        s.accepts_input(flooder),
        "all 200 answered: reading resumes"
    );
    assert!(seen.closed.is_empty(), "a throttle closes nothing");
    assert!(seen
        .msgs
        .iter()
        .all(|(_, m)| !matches!(m, ServerMessage::Error { .. })));
    // An embedder that reads on regardless is cut off once a frame's worth is held.
    s.receive(flooder, &flood, Time(3010));
    pump(&mut s, &mut seen);
    assert!(!s.accepts_input(flooder));
    let big = vec![0u8; 70_000];
    s.receive(flooder, &big, Time(3010));
    pump(&mut s, &mut seen);
    assert!(seen.closed.contains(&flooder));
    assert!(seen.msgs.iter().any(|(c, m)| *c == flooder
        && matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                ..
            }
        )));
}

#[test]
fn frame_rate_limit_off_serves_a_flood_at_once() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_frames_per_second = 0;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    s.connect_from(ConnId(1), Some(A), Time(10)).unwrap();
    let ping = encode_frame(&ClientMessage::Ping {});
    let flood: Vec<u8> = std::iter::repeat_n(ping.to_vec(), 500).flatten().collect();
    s.receive(ConnId(1), &flood, Time(10));
    pump(&mut s, &mut seen);
    assert_eq!(pongs(&seen, ConnId(1)), 500);
    assert!(s.accepts_input(ConnId(1)));
}

#[test]
fn a_closed_connection_leaves_no_throttle_timer() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_frames_per_second = 1;
        limits
    };
    let mut s = server(limits);
    s.connect_from(ConnId(1), Some(A), Time(0)).unwrap();
    let login_deadline = s.poll_timeout();
    let ping = encode_frame(&ClientMessage::Ping {});
    let two: Vec<u8> = [ping.to_vec(), ping.to_vec()].concat();
    s.receive(ConnId(1), &two, Time(0));
    assert_eq!(s.poll_timeout(), Some(Time(1000)));
    s.connection_closed(ConnId(1), Time(0));
    assert_eq!(
        s.poll_timeout(),
        None,
        "{login_deadline:?} and the throttle are gone"
    );
}

/// Alice and bob, mutual contacts, on terminals 0 and 1.
fn alice_and_bob(limits: Limits) -> Sim {
    let mut d = Directory::default();
    d.add_user(&u("alice"), "pw");
    d.add_user(&u("bob"), "pw");
    d.befriend(&u("alice"), &u("bob"));
    let mut sim = Sim::new(d, 2, config_with_limits(limits));
    let caps = plain_caps();
    sim.login(0, &u("alice"), "pw", LoginWith::Capabilities(caps.clone()));
    sim.login(1, &u("bob"), "pw", LoginWith::Capabilities(caps));
    sim.settle().unwrap();
    sim
}

/// What bob's table holds for alice.
fn bob_sees_alice(sim: &Sim) -> Capabilities {
    let alice = sim.endpoint(0).unwrap();
    sim.client(1).peer(&alice).unwrap().capabilities.clone()
}

#[test]
fn update_caps_over_the_limit_is_refused_and_sent_again_when_allowed() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_caps_updates = 2;
        limits.caps_update_window = Duration::from_secs(10);
        limits
    };
    let mut sim = alice_and_bob(limits);
    for width in [640, 800] {
        sim.command(0, |c, now| c.update_caps(caps_of(width), now))
            .unwrap();
        sim.settle().unwrap();
        assert_eq!(bob_sees_alice(&sim), caps_of(width));
    }
    // The third within the window: refused, not applied, the session goes on.
    let mark = sim.sent.len();
    let req = sim
        .command(0, |c, now| c.update_caps(caps_of(1024), now))
        .unwrap();
    sim.settle().unwrap();
    let alice_conn = sim.terminals[0].conn.unwrap();
    let answers = sent_since(&sim, mark, alice_conn);
    let started = sim.now;
    assert_eq!(
        answers,
        [ServerMessage::Error {
            code: ErrorCode::CapsThrottled,
            req: Some(req),
            call: None,
            detail: String::new(),
            retry_after_ms: Some(10_000),
        }],
        "only the refusal, with the rest of the window as the hint"
    );
    assert_eq!(bob_sees_alice(&sim), caps_of(800), "not applied");
    assert!(sim.client(0).caps_in_flight(), "still to be sent");
    assert_eq!(
        sim.client(0).poll_timeout(),
        Some(started.after(Duration::from_secs(10))),
        "the client wakes when the hint allows"
    );
    // Alice's own table already uses her new capabilities.
    let bob = sim.endpoint(1).unwrap();
    assert_eq!(
        sim.client(0).peer(&bob).unwrap().params,
        negotiate_pair(&caps_of(1024), &plain_caps())
    );
    // Nothing is sent again before the window ends …
    sim.advance(Duration::from_millis(9_999));
    sim.settle().unwrap();
    assert_eq!(bob_sees_alice(&sim), caps_of(800));
    // … then the client sends its capabilities by itself, and they are applied.
    sim.advance(Duration::from_millis(1));
    sim.settle().unwrap();
    assert_eq!(bob_sees_alice(&sim), caps_of(1024));
    assert!(!sim.client(0).caps_in_flight());
    assert!(sim.client(0).poll_timeout() > Some(sim.now.after(Duration::from_secs(1))));
    let errors = sim
        .recorded_violations()
        .into_iter()
        .filter(|(i, _)| *i == 0)
        .count();
    assert_eq!(errors, 0);
}

#[test]
fn a_newer_update_caps_replaces_a_pending_retry() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_caps_updates = 1;
        limits.caps_update_window = Duration::from_secs(10);
        limits
    };
    let mut sim = alice_and_bob(limits);
    sim.command(0, |c, now| c.update_caps(caps_of(640), now))
        .unwrap();
    sim.command(0, |c, now| c.update_caps(caps_of(800), now))
        .unwrap();
    sim.settle().unwrap();
    assert_eq!(bob_sees_alice(&sim), caps_of(640));
    // The application changes its capabilities once more while the retry waits: the
    // request is refused too, and the retry that follows carries the newest.
    sim.advance(Duration::from_secs(5));
    sim.command(0, |c, now| c.update_caps(caps_of(1024), now))
        .unwrap();
    sim.settle().unwrap();
    sim.advance(Duration::from_secs(5));
    sim.settle().unwrap();
    assert_eq!(bob_sees_alice(&sim), caps_of(1024));
}

#[test]
fn update_caps_limit_off_takes_every_update() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_caps_updates = 0;
        limits
    };
    let mut sim = alice_and_bob(limits);
    for width in 0..20 {
        sim.command(0, |c, now| c.update_caps(caps_of(640 + width), now))
            .unwrap();
    }
    sim.settle().unwrap();
    assert_eq!(bob_sees_alice(&sim), caps_of(659));
    assert!(!sim.client(0).caps_in_flight());
}

#[test]
fn credential_checks_are_handed_out_one_source_at_a_time() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_auth_checks_running = 2;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    // Source A queues eight logins, then B and C one each.
    let mut conn = 0;
    let mut open = |s: &mut Server, ip: IpAddr| {
        conn += 1;
        let c = ConnId(conn);
        s.connect_from(c, Some(ip), Time(0)).unwrap();
        s.receive(c, &plain_login_frame(&format!("user{conn}"), "pw"), Time(0));
        c
    };
    let a: Vec<ConnId> = (0..8).map(|_| open(&mut s, A)).collect();
    let b = open(&mut s, B);
    let c = open(&mut s, C);
    pump(&mut s, &mut seen);
    let handed: Vec<ConnId> = seen.checks.iter().map(|(_, c)| *c).collect();
    assert_eq!(handed, [a[0], a[1]], "two at a time");
    // A check still waiting cannot be answered.
    assert_eq!(
        s.complete_auth(AuthTicket(3), AuthVerdict::Rejected, Time(1)),
        Err(ServerError::UnknownTicket(AuthTicket(3)))
    );
    // Each finished check lets the next source in turn go: B and C do not wait for
    // the rest of A's.
    let mut order = Vec::new();
    while let Some((ticket, _)) = seen.checks.first().copied() {
        seen.checks.remove(0);
        s.complete_auth(ticket, AuthVerdict::Rejected, Time(1))
            .unwrap();
        let before = seen.checks.len();
        pump(&mut s, &mut seen);
        order.extend(seen.checks[before..].iter().map(|(_, c)| *c));
    }
    assert_eq!(order, [a[2], b, c, a[3], a[4], a[5], a[6], a[7]]);
}

#[test]
fn an_abandoned_waiting_check_is_dropped_and_a_running_one_cancelled() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_auth_checks_running = 1;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    for (i, ip) in [(1, A), (2, A), (3, B)] {
        s.connect_from(ConnId(i), Some(ip), Time(0)).unwrap();
        s.receive(ConnId(i), &plain_login_frame("alice", "pw"), Time(0));
    }
    pump(&mut s, &mut seen);
    assert_eq!(seen.checks.len(), 1);
    let (first, _) = seen.checks[0];
    // The waiting check of connection 2 goes with its connection, unseen.
    s.connection_closed(ConnId(2), Time(1));
    pump(&mut s, &mut seen);
    assert!(seen.cancelled.is_empty());
    assert_eq!(seen.checks.len(), 1);
    // The running one is cancelled, and B's goes next.
    s.connection_closed(ConnId(1), Time(1));
    pump(&mut s, &mut seen);
    assert_eq!(seen.cancelled, [first]);
    assert_eq!(
        seen.checks.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [ConnId(1), ConnId(3)]
    );
}

#[test]
fn with_no_limit_on_running_checks_every_check_goes_at_once() {
    let limits = {
        let mut limits = Limits::default();
        limits.max_auth_checks_running = 0;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    for i in 1..=6 {
        s.connect_from(ConnId(i), Some(A), Time(0)).unwrap();
        s.receive(ConnId(i), &plain_login_frame("alice", "pw"), Time(0));
    }
    pump(&mut s, &mut seen);
    assert_eq!(seen.checks.len(), 6);
}

#[test]
fn per_source_limits_count_an_ipv6_peer_by_its_64_prefix() {
    let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
    assert_eq!(source_key(host(7)), host(0));
    assert_eq!(source_key(host(7)), source_key(host(0xffff)));
    let other_net = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 7));
    assert_ne!(source_key(host(7)), source_key(other_net));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    assert_eq!(source_key(mapped), A);
    assert_eq!(source_key(A), A);
    // Two connections per source: the third from the same /64 is refused, one from
    // another /64 is not.
    let limits = {
        let mut limits = Limits::default();
        limits.max_connections_per_source = 2;
        limits
    };
    let mut s = server(limits);
    let mut seen = Seen::default();
    for (i, ip) in [(1, host(1)), (2, host(2)), (3, host(3)), (4, other_net)] {
        s.connect_from(ConnId(i), Some(ip), Time(0)).unwrap();
    }
    pump(&mut s, &mut seen);
    assert_eq!(seen.closed, [ConnId(3)]);
}
