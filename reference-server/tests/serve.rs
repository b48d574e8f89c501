//! The real `precall-server` binary over real sockets: admin subcommands, `serve`, raw
//! frames (4-byte big-endian length + JSON) from `spec/vectors/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_precall-server");
const WAIT: Duration = Duration::from_secs(20);

fn vector(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spec/vectors")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn admin(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("admin")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

fn admin_ok(db: &Path, args: &[&str]) -> String {
    let out = admin(db, args);
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < WAIT, "process did not exit");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running `serve`, killed on drop.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(db: &Path, listen: &str, extra: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--db")
            .arg(db)
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            // PRECALL_TEST_LOG=1 shows the servers' logs.
            .stderr(if std::env::var_os("PRECALL_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).expect("no `listening on` line");
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_string();
        Serve { child, addr }
    }

    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_exit(&mut self.child)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn send(s: &mut TcpStream, msg: &Value) {
    let payload = serde_json::to_vec(msg).unwrap();
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    s.write_all(&frame).unwrap();
}

/// The next frame, or `None` at end of stream.
fn recv(s: &mut impl Read) -> Option<Value> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("read: {e}"),
    }
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut payload).unwrap();
    Some(serde_json::from_slice(&payload).unwrap())
}

fn recv_type(s: &mut TcpStream, ty: &str) -> Value {
    let msg = recv(s).expect("connection closed");
    assert_eq!(msg["type"], ty, "{msg}");
    msg
}

/// Reads frames until one of type `ty` (skipping others).
fn recv_until(s: &mut impl Read, ty: &str) -> Value {
    loop {
        let msg = recv(s).unwrap_or_else(|| panic!("closed before {ty}"));
        if msg["type"] == ty {
            return msg;
        }
    }
}

fn login_caps(user: &str, password: &str) -> Value {
    let mut login = vector("login_caps.json");
    login["user"] = json!(user);
    login["password"] = json!(password);
    login
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

fn fixture(users: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("precall.db");
    for (user, password) in users {
        admin_ok(&db, &["user", "add", user, "--password", password]);
    }
    Fixture { _dir: dir, db }
}

#[test]
fn login_over_tcp_then_sigterm_exits_zero() {
    let login = vector("login_caps.json");
    let password = login["password"].as_str().unwrap();
    let f = fixture(&[("alice", password)]);
    assert_eq!(admin_ok(&f.db, &["user", "list"]), "alice\n");
    let mut server = Serve::start(&f.db, "127.0.0.1:0", &[]);

    let mut alice = connect(&server.addr);
    send(&mut alice, &login);
    let ok = recv_type(&mut alice, "login_ok");
    assert_eq!(ok["user"], "alice");
    assert_eq!(ok["capabilities"], login["with"]["capabilities"]);
    recv_type(&mut alice, "synced");

    // A wrong password is refused, and the connection closed.
    let mut eve = connect(&server.addr);
    send(&mut eve, &login_caps("alice", "wrong"));
    assert_eq!(recv_type(&mut eve, "error")["code"], "bad_credentials");
    assert!(recv(&mut eve).is_none());
    // So is an unknown user, identically.
    let mut eve = connect(&server.addr);
    send(&mut eve, &login_caps("mallory", "wrong"));
    assert_eq!(recv_type(&mut eve, "error")["code"], "bad_credentials");
    assert!(recv(&mut eve).is_none());

    // Shutdown: the client is told, the process exits 0.
    assert!(server.terminate().success());
    assert_eq!(recv_type(&mut alice, "error")["code"], "server_shutdown");
    assert!(recv(&mut alice).is_none());
}

#[test]
fn logout_closes_the_connection() {
    let f = fixture(&[("alice", "pw")]);
    let server = Serve::start(&f.db, "127.0.0.1:0", &[]);
    let mut alice = connect(&server.addr);
    send(&mut alice, &login_caps("alice", "pw"));
    recv_type(&mut alice, "login_ok");
    recv_type(&mut alice, "synced");
    send(&mut alice, &vector("logout.json"));
    recv_type(&mut alice, "logged_out");
    assert!(recv(&mut alice).is_none());
}

#[test]
fn address_in_use_fails_with_a_message() {
    let f = fixture(&[]);
    let first = Serve::start(&f.db, "127.0.0.1:0", &[]);
    let mut second = Command::new(BIN)
        .arg("serve")
        .arg("--db")
        .arg(&f.db)
        .args(["--listen", &first.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut second);
    let out = second.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[test]
fn unusable_database_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, [0x5au8; 8192]).unwrap();
    for db in [dir.path(), junk.as_path()] {
        let out = Command::new(BIN)
            .arg("serve")
            .arg("--db")
            .arg(db)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", db.display());
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot open database"), "{stderr}");
    }
}

#[test]
fn bad_flags_exit_2() {
    let out = Command::new(BIN)
        .args(["serve", "--db", "x.db", "--queue-frames", "zero"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn admin_errors_are_non_zero() {
    let f = fixture(&[("alice", "pw")]);
    for args in [
        &["user", "add", "alice", "--password", "pw"][..],
        &["user", "remove", "bob"],
        &["user", "passwd", "bob", "--password", "pw"],
        &["contact", "add", "alice", "bob"],
        &["contact", "add", "alice", "alice"],
        &["contact", "list", "bob"],
        &[
            "terminal",
            "register",
            "t1",
            "--owner",
            "alice",
            "--caps",
            "/nonexistent",
        ],
        &["terminal", "remove", "t1"],
    ] {
        let out = admin(&f.db, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = admin(&f.db, &["user", "add", "Bad Name", "--password", "pw"]);
    assert!(!out.status.success());
}

#[test]
fn login_by_registered_terminal() {
    let login = vector("login_terminal.json");
    let f = fixture(&[
        ("bob", login["password"].as_str().unwrap()),
        ("carol", "pw"),
    ]);
    let caps = vector("online.json")["capabilities"].clone();
    let caps_file = f.db.with_file_name("caps.json");
    std::fs::write(&caps_file, caps.to_string()).unwrap();
    let caps_arg = caps_file.to_str().unwrap();
    admin_ok(
        &f.db,
        &[
            "terminal",
            "register",
            "bob-phone",
            "--owner",
            "bob",
            "--caps",
            caps_arg,
        ],
    );
    assert_eq!(admin_ok(&f.db, &["terminal", "list"]), "bob-phone bob\n");
    let server = Serve::start(&f.db, "127.0.0.1:0", &[]);

    let mut bob = connect(&server.addr);
    send(&mut bob, &login);
    assert_eq!(recv_type(&mut bob, "login_ok")["capabilities"], caps);

    // The identifier is bob's, not carol's.
    let mut carol = connect(&server.addr);
    let mut other = login.clone();
    other["user"] = json!("carol");
    other["password"] = json!("pw");
    send(&mut carol, &other);
    assert_eq!(recv_type(&mut carol, "error")["code"], "unknown_terminal");
}

#[test]
fn contact_changes_persist_and_admin_changes_reach_online_users() {
    let f = fixture(&[("alice", "pw"), ("bob", "pw")]);
    let server = Serve::start(&f.db, "127.0.0.1:0", &["--admin-poll-ms", "20"]);
    let mut alice = connect(&server.addr);
    send(&mut alice, &login_caps("alice", "pw"));
    recv_type(&mut alice, "login_ok");
    recv_type(&mut alice, "synced");
    let mut bob = connect(&server.addr);
    send(&mut bob, &login_caps("bob", "pw"));
    recv_type(&mut bob, "login_ok");
    recv_type(&mut bob, "synced");

    // Through the protocol: persisted by the server.
    send(
        &mut alice,
        &json!({"type": "add_contact", "req": 1, "user": "bob"}),
    );
    assert_eq!(recv_type(&mut alice, "contact_added")["req"], 1);
    // Through admin while running: applied to the online user.
    admin_ok(&f.db, &["contact", "add", "bob", "alice"]);
    assert_eq!(recv_type(&mut bob, "contact_added")["user"], "alice");
    assert_eq!(recv_type(&mut bob, "online")["user"], "alice");
    assert_eq!(recv_type(&mut alice, "online")["user"], "bob");

    admin_ok(&f.db, &["contact", "remove", "bob", "alice"]);
    assert_eq!(recv_type(&mut bob, "contact_removed")["user"], "alice");
    assert_eq!(recv_type(&mut alice, "offline")["user"], "bob");

    // The server wrote alice's own change (the store thread runs jobs in order, and the
    // change was answered before the admin change above was applied).
    assert_eq!(admin_ok(&f.db, &["contact", "list", "alice"]), "bob\n");
    assert_eq!(admin_ok(&f.db, &["contact", "list", "bob"]), "");
}

#[test]
fn a_peer_that_stops_reading_is_dropped() {
    let f = fixture(&[("alice", "pw"), ("bob", "pw")]);
    admin_ok(&f.db, &["contact", "add", "alice", "bob"]);
    admin_ok(&f.db, &["contact", "add", "bob", "alice"]);
    // One read of alice's requests yields a burst of answers: the queue holds it. Her
    // flood of capability changes is what this test needs: their limits are off.
    let server = Serve::start(
        &f.db,
        "127.0.0.1:0",
        &[
            "--queue-frames",
            "256",
            "--max-caps-updates",
            "0",
            "--max-frames-per-second",
            "0",
        ],
    );
    let mut bob = connect(&server.addr);
    send(&mut bob, &login_caps("bob", "pw"));
    recv_type(&mut bob, "login_ok");
    recv_type(&mut bob, "synced");
    let mut alice = connect(&server.addr);
    send(&mut alice, &login_caps("alice", "pw"));
    recv_type(&mut alice, "login_ok");
    recv_until(&mut alice, "synced");
    // bob stops reading; alice changes capabilities over and over, each change pushed to
    // bob, until bob's socket buffers and then his queue fill up. alice reads her
    // acknowledgements as she goes, so her own queue stays short.
    let mut reader = BufReader::new(alice.try_clone().unwrap());
    let mut caps = vector("update_caps.json");
    let mut batch = Vec::new();
    let mut req = 0u32;
    'flood: for _ in 0..100_000 {
        batch.clear();
        for _ in 0..16 {
            req += 1;
            caps["req"] = json!(req);
            caps["capabilities"]["bandwidth"]["up_kbps"] = json!(1000 + req % 1000);
            let payload = serde_json::to_vec(&caps).unwrap();
            batch.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            batch.extend_from_slice(&payload);
        }
        alice.write_all(&batch).unwrap();
        loop {
            let msg = recv(&mut reader).expect("alice was disconnected");
            match msg["type"].as_str() {
                Some("offline") => {
                    assert_eq!(msg["user"], "bob");
                    break 'flood;
                }
                Some("caps_ack") if msg["req"] == req => break,
                Some("caps_ack") => {}
                _ => panic!("unexpected {msg}"),
            }
        }
    }
    assert!(
        recv(&mut bob).is_some(),
        "bob still gets what was written before he was dropped"
    );
    drop(bob);
}

#[test]
fn deadlines_fire_on_time() {
    let f = fixture(&[("alice", "pw")]);
    let server = Serve::start(
        &f.db,
        "127.0.0.1:0",
        &["--login-timeout-ms", "300", "--idle-timeout-ms", "400"],
    );
    let start = Instant::now();
    let mut silent = connect(&server.addr);
    assert_eq!(recv_type(&mut silent, "error")["code"], "login_timeout");
    assert!(recv(&mut silent).is_none());
    assert!(start.elapsed() >= Duration::from_millis(300));

    let mut alice = connect(&server.addr);
    send(&mut alice, &login_caps("alice", "pw"));
    recv_type(&mut alice, "login_ok");
    recv_type(&mut alice, "synced");
    let logged_in = Instant::now();
    assert_eq!(recv_type(&mut alice, "error")["code"], "idle_timeout");
    assert!(logged_in.elapsed() >= Duration::from_millis(300));
}
