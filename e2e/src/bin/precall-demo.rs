//! `precall-demo`: the end-to-end demonstration of precall over real sockets.
//!
//! It starts the real `precall-server` on a temporary SQLite store, fills the store with
//! the admin subcommands, starts three real `precall-client` processes over loopback TCP
//! (alice with capability flags, bob by registered terminal identifier, carol with a
//! capabilities file) and narrates what their JSON events show: the logins, the online
//! pushes carrying capabilities, each client's pre-computed parameter table, a fast-path
//! call, a capability change racing a call (the fallback path), a logout and its
//! clean-up, and finally a measurement of call set-up, fast path against the patent's
//! prior art, over the same sockets.
//!
//! ```sh
//! cargo build --release --workspace -q && target/release/precall-demo [--calls N]
//! ```
//!
//! Exit status 0 if every step happened as the protocol says, 1 otherwise.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use precall_e2e::*;
use precall_protocol::caps::CallDigest;
use precall_protocol::codec::encode_frame;
use precall_protocol::ids::{ReqId, SessionId};
use precall_protocol::{Capabilities, ClientMessage, Endpoint, Fingerprint, UserId};
use serde_json::{json, Value};

fn main() -> ExitCode {
    let mut calls = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 && n <= 10_000 => calls = n,
                _ => {
                    eprintln!("precall-demo: --calls takes a number from 1 to 10000");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: precall-demo [--calls N]   (N fast-path and N prior-art calls, default 20)");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("precall-demo: unknown argument {other:?} (try --help)");
                return ExitCode::from(2);
            }
        }
    }
    let start = Instant::now();
    match run(calls) {
        Ok(()) => {
            println!(
                "\nDemo complete in {:.1} s: every step behaved as the protocol specifies.",
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nprecall-demo: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn heading(n: u32, title: &str) {
    println!("\n== {n}. {title}");
}

fn caps_summary(c: &Capabilities) -> String {
    let codecs =
        |l: &[precall_protocol::Codec]| l.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
    let camera = c.camera().map_or("no camera".to_owned(), |cam| {
        format!(
            "camera {}x{}@{}",
            cam.max.width, cam.max.height, cam.max_fps
        )
    });
    format!(
        "encode [{}] decode [{}], screen {}x{}, {camera}, cpu {}, {}/{} kbit/s up/down",
        codecs(c.encode()),
        codecs(c.decode()),
        c.screen().width,
        c.screen().height,
        serde_json::to_value(c.cpu())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        c.bandwidth().up_kbps,
        c.bandwidth().down_kbps
    )
}

fn print_table(who: &str, table: &[Value]) {
    if table.is_empty() {
        println!("   {who}'s table: (empty)");
        return;
    }
    println!("   {who}'s table:");
    for row in table {
        if is_online_row(row) {
            println!(
                "     {:<9} {}",
                format!("{}/{}", row["user"].as_str().unwrap_or("?"), row["session"]),
                describe_params(&params_of(row))
            );
        } else {
            println!(
                "     {:<9} offline (nothing held)",
                row["user"].as_str().unwrap_or("?")
            );
        }
    }
}

/// One call from `caller` to `callee`, answered by the callee and hung up by the
/// caller. Returns the caller's `call_established` event and the callee's
/// `incoming_call` event.
fn call(caller: &mut ClientProc, callee: &mut ClientProc, cmd: &str) -> Res<(Value, Value)> {
    caller.send(json!({"cmd": cmd, "to": callee.name}))?;
    let ring = caller.wait_for(
        |v| v["event"] == "call_ringing" || v["event"] == "call_failed" || v["event"] == "error",
        TIMEOUT,
    )?;
    ensure!(
        ring["event"] == "call_ringing",
        "{} could not call: {ring}",
        caller.name
    );
    let id = ring["call"].clone();
    let incoming = callee.wait_event_where("incoming_call", |v| v["call"] == id)?;
    callee.send(json!({"cmd": "answer", "call": id}))?;
    let est = caller.wait_event_where("call_established", |v| v["call"] == id)?;
    let est_callee = callee.wait_event_where("call_established", |v| v["call"] == id)?;
    ensure!(
        est_callee["path"] == est["path"],
        "both ends report the same path: {est} / {est_callee}"
    );
    // The two ends agree: the callee's parameters are the mirror of the caller's.
    let p = &est["params"];
    let q = &est_callee["params"];
    ensure!(
        p["send"] == q["recv"] && p["recv"] == q["send"],
        "the two ends agree on the parameters: {p} / {q}"
    );
    caller.send(json!({"cmd": "hangup", "call": id}))?;
    callee.wait_event_where("call_ended", |v| v["call"] == id)?;
    Ok((est, incoming))
}

fn run(calls: usize) -> Res<()> {
    println!("precall end-to-end demo: the real precall-server and three precall-client");
    println!("processes over loopback TCP, with a real SQLite store.");
    println!("binaries: {}", bin_dir().display());

    // ---------------------------------------------------------------- 1. the store
    heading(1, "The store, filled with `precall-server admin`");
    let sb = Sandbox::new()?;
    println!(
        "   database: {} (removed at exit; PRECALL_E2E_KEEP=1 keeps it)",
        sb.db.display()
    );
    for u in ["alice", "bob", "carol"] {
        sb.add_user(u)?;
    }
    sb.befriend("alice", "bob")?;
    sb.befriend("alice", "carol")?;
    let bob_phone = phone_caps();
    sb.register_terminal("bob-phone", "bob", &bob_phone)?;
    println!(
        "   users:     {}",
        sb.admin_lines(&["user", "list"])?.join(", ")
    );
    for u in ["alice", "bob", "carol"] {
        println!(
            "   contacts of {u:<5}: {}",
            sb.admin_lines(&["contact", "list", u])?.join(", ")
        );
    }
    for line in sb.admin_lines(&["terminal", "list"])? {
        println!("   terminal:  {line}  ({})", caps_summary(&bob_phone));
    }

    // ---------------------------------------------------------------- 2. the server
    heading(2, "The server");
    // Default limits but one: step 8 places calls back to back, far faster than any
    // person, and the default frame rate (100 frames/s per connection, spec 13.6) would
    // pace it, so that the pacing rather than call set-up would be measured.
    let server = sb.start_server(&["--max-frames-per-second", "0"])?;
    println!(
        "   precall-server serve: listening on {} (default limits; frame rate off for step 8)",
        server.addr
    );

    // ---------------------------------------------------------------- 3. logins
    heading(3, "Logins and the online pushes that carry capabilities");
    let alice_caps = caps(&["h264", "vp8"], 1920, 30);
    let alice_flags = With::flags(&["--codecs", "h264,vp8", "--width", "1920", "--fps", "30"]);
    let mut alice = sb.client(server.addr, "alice", &alice_flags, &[])?;
    let s = alice.wait_logged_in()?;
    let t = alice.wait_synced()?;
    println!(
        "   alice logs in with inline capabilities (--codecs h264,vp8 --width 1920 --fps 30):"
    );
    println!("     {}", caps_summary(&alice_caps));
    println!(
        "     -> logged_in, session {s}; synced with {} contact(s) online",
        online_users(&t).len()
    );

    let mut bob = sb.client(server.addr, "bob", &With::Terminal("bob-phone".into()), &[])?;
    let s = bob.wait_logged_in()?;
    let t = bob.wait_synced()?;
    println!("   bob logs in by terminal identifier (--terminal bob-phone): no capabilities sent,");
    println!("     the server looks up those it stored for bob-phone");
    println!("     -> logged_in, session {s}; his login snapshot already holds alice:");
    print_table("bob", &t);
    let ev = alice.wait_event_where("peer_online", |v| v["user"] == "bob")?;
    println!(
        "   alice <- online push for bob/{} with bob-phone's capabilities; parameters set at once:",
        ev["session"]
    );
    println!("     {}", describe_params(&params_of(&ev)));
    ensure!(
        params_of(&ev) == params_json(&alice_caps, &bob_phone),
        "alice's parameters for bob are not negotiate_pair(alice, bob-phone): {ev}"
    );

    let carol_caps = caps(&["vp8"], 1280, 25);
    let carol_file = sb.write_caps("carol-laptop.json", &carol_caps)?;
    let mut carol = sb.client(
        server.addr,
        "carol",
        &With::CapsFile(carol_file.clone()),
        &[],
    )?;
    let s = carol.wait_logged_in()?;
    let t = carol.wait_synced()?;
    println!(
        "   carol logs in with a capabilities file (--caps {}):",
        carol_file
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default()
    );
    println!("     {}", caps_summary(&carol_caps));
    println!(
        "     -> logged_in, session {s}; snapshot: {:?}",
        online_users(&t)
    );
    let ev = alice.wait_event_where("peer_online", |v| v["user"] == "carol")?;
    println!(
        "   alice <- online push for carol/{}: {}",
        ev["session"],
        describe_params(&params_of(&ev))
    );
    bob.expect_none(
        |v| v["event"] == "peer_online" && v["user"] == "carol",
        Duration::from_millis(200),
    )?;
    println!("   bob gets no push for carol: they do not list each other (visibility)");

    // ---------------------------------------------------------------- 4. tables
    heading(
        4,
        "Each client's parameter table (`table` command), computed before any call",
    );
    let ta = alice.table()?;
    print_table("alice", &ta);
    ensure!(
        online_users(&ta).len() == 2,
        "alice should hold bob and carol: {ta:?}"
    );
    print_table("bob", &bob.table()?);
    print_table("carol", &carol.table()?);

    // ---------------------------------------------------------------- 5. fast call
    heading(5, "A call alice -> bob on the fast path");
    let (est, inc) = call(&mut alice, &mut bob, "call")?;
    println!(
        "   bob <- incoming_call {} from {}, parameters already known: {}",
        inc["call"],
        inc["from"].as_str().unwrap_or("?"),
        describe_params(&inc["params"])
    );
    println!(
        "   alice: call_established, path {}, set-up {} us (request written -> accepted, bob answering via this demo)",
        est["path"].as_str().unwrap_or("?"),
        est["setup_us"]
    );
    ensure!(
        est["path"] == "fast",
        "the first call should take the fast path: {est}"
    );
    println!("   the call request carried two 128-bit fingerprints and no capabilities.");
    let Some(sdp) = inc["sdp_answer"].as_str() else {
        bail!("bob's incoming_call should carry the SDP answer he can send at once: {inc}");
    };
    println!("   the m=video section of the SDP answer bob could send at once (precall-sdp, from");
    println!("   his own capabilities and alice's, already in his table; spec section 18):");
    for line in sdp.lines() {
        println!("     {line}");
    }
    ensure!(
        sdp.starts_with("m=video ") && sdp.contains("a=rtpmap:") && sdp.contains("b=TIAS:"),
        "bob's SDP answer should be a video section with a format and a bit rate: {sdp:?}"
    );

    // ---------------------------------------------------------------- 6. caps change
    heading(
        6,
        "bob's capabilities change; alice calls before, during and after",
    );
    println!(
        "   before: alice's parameters for bob: {}",
        describe_params(&params_of(
            online_row(&alice.table()?, "bob").ok_or_else(|| Error("bob missing".into()))?
        ))
    );
    // Each attempt is a real change: alternate between two capability sets.
    let variants = [
        json!({"cmd": "caps", "codecs": "h264", "width": 640, "fps": 15, "up_kbps": 1000, "down_kbps": 2000}),
        json!({"cmd": "caps", "codecs": "vp8,h264", "width": 960, "fps": 20, "up_kbps": 1500, "down_kbps": 3000}),
    ];
    let mut fallback_seen = false;
    let attempts = 6;
    for attempt in 0..attempts {
        // bob's change and alice's call are written in the same instant: the change
        // is in flight when alice dials with the parameters she holds.
        bob.send(variants[attempt % 2].clone())?;
        alice.send(json!({"cmd": "call", "to": "bob"}))?;
        let ring = alice.wait_for(
            |v| {
                v["event"] == "call_ringing" || v["event"] == "call_failed" || v["event"] == "error"
            },
            TIMEOUT,
        )?;
        ensure!(
            ring["event"] == "call_ringing",
            "alice could not call bob: {ring}"
        );
        let id = ring["call"].clone();
        bob.wait_event_where("incoming_call", |v| v["call"] == id)?;
        bob.send(json!({"cmd": "answer", "call": id}))?;
        let est = alice.wait_event_where("call_established", |v| v["call"] == id)?;
        let bob_est = bob.wait_event_where("call_established", |v| v["call"] == id)?;
        ensure!(
            est["params"]["send"] == bob_est["params"]["recv"]
                && est["params"]["recv"] == bob_est["params"]["send"],
            "both ends agree: {est} / {bob_est}"
        );
        // Whether bob's change went through (a change is refused while a call to him
        // is being set up, if the call got there first).
        let outcome = bob.wait_for(
            |v| v["event"] == "caps_acknowledged" || v["event"] == "error",
            TIMEOUT,
        )?;
        let changed = outcome["event"] == "caps_acknowledged";
        if changed {
            alice.wait_event_where("peer_updated", |v| v["user"] == "bob")?;
        }
        alice.send(json!({"cmd": "hangup", "call": id}))?;
        bob.wait_event_where("call_ended", |v| v["call"] == id)?;
        let path = est["path"].as_str().unwrap_or("?").to_owned();
        println!(
            "   attempt {}: bob sends `caps` and alice dials at once -> path {path}, {} us{}",
            attempt + 1,
            est["setup_us"],
            if changed {
                String::new()
            } else {
                format!(" (bob's change was refused: {})", outcome["code"])
            }
        );
        if path == "fallback" {
            fallback_seen = true;
            println!(
                "     alice's digest named bob's old fingerprint; bob's accept carried his new"
            );
            println!("     capabilities (fallback (b)), no extra round trip; both ends agree on:");
            println!("     {}", describe_params(&est["params"]));
            break;
        }
    }
    if !fallback_seen {
        println!(
            "   in {attempts} attempts the change always reached alice before her call: no fallback \
             happened this run (the timing decides; every call still agreed)."
        );
    }
    let (est, _) = call(&mut alice, &mut bob, "call")?;
    println!(
        "   after: the update has reached alice (peer_updated); the next call -> path {}, {} us",
        est["path"].as_str().unwrap_or("?"),
        est["setup_us"]
    );
    println!(
        "     with the new parameters: {}",
        describe_params(&est["params"])
    );
    ensure!(
        est["path"] == "fast",
        "after the update the call is fast again: {est}"
    );

    // ---------------------------------------------------------------- 7. carol leaves
    heading(7, "carol logs out; alice cleans up");
    carol.logout()?;
    println!("   carol: logged_out, process exited 0 (her own table deleted)");
    let ev = alice.wait_event_where("peer_offline", |v| v["user"] == "carol")?;
    println!(
        "   alice <- offline push for carol/{}: entry and parameters deleted",
        ev["session"]
    );
    let ta = alice.table()?;
    print_table("alice", &ta);
    ensure!(
        online_row(&ta, "carol").is_none(),
        "carol still in alice's table: {ta:?}"
    );

    // ---------------------------------------------------------------- 8. measurement
    heading(
        8,
        &format!(
            "Measuring call set-up: {calls} fast-path vs {calls} prior-art calls alice -> bob"
        ),
    );
    println!("   same processes, same sockets; alternated; each answered by bob and hung up.");
    println!("   setup_us = alice's clock from writing the call request to call_accepted,");
    println!("   including bob's answer relayed through this demo's pipes (the same for both).");
    // Warm up both paths once.
    call(&mut alice, &mut bob, "call")?;
    call(&mut alice, &mut bob, "call_prior_art")?;
    let mut fast = Vec::with_capacity(calls);
    let mut prior = Vec::with_capacity(calls);
    for i in 0..calls * 2 {
        let prior_art = i % 2 == 1;
        let cmd = if prior_art { "call_prior_art" } else { "call" };
        let (est, _) = call(&mut alice, &mut bob, cmd)?;
        let us = est["setup_us"]
            .as_u64()
            .ok_or_else(|| Error(format!("call_established without setup_us: {est}")))?;
        let want = if prior_art { "fallback" } else { "fast" };
        ensure!(
            est["path"] == want,
            "a {cmd} call took path {}",
            est["path"]
        );
        if prior_art {
            prior.push(us);
        } else {
            fast.push(us);
        }
    }
    fast.sort_unstable();
    prior.sort_unstable();
    let (fm, f90) = (percentile(&fast, 50), percentile(&fast, 90));
    let (pm, p90) = (percentile(&prior, 50), percentile(&prior, 90));
    println!("   {:<38} {:>10} {:>10}", "", "median", "p90");
    println!(
        "   {:<38} {:>7} us {:>7} us",
        "fast path (fingerprints only)", fm, f90
    );
    println!(
        "   {:<38} {:>7} us {:>7} us",
        "prior art (caps exchanged in set-up)", pm, p90
    );
    if fm > 0 {
        println!(
            "   ratio prior-art / fast: {:.2} (median), {:.2} (p90)",
            pm as f64 / fm as f64,
            p90 as f64 / f90.max(1) as f64
        );
    }
    let (fast_bytes, prior_bytes) = signalling_bytes(&alice_caps, &bob_phone);
    println!(
        "   call signalling on the critical path (call + accept frames, from the core's encoder):"
    );
    println!(
        "     fast path {fast_bytes} bytes, prior art {prior_bytes} bytes ({} bytes of capabilities)",
        prior_bytes - fast_bytes
    );
    println!("   Both are one round trip through the server (call -> accept). What the fast path");
    println!(
        "   removes from set-up is the capability bytes and the negotiation at each end, done"
    );
    println!("   when the online push arrived; on loopback that is the whole measured difference.");

    // ---------------------------------------------------------------- 9. logouts
    heading(9, "alice logs out");
    alice.logout()?;
    println!("   alice: logged_out, process exited 0; everything she held is deleted");
    let ev = bob.wait_event_where("peer_offline", |v| v["user"] == "alice")?;
    println!("   bob <- offline push for alice/{}", ev["session"]);
    let tb = bob.table()?;
    print_table("bob", &tb);
    ensure!(
        online_users(&tb).is_empty(),
        "bob's table should be empty: {tb:?}"
    );
    bob.logout()?;
    drop(server);
    Ok(())
}

/// Bytes of the `call` and `accept` frames of one call (alice calling bob/2, call 7), on
/// the fast path and in the prior-art exchange, as the core encodes them.
fn signalling_bytes(a: &Capabilities, b: &Capabilities) -> (usize, usize) {
    let to = Endpoint {
        user: UserId::new("bob").expect("valid"),
        session: SessionId(2),
    };
    let call_id = precall_protocol::CallId(7);
    let frame_len = |m: &ClientMessage| encode_frame(m).len();
    let fast = frame_len(&ClientMessage::Call {
        req: ReqId(4),
        to: to.clone(),
        digest: CallDigest {
            caller: a.fingerprint(),
            callee: b.fingerprint(),
        },
        capabilities: None,
        media: None,
    }) + frame_len(&ClientMessage::Accept {
        call: call_id,
        capabilities: None,
        media: None,
    });
    let prior = frame_len(&ClientMessage::Call {
        req: ReqId(4),
        to,
        digest: CallDigest {
            caller: a.fingerprint(),
            callee: Fingerprint::NONE,
        },
        capabilities: Some(a.clone()),
        media: None,
    }) + frame_len(&ClientMessage::Accept {
        call: call_id,
        capabilities: Some(b.clone()),
        media: None,
    });
    (fast, prior)
}
