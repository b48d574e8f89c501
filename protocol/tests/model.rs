//! Exhaustive model checks of the real state machines with stateright (spec section
//! "Model checking"). Requires the `model` feature.
//!
//! Timing figures are printed, never asserted. The state counts and depths of the fixed
//! configurations are pinned as insta snapshots (as stateright's own examples pin
//! theirs): a change to the state machines that changes the explored space shows up
//! for review (`cargo insta review`).

use std::sync::Mutex;
use std::time::Instant;

use precall_protocol::model::{
    Fault, ModelConfig, ALWAYS, INV_CALL_AGREE, INV_LOGOUT_EMPTY, INV_ONLINE_EXACT, INV_VISIBILITY,
};
use stateright::{Checker, HasDiscoveries, Model};

/// Checks a configuration breadth-first to completion and asserts every `always`
/// property held and every `sometimes` property the configuration can reach was
/// reached.
// The harness reads the wall clock to print how long the check took; the core never does.
#[allow(clippy::disallowed_methods)]
fn check_exhaustively(name: &str, cfg: ModelConfig) {
    let started = Instant::now();
    let sometimes = cfg.sometimes();
    let checker = cfg.into_model().checker().threads(2).spawn_bfs().join();
    verdict(name, started, "2 threads", &checker, &ALWAYS, &sometimes);
}

/// Prints a finished check's figures, pins its state count and depth as the snapshot
/// named after `name`, and asserts that no `always` property failed and every
/// `sometimes` one was reached.
#[allow(clippy::disallowed_methods)]
fn verdict<M: Model>(
    name: &str,
    started: Instant,
    threads: &str,
    checker: &impl Checker<M>,
    always: &[&'static str],
    sometimes: &[&'static str],
) where
    M::State: Clone + PartialEq + std::hash::Hash + std::fmt::Debug,
    M::Action: Clone + PartialEq + std::fmt::Debug,
{
    println!(
        "{name}: {} unique states, max depth {}, {:.1?} (BFS, {threads})",
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    assert!(checker.is_done(), "the search ran to completion");
    let snapshot: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    insta::assert_snapshot!(
        snapshot.replace("__", "_"),
        format!(
            "{} unique states, max depth {}",
            checker.unique_state_count(),
            checker.max_depth()
        )
    );
    for p in always {
        assert!(
            checker.discovery(p).is_none(),
            "{p} fails:\n{:#?}",
            checker.discovery(p).map(|path| path.into_actions())
        );
    }
    for p in sometimes {
        assert!(checker.discovery(p).is_some(), "never reached: {p}");
    }
}

#[test]
fn default_configuration_holds_every_invariant() {
    check_exhaustively("default configuration", ModelConfig::default_check());
}

/// Reconnects: resumes with a delta or a snapshot, resumes refused after the grace,
/// sessions given up for a new login.
#[test]
fn resume_configuration_holds_every_invariant() {
    check_exhaustively("resume configuration", ModelConfig::resume_check());
}

/// The default configuration on a server with resumption disabled: a drop ends the
/// session at once.
fn without_resumption() -> ModelConfig {
    ModelConfig {
        resume: None,
        ..ModelConfig::default_check()
    }
}

#[test]
fn default_configuration_without_resumption_holds_every_invariant() {
    check_exhaustively("default configuration, no resumption", without_resumption());
}

/// The extended checks take gigabytes each: they run one at a time.
static EXTENDED: Mutex<()> = Mutex::new(());

/// Eleven times the default's states (carol's terminal logs in too); `.ci/run` runs it.
#[test]
#[ignore = "minutes: run by .ci/run with --ignored"]
fn extended_configuration_holds_every_invariant() {
    let _one_at_a_time = EXTENDED.lock().unwrap_or_else(|e| e.into_inner());
    check_exhaustively("extended configuration", ModelConfig::extended());
}

/// Seven times the default's states (alice's phone reconnects amid calls, a logout,
/// capability and roster changes); `.ci/run` runs it.
#[test]
#[ignore = "minutes: run by .ci/run with --ignored"]
fn extended_resume_configuration_holds_every_invariant() {
    let _one_at_a_time = EXTENDED.lock().unwrap_or_else(|e| e.into_inner());
    check_exhaustively(
        "extended resume configuration",
        ModelConfig::extended_resume(),
    );
}

/// Runs the default configuration with a seeded fault until the first property fails,
/// and asserts that the property that failed is `expected`.
fn fault_is_caught_by(fault: Fault, expected: &'static str) {
    fault_is_caught_in(ModelConfig::default_check(), fault, expected);
}

/// Runs `cfg` with a seeded fault until the first property fails, and asserts that the
/// property that failed is `expected`.
fn fault_is_caught_in(cfg: ModelConfig, fault: Fault, expected: &'static str) {
    let cfg = ModelConfig {
        fault: Some(fault),
        ..cfg
    };
    caught_alone(cfg.into_model(), &format!("{fault:?}"), &ALWAYS, expected);
}

/// Runs a model with a seeded fault until the first property of `always` fails, and
/// asserts that `expected` failed, alone, with a counterexample of at least one step.
fn caught_alone<M: Model + Send + Sync + 'static>(
    model: M,
    fault: &str,
    always: &[&'static str],
    expected: &'static str,
) where
    M::State: Clone + PartialEq + std::hash::Hash + std::fmt::Debug + Send + Sync,
    M::Action: Clone + PartialEq + std::fmt::Debug + Send + Sync,
{
    let checker = model
        .checker()
        .finish_when(HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    let failed: Vec<&str> = always
        .iter()
        .copied()
        .filter(|p| checker.discovery(p).is_some())
        .collect();
    println!(
        "{fault}: counterexample for {failed:?} after {} states",
        checker.unique_state_count()
    );
    assert_eq!(
        failed,
        [expected],
        "{fault} must be caught by {expected} alone"
    );
    let path = checker.discovery(expected).expect("counterexample");
    assert!(!path.into_actions().is_empty());
}

/// With resumption the session ends when its grace runs out; without, at the drop.
#[test]
fn server_forgetting_offline_on_drop_breaks_online_exact() {
    fault_is_caught_by(Fault::ServerForgetsOfflineOnDrop, INV_ONLINE_EXACT);
    fault_is_caught_in(
        without_resumption(),
        Fault::ServerForgetsOfflineOnDrop,
        INV_ONLINE_EXACT,
    );
}

#[test]
fn client_keeping_its_table_after_logout_breaks_logout_empty() {
    fault_is_caught_by(Fault::ClientKeepsTableAfterLogout, INV_LOGOUT_EMPTY);
}

#[test]
fn server_pushing_to_non_contacts_breaks_visibility() {
    fault_is_caught_by(Fault::ServerPushesToNonContacts, INV_VISIBILITY);
}

#[test]
fn roster_removal_leaving_parameters_breaks_online_exact() {
    fault_is_caught_by(Fault::ClientIgnoresContactRemoval, INV_ONLINE_EXACT);
}

#[test]
fn accept_losing_capabilities_breaks_call_agreement() {
    fault_is_caught_by(Fault::AcceptLosesCapabilities, INV_CALL_AGREE);
}

/// Only the resume path shows it: the login snapshot arrives whole, and only a
/// resume's catch-up loses its frames.
#[test]
fn resume_catch_up_lost_breaks_online_exact() {
    fault_is_caught_in(
        ModelConfig::resume_check(),
        Fault::ResumeCatchUpLost,
        INV_ONLINE_EXACT,
    );
}

// ----- the cluster model (spec "Clustering") --------------------------------------------

use precall_protocol::model::cluster::{
    ClusterConfig, ClusterFault, ALL_ONLINE_ACROSS, CLUSTER_INPUT, FAST_PATH_ACROSS, SURVIVED_CRASH,
};

/// The cluster model's `always` properties.
const CLUSTER_ALWAYS: [&str; 5] = [
    INV_ONLINE_EXACT,
    INV_LOGOUT_EMPTY,
    INV_VISIBILITY,
    INV_CALL_AGREE,
    CLUSTER_INPUT,
];

/// [`check_exhaustively`] for the cluster model: every `always` property holds and the
/// goals (everyone online with exact tables across nodes; a crash survived; with
/// `calls`, a call across nodes on the fast path) are reached.
#[allow(clippy::disallowed_methods)]
fn check_cluster(name: &str, cfg: ClusterConfig, calls: bool) {
    let started = Instant::now();
    // One thread: with two, the depth reported varies from run to run.
    let checker = cfg.into_model().checker().spawn_bfs().join();
    verdict(
        name,
        started,
        "1 thread",
        &checker,
        &CLUSTER_ALWAYS,
        &[ALL_ONLINE_ACROSS, SURVIVED_CRASH],
    );
    assert_eq!(
        checker.discovery(FAST_PATH_ACROSS).is_some(),
        calls,
        "{FAST_PATH_ACROSS}"
    );
}

#[test]
fn cluster_configuration_holds_every_invariant() {
    check_cluster(
        "cluster configuration",
        ClusterConfig::default_check(),
        false,
    );
}

/// Calls between the nodes, with a crash of the callee's node at any point.
#[test]
fn cluster_calls_configuration_holds_every_invariant() {
    check_cluster("cluster calls configuration", ClusterConfig::calls(), true);
}

#[test]
#[ignore = "larger: run with --ignored"]
fn extended_cluster_configuration_holds_every_invariant() {
    let _one_at_a_time = EXTENDED.lock().unwrap_or_else(|e| e.into_inner());
    check_cluster(
        "extended cluster configuration",
        ClusterConfig::extended(),
        false,
    );
}

/// A node that ignores its peer's lease expiry keeps the lost node's terminals in its
/// clients' tables: `INV-ONLINE-EXACT` across nodes catches it, and nothing else does.
#[test]
fn ignoring_node_gone_breaks_online_exact_across_nodes() {
    let cfg = ClusterConfig {
        fault: Some(ClusterFault::IgnoresNodeGone),
        ..ClusterConfig::default_check()
    };
    caught_alone(
        cfg.into_model(),
        "IgnoresNodeGone",
        &CLUSTER_ALWAYS,
        INV_ONLINE_EXACT,
    );
}

/// Without a crash the survivor goal is out of reach, and the fault is harmless: the
/// seeded fault is caught only through the crash.
#[test]
fn without_a_crash_ignoring_node_gone_is_not_seen() {
    let cfg = ClusterConfig {
        fault: Some(ClusterFault::IgnoresNodeGone),
        crash: None,
        ..ClusterConfig::default_check()
    };
    let checker = cfg.into_model().checker().threads(2).spawn_bfs().join();
    assert!(checker.is_done());
    for p in CLUSTER_ALWAYS {
        assert!(checker.discovery(p).is_none(), "{p} fails");
    }
    assert!(checker.discovery(SURVIVED_CRASH).is_none());
}
