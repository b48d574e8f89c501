//! Validated identifiers.
//!
//! Every identifier that crosses the wire is a newtype whose constructor checks the
//! spec's syntax (`spec/protocol.md`, section "Identifiers"), so a value of the type
//! is always valid and the rest of the crate never re-checks it. Deserialisation goes
//! through the same constructors (`#[serde(try_from = ...)]`).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::InvalidValue;

/// Checks a token against a length range and a byte predicate.
fn check_token(
    what: &'static str,
    s: &str,
    max: usize,
    allowed: fn(u8) -> bool,
) -> Result<(), InvalidValue> {
    if s.is_empty() || s.len() > max {
        return Err(InvalidValue::Length {
            what,
            len: s.len(),
            max,
        });
    }
    if let Some(pos) = s.bytes().position(|b| !allowed(b)) {
        return Err(InvalidValue::Character { what, pos });
    }
    Ok(())
}

macro_rules! token_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $allowed:expr, $samples:expr) => {
        $(#[$doc])*
        ///
        /// Immutable and shared: a clone is a reference count, so the copies a server
        /// keeps of one name (its index, its sessions, its events) share one buffer.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Largest length in bytes the spec allows.
            pub const MAX_LEN: usize = $max;

            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
                let s = s.into();
                check_token($what, &s, $max, $allowed)?;
                Ok(Self(Arc::from(s)))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, InvalidValue> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidValue;
            fn try_from(s: &str) -> Result<Self, InvalidValue> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                String::from(&*v.0)
            }
        }

        /// A JSON string, written from the shared buffer without a copy.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                Self::new(s)
            }
        }

        /// Mostly one of a few sample values (so that fuzzed scenarios name the same
        /// users, terminals and codecs again), sometimes any valid token.
        #[cfg(feature = "arbitrary")]
        impl<'a> arbitrary::Arbitrary<'a> for $name {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                let s = crate::fuzz::input::token(u, $samples, $max, $allowed)?;
                Self::new(s).map_err(|_| arbitrary::Error::IncorrectFormat)
            }
        }
    };
}

fn user_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'@')
}

fn terminal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')
}

fn codec_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-')
}

token_newtype!(
    /// A user's account name: 1–64 bytes of `a-z 0-9 . _ - @`.
    UserId,
    "user id",
    64,
    user_byte,
    &["alice", "bob", "carol", "dave"]
);

token_newtype!(
    /// A terminal identifier registered in advance with its capabilities (claim C8):
    /// 1–64 bytes of `A-Z a-z 0-9 . _ - :`.
    TerminalId,
    "terminal id",
    64,
    terminal_byte,
    &["t-alice", "t-bob", "kiosk-1"]
);

token_newtype!(
    /// A video codec token such as `h264` or `av1`: 1–16 bytes of `a-z 0-9 . -`.
    ///
    /// Codecs are compared as opaque tokens; a token this version does not know is
    /// still negotiable (see [`crate::negotiate()`]).
    Codec,
    "codec",
    16,
    codec_byte,
    &["h264", "vp8", "vp9", "av1", "h265"]
);

/// A password. At most 1024 bytes, never empty; its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Password(Box<str>);

impl Password {
    /// Largest length in bytes the spec allows.
    pub const MAX_LEN: usize = 1024;

    /// Validates the length and wraps the secret.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
        let s = s.into();
        check_token("password", &s, Self::MAX_LEN, |_| true)?;
        Ok(Self(s.into_boxed_str()))
    }

    /// The secret, for the credential checker only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Password {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::new(s)
    }
}

impl From<Password> for String {
    fn from(v: Password) -> String {
        v.0.into()
    }
}

/// Mostly one of the fuzz harness's two sample passwords (right and wrong), sometimes
/// any valid one.
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Password {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let s = crate::fuzz::input::token(u, &["pw", "wrong"], Self::MAX_LEN, |_| true)?;
        Self::new(s).map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

macro_rules! number_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        /// Mostly a small number (so that fuzzed messages name sessions, calls and
        /// requests that exist), sometimes any.
        #[cfg(feature = "arbitrary")]
        impl<'a> arbitrary::Arbitrary<'a> for $name {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                Ok(Self(crate::fuzz::input::small(u)?))
            }
        }
    };
}

number_newtype!(
    /// One logged-in terminal, assigned by the server at login, unique for the server's
    /// lifetime (never reused).
    SessionId(u64)
);
number_newtype!(
    /// A call, assigned by the server when it relays the call request, unique for the
    /// server's lifetime.
    CallId(u64)
);
number_newtype!(
    /// One server node of a cluster (spec "Clustering"), set in
    /// [`ServerConfig::node`](crate::ServerConfig::node). Each node of a cluster has its own;
    /// a node numbers its sessions and calls in its own range ([`NodeId::session`],
    /// [`NodeId::call`]), so identifiers of different nodes never collide.
    NodeId(u16)
);
number_newtype!(
    /// A client-chosen request tag that the server echoes in its answer or error.
    ReqId(u32)
);
number_newtype!(
    /// A transport connection, assigned by the embedder of [`crate::server::Server`].
    /// Never on the wire.
    ConnId(u64)
);

/// How many low bits of a clustered node's session and call identifiers count; the
/// bits above hold the node's [`NodeId`].
pub const NODE_SHIFT: u32 = 48;

impl NodeId {
    /// This node's `n`-th session identifier: the node in the top 16 bits, `n` (taken
    /// modulo 2^48) below.
    pub fn session(self, n: u64) -> SessionId {
        SessionId(self.base() | (n & Self::COUNTER))
    }

    /// This node's `n`-th call identifier, numbered like [`NodeId::session`].
    pub fn call(self, n: u64) -> CallId {
        CallId(self.base() | (n & Self::COUNTER))
    }

    const COUNTER: u64 = (1 << NODE_SHIFT) - 1;

    fn base(self) -> u64 {
        u64::from(self.0) << NODE_SHIFT
    }
}

impl SessionId {
    /// The node that numbered this session, if numbered by a clustered node
    /// ([`NodeId::session`]); an unclustered server's sessions read as node 0.
    pub fn node(self) -> NodeId {
        // The top 16 bits of a u64 always fit a u16.
        NodeId(u16::try_from(self.0 >> NODE_SHIFT).unwrap_or(u16::MAX))
    }
}

impl CallId {
    /// The node that numbered this call ([`NodeId::call`]).
    pub fn node(self) -> NodeId {
        NodeId(u16::try_from(self.0 >> NODE_SHIFT).unwrap_or(u16::MAX))
    }
}

/// One online terminal of a user, as seen by that user's contacts: the user and the
/// session the terminal is logged in with.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    /// The user logged in on the terminal.
    pub user: UserId,
    /// The terminal's session.
    pub session: SessionId,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.user, self.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Section 13.3: passwords stay out of logs; `Debug` says it is redacted and
    /// prints nothing of it.
    #[test]
    fn a_password_is_redacted_in_debug_output() {
        let p = Password::new("hunter2").unwrap();
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
    }

    /// An endpoint is written `USER/SESSION` (the reference client's `to`, `from`).
    #[test]
    fn an_endpoint_displays_as_user_slash_session() {
        let e = Endpoint {
            user: UserId::new("alice").unwrap(),
            session: SessionId(3),
        };
        assert_eq!(e.to_string(), "alice/3");
    }

    /// Different nodes number sessions and calls in disjoint ranges, and each id
    /// names its node back.
    #[test]
    fn node_ranges_are_disjoint_and_name_their_node() {
        let (a, b) = (NodeId(1), NodeId(2));
        assert_eq!(a.session(5), SessionId((1 << 48) | 5));
        assert_eq!(b.session(5), SessionId((2 << 48) | 5));
        assert_ne!(a.session(5), b.session(5));
        assert_eq!(a.session(5).node(), a);
        assert_eq!(b.call(9), CallId((2 << 48) | 9));
        assert_eq!(b.call(9).node(), b);
        assert_eq!(NodeId(u16::MAX).session(u64::MAX).node(), NodeId(u16::MAX));
        assert_eq!(NodeId(3).session(1 << 48), NodeId(3).session(0));
        assert_eq!(SessionId(7).node(), NodeId(0));
    }

    #[test]
    fn user_ids_are_validated() {
        assert!(UserId::new("alice").is_ok());
        assert!(UserId::new("bob.smith@example-1_x").is_ok());
        assert!(matches!(
            UserId::new(""),
            Err(InvalidValue::Length { len: 0, .. })
        ));
        assert!(matches!(
            UserId::new("Alice"),
            Err(InvalidValue::Character { pos: 0, .. })
        ));
        assert!(UserId::new("a".repeat(64)).is_ok());
        assert!(UserId::new("a".repeat(65)).is_err());
        assert!(serde_json::from_str::<UserId>("\"a b\"").is_err());
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password::new("hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(Password::new("").is_err());
    }

    #[test]
    fn codec_and_terminal_syntax() {
        assert!(Codec::new("h264").is_ok());
        assert!(Codec::new("H264").is_err());
        assert!(TerminalId::new("Phone:1").is_ok());
        assert!(TerminalId::new("phone 1").is_err());
    }
}
