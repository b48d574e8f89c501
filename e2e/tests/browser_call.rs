//! The web client (`web/`, the core compiled to WebAssembly by `bindings/wasm`) in a
//! real browser against the real `precall-server` (issue 15): two headless Chromium
//! instances with fake cameras open the page the server serves (`--web-root web`) and
//! log in over the WebSocket binding, alice with the capabilities her browser reports,
//! bob with a registered terminal (a low-bandwidth laptop, so the negotiated bit rate
//! binds). Each sees the other online with the parameters `negotiate_pair` gives. Alice
//! clicks "Call", bob clicks "Answer": the offer rides in the call request and the
//! answer in the acceptance (spec 10.8), video is decoded on both sides, and its codec,
//! size, frame rate and bit rate are within the pre-computed parameters
//! (`precall_e2e::video_check`). Then bob's page closes and alice sees him offline
//! within the resume grace the server was given.
//!
//! Seeded fault: a page that ignores the exported bit rate (the `b=` lines stripped
//! from its SDP, no `maxBitrate` on its sender) is caught by the same checks.
//!
//! Needs `web/pkg/` (`bindings/wasm/build.sh`; `scripts/test` runs it) and Chromium.
//! Screenshots of both pages during the call go to `target/browser-screenshots/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use precall_e2e::browser::{write_grainy_y4m, Browser};
use precall_e2e::video_check::{check_direction, Measured, Window};
use precall_e2e::{bail, ensure, password, Error, Relay, Res, Sandbox, ServerProc};
use precall_protocol::{negotiate_pair, CallParams, Capabilities, Direction};
use serde_json::{json, Value};

/// One browser pair at a time (video takes both cores).
static BROWSERS: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn web_root() -> Res<PathBuf> {
    let root = repo().join("web");
    ensure!(
        root.join("pkg/precall_wasm.js").is_file()
            && root.join("pkg/precall_wasm_bg.wasm").is_file(),
        "{} has no WebAssembly build of the client core: run bindings/wasm/build.sh \
         (scripts/test runs it before the tests)",
        root.join("pkg").display()
    );
    Ok(root)
}

/// How long a dropped session stays resumable (and online for its contacts) on the
/// test's server: the bound on how long alice may see bob online after his page closed.
const RESUME_GRACE: Duration = Duration::from_secs(3);

/// The registered terminal bob logs in with: a laptop on a slow link, so the
/// negotiated bit rates are well below what a browser sends of the grainy camera
/// unrestricted, and a page that ignored them would show.
const BOB_TERMINAL: &str = "bob-laptop";

fn bob_laptop() -> Capabilities {
    Capabilities::builder()
        .codecs(["vp9", "vp8"])
        .screen(1280, 720)
        .camera(1280, 720, 30)
        .bandwidth(500, 500)
        .build()
        .expect("valid capabilities")
}

/// A server with alice and bob as mutual contacts and bob's laptop registered, its
/// WebSocket port serving the page.
fn server() -> Res<(Sandbox, ServerProc)> {
    let sandbox = Sandbox::with_cast()?;
    sandbox.register_terminal(BOB_TERMINAL, "bob", &bob_laptop())?;
    let root = web_root()?;
    let root = root.to_string_lossy().into_owned();
    let grace = RESUME_GRACE.as_millis().to_string();
    let server = sandbox.start_server(&[
        "--ws-listen",
        "127.0.0.1:0",
        "--web-root",
        &root,
        "--resume-grace-ms",
        &grace,
    ])?;
    Ok((sandbox, server))
}

/// What a page logs in with.
#[derive(Clone, Copy)]
enum LoginWith {
    /// The capabilities the browser reports.
    Browser,
    /// A registered terminal's identifier.
    Terminal(&'static str),
}

/// One user's page: its own Chromium, the page loaded from the server.
struct Page {
    name: &'static str,
    browser: Browser,
}

fn wait_until(page: &mut Page, what: &str, expr: &str, timeout: Duration) -> Res<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = page.browser.eval(expr)?;
        if !(v.is_null() || v == json!(false)) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            let log = page.browser.eval(
                "[...document.querySelectorAll('#log li')].map(l => l.textContent).join('\\n')",
            )?;
            bail!(
                "{}: {what} did not happen in {timeout:?}; the page's log:\n{}",
                page.name,
                log.as_str().unwrap_or("")
            );
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// The server's WebSocket (and page) address.
fn ws_addr(server: &ServerProc) -> Res<SocketAddr> {
    server
        .ws_addr
        .ok_or_else(|| Error("the server has no WebSocket port".into()))
}

/// Opens the page at `ws` (the server's WebSocket port, or a relay in front of it) in a
/// new Chromium and logs in as `name`.
fn open(name: &'static str, with: LoginWith, ws: SocketAddr, camera: &Path) -> Res<Page> {
    let browser = Browser::launch_with(&[format!(
        "--use-file-for-fake-video-capture={}",
        camera.display()
    )])?;
    let mut page = Page { name, browser };
    page.browser.goto(&format!("http://{ws}/"))?;
    wait_until(
        &mut page,
        "the page loading the core",
        "window.precall?.ready === true",
        Duration::from_secs(20),
    )?;
    // Log in as a person would: fill the form, click.
    let terminal = match with {
        LoginWith::Browser => String::new(),
        LoginWith::Terminal(id) => format!(
            "document.querySelector('input[name=with][value=terminal]').checked = true; \
             document.getElementById('terminal').value = {};",
            json!(id)
        ),
    };
    page.browser.eval(&format!(
        "document.getElementById('user').value = {}; document.getElementById('password').value = {}; \
         {terminal} document.getElementById('login-button').click(); true",
        json!(name),
        json!(password(name))
    ))?;
    wait_until(
        &mut page,
        "login",
        "window.precall.client?.status() === 'online' && window.precall.client.isSynced()",
        Duration::from_secs(20),
    )?;
    Ok(page)
}

fn caps_of(page: &mut Page) -> Res<Capabilities> {
    let v = page.browser.eval("window.precall.client.capabilities()")?;
    serde_json::from_value(v.clone())
        .map_err(|e| Error(format!("{}'s capabilities {v}: {e}", page.name)))
}

/// The page's table row for `user`, once it shows the user online.
fn online_row(page: &mut Page, user: &str) -> Res<Value> {
    wait_until(
        page,
        &format!("{user} online in the table"),
        &format!(
            "window.precall.client.table().find(r => r.user === {} && r.online) ?? null",
            json!(user)
        ),
        Duration::from_secs(10),
    )
}

fn direction_json(d: &Direction) -> Value {
    serde_json::to_value(d).expect("serialisable")
}

/// Clicks "Call" (or "Call after asking") for `callee` on `caller`'s page; the callee
/// answers by clicking "Answer"; returns once both decoded video.
fn call(caller: &mut Page, callee: &mut Page, query_first: bool) -> Res<()> {
    let button = if query_first {
        "button.call-query"
    } else {
        "button.call"
    };
    caller.browser.eval(&format!(
        "document.querySelector('tr[data-user=\"{}\"] {button}').click(); true",
        callee.name
    ))?;
    wait_until(
        callee,
        "the incoming call",
        "!document.getElementById('incoming').hidden",
        Duration::from_secs(10),
    )?;
    callee
        .browser
        .eval("document.getElementById('answer').click(); true")?;
    for p in [&mut *caller, &mut *callee] {
        wait_until(
            p,
            "the first decoded frame",
            "(async () => (await window.precall.callStats())?.inbound?.framesDecoded > 0)()",
            Duration::from_secs(15),
        )?;
    }
    Ok(())
}

fn hang_up(caller: &mut Page, callee: &mut Page) -> Res<()> {
    caller
        .browser
        .eval("document.getElementById('hangup').click(); true")?;
    for p in [caller, callee] {
        wait_until(
            p,
            "the call to end",
            "window.precall.calls.size === 0",
            Duration::from_secs(10),
        )?;
    }
    Ok(())
}

/// The fake camera: a grainy 1280x720 picture, so the encoder has something to send.
fn camera() -> Res<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("precall-camera-")
        .tempdir()?;
    let file = dir.path().join("grain.y4m");
    write_grainy_y4m(&file, 1280, 720, 10, 12)?;
    Ok((dir, file))
}

fn screenshot_dir() -> Res<PathBuf> {
    let dir = repo().join("target/browser-screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Video flows this long after both ends decoded a first frame before the measuring
/// window opens (bandwidth estimate ramp-up, encoder start).
const WARMUP: Duration = Duration::from_secs(3);
/// The measuring window for rates.
const WINDOW: Duration = Duration::from_secs(4);

/// The stats of the current call on each page at the start and the end of a window.
fn measure(alice: &mut Page, bob: &mut Page) -> Res<[Value; 4]> {
    thread::sleep(WARMUP);
    let (a0, b0) = (
        alice.browser.eval("window.precall.callStats()")?,
        bob.browser.eval("window.precall.callStats()")?,
    );
    thread::sleep(WINDOW);
    let (a1, b1) = (
        alice.browser.eval("window.precall.callStats()")?,
        bob.browser.eval("window.precall.callStats()")?,
    );
    Ok([a0, a1, b0, b1])
}

/// Both directions of the call checked against alice's parameters (`params`, from her
/// end): what was measured, and every violation.
fn check_call(params: &CallParams, stats: &[Value; 4]) -> (Vec<Measured>, Vec<String>) {
    let [a0, a1, b0, b1] = stats;
    let alice = Window { start: a0, end: a1 };
    let bob = Window { start: b0, end: b1 };
    let mut violations = Vec::new();
    let mut measured = Vec::new();
    measured.extend(check_direction(
        "alice -> bob",
        &params.send,
        None,
        alice,
        bob,
        &mut violations,
    ));
    measured.extend(check_direction(
        "bob -> alice",
        &params.recv,
        None,
        bob,
        alice,
        &mut violations,
    ));
    if a1["path"] != "fast" {
        violations.push(format!("the call took the {} path at alice", a1["path"]));
    }
    (measured, violations)
}

/// The seeded fault: the page ignores the bit rate precall exported. Its `applySdp`
/// loses the sections' `b=` lines and its `encoderSettings` the `maxBitrate`, so
/// neither the remote description nor the sender's parameters limit the encoder.
const IGNORE_BIT_RATE: &str = "(() => { const c = window.precall.client; \
    const apply = c.applySdp.bind(c), enc = c.encoderSettings.bind(c); \
    c.applySdp = (sdp, peer, kind) => apply(sdp, peer, kind).replace(/^b=.*\\r\\n/gm, ''); \
    c.encoderSettings = (peer) => { const e = enc(peer); if (e) delete e.maxBitrate; return e; }; \
    return true; })()";

/// Alice (her browser's capabilities) and bob (his registered laptop) online, each
/// with the other in the table as `negotiate_pair` computes it. Returns the pages and
/// alice's parameters towards bob.
fn both_online(ws: SocketAddr, camera: &Path) -> Res<(Page, Page, CallParams)> {
    let mut alice = open("alice", LoginWith::Browser, ws, camera)?;
    let mut bob = open("bob", LoginWith::Terminal(BOB_TERMINAL), ws, camera)?;
    let (ca, cb) = (caps_of(&mut alice)?, caps_of(&mut bob)?);
    ensure!(
        cb == bob_laptop(),
        "bob's page holds {cb:?}, not his registered laptop's capabilities"
    );
    let params = negotiate_pair(&ca, &cb);
    let row = online_row(&mut alice, "bob")?;
    ensure!(
        row["send"] == direction_json(&params.send) && row["recv"] == direction_json(&params.recv),
        "alice's row for bob {row} differs from negotiate_pair: {params:?}"
    );
    let row = online_row(&mut bob, "alice")?;
    let mirrored = params.mirrored();
    ensure!(
        row["send"] == direction_json(&mirrored.send)
            && row["recv"] == direction_json(&mirrored.recv),
        "bob's row for alice {row} differs from negotiate_pair: {mirrored:?}"
    );
    Ok((alice, bob, params))
}

fn print_measured(measured: &[Measured]) {
    for m in measured {
        println!(
            "{}: negotiated {}; measured {} {}x{}@{:.0} {:.0} kbit/s",
            m.dir, m.negotiated, m.codec, m.width, m.height, m.fps, m.kbps
        );
    }
}

#[test]
fn two_browsers_see_each_other_call_within_the_parameters_and_part() -> Res<()> {
    let _one = BROWSERS.lock().unwrap_or_else(|p| p.into_inner());
    let (_sandbox, server) = server()?;
    let (_cam_dir, cam) = camera()?;
    let (mut alice, mut bob, params) = both_online(ws_addr(&server)?, &cam)?;
    let shots = screenshot_dir()?;
    alice
        .browser
        .screenshot(&shots.join("alice-contacts.png"))?;

    // A call on the fast path, video both ways within the parameters.
    call(&mut alice, &mut bob, false)?;
    let stats = measure(&mut alice, &mut bob)?;
    let (measured, violations) = check_call(&params, &stats);
    print_measured(&measured);
    ensure!(
        violations.is_empty(),
        "the call broke its parameters:\n  {}",
        violations.join("\n  ")
    );
    ensure!(
        measured.len() == 2,
        "video both ways was negotiated: {params:?}"
    );
    alice.browser.screenshot(&shots.join("alice-in-call.png"))?;
    bob.browser.screenshot(&shots.join("bob-in-call.png"))?;
    hang_up(&mut alice, &mut bob)?;

    // bob's page goes away: alice sees him offline, his parameters deleted, once the
    // server's resume grace has passed.
    let took = closes_and_goes_offline(bob, &mut alice)?;
    println!(
        "bob's page closed: alice saw him offline after {took:?} (resume grace {RESUME_GRACE:?})"
    );
    alice
        .browser
        .screenshot(&shots.join("alice-after-bob-left.png"))?;
    Ok(())
}

/// Closes `leaving`'s browser and waits until `watcher`'s page shows that user offline:
/// no online row left, an offline row, and the `peer_offline` event handled. Fails if
/// that takes longer than the server's resume grace (plus 2 s for the close to reach
/// the server and the page to poll). Returns how long it took.
fn closes_and_goes_offline(leaving: Page, watcher: &mut Page) -> Res<Duration> {
    let user = json!(leaving.name);
    drop(leaving);
    let t = Instant::now();
    wait_until(
        watcher,
        "the contact offline",
        &format!(
            "window.precall.client.table().some(r => r.user === {user} && !r.online) && \
             !window.precall.client.table().some(r => r.user === {user} && r.online) && \
             window.precall.events.some(e => e.type === 'peer_offline' && e.user === {user})"
        ),
        RESUME_GRACE + Duration::from_secs(2),
    )?;
    Ok(t.elapsed())
}

/// The seeded fault of the facade: a page whose `pollEvent` loses `peer_offline` (as a
/// facade with a missing arm in its event mapping would) is caught by the offline check
/// above.
#[test]
fn a_facade_that_drops_offline_events_is_caught() -> Res<()> {
    let _one = BROWSERS.lock().unwrap_or_else(|p| p.into_inner());
    let (_sandbox, server) = server()?;
    let (_cam_dir, cam) = camera()?;
    let (mut alice, bob, _) = both_online(ws_addr(&server)?, &cam)?;
    alice.browser.eval(
        "(() => { const c = window.precall.client, poll = c.pollEvent.bind(c); \
         c.pollEvent = () => { let e; do { e = poll(); } while (e && e.type === 'peer_offline'); return e; }; \
         return true; })()",
    )?;
    match closes_and_goes_offline(bob, &mut alice) {
        Ok(took) => bail!("a page that never handled peer_offline passed the check after {took:?}"),
        Err(e) if e.to_string().contains("the contact offline did not happen") => {
            println!("caught: {e}");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The checks above catch a page that ignores the exported bit rate.
#[test]
fn a_page_that_ignores_the_exported_bit_rate_is_caught() -> Res<()> {
    let _one = BROWSERS.lock().unwrap_or_else(|p| p.into_inner());
    let (_sandbox, server) = server()?;
    let (_cam_dir, cam) = camera()?;
    let (mut alice, mut bob, params) = both_online(ws_addr(&server)?, &cam)?;
    for page in [&mut alice, &mut bob] {
        page.browser.eval(IGNORE_BIT_RATE)?;
    }
    call(&mut alice, &mut bob, false)?;
    let stats = measure(&mut alice, &mut bob)?;
    let (measured, violations) = check_call(&params, &stats);
    print_measured(&measured);
    ensure!(
        violations.iter().any(|v| v.contains("kbit/s over")),
        "a page ignoring the bit rate went unnoticed: {violations:?}"
    );
    println!("caught: {violations:?}");
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Click-to-first-frame times at the caller, `n` calls of each mode alternated, the
/// pages reaching the server through a relay that adds `rtt` of round-trip time.
/// Returns (fast, query-first) in milliseconds.
fn setup_times(
    server: &ServerProc,
    cam: &Path,
    n: usize,
    rtt: Duration,
) -> Res<(Vec<f64>, Vec<f64>)> {
    let relay = Relay::start_delayed(ws_addr(server)?, rtt / 2)?;
    let (mut alice, mut bob, _) = both_online(relay.addr, cam)?;
    // One call first, not counted: the first call of a page warms its codecs up.
    call(&mut alice, &mut bob, false)?;
    hang_up(&mut alice, &mut bob)?;
    alice
        .browser
        .eval("window.precall.timings.length = 0; true")?;
    for i in 0..2 * n {
        call(&mut alice, &mut bob, i % 2 == 1)?;
        hang_up(&mut alice, &mut bob)?;
    }
    let timings = alice.browser.eval("window.precall.timings")?;
    let of = |mode: &str| -> Vec<f64> {
        timings
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["mode"] == mode)
            .filter_map(|t| t["ms"].as_f64())
            .collect()
    };
    let (fast, query) = (of("fast"), of("query"));
    ensure!(
        fast.len() == n && query.len() == n,
        "every call should record its set-up time: {timings}"
    );
    Ok((fast, query))
}

/// Call set-up in the browser, from the click on "Call" to the first decoded frame at
/// the caller: the fast path (the offer in the call request, the parameters from the
/// table) against the query-first baseline (the terminal's capabilities asked for
/// first: one more round trip to the server). Alternated, `PRECALL_BROWSER_CALLS` (20)
/// of each, with the server on loopback and then 100 ms of round trip away (a delaying
/// relay; the video itself flows between the browsers on loopback either way). A
/// benchmark, not a check (BENCHMARKS.md):
/// `cargo test -p precall-e2e --test browser_call -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run it by name with --ignored"]
fn call_setup_in_the_browser_fast_against_query_first() -> Res<()> {
    let _one = BROWSERS.lock().unwrap_or_else(|p| p.into_inner());
    let n: usize = std::env::var("PRECALL_BROWSER_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (_sandbox, server) = server()?;
    let (_cam_dir, cam) = camera()?;
    let p90 = |v: &[f64]| v[(v.len() * 9 / 10).min(v.len() - 1)];
    println!("click on Call to first decoded frame at the caller, {n} calls each, alternated:");
    for rtt_ms in [0, 100] {
        let (mut fast, mut query) = setup_times(&server, &cam, n, Duration::from_millis(rtt_ms))?;
        let (mf, mq) = (median(&mut fast), median(&mut query));
        println!("  server RTT {rtt_ms:>3} ms (added by the relay):");
        println!(
            "    fast path    median {mf:6.1} ms, p90 {:6.1} ms",
            p90(&fast)
        );
        println!(
            "    query first  median {mq:6.1} ms, p90 {:6.1} ms",
            p90(&query)
        );
        println!(
            "    query-first minus fast (medians) {:.1} ms, ratio {:.2}",
            mq - mf,
            mq / mf
        );
    }
    Ok(())
}
