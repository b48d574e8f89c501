//! Resumable sessions end to end (spec section 9.9): the real `precall-server` on a real
//! SQLite store, real `precall-client` processes over loopback TCP. A client's connection
//! goes through a [`Relay`] so that the test can cut it abruptly (both ends get a reset)
//! and keep the client from reaching the server for a while.
//!
//! - Cut within the grace: the client resumes its session, the contact never sees it go
//!   offline, and a capability change the contact made meanwhile arrives in the
//!   catch-up; the tables agree and a call takes the fast path.
//! - Away longer than the grace: the contact sees it go offline when the grace ends,
//!   the resume is refused (`resume_failed`) and the client logs in again with its
//!   password, as a new session.
//! - The server is SIGKILLed and restarted on the same store: resumes fail (sessions
//!   lived in the old process's memory), both clients log in again and rebuild correct
//!   tables.

use std::time::{Duration, Instant};

use precall_e2e::*;
use precall_protocol::Capabilities;
use serde_json::{json, Value};

/// Quick reconnection for tests: first wait at most 50 ms, never more than 200 ms.
const FAST_RECONNECT: &[&str] = &["--reconnect-base-ms", "50", "--reconnect-max-ms", "200"];

/// How long a client may take to be back once the server can be reached.
const BACK: Duration = Duration::from_secs(10);

fn alice_caps() -> Capabilities {
    caps(&["h264", "vp8"], 1920, 30)
}

fn bob_caps() -> Capabilities {
    caps(&["h264", "vp8"], 1280, 30)
}

/// bob's capabilities after his change: VP8 only, 640 wide, 15 fps.
fn bob_new_caps() -> Capabilities {
    caps(&["vp8"], 640, 15)
}

/// alice (through `relay`) and bob (directly, or through `bob_relay`), online and
/// synced, each with the other in the table.
fn online_pair(
    sb: &Sandbox,
    server: &ServerProc,
    relay: &Relay,
    bob_relay: Option<&Relay>,
) -> Res<(ClientProc, ClientProc)> {
    let alice_file = sb.write_caps("alice.json", &alice_caps())?;
    let bob_file = sb.write_caps("bob.json", &bob_caps())?;
    let bob_addr = bob_relay.map_or(server.addr, |r| r.addr);
    let mut bob = sb.online_client(bob_addr, "bob", &With::CapsFile(bob_file), FAST_RECONNECT)?;
    let mut alice = sb.online_client(
        relay.addr,
        "alice",
        &With::CapsFile(alice_file),
        FAST_RECONNECT,
    )?;
    bob.wait_event_where("peer_online", |v| v["user"] == "alice")?;
    expect_row(
        &alice.table()?,
        "bob",
        bob.session(),
        &alice_caps(),
        &bob_caps(),
    )?;
    expect_row(
        &bob.table()?,
        "alice",
        alice.session(),
        &bob_caps(),
        &alice_caps(),
    )?;
    Ok((alice, bob))
}

/// `table` holds exactly one online row for `user`, with `session` (if given) and the
/// parameters the core computes from `me` and `them`.
fn expect_row(
    table: &[Value],
    user: &str,
    session: Option<u64>,
    me: &Capabilities,
    them: &Capabilities,
) -> Res<()> {
    let rows: Vec<&Value> = table
        .iter()
        .filter(|r| r["user"] == user && is_online_row(r))
        .collect();
    ensure!(rows.len() == 1, "one online row for {user}: {table:?}");
    let row = rows[0];
    if let Some(s) = session {
        ensure!(row["session"] == s, "{user} with session {s}: {row}");
    }
    ensure!(
        params_of(row) == params_json(me, them),
        "parameters for {user}: {row}, expected {}",
        params_json(me, them)
    );
    Ok(())
}

/// Whether `c` ever printed `peer_offline` for `user`.
fn saw_offline(c: &ClientProc, user: &str) -> bool {
    c.history()
        .iter()
        .any(|v| v["event"] == "peer_offline" && v["user"] == user)
}

#[test]
fn a_cut_connection_resumes_within_the_grace_and_catches_up() -> Res<()> {
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    let relay = Relay::start(server.addr)?;
    let (mut alice, mut bob) = online_pair(&sb, &server, &relay, None)?;
    let session = alice.session();

    // The network drops alice's connection and keeps her away for a moment.
    relay.block(true);
    ensure!(relay.cut() == 1, "alice's connection was relayed");
    alice.wait_event("detached")?;
    // Meanwhile bob changes his capabilities: alice cannot hear it now.
    let file = sb.write_caps("bob-new.json", &bob_new_caps())?;
    bob.send(json!({"cmd": "caps", "file": file}))?;
    bob.wait_event("caps_acknowledged")?;
    relay.block(false);

    // alice takes her session over and gets exactly what she missed.
    let resumed = alice.wait_for(|v| v["event"] == "resumed", BACK)?;
    ensure!(
        resumed["session"].as_u64() == session && resumed["snapshot"] == false,
        "the same session, resumed with only what was missed: {resumed}"
    );
    let update = alice.wait_event_where("peer_updated", |v| v["user"] == "bob")?;
    ensure!(
        update["params"] == params_json(&alice_caps(), &bob_new_caps()),
        "the catch-up carries bob's new capabilities: {update}"
    );
    let synced = alice.wait_event("synced")?;
    expect_row(
        synced["table"].as_array().map_or(&[][..], Vec::as_slice),
        "bob",
        bob.session(),
        &alice_caps(),
        &bob_new_caps(),
    )?;
    expect_row(
        &alice.table()?,
        "bob",
        bob.session(),
        &alice_caps(),
        &bob_new_caps(),
    )?;
    ensure!(
        !alice.history().iter().any(|v| v["event"] == "logged_out"
            || v["event"] == "logged_in" && v["session"].as_u64() != session),
        "no new login: {:?}",
        alice.history()
    );

    // bob never saw alice go offline, and still holds her same session.
    bob.expect_none(
        |v| v["event"] == "peer_offline" || v["event"] == "peer_online",
        Duration::from_millis(300),
    )?;
    ensure!(!saw_offline(&bob, "alice"), "{:?}", bob.history());
    expect_row(
        &bob.table()?,
        "alice",
        session,
        &bob_new_caps(),
        &alice_caps(),
    )?;

    // The tables agree: a call takes the fast path.
    alice.send(json!({"cmd": "call", "to": "bob"}))?;
    let ring = alice.wait_event("call_ringing")?;
    let incoming = bob.wait_event_where("incoming_call", |v| v["call"] == ring["call"])?;
    bob.send(json!({"cmd": "answer", "call": incoming["call"]}))?;
    let est = alice.wait_event_where("call_established", |v| v["call"] == ring["call"])?;
    ensure!(est["path"] == "fast", "{est}");

    // The server resumed; it did not check a password again.
    let log = server.log();
    ensure!(
        log.matches("session resumed").count() == 1 && log.matches("session started").count() == 2,
        "one resume, two logins in the server's log:\n{log}"
    );
    alice.logout()?;
    bob.logout()
}

#[test]
fn after_the_grace_the_session_is_gone_and_the_client_logs_in_again() -> Res<()> {
    const GRACE_MS: u64 = 800;
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&["--resume-grace-ms", &GRACE_MS.to_string()])?;
    let relay = Relay::start(server.addr)?;
    let (mut alice, mut bob) = online_pair(&sb, &server, &relay, None)?;
    let session = alice.session();

    relay.block(true);
    let cut = Instant::now();
    ensure!(relay.cut() == 1, "alice's connection was relayed");
    alice.wait_event("detached")?;
    // alice keeps trying (and failing) to reach the server; for bob she is online
    // until the grace ends, then offline.
    let (at, offline) = bob.wait_for_at(
        |v| v["event"] == "peer_offline" && v["user"] == "alice",
        Duration::from_millis(GRACE_MS) + Duration::from_secs(3),
    )?;
    ensure!(offline["session"].as_u64() == session, "{offline}");
    let after = at.saturating_duration_since(cut);
    ensure!(
        after >= Duration::from_millis(GRACE_MS - 100),
        "alice went offline for bob after {after:?}, before the grace ({GRACE_MS} ms) ended"
    );
    ensure!(
        relay.accepted() > 2,
        "alice tried to reconnect while away ({} connections)",
        relay.accepted()
    );

    // alice reaches the server again: her session is gone, she logs in anew.
    relay.block(false);
    let failed = alice.wait_for(|v| v["event"] == "error" || v["event"] == "resumed", BACK)?;
    ensure!(failed["code"] == "resume_failed", "{failed}");
    alice.wait_event("logged_out")?;
    let new_session = alice.wait_logged_in()?;
    ensure!(Some(new_session) != session, "a new session: {new_session}");
    let table = alice.wait_synced()?;
    expect_row(&table, "bob", bob.session(), &alice_caps(), &bob_caps())?;
    bob.wait_event_where("peer_online", |v| {
        v["user"] == "alice" && v["session"].as_u64() == Some(new_session)
    })?;
    expect_row(
        &bob.table()?,
        "alice",
        Some(new_session),
        &bob_caps(),
        &alice_caps(),
    )?;
    alice.logout()?;
    bob.logout()
}

#[test]
fn after_a_server_restart_the_resume_fails_and_clients_log_in_again() -> Res<()> {
    let sb = Sandbox::with_cast()?;
    let mut server = sb.start_server(&[])?;
    let relay = Relay::start(server.addr)?;
    let bob_relay = Relay::start(server.addr)?;
    let (mut alice, mut bob) = online_pair(&sb, &server, &relay, Some(&bob_relay))?;
    server.kill();
    alice.wait_event("detached")?;
    bob.wait_event("detached")?;
    // Both keep trying while no server listens; then one starts on the same store.
    std::thread::sleep(Duration::from_millis(300));
    let server = sb.start_server(&[])?;
    relay.set_upstream(server.addr);
    bob_relay.set_upstream(server.addr);

    let mut sessions = Vec::new();
    for c in [&mut alice, &mut bob] {
        let failed = c.wait_for(|v| v["event"] == "error" || v["event"] == "resumed", BACK)?;
        ensure!(failed["code"] == "resume_failed", "{}: {failed}", c.name);
        c.wait_event("logged_out")?;
        sessions.push(c.wait_logged_in()?);
        c.wait_synced()?;
    }
    // Whoever logged in second found the other in its snapshot; the first is told by a
    // push. Either way both tables hold exactly the other's new session.
    let deadline = Instant::now() + BACK;
    loop {
        let a = alice.table()?;
        let b = bob.table()?;
        let ok_a = expect_row(&a, "bob", Some(sessions[1]), &alice_caps(), &bob_caps());
        let ok_b = expect_row(&b, "alice", Some(sessions[0]), &bob_caps(), &alice_caps());
        if ok_a.is_ok() && ok_b.is_ok() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "tables after the restart: alice {a:?} ({ok_a:?}), bob {b:?} ({ok_b:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // (Session numbers start again at 1 in the new process: they may repeat.)
    let log = server.log();
    ensure!(
        !log.contains("session resumed") && log.matches("session started").count() == 2,
        "no resume, two logins in the restarted server's log:\n{log}"
    );
    alice.logout()?;
    bob.logout()
}
