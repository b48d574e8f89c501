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
    /// A client-chosen request tag that the server echoes in its answer or error.
    ReqId(u32)
);
number_newtype!(
    /// A transport connection, assigned by the embedder of [`crate::server::Server`].
    /// Never on the wire.
    ConnId(u64)
);

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
