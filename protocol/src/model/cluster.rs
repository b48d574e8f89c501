//! A stateright model of a cluster (spec "Clustering"): two nodes, each the real
//! [`Server`] with a node id, a registry actor that hands what a node publishes to the
//! other node in order, and real [`Client`]s on both nodes.
//!
//! Actors 0 and 1 are the nodes, actor 2 the registry, actors 3… the terminals (each
//! connected to its home node). A node sends its `Publish`/`Unpublish` outputs to the
//! registry ([`Update`]); the registry forwards them to the other node over an ordered
//! link, so the other node applies each key's changes in order, interleaved with
//! everything else. A node may crash ([`Choice::Crash`], when configured): its clients'
//! connections die, it restarts empty, and its lease expires at the registry, which
//! tells the survivor ([`Update::NodeGone`], [`Server::remote_node_gone`]).
//!
//! Call messages a node relays ([`ServerEvent::Relay`]) go straight to the other node on
//! their own ordered link, so an offer may overtake the caller's record.
//!
//! The properties are the single-node model's, evaluated with the same
//! [`crate::invariant`] checks across both nodes: `INV-ONLINE-EXACT` at cluster
//! quiescence ([`invariant::online_exact_across`]), `INV-VISIBILITY` on every frame
//! (judged on the sending node's state), `INV-LOGOUT-EMPTY` and `INV-CALL-AGREE` at
//! every moment; plus that no node refuses a remote input the registry delivers.
//! A seeded fault ([`ClusterFault::IgnoresNodeGone`]) shows the checker catches a node
//! that does not clean up after its peer's lease expired.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stateright::actor::{Actor, ActorModel, ActorModelState, Id, Network, Out};
use stateright::Expectation;

use super::{Action, TerminalSpec, UserSpec, INV_CALL_AGREE, INV_LOGOUT_EMPTY, INV_VISIBILITY};
use super::{INV_ONLINE_EXACT, NEVER};
use crate::client::{CallState, Role};
use crate::client::{Client, ClientConfig, Status};
use crate::ids::{CallId, ConnId, Endpoint, NodeId, Password, SessionId, TerminalId, UserId};
use crate::invariant::{self, InvariantViolation};
use crate::message::LoginWith;
use crate::resume::ResumeConfig;
use crate::server::{
    AuthVerdict, RelayMessage, Server, ServerConfig, ServerEvent, SessionRecord, StoreOutcome,
};
use crate::sim::sample_caps;
use crate::time::Time;

/// The model's clock: nothing in it waits for time.
const NOW: Time = Time::ZERO;

/// Property: no node refused a remote input the registry delivered.
pub const CLUSTER_INPUT: &str = "remote inputs accepted";
/// Goal: every terminal online, tables exact across nodes.
pub const ALL_ONLINE_ACROSS: &str = "all terminals online across nodes with exact tables";
/// Goal: a call between terminals of different nodes established at both ends on the
/// fast path (no capabilities on the wire).
pub const FAST_PATH_ACROSS: &str = "call across nodes established on the fast path";
/// Goal: a node crashed and the survivor's online clients converged.
pub const SURVIVED_CRASH: &str = "a node crashed and the survivor's tables are exact";

/// A seeded fault of a node, standing for a realistic bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterFault {
    /// The node does not drop the sessions of a peer whose lease expired: it ignores
    /// [`Update::NodeGone`].
    IgnoresNodeGone,
}

/// The cluster model's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterConfig {
    /// The users.
    pub users: Vec<UserSpec>,
    /// The terminals (one actor each); their menus use [`Action::LoginCaps`],
    /// [`Action::Logout`], [`Action::Drop`], [`Action::ChangeCaps`],
    /// [`Action::AddContact`] and [`Action::RemoveContact`].
    pub terminals: Vec<TerminalSpec>,
    /// The node (0 or 1) each terminal connects to.
    pub homes: Vec<usize>,
    /// The node that may crash once, if any.
    pub crash: Option<usize>,
    /// A seeded fault, or `None` for the real protocol.
    pub fault: Option<ClusterFault>,
}

impl ClusterConfig {
    /// The configuration `cargo test` checks: alice (node 0) lists bob and carol, bob
    /// (node 1) lists alice, carol (node 1) lists alice. Alice logs in, changes her
    /// capabilities and logs out; bob logs in and removes alice; node 1 may crash at
    /// any point.
    pub fn default_check() -> Self {
        let u = |s: &str| UserId::new(s).expect("valid user");
        let t = |s: &str| TerminalId::new(s).expect("valid terminal id");
        let desk = sample_caps(&["h264", "vp8"], 1920, 30);
        let phone = sample_caps(&["vp8", "h264"], 1280, 30);
        ClusterConfig {
            users: vec![
                UserSpec {
                    name: u("alice"),
                    contacts: vec![1, 2],
                },
                UserSpec {
                    name: u("bob"),
                    contacts: vec![0],
                },
                UserSpec {
                    name: u("carol"),
                    contacts: vec![0],
                },
            ],
            terminals: vec![
                TerminalSpec {
                    user: 0,
                    id: t("alice-desk"),
                    caps: vec![desk.clone(), phone.clone()],
                    menu: vec![Action::LoginCaps, Action::ChangeCaps, Action::Logout],
                },
                TerminalSpec {
                    user: 1,
                    id: t("bob-phone"),
                    caps: vec![phone],
                    menu: vec![Action::LoginCaps, Action::RemoveContact(0)],
                },
            ],
            homes: vec![0, 1],
            crash: Some(1),
            fault: None,
        }
    }

    /// Calls between the nodes: alice (node 0) logs in, calls bob and logs out; bob
    /// (node 1) logs in, answers and removes alice; node 1 may crash at any point.
    pub fn calls() -> Self {
        let mut cfg = Self::default_check();
        cfg.terminals[0].menu = vec![Action::LoginCaps, Action::Call(1), Action::Logout];
        cfg.terminals[1].menu = vec![Action::LoginCaps, Action::Answer, Action::RemoveContact(0)];
        cfg
    }

    /// The default with carol logging in on node 1 too (she and alice see each other
    /// across the nodes; bob and she do not): for `--ignored` runs.
    pub fn extended() -> Self {
        let mut cfg = Self::default_check();
        cfg.terminals.push(TerminalSpec {
            user: 2,
            id: TerminalId::new("carol-desk").expect("valid terminal id"),
            caps: vec![sample_caps(&["av1", "h264"], 3840, 60)],
            menu: vec![Action::LoginCaps],
        });
        cfg.homes.push(1);
        cfg
    }

    fn password(&self, user: usize) -> String {
        format!("pw-{user}")
    }

    /// Node `i`'s server configuration: node id `i + 1`, no resumption (a drop ends
    /// the session), timers that never come due.
    fn server_config(&self, i: usize) -> ServerConfig {
        ServerConfig {
            login_timeout: NEVER,
            idle_timeout: NEVER,
            ring_timeout: NEVER,
            resume: ResumeConfig {
                grace: Duration::ZERO,
                log_frames: 0,
                ..ResumeConfig::default()
            },
            node: Some(node_id(i)),
            ..ServerConfig::default()
        }
    }

    /// The stateright model of this configuration, with every property.
    pub fn into_model(self) -> ActorModel<ClusterActor, ClusterConfig> {
        let cfg = Arc::new(self.clone());
        let mut actors = vec![
            ClusterActor {
                cfg: cfg.clone(),
                kind: Kind::Node(0),
            },
            ClusterActor {
                cfg: cfg.clone(),
                kind: Kind::Node(1),
            },
            ClusterActor {
                cfg: cfg.clone(),
                kind: Kind::Registry,
            },
        ];
        actors.extend((0..self.terminals.len()).map(|i| ClusterActor {
            cfg: cfg.clone(),
            kind: Kind::Terminal(i),
        }));
        ActorModel::new(self, ())
            .actors(actors)
            .init_network(Network::new_ordered([]))
            .property(Expectation::Always, INV_ONLINE_EXACT, |_, s| {
                prop_online_exact(s).is_ok()
            })
            .property(Expectation::Always, INV_VISIBILITY, |_, s| {
                nodes(s).all(|n| n.leak.is_none())
            })
            .property(Expectation::Always, INV_LOGOUT_EMPTY, |_, s| {
                clients(s).all(|c| invariant::logout_empty(c).is_ok())
            })
            .property(Expectation::Always, INV_CALL_AGREE, |_, s| {
                invariant::calls_agree(clients(s)).is_ok()
            })
            .property(Expectation::Always, CLUSTER_INPUT, |_, s| {
                nodes(s).all(|n| n.refused.is_none())
            })
            .property(Expectation::Sometimes, ALL_ONLINE_ACROSS, |_, s| {
                quiescent(s) && clients(s).all(Client::is_synced) && prop_online_exact(s).is_ok()
            })
            .property(Expectation::Sometimes, FAST_PATH_ACROSS, |_, s| {
                established_across(s)
            })
            .property(Expectation::Sometimes, SURVIVED_CRASH, |_, s| {
                quiescent(s)
                    && nodes(s).any(|n| n.crashed)
                    && clients(s).any(Client::is_synced)
                    && prop_online_exact(s).is_ok()
            })
    }
}

fn node_id(i: usize) -> NodeId {
    if i == 0 {
        NodeId(1)
    } else {
        NodeId(2)
    }
}

/// One change of the registry, as it travels from a node to the registry and from the
/// registry to the other node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Update {
    /// A session's key is put: the record as JSON, as a registry adapter stores it.
    Put(Bytes),
    /// A session's key is deleted.
    Delete(SessionId),
    /// A node's lease expired.
    NodeGone(NodeId),
}

/// What travels between actors.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterMsg {
    /// One write on a terminal's connection (either way): frames, then maybe the close.
    Link {
        /// The connection's generation.
        conn: u64,
        /// Complete frames, in order.
        frames: Vec<Bytes>,
        /// The connection closes after these frames.
        fin: bool,
    },
    /// Registry changes, in order.
    Registry(Vec<Update>),
    /// Call messages relayed from the sending node, in order (each as JSON, as an
    /// embedder carries them).
    Relay(Vec<Bytes>),
    /// The sending node crashed: its lease is no longer renewed and expires.
    LeaseLost,
}

/// A user action, or a crash.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Choice {
    /// A terminal's menu entry.
    Do(Action),
    /// Call this terminal ([`Action::Call`]).
    Call(Endpoint),
    /// Accept this call ([`Action::Answer`]).
    Answer(CallId),
    /// The node crashes.
    Crash,
}

/// A node actor's state: the real server plus what its embedder keeps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeState {
    /// The real state machine.
    pub server: Server,
    /// The stored contact lists (one shared store in reality; here each user's
    /// changes are made on its home node).
    pub contacts: BTreeMap<usize, Vec<UserId>>,
    /// The latest connection generation seen per terminal.
    pub generations: BTreeMap<usize, u64>,
    /// The node crashed (and restarted empty; it takes no more input in the model).
    pub crashed: bool,
    /// The first capability leak seen (`INV-VISIBILITY`), if any.
    pub leak: Option<String>,
    /// The first remote input it refused, if any.
    pub refused: Option<String>,
}

/// A terminal actor's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TermState {
    /// The real state machine.
    pub client: Client,
    /// The current connection generation.
    pub conn: u64,
    /// Whether the current connection is open.
    pub connected: bool,
    /// The menu entries not used yet, taken in order.
    pub menu: Vec<Action>,
    /// Index of the current capability set.
    pub caps: usize,
}

/// An actor's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClusterState {
    /// A node.
    Node(Box<NodeState>),
    /// The registry: it keeps nothing the model needs.
    Registry,
    /// A terminal.
    Terminal(Box<TermState>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Node(usize),
    Registry,
    Terminal(usize),
}

/// A cluster model actor.
#[derive(Clone, Debug)]
pub struct ClusterActor {
    cfg: Arc<ClusterConfig>,
    kind: Kind,
}

const REGISTRY: usize = 2;

fn node_actor(i: usize) -> Id {
    Id::from(i)
}

fn terminal_actor(i: usize) -> Id {
    Id::from(i + 3)
}

fn conn_id(terminal: usize, generation: u64) -> ConnId {
    ConnId(((terminal as u64) << 32) | generation)
}

fn split_conn(conn: ConnId) -> (usize, u64) {
    ((conn.0 >> 32) as usize, conn.0 & 0xffff_ffff)
}

/// Writes of one step per (actor, connection), in order.
#[derive(Default)]
struct Writes(Vec<(Id, u64, Vec<Bytes>, bool)>);

impl Writes {
    fn entry(&mut self, to: Id, conn: u64) -> &mut (Id, u64, Vec<Bytes>, bool) {
        let pos = match self.0.iter().position(|e| e.0 == to && e.1 == conn) {
            Some(pos) => pos,
            None => {
                self.0.push((to, conn, Vec::new(), false));
                self.0.len() - 1
            }
        };
        &mut self.0[pos]
    }

    fn send(self, o: &mut Out<ClusterActor>) {
        for (to, conn, frames, fin) in self.0 {
            o.send(to, ClusterMsg::Link { conn, frames, fin });
        }
    }
}

impl Actor for ClusterActor {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Timer = ();
    type Random = Choice;
    type Storage = ();

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> ClusterState {
        match self.kind {
            Kind::Node(i) => {
                if self.cfg.crash == Some(i) {
                    o.choose_random("crash", vec![Choice::Crash]);
                }
                ClusterState::Node(Box::new(NodeState {
                    server: Server::new(self.cfg.server_config(i)),
                    contacts: self
                        .cfg
                        .users
                        .iter()
                        .enumerate()
                        .map(|(u, spec)| {
                            let names = spec
                                .contacts
                                .iter()
                                .map(|c| self.cfg.users[*c].name.clone());
                            (u, names.collect())
                        })
                        .collect(),
                    generations: BTreeMap::new(),
                    crashed: false,
                    leak: None,
                    refused: None,
                }))
            }
            Kind::Registry => ClusterState::Registry,
            Kind::Terminal(i) => {
                let t = TermState {
                    client: Client::new(ClientConfig::default()),
                    conn: 0,
                    connected: false,
                    menu: self.cfg.terminals[i].menu.clone(),
                    caps: 0,
                };
                offer(&self.cfg, &t, o);
                ClusterState::Terminal(Box::new(t))
            }
        }
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<ClusterState>,
        src: Id,
        msg: ClusterMsg,
        o: &mut Out<Self>,
    ) {
        match (&self.kind, msg) {
            (Kind::Node(_), msg) => {
                let ClusterState::Node(n) = state.to_mut() else {
                    return;
                };
                if n.crashed {
                    // A dead node's connections fail: a new one is refused at once.
                    if let ClusterMsg::Link {
                        conn, fin: false, ..
                    } = msg
                    {
                        let mut w = Writes::default();
                        w.entry(src, conn).3 = true;
                        w.send(o);
                    }
                    return;
                }
                match msg {
                    ClusterMsg::Link { conn, frames, fin } => {
                        let terminal = usize::from(src) - 3;
                        let c = conn_id(terminal, conn);
                        if n.generations.get(&terminal).is_none_or(|g| *g < conn) {
                            n.generations.insert(terminal, conn);
                            let _ = n.server.connect(c, NOW);
                        }
                        for f in &frames {
                            n.server.receive(c, f, NOW);
                        }
                        if fin {
                            n.server.connection_closed(c, NOW);
                        }
                    }
                    ClusterMsg::Registry(updates) => {
                        for u in updates {
                            let r = match u {
                                Update::Put(json) => {
                                    match serde_json::from_slice::<SessionRecord>(&json) {
                                        Ok(record) => n.server.remote_online(record, NOW),
                                        Err(e) => {
                                            n.refused.get_or_insert(e.to_string());
                                            Ok(())
                                        }
                                    }
                                }
                                Update::Delete(session) => n.server.remote_offline(session, NOW),
                                Update::NodeGone(_)
                                    if self.cfg.fault == Some(ClusterFault::IgnoresNodeGone) =>
                                {
                                    Ok(())
                                }
                                Update::NodeGone(node) => {
                                    n.server.remote_node_gone(node, NOW).map(|_| ())
                                }
                            };
                            if let Err(e) = r {
                                n.refused.get_or_insert(e.to_string());
                            }
                        }
                    }
                    ClusterMsg::Relay(messages) => {
                        let from = node_id(usize::from(src).min(1));
                        for json in messages {
                            let r = match serde_json::from_slice::<RelayMessage>(&json) {
                                Ok(m) => n.server.relay_received(from, m, NOW),
                                Err(e) => {
                                    n.refused.get_or_insert(e.to_string());
                                    Ok(())
                                }
                            };
                            if let Err(e) = r {
                                n.refused.get_or_insert(e.to_string());
                            }
                        }
                    }
                    ClusterMsg::LeaseLost => {}
                }
                self.drain_node(n, o);
            }
            (Kind::Registry, ClusterMsg::Registry(updates)) => {
                // Forwarded to the other node, in order.
                let from = usize::from(src);
                o.send(node_actor(1 - from.min(1)), ClusterMsg::Registry(updates));
            }
            (Kind::Registry, ClusterMsg::LeaseLost) => {
                let from = usize::from(src).min(1);
                let gone = vec![Update::NodeGone(node_id(from))];
                o.send(node_actor(1 - from), ClusterMsg::Registry(gone));
            }
            (Kind::Terminal(_), ClusterMsg::Link { conn, frames, fin }) => {
                let ClusterState::Terminal(t) = state.to_mut() else {
                    return;
                };
                let mut w = Writes::default();
                if conn == t.conn && t.connected {
                    for f in &frames {
                        let _ = t.client.receive(f, NOW);
                    }
                    if fin {
                        t.connected = false;
                        t.client.connection_closed(NOW);
                    }
                }
                self.flush_terminal(t, &mut w);
                w.send(o);
                offer(&self.cfg, t, o);
            }
            _ => {}
        }
    }

    fn on_random(
        &self,
        _id: Id,
        state: &mut Cow<ClusterState>,
        choice: &Choice,
        o: &mut Out<Self>,
    ) {
        match (&self.kind, choice) {
            (Kind::Node(i), Choice::Crash) => {
                let ClusterState::Node(n) = state.to_mut() else {
                    return;
                };
                o.remove_random("crash");
                // Every connection dies; the node restarts empty and takes no more
                // input; its lease expires at the registry.
                let mut w = Writes::default();
                for (terminal, generation) in &n.generations {
                    w.entry(terminal_actor(*terminal), *generation).3 = true;
                }
                w.send(o);
                n.crashed = true;
                n.generations.clear();
                n.server = Server::new(self.cfg.server_config(*i));
                o.send(Id::from(REGISTRY), ClusterMsg::LeaseLost);
            }
            (Kind::Terminal(i), choice) => {
                let ClusterState::Terminal(t) = state.to_mut() else {
                    return;
                };
                let action = match choice {
                    Choice::Do(a) => a.clone(),
                    Choice::Call(to) => {
                        let user = self.cfg.users.iter().position(|u| u.name == to.user);
                        Action::Call(user.unwrap_or(usize::MAX))
                    }
                    Choice::Answer(_) => Action::Answer,
                    Choice::Crash => return,
                };
                if t.menu.first() == Some(&action) {
                    t.menu.remove(0);
                }
                let spec = &self.cfg.terminals[*i];
                let home = node_actor(self.cfg.homes[*i]);
                let mut w = Writes::default();
                match choice {
                    Choice::Call(to) => {
                        let _ = t.client.place_call(to, NOW);
                    }
                    Choice::Answer(call) => {
                        let _ = t.client.answer(*call, true, NOW);
                    }
                    _ => {}
                }
                match &action {
                    Action::LoginCaps => {
                        t.conn += 1;
                        t.connected = true;
                        let user = &self.cfg.users[spec.user];
                        if let Ok(pw) = Password::new(self.cfg.password(spec.user)) {
                            let with = LoginWith::Capabilities(spec.caps[t.caps].clone());
                            let _ = t.client.login(user.name.clone(), pw, with, NOW);
                        }
                    }
                    Action::Logout => {
                        let _ = t.client.logout(NOW);
                    }
                    Action::Drop => {
                        t.client.connection_closed(NOW);
                        t.connected = false;
                        w.entry(home, t.conn).3 = true;
                    }
                    Action::ChangeCaps => {
                        t.caps = (t.caps + 1) % spec.caps.len();
                        let _ = t.client.update_caps(spec.caps[t.caps].clone(), NOW);
                    }
                    Action::AddContact(u) => {
                        let _ = t.client.add_contact(self.cfg.users[*u].name.clone(), NOW);
                    }
                    Action::RemoveContact(u) => {
                        let _ = t
                            .client
                            .remove_contact(self.cfg.users[*u].name.clone(), NOW);
                    }
                    _ => {}
                }
                self.flush_terminal(t, &mut w);
                w.send(o);
                offer(&self.cfg, t, o);
            }
            _ => {}
        }
    }

    fn name(&self) -> String {
        match self.kind {
            Kind::Node(i) => format!("node{}", i + 1),
            Kind::Registry => "registry".into(),
            Kind::Terminal(i) => self.cfg.terminals[i].id.to_string(),
        }
    }
}

impl ClusterActor {
    /// Carries out what node `i` decided: frames to terminals (each judged against
    /// `INV-VISIBILITY` on the node's state as it leaves), credential checks and
    /// stores answered at once, registry changes sent to the registry in one write.
    fn drain_node(&self, n: &mut NodeState, o: &mut Out<Self>) {
        let mut w = Writes::default();
        let mut updates = Vec::new();
        let mut relays = Vec::new();
        while let Some(ev) = n.server.poll_event() {
            match ev {
                ServerEvent::Transmit { conn, frame } => {
                    if let Err(v) = invariant::frame_visible(&n.server, conn, &frame) {
                        n.leak.get_or_insert(v.detail);
                    }
                    let (terminal, generation) = split_conn(conn);
                    w.entry(terminal_actor(terminal), generation).2.push(frame);
                }
                ServerEvent::Close { conn } => {
                    let (terminal, generation) = split_conn(conn);
                    w.entry(terminal_actor(terminal), generation).3 = true;
                }
                ServerEvent::Authenticate(req) => {
                    let user = self.cfg.users.iter().position(|u| u.name == req.user);
                    let verdict = match user {
                        Some(u) => AuthVerdict::Accepted {
                            contacts: n.contacts.get(&u).cloned().unwrap_or_default(),
                            registered: None,
                        },
                        None => AuthVerdict::Rejected,
                    };
                    let _ = n.server.complete_auth(req.ticket, verdict, NOW);
                }
                ServerEvent::Store(req) => {
                    if let Some(u) = self.cfg.users.iter().position(|x| x.name == req.user) {
                        let list = n.contacts.entry(u).or_default();
                        list.retain(|c| *c != req.contact);
                        if req.added {
                            list.push(req.contact.clone());
                            list.sort_unstable();
                        }
                    }
                    let _ = n
                        .server
                        .complete_store(req.ticket, StoreOutcome::Stored, NOW);
                }
                ServerEvent::Publish(record) => match serde_json::to_vec(&record) {
                    Ok(json) => updates.push(Update::Put(Bytes::from(json))),
                    Err(e) => {
                        n.refused.get_or_insert(e.to_string());
                    }
                },
                ServerEvent::Unpublish { session, .. } => updates.push(Update::Delete(session)),
                ServerEvent::Relay { message, .. } => match serde_json::to_vec(&message) {
                    Ok(json) => relays.push(Bytes::from(json)),
                    Err(e) => {
                        n.refused.get_or_insert(e.to_string());
                    }
                },
                _ => {}
            }
        }
        w.send(o);
        if !updates.is_empty() {
            o.send(Id::from(REGISTRY), ClusterMsg::Registry(updates));
        }
        if !relays.is_empty() {
            // Straight to the other node (two nodes: every relay is for it).
            o.send(node_actor(1 - self.index()), ClusterMsg::Relay(relays));
        }
    }

    /// A node actor's index.
    fn index(&self) -> usize {
        match self.kind {
            Kind::Node(i) => i,
            _ => 0,
        }
    }

    /// Writes what the client wants sent to its home node and drops its events.
    fn flush_terminal(&self, t: &mut TermState, w: &mut Writes) {
        let Kind::Terminal(i) = self.kind else {
            return;
        };
        let home = node_actor(self.cfg.homes[i]);
        while let Some(frame) = t.client.poll_transmit() {
            if t.connected {
                w.entry(home, t.conn).2.push(frame);
            }
        }
        while t.client.poll_event().is_some() {}
    }
}

/// Offers the terminal's next menu entry if its client accepts it now: a call to any
/// terminal of the user named that the table holds, an answer to any incoming call.
/// Capability changes wait while a call exists (an established call keeps its
/// parameters).
fn offer(cfg: &ClusterConfig, t: &TermState, o: &mut Out<ClusterActor>) {
    let c = &t.client;
    let online = c.status() == Status::Online && t.connected;
    let idle = c.status() == Status::Idle && !t.connected;
    let quiet = c.calls().next().is_none() && c.dialing() == 0;
    let choices: Vec<Choice> = match t.menu.first() {
        Some(a @ Action::LoginCaps) if idle => vec![Choice::Do(a.clone())],
        Some(a @ (Action::Logout | Action::Drop)) if online => vec![Choice::Do(a.clone())],
        Some(a @ Action::ChangeCaps) if online && quiet => vec![Choice::Do(a.clone())],
        Some(a @ (Action::AddContact(_) | Action::RemoveContact(_))) if online => {
            vec![Choice::Do(a.clone())]
        }
        Some(Action::Call(u)) if online && quiet => {
            let name = cfg.users.get(*u).map(|u| &u.name);
            c.peers()
                .filter(|(e, _)| Some(&e.user) == name)
                .map(|(e, _)| Choice::Call(e.clone()))
                .collect()
        }
        Some(Action::Answer) => c
            .calls()
            .filter(|(_, call)| call.state == CallState::Incoming)
            .map(|(id, _)| Choice::Answer(*id))
            .collect(),
        _ => Vec::new(),
    };
    if choices.is_empty() {
        o.remove_random("user");
    } else {
        o.choose_random("user", choices);
    }
}

// ----- properties ---------------------------------------------------------------------

type State = ActorModelState<ClusterActor>;

/// The node actors' states.
pub fn nodes(s: &State) -> impl Iterator<Item = &NodeState> {
    s.actor_states.iter().filter_map(|a| match &**a {
        ClusterState::Node(n) => Some(&**n),
        _ => None,
    })
}

/// The terminals' clients, in configuration order.
pub fn clients(s: &State) -> impl Iterator<Item = &Client> {
    s.actor_states.iter().filter_map(|a| match &**a {
        ClusterState::Terminal(t) => Some(&t.client),
        _ => None,
    })
}

/// Cluster quiescence: no message on any link, so the registry has delivered every
/// change and no frame is in flight.
pub fn quiescent(s: &State) -> bool {
    s.network.len() == 0
}

/// `INV-ONLINE-EXACT` across both nodes, at cluster quiescence.
pub fn prop_online_exact(s: &State) -> Result<(), InvariantViolation> {
    if !quiescent(s) {
        return Ok(());
    }
    let servers: Vec<&Server> = nodes(s).map(|n| &n.server).collect();
    invariant::online_exact_across(&servers, clients(s))
}

/// Whether some call is established at both ends, on the fast path, and its parties
/// are terminals of different nodes.
fn established_across(s: &State) -> bool {
    let ends: Vec<&Client> = clients(s).collect();
    ends.iter().any(|a| {
        a.calls().any(|(id, ca)| {
            ca.role == Role::Caller
                && ca.state == CallState::Established
                && !ca.caps_on_wire
                && ca.peer.session.node() != a.session().map_or(NodeId(0), SessionId::node)
                && ends.iter().any(|b| {
                    b.calls().any(|(j, cb)| {
                        j == id
                            && cb.role == Role::Callee
                            && cb.state == CallState::Established
                            && !cb.caps_on_wire
                    })
                })
        })
    })
}
