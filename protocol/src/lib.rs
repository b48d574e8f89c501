//! # precall-protocol
//!
//! The sans-IO core of **precall**, a presence protocol that carries each terminal's
//! video capabilities inside the "contact is online" push, so that every client has
//! the parameters of a call with each online contact computed *before* anyone presses
//! "call" (patent CN103037195A, claims C1–C18). The normative description is
//! `spec/protocol.md` in the repository; this crate is its reference implementation.
//!
//! ## Design
//!
//! Like `quinn-proto` and `str0m`, the crate does no I/O, reads no clock, draws no
//! random numbers and keeps no global state. Each state machine is one plain value:
//!
//! - **events in**: bytes received, connections opened and closed, credential verdicts,
//!   commands from the application, and the current [`time::Time`];
//! - **outputs out**: frames to write, connections to close, credential checks to run,
//!   events for the application, and the next deadline (`poll_timeout`).
//!
//! The embedder (the tokio binaries in `reference-server/` and `reference-client/`, the
//! stateright model behind the `model` feature, the fuzz targets, the tests) moves bytes
//! and time in and out; every protocol decision is made here, once.
//!
//! ## Modules
//!
//! - [`ids`]: validated identifiers (users, terminals, codecs, sessions, calls).
//! - [`caps`]: capabilities (built with [`Capabilities::builder`]), their fingerprint,
//!   and call parameters.
//! - [`mod@negotiate`]: the deterministic rule from two capability sets to call parameters.
//! - [`message`]: every message; [`codec`]: framing and the canonical JSON encoding.
//! - [`client`]: [`Client`], one terminal's session and its parameter table (one file
//!   per concern: `config`, `events`, `session`, `table`, `call`).
//! - [`server`]: [`Server`], sessions, presence fan-out and call relay (`config`,
//!   `events`, `input`, `admission`, `session`, `users`, `roster`, `call`, and `cluster`:
//!   sessions of other nodes of a cluster, spec "Clustering"). User names
//!   are interned (`users`): each name the server holds (a user online, or listed by
//!   one) has a dense number and is kept once, contact lists are arrays of numbers,
//!   and each online user keeps the list of users entitled to see it, in name order,
//!   so a presence change walks its watchers without a lookup or a string comparison.
//!   Numbers of names nobody holds any more are reused, so memory follows the users
//!   online. The numbering is internal: nothing a client or the embedder sees depends
//!   on it (the order of the snapshot and of the fan-out is the names' order), and the
//!   server compares and hashes by names, so the model checks the same state space.
//! - [`resume`]: resumable sessions' tokens and the reconnection [`Backoff`].
//! - [`time`]: [`Time`], and [`Epoch`] to map an `Instant` clock to it and back.
//! - [`error`]: typed errors and the wire's error codes.
//!
//! Behind features, what only tests need (the crate an embedder ships has none of it):
//! `testing` turns on `sim` (a deterministic in-memory network wiring one server to
//! several clients), `invariant` (the spec's invariants as executable checks over a
//! server and its clients) and `properties` (negotiation's properties as checkers);
//! `arbitrary` adds `arbitrary` inputs for every message and the fuzz targets' bodies
//! (`fuzz`); `model` adds the stateright model of the real state machines (`model`).
//!
//! ## API conventions
//!
//! - Every `poll_*` is `#[must_use]`: what it returns is work the embedder must do.
//! - Public enums the wire or a later version may extend (events, messages, error
//!   codes, errors, states) are `#[non_exhaustive]`: match them with a `_` arm. Config
//!   structs ([`ServerConfig`], [`server::Limits`], [`ClientConfig`], [`ResumeConfig`])
//!   are too: start from `Default::default()` and set fields.
//! - Commands return typed errors ([`ClientError`], [`server::ServerError`],
//!   [`InvalidValue`]); nothing panics on input.
//! - Acknowledgement events carry the request tag ([`ReqId`]) the command returned.
//!
//! ## The flow, in one paragraph
//!
//! A client logs in with its capabilities (C2) or a registered terminal identifier
//! (C3). The server checks the credentials through the embedder, looks the identifier
//! up if needed (C7, C8), answers with a snapshot of the online terminals the user may
//! see, and pushes `online` with the new terminal's capabilities to every entitled
//! watcher (C6). Each client, on `online`, stores the capabilities and computes the
//! call parameters at once (C1); on `offline` (C9) it deletes them (C4); on its own
//! logout it deletes everything (C5). A call then carries two 128-bit fingerprints
//! instead of capabilities; the callee confirms them against its own table and accepts
//! in one round trip. Capabilities travel in the call signalling only when the callee's
//! own capabilities changed since the caller's table was filled (the callee's answer
//! carries them), or, as a safety net a conforming server never triggers, when the
//! callee's view of the caller does not match the digest (the fallback paths).
//!
//! ## Embedding, in a page
//!
//! ```
//! use precall_protocol::*;
//!
//! let mut server = Server::new(ServerConfig::default());
//! let mut alice = Client::new(ClientConfig::default());
//! let (conn, now) = (ConnId(1), Time(0));
//!
//! // The transport accepted a connection; the application logs in (claim C2).
//! server.connect(conn, now).unwrap();
//! let caps = Capabilities::builder()
//!     .codecs(["h264", "vp8"])
//!     .screen(1280, 720)
//!     .camera(1280, 720, 30)
//!     .bandwidth(2_000, 4_000)
//!     .build()?;
//! alice
//!     .login(UserId::new("alice")?, Password::new("pw")?, LoginWith::Capabilities(caps), now)
//!     .unwrap();
//!
//! // Pump: client frames to the server, server events to the transport.
//! while let Some(frame) = alice.poll_transmit() {
//!     server.receive(conn, &frame, now);
//! }
//! while let Some(event) = server.poll_event() {
//!     match event {
//!         // Verify the password off the event loop, then report the verdict.
//!         ServerEvent::Authenticate(req) => server
//!             .complete_auth(req.ticket, AuthVerdict::Accepted { contacts: vec![], registered: None }, now)
//!             .unwrap(),
//!         ServerEvent::Transmit { frame, .. } => alice.receive(&frame, now).unwrap(),
//!         _ => {}
//!     }
//! }
//! assert!(alice.is_synced());
//! # Ok::<(), InvalidValue>(())
//! ```
//!
//! ## Driving a client over a socket
//!
//! A [`Client`] is driven by four kinds of input, each followed by the same drain:
//!
//! | input | call |
//! |---|---|
//! | a command from the application | [`Client::login`], [`Client::place_call`], [`Client::answer`], ... |
//! | bytes read from the socket | [`Client::receive`] |
//! | the deadline from [`Client::poll_timeout`] passed | [`Client::handle_timeout`] |
//! | the socket closed or failed (or `receive` returned an error) | [`Client::connection_closed`] |
//!
//! **The polling rule.** After *every* input: write every [`Client::poll_transmit`]
//! frame to the socket, in order; handle every [`Client::poll_event`] (an event may
//! lead to a command, which is an input again); then ask [`Client::poll_timeout`] for
//! the next deadline and wait for bytes until then. Nothing happens between inputs, so
//! nothing is missed this way. Time is always passed in: map your clock with an
//! [`Epoch`].
//!
//! ```no_run
//! use std::io::{ErrorKind, Read, Write};
//! use std::net::TcpStream;
//! use std::time::{Duration, Instant};
//! use precall_protocol::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let epoch = Epoch::new(Instant::now());
//! let now = || epoch.time(Instant::now());
//! let mut socket = TcpStream::connect("127.0.0.1:7700")?;
//! let mut client = Client::new(ClientConfig::default());
//! let caps = Capabilities::builder().codecs(["h264"]).screen(1280, 720).bandwidth(2_000, 2_000).build()?;
//! client.login(UserId::new("alice")?, Password::new("pw")?, LoginWith::Capabilities(caps), now())?;
//! let mut buf = [0u8; 16 * 1024];
//! loop {
//!     // 1. Frames out, in order.
//!     while let Some(frame) = client.poll_transmit() {
//!         socket.write_all(&frame)?;
//!     }
//!     // 2. Events to the application.
//!     while let Some(event) = client.poll_event() {
//!         match event {
//!             ClientEvent::PeerOnline { endpoint, params } => println!("{endpoint}: {params:?}"),
//!             ClientEvent::IncomingCall { call, .. } => client.answer(call, true, now())?,
//!             ClientEvent::Detached | ClientEvent::LoggedOut => return Ok(()), // see below
//!             _ => {}
//!         }
//!     }
//!     // 3. Wait for bytes until the next deadline, then feed what happened.
//!     let wait = client.poll_timeout().map(|t| epoch.instant(t).saturating_duration_since(Instant::now()));
//!     socket.set_read_timeout(Some(wait.unwrap_or(Duration::from_secs(1)).max(Duration::from_millis(1))))?;
//!     match socket.read(&mut buf) {
//!         Ok(0) => client.connection_closed(now()),
//!         Ok(n) => {
//!             if client.receive(&buf[..n], now()).is_err() {
//!                 client.connection_closed(now()); // the stream is unusable
//!             }
//!         }
//!         Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
//!         Err(_) => client.connection_closed(now()),
//!     }
//!     client.handle_timeout(now()); // does nothing before the deadline
//! }
//! # }
//! ```
//!
//! **Reconnecting.** When the connection drops while the session is resumable the
//! client reports [`ClientEvent::Detached`] and keeps its table (calls end with
//! `peer_gone`). Then:
//!
//! 1. wait [`Backoff::next_delay`] (random jitter from you; the server's
//!    `retry_after` if a [`ClientEvent::ServerError`] carried one), connect again and
//!    call [`Client::resume`] (no password needed), then drain as always;
//! 2. [`ClientEvent::Resumed`] then [`ClientEvent::Synced`]: the table is current
//!    again ([`Backoff::reset`]);
//! 3. a `resume_failed` error followed by [`ClientEvent::LoggedOut`]: the server no
//!    longer knows the session (it restarted, or the grace passed) and closes the
//!    connection; connect again and call [`Client::login`] with the password;
//! 4. a refusal of the connection itself (`rate_limited`, `too_many_connections`,
//!    `login_throttled`) leaves the session [`Status::Detached`]: close, wait its
//!    `retry_after`, go to 1.
//!
//! [`Client::can_resume`] says whether step 1 applies. `protocol/examples/embedder.rs`
//! is all of this in one runnable program against `precall-server`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Every public enum the wire or a later version may extend is `#[non_exhaustive]`;
// the few whose set is closed by definition say so with an `allow` and a reason.
#![warn(clippy::exhaustive_enums)]

pub mod caps;
pub mod client;
pub mod codec;
pub mod error;
#[cfg(feature = "arbitrary")]
pub mod fuzz;
pub mod ids;
#[cfg(feature = "testing")]
pub mod invariant;
pub mod media;
pub mod message;
#[cfg(feature = "model")]
pub mod model;
pub mod negotiate;
#[cfg(feature = "testing")]
pub mod properties;
pub mod resume;
pub mod server;
#[cfg(feature = "testing")]
pub mod sim;
pub mod time;

#[cfg(test)]
pub(crate) mod testing;

pub use caps::{
    Bandwidth, CallDigest, CallParams, Camera, Capabilities, CapabilitiesBuilder, CpuClass,
    Direction, Fingerprint, NoVideo, Size, StreamParams,
};
pub use client::{
    Call, CallState, Client, ClientConfig, ClientError, ClientEvent, Peer, Role, SetupPath, Status,
    Violation,
};
pub use error::{DecodeError, ErrorCode, FrameError, InvalidValue};
pub use ids::{
    CallId, Codec, ConnId, Endpoint, NodeId, Password, ReqId, SessionId, TerminalId, UserId,
};
pub use media::MediaDescription;
pub use message::{ClientMessage, EndReason, LoginWith, ServerMessage, PROTOCOL_VERSION};
pub use negotiate::{negotiate, negotiate_pair};
pub use resume::{Backoff, ResumeConfig, ResumeSecret, ResumeToken};
pub use server::{
    AuthRequest, AuthTicket, AuthVerdict, Limits, RelayMessage, RemoteView, Server, ServerConfig,
    ServerError, ServerEvent, SessionRecord, SessionView, StoreOutcome, StoreRequest, StoreTicket,
};
pub use time::{Epoch, Time};
