//! The facade's one error type: a stable `code` string and a `message` for people.
//!
//! In JavaScript every error is thrown as an `Error` whose `name` is `PrecallError`,
//! with a `code` property ([`Error::code`]) next to its `message`. The codes are the
//! snake_case names of the core's and `precall-sdp`'s error variants, plus the few
//! this facade adds for arguments a page got wrong:
//!
//! | code | from |
//! |---|---|
//! | `not_logged_in`, `not_detached`, `already_logged_in`, `unknown_peer`, `unknown_call`, `call_setup_in_progress` | a command the client cannot carry out now ([`ClientError`]) |
//! | `unsupported_version`, `framing` | [`PrecallClient::receive`](crate::PrecallClient::receive): the connection is unusable (close it); the session is already detached or over |
//! | `invalid_value` | an identifier or capability set that breaks the spec's syntax or ranges ([`InvalidValue`]) |
//! | `unknown_codec`, `asymmetric_codecs`, `nothing_to_list`, `offer_mismatch`, `no_video_section`, `codec_not_in_stack` | the SDP helpers ([`SdpError`]) |
//! | `invalid_config` | the constructor's configuration object |
//! | `invalid_argument` | a peer, call or section kind that is not one |
//! | `invalid_time` | a time that is not a finite number of milliseconds ≥ 0 |
//! | `internal` | a value JavaScript cannot hold (never expected) |

use std::fmt;

use precall_protocol::client::ClientError;
use precall_protocol::InvalidValue;
use precall_sdp::SdpError;
use serde::Serialize;

/// An error of the facade: what JavaScript receives as a thrown `PrecallError`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Error {
    /// A stable snake_case code, for programs (see the [module docs](self)).
    pub code: &'static str,
    /// A human-readable description, not for programs.
    pub message: String,
}

impl Error {
    /// An error with this code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::NotLoggedIn => "not_logged_in",
            ClientError::NotDetached => "not_detached",
            ClientError::AlreadyLoggedIn => "already_logged_in",
            ClientError::UnknownPeer(_) => "unknown_peer",
            ClientError::UnknownCall(_) => "unknown_call",
            ClientError::CallSetupInProgress => "call_setup_in_progress",
            ClientError::UnsupportedVersion(_) => "unsupported_version",
            ClientError::Framing(_) => "framing",
            _ => "client_error",
        };
        Error::new(code, e.to_string())
    }
}

impl From<InvalidValue> for Error {
    fn from(e: InvalidValue) -> Self {
        Error::new("invalid_value", e.to_string())
    }
}

impl From<SdpError> for Error {
    fn from(e: SdpError) -> Self {
        let code = match &e {
            SdpError::UnknownCodec { .. } => "unknown_codec",
            SdpError::AsymmetricCodecs { .. } => "asymmetric_codecs",
            SdpError::NothingToList => "nothing_to_list",
            SdpError::OfferMismatch { .. } => "offer_mismatch",
            SdpError::NoVideoSection => "no_video_section",
            SdpError::CodecNotInStack { .. } => "codec_not_in_stack",
            _ => "sdp_error",
        };
        Error::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use precall_protocol::error::FrameError;
    use precall_protocol::{CallId, Codec, Endpoint, SessionId, UserId};

    use super::*;

    #[test]
    fn client_errors_keep_their_variant_as_the_code() {
        let ep = Endpoint {
            user: UserId::new("bob").unwrap(),
            session: SessionId(3),
        };
        let cases = [
            (ClientError::NotLoggedIn, "not_logged_in"),
            (ClientError::NotDetached, "not_detached"),
            (ClientError::AlreadyLoggedIn, "already_logged_in"),
            (ClientError::UnknownPeer(ep), "unknown_peer"),
            (ClientError::UnknownCall(CallId(4)), "unknown_call"),
            (ClientError::CallSetupInProgress, "call_setup_in_progress"),
            (ClientError::UnsupportedVersion(9), "unsupported_version"),
            (ClientError::Framing(FrameError::Empty), "framing"),
        ];
        for (e, code) in cases {
            let message = e.to_string();
            assert_eq!(Error::from(e), Error { code, message });
        }
    }

    #[test]
    fn sdp_and_value_errors_map_to_their_codes() {
        let codec = Codec::new("x-mine").unwrap();
        let e = Error::from(SdpError::UnknownCodec { codec });
        assert_eq!(e.code, "unknown_codec");
        assert!(e.message.contains("x-mine"), "{e}");
        assert_eq!(
            Error::from(SdpError::NoVideoSection).code,
            "no_video_section"
        );
        assert_eq!(Error::from(SdpError::NothingToList).code, "nothing_to_list");
        let reason = "r".to_owned();
        assert_eq!(
            Error::from(SdpError::OfferMismatch { reason }).code,
            "offer_mismatch"
        );
        let e = Error::from(UserId::new("Bob").unwrap_err());
        assert_eq!(e.code, "invalid_value");
        assert_eq!(e.to_string(), format!("invalid_value: {}", e.message));
    }
}
