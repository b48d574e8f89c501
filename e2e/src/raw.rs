//! Raw connections speaking the wire format: [`RawConn`] (a client, or the server's
//! side of an accepted connection) and [`FakeServer`] (standing in for the server).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use precall_protocol::codec::{decode_message, encode_frame, FrameDecoder, DEFAULT_MAX_FRAME};
use precall_protocol::message::WireMessage;
use precall_protocol::{
    ClientMessage, LoginWith, Password, ServerMessage, TerminalId, UserId, PROTOCOL_VERSION,
};
use serde_json::Value;

use crate::{bail, ensure, Error, Res, TIMEOUT};

/// What a raw read produced.
#[derive(Debug)]
pub enum Recv {
    /// One complete frame's payload.
    Payload(Vec<u8>),
    /// The peer closed the connection (EOF or reset).
    Closed,
    /// Nothing complete arrived in time.
    Timeout,
}

/// A raw TCP connection speaking the wire format: 4-byte big-endian length, then the
/// payload.
pub struct RawConn {
    stream: TcpStream,
    decoder: FrameDecoder,
    inbuf: Vec<u8>,
    closed: bool,
}

impl RawConn {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Res<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        Ok(Self::from_stream(stream))
    }

    /// Wraps an accepted stream.
    pub fn from_stream(stream: TcpStream) -> RawConn {
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            // Accept anything (the flood test reads many frames; a fake server reads a
            // client's frames); the limit is the server's business, not the harness's.
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME * 16),
            inbuf: Vec::new(),
            closed: false,
        }
    }

    /// A clone of the socket (for a writer thread).
    pub fn try_clone_stream(&self) -> Res<TcpStream> {
        Ok(self.stream.try_clone()?)
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Res<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Writes one frame with this payload.
    pub fn send_payload(&mut self, payload: &[u8]) -> Res<()> {
        self.send_bytes(&frame(payload))
    }

    /// Writes one frame holding this JSON value.
    pub fn send_json(&mut self, v: &Value) -> Res<()> {
        self.send_payload(v.to_string().as_bytes())
    }

    /// Writes one frame holding this message in canonical form.
    pub fn send_msg<M: serde::Serialize>(&mut self, m: &M) -> Res<()> {
        self.send_bytes(&encode_frame(m))
    }

    /// Reads the next frame's payload, waiting at most `timeout`.
    pub fn recv_payload(&mut self, timeout: Duration) -> Res<Recv> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !self.inbuf.is_empty() {
                let mut input = &self.inbuf[..];
                let r = self.decoder.decode(&mut input);
                let consumed = self.inbuf.len() - input.len();
                self.inbuf.drain(..consumed);
                match r {
                    Ok(Some(p)) => return Ok(Recv::Payload(p)),
                    Ok(None) => {}
                    Err(e) => bail!("the peer broke the framing: {e}"),
                }
            }
            if self.closed {
                return Ok(Recv::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Recv::Timeout);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// Reads and decodes the next message of type `M`, waiting at most `timeout`.
    pub fn recv_as<M: WireMessage>(&mut self, timeout: Duration) -> Res<M> {
        match self.recv_payload(timeout)? {
            Recv::Payload(p) => decode_message::<M>(&p).map_err(|e| {
                Error(format!(
                    "undecodable frame {:?}: {e}",
                    String::from_utf8_lossy(&p)
                ))
            }),
            Recv::Closed => bail!("connection closed while waiting for a frame"),
            Recv::Timeout => bail!("no frame within {timeout:?}"),
        }
    }

    /// Reads the next server message (as a client would).
    pub fn recv(&mut self, timeout: Duration) -> Res<ServerMessage> {
        self.recv_as::<ServerMessage>(timeout)
    }

    /// Reads server messages until one matches `pred`, within `timeout` overall.
    pub fn recv_until(
        &mut self,
        pred: impl Fn(&ServerMessage) -> bool,
        timeout: Duration,
    ) -> Res<ServerMessage> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .recv(left)
                .map_err(|e| Error(format!("{e}; frames seen before: {seen:?}")))?;
            if pred(&m) {
                return Ok(m);
            }
            seen.push(m);
        }
    }

    /// Reads until the peer closes; returns the payloads that arrived before. Fails if
    /// the connection is still open after `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Res<Vec<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_payload(left)? {
                Recv::Payload(p) => got.push(p),
                Recv::Closed => return Ok(got),
                Recv::Timeout => bail!(
                    "connection still open after {timeout:?}; frames: {:?}",
                    got.iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Logs in over this connection; returns the `login_ok` and the snapshot (the
    /// `online` messages up to `synced`).
    pub fn login(
        &mut self,
        user: &str,
        pw: &str,
        with: LoginWith,
    ) -> Res<(ServerMessage, Vec<ServerMessage>)> {
        self.send_msg(&login_msg(user, pw, with)?)?;
        let ok = self.recv(TIMEOUT)?;
        ensure!(
            matches!(ok, ServerMessage::LoginOk { .. }),
            "expected login_ok, got {ok:?}"
        );
        let mut snapshot = Vec::new();
        loop {
            match self.recv(TIMEOUT)? {
                ServerMessage::Synced {} => return Ok((ok, snapshot)),
                m => snapshot.push(m),
            }
        }
    }
}

/// A frame: the 4-byte big-endian length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(payload.len())
        .expect("payload under 4 GiB")
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(payload);
    v
}

/// A version-1 `login` message.
pub fn login_msg(user: &str, pw: &str, with: LoginWith) -> Res<ClientMessage> {
    Ok(ClientMessage::Login {
        version: PROTOCOL_VERSION,
        user: UserId::new(user)?,
        password: Password::new(pw)?,
        with,
    })
}

/// `LoginWith::TerminalId`.
pub fn with_terminal(id: &str) -> Res<LoginWith> {
    Ok(LoginWith::TerminalId(TerminalId::new(id)?))
}

/// A listening socket standing in for the server, to observe what a client binary
/// sends and to feed it hand-made server messages.
pub struct FakeServer {
    listener: TcpListener,
    /// Its address.
    pub addr: SocketAddr,
}

impl FakeServer {
    /// Binds `127.0.0.1:0`.
    pub fn bind() -> Res<FakeServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(FakeServer { listener, addr })
    }

    /// Accepts one connection, waiting at most `timeout`.
    pub fn accept(&self, timeout: Duration) -> Res<RawConn> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)?;
                    return Ok(RawConn::from_stream(s));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        bail!("no connection to the fake server within {timeout:?}");
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
