//! A server core with many users logged in, driven the way an embedder drives it:
//! frames in through [`Server::receive`], credential verdicts through
//! [`Server::complete_auth`], and every [`ServerEvent`] drained with
//! [`Server::poll_event`] (the frames handed to `black_box` as if written).
//!
//! Shared by the `fanout` and `login_snapshot` benches.

// Each bench uses part of it.
#![allow(dead_code)]

use std::hint::black_box;

use precall_protocol::codec::encode_frame;
use precall_protocol::server::Limits;
use precall_protocol::sim::sample_caps;
use precall_protocol::{
    AuthVerdict, Capabilities, ClientMessage, ConnId, LoginWith, Password, ReqId, Server,
    ServerConfig, ServerEvent, SessionId, Time, UserId, PROTOCOL_VERSION,
};

/// The server's clock: constant, so no deadline ever comes due.
pub const NOW: Time = Time(1_000);

/// Watcher user `i`.
pub fn watcher(i: usize) -> UserId {
    UserId::new(format!("watcher{i:04}@example.org")).unwrap()
}

/// The user whose presence changes.
pub fn subject() -> UserId {
    UserId::new("subject@example.org").unwrap()
}

/// Capabilities, two versions (an `update_caps` alternates between them).
pub fn caps(version: usize) -> Capabilities {
    sample_caps(&["h264", "vp8", "vp9"], [1280, 1920][version % 2], 30)
}

/// The defaults, with the per-user session limit raised to `sessions_per_user` and the
/// abuse limits a benchmark's burst would hit switched off (zero disables a limit).
pub fn config(sessions_per_user: usize) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.max_sessions_per_user =
        sessions_per_user.max(ServerConfig::default().max_sessions_per_user);
    let mut limits = Limits::default();
    limits.max_caps_updates = 0;
    limits.max_frames_per_second = 0;
    limits.max_connections = 0;
    limits.max_auth_checks_running = 0;
    config.limits = limits;
    config
}

/// What a drain saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// `Transmit` events (frames written).
    pub frames: usize,
    /// Every event.
    pub events: usize,
}

/// Drains every event as an embedder does, writing frames to nowhere.
pub fn drain(server: &mut Server) -> Drained {
    let mut d = Drained::default();
    while let Some(event) = server.poll_event() {
        d.events += 1;
        if let ServerEvent::Transmit { conn, frame } = event {
            d.frames += 1;
            black_box((conn, frame));
        }
    }
    d
}

/// A server and the connection numbers it has used.
pub struct World {
    /// The core.
    pub server: Server,
    next_conn: u64,
}

impl World {
    /// An empty server.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            server: Server::new(config),
            next_conn: 1,
        }
    }

    /// Opens a connection and sends `login`; returns the connection and the ticket of
    /// the credential check the core asks for (every other event drained).
    pub fn begin_login(
        &mut self,
        user: &UserId,
        caps: Capabilities,
    ) -> (ConnId, precall_protocol::AuthTicket) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.server.connect(conn, NOW).unwrap();
        let login = ClientMessage::Login {
            version: PROTOCOL_VERSION,
            user: user.clone(),
            password: Password::new("pw").unwrap(),
            with: LoginWith::Capabilities(caps),
        };
        self.server.receive(conn, &encode_frame(&login), NOW);
        let mut ticket = None;
        while let Some(event) = self.server.poll_event() {
            if let ServerEvent::Authenticate(req) = event {
                ticket = Some(req.ticket);
            }
        }
        (conn, ticket.expect("a credential check"))
    }

    /// Logs `user` in on a new connection with `contacts`; returns the connection and
    /// session.
    pub fn log_in(&mut self, user: &UserId, contacts: Vec<UserId>) -> (ConnId, SessionId) {
        let (conn, ticket) = self.begin_login(user, caps(0));
        self.server
            .complete_auth(
                ticket,
                AuthVerdict::Accepted {
                    contacts,
                    registered: None,
                },
                NOW,
            )
            .unwrap();
        drain(&mut self.server);
        (conn, self.server.session_of(conn).expect("logged in"))
    }

    /// Logs out the session on `conn` (the core closes the connection).
    pub fn log_out(&mut self, conn: ConnId) -> Drained {
        self.server
            .receive(conn, &encode_frame(&ClientMessage::Logout {}), NOW);
        drain(&mut self.server)
    }

    /// `users` watcher users, each listing the subject and logged in on
    /// `sessions_per_user` terminals, and the subject listing them all, logged in last.
    /// Returns the subject's connection.
    pub fn watched_subject(&mut self, users: usize, sessions_per_user: usize) -> ConnId {
        for i in 0..users {
            for _ in 0..sessions_per_user {
                self.log_in(&watcher(i), vec![subject()]);
            }
        }
        let (conn, _) = self.log_in(&subject(), (0..users).map(watcher).collect());
        conn
    }
}

/// An `update_caps` frame with capabilities `version`.
pub fn update_caps_frame(req: u32, version: usize) -> bytes::Bytes {
    encode_frame(&ClientMessage::UpdateCaps {
        req: ReqId(req),
        capabilities: caps(version),
    })
}
