//! The event loop: moves bytes between the socket and [`Client`], lines from standard
//! input to commands, time to the ping timer, and events to standard output. Every
//! protocol decision is the core's.
//!
//! When the connection drops while the session is resumable (the core reports
//! [`ClientEvent::Detached`]), the loop reconnects with the core's [`Backoff`] and
//! resumes the session ([`Client::resume`]); if the server no longer knows it
//! (`resume_failed`) it logs in again with the password it was given. A server that
//! refuses the connection itself (`rate_limited`, `too_many_connections`,
//! `login_throttled`; the core keeps the session detached) is tried again no sooner
//! than its `retry_after_ms`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use precall_protocol::client::{ClientError, Status};
use precall_protocol::{
    Backoff, CallId, Client, ClientConfig, ClientEvent, Endpoint, ErrorCode, LoginWith, Password,
    ReqId, Time, UserId,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::commands::{self, Command, Target};
use crate::reconnect::{self, Policy};
use crate::render::{self, Event, Extra};
use crate::tls::Tls;

/// How long to wait for `logged_out` (or the close) after sending `logout`.
const LOGOUT_WAIT: Duration = Duration::from_secs(2);

/// How long the end of the stream (TLS `close_notify`, TCP FIN) may take to write.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

/// The bound of one reconnection attempt's TCP connect (the TLS handshake has its own).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The read side of the connection (plain TCP or TLS).
type Reader = Box<dyn AsyncRead + Unpin + Send>;

/// The write side of the connection (plain TCP or TLS).
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

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

/// Connects to the server (and runs the TLS handshake). The message says what failed.
async fn connect(settings: &Settings) -> Result<(Reader, Writer), String> {
    let stream = TcpStream::connect(&settings.server)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", settings.server))?;
    if let Err(e) = stream.set_nodelay(true) {
        debug!("set_nodelay: {e}");
    }
    info!(server = %settings.server, "connected");
    match &settings.tls {
        None => {
            let (rd, wr) = stream.into_split();
            Ok((Box::new(rd), Box::new(wr)))
        }
        Some(tls) => match tls.connect(stream).await {
            Ok(stream) => {
                info!(name = %tls.name(), "TLS handshake done");
                let (rd, wr) = tokio::io::split(stream);
                Ok((Box::new(rd), Box::new(wr)))
            }
            Err(e) => Err(format!(
                "TLS handshake with {} (verifying the certificate for {:?}) failed: {e}",
                settings.server,
                tls.name()
            )),
        },
    }
}

/// Connects, logs in and runs until the session is over. Returns the exit code: 0 once
/// logged in and then out, 1 if the connection failed or the login did not succeed.
pub async fn run(settings: Settings) -> i32 {
    let (rd, wr) = match connect(&settings).await {
        Ok(halves) => halves,
        Err(msg) => {
            eprintln!("precall-client: {msg}");
            return 1;
        }
    };
    let config = {
        let mut config = ClientConfig::default();
        config.ping_interval = settings.ping;
        config
    };
    let mut session = Session {
        client: Client::new(config),
        start: Instant::now(),
        wr,
        printer: Printer::new(settings.json),
        user: settings.user.clone(),
        dialing: HashMap::new(),
        ringing: HashMap::new(),
        received_at: Instant::now(),
        logged_in: false,
        done: false,
        leave_by: None,
        settings,
        recovery: None,
        dropped: false,
    };
    let now = session.now();
    let s = &session.settings;
    let (user, password, login) = (s.user.clone(), s.password.clone(), s.login.clone());
    if let Err(e) = session.client.login(user, password, login, now) {
        eprintln!("precall-client: {e}");
        return 1;
    }
    session.flush().await;
    session.run(rd, stdin_lines()).await;
    // End the stream cleanly (over TLS: close_notify), without waiting long for it.
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, session.wr.shutdown()).await;
    if session.logged_in {
        0
    } else {
        eprintln!("precall-client: login failed");
        1
    }
}

/// A call request waiting for `call_ringing`: when it was written to the socket.
struct Dial {
    sent: Option<Instant>,
}

struct Session {
    client: Client,
    start: Instant,
    wr: Writer,
    printer: Printer,
    user: UserId,
    dialing: HashMap<ReqId, Dial>,
    /// Calls this end placed that are not established yet, with the time their request
    /// was written.
    ringing: HashMap<CallId, Instant>,
    /// When the bytes behind the events being drained were handed to the client.
    received_at: Instant,
    logged_in: bool,
    done: bool,
    /// Set once `logout` is sent.
    leave_by: Option<Instant>,
    /// What the command line said (the server, the credentials, reconnection).
    settings: Settings,
    /// Set while the session is being taken over on a new connection.
    recovery: Option<Recovery>,
    /// Set when the current connection is given up; the loop drops its reader.
    dropped: bool,
}

/// A reconnection in progress: from the drop until the table is complete again.
struct Recovery {
    /// The waits between attempts.
    backoff: Backoff,
    /// When the next attempt starts, if one is due (none while an attempt runs).
    next: Option<Instant>,
    /// The session is gone (`resume_failed`): the next attempt logs in with the
    /// password.
    login: bool,
    /// When the connection dropped.
    since: Instant,
}

/// Reads from the connection, if there is one (else never completes).
async fn read_some(rd: Option<&mut Reader>, buf: &mut [u8]) -> std::io::Result<usize> {
    match rd {
        Some(rd) => rd.read(buf).await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn run(&mut self, rd: Reader, mut lines: mpsc::Receiver<String>) {
        let mut rd = Some(rd);
        let mut buf = vec![0u8; 64 * 1024];
        let mut stdin_open = true;
        while !self.done {
            let ping_at = self.client.poll_timeout().map(|t| self.instant(t));
            let leave_by = self.leave_by;
            let commands = stdin_open && self.ready_for_commands();
            let retry_at = self.recovery.as_ref().and_then(|r| r.next);
            tokio::select! {
                r = read_some(rd.as_mut(), &mut buf) => match r {
                    Ok(0) => self.closed("the server closed the connection"),
                    Ok(n) => self.on_bytes(&buf[..n]).await,
                    Err(e) => self.closed(&e.to_string()),
                },
                () = sleep_until(retry_at.unwrap_or(self.start)), if retry_at.is_some() => {
                    if let Some(new) = self.attempt().await {
                        rd = Some(new);
                    }
                }
                line = lines.recv(), if commands => match line {
                    Some(line) => self.on_line(&line).await,
                    None => {
                        stdin_open = false;
                        self.leave().await;
                    }
                },
                () = sleep_until(ping_at.unwrap_or(self.start)), if ping_at.is_some() => {
                    let now = self.now();
                    self.client.handle_timeout(now);
                    self.flush().await;
                }
                () = sleep_until(leave_by.unwrap_or(self.start)), if leave_by.is_some() => {
                    warn!("no logged_out within {LOGOUT_WAIT:?}; closing");
                    self.closed("logout timed out");
                }
            }
            if std::mem::take(&mut self.dropped) {
                rd = None;
            }
        }
    }

    /// Commands are read once the login snapshot is complete, so that `call` and
    /// `table` see the whole table.
    fn ready_for_commands(&self) -> bool {
        self.client.status() == Status::Online && self.client.is_synced()
    }

    fn now(&self) -> Time {
        Time(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn instant(&self, t: Time) -> Instant {
        self.start + Duration::from_millis(t.0)
    }

    async fn on_bytes(&mut self, data: &[u8]) {
        let now = self.now();
        let result = self.client.receive(data, now);
        self.received_at = Instant::now();
        if let Err(e) = result {
            // The core already ended (or detached) the session; the transport goes with
            // it.
            warn!("closing the connection: {e}");
            self.closed(&e.to_string());
            return;
        }
        self.flush().await;
        self.drain();
    }

    /// The transport is gone (closed, failed, or given up on). A resumable session is
    /// taken over on a new connection if reconnection is on; otherwise, or once the
    /// session is over, the loop ends.
    fn closed(&mut self, why: &str) {
        info!("connection closed: {why}");
        self.dropped = true;
        self.wr = Box::new(tokio::io::sink());
        let now = self.now();
        self.client.connection_closed(now);
        self.received_at = Instant::now();
        if self.recovery.is_none()
            && self.client.can_resume()
            && self.leave_by.is_none()
            && self.settings.reconnect.is_some()
        {
            self.recovery = self.settings.reconnect.map(|p| Recovery {
                backoff: Backoff::new(p.base, p.max),
                next: None,
                login: false,
                since: Instant::now(),
            });
        }
        let abandon = self.recovery.is_none() && self.client.can_resume();
        if abandon {
            // Not reconnecting: the session is given up at once, as it always was (and
            // its momentary detachment is not worth a line).
            self.client.abandon(now);
        }
        self.drain_quiet(abandon);
        if self.recovery.is_some() {
            self.schedule(None);
        } else {
            self.done = true;
        }
    }

    /// Plans the next reconnection attempt: a jittered wait from the back-off, never
    /// shorter than what the server asked for.
    fn schedule(&mut self, retry_after: Option<Duration>) {
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        let wait = r.backoff.next_delay(reconnect::random_u64(), retry_after);
        info!(
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            attempt = r.backoff.attempts(),
            "reconnecting"
        );
        r.next = Some(Instant::now() + wait);
    }

    /// One reconnection attempt: connects, then resumes the session or, if the server
    /// no longer knows it, logs in again. Returns the new connection's reader.
    async fn attempt(&mut self) -> Option<Reader> {
        let login = match self.recovery.as_mut() {
            Some(r) => {
                r.next = None;
                r.login
            }
            None => return None,
        };
        let connected = match tokio::time::timeout(CONNECT_WAIT, connect(&self.settings)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no connection within {CONNECT_WAIT:?}")),
        };
        let (rd, wr) = match connected {
            Ok(halves) => halves,
            Err(msg) => {
                info!("reconnection failed: {msg}");
                self.schedule(None);
                return None;
            }
        };
        self.wr = wr;
        let now = self.now();
        let result = if login && self.client.status() == Status::Idle {
            let s = &self.settings;
            let (user, password, with) = (s.user.clone(), s.password.clone(), s.login.clone());
            self.client.login(user, password, with, now)
        } else {
            self.client.resume(now)
        };
        if let Err(e) = result {
            // Cannot happen (the loop attempts only while detached or logged out).
            warn!("cannot take the session over: {e}");
            self.recovery = None;
            self.done = true;
            return None;
        }
        self.flush().await;
        if std::mem::take(&mut self.dropped) {
            return None;
        }
        Some(rd)
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
        self.flush().await;
        self.received_at = Instant::now();
        self.drain();
        self.printer.prompt();
    }

    async fn execute(&mut self, cmd: Command) {
        let now = self.now();
        let result = match cmd {
            Command::Table => {
                let table = render::table(&self.client, true);
                self.printer.emit(&Event::Table { table });
                Ok(())
            }
            Command::Call { to, prior_art } => {
                let Some(endpoint) = self.resolve(&to) else {
                    self.printer.emit(&not_in_table(&to));
                    return;
                };
                let placed = if prior_art {
                    self.client
                        .place_call_exchanging_capabilities(&endpoint, now)
                } else {
                    self.client.place_call(&endpoint, now)
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
                self.client.query_caps(&endpoint, now).map(drop)
            }
            Command::Answer { call, accept } => self.client.answer(call, accept, now),
            Command::Hangup(call) => {
                self.ringing.remove(&call);
                self.client.hangup(call, now)
            }
            Command::Caps(source) => match source.load() {
                Ok(caps) => self.client.update_caps(caps, now).map(drop),
                Err(detail) => {
                    self.printer.emit(&Event::error("bad_caps", detail));
                    return;
                }
            },
            Command::Add(user) => self.client.add_contact(user, now).map(drop),
            Command::Remove(user) => self.client.remove_contact(user, now).map(drop),
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
        match to {
            Target::Endpoint(e) => self.client.peer(e).map(|_| e.clone()),
            Target::User(u) => self
                .client
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
        let now = self.now();
        if matches!(self.client.status(), Status::Detached | Status::Resuming) {
            // No connection to log out on: the session is given up here and ends at
            // the server when its grace runs out.
            self.recovery = None;
            self.client.abandon(now);
            self.drain();
            self.done = true;
            return;
        }
        match self.client.logout(now) {
            Ok(()) => {
                self.leave_by = Some(Instant::now() + LOGOUT_WAIT);
                self.flush().await;
            }
            Err(e) => {
                debug!("logout: {e}");
                self.done = true;
            }
        }
    }

    /// Writes every frame the client queued, then stamps the call requests among them.
    async fn flush(&mut self) {
        while let Some(frame) = self.client.poll_transmit() {
            if let Err(e) = self.wr.write_all(&frame).await {
                self.closed(&e.to_string());
                return;
            }
        }
        // A TLS stream may keep records it could not write yet: push them out now.
        if let Err(e) = self.wr.flush().await {
            self.closed(&e.to_string());
            return;
        }
        let written = Instant::now();
        for dial in self.dialing.values_mut() {
            dial.sent.get_or_insert(written);
        }
    }

    /// Prints every event the client produced, adding what the binary knows.
    fn drain(&mut self) {
        self.drain_quiet(false);
    }

    /// As [`Session::drain`]; with `skip_detached`, a `Detached` event is not printed.
    fn drain_quiet(&mut self, skip_detached: bool) {
        while let Some(ev) = self.client.poll_event() {
            if skip_detached && ev == ClientEvent::Detached {
                continue;
            }
            let mut extra = Extra::default();
            match &ev {
                ClientEvent::LoggedIn { .. } => self.logged_in = true,
                ClientEvent::CallRinging { req, call, .. } => {
                    if let Some(dial) = self.dialing.remove(req) {
                        self.ringing
                            .insert(*call, dial.sent.unwrap_or(self.received_at));
                    }
                }
                ClientEvent::CallFailed { req, .. } => {
                    self.dialing.remove(req);
                }
                ClientEvent::CallEstablished { call, .. } => {
                    extra.setup_us = self.ringing.remove(call).map(|sent| {
                        let us = self.received_at.saturating_duration_since(sent).as_micros();
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
                    self.done |= self.recovery.is_none();
                }
                ClientEvent::Synced => {
                    if let Some(r) = self.recovery.take() {
                        let ms = r.since.elapsed().as_millis();
                        info!(
                            after_ms = u64::try_from(ms).unwrap_or(u64::MAX),
                            "back online"
                        );
                    }
                }
                ClientEvent::ServerError {
                    code, retry_after, ..
                } if self.recovery.is_some() && code.is_fatal() => {
                    self.recovery_error(*code, *retry_after);
                }
                _ => {}
            }
            match Event::from_client(ev, &self.client, &self.user, extra) {
                Some(event) => self.printer.emit(&event),
                None => debug!("an event this binary does not know"),
            }
        }
    }
}

impl Session {
    /// A fatal error while reconnecting (the core already ended the session): the
    /// session is gone at the server (`resume_failed`: log in again with the password
    /// at once), the server asks to wait (`retry_after_ms`), or the attempt cannot
    /// succeed (bad credentials, ...: give up).
    fn recovery_error(&mut self, code: ErrorCode, retry_after: Option<Duration>) {
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        self.dropped = true;
        self.wr = Box::new(tokio::io::sink());
        if code == ErrorCode::ResumeFailed {
            info!("the server no longer knows the session: logging in again");
            r.login = true;
            r.next = Some(Instant::now());
        } else if code.refuses_connection() {
            // The server refused the connection (the core keeps a resumed session
            // detached); the next attempt waits at least as long as it asked.
            let ms = retry_after.map_or(0, |d| d.as_millis());
            info!(
                ?code,
                retry_after_ms = ms,
                "the server refused the connection"
            );
            self.schedule(retry_after);
        } else {
            warn!(?code, "cannot reconnect");
            self.recovery = None;
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
