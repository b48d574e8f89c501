//! The harness's error: [`Error`], a message meant for a human; [`Res`]; and the
//! [`bail!`](crate::bail) and [`ensure!`](crate::ensure) macros.

use std::fmt;

/// A harness failure: a message meant for a human (what was awaited, what arrived
/// instead, the tail of the process's log).
pub struct Error(pub String);

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Test failures print the Debug form: keep it readable, newlines included.
        f.write_str(&self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(format!("I/O error: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("JSON error: {e}"))
    }
}

impl From<precall_protocol::InvalidValue> for Error {
    fn from(e: precall_protocol::InvalidValue) -> Self {
        Error(format!("invalid value: {e}"))
    }
}

impl From<tungstenite::Error> for Error {
    fn from(e: tungstenite::Error) -> Self {
        Error(format!("WebSocket error: {e}"))
    }
}

impl From<tungstenite::http::header::InvalidHeaderValue> for Error {
    fn from(e: tungstenite::http::header::InvalidHeaderValue) -> Self {
        Error(format!("invalid header value: {e}"))
    }
}

/// The harness's result type.
pub type Res<T> = Result<T, Error>;

/// Fails with a formatted [`Error`].
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::Error(format!($($t)*))) };
}

/// Fails with a formatted [`Error`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($t:tt)*) => {
        if !$cond { $crate::bail!($($t)*); }
    };
}
