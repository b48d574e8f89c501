//! The process harness shared by the end-to-end demo (`precall-demo`) and the e2e tests.
//!
//! Everything here drives the **real** binaries, `precall-server` and `precall-client`,
//! exactly as the command-line contract describes them: a temporary directory holds a
//! real SQLite database, the server is started on `127.0.0.1:0` and announces its port on
//! stdout (`listening on ADDR`), the admin subcommands fill the store, and clients run in
//! `--json` mode with one JSON command per line on stdin and one JSON event per line on
//! stdout. For the apparatus-level checks there are also raw sockets: [`RawConn`] speaks
//! the wire format directly (length-prefixed canonical JSON, decoded with the core's
//! `codec::decode_message`), and [`FakeServer`] accepts a client binary's connection.
//!
//! Every wait is bounded: nothing here blocks longer than the timeout it is given, and
//! every child process is killed when its handle is dropped, so a failing test never
//! leaves processes or hangs behind.
//!
//! Binaries are looked up next to the running executable (`target/<profile>/`, or the
//! parent of `deps/` for a test), or in `PRECALL_BIN_DIR` if set. Set `PRECALL_E2E_KEEP=1`
//! to keep the temporary directories (database and process logs) for inspection.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use precall_protocol::codec::{decode_message, encode_frame, FrameDecoder, DEFAULT_MAX_FRAME};
use precall_protocol::message::WireMessage;
use precall_protocol::{
    negotiate_pair, Capabilities, ClientMessage, CpuClass, LoginWith, Password, ServerMessage,
    TerminalId, UserId, PROTOCOL_VERSION,
};
use serde_json::{json, Value};

/// The default bound of a wait for one event or frame.
pub const TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A harness failure: a message meant for a human (what was awaited, what arrived
/// instead, the tail of the process's log).
pub struct Error(pub String);

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Test failures print the Debug form: keep it readable, newlines included.
        f.write_str(&self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(format!("I/O error: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("JSON error: {e}"))
    }
}

impl From<precall_protocol::InvalidValue> for Error {
    fn from(e: precall_protocol::InvalidValue) -> Self {
        Error(format!("invalid value: {e}"))
    }
}

/// The harness's result type.
pub type Res<T> = Result<T, Error>;

/// Fails with a formatted [`Error`].
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::Error(format!($($t)*))) };
}

/// Fails with a formatted [`Error`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($t:tt)*) => {
        if !$cond { $crate::bail!($($t)*); }
    };
}

// ---------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------

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
    cmd.args([
        "build",
        "-q",
        "-p",
        "precall-server",
        "-p",
        "precall-client",
    ])
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
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running cargo build: {e}"))?;
    match wait_timeout(&mut child, Duration::from_secs(600)) {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!(
            "`cargo build -p precall-server -p precall-client` failed ({s})"
        )),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err("`cargo build -p precall-server -p precall-client` timed out".into())
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

// ---------------------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------------------

/// A capability set: `codecs` both ways, a 16:9 screen and camera `width` pixels wide,
/// `fps` frames per second, high CPU, 8 Mbit/s each way (the core's `sample_caps`).
pub fn caps(codecs: &[&str], width: u16, fps: u16) -> Capabilities {
    let height = width / 16 * 9;
    Capabilities::builder()
        .codecs(codecs.iter().copied())
        .screen(width, height)
        .camera(width, height, fps)
        .cpu(CpuClass::High)
        .bandwidth(8000, 8000)
        .build()
        .expect("the tests' capabilities are valid")
}

/// The phone of the spec's examples (`bob-phone`): portrait screen, mid CPU.
pub fn phone_caps() -> Capabilities {
    serde_json::from_value(json!({
        "encode": ["vp8", "h264"], "decode": ["av1", "vp8", "h264"],
        "screen": {"width": 1080, "height": 2340},
        "camera": {"max": {"width": 1080, "height": 1920}, "max_fps": 30},
        "cpu": "mid", "bandwidth": {"up_kbps": 4000, "down_kbps": 12000}
    }))
    .expect("valid capabilities")
}

/// A capability set as a JSON value, exactly as on the wire.
pub fn caps_json(c: &Capabilities) -> Value {
    serde_json::to_value(c).expect("capabilities serialise")
}

/// The call parameters the core computes for a call from a terminal with `me` to one
/// with `them`, as JSON (`{"send":…,"recv":…}`, the Direction JSON of the core).
pub fn params_json(me: &Capabilities, them: &Capabilities) -> Value {
    serde_json::to_value(negotiate_pair(me, them)).expect("params serialise")
}

/// One direction of a call in words: `h264 1280x720@30 2500 kbit/s` or `off (no_camera)`.
pub fn describe_direction(d: &Value) -> String {
    if let Some(v) = d.get("video") {
        format!(
            "{} {}x{}@{} {} kbit/s",
            v["codec"].as_str().unwrap_or("?"),
            v["width"],
            v["height"],
            v["fps"],
            v["bitrate_kbps"]
        )
    } else if let Some(off) = d.get("off") {
        format!("off ({})", off.as_str().unwrap_or("?"))
    } else {
        d.to_string()
    }
}

/// Call parameters (`{"send","recv"}`) in words.
pub fn describe_params(p: &Value) -> String {
    format!(
        "send {} | recv {}",
        describe_direction(&p["send"]),
        describe_direction(&p["recv"])
    )
}

/// The parameters of a table row or a `peer_online` event (`params` member, or
/// `send`/`recv` members directly).
pub fn params_of(v: &Value) -> Value {
    if let Some(p) = v.get("params") {
        return p.clone();
    }
    json!({"send": v["send"], "recv": v["recv"]})
}

/// The password the harness gives `user`.
pub fn password(user: &str) -> String {
    format!("{user}-pass-1234")
}

// ---------------------------------------------------------------------------------------
// Sandbox: a temporary directory, a database, admin commands
// ---------------------------------------------------------------------------------------

/// A temporary directory with a SQLite database path; the home of one scenario's
/// server, its admin commands and its processes' logs.
pub struct Sandbox {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    /// The database file.
    pub db: PathBuf,
    seq: std::cell::Cell<u32>,
}

/// How a client logs in.
#[derive(Clone, Debug)]
pub enum With {
    /// `--caps FILE`.
    CapsFile(PathBuf),
    /// `--terminal ID`.
    Terminal(String),
    /// Capability flags, e.g. `["--codecs","h264,vp8","--width","1920","--fps","30"]`.
    Flags(Vec<String>),
}

impl With {
    /// Capability flags from string slices.
    pub fn flags(args: &[&str]) -> With {
        With::Flags(args.iter().map(|s| (*s).to_owned()).collect())
    }
}

impl Sandbox {
    /// A fresh temporary directory (binaries checked, built if under `cargo test`).
    pub fn new() -> Res<Sandbox> {
        ensure_binaries()?;
        let dir = tempfile::TempDir::with_prefix("precall-e2e-")?;
        let path = dir.path().to_path_buf();
        Ok(Sandbox {
            db: path.join("precall.db"),
            path,
            dir: Some(dir),
            seq: std::cell::Cell::new(0),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn next(&self) -> u32 {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        n
    }

    /// Writes a file in the sandbox and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> Res<PathBuf> {
        let p = self.path.join(name);
        std::fs::write(&p, contents)?;
        Ok(p)
    }

    /// Writes a capabilities file (the JSON object exactly as on the wire).
    pub fn write_caps(&self, name: &str, c: &Capabilities) -> Res<PathBuf> {
        self.write(name, &serde_json::to_string_pretty(c)?)
    }

    /// Runs `precall-server admin --db DB ARGS…` and returns (success, stdout, stderr).
    pub fn try_admin(&self, args: &[&str]) -> Res<(bool, String, String)> {
        let n = self.next();
        let out = self.path.join(format!("admin-{n}.out"));
        let err = self.path.join(format!("admin-{n}.err"));
        let mut child = Command::new(server_bin())
            .arg("admin")
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?)
            .spawn()
            .map_err(|e| Error(format!("spawning {}: {e}", server_bin().display())))?;
        let Some(status) = wait_timeout(&mut child, Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`precall-server admin {}` did not finish in 20 s",
                args.join(" ")
            );
        };
        Ok((
            status.success(),
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default(),
        ))
    }

    /// Runs an admin command that must succeed; returns its stdout.
    pub fn admin(&self, args: &[&str]) -> Res<String> {
        let (ok, out, err) = self.try_admin(args)?;
        ensure!(
            ok,
            "`precall-server admin {}` failed:\n{err}{out}",
            args.join(" ")
        );
        Ok(out)
    }

    /// Runs an admin listing and returns its non-empty lines.
    pub fn admin_lines(&self, args: &[&str]) -> Res<Vec<String>> {
        Ok(self
            .admin(args)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// `user add NAME --password-file F`, F holding [`password`]`(NAME)`.
    pub fn add_user(&self, name: &str) -> Res<()> {
        let file = self.write(&format!("{name}.password"), &password(name))?;
        let file = file.to_string_lossy();
        self.admin(&["user", "add", name, "--password-file", &file])
            .map(drop)
    }

    /// `contact add A B` and `contact add B A`: mutual contacts.
    pub fn befriend(&self, a: &str, b: &str) -> Res<()> {
        self.admin(&["contact", "add", a, b])?;
        self.admin(&["contact", "add", b, a])?;
        Ok(())
    }

    /// `terminal register ID --owner USER --caps FILE`.
    pub fn register_terminal(&self, id: &str, owner: &str, c: &Capabilities) -> Res<PathBuf> {
        let file = self.write_caps(&format!("terminal-{id}.json"), c)?;
        let f = file.to_string_lossy().into_owned();
        self.admin(&["terminal", "register", id, "--owner", owner, "--caps", &f])?;
        Ok(file)
    }

    /// The usual cast: users alice, bob, carol; alice↔bob and alice↔carol mutual
    /// contacts (bob and carol do not list each other); terminal `bob-phone` registered
    /// for bob with [`phone_caps`].
    pub fn with_cast() -> Res<Sandbox> {
        let s = Sandbox::new()?;
        for u in ["alice", "bob", "carol"] {
            s.add_user(u)?;
        }
        s.befriend("alice", "bob")?;
        s.befriend("alice", "carol")?;
        s.register_terminal("bob-phone", "bob", &phone_caps())?;
        Ok(s)
    }

    /// Starts `precall-server serve --db DB --listen 127.0.0.1:0 EXTRA…` and waits for
    /// its `listening on ADDR` line.
    pub fn start_server(&self, extra: &[&str]) -> Res<ServerProc> {
        self.start_server_on("127.0.0.1:0", extra)
    }

    /// Starts `precall-server serve --db DB --listen LISTEN EXTRA…` and waits for its
    /// `listening on ADDR` line. An unspecified address (`0.0.0.0`, `::`) is reported as
    /// the loopback address of its family in [`ServerProc::addr`], for connecting to it.
    pub fn start_server_on(&self, listen: &str, extra: &[&str]) -> Res<ServerProc> {
        self.spawn_server(Command::new(server_bin()), listen, extra)
    }

    /// [`Sandbox::start_server`] with the open-file limit (soft and hard) set to
    /// `nofile`, through util-linux's `prlimit`.
    pub fn start_server_with_nofile(&self, nofile: u64, extra: &[&str]) -> Res<ServerProc> {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(server_bin());
        self.spawn_server(cmd, "127.0.0.1:0", extra)
    }

    fn spawn_server(&self, mut cmd: Command, listen: &str, extra: &[&str]) -> Res<ServerProc> {
        let n = self.next();
        let log = self.path.join(format!("server-{n}.log"));
        let mut child = cmd
            .arg("serve")
            .arg("--db")
            .arg(&self.db)
            .args(["--listen", listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log)?)
            .spawn()
            .map_err(|e| Error(format!("spawning {cmd:?}: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Only the first line matters; keep draining so the pipe never fills.
                let _ = tx.send(line);
            }
        });
        let mut server = ServerProc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let line = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(l) => l,
            Err(_) => bail!(
                "the server did not print `listening on ADDR` within 15 s; its log:\n{}",
                server.log_tail()
            ),
        };
        let Some(addr) = line.strip_prefix("listening on ") else {
            bail!("the server's first stdout line is {line:?}, not `listening on ADDR`")
        };
        server.addr = addr
            .trim()
            .parse()
            .map_err(|e| Error(format!("bad address in {line:?}: {e}")))?;
        if server.addr.ip().is_unspecified() {
            let loopback = match server.addr.ip() {
                std::net::IpAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            };
            server.addr.set_ip(loopback);
        }
        Ok(server)
    }

    /// Spawns `precall-client --server ADDR --user USER <login> --json EXTRA…` with
    /// `PRECALL_PASSWORD` = [`password`]`(user)`.
    pub fn client(
        &self,
        addr: SocketAddr,
        user: &str,
        with: &With,
        extra: &[&str],
    ) -> Res<ClientProc> {
        self.client_with_password(addr, user, &password(user), with, extra)
    }

    /// As [`Sandbox::client`] with an explicit password.
    pub fn client_with_password(
        &self,
        addr: SocketAddr,
        user: &str,
        pw: &str,
        with: &With,
        extra: &[&str],
    ) -> Res<ClientProc> {
        let n = self.next();
        let log = self.path.join(format!("client-{user}-{n}.log"));
        let mut cmd = Command::new(client_bin());
        // The password from the environment, as a script would give it (not on the
        // command line, where every local user sees it).
        cmd.arg("--server")
            .arg(addr.to_string())
            .args(["--user", user])
            .env(precall_cli::PASSWORD_ENV, pw);
        match with {
            With::CapsFile(p) => {
                cmd.arg("--caps").arg(p);
            }
            With::Terminal(id) => {
                cmd.args(["--terminal", id]);
            }
            With::Flags(f) => {
                cmd.args(f);
            }
        }
        cmd.arg("--json").args(extra);
        ClientProc::spawn(user, cmd, log)
    }

    /// A client logged in and synced (the usual start): spawns it and waits for
    /// `logged_in` and `synced`.
    pub fn online_client(
        &self,
        addr: SocketAddr,
        user: &str,
        with: &With,
        extra: &[&str],
    ) -> Res<ClientProc> {
        let mut c = self.client(addr, user, with, extra)?;
        c.wait_logged_in()?;
        c.wait_synced()?;
        Ok(c)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("PRECALL_E2E_KEEP").is_some() {
                let kept = dir.keep();
                eprintln!("precall-e2e: kept {}", kept.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------

/// A running `precall-server serve`; killed on drop.
pub struct ServerProc {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl ServerProc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tail of its stderr log.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 4000)
    }

    /// Its whole stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait at most `timeout` for the exit status (SIGKILL after that).
    #[cfg(unix)]
    pub fn terminate(&mut self, timeout: Duration) -> Res<ExitStatus> {
        signal(self.child.id(), libc::SIGTERM)?;
        match wait_timeout(&mut self.child, timeout) {
            Some(s) => Ok(s),
            None => {
                self.kill();
                bail!("the server did not exit within {timeout:?} of SIGTERM")
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Client process
// ---------------------------------------------------------------------------------------

/// A running `precall-client --json`: JSON commands in, JSON events out; killed on drop.
pub struct ClientProc {
    /// The user it logs in as (for messages).
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<(Instant, Value)>,
    pending: VecDeque<(Instant, Value)>,
    history: Vec<Value>,
    log: PathBuf,
    eof: bool,
}

impl ClientProc {
    /// Spawns a prepared command with piped stdin/stdout and stderr to `log`, and a
    /// reader thread that turns each stdout line into a JSON event.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Res<ClientProc> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&log)?)
            .spawn()
            .map_err(|e| Error(format!("spawning {}: {e}", client_bin().display())))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let v = serde_json::from_str::<Value>(&line)
                    .unwrap_or_else(|_| json!({"event": "_unparsed", "line": line}));
                if tx.send((Instant::now(), v)).is_err() {
                    return;
                }
            }
            let _ = tx.send((Instant::now(), json!({"event": "_eof"})));
        });
        Ok(ClientProc {
            name: name.to_owned(),
            child,
            stdin,
            rx,
            pending: VecDeque::new(),
            history: Vec::new(),
            log,
            eof: false,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every event received so far, in order (consumed or not).
    pub fn history(&self) -> &[Value] {
        &self.history
    }

    /// The tail of its stderr log.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 3000)
    }

    /// Writes one JSON command line to its stdin.
    pub fn send(&mut self, cmd: Value) -> Res<()> {
        self.send_line(&cmd.to_string())
    }

    /// Writes one raw line to its stdin.
    pub fn send_line(&mut self, line: &str) -> Res<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("{}: stdin already closed", self.name)
        };
        let r = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush());
        if let Err(e) = r {
            bail!(
                "{}: writing {line:?} to stdin: {e}\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Closes its stdin (EOF: the client logs out and exits).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn pull(&mut self, timeout: Duration) -> Result<(Instant, Value), RecvTimeoutError> {
        if self.eof {
            return Err(RecvTimeoutError::Disconnected);
        }
        let r = self.rx.recv_timeout(timeout);
        match &r {
            Ok((_, v)) => {
                if v["event"] == "_eof" {
                    self.eof = true;
                }
                self.history.push(v.clone());
            }
            Err(RecvTimeoutError::Disconnected) => self.eof = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        r
    }

    /// Waits at most `timeout` for the first event (not consumed before) that matches
    /// `pred`, consumes it and returns it with the time it was read. Events that do not
    /// match stay pending for later waits.
    pub fn wait_for_at(
        &mut self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Res<(Instant, Value)> {
        if let Some(i) = self.pending.iter().position(|(_, v)| pred(v)) {
            return Ok(self.pending.remove(i).expect("index in range"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.pull(left) {
                Ok((t, v)) => {
                    if pred(&v) {
                        return Ok((t, v));
                    }
                    self.pending.push_back((t, v));
                }
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("nothing matching within {timeout:?}"),
                        RecvTimeoutError::Disconnected => "its output ended".to_owned(),
                    };
                    let seen: Vec<String> = self
                        .pending
                        .iter()
                        .rev()
                        .take(12)
                        .rev()
                        .map(|(_, v)| v.to_string())
                        .collect();
                    bail!(
                        "client {}: {why}; unconsumed events (last 12):\n  {}\nits stderr (tail):\n{}",
                        self.name,
                        seen.join("\n  "),
                        self.log_tail()
                    );
                }
            }
        }
    }

    /// [`ClientProc::wait_for_at`] without the time.
    pub fn wait_for(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Res<Value> {
        self.wait_for_at(pred, timeout).map(|(_, v)| v)
    }

    /// Waits for the next event named `name` (within [`TIMEOUT`]).
    pub fn wait_event(&mut self, name: &str) -> Res<Value> {
        self.wait_for(|v| v["event"] == name, TIMEOUT)
            .map_err(|e| Error(format!("waiting for `{name}`: {e}")))
    }

    /// Waits for an event named `name` that also satisfies `pred` (within [`TIMEOUT`]).
    pub fn wait_event_where(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Res<Value> {
        self.wait_for(|v| v["event"] == name && pred(v), TIMEOUT)
            .map_err(|e| Error(format!("waiting for `{name}`: {e}")))
    }

    /// Checks that no event matching `pred` arrives within `window` (events are kept).
    pub fn expect_none(&mut self, pred: impl Fn(&Value) -> bool, window: Duration) -> Res<()> {
        if let Some((_, v)) = self.pending.iter().find(|(_, v)| pred(v)) {
            bail!("client {}: unexpected event {v}", self.name);
        }
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.pull(left) {
                Ok((t, v)) => {
                    ensure!(!pred(&v), "client {}: unexpected event {v}", self.name);
                    self.pending.push_back((t, v));
                }
                Err(_) => return Ok(()),
            }
        }
    }

    /// Drops every pending event.
    pub fn clear_pending(&mut self) {
        while let Ok((t, v)) = self.pull(Duration::ZERO) {
            self.pending.push_back((t, v));
        }
        self.pending.clear();
    }

    /// Waits for `logged_in`; returns the session.
    pub fn wait_logged_in(&mut self) -> Res<u64> {
        let v = self.wait_for(
            |v| v["event"] == "logged_in" || v["event"] == "error" || v["event"] == "logged_out",
            Duration::from_secs(10),
        )?;
        match v["session"].as_u64() {
            Some(s) if v["event"] == "logged_in" => Ok(s),
            _ => bail!(
                "client {}: login failed: {v}\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// Waits for `synced`; returns its table.
    pub fn wait_synced(&mut self) -> Res<Vec<Value>> {
        let v = self.wait_event("synced")?;
        Ok(v["table"].as_array().cloned().unwrap_or_default())
    }

    /// The session of its `logged_in` event, once received.
    pub fn session(&self) -> Option<u64> {
        self.history
            .iter()
            .find(|v| v["event"] == "logged_in")
            .and_then(|v| v["session"].as_u64())
    }

    /// The table of its `synced` event, once received.
    pub fn synced_table(&self) -> Option<Vec<Value>> {
        self.history
            .iter()
            .find(|v| v["event"] == "synced")
            .map(|v| v["table"].as_array().cloned().unwrap_or_default())
    }

    /// Sends `table` and returns the rows of the answer.
    pub fn table(&mut self) -> Res<Vec<Value>> {
        // An older answer may be pending: drop stale ones so the one returned is fresh.
        self.pending.retain(|(_, v)| v["event"] != "table");
        self.send(json!({"cmd": "table"}))?;
        let v = self.wait_event("table")?;
        Ok(v["table"].as_array().cloned().unwrap_or_default())
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Res<ExitStatus> {
        match wait_timeout(&mut self.child, timeout) {
            Some(s) => Ok(s),
            None => bail!("client {} did not exit within {timeout:?}", self.name),
        }
    }

    /// Logs out by closing stdin; waits for `logged_out` and a clean exit.
    pub fn logout(&mut self) -> Res<()> {
        self.close_stdin();
        self.wait_event("logged_out")?;
        let s = self.wait_exit(TIMEOUT)?;
        ensure!(
            s.success(),
            "client {} exited with {s} after logout",
            self.name
        );
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a table row describes an online terminal (rows for offline contacts carry
/// `"online": false` and no session).
pub fn is_online_row(r: &Value) -> bool {
    r["online"] != false && r.get("session").is_some_and(|s| !s.is_null())
}

/// The online row of `user` in a table, if any.
pub fn online_row<'a>(table: &'a [Value], user: &str) -> Option<&'a Value> {
    table.iter().find(|r| r["user"] == user && is_online_row(r))
}

/// The users with an online row in a table, in its order.
pub fn online_users(table: &[Value]) -> Vec<String> {
    table
        .iter()
        .filter(|r| is_online_row(r))
        .filter_map(|r| r["user"].as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------------------

/// What a raw read produced.
#[derive(Debug)]
pub enum Recv {
    /// One complete frame's payload.
    Payload(Vec<u8>),
    /// The peer closed the connection (EOF or reset).
    Closed,
    /// Nothing complete arrived in time.
    Timeout,
}

/// A raw TCP connection speaking the wire format: 4-byte big-endian length, then the
/// payload.
pub struct RawConn {
    stream: TcpStream,
    decoder: FrameDecoder,
    inbuf: Vec<u8>,
    closed: bool,
}

impl RawConn {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Res<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        Ok(Self::from_stream(stream))
    }

    /// Wraps an accepted stream.
    pub fn from_stream(stream: TcpStream) -> RawConn {
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            // Accept anything (the flood test reads many frames; a fake server reads a
            // client's frames); the limit is the server's business, not the harness's.
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME * 16),
            inbuf: Vec::new(),
            closed: false,
        }
    }

    /// A clone of the socket (for a writer thread).
    pub fn try_clone_stream(&self) -> Res<TcpStream> {
        Ok(self.stream.try_clone()?)
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Res<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Writes one frame with this payload.
    pub fn send_payload(&mut self, payload: &[u8]) -> Res<()> {
        self.send_bytes(&frame(payload))
    }

    /// Writes one frame holding this JSON value.
    pub fn send_json(&mut self, v: &Value) -> Res<()> {
        self.send_payload(v.to_string().as_bytes())
    }

    /// Writes one frame holding this message in canonical form.
    pub fn send_msg<M: serde::Serialize>(&mut self, m: &M) -> Res<()> {
        self.send_bytes(&encode_frame(m))
    }

    /// Reads the next frame's payload, waiting at most `timeout`.
    pub fn recv_payload(&mut self, timeout: Duration) -> Res<Recv> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !self.inbuf.is_empty() {
                let mut input = &self.inbuf[..];
                let r = self.decoder.decode(&mut input);
                let consumed = self.inbuf.len() - input.len();
                self.inbuf.drain(..consumed);
                match r {
                    Ok(Some(p)) => return Ok(Recv::Payload(p)),
                    Ok(None) => {}
                    Err(e) => bail!("the peer broke the framing: {e}"),
                }
            }
            if self.closed {
                return Ok(Recv::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Recv::Timeout);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// Reads and decodes the next message of type `M`, waiting at most `timeout`.
    pub fn recv_as<M: WireMessage>(&mut self, timeout: Duration) -> Res<M> {
        match self.recv_payload(timeout)? {
            Recv::Payload(p) => decode_message::<M>(&p).map_err(|e| {
                Error(format!(
                    "undecodable frame {:?}: {e}",
                    String::from_utf8_lossy(&p)
                ))
            }),
            Recv::Closed => bail!("connection closed while waiting for a frame"),
            Recv::Timeout => bail!("no frame within {timeout:?}"),
        }
    }

    /// Reads the next server message (as a client would).
    pub fn recv(&mut self, timeout: Duration) -> Res<ServerMessage> {
        self.recv_as::<ServerMessage>(timeout)
    }

    /// Reads server messages until one matches `pred`, within `timeout` overall.
    pub fn recv_until(
        &mut self,
        pred: impl Fn(&ServerMessage) -> bool,
        timeout: Duration,
    ) -> Res<ServerMessage> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .recv(left)
                .map_err(|e| Error(format!("{e}; frames seen before: {seen:?}")))?;
            if pred(&m) {
                return Ok(m);
            }
            seen.push(m);
        }
    }

    /// Reads until the peer closes; returns the payloads that arrived before. Fails if
    /// the connection is still open after `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Res<Vec<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_payload(left)? {
                Recv::Payload(p) => got.push(p),
                Recv::Closed => return Ok(got),
                Recv::Timeout => bail!(
                    "connection still open after {timeout:?}; frames: {:?}",
                    got.iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Logs in over this connection; returns the `login_ok` and the snapshot (the
    /// `online` messages up to `synced`).
    pub fn login(
        &mut self,
        user: &str,
        pw: &str,
        with: LoginWith,
    ) -> Res<(ServerMessage, Vec<ServerMessage>)> {
        self.send_msg(&login_msg(user, pw, with)?)?;
        let ok = self.recv(TIMEOUT)?;
        ensure!(
            matches!(ok, ServerMessage::LoginOk { .. }),
            "expected login_ok, got {ok:?}"
        );
        let mut snapshot = Vec::new();
        loop {
            match self.recv(TIMEOUT)? {
                ServerMessage::Synced {} => return Ok((ok, snapshot)),
                m => snapshot.push(m),
            }
        }
    }
}

/// A frame: the 4-byte big-endian length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(payload.len())
        .expect("payload under 4 GiB")
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(payload);
    v
}

/// A version-1 `login` message.
pub fn login_msg(user: &str, pw: &str, with: LoginWith) -> Res<ClientMessage> {
    Ok(ClientMessage::Login {
        version: PROTOCOL_VERSION,
        user: UserId::new(user)?,
        password: Password::new(pw)?,
        with,
    })
}

/// `LoginWith::TerminalId`.
pub fn with_terminal(id: &str) -> Res<LoginWith> {
    Ok(LoginWith::TerminalId(TerminalId::new(id)?))
}

/// A listening socket standing in for the server, to observe what a client binary
/// sends and to feed it hand-made server messages.
pub struct FakeServer {
    listener: TcpListener,
    /// Its address.
    pub addr: SocketAddr,
}

impl FakeServer {
    /// Binds `127.0.0.1:0`.
    pub fn bind() -> Res<FakeServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(FakeServer { listener, addr })
    }

    /// Accepts one connection, waiting at most `timeout`.
    pub fn accept(&self, timeout: Duration) -> Res<RawConn> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)?;
                    return Ok(RawConn::from_stream(s));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        bail!("no connection to the fake server within {timeout:?}");
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Relay: a connection that can be cut
// ---------------------------------------------------------------------------------------

/// A TCP relay on `127.0.0.1:0` that forwards every connection to an upstream address
/// (the server), so that a test can cut a client's connection abruptly, keep the client
/// from reaching the server for a while, or point it at a restarted server, without
/// touching either process. Stopped (and every relayed connection cut) on drop.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: std::sync::Arc<RelayShared>,
}

struct RelayShared {
    upstream: std::sync::Mutex<SocketAddr>,
    /// While set, new connections are accepted and reset at once (the server looks
    /// unreachable).
    blocked: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    /// The open relayed connections: both sockets, and whether it was cut.
    links: std::sync::Mutex<Vec<RelayLink>>,
    /// Connections accepted so far (blocked ones included).
    accepted: std::sync::atomic::AtomicUsize,
}

struct RelayLink {
    client: TcpStream,
    server: TcpStream,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Makes closing `s` send a reset (RST) instead of an orderly FIN.
#[cfg(unix)]
fn set_zero_linger(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from `&l`, which lives for
    // the call; the descriptor belongs to `s`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(l).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(8),
        )
    };
    let _ = rc;
}

impl Relay {
    /// Starts relaying to `upstream`.
    pub fn start(upstream: SocketAddr) -> Res<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = std::sync::Arc::new(RelayShared {
            upstream: std::sync::Mutex::new(upstream),
            blocked: std::sync::atomic::AtomicBool::new(false),
            stop: std::sync::atomic::AtomicBool::new(false),
            links: std::sync::Mutex::new(Vec::new()),
            accepted: std::sync::atomic::AtomicUsize::new(0),
        });
        let sh = shared.clone();
        thread::spawn(move || relay_accept(&listener, &sh));
        Ok(Relay { addr, shared })
    }

    /// Cuts every relayed connection abruptly: both ends get a reset, nothing in
    /// flight is delivered, no goodbye is said. Returns how many were cut. New
    /// connections are relayed as before (unless [`Relay::block`]ed).
    pub fn cut(&self) -> usize {
        use std::net::Shutdown;
        use std::sync::atomic::Ordering;
        let links: Vec<RelayLink> = std::mem::take(&mut *lock(&self.shared.links));
        for l in &links {
            l.cut.store(true, Ordering::SeqCst);
            #[cfg(unix)]
            {
                set_zero_linger(&l.client);
                set_zero_linger(&l.server);
            }
            // Wakes the pumps (a read returns 0) without sending anything; the last
            // descriptor to close sends the reset.
            let _ = l.client.shutdown(Shutdown::Read);
            let _ = l.server.shutdown(Shutdown::Read);
        }
        links.len()
    }

    /// While `on`, new connections are reset as soon as they are accepted, so clients
    /// cannot reach the server; connections already relayed are not touched.
    pub fn block(&self, on: bool) {
        self.shared
            .blocked
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Relays new connections to `upstream` from now on (e.g. a restarted server).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// Connections accepted so far (blocked ones included).
    pub fn accepted(&self) -> usize {
        self.shared
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Relayed connections open now.
    pub fn open(&self) -> usize {
        lock(&self.shared.links).len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Locks a mutex, taking the data of a poisoned one (a pump thread that panicked).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn relay_accept(listener: &TcpListener, sh: &std::sync::Arc<RelayShared>) {
    use std::sync::atomic::Ordering;
    for conn in listener.incoming() {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        sh.accepted.fetch_add(1, Ordering::SeqCst);
        if sh.blocked.load(Ordering::SeqCst) {
            #[cfg(unix)]
            set_zero_linger(&client);
            continue;
        }
        let upstream = *lock(&sh.upstream);
        let Ok(server) = TcpStream::connect_timeout(&upstream, TIMEOUT) else {
            #[cfg(unix)]
            set_zero_linger(&client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clones = (|| -> std::io::Result<_> {
            Ok((
                client.try_clone()?,
                server.try_clone()?,
                client.try_clone()?,
                server.try_clone()?,
            ))
        })();
        let Ok((c_rd, s_wr, c_wr, s_rd)) = clones else {
            continue;
        };
        lock(&sh.links).push(RelayLink {
            client,
            server,
            cut: cut.clone(),
        });
        let cut2 = cut.clone();
        thread::spawn(move || relay_pump(c_rd, s_wr, &cut));
        thread::spawn(move || relay_pump(s_rd, c_wr, &cut2));
    }
}

/// Copies `from` to `to` until `from` ends; an orderly end is passed on (FIN), a cut
/// is not.
fn relay_pump(mut from: TcpStream, mut to: TcpStream, cut: &std::sync::atomic::AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if cut.load(std::sync::atomic::Ordering::SeqCst) || to.write_all(&buf[..n]).is_err()
                {
                    break;
                }
            }
        }
    }
    if !cut.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = to.shutdown(std::net::Shutdown::Write);
    }
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// The `p`-th percentile (0–100, nearest rank) of a sample.
pub fn percentile(sorted: &[u64], p: u32) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1);
    sorted[usize::try_from(rank)
        .unwrap_or(usize::MAX)
        .min(sorted.len())
        - 1]
}
