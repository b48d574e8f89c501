//! The `wasm-bindgen` boundary: [`PrecallClient`], the class a page creates. Each
//! method turns JavaScript values into Rust ones (`serde-wasm-bindgen` for objects),
//! calls the [`Facade`] method of the same name, and turns the result back into plain
//! objects (never `Map`s; 64-bit numbers as ordinary numbers) or a thrown
//! `PrecallError` ([`crate::Error`]).
//!
//! It builds on every target (so the workspace's clippy and rustdoc see it); its
//! methods only work when called from JavaScript.

use js_sys::Reflect;
use precall_protocol::{Capabilities, Endpoint};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::error::Error;
use crate::facade::Facade;
use crate::input::{self, Config, SectionKind};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** An endpoint: one online terminal of a contact. Methods also take "user/session". */
export interface PrecallEndpoint { user: string; session: number }
export type PrecallPeer = PrecallEndpoint | string;
export interface PrecallStream { codec: string; width: number; height: number; fps: number; bitrate_kbps: number }
export type PrecallDirection = { video: PrecallStream } | { off: "no_camera" | "no_common_codec" | "insufficient_resources" };
export interface PrecallParams { send: PrecallDirection; recv: PrecallDirection }
/** The wire's capability JSON (spec section 2.3). */
export interface PrecallCapabilities {
  encode: string[]; decode: string[];
  screen: { width: number; height: number };
  camera?: { max: { width: number; height: number }; max_fps: number };
  cpu: "low" | "mid" | "high" | "ultra";
  bandwidth: { up_kbps: number; down_kbps: number };
}
export interface PrecallConfig {
  user: string; password: string;
  capabilities?: PrecallCapabilities; terminalId?: string;
  pingIntervalMs?: number; maxFrame?: number;
}
export type PrecallEvent =
  | { type: "logged_in"; user: string; session: number }
  | { type: "synced" } | { type: "detached" } | { type: "logged_out" }
  | { type: "resumed"; session: number; snapshot: boolean }
  | { type: "peer_online" | "peer_updated"; user: string; session: number; params: PrecallParams }
  | { type: "peer_offline"; user: string; session: number }
  | { type: "contacts_changed"; req?: number; user: string; added: boolean }
  | { type: "caps_acknowledged"; req: number }
  | { type: "call_ringing"; req: number; call: number; to: PrecallEndpoint }
  | { type: "incoming_call"; call: number; from: PrecallEndpoint; params: PrecallParams; media?: string; sdp_answer?: string; sdp_error?: string }
  | { type: "call_established"; call: number; params: PrecallParams; path: "fast" | "fallback"; media?: string }
  | { type: "call_ended"; call: number; reason: string }
  | { type: "caps_result"; req: number; from: PrecallEndpoint; capabilities: PrecallCapabilities; params: PrecallParams }
  | { type: "call_failed"; req: number; to: PrecallEndpoint; code: string; detail: string }
  | { type: "server_error"; code: string; req?: number; call?: number; retry_after_ms?: number; detail: string }
  | { type: "violation" | "unknown"; detail: string };
export interface PrecallRow { user: string; session?: number; online: boolean; send?: PrecallDirection; recv?: PrecallDirection }
export interface PrecallPeerEntry { user: string; session: number; capabilities: PrecallCapabilities; fingerprint: string; params: PrecallParams }
export interface PrecallCall { call: number; peer: PrecallEndpoint; role: "caller" | "callee"; state: string; params?: PrecallParams; path: "fast" | "fallback" }
export interface PrecallEncoderSettings {
  mimeType: string; payloadType: number; clockRate: number; maxBitrate: number; maxFramerate: number;
  width: number; height: number; scaleResolutionDownBy?: number; codecPreferences: string[];
}
/** What every method throws: an Error named PrecallError with a snake_case code. */
export interface PrecallError extends Error { name: "PrecallError"; code: string }
"#;

/// Plain objects for maps, `undefined` for `None`, numbers for 64-bit integers (which
/// the core keeps within 2^53: session, call and request numbers).
const SERIALIZER: serde_wasm_bindgen::Serializer =
    serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);

/// The thrown value: an `Error` named `PrecallError` with a `code` property.
fn throw(e: Error) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    err.set_name("PrecallError");
    // Setting a property on a fresh Error object cannot fail.
    let _ = Reflect::set(&err, &JsValue::from_str("code"), &JsValue::from_str(e.code));
    err.into()
}

fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&SERIALIZER)
        .map_err(|e| throw(Error::new("internal", e.to_string())))
}

fn from_js<T: DeserializeOwned>(value: JsValue, code: &'static str) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value(value).map_err(|e| throw(Error::new(code, e.to_string())))
}

fn peer_from_js(peer: JsValue) -> Result<Endpoint, JsValue> {
    match peer.as_string() {
        Some(text) => input::endpoint_from_text(&text).map_err(throw),
        None => from_js(peer, "invalid_argument"),
    }
}

fn js<T>(r: Result<T, Error>) -> Result<T, JsValue> {
    r.map_err(throw)
}

/// precall's client core for a web page: one terminal's session, its table of online
/// contacts with the call parameters pre-computed for each, and its calls. The page
/// moves bytes between it and its connection, passes the time in milliseconds, and
/// handles the events; see the [crate docs](crate) for the loop.
#[wasm_bindgen]
pub struct PrecallClient {
    inner: Facade,
}

#[wasm_bindgen]
impl PrecallClient {
    /// A client that is not logged in. `config`: `{user, password, capabilities |
    /// terminalId, pingIntervalMs?, maxFrame?}` ([`Config`]). Throws `invalid_config`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "PrecallConfig")] config: JsValue,
    ) -> Result<PrecallClient, JsValue> {
        let config: Config = from_js(config, "invalid_config")?;
        Ok(Self {
            inner: js(Facade::new(config))?,
        })
    }

    /// Sends the login (the configured credentials and capabilities or terminal id).
    /// Throws `already_logged_in`.
    pub fn login(&mut self, #[wasm_bindgen(js_name = "nowMs")] now_ms: f64) -> Result<(), JsValue> {
        js(self.inner.login(now_ms))
    }

    /// Logs out: sends `logout` and deletes the table at once (claim C5). Throws
    /// `not_logged_in`.
    pub fn logout(
        &mut self,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.logout(now_ms))
    }

    /// Takes a detached session over on a new connection (no password needed). Throws
    /// `not_detached`.
    pub fn resume(
        &mut self,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.resume(now_ms))
    }

    /// Gives a detached session up: everything is deleted, the client is idle.
    pub fn abandon(
        &mut self,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.abandon(now_ms))
    }

    /// Bytes arrived from the server (any cut: partial frames are kept). Throws
    /// `framing` or `unsupported_version` when the connection is unusable: close it;
    /// the session is already detached (`detached` event) or over (`logged_out`).
    pub fn receive(
        &mut self,
        bytes: &[u8],
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.receive(bytes, now_ms))
    }

    /// The deadline of [`PrecallClient::poll_timeout`] passed (harmless before it).
    #[wasm_bindgen(js_name = handleTimeout)]
    pub fn handle_timeout(
        &mut self,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.handle_timeout(now_ms))
    }

    /// The connection closed or failed.
    #[wasm_bindgen(js_name = connectionClosed)]
    pub fn connection_closed(
        &mut self,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.connection_closed(now_ms))
    }

    /// The next frame to write to the connection (a whole frame, its 4-byte length
    /// prefix included), or `undefined`.
    #[wasm_bindgen(js_name = pollTransmit)]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.inner.poll_transmit()
    }

    /// The next event (`{type: "peer_online", user, session, params}`, ...; see
    /// [`crate::event`]), or `undefined`.
    #[wasm_bindgen(js_name = pollEvent, unchecked_return_type = "PrecallEvent | undefined")]
    pub fn poll_event(&mut self) -> Result<JsValue, JsValue> {
        match self.inner.poll_event() {
            Some(ev) => to_js(&ev),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// When to call [`PrecallClient::handle_timeout`] next, in the milliseconds of
    /// `nowMs`; `undefined` when no timer runs.
    #[wasm_bindgen(js_name = pollTimeout)]
    pub fn poll_timeout(&self) -> Option<f64> {
        self.inner.poll_timeout()
    }

    /// Calls an online contact terminal on the fast path. Returns the request tag
    /// that `call_ringing` or `call_failed` echoes. Throws `unknown_peer`.
    pub fn call(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "PrecallPeer")] peer: JsValue,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<u32, JsValue> {
        let peer = peer_from_js(peer)?;
        js(self.inner.call(&peer, now_ms))
    }

    /// Calls an online contact terminal on the fast path, the call carrying `media`
    /// (this page's SDP offer, candidates included: spec 10.8) to the callee, whose
    /// `incoming_call` has it as `media`. Returns the request tag. Throws
    /// `unknown_peer`, `invalid_value` (empty, over 16 KiB, or control characters).
    #[wasm_bindgen(js_name = callWithMedia)]
    pub fn call_with_media(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "PrecallPeer")] peer: JsValue,
        media: &str,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<u32, JsValue> {
        let peer = peer_from_js(peer)?;
        js(self.inner.call_with_media(&peer, media, now_ms))
    }

    /// Calls the way the patent's prior art does (capabilities exchanged during set-up),
    /// for comparison. Returns the request tag.
    #[wasm_bindgen(js_name = callPriorArt)]
    pub fn call_prior_art(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "PrecallPeer")] peer: JsValue,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<u32, JsValue> {
        let peer = peer_from_js(peer)?;
        js(self.inner.call_prior_art(&peer, now_ms))
    }

    /// Asks a contact terminal for its capabilities (the query-first baseline); the
    /// answer is a `caps_result` event. Returns the request tag.
    #[wasm_bindgen(js_name = queryCaps)]
    pub fn query_caps(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "PrecallPeer")] peer: JsValue,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<u32, JsValue> {
        let peer = peer_from_js(peer)?;
        js(self.inner.query_caps(&peer, now_ms))
    }

    /// Accepts an incoming call (`call` of `incoming_call`). Throws `unknown_call`.
    pub fn answer(
        &mut self,
        call: f64,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.answer(call, now_ms))
    }

    /// Accepts an incoming call carrying `media` (this page's SDP answer) back to the
    /// caller, whose `call_established` has it as `media`. Throws `unknown_call`,
    /// `invalid_value`.
    #[wasm_bindgen(js_name = acceptWithMedia)]
    pub fn accept_with_media(
        &mut self,
        call: f64,
        media: &str,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.accept_with_media(call, media, now_ms))
    }

    /// Rejects an incoming call. Throws `unknown_call`.
    pub fn reject(
        &mut self,
        call: f64,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.reject(call, now_ms))
    }

    /// Ends a call, ringing or established. Throws `unknown_call`.
    pub fn hangup(
        &mut self,
        call: f64,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<(), JsValue> {
        js(self.inner.hangup(call, now_ms))
    }

    /// This terminal's capabilities changed (the wire's capability JSON): every
    /// parameter is recomputed and the server told. Returns the request tag that
    /// `caps_acknowledged` echoes. Throws `invalid_value`, `call_setup_in_progress`.
    #[wasm_bindgen(js_name = updateCaps)]
    pub fn update_caps(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "PrecallCapabilities")] capabilities: JsValue,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<u32, JsValue> {
        let caps: Capabilities = from_js(capabilities, "invalid_value")?;
        js(self.inner.update_caps(caps, now_ms))
    }

    /// Adds a user to the contact list. Returns the request tag that
    /// `contacts_changed` echoes.
    #[wasm_bindgen(js_name = addContact)]
    pub fn add_contact(
        &mut self,
        user: &str,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<u32, JsValue> {
        js(self.inner.add_contact(user, now_ms))
    }

    /// Removes a user from the contact list. Returns the request tag.
    #[wasm_bindgen(js_name = removeContact)]
    pub fn remove_contact(
        &mut self,
        user: &str,
        #[wasm_bindgen(js_name = "nowMs")] now_ms: f64,
    ) -> Result<u32, JsValue> {
        js(self.inner.remove_contact(user, now_ms))
    }

    /// `idle`, `logging_in`, `online`, `logging_out`, `detached` or `resuming`.
    pub fn status(&self) -> String {
        self.inner.status().to_owned()
    }

    /// Whether the client is online and its table complete.
    #[wasm_bindgen(js_name = isSynced)]
    pub fn is_synced(&self) -> bool {
        self.inner.client().is_synced()
    }

    /// Whether a detached session could be resumed now.
    #[wasm_bindgen(js_name = canResume)]
    pub fn can_resume(&self) -> bool {
        self.inner.client().can_resume()
    }

    /// Whether a capability change is not yet acknowledged.
    #[wasm_bindgen(js_name = capsInFlight)]
    pub fn caps_in_flight(&self) -> bool {
        self.inner.client().caps_in_flight()
    }

    /// The logged-in user, or `undefined`.
    pub fn user(&self) -> Option<String> {
        self.inner.client().user().map(|u| u.as_str().to_owned())
    }

    /// This terminal's endpoint `{user, session}`, or `undefined`.
    #[wasm_bindgen(unchecked_return_type = "PrecallEndpoint | undefined")]
    pub fn endpoint(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.client().endpoint())
    }

    /// This terminal's current capabilities (wire JSON), or `undefined`.
    #[wasm_bindgen(unchecked_return_type = "PrecallCapabilities | undefined")]
    pub fn capabilities(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.client().capabilities())
    }

    /// The contact list (user names).
    pub fn contacts(&self) -> Vec<String> {
        let client = self.inner.client();
        client.contacts().map(|u| u.as_str().to_owned()).collect()
    }

    /// The table: `[{user, session, online: true, send, recv}, ..., {user, online: false}]`.
    #[wasm_bindgen(unchecked_return_type = "PrecallRow[]")]
    pub fn table(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.table())
    }

    /// One table entry `{user, session, capabilities, fingerprint, params}`, or
    /// `undefined` if `peer` is not an online contact terminal.
    #[wasm_bindgen(unchecked_return_type = "PrecallPeerEntry | undefined")]
    pub fn peer(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PrecallPeer")] peer: JsValue,
    ) -> Result<JsValue, JsValue> {
        let peer = peer_from_js(peer)?;
        to_js(&self.inner.peer(&peer))
    }

    /// The calls: `[{call, peer, role, state, params, path}]`.
    #[wasm_bindgen(unchecked_return_type = "PrecallCall[]")]
    pub fn calls(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.calls())
    }

    /// The `m=video` section of the SDP offer for a call to `peer` (`precall_sdp::offer`
    /// from this terminal's capabilities and the parameters in the table). Throws
    /// `unknown_peer`, `not_logged_in` or an SDP code.
    #[wasm_bindgen(js_name = sdpOffer)]
    pub fn sdp_offer(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PrecallPeer")] peer: JsValue,
    ) -> Result<String, JsValue> {
        let peer = peer_from_js(peer)?;
        js(self.inner.sdp_offer(&peer))
    }

    /// The `m=video` section of the SDP answer to a call from `peer`
    /// (`precall_sdp::answer` against the offer rebuilt from `peer`'s capabilities in
    /// the table).
    #[wasm_bindgen(js_name = sdpAnswer)]
    pub fn sdp_answer(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PrecallPeer")] peer: JsValue,
    ) -> Result<String, JsValue> {
        let peer = peer_from_js(peer)?;
        js(self.inner.sdp_answer(&peer))
    }

    /// `stackSdp` (the whole description `createOffer()`/`createAnswer()` wrote) with
    /// its video section replaced by the section `sdpOffer(peer)` (`kind` `"offer"`)
    /// or `sdpAnswer(peer)` (`"answer"`) returns (`precall_sdp::apply`).
    #[wasm_bindgen(js_name = applySdp)]
    pub fn apply_sdp(
        &self,
        #[wasm_bindgen(js_name = "stackSdp")] stack_sdp: &str,
        #[wasm_bindgen(unchecked_param_type = "PrecallPeer")] peer: JsValue,
        #[wasm_bindgen(unchecked_param_type = "\"offer\" | \"answer\"")] kind: &str,
    ) -> Result<String, JsValue> {
        let peer = peer_from_js(peer)?;
        let kind = js(SectionKind::parse(kind))?;
        js(self.inner.apply_sdp(stack_sdp, &peer, kind))
    }

    /// The settings of this terminal's video sender towards `peer` (`{mimeType,
    /// payloadType, clockRate, maxBitrate, maxFramerate, width, height,
    /// scaleResolutionDownBy, codecPreferences}`), or `undefined` when it sends no
    /// video.
    #[wasm_bindgen(
        js_name = encoderSettings,
        unchecked_return_type = "PrecallEncoderSettings | undefined"
    )]
    pub fn encoder_settings(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PrecallPeer")] peer: JsValue,
    ) -> Result<JsValue, JsValue> {
        let peer = peer_from_js(peer)?;
        to_js(&js(self.inner.encoder_settings(&peer))?)
    }
}
