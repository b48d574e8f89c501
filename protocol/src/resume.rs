//! Resumable sessions (spec section "Resumable sessions"): the token a server issues
//! at login, the secret it derives tokens from, the server's resume settings, and the
//! reconnect back-off every client uses.
//!
//! A terminal whose connection drops is not offline at once: its session is *detached*
//! for [`ResumeConfig::grace`]. Watchers keep it in their tables; pushes meant for it
//! are numbered and kept in a bounded log. A client that reconnects within the grace
//! sends `resume` with its token and the number of table frames it processed, and gets
//! either exactly the frames it missed or, when that is cheaper or the log no longer
//! reaches back far enough, a full snapshot. No credential check runs.
//!
//! The core has no randomness (it is sans-IO): tokens are derived from a
//! [`ResumeSecret`] the embedder draws from its operating system once, and the session
//! number, with SHA-256. Without the secret a token cannot be guessed; with a fixed
//! secret (tests, the model checker, the fuzz targets) runs stay reproducible.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::InvalidValue;
use crate::ids::SessionId;

/// The credential of one session for `resume`: 32 lowercase hexadecimal digits
/// (128 bits), issued in `login_ok`. Its `Debug` form is redacted.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResumeToken(Box<str>);

impl ResumeToken {
    /// Length in bytes of every token.
    pub const LEN: usize = 32;

    /// Validates the syntax (exactly [`Self::LEN`] digits `0-9 a-f`) and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
        let s = s.into();
        if s.len() != Self::LEN {
            return Err(InvalidValue::Length {
                what: "resume token",
                len: s.len(),
                max: Self::LEN,
            });
        }
        if let Some(pos) = s
            .bytes()
            .position(|b| !(b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(InvalidValue::Character {
                what: "resume token",
                pos,
            });
        }
        Ok(Self(s.into_boxed_str()))
    }

    /// The token a server with `secret` issues to `session`.
    pub fn derive(secret: &ResumeSecret, session: SessionId) -> Self {
        let mut h = Sha256::new();
        h.update(b"precall resume token v1\0");
        h.update(secret.0);
        h.update(session.0.to_be_bytes());
        let digest = h.finalize();
        let hex: String = digest[..Self::LEN / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self(hex.into_boxed_str())
    }

    /// The token as sent on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResumeToken {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::new(s)
    }
}

impl From<ResumeToken> for String {
    fn from(v: ResumeToken) -> String {
        v.0.into()
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(<redacted>)")
    }
}

/// Mostly the token a server with the default secret issued to one of the first few
/// sessions (so fuzzed `resume` messages name sessions that exist), sometimes any
/// well-formed token.
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for ResumeToken {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        if u.ratio(7u8, 8u8)? {
            let session = SessionId(u.int_in_range(1u64..=8)?);
            return Ok(Self::derive(&ResumeSecret::default(), session));
        }
        let bytes: [u8; 16] = u.arbitrary()?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(hex.into_boxed_str()))
    }
}

/// The server's secret that tokens are derived from. The embedder fills it from its
/// operating system's random source once per process; the default (all zero) makes
/// tokens predictable and is for tests only. Its `Debug` form is redacted.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ResumeSecret(pub [u8; 32]);

impl fmt::Debug for ResumeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeSecret(<redacted>)")
    }
}

/// The server's resume settings (spec section "Resumable sessions").
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ResumeConfig {
    /// How long a session whose connection dropped stays detached, resumable and
    /// online for its watchers. Zero disables resumption: no token is issued and a
    /// dropped connection ends its session at once.
    pub grace: Duration,
    /// How many of the latest table frames (`online`, `offline`, `contact_added`,
    /// `contact_removed`) the server keeps per detached session for a resume. A client
    /// that missed more gets a snapshot.
    pub log_frames: usize,
    /// How many of them an attached session keeps: the frames that may still be in
    /// flight when its connection dies (at most `log_frames`). Small, because every
    /// idle terminal pays for it.
    pub tail_frames: usize,
    /// What tokens are derived from.
    pub secret: ResumeSecret,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(60),
            log_frames: 32,
            tail_frames: 8,
            secret: ResumeSecret::default(),
        }
    }
}

impl ResumeConfig {
    /// Whether sessions are resumable at all.
    pub fn enabled(&self) -> bool {
        !self.grace.is_zero()
    }
}

/// Exponential back-off with full jitter for reconnecting clients (spec section
/// "Reconnecting"): attempt `n` waits a uniformly random time in
/// `[0, min(max, base * 2^n)]`, and never less than a `retry_after_ms` the server sent.
/// Randomness comes from the embedder, so the rule stays pure and testable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backoff {
    /// The ceiling of the first attempt's wait.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl Backoff {
    /// A back-off starting at `base`, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The ceiling of the next wait: `min(max, base * 2^attempts)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before the next attempt, given a uniformly random `random` from the
    /// embedder and the server's `retry_after` if it sent one; counts the attempt.
    pub fn next_delay(&mut self, random: u64, retry_after: Option<Duration>) -> Duration {
        let ceiling = u64::try_from(self.ceiling().as_micros()).unwrap_or(u64::MAX);
        let jittered = Duration::from_micros(random % ceiling.saturating_add(1));
        self.attempt = self.attempt.saturating_add(1);
        jittered.max(retry_after.unwrap_or(Duration::ZERO))
    }

    /// A connection succeeded: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_by_session_and_secret_and_parse_back() {
        let a = ResumeToken::derive(&ResumeSecret::default(), SessionId(1));
        let b = ResumeToken::derive(&ResumeSecret::default(), SessionId(2));
        let c = ResumeToken::derive(&ResumeSecret([7; 32]), SessionId(1));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(ResumeToken::new(a.expose().to_owned()), Ok(a.clone()));
        assert_eq!(format!("{a:?}"), "ResumeToken(<redacted>)");
        assert!(ResumeToken::new("ABCDEF0123456789abcdef0123456789").is_err());
        assert!(ResumeToken::new("abc").is_err());
    }

    /// Sections 9.9.1 and 13.3: whoever knows the secret can forge every token, so
    /// it never reaches a log; `Debug` (also of the config holding it) prints no byte.
    #[test]
    fn a_secret_is_redacted_in_debug_output() {
        let secret = ResumeSecret([0xab; 32]);
        let shown = format!(
            "{secret:?} {:?}",
            ResumeConfig {
                secret: secret.clone(),
                ..ResumeConfig::default()
            }
        );
        assert!(shown.contains("ResumeSecret(<redacted>)"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    /// Section 9.9.6: attempt k's ceiling is `base * 2^k`, so the back-off counts its
    /// attempts, and starts again from 0 after a success.
    #[test]
    fn backoff_counts_attempts() {
        let mut b = Backoff::default();
        assert_eq!(b.attempts(), 0);
        b.next_delay(1, None);
        b.next_delay(1, None);
        assert_eq!(b.attempts(), 2);
        assert_eq!(b.ceiling(), b.base * 4);
        b.reset();
        assert_eq!((b.attempts(), b.ceiling()), (0, b.base));
    }

    #[test]
    fn backoff_grows_to_its_ceiling_with_jitter_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u128> = (0..6)
            .map(|_| {
                let c = b.ceiling().as_millis();
                // The largest random value waits the whole ceiling ...
                assert!(b.next_delay(u64::MAX - 1, None).as_millis() <= c);
                c
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        // ... different random values wait different times (jitter) ...
        let mut x = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut y = x.clone();
        assert_ne!(x.next_delay(10_000, None), y.next_delay(70_000, None));
        // ... and never less than the server asked.
        let mut z = Backoff::default();
        let wait = z.next_delay(0, Some(Duration::from_secs(3)));
        assert_eq!(wait, Duration::from_secs(3));
        z.reset();
        assert_eq!(z.attempts(), 0);
    }
}
