//! File descriptors: the server's connection cap follows what the process may open.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit, and the connection
//! cap is the smaller of `--max-connections` and the descriptors available less a
//! reserve. The reserve keeps descriptors for the store, TLS files and, above all, for
//! connections beyond the cap: those are accepted, answered `too_many_connections` and
//! closed, instead of waiting unanswered in the listen queue while `accept` fails.

use std::time::{Duration, Instant};

/// Descriptors the process may open: the soft limit after raising it to the hard
/// limit (or the soft limit as it was, if raising fails).
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::Resource::NOFILE
                .get()
                .map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Descriptors kept out of the connection cap: at least 64, a sixteenth of the limit
/// (at most 4,096) for larger limits.
pub fn reserve(nofile: u64) -> u64 {
    (nofile / 16).clamp(64, 4096)
}

/// The connection cap: `flag`, unless fewer descriptors are available (0 in `flag`
/// means no limit of its own).
pub fn connection_cap(flag: usize, nofile: u64) -> usize {
    let available = usize::try_from(nofile.saturating_sub(reserve(nofile))).unwrap_or(usize::MAX);
    if flag == 0 {
        available
    } else {
        flag.min(available)
    }
}

/// Logs failed `accept`s at most once a second, with how many failed since the last
/// line.
#[derive(Debug)]
pub struct AcceptFailures {
    since: Option<Instant>,
    count: u64,
}

impl AcceptFailures {
    /// No failure yet.
    pub fn new() -> Self {
        Self {
            since: None,
            count: 0,
        }
    }

    /// One more failure; logs if a second passed since the last line.
    pub fn failed(&mut self, error: &std::io::Error) {
        self.count += 1;
        let now = Instant::now();
        if self
            .since
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(error = %error, failures = self.count, "accept failed");
            self.since = Some(now);
            self.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_descriptors_with_a_reserve() {
        assert_eq!(reserve(1024), 64);
        assert_eq!(reserve(20_000), 1250);
        assert_eq!(reserve(1 << 20), 4096);
        assert_eq!(connection_cap(50_000, 1024), 960);
        assert_eq!(connection_cap(50_000, 20_000), 18_750);
        assert_eq!(connection_cap(100, 20_000), 100);
        assert_eq!(connection_cap(0, 1024), 960);
    }
}
