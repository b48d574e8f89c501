//! A running `precall-client --json` process, awaited event by event, and the rows of
//! the tables it reports.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::binaries::{client_bin, tail, wait_timeout};
use crate::{bail, ensure, Error, Res, TIMEOUT};

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
