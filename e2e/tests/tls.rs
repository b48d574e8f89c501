//! TLS between the real binaries: `precall-server serve --tls-cert --tls-key` and
//! `precall-client --tls-ca [--tls-server-name]`, with a CA and a server certificate
//! generated at test time (rcgen) into the sandbox.
//!
//! - a client that trusts the right CA logs in over TLS and sees its contact online;
//! - a client that trusts another CA, or expects another name, is refused with an error
//!   about the certificate and a non-zero exit, while the server keeps serving the
//!   others;
//! - plain TCP to the TLS port, and a peer that never starts the handshake, are dropped
//!   without harming anyone else;
//! - listening in the clear on a non-loopback address prints a `WARNING:` line; on
//!   loopback, or with TLS, it does not.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use precall_e2e::*;
use precall_protocol::ClientMessage;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::json;

fn alice_caps() -> precall_protocol::Capabilities {
    caps(&["h264", "vp8"], 1920, 30)
}

/// A certificate authority generated for one test.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    /// Writes the CA certificate (PEM) into the sandbox.
    fn write(&self, sb: &Sandbox, file: &str) -> Res<PathBuf> {
        sb.write(file, &self.cert.pem())
    }

    /// Issues a server certificate for `localhost` and 127.0.0.1 and writes it and its
    /// key (PEM) into the sandbox; returns (certificate file, key file).
    fn issue_server(&self, sb: &Sandbox) -> Res<(PathBuf, PathBuf)> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "precall test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        Ok((
            sb.write("server.pem", &cert.pem())?,
            sb.write("server.key", &key.serialize_pem())?,
        ))
    }
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The usual cast, a CA, and a server serving TLS with a certificate it issued.
struct World {
    sb: Sandbox,
    server: ServerProc,
    /// The CA file the clients are given.
    ca: String,
}

fn world(extra: &[&str]) -> Res<World> {
    let sb = Sandbox::with_cast()?;
    let ca = Ca::new("precall test CA");
    let ca_file = path(&ca.write(&sb, "ca.pem")?);
    let (cert, key) = ca.issue_server(&sb)?;
    let (cert, key) = (path(&cert), path(&key));
    let mut args = vec!["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    args.extend(extra);
    let server = sb.start_server(&args)?;
    Ok(World {
        sb,
        server,
        ca: ca_file,
    })
}

impl World {
    /// A client logged in over TLS (trusting the world's CA) and synced.
    fn online(&self, user: &str, with: &With, extra: &[&str]) -> Res<ClientProc> {
        let mut args = vec!["--tls-ca", self.ca.as_str()];
        args.extend(extra);
        self.sb.online_client(self.server.addr, user, with, &args)
    }

    /// alice and bob online over TLS, alice seeing bob online.
    fn alice_and_bob(&self) -> Res<(ClientProc, ClientProc)> {
        let alice_caps = self.sb.write_caps("alice.json", &alice_caps())?;
        let mut alice = self.online("alice", &With::CapsFile(alice_caps), &[])?;
        let bob = self.online(
            "bob",
            &With::Terminal("bob-phone".into()),
            &["--tls-server-name", "localhost"],
        )?;
        alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
        Ok((alice, bob))
    }

    /// The server is up, alice is still served over TLS and still holds bob online.
    fn still_served(&mut self, alice: &mut ClientProc) -> Res<()> {
        ensure!(
            self.server.is_running(),
            "the server exited; its log:\n{}",
            self.server.log_tail()
        );
        let t = alice.table()?;
        ensure!(
            online_row(&t, "bob").is_some(),
            "alice is still served and still holds bob: {t:?}"
        );
        Ok(())
    }

    /// Nothing worse than an info line was logged (failed handshakes are debug).
    fn log_is_quiet(&self) -> Res<()> {
        let log = self.server.log();
        ensure!(
            !log.contains("WARN") && !log.contains("ERROR"),
            "the server logged warnings or errors:\n{log}"
        );
        Ok(())
    }
}

/// Spawns a client that must fail before logging in; returns its stderr.
fn refused_client(w: &World, user: &str, extra: &[&str]) -> Res<String> {
    let mut c = w.sb.client(
        w.server.addr,
        user,
        &With::flags(&["--codecs", "h264"]),
        extra,
    )?;
    let status = c.wait_exit(TIMEOUT)?;
    ensure!(
        !status.success(),
        "client {user} exited successfully: {}",
        c.log_tail()
    );
    ensure!(
        c.session().is_none(),
        "client {user} logged in: {:?}",
        c.history()
    );
    Ok(c.log_tail())
}

/// Reads from a raw socket until the peer closes it; fails if it is still open after
/// `timeout`. Returns what arrived.
fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> Res<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "the connection is still open after {timeout:?}; received {got:02x?}"
        );
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            // A reset is a close too.
            Err(_) => return Ok(got),
        }
    }
}

#[test]
fn a_client_trusting_the_ca_logs_in_over_tls_and_sees_its_contact() -> Res<()> {
    let mut w = world(&[])?;
    let (mut alice, mut bob) = w.alice_and_bob()?;
    let t = alice.table()?;
    let row = online_row(&t, "bob");
    ensure!(row.is_some(), "alice's table holds bob online: {t:?}");
    // bob logged in with his registered terminal: alice computed the parameters from
    // the capabilities the server pushed over TLS.
    let expected = params_json(&alice_caps(), &phone_caps());
    ensure!(
        row.is_some_and(|r| params_of(r) == expected),
        "alice's parameters for bob are the negotiated ones: {t:?} vs {expected}"
    );
    let t = bob.table()?;
    ensure!(
        online_row(&t, "alice").is_some(),
        "bob's table holds alice online: {t:?}"
    );
    // A call over the TLS sessions, answered and hung up.
    alice.send(json!({"cmd": "call", "to": "bob"}))?;
    let ring = alice.wait_event("call_ringing")?;
    let id = ring["call"].clone();
    bob.wait_event_where("incoming_call", |v| v["call"] == id)?;
    bob.send(json!({"cmd": "answer", "call": id}))?;
    alice.wait_event_where("call_established", |v| v["call"] == id)?;
    bob.wait_event_where("call_established", |v| v["call"] == id)?;
    alice.send(json!({"cmd": "hangup", "call": id}))?;
    bob.wait_event_where("call_ended", |v| v["call"] == id)?;
    bob.logout()?;
    alice.wait_event_where("peer_offline", |v| v["user"] == "bob")?;
    alice.logout()?;
    ensure!(
        w.server.is_running(),
        "the server exited; its log:\n{}",
        w.server.log_tail()
    );
    w.log_is_quiet()
}

#[test]
fn a_client_trusting_another_ca_or_expecting_another_name_is_refused() -> Res<()> {
    let mut w = world(&[])?;
    let (mut alice, _bob) = w.alice_and_bob()?;

    let other = Ca::new("some other CA");
    let other_file = path(&other.write(&w.sb, "other-ca.pem")?);
    let log = refused_client(&w, "carol", &["--tls-ca", &other_file])?;
    ensure!(
        log.contains("TLS handshake") && log.contains("certificate"),
        "the error names the TLS handshake and the certificate:\n{log}"
    );
    w.still_served(&mut alice)?;

    let log = refused_client(
        &w,
        "carol",
        &["--tls-ca", &w.ca, "--tls-server-name", "chat.example.org"],
    )?;
    ensure!(
        log.contains("certificate") && log.contains("chat.example.org"),
        "the error names the certificate and the expected name:\n{log}"
    );
    w.still_served(&mut alice)?;

    // A plain-TCP client against the TLS port does not get in either.
    let log = refused_client(&w, "carol", &[])?;
    ensure!(log.contains("login failed"), "plain TCP client:\n{log}");
    w.still_served(&mut alice)?;

    // And the right CA still works for carol.
    let carol = w.online("carol", &With::flags(&["--codecs", "vp8"]), &[])?;
    alice.wait_event_where("peer_online", |v| v["user"] == "carol")?;
    drop(carol);
    w.log_is_quiet()
}

#[test]
fn plain_tcp_to_the_tls_port_is_refused_without_harming_others() -> Res<()> {
    let mut w = world(&[])?;
    let (mut alice, _bob) = w.alice_and_bob()?;

    // A precall frame (a ping) instead of a ClientHello: the handshake fails and the
    // socket is closed. At most a TLS alert record (content type 21) comes back, never
    // a precall frame.
    let mut raw = TcpStream::connect_timeout(&w.server.addr, TIMEOUT)?;
    raw.write_all(&frame(
        serde_json::to_string(&ClientMessage::Ping {})?.as_bytes(),
    ))?;
    let got = read_until_closed(&mut raw, TIMEOUT)?;
    ensure!(
        got.is_empty() || got[0] == 0x15,
        "the server answered plain TCP with something other than a TLS alert: {got:02x?}"
    );
    w.still_served(&mut alice)?;

    // A precall login in the clear is refused the same way (no credentials accepted).
    let mut raw = TcpStream::connect_timeout(&w.server.addr, TIMEOUT)?;
    let login = login_msg(
        "carol",
        &password("carol"),
        precall_protocol::LoginWith::Capabilities(caps(&["h264"], 1280, 30)),
    )?;
    raw.write_all(&precall_protocol::codec::encode_frame(&login))?;
    let got = read_until_closed(&mut raw, TIMEOUT)?;
    ensure!(
        got.is_empty() || got[0] == 0x15,
        "plain login answered with {got:02x?}"
    );
    alice.expect_none(
        |v| v["event"] == "peer_online" && v["user"] == "carol",
        Duration::from_millis(300),
    )?;

    // Garbage that ends at once.
    let mut raw = TcpStream::connect_timeout(&w.server.addr, TIMEOUT)?;
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let _ = raw.shutdown(Shutdown::Write);
    read_until_closed(&mut raw, TIMEOUT)?;

    w.still_served(&mut alice)?;
    let _carol = w.online("carol", &With::flags(&["--codecs", "vp8"]), &[])?;
    alice.wait_event_where("peer_online", |v| v["user"] == "carol")?;
    w.log_is_quiet()
}

#[test]
fn a_peer_that_never_starts_the_handshake_is_dropped_after_the_timeout() -> Res<()> {
    // The login timeout is long: only the handshake timeout can close the socket soon.
    let mut w = world(&[
        "--tls-handshake-timeout-ms",
        "500",
        "--login-timeout-ms",
        "60000",
    ])?;
    let (mut alice, _bob) = w.alice_and_bob()?;
    let started = Instant::now();
    let mut silent = TcpStream::connect_timeout(&w.server.addr, TIMEOUT)?;
    let got = read_until_closed(&mut silent, TIMEOUT)?;
    let took = started.elapsed();
    ensure!(got.is_empty(), "the silent peer received {got:02x?}");
    ensure!(
        took >= Duration::from_millis(400),
        "closed after {took:?}, before the handshake timeout"
    );
    w.still_served(&mut alice)?;
    w.log_is_quiet()
}

#[test]
fn plain_tcp_on_a_non_loopback_address_prints_a_warning() -> Res<()> {
    let sb = Sandbox::with_cast()?;
    let warning = |log: &str| log.lines().any(|l| l.starts_with("WARNING:"));

    // In the clear on every interface: the warning, before `listening on`.
    let exposed = sb.start_server_on("0.0.0.0:0", &[])?;
    let log = exposed.log();
    ensure!(warning(&log), "no WARNING line on 0.0.0.0:\n{log}");
    ensure!(
        log.contains("WARN") && log.contains("WITHOUT TLS"),
        "the warning is in the log too:\n{log}"
    );
    // It serves all the same.
    let mut alice = sb.online_client(
        exposed.addr,
        "alice",
        &With::flags(&["--codecs", "h264"]),
        &[],
    )?;
    alice.logout()?;
    drop(exposed);

    // Loopback: no warning.
    let local = sb.start_server(&[])?;
    let log = local.log();
    ensure!(
        !warning(&log) && !log.contains("WITHOUT TLS"),
        "a WARNING on 127.0.0.1:\n{log}"
    );
    drop(local);

    // TLS on every interface: no warning.
    let ca = Ca::new("precall test CA");
    let (cert, key) = ca.issue_server(&sb)?;
    let tls = sb.start_server_on(
        "0.0.0.0:0",
        &["--tls-cert", &path(&cert), "--tls-key", &path(&key)],
    )?;
    let log = tls.log();
    ensure!(
        !warning(&log) && !log.contains("WITHOUT TLS"),
        "a WARNING with TLS:\n{log}"
    );
    Ok(())
}
