//! A TCP relay between clients and the server, whose connections a test can cut, block
//! or point at a restarted server, and which can stand for a distant server by
//! delaying everything it forwards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crate::{Res, TIMEOUT};

/// A TCP relay on `127.0.0.1:0` that forwards every connection to an upstream address
/// (the server), so that a test can cut a client's connection abruptly, keep the client
/// from reaching the server for a while, or point it at a restarted server, without
/// touching either process. Stopped (and every relayed connection cut) on drop.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: std::sync::Arc<RelayShared>,
}

struct RelayShared {
    upstream: std::sync::Mutex<SocketAddr>,
    /// While set, new connections are accepted and reset at once (the server looks
    /// unreachable).
    blocked: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    /// The open relayed connections: both sockets, and whether it was cut.
    links: std::sync::Mutex<Vec<RelayLink>>,
    /// Connections accepted so far (blocked ones included).
    accepted: std::sync::atomic::AtomicUsize,
    /// How long each byte takes to cross the relay, in each direction.
    one_way: Duration,
}

struct RelayLink {
    client: TcpStream,
    server: TcpStream,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Makes closing `s` send a reset (RST) instead of an orderly FIN.
#[cfg(unix)]
fn set_zero_linger(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from `&l`, which lives for
    // the call; the descriptor belongs to `s`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(l).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(8),
        )
    };
    let _ = rc;
}

impl Relay {
    /// Starts relaying to `upstream`.
    pub fn start(upstream: SocketAddr) -> Res<Relay> {
        Self::start_delayed(upstream, Duration::ZERO)
    }

    /// Starts relaying to `upstream`, each byte held `one_way` before it is passed on,
    /// in both directions: a server `2 * one_way` of round-trip time away. Order and
    /// throughput are kept (a pipe with latency, not a stop-and-wait link).
    pub fn start_delayed(upstream: SocketAddr, one_way: Duration) -> Res<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = std::sync::Arc::new(RelayShared {
            upstream: std::sync::Mutex::new(upstream),
            blocked: std::sync::atomic::AtomicBool::new(false),
            stop: std::sync::atomic::AtomicBool::new(false),
            links: std::sync::Mutex::new(Vec::new()),
            accepted: std::sync::atomic::AtomicUsize::new(0),
            one_way,
        });
        let sh = shared.clone();
        thread::spawn(move || relay_accept(&listener, &sh));
        Ok(Relay { addr, shared })
    }

    /// Cuts every relayed connection abruptly: both ends get a reset, nothing in
    /// flight is delivered, no goodbye is said. Returns how many were cut. New
    /// connections are relayed as before (unless [`Relay::block`]ed).
    pub fn cut(&self) -> usize {
        use std::net::Shutdown;
        use std::sync::atomic::Ordering;
        let links: Vec<RelayLink> = std::mem::take(&mut *lock(&self.shared.links));
        for l in &links {
            l.cut.store(true, Ordering::SeqCst);
            #[cfg(unix)]
            {
                set_zero_linger(&l.client);
                set_zero_linger(&l.server);
            }
            // Wakes the pumps (a read returns 0) without sending anything; the last
            // descriptor to close sends the reset.
            let _ = l.client.shutdown(Shutdown::Read);
            let _ = l.server.shutdown(Shutdown::Read);
        }
        links.len()
    }

    /// While `on`, new connections are reset as soon as they are accepted, so clients
    /// cannot reach the server; connections already relayed are not touched.
    pub fn block(&self, on: bool) {
        self.shared
            .blocked
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Relays new connections to `upstream` from now on (e.g. a restarted server).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// Connections accepted so far (blocked ones included).
    pub fn accepted(&self) -> usize {
        self.shared
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Relayed connections open now.
    pub fn open(&self) -> usize {
        lock(&self.shared.links).len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Locks a mutex, taking the data of a poisoned one (a pump thread that panicked).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn relay_accept(listener: &TcpListener, sh: &std::sync::Arc<RelayShared>) {
    use std::sync::atomic::Ordering;
    for conn in listener.incoming() {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        sh.accepted.fetch_add(1, Ordering::SeqCst);
        if sh.blocked.load(Ordering::SeqCst) {
            #[cfg(unix)]
            set_zero_linger(&client);
            continue;
        }
        let upstream = *lock(&sh.upstream);
        let Ok(server) = TcpStream::connect_timeout(&upstream, TIMEOUT) else {
            #[cfg(unix)]
            set_zero_linger(&client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clones = (|| -> std::io::Result<_> {
            Ok((
                client.try_clone()?,
                server.try_clone()?,
                client.try_clone()?,
                server.try_clone()?,
            ))
        })();
        let Ok((c_rd, s_wr, c_wr, s_rd)) = clones else {
            continue;
        };
        lock(&sh.links).push(RelayLink {
            client,
            server,
            cut: cut.clone(),
        });
        let cut2 = cut.clone();
        let one_way = sh.one_way;
        thread::spawn(move || relay_pump(c_rd, s_wr, &cut, one_way));
        thread::spawn(move || relay_pump(s_rd, c_wr, &cut2, one_way));
    }
}

/// Copies `from` to `to` until `from` ends; an orderly end is passed on (FIN), a cut
/// is not. With a delay, a second thread writes each chunk `one_way` after it was read.
fn relay_pump(
    from: TcpStream,
    to: TcpStream,
    cut: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    one_way: Duration,
) {
    if one_way.is_zero() {
        return relay_copy(from, to, cut);
    }
    let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>)>();
    let cut_w = cut.clone();
    let writer = thread::spawn(move || {
        let mut to = to;
        // The channel closes when the reader ends: then the end is passed on.
        for (due, chunk) in rx {
            thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            if cut_w.load(std::sync::atomic::Ordering::SeqCst) || to.write_all(&chunk).is_err() {
                return;
            }
        }
        if !cut_w.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = to.shutdown(std::net::Shutdown::Write);
        }
    });
    let mut from = from;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if tx
            .send((std::time::Instant::now() + one_way, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}

fn relay_copy(mut from: TcpStream, mut to: TcpStream, cut: &std::sync::atomic::AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if cut.load(std::sync::atomic::Ordering::SeqCst) || to.write_all(&buf[..n]).is_err()
                {
                    break;
                }
            }
        }
    }
    if !cut.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = to.shutdown(std::net::Shutdown::Write);
    }
}
