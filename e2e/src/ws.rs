//! A raw WebSocket client of the precall binding (spec section 3.7), as a browser page
//! would be one: [`WsConn`] opens `ws://ADDR/precall` with the subprotocol `precall.v1`
//! (or any handshake a test wants to try), sends each frame as one binary message and
//! checks that each binary message it receives is exactly one frame. Built on the
//! synchronous `tungstenite` over any `Read + Write` stream, so a test can put TLS
//! under it for `wss://`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use precall_protocol::codec::{decode_message, encode_frame};
use precall_protocol::message::WireMessage;
use precall_protocol::{LoginWith, ServerMessage};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use crate::raw::{login_msg, Recv};
use crate::{bail, ensure, Error, Res, TIMEOUT};

/// The binding's path and subprotocol.
pub const WS_PATH: &str = "/precall";
/// The subprotocol of version 1.
pub const WS_SUBPROTOCOL: &str = "precall.v1";

/// A byte stream a WebSocket runs over (plain TCP, or TLS over it).
pub trait WsStream: Read + Write + Send {}
impl<T: Read + Write + Send> WsStream for T {}

/// What a WebSocket handshake asks for.
#[derive(Clone, Debug)]
pub struct WsHandshake {
    /// The request path.
    pub path: String,
    /// The `Sec-WebSocket-Protocol` header, if any.
    pub protocols: Option<String>,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// `ws` or `wss` (only the request's URL; the stream decides).
    pub scheme: &'static str,
    /// The host named in the URL (and so in `Host`); the address's IP if `None`.
    pub host: Option<String>,
}

impl Default for WsHandshake {
    /// `/precall`, offering `precall.v1`, no `Origin`, `ws`.
    fn default() -> Self {
        WsHandshake {
            path: WS_PATH.to_owned(),
            protocols: Some(WS_SUBPROTOCOL.to_owned()),
            origin: None,
            scheme: "ws",
            host: None,
        }
    }
}

/// A handshake the server refused: the HTTP status and the body.
#[derive(Debug)]
pub struct Refused {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// An open WebSocket speaking the binding.
pub struct WsConn {
    ws: WebSocket<Box<dyn WsStream>>,
    /// The TCP socket under it (a clone, for read timeouts).
    tcp: TcpStream,
    closed: bool,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
    /// The Close frame the server sent, once received.
    pub close: Option<CloseFrame>,
    /// WebSocket pongs received (answers to [`Message::Ping`]s sent).
    pub pongs: usize,
}

impl WsConn {
    /// `ws://ADDR/precall` with `precall.v1`, no `Origin`.
    pub fn connect(addr: SocketAddr) -> Res<WsConn> {
        match Self::try_handshake(addr, &WsHandshake::default())? {
            Ok(c) => Ok(c),
            Err(r) => bail!("the server refused the WebSocket: {r:?}"),
        }
    }

    /// A handshake over a fresh TCP connection to `addr`; the refusal if the server
    /// answered with an HTTP error.
    pub fn try_handshake(addr: SocketAddr, hs: &WsHandshake) -> Res<Result<WsConn, Refused>> {
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        let clone = tcp.try_clone()?;
        Self::handshake_over(Box::new(tcp), clone, addr, hs)
    }

    /// A handshake over `stream` (TLS, say), whose TCP socket is `tcp`.
    pub fn handshake_over(
        stream: Box<dyn WsStream>,
        tcp: TcpStream,
        addr: SocketAddr,
        hs: &WsHandshake,
    ) -> Res<Result<WsConn, Refused>> {
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(TIMEOUT))?;
        let host = hs.host.clone().unwrap_or_else(|| addr.ip().to_string());
        let url = format!("{}://{host}:{}{}", hs.scheme, addr.port(), hs.path);
        let mut request = url.as_str().into_client_request()?;
        let headers = request.headers_mut();
        if let Some(p) = &hs.protocols {
            headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p)?);
        }
        if let Some(o) = &hs.origin {
            headers.insert("Origin", HeaderValue::from_str(o)?);
        }
        match tungstenite::client(request, stream) {
            Ok((ws, response)) => {
                let protocol = response
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok(Ok(WsConn {
                    ws,
                    tcp,
                    closed: false,
                    protocol,
                    close: None,
                    pongs: 0,
                }))
            }
            Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => Ok(Err(Refused {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            })),
            Err(HandshakeError::Failure(e)) => bail!("WebSocket handshake with {url}: {e}"),
            Err(HandshakeError::Interrupted(_)) => {
                bail!("WebSocket handshake with {url}: no answer within {TIMEOUT:?}")
            }
        }
    }

    /// Sends a message as it is (text, binary, fragments: whatever a test tries).
    pub fn send_message(&mut self, m: Message) -> Res<()> {
        self.ws.send(m)?;
        Ok(())
    }

    /// Sends one binary message holding these bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Res<()> {
        self.send_message(Message::binary(bytes.to_vec()))
    }

    /// Sends one message in canonical form, as one frame in one binary message.
    pub fn send_msg<M: serde::Serialize>(&mut self, m: &M) -> Res<()> {
        self.send_message(Message::Binary(encode_frame(m)))
    }

    /// Reads the next frame's payload, waiting at most `timeout`. Fails if a data
    /// message is not exactly one frame, or is text.
    pub fn recv_payload(&mut self, timeout: Duration) -> Res<Recv> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.closed {
                return Ok(Recv::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Recv::Timeout);
            }
            self.tcp.set_read_timeout(Some(left))?;
            match self.ws.read() {
                Ok(Message::Binary(b)) => {
                    ensure!(
                        b.len() >= 4
                            && u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize == b.len() - 4,
                        "a binary message that is not exactly one frame: {} bytes, {:02x?}…",
                        b.len(),
                        &b[..b.len().min(16)]
                    );
                    return Ok(Recv::Payload(b[4..].to_vec()));
                }
                Ok(Message::Text(t)) => bail!("the server sent a text message: {t}"),
                Ok(Message::Close(frame)) => {
                    self.close = frame;
                    self.closed = true;
                }
                Ok(Message::Pong(_)) => self.pongs += 1,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// Reads and decodes the next message of type `M`.
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

    /// Reads the next server message.
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

    /// Reads until the server closes; returns the payloads that arrived before. Fails
    /// if the connection is still open after `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Res<Vec<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_payload(left)? {
                Recv::Payload(p) => got.push(p),
                Recv::Closed => return Ok(got),
                Recv::Timeout => bail!(
                    "WebSocket still open after {timeout:?}; frames: {:?}",
                    got.iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Logs in; returns the `login_ok` and the snapshot (the messages up to `synced`).
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
