// Loads what build.sh generated (the repository's web/pkg/, `wasm-bindgen --target web`) the way a page
// does, but in Node (initSync with the .wasm bytes instead of fetch), and checks the
// class works end to end as far as no server is needed: a login frame comes out with
// its length prefix, refusals throw PrecallErrors with a code. build.sh runs it.
import { readFileSync } from "node:fs";
import { PrecallClient, initSync } from "../../web/pkg/precall_wasm.js";

const wasm = readFileSync(new URL("../../web/pkg/precall_wasm_bg.wasm", import.meta.url));
initSync({ module: wasm });

const fail = (msg) => { console.error(`smoke test failed: ${msg}`); process.exit(1); };
const client = new PrecallClient({
  user: "alice", password: "secret",
  capabilities: { encode: ["h264"], decode: ["h264"], screen: { width: 1280, height: 720 },
                  camera: { max: { width: 1280, height: 720 }, max_fps: 30 }, cpu: "high",
                  bandwidth: { up_kbps: 4000, down_kbps: 8000 } },
});
if (client.status() !== "idle") fail(`status ${client.status()}`);
client.login(performance.now());
const frame = client.pollTransmit();
if (!(frame instanceof Uint8Array)) fail("pollTransmit did not return a Uint8Array");
const len = new DataView(frame.buffer, frame.byteOffset).getUint32(0);
const login = JSON.parse(new TextDecoder().decode(frame.subarray(4)));
if (len !== frame.length - 4 || login.type !== "login" || login.user !== "alice") fail(JSON.stringify(login));
if (client.pollTransmit() !== undefined || client.pollEvent() !== undefined) fail("more than the login");
try {
  client.sdpOffer("bob/2");
  fail("sdpOffer without a session did not throw");
} catch (e) {
  if (e.name !== "PrecallError" || e.code !== "unknown_peer") fail(`threw ${e.name} ${e.code}: ${e.message}`);
}
try {
  new PrecallClient({ user: "alice", password: "secret" });
  fail("a configuration without capabilities did not throw");
} catch (e) {
  if (e.code !== "invalid_config") fail(`threw ${e.code}: ${e.message}`);
}
client.free();
console.log("web/pkg loads and works: login frame of", frame.length, "bytes");
