//! The event loop: lines from standard input to commands, and the client's events to
//! standard output; the connection, its clock and the ping timer are the driver's
//! ([`precall_client::Driver`]). Every protocol decision is the core's.
//!
//! When the connection drops while the session is resumable (the core reports
//! [`ClientEvent::Detached`]), the driver reconnects with the core's back-off and
//! resumes the session; if the server no longer knows it (`resume_failed`) it logs in
//! again with the password it was given. A server that refuses the connection itself
//! (`rate_limited`, `too_many_connections`, `login_throttled`; the core keeps the
//! session detached) is tried again no sooner than its `retry_after_ms`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use precall_client::tls::Tls;
use precall_client::{os_random, Clock, Driver, Event as Wire, Login, Start};
use precall_protocol::client::{ClientError, Status};
use precall_protocol::{
    CallId, Client, ClientConfig, ClientEvent, Endpoint, LoginWith, Password, ReqId, UserId,
};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::commands::{self, Command, Target};
use crate::reconnect::Policy;
use crate::render::{self, Event, Extra};

/// How long to wait for `logged_out` (or the close) after sending `logout`.
const LOGOUT_WAIT: Duration = Duration::from_secs(2);

/// What the command line decided.
pub struct Settings {
    /// Server address (`host:port`).
    pub server: String,
    /// Account name.
    pub user: UserId,
    /// Password.
    pub password: Password,
    /// Capabilities or terminal identifier.
    pub login: LoginWith,
    /// JSON lines in and out instead of words and sentences.
    pub json: bool,
    /// The ping interval.
    pub ping: Duration,
    /// TLS set-up; `None`: plain TCP.
    pub tls: Option<Tls>,
    /// How to reconnect after the connection dropped; `None`: the session ends.
    pub reconnect: Option<Policy>,
}

/// Connects, logs in and runs until the session is over. Returns the exit code: 0 once
/// logged in and then out, 1 if the connection failed or the login did not succeed.
pub async fn run(settings: Settings) -> i32 {
    let config = {
        let mut config = ClientConfig::default();
        config.ping_interval = settings.ping;
        config
    };
    let mut driver = Driver::new(Client::new(config), Clock::new(), settings.server.clone())
        .with_login(Login {
            user: settings.user.clone(),
            password: settings.password,
            with: settings.login,
        });
    if let Some(tls) = settings.tls {
        driver = driver.with_tls(Arc::new(tls));
    }
    if let Some(p) = settings.reconnect {
        driver = driver.with_reconnect(p.base, p.max, os_random);
    }
    if let Err(msg) = driver.connect().await {
        eprintln!("precall-client: {msg}");
        return 1;
    }
    info!(server = %settings.server, "connected");
    if let Err(e) = driver.login() {
        eprintln!("precall-client: {e}");
        return 1;
    }
    let mut session = Session {
        driver,
        printer: Printer::new(settings.json),
        user: settings.user,
        dialing: HashMap::new(),
        ringing: HashMap::new(),
        logged_in: false,
        done: false,
        leave_by: None,
        reconnect: settings.reconnect.is_some(),
        quiet_detach: false,
    };
    session.send().await;
    session.run(stdin_lines()).await;
    // End the stream cleanly (over TLS: close_notify), without waiting long for it.
    session.driver.shutdown().await;
    if session.logged_in {
        0
    } else {
        eprintln!("precall-client: login failed");
        1
    }
}

/// A call request waiting for `call_ringing`.
struct Dial {
    /// When the request was written to the socket.
    sent: Option<Instant>,
}

struct Session {
    /// The connection and the core's client.
    driver: Driver,
    printer: Printer,
    user: UserId,
    dialing: HashMap<ReqId, Dial>,
    /// Calls this end placed that are not established yet, with the time their request
    /// was written.
    ringing: HashMap<CallId, Instant>,
    logged_in: bool,
    done: bool,
    /// Set once `logout` is sent.
    leave_by: Option<Instant>,
    /// Whether a dropped connection is taken over on a new one.
    reconnect: bool,
    /// The session was given up after a drop: its `Detached` is not worth a line.
    quiet_detach: bool,
}

impl Session {
    async fn run(&mut self, mut lines: mpsc::Receiver<String>) {
        let mut stdin_open = true;
        while !self.done {
            let leave_by = self.leave_by;
            let commands = stdin_open && self.ready_for_commands();
            let never = Instant::now();
            tokio::select! {
                ev = self.driver.next() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => self.done = true,
                },
                line = lines.recv(), if commands => match line {
                    Some(line) => self.on_line(&line).await,
                    None => {
                        stdin_open = false;
                        self.leave().await;
                    }
                },
                () = sleep_until(leave_by.unwrap_or(never)), if leave_by.is_some() => {
                    warn!("no logged_out within {LOGOUT_WAIT:?}; closing");
                    self.driver.disconnect("logout timed out");
                }
            }
        }
    }

    /// Commands are read once the login snapshot is complete, so that `call` and
    /// `table` see the whole table.
    fn ready_for_commands(&self) -> bool {
        let client = self.driver.client();
        client.status() == Status::Online && client.is_synced()
    }

    /// The transport is gone. A resumable session is taken over on a new connection
    /// if reconnection is on; otherwise it is given up at once, as it always was.
    fn on_disconnected(&mut self) {
        if self.driver.is_reconnecting() || !self.driver.client().can_resume() {
            return;
        }
        if self.reconnect && self.leave_by.is_none() {
            self.driver.reconnect(Start::AfterBackoff);
        } else {
            let now = self.driver.clock().now();
            self.driver.client_mut().abandon(now);
            self.quiet_detach = true;
        }
    }

    async fn on_line(&mut self, line: &str) {
        let parsed = if self.printer.json {
            commands::parse_json(line)
        } else {
            commands::parse_text(line)
        };
        match parsed {
            Ok(None) => {}
            Ok(Some(cmd)) => self.execute(cmd).await,
            Err(e) => self.printer.emit(&Event::error(e.code, e.detail)),
        }
        self.send().await;
        self.drain();
        self.printer.prompt();
    }

    async fn execute(&mut self, cmd: Command) {
        let now = self.driver.clock().now();
        let result = match cmd {
            Command::Table => {
                let table = render::table(self.driver.client(), true);
                self.printer.emit(&Event::Table { table });
                Ok(())
            }
            Command::Call { to, prior_art } => {
                let Some(endpoint) = self.resolve(&to) else {
                    self.printer.emit(&not_in_table(&to));
                    return;
                };
                let client = self.driver.client_mut();
                let placed = if prior_art {
                    client.place_call_exchanging_capabilities(&endpoint, now)
                } else {
                    client.place_call(&endpoint, now)
                };
                placed.map(|req| {
                    self.dialing.insert(req, Dial { sent: None });
                })
            }
            Command::Query(to) => {
                let Some(endpoint) = self.resolve(&to) else {
                    self.printer.emit(&not_in_table(&to));
                    return;
                };
                self.driver
                    .client_mut()
                    .query_caps(&endpoint, now)
                    .map(drop)
            }
            Command::Answer { call, accept } => self.driver.client_mut().answer(call, accept, now),
            Command::Hangup(call) => {
                self.ringing.remove(&call);
                self.driver.client_mut().hangup(call, now)
            }
            Command::Caps(source) => match source.load() {
                Ok(caps) => self.driver.client_mut().update_caps(caps, now).map(drop),
                Err(detail) => {
                    self.printer.emit(&Event::error("bad_caps", detail));
                    return;
                }
            },
            Command::Add(user) => self.driver.client_mut().add_contact(user, now).map(drop),
            Command::Remove(user) => self.driver.client_mut().remove_contact(user, now).map(drop),
            Command::Logout => {
                self.leave().await;
                Ok(())
            }
        };
        if let Err(e) = result {
            self.printer
                .emit(&Event::error(client_error_code(&e), e.to_string()));
        }
    }

    /// The terminal a call goes to: the named one if it is in the table, or the first
    /// online terminal of the named user.
    fn resolve(&self, to: &Target) -> Option<Endpoint> {
        let client = self.driver.client();
        match to {
            Target::Endpoint(e) => client.peer(e).map(|_| e.clone()),
            Target::User(u) => client
                .peers()
                .map(|(e, _)| e)
                .find(|e| e.user == *u)
                .cloned(),
        }
    }

    /// Logs out (once) and waits at most [`LOGOUT_WAIT`] for the end of the session.
    async fn leave(&mut self) {
        if self.leave_by.is_some() {
            return;
        }
        let now = self.driver.clock().now();
        if matches!(
            self.driver.client().status(),
            Status::Detached | Status::Resuming
        ) {
            // No connection to log out on: the session is given up here and ends at
            // the server when its grace runs out.
            self.driver.stop_reconnecting();
            self.driver.client_mut().abandon(now);
            self.drain();
            self.done = true;
            return;
        }
        match self.driver.client_mut().logout(now) {
            Ok(()) => {
                self.leave_by = Some(Instant::now() + LOGOUT_WAIT);
                self.send().await;
            }
            Err(e) => {
                debug!("logout: {e}");
                self.done = true;
            }
        }
    }

    /// Writes every frame the client queued, then stamps the call requests among them.
    async fn send(&mut self) {
        if self.driver.flush().await.is_err() {
            // The driver reports the drop as an event.
            return;
        }
        let written = Instant::now();
        for dial in self.dialing.values_mut() {
            dial.sent.get_or_insert(written);
        }
    }

    /// Handles every event already there.
    fn drain(&mut self) {
        while let Some(ev) = self.driver.poll() {
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: Wire) {
        match ev {
            Wire::Client(ev) => self.on_client_event(ev),
            Wire::Disconnected(_) => self.on_disconnected(),
            // Reconnection attempts: the driver logs them.
            _ => {}
        }
    }

    /// Prints an event of the client, adding what the binary knows.
    fn on_client_event(&mut self, ev: ClientEvent) {
        if ev == ClientEvent::Detached && std::mem::take(&mut self.quiet_detach) {
            return;
        }
        let received_at = self.driver.received_at();
        let mut extra = Extra::default();
        match &ev {
            ClientEvent::LoggedIn { .. } => self.logged_in = true,
            ClientEvent::CallRinging { req, call, .. } => {
                if let Some(dial) = self.dialing.remove(req) {
                    self.ringing.insert(*call, dial.sent.unwrap_or(received_at));
                }
            }
            ClientEvent::CallFailed { req, .. } => {
                self.dialing.remove(req);
            }
            ClientEvent::CallEstablished { call, .. } => {
                extra.setup_us = self.ringing.remove(call).map(|sent| {
                    let us = received_at.saturating_duration_since(sent).as_micros();
                    u64::try_from(us).unwrap_or(u64::MAX)
                });
            }
            ClientEvent::CallEnded { call, .. } => {
                self.ringing.remove(call);
            }
            ClientEvent::LoggedOut => {
                self.dialing.clear();
                self.ringing.clear();
                // While reconnecting, the end of the old session is not the end.
                self.done |= !self.driver.is_reconnecting();
            }
            _ => {}
        }
        match Event::from_client(ev, self.driver.client(), &self.user, extra) {
            Some(event) => self.printer.emit(&event),
            None => debug!("an event this binary does not know"),
        }
    }
}

/// The local error code of a refused command.
fn client_error_code(e: &ClientError) -> &'static str {
    match e {
        ClientError::NotLoggedIn => "not_logged_in",
        ClientError::AlreadyLoggedIn => "already_logged_in",
        ClientError::UnknownPeer(_) => "not_in_table",
        ClientError::UnknownCall(_) => "unknown_call",
        ClientError::CallSetupInProgress => "call_setup_in_progress",
        _ => "refused",
    }
}

/// Writes events to standard output, one flushed line (or block) each.
struct Printer {
    json: bool,
    /// Whether to show a prompt: people at a terminal, not programs.
    prompt: bool,
}

impl Printer {
    fn new(json: bool) -> Self {
        use std::io::IsTerminal;
        Self {
            json,
            prompt: !json && std::io::stdin().is_terminal(),
        }
    }

    fn emit(&self, event: &Event) {
        let text = if self.json {
            event.to_json().to_string()
        } else {
            event.to_human()
        };
        let mut out = std::io::stdout().lock();
        // A closed stdout is the reader's business; the session goes on.
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
        if matches!(event, Event::Synced { .. }) {
            drop(out);
            self.prompt();
        }
    }

    fn prompt(&self) {
        if self.prompt {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "> ").and_then(|()| out.flush());
        }
    }
}

/// Standard input, line by line, read on a thread of its own (a blocking read must not
/// hold up the event loop or its shutdown). The channel closes at end of input.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if tx.blocking_send(text).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    warn!("standard input: {e}");
                    break;
                }
            }
        }
    });
    rx
}

/// The answer to a call or query naming a terminal the table does not hold.
fn not_in_table(to: &Target) -> Event {
    let detail = match to {
        Target::User(u) => format!("{u} has no online terminal in the table"),
        Target::Endpoint(e) => format!("{e} is not in the table"),
    };
    Event::error("not_in_table", detail)
}
