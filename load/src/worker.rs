//! Worker processes: one process holds at most about 19,000 sockets (the hard limit on
//! open files here is 20,000), so the big scenarios split their sessions across
//! processes. The coordinator re-executes this binary with the hidden `worker`
//! subcommand; each worker derives the same population from the seed, takes every
//! `parts`-th user starting at `part`, and talks to the coordinator in JSON lines:
//! commands ([`ToWorker`]) on its standard input, results ([`FromWorker`]) on its
//! standard output. Logs go to standard error.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use precall_protocol::{Fingerprint, SessionId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::cpu::CpuTimes;
use crate::phases::{await_tables, login_all, Wall};
use crate::population::Population;
use crate::session::Hub;
use crate::verify::{DirEntry, Directory, Verdict};

/// A command from the coordinator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ToWorker {
    /// The start barrier: log every session in now.
    Go,
    /// Every online terminal of the run: wait for complete tables, then check them.
    Directory {
        /// The terminals.
        entries: Vec<DirEntry>,
    },
    /// Stop (the sessions are dropped, not logged out).
    Quit,
}

/// One session that logged in.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoggedIn {
    /// User index.
    pub user: u32,
    /// Its session.
    pub session: SessionId,
    /// Its capabilities' fingerprint ([`precall_protocol::Client::capabilities`]).
    pub fp: Fingerprint,
    /// When `login_ok` arrived (wall clock, µs).
    pub at_us: u64,
    /// From writing `login` to `login_ok`, µs.
    pub latency_us: u64,
    /// From starting to connect to the connection being made, µs.
    pub connect_us: u64,
}

/// A result from a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker's sessions are set up, not connected.
    Ready {
        /// How many.
        clients: usize,
    },
    /// Every session logged in or failed.
    Logins {
        /// When the first connection was started (wall clock, µs).
        first_connect_us: u64,
        /// The sessions that logged in.
        logged: Vec<LoggedIn>,
        /// The users whose login failed, and why.
        failed: Vec<(u32, String)>,
        /// This worker's CPU time since `go` (`/proc/self/stat`).
        #[serde(default)]
        cpu: Option<CpuTimes>,
    },
    /// The tables, once complete (or the wait gave up).
    Tables {
        /// For each complete table, when it became complete (wall clock, µs).
        complete_us: Vec<u64>,
        /// Tables that never became complete.
        incomplete: usize,
        /// The full check of every table.
        verdict: Verdict,
        /// `online` messages received.
        online_msgs: u64,
        /// `offline` messages received.
        offline_msgs: u64,
        /// Messages the core refused.
        violations: u64,
        /// `error` messages received.
        errors: u64,
        /// This worker's CPU time since `go` (`/proc/self/stat`).
        #[serde(default)]
        cpu: Option<CpuTimes>,
    },
}

/// What a worker is told on its command line.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The server, or the nodes of a cluster (comma-separated: user `i` connects to
    /// node `i % n`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub addr: Vec<SocketAddr>,
    /// Population size.
    #[arg(long)]
    pub users: usize,
    /// Contacts per user.
    #[arg(long)]
    pub contacts: usize,
    /// Population seed.
    #[arg(long)]
    pub seed: u64,
    /// This worker's share: users `part`, `part + parts`, ...
    #[arg(long)]
    pub part: usize,
    /// Number of workers.
    #[arg(long)]
    pub parts: usize,
    /// Longest wait for logins and for complete tables, in seconds.
    #[arg(long, default_value_t = 120)]
    pub wait_s: u64,
}

/// Runs a worker until the coordinator says quit (or closes its standard input).
pub async fn run(args: WorkerArgs) -> Result<()> {
    if args.parts == 0 || args.part >= args.parts {
        bail!("bad worker share {}/{}", args.part, args.parts);
    }
    let pop = Arc::new(Population::generate(args.users, args.contacts, args.seed)?);
    let users: Vec<usize> = (args.part..pop.len()).step_by(args.parts).collect();
    let (hub, mut notes) = Hub::new(args.addr, pop, &users, None);
    let cmds: Vec<_> = (0..users.len()).map(|k| hub.spawn(k)).collect();
    let wall = Wall::new();
    let limit = Duration::from_secs(args.wait_s);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    emit(&FromWorker::Ready {
        clients: users.len(),
    })
    .await?;
    // This process's CPU time when `go` came.
    let mut cpu_at_go = None;
    let cpu_since_go = |at: Option<CpuTimes>| Some(CpuTimes::own()?.since(at?));
    while let Some(line) = stdin.next_line().await.context("standard input")? {
        let cmd: ToWorker =
            serde_json::from_str(&line).with_context(|| format!("bad command {line:?}"))?;
        match cmd {
            ToWorker::Go => {
                cpu_at_go = CpuTimes::own();
                let logins = login_all(&cmds, &mut notes, limit).await;
                let logged = logins
                    .logged
                    .iter()
                    .filter_map(|&(k, session, at)| {
                        let slot = hub.slot(k);
                        let sent = slot.login_sent?;
                        let started = slot.connect_started?;
                        Some(LoggedIn {
                            user: u32::try_from(slot.user).ok()?,
                            session,
                            fp: slot.client.capabilities()?.fingerprint(),
                            at_us: wall.us(at),
                            latency_us: duration_us(at.saturating_duration_since(sent)),
                            connect_us: duration_us(sent.saturating_duration_since(started)),
                        })
                    })
                    .collect();
                let failed = logins
                    .failed
                    .into_iter()
                    .map(|(k, why)| (u32::try_from(users[k]).unwrap_or(u32::MAX), why))
                    .collect();
                emit(&FromWorker::Logins {
                    first_connect_us: wall.us(logins.first_connect),
                    logged,
                    failed,
                    cpu: cpu_since_go(cpu_at_go),
                })
                .await?;
                // Milestones after this point are not needed: drop them as they come.
                let mut rest =
                    std::mem::replace(&mut notes, tokio::sync::mpsc::unbounded_channel().1);
                tokio::spawn(async move { while rest.recv().await.is_some() {} });
            }
            ToWorker::Directory { entries } => {
                let dir = Directory::from_entries(entries);
                let verdict = await_tables(&hub, &dir, limit).await;
                let (mut complete_us, mut incomplete) = (Vec::new(), 0);
                for k in 0..hub.slots.len() {
                    let slot = hub.slot(k);
                    if slot.logged_in.is_none() {
                        continue;
                    }
                    match slot.complete {
                        Some(t) => complete_us.push(wall.us(t)),
                        None => incomplete += 1,
                    }
                }
                emit(&FromWorker::Tables {
                    complete_us,
                    incomplete,
                    verdict,
                    online_msgs: hub.total(|s| s.online_msgs),
                    offline_msgs: hub.total(|s| s.offline_msgs),
                    violations: hub.total(|s| s.violations),
                    errors: hub.total(|s| s.errors),
                    cpu: cpu_since_go(cpu_at_go),
                })
                .await?;
            }
            ToWorker::Quit => break,
        }
    }
    Ok(())
}

/// A duration in whole microseconds.
pub fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Writes one message for the coordinator. Asynchronously: a message can be larger
/// than the pipe, and the sessions must go on (answering pings) while it drains.
async fn emit(msg: &FromWorker) -> Result<()> {
    let mut line = serde_json::to_vec(msg)?;
    line.push(b'\n');
    let mut out = tokio::io::stdout();
    out.write_all(&line)
        .await
        .context("cannot write to the coordinator")?;
    out.flush().await.context("cannot write to the coordinator")
}

/// Reads lines on a task of its own and hands them over.
fn forward_lines(
    mut lines: Lines<BufReader<ChildStdout>>,
) -> mpsc::UnboundedReceiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if tx.send(Ok(line)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// The coordinator's end: the worker processes of one run.
pub struct Workers {
    children: Vec<Child>,
    inputs: Vec<ChildStdin>,
    /// Each worker's lines, read by a task of its own as they come (a worker must never
    /// wait for the coordinator to read: its sessions would stop answering pings).
    outputs: Vec<mpsc::UnboundedReceiver<std::io::Result<String>>>,
}

impl Workers {
    /// Starts `parts` workers of this executable over population `(users, contacts,
    /// seed)` against `addrs` (user `i` on `addrs[i % n]`), and waits until each is
    /// ready.
    pub async fn start(
        exe: &Path,
        addrs: &[SocketAddr],
        users: usize,
        contacts: usize,
        seed: u64,
        parts: usize,
        wait: Duration,
    ) -> Result<Self> {
        let mut w = Self {
            children: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let addr = addrs
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        for part in 0..parts {
            let mut child = Command::new(exe)
                .arg("worker")
                .args(["--addr", &addr])
                .args(["--users", &users.to_string()])
                .args(["--contacts", &contacts.to_string()])
                .args(["--seed", &seed.to_string()])
                .args(["--part", &part.to_string()])
                .args(["--parts", &parts.to_string()])
                .args(["--wait-s", &wait.as_secs().to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start worker {}", exe.display()))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("worker without pipes");
            };
            w.children.push(child);
            w.inputs.push(stdin);
            w.outputs
                .push(forward_lines(BufReader::new(stdout).lines()));
        }
        for msg in w.recv_all(wait).await? {
            if !matches!(msg, FromWorker::Ready { .. }) {
                bail!("worker said {msg:?} instead of ready");
            }
        }
        Ok(w)
    }

    /// Sends one command to every worker.
    pub async fn send_all(&mut self, msg: &ToWorker) -> Result<()> {
        let mut line = serde_json::to_string(msg)?;
        line.push('\n');
        for input in &mut self.inputs {
            input
                .write_all(line.as_bytes())
                .await
                .context("a worker is gone")?;
            input.flush().await.context("a worker is gone")?;
        }
        Ok(())
    }

    /// The next message of every worker, waiting at most `limit` (plus a margin: the
    /// workers bound their own waits by the same limit).
    pub async fn recv_all(&mut self, limit: Duration) -> Result<Vec<FromWorker>> {
        let mut out = Vec::new();
        for (i, lines) in self.outputs.iter_mut().enumerate() {
            let line = timeout(limit + Duration::from_secs(30), lines.recv())
                .await
                .with_context(|| format!("worker {i} did not answer"))?;
            let Some(line) = line else {
                bail!("worker {i} exited early");
            };
            let line = line.with_context(|| format!("worker {i}: cannot read"))?;
            out.push(
                serde_json::from_str(&line).with_context(|| format!("worker {i} said {line:?}"))?,
            );
        }
        Ok(out)
    }

    /// Tells the workers to quit and waits for them (killing stragglers).
    pub async fn quit(mut self) {
        let _ = self.send_all(&ToWorker::Quit).await;
        self.inputs.clear();
        for child in &mut self.children {
            if timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}
