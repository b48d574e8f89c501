//! Denial-of-service attacks against `precall-server` at its default settings, through
//! real sockets: one attacker must not stall anybody else (issue: "close three
//! denial-of-service holes"). Each test prints its figures; the sizes can be raised for
//! a measurement run, for example
//! `PRECALL_FLOOD_CHANGES=400000 cargo test --release -p precall-e2e --test dos -- --nocapture`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use precall_e2e::*;
use precall_protocol::codec::encode_frame;
use precall_protocol::message::{ClientMessage, LoginWith, ServerMessage};
use precall_protocol::{ReqId, UserId};

/// The attacks run one at a time: each measures latency on a 2-core machine, and two
/// floods at once would measure each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server's resident memory, in KiB, from `/proc`.
fn rss_kib(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error(format!("no VmRSS for pid {pid}")))
}

/// A TCP connection to `addr` from the loopback address `source`.
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Res<RawConn> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    Ok(RawConn::from_stream(TcpStream::from(socket)))
}

/// Logs a raw connection in and waits for `synced`; returns how long that took.
fn login_synced(c: &mut RawConn, user: &str) -> Res<Duration> {
    let started = Instant::now();
    c.send_msg(&login_msg(
        user,
        &password(user),
        LoginWith::Capabilities(caps(&["h264"], 640, 15)),
    )?)?;
    loop {
        match c.recv(Duration::from_secs(30))? {
            ServerMessage::Synced {} => return Ok(started.elapsed()),
            ServerMessage::Error { code, .. } => bail!("{user}: login refused with {code:?}"),
            _ => {}
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Issue item 1: alice pipelines alternating `add_contact`/`remove_contact` of carol as
/// fast as the socket takes them (and reads what comes back). Meanwhile bob pings every
/// 10 ms, and dave logs in from another source address. Every change is acknowledged
/// in order, bob's pings are answered promptly, dave's login is quick, and the server's
/// memory stays bounded.
#[test]
fn contact_change_flood_stalls_nobody_else() -> Res<()> {
    let _serial = one_at_a_time();
    let changes = env_usize("PRECALL_FLOOD_CHANGES", 100_000);
    let sb = Sandbox::with_cast()?;
    sb.add_user("dave")?;
    // The frame-rate limit (100 frames/s by default, spec 13.6) would pace the flood by
    // itself; off, the flood reaches the store path, which must hold on its own.
    let server = sb.start_server(&["--max-frames-per-second", "0"])?;
    let addr = server.addr;

    let mut bob = RawConn::connect(addr)?;
    login_synced(&mut bob, "bob")?;
    let mut alice = RawConn::connect(addr)?;
    login_synced(&mut alice, "alice")?;
    std::thread::sleep(Duration::from_millis(200));
    let baseline = rss_kib(server.pid())?;

    // The flood: one writer thread, the acknowledgements read here.
    let mut bytes = Vec::new();
    for i in 0..changes {
        let req = ReqId(i as u32 + 1);
        let user = UserId::new("carol")?;
        let msg = if i % 2 == 0 {
            ClientMessage::AddContact { req, user }
        } else {
            ClientMessage::RemoveContact { req, user }
        };
        bytes.extend_from_slice(&encode_frame(&msg));
    }
    let mut writer = alice.try_clone_stream()?;
    let started = Instant::now();
    let flooding = Arc::new(AtomicBool::new(true));
    let write = std::thread::spawn(move || writer.write_all(&bytes));
    let reader = {
        let flooding = flooding.clone();
        std::thread::spawn(move || -> Res<(usize, u32)> {
            let mut acks = 0usize;
            let mut last = 0u32;
            while acks < changes {
                match alice.recv(Duration::from_secs(60))? {
                    ServerMessage::ContactAdded { req: Some(r), .. }
                    | ServerMessage::ContactRemoved { req: Some(r), .. } => {
                        ensure!(r.0 == last + 1, "ack {} after {last}", r.0);
                        last = r.0;
                        acks += 1;
                    }
                    ServerMessage::Error { code, .. } => bail!("flood answered with {code:?}"),
                    _ => {}
                }
            }
            flooding.store(false, Ordering::SeqCst);
            Ok((acks, last))
        })
    };

    // Bob's pings, and the peak memory, while the flood lasts.
    let mut rtts = Vec::new();
    let mut peak = baseline;
    let mut dave_login = None;
    while flooding.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(240) {
        let t = Instant::now();
        bob.send_msg(&ClientMessage::Ping {})?;
        loop {
            match bob.recv(Duration::from_secs(60))? {
                ServerMessage::Pong {} => break,
                _ => continue, // carol's presence, if any
            }
        }
        rtts.push(t.elapsed());
        peak = peak.max(rss_kib(server.pid())?);
        if dave_login.is_none() && rtts.len() == 20 {
            let mut dave = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr)?;
            dave_login = Some(login_synced(&mut dave, "dave")?);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let flood_time = started.elapsed();
    let (acks, last) = reader
        .join()
        .map_err(|_| Error("reader panicked".into()))??;
    let _ = write.join();
    rtts.sort();
    let (p50, p99, max) = (
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        percentile(&rtts, 1.0),
    );
    let grown = peak.saturating_sub(baseline);
    println!(
        "contact-change flood: {changes} changes acknowledged in {:.2} s ({:.0}/s); \
         bob's ping RTT over {} pings: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         dave's login from 127.0.0.2: {:?}; server RSS {} KiB -> peak {} KiB (+{} KiB)",
        flood_time.as_secs_f64(),
        changes as f64 / flood_time.as_secs_f64(),
        rtts.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        dave_login,
        baseline,
        peak,
        grown
    );
    ensure!(acks == changes && last as usize == changes, "{acks} acks");
    ensure!(
        rtts.len() >= 20,
        "only {} pings during the flood",
        rtts.len()
    );
    // Before the fix: pongs waited 23-31 s and a login 21-29 s. The bounds leave room
    // for a loaded CI machine; the figures (100 ms p99, 1 s) are measured with
    // the release build above.
    ensure!(p99 < Duration::from_millis(500), "bob's ping p99 {p99:?}");
    let dave_login = dave_login.ok_or_else(|| Error("dave never logged in".into()))?;
    ensure!(
        dave_login < Duration::from_secs(2),
        "dave's login took {dave_login:?}"
    );
    ensure!(grown < 32 * 1024, "server RSS grew by {grown} KiB");
    Ok(())
}

/// Issue item 1, last paragraph: a contact change whose commit fails for good (the
/// account was removed by `admin` while its user was online) is answered `not_stored`
/// and not applied: the user's table does not change and nothing is stored.
#[test]
fn a_contact_change_of_a_removed_account_is_not_stored_and_not_acknowledged() -> Res<()> {
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    let mut bob = RawConn::connect(server.addr)?;
    login_synced(&mut bob, "bob")?;
    sb.admin(&["user", "remove", "bob"])?;
    bob.send_msg(&ClientMessage::AddContact {
        req: ReqId(7),
        user: UserId::new("carol")?,
    })?;
    // The administrator's removal may reach bob's session first (contact_removed).
    let answer = loop {
        match bob.recv(Duration::from_secs(10))? {
            ServerMessage::ContactRemoved { req: None, .. } | ServerMessage::Offline(_) => {}
            other => break other,
        }
    };
    ensure!(
        matches!(
            &answer,
            ServerMessage::Error {
                code: precall_protocol::ErrorCode::NotStored,
                req: Some(ReqId(7)),
                ..
            }
        ),
        "a change of a removed account was answered {answer:?}"
    );
    // Not fatal: the session goes on.
    bob.send_msg(&ClientMessage::Ping {})?;
    let pong = bob.recv(Duration::from_secs(10))?;
    ensure!(matches!(pong, ServerMessage::Pong {}), "ping -> {pong:?}");
    Ok(())
}

/// Issue item 3: with an open-file limit of 1,024 (a common default), one source opening
/// 1,100 idle connections. The server caps connections below what its descriptors allow
/// and says so at start; every connection beyond the cap is answered
/// `too_many_connections` and closed (before: no answer at all, about 90 "accept failed"
/// lines a second); accept failures are logged at most about once a second; once the
/// idle connections go, a real login works.
#[test]
fn running_out_of_descriptors_answers_too_many_connections() -> Res<()> {
    let _serial = one_at_a_time();
    // This process holds the 1,100 sockets itself.
    rlimit::increase_nofile_limit(4096)?;
    let sb = Sandbox::with_cast()?;
    // The flag asks for more than 1,024 open files allow: the server says so.
    let server = sb.start_server_with_nofile(
        1024,
        &[
            "--max-connections",
            "50000",
            "--max-connections-per-source",
            "0",
            "--max-accepts-per-second-per-source",
            "0",
        ],
    )?;
    let addr = server.addr;
    let started = Instant::now();
    let mut idle = Vec::new();
    let mut refused = 0usize;
    for _ in 0..1_100 {
        idle.push(RawConn::connect(addr)?);
    }
    // Those beyond the cap were answered at once; read what each got.
    for c in &mut idle {
        match c.recv_payload(Duration::from_millis(20))? {
            Recv::Payload(p) => {
                let m = precall_protocol::codec::decode_message::<ServerMessage>(&p)
                    .map_err(|e| Error(e.to_string()))?;
                ensure!(
                    matches!(
                        m,
                        ServerMessage::Error {
                            code: precall_protocol::ErrorCode::TooManyConnections,
                            ..
                        }
                    ),
                    "an idle connection got {m:?}"
                );
                refused += 1;
            }
            Recv::Closed | Recv::Timeout => {}
        }
    }
    // A real client now: answered, not left waiting.
    let mut late = RawConn::connect(addr)?;
    let answer = late.recv(Duration::from_secs(5))?;
    ensure!(
        matches!(
            answer,
            ServerMessage::Error {
                code: precall_protocol::ErrorCode::TooManyConnections,
                ..
            }
        ),
        "a connection beyond the cap got {answer:?}"
    );
    let elapsed = started.elapsed();
    let log = server.log();
    let failures = log.matches("accept failed").count();
    println!(
        "1,100 idle connections with 1,024 open files: {refused} refused with \
         too_many_connections, {failures} accept-failure lines in {:.1} s",
        elapsed.as_secs_f64()
    );
    ensure!(
        log.contains("exceeds what the open-file limit allows"),
        "the server did not say its cap at start:\n{}",
        server.log_tail()
    );
    ensure!(
        (60..=200).contains(&refused),
        "{refused} of 1,100 refused (the cap is 960)"
    );
    ensure!(
        failures as f64 <= elapsed.as_secs_f64() + 2.0,
        "{failures} accept-failure lines in {elapsed:?}"
    );
    drop(idle);
    drop(late);
    std::thread::sleep(Duration::from_millis(500));
    let mut alice = RawConn::connect(addr)?;
    login_synced(&mut alice, "alice")?;
    Ok(())
}

/// Issue item 2: 1,000 connections from one source each send one `login` (first for an
/// unknown user, then for a valid user already at the session limit). A login from
/// another source still completes quickly: the flooder can hold at most
/// `max_auth_checks_per_source` (8) checks, the rest are answered `rate_limited` at
/// once; once it closes its sockets, nothing of it is left to check.
#[test]
fn a_login_burst_from_one_source_does_not_lock_out_others() -> Res<()> {
    let _serial = one_at_a_time();
    rlimit::increase_nofile_limit(4096)?;
    let sb = Sandbox::with_cast()?;
    // The users who log in from elsewhere (one login each: detached sessions count).
    for u in ["dave", "erin", "fay", "gus"] {
        sb.add_user(u)?;
    }
    let server = sb.start_server(&[
        "--max-sessions-per-user",
        "1",
        "--max-connections-per-source",
        "0",
        "--max-accepts-per-second-per-source",
        "0",
    ])?;
    let addr = server.addr;
    // Bob is online once: his own logins are over the session limit.
    let mut bob = RawConn::connect(addr)?;
    login_synced(&mut bob, "bob")?;
    for (what, user, pw, others) in [
        (
            "unknown user",
            "nobody",
            "guess".to_string(),
            ["dave", "erin"],
        ),
        (
            "valid user over the session limit",
            "bob",
            password("bob"),
            ["fay", "gus"],
        ),
    ] {
        let started = Instant::now();
        let mut flood = Vec::new();
        for _ in 0..1_000 {
            let mut c = RawConn::connect(addr)?;
            c.send_msg(&login_msg(
                user,
                &pw,
                LoginWith::Capabilities(caps(&["h264"], 640, 15)),
            )?)?;
            flood.push(c);
        }
        let mut dave = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr)?;
        let during = login_synced(&mut dave, others[0])?;
        drop(dave);
        let mut limited = 0;
        for c in &mut flood {
            if let Ok(ServerMessage::Error {
                code: precall_protocol::ErrorCode::RateLimited,
                ..
            }) = c.recv(Duration::from_millis(5))
            {
                limited += 1;
            }
        }
        drop(flood);
        std::thread::sleep(Duration::from_secs(1));
        let mut again = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr)?;
        let after = login_synced(&mut again, others[1])?;
        println!(
            "1,000 logins ({what}) from one source in {:.2} s: {limited} answered rate_limited; \
             a login from another source took {:.0} ms during the burst, {:.0} ms 1 s after it",
            started.elapsed().as_secs_f64(),
            during.as_secs_f64() * 1e3,
            after.as_secs_f64() * 1e3
        );
        ensure!(
            limited >= 900,
            "only {limited} of 1,000 refused before a check"
        );
        ensure!(
            during < Duration::from_secs(2),
            "{what}: login took {during:?}"
        );
        ensure!(
            after < Duration::from_secs(1),
            "{what}: login after took {after:?}"
        );
    }
    Ok(())
}

/// Issue item 4, the frame rate at its default (100 frames/s, spec 13.6): 300 pings in
/// one write are all answered, but over three seconds, not at once, and nothing is
/// closed; another connection from the same address is answered at once meanwhile.
/// Before the default, all 300 came back at once.
#[test]
fn frames_beyond_the_default_rate_wait_for_the_next_second() -> Res<()> {
    let _serial = one_at_a_time();
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    let mut flooder = RawConn::connect(server.addr)?;
    let mut other = RawConn::connect(server.addr)?;
    let ping = encode_frame(&ClientMessage::Ping {});
    let flood: Vec<u8> = std::iter::repeat_n(ping.to_vec(), 300).flatten().collect();
    let started = Instant::now();
    flooder.send_bytes(&flood)?;
    let mut at = Vec::new();
    while at.len() < 300 {
        match flooder.recv(Duration::from_secs(10))? {
            ServerMessage::Pong {} => at.push(started.elapsed()),
            m => bail!("the flooder got {m:?}"),
        }
        if at.len() == 150 {
            let t = Instant::now();
            other.send_msg(&ClientMessage::Ping {})?;
            ensure!(
                matches!(other.recv(TIMEOUT)?, ServerMessage::Pong {}),
                "no pong"
            );
            let rtt = t.elapsed();
            println!("another connection's ping while the flooder waits: {rtt:?}");
            ensure!(rtt < Duration::from_millis(500), "ping took {rtt:?}");
        }
    }
    let (first, last) = (at[99], at[299]);
    println!(
        "300 pings in one write at the default frame rate: the 100th answered after \
         {first:?}, the 300th after {last:?}"
    );
    ensure!(first < Duration::from_millis(900), "100th after {first:?}");
    ensure!(
        last >= Duration::from_millis(1_900),
        "300th already after {last:?}"
    );
    // Still open: one more ping in the next second is answered.
    std::thread::sleep(Duration::from_millis(1_000));
    flooder.send_msg(&ClientMessage::Ping {})?;
    ensure!(
        matches!(flooder.recv(TIMEOUT)?, ServerMessage::Pong {}),
        "no pong after the flood"
    );
    Ok(())
}

/// Issue item 4, connections per source at the default (256, spec 13.6): one address
/// cannot take every slot; another address still gets in. Before the default, the
/// 257th connection was served.
#[test]
fn connections_beyond_the_default_per_source_cap_are_refused() -> Res<()> {
    let _serial = one_at_a_time();
    let sb = Sandbox::with_cast()?;
    // Without the per-source accept rate, which 256 connections at once would hit.
    let server = sb.start_server(&["--max-accepts-per-second-per-source", "0"])?;
    let held: Vec<RawConn> = (0..256)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 5), server.addr))
        .collect::<Res<_>>()?;
    let mut extra = connect_from(Ipv4Addr::new(127, 0, 0, 5), server.addr)?;
    match extra.recv(TIMEOUT)? {
        ServerMessage::Error {
            code: precall_protocol::ErrorCode::TooManyConnections,
            retry_after_ms: Some(_),
            ..
        } => {}
        m => bail!("the 257th connection from one address got {m:?}"),
    }
    let mut elsewhere = connect_from(Ipv4Addr::new(127, 0, 0, 6), server.addr)?;
    let took = login_synced(&mut elsewhere, "bob")?;
    println!("257th connection from 127.0.0.5 refused; a login from 127.0.0.6 took {took:?}");
    drop(held);
    Ok(())
}

/// Issue item 4, capability changes at the default (6 per session per minute, spec
/// 13.6): the 7th `update_caps` is answered with the non-fatal `caps_throttled` and a
/// retry hint, is not pushed to the watcher, and the session goes on. Before, every
/// change was acknowledged and fanned out.
#[test]
fn capability_changes_beyond_the_default_rate_are_throttled() -> Res<()> {
    let _serial = one_at_a_time();
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    let mut bob = RawConn::connect(server.addr)?;
    login_synced(&mut bob, "bob")?;
    let mut alice = RawConn::connect(server.addr)?;
    login_synced(&mut alice, "alice")?;
    let mut answers = Vec::new();
    for i in 1..=7u16 {
        alice.send_msg(&ClientMessage::UpdateCaps {
            req: ReqId(u32::from(i)),
            capabilities: caps(&["h264"], 640 + i, 15),
        })?;
        loop {
            let m = alice.recv(TIMEOUT)?;
            if matches!(
                m,
                ServerMessage::CapsAck { .. } | ServerMessage::Error { .. }
            ) {
                answers.push(m);
                break;
            }
        }
    }
    ensure!(
        answers[..6]
            .iter()
            .all(|m| matches!(m, ServerMessage::CapsAck { .. })),
        "{answers:?}"
    );
    let hint = match &answers[6] {
        ServerMessage::Error {
            code: precall_protocol::ErrorCode::CapsThrottled,
            req: Some(ReqId(7)),
            retry_after_ms: Some(ms),
            ..
        } if (1..=60_000).contains(ms) => *ms,
        m => bail!("the 7th update_caps got {m:?}"),
    };
    // The session goes on.
    alice.send_msg(&ClientMessage::Ping {})?;
    loop {
        if let ServerMessage::Pong {} = alice.recv(TIMEOUT)? {
            break;
        }
    }
    // Bob saw alice log in (640 wide), then her six changes, not the 7th (647).
    let mut widths = Vec::new();
    while let Ok(m) = bob.recv(Duration::from_millis(300)) {
        if let ServerMessage::Online(p) = m {
            widths.push(p.capabilities.screen().width);
        }
    }
    println!("7 update_caps in a row: 6 acknowledged, the 7th caps_throttled (retry after {hint} ms); bob saw widths {widths:?}");
    ensure!(widths == [640, 641, 642, 643, 644, 645, 646], "{widths:?}");
    Ok(())
}

/// Issue item 2, fair scheduling: 16 sources each queue as many credential checks as
/// they may (8, unknown users, about 67 ms of CPU each), 128 in all, then a login comes
/// from a 17th source. First come first served it would wait for all 128 (over 4 s on
/// two CPUs); with the checks handed out one source at a time in turn it waits for at
/// most one check of each other source.
#[test]
fn logins_from_many_sources_take_turns() -> Res<()> {
    let _serial = one_at_a_time();
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    let addr = server.addr;
    let started = Instant::now();
    let mut flood = Vec::new();
    for source in 0..16u8 {
        for _ in 0..8 {
            let mut c = connect_from(Ipv4Addr::new(127, 0, 1, 10 + source), addr)?;
            c.send_msg(&login_msg(
                "nobody",
                "guess",
                LoginWith::Capabilities(caps(&["h264"], 640, 15)),
            )?)?;
            flood.push(c);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut dave = connect_from(Ipv4Addr::new(127, 0, 2, 1), addr)?;
    let took = login_synced(&mut dave, "bob")?;
    // How long the flood's checks take in all, for comparison.
    let mut rejected = 0;
    for c in &mut flood {
        if let Ok(ServerMessage::Error {
            code: precall_protocol::ErrorCode::BadCredentials,
            ..
        }) = c.recv(Duration::from_secs(30))
        {
            rejected += 1;
        }
    }
    let all = started.elapsed();
    println!(
        "128 queued credential checks from 16 sources: a login from a 17th source took \
         {:.0} ms; the 128 took {:.2} s in all ({rejected} rejected)",
        took.as_secs_f64() * 1e3,
        all.as_secs_f64()
    );
    ensure!(rejected == 128, "{rejected} of 128 rejected");
    // In turn, the login waits for about one check of each of the 16 sources and the
    // ones already running: some 20 of the 128, a sixth of the flood; measured 0.14 to
    // 0.32 of it on this 2-core machine (the first run of a batch the slowest). First
    // come first served it waits for nearly all of it (3.5 s of 3.6 s, measured against
    // the binary before fair scheduling). Half the flood separates the two with room
    // for a loaded machine.
    ensure!(
        took * 2 < all,
        "the login waited {took:?}, half or more of the whole flood's {all:?}"
    );
    ensure!(took < Duration::from_secs(2), "the login took {took:?}");
    Ok(())
}

/// Issue item 4, the accept rate per source at its default (64 a second, spec 13.6): a
/// burst of 100 connections from one address has the excess turned away with
/// `rate_limited` and a retry hint, while another address connects as usual. Before the
/// default every connection was accepted.
#[test]
fn a_connection_burst_beyond_the_default_rate_per_source_is_turned_away() -> Res<()> {
    let _serial = one_at_a_time();
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    let burst: Vec<RawConn> = (0..100)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 7), server.addr))
        .collect::<Res<_>>()?;
    let mut elsewhere = connect_from(Ipv4Addr::new(127, 0, 0, 8), server.addr)?;
    let took = login_synced(&mut elsewhere, "bob")?;
    let mut refused = 0;
    for mut c in burst {
        if let Ok(ServerMessage::Error {
            code: precall_protocol::ErrorCode::RateLimited,
            retry_after_ms: Some(ms),
            ..
        }) = c.recv(Duration::from_millis(200))
        {
            ensure!(ms <= 1_000, "retry after {ms} ms");
            refused += 1;
        }
    }
    println!(
        "100 connections at once from 127.0.0.7: {refused} turned away with rate_limited; \
         a login from 127.0.0.8 meanwhile took {took:?}"
    );
    // The burst takes a few milliseconds, within one window (it starts at the burst's
    // first connection): the 36 over the limit.
    ensure!(refused >= 36, "only {refused} of 100 turned away");
    Ok(())
}
