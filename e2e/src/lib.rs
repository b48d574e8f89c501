//! The process harness shared by the end-to-end demo (`precall-demo`) and the e2e tests.
//!
//! Everything here drives the **real** binaries, `precall-server` and `precall-client`,
//! exactly as the command-line contract describes them: a temporary directory holds a
//! real SQLite database, the server is started on `127.0.0.1:0` and announces its port on
//! stdout (`listening on ADDR`), the admin subcommands fill the store, and clients run in
//! `--json` mode with one JSON command per line on stdin and one JSON event per line on
//! stdout. For the apparatus-level checks there are also raw sockets: [`RawConn`] speaks
//! the wire format directly (length-prefixed canonical JSON, decoded with the core's
//! `codec::decode_message`), [`WsConn`] speaks it over the WebSocket binding (spec
//! section 3.7), and [`FakeServer`] accepts a client binary's connection.
//!
//! Every wait is bounded: nothing here blocks longer than the timeout it is given, and
//! every child process is killed when its handle is dropped, so a failing test never
//! leaves processes or hangs behind.
//!
//! Binaries are looked up next to the running executable (`target/<profile>/`, or the
//! parent of `deps/` for a test), or in `PRECALL_BIN_DIR` if set. Set `PRECALL_E2E_KEEP=1`
//! to keep the temporary directories (database and process logs) for inspection.
//!
//! The modules follow the harness's parts: errors ([`Error`], [`bail!`], [`ensure!`]),
//! finding and building the binaries, capabilities, the [`Sandbox`] (directory, database,
//! admin commands), the [`ServerProc`] and [`ClientProc`] processes, raw connections
//! ([`RawConn`], [`WsConn`], [`FakeServer`]), the cuttable [`Relay`], statistics, and a real
//! headless browser driven over the DevTools protocol ([`browser`]) with the checks of
//! its video stats against negotiated parameters ([`video_check`]).

use std::time::Duration;

mod binaries;
pub mod browser;
mod caps;
mod client_proc;
mod error;
pub mod nats;
mod pg;
mod raw;
mod relay;
mod sandbox;
mod server_proc;
mod stats;
pub mod video_check;
mod ws;

pub use binaries::{
    bin_dir, client_bin, ensure_binaries, example_bin, server_bin, signal, tail, wait_timeout,
};
pub use caps::{
    caps, caps_json, describe_direction, describe_params, params_json, params_of, phone_caps,
};
pub use client_proc::{is_online_row, online_row, online_users, ClientProc};
pub use error::{Error, Res};
pub use pg::PgDb;
pub use raw::{frame, login_msg, with_terminal, FakeServer, RawConn, Recv};
pub use relay::Relay;
pub use sandbox::{password, Sandbox, With};
pub use server_proc::ServerProc;
pub use stats::percentile;
pub use ws::{Refused, WsConn, WsHandshake, WsStream, WS_PATH, WS_SUBPROTOCOL};

/// The default bound of a wait for one event or frame.
pub const TIMEOUT: Duration = Duration::from_secs(5);
