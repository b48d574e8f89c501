//! The server under test: a real `precall-server` process on a fresh temporary SQLite
//! store filled through `admin import`, or one the user started (`--connect`), possibly
//! several nodes of a cluster (`--connect A,B,C`: user `i` connects to node `i % n`).
//!
//! Also reads a process's memory figures from `/proc/<pid>/status` (`VmRSS`, the
//! resident set now, and `VmHWM`, its peak).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::population::Population;

/// How long the server may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server process is started with.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    /// The `precall-server` binary.
    pub bin: PathBuf,
    /// Argon2id memory cost (KiB) for the imported hashes and the server's dummy hash.
    pub argon2_m_kib: u32,
    /// Argon2id iterations.
    pub argon2_t: u32,
    /// `serve --idle-timeout-ms`, if not the default.
    pub idle_timeout_ms: Option<u64>,
    /// `serve --queue-frames`, if not the default.
    pub queue_frames: Option<u32>,
    /// `RUST_LOG` for the server (its log goes to a file in the temporary directory).
    pub log_filter: String,
    /// More `serve` options (e.g. `--max-accepts-per-second 2000`).
    pub extra_args: Vec<String>,
}

/// The server a scenario talks to: one process, or the nodes of a cluster sharing one
/// store (given with `--connect A,B,C`).
pub struct Target {
    /// Where its nodes listen (one address for a single server; never empty).
    pub addrs: Vec<SocketAddr>,
    /// Their process ids, if known (memory and CPU figures need them; the figures are
    /// sums over these processes).
    pub pids: Vec<u32>,
    /// The process, if this tool started it (killed on drop).
    proc: Option<ServerProc>,
}

impl Target {
    /// A server (or the nodes of a cluster) started by the user, holding the same
    /// population (see the `population` subcommand). `addrs` and `pids` are
    /// comma-separated lists.
    pub fn connect(addrs: &str, pids: &[u32]) -> Result<Self> {
        let addrs = parse_addrs(addrs)?;
        if !pids.is_empty() && pids.len() != addrs.len() {
            bail!(
                "--server-pid: {} process ids for {} addresses: give one per --connect address",
                pids.len(),
                addrs.len()
            );
        }
        Ok(Self {
            addrs,
            pids: pids.to_vec(),
            proc: None,
        })
    }

    /// Where the first (or only) node listens.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Imports `pop` into a fresh store and starts a server on it. Returns the target
    /// and how long the import took.
    pub fn spawn(opts: &ServerOpts, pop: &Population) -> Result<(Self, Duration)> {
        if !opts.bin.is_file() {
            bail!(
                "{} not found: build it (`cargo build --release -p precall-server`) or pass --server-bin",
                opts.bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("precall-load-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let db = dir.path().join("load.sqlite");
        let import = dir.path().join("population.jsonl");
        {
            let f = std::fs::File::create(&import)
                .with_context(|| format!("cannot create {}", import.display()))?;
            let mut w = std::io::BufWriter::new(f);
            pop.write_import(&mut w)?;
            std::io::Write::flush(&mut w).context("cannot write the import file")?;
        }
        let started = Instant::now();
        let out = Command::new(&opts.bin)
            .arg("admin")
            .arg("--db")
            .arg(&db)
            .args(cost_args(opts))
            .arg("import")
            .arg(&import)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", opts.bin.display()))?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "admin import failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tracing::info!(
            users = pop.len(),
            contacts = pop.contact_entries(),
            ?took,
            "{}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        let proc = ServerProc::start(opts, dir, &db)?;
        Ok((
            Self {
                addrs: vec![proc.addr],
                pids: vec![proc.child.id()],
                proc: Some(proc),
            },
            took,
        ))
    }

    /// The server's memory now (summed over the nodes of a cluster), if the process
    /// ids are known and they all run.
    pub fn memory(&self) -> Option<Memory> {
        if self.pids.is_empty() {
            return None;
        }
        let mut sum = Memory {
            rss_kib: 0,
            hwm_kib: 0,
        };
        for &pid in &self.pids {
            let m = memory(pid)?;
            sum.rss_kib += m.rss_kib;
            sum.hwm_kib += m.hwm_kib;
        }
        Some(sum)
    }

    /// Stops a server this tool started (SIGKILL: nothing of it is measured after this
    /// point, and a graceful stop would push every session's `offline`).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// SIGKILLs a server this tool started and reaps it, keeping its temporary
    /// directory, store and log for [`Target::restart`] (the `crash` scenario).
    pub fn kill9(&mut self) -> Result<()> {
        let Some(p) = self.proc.as_mut() else {
            bail!("the server was not started by this tool: it cannot be killed");
        };
        // `Child::kill` is SIGKILL on Unix.
        p.child.kill().context("cannot kill the server")?;
        let status = p.child.wait().context("cannot reap the server")?;
        tracing::info!(pid = p.child.id(), %status, "server killed");
        self.pids.clear();
        Ok(())
    }

    /// Starts a server killed with [`Target::kill9`] again on the same store, on the
    /// same address if it can still be bound (else on a new port): afterwards
    /// [`Target::addr`] is where it listens. Returns how long it took to listen.
    pub fn restart(&mut self) -> Result<Duration> {
        let Some(p) = self.proc.as_mut() else {
            bail!("the server was not started by this tool: it cannot be restarted");
        };
        let started = Instant::now();
        let same = p.addr.to_string();
        if let Err(e) = p.relaunch(&same) {
            tracing::warn!(addr = same, error = %e, "cannot listen on the same address again; on a new port");
            p.relaunch("127.0.0.1:0")?;
        }
        self.addrs = vec![p.addr];
        self.pids = vec![p.child.id()];
        Ok(started.elapsed())
    }

    /// `precall-server admin --db STORE` for the store of a server this tool started
    /// (append the admin subcommand).
    pub fn admin_command(&self) -> Option<Command> {
        let p = self.proc.as_ref()?;
        let mut cmd = Command::new(&p.opts.bin);
        cmd.arg("admin")
            .arg("--db")
            .arg(&p.db)
            .env("RUST_LOG", &p.opts.log_filter)
            .stdin(Stdio::null());
        Some(cmd)
    }

    /// The server's whole log file (standard error), if this tool started it.
    pub fn log_path(&self) -> Option<&Path> {
        self.proc.as_ref().map(|p| p.log.as_path())
    }

    /// The last lines of the server's log, if this tool started it.
    pub fn log_tail(&self) -> String {
        self.proc
            .as_ref()
            .map(ServerProc::log_tail)
            .unwrap_or_default()
    }
}

/// Parses a comma-separated list of addresses (at least one).
pub fn parse_addrs(list: &str) -> Result<Vec<SocketAddr>> {
    let addrs = list
        .split(',')
        .map(|a| {
            a.trim()
                .parse()
                .with_context(|| format!("--connect {a}: not an IP address and port"))
        })
        .collect::<Result<Vec<SocketAddr>>>()?;
    if addrs.is_empty() {
        bail!("--connect: no address");
    }
    Ok(addrs)
}

fn cost_args(opts: &ServerOpts) -> Vec<String> {
    vec![
        "--argon2-m-kib".into(),
        opts.argon2_m_kib.to_string(),
        "--argon2-t".into(),
        opts.argon2_t.to_string(),
    ]
}

/// A running `precall-server serve`, killed on drop.
struct ServerProc {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    /// Holds the store and the log; deleted on drop (set `PRECALL_LOAD_KEEP=1` to keep).
    dir: Option<tempfile::TempDir>,
    /// What it was started with (for a restart).
    opts: ServerOpts,
    /// The store.
    db: PathBuf,
}

impl ServerProc {
    fn start(opts: &ServerOpts, dir: tempfile::TempDir, db: &Path) -> Result<Self> {
        let log = dir.path().join("server.log");
        let (child, addr) = launch(opts, db, &log, "127.0.0.1:0", false)?;
        Ok(Self {
            child,
            addr,
            log,
            dir: Some(dir),
            opts: opts.clone(),
            db: db.to_path_buf(),
        })
    }

    /// Starts the server again on the same store and log (appended to), listening on
    /// `listen`. The old process must be gone.
    fn relaunch(&mut self, listen: &str) -> Result<()> {
        let (child, addr) = launch(&self.opts, &self.db, &self.log, listen, true)?;
        self.child = child;
        self.addr = addr;
        Ok(())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("PRECALL_LOAD_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("precall-load: kept {}", dir.keep().display());
            }
        }
    }
}

/// Starts `precall-server serve` on `db`, listening on `listen`, its log going to `log`
/// (appended to if `append`), and waits for its `listening on` line.
fn launch(
    opts: &ServerOpts,
    db: &Path,
    log: &Path,
    listen: &str,
    append: bool,
) -> Result<(Child, SocketAddr)> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .with_context(|| format!("cannot create {}", log.display()))?;
    let mut cmd = Command::new(&opts.bin);
    cmd.arg("serve")
        .arg("--db")
        .arg(db)
        .args(["--listen", listen])
        .args(cost_args(opts))
        .env("RUST_LOG", &opts.log_filter)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    if let Some(ms) = opts.idle_timeout_ms {
        cmd.args(["--idle-timeout-ms", &ms.to_string()]);
    }
    if let Some(n) = opts.queue_frames {
        cmd.args(["--queue-frames", &n.to_string()]);
    }
    // Every simulated terminal connects from loopback, one source address, and a load
    // test measures capacity: the abuse limits a server on a real network keeps on by
    // default (spec 13.6) would turn the load away. Off unless the scenario sets them.
    for flag in [
        "--max-auth-checks-per-source",
        "--max-connections-per-source",
        "--max-accepts-per-second-per-source",
        "--max-frames-per-second",
        "--max-caps-updates",
    ] {
        if !opts.extra_args.iter().any(|a| a == flag) {
            cmd.args([flag, "0"]);
        }
    }
    cmd.args(&opts.extra_args);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", opts.bin.display()))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("no stdout from the server");
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep the pipe open (and drained) for the server's lifetime.
        let mut rest = String::new();
        while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
            rest.clear();
        }
    });
    let addr = rx
        .recv_timeout(START_TIMEOUT)
        .map_err(|_| anyhow::anyhow!("the server printed no `listening on` line"))
        .and_then(|line| {
            let addr = line
                .trim()
                .strip_prefix("listening on ")
                .with_context(|| format!("unexpected first line from the server {line:?}"))?;
            addr.parse::<SocketAddr>()
                .with_context(|| format!("bad address in {line:?}"))
        });
    match addr {
        Ok(addr) => {
            tracing::info!(%addr, pid = child.id(), "server started");
            Ok((child, addr))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{e:#}:\n{}", tail(log))
        }
    }
}

/// The last lines of a log file.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A process's memory, in KiB.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Memory {
    /// Resident set now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set since the process started (`VmHWM`).
    pub hwm_kib: u64,
}

/// Reads `/proc/<pid>/status`.
pub fn memory(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// The `precall-server` next to this executable.
pub fn default_server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .map(|d| d.join(format!("precall-server{}", std::env::consts::EXE_SUFFIX)))
        .unwrap_or_else(|| PathBuf::from("precall-server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_takes_a_list_of_nodes() {
        let t = Target::connect("127.0.0.1:1", &[]).unwrap();
        assert_eq!(t.addrs.len(), 1);
        assert!(t.pids.is_empty());
        let t = Target::connect("127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3", &[7, 8, 9]).unwrap();
        assert_eq!(t.addr().port(), 1);
        assert_eq!(t.addrs[2].port(), 3);
        assert_eq!(t.pids, [7, 8, 9]);
        assert!(Target::connect("127.0.0.1:1,127.0.0.1:2", &[7]).is_err());
        assert!(Target::connect("127.0.0.1:1,", &[]).is_err());
        assert!(Target::connect("localhost", &[]).is_err());
    }

    #[test]
    fn reads_its_own_memory() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        assert!(memory(u32::MAX).is_none());
    }
}
