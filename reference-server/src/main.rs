//! `precall-server`: the reference server binary.
//!
//! A thin shell around [`precall_protocol::server::Server`]: it moves bytes between TCP
//! sockets and the core, keeps time, verifies passwords and persists contact lists in
//! SQLite or PostgreSQL. Every protocol decision is the core's.
//!
//! - `serve`: run the server (module `serve`, with `conn` for the connection tasks, `tls`
//!   for the optional TLS layer, `ws` for the WebSocket binding and the static files of
//!   its port, and `worker` for the store thread);
//! - `admin`: manage accounts, contact lists and registered terminals (module `admin`),
//!   also while a server runs on the same database.

#![forbid(unsafe_code)]

mod admin;
mod cluster;
mod conn;
mod fds;
mod registry;
mod serve;
mod store;
mod tls;
mod worker;
mod ws;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use precall_protocol::{TerminalId, UserId};
use tracing_subscriber::EnvFilter;

use crate::store::{DbTarget, HashCost};

/// The precall reference server.
#[derive(Debug, Parser)]
#[command(name = "precall-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the precall protocol over TCP (and WebSocket, with --ws-listen).
    Serve(Box<ServeArgs>),
    /// Manage accounts, contact lists and registered terminals.
    Admin(AdminArgs),
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The store: a SQLite file (created, in WAL mode, if missing), or a PostgreSQL
    /// database given as `postgres://user@host:port/dbname` (its tables created if
    /// missing; several servers may share it).
    #[arg(long, value_name = "PATH|URL")]
    pub db: DbTarget,
    /// Address to listen on (port 0: the OS picks one).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// Close a logged-in connection after this long without a complete frame.
    #[arg(long, default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Close a connection that has not logged in within this long.
    #[arg(long, default_value_t = 30_000)]
    pub login_timeout_ms: u64,
    /// End a call not accepted within this long.
    #[arg(long, default_value_t = 60_000)]
    pub ring_timeout_ms: u64,
    /// Terminals one user may have online at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_sessions_per_user: u64,
    /// Frames queued for one connection before it is considered dead. The default holds
    /// the largest login snapshot (500 contacts with 8 terminals each) with room to spare.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub queue_frames: u32,
    /// Longest delay of a presence push (online, offline), in milliseconds: a
    /// connection writes them at most once per this long, each write carrying every
    /// frame queued meanwhile, in order; answers and call signalling are never delayed;
    /// 0 writes every frame at once (spec section 3.1).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub coalesce_ms: u64,
    /// How often to apply contact changes made with `admin`, or by other servers on the
    /// same store, while running.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub admin_poll_ms: u64,
    #[command(flatten)]
    pub cluster: cluster::ClusterArgs,
    #[command(flatten)]
    pub cost: CostArgs,
    #[command(flatten)]
    pub limits: serve::LimitArgs,
    /// Resumable sessions.
    #[command(flatten)]
    pub resume: serve::ResumeArgs,
    /// TLS (without it: plain TCP, with a warning on a non-loopback address).
    #[command(flatten)]
    pub tls: tls::TlsArgs,
    /// The WebSocket binding (spec section 3.7) and the files its port serves.
    #[command(flatten)]
    pub ws: ws::WsArgs,
}

/// Argon2id cost (for new hashes; `serve` uses it for the hash an unknown user's login
/// is checked against, so that it takes as long as a known user's).
#[derive(Debug, Args)]
pub struct CostArgs {
    /// Argon2id memory cost in KiB.
    #[arg(long, default_value_t = 19456, value_parser = clap::value_parser!(u32).range(8..=4_194_304))]
    pub argon2_m_kib: u32,
    /// Argon2id iterations.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub argon2_t: u32,
}

impl CostArgs {
    fn cost(&self) -> HashCost {
        HashCost {
            m_kib: self.argon2_m_kib,
            t: self.argon2_t,
        }
    }
}

/// Options of `admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The store: a SQLite file (created if missing), or a PostgreSQL database given as
    /// `postgres://user@host:port/dbname`.
    #[arg(long, value_name = "PATH|URL")]
    pub db: DbTarget,
    #[command(flatten)]
    pub cost: CostArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What `admin` manages.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Contact lists.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Registered terminals (login by terminal identifier).
    #[command(subcommand)]
    Terminal(TerminalCommand),
    /// Create many accounts, contact lists and registered terminals at once, in one
    /// transaction (all or nothing), from JSON lines.
    ///
    /// Each non-empty line of FILE (`-`: standard input) is one object:
    ///
    /// {"type":"user","name":"alice","password":"pw","contacts":["bob"]}
    ///
    /// {"type":"terminal","id":"Phone:1","owner":"alice","caps":{...}}
    ///
    /// A user line creates a new account (an existing name fails the import) and its
    /// contact list, in one direction: list both users for them to see each other. A
    /// contact must be an account once the import is done. A terminal line registers an
    /// identifier for an account with its capabilities, exactly as on the wire.
    /// Passwords are hashed with --argon2-m-kib/--argon2-t, on every core; load tests
    /// use a cheap cost (`--argon2-m-kib 8 --argon2-t 1`) so that credential checking
    /// does not hide the presence work they measure.
    #[command(verbatim_doc_comment)]
    Import {
        /// JSON-lines file, or `-` for standard input.
        file: PathBuf,
    },
}

/// `admin user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Add {
        /// Account name.
        name: UserId,
        /// Its password.
        #[command(flatten)]
        password: precall_cli::PasswordArgs,
    },
    /// Delete an account, its contact list, its terminals and every listing of it.
    Remove {
        /// Account name.
        name: UserId,
    },
    /// Change a password.
    Passwd {
        /// Account name.
        name: UserId,
        /// The new password.
        #[command(flatten)]
        password: precall_cli::PasswordArgs,
    },
    /// Print every account name, one per line.
    List,
}

/// `admin contact ...`
#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// USER lists CONTACT (one direction).
    Add {
        /// Whose list.
        user: UserId,
        /// The contact.
        contact: UserId,
    },
    /// USER stops listing CONTACT.
    Remove {
        /// Whose list.
        user: UserId,
        /// The contact.
        contact: UserId,
    },
    /// Print USER's contacts, one per line.
    List {
        /// Whose list.
        user: UserId,
    },
    /// Print every contact-list entry of every account as `USER CONTACT`, one per
    /// line, by user name (for checking a whole store at once, e.g. after a crash).
    Dump,
}

/// `admin terminal ...`
#[derive(Debug, Subcommand)]
pub enum TerminalCommand {
    /// Register (or re-register) a terminal identifier with its capabilities.
    Register {
        /// Terminal identifier.
        id: TerminalId,
        /// The account that may log in with it.
        #[arg(long)]
        owner: UserId,
        /// JSON file holding the capabilities object exactly as on the wire.
        #[arg(long)]
        caps: PathBuf,
    },
    /// Print every registered terminal as `ID OWNER`, one per line.
    List,
    /// Delete a registered terminal.
    Remove {
        /// Terminal identifier.
        id: TerminalId,
    },
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Admin(args) => admin::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("precall-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["precall-server", "serve", "--db", "x.db"]).unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(a.listen, "127.0.0.1:7878");
        assert_eq!(
            (a.idle_timeout_ms, a.login_timeout_ms, a.ring_timeout_ms),
            (60_000, 30_000, 60_000)
        );
        assert_eq!((a.queue_frames, a.admin_poll_ms), (8192, 200));
        assert_eq!(a.coalesce_ms, 5);
        assert_eq!((a.cost.argon2_m_kib, a.cost.argon2_t), (19456, 2));
        let core = precall_protocol::ResumeConfig::default();
        assert_eq!(
            (
                a.resume.resume_grace_ms,
                a.resume.resume_log_frames,
                a.resume.resume_tail_frames
            ),
            (
                precall_protocol::time::millis(core.grace),
                core.log_frames,
                core.tail_frames
            )
        );
    }

    #[test]
    fn admin_parses_and_validates_names() {
        let ok = [
            &[
                "admin",
                "--db",
                "x",
                "user",
                "add",
                "alice",
                "--password",
                "pw",
            ][..],
            &[
                "admin",
                "--db",
                "x",
                "user",
                "passwd",
                "alice",
                "--password",
                "pw",
            ],
            &["admin", "--db", "x", "user", "remove", "alice"],
            &["admin", "--db", "x", "user", "list"],
            &["admin", "--db", "x", "contact", "add", "alice", "bob"],
            &["admin", "--db", "x", "contact", "remove", "alice", "bob"],
            &["admin", "--db", "x", "contact", "list", "alice"],
            &[
                "admin", "--db", "x", "terminal", "register", "Phone:1", "--owner", "alice",
                "--caps", "c.json",
            ],
            &["admin", "--db", "x", "terminal", "list"],
            &["admin", "--db", "x", "terminal", "remove", "Phone:1"],
            &["admin", "--db", "x", "import", "users.jsonl"],
            &[
                "admin",
                "--db",
                "x",
                "--argon2-m-kib",
                "8",
                "--argon2-t",
                "1",
                "import",
                "-",
            ],
        ];
        for args in ok {
            let argv = std::iter::once("precall-server").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_ok(), "{args:?}");
        }
        let bad = [
            &[
                "admin",
                "--db",
                "x",
                "user",
                "add",
                "Alice",
                "--password",
                "pw",
            ][..],
            &["admin", "--db", "x", "contact", "add", "alice", "b b"],
            &["admin", "--db", "x", "terminal", "remove", "phone 1"],
            &["serve", "--db", "x", "--queue-frames", "0"],
            &["serve", "--db", "x", "--coalesce-ms", "1001"],
            &["serve"],
        ];
        for args in bad {
            let argv = std::iter::once("precall-server").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
    }
}
