//! The server's configuration: [`ServerConfig`] and the abuse limits of spec section 13.6
//! ([`Limits`]), with their defaults.

use std::time::Duration;

use crate::codec::DEFAULT_MAX_FRAME;
use crate::ids::NodeId;
use crate::resume::ResumeConfig;

/// The largest contact list the protocol allows: with it, the largest `login_ok`
/// (500 names of 64 bytes) still fits in a frame of [`crate::codec::MIN_MAX_FRAME`].
pub const MAX_CONTACTS: usize = 500;

/// Server limits and timers. Every field has a spec-recommended default.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest frame payload accepted; values below [`crate::codec::MIN_MAX_FRAME`]
    /// act as that minimum.
    pub max_frame: u32,
    /// A logged-in connection that sends no complete frame for this long is closed
    /// (`idle_timeout`) and its session ends as if dropped.
    pub idle_timeout: Duration,
    /// A connection that has not completed login within this long is closed.
    pub login_timeout: Duration,
    /// Largest number of sessions (terminals online at once) per user.
    pub max_sessions_per_user: usize,
    /// Largest contact list; values above [`MAX_CONTACTS`] act as [`MAX_CONTACTS`].
    pub max_contacts: usize,
    /// Largest number of calls, ringing or established, per session.
    pub max_calls_per_session: usize,
    /// A call not accepted within this long ends with reason `timeout`.
    pub ring_timeout: Duration,
    /// Abuse limits (spec section 13.6).
    pub limits: Limits,
    /// Resumable sessions (spec section "Resumable sessions").
    pub resume: ResumeConfig,
    /// This node's identity in a cluster (spec "Clustering"), or `None` for a server
    /// on its own (the default). With a node id the server numbers its sessions and
    /// calls in the node's range, emits [`ServerEvent::Publish`](crate::ServerEvent::Publish) and
    /// [`ServerEvent::Unpublish`](crate::ServerEvent::Unpublish) for its sessions, and takes
    /// sessions of other nodes ([`Server::remote_online`](crate::Server::remote_online)).
    pub node: Option<NodeId>,
}

/// Abuse limits (spec section 13.6). A refusal is an error with its own code and, where
/// waiting helps, `retry_after_ms`; the frame rate and unstored changes pause the
/// connection's input instead. Zero disables a count limit.
///
/// The defaults are the ones spec section 13.6 lists with the reason for each: safe for
/// a server on a real network. A load test or a deployment behind a proxy that needs
/// more sets its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Limits {
    /// Connections open at once, in total (`too_many_connections`).
    pub max_connections: usize,
    /// Connections open at once from one source (`too_many_connections`): an IPv4
    /// address, or the /64 prefix of an IPv6 address.
    pub max_connections_per_source: usize,
    /// New connections accepted per second, in total: a reconnect storm beyond it is
    /// told to come back later (`rate_limited`). Off by default: one flooding source
    /// could spend it and keep everyone else out (spec section 13.6).
    pub max_accepts_per_second: u32,
    /// New connections accepted per second from one source; beyond, they are told to
    /// come back later (`rate_limited`).
    pub max_accepts_per_second_per_source: u32,
    /// Complete frames per second the server takes from one connection; beyond, it
    /// takes no more until the second is over (the connection's input pauses, as with
    /// [`Limits::max_unstored_changes`]).
    pub max_frames_per_second: u32,
    /// Failed logins per account within `login_failure_window` before further
    /// attempts for it are refused without a credential check (`login_throttled`).
    pub max_login_failures_per_account: u32,
    /// Failed logins per source within `login_failure_window`.
    pub max_login_failures_per_source: u32,
    /// The window failed logins are counted in, and how long a throttle lasts.
    pub login_failure_window: Duration,
    /// Largest capability document (its canonical JSON) at login or in `update_caps`
    /// (`caps_too_large`).
    pub max_caps_bytes: usize,
    /// `update_caps` one session may make within `caps_update_window`; one more is
    /// refused, not applied, with the non-fatal `caps_throttled` and `retry_after_ms`.
    pub max_caps_updates: u32,
    /// The window `update_caps` are counted in.
    pub caps_update_window: Duration,
    /// Credential checks from one source queued or running at once; a login beyond it
    /// is refused with `rate_limited` before any check (0: no limit).
    pub max_auth_checks_per_source: usize,
    /// Credential checks handed to the embedder at once ([`ServerEvent::Authenticate`](crate::ServerEvent::Authenticate)
    /// not yet answered); more wait in the server and are handed out one source at a
    /// time, in turn, so that one source cannot queue ahead of the others (0: every
    /// check at once, first come first served).
    pub max_auth_checks_running: usize,
    /// Contact-list changes of one connection that may wait for the store at once
    /// (spec section 9.6); at the limit the server takes no more input from the
    /// connection until one is stored. At least 1.
    pub max_unstored_changes: usize,
    /// Sessions of other nodes held at once (spec "Clustering"); one more is refused
    /// with [`ServerError::TooManyRemoteSessions`](crate::ServerError::TooManyRemoteSessions) (0: no limit).
    pub max_remote_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_connections_per_source: 256,
            max_accepts_per_second: 0,
            max_accepts_per_second_per_source: 64,
            max_frames_per_second: 100,
            max_login_failures_per_account: 10,
            max_login_failures_per_source: 100,
            login_failure_window: Duration::from_secs(60),
            max_caps_bytes: 4096,
            max_caps_updates: 6,
            caps_update_window: Duration::from_secs(60),
            max_auth_checks_per_source: 8,
            max_auth_checks_running: 4,
            max_unstored_changes: 64,
            max_remote_sessions: 1_000_000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(30),
            max_sessions_per_user: 8,
            max_contacts: MAX_CONTACTS,
            max_calls_per_session: 4,
            ring_timeout: Duration::from_secs(60),
            limits: Limits::default(),
            resume: ResumeConfig::default(),
            node: None,
        }
    }
}
