//! The tokio driver of the core's [`Client`]: one connection, its clock, the flush of
//! queued frames, the read loop, the ping timer, and reconnection.
//!
//! The driver is thin: it moves bytes between the socket and the client, the passage
//! of time to [`Client::handle_timeout`], and the client's events to its user
//! ([`Driver::next`]). Every protocol decision is the core's; whether to reconnect is
//! the user's ([`Driver::reconnect`]). While it reconnects the driver follows what the
//! core reports: a `resume_failed` answer means the session is gone (the next attempt
//! logs in with the credentials of [`Driver::with_login`]); an error that
//! [`refuses the connection`](precall_protocol::ErrorCode::refuses_connection) is tried
//! again no sooner than its `retry_after_ms`; the waits come from the core's
//! [`Backoff`].
//!
//! The client lives in a [`Cell`]: owned by the driver (`Driver<Client>`), or shared
//! behind a mutex with code that inspects it while the session runs (a load scenario's
//! table checks), the lock held only for each call into the client, never across an
//! `.await`. Reads on plain TCP go through one buffer per thread, so that thousands of
//! sessions in one process do not hold a buffer each.
//!
//! [`Driver::next`] is cancel-safe: it may lose a `select!` against the user's own
//! inputs without losing bytes (unwritten output stays queued in the driver) or events.
//!
//! A user that only needs the bytes' arrival times for a while (a load generator's
//! observers while it measures a server) can [`Driver::hold`] them: the driver keeps
//! reading the socket, so the server never waits on it, but keeps the bytes, each
//! read with the time it arrived, and hands them to the client in order when the hold
//! ends (or the connection is lost); [`Driver::received_at`] is then the arrival time
//! of the bytes behind the events.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use precall_protocol::client::Status;
use precall_protocol::time::millis;
use precall_protocol::{
    Backoff, Client, ClientEvent, Epoch, ErrorCode, LoginWith, Password, Time, UserId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant, Sleep};
use tokio_rustls::client::TlsStream;
use tracing::{debug, info, warn};

use crate::tls::Tls;

/// Bytes read from a socket at once.
const READ_BUF: usize = 64 * 1024;

/// The bound of one reconnection attempt's connect (the TLS handshake has its own).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// How long the end of the stream (TLS `close_notify`, TCP FIN) may take to write.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

thread_local! {
    /// The read buffer of every plain-TCP session of this thread.
    static READ: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

/// The core's clock: the core's [`Epoch`] taken now, read with tokio's `Instant` (so
/// that deadlines feed `sleep_until` directly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    epoch: Epoch,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: Epoch::new(Instant::now().into_std()),
        }
    }

    /// The current time.
    pub fn now(&self) -> Time {
        self.epoch.time(Instant::now().into_std())
    }

    /// The `Instant` of a time on this clock.
    pub fn instant(&self, t: Time) -> Instant {
        Instant::from_std(self.epoch.instant(t))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the driver's [`Client`] lives.
pub trait Cell: Send {
    /// Runs `f` on the client (a shared client is locked for the call only).
    fn with<R>(&mut self, f: impl FnOnce(&mut Client) -> R) -> R;
}

impl Cell for Client {
    fn with<R>(&mut self, f: impl FnOnce(&mut Client) -> R) -> R {
        f(self)
    }
}

/// A client shared with other tasks: inside any `T` that holds one. A poisoned lock
/// (a task panicked while holding it) still holds the client as it was.
impl<T: AsMut<Client> + Send> Cell for Arc<Mutex<T>> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Client) -> R) -> R {
        let mut guard = self.lock().unwrap_or_else(PoisonError::into_inner);
        f(guard.as_mut())
    }
}

/// The credentials a session logs in with.
#[derive(Clone)]
pub struct Login {
    /// The account.
    pub user: UserId,
    /// Its password.
    pub password: Password,
    /// Capabilities or a registered terminal.
    pub with: LoginWith,
}

/// Sees the bytes of the connection (measurements, deliberate faults of a test tool).
pub trait Tap: Send {
    /// A frame is about to be written.
    fn sent(&mut self, frame: &[u8]) {
        let _ = frame;
    }

    /// Bytes were read; returns what the client receives (by default, the same).
    fn received<'a>(&mut self, data: &'a [u8]) -> Cow<'a, [u8]> {
        Cow::Borrowed(data)
    }
}

/// When [`Driver::reconnect`] makes its first attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At once.
    Now,
    /// After the back-off's first jittered wait (clients that lost their connections
    /// together spread apart).
    AfterBackoff,
}

/// What [`Driver::next`] hands its user.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// An event of the core's client.
    Client(ClientEvent),
    /// The connection is gone (closed by the server, failed, refused by the core, or
    /// given up with [`Driver::disconnect`]); the client was told
    /// ([`Client::connection_closed`]) and its events follow.
    Disconnected(String),
    /// A reconnection attempt starts: it resumes the session (`resume`) or logs in.
    Attempt {
        /// Whether it resumes.
        resume: bool,
    },
    /// A reconnection attempt could not connect; the next one is planned.
    ConnectFailed(String),
    /// The next reconnection attempt starts after `wait`.
    Retrying {
        /// The jittered wait.
        wait: Duration,
        /// Attempts planned so far.
        attempt: u32,
    },
}

/// The byte stream to the server.
enum Transport {
    Tcp(TcpStream),
    /// A TLS stream and its read buffer.
    Tls(Box<TlsStream<TcpStream>>, Vec<u8>),
}

impl Transport {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(data).await,
            Transport::Tls(s, _) => s.write(data).await,
        }
    }

    async fn push_out(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Tcp(_) => Ok(()),
            // A TLS stream may keep records it could not write yet.
            Transport::Tls(s, _) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Tcp(s) => s.shutdown().await,
            Transport::Tls(s, _) => s.shutdown().await,
        }
    }
}

/// Waits until the connection has bytes: `None` for plain TCP (read them with
/// `try_read`), the count read into the TLS buffer otherwise. Never completes
/// without a connection.
async fn readable(conn: Option<&mut Transport>) -> std::io::Result<Option<usize>> {
    match conn {
        None => std::future::pending().await,
        Some(Transport::Tcp(s)) => s.readable().await.map(|()| None),
        Some(Transport::Tls(s, buf)) => s.read(buf).await.map(Some),
    }
}

/// Reads what a plain-TCP connection holds. A read that does not fill `buf` has
/// drained the socket: it clears tokio's readiness as a `WouldBlock` would, so that the
/// next wait does not wake at once only to find nothing (a second `recv` per read).
fn read_tcp(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = None;
    let r = s.try_io(Interest::READABLE, || match s.try_read(buf) {
        Ok(n) if n > 0 && n < buf.len() => {
            got = Some(n);
            Err(ErrorKind::WouldBlock.into())
        }
        other => other,
    });
    match (got, r) {
        (Some(n), _) => Ok(n),
        (None, r) => r,
    }
}

/// A reconnection in progress: from [`Driver::reconnect`] until the table is complete.
struct Recovery {
    backoff: Backoff,
    /// When the next attempt starts, if one is due.
    next: Option<Instant>,
    /// The attempt under way (`Some(resume)`), between its start and its connection.
    attempting: Option<bool>,
    /// When the reconnection started.
    since: Instant,
}

/// What woke the driver.
enum Wake {
    Read(std::io::Result<Option<usize>>),
    Retry,
    Timer,
}

/// The tokio driver of one [`Client`] (module docs).
pub struct Driver<C: Cell = Client> {
    client: C,
    clock: Clock,
    addr: String,
    tls: Option<Arc<Tls>>,
    login: Option<Login>,
    backoff: Option<(Duration, Duration)>,
    random: Box<dyn FnMut() -> u64 + Send>,
    conn: Option<Transport>,
    /// Frames taken from the client and not written yet.
    out: Vec<u8>,
    tap: Option<Box<dyn Tap>>,
    received_at: Instant,
    recovery: Option<Recovery>,
    pending: VecDeque<Event>,
    /// Bytes read and not handed to the client yet ([`Driver::hold`]).
    held: Held,
    /// The client's timer: its deadline and the sleep that waits for it.
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
    /// Counts the bytes read, held or not ([`Driver::count_reads`]).
    read_counter: Option<Arc<AtomicU64>>,
}

/// Bytes read while the driver holds them: every read's length and arrival time, and
/// the bytes of all of them in order.
#[derive(Default)]
struct Held {
    holding: bool,
    reads: VecDeque<(Instant, usize)>,
    bytes: Vec<u8>,
    /// How much of `bytes` was handed over already.
    start: usize,
}

impl Held {
    fn push(&mut self, at: Instant, data: &[u8]) {
        self.reads.push_back((at, data.len()));
        self.bytes.extend_from_slice(data);
    }

    fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    fn clear(&mut self) {
        self.reads.clear();
        self.bytes = Vec::new();
        self.start = 0;
    }
}

impl<C: Cell> Driver<C> {
    /// A driver of `client` on `clock`, for the server at `addr` (`host:port`), not
    /// connected. Plain TCP, no credentials, no reconnection until configured.
    pub fn new(client: C, clock: Clock, addr: impl Into<String>) -> Self {
        Self {
            client,
            clock,
            addr: addr.into(),
            tls: None,
            login: None,
            backoff: None,
            random: Box::new(os_random),
            conn: None,
            out: Vec::new(),
            tap: None,
            received_at: Instant::now(),
            recovery: None,
            pending: VecDeque::new(),
            held: Held::default(),
            timer: None,
            read_counter: None,
        }
    }

    /// Connects over TLS.
    pub fn with_tls(mut self, tls: Arc<Tls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The credentials of [`Driver::login`] and of a reconnection's login.
    pub fn with_login(mut self, login: Login) -> Self {
        self.login = Some(login);
        self
    }

    /// Enables [`Driver::reconnect`]: the back-off's first ceiling and largest
    /// ceiling, and the random numbers its jitter draws on (for example
    /// [`os_random`]).
    pub fn with_reconnect(
        mut self,
        base: Duration,
        max: Duration,
        random: impl FnMut() -> u64 + Send + 'static,
    ) -> Self {
        self.backoff = Some((base, max));
        self.random = Box::new(random);
        self
    }

    /// The server's address for the next connection.
    pub fn set_addr(&mut self, addr: impl Into<String>) {
        self.addr = addr.into();
    }

    /// Installs (or removes) a tap on the connection's bytes.
    pub fn set_tap(&mut self, tap: Option<Box<dyn Tap>>) {
        self.tap = tap;
    }

    /// Runs `f` on the client.
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Client) -> R) -> R {
        self.client.with(f)
    }

    /// The client's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// When the bytes behind the events being handed out reached the client (or the
    /// connection was lost).
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// Holds the bytes read from now on (`true`), or lets [`Driver::poll`] and
    /// [`Driver::next`] hand those held to the client, in order, each read with the time
    /// it arrived (`false`). While they are held the client sees nothing of them: no
    /// events, no answers. A lost connection hands them over before telling the client.
    pub fn hold(&mut self, on: bool) {
        self.held.holding = on;
    }

    /// Adds the number of bytes of every read to `counter` (as they arrive, held or
    /// not): how a user sees traffic that it holds.
    pub fn count_reads(&mut self, counter: Arc<AtomicU64>) {
        self.read_counter = Some(counter);
    }

    /// Bytes read and held, not handed to the client yet.
    pub fn held(&self) -> usize {
        self.held.bytes.len() - self.held.start
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Whether a reconnection is under way ([`Driver::reconnect`] until the table is
    /// complete, the reconnection is stopped, or the core makes it hopeless).
    pub fn is_reconnecting(&self) -> bool {
        self.recovery.is_some()
    }

    /// Opens a connection (and runs the TLS handshake). The message says what failed.
    pub async fn connect(&mut self) -> Result<(), String> {
        let stream = TcpStream::connect(self.addr.as_str())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        if let Err(e) = stream.set_nodelay(true) {
            debug!("set_nodelay: {e}");
        }
        debug!(server = %self.addr, "connected");
        let transport = match &self.tls {
            None => Transport::Tcp(stream),
            Some(tls) => match tls.connect(stream).await {
                Ok(stream) => {
                    info!(name = %tls.name(), "TLS handshake done");
                    Transport::Tls(Box::new(stream), vec![0; READ_BUF])
                }
                Err(e) => {
                    return Err(format!(
                        "TLS handshake with {} (verifying the certificate for {:?}) failed: {e}",
                        self.addr,
                        tls.name()
                    ))
                }
            },
        };
        self.out.clear();
        self.conn = Some(transport);
        Ok(())
    }

    /// Queues a login with the credentials of [`Driver::with_login`] (written by the
    /// next [`Driver::flush`] or [`Driver::next`]). The message says why it was
    /// refused.
    pub fn login(&mut self) -> Result<(), String> {
        let Some(l) = self.login.clone() else {
            return Err("no credentials".into());
        };
        let now = self.clock.now();
        self.client
            .with(|c| c.login(l.user, l.password, l.with, now))
            .map_err(|e| e.to_string())
    }

    /// Writes every frame the client queued; returns how many were taken from it.
    /// Without a connection they are dropped. If the connection fails, it is given
    /// up ([`Event::Disconnected`] follows) and the message says why.
    pub async fn flush(&mut self) -> Result<usize, String> {
        let (out, tap) = (&mut self.out, &mut self.tap);
        let frames = self.client.with(|c| {
            let mut n = 0;
            while let Some(frame) = c.poll_transmit() {
                if let Some(tap) = tap.as_mut() {
                    tap.sent(&frame);
                }
                out.extend_from_slice(&frame);
                n += 1;
            }
            n
        });
        let Some(conn) = self.conn.as_mut() else {
            self.out.clear();
            return Ok(frames);
        };
        if self.out.is_empty() {
            return Ok(frames);
        }
        let mut failed = None;
        while !self.out.is_empty() {
            match conn.write(&self.out).await {
                Ok(0) => {
                    failed = Some("the connection accepts no more bytes".to_string());
                    break;
                }
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if failed.is_none() {
            failed = conn.push_out().await.err().map(|e| e.to_string());
        }
        if let Some(why) = failed {
            self.lost(why.clone());
            return Err(why);
        }
        if self.out.capacity() > READ_BUF {
            self.out = Vec::new();
        }
        Ok(frames)
    }

    /// Gives the connection up: the client is told it is lost and
    /// [`Event::Disconnected`] says `why`.
    pub fn disconnect(&mut self, why: &str) {
        self.lost(why.to_string());
    }

    /// Drops the connection without telling the client (its session is over or
    /// detached already).
    pub fn close(&mut self) {
        self.conn = None;
        self.out.clear();
        self.held.clear();
    }

    /// Drops the connection abruptly (a TCP reset, nothing more said) and tells the
    /// client it is lost; no [`Event::Disconnected`] (the user did it).
    pub fn cut(&mut self) {
        // What was read before the cut reaches the client first.
        while self.conn.is_some() && self.release_one() {}
        if let Some(Transport::Tcp(s)) = &self.conn {
            if let Err(e) = s.set_zero_linger() {
                debug!("SO_LINGER: {e}");
            }
        }
        self.close();
        let now = self.clock.now();
        self.client.with(|c| c.connection_closed(now));
        self.received_at = Instant::now();
    }

    /// Ends the stream cleanly (over TLS: `close_notify`), waiting briefly.
    pub async fn shutdown(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            let _ = timeout(SHUTDOWN_WAIT, conn.shutdown()).await;
        }
    }

    /// Starts taking the session over on a new connection (needs
    /// [`Driver::with_reconnect`]): attempts follow the back-off until the table is
    /// complete again. A detached session is resumed; an idle client logs in.
    pub fn reconnect(&mut self, start: Start) {
        let Some((base, max)) = self.backoff else {
            warn!("reconnection is not configured");
            return;
        };
        self.recovery = Some(Recovery {
            backoff: Backoff::new(base, max),
            next: None,
            attempting: None,
            since: Instant::now(),
        });
        match start {
            Start::Now => {
                if let Some(r) = self.recovery.as_mut() {
                    r.next = Some(Instant::now());
                }
            }
            Start::AfterBackoff => self.schedule(None),
        }
    }

    /// Stops reconnecting (the next attempt is not made).
    pub fn stop_reconnecting(&mut self) {
        self.recovery = None;
    }

    /// The next event that is already there, without any I/O (bytes held and no
    /// longer held are handed to the client here, one read at a time).
    pub fn poll(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if let Some(ev) = self.client.with(Client::poll_event) {
                self.observe(&ev);
                return Some(Event::Client(ev));
            }
            if self.held.holding || !self.release_one() {
                return None;
            }
        }
    }

    /// Hands the oldest held read to the client. Returns whether there was one.
    fn release_one(&mut self) -> bool {
        let Some((at, len)) = self.held.reads.pop_front() else {
            return false;
        };
        let start = self.held.start;
        let end = (start + len).min(self.held.bytes.len());
        let data = &self.held.bytes[start..end];
        let data = match self.tap.as_mut() {
            Some(tap) => tap.received(data),
            None => Cow::Borrowed(data),
        };
        let now = self.clock.now();
        self.received_at = at;
        let result = self.client.with(|c| c.receive(&data, now));
        drop(data);
        if self.held.reads.is_empty() {
            self.held.bytes.clear();
            self.held.start = 0;
        } else {
            self.held.start = end;
        }
        if let Err(e) = result {
            warn!("closing the connection: {e}");
            self.lost(e.to_string());
        }
        true
    }

    /// The next event: runs the connection (writes what the client queued, reads
    /// into the client, fires its timer, makes reconnection attempts) until there is
    /// one. `None` once nothing more can happen: no event left, no connection, no
    /// timer and no reconnection under way.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.poll() {
                return Some(ev);
            }
            if self.flush().await.is_err() {
                continue;
            }
            let clock = self.clock;
            let timer = self
                .client
                .with(|c| c.poll_timeout())
                .map(|t| clock.instant(t));
            let retry = self.recovery.as_ref().and_then(|r| r.next);
            if self.conn.is_none() && timer.is_none() && retry.is_none() {
                return None;
            }
            let never = Instant::now();
            // One timer per driver, moved only when the client's deadline moves (a new
            // one per wake-up costs a timer-wheel insertion and removal per read).
            if let Some(t) = timer {
                match &mut self.timer {
                    Some((at, sleep)) => {
                        if *at != t {
                            sleep.as_mut().reset(t);
                            *at = t;
                        }
                    }
                    None => self.timer = Some((t, Box::pin(sleep_until(t)))),
                }
            }
            let timer_slot = self.timer.as_mut();
            let wake = tokio::select! {
                r = readable(self.conn.as_mut()) => Wake::Read(r),
                () = sleep_until(retry.unwrap_or(never)), if retry.is_some() => Wake::Retry,
                () = async {
                    match timer_slot {
                        Some((_, sleep)) => sleep.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if timer.is_some() => Wake::Timer,
            };
            match wake {
                Wake::Read(r) => self.on_readable(r),
                Wake::Retry => self.attempt().await,
                Wake::Timer => {
                    let now = self.clock.now();
                    self.client.with(|c| c.handle_timeout(now));
                }
            }
        }
    }

    /// Reads what the connection holds into the client.
    fn on_readable(&mut self, r: std::io::Result<Option<usize>>) {
        match r {
            Err(e) => self.lost(e.to_string()),
            Ok(Some(0)) => self.lost("the server closed the connection".into()),
            Ok(Some(n)) => {
                let Some(Transport::Tls(_, buf)) = self.conn.as_mut() else {
                    return;
                };
                let buf = std::mem::take(buf);
                self.received(&buf[..n]);
                if let Some(Transport::Tls(_, slot)) = self.conn.as_mut() {
                    *slot = buf;
                }
            }
            Ok(None) => READ.with(|buf| {
                let mut buf = buf.borrow_mut();
                let read = match &self.conn {
                    Some(Transport::Tcp(s)) => read_tcp(s, &mut buf),
                    _ => return,
                };
                match read {
                    Ok(0) => self.lost("the server closed the connection".into()),
                    Ok(n) => self.received(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => self.lost(e.to_string()),
                }
            }),
        }
    }

    /// Bytes just read: held ([`Driver::hold`]; also behind reads still held, to keep
    /// the order), or handed to the client.
    fn received(&mut self, data: &[u8]) {
        if let Some(c) = &self.read_counter {
            c.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if self.held.holding || !self.held.is_empty() {
            self.held.push(Instant::now(), data);
        } else {
            self.deliver(data);
        }
    }

    /// Hands bytes read to the client (through the tap, if any).
    fn deliver(&mut self, data: &[u8]) {
        self.received_at = Instant::now();
        let data = match self.tap.as_mut() {
            Some(tap) => tap.received(data),
            None => Cow::Borrowed(data),
        };
        let now = self.clock.now();
        let result = self.client.with(|c| c.receive(&data, now));
        if let Err(e) = result {
            // The core already ended (or detached) the session; the transport goes
            // with it.
            warn!("closing the connection: {e}");
            self.lost(e.to_string());
        }
    }

    /// The connection is gone: the client is told; a reconnection under way plans its
    /// next attempt.
    fn lost(&mut self, why: String) {
        // What was read before the loss comes first; a held read the core refuses
        // loses the connection itself (and says so).
        let had = self.conn.is_some();
        while self.conn.is_some() && self.release_one() {}
        if had && self.conn.is_none() {
            return;
        }
        info!("connection closed: {why}");
        self.close();
        let now = self.clock.now();
        self.client.with(|c| c.connection_closed(now));
        self.received_at = Instant::now();
        self.pending.push_back(Event::Disconnected(why));
        if self.recovery.is_some() {
            self.schedule(None);
        }
    }

    /// Plans the next reconnection attempt: a jittered wait from the back-off, never
    /// shorter than what the server asked for.
    fn schedule(&mut self, retry_after: Option<Duration>) {
        let random = (self.random)();
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        let wait = r.backoff.next_delay(random, retry_after);
        let attempt = r.backoff.attempts();
        info!(wait_ms = millis(wait), attempt, "reconnecting");
        r.next = Some(Instant::now() + wait);
        r.attempting = None;
        self.pending.push_back(Event::Retrying { wait, attempt });
    }

    /// One reconnection attempt: connects, then resumes the detached session or, if
    /// the client is idle, logs in.
    async fn attempt(&mut self) {
        let status = self.client.with(|c| c.status());
        let resume = match status {
            Status::Detached => true,
            Status::Idle if self.login.is_some() => false,
            other => {
                // Cannot happen while reconnecting (the core is detached or idle).
                warn!(?other, "cannot take the session over");
                self.recovery = None;
                return;
            }
        };
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        if r.attempting.is_none() {
            r.attempting = Some(resume);
            self.pending.push_back(Event::Attempt { resume });
        }
        let connected = match timeout(CONNECT_WAIT, self.connect()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no connection within {CONNECT_WAIT:?}")),
        };
        if let Some(r) = self.recovery.as_mut() {
            r.next = None;
            r.attempting = None;
        }
        if let Err(msg) = connected {
            info!("reconnection failed: {msg}");
            self.pending.push_back(Event::ConnectFailed(msg));
            self.schedule(None);
            return;
        }
        let now = self.clock.now();
        let result = if resume {
            self.client
                .with(|c| c.resume(now))
                .map_err(|e| e.to_string())
        } else {
            self.login()
        };
        if let Err(e) = result {
            warn!("cannot take the session over: {e}");
            self.recovery = None;
            self.close();
        }
    }

    /// What a reconnection learns from the client's events: the table is complete,
    /// or the core ended the attempt (the session is gone, the server refused the
    /// connection, or the attempt cannot succeed).
    fn observe(&mut self, ev: &ClientEvent) {
        if self.recovery.is_none() {
            return;
        }
        match ev {
            ClientEvent::Synced => {
                if let Some(r) = self.recovery.take() {
                    info!(after_ms = millis(r.since.elapsed()), "back online");
                }
            }
            ClientEvent::ServerError {
                code, retry_after, ..
            } if code.is_fatal() => {
                // The core already ended (or kept detached) the session; the server
                // closes this connection.
                self.close();
                if *code == ErrorCode::ResumeFailed {
                    info!("the server no longer knows the session: logging in again");
                    if let Some(r) = self.recovery.as_mut() {
                        r.next = Some(Instant::now());
                        r.attempting = None;
                    }
                } else if code.refuses_connection() {
                    info!(
                        ?code,
                        retry_after_ms = retry_after.map_or(0, millis),
                        "the server refused the connection"
                    );
                    self.schedule(*retry_after);
                } else {
                    warn!(?code, "cannot reconnect");
                    self.recovery = None;
                }
            }
            _ => {}
        }
    }
}

impl Driver<Client> {
    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client, to give it commands (their frames go out at the next
    /// [`Driver::flush`] or [`Driver::next`]).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// 64 random bits from the operating system (the jitter of the back-off); if it
/// cannot be read, bits from the clock, which still spread clients apart.
pub fn os_random() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            u64::from(d.subsec_nanos()) ^ d.as_secs().rotate_left(32)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what reaches the client.
    struct Seen(Arc<Mutex<Vec<u8>>>);

    impl Tap for Seen {
        fn received<'a>(&mut self, data: &'a [u8]) -> Cow<'a, [u8]> {
            self.0.lock().unwrap().extend_from_slice(data);
            Cow::Borrowed(data)
        }
    }

    /// Held bytes reach the client only when the hold ends, in order, each read with
    /// the time it arrived; a lost connection hands them over first.
    #[tokio::test]
    async fn held_bytes_reach_the_client_in_order_when_released() {
        use precall_protocol::codec::encode_frame;
        use precall_protocol::ServerMessage;
        use tokio::net::TcpListener;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut driver = Driver::new(
            Client::new(Default::default()),
            Clock::new(),
            addr.to_string(),
        );
        driver.set_tap(Some(Box::new(Seen(seen.clone()))));
        driver.connect().await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        driver.hold(true);
        // `pong` is ignored by an idle client: no event, only bytes.
        let pong = encode_frame(&ServerMessage::Pong {});
        let before = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..3 {
            server.write_all(&pong).await.unwrap();
            sent.extend_from_slice(&pong);
            // Separate reads, each with its own arrival time.
            for _ in 0..250 {
                if driver.held() >= sent.len() {
                    break;
                }
                let _ = timeout(Duration::from_millis(20), driver.next()).await;
            }
            assert_eq!(driver.held(), sent.len(), "the bytes read are held");
        }
        let arrived = Instant::now();
        assert_eq!(driver.held(), sent.len());
        assert!(
            seen.lock().unwrap().is_empty(),
            "nothing reaches the client while held"
        );
        assert!(driver.poll().is_none());
        assert!(seen.lock().unwrap().is_empty());

        driver.hold(false);
        assert!(driver.poll().is_none(), "a pong makes no event");
        assert_eq!(*seen.lock().unwrap(), sent, "every held byte, in order");
        assert_eq!(driver.held(), 0);
        let at = driver.received_at();
        assert!(
            before <= at && at <= arrived,
            "the last read's arrival time"
        );

        // Held again, then the server closes: the held bytes come before the loss.
        seen.lock().unwrap().clear();
        driver.hold(true);
        server.write_all(&pong).await.unwrap();
        drop(server);
        let ev = timeout(Duration::from_secs(5), driver.next())
            .await
            .unwrap();
        assert!(matches!(ev, Some(Event::Disconnected(_))), "{ev:?}");
        assert_eq!(*seen.lock().unwrap(), pong.to_vec());
    }

    #[test]
    fn random_numbers_differ() {
        assert_ne!(os_random(), os_random());
    }

    #[test]
    fn the_clock_maps_time_to_instants_and_back() {
        let clock = Clock::new();
        let t = clock.now();
        assert!(clock.instant(t) <= Instant::now());
        assert_eq!(
            clock.instant(Time(1500)),
            Instant::from_std(clock.epoch.start()) + Duration::from_millis(1500)
        );
    }
}
