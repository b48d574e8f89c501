//! The real binaries on PostgreSQL (`--db postgres://…`): `precall-server admin` creates
//! the accounts, contact lists and a terminal in a fresh database, two `precall-server
//! serve` nodes run on it, clients log in with those accounts, and a contact change made
//! with `admin` while they run reaches online users on both nodes. A change made over the
//! protocol on one node reaches the user's terminal on the other node, is stored in
//! PostgreSQL (the admin listing shows it) and outlives a SIGKILL of the server.
//!
//! Needs a PostgreSQL server whose URL (a role with CREATEDB) is in `PRECALL_TEST_PG`:
//! `scripts/pg start` prints one, `scripts/test` starts it and sets the variable. Without
//! it the test fails, saying so.

use std::path::PathBuf;

use postgres::NoTls;
use precall_e2e::*;
use serde_json::json;

#[test]
fn admin_and_two_server_nodes_share_a_postgres_database() -> Res<()> {
    let db = PgDb::create()?;
    let mut sb = Sandbox::new()?;
    sb.db = PathBuf::from(&db.url);
    for u in ["alice", "bob", "carol"] {
        sb.add_user(u)?;
    }
    sb.befriend("alice", "bob")?;
    sb.register_terminal("bob-phone", "bob", &phone_caps())?;
    ensure!(
        sb.admin_lines(&["user", "list"])? == ["alice", "bob", "carol"],
        "admin user list on PostgreSQL"
    );
    // Written to PostgreSQL itself (not to some file named like the URL).
    let mut direct = postgres::Client::connect(&db.url, NoTls)
        .map_err(|e| Error(format!("connecting to {}: {e:?}", db.url)))?;
    let names: Vec<String> = direct
        .query("SELECT name FROM accounts ORDER BY name", &[])
        .map_err(|e| Error(format!("reading accounts: {e:?}")))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ensure!(
        names == ["alice", "bob", "carol"],
        "accounts in PostgreSQL: {names:?}"
    );
    drop(direct);

    let one = sb.start_server(&["--admin-poll-ms", "50"])?;
    let two = sb.start_server(&["--admin-poll-ms", "50"])?;
    let mut alice =
        sb.online_client(one.addr, "alice", &With::flags(&["--codecs", "h264"]), &[])?;
    let mut bob = sb.online_client(one.addr, "bob", &With::Terminal("bob-phone".into()), &[])?;
    alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    let mut carol = sb.online_client(two.addr, "carol", &With::flags(&["--codecs", "vp8"]), &[])?;

    // A wrong password is still refused.
    let mut mallory = sb.client_with_password(
        one.addr,
        "alice",
        "not-alices-password",
        &With::flags(&["--codecs", "h264"]),
        &[],
    )?;
    ensure!(
        mallory.wait_logged_in().is_err(),
        "a wrong password logged in"
    );

    // Administrator changes reach the node each user is on.
    sb.admin(&["contact", "add", "alice", "carol"])?;
    sb.admin(&["contact", "add", "carol", "alice"])?;
    alice.wait_event_where("contacts_changed", |v| v["user"] == "carol")?;
    carol.wait_event_where("contacts_changed", |v| v["user"] == "alice")?;

    // A change over the protocol on node one reaches bob's other terminal, on node
    // two, through the log...
    let mut bob_two = sb.online_client(two.addr, "bob", &With::flags(&["--codecs", "vp8"]), &[])?;
    bob.send(json!({"cmd": "add", "user": "carol"}))?;
    bob.wait_event_where("contacts_changed", |v| v["user"] == "carol")?;
    bob_two.wait_event_where("contacts_changed", |v| {
        v["user"] == "carol" && v["added"] == true
    })?;
    // ...and is stored in PostgreSQL before it is acknowledged...
    let mut one = one;
    one.kill();
    // ...so it outlives a SIGKILL.
    ensure!(
        sb.admin_lines(&["contact", "list", "bob"])? == ["alice", "carol"],
        "bob's protocol change stored"
    );
    ensure!(
        sb.admin_lines(&["contact", "dump"])?
            == [
                "alice bob",
                "alice carol",
                "bob alice",
                "bob carol",
                "carol alice"
            ],
        "contact dump"
    );
    let again = sb.start_server(&[])?;
    sb.online_client(again.addr, "bob", &With::Terminal("bob-phone".into()), &[])?;
    drop(two);
    Ok(())
}

/// `serve` failing after it opened a PostgreSQL store (here: an address it cannot listen
/// on) drops the store on a tokio thread, where the blocking client cannot close itself;
/// it exits with the error, not a panic.
#[test]
fn serve_fails_cleanly_after_opening_a_postgres_store() -> Res<()> {
    let db = PgDb::create()?;
    ensure_binaries()?;
    let out = std::process::Command::new(server_bin())
        .args(["serve", "--db", &db.url, "--listen", "256.1.1.1:1"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "exit status {:?}: {err}",
        out.status
    );
    ensure!(err.contains("cannot listen on 256.1.1.1:1"), "{err}");
    ensure!(!err.contains("panicked"), "{err}");
    Ok(())
}
