//! The two tasks of one connection, over plain TCP or TLS.
//!
//! The reader forwards whatever bytes arrive to the server task (the core's frame
//! decoder does framing and limits) and reports end of stream or failure. It applies
//! backpressure: it has at most one chunk waiting for the server task (`gate`), and
//! before each read it waits until the connection's own outbound queue has room for
//! what one chunk of requests can cause (`headroom`). A peer that floods requests is
//! therefore slowed down by TCP flow control instead of overflowing its queue; only a
//! peer that stops reading while others push to it fills its queue and is dropped. The writer
//! drains the connection's bounded queue of frames, writing everything queued at once
//! in one write, and shuts the socket down once the queue's sender is dropped and every
//! frame queued before is written.
//!
//! Both loops are generic over the byte stream. Over TLS, [`tls_read_loop`] first runs
//! the handshake (bounded in time), hands the write half to the writer task and then
//! runs the same [`read_loop`]; a failed handshake is reported as the connection's
//! end, like a failed read.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use precall_protocol::server::MAX_CONTACTS;
use precall_protocol::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_rustls::server::TlsStream;

use crate::serve::Input;
use crate::tls::Tls;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// The read buffer of a connection that sends little (a ping, a small request).
const SMALL_READ: usize = 512;

/// The smallest request frame (a `ping`), in bytes: a chunk of `n` bytes holds at most
/// `n / MIN_REQUEST` requests.
const MIN_REQUEST: usize = 19;

/// Outbound queue slots the reader keeps free before each read: room for the answers to
/// one full chunk of requests (one frame each) plus the largest login snapshot
/// (`login_ok`, one `online` per visible terminal, `synced`), capped at half the queue.
pub fn headroom(queue_frames: usize, max_sessions_per_user: usize) -> usize {
    let snapshot = MAX_CONTACTS * max_sessions_per_user + 2;
    (READ_CHUNK / MIN_REQUEST + snapshot)
        .min(queue_frames / 2)
        .max(1)
}

/// Reads until end of stream or error, forwarding chunks as [`Input::Data`], then
/// reports [`Input::Closed`]. The server task returns a `gate` permit after it handled
/// each chunk.
pub async fn read_loop<R: AsyncRead + Unpin>(
    conn: ConnId,
    mut socket: R,
    inputs: mpsc::Sender<Input>,
    gate: Arc<Semaphore>,
    queue: mpsc::WeakSender<Bytes>,
    headroom: usize,
) {
    // A chunk never holds more requests than the headroom has answers for.
    let chunk = (headroom * MIN_REQUEST).clamp(MIN_REQUEST, READ_CHUNK);
    // The buffer an idle connection waits with is small; it doubles while reads fill
    // it (up to `chunk`) and halves when they use under a quarter of it, so a mostly
    // idle terminal does not hold a full chunk for its lifetime.
    let mut size = SMALL_READ.min(chunk);
    let error = loop {
        // The previous chunk has been handled ...
        match gate.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        // ... and its answers queued: wait for room for the next chunk's. The queue is
        // held only while waiting, so that closing the connection (dropping the server's
        // sender) lets the writer finish.
        let Some(strong) = queue.upgrade() else {
            return; // the connection is being closed
        };
        match strong.reserve_many(headroom).await {
            Ok(permits) => drop(permits),
            Err(_) => return,
        }
        drop(strong);
        let mut buf = BytesMut::with_capacity(size);
        match (&mut socket).take(size as u64).read_buf(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => {
                size = if n == size {
                    (size * 2).min(chunk)
                } else if n < size / 4 {
                    (size / 2).max(SMALL_READ.min(chunk))
                } else {
                    size
                };
                if inputs.send(Input::Data(conn, buf.freeze())).await.is_err() {
                    return; // the server task is gone
                }
            }
            Err(e) => break Some(e),
        }
    };
    let _ = inputs.send(Input::Closed(conn, error)).await;
}

/// Writes queued frames until the queue's sender is dropped, then shuts the write side
/// down. Every wake-up writes all frames queued so far with one write call (more only
/// if the kernel accepts part of it). Returns `true` if it ended because the server
/// closed the connection (everything queued was written), `false` on a write error.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut queue: mpsc::Receiver<Bytes>,
    batch: usize,
) -> bool {
    let mut frames: Vec<Bytes> = Vec::with_capacity(batch.min(64));
    let mut buf: Vec<u8> = Vec::new();
    while queue.recv_many(&mut frames, batch).await > 0 {
        let result = if let [one] = frames.as_slice() {
            socket.write_all(one).await
        } else {
            buf.clear();
            for f in &frames {
                buf.extend_from_slice(f);
            }
            socket.write_all(&buf).await
        };
        // A TLS stream may keep records it could not write yet: push them out now.
        let result = match result {
            Ok(()) => socket.flush().await,
            Err(e) => Err(e),
        };
        frames.clear();
        if let Err(e) = result {
            tracing::debug!(error = %e, "write failed");
            return false;
        }
        // Do not keep the buffer of a burst (a login snapshot) for the connection's
        // lifetime: an idle terminal should cost little memory.
        if buf.capacity() > 4096 {
            buf = Vec::new();
        }
    }
    let _ = socket.shutdown().await;
    true
}

/// Runs the TLS handshake, at most [`Tls::handshake_timeout`]. A handshake that fails
/// or times out is an error saying so (for the connection's end report).
pub async fn tls_handshake(
    conn: ConnId,
    socket: TcpStream,
    tls: Tls,
) -> io::Result<TlsStream<TcpStream>> {
    let Tls {
        acceptor,
        handshake_timeout,
    } = tls;
    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Err(io::Error::new(
                e.kind(),
                format!("TLS handshake failed: {e}"),
            ))
        }
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake not done within {handshake_timeout:?}"),
            ))
        }
    };
    let (_, session) = stream.get_ref();
    tracing::debug!(
        %conn,
        version = ?session.protocol_version(),
        suite = ?session.negotiated_cipher_suite().map(|s| s.suite()),
        "TLS handshake done"
    );
    Ok(stream)
}

/// The write half of a TLS connection, handed from the reader to the writer once the
/// handshake is done.
pub type TlsWriteHalf = WriteHalf<TlsStream<TcpStream>>;

/// Runs the TLS handshake, at most [`Tls::handshake_timeout`], then sends the write
/// half to the writer task (`writer`) and reads as [`read_loop`] does. A handshake that
/// fails or times out is reported as [`Input::Closed`] with the reason (the server task
/// logs it at debug level); dropping `writer` then ends the writer task. Nothing here
/// affects other connections.
#[allow(clippy::too_many_arguments)]
pub async fn tls_read_loop(
    conn: ConnId,
    socket: TcpStream,
    tls: Tls,
    writer: oneshot::Sender<TlsWriteHalf>,
    inputs: mpsc::Sender<Input>,
    gate: Arc<Semaphore>,
    queue: mpsc::WeakSender<Bytes>,
    headroom: usize,
) {
    let stream = match tls_handshake(conn, socket, tls).await {
        Ok(stream) => stream,
        Err(e) => {
            let _ = inputs.send(Input::Closed(conn, Some(e))).await;
            return;
        }
    };
    let (rd, wr) = tokio::io::split(stream);
    if writer.send(wr).is_err() {
        return; // the connection is being closed
    }
    read_loop(conn, rd, inputs, gate, queue, headroom).await;
}
