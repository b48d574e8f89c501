//! The wiring of the facade's host tests: the real server core (`Server`, sans-IO) with
//! the in-memory credential store of the `testing` feature (`sim::Directory`), and any
//! number of terminals, each either the facade's [`PrecallClient`] or a native core
//! [`Client`]. Bytes move between them in memory as a socket would, under a simulated
//! clock ([`World::now`], milliseconds).
//!
//! The expected values are computed from the core with this file's own conversions
//! ([`ffi_caps`], [`ffi_params`], [`ffi_event`], ...), written independently of the
//! facade's, so that a wrong mapping in the facade shows as a difference.

// Each test uses its own subset.
#![allow(dead_code)]

use std::sync::Arc;

use precall_ffi::{
    Bandwidth, CallParams, Camera, Capabilities, ClientConfig, CpuClass, Direction, Endpoint,
    Event, LoginWith, PrecallClient, Size, StreamParams,
};
use precall_protocol as core;
use precall_protocol::sim::{sample_caps, Directory};
use precall_protocol::{
    Client, ClientEvent, ConnId, Password, Server, ServerConfig, ServerEvent, StoreOutcome, Time,
    UserId,
};

/// Alice's terminal: h264 and vp8, 1280×720, a 30 fps camera.
pub fn alice_core_caps() -> core::Capabilities {
    sample_caps(&["h264", "vp8"], 1280, 30)
}

/// Bob's terminal: h264, 640×360, a 15 fps camera.
pub fn bob_core_caps() -> core::Capabilities {
    sample_caps(&["h264"], 640, 15)
}

/// Alice's capabilities as the facade takes them.
pub fn alice_caps() -> Capabilities {
    ffi_caps(&alice_core_caps())
}

/// Bob's capabilities as the facade takes them.
pub fn bob_caps() -> Capabilities {
    ffi_caps(&bob_core_caps())
}

/// `user`'s password in the store.
pub fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// A configuration logging `user` in with `caps`, the core's timers.
pub fn config(user: &str, caps: Capabilities) -> ClientConfig {
    ClientConfig {
        user: user.to_owned(),
        password: password(user),
        login: LoginWith::Capabilities { capabilities: caps },
        ping_interval_ms: None,
        max_frame: None,
    }
}

/// A facade client for `user` with `caps`.
pub fn ffi_client(user: &str, caps: Capabilities) -> Arc<PrecallClient> {
    PrecallClient::new(config(user, caps)).expect("a valid configuration")
}

fn uid(s: &str) -> UserId {
    UserId::new(s).expect("test user id")
}

// ---- the test's own conversions from the core's values -------------------------------

/// The facade's CPU class for a core one (by name).
pub fn ffi_cpu(c: core::CpuClass) -> CpuClass {
    match serde_json::to_value(c).unwrap().as_str().unwrap() {
        "low" => CpuClass::Low,
        "mid" => CpuClass::Mid,
        "high" => CpuClass::High,
        "ultra" => CpuClass::Ultra,
        other => panic!("a class this test does not know: {other}"),
    }
}

/// The facade's record for core capabilities, read back from their wire JSON.
pub fn ffi_caps(c: &core::Capabilities) -> Capabilities {
    let v = serde_json::to_value(c).unwrap();
    let size = |s: &serde_json::Value| Size {
        width: s["width"].as_u64().unwrap() as u16,
        height: s["height"].as_u64().unwrap() as u16,
    };
    let names = |l: &serde_json::Value| -> Vec<String> {
        l.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    Capabilities {
        encode: names(&v["encode"]),
        decode: names(&v["decode"]),
        screen: size(&v["screen"]),
        camera: v.get("camera").filter(|c| !c.is_null()).map(|c| Camera {
            max: size(&c["max"]),
            max_fps: c["max_fps"].as_u64().unwrap() as u16,
        }),
        cpu: ffi_cpu(c.cpu()),
        bandwidth: Bandwidth {
            up_kbps: v["bandwidth"]["up_kbps"].as_u64().unwrap() as u32,
            down_kbps: v["bandwidth"]["down_kbps"].as_u64().unwrap() as u32,
        },
    }
}

/// The wire JSON of the facade's capabilities, written by hand, to ask the core's
/// decoder whether it accepts them.
pub fn caps_json(c: &Capabilities) -> serde_json::Value {
    let size = |s: &Size| serde_json::json!({"width": s.width, "height": s.height});
    let cpu = match c.cpu {
        CpuClass::Low => "low",
        CpuClass::Mid => "mid",
        CpuClass::High => "high",
        CpuClass::Ultra => "ultra",
    };
    let mut v = serde_json::json!({
        "encode": c.encode, "decode": c.decode, "screen": size(&c.screen), "cpu": cpu,
        "bandwidth": {"up_kbps": c.bandwidth.up_kbps, "down_kbps": c.bandwidth.down_kbps},
    });
    if let Some(cam) = &c.camera {
        v["camera"] = serde_json::json!({"max": size(&cam.max), "max_fps": cam.max_fps});
    }
    v
}

/// The wire's word for a serde unit variant.
pub fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v).unwrap() {
        serde_json::Value::String(s) => s,
        other => panic!("not a word: {other}"),
    }
}

fn ffi_direction(d: &core::Direction) -> Direction {
    match d {
        core::Direction::Video(p) => Direction::Video {
            params: StreamParams {
                codec: p.codec.as_str().to_owned(),
                width: p.width,
                height: p.height,
                fps: p.fps,
                bitrate_kbps: p.bitrate_kbps,
            },
        },
        core::Direction::Off(why) => Direction::Off { reason: word(why) },
    }
}

/// The facade's record for core call parameters.
pub fn ffi_params(p: &core::CallParams) -> CallParams {
    CallParams {
        send: ffi_direction(&p.send),
        recv: ffi_direction(&p.recv),
    }
}

/// The facade's record for a core endpoint.
pub fn ffi_endpoint(e: &core::Endpoint) -> Endpoint {
    Endpoint {
        user: e.user.as_str().to_owned(),
        session: e.session.0,
    }
}

/// The parameters the same call has from the other end.
pub fn mirrored(p: &CallParams) -> CallParams {
    CallParams {
        send: p.recv.clone(),
        recv: p.send.clone(),
    }
}

/// The facade's event for a core event, for the kinds the tests compare.
pub fn ffi_event(e: &ClientEvent) -> Event {
    match e {
        ClientEvent::LoggedIn { session } => Event::LoggedIn { session: session.0 },
        ClientEvent::Synced => Event::Synced,
        ClientEvent::Detached => Event::Detached,
        ClientEvent::LoggedOut => Event::LoggedOut,
        ClientEvent::Resumed { session, snapshot } => Event::Resumed {
            session: session.0,
            snapshot: *snapshot,
        },
        ClientEvent::PeerOnline { endpoint, params } => Event::PeerOnline {
            peer: ffi_endpoint(endpoint),
            params: ffi_params(params),
        },
        ClientEvent::PeerUpdated { endpoint, params } => Event::PeerUpdated {
            peer: ffi_endpoint(endpoint),
            params: ffi_params(params),
        },
        ClientEvent::PeerOffline { endpoint } => Event::PeerOffline {
            peer: ffi_endpoint(endpoint),
        },
        ClientEvent::CallEnded { call, reason } => Event::CallEnded {
            call: call.0,
            reason: word(reason),
        },
        other => panic!("the tests do not compare {other:?}"),
    }
}

// ---- frames ---------------------------------------------------------------------------

/// The JSON payload of one whole frame, after checking its length prefix.
pub fn frame_json(frame: &[u8]) -> serde_json::Value {
    assert!(frame.len() > 4, "a frame: {frame:?}");
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4, "the length prefix counts the payload");
    serde_json::from_slice(&frame[4..]).expect("a JSON payload")
}

/// One whole frame carrying `payload`.
pub fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Every event queued at a facade client.
pub fn drain(c: &PrecallClient) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

// ---- the world --------------------------------------------------------------------------

/// A native core client and every event it emitted.
pub struct Native {
    /// The client.
    pub client: Client,
    /// Its events, in order.
    pub events: Vec<ClientEvent>,
}

/// A terminal of the world.
pub enum Term {
    /// The facade under test.
    Ffi(Arc<PrecallClient>),
    /// A native core client.
    Core(Native),
}

struct Slot {
    name: String,
    term: Term,
    conn: Option<ConnId>,
    errors: Vec<String>,
}

/// A hook called with a terminal's name and each frame the server delivered to it.
pub type Observer = Box<dyn FnMut(&str, &[u8])>;

/// The server core, its store, the terminals and the clock.
pub struct World {
    /// The server core.
    pub server: Server,
    /// Its credential store: alice, bob and carol; alice and bob list each other.
    pub directory: Directory,
    /// The time every input is given, in milliseconds.
    pub now: u64,
    next_conn: u64,
    slots: Vec<Slot>,
    /// Called after each frame the server delivered, with the terminal's name.
    pub observer: Option<Observer>,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// A default server with the three accounts; nobody connected.
    pub fn new() -> Self {
        Self::with_config(ServerConfig::default())
    }

    /// The same with the given server configuration.
    pub fn with_config(config: ServerConfig) -> Self {
        let mut directory = Directory::default();
        for u in ["alice", "bob", "carol"] {
            directory.add_user(&uid(u), &password(u));
        }
        directory.befriend(&uid("alice"), &uid("bob"));
        Self {
            server: Server::new(config),
            directory,
            now: 1_000,
            next_conn: 1,
            slots: Vec::new(),
            observer: None,
        }
    }

    /// The clock as the core's time.
    pub fn time(&self) -> Time {
        Time(self.now)
    }

    fn slot(&mut self, name: &str) -> &mut Slot {
        self.slots
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no terminal {name}"))
    }

    /// Adds a facade terminal (not connected); returns it.
    pub fn add_ffi(&mut self, name: &str, client: Arc<PrecallClient>) -> Arc<PrecallClient> {
        self.slots.push(Slot {
            name: name.to_owned(),
            term: Term::Ffi(client.clone()),
            conn: None,
            errors: Vec::new(),
        });
        client
    }

    /// Adds a native core terminal (not connected).
    pub fn add_core(&mut self, name: &str) {
        self.slots.push(Slot {
            name: name.to_owned(),
            term: Term::Core(Native {
                client: Client::new(core::ClientConfig::default()),
                events: Vec::new(),
            }),
            conn: None,
            errors: Vec::new(),
        });
    }

    /// The native terminal `name`.
    pub fn core(&mut self, name: &str) -> &mut Native {
        match &mut self.slot(name).term {
            Term::Core(n) => n,
            Term::Ffi(_) => panic!("{name} is a facade terminal"),
        }
    }

    /// Opens a new connection for `name` (replacing any).
    pub fn connect(&mut self, name: &str) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let now = self.time();
        self.server
            .connect(conn, now)
            .expect("a fresh connection id");
        self.slot(name).conn = Some(conn);
    }

    /// Whether `name` has a connection.
    pub fn connected(&mut self, name: &str) -> bool {
        self.slot(name).conn.is_some()
    }

    /// Connects the native terminal `name` and logs it in with `caps`, then pumps.
    pub fn core_login(&mut self, name: &str, caps: core::Capabilities) {
        self.connect(name);
        let now = self.time();
        let pw = Password::new(password(name)).unwrap();
        self.core(name)
            .client
            .login(uid(name), pw, core::LoginWith::Capabilities(caps), now)
            .expect("login accepted");
        self.pump();
    }

    /// Connects the facade terminal `name`, logs it in, pumps.
    pub fn ffi_login(&mut self, name: &str) {
        self.connect(name);
        let now = self.now;
        match &self.slot(name).term {
            Term::Ffi(c) => c.login(now).expect("login accepted"),
            Term::Core(_) => panic!("{name} is native"),
        }
        self.pump();
    }

    /// Moves the frames `name` has queued to the server, without letting the server's
    /// answers back: to order inputs precisely.
    pub fn send_up(&mut self, name: &str) -> bool {
        let now = self.time();
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.name == name)
            .expect("a terminal");
        let mut moved = false;
        loop {
            let frame = match &mut slot.term {
                Term::Ffi(c) => c.poll_transmit(),
                Term::Core(n) => n.client.poll_transmit().map(|b| b.to_vec()),
            };
            let Some(frame) = frame else { break };
            moved = true;
            if let Some(conn) = slot.conn {
                self.server.receive(conn, &frame, now);
            }
        }
        moved
    }

    /// Moves frames every way until nothing is in flight: the terminals' frames to the
    /// server, the server's to them; credential checks and contact-list changes
    /// answered at once from the store. Facade events stay queued for the test; native
    /// events are collected in [`Native::events`].
    pub fn pump(&mut self) {
        loop {
            let names: Vec<String> = self.slots.iter().map(|s| s.name.clone()).collect();
            let mut moved = false;
            for n in &names {
                moved |= self.send_up(n);
            }
            while let Some(ev) = self.server.poll_event() {
                moved = true;
                self.dispatch(ev);
            }
            for slot in &mut self.slots {
                if let Term::Core(n) = &mut slot.term {
                    while let Some(ev) = n.client.poll_event() {
                        n.events.push(ev);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn dispatch(&mut self, ev: ServerEvent) {
        let now = self.now;
        match ev {
            ServerEvent::Transmit { conn, frame } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.conn == Some(conn)) {
                    let r = match &mut slot.term {
                        Term::Ffi(c) => c.receive(frame.to_vec(), now).map_err(|e| e.to_string()),
                        Term::Core(n) => n
                            .client
                            .receive(&frame, Time(now))
                            .map_err(|e| e.to_string()),
                    };
                    if let Err(e) = r {
                        slot.errors.push(e);
                    }
                    if let Some(observe) = &mut self.observer {
                        observe(&slot.name, &frame);
                    }
                }
            }
            ServerEvent::Close { conn } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.conn == Some(conn)) {
                    slot.conn = None;
                    match &mut slot.term {
                        Term::Ffi(c) => c.connection_closed(now),
                        Term::Core(n) => n.client.connection_closed(Time(now)),
                    }
                }
            }
            ServerEvent::Authenticate(req) => {
                let verdict = self.directory.verdict(&req);
                self.server
                    .complete_auth(req.ticket, verdict, Time(now))
                    .expect("a pending check");
            }
            ServerEvent::Store(req) => {
                self.server
                    .complete_store(req.ticket, StoreOutcome::Stored, Time(now))
                    .expect("a pending store");
            }
            _ => {}
        }
    }

    /// `name`'s connection drops, as a transport reports it to both ends; no pump.
    pub fn drop_connection(&mut self, name: &str) {
        let now = self.now;
        let slot = self.slot(name);
        let conn = slot.conn.take();
        match &mut slot.term {
            Term::Ffi(c) => c.connection_closed(now),
            Term::Core(n) => n.client.connection_closed(Time(now)),
        }
        if let Some(conn) = conn {
            self.server.connection_closed(conn, Time(now));
        }
    }

    /// Sends one frame to the server on `name`'s connection, as if `name` wrote it.
    pub fn inject(&mut self, name: &str, frame: &[u8]) {
        let now = self.time();
        let conn = self.slot(name).conn.expect("connected");
        self.server.receive(conn, frame, now);
    }

    /// What `receive` refused at `name` while pumping.
    pub fn errors(&mut self, name: &str) -> Vec<String> {
        self.slot(name).errors.clone()
    }
}
