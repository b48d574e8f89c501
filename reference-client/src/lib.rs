//! `precall_client`: the one tokio driver of the core's sans-IO
//! [`precall_protocol::Client`], shared by the `precall-client` binary and every
//! scenario of the load tool `precall-load`.
//!
//! A [`Driver`] moves bytes, time and events and decides nothing: it holds one
//! connection to the server (plain TCP, or TLS with [`tls::Tls`]), the client's clock
//! ([`Clock`]: one epoch `Instant` to the core's [`precall_protocol::Time`]), writes
//! the frames of [`Client::poll_transmit`](precall_protocol::Client::poll_transmit)
//! ([`Driver::flush`]), feeds what it reads to
//! [`Client::receive`](precall_protocol::Client::receive), turns
//! [`Client::poll_timeout`](precall_protocol::Client::poll_timeout) into
//! [`Client::handle_timeout`](precall_protocol::Client::handle_timeout), and hands the
//! core's [`ClientEvent`](precall_protocol::ClientEvent)s to its user ([`Driver::next`]).
//! Asked to ([`Driver::reconnect`]), it takes the session over on a new connection
//! with the core's [`Backoff`](precall_protocol::Backoff): [`Client::resume`] while the
//! session is detached, a login with the credentials it was given once it is gone
//! (`resume_failed`). What every event means, and whether to reconnect at all, is the
//! core's and the user's.
//!
//! [`Client::resume`]: precall_protocol::Client::resume

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod driver;
pub mod tls;

pub use driver::{os_random, Cell, Clock, Driver, Event, Login, Start, Tap};
