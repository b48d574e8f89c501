//! A deterministic in-memory network: one [`Server`], several [`Client`]s, ordered
//! links, an in-memory credential store and terminal registry.
//!
//! This is a harness, not part of the protocol: it moves frames between the real state
//! machines exactly as a TCP embedder would, so the property tests, the claim tests and
//! the fuzz targets can drive whole scenarios and check the [`crate::invariant`]s. It
//! holds no protocol rule of its own: every decision comes from the server or a client.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::caps::{Capabilities, CpuClass};
use crate::client::{Client, ClientConfig, ClientEvent, Role};
use crate::codec::{decode_message, encode_payload, HEADER_LEN};
use crate::ids::{ConnId, Endpoint, NodeId, Password, TerminalId, UserId};
use crate::invariant::{self, InvariantViolation};
use crate::message::{ClientMessage, LoginWith, ServerMessage, WireMessage};
use crate::negotiate::negotiate_pair;
use crate::server::{
    AuthRequest, AuthVerdict, RelayMessage, Server, ServerConfig, ServerEvent, StoreOutcome,
    StoreRequest,
};
use crate::time::Time;

/// A capability set for tests and examples: the given codecs for both encode and
/// decode, a 16:9 screen and camera `width` pixels wide, a camera of `fps` frames per
/// second, a high CPU class and 8 Mbit/s each way.
///
/// # Panics
///
/// If a codec token is invalid, or `width` or `fps` is out of range: a test helper.
pub fn sample_caps(codecs: &[&str], width: u16, fps: u16) -> Capabilities {
    let height = width / 16 * 9;
    Capabilities::builder()
        .codecs(codecs.iter().copied())
        .screen(width, height)
        .camera(width, height, fps)
        .cpu(CpuClass::High)
        .bandwidth(8000, 8000)
        .build()
        .expect("sample capabilities are valid")
}

/// An account in the in-memory store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Account {
    /// The password.
    pub password: String,
    /// The stored contact list.
    pub contacts: BTreeSet<UserId>,
}

/// The in-memory credential store and terminal registry (a test double of the
/// reference server's SQLite store).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Directory {
    /// Accounts by user.
    pub accounts: BTreeMap<UserId, Account>,
    /// Registered terminals (C8): identifier → owner and capabilities.
    pub terminals: BTreeMap<TerminalId, (UserId, Capabilities)>,
}

impl Directory {
    /// Adds an account.
    pub fn add_user(&mut self, user: &UserId, password: &str) {
        self.accounts.insert(
            user.clone(),
            Account {
                password: password.to_owned(),
                contacts: BTreeSet::new(),
            },
        );
    }

    /// Makes `a` and `b` list each other.
    pub fn befriend(&mut self, a: &UserId, b: &UserId) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(acc) = self.accounts.get_mut(x) {
                acc.contacts.insert(y.clone());
            }
        }
    }

    /// Registers a terminal for a user.
    pub fn register(&mut self, id: &TerminalId, owner: &UserId, caps: Capabilities) {
        self.terminals.insert(id.clone(), (owner.clone(), caps));
    }

    /// The verdict the reference server's store would give.
    pub fn verdict(&self, req: &AuthRequest) -> AuthVerdict {
        match self.accounts.get(&req.user) {
            Some(acc) if acc.password == req.password.expose() => AuthVerdict::Accepted {
                contacts: acc.contacts.iter().cloned().collect(),
                registered: req.terminal.as_ref().and_then(|t| {
                    self.terminals
                        .get(t)
                        .filter(|(owner, _)| *owner == req.user)
                        .map(|(_, caps)| caps.clone())
                }),
            },
            _ => AuthVerdict::Rejected,
        }
    }
}

/// What travels on a server-to-client link.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Wire {
    Frame(Bytes),
    Close,
}

/// One terminal: a client and its link.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Terminal {
    /// The client state machine.
    pub client: Client,
    /// Its current connection, if connected.
    pub conn: Option<ConnId>,
    down: VecDeque<Wire>,
    /// Every event the client emitted, in order.
    pub events: Vec<ClientEvent>,
    /// Bytes of capabilities carried in call signalling this terminal sent or received.
    pub call_caps_bytes: usize,
}

/// A seeded fault: rewrites what the server transmits before it reaches the links.
/// Given the server (after it decided), the connection and the frame, returns the
/// (connection, frame) pairs actually delivered: an empty list drops the frame, extra
/// pairs forge or misdirect frames. Used to show that the invariant checks catch the
/// bugs they exist for; never part of a real server.
pub type Tamper = fn(&Server, ConnId, Bytes) -> Vec<(ConnId, Bytes)>;

/// The simulated world.
#[derive(Clone, Debug)]
pub struct Sim {
    /// The server.
    pub server: Server,
    /// The credential store.
    pub directory: Directory,
    /// The terminals, by index.
    pub terminals: Vec<Terminal>,
    /// The current time.
    pub now: Time,
    conns: BTreeMap<ConnId, usize>,
    next_conn: u64,
    /// Credential checks not yet answered (only when `hold_auth` is set).
    pub pending_auth: VecDeque<AuthRequest>,
    /// When set, credential checks wait in `pending_auth` until
    /// [`Sim::release_auth`]; otherwise they are answered at once.
    pub hold_auth: bool,
    /// Contact-list changes not yet stored (only when `hold_store` is set).
    pub pending_store: VecDeque<StoreRequest>,
    /// When set, contact-list changes wait in `pending_store` until
    /// [`Sim::release_store`]; otherwise they are stored at once.
    pub hold_store: bool,
    /// Frames the server sent, with the connection, for checkers.
    pub sent: Vec<(ConnId, Bytes)>,
    /// Invariant violations seen while moving events (reported by [`Sim::run`]).
    broken: Vec<InvariantViolation>,
    /// Connections the server may still write to: connected, not yet reported closed
    /// by the transport, not yet closed by the server (`INV-CONN-OPEN`).
    open: BTreeSet<ConnId>,
    /// A seeded fault on the server's transmissions, if any.
    pub tamper: Option<Tamper>,
    /// What a clustered server asked to put into or delete from the registry
    /// ([`ServerEvent::Publish`], [`ServerEvent::Unpublish`]), in order, not yet
    /// delivered to the other nodes ([`Cluster`]).
    pub published: VecDeque<ServerEvent>,
    /// Call messages a clustered server relays to other nodes
    /// ([`ServerEvent::Relay`]), in order, not yet delivered ([`Cluster`]).
    pub relayed: VecDeque<(NodeId, RelayMessage)>,
}

impl Sim {
    /// A world with `terminals` disconnected terminals and the given store.
    pub fn new(directory: Directory, terminals: usize, config: ServerConfig) -> Self {
        let client = Client::new(ClientConfig::default());
        Self {
            server: Server::new(config),
            directory,
            terminals: (0..terminals)
                .map(|_| Terminal {
                    client: client.clone(),
                    conn: None,
                    down: VecDeque::new(),
                    events: Vec::new(),
                    call_caps_bytes: 0,
                })
                .collect(),
            now: Time::ZERO,
            conns: BTreeMap::new(),
            next_conn: 1,
            pending_auth: VecDeque::new(),
            hold_auth: false,
            pending_store: VecDeque::new(),
            hold_store: false,
            sent: Vec::new(),
            broken: Vec::new(),
            open: BTreeSet::new(),
            tamper: None,
            published: VecDeque::new(),
            relayed: VecDeque::new(),
        }
    }

    /// Runs `f` on the server at the current time (a cluster input, say) and collects
    /// what it produced.
    pub fn with_server<R>(&mut self, f: impl FnOnce(&mut Server, Time) -> R) -> R {
        let r = f(&mut self.server, self.now);
        self.drain_server();
        r
    }

    /// Terminal `i`'s client.
    pub fn client(&self, i: usize) -> &Client {
        &self.terminals[i].client
    }

    /// Mutable access to terminal `i`'s client, to issue commands.
    pub fn client_mut(&mut self, i: usize) -> &mut Client {
        &mut self.terminals[i].client
    }

    /// Runs an application command on terminal `i`'s client and collects the events it
    /// caused at once, so that what is checked on them (`INV-CALL-AGREE` at the callee's
    /// establishment) is judged against the state they were decided in, not after
    /// later commands. (Commands issued through [`Sim::client_mut`] are collected at the
    /// next [`Sim::run`].)
    pub fn command<R>(&mut self, i: usize, f: impl FnOnce(&mut Client, Time) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.terminals[i].client, now);
        self.collect_client_events(i);
        r
    }

    /// Opens a connection for terminal `i` (closing any previous one).
    pub fn connect(&mut self, i: usize) -> ConnId {
        if self.terminals[i].conn.is_some() {
            self.drop_connection(i);
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.server
            .connect(conn, self.now)
            .expect("fresh connection id");
        self.open.insert(conn);
        self.conns.insert(conn, i);
        self.terminals[i].conn = Some(conn);
        self.drain_server();
        conn
    }

    /// Connects terminal `i` and logs in.
    ///
    /// # Panics
    ///
    /// If `password` is not a valid [`Password`]: a test helper.
    pub fn login(&mut self, i: usize, user: &UserId, password: &str, with: LoginWith) {
        if self.terminals[i].conn.is_none() {
            self.connect(i);
        }
        let now = self.now;
        let pw = Password::new(password).expect("test password");
        // A client already logged in refuses; the scenario generators rely on that.
        let _ = self.terminals[i].client.login(user.clone(), pw, with, now);
    }

    /// The connection of terminal `i` dies without a logout: both ends learn of it.
    pub fn drop_connection(&mut self, i: usize) {
        let now = self.now;
        let t = &mut self.terminals[i];
        if let Some(conn) = t.conn.take() {
            self.conns.remove(&conn);
            t.down.clear();
            t.client.connection_closed(now);
            self.server.connection_closed(conn, now);
            self.open.remove(&conn);
            self.drain_server();
        }
        self.collect_client_events(i);
    }

    /// Terminal `i` reconnects and resumes its detached session (spec "Resumable
    /// sessions"); refused by the client if it has none to resume.
    pub fn resume(&mut self, i: usize) -> Result<(), crate::client::ClientError> {
        if !self.terminals[i].client.can_resume() {
            return Err(crate::client::ClientError::NotDetached);
        }
        if self.terminals[i].conn.is_none() {
            self.connect(i);
        }
        self.command(i, |c, now| c.resume(now))
    }

    /// Writes raw bytes to the server on terminal `i`'s connection (hostile input).
    ///
    /// The bytes are handed over cut at the frame boundaries their length prefixes
    /// announce, so that the server's output for each message is collected (and judged
    /// against the server's state) before the next message is processed.
    pub fn inject(&mut self, i: usize, mut bytes: &[u8]) {
        let Some(conn) = self.terminals[i].conn else {
            return;
        };
        while !bytes.is_empty() {
            let announced = bytes
                .get(..HEADER_LEN)
                .and_then(|h| <[u8; HEADER_LEN]>::try_from(h).ok())
                .map_or(bytes.len(), |h| {
                    HEADER_LEN.saturating_add(u32::from_be_bytes(h) as usize)
                });
            let (piece, rest) = bytes.split_at(announced.min(bytes.len()));
            self.server.receive(conn, piece, self.now);
            self.drain_server();
            bytes = rest;
        }
    }

    /// Advances time and fires every timer due.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
        self.server.handle_timeout(self.now);
        self.drain_server();
        for t in &mut self.terminals {
            t.client.handle_timeout(self.now);
        }
    }

    /// Answers the oldest held credential check. Returns whether there was one.
    pub fn release_auth(&mut self) -> bool {
        let Some(req) = self.pending_auth.pop_front() else {
            return false;
        };
        let verdict = self.directory.verdict(&req);
        // The connection may have gone away meanwhile; that is not an error here.
        let _ = self.server.complete_auth(req.ticket, verdict, self.now);
        self.drain_server();
        true
    }

    /// Stores the oldest held contact-list change (or fails it) and reports it to the
    /// server. Returns whether there was one.
    pub fn release_store(&mut self, outcome: StoreOutcome) -> bool {
        let Some(req) = self.pending_store.pop_front() else {
            return false;
        };
        self.store(req, outcome);
        self.drain_server();
        true
    }

    /// Writes a change to the directory (unless it fails) and reports it.
    fn store(&mut self, req: StoreRequest, outcome: StoreOutcome) {
        if outcome == StoreOutcome::Stored {
            if let Some(acc) = self.directory.accounts.get_mut(&req.user) {
                if req.added {
                    acc.contacts.insert(req.contact.clone());
                } else {
                    acc.contacts.remove(&req.contact);
                }
            }
        }
        let _ = self.server.complete_store(req.ticket, outcome, self.now);
    }

    /// Collects everything the server produced, right after each call into it, so that
    /// each transmitted frame is judged against the state the server decided it in.
    /// Credential checks are answered at once (each answer drained in turn) unless
    /// `hold_auth` is set.
    fn drain_server(&mut self) {
        // One frame per `receive`: a credential check is the last event of its step,
        // so answering it here, before polling on, judges every frame in order.
        while let Some(ev) = self.server.poll_event() {
            match ev {
                ServerEvent::Authenticate(req) if self.hold_auth => {
                    self.pending_auth.push_back(req)
                }
                ServerEvent::Authenticate(req) => {
                    let verdict = self.directory.verdict(&req);
                    let _ = self.server.complete_auth(req.ticket, verdict, self.now);
                }
                ServerEvent::Store(req) if self.hold_store => self.pending_store.push_back(req),
                ServerEvent::Store(req) => self.store(req, StoreOutcome::Stored),
                ev => self.server_event(ev),
            }
        }
    }

    /// Moves frames until nothing is in flight (held credential checks stay held).
    /// Returns the first invariant of the "always" kind that broke along the way.
    pub fn run(&mut self) -> Result<(), InvariantViolation> {
        // Anything a test made the server do directly (e.g. a roster change).
        self.drain_server();
        loop {
            let mut moved = false;
            for i in 0..self.terminals.len() {
                // Events of commands issued since (e.g. `answer`'s `CallEstablished`),
                // checked now, against the capabilities they were decided with.
                self.collect_client_events(i);
                while let Some(frame) = self.terminals[i].client.poll_transmit() {
                    moved = true;
                    self.terminals[i].call_caps_bytes += call_caps_len::<ClientMessage>(&frame);
                    if let Some(conn) = self.terminals[i].conn {
                        self.server.receive(conn, &frame, self.now);
                        self.drain_server();
                    }
                }
            }
            for i in 0..self.terminals.len() {
                while let Some(w) = self.terminals[i].down.pop_front() {
                    moved = true;
                    let now = self.now;
                    let t = &mut self.terminals[i];
                    match w {
                        Wire::Frame(f) => {
                            t.call_caps_bytes += call_caps_len::<ServerMessage>(&f);
                            if t.client.receive(&f, now).is_err() {
                                // The client's embedder closes the transport.
                                self.drop_connection(i);
                            }
                        }
                        Wire::Close => {
                            if let Some(c) = t.conn.take() {
                                self.conns.remove(&c);
                            }
                            t.client.connection_closed(now);
                        }
                    }
                    self.collect_client_events(i);
                }
            }
            invariant::always(self.terminals.iter().map(|t| &t.client))?;
            if let Some(v) = self.broken.first() {
                return Err(v.clone());
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// The invariants that hold at every moment, without moving anything: the first
    /// violation the server's output caused so far (`INV-CONN-OPEN`, `INV-VISIBILITY`,
    /// `INV-CALL-AGREE` at establishment), then the client-side checks.
    pub fn check(&self) -> Result<(), InvariantViolation> {
        if let Some(v) = self.broken.first() {
            return Err(v.clone());
        }
        invariant::always(self.terminals.iter().map(|t| &t.client))
    }

    /// An administrator changes `user`'s stored contact list and tells the server
    /// ([`Server::change_roster`]). A refused addition (the list is full) is not stored.
    pub fn change_roster(&mut self, user: &UserId, contact: &UserId, added: bool) {
        // The reference server's `admin contact add` refuses a user listing itself.
        if user == contact
            || self
                .server
                .change_roster(user, contact, added, self.now)
                .is_err()
        {
            return;
        }
        if let Some(acc) = self.directory.accounts.get_mut(user) {
            if added {
                acc.contacts.insert(contact.clone());
            } else {
                acc.contacts.remove(contact);
            }
        }
        self.drain_server();
    }

    /// [`Sim::run`], then `INV-ONLINE-EXACT`.
    pub fn settle(&mut self) -> Result<(), InvariantViolation> {
        self.run()?;
        invariant::online_exact(&self.server, self.terminals.iter().map(|t| &t.client))
    }

    fn server_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::Transmit { conn, frame } => {
                let delivered = match self.tamper {
                    Some(t) => t(&self.server, conn, frame),
                    None => vec![(conn, frame)],
                };
                for (conn, frame) in delivered {
                    if !self.open.contains(&conn) {
                        self.broken.push(InvariantViolation {
                            id: "INV-CONN-OPEN",
                            detail: format!("frame for closed connection {conn}"),
                        });
                    }
                    if let Err(v) = invariant::frame_visible(&self.server, conn, &frame) {
                        self.broken.push(v);
                    }
                    self.sent.push((conn, frame.clone()));
                    if let Some(&i) = self.conns.get(&conn) {
                        self.terminals[i].down.push_back(Wire::Frame(frame));
                    }
                }
            }
            ServerEvent::Close { conn } => {
                if !self.open.remove(&conn) {
                    self.broken.push(InvariantViolation {
                        id: "INV-CONN-OPEN",
                        detail: format!("close of closed connection {conn}"),
                    });
                }
                if let Some(&i) = self.conns.get(&conn) {
                    self.terminals[i].down.push_back(Wire::Close);
                }
            }
            ServerEvent::Authenticate(req) => self.pending_auth.push_back(req),
            ev @ (ServerEvent::Publish(_) | ServerEvent::Unpublish { .. }) => {
                self.published.push_back(ev)
            }
            ServerEvent::Relay { node, message } => self.relayed.push_back((node, message)),
            _ => {}
        }
    }

    fn collect_client_events(&mut self, i: usize) {
        while let Some(ev) = self.terminals[i].client.poll_event() {
            if let ClientEvent::CallEstablished { call, params, .. } = &ev {
                self.check_establishment(i, *call, params);
            }
            self.terminals[i].events.push(ev);
        }
    }

    /// `INV-CALL-AGREE`, second half: when the callee establishes a call, its
    /// parameters are those negotiated from both terminals' current capabilities.
    fn check_establishment(
        &mut self,
        i: usize,
        call: crate::ids::CallId,
        params: &crate::caps::CallParams,
    ) {
        let t = &self.terminals[i].client;
        let Some((_, c)) = t.calls().find(|(id, _)| **id == call) else {
            return;
        };
        if c.role != Role::Callee {
            return;
        }
        let Some(own) = t.capabilities() else {
            return;
        };
        let peer = self
            .terminals
            .iter()
            .find(|o| o.client.endpoint().as_ref() == Some(&c.peer));
        if let Some(caller_caps) = peer.and_then(|p| p.client.capabilities()) {
            if negotiate_pair(own, caller_caps) != *params {
                self.broken.push(InvariantViolation {
                    id: "INV-CALL-AGREE",
                    detail: format!(
                        "call {call}: parameters not negotiated from current capabilities"
                    ),
                });
            }
        }
    }

    /// The endpoint of terminal `i`, if logged in.
    pub fn endpoint(&self, i: usize) -> Option<Endpoint> {
        self.terminals[i].client.endpoint()
    }

    /// Every [`ClientEvent::Violation`] any client reported: server messages a client
    /// refused. A correct server causes none.
    pub fn recorded_violations(&self) -> Vec<(usize, &ClientEvent)> {
        self.terminals
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.events
                    .iter()
                    .filter(|e| matches!(e, ClientEvent::Violation(_)))
                    .map(move |e| (i, e))
            })
            .collect()
    }
}

/// Bytes of capabilities carried in a frame's call signalling.
fn call_caps_len<M: WireMessage>(frame: &[u8]) -> usize {
    frame
        .get(HEADER_LEN..)
        .and_then(|p| decode_message::<M>(p).ok())
        .and_then(|m| m.call_capabilities().map(|c| encode_payload(c).len()))
        .unwrap_or(0)
}

/// Several simulated nodes of one cluster (spec "Clustering"): node `i` is a [`Sim`]
/// whose server has node id `i + 1`, and the registry hands every record a node
/// publishes or deletes to every other node, in the order published. Each node has a
/// copy of the credential store (a roster change stored on one is not seen by another
/// node's logins). Like [`Sim`], it holds no protocol rule of its own.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Sim>,
}

impl Cluster {
    /// A cluster of `terminals.len()` nodes, node `i` with `terminals[i]` terminals.
    pub fn new(directory: &Directory, terminals: &[usize], config: &ServerConfig) -> Self {
        let nodes = terminals
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut config = config.clone();
                config.node = Some(Self::node_id(i));
                Sim::new(directory.clone(), *n, config)
            })
            .collect();
        Self { nodes }
    }

    /// The node id of node `i`.
    ///
    /// # Panics
    ///
    /// Beyond 65,534 nodes: a test helper.
    pub fn node_id(i: usize) -> NodeId {
        NodeId(u16::try_from(i + 1).expect("a test cluster's size"))
    }

    /// The servers, in node order.
    pub fn servers(&self) -> Vec<&Server> {
        self.nodes.iter().map(|n| &n.server).collect()
    }

    /// Moves frames on every node, and records and relayed call messages between
    /// nodes, until nothing is in flight. Returns the first invariant of the "always" kind that broke, or a
    /// remote input the receiving node refused (as `CLUSTER-INPUT`).
    pub fn sync(&mut self) -> Result<(), InvariantViolation> {
        loop {
            for n in &mut self.nodes {
                n.run()?;
            }
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some((to, message)) = self.nodes[i].relayed.pop_front() {
                    moved = true;
                    let from = Self::node_id(i);
                    let Some(j) = (0..self.nodes.len()).find(|j| Self::node_id(*j) == to) else {
                        continue;
                    };
                    let r =
                        self.nodes[j].with_server(|s, now| s.relay_received(from, message, now));
                    r.map_err(|e| InvariantViolation {
                        id: "CLUSTER-INPUT",
                        detail: e.to_string(),
                    })?;
                }
                while let Some(ev) = self.nodes[i].published.pop_front() {
                    moved = true;
                    for j in (0..self.nodes.len()).filter(|j| *j != i) {
                        self.deliver(j, &ev)?;
                    }
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// Delivers one registry event to node `j`.
    pub fn deliver(&mut self, j: usize, ev: &ServerEvent) -> Result<(), InvariantViolation> {
        let r = self.nodes[j].with_server(|s, now| match ev {
            ServerEvent::Publish(record) => s.remote_online(record.clone(), now),
            ServerEvent::Unpublish { session, .. } => s.remote_offline(*session, now),
            _ => Ok(()),
        });
        r.map_err(|e| InvariantViolation {
            id: "CLUSTER-INPUT",
            detail: e.to_string(),
        })
    }

    /// [`Cluster::sync`], then `INV-ONLINE-EXACT` across the nodes.
    pub fn settle(&mut self) -> Result<(), InvariantViolation> {
        self.sync()?;
        invariant::online_exact_across(
            &self.servers(),
            self.nodes
                .iter()
                .flat_map(|n| n.terminals.iter().map(|t| &t.client)),
        )
    }

    /// Node `i` crashes: its clients lose their connections, it restarts empty, and
    /// once its lease expires the registry tells every other node it is gone
    /// ([`Server::remote_node_gone`]); records it published and nobody delivered yet
    /// are lost with it.
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let now = node.now;
        for t in &mut node.terminals {
            if t.conn.take().is_some() {
                t.down.clear();
                t.client.connection_closed(now);
            }
        }
        node.conns.clear();
        node.open.clear();
        node.published.clear();
        node.relayed.clear();
        node.server = Server::new(node.server.config().clone());
        for j in 0..node.terminals.len() {
            node.collect_client_events(j);
        }
        let id = Self::node_id(i);
        for j in (0..self.nodes.len()).filter(|j| *j != i) {
            let _ = self.nodes[j].with_server(|s, now| s.remote_node_gone(id, now));
        }
    }
}
