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
//! - [`caps`]: capabilities, their fingerprint, and call parameters.
//! - [`negotiate`]: the deterministic rule from two capability sets to call parameters;
//!   [`properties`]: its properties as checkers over any negotiator.
//! - [`message`]: every message; [`codec`]: framing and the canonical JSON encoding.
//! - [`client`]: [`client::Client`], one terminal's session and its parameter table.
//! - [`server`]: [`server::Server`], sessions, presence fan-out and call relay.
//! - [`invariant`]: the spec's invariants as executable checks over a server and its
//!   clients, shared by tests, the model checker and the fuzz targets.
//! - [`sim`]: a deterministic in-memory network wiring one server to several clients.
//! - [`error`]: typed errors and the wire's error codes.
//! - `fuzz` (feature `arbitrary`): `arbitrary` inputs for every message and the bodies
//!   of the fuzz targets in `fuzz/`, which the stable test `fuzz_replay` also runs.
//! - `model` (feature `model`): the stateright model of the real state machines.
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

//! ## Embedding, in a page
//!
//! ```
//! use precall_protocol::server::{AuthVerdict, ServerEvent};
//! use precall_protocol::sim::sample_caps;
//! use precall_protocol::*;
//!
//! let mut server = Server::new(ServerConfig::default());
//! let mut alice = Client::new(ClientConfig::default());
//! let (conn, now) = (ConnId(1), Time(0));
//!
//! // The transport accepted a connection; the application logs in (claim C2).
//! server.connect(conn, now).unwrap();
//! let caps = sample_caps(&["h264"], 1280, 30);
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
pub use ids::{CallId, Codec, ConnId, Endpoint, Password, ReqId, SessionId, TerminalId, UserId};
pub use message::{ClientMessage, EndReason, LoginWith, ServerMessage, PROTOCOL_VERSION};
pub use negotiate::{negotiate, negotiate_pair};
pub use resume::{Backoff, ResumeConfig, ResumeSecret, ResumeToken};
pub use server::{
    AuthRequest, AuthTicket, AuthVerdict, Limits, Server, ServerConfig, ServerError, ServerEvent,
    SessionView, StoreOutcome, StoreRequest, StoreTicket,
};
pub use time::{Epoch, Time};
