//! A real browser for the tests: Debian's headless Chromium, with a fake camera,
//! driven over the Chrome DevTools Protocol (CDP) on a loopback WebSocket, and a
//! loopback HTTP server for the pages it opens (`getUserMedia` needs a secure context,
//! which `http://127.0.0.1` is).
//!
//! No WebDriver and no browser download: the test starts `/usr/bin/chromium` (or
//! `$PRECALL_CHROMIUM`) itself, reads the DevTools address it prints, attaches to its
//! page and evaluates JavaScript there, awaiting promises. A missing browser is an
//! error that says how to install it, never a skipped test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::{ensure, Error, Res};

/// Where Chromium is looked for when `$PRECALL_CHROMIUM` is not set.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one CDP command may take before the test fails (a page's `evaluate` that
/// lets video flow for a few seconds included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The Chromium executable: `$PRECALL_CHROMIUM` or [`CHROMIUM`], or an error that says
/// how to get it.
pub fn chromium() -> Res<PathBuf> {
    let path =
        std::env::var_os("PRECALL_CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
    ensure!(
        path.is_file(),
        "no Chromium at {}: the browser tests need Debian's headless Chromium. Install it with \
         `apt-get install chromium` (the README's test command, scripts/test, does this), or \
         point PRECALL_CHROMIUM at a Chromium or Chrome binary",
        path.display()
    );
    Ok(path)
}

/// A headless Chromium process with one page, driven over CDP. Killed on drop.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium headless with a fake camera and microphone (and no permission
    /// prompt), a fresh profile, and no background network traffic, and attaches to its
    /// page.
    pub fn launch() -> Res<Self> {
        Self::launch_with(&[])
    }

    /// [`Browser::launch`] with more command-line switches (for example
    /// `--use-file-for-fake-video-capture=FILE.y4m`, see [`write_grainy_y4m`]).
    pub fn launch_with(extra: &[String]) -> Res<Self> {
        let exe = chromium()?;
        let profile = tempfile::Builder::new()
            .prefix("precall-chromium-")
            .tempdir()?;
        let log_path = profile.path().join("chromium.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--use-fake-device-for-media-stream=fps=30",
                "--use-fake-ui-for-media-stream",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .args(extra)
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error(format!("starting {}: {e}", exe.display())))?;
        let mut child = ChildGuard(Some(child));
        let ws_url = wait_for_devtools(&log_path, child.0.as_mut().expect("present"))?;
        let ws = connect(&ws_url)?;
        let mut b = Browser {
            child: child.0.take().expect("present"),
            ws,
            session: String::new(),
            next_id: 0,
            profile,
        };
        let targets = b.browser_call("Target.getTargets", json!({}))?;
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .ok_or_else(|| Error(format!("Chromium has no page target: {targets}")))?
            .to_string();
        let attached = b.browser_call(
            "Target.attachToTarget",
            json!({ "targetId": page, "flatten": true }),
        )?;
        b.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| Error(format!("no CDP session: {attached}")))?
            .to_string();
        b.call("Runtime.enable", json!({}))?;
        b.call("Page.enable", json!({}))?;
        Ok(b)
    }

    /// Chromium's own log (its stderr), for failure messages.
    pub fn log(&self) -> String {
        crate::tail(&self.profile.path().join("chromium.log"), 4_000)
    }

    /// Opens `url` in the page and waits until its document has loaded.
    pub fn goto(&mut self, url: &str) -> Res<()> {
        let r = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(e) = r["errorText"].as_str() {
            return Err(Error(format!("navigating to {url}: {e}")));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.eval("document.readyState")? == "complete" {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{url} did not finish loading");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Evaluates `expression` in the page, awaiting it if it is a promise, and returns
    /// its value as JSON. A thrown exception or a rejected promise is an error carrying
    /// its text.
    pub fn eval(&mut self, expression: &str) -> Res<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({
                "expression": expression,
                "awaitPromise": true,
                "returnByValue": true,
                "userGesture": true,
            }),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex["exception"]["description"]
                .as_str()
                .or_else(|| ex["text"].as_str())
                .unwrap_or("exception");
            return Err(Error(format!("the page threw: {text}")));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Saves a PNG screenshot of the page (to look at what a person would see).
    pub fn screenshot(&mut self, path: &Path) -> Res<()> {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = r["data"]
            .as_str()
            .ok_or_else(|| Error("no screenshot data".into()))?;
        std::fs::write(path, base64_decode(data)?)?;
        Ok(())
    }

    /// One CDP command to the attached page.
    pub fn call(&mut self, method: &str, params: Value) -> Res<Value> {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Res<Value> {
        self.send(method, params, None)
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Res<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| Error(format!("CDP {method}: {e}")))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            ensure!(
                Instant::now() < deadline,
                "CDP {method} got no answer in {COMMAND_TIMEOUT:?}"
            );
            let m = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(Error(format!("CDP {method}: {e}\n{}", self.log()))),
            };
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(text.as_str())?;
            // Events (no id) and answers to other commands are skipped.
            if v["id"] != json!(id) {
                continue;
            }
            if let Some(e) = v.get("error") {
                return Err(Error(format!("CDP {method} failed: {e}")));
            }
            return Ok(v["result"].clone());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a child that never became a [`Browser`].
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads Chromium's log until it prints `DevTools listening on ws://...`.
fn wait_for_devtools(log: &Path, child: &mut Child) -> Res<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(url) = text
            .lines()
            .find_map(|l| l.split("DevTools listening on ").nth(1))
        {
            return Ok(url.trim().to_string());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error(format!(
                "Chromium exited ({status}) before opening DevTools:\n{}",
                crate::tail(log, 4_000)
            )));
        }
        ensure!(
            Instant::now() < deadline,
            "Chromium did not open DevTools in 30 s:\n{}",
            crate::tail(log, 4_000)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn connect(url: &str) -> Res<WebSocket<TcpStream>> {
    let host = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .ok_or_else(|| Error(format!("unexpected DevTools address {url}")))?;
    let stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let (ws, _) = tungstenite::client(url, stream)
        .map_err(|e| Error(format!("CDP WebSocket handshake with {url}: {e}")))?;
    Ok(ws)
}

fn base64_decode(s: &str) -> Res<Vec<u8>> {
    let val = |c: u8| -> Res<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(Error(format!("bad base64 byte {c}"))),
        }
        .into())
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let full = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&full[..chunk.len().saturating_sub(1)]);
    }
    Ok(out)
}

/// Writes a YUV4MPEG2 video for Chromium's `--use-file-for-fake-video-capture`:
/// `frames` frames (30 frames/s, 4:2:0) of `width` × `height`, a diagonal gradient that
/// moves each frame with pseudo-random grain of ± `grain` on the luma. Grain costs an
/// encoder bits (unlike the default fake camera's flat picture, which any encoder sends
/// in a few hundred kbit/s whatever it is allowed), so a sender uses what it is allowed
/// and a bit-rate limit shows in what it sends; moderate grain still lets the encoder
/// meet the limit by quantising harder. Deterministic (a fixed linear congruential
/// generator).
pub fn write_grainy_y4m(path: &Path, width: u16, height: u16, frames: u16, grain: u8) -> Res<()> {
    let (w, h) = (usize::from(width), usize::from(height));
    let chroma = 2 * (w.div_ceil(2) * h.div_ceil(2));
    let mut out = Vec::with_capacity(64 + usize::from(frames) * (w * h + chroma + 6));
    writeln!(out, "YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg")?;
    let mut x: u32 = 0x1234_5678;
    let span = i32::from(grain) * 2 + 1;
    for f in 0..usize::from(frames) {
        out.extend_from_slice(b"FRAME\n");
        for row in 0..h {
            for col in 0..w {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = ((x >> 16) as i32 % span) - i32::from(grain);
                let base = ((row + col + f * 8) % 256) as i32 / 2 + 64;
                out.push((base + noise).clamp(16, 235) as u8);
            }
        }
        out.extend(std::iter::repeat_n(128u8, chroma));
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// A loopback HTTP/1.1 server for a fixed set of files (path → content type, body),
/// so a page is a secure context (`http://127.0.0.1`). One thread; each connection
/// gets one response and is closed. Stops when dropped... the thread lives until the
/// test process ends, which is what tests need.
pub struct StaticSite {
    addr: SocketAddr,
}

impl StaticSite {
    /// Serves `files` on an ephemeral loopback port. An unknown path is a 404.
    pub fn serve(files: Vec<(&str, &str, Vec<u8>)>) -> Res<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let files: Arc<HashMap<String, (String, Vec<u8>)>> = Arc::new(
            files
                .into_iter()
                .map(|(p, t, b)| (p.to_string(), (t.to_string(), b)))
                .collect(),
        );
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let files = Arc::clone(&files);
                thread::spawn(move || {
                    let _ = respond(conn, &files);
                });
            }
        });
        Ok(StaticSite { addr })
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn respond(conn: TcpStream, files: &HashMap<String, (String, Vec<u8>)>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Skip the headers.
    let mut h = String::new();
    while reader.read_line(&mut h)? > 2 {
        h.clear();
    }
    let path = line.split(' ').nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let mut conn = conn;
    match files.get(path) {
        Some((ctype, body)) => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.write_all(body)?;
        }
        None => {
            conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
        }
    }
    let _ = conn.flush();
    let mut rest = [0u8; 1];
    let _ = conn.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = conn.read(&mut rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        assert_eq!(base64_decode("aGVsbG8=").expect("valid"), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").expect("valid"), b"hello!");
        assert_eq!(base64_decode("aA==").expect("valid"), b"h");
        assert!(base64_decode("a$==").is_err());
    }
}
