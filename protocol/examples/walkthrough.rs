//! A narrated walk through the protocol, with the real server and client state
//! machines wired in memory by `precall_protocol::sim` (no sockets: the TCP demo
//! belongs to the reference binaries).
//!
//! Run: `cargo run -p precall-protocol --example walkthrough`

use precall_protocol::caps::{Direction, StreamParams};
use precall_protocol::client::ClientEvent;
use precall_protocol::codec::HEADER_LEN;
use precall_protocol::sim::{sample_caps, Directory, Sim};
use precall_protocol::{CallId, CallParams, LoginWith, ServerConfig, TerminalId, UserId};

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user")
}

fn dir(d: &Direction) -> String {
    match d {
        Direction::Video(StreamParams {
            codec,
            width,
            height,
            fps,
            bitrate_kbps,
        }) => format!("{codec} {width}x{height}@{fps} {bitrate_kbps} kbit/s"),
        Direction::Off(why) => format!("no video ({why:?})"),
    }
}

fn params(p: &CallParams) -> String {
    format!("send {} | recv {}", dir(&p.send), dir(&p.recv))
}

fn table(sim: &Sim, i: usize, name: &str) {
    println!("  {name}'s table:");
    let mut any = false;
    for (endpoint, peer) in sim.client(i).peers() {
        any = true;
        println!("    {endpoint:<10} {}", params(&peer.params));
    }
    if !any {
        println!("    (empty)");
    }
}

/// Prints and forgets the frames the server sent since the last call.
fn wire(sim: &mut Sim, names: &[(u64, &str)]) {
    for (conn, frame) in sim.sent.drain(..) {
        let to = names
            .iter()
            .find(|(c, _)| *c == conn.0)
            .map_or("?", |(_, n)| *n);
        let text = String::from_utf8_lossy(&frame[HEADER_LEN..]);
        let shown: String = text.chars().take(150).collect();
        let more = if text.len() > 150 { "…" } else { "" };
        println!("    server → {to:<6} {shown}{more}");
    }
}

fn step(sim: &mut Sim, names: &[(u64, &str)]) {
    sim.settle().expect("every invariant holds");
    wire(sim, names);
}

fn main() {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let mut d = Directory::default();
    for u in [&alice, &bob, &carol] {
        d.add_user(u, "secret");
    }
    d.befriend(&alice, &bob);
    d.befriend(&alice, &carol);
    let phone = TerminalId::new("bob-phone").expect("valid id");
    d.register(&phone, &bob, sample_caps(&["vp8", "h264"], 1280, 30));
    let mut sim = Sim::new(d, 3, ServerConfig::default());
    let names = [(1, "alice"), (2, "bob"), (3, "carol")];

    println!("1. alice logs in with her capabilities inline (C2, C7)");
    sim.login(
        0,
        &alice,
        "secret",
        LoginWith::Capabilities(sample_caps(&["h264", "vp8"], 1920, 30)),
    );
    step(&mut sim, &names);

    println!("\n2. bob logs in with a registered terminal id (C3, C8); alice gets his capabilities in the push (C6) and sets parameters at once (C1)");
    sim.login(1, &bob, "secret", LoginWith::TerminalId(phone));
    step(&mut sim, &names);
    table(&sim, 0, "alice");
    table(&sim, 1, "bob");

    println!("\n3. carol logs in");
    sim.login(
        2,
        &carol,
        "secret",
        LoginWith::Capabilities(sample_caps(&["av1", "h264"], 3840, 60)),
    );
    step(&mut sim, &names);
    table(&sim, 0, "alice");

    println!(
        "\n4. alice calls bob: the request carries two fingerprints, no capabilities (fast path)"
    );
    let call = call_and_answer(&mut sim, 0, 1, &names);
    let now = sim.now;
    sim.client_mut(0).hangup(call, now).expect("call exists");
    step(&mut sim, &names);

    println!("\n5. bob's capabilities change; alice calls before the update reaches her (fallback: bob's answer carries his capabilities)");
    let now = sim.now;
    sim.client_mut(1)
        .update_caps(sample_caps(&["h264"], 640, 15), now)
        .expect("online, no call in set-up");
    // alice places the call before the network delivers bob's update.
    let call = call_and_answer(&mut sim, 0, 1, &names);
    let now = sim.now;
    sim.client_mut(1).hangup(call, now).expect("call exists");
    step(&mut sim, &names);

    println!("\n6. carol logs out: alice's entry for her is deleted (C9, C4)");
    let now = sim.now;
    sim.client_mut(2).logout(now).expect("online");
    step(&mut sim, &names);
    table(&sim, 0, "alice");

    println!("\n7. alice logs out: she deletes every capability and parameter (C5)");
    sim.client_mut(0).logout(now).expect("online");
    println!(
        "  alice holds {} entries right after pressing logout",
        sim.client(0).peers().count()
    );
    step(&mut sim, &names);
    table(&sim, 1, "bob");
    println!("\nEvery invariant held after every step (INV-ONLINE-EXACT, INV-VISIBILITY, INV-CALL-AGREE, ...).");
}

/// Terminal `from` calls terminal `to`, which accepts; prints what the caller got.
fn call_and_answer(sim: &mut Sim, from: usize, to: usize, names: &[(u64, &str)]) -> CallId {
    let callee = sim.endpoint(to).expect("callee online");
    let now = sim.now;
    sim.client_mut(from)
        .place_call(&callee, now)
        .expect("callee is in the caller's table");
    step(sim, names);
    let call = sim.terminals[to]
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            ClientEvent::IncomingCall { call, .. } => Some(*call),
            _ => None,
        })
        .expect("the callee rings");
    sim.client_mut(to)
        .answer(call, true, now)
        .expect("incoming call");
    step(sim, names);
    report_call(sim, from, names[from].1);
    call
}

fn report_call(sim: &Sim, i: usize, name: &str) {
    for e in sim.terminals[i].events.iter().rev() {
        if let ClientEvent::CallEstablished {
            params: p, path, ..
        } = e
        {
            let path = path.name();
            println!(
                "  {name}: call established on the {path} path: {}",
                params(p)
            );
            println!(
                "  capability bytes in {name}'s call signalling so far: {}",
                sim.terminals[i].call_caps_bytes
            );
            return;
        }
    }
}
