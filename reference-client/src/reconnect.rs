//! Reconnecting after the connection dropped (spec section 9.9): the back-off settings
//! of the command line; the driver (`precall_client::Driver`) makes the attempts. What
//! a refusal means (the session kept detached, the wait the server asked for) is the
//! core's.

use std::time::Duration;

/// How the client reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The ceiling of the first attempt's random wait.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
}
