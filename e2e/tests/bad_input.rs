//! Bad input against the real server binary, from raw TCP clients (std::net::TcpStream).
//!
//! Each test asserts the spec's typed error code in the server's `error` frame (section
//! 5), whether the connection is then closed (fatal codes) or kept, and that a real
//! client logged in on another connection keeps being served throughout: its `table`
//! command still answers with its contact online, and a fresh connection's `ping` gets a
//! `pong`. Run with `--nocapture` to see every bad input and the server's answer.

use std::io::Write;
use std::time::{Duration, Instant};

use precall_e2e::*;
use precall_protocol::caps::CallDigest;
use precall_protocol::ids::{ReqId, SessionId};
use precall_protocol::{ClientMessage, Endpoint, ErrorCode, LoginWith, ServerMessage, UserId};
use serde_json::json;

/// A server, and alice and bob (real clients) online as mutual contacts.
struct World {
    sb: Sandbox,
    server: ServerProc,
    alice: ClientProc,
    _bob: ClientProc,
}

fn world(server_args: &[&str]) -> Res<World> {
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(server_args)?;
    let mut alice = sb.online_client(
        server.addr,
        "alice",
        &With::flags(&["--codecs", "h264,vp8"]),
        &[],
    )?;
    let bob = sb.online_client(server.addr, "bob", &With::Terminal("bob-phone".into()), &[])?;
    alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    Ok(World {
        sb,
        server,
        alice,
        _bob: bob,
    })
}

impl World {
    /// The server is up and the logged-in client is still served.
    fn still_served(&mut self) -> Res<()> {
        ensure!(
            self.server.is_running(),
            "the server exited; its log:\n{}",
            self.server.log_tail()
        );
        let t = self.alice.table()?;
        ensure!(
            online_row(&t, "bob").is_some(),
            "alice is still served and still holds bob: {t:?}"
        );
        let mut c = RawConn::connect(self.server.addr)?;
        c.send_msg(&ClientMessage::Ping {})?;
        let m = c.recv(TIMEOUT)?;
        ensure!(matches!(m, ServerMessage::Pong {}), "ping -> {m:?}");
        Ok(())
    }
}

/// Reads frames until an `error`; checks its code; returns its payload as text.
fn expect_error(c: &mut RawConn, code: ErrorCode) -> Res<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv_payload(left)? {
            Recv::Payload(p) => {
                let text = String::from_utf8_lossy(&p).into_owned();
                let m = precall_protocol::codec::decode_message::<ServerMessage>(&p)
                    .map_err(|e| Error(format!("undecodable answer {text:?}: {e}")))?;
                if let ServerMessage::Error { code: got, .. } = m {
                    ensure!(got == code, "expected error {code:?}, got {text}");
                    return Ok(text);
                }
            }
            Recv::Closed => bail!("closed without an error frame (expected {code:?})"),
            Recv::Timeout => bail!("no error frame within {TIMEOUT:?} (expected {code:?})"),
        }
    }
}

/// A fatal error: the error frame, then the connection closes.
fn expect_fatal(c: &mut RawConn, code: ErrorCode) -> Res<String> {
    let text = expect_error(c, code)?;
    let after = c.expect_closed(TIMEOUT)?;
    ensure!(
        after.is_empty(),
        "nothing follows a fatal error: {} frame(s)",
        after.len()
    );
    Ok(text)
}

fn report(input: &str, answer: &str) {
    eprintln!("bad input: {input}\n  -> server answered {answer}");
}

fn digest() -> CallDigest {
    let fp = caps(&["h264"], 1280, 30).fingerprint();
    CallDigest {
        caller: fp,
        callee: fp,
    }
}

fn call_msg(req: u32, user: &str, session: u64) -> Res<ClientMessage> {
    Ok(ClientMessage::Call {
        req: ReqId(req),
        to: Endpoint {
            user: UserId::new(user)?,
            session: SessionId(session),
        },
        digest: digest(),
        capabilities: None,
        media: None,
    })
}

#[test]
fn bad_input_garbage_is_malformed_and_closes_the_connection() -> Res<()> {
    let mut w = world(&[])?;
    let cases: [(&str, Vec<u8>, ErrorCode); 5] = [
        (
            "a frame of binary garbage",
            frame(b"\xff\xfe\x00garbage, not JSON \x01\x02"),
            ErrorCode::Malformed,
        ),
        (
            "an empty frame (length 0)",
            vec![0, 0, 0, 0],
            ErrorCode::Malformed,
        ),
        (
            "a message written as a JSON array",
            frame(br#"["ping"]"#),
            ErrorCode::Malformed,
        ),
        (
            "a ping with trailing bytes",
            frame(br#"{"type":"ping"} x"#),
            ErrorCode::Malformed,
        ),
        (
            "an HTTP request (its first 4 bytes read as a 1.1 GB length)",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ErrorCode::FrameTooLarge,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut c = RawConn::connect(w.server.addr)?;
        c.send_bytes(&bytes)?;
        let answer = expect_fatal(&mut c, code).map_err(|e| Error(format!("{what}: {e}")))?;
        report(what, &format!("{answer}, then closed"));
        w.still_served()?;
    }
    Ok(())
}

#[test]
fn bad_input_frame_over_the_64k_limit_is_refused_before_buffering() -> Res<()> {
    let mut w = world(&[])?;
    // Exactly 64 KiB is accepted: a ping padded with whitespace to 65,536 bytes.
    let mut payload = br#"{"type":"ping"}"#.to_vec();
    payload.resize(65_536, b' ');
    let mut c = RawConn::connect(w.server.addr)?;
    c.send_payload(&payload)?;
    let m = c.recv(TIMEOUT)?;
    ensure!(
        matches!(m, ServerMessage::Pong {}),
        "a 65,536-byte frame is accepted: {m:?}"
    );
    report("a 65,536-byte ping (the limit)", "pong");
    // One byte more is refused as soon as the header arrives: the payload is never sent.
    let mut c = RawConn::connect(w.server.addr)?;
    c.send_bytes(&65_537u32.to_be_bytes())?;
    let answer = expect_fatal(&mut c, ErrorCode::FrameTooLarge)?;
    report(
        "a header announcing 65,537 bytes, no payload",
        &format!("{answer}, then closed"),
    );
    // A huge announced length with some payload.
    let mut c = RawConn::connect(w.server.addr)?;
    let mut bytes = u32::MAX.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[b'x'; 1000]);
    c.send_bytes(&bytes)?;
    let answer = expect_fatal(&mut c, ErrorCode::FrameTooLarge)?;
    report(
        "a header announcing 4 GiB, then 1,000 bytes",
        &format!("{answer}, then closed"),
    );
    w.still_served()
}

#[test]
fn bad_input_truncated_frame_then_silence_is_closed_by_login_timeout() -> Res<()> {
    let mut w = world(&["--login-timeout-ms", "1000"])?;
    let mut c = RawConn::connect(w.server.addr)?;
    let opened = Instant::now();
    let full = frame(br#"{"type":"ping","padding":"xxxxxxxxxxxxxxxxxxxxxxxx"}"#);
    c.send_bytes(&full[..10])?;
    let answer = expect_error(&mut c, ErrorCode::LoginTimeout)?;
    let after = opened.elapsed();
    c.expect_closed(TIMEOUT)?;
    ensure!(
        after >= Duration::from_millis(900) && after <= Duration::from_millis(3000),
        "closed {after:?} after opening, with --login-timeout-ms 1000"
    );
    report(
        "10 bytes of a 58-byte frame, then silence (--login-timeout-ms 1000)",
        &format!("{answer} after {} ms, then closed", after.as_millis()),
    );
    w.still_served()
}

#[test]
fn bad_input_unknown_version_is_unsupported_version() -> Res<()> {
    let mut w = world(&[])?;
    let mut c = RawConn::connect(w.server.addr)?;
    c.send_json(&json!({
        "type": "login", "version": 2, "user": "alice", "password": password("alice"),
        "with": {"terminal_id": "bob-phone"}, "something_new": [1, 2, 3]
    }))?;
    let answer = expect_fatal(&mut c, ErrorCode::UnsupportedVersion)?;
    report(
        "login with \"version\":2",
        &format!("{answer}, then closed"),
    );
    w.still_served()
}

#[test]
fn bad_input_requests_before_login_are_not_logged_in_and_not_fatal() -> Res<()> {
    let mut w = world(&[])?;
    let mut c = RawConn::connect(w.server.addr)?;
    c.send_msg(&call_msg(9, "bob", 2)?)?;
    let answer = expect_error(&mut c, ErrorCode::NotLoggedIn)?;
    let m = precall_protocol::codec::decode_message::<ServerMessage>(answer.as_bytes())
        .map_err(|e| Error(e.to_string()))?;
    ensure!(
        matches!(
            m,
            ServerMessage::Error {
                req: Some(ReqId(9)),
                ..
            }
        ),
        "the error echoes the request's tag: {answer}"
    );
    report("a call before login", &answer);
    c.send_json(&json!({"type": "hangup", "call": 3}))?;
    let answer = expect_error(&mut c, ErrorCode::NotLoggedIn)?;
    report("a hangup before login", &answer);
    c.send_json(&json!({"type": "teleport", "to": "mars"}))?;
    let answer = expect_error(&mut c, ErrorCode::UnknownMessage)?;
    report("an unknown message type", &answer);
    // None of these is fatal: the connection still answers, and can still log in.
    c.send_msg(&ClientMessage::Ping {})?;
    let m = c.recv(TIMEOUT)?;
    ensure!(matches!(m, ServerMessage::Pong {}), "{m:?}");
    let (ok, _) = c.login(
        "carol",
        &password("carol"),
        LoginWith::Capabilities(caps(&["vp8"], 1280, 30)),
    )?;
    ensure!(matches!(ok, ServerMessage::LoginOk { .. }), "{ok:?}");
    c.send_msg(&login_msg(
        "carol",
        &password("carol"),
        with_terminal("x")?,
    )?)?;
    let answer = expect_error(&mut c, ErrorCode::AlreadyLoggedIn)?;
    report("a second login on a logged-in connection", &answer);
    w.still_served()
}

#[test]
fn bad_input_wrong_password_and_unknown_user_are_bad_credentials() -> Res<()> {
    let mut w = world(&[])?;
    let mut answers = Vec::new();
    for (user, pw) in [("alice", "not-her-password"), ("zed", "whatever-pw")] {
        let mut c = RawConn::connect(w.server.addr)?;
        c.send_msg(&login_msg(
            user,
            pw,
            LoginWith::Capabilities(caps(&["h264"], 640, 15)),
        )?)?;
        let answer = expect_fatal(&mut c, ErrorCode::BadCredentials)?;
        report(
            &format!("login as {user} with a wrong password"),
            &format!("{answer}, then closed"),
        );
        answers.push(answer);
    }
    ensure!(
        answers[0] == answers[1],
        "unknown user and wrong password are indistinguishable: {answers:?}"
    );
    // alice's real session was not disturbed by a failed login as alice.
    w.still_served()
}

#[test]
fn bad_input_unknown_terminal_identifier_is_unknown_terminal() -> Res<()> {
    let mut w = world(&[])?;
    for (user, id) in [("carol", "no-such-terminal"), ("carol", "bob-phone")] {
        let mut c = RawConn::connect(w.server.addr)?;
        c.send_msg(&login_msg(user, &password(user), with_terminal(id)?)?)?;
        let answer = expect_fatal(&mut c, ErrorCode::UnknownTerminal)?;
        report(
            &format!("{user} logs in with terminal id {id:?}"),
            &format!("{answer}, then closed"),
        );
    }
    w.still_served()
}

#[test]
fn bad_input_calls_to_a_non_contact_and_an_offline_contact_are_identical_not_reachable() -> Res<()>
{
    let mut w = world(&[])?;
    // carol is online (a real client); bob does not list her.
    let carol = w.sb.online_client(
        w.server.addr,
        "carol",
        &With::flags(&["--codecs", "vp8"]),
        &[],
    )?;
    let carol_session = carol.session().unwrap_or(0);
    // A raw terminal of bob (a second session of bob, with capabilities).
    let mut bob = RawConn::connect(w.server.addr)?;
    bob.login(
        "bob",
        &password("bob"),
        LoginWith::Capabilities(phone_caps()),
    )?;
    // An offline contact: alice's session from a login that has ended.
    let mut gone = RawConn::connect(w.server.addr)?;
    let (ok, _) = gone.login(
        "alice",
        &password("alice"),
        LoginWith::Capabilities(phone_caps()),
    )?;
    let ServerMessage::LoginOk {
        session: gone_session,
        ..
    } = ok
    else {
        bail!("{ok:?}")
    };
    gone.send_msg(&ClientMessage::Logout {})?;
    gone.expect_closed(TIMEOUT)?;

    let cases = [
        (
            "a call to a non-contact who is online (carol)",
            "carol",
            carol_session,
        ),
        (
            "a call to an offline contact (alice's ended session)",
            "alice",
            gone_session.0,
        ),
        ("a call to a user who does not exist", "zed", 1),
        ("a call to bob's own user", "bob", 2),
    ];
    let mut answers = Vec::new();
    for (what, user, session) in cases {
        bob.send_msg(&call_msg(5, user, session)?)?;
        let answer = expect_error(&mut bob, ErrorCode::NotReachable)?;
        report(what, &answer);
        answers.push(answer);
    }
    ensure!(
        answers.iter().all(|a| *a == answers[0]),
        "not_reachable is answered identically in every case: {answers:?}"
    );
    ensure!(
        answers[0] == r#"{"type":"error","code":"not_reachable","req":5}"#,
        "{}",
        answers[0]
    );
    // Not fatal.
    bob.send_msg(&ClientMessage::Ping {})?;
    let m = bob.recv_until(|m| matches!(m, ServerMessage::Pong {}), TIMEOUT)?;
    ensure!(matches!(m, ServerMessage::Pong {}), "{m:?}");
    w.still_served()
}

/// Writes `n` pings in one write (from a second thread, while this one reads) and
/// counts the pongs. Returns (pongs, closed, elapsed).
fn flood(addr: std::net::SocketAddr, n: usize) -> Res<(usize, bool, Duration)> {
    let one = frame(br#"{"type":"ping"}"#);
    let bytes: Vec<u8> = one.iter().copied().cycle().take(one.len() * n).collect();
    let mut c = RawConn::connect(addr)?;
    let mut writer = c.try_clone_stream()?;
    let started = Instant::now();
    let handle = std::thread::spawn(move || writer.write_all(&bytes));
    let mut pongs = 0usize;
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while pongs < n && Instant::now() < deadline {
        match c.recv_payload(Duration::from_secs(5))? {
            Recv::Payload(p) => {
                ensure!(
                    p == br#"{"type":"pong"}"#,
                    "{:?}",
                    String::from_utf8_lossy(&p)
                );
                pongs += 1;
            }
            Recv::Closed => {
                closed = true;
                break;
            }
            Recv::Timeout => break,
        }
    }
    let elapsed = started.elapsed();
    drop(c);
    let _ = handle.join();
    Ok((pongs, closed, elapsed))
}

const FLOOD: usize = 10_000;

/// With the default outbound queue (`--queue-frames`, 8192 frames), 10,000 pings in one
/// write are answered in full: the server reads a connection's next chunk only once its
/// outbound queue has room for that chunk's answers, so a flood is slowed down by TCP
/// flow control instead of overflowing the flooder's queue. Every other connection is
/// served meanwhile.
#[test]
fn bad_input_flood_of_ten_thousand_pings_leaves_the_server_up_and_others_served() -> Res<()> {
    // The frame rate (100/s by default) would spread the flood over 100 s: off, the
    // whole flood meets the output queue at once.
    let mut w = world(&["--max-frames-per-second", "0"])?;
    let (pongs, closed, elapsed) = flood(w.server.addr, FLOOD)?;
    report(
        &format!(
            "{FLOOD} pings in one write ({} bytes), default queue",
            FLOOD * 19
        ),
        &format!("{pongs} pongs in {} ms", elapsed.as_millis()),
    );
    ensure!(
        pongs == FLOOD && !closed,
        "every ping answered on an open connection: {pongs} pongs, closed: {closed}"
    );
    w.still_served()
}

/// A tiny queue (40 frames): the same flood is still answered in full, in order.
#[test]
fn bad_input_flood_with_a_tiny_queue_is_throttled_not_dropped() -> Res<()> {
    let mut w = world(&["--queue-frames", "40", "--max-frames-per-second", "0"])?;
    let (pongs, closed, elapsed) = flood(w.server.addr, 2_000)?;
    report(
        "2000 pings in one write, --queue-frames 40",
        &format!("{pongs} pongs in {} ms", elapsed.as_millis()),
    );
    ensure!(
        pongs == 2_000 && !closed,
        "every ping answered: {pongs} pongs, closed: {closed}"
    );
    w.still_served()
}

/// With room in the queue for every answer, every one of 10,000 pings sent in one write
/// is answered, in order, on the same connection.
#[test]
fn bad_input_flood_of_ten_thousand_pings_is_answered_in_full() -> Res<()> {
    let mut w = world(&["--queue-frames", "20000", "--max-frames-per-second", "0"])?;
    let (pongs, closed, elapsed) = flood(w.server.addr, FLOOD)?;
    report(
        &format!("{FLOOD} pings in one write, --queue-frames 20000"),
        &format!("{pongs} pongs in {} ms", elapsed.as_millis()),
    );
    ensure!(
        pongs == FLOOD && !closed,
        "every ping answered: {pongs} of {FLOOD}, closed: {closed}"
    );
    w.still_served()
}

// ----- abuse limits (spec section 13.6), each set by a flag and hit through sockets ---

/// The `retry_after_ms` of an error payload.
fn retry_after(text: &str) -> Res<u64> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error(format!("{text}: {e}")))?;
    v["retry_after_ms"]
        .as_u64()
        .ok_or_else(|| Error(format!("no retry_after_ms in {text}")))
}

fn raw_login(addr: std::net::SocketAddr, user: &str, pw: &str) -> Res<RawConn> {
    let mut c = RawConn::connect(addr)?;
    c.send_msg(&login_msg(
        user,
        pw,
        LoginWith::Capabilities(caps(&["h264"], 640, 15)),
    )?)?;
    Ok(c)
}

#[test]
fn limit_failed_logins_throttle_the_account_with_a_retry_hint() -> Res<()> {
    let mut w = world(&["--max-login-failures-per-account", "3"])?;
    for _ in 0..3 {
        let mut c = raw_login(w.server.addr, "carol", "wrong-password")?;
        expect_fatal(&mut c, ErrorCode::BadCredentials)?;
    }
    // Now even the right password is refused, with the time left in the window.
    let mut c = raw_login(w.server.addr, "carol", &password("carol"))?;
    let text = expect_fatal(&mut c, ErrorCode::LoginThrottled)?;
    let wait = retry_after(&text)?;
    ensure!(wait > 50_000 && wait <= 60_000, "retry after {wait} ms");
    report("a fourth login as carol after three wrong passwords", &text);
    w.still_served()
}

#[test]
fn limit_failed_logins_throttle_the_source_address() -> Res<()> {
    let mut w = world(&[
        "--max-login-failures-per-account",
        "0",
        "--max-login-failures-per-source",
        "2",
    ])?;
    for user in ["zed", "yan"] {
        let mut c = raw_login(w.server.addr, user, "guess")?;
        expect_fatal(&mut c, ErrorCode::BadCredentials)?;
    }
    let mut c = raw_login(w.server.addr, "carol", &password("carol"))?;
    let text = expect_fatal(&mut c, ErrorCode::LoginThrottled)?;
    retry_after(&text)?;
    report("a login from 127.0.0.1 after two failures from it", &text);
    w.still_served()
}

#[test]
fn limit_connections_per_source() -> Res<()> {
    // alice and bob hold two connections from 127.0.0.1.
    let mut w = world(&["--max-connections-per-source", "4"])?;
    let held: Vec<RawConn> = (0..2)
        .map(|_| RawConn::connect(w.server.addr))
        .collect::<Res<_>>()?;
    let mut c = RawConn::connect(w.server.addr)?;
    let text = expect_fatal(&mut c, ErrorCode::TooManyConnections)?;
    retry_after(&text)?;
    report("a fifth connection from 127.0.0.1", &text);
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    w.still_served()
}

#[test]
fn limit_accept_rate_turns_a_reconnect_storm_away() -> Res<()> {
    let mut w = world(&["--max-accepts-per-second", "5"])?;
    std::thread::sleep(Duration::from_millis(1_100));
    let mut conns: Vec<RawConn> = (0..12)
        .map(|_| RawConn::connect(w.server.addr))
        .collect::<Res<_>>()?;
    let mut refused = 0;
    for c in &mut conns {
        c.send_msg(&ClientMessage::Ping {})?;
        match c.recv(TIMEOUT)? {
            ServerMessage::Pong {} => {}
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(ms),
                ..
            } if ms <= 1_000 => refused += 1,
            other => return Err(Error(format!("unexpected {other:?}"))),
        }
    }
    ensure!(refused >= 6, "only {refused} of 12 turned away");
    report(
        "12 connections within a second, 5 allowed",
        &format!("{refused} rate_limited"),
    );
    drop(conns);
    std::thread::sleep(Duration::from_millis(1_100));
    w.still_served()
}

#[test]
fn limit_capability_document_size() -> Res<()> {
    let mut w = world(&["--max-caps-bytes", "300"])?;
    let big: Vec<String> = (0..16).map(|i| format!("codec-{i:09}")).collect();
    let big: Vec<&str> = big.iter().map(String::as_str).collect();
    let mut c = RawConn::connect(w.server.addr)?;
    c.send_msg(&login_msg(
        "carol",
        &password("carol"),
        LoginWith::Capabilities(caps(&big, 640, 15)),
    )?)?;
    let text = expect_fatal(&mut c, ErrorCode::CapsTooLarge)?;
    report(
        "a login with a 16-codec capability document, 300 bytes allowed",
        &text,
    );
    w.still_served()
}
