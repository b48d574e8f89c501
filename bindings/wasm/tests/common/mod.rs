//! The scenarios both test files run: `facade.rs` on the host against [`Facade`]
//! (`precall_wasm::Facade`), `node.rs` in Node against the `wasm-bindgen` class
//! `PrecallClient`. Each drives the facade under test (a [`Page`]) against the real
//! server core (`Server`, sans-IO too) and a native `Client` for Bob, wiring bytes
//! between them in memory as a socket would, and checks what the page sees against
//! the core and `precall-sdp` computed natively.
//!
//! Everything the page returns is looked at as JSON (`serde_json::Value`): on the host
//! the facade's values serialised, in Node the JavaScript objects read back, so one
//! check serves both. Each scenario returns `Err` with what went wrong instead of
//! panicking, so a seeded fault ([`Dropping`]) can show that the check notices it.

// Each test file uses its own subset.
#![allow(dead_code)]

use precall_protocol::sim::{sample_caps, Directory};
use precall_protocol::{
    negotiate_pair, CallParams, Capabilities, Client, ClientConfig, ClientEvent, ConnId, Endpoint,
    LoginWith, Password, Server, ServerConfig, ServerEvent, StoreOutcome, Time, UserId,
};
use serde_json::{json, Value};

/// What a facade offers a page, with JSON for every object. An error is the thrown
/// object's `{code, message}`.
pub trait Page {
    /// `login(nowMs)`.
    fn login(&mut self, now: Time) -> Result<(), Value>;
    /// `logout(nowMs)`.
    fn logout(&mut self, now: Time) -> Result<(), Value>;
    /// `resume(nowMs)`.
    fn resume(&mut self, now: Time) -> Result<(), Value>;
    /// `receive(bytes, nowMs)`.
    fn receive(&mut self, bytes: &[u8], now: Time) -> Result<(), Value>;
    /// `handleTimeout(nowMs)`.
    fn handle_timeout(&mut self, now: Time);
    /// `connectionClosed(nowMs)`.
    fn connection_closed(&mut self, now: Time);
    /// `pollTransmit()`.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// `pollEvent()`.
    fn poll_event(&mut self) -> Option<Value>;
    /// `pollTimeout()`.
    fn poll_timeout(&self) -> Option<f64>;
    /// `call(peer, nowMs)`.
    fn call(&mut self, peer: &Value, now: Time) -> Result<u32, Value>;
    /// `callWithMedia(peer, media, nowMs)`.
    fn call_with_media(&mut self, peer: &Value, media: &str, now: Time) -> Result<u32, Value>;
    /// `acceptWithMedia(call, media, nowMs)`.
    fn accept_with_media(&mut self, call: f64, media: &str, now: Time) -> Result<(), Value>;
    /// `answer(call, nowMs)`.
    fn answer(&mut self, call: f64, now: Time) -> Result<(), Value>;
    /// `hangup(call, nowMs)`.
    fn hangup(&mut self, call: f64, now: Time) -> Result<(), Value>;
    /// `status()`.
    fn status(&self) -> String;
    /// `table()`.
    fn table(&self) -> Value;
    /// `sdpOffer(peer)`.
    fn sdp_offer(&self, peer: &Value) -> Result<String, Value>;
    /// `sdpAnswer(peer)`.
    fn sdp_answer(&self, peer: &Value) -> Result<String, Value>;
    /// `applySdp(stackSdp, peer, kind)`.
    fn apply_sdp(&self, stack: &str, peer: &Value, kind: &str) -> Result<String, Value>;
    /// `encoderSettings(peer)`: `null` for `undefined`.
    fn encoder_settings(&self, peer: &Value) -> Result<Value, Value>;
}

/// A seeded fault: a facade that loses every event of one `type` (as a facade with a
/// missing arm in its event mapping would).
pub struct Dropping<P> {
    /// The facade.
    pub inner: P,
    /// The `type` lost.
    pub drop_type: &'static str,
}

impl<P: Page> Page for Dropping<P> {
    fn login(&mut self, now: Time) -> Result<(), Value> {
        self.inner.login(now)
    }
    fn logout(&mut self, now: Time) -> Result<(), Value> {
        self.inner.logout(now)
    }
    fn resume(&mut self, now: Time) -> Result<(), Value> {
        self.inner.resume(now)
    }
    fn receive(&mut self, bytes: &[u8], now: Time) -> Result<(), Value> {
        self.inner.receive(bytes, now)
    }
    fn handle_timeout(&mut self, now: Time) {
        self.inner.handle_timeout(now)
    }
    fn connection_closed(&mut self, now: Time) {
        self.inner.connection_closed(now)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.inner.poll_transmit()
    }
    fn poll_event(&mut self) -> Option<Value> {
        loop {
            let ev = self.inner.poll_event()?;
            if ev["type"] != self.drop_type {
                return Some(ev);
            }
        }
    }
    fn poll_timeout(&self) -> Option<f64> {
        self.inner.poll_timeout()
    }
    fn call(&mut self, peer: &Value, now: Time) -> Result<u32, Value> {
        self.inner.call(peer, now)
    }
    fn call_with_media(&mut self, peer: &Value, media: &str, now: Time) -> Result<u32, Value> {
        self.inner.call_with_media(peer, media, now)
    }
    fn accept_with_media(&mut self, call: f64, media: &str, now: Time) -> Result<(), Value> {
        self.inner.accept_with_media(call, media, now)
    }
    fn answer(&mut self, call: f64, now: Time) -> Result<(), Value> {
        self.inner.answer(call, now)
    }
    fn hangup(&mut self, call: f64, now: Time) -> Result<(), Value> {
        self.inner.hangup(call, now)
    }
    fn status(&self) -> String {
        self.inner.status()
    }
    fn table(&self) -> Value {
        self.inner.table()
    }
    fn sdp_offer(&self, peer: &Value) -> Result<String, Value> {
        self.inner.sdp_offer(peer)
    }
    fn sdp_answer(&self, peer: &Value) -> Result<String, Value> {
        self.inner.sdp_answer(peer)
    }
    fn apply_sdp(&self, stack: &str, peer: &Value, kind: &str) -> Result<String, Value> {
        self.inner.apply_sdp(stack, peer, kind)
    }
    fn encoder_settings(&self, peer: &Value) -> Result<Value, Value> {
        self.inner.encoder_settings(peer)
    }
}

/// Alice's terminal (the page): h264 and vp8, 1280×720, a 30 fps camera.
pub fn alice_caps() -> Capabilities {
    sample_caps(&["h264", "vp8"], 1280, 30)
}

/// Bob's terminal (native): h264, 640×360, a 15 fps camera.
pub fn bob_caps() -> Capabilities {
    sample_caps(&["h264"], 640, 15)
}

/// The page's configuration object: Alice with her capabilities as wire JSON.
pub fn alice_config() -> Value {
    json!({"user": "alice", "password": "alice-pw", "capabilities": alice_caps()})
}

fn uid(s: &str) -> UserId {
    UserId::new(s).expect("test user id")
}

/// A Chromium-like `createOffer()` description: VP8 and H.264 with their rtx formats,
/// ICE and DTLS lines, an audio-less bundle.
pub const STACK_SDP: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Zq3w\r\na=ice-pwd:h7Xb0sY3m9Qe2LkP5nVt8RcA\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 7B:1E:4A:90:3C:55:DE:12:88:9F:01:AB:CD:EF:23:45:67:89:0A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34\r\n\
a=setup:actpass\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:toffset\r\na=sendrecv\r\n\
a=msid:- 9f0e4c1a-track\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\na=rtcp-fb:96 ccm fir\r\n\
a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 transport-cc\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=ssrc-group:FID 1111 2222\r\n\
a=ssrc:1111 cname:abc\r\na=ssrc:2222 cname:abc\r\n";

/// The server core, Bob's native client, and the wiring to the page.
pub struct World {
    /// The server core.
    pub server: Server,
    /// Its credential store: alice and bob, each in the other's contact list.
    pub directory: Directory,
    /// The time every input is given.
    pub now: Time,
    /// Bob's client.
    pub bob: Client,
    /// Every event Bob's client emitted.
    pub bob_events: Vec<ClientEvent>,
    page_conn: Option<ConnId>,
    bob_conn: Option<ConnId>,
    next_conn: u64,
    /// Errors `receive` threw while pumping.
    pub page_errors: Vec<Value>,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// A server with Alice and Bob as mutual contacts; nobody connected.
    pub fn new() -> Self {
        let mut directory = Directory::default();
        directory.add_user(&uid("alice"), "alice-pw");
        directory.add_user(&uid("bob"), "bob-pw");
        directory.befriend(&uid("alice"), &uid("bob"));
        Self {
            server: Server::new(ServerConfig::default()),
            directory,
            now: Time(1_000),
            bob: Client::new(ClientConfig::default()),
            bob_events: Vec::new(),
            page_conn: None,
            bob_conn: None,
            next_conn: 1,
            page_errors: Vec::new(),
        }
    }

    fn connect(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.server.connect(conn, self.now).expect("fresh id");
        conn
    }

    /// Opens a (new) connection for the page.
    pub fn connect_page(&mut self) {
        self.page_conn = Some(self.connect());
    }

    /// Bob connects and logs in with his capabilities.
    pub fn bob_login(&mut self) {
        self.bob_conn = Some(self.connect());
        let pw = Password::new("bob-pw").expect("password");
        let with = LoginWith::Capabilities(bob_caps());
        self.bob
            .login(uid("bob"), pw, with, self.now)
            .expect("bob logs in");
    }

    /// The page's endpoint as Bob's table holds it.
    pub fn alice_in_bobs_table(&self) -> Result<Endpoint, String> {
        self.bob
            .peers()
            .map(|(e, _)| e.clone())
            .find(|e| e.user.as_str() == "alice")
            .ok_or_else(|| "alice is not in bob's table".to_owned())
    }

    /// Bob's endpoint `{user, session}`, once logged in.
    pub fn bob_endpoint(&self) -> Value {
        json!(self.bob.endpoint().expect("bob is logged in"))
    }

    /// Moves frames both ways until nothing is in flight: the page's and Bob's frames
    /// to the server, the server's to them; credential checks and contact-list changes
    /// answered at once. The page's events stay queued for the test.
    pub fn pump(&mut self, page: &mut dyn Page) {
        loop {
            let mut moved = false;
            while let Some(frame) = page.poll_transmit() {
                moved = true;
                if let Some(conn) = self.page_conn {
                    self.server.receive(conn, &frame, self.now);
                }
            }
            while let Some(frame) = self.bob.poll_transmit() {
                moved = true;
                if let Some(conn) = self.bob_conn {
                    self.server.receive(conn, &frame, self.now);
                }
            }
            while let Some(ev) = self.server.poll_event() {
                moved = true;
                match ev {
                    ServerEvent::Transmit { conn, frame } if Some(conn) == self.page_conn => {
                        if let Err(e) = page.receive(&frame, self.now) {
                            self.page_errors.push(e);
                        }
                    }
                    ServerEvent::Transmit { conn, frame } if Some(conn) == self.bob_conn => {
                        let _ = self.bob.receive(&frame, self.now);
                    }
                    ServerEvent::Authenticate(req) => {
                        let verdict = self.directory.verdict(&req);
                        let _ = self.server.complete_auth(req.ticket, verdict, self.now);
                    }
                    ServerEvent::Store(req) => {
                        let _ =
                            self.server
                                .complete_store(req.ticket, StoreOutcome::Stored, self.now);
                    }
                    ServerEvent::Close { conn } if Some(conn) == self.page_conn => {
                        self.page_conn = None;
                        page.connection_closed(self.now);
                    }
                    ServerEvent::Close { conn } if Some(conn) == self.bob_conn => {
                        self.bob_conn = None;
                        self.bob.connection_closed(self.now);
                    }
                    _ => {}
                }
            }
            while let Some(ev) = self.bob.poll_event() {
                self.bob_events.push(ev);
            }
            if !moved {
                return;
            }
        }
    }

    /// The page's connection drops (as a transport reports it to both ends).
    pub fn drop_page_connection(&mut self, page: &mut dyn Page) {
        if let Some(conn) = self.page_conn.take() {
            self.server.connection_closed(conn, self.now);
        }
        page.connection_closed(self.now);
        self.pump(page);
    }
}

/// Every event queued at the page.
pub fn drain(page: &mut dyn Page) -> Vec<Value> {
    std::iter::from_fn(|| page.poll_event()).collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

fn expect_types(events: &[Value], want: &[&str], when: &str) -> Result<(), String> {
    if types(events) == want {
        Ok(())
    } else {
        Err(format!("{when}: expected events {want:?}, got {events:?}"))
    }
}

fn params_of(v: &Value) -> Result<CallParams, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("params {v}: {e}"))
}

fn row_of<'t>(table: &'t Value, user: &str) -> Result<&'t Value, String> {
    table
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["user"] == user))
        .ok_or_else(|| format!("no row for {user} in {table}"))
}

/// The page logs in, Bob comes online, Bob logs out. The page must see `logged_in`,
/// `synced`, `peer_online` for Bob with exactly the parameters the core negotiates
/// natively (`negotiate_pair`), and then **`peer_offline`** for Bob; its table must
/// follow (Bob online with those parameters, then offline).
pub fn online_then_offline(page: &mut dyn Page, w: &mut World) -> Result<(), String> {
    w.connect_page();
    page.login(w.now).map_err(|e| format!("login: {e}"))?;
    if page.status() != "logging_in" {
        return Err(format!("status after login: {}", page.status()));
    }
    w.pump(page);
    let evs = drain(page);
    expect_types(&evs, &["logged_in", "synced"], "alice logs in")?;
    if evs[0]["user"] != "alice" || !evs[0]["session"].is_u64() {
        return Err(format!("logged_in: {}", evs[0]));
    }

    w.bob_login();
    w.pump(page);
    let bob = w.bob_endpoint();
    let evs = drain(page);
    expect_types(&evs, &["peer_online"], "bob logs in")?;
    let want = negotiate_pair(&alice_caps(), &bob_caps());
    if evs[0]["user"] != bob["user"] || evs[0]["session"] != bob["session"] {
        return Err(format!("peer_online names {} not {bob}", evs[0]));
    }
    if params_of(&evs[0]["params"])? != want {
        return Err(format!(
            "peer_online params {} != {want:?}",
            evs[0]["params"]
        ));
    }
    let table = page.table();
    let row = row_of(&table, "bob")?;
    let online = json!({"user": "bob", "session": bob["session"], "online": true,
                        "send": want.send, "recv": want.recv});
    if *row != online {
        return Err(format!("table row {row}, expected {online}"));
    }

    w.bob
        .logout(w.now)
        .map_err(|e| format!("bob logout: {e}"))?;
    w.pump(page);
    let evs = drain(page);
    let offline = evs.iter().any(|e| {
        e["type"] == "peer_offline" && e["user"] == "bob" && e["session"] == bob["session"]
    });
    if !offline {
        return Err(format!(
            "bob logged out but the page saw no peer_offline for {bob}: events {evs:?}"
        ));
    }
    let table = page.table();
    if *row_of(&table, "bob")? != json!({"user": "bob", "online": false}) {
        return Err(format!("table after bob's logout: {table}"));
    }
    Ok(())
}

/// Logs the page in and Bob after it; returns Bob's endpoint.
pub fn both_online(page: &mut dyn Page, w: &mut World) -> Result<Value, String> {
    w.connect_page();
    page.login(w.now).map_err(|e| format!("login: {e}"))?;
    w.pump(page);
    w.bob_login();
    w.pump(page);
    drain(page);
    Ok(w.bob_endpoint())
}

/// The SDP helpers against `precall-sdp` called natively with the same inputs: the
/// offer, the answer, a stack's description with each applied, the encoder settings,
/// and the `sdp_answer` of an incoming call from Bob; then the call is answered,
/// established on the fast path, and hung up.
pub fn sdp_and_a_call(page: &mut dyn Page, w: &mut World) -> Result<(), String> {
    let bob = both_online(page, w)?;
    let (alice_caps, bob_caps) = (alice_caps(), bob_caps());
    let params = negotiate_pair(&alice_caps, &bob_caps);
    let offer = precall_sdp::offer(&alice_caps, &params).map_err(|e| e.to_string())?;
    let bobs_offer =
        precall_sdp::offer(&bob_caps, &params.mirrored()).map_err(|e| e.to_string())?;
    let answer =
        precall_sdp::answer(&alice_caps, &params, &bobs_offer).map_err(|e| e.to_string())?;

    let text = |r: Result<String, Value>, what: &str| r.map_err(|e| format!("{what}: {e}"));
    let got = text(page.sdp_offer(&bob), "sdpOffer")?;
    if got != offer.to_string() {
        return Err(format!("sdpOffer:\n{got}\nprecall-sdp:\n{offer}"));
    }
    let got = text(page.sdp_answer(&bob), "sdpAnswer")?;
    if got != answer.to_string() {
        return Err(format!("sdpAnswer:\n{got}\nprecall-sdp:\n{answer}"));
    }
    // The peer named by its text works as well.
    let by_text = format!("bob/{}", bob["session"]);
    if text(page.sdp_offer(&json!(by_text)), "sdpOffer by text")? != offer.to_string() {
        return Err("sdpOffer(\"bob/N\") differs".into());
    }
    for (kind, section) in [("offer", &offer), ("answer", &answer)] {
        let got = text(page.apply_sdp(STACK_SDP, &bob, kind), "applySdp")?;
        let want = precall_sdp::apply(STACK_SDP, section).map_err(|e| e.to_string())?;
        if got != want {
            return Err(format!("applySdp {kind}:\n{got}\nprecall-sdp:\n{want}"));
        }
    }
    let enc = page
        .encoder_settings(&bob)
        .map_err(|e| format!("encoderSettings: {e}"))?;
    let native = precall_sdp::encoder_settings(&alice_caps, &params)
        .map_err(|e| e.to_string())?
        .ok_or("alice sends video")?;
    let want = json!({
        "mimeType": native.codec.mime_type(), "payloadType": native.codec.payload_type(),
        "clockRate": 90000, "maxBitrate": native.max_bitrate_bps,
        "maxFramerate": native.max_framerate, "width": native.width, "height": native.height,
        "codecPreferences": native.codec_preferences,
    });
    // The scale is a float: compared as one (JavaScript's 2 and Rust's 2.0 are equal).
    let mut enc = enc;
    let scale = enc
        .as_object_mut()
        .and_then(|o| o.remove("scaleResolutionDownBy"))
        .and_then(|v| v.as_f64());
    if enc != want || scale != native.scale_resolution_down_by {
        return Err(format!(
            "encoderSettings {enc} scale {scale:?}, precall-sdp {want} scale {:?}",
            native.scale_resolution_down_by
        ));
    }

    // Bob calls; the page's incoming_call carries the answer it can send at once.
    let alice_ep = w.alice_in_bobs_table()?;
    w.bob
        .place_call(&alice_ep, w.now)
        .map_err(|e| format!("bob calls: {e}"))?;
    w.pump(page);
    let evs = drain(page);
    expect_types(&evs, &["incoming_call"], "bob calls")?;
    let incoming = &evs[0];
    if incoming["from"] != bob || params_of(&incoming["params"])? != params {
        return Err(format!("incoming_call {incoming}"));
    }
    if incoming["sdp_answer"] != answer.to_string() {
        return Err(format!(
            "incoming_call sdp_answer {}, precall-sdp {answer}",
            incoming["sdp_answer"]
        ));
    }
    let call = incoming["call"].as_f64().ok_or("call number")?;
    page.answer(call, w.now)
        .map_err(|e| format!("answer: {e}"))?;
    w.pump(page);
    let evs = drain(page);
    expect_types(&evs, &["call_established"], "alice answers")?;
    if evs[0]["path"] != "fast" || evs[0]["call"] != incoming["call"] {
        return Err(format!("call_established {}", evs[0]));
    }
    let bob_established = w
        .bob_events
        .iter()
        .any(|e| matches!(e, ClientEvent::CallEstablished { .. }));
    if !bob_established {
        return Err(format!("bob's events: {:?}", w.bob_events));
    }
    page.hangup(call, w.now)
        .map_err(|e| format!("hangup: {e}"))?;
    w.pump(page);
    let bob_ended = w
        .bob_events
        .iter()
        .any(|e| matches!(e, ClientEvent::CallEnded { .. }));
    if !bob_ended {
        return Err(format!("bob saw no call_ended: {:?}", w.bob_events));
    }
    Ok(())
}

/// Media descriptions (spec 10.8) both ways: the page calls Bob with its offer, which
/// Bob's `IncomingCall` carries, and Bob's answer comes back in the page's
/// `call_established`; then Bob calls the page with his, the page's `incoming_call`
/// carries it and its answer reaches Bob. A description the spec does not allow throws
/// `invalid_value` and sends nothing.
pub fn media_both_ways(page: &mut dyn Page, w: &mut World) -> Result<(), String> {
    let bob = both_online(page, w)?;
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=alice's offer\r\n";
    let answer = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=bob's answer\r\n";
    for bad in ["", "v=0\u{0}", &"x".repeat(16 * 1024 + 1)] {
        match page.call_with_media(&bob, bad, w.now) {
            Err(e) if e["code"] == "invalid_value" => {}
            other => return Err(format!("callWithMedia of {} bytes: {other:?}", bad.len())),
        }
        if page.poll_transmit().is_some() {
            return Err("a refused callWithMedia sent a frame".into());
        }
    }
    page.call_with_media(&bob, offer, w.now)
        .map_err(|e| format!("callWithMedia: {e}"))?;
    w.pump(page);
    let (call, got) = w
        .bob_events
        .iter()
        .find_map(|e| match e {
            ClientEvent::IncomingCall { call, media, .. } => Some((*call, media.clone())),
            _ => None,
        })
        .ok_or_else(|| format!("bob had no incoming call: {:?}", w.bob_events))?;
    if got.as_ref().map(|m| m.as_str()) != Some(offer) {
        return Err(format!("bob's incoming call carried {got:?}"));
    }
    let media = precall_protocol::MediaDescription::new(answer).map_err(|e| e.to_string())?;
    w.bob
        .accept_with_media(call, media, w.now)
        .map_err(|e| format!("bob accepts: {e}"))?;
    w.pump(page);
    let evs = drain(page);
    expect_types(&evs, &["call_ringing", "call_established"], "bob accepts")?;
    if evs[1]["media"] != answer || evs[1]["path"] != "fast" {
        return Err(format!("call_established {}", evs[1]));
    }
    page.hangup(evs[1]["call"].as_f64().ok_or("call number")?, w.now)
        .map_err(|e| format!("hangup: {e}"))?;
    w.pump(page);
    drain(page);

    // The other way round.
    w.bob_events.clear();
    let alice_ep = w.alice_in_bobs_table()?;
    let media = precall_protocol::MediaDescription::new(offer).map_err(|e| e.to_string())?;
    w.bob
        .place_call_with_media(&alice_ep, media, w.now)
        .map_err(|e| format!("bob calls: {e}"))?;
    w.pump(page);
    let evs = drain(page);
    expect_types(&evs, &["incoming_call"], "bob calls with media")?;
    if evs[0]["media"] != offer {
        return Err(format!("incoming_call {}", evs[0]));
    }
    let call = evs[0]["call"].as_f64().ok_or("call number")?;
    page.accept_with_media(call, answer, w.now)
        .map_err(|e| format!("acceptWithMedia: {e}"))?;
    w.pump(page);
    let got = w.bob_events.iter().find_map(|e| match e {
        ClientEvent::CallEstablished { media, .. } => Some(media.clone()),
        _ => None,
    });
    match got {
        Some(Some(m)) if m.as_str() == answer => Ok(()),
        other => Err(format!("bob's call_established carried {other:?}")),
    }
}

/// Commands the core refuses throw their codes; bytes that break the framing throw
/// `framing`, after which the session is detached and resumes on a new connection
/// with its table; the ping timer comes out of `pollTimeout` and goes back in through
/// `handleTimeout`.
pub fn errors_timers_and_resume(page: &mut dyn Page, w: &mut World) -> Result<(), String> {
    let code = |r: Result<(), Value>| r.err().map(|e| e["code"].clone());
    if code(page.logout(w.now)) != Some(json!("not_logged_in")) {
        return Err("logout before login did not throw not_logged_in".into());
    }
    let bob = both_online(page, w)?;
    let nobody = json!({"user": "carol", "session": 99});
    match page.call(&nobody, w.now) {
        Err(e) if e["code"] == "unknown_peer" && e["message"].is_string() => {}
        other => return Err(format!("call to a stranger: {other:?}")),
    }
    if code(page.answer(12345.0, w.now)) != Some(json!("unknown_call")) {
        return Err("answer of no call did not throw unknown_call".into());
    }
    if code(page.login(w.now)) != Some(json!("already_logged_in")) {
        return Err("second login did not throw already_logged_in".into());
    }
    match page.apply_sdp("v=0\r\n", &bob, "offer") {
        Err(e) if e["code"] == "no_video_section" => {}
        other => return Err(format!("applySdp without video: {other:?}")),
    }
    match page.apply_sdp(STACK_SDP, &bob, "pranswer") {
        Err(e) if e["code"] == "invalid_argument" => {}
        other => return Err(format!("applySdp of a bad kind: {other:?}")),
    }

    // The ping timer: due 20 s after the last frame sent (the core's default).
    let due = page.poll_timeout().ok_or("no timer while online")?;
    w.now = Time(due as u64);
    page.handle_timeout(w.now);
    if page.poll_transmit().is_none() {
        return Err("no ping at the deadline".into());
    }

    // Four zero bytes: an empty frame, which breaks the framing.
    match page.receive(&[0, 0, 0, 0], w.now) {
        Err(e) if e["code"] == "framing" => {}
        other => return Err(format!("an empty frame: {other:?}")),
    }
    let evs = drain(page);
    expect_types(&evs, &["detached"], "after the framing error")?;
    w.drop_page_connection(page);
    if page.status() != "detached" {
        return Err(format!("status {}", page.status()));
    }
    w.connect_page();
    page.resume(w.now).map_err(|e| format!("resume: {e}"))?;
    w.pump(page);
    let evs = drain(page);
    if types(&evs).first() != Some(&"resumed") || types(&evs).last() != Some(&"synced") {
        return Err(format!("resume: {evs:?}"));
    }
    if row_of(&page.table(), "bob")?["session"] != bob["session"] {
        return Err(format!("table after resume: {}", page.table()));
    }
    page.logout(w.now).map_err(|e| format!("logout: {e}"))?;
    w.pump(page);
    let evs = drain(page);
    if types(&evs).last() != Some(&"logged_out") || page.status() != "idle" {
        return Err(format!("logout: {evs:?}, status {}", page.status()));
    }
    if !page.table().as_array().is_some_and(Vec::is_empty) {
        return Err(format!("table after logout: {}", page.table()));
    }
    if !w.page_errors.is_empty() {
        return Err(format!("receive threw: {:?}", w.page_errors));
    }
    Ok(())
}
