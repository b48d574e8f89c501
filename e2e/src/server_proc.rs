//! A running `precall-server serve` process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use crate::binaries::tail;
#[cfg(unix)]
use crate::binaries::{signal, wait_timeout};
#[cfg(unix)]
use crate::{bail, Res};

/// A running `precall-server serve`; killed on drop.
pub struct ServerProc {
    pub(crate) child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address of its WebSocket port (`--ws-listen`), if it has one.
    pub ws_addr: Option<SocketAddr>,
    pub(crate) log: PathBuf,
}

impl ServerProc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tail of its stderr log.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 4000)
    }

    /// Its whole stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait at most `timeout` for the exit status (SIGKILL after that).
    #[cfg(unix)]
    pub fn terminate(&mut self, timeout: Duration) -> Res<ExitStatus> {
        signal(self.child.id(), libc::SIGTERM)?;
        match wait_timeout(&mut self.child, timeout) {
            Some(s) => Ok(s),
            None => {
                self.kill();
                bail!("the server did not exit within {timeout:?} of SIGTERM")
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}
