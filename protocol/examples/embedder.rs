//! An embedder of [`precall_protocol::Client`] written from the crate documentation
//! alone ("Driving a client over a socket"): blocking `std` sockets, one thread, no
//! async runtime and no helper from the rest of the workspace.
//!
//! It logs in to a real `precall-server`, prints its parameter table when synced, and
//! then, as the caller (`--call USER`), places a call to that user's terminal, hangs up
//! once it is established, and (with `--drop`) drops its own connection and resumes the
//! session on a new one before logging out; as the callee (`--answer`), it accepts every
//! call and logs out when the caller's terminal goes offline.
//!
//! ```text
//! cargo run -p precall-protocol --example embedder -- --server 127.0.0.1:7700 \
//!     --user alice --password-env PW --call bob --drop
//! ```
//!
//! Every line it prints is one event, for people and for `e2e/tests/embedder.rs`, which
//! runs two of them against a real server.

// The crate's lints forbid sockets, clocks and sleeping inside the core; an embedder is
// where they belong.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use precall_protocol::{
    Backoff, CallParams, Capabilities, Client, ClientConfig, ClientEvent, Direction, Endpoint,
    Epoch, ErrorCode, LoginWith, Password, UserId,
};

/// What the command line asked for.
struct Args {
    server: String,
    user: UserId,
    password: Password,
    call: Option<UserId>,
    answer: bool,
    drop: bool,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut server, mut user, mut password) = (None, None, None);
    let mut args = Args {
        server: String::new(),
        user: UserId::new("x").map_err(|e| e.to_string())?,
        password: Password::new("x").map_err(|e| e.to_string())?,
        call: None,
        answer: false,
        drop: false,
        timeout: Duration::from_secs(30),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => server = Some(value()?),
            "--user" => user = Some(UserId::new(value()?).map_err(|e| e.to_string())?),
            "--password-env" => {
                let var = value()?;
                let pw = std::env::var(&var).map_err(|_| format!("{var} is not set"))?;
                password = Some(Password::new(pw).map_err(|e| e.to_string())?);
            }
            "--call" => args.call = Some(UserId::new(value()?).map_err(|e| e.to_string())?),
            "--answer" => args.answer = true,
            "--drop" => args.drop = true,
            "--timeout-s" => {
                let s: u64 = value()?.parse().map_err(|e| format!("--timeout-s: {e}"))?;
                args.timeout = Duration::from_secs(s);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    args.server = server.ok_or("--server ADDR is required")?;
    args.user = user.ok_or("--user NAME is required")?;
    args.password = password.ok_or("--password-env VAR is required")?;
    Ok(args)
}

/// This terminal: H.264 and VP8, a 1080p screen, a 720p camera.
fn capabilities() -> Result<Capabilities, precall_protocol::InvalidValue> {
    Capabilities::builder()
        .codecs(["h264", "vp8"])
        .screen(1920, 1080)
        .camera(1280, 720, 30)
        .bandwidth(2_000, 4_000)
        .build()
}

/// `send h264 1280x720@30 1500kbps, receive ...`
fn describe(p: &CallParams) -> String {
    let way = |d: &Direction| match d.video() {
        Some(v) => format!(
            "{} {}x{}@{} {}kbps",
            v.codec, v.width, v.height, v.fps, v.bitrate_kbps
        ),
        None => "no video".to_owned(),
    };
    format!("send {}, receive {}", way(&p.send), way(&p.recv))
}

/// A random number for the back-off's jitter, from the standard library alone.
fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// Where the session stands, beyond what the core knows: what this program wants.
#[derive(Default)]
struct Script {
    called: bool,
    dropped: bool,
    resumed: bool,
    callers: Vec<Endpoint>,
    /// The server refused the resume: log in again on a new connection.
    relogin: bool,
    done: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embedder: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let epoch = Epoch::new(Instant::now());
    let now = || epoch.time(Instant::now());
    let give_up = Instant::now() + args.timeout;
    let mut client = Client::new(ClientConfig::default());
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut socket = Some(TcpStream::connect(&args.server)?);
    let login = |client: &mut Client| {
        let with = LoginWith::Capabilities(capabilities()?);
        client.login(args.user.clone(), args.password.clone(), with, now())?;
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    login(&mut client)?;
    let mut script = Script::default();
    let mut buf = vec![0u8; 64 * 1024];
    while !script.done {
        if Instant::now() > give_up {
            return Err("timed out".into());
        }
        // 1. Frames out, in order.
        if let Some(s) = socket.as_mut() {
            while let Some(frame) = client.poll_transmit() {
                if s.write_all(&frame).is_err() {
                    client.connection_closed(now());
                    break;
                }
            }
        }
        // 2. Events to the application (which may give commands: inputs again).
        while let Some(event) = client.poll_event() {
            on_event(&mut client, &args, &mut script, &mut socket, event, now())?;
        }
        // No connection: resume a detached session, or log in again after a refused
        // resume, on a new connection after the back-off.
        if socket.is_none() && (client.can_resume() || script.relogin) && !script.done {
            let wait = backoff.next_delay(random(), None);
            println!("reconnecting in {} ms", wait.as_millis());
            std::thread::sleep(wait);
            if let Ok(s) = TcpStream::connect(&args.server) {
                socket = Some(s);
                backoff.reset();
                if client.can_resume() {
                    client.resume(now())?;
                } else {
                    script.relogin = false;
                    login(&mut client)?;
                }
            }
            continue;
        }
        let Some(s) = socket.as_mut() else {
            // Idle without a connection: the session is over.
            if !script.done {
                return Err("the session ended".into());
            }
            break;
        };
        // 3. Wait for bytes until the next deadline, then feed what happened.
        let deadline = client.poll_timeout().map(|t| epoch.instant(t));
        let wait = deadline.map_or(Duration::from_millis(200), |d| {
            d.saturating_duration_since(Instant::now())
        });
        s.set_read_timeout(Some(
            wait.clamp(Duration::from_millis(1), Duration::from_millis(200)),
        ))?;
        match s.read(&mut buf) {
            Ok(0) => {
                socket = None;
                client.connection_closed(now());
            }
            Ok(n) => {
                if let Err(e) = client.receive(&buf[..n], now()) {
                    println!("stream unusable: {e}");
                    socket = None;
                    client.connection_closed(now());
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                socket = None;
                client.connection_closed(now());
            }
        }
        client.handle_timeout(now());
    }
    Ok(())
}

/// One event: print it, and do what the script says next.
fn on_event(
    client: &mut Client,
    args: &Args,
    script: &mut Script,
    socket: &mut Option<TcpStream>,
    event: ClientEvent,
    now: precall_protocol::Time,
) -> Result<(), Box<dyn std::error::Error>> {
    match event {
        ClientEvent::LoggedIn { session } => {
            println!("logged in as {} session {session}", args.user);
            if let Some(caps) = client.capabilities() {
                println!("capabilities {}", serde_json::to_string(caps)?);
            }
        }
        ClientEvent::Synced => {
            println!("synced: {} terminals in the table", client.peers().count());
            for (endpoint, peer) in client.peers() {
                println!("  {endpoint}: {}", describe(&peer.params));
            }
            if script.resumed {
                client.logout(now)?;
            }
        }
        ClientEvent::PeerOnline { endpoint, params } => {
            println!("online {endpoint}: {}", describe(&params));
        }
        ClientEvent::PeerOffline { endpoint } => {
            println!("offline {endpoint}");
            if args.answer && script.callers.contains(&endpoint) {
                client.logout(now)?;
            }
        }
        ClientEvent::IncomingCall {
            call,
            from,
            params,
            media: _,
        } => {
            println!("incoming call {call} from {from}: {}", describe(&params));
            if args.answer {
                script.callers.push(from);
                client.answer(call, true, now)?;
            }
        }
        ClientEvent::CallRinging { call, to, .. } => println!("call {call} ringing at {to}"),
        ClientEvent::CallEstablished {
            call,
            params,
            path,
            media: _,
        } => {
            println!(
                "call {call} established on the {} path: {}",
                path.name(),
                describe(&params)
            );
            if args.call.is_some() {
                // Hanging up ends the call here at once (no event for our own hangup).
                client.hangup(call, now)?;
                println!("hung up call {call}");
                if args.drop {
                    // Drop our own connection, as a network would: the session is
                    // detached, not over, and is resumed on a new connection.
                    script.dropped = true;
                    println!("dropping the connection");
                    // Written before the drop, the hangup still reaches the server.
                    if let Some(mut s) = socket.take() {
                        while let Some(frame) = client.poll_transmit() {
                            let _ = s.write_all(&frame);
                        }
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    client.connection_closed(now);
                } else {
                    client.logout(now)?;
                }
            }
        }
        ClientEvent::CallEnded { call, reason } => println!("call {call} ended: {reason:?}"),
        ClientEvent::CallFailed { to, code, .. } => println!("call to {to} failed: {code:?}"),
        ClientEvent::Detached => println!(
            "detached: table kept ({} terminals)",
            client.peers().count()
        ),
        ClientEvent::Resumed { session, snapshot } => {
            script.resumed = true;
            println!("resumed session {session} (snapshot: {snapshot})");
        }
        ClientEvent::ServerError { code, detail, .. } => {
            println!("server error {code:?} {detail}");
            if code == ErrorCode::ResumeFailed {
                // The server no longer knows the session: log in again (on a new
                // connection, since this one closes).
                println!("resume failed: logging in again");
                script.relogin = true;
            }
        }
        ClientEvent::LoggedOut => {
            println!("logged out");
            script.done = !script.relogin;
        }
        ClientEvent::Violation(v) => println!("server broke the protocol: {v}"),
        _ => {}
    }
    // As the caller: once the callee's terminal is in the table, call it (once).
    if let (Some(peer), false) = (&args.call, script.called) {
        let target = client
            .peers()
            .map(|(e, _)| e.clone())
            .find(|e| &e.user == peer);
        if let Some(to) = target {
            script.called = true;
            println!("calling {to}");
            client.place_call(&to, now)?;
        }
    }
    Ok(())
}
