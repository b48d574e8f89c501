//! # precall-wasm
//!
//! precall's client core in a web page: a thin `wasm-bindgen` facade over
//! [`precall_protocol::Client`], with `precall-sdp` compiled in. A page embeds the very
//! state machine the reference client, the load tool and the model checker run; this
//! crate only converts JavaScript values to the core's types and back and forwards
//! each call to the core method of the same name. **No protocol rule lives here** (nor
//! in the page): login, the table of online contacts with the call parameters
//! pre-computed for each (claim C1), calls, resumption and every check are the core's;
//! the SDP sections and encoder settings are `precall-sdp`'s.
//!
//! The core is sans-IO (see `precall_protocol`'s crate docs), so the page does what
//! any embedder does: it owns the connection and the clock. Time comes in as
//! milliseconds from any JavaScript clock that does not go backwards
//! (`performance.now()`), converted to the core's [`Time`](precall_protocol::Time);
//! nothing here reads a clock, so nothing calls `Instant::now()`, which panics on
//! `wasm32-unknown-unknown`.
//!
//! ## The JavaScript API
//!
//! `new PrecallClient(config)`, with `config` `{user, password, capabilities |
//! terminalId, pingIntervalMs?, maxFrame?}` ([`input::Config`]; `capabilities` is the
//! wire's capability JSON). Every `nowMs` is a number of milliseconds. Every method
//! throws a `PrecallError` (an `Error` with a snake_case `code`, [`Error`]) when the
//! core refuses.
//!
//! | method | returns | the core's |
//! |---|---|---|
//! | `login(nowMs)` | | [`Client::login`](precall_protocol::Client::login) with the configured credentials |
//! | `receive(bytes: Uint8Array, nowMs)` | throws `framing` / `unsupported_version`: close the connection | [`Client::receive`](precall_protocol::Client::receive) |
//! | `handleTimeout(nowMs)` | | [`Client::handle_timeout`](precall_protocol::Client::handle_timeout) |
//! | `connectionClosed(nowMs)` | | [`Client::connection_closed`](precall_protocol::Client::connection_closed) |
//! | `pollTransmit()` | `Uint8Array` (one whole frame, length prefix included) or `undefined` | [`Client::poll_transmit`](precall_protocol::Client::poll_transmit) |
//! | `pollEvent()` | `{type: "peer_online", user, session, params}`, ... ([`event`]) or `undefined` | [`Client::poll_event`](precall_protocol::Client::poll_event) |
//! | `pollTimeout()` | milliseconds or `undefined` | [`Client::poll_timeout`](precall_protocol::Client::poll_timeout) |
//! | `call(peer, nowMs)` | request tag | [`Client::place_call`](precall_protocol::Client::place_call) |
//! | `callWithMedia(peer, media, nowMs)` | request tag; the callee's `incoming_call` carries `media` (spec 10.8: the SDP offer) | [`Client::place_call_with_media`](precall_protocol::Client::place_call_with_media) |
//! | `callPriorArt(peer, nowMs)` | request tag | [`Client::place_call_exchanging_capabilities`](precall_protocol::Client::place_call_exchanging_capabilities) |
//! | `queryCaps(peer, nowMs)` | request tag | [`Client::query_caps`](precall_protocol::Client::query_caps) |
//! | `answer(call, nowMs)`, `reject(call, nowMs)` | | [`Client::answer`](precall_protocol::Client::answer) |
//! | `acceptWithMedia(call, media, nowMs)` | the caller's `call_established` carries `media` (the SDP answer) | [`Client::accept_with_media`](precall_protocol::Client::accept_with_media) |
//! | `hangup(call, nowMs)` | | [`Client::hangup`](precall_protocol::Client::hangup) |
//! | `updateCaps(capabilities, nowMs)` | request tag | [`Client::update_caps`](precall_protocol::Client::update_caps) |
//! | `addContact(user, nowMs)`, `removeContact(user, nowMs)` | request tag | [`Client::add_contact`](precall_protocol::Client::add_contact), [`Client::remove_contact`](precall_protocol::Client::remove_contact) |
//! | `logout(nowMs)` | | [`Client::logout`](precall_protocol::Client::logout) |
//! | `resume(nowMs)`, `abandon(nowMs)` | | [`Client::resume`](precall_protocol::Client::resume), [`Client::abandon`](precall_protocol::Client::abandon) |
//! | `status()` | `"idle"`, `"logging_in"`, `"online"`, `"logging_out"`, `"detached"`, `"resuming"` | [`Client::status`](precall_protocol::Client::status) |
//! | `isSynced()`, `canResume()`, `capsInFlight()` | boolean | the accessors of those names |
//! | `user()`, `endpoint()`, `capabilities()`, `contacts()` | this terminal's, or `undefined` | the accessors of those names |
//! | `table()` | `[{user, session, online: true, send, recv}, ..., {user, online: false}]` ([`view::Row`]) | [`Client::peers`](precall_protocol::Client::peers), [`Client::contacts`](precall_protocol::Client::contacts) |
//! | `peer(peer)` | `{user, session, capabilities, fingerprint, params}` or `undefined` | [`Client::peer`](precall_protocol::Client::peer) |
//! | `calls()` | `[{call, peer, role, state, params, path}]` | [`Client::calls`](precall_protocol::Client::calls) |
//! | `sdpOffer(peer)` | the offer's `m=video` section text | [`precall_sdp::offer()`] ([`sdp`]) |
//! | `sdpAnswer(peer)` | the answer's `m=video` section text | [`precall_sdp::answer`] ([`sdp`]) |
//! | `applySdp(stackSdp, peer, "offer" \| "answer")` | the stack's description with that section in it | [`precall_sdp::apply`] |
//! | `encoderSettings(peer)` | `{mimeType, payloadType, clockRate, maxBitrate, maxFramerate, width, height, scaleResolutionDownBy, codecPreferences}` or `undefined` | [`precall_sdp::encoder_settings`] |
//!
//! A `peer` is an endpoint object `{user, session}` (a `peer_online` event is one) or
//! the text `"user/session"`; `call` is the number of `incoming_call` or
//! `call_ringing`. `applySdp` names its section by peer and kind rather than taking the
//! text back, because `precall-sdp` builds sections and does not parse them: the
//! section it puts in is the one `sdpOffer`/`sdpAnswer` return for that peer, computed
//! from the table as it stands. The generated `precall_wasm.d.ts` types all of it
//! (`PrecallEvent`, `PrecallRow`, ...).
//!
//! ## In a page
//!
//! The server speaks length-prefixed frames over a byte stream; a browser reaches it
//! through whatever stream the deployment offers (a WebSocket relaying bytes, say).
//! The loop is the core's polling rule: after **every** input, write every frame,
//! handle every event, then re-arm the timer.
//!
//! ```js
//! import init, { PrecallClient } from "./pkg/precall_wasm.js";
//! await init();
//!
//! const client = new PrecallClient({
//!   user: "alice", password: "secret",
//!   capabilities: { encode: ["h264", "vp8"], decode: ["h264", "vp8"],
//!                   screen: { width: 1280, height: 720 },
//!                   camera: { max: { width: 1280, height: 720 }, max_fps: 30 },
//!                   cpu: "high", bandwidth: { up_kbps: 4000, down_kbps: 8000 } },
//! });
//! const ws = new WebSocket("wss://chat.example.org/precall");
//! ws.binaryType = "arraybuffer";
//! let timer;
//! const now = () => performance.now();
//! function drain() {
//!   for (let f; (f = client.pollTransmit()) !== undefined; ) ws.send(f);
//!   for (let ev; (ev = client.pollEvent()) !== undefined; ) {
//!     if (ev.type === "peer_online") console.log(`${ev.user}/${ev.session}`, ev.params);
//!     if (ev.type === "incoming_call") { client.answer(ev.call, now()); /* ev.sdp_answer */ }
//!   }
//!   clearTimeout(timer);
//!   const t = client.pollTimeout();
//!   if (t !== undefined) timer = setTimeout(() => { client.handleTimeout(now()); drain(); }, Math.max(0, t - now()));
//! }
//! ws.onopen = () => { client.login(now()); drain(); };
//! ws.onmessage = (m) => {
//!   try { client.receive(new Uint8Array(m.data), now()); }
//!   catch (e) { console.warn(e.code, e.message); ws.close(); }
//!   drain();
//! };
//! ws.onclose = () => { client.connectionClosed(now()); drain(); };
//!
//! // Later: call Bob's terminal with the parameters already in the table.
//! const bob = client.table().find((r) => r.online && r.user === "bob");
//! client.call(bob, now()); drain();
//! const pc = new RTCPeerConnection();
//! pc.addTransceiver("video");
//! const offer = await pc.createOffer();
//! await pc.setLocalDescription({ type: "offer", sdp: client.applySdp(offer.sdp, bob, "offer") });
//! const enc = client.encoderSettings(bob); // maxBitrate, maxFramerate, scaleResolutionDownBy ...
//! ```
//!
//! ## Build and test
//!
//! ```sh
//! bindings/wasm/build.sh   # wasm32 release build, then wasm-bindgen --target web into web/pkg/ (the page's)
//! bindings/wasm/test.sh    # the wasm-bindgen-test tests (tests/node.rs), in Node
//! cargo test -p precall-wasm   # the same scenarios (tests/facade.rs) and the conversions, on the host
//! ```
//!
//! Both scripts add the `wasm32-unknown-unknown` target if missing and install
//! `wasm-bindgen-cli` (which brings `wasm-bindgen-test-runner`) at exactly the
//! `wasm-bindgen` version of `Cargo.lock` with `cargo install --locked` if the
//! installed one is missing or differs; no wasm-pack, no prebuilt binaries. `build.sh`
//! prints the size of the `.wasm` and loads the generated module in Node
//! (`smoke.mjs`); the repository's `web/pkg/` holds generated files and is not
//! committed. `test.sh`
//! sets `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner` and runs
//! `cargo test -p precall-wasm --target wasm32-unknown-unknown`. The crate also builds
//! on the host (an `rlib`), so the workspace's clippy, rustdoc and tests cover it; its
//! `clippy.toml` forbids the clocks and threads that panic on `wasm32-unknown-unknown`.
//!
//! ## Modules
//!
//! - [`PrecallClient`] (`js`): the `wasm-bindgen` class, JavaScript values in and out;
//! - [`Facade`]: the same API with Rust types, which the host tests drive;
//! - [`input`]: the configuration, times, peers and call numbers from JavaScript;
//! - [`event`]: the core's events as plain objects; [`view`]: the table, the calls,
//!   the status; [`sdp`]: `precall-sdp` over the table;
//! - [`Error`]: the thrown error's codes.

#![warn(missing_docs)]

pub mod error;
pub mod event;
mod facade;
pub mod input;
mod js;
pub mod sdp;
pub mod view;

pub use error::Error;
pub use event::Event;
pub use facade::Facade;
pub use js::PrecallClient;
