//! Typed errors: local ones (returned by functions) and the wire's error codes.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A value that breaks the spec's syntax or range for its field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidValue {
    /// Too short or too long.
    #[error("{what}: length {len} outside 1..={max}")]
    Length {
        /// Field name.
        what: &'static str,
        /// Length seen.
        len: usize,
        /// Largest length allowed.
        max: usize,
    },
    /// A byte outside the field's alphabet.
    #[error("{what}: character not allowed at byte {pos}")]
    Character {
        /// Field name.
        what: &'static str,
        /// Offset of the first bad byte.
        pos: usize,
    },
    /// A number outside its range.
    #[error("{what}: {value} outside {min}..={max}")]
    Range {
        /// Field name.
        what: &'static str,
        /// Value seen.
        value: u64,
        /// Smallest value allowed.
        min: u64,
        /// Largest value allowed.
        max: u64,
    },
    /// A list entry that repeats an earlier one.
    #[error("{what}: entry {pos} repeats an earlier entry")]
    Duplicate {
        /// Field name.
        what: &'static str,
        /// Index of the repeated entry.
        pos: usize,
    },
    /// A required field was not given (see [`crate::caps::CapabilitiesBuilder`]).
    #[error("{what}: missing")]
    Missing {
        /// Field name.
        what: &'static str,
    },
}

/// Why a byte stream cannot be split into frames. Every variant is fatal for the
/// connection: the framing is lost.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than the receiver's limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced payload length.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// The length prefix announces an empty payload.
    #[error("empty frame")]
    Empty,
}

/// Why one frame's payload is not an acceptable message. The framing is intact, so the
/// connection survives unless the spec says otherwise for the resulting error code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON, not an object, a known message with missing or ill-typed fields, or a
    /// field value outside its syntax or range.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A well-formed object whose `type` this version does not know.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A `login` (or `login_ok`) for a protocol version this implementation does not
    /// speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u64),
}

impl DecodeError {
    /// The wire error code a server answers this with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::Malformed,
            DecodeError::UnknownType(_) => ErrorCode::UnknownMessage,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        }
    }
}

/// The error codes carried by the `error` message (spec section "Error codes").
///
/// A code this version does not know decodes as [`ErrorCode::Unknown`], which a client
/// treats as non-fatal; the server's closing of the connection is what ends a session.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame's length prefix exceeds the limit (fatal).
    FrameTooLarge,
    /// The payload is not a valid message (fatal).
    Malformed,
    /// A message type this server does not know (not fatal).
    UnknownMessage,
    /// The login's protocol version is not supported (fatal).
    UnsupportedVersion,
    /// A message that needs a session arrived before login succeeded (not fatal).
    NotLoggedIn,
    /// A second login on a connection that is logged in or logging in (not fatal).
    AlreadyLoggedIn,
    /// User name or password wrong (fatal).
    BadCredentials,
    /// The login named a terminal identifier not registered to this user (fatal).
    UnknownTerminal,
    /// The user already has the maximum number of sessions (fatal).
    TooManySessions,
    /// The same terminal identifier logged in on another connection (fatal).
    SessionReplaced,
    /// The call's target is not an online terminal of a mutual contact (not fatal).
    NotReachable,
    /// The call named does not exist or the sender is not a party to it (not fatal).
    UnknownCall,
    /// The session already has the maximum number of calls (not fatal).
    Busy,
    /// The request is not allowed in the call's current state (not fatal).
    InvalidState,
    /// A roster change naming oneself (not fatal). A syntactically invalid user name
    /// does not decode and is `malformed`.
    InvalidContact,
    /// The contact list is full (not fatal).
    RosterFull,
    /// No complete frame received within the idle timeout (fatal).
    IdleTimeout,
    /// Login not completed within the login timeout (fatal).
    LoginTimeout,
    /// The server is shutting down (fatal).
    ServerShutdown,
    /// The server failed internally, e.g. its credential store (fatal).
    Internal,
    /// Too many failed logins for this account or from this source address; the
    /// error's `retry_after_ms` says when to try again (fatal).
    LoginThrottled,
    /// The connection was opened while the server's accept rate was exceeded, or its
    /// login came while its source had the maximum of credential checks pending, or it
    /// sent more than a frame's worth of bytes while its input was paused (fatal;
    /// `retry_after_ms`).
    RateLimited,
    /// The server or this source address has the maximum number of connections
    /// (fatal; `retry_after_ms`).
    TooManyConnections,
    /// A capability document larger than the server accepts (fatal).
    CapsTooLarge,
    /// A contact-list change could not be stored (for example the account was removed
    /// meanwhile); nothing changed (not fatal).
    NotStored,
    /// An `update_caps` came when the session had already made the server's maximum
    /// within its window; nothing changed, and `retry_after_ms` says when one will be
    /// taken again (not fatal; spec section 13.6). The reference client sends its
    /// current capabilities again then by itself.
    CapsThrottled,
    /// `resume` named no resumable session: the token is unknown, its grace ran out,
    /// or the session ended (logout, replaced). Log in again (fatal).
    ResumeFailed,
    /// A code from a newer version of the protocol.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Whether the code refuses the *connection* before the server looked at what was
    /// sent on it (its accept rate, its connection limits, a throttled source): a
    /// client that was resuming keeps its detached session and tries again after
    /// `retry_after_ms` (spec section 9.9.6).
    pub fn refuses_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::TooManyConnections | ErrorCode::LoginThrottled
        )
    }

    /// Whether the server closes the connection after sending this code.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::FrameTooLarge
                | ErrorCode::Malformed
                | ErrorCode::UnsupportedVersion
                | ErrorCode::BadCredentials
                | ErrorCode::UnknownTerminal
                | ErrorCode::TooManySessions
                | ErrorCode::SessionReplaced
                | ErrorCode::IdleTimeout
                | ErrorCode::LoginTimeout
                | ErrorCode::ServerShutdown
                | ErrorCode::Internal
                | ErrorCode::LoginThrottled
                | ErrorCode::RateLimited
                | ErrorCode::TooManyConnections
                | ErrorCode::CapsTooLarge
                | ErrorCode::ResumeFailed
        )
    }
}
