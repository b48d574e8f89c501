//! Helpers shared by the protocol's integration tests: identifiers and logins from
//! literals, the capability sets a test does not care about, servers with given limits,
//! and the server core's events drained and its frames decoded.
//!
//! A test file includes it with `mod common;` and `use common::*;`. What only one file
//! needs (its world, its bookkeeping of what the server did) stays in that file.

// Each test crate uses a different subset of this module.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use precall_protocol::codec::{decode_message, encode_frame, HEADER_LEN};
use precall_protocol::server::{AuthVerdict, Limits};
use precall_protocol::sim::{sample_caps, Directory, Sim};
use precall_protocol::{
    Capabilities, ClientMessage, ConnId, Endpoint, LoginWith, Password, Server, ServerConfig,
    ServerEvent, ServerMessage, SessionId, TerminalId, UserId, PROTOCOL_VERSION,
};

// ----- identifiers -----------------------------------------------------------------

/// A user id from a literal (panics on an invalid one).
pub fn u(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// User ids from literals, in order.
pub fn users(list: &[&str]) -> Vec<UserId> {
    list.iter().map(|s| u(s)).collect()
}

/// A password from a literal.
pub fn pw(s: &str) -> Password {
    Password::new(s).unwrap()
}

/// A terminal id from a literal.
pub fn tid(s: &str) -> TerminalId {
    TerminalId::new(s).unwrap()
}

/// The endpoint of `user`'s session number `session`.
pub fn ep(user: &str, session: u64) -> Endpoint {
    Endpoint {
        user: u(user),
        session: SessionId(session),
    }
}

/// Connection ids for the tests that drive the server core alone.
pub const C1: ConnId = ConnId(1);
/// See [`C1`].
pub const C2: ConnId = ConnId(2);
/// See [`C1`].
pub const C3: ConnId = ConnId(3);
/// See [`C1`].
pub const C4: ConnId = ConnId(4);
/// See [`C1`].
pub const C5: ConnId = ConnId(5);

/// Source addresses, for the limits counted per source.
pub const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
/// See [`A`].
pub const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
/// See [`A`].
pub const C: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));

// ----- capabilities ----------------------------------------------------------------

/// A terminal whose capabilities do not matter to the test: h264 only, 1280 wide,
/// 30 fps.
pub fn plain_caps() -> Capabilities {
    sample_caps(&["h264"], 1280, 30)
}

/// h264 and vp8, `width` pixels wide, 30 fps: capability sets that differ by width
/// only, to see which one a peer holds.
pub fn caps_of(width: u16) -> Capabilities {
    sample_caps(&["h264", "vp8"], width, 30)
}

// ----- logins ----------------------------------------------------------------------

/// A `login` of this protocol version.
pub fn login(user: &str, password: &str, with: LoginWith) -> ClientMessage {
    ClientMessage::Login {
        version: PROTOCOL_VERSION,
        user: u(user),
        password: pw(password),
        with,
    }
}

/// A [`login`] in its frame.
pub fn login_frame(user: &str, password: &str, with: LoginWith) -> Bytes {
    encode_frame(&login(user, password, with))
}

/// The frame of a login with [`plain_caps`].
pub fn plain_login_frame(user: &str, password: &str) -> Bytes {
    login_frame(user, password, LoginWith::Capabilities(plain_caps()))
}

/// The verdict of a successful credential check: the account's `contacts`, and the
/// capabilities of the registered terminal it logs in with, if any.
pub fn accepted(contacts: &[&str], registered: Option<Capabilities>) -> AuthVerdict {
    AuthVerdict::Accepted {
        contacts: users(contacts),
        registered,
    }
}

// ----- the server core alone -------------------------------------------------------

/// The default server configuration with these abuse limits.
pub fn config_with_limits(limits: Limits) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.limits = limits;
    config
}

/// A server core with the default configuration and these abuse limits.
pub fn server(limits: Limits) -> Server {
    Server::new(config_with_limits(limits))
}

/// Every event the server core has ready, in order.
pub fn drain(s: &mut Server) -> Vec<ServerEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The server message in one whole frame (the length header is checked).
pub fn decode_server(frame: &[u8]) -> ServerMessage {
    let len = u32::from_be_bytes(frame[..HEADER_LEN].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - HEADER_LEN, "one whole frame");
    decode_message::<ServerMessage>(&frame[HEADER_LEN..]).expect("server frame decodes")
}

/// The client message in one whole frame (the length header is checked).
pub fn decode_client(frame: &[u8]) -> ClientMessage {
    let len = u32::from_be_bytes(frame[..HEADER_LEN].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - HEADER_LEN, "one whole frame");
    decode_message::<ClientMessage>(&frame[HEADER_LEN..]).expect("client frame decodes")
}

/// The messages among `ev` transmitted to `conn`, decoded.
pub fn msgs_to(ev: &[ServerEvent], conn: ConnId) -> Vec<ServerMessage> {
    ev.iter()
        .filter_map(|e| match e {
            ServerEvent::Transmit { conn: c, frame } if *c == conn => Some(decode_server(frame)),
            _ => None,
        })
        .collect()
}

// ----- the in-memory system --------------------------------------------------------

/// `user` lists `contact` without being listed back (a one-sided roster).
pub fn lists(d: &mut Directory, user: &UserId, contact: &UserId) {
    d.accounts
        .get_mut(user)
        .unwrap()
        .contacts
        .insert(contact.clone());
}

/// Asserts that no client of the simulation recorded a protocol violation.
pub fn no_violations(sim: &Sim) {
    assert!(
        sim.recorded_violations().is_empty(),
        "{:?}",
        sim.recorded_violations()
    );
}

/// The frames the server sent to `conn` since `mark` (an index into `sim.sent`).
pub fn frames_since(sim: &Sim, mark: usize, conn: ConnId) -> Vec<Bytes> {
    sim.sent[mark..]
        .iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, f)| f.clone())
        .collect()
}

/// The messages the server sent to `conn` since `mark`, decoded.
pub fn sent_since(sim: &Sim, mark: usize, conn: ConnId) -> Vec<ServerMessage> {
    frames_since(sim, mark, conn)
        .iter()
        .map(|f| decode_server(f))
        .collect()
}
