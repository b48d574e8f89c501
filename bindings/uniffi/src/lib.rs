//! # precall-ffi
//!
//! precall's client core for phones: a thin [uniffi](https://mozilla.github.io/uniffi-rs)
//! facade over [`precall_protocol::Client`], from which uniffi generates Kotlin (JVM
//! and Android, through JNA), Swift and Python bindings. An app embeds the very state
//! machine the reference client, the load tool, the fuzzers and the model checker run;
//! this crate only converts values and forwards each call to the core method of the
//! same name. **No protocol rule lives here**, nor in the generated code or its
//! callers: login, the table of online contacts with the call parameters pre-computed
//! for each (claim C1), calls, resumption and every check are the core's.
//!
//! The core is synchronous and sans-IO, so the bindings need no async runtime and no
//! callback interface: the app owns the socket and the clock, and drives the client
//! with plain calls.
//!
//! ## The API (Kotlin names; Swift and Python take the same with their conventions)
//!
//! `PrecallClient(ClientConfig(user, password, LoginWith.Capabilities(caps) |
//! LoginWith.TerminalId(id), pingIntervalMs = null, maxFrame = null))`. Every `nowMs` is
//! a `ULong` of milliseconds from any clock that does not go backwards. A refused
//! command throws a `PrecallException` subclass ([`PrecallError`]).
//!
//! | method | returns | the core's |
//! |---|---|---|
//! | `login(nowMs)`, `logout(nowMs)` | | [`Client::login`](precall_protocol::Client::login), [`Client::logout`](precall_protocol::Client::logout) |
//! | `receive(bytes, nowMs)` | throws `Framing` / `UnsupportedVersion`: close the connection | [`Client::receive`](precall_protocol::Client::receive) |
//! | `handleTimeout(nowMs)`, `connectionClosed(nowMs)` | | [`Client::handle_timeout`](precall_protocol::Client::handle_timeout), [`Client::connection_closed`](precall_protocol::Client::connection_closed) |
//! | `pollTransmit()` | one whole frame (`ByteArray`) or `null` | [`Client::poll_transmit`](precall_protocol::Client::poll_transmit) |
//! | `pollEvent()` | an [`Event`] or `null` | [`Client::poll_event`](precall_protocol::Client::poll_event) |
//! | `pollTimeout()` | milliseconds or `null` | [`Client::poll_timeout`](precall_protocol::Client::poll_timeout) |
//! | `resume(nowMs)`, `abandon(nowMs)` | | [`Client::resume`](precall_protocol::Client::resume), [`Client::abandon`](precall_protocol::Client::abandon) |
//! | `placeCall(to, nowMs)`, `placeCallWithMedia(to, media, nowMs)`, `placeCallExchangingCapabilities(to, nowMs)`, `queryCaps(to, nowMs)` | request tag | the core methods of those names |
//! | `answer(call, accept, nowMs)`, `acceptWithMedia(call, media, nowMs)`, `hangup(call, nowMs)` | | the core methods of those names |
//! | `updateCaps(caps, nowMs)`, `addContact(user, nowMs)`, `removeContact(user, nowMs)` | request tag | the core methods of those names |
//! | `status()`, `isSynced()`, `canResume()`, `capsInFlight()` | [`Status`], booleans | the accessors of those names |
//! | `endpoint()`, `capabilities()`, `contacts()` | this terminal's, once logged in | the accessors of those names |
//! | `peers()`, `peer(endpoint)` | [`PeerEntry`]: the table | [`Client::peers`](precall_protocol::Client::peers), [`Client::peer`](precall_protocol::Client::peer) |
//! | `calls()` | [`CallInfo`] | [`Client::calls`](precall_protocol::Client::calls) |
//!
//! Free functions: [`negotiate_pair`] (the core's, to check a table), [`fingerprint`],
//! [`capabilities_from_json`] and [`capabilities_to_json`] (the wire's JSON form).
//!
//! ## Driving it over a socket (Kotlin)
//!
//! ```kotlin
//! val client = PrecallClient(ClientConfig("alice", "secret", LoginWith.Capabilities(caps), null, null))
//! val sock = Socket("chat.example.org", 7700)
//! fun now() = (System.nanoTime() / 1_000_000).toULong()
//! fun drain() {
//!     while (true) { val f = client.pollTransmit() ?: break; sock.getOutputStream().write(f) }
//!     while (true) {
//!         when (val ev = client.pollEvent() ?: break) {
//!             is Event.PeerOnline -> println("${ev.peer.user}/${ev.peer.session}: ${ev.params}")
//!             is Event.IncomingCall -> client.answer(ev.call, true, now())
//!             else -> {}
//!         }
//!     }
//!     // re-arm the timer: client.pollTimeout() -> client.handleTimeout(now()) then drain()
//! }
//! client.login(now()); drain()
//! // reader thread: read bytes -> client.receive(bytes, now()); drain()
//! //                EOF       -> client.connectionClosed(now()); drain()
//! ```
//!
//! Every call locks the core for its duration, so one reader thread, one timer and the
//! UI may share a `PrecallClient`; the order of events is the order of the calls.
//!
//! ## Modules
//!
//! - [`PrecallClient`], [`ClientConfig`], [`LoginWith`] (`client`);
//! - [`Event`] (`event`): the core's events;
//! - the records and enums of the core's values, and the free functions (`types`);
//! - [`PrecallError`] (`error`).

#![warn(missing_docs)]

mod client;
mod error;
mod event;
mod types;

pub use client::{ClientConfig, LoginWith, PrecallClient};
pub use error::PrecallError;
pub use event::Event;
pub use types::{
    capabilities_from_json, capabilities_to_json, fingerprint, negotiate_pair, Bandwidth, CallInfo,
    CallParams, CallState, Camera, Capabilities, CpuClass, Direction, Endpoint, PeerEntry, Role,
    SetupPath, Size, Status, StreamParams,
};

uniffi::setup_scaffolding!();
