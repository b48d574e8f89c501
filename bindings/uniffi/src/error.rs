//! The facade's one error type. In Kotlin it is the sealed exception class
//! `PrecallException` with one subclass per variant (`PrecallException.NotLoggedIn`,
//! ...); in Swift an `Error` enum; in Python an exception class per variant. Every
//! variant carries `detail`, the core's message, for people.

use precall_protocol::client::ClientError;
use precall_protocol::InvalidValue;

/// Why the core (or the facade, for an argument it cannot convert) refused a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum PrecallError {
    /// The command needs a logged-in session ([`ClientError::NotLoggedIn`]).
    #[error("not_logged_in: {detail}")]
    NotLoggedIn {
        /// For people.
        detail: String,
    },
    /// `resume` without a detached session ([`ClientError::NotDetached`]).
    #[error("not_detached: {detail}")]
    NotDetached {
        /// For people.
        detail: String,
    },
    /// `login` while a session exists or is being set up ([`ClientError::AlreadyLoggedIn`]).
    #[error("already_logged_in: {detail}")]
    AlreadyLoggedIn {
        /// For people.
        detail: String,
    },
    /// No online terminal with that endpoint in the table ([`ClientError::UnknownPeer`]).
    #[error("unknown_peer: {detail}")]
    UnknownPeer {
        /// For people.
        detail: String,
    },
    /// No such call in a state that allows the command ([`ClientError::UnknownCall`]).
    #[error("unknown_call: {detail}")]
    UnknownCall {
        /// For people.
        detail: String,
    },
    /// A capability change while a call is being set up ([`ClientError::CallSetupInProgress`]).
    #[error("call_setup_in_progress: {detail}")]
    CallSetupInProgress {
        /// For people.
        detail: String,
    },
    /// From `receive`: the server speaks another protocol version. Close the
    /// connection; the session is already detached or over.
    #[error("unsupported_version: {detail}")]
    UnsupportedVersion {
        /// For people.
        detail: String,
    },
    /// From `receive`: the byte stream broke the framing. Close the connection; the
    /// session is already detached or over.
    #[error("framing: {detail}")]
    Framing {
        /// For people.
        detail: String,
    },
    /// An identifier, password, capability set or media description that breaks the
    /// spec's syntax or ranges ([`InvalidValue`]).
    #[error("invalid_value: {detail}")]
    InvalidValue {
        /// For people.
        detail: String,
    },
    /// A refusal from a newer core that this facade does not name yet.
    #[error("client_error: {detail}")]
    Other {
        /// For people.
        detail: String,
    },
}

impl From<ClientError> for PrecallError {
    fn from(e: ClientError) -> Self {
        let detail = e.to_string();
        match e {
            ClientError::NotLoggedIn => Self::NotLoggedIn { detail },
            ClientError::NotDetached => Self::NotDetached { detail },
            ClientError::AlreadyLoggedIn => Self::AlreadyLoggedIn { detail },
            ClientError::UnknownPeer(_) => Self::UnknownPeer { detail },
            ClientError::UnknownCall(_) => Self::UnknownCall { detail },
            ClientError::CallSetupInProgress => Self::CallSetupInProgress { detail },
            ClientError::UnsupportedVersion(_) => Self::UnsupportedVersion { detail },
            ClientError::Framing(_) => Self::Framing { detail },
            _ => Self::Other { detail },
        }
    }
}

impl From<InvalidValue> for PrecallError {
    fn from(e: InvalidValue) -> Self {
        Self::InvalidValue {
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use precall_protocol::error::FrameError;
    use precall_protocol::{CallId, Endpoint, SessionId, UserId};

    use super::*;

    #[test]
    fn each_client_error_keeps_its_variant_and_message() {
        let ep = Endpoint {
            user: UserId::new("bob").unwrap(),
            session: SessionId(3),
        };
        type Case = (ClientError, fn(String) -> PrecallError);
        let cases: Vec<Case> = vec![
            (ClientError::NotLoggedIn, |detail| {
                PrecallError::NotLoggedIn { detail }
            }),
            (ClientError::NotDetached, |detail| {
                PrecallError::NotDetached { detail }
            }),
            (ClientError::AlreadyLoggedIn, |detail| {
                PrecallError::AlreadyLoggedIn { detail }
            }),
            (ClientError::UnknownPeer(ep), |detail| {
                PrecallError::UnknownPeer { detail }
            }),
            (ClientError::UnknownCall(CallId(4)), |detail| {
                PrecallError::UnknownCall { detail }
            }),
            (ClientError::CallSetupInProgress, |detail| {
                PrecallError::CallSetupInProgress { detail }
            }),
            (ClientError::UnsupportedVersion(9), |detail| {
                PrecallError::UnsupportedVersion { detail }
            }),
            (ClientError::Framing(FrameError::Empty), |detail| {
                PrecallError::Framing { detail }
            }),
        ];
        for (e, want) in cases {
            let detail = e.to_string();
            assert_eq!(PrecallError::from(e), want(detail));
        }
        let e = PrecallError::from(UserId::new("Bob").unwrap_err());
        assert!(matches!(&e, PrecallError::InvalidValue { detail } if !detail.is_empty()));
        assert!(e.to_string().starts_with("invalid_value: "), "{e}");
    }
}
