//! Time, passed in by the embedder.
//!
//! The core never reads a clock. Every entry point that depends on time takes a
//! [`Time`], and the state machines report their next deadline through
//! `poll_timeout`. The embedder maps its own clock to milliseconds since any epoch it
//! likes (for example since the process started); tests and the model checker use a
//! counter.

use std::time::{Duration, Instant};

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

    /// The point `d` after the epoch (whole milliseconds, saturating).
    pub fn from_duration(d: Duration) -> Time {
        Time::ZERO.after(d)
    }

    /// How long after the epoch this point is.
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl From<Duration> for Time {
    fn from(d: Duration) -> Time {
        Time::from_duration(d)
    }
}

/// How far ahead of its epoch [`Epoch::instant`] reaches at most: 100 years of 365 days.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// An embedder's clock mapped to [`Time`]: the `Instant` taken as the epoch once (when
/// the process or the connection starts), then `Instant`s to `Time` for the core and
/// the core's deadlines back to `Instant`s for the runtime's timers. The core itself
/// never reads a clock; this only converts.
///
/// ```
/// use std::time::{Duration, Instant};
/// use precall_protocol::{Epoch, Time};
///
/// let start = Instant::now();
/// let epoch = Epoch::new(start);
/// assert_eq!(epoch.time(start + Duration::from_millis(1500)), Time(1500));
/// assert_eq!(epoch.instant(Time(250)), start + Duration::from_millis(250));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Epoch(Instant);

impl Epoch {
    /// The epoch at `start`.
    pub fn new(start: Instant) -> Epoch {
        Epoch(start)
    }

    /// The `Instant` taken as the epoch.
    pub fn start(&self) -> Instant {
        self.0
    }

    /// `at` as a [`Time`]: whole milliseconds since the epoch ([`Time::ZERO`] for an
    /// instant before it).
    pub fn time(&self, at: Instant) -> Time {
        Time::from_duration(at.saturating_duration_since(self.0))
    }

    /// A [`Time`] (a deadline from `poll_timeout`) as an `Instant`. A time too far
    /// ahead for the platform's `Instant` is capped at about a century from the epoch.
    pub fn instant(&self, t: Time) -> Instant {
        self.0
            .checked_add(t.as_duration().min(CENTURY))
            .unwrap_or(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_convert_both_ways() {
        let d = Duration::from_millis(1234);
        assert_eq!(Time::from_duration(d), Time(1234));
        assert_eq!(Time::from(d), Time(1234));
        assert_eq!(Time(1234).as_duration(), d);
        // Whole milliseconds, saturating.
        assert_eq!(Time::from_duration(Duration::from_micros(1999)), Time(1));
        assert_eq!(Time::from_duration(Duration::MAX), Time(u64::MAX));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test needs some instant to start from
    fn an_epoch_maps_instants_to_times_and_back() {
        let start = Instant::now();
        let epoch = Epoch::new(start);
        assert_eq!(epoch.start(), start);
        assert_eq!(epoch.time(start), Time::ZERO);
        assert_eq!(epoch.time(start + Duration::from_millis(2500)), Time(2500));
        let earlier = start.checked_sub(Duration::from_secs(1));
        if let Some(earlier) = earlier {
            assert_eq!(epoch.time(earlier), Time::ZERO);
        }
        assert_eq!(
            epoch.instant(Time(2500)),
            start + Duration::from_millis(2500)
        );
        // The end of time does not overflow the platform's clock: it is capped at a
        // century (3,153,600,000 s) after the epoch.
        let cap = Duration::from_secs(3_153_600_000);
        assert_eq!(epoch.instant(Time(u64::MAX)), start + cap);
        assert_eq!(epoch.instant(Time::from_duration(cap)), start + cap);
    }
}
