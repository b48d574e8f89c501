//! A stateright model of the real state machines (feature `model`; spec section
//! "Model checking").
//!
//! The model is an [`ActorModel`] whose server actor wraps [`Server`] and whose terminal
//! actors each wrap a [`Client`]. The actors only translate: stateright messages carry
//! the protocol's frames, stateright's nondeterministic choices are the users' actions,
//! and every protocol decision is made by the same code that ships. The network is
//! ordered per link, like the TCP connections it stands for; a connection is named by a
//! generation number so that a reconnected terminal never reads its old connection's
//! frames.
//!
//! Each terminal has a menu of user actions ([`Action`]), each usable a bounded number of
//! times, so the state space is finite; the checker explores every interleaving of those
//! actions with every delivery order the network allows. The properties are the spec's
//! invariants, evaluated with [`crate::invariant`].
//!
//! Sessions are resumable (spec "Resumable sessions") unless [`ModelConfig::resume`] is
//! `None`: a dropped terminal's client is detached, and its menu's
//! [`Action::Reconnect`] either resumes the session on a new connection or gives it up
//! and logs in anew. The server's clock moves only when a detached session's grace runs
//! out: a stateright timer of the server actor, armed while a grace is running, fires
//! the server's next deadline ([`Server::poll_timeout`], [`Server::handle_timeout`]) at
//! any point, so a resume may arrive before or after the grace.
//!
//! Seeded faults ([`Fault`]) wrap the actors' input or output to stand for realistic
//! bugs; they exist to show that each property can fail, and are never a flag in the
//! protocol code.

// The model is a test harness: its enums are matched exhaustively by its own checks.
#![allow(clippy::exhaustive_enums)]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stateright::actor::{Actor, ActorModel, ActorModelState, Id, Network, Out};
use stateright::Expectation;

use crate::caps::Capabilities;
use crate::client::{CallState, Client, ClientConfig, Role, Status};
use crate::codec::{decode_message, encode_frame, HEADER_LEN};
use crate::error::ErrorCode;
use crate::ids::{CallId, ConnId, Endpoint, Password, TerminalId, UserId};
use crate::invariant::{self, InvariantViolation};
use crate::message::{ClientMessage, LoginWith, ServerMessage};
use crate::negotiate::negotiate_pair;
use crate::resume::ResumeConfig;
use crate::server::{AuthRequest, AuthVerdict, Server, ServerConfig, ServerEvent, StoreOutcome};
use crate::sim::sample_caps;
use crate::time::Time;

pub mod cluster;

/// The clients' clock: it never advances, as the client's only timer (the ping) is left
/// out; a dead connection is modelled by the [`Action::Drop`] and [`Action::Vanish`]
/// actions.
const NOW: Time = Time::ZERO;

/// A detached session's grace in the model. The server's clock starts at zero and
/// advances only to a grace's end ([`ServerTimer::Grace`]); the server's other timers
/// (login, idle, ring) are set to [`NEVER`], so they never come due.
const GRACE: Duration = Duration::from_secs(1);

/// The login, idle and ring timeouts of the model's server: far beyond any time the
/// model reaches (one [`GRACE`] per drop).
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// A user action a terminal's menu may offer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Connect and log in with the terminal's capabilities (C2).
    LoginCaps,
    /// Connect and log in with the terminal's registered identifier (C3).
    LoginTerminal,
    /// Log out (C5).
    Logout,
    /// The connection dies without a logout.
    Drop,
    /// The terminal loses its connection without the server noticing (a half-dead
    /// connection, as when the terminal's network changes): the server keeps writing
    /// to it, and a resume must replace it.
    Vanish,
    /// After a drop or a vanish, a new connection: resume the detached session, or give
    /// it up and
    /// log in anew the way the terminal last logged in. When the server refuses the
    /// resume (`resume_failed`: the grace ran out), the terminal logs in anew at once,
    /// as a real client does.
    Reconnect,
    /// The terminal's capabilities change to its next capability set.
    ChangeCaps,
    /// Add a user (by index) to the contact list.
    AddContact(usize),
    /// Remove a user (by index) from the contact list.
    RemoveContact(usize),
    /// Call a terminal of this user (by index) that is in the table.
    Call(usize),
    /// Accept an incoming call.
    Answer,
}

/// One user of the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserSpec {
    /// The account name.
    pub name: UserId,
    /// The stored contact list, as user indices.
    pub contacts: Vec<usize>,
}

/// One terminal of the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TerminalSpec {
    /// Index of the user who uses it.
    pub user: usize,
    /// Its registered identifier (capabilities: `caps[0]`).
    pub id: TerminalId,
    /// Its capability sets: the first at login, the next on each change.
    pub caps: Vec<Capabilities>,
    /// Its menu: each entry may be used once.
    pub menu: Vec<Action>,
}

/// A seeded fault, standing for a realistic bug, applied by the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The server forgets the `offline` push when a session ends because its connection
    /// dropped: at the drop when resumption is disabled, when the grace runs out
    /// otherwise.
    ServerForgetsOfflineOnDrop,
    /// The terminal sends `logout` itself and keeps its table: it never tells the
    /// client core about the logout or the close.
    ClientKeepsTableAfterLogout,
    /// The server pushes every `online` to every connection.
    ServerPushesToNonContacts,
    /// The terminal ignores `contact_removed`, so the removed contact's entries stay.
    ClientIgnoresContactRemoval,
    /// The callee's `accept` loses the capabilities it must carry on the fallback path.
    AcceptLosesCapabilities,
    /// The network loses the table frames (`online`, `offline`, `contact_added`,
    /// `contact_removed`) between `resumed` and `synced`: a resume's catch-up, delta or
    /// snapshot, arrives without its content.
    ResumeCatchUpLost,
}

/// The model's configuration: users, terminals and their menus, and how the server
/// answers credential checks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelConfig {
    /// The users.
    pub users: Vec<UserSpec>,
    /// The terminals (one actor each).
    pub terminals: Vec<TerminalSpec>,
    /// When set, the server answers each credential check later, as a separate step,
    /// so logins interleave with everything else.
    pub async_auth: bool,
    /// A seeded fault, or `None` for the real protocol.
    pub fault: Option<Fault>,
    /// When set, each terminal takes its menu in order (the next entry only), so the
    /// nondeterminism is when each terminal acts, relative to every other event; when
    /// clear, any remaining entry may come next.
    pub in_order: bool,
    /// Resumable sessions: `Some(n)` runs the server with resumption enabled, keeping
    /// the latest `n` table frames per session (`resume.log_frames`); a dropped
    /// session is detached, and its grace may run out at any moment. `None` disables
    /// resumption (`resume.grace` 0): a drop ends the session at once.
    pub resume: Option<usize>,
}

impl ModelConfig {
    /// The default configuration checked by `cargo test`: three users with different
    /// contact lists (alice lists bob and carol; bob lists alice; carol lists nobody),
    /// alice on two terminals, and every action kind: alice's desk logs in with
    /// capabilities, calls bob and logs out; alice's phone logs in with its terminal
    /// identifier and drops its connection (its session is detached until the grace
    /// runs out); bob logs in with capabilities, changes them, answers, and removes
    /// alice from his contact list. Sessions are resumable, with the server's default
    /// log. Carol stays offline; see [`ModelConfig::extended`] for the configuration in
    /// which she logs in too, [`ModelConfig::resume_check`] and
    /// [`ModelConfig::extended_resume`] for reconnects.
    pub fn default_check() -> Self {
        let u = |s: &str| UserId::new(s).expect("valid user");
        let t = |s: &str| TerminalId::new(s).expect("valid terminal id");
        let desk = sample_caps(&["h264", "vp8"], 1920, 30);
        let phone = sample_caps(&["vp8", "h264"], 1280, 30);
        let slow = sample_caps(&["h264"], 640, 15);
        ModelConfig {
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
                    contacts: vec![],
                },
            ],
            terminals: vec![
                TerminalSpec {
                    user: 0,
                    id: t("alice-desk"),
                    caps: vec![desk.clone()],
                    menu: vec![Action::LoginCaps, Action::Call(1), Action::Logout],
                },
                TerminalSpec {
                    user: 0,
                    id: t("alice-phone"),
                    caps: vec![phone.clone()],
                    menu: vec![Action::LoginTerminal, Action::Drop],
                },
                TerminalSpec {
                    user: 1,
                    id: t("bob-phone"),
                    caps: vec![phone, slow],
                    menu: vec![
                        Action::LoginCaps,
                        Action::ChangeCaps,
                        Action::Answer,
                        Action::RemoveContact(0),
                    ],
                },
            ],
            async_auth: false,
            fault: None,
            in_order: true,
            resume: Some(ResumeConfig::default().log_frames),
        }
    }

    /// The configuration for resumable sessions checked by `cargo test`: the default's
    /// users, a server log of one frame (so a resume gets a delta, or a snapshot because
    /// the log no longer reaches back or is larger), and two terminals. Alice's phone
    /// logs in with capabilities, drops its connection and reconnects, then loses its
    /// connection without the server noticing and reconnects again; each reconnect
    /// resumes (replacing the half-dead connection the second time), or gives the
    /// session up and logs in anew (the old session stays online for bob until its
    /// grace runs out, or for good behind the half-dead connection). Bob logs in, calls
    /// alice's phone (which rings, or is refused while detached), changes capabilities,
    /// removes alice and adds her back, so a detached phone misses `online` and
    /// `offline` frames.
    pub fn resume_check() -> Self {
        let mut cfg = Self::default_check();
        let mut phone = cfg.terminals[1].clone();
        let mut bob = cfg.terminals[2].clone();
        phone.menu = vec![
            Action::LoginCaps,
            Action::Drop,
            Action::Reconnect,
            Action::Vanish,
            Action::Reconnect,
        ];
        bob.menu = vec![
            Action::LoginCaps,
            Action::Call(0),
            Action::ChangeCaps,
            Action::RemoveContact(0),
            Action::AddContact(0),
        ];
        cfg.terminals = vec![phone, bob];
        cfg.resume = Some(1);
        cfg
    }

    /// [`ModelConfig::default_check`] with alice's phone reconnecting after its drop
    /// (resuming, or logging in anew): reconnects amid calls, a logout, capability and
    /// roster changes. Seven times the states of the default; checked by `.ci/run`.
    pub fn extended_resume() -> Self {
        let mut cfg = Self::default_check();
        cfg.terminals[1].menu.push(Action::Reconnect);
        cfg
    }

    /// [`ModelConfig::default_check`] with carol's terminal logging in too (by its
    /// terminal identifier): nobody may see her, and she may see nobody. Eleven times
    /// the states of the default; checked by `.ci/run`.
    pub fn extended() -> Self {
        let mut cfg = Self::default_check();
        cfg.terminals.push(TerminalSpec {
            user: 2,
            id: TerminalId::new("carol-desk").expect("valid terminal id"),
            caps: vec![sample_caps(&["av1", "h264"], 3840, 60)],
            menu: vec![Action::LoginTerminal],
        });
        cfg
    }

    /// A configuration of `users` users who all list each other, one terminal each,
    /// every terminal with the same menu, taken in order: log in, change capabilities,
    /// call the next user, answer, drop, reconnect. Grows fast: for command-line runs.
    pub fn all_friends(users: usize, async_auth: bool) -> Self {
        let caps = [
            sample_caps(&["h264", "vp8"], 1920, 30),
            sample_caps(&["vp8"], 1280, 30),
        ];
        ModelConfig {
            users: (0..users)
                .map(|i| UserSpec {
                    name: UserId::new(format!("u{i}")).expect("valid user"),
                    contacts: (0..users).filter(|j| *j != i).collect(),
                })
                .collect(),
            terminals: (0..users)
                .map(|i| TerminalSpec {
                    user: i,
                    id: TerminalId::new(format!("t{i}")).expect("valid id"),
                    caps: caps.to_vec(),
                    menu: vec![
                        Action::LoginCaps,
                        Action::ChangeCaps,
                        Action::Call((i + 1) % users),
                        Action::Answer,
                        Action::Drop,
                        Action::Reconnect,
                    ],
                })
                .collect(),
            async_auth,
            fault: None,
            in_order: true,
            resume: Some(ResumeConfig::default().log_frames),
        }
    }

    fn password(&self, user: usize) -> String {
        format!("pw-{user}")
    }

    /// The model's server configuration: the defaults, with timers that never come due
    /// except a detached session's grace, and resumption as configured.
    fn server_config(&self) -> ServerConfig {
        ServerConfig {
            login_timeout: NEVER,
            idle_timeout: NEVER,
            ring_timeout: NEVER,
            resume: ResumeConfig {
                grace: if self.resume.is_some() {
                    GRACE
                } else {
                    Duration::ZERO
                },
                log_frames: self.resume.unwrap_or(0),
                ..ResumeConfig::default()
            },
            ..ServerConfig::default()
        }
    }

    /// The stateright model of this configuration, with every property.
    pub fn into_model(self) -> ActorModel<PrecallActor, ModelConfig> {
        let cfg = Arc::new(self.clone());
        let mut actors = vec![PrecallActor {
            cfg: cfg.clone(),
            kind: Kind::Server,
        }];
        actors.extend((0..self.terminals.len()).map(|i| PrecallActor {
            cfg: cfg.clone(),
            kind: Kind::Terminal(i),
        }));
        ActorModel::new(self, ())
            .actors(actors)
            .init_network(Network::new_ordered([]))
            .property(Expectation::Always, INV_ONLINE_EXACT, |m, s| {
                prop_online_exact(m, s).is_ok()
            })
            .property(Expectation::Always, INV_LOGOUT_EMPTY, |m, s| {
                prop_logout_empty(m, s).is_ok()
            })
            .property(Expectation::Always, INV_VISIBILITY, |_, s| {
                server_state(s).leak.is_none()
            })
            .property(Expectation::Always, INV_CALL_AGREE, |m, s| {
                prop_calls_agree(m, s).is_ok()
            })
            .property(Expectation::Sometimes, FAST_PATH_CALL, |m, s| {
                established_on(m, s, false)
            })
            .property(Expectation::Sometimes, FALLBACK_CALL, |m, s| {
                established_on(m, s, true)
            })
            .property(Expectation::Sometimes, ALL_ONLINE_COMPLETE, |m, s| {
                all_online_complete(m, s)
            })
            .property(Expectation::Sometimes, RESUMED_MISSED, |m, s| {
                back_online_after(m, s, Resumption::Missed)
            })
            .property(Expectation::Sometimes, RESUMED_SNAPSHOT, |m, s| {
                back_online_after(m, s, Resumption::Snapshot)
            })
            .property(Expectation::Sometimes, RESUME_FAILED, |m, s| {
                back_online_after(m, s, Resumption::Failed)
            })
    }

    /// The `sometimes` properties this configuration's menus can reach: the calls if
    /// a terminal calls and one answers, every terminal online with a complete table,
    /// and the resume goals ([`RESUME_GOALS`]) if sessions are resumable and a terminal
    /// reconnects.
    pub fn sometimes(&self) -> Vec<&'static str> {
        let any = |f: fn(&Action) -> bool| self.terminals.iter().any(|t| t.menu.iter().any(f));
        let calls = any(|a| matches!(a, Action::Call(_))) && any(|a| *a == Action::Answer);
        let reconnects = self.resume.is_some() && any(|a| *a == Action::Reconnect);
        let mut goals = Vec::new();
        if calls {
            goals.extend([FAST_PATH_CALL, FALLBACK_CALL]);
        }
        goals.push(ALL_ONLINE_COMPLETE);
        if reconnects {
            goals.extend(RESUME_GOALS);
        }
        goals
    }
}

/// Property names: the spec's invariant identifiers and the reachability goals.
pub const INV_ONLINE_EXACT: &str = "INV-ONLINE-EXACT";
/// See [`INV_ONLINE_EXACT`].
pub const INV_LOGOUT_EMPTY: &str = "INV-LOGOUT-EMPTY";
/// See [`INV_ONLINE_EXACT`].
pub const INV_VISIBILITY: &str = "INV-VISIBILITY";
/// See [`INV_ONLINE_EXACT`].
pub const INV_CALL_AGREE: &str = "INV-CALL-AGREE";
/// Reachability: a call established at both ends on the fast path.
pub const FAST_PATH_CALL: &str = "call established on the fast path";
/// Reachability: a call established at both ends on a fallback path.
pub const FALLBACK_CALL: &str = "call established on a fallback path";
/// Reachability: every terminal online, nothing in flight, every table complete.
pub const ALL_ONLINE_COMPLETE: &str = "all terminals online with complete tables";
/// Reachability: a terminal resumed its session with a delta (only the table frames
/// it missed, at least one), and is online with an exact table, nothing in flight.
pub const RESUMED_MISSED: &str = "resumed with only the missed frames";
/// Reachability: a terminal resumed its session with a snapshot, and is online with an
/// exact table, nothing in flight.
pub const RESUMED_SNAPSHOT: &str = "resumed with a snapshot";
/// Reachability: a terminal's resume was refused because the grace had run out, and
/// after a full login it is online with an exact table, nothing in flight.
pub const RESUME_FAILED: &str = "resume failed after the grace, then a full login";

/// Every `always` property of the model.
pub const ALWAYS: [&str; 4] = [
    INV_ONLINE_EXACT,
    INV_LOGOUT_EMPTY,
    INV_VISIBILITY,
    INV_CALL_AGREE,
];
/// The `sometimes` properties about calls and complete tables, reached by the default
/// configuration ([`ModelConfig::sometimes`] says which a configuration can reach).
pub const SOMETIMES: [&str; 3] = [FAST_PATH_CALL, FALLBACK_CALL, ALL_ONLINE_COMPLETE];
/// The `sometimes` properties about resumption, reached by configurations in which a
/// terminal reconnects ([`ModelConfig::resume_check`]).
pub const RESUME_GOALS: [&str; 3] = [RESUMED_MISSED, RESUMED_SNAPSHOT, RESUME_FAILED];

/// What travels on a link: one write of one connection, as an embedder that writes
/// everything a step produced at once would send it: some frames, then possibly the
/// connection's close.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Msg {
    /// The connection's generation (per terminal).
    pub conn: u64,
    /// Complete frames, in order.
    pub frames: Vec<Bytes>,
    /// The connection closes after these frames.
    pub fin: bool,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.conn)?;
        for frame in &self.frames {
            let text = frame
                .get(HEADER_LEN..)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            write!(f, " {text}")?;
        }
        if self.fin {
            write!(f, " FIN")?;
        }
        Ok(())
    }
}

/// Collects a step's writes per connection, in order.
#[derive(Default)]
struct Writes(Vec<(Id, Msg)>);

impl Writes {
    fn entry(&mut self, to: Id, conn: u64) -> &mut Msg {
        let pos = match self
            .0
            .iter()
            .position(|(id, m)| *id == to && m.conn == conn)
        {
            Some(pos) => pos,
            None => {
                self.0.push((
                    to,
                    Msg {
                        conn,
                        frames: Vec::new(),
                        fin: false,
                    },
                ));
                self.0.len() - 1
            }
        };
        &mut self.0[pos].1
    }

    fn frame(&mut self, to: Id, conn: u64, frame: Bytes) {
        self.entry(to, conn).frames.push(frame);
    }

    fn fin(&mut self, to: Id, conn: u64) {
        self.entry(to, conn).fin = true;
    }

    fn send(self, o: &mut Out<PrecallActor>) {
        for (to, msg) in self.0 {
            o.send(to, msg);
        }
    }
}

/// The server actor's timers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerTimer {
    /// A credential check completing (with `async_auth`), by ticket.
    Auth(u64),
    /// Time passes to the server's next deadline, the end of a detached session's
    /// grace; armed while one is running.
    Grace,
}

/// A user action chosen for a terminal, with its argument.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Choice {
    /// An action without argument.
    Do(Action),
    /// Call this terminal.
    Call(Endpoint),
    /// Accept this call.
    Answer(CallId),
    /// Resume the detached session on a new connection ([`Action::Reconnect`]).
    Resume,
    /// Give the detached session up and log in anew ([`Action::Reconnect`]).
    LoginAnew,
}

/// How a terminal's latest resume ended, as its embedder saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resumption {
    /// `resumed` with a delta holding at least one table frame.
    Missed,
    /// `resumed` with a delta holding no frame: nothing was missed.
    NothingMissed,
    /// `resumed` with a snapshot.
    Snapshot,
    /// Refused with `resume_failed`.
    Failed,
}

/// The server actor's state: the real server plus what its embedder keeps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerState {
    /// The real state machine.
    pub server: Server,
    /// The stored contact lists (the embedder's store), updated on `Store` (stored at once).
    pub contacts: BTreeMap<usize, BTreeSet<UserId>>,
    /// The server's clock: zero, then the end of each grace that ran out.
    pub now: Time,
    /// The latest connection generation seen per terminal.
    pub generations: BTreeMap<usize, u64>,
    /// Credential checks not yet answered.
    pub pending: BTreeMap<u64, AuthRequest>,
    /// The first capability leak seen (`INV-VISIBILITY`), if any.
    pub leak: Option<String>,
}

/// A terminal actor's state: the real client plus what its embedder keeps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TerminalState {
    /// The real state machine.
    pub client: Client,
    /// The current connection generation.
    pub conn: u64,
    /// Whether the current connection is open.
    pub connected: bool,
    /// The menu entries not used yet.
    pub menu: Vec<Action>,
    /// Index of the current capability set.
    pub caps: usize,
    /// The user logged out (and has not logged in since).
    pub logged_out: bool,
    /// How the terminal last logged in ([`Action::LoginCaps`] or
    /// [`Action::LoginTerminal`]), the way it logs in anew.
    pub login: Option<Action>,
    /// How the latest resume ended, if there was one.
    pub resumed: Option<Resumption>,
}

/// An actor's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ActorState {
    /// The server.
    Server(Box<ServerState>),
    /// A terminal.
    Terminal(Box<TerminalState>),
}

/// Which actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Server,
    Terminal(usize),
}

/// A model actor: the server (id 0) or a terminal (ids 1..), with the configuration it
/// needs (stateright hands actors nothing else).
#[derive(Clone, Debug)]
pub struct PrecallActor {
    cfg: Arc<ModelConfig>,
    kind: Kind,
}

/// The server's actor id.
fn server_id() -> Id {
    Id::from(0)
}

fn terminal_actor(i: usize) -> Id {
    Id::from(i + 1)
}

fn conn_id(terminal: usize, generation: u64) -> ConnId {
    ConnId(((terminal as u64) << 32) | generation)
}

fn split_conn(conn: ConnId) -> (usize, u64) {
    ((conn.0 >> 32) as usize, conn.0 & 0xffff_ffff)
}

fn server_message(frame: &[u8]) -> Option<ServerMessage> {
    decode_message(frame.get(HEADER_LEN..)?).ok()
}

fn client_message(frame: &[u8]) -> Option<ClientMessage> {
    decode_message(frame.get(HEADER_LEN..)?).ok()
}

impl Actor for PrecallActor {
    type Msg = Msg;
    type State = ActorState;
    type Timer = ServerTimer;
    type Random = Choice;
    type Storage = ();

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> ActorState {
        match self.kind {
            Kind::Server => ActorState::Server(Box::new(ServerState {
                server: Server::new(self.cfg.server_config()),
                contacts: self
                    .cfg
                    .users
                    .iter()
                    .enumerate()
                    .map(|(i, u)| {
                        let names = u.contacts.iter().map(|c| self.cfg.users[*c].name.clone());
                        (i, names.collect())
                    })
                    .collect(),
                now: Time::ZERO,
                generations: BTreeMap::new(),
                pending: BTreeMap::new(),
                leak: None,
            })),
            Kind::Terminal(i) => {
                let t = TerminalState {
                    client: Client::new(ClientConfig::default()),
                    conn: 0,
                    connected: false,
                    menu: self.cfg.terminals[i].menu.clone(),
                    caps: 0,
                    logged_out: false,
                    login: None,
                    resumed: None,
                };
                offer(&self.cfg, &t, o);
                ActorState::Terminal(Box::new(t))
            }
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<ActorState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (&self.kind, state.to_mut()) {
            (Kind::Server, ActorState::Server(s)) => {
                let now = s.now;
                let terminal = usize::from(src) - 1;
                let conn = conn_id(terminal, msg.conn);
                if s.generations.get(&terminal).is_none_or(|g| *g < msg.conn) {
                    s.generations.insert(terminal, msg.conn);
                    // A new connection: its first write arrives on an ordered link
                    // behind the previous connection's close (if the terminal sent one:
                    // after a vanish the previous connection stays open).
                    let _ = s.server.connect(conn, now);
                }
                for frame in &msg.frames {
                    s.server.receive(conn, frame, now);
                }
                if msg.fin {
                    s.server.connection_closed(conn, now);
                }
                self.drain_server(s, msg.fin, o);
                arm_grace(s, o);
            }
            (Kind::Terminal(i), ActorState::Terminal(t)) => {
                let mut w = Writes::default();
                // Frames of an older connection are dropped: that socket is gone.
                if msg.conn == t.conn && t.connected {
                    self.terminal_receive(*i, t, &msg, &mut w);
                }
                self.flush_terminal(t, &mut w);
                w.send(o);
                offer(&self.cfg, t, o);
            }
            _ => {}
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<ActorState>,
        timer: &ServerTimer,
        o: &mut Out<Self>,
    ) {
        let ActorState::Server(s) = state.to_mut() else {
            return;
        };
        match timer {
            ServerTimer::Auth(ticket) => {
                if let Some(req) = s.pending.remove(ticket) {
                    let verdict = self.verdict(s, &req);
                    let _ = s.server.complete_auth(req.ticket, verdict, s.now);
                    self.drain_server(s, false, o);
                }
            }
            ServerTimer::Grace => {
                if let Some(at) = grace_due(s) {
                    s.now = s.now.max(at);
                    s.server.handle_timeout(s.now);
                    self.drain_server(s, true, o);
                }
            }
        }
        arm_grace(s, o);
    }

    fn on_random(&self, _id: Id, state: &mut Cow<ActorState>, choice: &Choice, o: &mut Out<Self>) {
        let Kind::Terminal(i) = self.kind else {
            return;
        };
        let ActorState::Terminal(t) = state.to_mut() else {
            return;
        };
        let action = match choice {
            Choice::Do(a) => a.clone(),
            Choice::Call(to) => {
                let user = self.cfg.users.iter().position(|u| u.name == to.user);
                Action::Call(user.unwrap_or(usize::MAX))
            }
            Choice::Answer(_) => Action::Answer,
            Choice::Resume | Choice::LoginAnew => Action::Reconnect,
        };
        if let Some(pos) = t.menu.iter().position(|a| *a == action) {
            t.menu.remove(pos);
        }
        // The commands below are offered only when the client accepts them, so their
        // results carry no information here.
        let mut w = Writes::default();
        match choice {
            Choice::Do(a @ (Action::LoginCaps | Action::LoginTerminal)) => {
                self.login(i, t, a.clone());
            }
            Choice::LoginAnew => {
                // Logging in from a detached session abandons it.
                if let Some(a) = t.login.clone() {
                    self.login(i, t, a);
                }
            }
            Choice::Resume => {
                t.conn += 1;
                t.connected = true;
                let _ = t.client.resume(NOW);
            }
            Choice::Do(Action::Logout) => {
                t.logged_out = true;
                if self.cfg.fault == Some(Fault::ClientKeepsTableAfterLogout) {
                    let frame = encode_frame(&ClientMessage::Logout {});
                    w.frame(server_id(), t.conn, frame);
                } else {
                    let _ = t.client.logout(NOW);
                }
            }
            Choice::Do(Action::Drop) => {
                t.client.connection_closed(NOW);
                t.connected = false;
                w.fin(server_id(), t.conn);
            }
            Choice::Do(Action::Vanish) => {
                t.client.connection_closed(NOW);
                t.connected = false;
            }
            Choice::Do(Action::ChangeCaps) => {
                let spec = &self.cfg.terminals[i];
                t.caps = (t.caps + 1) % spec.caps.len();
                let _ = t.client.update_caps(spec.caps[t.caps].clone(), NOW);
            }
            Choice::Do(Action::AddContact(u)) => {
                let _ = t.client.add_contact(self.cfg.users[*u].name.clone(), NOW);
            }
            Choice::Do(Action::RemoveContact(u)) => {
                let _ = t
                    .client
                    .remove_contact(self.cfg.users[*u].name.clone(), NOW);
            }
            Choice::Call(to) => {
                let _ = t.client.place_call(to, NOW);
            }
            Choice::Answer(call) => {
                let _ = t.client.answer(*call, true, NOW);
            }
            Choice::Do(Action::Call(_) | Action::Answer | Action::Reconnect) => {}
        }
        self.flush_terminal(t, &mut w);
        w.send(o);
        offer(&self.cfg, t, o);
    }

    fn name(&self) -> String {
        match self.kind {
            Kind::Server => "server".into(),
            Kind::Terminal(i) => self.cfg.terminals[i].id.to_string(),
        }
    }
}

/// The end of a detached session's grace, if one is running: the server's next
/// deadline, which is one as long as it lies within a grace of the server's clock (the
/// model's other timeouts are [`NEVER`]).
fn grace_due(s: &ServerState) -> Option<Time> {
    s.server
        .poll_timeout()
        .filter(|at| s.server.detached_count() > 0 && *at <= s.now.after(GRACE))
}

/// Arms the server actor's [`ServerTimer::Grace`] while a grace is running, and
/// disarms it otherwise, so that equal server states have equal timers.
fn arm_grace(s: &ServerState, o: &mut Out<PrecallActor>) {
    if grace_due(s).is_some() {
        o.set_timer(ServerTimer::Grace, stateright::actor::model_timeout());
    } else {
        o.cancel_timer(ServerTimer::Grace);
    }
}

impl PrecallActor {
    /// What the embedder's store answers (the model's credentials always match).
    fn verdict(&self, s: &ServerState, req: &AuthRequest) -> AuthVerdict {
        let Some(user) = self.cfg.users.iter().position(|u| u.name == req.user) else {
            return AuthVerdict::Rejected;
        };
        let registered = req.terminal.as_ref().and_then(|id| {
            self.cfg
                .terminals
                .iter()
                .find(|t| t.id == *id && t.user == user)
                .map(|t| t.caps[0].clone())
        });
        AuthVerdict::Accepted {
            contacts: s
                .contacts
                .get(&user)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            registered,
        }
    }

    /// Terminal `i` opens a new connection and logs in (`how`: [`Action::LoginCaps`]
    /// or [`Action::LoginTerminal`]); a detached session is given up.
    fn login(&self, i: usize, t: &mut TerminalState, how: Action) {
        let spec = &self.cfg.terminals[i];
        let user = &self.cfg.users[spec.user];
        t.conn += 1;
        t.connected = true;
        t.logged_out = false;
        let with = if how == Action::LoginCaps {
            LoginWith::Capabilities(spec.caps[t.caps].clone())
        } else {
            LoginWith::TerminalId(spec.id.clone())
        };
        t.login = Some(how);
        let password = Password::new(self.cfg.password(spec.user)).expect("valid");
        let _ = t.client.login(user.name.clone(), password, with, NOW);
    }

    /// Terminal `i` reads one write of its current connection, and notes how a resume
    /// ends: the catch-up between `resumed` and `synced`, or `resume_failed`, after
    /// which it logs in anew.
    fn terminal_receive(&self, i: usize, t: &mut TerminalState, msg: &Msg, w: &mut Writes) {
        let resuming = t.client.status() == Status::Resuming;
        // (snapshot, table frames so far) while a catch-up is being read.
        let mut catch_up: Option<(bool, usize)> = None;
        let ignore_removal = self.cfg.fault == Some(Fault::ClientIgnoresContactRemoval);
        for frame in &msg.frames {
            let watched = t.client.status() == Status::Resuming || catch_up.is_some();
            let decoded = if watched || ignore_removal {
                server_message(frame)
            } else {
                None
            };
            let ignored =
                ignore_removal && matches!(decoded, Some(ServerMessage::ContactRemoved { .. }));
            if !ignored && t.client.receive(frame, NOW).is_err() {
                t.connected = false;
                w.fin(server_id(), t.conn);
                break;
            }
            if !watched {
                continue;
            }
            match decoded {
                Some(ServerMessage::Resumed { contacts, .. })
                    if t.client.status() == Status::Online =>
                {
                    catch_up = Some((contacts.is_some(), 0));
                }
                Some(
                    ServerMessage::Online(_)
                    | ServerMessage::Offline(_)
                    | ServerMessage::ContactAdded { .. }
                    | ServerMessage::ContactRemoved { .. },
                ) => {
                    if let Some((_, n)) = catch_up.as_mut() {
                        *n += 1;
                    }
                }
                Some(ServerMessage::Synced {}) => {
                    t.resumed = match catch_up.take() {
                        Some((true, _)) => Some(Resumption::Snapshot),
                        Some((false, 0)) => Some(Resumption::NothingMissed),
                        Some((false, _)) => Some(Resumption::Missed),
                        None => t.resumed,
                    };
                }
                Some(ServerMessage::Error {
                    code: ErrorCode::ResumeFailed,
                    ..
                }) => t.resumed = Some(Resumption::Failed),
                _ => {}
            }
        }
        if msg.fin && t.connected {
            t.connected = false;
            if !(self.cfg.fault == Some(Fault::ClientKeepsTableAfterLogout) && t.logged_out) {
                t.client.connection_closed(NOW);
            }
        }
        // The server refused the resume (the session is gone): the client logs in
        // again with its password, on a new connection.
        if resuming && t.client.status() == Status::Idle {
            if t.connected {
                t.connected = false;
                w.fin(server_id(), t.conn);
            }
            if let Some(how) = t.login.clone() {
                self.login(i, t, how);
            }
        }
    }

    /// Carries out what the server decided, through the seeded fault if any, and checks
    /// every frame against `INV-VISIBILITY` as it leaves. `session_lost` says the step
    /// was a connection's close or a grace's end, after which sessions may end without
    /// a logout.
    fn drain_server(&self, s: &mut ServerState, session_lost: bool, o: &mut Out<Self>) {
        let mut w = Writes::default();
        // Connections between `resumed` and `synced` in this step's output.
        let mut catching_up = BTreeSet::new();
        while let Some(ev) = s.server.poll_event() {
            match ev {
                ServerEvent::Transmit { conn, frame } => {
                    let frames = self.server_fault(s, conn, frame, session_lost, &mut catching_up);
                    for (conn, frame) in frames {
                        if let Err(v) = invariant::frame_visible(&s.server, conn, &frame) {
                            s.leak.get_or_insert(v.detail);
                        }
                        let (terminal, gen) = split_conn(conn);
                        w.frame(terminal_actor(terminal), gen, frame);
                    }
                }
                ServerEvent::Close { conn } => {
                    let (terminal, gen) = split_conn(conn);
                    w.fin(terminal_actor(terminal), gen);
                }
                ServerEvent::Authenticate(req) => {
                    if self.cfg.async_auth {
                        let timer = ServerTimer::Auth(req.ticket.0);
                        o.set_timer(timer, stateright::actor::model_timeout());
                        s.pending.insert(req.ticket.0, req);
                    } else {
                        let verdict = self.verdict(s, &req);
                        let _ = s.server.complete_auth(req.ticket, verdict, s.now);
                    }
                }
                ServerEvent::Store(req) => {
                    // The store commits at once: acknowledgements follow in this step.
                    if let Some(u) = self.cfg.users.iter().position(|x| x.name == req.user) {
                        let list = s.contacts.entry(u).or_default();
                        if req.added {
                            list.insert(req.contact.clone());
                        } else {
                            list.remove(&req.contact);
                        }
                    }
                    let _ = s
                        .server
                        .complete_store(req.ticket, StoreOutcome::Stored, s.now);
                }
                _ => {}
            }
        }
        w.send(o);
    }

    /// The server-side seeded faults: what the network delivers of one frame the
    /// server transmits.
    fn server_fault(
        &self,
        s: &ServerState,
        conn: ConnId,
        frame: Bytes,
        session_lost: bool,
        catching_up: &mut BTreeSet<ConnId>,
    ) -> Vec<(ConnId, Bytes)> {
        let Some(fault) = self.cfg.fault else {
            return vec![(conn, frame)];
        };
        match (fault, server_message(&frame)) {
            (Fault::ServerForgetsOfflineOnDrop, Some(ServerMessage::Offline(_)))
                if session_lost =>
            {
                vec![]
            }
            (Fault::ServerPushesToNonContacts, Some(ServerMessage::Online(_))) => {
                let mut all: Vec<(ConnId, Bytes)> = s
                    .server
                    .sessions()
                    .filter_map(|v| Some((v.conn?, frame.clone())))
                    .collect();
                if !all.iter().any(|(c, _)| *c == conn) {
                    all.push((conn, frame));
                }
                all
            }
            (Fault::ResumeCatchUpLost, Some(ServerMessage::Resumed { .. })) => {
                catching_up.insert(conn);
                vec![(conn, frame)]
            }
            (Fault::ResumeCatchUpLost, Some(ServerMessage::Synced {})) => {
                catching_up.remove(&conn);
                vec![(conn, frame)]
            }
            (
                Fault::ResumeCatchUpLost,
                Some(
                    ServerMessage::Online(_)
                    | ServerMessage::Offline(_)
                    | ServerMessage::ContactAdded { .. }
                    | ServerMessage::ContactRemoved { .. },
                ),
            ) if catching_up.contains(&conn) => vec![],
            _ => vec![(conn, frame)],
        }
    }

    /// Writes what the client wants sent (through the seeded fault if any) and drops
    /// its events.
    fn flush_terminal(&self, t: &mut TerminalState, w: &mut Writes) {
        while let Some(mut frame) = t.client.poll_transmit() {
            if self.cfg.fault == Some(Fault::AcceptLosesCapabilities) {
                if let Some(ClientMessage::Accept {
                    call,
                    capabilities: Some(_),
                    media,
                }) = client_message(&frame)
                {
                    frame = encode_frame(&ClientMessage::Accept {
                        call,
                        capabilities: None,
                        media,
                    });
                }
            }
            if t.connected {
                w.frame(server_id(), t.conn, frame);
            }
        }
        while t.client.poll_event().is_some() {}
    }
}

/// Offers the user actions the terminal's client accepts now, each remaining menu entry
/// once. Capability changes are not offered while a call exists: an established call
/// keeps its parameters, and the model checks them against current capabilities.
fn offer(cfg: &ModelConfig, t: &TerminalState, o: &mut Out<PrecallActor>) {
    let c = &t.client;
    let online = c.status() == Status::Online && t.connected;
    // A new login waits for the old connection's close, as a real client waits for
    // its socket to close before it opens a new one. A detached session may be given
    // up for a new login.
    let idle = matches!(c.status(), Status::Idle | Status::Detached) && !t.connected;
    let quiet = c.calls().next().is_none() && c.dialing() == 0;
    let mut choices = BTreeSet::new();
    let menu = if cfg.in_order {
        &t.menu[..t.menu.len().min(1)]
    } else {
        &t.menu[..]
    };
    for a in menu {
        match a {
            Action::LoginCaps | Action::LoginTerminal if idle => {
                choices.insert(Choice::Do(a.clone()));
            }
            Action::Logout | Action::Drop | Action::Vanish if online => {
                choices.insert(Choice::Do(a.clone()));
            }
            // After a drop or a vanish: resume if the client can, or log in anew.
            Action::Reconnect if idle && t.login.is_some() && !t.logged_out => {
                if c.can_resume() {
                    choices.insert(Choice::Resume);
                }
                choices.insert(Choice::LoginAnew);
            }
            // The user adds someone not in the list the terminal shows, and removes
            // someone who is.
            Action::AddContact(u) | Action::RemoveContact(u) if online => {
                let listed = c.contacts().any(|x| *x == cfg.users[*u].name);
                if listed == matches!(a, Action::RemoveContact(_)) {
                    choices.insert(Choice::Do(a.clone()));
                }
            }
            Action::ChangeCaps if online && quiet => {
                choices.insert(Choice::Do(a.clone()));
            }
            Action::Call(u) if online && quiet => {
                let name = &cfg.users[*u].name;
                let targets = c.peers().filter(|(e, _)| e.user == *name);
                choices.extend(targets.map(|(e, _)| Choice::Call(e.clone())));
            }
            Action::Answer => {
                let incoming = c
                    .calls()
                    .filter(|(_, call)| call.state == CallState::Incoming);
                choices.extend(incoming.map(|(id, _)| Choice::Answer(*id)));
            }
            _ => {}
        }
    }
    if choices.is_empty() {
        o.remove_random("user");
    } else {
        o.choose_random("user", choices.into_iter().collect());
    }
}

// ----- properties ---------------------------------------------------------------------

type State = ActorModelState<PrecallActor>;

/// The server actor's state.
pub fn server_state(s: &State) -> &ServerState {
    match &*s.actor_states[0] {
        ActorState::Server(s) => s,
        ActorState::Terminal(_) => unreachable!("actor 0 is the server"),
    }
}

/// The terminal actors' states, in configuration order.
pub fn terminal_states(s: &State) -> impl Iterator<Item = &TerminalState> {
    s.actor_states.iter().filter_map(|a| match &**a {
        ActorState::Terminal(t) => Some(&**t),
        ActorState::Server(_) => None,
    })
}

/// Nothing in flight: no message on any link and no credential check pending.
pub fn quiescent(s: &State) -> bool {
    s.network.len() == 0 && server_state(s).pending.is_empty()
}

/// `INV-ONLINE-EXACT`, in every state where nothing is in flight.
pub fn prop_online_exact(
    _m: &ActorModel<PrecallActor, ModelConfig>,
    s: &State,
) -> Result<(), InvariantViolation> {
    if !quiescent(s) {
        return Ok(());
    }
    invariant::online_exact(
        &server_state(s).server,
        terminal_states(s).map(|t| &t.client),
    )
}

/// `INV-LOGOUT-EMPTY` (C5): a terminal whose user logged out, or whose connection is
/// closed and whose session is not detached, holds no capabilities, parameters,
/// contacts or calls; and the client core's own check (a detached session keeps its
/// table but no call).
pub fn prop_logout_empty(
    _m: &ActorModel<PrecallActor, ModelConfig>,
    s: &State,
) -> Result<(), InvariantViolation> {
    for t in terminal_states(s) {
        invariant::logout_empty(&t.client)?;
        let detached = t.client.status() == Status::Detached;
        let ended =
            (t.logged_out && t.client.status() != Status::LoggingIn) || (!t.connected && !detached);
        let held = t.client.peers().count() + t.client.calls().count();
        if ended && held > 0 {
            return Err(InvariantViolation {
                id: INV_LOGOUT_EMPTY,
                detail: format!("a terminal whose session ended holds {held} entries"),
            });
        }
    }
    Ok(())
}

/// `INV-CALL-AGREE`: a call established at both ends has mirrored parameters, equal to
/// the negotiation over both terminals' current capabilities.
pub fn prop_calls_agree(
    _m: &ActorModel<PrecallActor, ModelConfig>,
    s: &State,
) -> Result<(), InvariantViolation> {
    let clients: Vec<&Client> = terminal_states(s).map(|t| &t.client).collect();
    invariant::calls_agree(clients.iter().copied())?;
    for (caller, callee, _) in both_ends(&clients) {
        let (Some(a), Some(b)) = (caller.0.capabilities(), callee.0.capabilities()) else {
            continue;
        };
        if caller.1.params.as_ref() != Some(&negotiate_pair(a, b)) {
            return Err(InvariantViolation {
                id: INV_CALL_AGREE,
                detail: "parameters differ from the negotiation over current capabilities".into(),
            });
        }
    }
    Ok(())
}

/// One end of a call: the client and its call.
type End<'a> = (&'a Client, &'a crate::client::Call);

/// Every call established at both ends: (caller's end, callee's end, whether any
/// capabilities crossed the wire at either end).
fn both_ends<'a>(clients: &[&'a Client]) -> Vec<(End<'a>, End<'a>, bool)> {
    let mut out = Vec::new();
    for a in clients {
        for (id, ca) in a.calls() {
            if ca.role != Role::Caller || ca.state != CallState::Established {
                continue;
            }
            for b in clients {
                if let Some((_, cb)) = b.calls().find(|(i, c)| {
                    *i == id && c.role == Role::Callee && c.state == CallState::Established
                }) {
                    out.push(((*a, ca), (*b, cb), ca.caps_on_wire || cb.caps_on_wire));
                }
            }
        }
    }
    out
}

fn established_on(_m: &ActorModel<PrecallActor, ModelConfig>, s: &State, fallback: bool) -> bool {
    let clients: Vec<&Client> = terminal_states(s).map(|t| &t.client).collect();
    both_ends(&clients)
        .iter()
        .any(|(_, _, caps)| *caps == fallback)
}

fn all_online_complete(m: &ActorModel<PrecallActor, ModelConfig>, s: &State) -> bool {
    quiescent(s)
        && terminal_states(s).all(|t| t.client.is_synced())
        && prop_online_exact(m, s).is_ok()
}

/// A terminal whose latest resume ended as `how` is online again with a complete
/// table, nothing is in flight, and every table is exact.
fn back_online_after(
    m: &ActorModel<PrecallActor, ModelConfig>,
    s: &State,
    how: Resumption,
) -> bool {
    quiescent(s)
        && terminal_states(s).any(|t| t.resumed == Some(how) && t.client.is_synced())
        && prop_online_exact(m, s).is_ok()
}
