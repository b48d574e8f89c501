//! A scenario's sandbox: a temporary directory with a SQLite database, the admin
//! commands that fill it, and the server and client processes started from it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use precall_protocol::Capabilities;

use crate::binaries::{client_bin, ensure_binaries, server_bin, wait_timeout};
use crate::caps::phone_caps;
use crate::client_proc::ClientProc;
use crate::server_proc::ServerProc;
use crate::{bail, ensure, Error, Res};

/// The password the harness gives `user`.
pub fn password(user: &str) -> String {
    format!("{user}-pass-1234")
}
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
        s.add_cast()?;
        Ok(s)
    }

    /// Puts the usual cast ([`Sandbox::with_cast`]) into this sandbox's store.
    pub fn add_cast(&self) -> Res<()> {
        for u in ["alice", "bob", "carol"] {
            self.add_user(u)?;
        }
        self.befriend("alice", "bob")?;
        self.befriend("alice", "carol")?;
        self.register_terminal("bob-phone", "bob", &phone_caps())?;
        Ok(())
    }

    /// Starts `precall-server serve --db DB --listen 127.0.0.1:0 EXTRA…` and waits for
    /// its `listening on ADDR` line (and, with `--ws-listen` in EXTRA, for its
    /// `ws listening on ADDR` line: [`ServerProc::ws_addr`]).
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
            ws_addr: None,
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
        server.addr = connectable(addr, &line)?;
        if extra.contains(&"--ws-listen") {
            let line = match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(l) => l,
                Err(_) => bail!(
                    "the server did not print `ws listening on ADDR`; its log:\n{}",
                    server.log_tail()
                ),
            };
            let Some(addr) = line.strip_prefix("ws listening on ") else {
                bail!("the server's second stdout line is {line:?}, not `ws listening on ADDR`")
            };
            server.ws_addr = Some(connectable(addr, &line)?);
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

/// The address in a `listening on` line, with an unspecified address (`0.0.0.0`, `::`)
/// replaced by the loopback address of its family, for connecting to it.
fn connectable(addr: &str, line: &str) -> Res<SocketAddr> {
    let mut addr: SocketAddr = addr
        .trim()
        .parse()
        .map_err(|e| Error(format!("bad address in {line:?}: {e}")))?;
    if addr.ip().is_unspecified() {
        let loopback = match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        };
        addr.set_ip(loopback);
    }
    Ok(addr)
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
