//! The workspace's binaries (found next to the running executable, built once under
//! `cargo test`) and the child-process helpers: bounded waits, signals, log tails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::{bail, ensure, Error, Res};

/// The directory holding the workspace's binaries: `PRECALL_BIN_DIR`, or the directory
/// of the running executable, or its parent if that is `deps` (a test executable).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PRECALL_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("."));
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

fn bin(name: &str) -> PathBuf {
    bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// The path of `precall-server`.
pub fn server_bin() -> PathBuf {
    bin("precall-server")
}

/// The path of `precall-client`.
pub fn client_bin() -> PathBuf {
    bin("precall-client")
}

/// Makes sure both binaries exist.
///
/// Under `cargo test` (a test executable in `deps/`, with `CARGO` in the environment)
/// it first runs `cargo build -p precall-server -p precall-client` once per process, with
/// the profile of the directory the tests run from, so that `cargo test -p precall-e2e`
/// never drives stale binaries. `PRECALL_E2E_NO_BUILD=1` skips that step.
pub fn ensure_binaries() -> Res<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(build_binaries);
    if let Err(e) = built {
        bail!("{e}");
    }
    for b in [server_bin(), client_bin()] {
        ensure!(
            b.is_file(),
            "{} not found: build the workspace first (`cargo build --workspace`, or \
             `cargo build --release --workspace` for the release demo)",
            b.display()
        );
    }
    Ok(())
}

fn build_binaries() -> Result<(), String> {
    cargo_build(&["-p", "precall-server", "-p", "precall-client"])
}

/// Under `cargo test` (a test executable in `deps/`, `CARGO` set, neither
/// `PRECALL_E2E_NO_BUILD` nor `PRECALL_BIN_DIR`), runs `cargo build -q ARGS` into the
/// target directory the tests run from, with its profile; otherwise does nothing.
fn cargo_build(args: &[&str]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let in_deps = exe
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "deps");
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    if !in_deps
        || std::env::var_os("PRECALL_E2E_NO_BUILD").is_some()
        || std::env::var_os("PRECALL_BIN_DIR").is_some()
    {
        return Ok(());
    }
    let dir = bin_dir();
    let Some(target_dir) = dir.parent() else {
        return Ok(());
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q"])
        .args(args)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null());
    // `cargo test` builds the workspace's binaries with the `test` profile into
    // `target/debug/`: build with the same one, so a `cargo test --workspace` that already
    // built them finds them fresh.
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    } else if dir.file_name().is_some_and(|n| n == "debug") {
        cmd.args(["--profile", "test"]);
    } else {
        // A custom profile or a cross target directory: do not guess, use what is there.
        return Ok(());
    }
    let what = format!("`cargo build {}`", args.join(" "));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running cargo build: {e}"))?;
    match wait_timeout(&mut child, Duration::from_secs(600)) {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("{what} failed ({s})")),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{what} timed out"))
        }
    }
}

/// Waits for a child to exit, at most `timeout`. `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Sends a signal to a process.
#[cfg(unix)]
pub fn signal(pid: u32, sig: libc::c_int) -> Res<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| Error(format!("bad pid {pid}")))?;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one of our children.
    let rc = unsafe { libc::kill(pid, sig) };
    ensure!(
        rc == 0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The last `max` bytes of a log file, for error messages.
pub fn tail(path: &Path, max: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The path of an example of `precall-protocol` (`embedder`, `walkthrough`), built first
/// under `cargo test` as [`ensure_binaries`] builds the binaries.
pub fn example_bin(name: &str) -> Res<PathBuf> {
    let bin = bin_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    cargo_build(&["-p", "precall-protocol", "--example", name]).map_err(Error)?;
    ensure!(
        bin.is_file(),
        "{} not found: `cargo build -p precall-protocol --example {name}`",
        bin.display()
    );
    Ok(bin)
}
