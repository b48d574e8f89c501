//! The media description a call may carry (spec section 10.8): an opaque text, in
//! practice an SDP session description with the sender's ICE credentials, candidates
//! and DTLS fingerprint, that the server relays from the caller to the callee with the
//! call and from the callee to the caller with the acceptance. precall does not read
//! it; it only bounds it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InvalidValue;

/// An opaque media description relayed with a call: 1–[`MediaDescription::MAX_LEN`]
/// bytes of text with no control characters other than tab, CR and LF.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaDescription(Box<str>);

impl MediaDescription {
    /// Largest length in bytes the spec allows: room for an SDP offer with a video
    /// and an audio section, ICE candidates and fingerprints, well inside a frame.
    pub const MAX_LEN: usize = 16 * 1024;

    /// Validates `s` and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
        let s = s.into();
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(InvalidValue::Length {
                what: "media description",
                len: s.len(),
                max: Self::MAX_LEN,
            });
        }
        if let Some(pos) = s
            .bytes()
            .position(|b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f)
        {
            return Err(InvalidValue::Character {
                what: "media description",
                pos,
            });
        }
        Ok(Self(s.into_boxed_str()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MediaDescription {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::new(s)
    }
}

impl From<MediaDescription> for String {
    fn from(v: MediaDescription) -> String {
        v.0.into()
    }
}

/// Its length only: a description names network addresses, which logs need not hold.
impl fmt::Debug for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MediaDescription({} bytes)", self.0.len())
    }
}

/// A short SDP-like text (fuzzed calls carry one sometimes; its content is opaque).
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for MediaDescription {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.int_in_range(1..=64u32)?;
        Self::new(format!("v=0\r\no=- {n} 1 IN IP4 127.0.0.1\r\n"))
            .map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_characters_are_checked() {
        assert!(MediaDescription::new("v=0\r\n\ta=x\n").is_ok());
        assert!(MediaDescription::new("").is_err());
        let max = "a".repeat(MediaDescription::MAX_LEN);
        assert!(MediaDescription::new(max.clone()).is_ok());
        assert!(MediaDescription::new(max + "a").is_err());
        assert_eq!(
            MediaDescription::new("v=0\u{1}"),
            Err(InvalidValue::Character {
                what: "media description",
                pos: 3
            })
        );
        assert!(MediaDescription::new("a\u{7f}").is_err());
        assert!(MediaDescription::new("a\u{1f}").is_err());
        assert!(MediaDescription::new("\u{20}~é").is_ok());
        let m = MediaDescription::new("v=0").expect("valid");
        assert_eq!(format!("{m:?}"), "MediaDescription(3 bytes)");
        assert_eq!(m.as_str(), "v=0");
        assert_eq!(String::from(m), "v=0");
    }
}
