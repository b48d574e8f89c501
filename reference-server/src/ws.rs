//! The WebSocket binding (spec section 3.7) and the static files of `--web-root`, on the
//! port of `--ws-listen`.
//!
//! A connection accepted there is registered with the core at once, exactly as a TCP
//! one (`Server::connect_from`), so the per-source and total connection limits, the
//! accept rates, the login timeout and the descriptor cap count it from its first
//! byte, whatever it turns out to be. Its task then runs the TLS handshake (with
//! `--tls-cert`), reads one HTTP request head (at most [`MAX_HEAD`] bytes, within
//! `--ws-handshake-timeout-ms`) and either
//!
//! - upgrades it to a WebSocket at [`PATH`]: only a valid RFC 6455 handshake that offers
//!   the subprotocol [`SUBPROTOCOL`] and whose `Origin` (if any) is allowed; the
//!   connection then runs the same reader as a TCP one ([`Wiring::run`]), over
//!   [`Incoming`], which turns the binary messages into the byte stream the core
//!   decodes, and its writer sends each frame the core emits as one binary message
//!   ([`write_loop`], coalescing pushes as over TCP); or
//! - answers a plain `GET` with a file under `--web-root` ([`resolve`]), or refuses it
//!   (404, 405, 503, ...), and reports the connection closed.
//!
//! The mapping decides no protocol rule: a message that breaks the binding (a text
//! message, a binary message that is not exactly one frame, a message over the frame
//! limit) reaches the core as the framing error the spec equates it with (an empty
//! frame, or a header announcing the message's length), and the core answers it as it
//! answers that error on TCP (`malformed` or `frame_too_large`, then close). The
//! WebSocket Close frame that follows carries a status code and reason saying what the
//! binding refused, for a person reading a browser's console.
//!
//! Why tokio-tungstenite and not axum: the server's accept loop, its TLS layer and its
//! connection tasks are its own, and the core must count a WebSocket connection from
//! the TCP accept on (per-source limits, the descriptor cap). tokio-tungstenite works on
//! any `AsyncRead + AsyncWrite` (plain or TLS) handed to it after that accept, and
//! tungstenite's own request parser and handshake checks (`create_response`) do the
//! RFC 6455 part; axum would own the accept loop and the TLS story (a second stack:
//! hyper, tower, tower-http, axum-server) for what is one request per connection.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use precall_protocol::codec::HEADER_LEN;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{create_response, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::conn::{self, Buffered, Wiring};
#[cfg(doc)]
use crate::serve::Input;
use crate::tls::Tls;

/// The path of the WebSocket endpoint.
pub const PATH: &str = "/precall";
/// The subprotocol a client must offer and the server selects.
pub const SUBPROTOCOL: &str = "precall.v1";
/// The largest HTTP request head read (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Files of `--web-root` open at once; beyond, a request is answered 503. It bounds the
/// descriptors static files take beyond the connections', within the reserve the
/// connection cap keeps (module `fds`: at least 64).
pub const FILES_AT_ONCE: usize = 32;

/// WebSocket options of `serve`.
#[derive(Debug, clap::Args)]
pub struct WsArgs {
    /// Also serve the protocol over WebSocket on this address (port 0: the OS picks
    /// one), at path /precall with the subprotocol precall.v1 (spec section 3.7);
    /// wss:// with --tls-cert/--tls-key.
    #[arg(long, value_name = "ADDR")]
    pub ws_listen: Option<String>,
    /// An origin (`scheme://host[:port]`) whose pages may open the WebSocket; repeatable.
    /// The server's own origin, and clients that send no Origin (not browsers), are
    /// always allowed; any other origin is refused with HTTP 403.
    #[arg(long, value_name = "ORIGIN", requires = "ws_listen", value_parser = parse_origin)]
    pub ws_allow_origin: Vec<String>,
    /// Drop a WebSocket-port connection whose HTTP request has not been read and
    /// answered within this long (after the TLS handshake).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_handshake_timeout_ms: u64,
    /// Serve the files under DIR to plain GET requests on the WebSocket port (index.html
    /// for a path ending in /; no listings, no hidden files, nothing outside DIR).
    #[arg(long, value_name = "DIR", requires = "ws_listen")]
    pub web_root: Option<PathBuf>,
    /// Largest file --web-root serves, in bytes.
    #[arg(long, default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub web_max_file_bytes: u64,
}

/// An origin as browsers send it: `http` or `https`, `://`, a host and an optional
/// port, nothing else; kept in lower case.
fn parse_origin(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| format!("{s:?}: an origin starts with http:// or https://"))?;
    let ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !ok {
        return Err(format!(
            "{s:?}: an origin is scheme://host[:port], without a path or a trailing /"
        ));
    }
    Ok(lower)
}

/// What the WebSocket port needs, shared by its connections.
#[derive(Debug)]
pub struct Settings {
    /// Allowed origins besides the server's own (lower case).
    origins: Vec<String>,
    /// `--web-root`, canonical.
    web_root: Option<PathBuf>,
    handshake_timeout: Duration,
    max_file: u64,
    files: Semaphore,
    /// Whether the port speaks TLS (the scheme of the server's own origin).
    tls: bool,
    /// The largest message: one frame of the core's `max_frame`, header included.
    max_message: usize,
}

impl WsArgs {
    /// The listen address and the settings, or `None` without `--ws-listen`. Fails if
    /// `--web-root` is not a directory. `max_frame` is the core's frame limit.
    pub fn load(&self, tls: bool, max_frame: u32) -> anyhow::Result<Option<(String, Settings)>> {
        let Some(listen) = &self.ws_listen else {
            return Ok(None);
        };
        let web_root = match &self.web_root {
            None => None,
            Some(dir) => {
                let root = dir
                    .canonicalize()
                    .map_err(|e| anyhow::anyhow!("--web-root {}: {e}", dir.display()))?;
                anyhow::ensure!(
                    root.is_dir(),
                    "--web-root {}: not a directory",
                    dir.display()
                );
                Some(root)
            }
        };
        Ok(Some((
            listen.clone(),
            Settings {
                origins: self.ws_allow_origin.clone(),
                web_root,
                handshake_timeout: Duration::from_millis(self.ws_handshake_timeout_ms),
                max_file: self.web_max_file_bytes,
                files: Semaphore::new(FILES_AT_ONCE),
                tls,
                max_message: max_frame as usize + HEADER_LEN,
            },
        )))
    }
}

impl Settings {
    /// The web root, if any.
    pub fn web_root(&self) -> Option<&Path> {
        self.web_root.as_deref()
    }

    /// The allowed origins besides the server's own.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// tungstenite's limits: a message, and one WebSocket frame of it, at most one
    /// precall frame; small read and write buffers (an idle terminal should cost
    /// little).
    fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(16 * 1024)
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
    }
}

/// The Close frame the writer sends when the connection ends (set when the binding
/// refused a message; otherwise a normal close).
type CloseSlot = Arc<Mutex<Option<CloseFrame>>>;

/// The task of a WebSocket-port connection: TLS handshake (if `tls`), the HTTP request,
/// then either the WebSocket's reader and writer ([`Wiring::run`] over [`Incoming`] and
/// [`write_loop`]) or a static file. Every end other than the read loop's own is
/// reported as [`Input::Closed`] with its reason. `refused`: the core refused the
/// connection at connect (a limit); a WebSocket is still opened, to carry the core's
/// error frame, but no file is served.
pub async fn run(
    wiring: Wiring,
    refused: bool,
    socket: TcpStream,
    tls: Option<Tls>,
    settings: Arc<Settings>,
) {
    let _gone = conn::gone_on_drop(&wiring.link);
    let end = match tls {
        None => serve(socket, &settings, &wiring, refused).await,
        Some(tls) => match conn::tls_handshake(wiring.conn, socket, tls).await {
            Ok(stream) => serve(stream, &settings, &wiring, refused).await,
            Err(e) => Some(Some(e)),
        },
    };
    if let Some(error) = end {
        let _ = wiring.closed(error).await;
    }
}

/// Serves one connection; `None` if it became a WebSocket (the read loop reported its
/// end), else how it ended.
async fn serve<S>(
    mut stream: S,
    settings: &Settings,
    wiring: &Wiring,
    refused: bool,
) -> Option<Option<io::Error>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let bound = settings.handshake_timeout;
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("HTTP request not read and answered within {bound:?}"),
        )
    };
    // One deadline for reading the request and writing the 101; a refusal gets its own
    // `bound` to be written.
    let deadline = tokio::time::Instant::now() + bound;
    let (request, tail) = match tokio::time::timeout_at(deadline, read_head(&mut stream)).await {
        Err(_) => return Some(Some(timed_out())),
        Ok(Err(Head::Failed(e))) => return Some(Some(e)),
        Ok(Err(Head::Closed)) => return Some(None),
        Ok(Err(Head::Refused(r))) => return Some(refuse(&mut stream, r, bound).await),
        Ok(Ok(head)) => head,
    };
    let path = request.uri().path().to_owned();
    if path == PATH {
        let response = match upgrade(&request, settings) {
            Ok(response) => response,
            Err(r) => return Some(refuse(&mut stream, r, bound).await),
        };
        let mut head = Vec::new();
        if let Err(e) = tungstenite::handshake::server::write_response(&mut head, &response) {
            return Some(Some(io::Error::other(e)));
        }
        match tokio::time::timeout_at(deadline, write_all(&mut stream, &head)).await {
            Err(_) => return Some(Some(timed_out())),
            Ok(Err(e)) => return Some(Some(e)),
            Ok(Ok(())) => {}
        }
        let ws = WebSocketStream::from_partially_read(
            stream,
            tail,
            Role::Server,
            Some(settings.config()),
        )
        .await;
        tracing::debug!(conn = %wiring.conn, "WebSocket open");
        let (sink, messages) = ws.split();
        let close = CloseSlot::default();
        let incoming = Incoming {
            messages,
            current: Bytes::new(),
            ended: false,
            max_message: settings.max_message,
            close: close.clone(),
        };
        let writer = std::pin::pin!(write_loop(wiring, sink, close));
        wiring.run(Buffered(incoming), writer).await;
        return None;
    }
    if refused {
        let r = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection refused by a limit",
        )
        .header("Retry-After", "1");
        return Some(refuse(&mut stream, r, bound).await);
    }
    let Some(root) = &settings.web_root else {
        return Some(
            refuse(
                &mut stream,
                Refusal::new(StatusCode::NOT_FOUND, "not found"),
                bound,
            )
            .await,
        );
    };
    let Ok(_permit) = settings.files.try_acquire() else {
        let r = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many files being served",
        )
        .header("Retry-After", "1");
        return Some(refuse(&mut stream, r, bound).await);
    };
    let (root, max) = (root.clone(), settings.max_file);
    let found = tokio::task::spawn_blocking(move || resolve(&root, &path, max))
        .await
        .ok()
        .flatten();
    let Some((file, len)) = found else {
        return Some(
            refuse(
                &mut stream,
                Refusal::new(StatusCode::NOT_FOUND, "not found"),
                bound,
            )
            .await,
        );
    };
    tracing::debug!(conn = %wiring.conn, file = %file.display(), len, "serving a file");
    // The login timeout bounds the transfer: the core closes the connection then.
    Some(send_file(&mut stream, &file, len).await.err())
}

/// Writes everything and flushes (a TLS stream keeps records until flushed).
async fn write_all<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Why reading a request head stopped.
enum Head {
    /// The peer closed before a whole head.
    Closed,
    /// Reading failed.
    Failed(io::Error),
    /// Not a request the port serves.
    Refused(Refusal),
}

impl From<io::Error> for Head {
    fn from(e: io::Error) -> Self {
        Head::Failed(e)
    }
}

/// Reads one HTTP request head; returns it and the bytes that followed it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(Request, Vec<u8>), Head> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(Head::Refused(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            )));
        }
        let room = (MAX_HEAD - buf.len()) as u64;
        if (&mut *stream).take(room).read_buf(&mut buf).await? == 0 {
            return Err(Head::Closed);
        }
        match Request::try_parse(&buf) {
            Ok(None) => {}
            Ok(Some((len, request))) => return Ok((request, buf.split_off(len))),
            Err(tungstenite::Error::Protocol(ProtocolError::WrongHttpMethod)) => {
                return Err(Head::Refused(
                    Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "only GET").header("Allow", "GET"),
                ))
            }
            Err(e) => {
                return Err(Head::Refused(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("bad request: {e}"),
                )))
            }
        }
    }
}

/// An HTTP refusal: its status, extra headers and a one-line reason (the body).
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    why: String,
}

impl Refusal {
    fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Refusal {
            status,
            headers: Vec::new(),
            why: why.into(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Answers a refusal (within `bound`) and closes; returns the reason as an error for
/// the connection's end report.
async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    r: Refusal,
    bound: Duration,
) -> Option<io::Error> {
    let body = format!("{}\n", r.why);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status.as_u16(),
        r.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let _ = tokio::time::timeout(bound, async {
        write_all(stream, head.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    Some(io::Error::other(format!(
        "HTTP request refused: {} ({})",
        r.status, r.why
    )))
}

/// The checks of a WebSocket handshake at [`PATH`] (spec section 3.7): a valid RFC 6455
/// upgrade, an allowed origin, the subprotocol offered. Returns the 101 response,
/// which selects the subprotocol.
pub fn upgrade(request: &Request, settings: &Settings) -> Result<Response, Refusal> {
    let mut response = create_response(request).map_err(|e| match e {
        tungstenite::Error::Protocol(ProtocolError::MissingSecWebSocketVersionHeader) => {
            Refusal::new(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket version 13 required",
            )
            .header("Sec-WebSocket-Version", "13")
        }
        e => Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("not a WebSocket handshake: {e}"),
        ),
    })?;
    if !origin_allowed(request, settings) {
        return Err(Refusal::new(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let offered = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the subprotocol {SUBPROTOCOL} is required"),
        ));
    }
    response.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

/// No `Origin` (not a browser), an origin of the allow-list, or the server's own origin
/// (the connection's scheme and the request's `Host`). Several `Origin` headers, or one
/// that is not text, are refused.
fn origin_allowed(request: &Request, settings: &Settings) -> bool {
    let headers = request.headers();
    let mut origins = headers.get_all("Origin").iter();
    let (Some(origin), None) = (origins.next(), origins.next()) else {
        return headers.get("Origin").is_none();
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    if settings.origins.contains(&origin) {
        return true;
    }
    let mut hosts = headers.get_all("Host").iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    let scheme = if settings.tls { "https" } else { "http" };
    host.to_str()
        .is_ok_and(|h| origin == format!("{scheme}://{}", h.trim().to_ascii_lowercase()))
}

/// The file a `GET` path names under `root` (canonical), and its length: path segments
/// percent-decoded one by one, none of them empty-but-inner, `.`, `..`, hidden (a
/// leading `.`) or holding `/`, `\` or NUL once decoded; index.html for a path ending in
/// `/`; after resolving symbolic links still under `root`; a regular file of at most
/// `max` bytes. Anything else is `None` (404).
pub fn resolve(root: &Path, path: &str, max: u64) -> Option<(PathBuf, u64)> {
    let rel = path.strip_prefix('/')?;
    let mut file = root.to_path_buf();
    let mut segments = rel.split('/').peekable();
    while let Some(raw) = segments.next() {
        if raw.is_empty() && segments.peek().is_none() {
            break; // the trailing `/`
        }
        let seg = percent_decode(raw)?;
        if seg.is_empty() || seg.starts_with('.') || seg.contains(['/', '\\', '\0']) {
            return None;
        }
        file.push(seg);
    }
    if rel.is_empty() || rel.ends_with('/') {
        file.push("index.html");
    }
    let file = file.canonicalize().ok()?;
    if !file.starts_with(root) {
        return None;
    }
    let meta = std::fs::metadata(&file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() > max {
        tracing::warn!(file = %file.display(), len = meta.len(), max, "file over --web-max-file-bytes not served");
        return None;
    }
    Some((file, meta.len()))
}

/// `%XX` sequences decoded; `None` for a bad sequence or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// The `Content-Type` of a served file, by its extension.
pub fn content_type(file: &Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Sends a file (`len` bytes at most) with a 200 response, then closes.
async fn send_file<S: AsyncWrite + Unpin>(stream: &mut S, file: &Path, len: u64) -> io::Result<()> {
    let f = tokio::fs::File::open(file).await?;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {len}\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        content_type(file)
    );
    stream.write_all(head.as_bytes()).await?;
    tokio::io::copy(&mut f.take(len), stream).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// The bytes of an empty frame: how a message that breaks the binding reaches the core
/// (spec 3.2: an empty frame is a framing error, answered `malformed`).
const EMPTY_FRAME: [u8; HEADER_LEN] = [0; HEADER_LEN];

/// What one received WebSocket item is for the core's byte stream.
#[derive(Debug, PartialEq)]
enum Mapped {
    /// One whole frame: its bytes, as they are.
    Frame(Bytes),
    /// Nothing for the core (ping, pong).
    Skip,
    /// The peer closed.
    End,
    /// The binding refuses the message: these bytes make the core answer the framing
    /// error of spec 3.7, the Close frame says why; nothing after it is read.
    Violation(Bytes, CloseFrame),
    /// The WebSocket failed (an RFC 6455 violation, or the socket).
    Failed(String),
}

/// Whether a binary message holds exactly one frame: a header and as many bytes as it
/// announces.
fn is_one_frame(message: &[u8]) -> bool {
    match message.get(..HEADER_LEN) {
        Some(&[a, b, c, d]) => {
            u32::from_be_bytes([a, b, c, d]) as usize == message.len() - HEADER_LEN
        }
        _ => false,
    }
}

fn close(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}

/// The binding's mapping of one received item (spec section 3.7).
fn map(item: Option<Result<Message, tungstenite::Error>>, max_message: usize) -> Mapped {
    match item {
        None | Some(Ok(Message::Close(_))) => Mapped::End,
        Some(Ok(Message::Binary(b))) if is_one_frame(&b) => Mapped::Frame(b),
        Some(Ok(Message::Binary(_))) => Mapped::Violation(
            Bytes::from_static(&EMPTY_FRAME),
            close(
                CloseCode::Protocol,
                "precall: a binary message must hold exactly one frame",
            ),
        ),
        Some(Ok(Message::Text(_))) => Mapped::Violation(
            Bytes::from_static(&EMPTY_FRAME),
            close(
                CloseCode::Unsupported,
                "precall: text messages are not used; one frame per binary message",
            ),
        ),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Mapped::Skip,
        Some(Err(tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, .. }))) => {
            // The length the message's frame would have: over the core's limit.
            let len = size
                .saturating_sub(HEADER_LEN)
                .max(max_message.saturating_sub(HEADER_LEN) + 1);
            let header = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
            Mapped::Violation(
                Bytes::copy_from_slice(&header),
                close(
                    CloseCode::Size,
                    "precall: message over the frame size limit",
                ),
            )
        }
        Some(Err(e)) => Mapped::Failed(format!("WebSocket: {e}")),
    }
}

/// The received binary messages of a WebSocket as the byte stream the core decodes:
/// each message is one whole frame, so the core's decoder meets every message at a
/// frame boundary. Backpressure is the read loop's: nothing is read from the socket
/// while it does not read from here.
pub struct Incoming<St> {
    messages: St,
    /// What is left of the current message.
    current: Bytes,
    /// The peer closed, the WebSocket failed, or the binding refused a message.
    ended: bool,
    max_message: usize,
    close: CloseSlot,
}

impl<St> AsyncRead for Incoming<St>
where
    St: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(())); // end of stream
            }
            let item = ready!(this.messages.poll_next_unpin(cx));
            match map(item, this.max_message) {
                Mapped::Frame(b) => this.current = b,
                Mapped::Skip => {}
                Mapped::End => this.ended = true,
                Mapped::Violation(bytes, frame) => {
                    this.current = bytes;
                    this.ended = true;
                    if let Ok(mut slot) = this.close.lock() {
                        *slot = Some(frame);
                    }
                }
                Mapped::Failed(why) => {
                    this.ended = true;
                    return Poll::Ready(Err(io::Error::other(why)));
                }
            }
        }
    }
}

/// The frames in `bytes`, each as its own slice (a queued item is one frame, spec'd by
/// the core's `ServerEvent::Transmit`; split anyway, so that a message is never more
/// than one frame).
fn frames(mut bytes: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let len = match bytes.get(..HEADER_LEN) {
            Some(&[a, b, c, d]) => HEADER_LEN + u32::from_be_bytes([a, b, c, d]) as usize,
            _ => bytes.len(),
        };
        Some(bytes.split_to(len.min(bytes.len())))
    })
}

/// The writer of an upgraded connection: each queued frame becomes one binary message;
/// the frames of a batch (the coalescing rule of module `conn`) are written with one
/// flush. Once the server closed the connection it sends a Close frame, normal unless
/// the binding refused a message. Ends `Ok` that way, or with the failed write.
async fn write_loop<K>(wiring: &Wiring, mut sink: K, close: CloseSlot) -> io::Result<()>
where
    K: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let failed = |e: tungstenite::Error| io::Error::other(format!("WebSocket: {e}"));
    let mut pacer = wiring.pacer();
    while let Some(batch) = wiring.next_batch(&mut pacer).await {
        for frame in batch {
            for message in frames(frame) {
                sink.feed(Message::Binary(message)).await.map_err(failed)?;
            }
        }
        sink.flush().await.map_err(failed)?;
    }
    let frame = close
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
        .unwrap_or_else(|| self::close(CloseCode::Normal, ""));
    let _ = sink.send(Message::Close(Some(frame))).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn settings(origins: &[&str], tls: bool) -> Settings {
        Settings {
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            web_root: None,
            handshake_timeout: Duration::from_secs(1),
            max_file: 1000,
            files: Semaphore::new(1),
            tls,
            max_message: 65_540,
        }
    }

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder()
            .method("GET")
            .uri(PATH)
            .header("Host", "chat.example.org:8443")
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_handshake_selects_the_subprotocol_and_checks_the_origin() {
        let s = settings(&["https://app.example.org"], true);
        let ok = upgrade(
            &request(&[("Sec-WebSocket-Protocol", "chat, precall.v1")]),
            &s,
        )
        .expect("offered, no Origin");
        assert_eq!(ok.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(ok.headers()["Sec-WebSocket-Protocol"], SUBPROTOCOL);
        assert_eq!(
            ok.headers()["Sec-WebSocket-Accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let status = |h: &[(&str, &str)]| {
            upgrade(&request(h), &s)
                .map(|r| r.status())
                .map_err(|r| r.status)
        };
        let p = ("Sec-WebSocket-Protocol", "precall.v1");
        assert_eq!(status(&[]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(
            status(&[("Sec-WebSocket-Protocol", "precall.v2, chat")]),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(&[("Sec-WebSocket-Protocol", "PRECALL.V1")]),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(&[p, ("Origin", "https://evil.example")]),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(&[p, ("Origin", "http://chat.example.org:8443")]),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(&[p, ("Origin", "null")]), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            status(&[
                p,
                ("Origin", "https://app.example.org"),
                ("Origin", "https://evil.example")
            ]),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(&[p, ("Origin", "https://APP.example.org")]),
            Ok(StatusCode::SWITCHING_PROTOCOLS)
        );
        assert_eq!(
            status(&[p, ("Origin", "https://chat.example.org:8443")]),
            Ok(StatusCode::SWITCHING_PROTOCOLS)
        );
        let plain = settings(&[], false);
        let r = upgrade(
            &request(&[p, ("Origin", "http://chat.example.org:8443")]),
            &plain,
        );
        assert!(r.is_ok(), "own origin over plain ws");
        let mut old = request(&[p]);
        old.headers_mut()
            .insert("Sec-WebSocket-Version", HeaderValue::from_static("8"));
        assert_eq!(
            upgrade(&old, &s).map_err(|r| r.status).err(),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
        let mut not_ws = request(&[p]);
        not_ws.headers_mut().remove("Upgrade");
        assert_eq!(
            upgrade(&not_ws, &s).map_err(|r| r.status).err(),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn ws_flags_go_with_ws_listen() {
        use crate::{Cli, Command};
        use clap::Parser;
        let serve = |args: &[&str]| -> Result<WsArgs, clap::Error> {
            let argv = ["precall-server", "serve", "--db", "x.db"]
                .into_iter()
                .chain(args.iter().copied());
            match Cli::try_parse_from(argv)?.command {
                Command::Serve(a) => Ok(a.ws),
                Command::Admin(_) => panic!("not serve"),
            }
        };
        let none = serve(&[]).unwrap();
        assert!(none.ws_listen.is_none() && none.web_root.is_none());
        assert_eq!(
            (none.ws_handshake_timeout_ms, none.web_max_file_bytes),
            (10_000, 16 << 20)
        );
        assert!(none.load(false, 65_536).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_string_lossy().into_owned();
        let all = serve(&[
            "--ws-listen",
            "127.0.0.1:0",
            "--ws-allow-origin",
            "https://App.example.org",
            "--ws-allow-origin",
            "http://localhost:8080",
            "--web-root",
            &root,
        ])
        .unwrap();
        assert_eq!(
            all.ws_allow_origin,
            ["https://app.example.org", "http://localhost:8080"]
        );
        let (listen, settings) = all.load(true, 65_536).unwrap().unwrap();
        assert_eq!(listen, "127.0.0.1:0");
        assert_eq!(settings.max_message, 65_540);
        assert!(settings.tls);
        assert_eq!(
            settings.web_root(),
            Some(dir.path().canonicalize().unwrap().as_path())
        );
        assert!(serve(&["--ws-allow-origin", "https://a.org"]).is_err());
        assert!(serve(&["--web-root", &root]).is_err());
        assert!(serve(&["--ws-listen", "x", "--ws-allow-origin", "https://a.org/"]).is_err());
        assert!(serve(&["--ws-listen", "x", "--ws-handshake-timeout-ms", "0"]).is_err());
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let file = file.to_string_lossy().into_owned();
        let not_dir = serve(&["--ws-listen", "x", "--web-root", &file]).unwrap();
        assert!(not_dir.load(false, 65_536).is_err());
    }

    #[test]
    fn origins_are_checked_when_parsed() {
        assert_eq!(
            parse_origin("https://App.Example.org:8443"),
            Ok("https://app.example.org:8443".into())
        );
        assert_eq!(
            parse_origin("http://[::1]:80"),
            Ok("http://[::1]:80".into())
        );
        for bad in [
            "app.example.org",
            "https://",
            "https://a.org/",
            "https://a.org/x",
            "null",
            "ftp://a.org",
            "*",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_message_is_one_frame_or_a_framing_error() {
        let max = 65_540;
        let ping = frame(br#"{"type":"ping"}"#);
        assert_eq!(
            map(Some(Ok(Message::Binary(ping.clone().into()))), max),
            Mapped::Frame(ping.clone().into())
        );
        // An empty frame is one frame: the core answers it.
        assert_eq!(
            map(Some(Ok(Message::Binary(vec![0; 4].into()))), max),
            Mapped::Frame(vec![0; 4].into())
        );
        let empty = Bytes::from_static(&EMPTY_FRAME);
        let violation = |m: Message| match map(Some(Ok(m)), max) {
            Mapped::Violation(bytes, frame) => (bytes, frame.code),
            other => panic!("{other:?}"),
        };
        let two = [ping.clone(), ping.clone()].concat();
        assert_eq!(
            violation(Message::Binary(two.into())),
            (empty.clone(), CloseCode::Protocol)
        );
        let short = ping[..ping.len() - 1].to_vec();
        assert_eq!(
            violation(Message::Binary(short.into())),
            (empty.clone(), CloseCode::Protocol)
        );
        assert_eq!(
            violation(Message::Binary(vec![0, 0].into())),
            (empty.clone(), CloseCode::Protocol)
        );
        assert_eq!(
            violation(Message::Binary(Bytes::new())),
            (empty.clone(), CloseCode::Protocol)
        );
        assert_eq!(
            violation(Message::text(r#"{"type":"ping"}"#)),
            (empty, CloseCode::Unsupported)
        );
        let too_long = tungstenite::Error::Capacity(CapacityError::MessageTooLong {
            size: 70_004,
            max_size: max,
        });
        match map(Some(Err(too_long)), max) {
            Mapped::Violation(b, f) => {
                assert_eq!(&b[..], &70_000u32.to_be_bytes());
                assert_eq!(f.code, CloseCode::Size);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            map(Some(Ok(Message::Ping(Bytes::new()))), max),
            Mapped::Skip
        );
        assert_eq!(map(Some(Ok(Message::Close(None))), max), Mapped::End);
        assert_eq!(map(None, max), Mapped::End);
    }

    #[test]
    fn each_frame_is_sent_as_its_own_message() {
        let a = frame(b"{\"type\":\"pong\"}");
        let b = frame(b"{\"type\":\"synced\"}");
        let one: Vec<Bytes> = frames(Bytes::from(a.clone())).collect();
        assert_eq!(one, vec![Bytes::from(a.clone())]);
        let two: Vec<Bytes> = frames(Bytes::from([a.clone(), b.clone()].concat())).collect();
        assert_eq!(two, vec![Bytes::from(a), Bytes::from(b)]);
    }

    #[test]
    fn static_paths_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(root.join("app.js"), "1").unwrap();
        std::fs::write(root.join("my file.css"), "x").unwrap();
        std::fs::write(root.join("sub/index.html"), "sub").unwrap();
        std::fs::write(root.join(".env"), "secret").unwrap();
        std::fs::write(root.join("big.wasm"), vec![0u8; 1001]).unwrap();
        std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink(root.join("app.js"), root.join("inside.js")).unwrap();
        let root = root.canonicalize().unwrap();
        let get = |p: &str| {
            resolve(&root, p, 1000).map(|(f, _)| f.strip_prefix(&root).unwrap().to_owned())
        };
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(get("/"), p("index.html"));
        assert_eq!(get("/app.js"), p("app.js"));
        assert_eq!(get("/my%20file.css"), p("my file.css"));
        assert_eq!(get("/sub/"), p("sub/index.html"));
        assert_eq!(get("/inside.js"), p("app.js"));
        for refused in [
            "/sub",
            "/sub/deeper/",
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/sub/../index.html",
            "/%2e%2e/secret.txt",
            "/sub%2f..%2f..%2fsecret.txt",
            "/escape.txt",
            "/.env",
            "/./app.js",
            "//app.js",
            "/app.js%00",
            "/big.wasm",
            "/missing",
            "app.js",
            "/%zz",
            "/%ff",
        ] {
            assert_eq!(get(refused), None, "{refused}");
        }
        assert_eq!(
            content_type(Path::new("a.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("a.mjs")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        assert_eq!(content_type(Path::new("a")), "application/octet-stream");
    }
}
