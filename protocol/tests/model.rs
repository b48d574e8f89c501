//! Exhaustive model checks of the real state machines with stateright (spec section
//! "Model checking"). Requires the `model` feature.
//!
//! Timing figures are printed, never asserted.

use std::time::Instant;

use precall_protocol::model::{
    Fault, ModelConfig, ALWAYS, INV_CALL_AGREE, INV_LOGOUT_EMPTY, INV_ONLINE_EXACT, INV_VISIBILITY,
    SOMETIMES,
};
use stateright::{Checker, HasDiscoveries, Model};

/// Checks a configuration breadth-first to completion and asserts every `always`
/// property held and every `sometimes` property was reached.
// The harness reads the wall clock to print how long the check took; the core never does.
#[allow(clippy::disallowed_methods)]
fn check_exhaustively(name: &str, cfg: ModelConfig) {
    let started = Instant::now();
    let checker = cfg.into_model().checker().threads(2).spawn_bfs().join();
    println!(
        "{name}: {} unique states, max depth {}, {:.1?} (BFS, 2 threads)",
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    assert!(checker.is_done(), "the search ran to completion");
    for p in ALWAYS {
        assert!(
            checker.discovery(p).is_none(),
            "{p} fails:\n{:#?}",
            checker.discovery(p).map(|path| path.into_actions())
        );
    }
    for p in SOMETIMES {
        assert!(checker.discovery(p).is_some(), "never reached: {p}");
    }
}

#[test]
fn default_configuration_holds_every_invariant() {
    check_exhaustively("default configuration", ModelConfig::default_check());
}

/// Ten times the default's states (carol's terminal logs in too); `.ci/run` runs it.
#[test]
#[ignore = "about a minute: run by .ci/run with --ignored"]
fn extended_configuration_holds_every_invariant() {
    check_exhaustively("extended configuration", ModelConfig::extended());
}

/// Runs the default configuration with a seeded fault until the first property fails,
/// and asserts that the property that failed is `expected`.
fn fault_is_caught_by(fault: Fault, expected: &'static str) {
    let cfg = ModelConfig {
        fault: Some(fault),
        ..ModelConfig::default_check()
    };
    let checker = cfg
        .into_model()
        .checker()
        .finish_when(HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    let failed: Vec<&str> = ALWAYS
        .into_iter()
        .filter(|p| checker.discovery(p).is_some())
        .collect();
    println!(
        "{fault:?}: counterexample for {failed:?} after {} states",
        checker.unique_state_count()
    );
    assert_eq!(
        failed,
        [expected],
        "{fault:?} must be caught by {expected} alone"
    );
    let path = checker.discovery(expected).expect("counterexample");
    assert!(!path.into_actions().is_empty());
}

#[test]
fn server_forgetting_offline_on_drop_breaks_online_exact() {
    fault_is_caught_by(Fault::ServerForgetsOfflineOnDrop, INV_ONLINE_EXACT);
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
