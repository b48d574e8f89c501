//! Time, passed in by the embedder.
//!
//! The core never reads a clock. Every entry point that depends on time takes a
//! [`Time`], and the state machines report their next deadline through
//! `poll_timeout`. The embedder maps its own clock to milliseconds since any epoch it
//! likes (for example since the process started); tests and the model checker use a
//! counter.

use std::time::Duration;

/// A duration in whole milliseconds (as `Time` and the wire's `retry_after_ms` count
/// it), saturating at `u64::MAX`.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A point in time: milliseconds since an epoch chosen by the embedder.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Time(pub u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// `self + d`, saturating at the end of time.
    pub fn after(self, d: Duration) -> Time {
        Time(self.0.saturating_add(millis(d)))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
