//! The two tasks of one TCP connection.
//!
//! The reader forwards whatever bytes arrive to the server task (the core's frame
//! decoder does framing and limits) and reports end of stream or failure. The writer
//! drains the connection's bounded queue of frames, writing everything queued at once
//! in one write, and shuts the socket down once the queue's sender is dropped and every
//! frame queued before is written.

use bytes::{Bytes, BytesMut};
use precall_protocol::ConnId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::serve::Input;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Reads until end of stream or error, forwarding chunks as [`Input::Data`], then
/// reports [`Input::Closed`].
pub async fn read_loop(conn: ConnId, mut socket: OwnedReadHalf, inputs: mpsc::Sender<Input>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let error = loop {
        buf.reserve(READ_CHUNK);
        match socket.read_buf(&mut buf).await {
            Ok(0) => break None,
            Ok(_) => {
                if inputs
                    .send(Input::Data(conn, buf.split().freeze()))
                    .await
                    .is_err()
                {
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
/// if the kernel accepts part of it).
pub async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
    batch: usize,
) {
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
        frames.clear();
        if let Err(e) = result {
            tracing::debug!(error = %e, "write failed");
            return;
        }
        // Do not keep a large buffer from one burst for the connection's lifetime.
        if buf.capacity() > 1 << 20 {
            buf = Vec::new();
        }
    }
    let _ = socket.shutdown().await;
}
