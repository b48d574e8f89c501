//! `serve`: the event loop around the core.
//!
//! One task owns the [`Server`]. It accepts connections, takes bytes, end-of-stream
//! reports, credential verdicts and logged roster changes (the administrator's, other
//! nodes') from one channel, fires the core's deadlines, and carries out the core's events: frames go to each
//! connection's bounded queue (module `conn`; a full queue means a dead peer: the core
//! is told the connection dropped), closes let the writer flush then shut the socket,
//! credential checks and contact-list changes go to the store thread, and their
//! outcomes come back to the core. The frames the core emits for a connection while it
//! handles a chunk of that connection's bytes are its answers, queued to be written at
//! once; every other frame is a push, which the connection may hold back for up to
//! `--coalesce-ms` to write it with the next ones (the coalescing rule, module `conn`).
//! A connection whose input the core paused (its contact-list changes wait for the
//! store) is not read from until the core takes input again, so a flooding peer is
//! slowed by TCP flow control and nobody else waits. The loop decides nothing about the
//! protocol. Each connection has one task, which reads and writes its socket. With
//! `--tls-cert`/`--tls-key` that task first runs the TLS handshake (module `tls`), off
//! the loop; the loop itself is the same. With `--ws-listen` the loop accepts on a
//! second port too: those connections are counted by the core from their accept on,
//! like TCP ones, and their task does the HTTP and WebSocket part (module `ws`) before
//! it runs the same reader.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use password_hash::rand_core::{OsRng, RngCore};
use precall_protocol::server::Limits;
use precall_protocol::server::{AuthTicket, AuthVerdict, ServerError, StoreOutcome, StoreTicket};
use precall_protocol::time::millis;
use precall_protocol::{
    ConnId, Epoch, Password, ResumeConfig, ResumeSecret, Server, ServerConfig, ServerEvent, Time,
    UserId,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{sleep, sleep_until, Instant};

use crate::cluster::{self, Cluster};
use crate::conn::{Coalesce, Link, Wiring};
use crate::fds::{self, AcceptFailures};
use crate::registry::RegistryInput;
use crate::store::{hash_password, RosterEvent, Store, StoreError};
use crate::tls::{self, Tls};
use crate::worker::{Job, Worker};
use crate::{conn, ws, ServeArgs};

/// How long a closed connection may take to flush its queue and see the peer close.
const LINGER: Duration = Duration::from_secs(5);

/// Capacity of the channel into the server task.
const INPUT_QUEUE: usize = 4096;

/// What the server task is told.
pub enum Input {
    /// Bytes arrived on a connection.
    Data(ConnId, Bytes),
    /// A connection's read side ended (end of stream, or the error).
    Closed(ConnId, Option<std::io::Error>),
    /// A credential check finished.
    Verdict(AuthTicket, AuthVerdict),
    /// Logged contact-list changes (the administrator's, and those stored by any
    /// node) read from the store, and the last id read.
    Roster(Result<(Vec<RosterEvent>, i64), StoreError>),
    /// Contact-list changes the store committed in one transaction (or could not
    /// store), in the order they were submitted; and the log id of each that changed a
    /// list, with its user and contact.
    Stored(Vec<(StoreTicket, StoreOutcome)>, Vec<(UserId, UserId, i64)>),
    /// What the cluster's registry reports (`--nats`).
    Registry(RegistryInput),
}

/// Pending connections the kernel may queue before `accept`: a login storm of thousands
/// of terminals overflows the usual 128 and its clients wait for SYN retransmits.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds and listens with [`LISTEN_BACKLOG`].
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    })?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Abuse limits of the core (spec section 13.6, which gives the reason for each
/// default); 0 disables a count limit. The defaults are the core's [`Limits::default`].
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Connections open at once, in total [default: what the open-file limit allows,
    /// less a reserve for refusals; a higher value is lowered to that, with a warning].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Connections open at once from one source (an IPv4 address, an IPv6 /64).
    #[arg(long, default_value_t = Limits::default().max_connections_per_source)]
    pub max_connections_per_source: usize,
    /// New connections accepted per second, in total (reconnect storms).
    #[arg(long, default_value_t = Limits::default().max_accepts_per_second)]
    pub max_accepts_per_second: u32,
    /// New connections accepted per second from one source.
    #[arg(long, default_value_t = Limits::default().max_accepts_per_second_per_source)]
    pub max_accepts_per_second_per_source: u32,
    /// Complete frames per second taken from one connection; beyond, the server stops
    /// reading from it until the second is over.
    #[arg(long, default_value_t = Limits::default().max_frames_per_second)]
    pub max_frames_per_second: u32,
    /// Failed logins per account within the failure window before it is throttled.
    #[arg(long, default_value_t = Limits::default().max_login_failures_per_account)]
    pub max_login_failures_per_account: u32,
    /// Failed logins per source within the failure window.
    #[arg(long, default_value_t = Limits::default().max_login_failures_per_source)]
    pub max_login_failures_per_source: u32,
    /// The window failed logins are counted in, and how long a throttle lasts.
    #[arg(long, default_value_t = millis(Limits::default().login_failure_window))]
    pub login_failure_window_ms: u64,
    /// Largest capability document (canonical JSON bytes).
    #[arg(long, default_value_t = Limits::default().max_caps_bytes)]
    pub max_caps_bytes: usize,
    /// Capability changes (update_caps) one session may make within the window; more
    /// are answered caps_throttled.
    #[arg(long, default_value_t = Limits::default().max_caps_updates)]
    pub max_caps_updates: u32,
    /// The window capability changes are counted in.
    #[arg(long, default_value_t = millis(Limits::default().caps_update_window))]
    pub caps_update_window_ms: u64,
    /// Credential checks from one source queued or running at once; more logins from
    /// it are answered rate_limited.
    #[arg(long, default_value_t = Limits::default().max_auth_checks_per_source)]
    pub max_auth_checks_per_source: usize,
    /// Credential checks running at once; more wait, taken one source at a time in
    /// turn [default: twice the number of CPUs].
    #[arg(long)]
    pub max_auth_checks_running: Option<usize>,
    /// Contact-list changes of one connection that may wait for the store at once;
    /// beyond, the server stops reading from that connection until one is stored.
    #[arg(long, default_value_t = Limits::default().max_unstored_changes)]
    pub max_unstored_changes: usize,
}

impl LimitArgs {
    /// The core's limits; `parallelism` is the number of CPUs, the default for the
    /// credential checks running at once is twice that.
    fn limits(&self, parallelism: usize) -> Limits {
        {
            let mut limits = Limits::default();
            limits.max_connections = self.max_connections.unwrap_or(0);
            limits.max_connections_per_source = self.max_connections_per_source;
            limits.max_accepts_per_second = self.max_accepts_per_second;
            limits.max_accepts_per_second_per_source = self.max_accepts_per_second_per_source;
            limits.max_frames_per_second = self.max_frames_per_second;
            limits.max_login_failures_per_account = self.max_login_failures_per_account;
            limits.max_login_failures_per_source = self.max_login_failures_per_source;
            limits.login_failure_window = Duration::from_millis(self.login_failure_window_ms);
            limits.max_caps_bytes = self.max_caps_bytes;
            limits.max_caps_updates = self.max_caps_updates;
            limits.caps_update_window = Duration::from_millis(self.caps_update_window_ms);
            limits.max_unstored_changes = self.max_unstored_changes;
            limits.max_auth_checks_per_source = self.max_auth_checks_per_source;
            limits.max_auth_checks_running = self
                .max_auth_checks_running
                .unwrap_or(2 * parallelism.max(1));
            limits
        }
    }
}

/// Resumable sessions (spec section 9.9): how long a dropped session stays resumable
/// and how much of what it missed the server keeps for it.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// How long a session whose connection dropped stays resumable (and online for
    /// its contacts), in milliseconds; 0 disables resumption (a drop ends the session
    /// at once).
    #[arg(long, default_value_t = 60_000)]
    pub resume_grace_ms: u64,
    /// Table frames kept per detached session for a resume; a client that missed more
    /// gets a full snapshot.
    #[arg(long, default_value_t = 32)]
    pub resume_log_frames: usize,
    /// Table frames kept per attached session (those possibly in flight when its
    /// connection dies; at most --resume-log-frames).
    #[arg(long, default_value_t = 8)]
    pub resume_tail_frames: usize,
}

impl ResumeArgs {
    /// The core's settings, with a secret for the resume tokens drawn from the
    /// operating system's random source (once per process).
    fn config(&self) -> Result<ResumeConfig> {
        let mut secret = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut secret)
            .map_err(|e| anyhow::anyhow!("cannot read the OS random source: {e}"))?;
        Ok({
            let mut resume = ResumeConfig::default();
            resume.grace = Duration::from_millis(self.resume_grace_ms);
            resume.log_frames = self.resume_log_frames;
            resume.tail_frames = self.resume_tail_frames;
            resume.secret = ResumeSecret(secret);
            resume
        })
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let tls = args.tls.load().context("cannot set up TLS")?;
    // The server keeps the core's frame limit; a WebSocket message holds one frame.
    let max_frame = ServerConfig::default()
        .max_frame
        .max(precall_protocol::codec::MIN_MAX_FRAME);
    let ws = args
        .ws
        .load(tls.is_some(), max_frame)
        .context("cannot set up the WebSocket port")?;
    let db = args.db.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<(Store, i64)> {
        let store = Store::open(&db)?;
        let last = store.last_roster_event()?;
        Ok((store, last))
    })
    .await?;
    let (store, roster_seen) =
        opened.with_context(|| format!("cannot open database {}", args.db))?;
    let cost = args.cost.cost();
    let dummy = tokio::task::spawn_blocking(move || {
        hash_password(&Password::new("precall unknown user")?, cost).map_err(anyhow::Error::from)
    })
    .await??;

    // Connections beyond what the process can open would wait unanswered in the listen
    // queue: the cap follows the descriptors available, less a reserve for refusals.
    let nofile = fds::raise_nofile_limit();
    let flag = args.limits.max_connections;
    let max_connections = fds::connection_cap(flag.unwrap_or(0), nofile);
    match flag {
        Some(n) if n == 0 || max_connections < n => tracing::warn!(
            max_connections = n,
            open_files = nofile,
            serving_at_most = max_connections,
            "--max-connections exceeds what the open-file limit allows; the rest are answered too_many_connections"
        ),
        _ => tracing::info!(
            open_files = nofile,
            max_connections,
            "connection cap (beyond it: too_many_connections)"
        ),
    }
    // A cluster node joins the registry (takes its lease) before it serves anyone.
    let (inputs_tx, inputs) = mpsc::channel(INPUT_QUEUE);
    let node = args.cluster.node()?;
    let cluster = match node {
        Some(node) => {
            Some(Cluster::start(&args.cluster, node, inputs_tx.clone(), Input::Registry).await?)
        }
        None => None,
    };
    let listener = listen(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    if tls.is_none() {
        // Before the `listening on` line, so that whoever waits for it sees the warning.
        tls::warn_if_exposed(local);
    }
    let ws = match ws {
        None => None,
        Some((addr, settings)) => {
            let listener = listen(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--ws-listen)"))?;
            if tls.is_none() {
                tls::warn_if_exposed(listener.local_addr()?);
            }
            Some((listener, Arc::new(settings)))
        }
    };
    {
        // `listening on` first, then `ws listening on`: whoever waits reads both.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        if let Some((listener, _)) = &ws {
            writeln!(out, "ws listening on {}", listener.local_addr()?)?;
        }
        out.flush()?;
    }
    if let Some((listener, settings)) = &ws {
        tracing::info!(
            local = %listener.local_addr()?,
            path = ws::PATH,
            subprotocol = ws::SUBPROTOCOL,
            origins = ?settings.origins(),
            web_root = ?settings.web_root(),
            "WebSocket listening"
        );
    }
    tracing::info!(
        %local,
        db = %args.db,
        tls = tls.is_some(),
        resume_grace_ms = args.resume.resume_grace_ms,
        "listening"
    );

    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    let origin = node_id();
    let worker = Worker::start(store, origin, inputs_tx.clone(), dummy, parallelism)
        .context("cannot start the store thread")?;
    let config = {
        let mut config = ServerConfig::default();
        config.idle_timeout = Duration::from_millis(args.idle_timeout_ms);
        config.login_timeout = Duration::from_millis(args.login_timeout_ms);
        config.ring_timeout = Duration::from_millis(args.ring_timeout_ms);
        config.max_sessions_per_user = usize::try_from(args.max_sessions_per_user).unwrap_or(8);
        config.limits = {
            let mut limits = args.limits.limits(parallelism);
            limits.max_connections = max_connections;
            limits
        };
        config.resume = args.resume.config()?;
        config.node = node;
        config
    };
    let (ws_listener, ws) = match ws {
        Some((listener, settings)) => (Some(listener), Some(settings)),
        None => (None, None),
    };
    let mut shell = Shell {
        server: Server::new(config),
        epoch: Epoch::new(std::time::Instant::now()),
        conns: HashMap::new(),
        next_conn: 1,
        queue_frames: args.queue_frames as usize,
        coalesce: Coalesce::new(Duration::from_millis(args.coalesce_ms)),
        inputs_tx,
        worker,
        tasks: JoinSet::new(),
        roster_seen,
        roster_polling: false,
        node: origin,
        own_changes: OwnChanges::default(),
        accept_failures: AcceptFailures::new(),
        storing: 0,
        paused: HashSet::new(),
        tls,
        ws,
        cluster,
        fenced: None,
    };
    let result = shell
        .run(
            listener,
            ws_listener,
            inputs,
            Duration::from_millis(args.admin_poll_ms),
        )
        .await;
    let Shell {
        worker, inputs_tx, ..
    } = shell;
    drop(inputs_tx);
    // Pending contact changes are written before the process exits.
    tokio::task::spawn_blocking(move || worker.finish()).await?;
    tracing::info!("stopped");
    result
}

/// The task and link of one open connection.
struct ConnTasks {
    /// The outbound queue and the read gate (given back after each chunk is handled).
    link: Arc<Link>,
    /// The connection's task (reader and writer).
    task: AbortHandle,
    peer: SocketAddr,
}

struct Shell {
    server: Server,
    /// The core's clock: milliseconds since the server started.
    epoch: Epoch,
    conns: HashMap<ConnId, ConnTasks>,
    next_conn: u64,
    queue_frames: usize,
    /// How connections coalesce pushes (`--coalesce-ms`).
    coalesce: Coalesce,
    inputs_tx: mpsc::Sender<Input>,
    worker: Worker,
    /// Every connection's task.
    tasks: JoinSet<()>,
    roster_seen: i64,
    roster_polling: bool,
    /// This node's tag on the contact changes it logs (random per process).
    node: i64,
    /// This node's logged changes not yet read back from the log.
    own_changes: OwnChanges,
    /// Failed `accept`s, logged at most once a second.
    accept_failures: AcceptFailures,
    /// Contact-list changes sent to the store thread and not yet reported back.
    storing: usize,
    /// Connections whose reader waits because the core does not take their input now.
    paused: HashSet<ConnId>,
    /// TLS set-up; `None`: plain TCP.
    tls: Option<Tls>,
    /// The WebSocket port's settings, with `--ws-listen`.
    ws: Option<Arc<ws::Settings>>,
    /// The cluster's registry, with `--nats`.
    cluster: Option<Cluster>,
    /// Why this node stopped serving: it lost its lease (fencing).
    fenced: Option<String>,
}

/// Which listener accepted a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// The protocol's own framing over TCP (or TLS).
    Tcp,
    /// HTTP: the WebSocket binding and static files.
    Ws,
}

/// Accepts on `listener`, or never without one.
async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl Shell {
    fn now(&self) -> Time {
        self.epoch.time(std::time::Instant::now())
    }

    async fn run(
        &mut self,
        listener: TcpListener,
        ws_listener: Option<TcpListener>,
        mut inputs: mpsc::Receiver<Input>,
        admin_poll: Duration,
    ) -> Result<()> {
        let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let mut poll = tokio::time::interval(admin_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut released = None;
            let deadline = self
                .server
                .poll_timeout()
                .map(|t| Instant::from_std(self.epoch.instant(t)));
            tokio::select! {
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => self.accept(socket, peer, Port::Tcp),
                    Err(e) => {
                        // Typically out of file descriptors: back off a little.
                        self.accept_failures.failed(&e);
                        sleep(Duration::from_millis(10)).await;
                    }
                },
                accepted = accept_on(ws_listener.as_ref()) => match accepted {
                    Ok((socket, peer)) => self.accept(socket, peer, Port::Ws),
                    Err(e) => {
                        self.accept_failures.failed(&e);
                        sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(input) = inputs.recv() => released = self.input(input),
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let now = self.now();
                    self.server.handle_timeout(now);
                    // A frame-rate pause may be over: those connections read on.
                    self.drain();
                    self.release_paused();
                }
                _ = poll.tick() => self.poll_roster(),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
            // What the core emits for the connection whose chunk it just handled answers
            // that connection's requests: written at once, not coalesced.
            self.drain_answering(released);
            // The chunk's answers are queued now: its reader may read on, unless the core
            // paused the connection's input.
            if let Some(id) = released {
                self.release(id);
            }
            if let Some(why) = &self.fenced {
                // The other nodes are deleting this node's sessions: its clients must
                // go to a node that holds a lease.
                tracing::error!(why, "lost the cluster lease: closing every connection");
                break;
            }
        }
        tracing::info!("shutting down");
        drop(listener);
        drop(ws_listener);
        // Contact changes still being committed are acknowledged before the end
        // (bounded, in case the store is stuck).
        let _ = tokio::time::timeout(LINGER, async {
            while self.storing > 0 {
                match inputs.recv().await {
                    Some(Input::Stored(outcomes, logged)) => self.stored(outcomes, logged),
                    Some(_) => {}
                    None => break,
                }
            }
        })
        .await;
        self.drain();
        let now = self.now();
        self.server.shutdown(now);
        self.drain();
        // Let the writers flush the final errors; the linger bounds slow peers.
        let tasks = &mut self.tasks;
        let _ = tokio::time::timeout(LINGER, async { while tasks.join_next().await.is_some() {} })
            .await;
        match self.fenced.take() {
            Some(why) => Err(anyhow::anyhow!("fenced: {why}")),
            None => Ok(()),
        }
    }

    fn accept(&mut self, socket: TcpStream, peer: SocketAddr, port: Port) {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let now = self.now();
        // The core counts connections and failed logins by the peer's address.
        if let Err(e) = self.server.connect_from(id, Some(peer.ip()), now) {
            tracing::error!(error = %e, "connection refused by the core");
            return;
        }
        let link = Link::new(self.queue_frames);
        let wiring = Wiring {
            conn: id,
            link: link.clone(),
            inputs: self.inputs_tx.clone(),
            headroom: conn::headroom(
                self.queue_frames,
                self.server.config().max_sessions_per_user,
            ),
            coalesce: self.coalesce,
        };
        let ws = self.ws.as_ref().filter(|_| port == Port::Ws);
        // One task per connection: the TLS handshake, on the WebSocket port the HTTP
        // request and the WebSocket handshake, then its reader and writer.
        let task = match (ws, &self.tls) {
            (Some(settings), tls) => {
                // The core forgets a connection it refuses at once.
                let refused = !self.server.accepts_input(id);
                self.tasks.spawn(ws::run(
                    wiring,
                    refused,
                    socket,
                    tls.clone(),
                    settings.clone(),
                ))
            }
            (None, None) => self.tasks.spawn(conn::run_tcp(wiring, socket)),
            (None, Some(tls)) => self.tasks.spawn(conn::run_tls(wiring, socket, tls.clone())),
        };
        tracing::debug!(conn = %id, %peer, ?port, "connection opened");
        self.conns.insert(id, ConnTasks { link, task, peer });
    }

    /// Handles one input; returns the connection whose data chunk it handled.
    fn input(&mut self, input: Input) -> Option<ConnId> {
        let now = self.now();
        match input {
            Input::Data(id, data) => {
                if self.conns.contains_key(&id) {
                    self.server.receive(id, &data, now);
                    return Some(id);
                }
            }
            Input::Closed(id, error) => {
                if let Some(tasks) = self.conns.remove(&id) {
                    match error {
                        Some(e) => {
                            tracing::debug!(conn = %id, peer = %tasks.peer, error = %e, "read failed")
                        }
                        None => tracing::debug!(conn = %id, peer = %tasks.peer, "peer closed"),
                    }
                    self.server.connection_closed(id, now);
                    retire(tasks);
                }
            }
            Input::Verdict(ticket, verdict) => {
                // A check cancelled after it ran: forget the cancellation.
                crate::worker::take(&self.worker.cancelled, ticket);
                if let Err(e) = self.server.complete_auth(ticket, verdict, now) {
                    // The connection went away during the check.
                    tracing::debug!(error = %e, "verdict discarded");
                }
            }
            Input::Stored(outcomes, logged) => self.stored(outcomes, logged),
            Input::Registry(report) => {
                if let Some(why) = cluster::apply(&mut self.server, report, now) {
                    self.fenced = Some(why);
                }
            }
            Input::Roster(result) => {
                self.roster_polling = false;
                match result {
                    Ok((events, last)) => {
                        self.roster_seen = last;
                        for ev in events {
                            if self.own_changes.should_apply(&ev, self.node) {
                                self.apply_roster_event(ev, now);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read logged contact changes"),
                }
            }
        }
        None
    }

    fn apply_roster_event(&mut self, ev: RosterEvent, now: Time) {
        let RosterEvent {
            id,
            user,
            contact,
            added,
            origin,
        } = ev;
        let by = if origin.is_none() {
            "administrator"
        } else {
            "another node"
        };
        match self.server.change_roster(&user, &contact, added, now) {
            Ok(()) => tracing::info!(id, %user, %contact, added, by, "logged contact change"),
            Err(ServerError::RosterFull(_)) => tracing::warn!(
                id, %user, %contact,
                "logged contact change refused: contact list full"
            ),
            Err(e) => tracing::warn!(id, error = %e, "logged contact change failed"),
        }
    }

    fn poll_roster(&mut self) {
        if !self.roster_polling {
            self.roster_polling = true;
            self.worker.submit(Job::PollRoster {
                after: self.roster_seen,
            });
        }
    }

    /// Carries out everything the core asked for.
    fn drain(&mut self) {
        self.drain_answering(None);
    }

    /// Carries out everything the core asked for; the frames for `answering` (the
    /// connection whose chunk the core just handled) are answers, written at once.
    fn drain_answering(&mut self, answering: Option<ConnId>) {
        while let Some(event) = self.server.poll_event() {
            self.handle(event, answering);
        }
    }

    /// Lets a connection's reader read its next chunk if the core takes its input now;
    /// otherwise remembers to, once it does.
    fn release(&mut self, id: ConnId) {
        let Some(tasks) = self.conns.get(&id) else {
            self.paused.remove(&id);
            return;
        };
        if self.server.accepts_input(id) {
            self.paused.remove(&id);
            tasks.link.release();
        } else {
            self.paused.insert(id);
        }
    }

    /// A batch of contact-list changes is durable (or failed): the core applies and
    /// acknowledges them, and the connections they paused read on.
    fn stored(
        &mut self,
        outcomes: Vec<(StoreTicket, StoreOutcome)>,
        logged: Vec<(UserId, UserId, i64)>,
    ) {
        for (user, contact, id) in logged {
            self.own_changes.logged(user, contact, id);
        }
        let now = self.now();
        self.storing = self.storing.saturating_sub(outcomes.len());
        for (ticket, outcome) in outcomes {
            if let Err(e) = self.server.complete_store(ticket, outcome, now) {
                tracing::warn!(error = %e, "store outcome discarded");
            }
        }
        self.drain();
        self.release_paused();
    }

    /// Lets every paused connection whose input the core takes again read on.
    fn release_paused(&mut self) {
        let paused: Vec<ConnId> = self.paused.iter().copied().collect();
        for id in paused {
            self.release(id);
        }
    }

    /// Carries out one event of the core; frames for `answering` are answers.
    fn handle(&mut self, event: ServerEvent, answering: Option<ConnId>) {
        match event {
            ServerEvent::Transmit { conn, frame } => {
                let at_once = answering == Some(conn) || !shared(&frame);
                self.transmit(conn, frame, at_once);
            }
            ServerEvent::Close { conn } => {
                if let Some(tasks) = self.conns.remove(&conn) {
                    tracing::debug!(%conn, peer = %tasks.peer, "closing");
                    retire(tasks);
                }
            }
            ServerEvent::Authenticate(req) => {
                tracing::debug!(conn = %req.conn, user = %req.user, "checking credentials");
                self.worker.submit(Job::Auth(req));
            }
            ServerEvent::AuthCancelled(ticket) => {
                if let Ok(mut set) = self.worker.cancelled.lock() {
                    set.insert(ticket);
                }
            }
            ServerEvent::Store(req) => {
                self.storing += 1;
                self.worker.submit(Job::Store(req));
            }
            ServerEvent::SessionStarted { conn, endpoint } => {
                let peer = self.conns.get(&conn).map(|t| t.peer);
                tracing::info!(%conn, %endpoint, ?peer, "session started");
            }
            ServerEvent::SessionEnded { conn, endpoint } => {
                tracing::info!(%conn, %endpoint, "session ended");
            }
            ServerEvent::SessionDetached { conn, endpoint } => {
                tracing::info!(%conn, %endpoint, "session detached");
            }
            ServerEvent::SessionResumed {
                conn,
                endpoint,
                snapshot,
                frames,
            } => {
                let peer = self.conns.get(&conn).map(|t| t.peer);
                tracing::info!(%conn, %endpoint, ?peer, snapshot, frames, "session resumed");
            }
            ServerEvent::Publish(record) => {
                if let Some(c) = &self.cluster {
                    c.publish(&record);
                }
            }
            ServerEvent::Unpublish { session, .. } => {
                if let Some(c) = &self.cluster {
                    c.unpublish(session);
                }
            }
            ServerEvent::Relay { node, message } => {
                if let Some(c) = &self.cluster {
                    c.relay(node, &message);
                }
            }
            other => tracing::warn!(?other, "unhandled server event"),
        }
    }

    /// Queues a frame without ever waiting (`at_once`: written without the coalescing
    /// delay, see [`Link::push`]): a peer too slow to take its frames is dropped as if
    /// its connection had failed.
    fn transmit(&mut self, conn: ConnId, frame: Bytes, at_once: bool) {
        let Some(tasks) = self.conns.get(&conn) else {
            return;
        };
        let why = match tasks.link.push(frame, at_once) {
            Ok(()) => return,
            Err(refused) => refused.why(),
        };
        if let Some(tasks) = self.conns.remove(&conn) {
            tracing::warn!(%conn, peer = %tasks.peer, why, "dropping connection");
            tasks.task.abort();
        }
        let now = self.now();
        self.server.connection_closed(conn, now);
    }
}

/// Whether the core shares `frame` with other recipients or keeps it: a presence push
/// (the core encodes a table frame once, sends the same buffer to every watcher and
/// keeps it for resumes: [`ServerEvent::Transmit`]), which the connection may hold back
/// to coalesce. A frame made for one connection alone (an answer, call signalling, an
/// error) holds the only reference to its buffer and is written at once.
fn shared(frame: &Bytes) -> bool {
    !frame.is_unique()
}

/// A connection the core forgot: closing its link lets the writer flush and shut the
/// socket down; after [`LINGER`] its task is stopped whatever its state.
fn retire(tasks: ConnTasks) {
    let ConnTasks { link, task, .. } = tasks;
    link.close();
    tokio::spawn(async move {
        sleep(LINGER).await;
        task.abort();
    });
}

/// A random tag for this server process's logged contact changes (positive, so it never
/// reads as a small sequence number in a log dump).
fn node_id() -> i64 {
    i64::try_from(OsRng.next_u64() >> 1).unwrap_or(1)
}

/// This node's logged contact changes that the log has not yet been read up to.
///
/// A change this node stored is applied by its core when stored, so reading it back
/// from the log must not apply it again; and a change logged by someone else *before*
/// one of this node's own for the same user and contact (a smaller id) is already
/// superseded by it, so it is not applied either: every node then ends in the state of
/// the log's last change of each pair, whatever order it learns them in.
#[derive(Debug, Default)]
pub struct OwnChanges {
    /// The largest own log id of each `(user, contact)` not yet read back.
    latest: HashMap<(UserId, UserId), i64>,
}

impl OwnChanges {
    /// This node logged a change of `user`'s listing of `contact` with `id`.
    pub fn logged(&mut self, user: UserId, contact: UserId, id: i64) {
        let slot = self.latest.entry((user, contact)).or_insert(id);
        *slot = (*slot).max(id);
    }

    /// Whether the core must apply `ev`, read from the log in id order by node `node`.
    pub fn should_apply(&mut self, ev: &RosterEvent, node: i64) -> bool {
        let key = (ev.user.clone(), ev.contact.clone());
        if let Some(&own) = self.latest.get(&key) {
            if own == ev.id {
                self.latest.remove(&key);
            }
            if own >= ev.id {
                return false;
            }
        }
        ev.origin != Some(node)
    }

    /// Own changes not yet read back.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.latest.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use precall_protocol::sim::{sample_caps, Directory, Sim};
    use precall_protocol::{ClientEvent, LoginWith, UserId};

    use super::*;

    /// Message type -> (frames held back, frames written at once), of every frame the
    /// core emitted in [`which_frames_wait`].
    static SEEN: Mutex<BTreeMap<String, (usize, usize)>> = Mutex::new(BTreeMap::new());

    fn record(_: &Server, conn: ConnId, frame: Bytes) -> Vec<(ConnId, Bytes)> {
        let v: serde_json::Value = serde_json::from_slice(&frame[4..]).unwrap();
        let ty = v["type"].as_str().unwrap().to_owned();
        let mut seen = SEEN.lock().unwrap();
        let e = seen.entry(ty).or_default();
        if shared(&frame) {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
        vec![(conn, frame)]
    }

    /// The coalescing delay applies to presence pushes only: the core's table frames,
    /// which it shares among watchers. Answers and call signalling (the fast path's
    /// `call_incoming` and `call_accepted`) are never held back, so call set-up does not
    /// wait for the coalescing delay.
    #[test]
    fn which_frames_wait() {
        let u = |n: &str| UserId::new(n).unwrap();
        let mut d = Directory::default();
        for n in ["alice", "bob", "carol"] {
            d.add_user(&u(n), "pw");
        }
        d.befriend(&u("alice"), &u("bob"));
        d.befriend(&u("alice"), &u("carol"));
        let mut sim = Sim::new(d, 3, ServerConfig::default());
        sim.tamper = Some(record);
        let caps = || LoginWith::Capabilities(sample_caps(&["h264", "vp8"], 1280, 30));
        sim.login(0, &u("alice"), "pw", caps());
        sim.login(1, &u("bob"), "pw", caps());
        sim.login(2, &u("carol"), "pw", caps());
        sim.settle().unwrap();
        let now = sim.now;
        let bob = sim.endpoint(1).unwrap();
        sim.client_mut(0).place_call(&bob, now).unwrap();
        sim.settle().unwrap();
        let call = sim.terminals[1]
            .events
            .iter()
            .find_map(|e| match e {
                ClientEvent::IncomingCall { call, .. } => Some(*call),
                _ => None,
            })
            .expect("incoming call");
        sim.client_mut(1).answer(call, true, now).unwrap();
        sim.settle().unwrap();
        sim.client_mut(0).hangup(call, now).unwrap();
        sim.settle().unwrap();
        sim.client_mut(1)
            .update_caps(sample_caps(&["vp8"], 640, 15), now)
            .unwrap();
        sim.settle().unwrap();
        sim.client_mut(2).logout(now).unwrap();
        sim.settle().unwrap();
        let seen = SEEN.lock().unwrap().clone();
        let held: Vec<&str> = seen
            .iter()
            .filter(|(_, n)| n.0 > 0)
            .map(|(t, _)| t.as_str())
            .collect();
        assert_eq!(held, ["offline", "online"], "{seen:?}");
        let (online, offline) = (seen["online"], seen["offline"]);
        assert!(online.1 == 0 && offline.1 == 0, "{seen:?}");
        for at_once in [
            "login_ok",
            "synced",
            "call_ringing",
            "call_incoming",
            "call_accepted",
            "call_ended",
            "caps_ack",
            "logged_out",
        ] {
            assert!(
                seen.get(at_once).is_some_and(|n| n.1 > 0),
                "{at_once}: {seen:?}"
            );
        }
    }

    fn ev(id: i64, user: &str, contact: &str, added: bool, origin: Option<i64>) -> RosterEvent {
        RosterEvent {
            id,
            user: UserId::new(user).unwrap(),
            contact: UserId::new(contact).unwrap(),
            added,
            origin,
        }
    }

    /// A node applies the log's changes by others, not its own (applied when stored),
    /// nor another's that one of its own later change of the same pair supersedes.
    #[test]
    fn a_node_applies_each_logged_change_once_and_in_log_order() {
        const ME: i64 = 5;
        const OTHER: i64 = 9;
        let u = |s: &str| UserId::new(s).unwrap();
        let mut own = OwnChanges::default();
        // Administrator and other nodes' changes apply.
        assert!(own.should_apply(&ev(1, "ann", "bea", true, None), ME));
        assert!(own.should_apply(&ev(2, "ann", "bea", false, Some(OTHER)), ME));
        // Own changes, read back, do not (and are forgotten once read).
        own.logged(u("ann"), u("bea"), 3);
        assert_eq!(own.len(), 1);
        assert!(!own.should_apply(&ev(3, "ann", "bea", true, Some(ME)), ME));
        assert_eq!(own.len(), 0);
        // Another node removed the pair (id 4) before this node's add (id 5) of the
        // same pair committed: the log ends with the add, which this node already
        // applied; the older removal must not undo it here.
        own.logged(u("cy"), u("dee"), 5);
        assert!(!own.should_apply(&ev(4, "cy", "dee", false, Some(OTHER)), ME));
        // Other pairs are not held back meanwhile.
        assert!(own.should_apply(&ev(4, "ann", "dee", true, Some(OTHER)), ME));
        assert!(!own.should_apply(&ev(5, "cy", "dee", true, Some(ME)), ME));
        // A later change by the other node applies again.
        assert!(own.should_apply(&ev(6, "cy", "dee", false, Some(OTHER)), ME));
        // Two own changes of one pair: both skipped, the entry kept until the last.
        own.logged(u("ann"), u("bea"), 7);
        own.logged(u("ann"), u("bea"), 8);
        assert!(!own.should_apply(&ev(7, "ann", "bea", true, Some(ME)), ME));
        assert_eq!(own.len(), 1);
        assert!(!own.should_apply(&ev(8, "ann", "bea", false, Some(ME)), ME));
        assert_eq!(own.len(), 0);
    }
}
