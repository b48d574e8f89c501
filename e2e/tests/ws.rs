//! The WebSocket binding (spec section 3.7) between the real binaries: `precall-server
//! serve --ws-listen 127.0.0.1:0` with raw WebSocket clients ([`WsConn`], speaking the
//! binding as a browser page would: one frame per binary message, subprotocol
//! `precall.v1`) next to real `precall-client` processes over TCP.
//!
//! - two users log in over WebSocket and the online push carries the capabilities;
//! - a fast-path call each way between a WebSocket user and a TCP client;
//! - handshakes without the subprotocol, from another origin, or for another path are
//!   refused with an HTTP status before any upgrade;
//! - text messages, binary messages that are not exactly one frame and messages over
//!   the frame limit are answered as the framing errors they are (`malformed`,
//!   `frame_too_large`, then a close), while other sessions keep working;
//! - the core's limits cover WebSocket connections (connections per source), and a
//!   WebSocket ping does not keep an idle session open where a precall `ping` does;
//! - the static files of `--web-root`, and `..`, encoded `..`, symbolic links and hidden
//!   files refused;
//! - `wss://` with a certificate generated at test time (rcgen), next to a TLS client.
//!
//! Every WebSocket message the server sends is checked to be exactly one frame
//! ([`WsConn::recv_payload`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use precall_e2e::*;
use precall_protocol::caps::CallDigest;
use precall_protocol::ids::{ReqId, SessionId};
use precall_protocol::{
    Capabilities, ClientMessage, Endpoint, ErrorCode, LoginWith, ServerMessage, UserId,
};
use serde_json::json;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

fn alice_caps() -> Capabilities {
    caps(&["h264", "vp8"], 1920, 30)
}

fn carol_caps() -> Capabilities {
    caps(&["vp8"], 1280, 25)
}

/// The usual cast and a server with a WebSocket port.
struct World {
    sb: Sandbox,
    server: ServerProc,
    ws: SocketAddr,
}

fn world(extra: &[&str]) -> Res<World> {
    let sb = Sandbox::with_cast()?;
    let mut args = vec!["--ws-listen", "127.0.0.1:0"];
    args.extend(extra);
    let server = sb.start_server(&args)?;
    let ws = server
        .ws_addr
        .ok_or_else(|| Error("no ws listening line".into()))?;
    Ok(World { sb, server, ws })
}

impl World {
    /// A WebSocket connection logged in as `user`.
    fn ws_login(
        &self,
        user: &str,
        with: LoginWith,
    ) -> Res<(WsConn, ServerMessage, Vec<ServerMessage>)> {
        let mut c = WsConn::connect(self.ws)?;
        let (ok, snap) = c.login(user, &password(user), with)?;
        Ok((c, ok, snap))
    }

    /// alice as a real client over TCP, logged in with her capabilities.
    fn alice_over_tcp(&self) -> Res<ClientProc> {
        let file = self.sb.write_caps("alice.json", &alice_caps())?;
        self.sb
            .online_client(self.server.addr, "alice", &With::CapsFile(file), &[])
    }

    fn running(&mut self) -> Res<()> {
        ensure!(
            self.server.is_running(),
            "the server exited; its log:\n{}",
            self.server.log_tail()
        );
        Ok(())
    }
}

fn session_of(m: &ServerMessage) -> Res<SessionId> {
    match m {
        ServerMessage::LoginOk { session, .. } => Ok(*session),
        other => bail!("not a login_ok: {other:?}"),
    }
}

fn online_of<'a>(
    m: &'a ServerMessage,
    user: &str,
) -> Option<&'a precall_protocol::message::Presence> {
    match m {
        ServerMessage::Online(p) if p.user.as_str() == user => Some(p),
        _ => None,
    }
}

/// Reads until an `error`; checks its code; then the server must close, with a
/// WebSocket Close frame of `close` (the binding's status code).
fn expect_fatal(c: &mut WsConn, code: ErrorCode, close: Option<CloseCode>) -> Res<String> {
    let m = c.recv_until(|m| matches!(m, ServerMessage::Error { .. }), TIMEOUT)?;
    let ServerMessage::Error {
        code: got, detail, ..
    } = &m
    else {
        bail!("{m:?}")
    };
    ensure!(*got == code, "expected error {code:?}, got {m:?}");
    let after = c.expect_closed(TIMEOUT)?;
    ensure!(after.is_empty(), "nothing follows a fatal error: {after:?}");
    if let Some(close) = close {
        let frame = c.close.as_ref().map(|f| f.code);
        ensure!(
            frame == Some(close),
            "the Close frame's code is {frame:?}, expected {close:?} ({:?})",
            c.close
        );
    }
    Ok(detail.clone())
}

#[test]
fn two_users_log_in_over_websocket_and_the_online_push_carries_capabilities() -> Res<()> {
    let mut w = world(&[])?;
    let mut alice = WsConn::connect(w.ws)?;
    ensure!(
        alice.protocol.as_deref() == Some(WS_SUBPROTOCOL),
        "the server selects precall.v1: {:?}",
        alice.protocol
    );
    let (ok, snap) = alice.login(
        "alice",
        &password("alice"),
        LoginWith::Capabilities(alice_caps()),
    )?;
    let ServerMessage::LoginOk {
        user,
        capabilities,
        contacts,
        ..
    } = &ok
    else {
        bail!("{ok:?}")
    };
    ensure!(
        user.as_str() == "alice" && *capabilities == alice_caps(),
        "{ok:?}"
    );
    let names: Vec<&str> = contacts.iter().map(UserId::as_str).collect();
    ensure!(names == ["bob", "carol"], "alice's contacts: {names:?}");
    ensure!(snap.is_empty(), "nobody else online yet: {snap:?}");

    // bob by his registered terminal: his snapshot holds alice with her capabilities,
    // and alice is pushed bob's registered capabilities.
    let (mut bob, bob_ok, bob_snap) = w.ws_login("bob", with_terminal("bob-phone")?)?;
    let bob_session = session_of(&bob_ok)?;
    ensure!(
        bob_snap.len() == 1
            && online_of(&bob_snap[0], "alice").is_some_and(|p| p.capabilities == alice_caps()),
        "bob's snapshot: alice online with her capabilities: {bob_snap:?}"
    );
    let m = alice.recv(TIMEOUT)?;
    let p =
        online_of(&m, "bob").ok_or_else(|| Error(format!("expected online for bob, got {m:?}")))?;
    ensure!(
        p.session == bob_session && p.capabilities == phone_caps(),
        "the push names bob's session and carries his capabilities: {m:?}"
    );

    // The protocol's own keepalive over the binding.
    alice.send_msg(&ClientMessage::Ping {})?;
    let m = alice.recv(TIMEOUT)?;
    ensure!(matches!(m, ServerMessage::Pong {}), "ping -> {m:?}");

    // bob logs out: logged_out, a normal Close, and alice is told.
    bob.send_msg(&ClientMessage::Logout {})?;
    let m = bob.recv(TIMEOUT)?;
    ensure!(matches!(m, ServerMessage::LoggedOut {}), "{m:?}");
    bob.expect_closed(TIMEOUT)?;
    ensure!(
        bob.close.as_ref().map(|f| f.code) == Some(CloseCode::Normal),
        "a normal close after logout: {:?}",
        bob.close
    );
    let m = alice.recv(TIMEOUT)?;
    ensure!(
        matches!(&m, ServerMessage::Offline(e) if e.user.as_str() == "bob" && e.session == bob_session),
        "alice is told bob went offline: {m:?}"
    );
    w.running()
}

#[test]
fn a_fast_path_call_between_a_websocket_user_and_a_tcp_client() -> Res<()> {
    let mut w = world(&[])?;
    let mut alice = w.alice_over_tcp()?;
    let alice_session = alice
        .session()
        .ok_or_else(|| Error("alice has no session".into()))?;
    let (mut bob, bob_ok, bob_snap) = w.ws_login("bob", with_terminal("bob-phone")?)?;
    let bob_session = session_of(&bob_ok)?;
    ensure!(
        bob_snap.iter().any(|m| online_of(m, "alice")
            .is_some_and(|p| p.capabilities == alice_caps() && p.session.0 == alice_session)),
        "bob (WebSocket) holds alice (TCP) with her capabilities: {bob_snap:?}"
    );
    let ev = alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    let alice_params = params_json(&alice_caps(), &phone_caps());
    ensure!(
        params_of(&ev) == alice_params,
        "alice pre-computed her parameters for bob from the push: {ev}"
    );

    // alice (TCP) calls bob (WebSocket): the digest names both fingerprints and no
    // capabilities cross the wire; bob accepts as is.
    alice.send(json!({"cmd": "call", "to": "bob"}))?;
    let ring = alice.wait_event("call_ringing")?;
    let m = bob.recv_until(|m| matches!(m, ServerMessage::CallIncoming { .. }), TIMEOUT)?;
    let ServerMessage::CallIncoming {
        call,
        from,
        digest,
        capabilities,
        media: _,
    } = &m
    else {
        bail!("{m:?}")
    };
    ensure!(
        from.user.as_str() == "alice" && from.session.0 == alice_session,
        "the call is from alice's terminal: {m:?}"
    );
    ensure!(
        *digest
            == CallDigest {
                caller: alice_caps().fingerprint(),
                callee: phone_caps().fingerprint(),
            }
            && capabilities.is_none(),
        "fast path: the digest names both capability sets, none on the wire: {m:?}"
    );
    ensure!(
        ring["call"] == json!(call.0),
        "the same call: {ring} vs {m:?}"
    );
    bob.send_msg(&ClientMessage::Accept {
        call: *call,
        capabilities: None,
        media: None,
    })?;
    let est = alice.wait_event_where("call_established", |v| v["call"] == json!(call.0))?;
    ensure!(
        est["path"] == "fast" && params_of(&est) == alice_params,
        "alice's call is up on the fast path with her pre-computed parameters: {est}"
    );
    alice.send(json!({"cmd": "hangup", "call": call.0}))?;
    let m = bob.recv_until(|m| matches!(m, ServerMessage::CallEnded { .. }), TIMEOUT)?;
    ensure!(
        matches!(&m, ServerMessage::CallEnded { call: c, .. } if c == call),
        "{m:?}"
    );

    // bob (WebSocket) calls alice (TCP) on the fast path.
    bob.send_msg(&ClientMessage::Call {
        req: ReqId(7),
        to: Endpoint {
            user: UserId::new("alice")?,
            session: SessionId(alice_session),
        },
        digest: CallDigest {
            caller: phone_caps().fingerprint(),
            callee: alice_caps().fingerprint(),
        },
        capabilities: None,
        media: None,
    })?;
    let m = bob.recv_until(|m| matches!(m, ServerMessage::CallRinging { .. }), TIMEOUT)?;
    let ServerMessage::CallRinging { req, call } = m else {
        bail!("{m:?}")
    };
    ensure!(req == ReqId(7), "the request's tag is echoed: {req:?}");
    let inc = alice.wait_event_where("incoming_call", |v| v["call"] == json!(call.0))?;
    ensure!(
        inc["from"] == format!("bob/{}", bob_session.0) && params_of(&inc) == alice_params,
        "alice sees bob's call with the parameters she holds for him: {inc}"
    );
    alice.send(json!({"cmd": "answer", "call": call.0}))?;
    let m = bob.recv_until(|m| matches!(m, ServerMessage::CallAccepted { .. }), TIMEOUT)?;
    ensure!(
        matches!(&m, ServerMessage::CallAccepted { call: c, capabilities: None, media: _ } if *c == call),
        "accepted on the fast path (no capabilities): {m:?}"
    );
    let est = alice.wait_event_where("call_established", |v| v["call"] == json!(call.0))?;
    ensure!(est["path"] == "fast", "{est}");
    bob.send_msg(&ClientMessage::Hangup { call })?;
    alice.wait_event_where("call_ended", |v| v["call"] == json!(call.0))?;
    w.running()
}

#[test]
fn handshakes_without_the_subprotocol_or_from_another_origin_are_refused() -> Res<()> {
    let mut w = world(&["--ws-allow-origin", "https://app.example.org"])?;
    let port = w.ws.port();
    let try_hs = |hs: WsHandshake| WsConn::try_handshake(w.ws, &hs);
    let refused = |hs: WsHandshake, status: u16| -> Res<String> {
        match try_hs(hs.clone())? {
            Ok(c) => bail!("{hs:?} was accepted (protocol {:?})", c.protocol),
            Err(r) => {
                ensure!(r.status == status, "{hs:?}: expected {status}, got {r:?}");
                Ok(r.body)
            }
        }
    };
    let accepted = |hs: WsHandshake| -> Res<WsConn> {
        match try_hs(hs.clone())? {
            Ok(c) => {
                ensure!(
                    c.protocol.as_deref() == Some(WS_SUBPROTOCOL),
                    "{hs:?}: selected {:?}",
                    c.protocol
                );
                Ok(c)
            }
            Err(r) => bail!("{hs:?} was refused: {r:?}"),
        }
    };
    let base = WsHandshake::default;

    let body = refused(
        WsHandshake {
            protocols: None,
            ..base()
        },
        400,
    )?;
    ensure!(
        body.contains("precall.v1"),
        "the refusal names the subprotocol: {body:?}"
    );
    refused(
        WsHandshake {
            protocols: Some("chat".into()),
            ..base()
        },
        400,
    )?;
    refused(
        WsHandshake {
            protocols: Some("precall.v2".into()),
            ..base()
        },
        400,
    )?;
    accepted(WsHandshake {
        protocols: Some("chat, precall.v1".into()),
        ..base()
    })?;

    let body = refused(
        WsHandshake {
            origin: Some("https://evil.example".into()),
            ..base()
        },
        403,
    )?;
    ensure!(body.contains("origin"), "{body:?}");
    // The server's own origin has the connection's scheme: https is another origin.
    refused(
        WsHandshake {
            origin: Some(format!("https://127.0.0.1:{port}")),
            ..base()
        },
        403,
    )?;
    accepted(WsHandshake {
        origin: Some("https://app.example.org".into()),
        ..base()
    })?;
    accepted(WsHandshake {
        origin: Some(format!("http://127.0.0.1:{port}")),
        ..base()
    })?;
    refused(
        WsHandshake {
            path: "/chat".into(),
            ..base()
        },
        404,
    )?;

    // A plain GET of the endpoint is not a WebSocket handshake.
    let (status, _, _) = http(w.ws, "GET /precall HTTP/1.1\r\nHost: x\r\n\r\n")?;
    ensure!(status == 400, "plain GET /precall: {status}");

    // Nothing above got in; a proper client still does, and logs in.
    let mut c = accepted(base())?;
    c.login(
        "carol",
        &password("carol"),
        LoginWith::Capabilities(carol_caps()),
    )?;
    w.running()
}

#[test]
fn bad_messages_are_framing_errors_while_other_sessions_keep_working() -> Res<()> {
    /// The server runs, bob (WebSocket) is answered, alice (TCP) still holds him.
    fn still_served(
        w: &mut World,
        bob: &mut WsConn,
        alice: &mut ClientProc,
        what: &str,
    ) -> Res<()> {
        w.running()?;
        bob.send_msg(&ClientMessage::Ping {})?;
        let m = bob.recv(TIMEOUT)?;
        ensure!(
            matches!(m, ServerMessage::Pong {}),
            "after {what}: bob's ping -> {m:?}"
        );
        let t = alice.table()?;
        ensure!(
            online_row(&t, "bob").is_some(),
            "after {what}: alice (TCP) still holds bob (WebSocket): {t:?}"
        );
        eprintln!("bad input over WebSocket: {what}: others keep working");
        Ok(())
    }

    let mut w = world(&[])?;
    let mut alice = w.alice_over_tcp()?;
    let (mut bob, _, _) = w.ws_login("bob", with_terminal("bob-phone")?)?;
    alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    let ping = frame(br#"{"type":"ping"}"#);

    let cases: Vec<(&str, Message, ErrorCode, CloseCode)> = vec![
        (
            "a text message",
            Message::text(r#"{"type":"ping"}"#),
            ErrorCode::Malformed,
            CloseCode::Unsupported,
        ),
        (
            "two frames in one message",
            Message::binary([ping.clone(), ping.clone()].concat()),
            ErrorCode::Malformed,
            CloseCode::Protocol,
        ),
        (
            "a partial frame",
            Message::binary(ping[..ping.len() - 3].to_vec()),
            ErrorCode::Malformed,
            CloseCode::Protocol,
        ),
        (
            "a frame with a trailing byte",
            Message::binary([ping.clone(), vec![b' ']].concat()),
            ErrorCode::Malformed,
            CloseCode::Protocol,
        ),
        (
            "two bytes",
            Message::binary(vec![0, 1]),
            ErrorCode::Malformed,
            CloseCode::Protocol,
        ),
        (
            "an empty binary message",
            Message::binary(Vec::new()),
            ErrorCode::Malformed,
            CloseCode::Protocol,
        ),
        (
            "a message over the frame limit",
            Message::binary(frame(&vec![b' '; 70_000])),
            ErrorCode::FrameTooLarge,
            CloseCode::Size,
        ),
    ];
    for (what, message, code, close) in cases {
        let mut c = WsConn::connect(w.ws)?;
        c.send_message(message)?;
        let detail = expect_fatal(&mut c, code, Some(close))?;
        eprintln!("{what}: {code:?} ({detail}), Close {:?}", c.close);
        still_served(&mut w, &mut bob, &mut alice, what)?;
    }

    // Fragmentation is the WebSocket's business: a ping in three fragments is a ping ...
    let mut c = WsConn::connect(w.ws)?;
    let (a, rest) = ping.split_at(2);
    let (b, z) = rest.split_at(5);
    c.send_message(Message::Frame(Frame::message(
        a.to_vec(),
        OpCode::Data(Data::Binary),
        false,
    )))?;
    c.send_message(Message::Frame(Frame::message(
        b.to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))?;
    c.send_message(Message::Frame(Frame::message(
        z.to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))?;
    let m = c.recv(TIMEOUT)?;
    ensure!(
        matches!(m, ServerMessage::Pong {}),
        "a fragmented ping -> {m:?}"
    );
    // ... but fragments add up: 2 x 40,000 bytes are over the limit.
    let big = frame(&vec![b' '; 80_000]);
    let (a, z) = big.split_at(40_000);
    c.send_message(Message::Frame(Frame::message(
        a.to_vec(),
        OpCode::Data(Data::Binary),
        false,
    )))?;
    c.send_message(Message::Frame(Frame::message(
        z.to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))?;
    expect_fatal(&mut c, ErrorCode::FrameTooLarge, Some(CloseCode::Size))?;
    still_served(
        &mut w,
        &mut bob,
        &mut alice,
        "a fragmented message over the limit",
    )?;

    // Within one whole frame the core decides, as on TCP.
    for (what, bytes) in [
        ("an empty frame", vec![0, 0, 0, 0]),
        ("a frame of garbage", frame(b"\xff\xfe garbage")),
    ] {
        let mut c = WsConn::connect(w.ws)?;
        c.send_bytes(&bytes)?;
        expect_fatal(&mut c, ErrorCode::Malformed, Some(CloseCode::Normal))?;
        still_served(&mut w, &mut bob, &mut alice, what)?;
    }
    let mut c = WsConn::connect(w.ws)?;
    c.send_bytes(&frame(br#"{"type":"teleport"}"#))?;
    let m = c.recv(TIMEOUT)?;
    ensure!(
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::UnknownMessage,
                ..
            }
        ),
        "an unknown type is not fatal: {m:?}"
    );
    c.send_msg(&ClientMessage::Ping {})?;
    ensure!(
        matches!(c.recv(TIMEOUT)?, ServerMessage::Pong {}),
        "still open after unknown_message"
    );

    // A logged-in session that sends text is ended like one that sends garbage on TCP:
    // its contacts see it go offline.
    let (mut carol, carol_ok, _) = w.ws_login("carol", LoginWith::Capabilities(carol_caps()))?;
    alice.wait_event_where("peer_online", |v| v["user"] == "carol")?;
    carol.send_message(Message::text("hello"))?;
    expect_fatal(
        &mut carol,
        ErrorCode::Malformed,
        Some(CloseCode::Unsupported),
    )?;
    let off = alice.wait_event_where("peer_offline", |v| v["user"] == "carol")?;
    ensure!(
        off["session"] == json!(session_of(&carol_ok)?.0),
        "carol's session ended: {off}"
    );
    still_served(
        &mut w,
        &mut bob,
        &mut alice,
        "a logged-in session's text message",
    )
}

#[test]
fn limits_cover_websocket_connections_and_only_precall_pings_keep_a_session() -> Res<()> {
    let idle = Duration::from_millis(1500);
    let mut w = world(&[
        "--max-connections-per-source",
        "3",
        "--idle-timeout-ms",
        "1500",
        "--resume-grace-ms",
        "0",
    ])?;
    let (mut alice, _, _) = w.ws_login("alice", LoginWith::Capabilities(alice_caps()))?;
    let (mut bob, _, _) = w.ws_login("bob", with_terminal("bob-phone")?)?;
    let mut waiting = WsConn::connect(w.ws)?;

    // A fourth connection from 127.0.0.1 is one too many, WebSocket or not.
    let mut fourth = WsConn::connect(w.ws)?;
    expect_fatal(&mut fourth, ErrorCode::TooManyConnections, None)?;
    // A static request counts too: refused by the same limit.
    let (status, _, _) = http(w.ws, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    ensure!(status == 503, "a fourth connection for a file: {status}");
    // Once one closes, there is room again.
    waiting.send_message(Message::Close(None))?;
    waiting.expect_closed(TIMEOUT)?;
    let deadline = Instant::now() + TIMEOUT;
    let mut fifth = loop {
        let mut c = WsConn::connect(w.ws)?;
        c.send_msg(&ClientMessage::Ping {})?;
        match c.recv(TIMEOUT) {
            Ok(ServerMessage::Pong {}) => break c,
            other => {
                ensure!(
                    Instant::now() < deadline,
                    "no room after a close: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    fifth.send_message(Message::Close(None))?;

    // alice sends only WebSocket pings (answered with pongs by the WebSocket layer),
    // bob sends precall pings: alice is closed idle_timeout, bob is kept.
    let started = Instant::now();
    let mut alice_end = None;
    let mut bob_saw_alice_offline = false;
    while started.elapsed() < idle * 2 {
        if alice_end.is_none() {
            alice.send_message(Message::Ping(b"hi".to_vec().into()))?;
        }
        bob.send_msg(&ClientMessage::Ping {})?;
        loop {
            match bob.recv(TIMEOUT)? {
                ServerMessage::Pong {} => break,
                ServerMessage::Offline(e) if e.user.as_str() == "alice" => {
                    bob_saw_alice_offline = true
                }
                other => bail!("bob got {other:?}"),
            }
        }
        if alice_end.is_none() {
            match alice.recv_payload(Duration::from_millis(250))? {
                Recv::Payload(p) => {
                    let m = precall_protocol::codec::decode_message::<ServerMessage>(&p)
                        .map_err(|e| Error(e.to_string()))?;
                    if matches!(
                        m,
                        ServerMessage::Error {
                            code: ErrorCode::IdleTimeout,
                            ..
                        }
                    ) {
                        alice_end = Some(started.elapsed());
                    }
                }
                Recv::Closed => bail!("alice closed without idle_timeout"),
                Recv::Timeout => {}
            }
        } else {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let Some(after) = alice_end else {
        bail!("alice, sending only WebSocket pings, was not closed idle_timeout")
    };
    ensure!(
        after >= idle - Duration::from_millis(300),
        "closed idle_timeout after {after:?}, before the idle timeout {idle:?}"
    );
    ensure!(
        alice.pongs > 0,
        "the WebSocket layer answered alice's pings"
    );
    alice.expect_closed(TIMEOUT)?;
    ensure!(
        bob_saw_alice_offline,
        "bob, kept alive by precall pings, saw alice go offline"
    );
    w.running()
}

/// An HTTP response: the status, the headers (names in lower case) and the body.
type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 exchange on a fresh connection: the status, the headers (names in
/// lower case) and the body, read until the server closes.
fn http(addr: SocketAddr, request: &str) -> Res<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.write_all(request.as_bytes())?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            Error(format!(
                "no HTTP head in {:?}",
                String::from_utf8_lossy(&got)
            ))
        })?;
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, got[end + 4..].to_vec()))
}

fn get(addr: SocketAddr, path: &str) -> Res<HttpResponse> {
    http(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: precall-e2e\r\n\r\n",
            addr.port()
        ),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn static_files_are_served_and_nothing_outside_the_web_root() -> Res<()> {
    let sb = Sandbox::with_cast()?;
    let root = sb.path().join("www");
    std::fs::create_dir_all(root.join("sub"))?;
    let index = "<!doctype html><title>precall</title><script src=app.js></script>";
    let wasm = [0u8, b'a', b's', b'm', 1, 0, 0, 0];
    let files: [(&str, &[u8], &str); 6] = [
        ("index.html", index.as_bytes(), "text/html; charset=utf-8"),
        (
            "app.js",
            b"console.log('precall')",
            "text/javascript; charset=utf-8",
        ),
        (
            "app.mjs",
            b"export default 1",
            "text/javascript; charset=utf-8",
        ),
        ("app.wasm", &wasm, "application/wasm"),
        ("sub/style.css", b"body{}", "text/css; charset=utf-8"),
        ("caps.json", b"{}", "application/json"),
    ];
    for (name, body, _) in &files {
        std::fs::write(root.join(name), body)?;
    }
    std::fs::write(root.join(".secret"), "hidden")?;
    std::fs::write(root.join("big.png"), vec![0u8; 5000])?;
    std::fs::write(sb.path().join("outside.txt"), "OUTSIDE")?;
    std::os::unix::fs::symlink(sb.path().join("outside.txt"), root.join("escape.txt"))?;
    let root_arg = root.to_string_lossy().into_owned();
    let server = sb.start_server(&[
        "--ws-listen",
        "127.0.0.1:0",
        "--web-root",
        &root_arg,
        "--web-max-file-bytes",
        "4096",
    ])?;
    let addr = server.ws_addr.ok_or_else(|| Error("no ws port".into()))?;

    let (status, headers, body) = get(addr, "/")?;
    ensure!(
        status == 200
            && body == index.as_bytes()
            && header(&headers, "content-type") == Some("text/html; charset=utf-8"),
        "GET / is index.html: {status} {headers:?} {:?}",
        String::from_utf8_lossy(&body)
    );
    for (name, content, ty) in &files {
        let (status, headers, body) = get(addr, &format!("/{name}"))?;
        ensure!(
            status == 200 && body == *content && header(&headers, "content-type") == Some(*ty),
            "GET /{name}: {status} {headers:?} {} bytes",
            body.len()
        );
        ensure!(
            header(&headers, "content-length") == Some(&content.len().to_string()),
            "{headers:?}"
        );
    }
    for refused in [
        "/../outside.txt",
        "/sub/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/sub/%2e%2e/%2e%2e/outside.txt",
        "/..%2foutside.txt",
        "/escape.txt",
        "/.secret",
        "/sub",
        "/sub/",
        "/big.png",
        "/missing.html",
    ] {
        let (status, _, body) = get(addr, refused)?;
        let text = String::from_utf8_lossy(&body);
        ensure!(
            status == 404 && !text.contains("OUTSIDE") && !text.contains("hidden"),
            "GET {refused}: {status} {text:?}"
        );
    }
    let (status, headers, _) = http(
        addr,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )?;
    ensure!(
        status == 405 && header(&headers, "allow") == Some("GET"),
        "POST: {status} {headers:?}"
    );
    // The page and its WebSocket share one origin: the page's origin is allowed.
    let hs = WsHandshake {
        origin: Some(format!("http://127.0.0.1:{}", addr.port())),
        ..WsHandshake::default()
    };
    let mut c = match WsConn::try_handshake(addr, &hs)? {
        Ok(c) => c,
        Err(r) => bail!("the page's own origin was refused: {r:?}"),
    };
    c.login(
        "alice",
        &password("alice"),
        LoginWith::Capabilities(alice_caps()),
    )?;
    Ok(())
}

/// A CA and a server certificate for `localhost` and 127.0.0.1, written into the
/// sandbox; returns (CA certificate DER, certificate file, key file).
fn certificates(sb: &Sandbox) -> Res<(Vec<u8>, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "precall ws test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca.self_signed(&ca_key).expect("CA certificate");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let key = KeyPair::generate().expect("server key");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    sb.write("ca.pem", &ca.pem())?;
    let cert_file = sb.write("server.pem", &cert.pem())?;
    let key_file = sb.write("server.key", &key.serialize_pem())?;
    Ok((
        ca.der().to_vec(),
        cert_file.to_string_lossy().into_owned(),
        key_file.to_string_lossy().into_owned(),
    ))
}

/// A `wss://localhost:PORT/precall` connection trusting only `ca`.
fn wss(addr: SocketAddr, ca: &[u8]) -> Res<WsConn> {
    use tokio_rustls::rustls::{self, crypto::ring, pki_types::ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.to_vec().into())
        .map_err(|e| Error(format!("CA: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(|e| Error(e.to_string()))?;
    let tls =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| Error(e.to_string()))?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    let clone = tcp.try_clone()?;
    let stream = rustls::StreamOwned::new(tls, tcp);
    let hs = WsHandshake {
        scheme: "wss",
        host: Some("localhost".into()),
        ..WsHandshake::default()
    };
    match WsConn::handshake_over(Box::new(stream), clone, addr, &hs)? {
        Ok(c) => Ok(c),
        Err(r) => bail!("wss handshake refused: {r:?}"),
    }
}

#[test]
fn wss_uses_the_tls_certificate_of_the_tcp_port() -> Res<()> {
    let sb = Sandbox::with_cast()?;
    let (ca, cert, key) = certificates(&sb)?;
    let mut server = sb.start_server(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--ws-listen",
        "127.0.0.1:0",
    ])?;
    let addr = server.ws_addr.ok_or_else(|| Error("no ws port".into()))?;
    let mut alice = wss(addr, &ca)?;
    ensure!(
        alice.protocol.as_deref() == Some(WS_SUBPROTOCOL),
        "{:?}",
        alice.protocol
    );
    let (_, snap) = alice.login(
        "alice",
        &password("alice"),
        LoginWith::Capabilities(alice_caps()),
    )?;
    ensure!(snap.is_empty(), "{snap:?}");
    // bob over TLS on the TCP port, verified against the same CA.
    let ca_file = sb.path().join("ca.pem").to_string_lossy().into_owned();
    let _bob = sb.online_client(
        server.addr,
        "bob",
        &With::Terminal("bob-phone".into()),
        &["--tls-ca", &ca_file],
    )?;
    let m = alice.recv(TIMEOUT)?;
    ensure!(
        online_of(&m, "bob").is_some_and(|p| p.capabilities == phone_caps()),
        "alice (wss) is pushed bob (TLS) with his capabilities: {m:?}"
    );
    // Plain ws:// to the wss port gets no WebSocket.
    let plain = WsConn::try_handshake(addr, &WsHandshake::default());
    ensure!(
        !matches!(plain, Ok(Ok(_))),
        "a plain WebSocket on the TLS port was accepted"
    );
    alice.send_msg(&ClientMessage::Ping {})?;
    ensure!(
        matches!(alice.recv(TIMEOUT)?, ServerMessage::Pong {}),
        "alice still served"
    );
    ensure!(server.is_running(), "{}", server.log_tail());
    let log = server.log();
    ensure!(
        !log.contains("WITHOUT TLS"),
        "no clear-text warning with TLS:\n{log}"
    );
    Ok(())
}

#[test]
fn a_websocket_port_in_the_clear_on_a_non_loopback_address_prints_the_warning() -> Res<()> {
    let sb = Sandbox::new()?;
    let server = sb.start_server(&["--ws-listen", "0.0.0.0:0"])?;
    let log = server.log();
    let warnings = log.lines().filter(|l| l.starts_with("WARNING:")).count();
    ensure!(
        warnings == 1,
        "one WARNING line, for the WebSocket port:\n{log}"
    );
    ensure!(
        server.ws_addr.is_some_and(|a| a.ip().is_loopback()),
        "{:?}",
        server.ws_addr
    );
    Ok(())
}

#[test]
fn a_silent_connection_on_the_websocket_port_is_dropped_after_the_handshake_timeout() -> Res<()> {
    // The login timeout is long: only the handshake timeout can close the socket soon.
    let mut w = world(&[
        "--ws-handshake-timeout-ms",
        "500",
        "--login-timeout-ms",
        "60000",
    ])?;
    let (mut alice, _, _) = w.ws_login("alice", LoginWith::Capabilities(alice_caps()))?;
    let started = Instant::now();
    let mut silent = TcpStream::connect_timeout(&w.ws, TIMEOUT)?;
    silent.set_read_timeout(Some(TIMEOUT))?;
    // Half a request head, then nothing.
    silent.write_all(b"GET /precall HTTP/1.1\r\nHost: x\r\n")?;
    let mut got = Vec::new();
    let _ = silent.read_to_end(&mut got);
    let took = started.elapsed();
    ensure!(
        got.is_empty(),
        "the silent peer received {:?}",
        String::from_utf8_lossy(&got)
    );
    ensure!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(4),
        "closed after {took:?}, not at the 500 ms handshake timeout"
    );
    alice.send_msg(&ClientMessage::Ping {})?;
    ensure!(
        matches!(alice.recv(TIMEOUT)?, ServerMessage::Pong {}),
        "alice still served"
    );
    w.running()
}
