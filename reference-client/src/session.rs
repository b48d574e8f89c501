//! The event loop: moves bytes between the socket and [`Client`], lines from standard
//! input to commands, time to the ping timer, and events to standard output. Every
//! protocol decision is the core's.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use precall_protocol::client::{ClientError, Status};
use precall_protocol::{
    CallId, Client, ClientConfig, ClientEvent, Endpoint, LoginWith, Password, ReqId, Time, UserId,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::commands::{self, Command, Target};
use crate::render::{self, Event, Extra};
use crate::tls::Tls;

/// How long to wait for `logged_out` (or the close) after sending `logout`.
const LOGOUT_WAIT: Duration = Duration::from_secs(2);

/// How long the end of the stream (TLS `close_notify`, TCP FIN) may take to write.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

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
}

/// Connects, logs in and runs until the session is over. Returns the exit code: 0 once
/// logged in and then out, 1 if the connection failed or the login did not succeed.
pub async fn run(settings: Settings) -> i32 {
    let stream = match TcpStream::connect(&settings.server).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("precall-client: cannot connect to {}: {e}", settings.server);
            return 1;
        }
    };
    if let Err(e) = stream.set_nodelay(true) {
        debug!("set_nodelay: {e}");
    }
    info!(server = %settings.server, "connected");
    let (rd, wr): (Reader, Writer) = match &settings.tls {
        None => {
            let (rd, wr) = stream.into_split();
            (Box::new(rd), Box::new(wr))
        }
        Some(tls) => match tls.connect(stream).await {
            Ok(stream) => {
                info!(name = %tls.name(), "TLS handshake done");
                let (rd, wr) = tokio::io::split(stream);
                (Box::new(rd), Box::new(wr))
            }
            Err(e) => {
                eprintln!(
                    "precall-client: TLS handshake with {} (verifying the certificate \
                     for {:?}) failed: {e}",
                    settings.server,
                    tls.name()
                );
                return 1;
            }
        },
    };
    let config = ClientConfig {
        ping_interval: settings.ping,
        ..ClientConfig::default()
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
    };
    let now = session.now();
    if let Err(e) = session
        .client
        .login(settings.user, settings.password, settings.login, now)
    {
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

/// A call request waiting for `call_ringing`.
struct Dial {
    to: Endpoint,
    /// When the request was written to the socket.
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
}

impl Session {
    async fn run(&mut self, mut rd: Reader, mut lines: mpsc::Receiver<String>) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut stdin_open = true;
        while !self.done {
            let ping_at = self.client.poll_timeout().map(|t| self.instant(t));
            let leave_by = self.leave_by;
            let commands = stdin_open && self.ready_for_commands();
            tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) => self.closed("the server closed the connection"),
                    Ok(n) => self.on_bytes(&buf[..n]).await,
                    Err(e) => self.closed(&e.to_string()),
                },
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
            // The core already ended the session; the transport goes with it.
            warn!("closing the connection: {e}");
            self.drain();
            self.done = true;
            return;
        }
        self.flush().await;
        self.drain();
    }

    /// The transport is gone (closed, failed, or given up on).
    fn closed(&mut self, why: &str) {
        info!("connection closed: {why}");
        let now = self.now();
        self.client.connection_lost(now);
        self.received_at = Instant::now();
        self.drain();
        self.done = true;
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
                    let detail = match to {
                        Target::User(u) => format!("{u} has no online terminal in the table"),
                        Target::Endpoint(e) => format!("{e} is not in the table"),
                    };
                    self.printer.emit(&Event::error("not_in_table", detail));
                    return;
                };
                let placed = if prior_art {
                    self.client
                        .place_call_exchanging_capabilities(&endpoint, now)
                } else {
                    self.client.place_call(&endpoint, now)
                };
                placed.map(|req| {
                    self.dialing.insert(
                        req,
                        Dial {
                            to: endpoint,
                            sent: None,
                        },
                    );
                })
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
        while let Some(ev) = self.client.poll_event() {
            let mut extra = Extra::default();
            match &ev {
                ClientEvent::LoggedIn { .. } => self.logged_in = true,
                ClientEvent::CallRinging { req, call } => {
                    if let Some(dial) = self.dialing.remove(req) {
                        self.ringing
                            .insert(*call, dial.sent.unwrap_or(self.received_at));
                        extra.to = Some(dial.to);
                    }
                }
                ClientEvent::CallFailed { req, .. } => {
                    extra.to = self.dialing.remove(req).map(|d| d.to);
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
                    self.done = true;
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
