// precall in a web page: the client core compiled to WebAssembly (bindings/wasm), a
// WebSocket to precall-server (spec 3, WebSocket binding), and WebRTC set up with the
// SDP and encoder settings precall-sdp exports.
//
// No protocol rule lives here. The page owns what any embedder owns: the connection,
// the clock, the camera and the RTCPeerConnection. Everything the protocol decides
// (the table of contacts with their pre-computed parameters, calls, the SDP sections,
// the encoder settings) comes from the core through the facade.

import init, { PrecallClient } from "./pkg/precall_wasm.js";

const $ = (id) => document.getElementById(id);
const now = () => performance.now();

// What the tests read (e2e/tests/browser_call.rs): the facade, and the timings.
const state = {
  client: null,
  ws: null,
  timer: null,
  camera: null, // the local MediaStream, opened once at login
  calls: new Map(), // call id -> { pc, peer, role, t0, firstFrameMs, established }
  dialing: new Map(), // request tag -> { pc, peer, t0, transceiver }
  queries: new Map(), // request tag -> resolve
  incoming: null, // { call, from, params, media }
  timings: [], // { mode, ms } click to first decoded frame, per call placed here
  events: [], // every event, for the log and the tests
  lastError: null,
};
window.precall = state;

// ----- capabilities from this browser ---------------------------------------------------

const TOKENS = { "video/h264": "h264", "video/vp8": "vp8", "video/vp9": "vp9", "video/av1": "av1", "video/h265": "h265" };

function codecTokens(caps) {
  const out = [];
  for (const c of caps?.codecs ?? []) {
    const t = TOKENS[c.mimeType.toLowerCase()];
    if (t && !out.includes(t)) out.push(t);
  }
  return out;
}

// The terminal's capabilities as the wire describes them (spec 2.3), read from the
// browser: the codecs WebRTC can send and receive, the screen, the camera's largest
// mode, a CPU class from the core count and the link from the Network Information API
// when there is one.
async function browserCapabilities() {
  state.camera = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720, frameRate: 30 }, audio: false });
  const track = state.camera.getVideoTracks()[0];
  const tc = track.getCapabilities ? track.getCapabilities() : {};
  const s = track.getSettings();
  const camW = Math.min(tc.width?.max ?? s.width, 3840);
  const camH = Math.min(tc.height?.max ?? s.height, 2160);
  const fps = Math.min(Math.round(tc.frameRate?.max ?? s.frameRate ?? 30), 60);
  const dpr = window.devicePixelRatio || 1;
  const sw = Math.round(screen.width * dpr), sh = Math.round(screen.height * dpr);
  const cores = navigator.hardwareConcurrency || 2;
  const downKbps = Math.round(Math.min(Math.max((navigator.connection?.downlink ?? 8) * 1000, 500), 100000));
  return {
    encode: codecTokens(RTCRtpSender.getCapabilities("video")),
    decode: codecTokens(RTCRtpReceiver.getCapabilities("video")),
    screen: { width: Math.max(sw, sh), height: Math.min(sw, sh) },
    camera: { max: { width: Math.max(camW, camH), height: Math.min(camW, camH) }, max_fps: fps },
    cpu: cores >= 8 ? "high" : cores >= 4 ? "mid" : "low",
    bandwidth: { up_kbps: downKbps, down_kbps: downKbps },
  };
}

// ----- the core's loop: after every input, write, handle events, re-arm the timer -------

function drain() {
  const c = state.client;
  if (!c) return;
  for (let f; (f = c.pollTransmit()) !== undefined; ) {
    if (state.ws?.readyState === WebSocket.OPEN) state.ws.send(f);
  }
  for (let ev; (ev = c.pollEvent()) !== undefined; ) onEvent(ev);
  clearTimeout(state.timer);
  const t = c.pollTimeout();
  if (t !== undefined) {
    state.timer = setTimeout(() => { c.handleTimeout(now()); drain(); }, Math.max(0, t - now()));
  }
  render();
}

function connect(url) {
  const ws = new WebSocket(url, ["precall.v1"]);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { state.client.login(now()); drain(); };
  ws.onmessage = (m) => {
    try {
      state.client.receive(new Uint8Array(m.data), now());
    } catch (e) {
      log(`error ${e.code}: ${e.message}`);
      ws.close();
    }
    drain();
  };
  ws.onclose = () => {
    if (state.ws === ws) {
      state.client?.connectionClosed(now());
      drain();
    }
  };
  state.ws = ws;
}

// ----- events ----------------------------------------------------------------------------

function onEvent(ev) {
  state.events.push(ev);
  log(describe(ev));
  switch (ev.type) {
    case "call_ringing": {
      const d = state.dialing.get(ev.req);
      if (d) {
        state.dialing.delete(ev.req);
        // The same object the peer connection's handlers hold (they record the first frame).
        state.calls.set(ev.call, Object.assign(d, { role: "caller", established: false }));
      }
      break;
    }
    case "call_failed":
      closeDialing(ev.req);
      break;
    case "incoming_call":
      state.incoming = ev;
      break;
    case "call_established":
      established(ev);
      break;
    case "call_ended":
      endCall(ev.call);
      if (state.incoming?.call === ev.call) state.incoming = null;
      break;
    case "caps_result": {
      const resolve = state.queries.get(ev.req);
      state.queries.delete(ev.req);
      resolve?.();
      break;
    }
    case "server_error":
      state.lastError = ev;
      if (ev.req !== undefined && state.dialing.has(ev.req)) closeDialing(ev.req);
      break;
    case "logged_out":
      state.ws?.close();
      break;
  }
}

function describe(ev) {
  const p = (x) => (x ? `${x.user}/${x.session}` : "");
  switch (ev.type) {
    case "peer_online": return `${ev.user}/${ev.session} online: ${paramsText(ev.params)}`;
    case "peer_updated": return `${ev.user}/${ev.session} updated: ${paramsText(ev.params)}`;
    case "peer_offline": return `${ev.user}/${ev.session} offline: its parameters are deleted`;
    case "incoming_call": return `incoming call ${ev.call} from ${p(ev.from)}`;
    case "call_established": return `call ${ev.call} established, ${ev.path} path`;
    default: return ev.type + (ev.detail ? `: ${ev.detail}` : "");
  }
}

// ----- calls -----------------------------------------------------------------------------

async function gathered(pc) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const t = setTimeout(resolve, 3000);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
    });
  });
}

function newPeerConnection(entry) {
  const pc = new RTCPeerConnection();
  pc.ontrack = (e) => {
    const v = $("remote");
    v.srcObject = e.streams[0] ?? new MediaStream([e.track]);
    const mark = () => {
      if (entry.firstFrameMs === undefined) {
        entry.firstFrameMs = now() - entry.t0;
        if (entry.role === "caller") state.timings.push({ mode: entry.mode, ms: entry.firstFrameMs });
        render();
      }
    };
    if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(mark);
    else v.addEventListener("loadeddata", mark, { once: true });
  };
  return pc;
}

async function applyEncoder(sender, peer) {
  const enc = state.client.encoderSettings(peer);
  if (!enc) return null;
  const p = sender.getParameters();
  if (!p.encodings || p.encodings.length === 0) p.encodings = [{}];
  p.encodings[0].maxBitrate = enc.maxBitrate;
  p.encodings[0].maxFramerate = enc.maxFramerate;
  if (enc.scaleResolutionDownBy) p.encodings[0].scaleResolutionDownBy = enc.scaleResolutionDownBy;
  await sender.setParameters(p);
  return enc;
}

function preferCodecs(transceiver, peer) {
  const enc = state.client.encoderSettings(peer);
  if (!enc || !transceiver.setCodecPreferences) return;
  const all = RTCRtpReceiver.getCapabilities("video").codecs;
  const want = enc.codecPreferences.map((m) => m.toLowerCase());
  const first = want.flatMap((m) => all.filter((c) => c.mimeType.toLowerCase() === m));
  transceiver.setCodecPreferences(first.concat(all.filter((c) => !want.includes(c.mimeType.toLowerCase()))));
}

// Calls `peer` (a table row). mode "fast": the parameters from the table, the offer in
// the call request; mode "query": the query-first baseline, asking the terminal for its
// capabilities first (one more round trip), then the same call.
async function placeCall(peer, mode) {
  const entry = { peer, mode, role: "caller", t0: now() };
  if (mode === "query") {
    const req = state.client.queryCaps(peer, now());
    const answered = new Promise((resolve) => state.queries.set(req, resolve));
    drain();
    await answered;
  }
  const pc = newPeerConnection(entry);
  const track = state.camera.getVideoTracks()[0];
  const transceiver = pc.addTransceiver(track, { direction: "sendrecv", streams: [state.camera] });
  preferCodecs(transceiver, peer);
  const offer = await pc.createOffer();
  await pc.setLocalDescription({ type: "offer", sdp: state.client.applySdp(offer.sdp, peer, "offer") });
  await gathered(pc);
  Object.assign(entry, { pc, transceiver });
  const req = state.client.callWithMedia(peer, pc.localDescription.sdp, now());
  state.dialing.set(req, entry);
  $("local").srcObject = state.camera;
  drain();
  return req;
}

async function established(ev) {
  const c = state.calls.get(ev.call);
  if (!c) return;
  c.established = true;
  c.params = ev.params;
  c.path = ev.path;
  if (c.role === "caller") {
    await c.pc.setRemoteDescription({ type: "answer", sdp: ev.media });
    c.encoder = await applyEncoder(c.transceiver.sender, c.peer);
  }
  render();
}

async function answerCall() {
  const inc = state.incoming;
  if (!inc) return;
  state.incoming = null;
  const entry = { peer: inc.from, role: "callee", t0: now(), params: inc.params };
  const pc = newPeerConnection(entry);
  await pc.setRemoteDescription({ type: "offer", sdp: inc.media });
  const transceiver = pc.getTransceivers()[0];
  await transceiver.sender.replaceTrack(state.camera.getVideoTracks()[0]);
  transceiver.sender.setStreams?.(state.camera);
  transceiver.direction = "sendrecv";
  const answer = await pc.createAnswer();
  await pc.setLocalDescription({ type: "answer", sdp: state.client.applySdp(answer.sdp, inc.from, "answer") });
  await gathered(pc);
  Object.assign(entry, { pc, transceiver });
  state.calls.set(inc.call, entry);
  $("local").srcObject = state.camera;
  state.client.acceptWithMedia(inc.call, pc.localDescription.sdp, now());
  drain();
  entry.encoder = await applyEncoder(transceiver.sender, inc.from);
}

function rejectCall() {
  const inc = state.incoming;
  if (!inc) return;
  state.incoming = null;
  state.client.reject(inc.call, now());
  drain();
}

function endCall(call) {
  const c = state.calls.get(call);
  if (!c) return;
  c.pc?.close();
  state.calls.delete(call);
  $("remote").srcObject = null;
}

function closeDialing(req) {
  const d = state.dialing.get(req);
  d?.pc?.close();
  state.dialing.delete(req);
}

function hangup() {
  for (const call of [...state.calls.keys()]) {
    state.client.hangup(call, now());
    endCall(call);
  }
  drain();
}

// The video stats of the current call, for the page and the tests: what this end
// sends and receives (the shape e2e/browser/sdp_check.js gives, which the tests'
// checks read), the call's parameters and path, and click-to-first-frame.
state.callStats = async () => {
  const c = [...state.calls.values()].find((x) => x.established || x.role === "callee");
  if (!c) return null;
  const report = await c.pc.getStats();
  const out = { inbound: null, outbound: null, params: c.params ?? null, path: c.path ?? null,
    firstFrameMs: c.firstFrameMs ?? null, encoder: c.encoder ?? null };
  const codecOf = (id) => {
    const x = id && report.get(id);
    return x ? { mimeType: x.mimeType, payloadType: x.payloadType, sdpFmtpLine: x.sdpFmtpLine ?? "" } : null;
  };
  report.forEach((s) => {
    if (s.kind !== "video") return;
    const row = { frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, framesPerSecond: s.framesPerSecond ?? 0,
      codec: codecOf(s.codecId), timestamp: s.timestamp };
    if (s.type === "inbound-rtp") out.inbound = { ...row, bytesReceived: s.bytesReceived, framesDecoded: s.framesDecoded };
    if (s.type === "outbound-rtp") out.outbound = { ...row, bytesSent: s.bytesSent, framesEncoded: s.framesEncoded };
  });
  return out;
};

// ----- rendering -------------------------------------------------------------------------

// One direction of the parameters, as the table and the log show it.
function directionText(x) {
  if (!x) return "–";
  if (x.video) return `${x.video.codec} ${x.video.width}×${x.video.height}@${x.video.fps} ${x.video.bitrate_kbps} kbit/s`;
  return `no video (${x.off.replaceAll("_", " ")})`;
}

function paramsText(p) {
  return p ? `send ${directionText(p.send)} | recv ${directionText(p.recv)}` : "";
}

function render() {
  const c = state.client;
  const status = c ? c.status() : "idle";
  const me = c?.endpoint();
  $("status").textContent = me ? `${me.user}/${me.session} · ${status}` : status;
  $("login").hidden = status !== "idle";
  $("contacts").hidden = !c || status === "idle";
  const tbody = $("table");
  tbody.replaceChildren();
  for (const row of c && status !== "idle" ? c.table() : []) {
    const tr = document.createElement("tr");
    tr.dataset.user = row.user;
    tr.dataset.online = String(row.online);
    const td = (text, cls) => { const x = document.createElement("td"); x.textContent = text; if (cls) x.className = cls; tr.append(x); return x; };
    td(row.user);
    td(row.online ? `online (${row.session})` : "offline", row.online ? "online" : "offline");
    td(row.online ? directionText(row.send) : "");
    td(row.online ? directionText(row.recv) : "");
    const actions = td("");
    if (row.online) {
      const busy = state.calls.size > 0 || state.dialing.size > 0;
      const b = document.createElement("button");
      b.textContent = "Call";
      b.className = "call";
      b.disabled = busy;
      b.onclick = () => placeCall({ user: row.user, session: row.session }, "fast");
      const q = document.createElement("button");
      q.textContent = "Call after asking";
      q.className = "call-query secondary";
      q.title = "the query-first baseline: ask the terminal for its capabilities, then call";
      q.disabled = busy;
      q.onclick = () => placeCall({ user: row.user, session: row.session }, "query");
      actions.append(b, " ", q);
    }
    tbody.append(tr);
  }
  const inc = state.incoming;
  $("incoming").hidden = !inc;
  if (inc) $("incoming-text").textContent = `${inc.from.user}/${inc.from.session} calls: ${paramsText(inc.params)}`;
  const call = [...state.calls.values()][0];
  $("call").hidden = !call;
  if (call) {
    $("call-title").textContent = `Call with ${call.peer.user}/${call.peer.session}` + (call.path ? ` (${call.path} path)` : "");
    $("call-info").textContent = (call.params ? paramsText(call.params) : "ringing…") +
      (call.firstFrameMs !== undefined ? ` · first frame ${Math.round(call.firstFrameMs)} ms after ${call.role === "caller" ? "the click on Call" : "answering"}` : "");
  }
}

function log(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("log").append(li);
  li.scrollIntoView({ block: "nearest" });
}

// ----- start -----------------------------------------------------------------------------

async function login(e) {
  e.preventDefault();
  $("login-button").disabled = true;
  try {
    const user = $("user").value.trim();
    const password = $("password").value;
    const config = { user, password };
    if (document.querySelector('input[name="with"]:checked').value === "terminal") {
      config.terminalId = $("terminal").value.trim();
      state.camera = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720, frameRate: 30 }, audio: false });
    } else {
      config.capabilities = await browserCapabilities();
      $("caps").textContent = JSON.stringify(config.capabilities);
    }
    state.client = new PrecallClient(config);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    connect(`${scheme}://${location.host}/precall`);
  } catch (err) {
    log(`login failed: ${err.code ?? ""} ${err.message ?? err}`);
    $("login-button").disabled = false;
  }
}

await init();
$("login-form").addEventListener("submit", login);
$("answer").onclick = answerCall;
$("reject").onclick = rejectCall;
$("hangup").onclick = hangup;
$("logout").onclick = () => { state.client.logout(now()); drain(); };
state.ready = true;
render();
