//! Reconnecting after the connection dropped (spec section 9.9): the back-off settings
//! and the random numbers its jitter draws on. What a refusal means (the session kept
//! detached, the wait the server asked for) is the core's.

use std::time::Duration;

/// How the client reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The ceiling of the first attempt's random wait.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

/// 64 random bits from the operating system (the jitter of the back-off); if it
/// cannot be read, bits from the clock, which still spread clients apart.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            u64::from(d.subsec_nanos()) ^ d.as_secs().rotate_left(32)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_numbers_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}
