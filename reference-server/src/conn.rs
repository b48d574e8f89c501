//! One connection: its [`Link`] with the server task, and the one task that reads and
//! writes its socket (plain TCP, TLS, or a WebSocket, module `ws`).
//!
//! **The link.** The server task queues the frames the core emits for the connection
//! on its [`Link`]: a `VecDeque<Bytes>` behind a mutex that holds no allocation while
//! the connection is idle (the writer takes the whole queue at once), with a bound
//! (`--queue-frames`). A full queue means a peer that stopped reading while others push
//! to it: [`Link::push`] refuses the frame and the server task drops the connection.
//!
//! **Reading** applies backpressure: the task has at most one chunk waiting for the
//! server task (the link's gate, given back by [`Link::release`] once the chunk is
//! handled), and before each read it waits until the queue has room for what one chunk
//! of requests can cause ([`headroom`]). A peer that floods requests is therefore slowed
//! down by TCP flow control instead of overflowing its queue. Over plain TCP the task
//! waits for the socket to be readable before it allocates the buffer a read fills, so
//! an idle connection holds no read buffer.
//!
//! **Writing** coalesces presence pushes (the coalescing rule, spec section 3.1). The
//! server task queues a frame *urgent* unless it is a presence push: an answer to the
//! connection's own request (the core emitted it while handling a chunk of this
//! connection's bytes) or any frame the core made for this connection alone (call
//! signalling, errors); module `serve` tells them apart. An urgent frame is written at
//! once, together with everything queued before it. A presence push is written at once
//! if the connection wrote no push within the last `--coalesce-ms` *D*; otherwise it
//! waits until *D* after that write, and every frame queued meanwhile goes out in the
//! same write (`writev`). So a push waits at most *D*, a connection writes pushes at
//! most once per *D* unless answers or calls come between, an idle connection gets its
//! first push with no delay, and the order of frames is never changed (the writer takes
//! the whole queue, in order). 16 KiB queued, or the server closing the connection,
//! also write at once.
//!
//! Reading and writing share one task (it polls both loops; one waker in the link
//! serves both, and waiting holds neither a timer nor a buffer while idle): the task
//! ends when the writer ends, after the server closed the connection and everything
//! queued was written and the socket shut down, or after a failed write (reported to
//! the server task as the connection's end, like a failed read). Over TLS the task
//! first runs the handshake (bounded in time); a failed handshake is reported as the
//! connection's end.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::Either;
use precall_protocol::server::MAX_CONTACTS;
use precall_protocol::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{tcp, TcpStream};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{Instant, Sleep};
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

/// Queued bytes that are written at once, whatever the coalescing delay.
pub const FLUSH_BYTES: usize = 16 * 1024;

/// Frames handed to one `writev` (the rest go in the next call).
const MAX_SLICES: usize = 64;

/// Outbound queue slots the reader keeps free before each read: room for the answers to
/// one full chunk of requests (one frame each) plus the largest login snapshot
/// (`login_ok`, one `online` per visible terminal, `synced`), capped at half the queue.
pub fn headroom(queue_frames: usize, max_sessions_per_user: usize) -> usize {
    let snapshot = MAX_CONTACTS * max_sessions_per_user + 2;
    (READ_CHUNK / MIN_REQUEST + snapshot)
        .min(queue_frames / 2)
        .max(1)
}

/// Why [`Link::push`] refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its capacity: the peer does not read.
    Full,
    /// The connection's task has ended (a failed write, a refused request on the
    /// WebSocket port, a failed handshake).
    Gone,
}

impl Refused {
    /// Why the server task drops the connection, for its log.
    pub fn why(self) -> &'static str {
        match self {
            Refused::Full => "outbound queue full",
            Refused::Gone => "writer gone",
        }
    }
}

/// What the server task and a connection's task share: the outbound queue, the read
/// gate, the end of the connection, and the waker of the connection's task (its reader
/// and writer run in that one task, so one waker serves both). One small allocation per
/// connection.
#[derive(Debug)]
pub struct Link {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Debug)]
struct State {
    /// Frames not yet taken by the writer, in order.
    frames: VecDeque<Bytes>,
    /// Their bytes.
    bytes: usize,
    /// One of them answers the connection's own request: write all at once.
    urgent: bool,
    /// One of them is a push.
    pushes: bool,
    /// The reader may read its next chunk.
    gate: bool,
    /// The reader waits for room in the queue.
    wants_room: bool,
    /// The server is done with the connection: write what is queued, then shut down.
    closed: bool,
    /// The connection's task has ended.
    gone: bool,
    /// The connection's task, while it waits for something of the above.
    waker: Option<Waker>,
}

impl State {
    fn register(&mut self, cx: &Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }
}

/// Wakes the connection's task, after the lock is released.
fn wake(mut st: MutexGuard<'_, State>) {
    let waker = st.waker.take();
    drop(st);
    if let Some(w) = waker {
        w.wake();
    }
}

impl Link {
    /// A link whose queue holds at most `capacity` frames (at least 1).
    pub fn new(capacity: usize) -> Arc<Link> {
        Arc::new(Link {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                urgent: false,
                pushes: false,
                gate: true,
                wants_room: false,
                closed: false,
                gone: false,
                waker: None,
            }),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame without ever waiting. `urgent`: it and everything before it are
    /// written at once (an answer, call signalling); otherwise it is a presence push,
    /// which may wait for the coalescing delay.
    pub fn push(&self, frame: Bytes, urgent: bool) -> Result<(), Refused> {
        let mut st = self.lock();
        if st.gone {
            return Err(Refused::Gone);
        }
        if st.frames.len() >= self.capacity {
            return Err(Refused::Full);
        }
        let was_empty = st.frames.is_empty();
        let crossed = st.bytes < FLUSH_BYTES && st.bytes + frame.len() >= FLUSH_BYTES;
        st.bytes += frame.len();
        st.frames.push_back(frame);
        let wakes = was_empty || crossed || (urgent && !st.urgent);
        if urgent {
            st.urgent = true;
        } else {
            st.pushes = true;
        }
        if wakes {
            wake(st);
        }
        Ok(())
    }

    /// Lets the reader read its next chunk (the previous one was handled).
    pub fn release(&self) {
        let mut st = self.lock();
        st.gate = true;
        wake(st);
    }

    /// The server is done with the connection: the writer writes what is queued, at
    /// once, then shuts the socket down; the reader stops.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        wake(st);
    }

    /// Frames queued (not yet taken by the writer).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().frames.len()
    }

    /// The connection's task ended: later pushes are refused, queued frames freed.
    fn gone(&self) {
        let mut st = self.lock();
        st.gone = true;
        st.frames = VecDeque::new();
        st.bytes = 0;
        st.waker = None;
    }

    /// Waits until the reader may read its next chunk: the gate is open and the queue
    /// has room for `headroom` more frames. `false` once the connection is closed.
    async fn turn(&self, headroom: usize) -> bool {
        poll_fn(|cx| {
            let mut st = self.lock();
            if st.closed || st.gone {
                return Poll::Ready(false);
            }
            if st.gate {
                if st.frames.len() + headroom <= self.capacity {
                    st.gate = false;
                    return Poll::Ready(true);
                }
                st.wants_room = true;
            }
            st.register(cx);
            Poll::Pending
        })
        .await
    }

    /// The next frames to write, in order, at the time the coalescing rule says (see the
    /// module's documentation); `None` once the connection is closed and everything
    /// queued was taken.
    async fn next_batch(&self, pacer: &mut Pacer) -> Option<VecDeque<Bytes>> {
        poll_fn(|cx| self.poll_batch(cx, pacer)).await
    }

    fn poll_batch(&self, cx: &mut Context<'_>, pacer: &mut Pacer) -> Poll<Option<VecDeque<Bytes>>> {
        loop {
            let mut st = self.lock();
            if st.frames.is_empty() {
                if st.closed {
                    return Poll::Ready(None);
                }
                st.register(cx);
                drop(st);
                // An idle connection holds no timer.
                pacer.timer = None;
                return Poll::Pending;
            }
            let now = Instant::now();
            let due = pacer.due();
            let at_once = st.urgent || st.closed || st.bytes >= FLUSH_BYTES || due <= Some(now);
            if at_once {
                if st.pushes {
                    pacer.last_push = Some(now);
                }
                let room = std::mem::take(&mut st.wants_room);
                let batch = std::mem::take(&mut st.frames);
                st.bytes = 0;
                st.urgent = false;
                st.pushes = false;
                if room {
                    // The reader (this same task) waits for the room made now.
                    wake(st);
                }
                return Poll::Ready(Some(pacer.seeded(batch)));
            }
            st.register(cx);
            drop(st);
            let Some(due) = due else {
                unreachable!("a frame waits only for a due time")
            };
            match &mut pacer.timer {
                Some(timer) if timer.deadline() == due => {}
                Some(timer) => timer.as_mut().reset(due),
                None => pacer.timer = Some(Box::pin(tokio::time::sleep_until(due))),
            }
            if let Some(timer) = &mut pacer.timer {
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            // Due now: take the batch.
        }
    }
}

/// Marks the link gone when the connection's task ends, however it ends (returned,
/// aborted).
struct GoneOnDrop(Arc<Link>);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        self.0.gone();
    }
}

/// How a connection's writer coalesces pushes (`--coalesce-ms`).
#[derive(Clone, Copy, Debug)]
pub struct Coalesce {
    /// The longest a push waits (0: every frame is written at once).
    pub delay: Duration,
    /// A deliberate defect, to show the tests' checks can fail.
    #[cfg(test)]
    fault: Option<Fault>,
}

impl Coalesce {
    /// Pushes wait at most `delay`.
    pub fn new(delay: Duration) -> Self {
        Coalesce {
            delay,
            #[cfg(test)]
            fault: None,
        }
    }
}

/// Seeded faults of the writer (tests only).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Writes each batch in reverse order.
    Reorder,
    /// Waits three times the delay.
    Late,
}

/// The writer's side of the coalescing rule: when it last wrote a push, and the timer
/// it waits with (allocated only while pushes wait).
#[derive(Debug)]
pub struct Pacer {
    coalesce: Coalesce,
    last_push: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Pacer {
    fn new(coalesce: Coalesce) -> Self {
        Pacer {
            coalesce,
            last_push: None,
            timer: None,
        }
    }

    /// When queued pushes may be written (`None`: now).
    fn due(&self) -> Option<Instant> {
        #[allow(unused_mut)]
        let mut delay = self.coalesce.delay;
        #[cfg(test)]
        if self.coalesce.fault == Some(Fault::Late) {
            delay *= 3;
        }
        if delay.is_zero() {
            return None;
        }
        self.last_push.map(|t| t + delay)
    }

    fn seeded(&self, #[allow(unused_mut)] mut batch: VecDeque<Bytes>) -> VecDeque<Bytes> {
        #[cfg(test)]
        if self.coalesce.fault == Some(Fault::Reorder) {
            batch.make_contiguous().reverse();
        }
        batch
    }
}

/// Where a connection's bytes come from, a chunk at a time.
pub trait Source {
    /// Reads at most `max` bytes (`max` > 0); an empty chunk is the end of the stream.
    fn chunk(&mut self, max: usize) -> impl Future<Output = io::Result<Bytes>> + Send;
}

/// A plain TCP socket's read half: waits until the socket is readable before it
/// allocates the buffer a read fills, and keeps nothing while it waits.
impl Source for tcp::ReadHalf<'_> {
    fn chunk(&mut self, max: usize) -> impl Future<Output = io::Result<Bytes>> + Send {
        poll_fn(move |cx| loop {
            std::task::ready!(self.as_ref().poll_read_ready(cx))?;
            let mut buf = BytesMut::with_capacity(max);
            match self.try_read_buf(&mut buf) {
                Ok(_) => return Poll::Ready(Ok(buf.freeze())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        })
    }
}

/// Any byte stream (the TLS layer, a WebSocket's messages): reads into a buffer of the
/// size asked for.
pub struct Buffered<R>(pub R);

impl<R: AsyncRead + Unpin + Send> Source for Buffered<R> {
    async fn chunk(&mut self, max: usize) -> io::Result<Bytes> {
        let mut buf = BytesMut::with_capacity(max);
        (&mut self.0).take(max as u64).read_buf(&mut buf).await?;
        Ok(buf.freeze())
    }
}

/// A send to the server task ([`Wiring::closed`]): at once, or boxed while it waits.
pub type Sending<'a> =
    Either<std::future::Ready<bool>, Pin<Box<dyn Future<Output = bool> + Send + 'a>>>;

/// What a connection's task needs besides its socket.
pub struct Wiring {
    /// The connection.
    pub conn: ConnId,
    /// Its link with the server task.
    pub link: Arc<Link>,
    /// The server task's input.
    pub inputs: mpsc::Sender<Input>,
    /// Queue slots kept free before each read ([`headroom`]).
    pub headroom: usize,
    /// The coalescing of pushes.
    pub coalesce: Coalesce,
}

impl Wiring {
    /// Polls the reader (over `source`) and `writer` in this task until the writer
    /// ends; a failed write is reported as the connection's end. Both are pinned by the
    /// caller, so that the task's state holds each once.
    pub async fn run<S, W>(&self, source: S, writer: Pin<&mut W>)
    where
        S: Source,
        W: Future<Output = io::Result<()>>,
    {
        let reader = pin!(self.read_loop(source));
        let mut writer = writer;
        let mut reader = Some(reader);
        let written = poll_fn(|cx| {
            if let Some(r) = &mut reader {
                if r.as_mut().poll(cx).is_ready() {
                    reader = None; // the read side ended; the writer goes on
                }
            }
            writer.as_mut().poll(cx)
        })
        .await;
        if let Err(e) = written {
            tracing::debug!(conn = %self.conn, error = %e, "write failed");
            let _ = self.closed(Some(e)).await;
        }
    }

    /// Tells the server task the connection ended (its read side, or a write).
    pub fn closed(&self, error: Option<io::Error>) -> Sending<'_> {
        self.input(Input::Closed(self.conn, error))
    }

    /// Sends an input to the server task; resolves to `false` if it is gone. Only a
    /// send that must wait for room is boxed: the task's state holds neither the input
    /// nor the channel's waiting send while the channel has room.
    fn input(&self, input: Input) -> Sending<'_> {
        match self.inputs.try_send(input) {
            Ok(()) => Either::Left(std::future::ready(true)),
            Err(TrySendError::Closed(_)) => Either::Left(std::future::ready(false)),
            Err(TrySendError::Full(input)) => {
                let inputs = &self.inputs;
                Either::Right(Box::pin(async move { inputs.send(input).await.is_ok() }))
            }
        }
    }

    /// Reads until end of stream or error, forwarding chunks as [`Input::Data`], then
    /// reports [`Input::Closed`]; returns early, silently, once the server closed the
    /// connection.
    async fn read_loop<S: Source>(&self, mut source: S) {
        // A chunk never holds more requests than the headroom has answers for.
        let chunk = (self.headroom * MIN_REQUEST).clamp(MIN_REQUEST, READ_CHUNK);
        // The buffer of a read is small; it doubles while reads fill it (up to `chunk`)
        // and halves when they use under a quarter of it.
        let mut size = SMALL_READ.min(chunk);
        let error = loop {
            // The previous chunk has been handled and its answers queued, and there is
            // room for the next chunk's.
            if !self.link.turn(self.headroom).await {
                return; // the connection is being closed
            }
            match source.chunk(size).await {
                Ok(data) if data.is_empty() => break None,
                Ok(data) => {
                    let n = data.len();
                    size = if n == size {
                        (size * 2).min(chunk)
                    } else if n < size / 4 {
                        (size / 2).max(SMALL_READ.min(chunk))
                    } else {
                        size
                    };
                    if !self.input(Input::Data(self.conn, data)).await {
                        return; // the server task is gone
                    }
                }
                Err(e) => break Some(e),
            }
        };
        let _ = self.closed(error).await;
    }

    /// Writes the link's frames to `socket` as the coalescing rule says until the
    /// server closes the connection, then shuts the write side down.
    pub async fn write_loop<W: AsyncWrite + Unpin>(&self, mut socket: W) -> io::Result<()> {
        let mut pacer = Pacer::new(self.coalesce);
        while let Some(mut batch) = self.link.next_batch(&mut pacer).await {
            write_frames(&mut socket, &mut batch).await?;
            // A TLS stream may keep records it could not write yet: push them out now.
            socket.flush().await?;
        }
        let _ = socket.shutdown().await;
        Ok(())
    }

    /// The next frames for a writer of another kind (the WebSocket's), by the same
    /// rule, with a pacer from [`Wiring::pacer`].
    pub async fn next_batch(&self, pacer: &mut Pacer) -> Option<VecDeque<Bytes>> {
        self.link.next_batch(pacer).await
    }

    /// A pacer for [`Wiring::next_batch`].
    pub fn pacer(&self) -> Pacer {
        Pacer::new(self.coalesce)
    }
}

/// Writes `frames` in order, with as few calls as the stream allows: one frame with a
/// plain write, several with `writev` of up to [`MAX_SLICES`] frames per call where the
/// stream supports it, else with one write of their concatenation. Nothing is held across a wait but the frames themselves.
async fn write_frames<W: AsyncWrite + Unpin>(
    socket: &mut W,
    frames: &mut VecDeque<Bytes>,
) -> io::Result<()> {
    if frames.len() > 1 && !socket.is_write_vectored() {
        let mut joined = Vec::with_capacity(frames.iter().map(Bytes::len).sum());
        for f in frames.drain(..) {
            joined.extend_from_slice(&f);
        }
        return socket.write_all(&joined).await;
    }
    while !frames.is_empty() {
        let n = poll_fn(|cx| {
            if frames.len() == 1 {
                // One frame: a plain write (`send` on a socket, not the VFS path of
                // `writev`).
                return Pin::new(&mut *socket).poll_write(cx, &frames[0]);
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut k = 0;
            for (slice, f) in slices.iter_mut().zip(frames.iter()) {
                *slice = IoSlice::new(f);
                k += 1;
            }
            Pin::new(&mut *socket).poll_write_vectored(cx, &slices[..k])
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        advance(frames, n);
    }
    Ok(())
}

/// Drops the first `n` bytes of `frames`.
fn advance(frames: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = frames.front_mut() else {
            return;
        };
        if n < front.len() {
            front.advance(n);
            return;
        }
        n -= front.len();
        frames.pop_front();
    }
    while frames.front().is_some_and(Bytes::is_empty) {
        frames.pop_front();
    }
}

/// The task of a plain TCP connection.
pub async fn run_tcp(wiring: Wiring, mut socket: TcpStream) {
    let _gone = GoneOnDrop(wiring.link.clone());
    let (rd, wr) = socket.split();
    let writer = pin!(wiring.write_loop(wr));
    wiring.run(rd, writer).await;
}

/// The task of a TLS connection: the handshake (a failure is reported as the
/// connection's end), then as over TCP.
pub async fn run_tls(wiring: Wiring, socket: TcpStream, tls: Tls) {
    let _gone = GoneOnDrop(wiring.link.clone());
    let stream = match tls_handshake(wiring.conn, socket, tls).await {
        Ok(stream) => stream,
        Err(e) => {
            let _ = wiring.closed(Some(e)).await;
            return;
        }
    };
    let (rd, wr) = tokio::io::split(stream);
    let writer = pin!(wiring.write_loop(wr));
    wiring.run(Buffered(rd), writer).await;
}

/// Marks the link gone when the returned guard drops (the WebSocket port's task).
pub fn gone_on_drop(link: &Arc<Link>) -> impl Sized {
    GoneOnDrop(link.clone())
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

#[cfg(test)]
mod tests {

    use tokio::io::AsyncReadExt;
    use tokio::time::{sleep, sleep_until, timeout};

    use super::*;

    const D: Duration = Duration::from_millis(5);
    /// The timer's granularity: a sleep ends on the next millisecond tick.
    const TICK: Duration = Duration::from_millis(1);

    /// One write call on the socket: when, and its bytes.
    #[derive(Clone, Debug)]
    struct Write {
        at: Instant,
        bytes: Vec<u8>,
    }

    /// A socket that records each write call (vectored or not) as one write, and takes at
    /// most `limit` bytes per call.
    #[derive(Clone)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Write>>>,
        limit: usize,
        vectored: bool,
    }

    impl Recorder {
        fn new(limit: usize) -> Self {
            Recorder {
                writes: Arc::default(),
                limit,
                vectored: true,
            }
        }

        fn writes(&self) -> Vec<Write> {
            self.writes.lock().unwrap().clone()
        }

        fn record(&self, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
            let mut bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            bytes.truncate(self.limit);
            let n = bytes.len();
            self.writes.lock().unwrap().push(Write {
                at: Instant::now(),
                bytes,
            });
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.record(&[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.record(bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn wiring(link: &Arc<Link>, coalesce: Coalesce) -> Wiring {
        let (inputs, _) = mpsc::channel(1);
        Wiring {
            conn: ConnId(1),
            link: link.clone(),
            inputs,
            headroom: 1,
            coalesce,
        }
    }

    /// A frame that says which it is.
    fn frame(i: usize) -> Bytes {
        let payload = format!("{{\"n\":{i}}}");
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload.as_bytes());
        Bytes::from(v)
    }

    /// A frame pushed: when, its bytes.
    type Pushed = Vec<(Instant, Bytes)>;

    /// Runs a writer with `coalesce` and pushes `steps` (milliseconds from the start,
    /// urgent) to it, frame `i` at step `i`; returns the pushes and the writes.
    async fn script(coalesce: Coalesce, steps: &[(u64, bool)]) -> (Pushed, Vec<Write>) {
        let link = Link::new(1024);
        let socket = Recorder::new(usize::MAX);
        let writer = {
            let wiring = wiring(&link, coalesce);
            let socket = socket.clone();
            tokio::spawn(async move { wiring.write_loop(socket).await })
        };
        let start = Instant::now();
        let mut pushed = Vec::new();
        for (i, &(at, urgent)) in steps.iter().enumerate() {
            sleep_until(start + Duration::from_millis(at)).await;
            let f = frame(i);
            link.push(f.clone(), urgent).unwrap();
            pushed.push((Instant::now(), f));
        }
        sleep(Duration::from_millis(100)).await;
        link.close();
        writer.await.unwrap().unwrap();
        (pushed, socket.writes())
    }

    /// The bytes written are the frames pushed, in the order pushed.
    fn check_order(pushed: &Pushed, writes: &[Write]) -> Result<(), String> {
        let sent: Vec<u8> = pushed.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let written: Vec<u8> = writes
            .iter()
            .flat_map(|w| w.bytes.iter().copied())
            .collect();
        if sent == written {
            Ok(())
        } else {
            Err(format!(
                "written {:?}, pushed {:?}",
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&sent)
            ))
        }
    }

    /// Every frame was written (its last byte) within `bound` of its push.
    fn check_bound(pushed: &Pushed, writes: &[Write], bound: Duration) -> Result<(), String> {
        let mut ends = writes.iter().scan(0, |end, w| {
            *end += w.bytes.len();
            Some((*end, w.at))
        });
        let mut end = 0;
        let mut written = (0, Instant::now());
        for (i, (at, f)) in pushed.iter().enumerate() {
            end += f.len();
            while written.0 < end {
                written = ends.next().ok_or(format!("frame {i} never written"))?;
            }
            let waited = written.1 - *at;
            if waited > bound {
                return Err(format!("frame {i} waited {waited:?}, over {bound:?}"));
            }
        }
        Ok(())
    }

    /// A busy schedule: 300 frames over 300 ms in bursts, one in five an answer.
    fn busy() -> Vec<(u64, bool)> {
        let mut x: u64 = 7;
        let mut at = 0;
        (0..300)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                at += (x >> 33) % 3; // 0, 1 or 2 ms after the previous frame
                (at, (x >> 40) % 5 == 0)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn pushes_due_within_the_delay_go_out_in_one_write() {
        // A first push goes at once; four pushes 1 ms later wait for the delay and share
        // one write.
        let steps = [(0, false), (1, false), (1, false), (1, false), (1, false)];
        let (pushed, writes) = script(Coalesce::new(D), &steps).await;
        check_order(&pushed, &writes).unwrap();
        check_bound(&pushed, &writes, D + TICK).unwrap();
        let frames: Vec<usize> = writes.iter().map(|w| w.bytes.len()).collect();
        let one = frame(0).len();
        assert_eq!(frames, [one, 4 * one], "{writes:?}");
        let waited = writes[1].at - pushed[1].0;
        assert!(waited >= D - TICK, "the burst waited {waited:?}");
        // Without coalescing the burst goes as soon as the writer runs (queued at once, it
        // still shares one write).
        let (pushed, writes) = script(Coalesce::new(Duration::ZERO), &steps).await;
        check_order(&pushed, &writes).unwrap();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[1].at, pushed[1].0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_goes_at_once_with_the_pushes_before_it() {
        // Push at 0 (at once), push at 1 (waits), answer at 2: the waiting push goes
        // with the answer, before it, at 2.
        let (pushed, writes) = script(Coalesce::new(D), &[(0, false), (1, false), (2, true)]).await;
        check_order(&pushed, &writes).unwrap();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[1].at, pushed[2].0, "the answer is not delayed");
        assert_eq!(writes[1].bytes, [frame(1), frame(2)].concat());
        // Answers do not hold back the pushes that follow them: a push right after an
        // answer (a call accepted right after it rang) goes at once too.
        let (pushed, writes) = script(Coalesce::new(D), &[(0, true), (1, false), (2, true)]).await;
        check_order(&pushed, &writes).unwrap();
        let at: Vec<Instant> = writes.iter().map(|w| w.at).collect();
        let want: Vec<Instant> = pushed.iter().map(|p| p.0).collect();
        assert_eq!(at, want, "each written when pushed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_keeps_the_order_and_the_bound() {
        let steps = busy();
        let (pushed, writes) = script(Coalesce::new(D), &steps).await;
        check_order(&pushed, &writes).unwrap();
        check_bound(&pushed, &writes, D + TICK).unwrap();
        assert!(
            writes.len() < steps.len() / 2,
            "{} writes for {} frames",
            writes.len(),
            steps.len()
        );
        // Pushes alone are written at most once per delay.
        let pushes: Vec<(u64, bool)> = steps.iter().map(|&(at, _)| (at, false)).collect();
        let (pushed, writes) = script(Coalesce::new(D), &pushes).await;
        check_order(&pushed, &writes).unwrap();
        check_bound(&pushed, &writes, D + TICK).unwrap();
        for pair in writes.windows(2) {
            assert!(pair[1].at - pair[0].at >= D - TICK, "{pair:?}");
        }
    }

    /// Seeded faults: a writer that reorders a batch, or waits too long, fails the
    /// checks the tests above rely on.
    #[tokio::test(start_paused = true)]
    async fn the_checks_catch_a_reordering_or_late_writer() {
        let steps = busy();
        let reorder = Coalesce {
            fault: Some(Fault::Reorder),
            ..Coalesce::new(D)
        };
        let (pushed, writes) = script(reorder, &steps).await;
        assert!(check_order(&pushed, &writes).is_err());
        let late = Coalesce {
            fault: Some(Fault::Late),
            ..Coalesce::new(D)
        };
        let (pushed, writes) = script(late, &steps).await;
        check_order(&pushed, &writes).unwrap();
        assert!(check_bound(&pushed, &writes, D + TICK).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fills_its_queue_and_is_refused() {
        let link = Link::new(8);
        // The peer's end is kept open and never read: 64 bytes fit, then writes wait.
        let (socket, _peer) = tokio::io::duplex(64);
        let wiring = wiring(&link, Coalesce::new(D));
        let task = tokio::spawn(async move {
            let _gone = GoneOnDrop(wiring.link.clone());
            wiring.write_loop(socket).await
        });
        let mut accepted = 0;
        let refused = loop {
            match link.push(frame(accepted), accepted % 2 == 0) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            sleep(TICK).await;
            assert!(accepted < 100, "never refused");
        };
        assert_eq!(refused, Refused::Full);
        assert_eq!(link.queued(), 8);
        task.abort();
        let _ = task.await;
        assert_eq!(link.push(frame(0), false), Err(Refused::Gone));
    }

    #[tokio::test(start_paused = true)]
    async fn the_reader_waits_for_its_turn_and_for_room() {
        let link = Link::new(10);
        for i in 0..6 {
            link.push(frame(i), false).unwrap();
        }
        // The gate is open, but 6 queued + 5 of headroom > 10.
        assert!(timeout(Duration::from_secs(1), link.turn(5)).await.is_err());
        let mut pacer = Pacer::new(Coalesce::new(Duration::ZERO));
        let batch = link.next_batch(&mut pacer).await.unwrap();
        assert_eq!(batch.len(), 6);
        assert!(link.turn(5).await, "room made");
        // The gate is taken until the chunk is handled.
        assert!(timeout(Duration::from_secs(1), link.turn(5)).await.is_err());
        link.release();
        assert!(link.turn(5).await);
        link.close();
        assert!(!link.turn(5).await, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_link_holds_no_queue() {
        let link = Link::new(8192);
        let mut pacer = Pacer::new(Coalesce::new(D));
        for i in 0..52 {
            link.push(frame(i), true).unwrap();
        }
        assert_eq!(link.next_batch(&mut pacer).await.unwrap().len(), 52);
        assert_eq!(link.lock().frames.capacity(), 0);
    }

    #[tokio::test]
    async fn frames_survive_short_writes_and_plain_streams() {
        let frames: VecDeque<Bytes> = (0..100).map(frame).collect();
        let all: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        // At most 7 bytes per call: every frame boundary falls inside some call.
        let mut short = Recorder::new(7);
        write_frames(&mut short, &mut frames.clone()).await.unwrap();
        let written: Vec<u8> = short.writes().into_iter().flat_map(|w| w.bytes).collect();
        assert_eq!(written, all);
        // A stream without vectored writes gets one write of the concatenation.
        let mut plain = Recorder {
            vectored: false,
            ..Recorder::new(usize::MAX)
        };
        write_frames(&mut plain, &mut frames.clone()).await.unwrap();
        let writes = plain.writes();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].bytes, all);
        // Over a real in-memory stream.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frames(&mut a, &mut frames.clone()).await.unwrap();
        drop(a);
        let mut read = Vec::new();
        b.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, all);
    }

    /// What an idle connection costs the server task's side: the whole state of its
    /// task (reader, writer, socket) is one allocation of this size. Waiting holds
    /// neither a timer, nor a read buffer, nor a pending send to the server task. (It
    /// was 1.5 KB with a `select!` over futures passed by value and a waiting send in
    /// the state; 2 tasks before that.)
    #[tokio::test]
    async fn a_connection_task_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let link = Link::new(8192);
        let task = run_tcp(wiring(&link, Coalesce::new(D)), socket);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "a connection task's state is {size} bytes");
        assert!(std::mem::size_of::<Link>() <= 128);
    }
}
