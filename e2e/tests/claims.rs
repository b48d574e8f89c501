//! One end-to-end test per claim of CN103037195A (C1–C18), through the real binaries,
//! real loopback sockets and a real SQLite store (spec section 14).
//!
//! C1–C9 (methods) run whole flows: the server and several real clients, observed
//! through the clients' JSON events. C10–C18 (apparatus) check the observable of one
//! binary alone: the client binary against a raw-socket fake server (C10–C14), the server
//! binary against raw-socket clients that speak the wire format directly (C15–C18).

use std::time::Duration;

use precall_e2e::*;
use precall_protocol::caps::CpuClass;
use precall_protocol::ids::SessionId;
use precall_protocol::message::Presence;
use precall_protocol::{
    ClientMessage, Endpoint, ErrorCode, LoginWith, ServerMessage, UserId, PROTOCOL_VERSION,
};
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(400);

fn alice_caps() -> precall_protocol::Capabilities {
    caps(&["h264", "vp8"], 1920, 30)
}

fn carol_caps() -> precall_protocol::Capabilities {
    caps(&["vp8"], 1280, 25)
}

/// The cast, a server, and capabilities files for alice, bob and carol.
struct World {
    sb: Sandbox,
    server: ServerProc,
}

impl World {
    fn new() -> Res<World> {
        let sb = Sandbox::with_cast()?;
        sb.write_caps("alice.json", &alice_caps())?;
        sb.write_caps("carol.json", &carol_caps())?;
        sb.write_caps("bob.json", &phone_caps())?;
        // A short resume grace: a killed terminal is offline for its contacts once
        // its detached session's grace is over (spec 9.9.3).
        let server = sb.start_server(&["--resume-grace-ms", "1000"])?;
        Ok(World { sb, server })
    }

    fn file(&self, name: &str) -> With {
        With::CapsFile(self.sb.path().join(name))
    }

    fn alice(&self) -> Res<ClientProc> {
        self.sb
            .online_client(self.server.addr, "alice", &self.file("alice.json"), &[])
    }

    fn carol(&self) -> Res<ClientProc> {
        self.sb
            .online_client(self.server.addr, "carol", &self.file("carol.json"), &[])
    }

    fn bob_by_terminal(&self) -> Res<ClientProc> {
        self.sb.online_client(
            self.server.addr,
            "bob",
            &With::Terminal("bob-phone".into()),
            &[],
        )
    }
}

fn is_peer<'a>(event: &'a str, user: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v: &Value| v["event"] == event && v["user"] == user
}

// ---------------------------------------------------------------------------------------
// C1–C9: methods, whole system
// ---------------------------------------------------------------------------------------

/// C1: the "online" push for a contact carries that terminal's capabilities, and the
/// terminal sets the call parameters from them at once (before any call).
#[test]
fn e2e_c01_online_push_carries_caps_and_client_sets_params() -> Res<()> {
    let w = World::new()?;
    let mut alice = w.alice()?;
    let synced = alice.synced_table().unwrap_or_default();
    ensure!(
        online_users(&synced).is_empty(),
        "nobody else online yet: {synced:?}"
    );
    let mut bob =
        w.sb.online_client(w.server.addr, "bob", &w.file("bob.json"), &[])?;
    let bob_session = bob.session();
    let ev = alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    ensure!(
        ev["session"].as_u64() == bob_session,
        "peer_online names bob's session: {ev}"
    );
    let expected = params_json(&alice_caps(), &phone_caps());
    ensure!(
        params_of(&ev) == expected,
        "alice's parameters for bob are negotiate_pair(alice, bob):\n got {}\nwant {expected}",
        params_of(&ev)
    );
    let table = alice.table()?;
    let row = online_row(&table, "bob").ok_or_else(|| Error(format!("no bob in {table:?}")))?;
    ensure!(params_of(row) == expected, "table row {row}");
    // And the mirror at bob, filled by the login snapshot.
    let t = bob.table()?;
    let row = online_row(&t, "alice").ok_or_else(|| Error(format!("no alice in {t:?}")))?;
    ensure!(
        params_of(row) == params_json(&phone_caps(), &alice_caps()),
        "bob's row for alice {row}"
    );
    Ok(())
}

/// C2: on a login trigger the terminal sends a login request with the user's
/// authentication information and its own capabilities (here built from
/// `--codecs/--width/--fps/--cpu/--up-kbps/--down-kbps`); the contact computes its
/// parameters from exactly those capabilities.
#[test]
fn e2e_c02_login_carries_capabilities() -> Res<()> {
    let w = World::new()?;
    let mut bob = w.bob_by_terminal()?;
    let flags = With::flags(&[
        "--codecs",
        "h264,vp8",
        "--width",
        "1920",
        "--fps",
        "30",
        "--cpu",
        "high",
        "--up-kbps",
        "8000",
        "--down-kbps",
        "8000",
    ]);
    let mut alice = w.sb.client(w.server.addr, "alice", &flags, &[])?;
    let session = alice.wait_logged_in()?;
    let ev = bob.wait_event_where("peer_online", |v| v["user"] == "alice")?;
    ensure!(ev["session"] == session, "{ev}");
    // sample_caps(["h264","vp8"], 1920, 30) is what those flags describe.
    let expected = params_json(&phone_caps(), &alice_caps());
    ensure!(
        params_of(&ev) == expected,
        "bob's parameters for alice come from the capabilities in alice's login:\n got {}\nwant {expected}",
        params_of(&ev)
    );
    Ok(())
}

/// C3: the login request carries authentication information and the terminal's
/// identifier instead of capabilities; the registered capabilities are what contacts get.
#[test]
fn e2e_c03_login_carries_terminal_id() -> Res<()> {
    let w = World::new()?;
    let mut alice = w.alice()?;
    let mut bob = w.sb.client(
        w.server.addr,
        "bob",
        &With::Terminal("bob-phone".into()),
        &[],
    )?;
    let session = bob.wait_logged_in()?;
    let ev = alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    ensure!(ev["session"] == session, "{ev}");
    ensure!(
        params_of(&ev) == params_json(&alice_caps(), &phone_caps()),
        "alice's parameters for bob come from bob-phone's registered capabilities: {ev}"
    );
    Ok(())
}

/// C4: on an "offline" push the terminal deletes the contact terminal's capabilities and
/// parameters.
#[test]
fn e2e_c04_offline_push_deletes_caps_and_params() -> Res<()> {
    let w = World::new()?;
    let mut alice = w.alice()?;
    let mut bob = w.bob_by_terminal()?;
    alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    ensure!(
        online_row(&alice.table()?, "bob").is_some(),
        "bob in alice's table"
    );
    bob.logout()?;
    alice.wait_event_where("peer_offline", |v| v["user"] == "bob")?;
    let table = alice.table()?;
    ensure!(
        online_row(&table, "bob").is_none(),
        "bob's entry is deleted: {table:?}"
    );
    ensure!(
        table
            .iter()
            .all(|r| r["user"] != "bob" || r.get("send").is_none()),
        "no parameters left for bob: {table:?}"
    );
    Ok(())
}

/// C5: on its own user's logout the terminal deletes everything received and computed:
/// the session ends (`logged_out`, exit 0), and nothing that was in flight is applied.
#[test]
fn e2e_c05_own_logout_deletes_everything() -> Res<()> {
    let w = World::new()?;
    let mut bob = w.bob_by_terminal()?;
    let mut carol = w.carol()?;
    let mut alice = w.alice()?;
    let t = alice.table()?;
    ensure!(
        online_users(&t).len() == 2,
        "alice holds bob and carol before logging out: {t:?}"
    );
    alice.send(json!({"cmd": "logout"}))?;
    alice.wait_event("logged_out")?;
    let status = alice.wait_exit(TIMEOUT)?;
    ensure!(status.success(), "exit status after logout: {status}");
    ensure!(
        !alice
            .history()
            .iter()
            .skip_while(|v| v["event"] != "logged_out")
            .any(|v| v["event"].as_str().is_some_and(|e| e.starts_with("peer_"))),
        "nothing applied after logout"
    );
    // The server ended the session: her contacts were told.
    bob.wait_event_where("peer_offline", |v| v["user"] == "alice")?;
    carol.wait_event_where("peer_offline", |v| v["user"] == "alice")?;
    Ok(())
}

/// C6: the server learns a contact logged in and pushes "online" with that terminal's
/// capabilities to every entitled user — and only to them (carol does not list bob).
#[test]
fn e2e_c06_server_pushes_online_with_caps_to_entitled_contacts() -> Res<()> {
    let w = World::new()?;
    let mut alice = w.alice()?;
    let mut carol = w.carol()?;
    alice.wait_event_where("peer_online", |v| v["user"] == "carol")?;
    let _bob = w.bob_by_terminal()?;
    let ev = alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    ensure!(
        params_of(&ev) == params_json(&alice_caps(), &phone_caps()),
        "{ev}"
    );
    carol.expect_none(is_peer("peer_online", "bob"), QUIET)?;
    let t = carol.table()?;
    ensure!(
        online_users(&t) == ["alice"],
        "carol sees alice only, never bob: {t:?}"
    );
    Ok(())
}

/// C7: the server receives a login request carrying authentication information and the
/// terminal's capabilities, and records those capabilities for the session.
#[test]
fn e2e_c07_server_accepts_login_with_capabilities() -> Res<()> {
    let w = World::new()?;
    let mut carol = w.carol()?;
    let ev = carol
        .history()
        .iter()
        .find(|v| v["event"] == "logged_in")
        .cloned()
        .unwrap_or_default();
    ensure!(ev["user"] == "carol" && carol.session().is_some(), "{ev}");
    let mut alice = w.alice()?;
    let t = alice.table()?;
    let row = online_row(&t, "carol").ok_or_else(|| Error(format!("{t:?}")))?;
    ensure!(
        params_of(row) == params_json(&alice_caps(), &carol_caps()),
        "the server recorded carol's login capabilities: {row}"
    );
    carol.wait_event_where("peer_online", |v| v["user"] == "alice")?;
    Ok(())
}

/// C8: the server resolves a terminal identifier to the capabilities stored in advance
/// for that identifier and user; an identifier not registered to the user is refused
/// with `unknown_terminal`.
#[test]
fn e2e_c08_server_resolves_registered_terminal_id() -> Res<()> {
    let w = World::new()?;
    let mut alice = w.alice()?;
    let _bob = w.bob_by_terminal()?;
    let ev = alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    ensure!(
        params_of(&ev) == params_json(&alice_caps(), &phone_caps()),
        "{ev}"
    );
    for (user, id) in [("bob", "no-such-phone"), ("carol", "bob-phone")] {
        let mut c =
            w.sb.client(w.server.addr, user, &With::Terminal(id.into()), &[])?;
        let err = c.wait_event("error")?;
        ensure!(
            err["code"] == "unknown_terminal",
            "{user} with terminal {id}: {err}"
        );
        c.wait_event("logged_out")?;
        c.wait_exit(TIMEOUT)?;
    }
    alice.expect_none(is_peer("peer_online", "carol"), QUIET)?;
    Ok(())
}

/// C9: the server learns a contact logged out — by logout or by a dropped connection —
/// and pushes "offline".
#[test]
fn e2e_c09_server_pushes_offline_on_logout_and_on_drop() -> Res<()> {
    let w = World::new()?;
    let mut alice = w.alice()?;
    let mut bob = w.bob_by_terminal()?;
    let mut carol = w.carol()?;
    let bob_session = bob.session();
    let carol_session = carol.session();
    alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    alice.wait_event_where("peer_online", |v| v["user"] == "carol")?;
    bob.logout()?;
    let ev = alice.wait_event_where("peer_offline", |v| v["user"] == "bob")?;
    ensure!(ev["session"].as_u64() == bob_session, "{ev}");
    // A dropped connection: offline when the resume grace (1 s here) is over.
    carol.kill();
    let ev = alice.wait_event_where("peer_offline", |v| v["user"] == "carol")?;
    ensure!(ev["session"].as_u64() == carol_session, "{ev}");
    ensure!(
        online_users(&alice.table()?).is_empty(),
        "alice's table is empty"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// C10–C14: the terminal apparatus (the client binary alone, against a fake server)
// ---------------------------------------------------------------------------------------

/// A client binary connected to a fake server, logged in by hand-made frames.
struct Rig {
    _sb: Sandbox,
    client: ClientProc,
    conn: RawConn,
    login: ClientMessage,
}

/// Starts a client binary against a fake server and reads its login frame. `with`
/// chooses how it logs in, given the sandbox to write a capabilities file into.
fn rig(with: impl FnOnce(&Sandbox) -> Res<With>) -> Res<Rig> {
    let sb = Sandbox::new()?;
    let fake = FakeServer::bind()?;
    let with = with(&sb)?;
    let client = sb.client(fake.addr, "alice", &with, &[])?;
    let mut conn = fake.accept(TIMEOUT)?;
    let login = conn.recv_as::<ClientMessage>(TIMEOUT)?;
    Ok(Rig {
        _sb: sb,
        client,
        conn,
        login,
    })
}

/// Logs in with alice's capabilities from a file.
fn caps_file(sb: &Sandbox) -> Res<With> {
    Ok(With::CapsFile(sb.write_caps("me.json", &alice_caps())?))
}

impl Rig {
    /// Answers the login as a server would: login_ok (alice, session 1, contacts bob and
    /// carol), then `synced`.
    fn accept_login(&mut self, caps: &precall_protocol::Capabilities) -> Res<()> {
        self.conn.send_msg(&ServerMessage::LoginOk {
            version: PROTOCOL_VERSION,
            user: UserId::new("alice")?,
            session: SessionId(1),
            capabilities: caps.clone(),
            contacts: vec![UserId::new("bob")?, UserId::new("carol")?],
            resume_token: None,
        })?;
        self.conn.send_msg(&ServerMessage::Synced {})?;
        self.client.wait_logged_in()?;
        self.client.wait_synced()?;
        Ok(())
    }

    fn push_online(
        &mut self,
        user: &str,
        session: u64,
        caps: &precall_protocol::Capabilities,
    ) -> Res<()> {
        self.conn.send_msg(&ServerMessage::Online(Presence {
            user: UserId::new(user)?,
            session: SessionId(session),
            capabilities: caps.clone(),
        }))
    }

    fn push_offline(&mut self, user: &str, session: u64) -> Res<()> {
        self.conn.send_msg(&ServerMessage::Offline(Endpoint {
            user: UserId::new(user)?,
            session: SessionId(session),
        }))
    }
}

/// C10: the client binary, on an "online" push carrying capabilities, sets the call
/// parameters for that terminal (its table row) from them.
#[test]
fn e2e_c10_client_apparatus_sets_params_on_online_push() -> Res<()> {
    let mut r = rig(caps_file)?;
    r.accept_login(&alice_caps())?;
    r.push_online("bob", 2, &phone_caps())?;
    let ev = r
        .client
        .wait_event_where("peer_online", |v| v["user"] == "bob")?;
    let expected = params_json(&alice_caps(), &phone_caps());
    ensure!(ev["session"] == 2 && params_of(&ev) == expected, "{ev}");
    let t = r.client.table()?;
    let row = online_row(&t, "bob").ok_or_else(|| Error(format!("{t:?}")))?;
    ensure!(params_of(row) == expected, "{row}");
    // An update (same endpoint, new capabilities) recomputes them.
    r.push_online("bob", 2, &carol_caps())?;
    let ev = r
        .client
        .wait_event_where("peer_updated", |v| v["user"] == "bob")?;
    ensure!(
        params_of(&ev) == params_json(&alice_caps(), &carol_caps()),
        "{ev}"
    );
    Ok(())
}

/// C11: the client binary's login request carries the user's credentials and its own
/// capabilities, from flags and from a capabilities file.
#[test]
fn e2e_c11_client_apparatus_sends_caps_in_login() -> Res<()> {
    let r = rig(|_| {
        Ok(With::flags(&[
            "--codecs",
            "vp9,h264",
            "--width",
            "1280",
            "--fps",
            "25",
            "--cpu",
            "mid",
            "--up-kbps",
            "3000",
            "--down-kbps",
            "6000",
        ]))
    })?;
    let ClientMessage::Login {
        version,
        user,
        password: pw,
        with: LoginWith::Capabilities(c),
    } = &r.login
    else {
        bail!(
            "the first frame is not a login with capabilities: {:?}",
            r.login
        )
    };
    ensure!(
        *version == PROTOCOL_VERSION && user.as_str() == "alice",
        "{:?}",
        r.login
    );
    ensure!(
        pw.expose() == password("alice"),
        "the password travels in the login"
    );
    let codecs: Vec<&str> = c.encode().iter().map(|x| x.as_str()).collect();
    ensure!(codecs == ["vp9", "h264"], "{c:?}");
    ensure!(
        c.screen().width == 1280 && c.screen().height == 720,
        "{c:?}"
    );
    ensure!(c.camera().is_some_and(|cam| cam.max_fps == 25), "{c:?}");
    ensure!(c.cpu() == CpuClass::Mid, "{c:?}");
    ensure!(
        c.bandwidth().up_kbps == 3000 && c.bandwidth().down_kbps == 6000,
        "{c:?}"
    );
    // From a file: exactly the file's capabilities.
    let r = rig(caps_file)?;
    let ClientMessage::Login {
        with: LoginWith::Capabilities(c),
        ..
    } = &r.login
    else {
        bail!("{:?}", r.login)
    };
    ensure!(*c == alice_caps(), "{c:?}");
    Ok(())
}

/// C12: with `--terminal ID` the client binary's login request carries the terminal
/// identifier and no capabilities.
#[test]
fn e2e_c12_client_apparatus_sends_terminal_id_in_login() -> Res<()> {
    let r = rig(|_| Ok(With::Terminal("bob-phone".into())))?;
    let ClientMessage::Login {
        version,
        user,
        with: LoginWith::TerminalId(id),
        ..
    } = &r.login
    else {
        bail!(
            "the first frame is not a login by terminal id: {:?}",
            r.login
        )
    };
    ensure!(
        *version == PROTOCOL_VERSION && user.as_str() == "alice" && id.as_str() == "bob-phone",
        "{:?}",
        r.login
    );
    Ok(())
}

/// C13: the client binary, on an "offline" push, deletes that terminal's capabilities
/// and parameters.
#[test]
fn e2e_c13_client_apparatus_deletes_on_offline_push() -> Res<()> {
    let mut r = rig(caps_file)?;
    r.accept_login(&alice_caps())?;
    r.push_online("bob", 2, &phone_caps())?;
    r.push_online("carol", 3, &carol_caps())?;
    r.client
        .wait_event_where("peer_online", |v| v["user"] == "carol")?;
    r.push_offline("bob", 2)?;
    let ev = r
        .client
        .wait_event_where("peer_offline", |v| v["user"] == "bob")?;
    ensure!(ev["session"] == 2, "{ev}");
    let t = r.client.table()?;
    ensure!(online_users(&t) == ["carol"], "only carol is left: {t:?}");
    // A call to bob now finds nothing to call.
    r.client.send(json!({"cmd": "call", "to": "bob"}))?;
    let err = r.client.wait_event("error")?;
    ensure!(err["code"] == "not_in_table", "{err}");
    Ok(())
}

/// C14: on its own user's logout trigger the client binary sends `logout` and deletes
/// everything at once: pushes still in flight are not applied to anything, and the
/// session ends when `logged_out` arrives (exit 0).
#[test]
fn e2e_c14_client_apparatus_deletes_all_on_logout() -> Res<()> {
    let mut r = rig(caps_file)?;
    r.accept_login(&alice_caps())?;
    r.push_online("bob", 2, &phone_caps())?;
    r.client
        .wait_event_where("peer_online", |v| v["user"] == "bob")?;
    r.client.send(json!({"cmd": "logout"}))?;
    let m = r.conn.recv_as::<ClientMessage>(TIMEOUT)?;
    ensure!(
        matches!(m, ClientMessage::Logout {}),
        "expected logout, got {m:?}"
    );
    // In flight when the user logged out: an update and an offline for bob, a new
    // terminal for carol. A client that still held its table would apply them.
    r.push_online("bob", 2, &carol_caps())?;
    r.push_offline("bob", 2)?;
    r.push_online("carol", 3, &carol_caps())?;
    r.client.expect_none(
        |v| v["event"].as_str().is_some_and(|e| e.starts_with("peer_")),
        QUIET,
    )?;
    r.conn.send_msg(&ServerMessage::LoggedOut {})?;
    r.client.wait_event("logged_out")?;
    let s = r.client.wait_exit(TIMEOUT)?;
    ensure!(s.success(), "exit status {s}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// C15–C18: the server apparatus (the server binary, raw-socket clients)
// ---------------------------------------------------------------------------------------

fn raw_login(
    addr: std::net::SocketAddr,
    user: &str,
    with: LoginWith,
) -> Res<(RawConn, ServerMessage, Vec<ServerMessage>)> {
    let mut c = RawConn::connect(addr)?;
    let (ok, snap) = c.login(user, &password(user), with)?;
    Ok((c, ok, snap))
}

fn session_of(login_ok: &ServerMessage) -> u64 {
    match login_ok {
        ServerMessage::LoginOk { session, .. } => session.0,
        _ => 0,
    }
}

/// C15: the server binary pushes an `online` frame carrying the new terminal's
/// capabilities to an entitled contact's connection, and to nobody else.
#[test]
fn e2e_c15_server_apparatus_pushes_online_with_caps() -> Res<()> {
    let w = World::new()?;
    let (mut alice, _, snap) = raw_login(
        w.server.addr,
        "alice",
        LoginWith::Capabilities(alice_caps()),
    )?;
    ensure!(snap.is_empty(), "empty snapshot: {snap:?}");
    let (mut carol, _, _) = raw_login(
        w.server.addr,
        "carol",
        LoginWith::Capabilities(carol_caps()),
    )?;
    alice.recv_until(
        |m| matches!(m, ServerMessage::Online(p) if p.user.as_str() == "carol"),
        TIMEOUT,
    )?;
    let (_bob, bob_ok, bob_snap) = raw_login(w.server.addr, "bob", with_terminal("bob-phone")?)?;
    ensure!(
        bob_snap.iter().any(|m| matches!(m, ServerMessage::Online(p) if p.user.as_str() == "alice" && p.capabilities == alice_caps())),
        "bob's snapshot carries alice's capabilities: {bob_snap:?}"
    );
    let m = alice.recv(TIMEOUT)?;
    let ServerMessage::Online(p) = &m else {
        bail!("expected online for bob, got {m:?}")
    };
    ensure!(
        p.user.as_str() == "bob"
            && p.session.0 == session_of(&bob_ok)
            && p.capabilities == phone_caps(),
        "{m:?}"
    );
    match carol.recv_payload(QUIET)? {
        Recv::Timeout => {}
        other => bail!("carol (not bob's contact) got {other:?}"),
    }
    Ok(())
}

/// C16: the server binary accepts a raw login frame carrying capabilities and records
/// them for the session (login_ok echoes them).
#[test]
fn e2e_c16_server_apparatus_receives_login_with_caps() -> Res<()> {
    let w = World::new()?;
    let (_c, ok, _) = raw_login(
        w.server.addr,
        "alice",
        LoginWith::Capabilities(alice_caps()),
    )?;
    let ServerMessage::LoginOk {
        version,
        user,
        capabilities,
        contacts,
        ..
    } = &ok
    else {
        bail!("{ok:?}")
    };
    ensure!(
        *version == PROTOCOL_VERSION && user.as_str() == "alice",
        "{ok:?}"
    );
    ensure!(*capabilities == alice_caps(), "{ok:?}");
    let names: Vec<&str> = contacts.iter().map(UserId::as_str).collect();
    ensure!(
        names == ["bob", "carol"],
        "contacts from the store, sorted: {names:?}"
    );
    Ok(())
}

/// C17: the server binary resolves a raw login's terminal identifier to the capabilities
/// registered in the store; an identifier registered to someone else is
/// `unknown_terminal` (fatal: the connection closes).
#[test]
fn e2e_c17_server_apparatus_resolves_terminal_id() -> Res<()> {
    let w = World::new()?;
    let (_c, ok, _) = raw_login(w.server.addr, "bob", with_terminal("bob-phone")?)?;
    let ServerMessage::LoginOk { capabilities, .. } = &ok else {
        bail!("{ok:?}")
    };
    ensure!(
        *capabilities == phone_caps(),
        "the registered capabilities: {ok:?}"
    );
    let mut c = RawConn::connect(w.server.addr)?;
    c.send_msg(&login_msg(
        "carol",
        &password("carol"),
        with_terminal("bob-phone")?,
    )?)?;
    let m = c.recv(TIMEOUT)?;
    ensure!(
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::UnknownTerminal,
                ..
            }
        ),
        "{m:?}"
    );
    c.expect_closed(TIMEOUT)?;
    Ok(())
}

/// C18: the server binary pushes an `offline` frame to the contact's connection when a
/// session ends, by logout and by a dropped connection alike.
#[test]
fn e2e_c18_server_apparatus_pushes_offline() -> Res<()> {
    let w = World::new()?;
    let (mut alice, _, _) = raw_login(
        w.server.addr,
        "alice",
        LoginWith::Capabilities(alice_caps()),
    )?;
    // bob logs out.
    let (mut bob, bob_ok, _) = raw_login(w.server.addr, "bob", with_terminal("bob-phone")?)?;
    alice.recv_until(
        |m| matches!(m, ServerMessage::Online(p) if p.user.as_str() == "bob"),
        TIMEOUT,
    )?;
    bob.send_msg(&ClientMessage::Logout {})?;
    let m = bob.recv(TIMEOUT)?;
    ensure!(matches!(m, ServerMessage::LoggedOut {}), "{m:?}");
    bob.expect_closed(TIMEOUT)?;
    let m = alice.recv(TIMEOUT)?;
    ensure!(
        matches!(&m, ServerMessage::Offline(e) if e.user.as_str() == "bob" && e.session.0 == session_of(&bob_ok)),
        "{m:?}"
    );
    // carol's connection just drops.
    let (carol, carol_ok, _) = raw_login(
        w.server.addr,
        "carol",
        LoginWith::Capabilities(carol_caps()),
    )?;
    alice.recv_until(
        |m| matches!(m, ServerMessage::Online(p) if p.user.as_str() == "carol"),
        TIMEOUT,
    )?;
    drop(carol);
    let m = alice.recv(TIMEOUT)?;
    ensure!(
        matches!(&m, ServerMessage::Offline(e) if e.user.as_str() == "carol" && e.session.0 == session_of(&carol_ok)),
        "{m:?}"
    );
    Ok(())
}
