// The browser half of e2e/tests/browser_sdp.rs: two RTCPeerConnections in one page,
// a caller `a` and a callee `b`, set up with the SDP and the encoder settings that
// precall-sdp exports, video from Chromium's fake camera, and getStats() read back.
//
// No protocol rule lives here: the Rust test computes every section, setting and
// limit with precall's own code and calls these functions step by step over the
// DevTools protocol; the page only does what a WebRTC app does with them. The
// offer and answer texts the browser writes go back to Rust, which puts precall's
// video section into them (`precall_sdp::apply`) before they are set.

const state = {};

// Which video codecs this browser can send and receive (mime types, lower case).
window.codecSupport = () => {
  const names = (caps) => [...new Set((caps?.codecs ?? []).map((c) => c.mimeType.toLowerCase()))];
  return { send: names(RTCRtpSender.getCapabilities("video")), recv: names(RTCRtpReceiver.getCapabilities("video")) };
};

function orderedCodecs(preferences) {
  // setCodecPreferences takes receiver codecs; keep the preferred ones first and the
  // rest (rtx, red, ulpfec) after, as the API requires them to come from this list.
  const all = RTCRtpReceiver.getCapabilities("video").codecs;
  const lower = preferences.map((m) => m.toLowerCase());
  const first = [];
  for (const m of lower) first.push(...all.filter((c) => c.mimeType.toLowerCase() === m));
  const rest = all.filter((c) => !lower.includes(c.mimeType.toLowerCase()));
  return first.concat(rest);
}

async function camera(cam) {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: false,
    video: { width: { exact: cam.width }, height: { exact: cam.height }, frameRate: { ideal: cam.fps } },
  });
  return stream.getVideoTracks()[0];
}

// Step 1. Creates both connections; each end that sends video gets a camera track of
// its camera's size. Returns the caller's createOffer() text.
//   spec = { caller: {sends, camera:{width,height,fps}, direction, preferences},
//            callee: {...} }
window.setupPair = async (spec) => {
  window.closePair();
  const a = new RTCPeerConnection();
  const b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate).catch(() => {});
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate).catch(() => {});
  state.a = a;
  state.b = b;
  state.spec = spec;
  state.tracks = [];
  const trackA = spec.caller.sends ? await camera(spec.caller.camera) : null;
  if (trackA) state.tracks.push(trackA);
  state.ta = a.addTransceiver(trackA ?? "video", { direction: spec.caller.direction });
  if (spec.caller.preferences.length) state.ta.setCodecPreferences(orderedCodecs(spec.caller.preferences));
  const offer = await a.createOffer();
  return offer.sdp;
};

// Step 2. Sets the offer (precall's section in it) on both ends; the callee attaches
// its camera and answers. Returns the callee's createAnswer() text.
window.applyOffer = async (sdp) => {
  const { a, b, spec } = state;
  await a.setLocalDescription({ type: "offer", sdp });
  await b.setRemoteDescription({ type: "offer", sdp });
  const tb = b.getTransceivers()[0];
  state.tb = tb;
  if (spec.callee.sends) {
    const track = await camera(spec.callee.camera);
    state.tracks.push(track);
    await tb.sender.replaceTrack(track);
  }
  tb.direction = spec.callee.direction;
  if (spec.callee.preferences.length) tb.setCodecPreferences(orderedCodecs(spec.callee.preferences));
  const answer = await b.createAnswer();
  return answer.sdp;
};

async function encoder(sender, settings) {
  if (!settings) return null;
  const p = sender.getParameters();
  if (!p.encodings || p.encodings.length === 0) p.encodings = [{}];
  const e = p.encodings[0];
  e.maxBitrate = settings.max_bitrate_bps;
  e.maxFramerate = settings.max_framerate;
  if (settings.scale_resolution_down_by) e.scaleResolutionDownBy = settings.scale_resolution_down_by;
  // The send codec (RTCRtpEncodingParameters.codec). Chromium sends the first format
  // of the peer's section anyway, which is this codec (measured without it as well).
  const codec = (p.codecs ?? []).find((c) => c.mimeType.toLowerCase() === settings.codec.toLowerCase());
  if (codec) e.codec = codec;
  // Measure the exported limits, not Chrome's own adaptation: keep the resolution
  // (drop frames instead) when CPU or bandwidth run short.
  p.degradationPreference = "maintain-resolution";
  await sender.setParameters(p);
  const got = sender.getParameters().encodings[0];
  return {
    maxBitrate: got.maxBitrate, maxFramerate: got.maxFramerate,
    scaleResolutionDownBy: got.scaleResolutionDownBy, codec: got.codec?.mimeType ?? null,
  };
}

async function connected(pc, ms) {
  const end = Date.now() + ms;
  while (pc.connectionState !== "connected") {
    if (pc.connectionState === "failed" || Date.now() > end) throw new Error(`connection ${pc.connectionState}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// The video stats of one connection: what it sends and what it receives.
async function videoStats(pc) {
  const report = await pc.getStats();
  const out = { outbound: null, inbound: null };
  const codecOf = (id) => {
    const c = id && report.get(id);
    return c ? { mimeType: c.mimeType, payloadType: c.payloadType, sdpFmtpLine: c.sdpFmtpLine ?? "" } : null;
  };
  report.forEach((s) => {
    if (s.kind !== "video") return;
    if (s.type === "outbound-rtp") {
      out.outbound = {
        bytesSent: s.bytesSent, headerBytesSent: s.headerBytesSent, framesEncoded: s.framesEncoded,
        frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, framesPerSecond: s.framesPerSecond ?? 0,
        qualityLimitationReason: s.qualityLimitationReason, qualityLimitationDurations: s.qualityLimitationDurations, encoderImplementation: s.encoderImplementation,
        codec: codecOf(s.codecId), timestamp: s.timestamp,
      };
    }
    if (s.type === "inbound-rtp") {
      out.inbound = {
        bytesReceived: s.bytesReceived, framesDecoded: s.framesDecoded,
        frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, framesPerSecond: s.framesPerSecond ?? 0,
        codec: codecOf(s.codecId), timestamp: s.timestamp,
      };
    }
  });
  return out;
}

// Step 3. Sets the answer (precall's section in it), applies each sender's encoder
// settings, waits for media, lets video flow for `warmupMs` then measures for
// `windowMs`. Returns, per end, the applied settings and the stats at the window's
// start and end (the Rust test computes rates from them).
window.applyAnswer = async (sdp, settingsA, settingsB, warmupMs, windowMs) => {
  const { a, b, ta, tb } = state;
  await b.setLocalDescription({ type: "answer", sdp });
  await a.setRemoteDescription({ type: "answer", sdp });
  const appliedA = await encoder(ta.sender, settingsA);
  const appliedB = await encoder(tb.sender, settingsB);
  await connected(a, 15000);
  await connected(b, 15000);
  await new Promise((r) => setTimeout(r, warmupMs));
  const startA = await videoStats(a);
  const startB = await videoStats(b);
  await new Promise((r) => setTimeout(r, windowMs));
  const endA = await videoStats(a);
  const endB = await videoStats(b);
  return {
    caller: { applied: appliedA, start: startA, end: endA, local: a.localDescription.sdp, remote: a.remoteDescription.sdp },
    callee: { applied: appliedB, start: startB, end: endB },
  };
};

window.closePair = () => {
  for (const t of state.tracks ?? []) t.stop();
  state.a?.close();
  state.b?.close();
  state.a = state.b = null;
  state.tracks = [];
};
