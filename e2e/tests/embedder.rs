//! The example embedder (`protocol/examples/embedder.rs`, written from the crate docs
//! alone, over blocking `std` sockets) against the real `precall-server`: alice logs in,
//! shows her table, places a fast-path call to bob (a second copy of the example, which
//! answers), hangs up, drops her own connection, resumes the session on a new one and
//! logs out. Checked: both tables equal the core's `negotiate_pair` of the capabilities
//! each printed, the call took the fast path, the resume kept the session and the
//! table, and bob never saw alice go offline until she logged out.

use std::process::{Command, Stdio};
use std::time::Duration;

use precall_e2e::*;
use precall_protocol::{negotiate_pair, CallParams, Capabilities, Direction};

/// What the example prints for one direction and a parameter set.
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

/// The capabilities a run printed after logging in.
fn printed_caps(out: &str) -> Res<Capabilities> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("capabilities "))
        .ok_or_else(|| Error("no capabilities line".into()))?;
    Ok(serde_json::from_str(line)?)
}

/// The position of the first line after `from` that starts with `prefix`.
fn line_after(out: &str, from: usize, prefix: &str) -> Res<usize> {
    out.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.starts_with(prefix))
        .map(|(i, _)| i)
        .ok_or_else(|| Error(format!("no line {prefix:?} after line {from} in:\n{out}")))
}

#[test]
fn the_example_embedder_logs_in_calls_and_survives_a_dropped_connection() -> Res<()> {
    ensure_binaries()?;
    let bin = example_bin("embedder")?;
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    let run = |user: &str, args: &[&str]| -> Res<std::process::Child> {
        Ok(Command::new(&bin)
            .args(["--server", &server.addr.to_string(), "--user", user])
            .args(["--password-env", "PW", "--timeout-s", "30"])
            .args(args)
            .env("PW", password(user))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    };
    let bob = run("bob", &["--answer"])?;
    // bob first, so that alice finds him in her login snapshot or soon after.
    std::thread::sleep(Duration::from_millis(300));
    let alice = run("alice", &["--call", "bob", "--drop"])?;
    let alice = alice.wait_with_output()?;
    let bob = bob.wait_with_output()?;
    let a = String::from_utf8_lossy(&alice.stdout).into_owned();
    let b = String::from_utf8_lossy(&bob.stdout).into_owned();
    let why = format!(
        "alice:\n{a}{}\nbob:\n{b}{}\nserver:\n{}",
        String::from_utf8_lossy(&alice.stderr),
        String::from_utf8_lossy(&bob.stderr),
        server.log_tail()
    );
    ensure!(
        alice.status.success() && bob.status.success(),
        "a run failed\n{why}"
    );

    // Each side's table entry for the other is the core's negotiation of the two
    // capability sets, from that side.
    let (ca, cb) = (printed_caps(&a)?, printed_caps(&b)?);
    let (for_alice, for_bob) = (
        describe(&negotiate_pair(&ca, &cb)),
        describe(&negotiate_pair(&cb, &ca)),
    );
    ensure!(
        a.contains(&format!(": {for_alice}")),
        "alice's table is not negotiate_pair\n{why}"
    );
    ensure!(
        b.contains(&format!(": {for_bob}")),
        "bob's table is not negotiate_pair\n{why}"
    );

    // alice: logged in, called on the fast path, dropped, resumed the same session
    // with her table kept, logged out.
    let session = a
        .lines()
        .find_map(|l| l.strip_prefix("logged in as alice session "))
        .ok_or_else(|| Error(format!("alice never logged in\n{why}")))?;
    let mut at = line_after(&a, 0, "calling bob/")?;
    at = line_after(&a, at, "call 1 established on the fast path")?;
    at = line_after(&a, at, "dropping the connection")?;
    at = line_after(&a, at, "detached: table kept (1 terminals)")?;
    at = line_after(
        &a,
        at,
        &format!("resumed session {session} (snapshot: false)"),
    )?;
    at = line_after(&a, at, "synced: 1 terminals in the table")?;
    line_after(&a, at, "logged out")?;
    ensure!(
        !a.contains("resume failed"),
        "the resume was refused\n{why}"
    );

    // bob: answered on the fast path; alice went offline once, and only at the end
    // (a resumed session never looks offline to its watchers).
    let at = line_after(&b, 0, "call 1 established on the fast path")?;
    let offline = format!("offline alice/{session}");
    ensure!(
        b.matches(&offline).count() == 1,
        "bob saw alice offline other than once\n{why}"
    );
    ensure!(
        b.matches("online alice/").count() == 1,
        "bob saw alice come online again\n{why}"
    );
    line_after(&b, at, &offline)?;
    Ok(())
}
