//! The client core on phones (issue 18): the Kotlin (JVM, JNA) and Python programs in
//! `bindings/uniffi/` drive the core through the generated uniffi bindings of
//! `precall-ffi` over a real TCP socket to a real `precall-server`, with a reference
//! `precall-client` (bob) as the peer. Each program logs in, checks its table against
//! `negotiate_pair`, places a fast-path call to bob, answers one from him, has its
//! connection cut under it (through a relay) and resumes, sees bob go offline and logs
//! out; this harness plays bob's
//! side when the program says `ready …`, and checks bob's view too (both calls on the
//! fast path with the parameters `negotiate_pair` gives, alice never offline for him
//! while she was only detached).
//!
//! A seeded fault (a client whose `peer_offline` events are dropped before the app
//! sees them, `--fault drop-offline`) must make each program fail.
//!
//! The bindings, the Kotlin jar and the tools are made by `bindings/uniffi/build.sh`
//! (which `scripts/test` runs first); a missing piece fails the test with that command.
//!
//! The Swift bindings cannot be compiled on these machines; the last test checks that
//! the generated Swift files equal the committed `bindings/uniffi/swift/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use precall_e2e::*;
use precall_protocol::Capabilities;
use serde_json::json;

/// Where `bindings/uniffi/build.sh` puts what it makes.
fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/uniffi")
}

fn uniffi_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bindings/uniffi")
}

fn need(path: &Path) -> Res<PathBuf> {
    ensure!(
        path.exists(),
        "{} is missing: run bindings/uniffi/build.sh (scripts/test runs it; it installs \
         kotlinc from npm, JNA from Debian and generates the bindings)",
        path.display()
    );
    Ok(path.to_owned())
}

#[derive(Clone, Copy, Debug)]
enum Lang {
    Kotlin,
    Python,
}

/// The command that runs the scenario program in `lang`.
fn program(lang: Lang) -> Res<Command> {
    let out = out_dir();
    Ok(match lang {
        Lang::Kotlin => {
            let cp = [
                need(&out.join("kotlin/scenario.jar"))?,
                need(&out.join("kotlin/kotlin-stdlib.jar"))?,
                need(Path::new("/usr/share/java/jna.jar"))?,
            ]
            .map(|p| p.display().to_string())
            .join(":");
            let mut c = Command::new("java");
            c.arg(format!(
                "-Djna.library.path={}",
                need(&out.join("lib"))?.display()
            ))
            .args(["-cp", &cp, "ScenarioKt"]);
            c
        }
        Lang::Python => {
            let mut c = Command::new("python3");
            c.env(
                "PYTHONPATH",
                need(&out.join("python/precall_ffi.py"))?.with_file_name(""),
            )
            .arg(uniffi_src().join("python/scenario.py"));
            c
        }
    })
}

/// What a run printed, and whether it succeeded.
struct Run {
    ok: bool,
    lines: Vec<String>,
}

/// Runs the scenario in `lang` as alice against a real server, with a reference
/// client as bob, playing bob's side at each `ready` line.
fn run_scenario(lang: Lang, fault: bool) -> Res<Run> {
    ensure_binaries()?;
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    // Different terminals, so that the parameters differ by direction.
    let alice: Capabilities = caps(&["h264", "vp8"], 1280, 30);
    let bob_caps = phone_caps();
    let alice_file = sb.write_caps("alice.json", &alice)?;
    let bob_file = sb.write_caps("bob.json", &bob_caps)?;
    let mut bob = sb.online_client(server.addr, "bob", &With::CapsFile(bob_file.clone()), &[])?;
    // alice reaches the server through a relay, so that her connection can be cut
    // under her.
    let relay = Relay::start(server.addr)?;
    let bob_params = params_json(&bob_caps, &alice);

    let mut cmd = program(lang)?;
    cmd.args(["--server", &relay.addr.to_string(), "--user", "alice"])
        .args(["--password-env", "PW", "--peer", "bob"])
        .arg("--caps")
        .arg(&alice_file)
        .arg("--peer-caps")
        .arg(&bob_file)
        .env("PW", password("alice"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if fault {
        cmd.args(["--fault", "drop-offline"]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error(format!("starting the {lang:?} scenario: {e}")))?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let started = Instant::now();
    let mut played = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(90)) {
        eprintln!("{lang:?}: {line}");
        lines.push(line.clone());
        match line.as_str() {
            "ready answer" => {
                let inc = bob.wait_event("incoming_call")?;
                ensure!(inc["params"] == bob_params, "bob's incoming call: {inc}");
                bob.send(json!({"cmd": "answer", "call": inc["call"]}))?;
                let est = bob.wait_event_where("call_established", |v| v["call"] == inc["call"])?;
                ensure!(est["path"] == "fast", "bob's end of alice's call: {est}");
                played.push("answered");
            }
            "ready call-me" => {
                bob.send(json!({"cmd": "call", "to": "alice"}))?;
                let est = bob.wait_event("call_established")?;
                ensure!(
                    est["path"] == "fast" && est["params"] == bob_params,
                    "bob's call to alice: {est}"
                );
                played.push("called");
            }
            "ready drop" => {
                ensure!(
                    relay.cut() == 1,
                    "alice had not exactly one connection to cut"
                );
                played.push("cut alice's connection");
            }
            "ready peer-offline" => {
                // alice was only detached while her connection was down: bob never
                // saw her go offline.
                ensure!(
                    !bob.history().iter().any(|v| v["event"] == "peer_offline"),
                    "bob saw alice go offline: {:?}",
                    bob.history()
                );
                bob.logout()?;
                played.push("logged out");
            }
            _ => {}
        }
    }
    let status = child.wait()?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        e.read_to_string(&mut stderr)?;
    }
    eprintln!(
        "{lang:?} scenario: {status} after {:.1} s; bob {played:?}; stderr:\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    let ok = status.success() && lines.last().map(String::as_str) == Some("done");
    if !ok && !fault {
        bail!(
            "the {lang:?} scenario failed ({status}):\n{}\n{stderr}\nserver:\n{}",
            lines.join("\n"),
            server.log_tail()
        );
    }
    Ok(Run { ok, lines })
}

fn passes(lang: Lang) -> Res<()> {
    let run = run_scenario(lang, false)?;
    for step in [
        "login",
        "table",
        "call",
        "answer",
        "resume",
        "peer-offline",
        "logout",
    ] {
        let prefix = format!("step {step}: ");
        ensure!(
            run.lines.iter().any(|l| l.starts_with(&prefix)),
            "no `{prefix}` line in:\n{}",
            run.lines.join("\n")
        );
    }
    ensure!(run.ok, "not done");
    Ok(())
}

fn catches_the_dropped_event(lang: Lang) -> Res<()> {
    let run = run_scenario(lang, true)?;
    ensure!(
        !run.ok,
        "a client that drops peer_offline passed:\n{}",
        run.lines.join("\n")
    );
    let fail = run.lines.iter().find(|l| l.starts_with("FAIL: "));
    ensure!(
        fail.is_some_and(|l| l.contains("peer offline") && l.contains("not the core's")),
        "the run failed, but not at the offline check:\n{}",
        run.lines.join("\n")
    );
    ensure!(
        run.lines.iter().any(|l| l.starts_with("step resume: ")),
        "the fault run stopped before the offline step:\n{}",
        run.lines.join("\n")
    );
    Ok(())
}

#[test]
fn kotlin_phone_logs_in_calls_answers_resumes_and_logs_out() -> Res<()> {
    passes(Lang::Kotlin)
}

#[test]
fn python_phone_logs_in_calls_answers_resumes_and_logs_out() -> Res<()> {
    passes(Lang::Python)
}

#[test]
fn kotlin_phone_that_drops_peer_offline_is_caught() -> Res<()> {
    catches_the_dropped_event(Lang::Kotlin)
}

#[test]
fn python_phone_that_drops_peer_offline_is_caught() -> Res<()> {
    catches_the_dropped_event(Lang::Python)
}

/// The Swift bindings are generated (build.sh) and equal the committed ones: a change
/// to the facade's API shows in review as a diff of `bindings/uniffi/swift/`.
#[test]
fn swift_bindings_are_generated_and_unchanged() -> Res<()> {
    for name in [
        "precall_ffi.swift",
        "precall_ffiFFI.h",
        "precall_ffiFFI.modulemap",
    ] {
        let generated = std::fs::read_to_string(need(&out_dir().join("swift").join(name))?)?;
        let committed = std::fs::read_to_string(uniffi_src().join("swift").join(name))?;
        ensure!(
            generated.len() > 100 && generated == committed,
            "target/uniffi/swift/{name} differs from bindings/uniffi/swift/{name}: if the \
             facade's API changed on purpose, run `bindings/uniffi/build.sh --bless` and \
             review the diff"
        );
    }
    Ok(())
}
