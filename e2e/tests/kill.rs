//! Terminals that die without logging out (spec sections 9.7, 11.6; claim C9): a client
//! process killed with SIGKILL, one frozen with SIGSTOP (its socket stays open but
//! silent), and a raw connection that goes quiet. The server runs with
//! `--idle-timeout-ms 1500` and `--resume-grace-ms 1500` (a killed process's socket
//! closes, which detaches its session for the resume grace, section 9.9; a frozen one
//! times out), the clients ping every 500 ms; the contact must be told within that
//! bound plus a margin, and its table must no longer hold the dead terminal.

use std::time::{Duration, Instant};

use precall_e2e::*;
use precall_protocol::{ErrorCode, LoginWith, ServerMessage};

const IDLE_MS: u64 = 1500;
/// The resume grace: as long as the idle bound, so one bound covers both ways to die.
const GRACE_MS: u64 = IDLE_MS;
const MARGIN_MS: u64 = 1500;

struct World {
    sb: Sandbox,
    server: ServerProc,
    alice: ClientProc,
}

fn world() -> Res<World> {
    let sb = Sandbox::with_cast()?;
    let server = sb.start_server(&[
        "--idle-timeout-ms",
        &IDLE_MS.to_string(),
        "--resume-grace-ms",
        &GRACE_MS.to_string(),
    ])?;
    let alice = sb.online_client(
        server.addr,
        "alice",
        &With::flags(&["--codecs", "h264,vp8"]),
        &["--ping-ms", "500"],
    )?;
    Ok(World { sb, server, alice })
}

impl World {
    fn bob(&mut self) -> Res<ClientProc> {
        let bob = self.sb.online_client(
            self.server.addr,
            "bob",
            &With::Terminal("bob-phone".into()),
            &["--ping-ms", "500"],
        )?;
        self.alice
            .wait_event_where("peer_online", |v| v["user"] == "bob")?;
        ensure!(
            online_row(&self.alice.table()?, "bob").is_some(),
            "bob in alice's table"
        );
        Ok(bob)
    }

    /// Waits for alice's `peer_offline` for bob; returns how long after `since` it came.
    fn offline_after(&mut self, since: Instant, session: Option<u64>) -> Res<Duration> {
        let bound = Duration::from_millis(IDLE_MS + MARGIN_MS);
        let (at, ev) = self.alice.wait_for_at(
            |v| v["event"] == "peer_offline" && v["user"] == "bob",
            bound + Duration::from_secs(2),
        )?;
        ensure!(ev["session"].as_u64() == session, "{ev}");
        let took = at.saturating_duration_since(since);
        ensure!(
            took <= bound,
            "peer_offline took {took:?}, over the idle bound plus margin ({bound:?})"
        );
        let t = self.alice.table()?;
        ensure!(
            online_row(&t, "bob").is_none(),
            "alice's table no longer holds bob: {t:?}"
        );
        Ok(took)
    }
}

#[test]
fn kill_sigkilled_client_is_reported_offline_within_the_idle_bound() -> Res<()> {
    let mut w = world()?;
    let mut bob = w.bob()?;
    let session = bob.session();
    let killed = Instant::now();
    bob.kill();
    let took = w.offline_after(killed, session)?;
    eprintln!(
        "SIGKILL of bob's client: alice told after {} ms",
        took.as_millis()
    );
    Ok(())
}

#[test]
fn kill_frozen_client_is_dropped_by_the_idle_timeout() -> Res<()> {
    let mut w = world()?;
    let mut bob = w.bob()?;
    let session = bob.session();
    // SIGSTOP: the process stops pinging but its socket stays open, so only the
    // server's idle timeout can notice.
    signal(bob.pid(), libc::SIGSTOP)?;
    let frozen = Instant::now();
    let result = w.offline_after(frozen, session);
    let _ = signal(bob.pid(), libc::SIGCONT);
    let took = result?;
    eprintln!(
        "SIGSTOP of bob's client: alice told after {} ms (idle timeout {IDLE_MS} ms)",
        took.as_millis()
    );
    // Bob's last frame reached the server at most one ping interval (500 ms) before
    // the freeze: an earlier notice would not be the idle timeout.
    ensure!(
        took >= Duration::from_millis(IDLE_MS - 600),
        "told after {took:?}: too early for the idle timeout"
    );
    // alice, who kept pinging, outlived several idle periods.
    ensure!(
        online_users(&w.alice.table()?).is_empty(),
        "alice still served"
    );
    // Bob's client learns its session is over once it runs again.
    bob.wait_event("logged_out")?;
    Ok(())
}

#[test]
fn kill_silent_raw_connection_gets_idle_timeout() -> Res<()> {
    let mut w = world()?;
    let mut raw = RawConn::connect(w.server.addr)?;
    let (ok, _) = raw.login(
        "bob",
        &password("bob"),
        LoginWith::Capabilities(phone_caps()),
    )?;
    let ServerMessage::LoginOk { session, .. } = ok else {
        bail!("{ok:?}")
    };
    let quiet_since = Instant::now();
    w.alice
        .wait_event_where("peer_online", |v| v["user"] == "bob")?;
    let m = raw.recv_until(
        |m| matches!(m, ServerMessage::Error { .. }),
        Duration::from_millis(IDLE_MS + MARGIN_MS),
    )?;
    let took = quiet_since.elapsed();
    ensure!(
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::IdleTimeout,
                ..
            }
        ),
        "{m:?}"
    );
    raw.expect_closed(TIMEOUT)?;
    ensure!(
        took >= Duration::from_millis(IDLE_MS - 100),
        "idle_timeout after {took:?}, before the configured {IDLE_MS} ms"
    );
    let took = w.offline_after(quiet_since, Some(session.0))?;
    eprintln!(
        "silent raw connection: idle_timeout frame, alice told after {} ms",
        took.as_millis()
    );
    Ok(())
}
