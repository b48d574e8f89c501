//! Passwords stay off the command line (issue item 6): `precall-client` and
//! `precall-server admin user add/passwd` read them from `--password-file`, from
//! `PRECALL_PASSWORD`, or from a prompt on the terminal that does not echo; `--password`
//! still works, with a warning.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use precall_e2e::*;

/// A client that logs in with `--password-file` (and nothing in the environment).
#[test]
fn the_client_reads_its_password_from_a_file() -> Res<()> {
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    let file = sb.write("alice.pw", &format!("{}\n", password("alice")))?;
    let file = file.to_string_lossy().into_owned();
    let mut alice = sb.client_with_password(
        server.addr,
        "alice",
        "not-this-one",
        &With::flags(&["--codecs", "h264"]),
        &["--password-file", &file],
    )?;
    alice.wait_logged_in()?;
    Ok(())
}

/// `--password` works and says why it should not be used; the environment variable
/// (what [`Sandbox::client`] uses) says nothing.
#[test]
fn a_password_on_the_command_line_is_warned_about() -> Res<()> {
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[])?;
    let mut bob = sb.client(
        server.addr,
        "bob",
        &With::Terminal("bob-phone".into()),
        &["--password", &password("bob")],
    )?;
    bob.wait_logged_in()?;
    let mut alice = sb.client(
        server.addr,
        "alice",
        &With::flags(&["--codecs", "h264"]),
        &[],
    )?;
    alice.wait_logged_in()?;
    ensure!(
        bob.log_tail()
            .contains("warning: a password given with --password"),
        "no warning for --password:\n{}",
        bob.log_tail()
    );
    ensure!(
        !alice.log_tail().contains("warning: a password"),
        "a warning without --password:\n{}",
        alice.log_tail()
    );
    Ok(())
}

/// `admin user add` with no password source asks on the terminal (a pseudo-terminal
/// made by util-linux's `script`), without echoing what is typed; the account then logs
/// in with it. Without a terminal it fails and says how to give one.
#[test]
fn admin_asks_for_a_password_on_the_terminal_without_echo() -> Res<()> {
    let sb = Sandbox::with_cast()?;
    let secret = "typed-not-shown-42";
    let cmd = format!(
        "{} admin --db {} --argon2-m-kib 8 --argon2-t 1 user add zed",
        server_bin().display(),
        sb.db.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove(precall_cli::PASSWORD_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error(format!("util-linux `script` is needed for this test: {e}")))?;
    std::thread::sleep(Duration::from_millis(500));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(format!("{secret}\n").as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let screen = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "admin user add failed: {screen}");
    ensure!(screen.contains("password for zed"), "no prompt: {screen:?}");
    ensure!(
        !screen.contains(secret),
        "the password was echoed: {screen:?}"
    );

    let server = sb.start_server(&[])?;
    let mut zed = sb.client_with_password(
        server.addr,
        "zed",
        secret,
        &With::flags(&["--codecs", "h264"]),
        &[],
    )?;
    zed.wait_logged_in()?;

    // No terminal, no file, no variable: a clear error, nothing created.
    let (ok, _, err) = sb.try_admin(&["user", "add", "yan"])?;
    ensure!(!ok, "an account was created without a password");
    ensure!(
        err.contains("--password-file") && err.contains("PRECALL_PASSWORD"),
        "the error does not say how to give a password: {err}"
    );
    Ok(())
}
