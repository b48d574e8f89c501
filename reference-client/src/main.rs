//! `precall-client`: the reference client. A thin tokio shell around
//! [`precall_protocol::Client`]: it connects, logs in, reads commands from standard input
//! (words, or JSON objects with `--json`) and prints every event (sentences, or one JSON
//! object per line with `--json`). Every protocol decision is the core's. With
//! `--tls-ca` it connects over TLS and verifies the server's certificate (module `tls`).
//! When the connection drops it reconnects and resumes the session (module
//! `reconnect`), unless `--no-reconnect`.

mod caps;
mod commands;
mod reconnect;
mod render;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use precall_protocol::caps::CpuClass;
use precall_protocol::{LoginWith, Password, TerminalId, UserId};
use tracing_subscriber::EnvFilter;

use crate::caps::{CapsFlags, CapsSource};

/// The reference client of the precall protocol.
#[derive(Parser, Debug)]
#[command(name = "precall-client", version, about)]
#[command(group(
    ArgGroup::new("identity")
        .required(true)
        .args(["caps", "terminal", "codecs"])
))]
struct Args {
    /// Server address, host:port.
    #[arg(long, value_name = "ADDR")]
    server: String,
    /// Account name.
    #[arg(long, value_name = "NAME")]
    user: String,
    /// The password (asked on the terminal if no other source is given).
    #[command(flatten)]
    password: precall_cli::PasswordArgs,
    /// Log in with the capabilities in FILE (the wire JSON of a capabilities object).
    #[arg(long, value_name = "FILE")]
    caps: Option<PathBuf>,
    /// Log in with a registered terminal identifier; the server holds its capabilities.
    #[arg(long, value_name = "ID")]
    terminal: Option<String>,
    /// Log in with these codecs (comma-separated, encode and decode alike).
    #[arg(long, value_name = "LIST")]
    codecs: Option<String>,
    /// Screen and camera width in pixels (16:9) [default: 1280].
    #[arg(long, requires = "codecs")]
    width: Option<u16>,
    /// Camera frame rate [default: 30].
    #[arg(long, requires = "codecs")]
    fps: Option<u16>,
    /// Processing class: low, mid, high or ultra [default: high].
    #[arg(long, requires = "codecs", value_parser = caps::parse_cpu)]
    cpu: Option<CpuClass>,
    /// Upstream bandwidth in kbit/s [default: 8000].
    #[arg(long, requires = "codecs")]
    up_kbps: Option<u32>,
    /// Downstream bandwidth in kbit/s [default: 8000].
    #[arg(long, requires = "codecs")]
    down_kbps: Option<u32>,
    /// Read JSON commands and write one JSON event per line.
    #[arg(long)]
    json: bool,
    /// Ping after this many milliseconds of silence.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    ping_ms: u64,
    /// Connect over TLS and verify the server's certificate against the CA
    /// certificates in FILE (PEM); without it the connection is plain TCP.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry [default: the host part of
    /// --server, or "localhost" if that is an IP address].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
    /// Do not reconnect when the connection drops: the session ends at once (logged
    /// out), as with a server that does not resume sessions.
    #[arg(long)]
    no_reconnect: bool,
    /// Reconnecting: the ceiling of the first attempt's random wait, in milliseconds;
    /// it doubles with every failed attempt (exponential back-off with full jitter).
    #[arg(long, value_name = "N", default_value_t = 100)]
    reconnect_base_ms: u64,
    /// Reconnecting: the largest ceiling of the random wait, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    reconnect_max_ms: u64,
}

impl Args {
    /// Checks the arguments the way the protocol does; the message says what is wrong.
    fn settings(self) -> Result<session::Settings, String> {
        let user = UserId::new(self.user.as_str()).map_err(|e| format!("--user: {e}"))?;
        let password = self
            .password
            .read(&format!("password for {user}: "))
            .map_err(|e| e.to_string())?;
        let password = Password::new(password).map_err(|e| format!("password: {e}"))?;
        let login = if let Some(id) = self.terminal {
            LoginWith::TerminalId(TerminalId::new(id).map_err(|e| format!("--terminal: {e}"))?)
        } else {
            let source = match (self.caps, self.codecs) {
                (Some(file), _) => CapsSource::File(file),
                (None, Some(list)) => {
                    let defaults = CapsFlags::with_codecs(caps::split_codecs(&list));
                    CapsSource::Flags(CapsFlags {
                        width: self.width.unwrap_or(defaults.width),
                        fps: self.fps.unwrap_or(defaults.fps),
                        cpu: self.cpu.unwrap_or(defaults.cpu),
                        up_kbps: self.up_kbps.unwrap_or(defaults.up_kbps),
                        down_kbps: self.down_kbps.unwrap_or(defaults.down_kbps),
                        codecs: defaults.codecs,
                    })
                }
                (None, None) => return Err("give --caps, --terminal or --codecs".into()),
            };
            LoginWith::Capabilities(source.load()?)
        };
        if self.ping_ms == 0 {
            return Err("--ping-ms must be positive".into());
        }
        if self.reconnect_base_ms == 0 || self.reconnect_max_ms < self.reconnect_base_ms {
            return Err(
                "--reconnect-base-ms must be positive and at most --reconnect-max-ms".into(),
            );
        }
        let reconnect = (!self.no_reconnect).then(|| reconnect::Policy {
            base: Duration::from_millis(self.reconnect_base_ms),
            max: Duration::from_millis(self.reconnect_max_ms),
        });
        let tls = match &self.tls_ca {
            Some(ca) => Some(precall_client::tls::Tls::new(
                ca,
                self.tls_server_name.as_deref(),
                &self.server,
            )?),
            None => None,
        };
        Ok(session::Settings {
            server: self.server,
            user,
            password,
            login,
            json: self.json,
            ping: Duration::from_millis(self.ping_ms),
            tls,
            reconnect,
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let settings = match args.settings() {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("precall-client: {msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("precall-client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(session::run(settings));
    // The thread reading standard input may be blocked in a read: leave without
    // waiting for it.
    std::process::exit(code)
}
