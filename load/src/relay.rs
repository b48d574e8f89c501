//! A delaying TCP relay: emulates network latency between a client and the server
//! without touching either.
//!
//! Each accepted connection is joined to a new connection to the upstream address; in
//! each direction one thread reads chunks and stamps them with `arrival + delay`, and
//! another writes each chunk once its time has come, in order. Plain threads and
//! blocking sockets keep the delay precise: the writer sleeps until just before the
//! chunk is due and yields the processor for the last few hundred microseconds (an
//! async timer would round to the millisecond, a plain sleep wakes up late).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A running relay; its threads end with the connections it carries (or the process).
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to `upstream`,
    /// delaying each direction by `delay`.
    pub fn start(upstream: SocketAddr, delay: Duration) -> Result<Self> {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).context("relay: cannot listen on loopback")?;
        let addr = listener.local_addr()?;
        thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(down) => {
                            if let Err(e) = join(down, upstream, delay) {
                                tracing::warn!(error = %e, "relay: connection not relayed");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "relay: accept failed"),
                    }
                }
            })
            .context("relay: cannot start a thread")?;
        Ok(Self { addr })
    }
}

fn join(down: TcpStream, upstream: SocketAddr, delay: Duration) -> Result<()> {
    let up = TcpStream::connect(upstream).context("relay: cannot reach the server")?;
    for s in [&down, &up] {
        s.set_nodelay(true)?;
    }
    pipe(down.try_clone()?, up.try_clone()?, delay)?;
    pipe(up, down, delay)?;
    Ok(())
}

/// Relays `from` to `to`, each chunk `delay` after it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) -> Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::Builder::new()
        .name("relay-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx
                            .send((Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            // Dropping the sender tells the writer to finish.
        })?;
    thread::Builder::new()
        .name("relay-write".into())
        .spawn(move || {
            for (due, chunk) in rx {
                wait_until(due);
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })?;
    Ok(())
}

/// How long before a chunk is due the writer stops sleeping and spins: a sleeping
/// thread wakes up to about a hundred microseconds late, which would add jitter to
/// every hop.
const SPIN: Duration = Duration::from_micros(300);

/// Waits until `due`: sleeps most of the way, then yields until the moment.
fn wait_until(due: Instant) {
    let wait = due.saturating_duration_since(Instant::now());
    if wait > SPIN {
        thread::sleep(wait - SPIN);
    }
    while Instant::now() < due {
        thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_each_direction_and_keeps_order() {
        let server = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let upstream = server.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 6];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let relay = Relay::start(upstream, Duration::from_millis(20)).unwrap();
        let mut c = TcpStream::connect(relay.addr).unwrap();
        let t0 = Instant::now();
        c.write_all(b"abc").unwrap();
        c.write_all(b"def").unwrap();
        let mut back = [0u8; 6];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"abcdef");
        assert!(
            t0.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t0.elapsed()
        );
    }
}
