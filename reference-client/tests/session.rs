//! The `precall-client` binary against a minimal in-test TCP embedding of the core's
//! [`Server`] (not the reference server, which has its own tests): login, the table,
//! both kinds of call, a capability change, pings, logout, a server that goes away, and
//! the exit codes.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use precall_protocol::server::{Server, ServerConfig, ServerEvent};
use precall_protocol::sim::{sample_caps, Directory};
use precall_protocol::{ConnId, Epoch, UserId};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_precall-client");
const WAIT: Duration = Duration::from_secs(10);

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// alice and bob list each other; alice also lists carol, who never logs in.
fn directory() -> Directory {
    let mut d = Directory::default();
    for name in ["alice", "bob", "carol"] {
        d.add_user(&user(name), "pw");
    }
    d.befriend(&user("alice"), &user("bob"));
    d.accounts
        .get_mut(&user("alice"))
        .unwrap()
        .contacts
        .insert(user("carol"));
    d
}

enum Input {
    Open(ConnId, OwnedWriteHalf),
    Bytes(ConnId, Vec<u8>),
    Closed(ConnId),
    /// Close every connection without a word (a server that goes away).
    Drop,
}

/// Serves the core's `Server` on an ephemeral port; returns its address and a handle
/// to make it drop every connection.
async fn serve(
    directory: Directory,
    config: ServerConfig,
) -> (String, mpsc::UnboundedSender<Input>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let accept_tx = tx.clone();
    tokio::spawn(async move {
        let mut next = 1;
        while let Ok((stream, _)) = listener.accept().await {
            let conn = ConnId(next);
            next += 1;
            let (mut rd, wr) = stream.into_split();
            let tx = accept_tx.clone();
            let _ = tx.send(Input::Open(conn, wr));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let _ = tx.send(Input::Bytes(conn, buf[..n].to_vec()));
                        }
                    }
                }
                let _ = tx.send(Input::Closed(conn));
            });
        }
    });
    tokio::spawn(async move {
        let start = Instant::now();
        let epoch = Epoch::new(start.into_std());
        let now = || epoch.time(Instant::now().into_std());
        let mut server = Server::new(config);
        let mut writers: HashMap<ConnId, OwnedWriteHalf> = HashMap::new();
        loop {
            let deadline = server
                .poll_timeout()
                .map(|t| Instant::from_std(epoch.instant(t)));
            tokio::select! {
                input = rx.recv() => match input {
                    None => return,
                    Some(Input::Open(conn, wr)) => {
                        server.connect(conn, now()).unwrap();
                        writers.insert(conn, wr);
                    }
                    Some(Input::Bytes(conn, data)) => server.receive(conn, &data, now()),
                    Some(Input::Closed(conn)) => {
                        server.connection_closed(conn, now());
                        writers.remove(&conn);
                    }
                    Some(Input::Drop) => {
                        for (_, mut wr) in writers.drain() {
                            let _ = wr.shutdown().await;
                        }
                    }
                },
                () = sleep_until(deadline.unwrap_or(start)), if deadline.is_some() => {
                    server.handle_timeout(now());
                }
            }
            while let Some(ev) = server.poll_event() {
                match ev {
                    ServerEvent::Transmit { conn, frame } => {
                        if let Some(wr) = writers.get_mut(&conn) {
                            let _ = wr.write_all(&frame).await;
                        }
                    }
                    ServerEvent::Close { conn } => {
                        if let Some(mut wr) = writers.remove(&conn) {
                            let _ = wr.shutdown().await;
                        }
                    }
                    ServerEvent::Authenticate(req) => {
                        let verdict = directory.verdict(&req);
                        server.complete_auth(req.ticket, verdict, now()).unwrap();
                    }
                    _ => {}
                }
            }
        }
    });
    (addr, tx)
}

/// A running `precall-client`.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Proc {
            child,
            stdin,
            stdout,
        }
    }

    fn json(addr: &str, name: &str, login: &[&str]) -> Proc {
        let mut args = vec![
            "--server",
            addr,
            "--user",
            name,
            "--password",
            "pw",
            "--json",
        ];
        args.extend_from_slice(login);
        Proc::start(&args)
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    async fn cmd(&mut self, cmd: Value) {
        self.send(&cmd.to_string()).await;
    }

    async fn line(&mut self) -> String {
        timeout(WAIT, self.stdout.next_line())
            .await
            .expect("no output in time")
            .unwrap()
            .expect("stdout closed")
    }

    /// The next JSON event named `name`; every line must be a JSON event.
    async fn expect(&mut self, name: &str) -> Value {
        loop {
            let line = self.line().await;
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(v["event"].is_string(), "{line}");
            if v["event"] == name {
                return v;
            }
        }
    }

    /// Closes standard input and waits for the exit code.
    async fn finish(mut self) -> i32 {
        self.stdin.take();
        let status = timeout(WAIT, self.child.wait()).await.unwrap().unwrap();
        status.code().unwrap()
    }
}

#[tokio::test]
async fn two_clients_call_each_other_on_both_paths() {
    let (addr, _server) = serve(directory(), ServerConfig::default()).await;
    let mut alice = Proc::json(
        &addr,
        "alice",
        &["--codecs", "h264,vp8", "--width", "1920", "--fps", "30"],
    );
    let login = alice.expect("logged_in").await;
    assert_eq!(login["user"], "alice");
    let alice_session = login["session"].as_u64().unwrap();
    assert_eq!(alice.expect("synced").await["table"], json!([]));

    let caps = serde_json::to_string(&sample_caps(&["vp8"], 1280, 25)).unwrap();
    let file = std::env::temp_dir().join(format!("precall-client-it-{}.json", std::process::id()));
    std::fs::write(&file, caps).unwrap();
    let mut bob = Proc::json(&addr, "bob", &["--caps", file.to_str().unwrap()]);
    let bob_session = bob.expect("logged_in").await["session"].as_u64().unwrap();
    let synced = bob.expect("synced").await;
    let table = synced["table"].as_array().unwrap();
    assert_eq!(table.len(), 1, "{synced}");
    assert_eq!(table[0]["user"], "alice");
    assert_eq!(table[0]["send"]["video"]["codec"], "vp8");

    let online = alice.expect("peer_online").await;
    assert_eq!(
        (online["user"].as_str(), online["session"].as_u64()),
        (Some("bob"), Some(bob_session))
    );
    assert_eq!(online["params"]["recv"]["video"]["fps"], 25);

    // The table: bob with the pre-negotiated parameters, carol offline.
    alice.cmd(json!({"cmd": "table"})).await;
    let table = alice.expect("table").await;
    assert_eq!(table["table"][0]["user"], "bob");
    assert_eq!(table["table"][0]["send"], online["params"]["send"]);
    assert_eq!(table["table"][1], json!({"user": "carol", "online": false}));

    // Local errors, and the session goes on.
    alice.cmd(json!({"cmd": "call", "to": "carol"})).await;
    assert_eq!(alice.expect("error").await["code"], "not_in_table");
    alice.send("dance").await;
    assert_eq!(alice.expect("error").await["code"], "bad_command");
    alice.cmd(json!({"cmd": "dance"})).await;
    assert_eq!(alice.expect("error").await["code"], "unknown_command");

    // The fast path.
    alice.cmd(json!({"cmd": "call", "to": "bob"})).await;
    let call = alice.expect("call_ringing").await["call"].as_u64().unwrap();
    let incoming = bob.expect("incoming_call").await;
    assert_eq!(incoming["call"], call);
    assert_eq!(incoming["from"], format!("alice/{alice_session}"));
    bob.cmd(json!({"cmd": "answer", "call": call})).await;
    let at_bob = bob.expect("call_established").await;
    assert_eq!(at_bob["path"], "fast");
    assert!(at_bob.get("setup_us").is_none());
    let at_alice = alice.expect("call_established").await;
    assert_eq!(at_alice["path"], "fast");
    assert!(at_alice["setup_us"].as_u64().unwrap() > 0);
    assert_eq!(at_alice["params"]["send"], at_bob["params"]["recv"]);
    assert_eq!(at_alice["params"]["recv"], at_bob["params"]["send"]);
    alice.cmd(json!({"cmd": "hangup", "call": call})).await;
    let ended = bob.expect("call_ended").await;
    assert_eq!(
        (ended["call"].as_u64(), ended["reason"].as_str()),
        (Some(call), Some("hangup"))
    );

    // The prior-art call: capabilities on the wire, same parameters.
    alice
        .cmd(json!({"cmd": "call_prior_art", "to": format!("bob/{bob_session}")}))
        .await;
    let call = alice.expect("call_ringing").await["call"].as_u64().unwrap();
    bob.expect("incoming_call").await;
    bob.send(&json!({"cmd": "answer", "call": call}).to_string())
        .await;
    let prior = alice.expect("call_established").await;
    assert_eq!(prior["path"], "fallback");
    assert_eq!(prior["params"], at_alice["params"]);
    assert!(prior["setup_us"].is_u64());
    bob.cmd(json!({"cmd": "hangup", "call": call})).await;
    alice.expect("call_ended").await;

    // A capability change reaches alice's table.
    bob.cmd(json!({"cmd": "caps", "codecs": "h264", "width": 640, "fps": 15}))
        .await;
    bob.expect("caps_acknowledged").await;
    let updated = alice.expect("peer_updated").await;
    assert_eq!(updated["params"]["recv"]["video"]["codec"], "h264");

    // End of input logs out.
    bob.stdin.take();
    bob.expect("logged_out").await;
    assert_eq!(bob.finish().await, 0);
    let offline = alice.expect("peer_offline").await;
    assert_eq!(offline["user"], "bob");
    alice.cmd(json!({"cmd": "logout"})).await;
    alice.expect("logged_out").await;
    assert_eq!(alice.finish().await, 0);
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn pings_keep_an_idle_session_alive_and_a_vanishing_server_logs_out() {
    let config = {
        let mut config = ServerConfig::default();
        config.idle_timeout = Duration::from_millis(600);
        config
    };
    let (addr, server) = serve(directory(), config).await;
    // Text mode, for people.
    let mut carol = Proc::start(&[
        "--server",
        &addr,
        "--user",
        "carol",
        "--password",
        "pw",
        "--codecs",
        "h264",
        "--ping-ms",
        "150",
        "--no-reconnect",
    ]);
    assert!(carol.line().await.starts_with("logged in as carol"));
    assert!(carol.line().await.starts_with("synced"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    carol.send("table").await;
    assert_eq!(carol.line().await, "table: no contacts");
    server.send(Input::Drop).ok().unwrap();
    assert_eq!(carol.line().await, "logged out");
    assert_eq!(carol.finish().await, 0);
}

#[tokio::test]
async fn a_refused_login_exits_1() {
    let (addr, _server) = serve(directory(), ServerConfig::default()).await;
    let mut p = Proc::start(&[
        "--server",
        &addr,
        "--user",
        "alice",
        "--password",
        "wrong",
        "--json",
        "--codecs",
        "h264",
    ]);
    assert_eq!(p.expect("error").await["code"], "bad_credentials");
    p.expect("logged_out").await;
    assert_eq!(p.finish().await, 1);
}

#[tokio::test]
async fn a_refused_connection_exits_1() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = Command::new(BIN)
        .args([
            "--server",
            &addr,
            "--user",
            "alice",
            "--password",
            "pw",
            "--codecs",
            "h264",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn invalid_arguments_exit_2_with_a_message() {
    let base = [
        "--server",
        "127.0.0.1:9",
        "--user",
        "alice",
        "--password",
        "pw",
    ];
    for extra in [
        &["--codecs", "h264", "--width", "0"][..],
        &["--codecs", "H264"],
        &["--codecs", "h264", "--fps", "0"],
        &["--caps", "/nonexistent/caps.json"],
        &["--terminal", "bad id"],
        &[],
        &["--codecs", "h264", "--terminal", "t1"],
    ] {
        let out = Command::new(BIN)
            .args(base)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(!out.stderr.is_empty(), "{extra:?}");
    }
    let out = Command::new(BIN)
        .args([
            "--server",
            "x",
            "--user",
            "Alice",
            "--password",
            "pw",
            "--codecs",
            "h264",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--user"));
}
