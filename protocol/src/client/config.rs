//! The client's configuration.

use std::time::Duration;

use crate::codec::DEFAULT_MAX_FRAME;

/// Client timers and limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Largest frame payload accepted from the server; values below
    /// [`crate::codec::MIN_MAX_FRAME`] act as that minimum.
    pub max_frame: u32,
    /// How long the client may stay silent while logged in before it sends `ping`;
    /// must be well below the server's idle timeout.
    pub ping_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            ping_interval: Duration::from_secs(20),
        }
    }
}
