//! The web client (`web/`, the core compiled to WebAssembly by `bindings/wasm`) in a
//! real browser against the real `precall-server` (issue 15): two headless Chromium
//! instances with fake cameras open the page the server serves (`--web-root web`),
//! log in as alice and bob over the WebSocket binding, see each other online with
//! the parameters `negotiate_pair` gives for their capabilities, and call: the offer
//! rides in the call request and the answer in the acceptance (spec 10.8), video is
//! decoded on both sides within the pre-computed parameters. Then bob's page closes
//! and alice sees him offline.
//!
//! Needs `web/pkg/` (`bindings/wasm/build.sh`; `scripts/test` runs it) and Chromium.
//! Screenshots of both pages during the call go to `target/browser-screenshots/`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use precall_e2e::browser::{write_grainy_y4m, Browser};
use precall_e2e::{bail, ensure, password, Error, Res, Sandbox, ServerProc};
use precall_protocol::{negotiate_pair, Capabilities, Direction};
use serde_json::{json, Value};

/// One browser pair at a time (video takes both cores).
static BROWSERS: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn web_root() -> Res<PathBuf> {
    let root = repo().join("web");
    ensure!(
        root.join("pkg/precall_wasm.js").is_file() && root.join("pkg/precall_wasm_bg.wasm").is_file(),
        "{} has no WebAssembly build of the client core: run bindings/wasm/build.sh \
         (scripts/test runs it before the tests)",
        root.join("pkg").display()
    );
    Ok(root)
}

/// A server with alice and bob as mutual contacts, its WebSocket port serving the page.
fn server() -> Res<(Sandbox, ServerProc)> {
    let sandbox = Sandbox::with_cast()?;
    let root = web_root()?;
    let root = root.to_string_lossy().into_owned();
    let server = sandbox.start_server(&["--ws-listen", "127.0.0.1:0", "--web-root", &root])?;
    Ok((sandbox, server))
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
            let log = page.browser.eval("[...document.querySelectorAll('#log li')].map(l => l.textContent).join('\\n')")?;
            bail!("{}: {what} did not happen in {timeout:?}; the page's log:\n{}", page.name, log.as_str().unwrap_or(""));
        }
        thread::sleep(Duration::from_millis(25));
    }
}

fn open(name: &'static str, server: &ServerProc, camera: &Path) -> Res<Page> {
    let ws = server.ws_addr.ok_or_else(|| Error("the server has no WebSocket port".into()))?;
    let browser = Browser::launch_with(&[format!("--use-file-for-fake-video-capture={}", camera.display())])?;
    let mut page = Page { name, browser };
    page.browser.goto(&format!("http://{ws}/"))?;
    wait_until(&mut page, "the page loading the core", "window.precall?.ready === true", Duration::from_secs(20))?;
    // Log in as a person would: fill the form, click.
    page.browser.eval(&format!(
        "document.getElementById('user').value = {}; document.getElementById('password').value = {}; \
         document.getElementById('login-button').click(); true",
        json!(name),
        json!(password(name))
    ))?;
    wait_until(&mut page, "login", "window.precall.client?.status() === 'online' && window.precall.client.isSynced()", Duration::from_secs(20))?;
    Ok(page)
}

fn caps_of(page: &mut Page) -> Res<Capabilities> {
    let v = page.browser.eval("window.precall.client.capabilities()")?;
    serde_json::from_value(v.clone()).map_err(|e| Error(format!("{}'s capabilities {v}: {e}", page.name)))
}

/// The page's table row for `user`, once it shows the user online.
fn online_row(page: &mut Page, user: &str) -> Res<Value> {
    wait_until(
        page,
        &format!("{user} online in the table"),
        &format!("window.precall.client.table().find(r => r.user === {} && r.online) ?? null", json!(user)),
        Duration::from_secs(10),
    )
}

fn direction_json(d: &Direction) -> Value {
    serde_json::to_value(d).expect("serialisable")
}

/// Clicks "Call" (or "Call after asking") for `callee` on `caller`'s page; the callee
/// answers by clicking "Answer"; returns once both decoded video.
fn call(caller: &mut Page, callee: &mut Page, query_first: bool) -> Res<()> {
    let button = if query_first { "button.call-query" } else { "button.call" };
    caller.browser.eval(&format!(
        "document.querySelector('tr[data-user=\"{}\"] {button}').click(); true",
        callee.name
    ))?;
    wait_until(callee, "the incoming call", "!document.getElementById('incoming').hidden", Duration::from_secs(10))?;
    callee.browser.eval("document.getElementById('answer').click(); true")?;
    for p in [&mut *caller, &mut *callee] {
        wait_until(p, "the first decoded frame", "(async () => (await window.precall.callStats())?.inbound?.framesDecoded > 0)()", Duration::from_secs(15))?;
    }
    Ok(())
}

fn hang_up(caller: &mut Page, callee: &mut Page) -> Res<()> {
    caller.browser.eval("document.getElementById('hangup').click(); true")?;
    for p in [caller, callee] {
        wait_until(p, "the call to end", "window.precall.calls.size === 0", Duration::from_secs(10))?;
    }
    Ok(())
}

/// The fake camera: a grainy 1280x720 picture, so the encoder has something to send.
fn camera() -> Res<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new().prefix("precall-camera-").tempdir()?;
    let file = dir.path().join("grain.y4m");
    write_grainy_y4m(&file, 1280, 720, 10, 12)?;
    Ok((dir, file))
}

fn screenshot_dir() -> Res<PathBuf> {
    let dir = repo().join("target/browser-screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn two_browsers_see_each_other_call_and_part() -> Res<()> {
    let _one = BROWSERS.lock().unwrap_or_else(|p| p.into_inner());
    let (_sandbox, server) = server()?;
    let (_cam_dir, cam) = camera()?;
    let mut alice = open("alice", &server, &cam)?;
    let mut bob = open("bob", &server, &cam)?;

    // Each sees the other online with the parameters negotiate_pair gives.
    let (ca, cb) = (caps_of(&mut alice)?, caps_of(&mut bob)?);
    let params = negotiate_pair(&ca, &cb);
    let row = online_row(&mut alice, "bob")?;
    ensure!(
        row["send"] == direction_json(&params.send) && row["recv"] == direction_json(&params.recv),
        "alice's row for bob {row} differs from negotiate_pair: {params:?}"
    );
    let row = online_row(&mut bob, "alice")?;
    let mirrored = params.mirrored();
    ensure!(
        row["send"] == direction_json(&mirrored.send) && row["recv"] == direction_json(&mirrored.recv),
        "bob's row for alice {row} differs from negotiate_pair: {mirrored:?}"
    );

    // A call on the fast path, video both ways within the parameters.
    call(&mut alice, &mut bob, false)?;
    thread::sleep(Duration::from_secs(3));
    for (page, own) in [(&mut alice, &params), (&mut bob, &mirrored)] {
        let s = page.browser.eval("window.precall.callStats()")?;
        ensure!(s["path"] == "fast" || page.name == "bob", "{}: the call took the {} path", page.name, s["path"]);
        let Direction::Video(recv) = &own.recv else {
            bail!("{} receives no video: {own:?}", page.name)
        };
        let inb = &s["inbound"];
        let want = format!("video/{}", recv.codec.as_str().to_uppercase());
        ensure!(
            inb["codec"].as_str().is_some_and(|c| c.eq_ignore_ascii_case(&want)),
            "{} decodes {}, negotiated {want}: {s}",
            page.name,
            inb["codec"]
        );
        let (w, h) = (inb["frameWidth"].as_u64().unwrap_or(0), inb["frameHeight"].as_u64().unwrap_or(0));
        ensure!(
            w > 0 && w <= u64::from(recv.width) && h <= u64::from(recv.height),
            "{} receives {w}x{h}, negotiated {}x{}",
            page.name,
            recv.width,
            recv.height
        );
        println!("{}: decoding {want} {w}x{h} (negotiated {}x{}@{} {} kbit/s)", page.name, recv.width, recv.height, recv.fps, recv.bitrate_kbps);
    }
    let shots = screenshot_dir()?;
    alice.browser.screenshot(&shots.join("alice-in-call.png"))?;
    bob.browser.screenshot(&shots.join("bob-in-call.png"))?;
    hang_up(&mut alice, &mut bob)?;

    // bob's page goes away: alice sees him offline, his parameters deleted.
    drop(bob);
    let t = Instant::now();
    wait_until(
        &mut alice,
        "bob offline",
        "window.precall.client.table().some(r => r.user === 'bob' && !r.online)",
        Duration::from_secs(65),
    )?;
    println!("bob's page closed: alice saw him offline after {:?}", t.elapsed());
    alice.browser.screenshot(&shots.join("alice-after-bob-left.png"))?;
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Call set-up in the browser, from the click on "Call" to the first decoded frame at
/// the caller: the fast path (the offer in the call request, the parameters from the
/// table) against the query-first baseline (the terminal's capabilities asked for
/// first, one more round trip). Alternated, `PRECALL_BROWSER_CALLS` (20) of each.
#[test]
fn call_setup_in_the_browser_fast_against_query_first() -> Res<()> {
    let _one = BROWSERS.lock().unwrap_or_else(|p| p.into_inner());
    let n: usize = std::env::var("PRECALL_BROWSER_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (_sandbox, server) = server()?;
    let (_cam_dir, cam) = camera()?;
    let mut alice = open("alice", &server, &cam)?;
    let mut bob = open("bob", &server, &cam)?;
    online_row(&mut alice, "bob")?;
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
    let (mut fast, mut query) = (of("fast"), of("query"));
    ensure!(
        fast.len() == n && query.len() == n,
        "every call should record its set-up time: {timings}"
    );
    let (mf, mq) = (median(&mut fast), median(&mut query));
    let p90 = |v: &[f64]| v[(v.len() * 9 / 10).min(v.len() - 1)];
    println!("click to first decoded frame at the caller, {n} calls each, alternated:");
    println!("  fast path    median {mf:.1} ms, p90 {:.1} ms", p90(&fast));
    println!("  query first  median {mq:.1} ms, p90 {:.1} ms", p90(&query));
    println!("  ratio query-first / fast (median): {:.2}", mq / mf);
    Ok(())
}
