//! Several server nodes (spec section "Clustering"; issue 17), as real processes on
//! loopback: a three-server NATS JetStream cluster (`e2e::nats`), one PostgreSQL
//! database shared by the nodes (`PgDb`, on the server `PRECALL_TEST_PG` names), and
//! three `precall-server serve --nats ... --node-id N` nodes. Users are spread over
//! the nodes; every table is checked against who may see whom; a call between nodes
//! takes the fast path; a node killed with
//! SIGKILL has its terminals go offline for the other nodes' watchers within the lease
//! bound, and its users log in again on another node; a NATS server killed with
//! SIGKILL does not stop the service. The seeded fault: a cluster whose leases outlive
//! the bound (a crashed node nobody cleans up in time) fails the crash check.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use precall_e2e::nats::NatsCluster;
use precall_e2e::*;

/// The nodes' lease: a crashed node's terminals go offline within this plus two
/// renewal periods (a third of it each: the survivors call a lease stale after the
/// TTL and one period without a renewal, and look once a period), plus the
/// registry's propagation.
const LEASE_MS: u64 = 1500;
const MARGIN_MS: u64 = 1500;

struct Cluster {
    sb: Sandbox,
    _db: PgDb,
    nats: NatsCluster,
    nodes: Vec<ServerProc>,
}

impl Cluster {
    /// Three NATS servers, three nodes with leases of `lease_ms`, the usual cast
    /// (alice↔bob, alice↔carol; bob and carol do not see each other).
    fn start(lease_ms: u64) -> Res<Self> {
        let db = PgDb::create()?;
        let mut sb = Sandbox::new()?;
        sb.db = db.url.clone().into();
        sb.add_cast()?;
        let nats = NatsCluster::start(sb.path(), 3)?;
        let mut c = Cluster {
            sb,
            _db: db,
            nats,
            nodes: Vec::new(),
        };
        for id in 1..=3 {
            let node = c.start_node(id, lease_ms)?;
            c.nodes.push(node);
        }
        Ok(c)
    }

    fn start_node(&self, id: u16, lease_ms: u64) -> Res<ServerProc> {
        self.sb.start_server(&[
            "--nats",
            &self.nats.urls_arg(),
            "--node-id",
            &id.to_string(),
            "--lease-ttl-ms",
            &lease_ms.to_string(),
            "--resume-grace-ms",
            "500",
            "--admin-poll-ms",
            "100",
        ])
    }

    fn addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].addr
    }

    fn client(&self, node: usize, user: &str) -> Res<ClientProc> {
        let with = if user == "bob" {
            With::Terminal("bob-phone".into())
        } else {
            With::CapsFile(self.sb.write_caps(&format!("{user}.json"), &desk())?)
        };
        self.sb
            .online_client(self.addr(node), user, &with, &["--ping-ms", "300"])
    }
}

/// Alice's and carol's terminal.
fn desk() -> precall_protocol::Capabilities {
    caps(&["h264", "vp8"], 1280, 30)
}

/// Waits until `c`'s table has exactly these users online, each with the given
/// session.
fn table_is(c: &mut ClientProc, want: &[(&str, Option<u64>)], within: Duration) -> Res<()> {
    let end = Instant::now() + within;
    loop {
        let t = c.table()?;
        let mut online: Vec<(String, Option<u64>)> = t
            .iter()
            .filter(|r| is_online_row(r))
            .map(|r| {
                (
                    r["user"].as_str().unwrap_or_default().to_owned(),
                    r["session"].as_u64(),
                )
            })
            .collect();
        online.sort();
        let mut w: Vec<(String, Option<u64>)> =
            want.iter().map(|(u, s)| ((*u).to_owned(), *s)).collect();
        w.sort();
        if online == w {
            return Ok(());
        }
        if Instant::now() > end {
            bail!(
                "{}'s table: online {online:?}, want {w:?}",
                c.history().len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A call from `caller` to `callee` (on another node), answered and hung up; returns
/// the caller's `call_established`, which must be on the fast path at both ends with
/// mirrored parameters.
fn call_across(caller: &mut ClientProc, callee: &mut ClientProc) -> Res<serde_json::Value> {
    caller.send(serde_json::json!({"cmd": "call", "to": callee.name}))?;
    let ring = caller.wait_for(
        |v| v["event"] == "call_ringing" || v["event"] == "call_failed" || v["event"] == "error",
        TIMEOUT,
    )?;
    ensure!(ring["event"] == "call_ringing", "could not call: {ring}");
    let id = ring["call"].clone();
    callee.wait_event_where("incoming_call", |v| v["call"] == id)?;
    callee.send(serde_json::json!({"cmd": "answer", "call": id}))?;
    let est = caller.wait_event_where("call_established", |v| v["call"] == id)?;
    let est_callee = callee.wait_event_where("call_established", |v| v["call"] == id)?;
    ensure!(
        est["path"] == "fast" && est_callee["path"] == "fast",
        "fast path at both ends: {est} / {est_callee}"
    );
    let (p, q) = (params_of(&est), params_of(&est_callee));
    ensure!(
        p["send"] == q["recv"] && p["recv"] == q["send"],
        "the two ends agree: {p} / {q}"
    );
    caller.send(serde_json::json!({"cmd": "hangup", "call": id}))?;
    callee.wait_event_where("call_ended", |v| v["call"] == id)?;
    Ok(est)
}

/// The crash of node 2 (bob's): returns how long alice, on node 1, took to see bob
/// offline, or an error if she still sees him after the bound.
fn crash_bobs_node(c: &mut Cluster, alice: &mut ClientProc) -> Res<Duration> {
    let killed = Instant::now();
    c.nodes[1].kill();
    let bound = Duration::from_millis(LEASE_MS + LEASE_MS * 2 / 3 + MARGIN_MS);
    let (at, _) = alice.wait_for_at(
        |v| v["event"] == "peer_offline" && v["user"] == "bob",
        bound,
    )?;
    let took = at.saturating_duration_since(killed);
    ensure!(took <= bound, "bob offline after {took:?}, over {bound:?}");
    ensure!(
        online_row(&alice.table()?, "bob").is_none(),
        "alice still lists bob"
    );
    Ok(took)
}

#[test]
fn three_nodes_share_presence_survive_a_node_crash_and_a_nats_crash() -> Res<()> {
    ensure_binaries()?;
    let mut c = Cluster::start(LEASE_MS)?;
    let mut alice = c.client(0, "alice")?;
    let mut bob = c.client(1, "bob")?;
    let mut carol = c.client(2, "carol")?;
    let (a, b, k) = (alice.session(), bob.session(), carol.session());
    ensure!(
        a != b && b != k && a != k,
        "sessions unique across nodes: {a:?} {b:?} {k:?}"
    );
    let t = Duration::from_secs(5);
    // Every table: alice sees bob and carol; bob and carol see only alice.
    table_is(&mut alice, &[("bob", b), ("carol", k)], t)?;
    table_is(&mut bob, &[("alice", a)], t)?;
    table_is(&mut carol, &[("alice", a)], t)?;
    // The parameters each holds for a contact on another node are `negotiate_pair`'s
    // for the two terminals (bob's registered capabilities crossed the registry).
    let row = online_row(&alice.table()?, "bob")
        .cloned()
        .unwrap_or_default();
    let want = params_json(&desk(), &phone_caps());
    ensure!(
        params_of(&row) == want,
        "alice's row for bob {row}, want {want}"
    );
    let row = online_row(&bob.table()?, "alice")
        .cloned()
        .unwrap_or_default();
    let want = params_json(&phone_caps(), &desk());
    ensure!(
        params_of(&row) == want,
        "bob's row for alice {row}, want {want}"
    );

    // A call across nodes (alice on node 1 -> bob on node 2) on the fast path: both
    // ends agree on mirrored parameters, `negotiate_pair`'s.
    let est = call_across(&mut alice, &mut bob)?;
    ensure!(
        params_of(&est) == params_json(&desk(), &phone_caps()),
        "the call's parameters are the table's: {est}"
    );

    // A logout on node 3 reaches node 1.
    carol.logout()?;
    alice.wait_event_where("peer_offline", |v| v["user"] == "carol")?;
    table_is(&mut alice, &[("bob", b)], t)?;

    // Node 2 crashes: bob goes offline for alice within the bound.
    let took = crash_bobs_node(&mut c, &mut alice)?;
    eprintln!("crash of bob's node to peer_offline at alice (other node): {took:?}");
    // Bob's client lost its server; he logs in again on node 3.
    bob.kill();
    let mut bob = c.client(2, "bob")?;
    let b2 = bob.session();
    table_is(&mut alice, &[("bob", b2)], t)?;
    table_is(&mut bob, &[("alice", a)], t)?;

    // One NATS server of three is killed: the registry goes on (quorum of two).
    c.nats.kill(0);
    let mut carol = c.client(0, "carol")?;
    let k2 = carol.session();
    table_is(
        &mut alice,
        &[("bob", b2), ("carol", k2)],
        Duration::from_secs(10),
    )?;
    table_is(&mut carol, &[("alice", a)], t)?;
    bob.logout()?;
    table_is(&mut alice, &[("carol", k2)], Duration::from_secs(10))?;
    ensure!(
        c.nodes[0].is_running() && c.nodes[2].is_running(),
        "the surviving nodes still run"
    );
    Ok(())
}

/// The seeded fault: leases of ten minutes (a crashed node that nobody cleans up
/// within the bound) must fail the crash check that passes above.
#[test]
fn seeded_fault_a_crashed_node_not_cleaned_up_in_time_is_caught() -> Res<()> {
    ensure_binaries()?;
    let mut c = Cluster::start(600_000)?;
    let mut alice = c.client(0, "alice")?;
    let bob = c.client(1, "bob")?;
    table_is(
        &mut alice,
        &[("bob", bob.session())],
        Duration::from_secs(5),
    )?;
    let caught = crash_bobs_node(&mut c, &mut alice);
    ensure!(
        caught.is_err(),
        "the crash check passed with ten-minute leases: {caught:?}"
    );
    Ok(())
}
