//! Clustering (spec "Clustering"): two or three real [`Server`]s with node ids, wired by
//! hand through their `Publish`/`Unpublish` outputs and remote inputs ([`Cluster`]),
//! with real clients on each. Every scenario ends with `INV-ONLINE-EXACT` across the
//! nodes (`settle`), and each test pins one rule: what is published and when, that
//! remote records are never echoed, idempotent redelivery, entitlement both ways,
//! node loss, the limits and the typed errors.

use precall_protocol::client::CallState;
use precall_protocol::codec::encode_frame;
use precall_protocol::invariant;
use precall_protocol::server::{Limits, ServerError};
use precall_protocol::sim::{sample_caps, Cluster, Directory, Sim};
use precall_protocol::{
    negotiate_pair, CallDigest, CallId, Capabilities, ClientEvent, ClientMessage, EndReason,
    Endpoint, LoginWith, NodeId, RelayMessage, Server, ServerConfig, ServerEvent, ServerMessage,
    SessionId, SessionRecord, SetupPath, Time, UserId,
};

mod common;
use common::*;

fn caps(width: u16) -> Capabilities {
    sample_caps(&["h264", "vp8"], width, 30)
}

/// alice, bob, carol, dave: alice lists and is listed by bob and carol; bob and carol
/// do not list each other; dave lists alice, who does not list him.
fn directory() -> Directory {
    let mut d = Directory::default();
    for name in ["alice", "bob", "carol", "dave"] {
        d.add_user(&u(name), "pw");
    }
    d.befriend(&u("alice"), &u("bob"));
    d.befriend(&u("alice"), &u("carol"));
    if let Some(acc) = d.accounts.get_mut(&u("dave")) {
        acc.contacts.insert(u("alice"));
    }
    d
}

fn log_in(node: &mut Sim, terminal: usize, user: &str, width: u16) {
    node.login(
        terminal,
        &u(user),
        "pw",
        LoginWith::Capabilities(caps(width)),
    );
}

/// The users whose terminals a client's table holds, in order, with the sessions.
fn table(node: &Sim, terminal: usize) -> Vec<Endpoint> {
    node.client(terminal)
        .peers()
        .map(|(e, _)| e.clone())
        .collect()
}

fn users_in(node: &Sim, terminal: usize) -> Vec<String> {
    table(node, terminal)
        .into_iter()
        .map(|e| e.user.as_str().to_owned())
        .collect()
}

/// Two nodes: alice on node 0 (terminal 0); bob (terminal 0) and carol (terminal 1)
/// on node 1; everyone logged in and the registry quiet.
fn two_nodes() -> Cluster {
    let mut c = Cluster::new(&directory(), &[2, 2], &ServerConfig::default());
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    log_in(&mut c.nodes[1], 0, "bob", 1280);
    log_in(&mut c.nodes[1], 1, "carol", 640);
    c.settle().unwrap();
    c
}

fn publishes(events: &[ServerEvent]) -> Vec<&SessionRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Publish(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn tables_are_exact_across_nodes() {
    let c = two_nodes();
    assert_eq!(users_in(&c.nodes[0], 0), ["bob", "carol"]);
    assert_eq!(users_in(&c.nodes[1], 0), ["alice"]);
    assert_eq!(users_in(&c.nodes[1], 1), ["alice"]);
    // The parameters were computed from the remote terminal's capabilities.
    let bob = c.nodes[1].endpoint(0).unwrap();
    let peer = c.nodes[0].client(0).peer(&bob).unwrap();
    assert_eq!(peer.capabilities, caps(1280));
}

#[test]
fn sessions_are_numbered_in_their_nodes_ranges() {
    let c = two_nodes();
    let alice = c.nodes[0].endpoint(0).unwrap().session;
    let bob = c.nodes[1].endpoint(0).unwrap().session;
    assert_eq!(alice.node(), NodeId(1));
    assert_eq!(bob.node(), NodeId(2));
    assert_eq!(alice, NodeId(1).session(1));
    assert_eq!(bob, NodeId(2).session(1));
}

#[test]
fn the_login_snapshot_includes_remote_sessions() {
    let mut c = Cluster::new(&directory(), &[1, 1], &ServerConfig::default());
    log_in(&mut c.nodes[1], 0, "bob", 1280);
    c.sync().unwrap();
    // Node 0 holds bob's record; alice's login needs nothing more from the registry.
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    c.nodes[0].run().unwrap();
    assert!(c.nodes[0].client(0).is_synced());
    assert_eq!(users_in(&c.nodes[0], 0), ["bob"]);
    c.settle().unwrap();
}

#[test]
fn a_remote_login_is_pushed_to_entitled_local_watchers_only() {
    let mut c = Cluster::new(&directory(), &[3, 1], &ServerConfig::default());
    log_in(&mut c.nodes[0], 0, "bob", 1280);
    log_in(&mut c.nodes[0], 1, "carol", 640);
    log_in(&mut c.nodes[0], 2, "dave", 800);
    c.settle().unwrap();
    log_in(&mut c.nodes[1], 0, "alice", 1920);
    c.settle().unwrap();
    assert_eq!(users_in(&c.nodes[0], 0), ["alice"]);
    assert_eq!(users_in(&c.nodes[0], 1), ["alice"]);
    // dave lists alice, but alice does not list dave: not entitled.
    assert!(users_in(&c.nodes[0], 2).is_empty());
    assert_eq!(users_in(&c.nodes[1], 0), ["bob", "carol"]);
}

/// Entitlement needs both lists, whichever of the two users is remote.
#[test]
fn entitlement_needs_both_lists_either_way_round() {
    for (dave_node, alice_node) in [(0, 1), (1, 0)] {
        let mut c = Cluster::new(&directory(), &[1, 1], &ServerConfig::default());
        log_in(&mut c.nodes[dave_node], 0, "dave", 800);
        log_in(&mut c.nodes[alice_node], 0, "alice", 1920);
        c.settle().unwrap();
        assert!(users_in(&c.nodes[dave_node], 0).is_empty());
        assert!(users_in(&c.nodes[alice_node], 0).is_empty());
        assert!(!c.nodes[dave_node].server.entitled(&u("dave"), &u("alice")));
        assert!(!c.nodes[alice_node].server.entitled(&u("alice"), &u("dave")));
        // Once alice lists dave back, each sees the other across the nodes.
        c.nodes[alice_node]
            .command(0, |cl, now| cl.add_contact(u("dave"), now))
            .unwrap();
        c.settle().unwrap();
        assert_eq!(users_in(&c.nodes[dave_node], 0), ["alice"]);
        assert_eq!(users_in(&c.nodes[alice_node], 0), ["dave"]);
    }
}

#[test]
fn a_single_node_publishes_nothing() {
    let mut sim = Sim::new(directory(), 2, ServerConfig::default());
    log_in(&mut sim, 0, "alice", 1920);
    log_in(&mut sim, 1, "bob", 1280);
    sim.settle().unwrap();
    sim.command(0, |c, now| c.update_caps(caps(640), now))
        .unwrap();
    sim.command(0, |c, now| c.logout(now)).unwrap();
    sim.settle().unwrap();
    assert!(sim.published.is_empty());
    assert_eq!(sim.endpoint(1).unwrap().session, SessionId(2));
    let mut server = Server::new(ServerConfig::default());
    let record = SessionRecord::new(NodeId(2), NodeId(2).session(1), u("bob"), caps(160), vec![]);
    assert_eq!(
        server.remote_online(record, Time::ZERO),
        Err(ServerError::NotClustered)
    );
    assert_eq!(
        server.remote_offline(NodeId(2).session(1), Time::ZERO),
        Err(ServerError::NotClustered)
    );
    assert_eq!(
        server.remote_node_gone(NodeId(2), Time::ZERO),
        Err(ServerError::NotClustered)
    );
    assert_eq!(
        server.remote_caps_changed(NodeId(2).session(1), caps(160), Time::ZERO),
        Err(ServerError::NotClustered)
    );
}

#[test]
fn a_node_publishes_logins_changes_and_unpublishes_ends() {
    let mut c = Cluster::new(&directory(), &[2, 0], &ServerConfig::default());
    let n = &mut c.nodes[0];
    log_in(n, 0, "alice", 1920);
    n.run().unwrap();
    let alice = n.endpoint(0).unwrap();
    let events: Vec<ServerEvent> = n.published.drain(..).collect();
    let records = publishes(&events);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].node, NodeId(1));
    assert_eq!(records[0].session, alice.session);
    assert_eq!(records[0].user, u("alice"));
    assert_eq!(records[0].capabilities, caps(1920));
    assert_eq!(records[0].contacts, users(&["bob", "carol"]));
    // A capability change is published with the new capabilities.
    n.command(0, |cl, now| cl.update_caps(caps(640), now))
        .unwrap();
    n.run().unwrap();
    let events: Vec<ServerEvent> = n.published.drain(..).collect();
    assert_eq!(publishes(&events).len(), 1);
    assert_eq!(publishes(&events)[0].capabilities, caps(640));
    // A contact-list change republishes every local session of the user.
    log_in(n, 1, "alice", 800);
    n.run().unwrap();
    n.published.clear();
    n.command(0, |cl, now| cl.add_contact(u("dave"), now))
        .unwrap();
    n.run().unwrap();
    let events: Vec<ServerEvent> = n.published.drain(..).collect();
    let records = publishes(&events);
    assert_eq!(records.len(), 2);
    for r in records {
        assert_eq!(r.contacts, users(&["bob", "carol", "dave"]));
    }
    // A logout deletes the record.
    n.command(0, |cl, now| cl.logout(now)).unwrap();
    n.run().unwrap();
    let events: Vec<ServerEvent> = n.published.drain(..).collect();
    assert_eq!(
        events,
        [ServerEvent::Unpublish {
            node: NodeId(1),
            session: alice.session,
            user: u("alice"),
        }]
    );
}

#[test]
fn a_dropped_connection_unpublishes_at_once_without_resumption() {
    let mut config = ServerConfig::default();
    config.resume.grace = std::time::Duration::ZERO;
    let mut c = Cluster::new(&directory(), &[1, 1], &config);
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    log_in(&mut c.nodes[1], 0, "bob", 1280);
    c.settle().unwrap();
    c.nodes[0].drop_connection(0);
    assert!(matches!(
        c.nodes[0].published.back(),
        Some(ServerEvent::Unpublish { .. })
    ));
    c.settle().unwrap();
    assert!(users_in(&c.nodes[1], 0).is_empty());
}

#[test]
fn remote_records_are_never_echoed() {
    let mut c = two_nodes();
    for n in &c.nodes {
        assert!(n.published.is_empty());
    }
    // Redeliveries and changes from node 1 make node 0 publish nothing.
    c.nodes[1]
        .command(0, |cl, now| cl.update_caps(caps(320), now))
        .unwrap();
    c.nodes[1].run().unwrap();
    let events: Vec<ServerEvent> = c.nodes[1].published.drain(..).collect();
    for ev in &events {
        c.deliver(0, ev).unwrap();
        c.deliver(0, ev).unwrap();
    }
    assert!(c.nodes[0].published.is_empty());
    c.nodes[1].command(0, |cl, now| cl.logout(now)).unwrap();
    c.nodes[1].run().unwrap();
    let events: Vec<ServerEvent> = c.nodes[1].published.drain(..).collect();
    for ev in &events {
        c.deliver(0, ev).unwrap();
    }
    assert!(c.nodes[0].published.is_empty());
    c.settle().unwrap();
}

#[test]
fn a_redelivered_record_pushes_nothing() {
    let mut c = Cluster::new(&directory(), &[1, 1], &ServerConfig::default());
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    c.settle().unwrap();
    log_in(&mut c.nodes[1], 0, "bob", 1280);
    c.nodes[1].run().unwrap();
    let events: Vec<ServerEvent> = c.nodes[1].published.drain(..).collect();
    assert_eq!(events.len(), 1);
    c.deliver(0, &events[0]).unwrap();
    c.nodes[0].run().unwrap();
    let sent = c.nodes[0].sent.len();
    assert_eq!(users_in(&c.nodes[0], 0), ["bob"]);
    c.deliver(0, &events[0]).unwrap();
    c.nodes[0].run().unwrap();
    assert_eq!(
        c.nodes[0].sent.len(),
        sent,
        "a repeated online is pushed again"
    );
    c.settle().unwrap();
}

#[test]
fn a_remote_caps_change_is_pushed_once() {
    let mut c = two_nodes();
    let bob = c.nodes[1].endpoint(0).unwrap();
    let sent = c.nodes[0].sent.len();
    c.nodes[0]
        .with_server(|s, now| s.remote_caps_changed(bob.session, caps(320), now))
        .unwrap();
    c.nodes[0].run().unwrap();
    assert_eq!(c.nodes[0].sent.len(), sent + 1);
    let peer = c.nodes[0].client(0).peer(&bob).unwrap();
    assert_eq!(peer.capabilities, caps(320));
    // The same change again: nothing.
    c.nodes[0]
        .with_server(|s, now| s.remote_caps_changed(bob.session, caps(320), now))
        .unwrap();
    c.nodes[0].run().unwrap();
    assert_eq!(c.nodes[0].sent.len(), sent + 1);
    // A change for a session not held: nothing.
    c.nodes[0]
        .with_server(|s, now| s.remote_caps_changed(NodeId(2).session(99), caps(320), now))
        .unwrap();
    c.nodes[0].run().unwrap();
    assert_eq!(c.nodes[0].sent.len(), sent + 1);
    let held: Vec<_> = c.nodes[0]
        .server
        .remote_sessions()
        .map(|r| (r.node, r.endpoint.user.clone(), r.capabilities.clone()))
        .collect();
    assert!(held.contains(&(NodeId(2), u("bob"), caps(320))));
}

#[test]
fn caps_changes_and_logouts_cross_nodes() {
    let mut c = two_nodes();
    c.nodes[1]
        .command(0, |cl, now| cl.update_caps(caps(320), now))
        .unwrap();
    c.settle().unwrap();
    let bob = c.nodes[1].endpoint(0).unwrap();
    assert_eq!(
        c.nodes[0].client(0).peer(&bob).unwrap().capabilities,
        caps(320)
    );
    c.nodes[1].command(0, |cl, now| cl.logout(now)).unwrap();
    c.settle().unwrap();
    assert_eq!(users_in(&c.nodes[0], 0), ["carol"]);
    assert!(c.nodes[0].terminals[0]
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::PeerOffline { endpoint } if *endpoint == bob)));
}

#[test]
fn an_offline_for_an_unknown_session_is_a_no_op() {
    let mut c = two_nodes();
    let sent = c.nodes[0].sent.len();
    c.nodes[0]
        .with_server(|s, now| s.remote_offline(NodeId(2).session(77), now))
        .unwrap();
    // The same deletion twice.
    let bob = c.nodes[1].endpoint(0).unwrap();
    for _ in 0..2 {
        c.nodes[0]
            .with_server(|s, now| s.remote_offline(bob.session, now))
            .unwrap();
    }
    c.nodes[0].run().unwrap();
    assert_eq!(c.nodes[0].sent.len(), sent + 1, "one offline for bob");
    assert_eq!(users_in(&c.nodes[0], 0), ["carol"]);
}

#[test]
fn a_lost_node_goes_offline_everywhere() {
    let mut c = two_nodes();
    c.crash(1);
    c.settle().unwrap();
    assert!(users_in(&c.nodes[0], 0).is_empty());
    assert_eq!(c.nodes[0].server.remote_sessions().count(), 0);
    // The users of the lost node are offline here: nobody is entitled to them.
    assert!(c.nodes[0].server.contacts_of(&u("bob")).is_none());
    // Its clients log in again on the surviving node.
    log_in(&mut c.nodes[0], 1, "bob", 1280);
    c.settle().unwrap();
    assert_eq!(users_in(&c.nodes[0], 0), ["bob"]);
}

#[test]
fn node_gone_counts_and_keeps_other_nodes_sessions() {
    let mut c = Cluster::new(&directory(), &[1, 1, 1], &ServerConfig::default());
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    log_in(&mut c.nodes[1], 0, "bob", 1280);
    log_in(&mut c.nodes[2], 0, "carol", 640);
    c.settle().unwrap();
    assert_eq!(users_in(&c.nodes[0], 0), ["bob", "carol"]);
    let n = c.nodes[0]
        .with_server(|s, now| s.remote_node_gone(NodeId(2), now))
        .unwrap();
    assert_eq!(n, 1);
    c.nodes[0].run().unwrap();
    assert_eq!(users_in(&c.nodes[0], 0), ["carol"]);
    let again = c.nodes[0]
        .with_server(|s, now| s.remote_node_gone(NodeId(2), now))
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(
        c.nodes[0].with_server(|s, now| s.remote_node_gone(NodeId(1), now)),
        Err(ServerError::OwnNode(NodeId(1)))
    );
}

#[test]
fn a_remote_roster_change_moves_presence_both_ways() {
    let mut c = two_nodes();
    c.nodes[1]
        .command(0, |cl, now| cl.remove_contact(u("alice"), now))
        .unwrap();
    c.settle().unwrap();
    assert_eq!(users_in(&c.nodes[0], 0), ["carol"]);
    assert!(users_in(&c.nodes[1], 0).is_empty());
    c.nodes[1]
        .command(0, |cl, now| cl.add_contact(u("alice"), now))
        .unwrap();
    c.settle().unwrap();
    assert_eq!(users_in(&c.nodes[0], 0), ["bob", "carol"]);
    assert_eq!(users_in(&c.nodes[1], 0), ["alice"]);
}

#[test]
fn a_user_on_two_nodes_is_seen_on_both() {
    let mut c = Cluster::new(&directory(), &[2, 1], &ServerConfig::default());
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    log_in(&mut c.nodes[1], 0, "alice", 800);
    log_in(&mut c.nodes[0], 1, "bob", 1280);
    c.settle().unwrap();
    let table = table(&c.nodes[0], 1);
    assert_eq!(table.len(), 2);
    assert!(table.iter().all(|e| e.user == u("alice")));
    // Alice's terminal on node 0 leaves; her node-1 terminal is still seen, now with
    // the list of her record.
    c.nodes[0].command(0, |cl, now| cl.logout(now)).unwrap();
    c.settle().unwrap();
    assert_eq!(users_in(&c.nodes[0], 1), ["alice"]);
    assert!(c.nodes[0].server.entitled(&u("bob"), &u("alice")));
}

/// While a user has a session here, its local list decides; a record's differing list
/// does not override it.
#[test]
fn the_local_list_wins_over_a_records() {
    let mut c = alice_and_bob_on_the_first_node();
    let record = alices_record_from_node_two(&[]);
    c.nodes[0]
        .with_server(|s, now| s.remote_online(record, now))
        .unwrap();
    c.nodes[0].run().unwrap();
    assert!(c.nodes[0].server.entitled(&u("bob"), &u("alice")));
    assert_eq!(table(&c.nodes[0], 1).len(), 2);
}

/// A record for a user online only remotely updates that user's list, with presence.
#[test]
fn a_records_new_list_applies_to_a_remote_only_user() {
    let mut c = Cluster::new(&directory(), &[1, 0], &ServerConfig::default());
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    c.settle().unwrap();
    let id = NodeId(2).session(1);
    let mut record = SessionRecord::new(NodeId(2), id, u("bob"), caps(160), users(&["alice"]));
    c.nodes[0]
        .with_server(|s, now| s.remote_online(record.clone(), now))
        .unwrap();
    c.nodes[0].run().unwrap();
    assert_eq!(users_in(&c.nodes[0], 0), ["bob"]);
    record.contacts = vec![];
    c.nodes[0]
        .with_server(|s, now| s.remote_online(record.clone(), now))
        .unwrap();
    c.nodes[0].run().unwrap();
    assert!(users_in(&c.nodes[0], 0).is_empty());
    assert!(!c.nodes[0].server.entitled(&u("alice"), &u("bob")));
    assert!(c.nodes[0].published.is_empty());
}

#[test]
fn bad_remote_input_is_refused_with_typed_errors() {
    let mut c = two_nodes();
    let n = &mut c.nodes[0];
    let good = SessionRecord::new(
        NodeId(3),
        NodeId(3).session(1),
        u("dave"),
        caps(160),
        vec![],
    );
    // A record of this node's own.
    let mut own = good.clone();
    own.node = NodeId(1);
    own.session = NodeId(1).session(9);
    assert_eq!(
        n.with_server(|s, now| s.remote_online(own, now)),
        Err(ServerError::OwnNode(NodeId(1)))
    );
    assert_eq!(
        n.with_server(|s, now| s.remote_offline(NodeId(1).session(1), now)),
        Err(ServerError::OwnNode(NodeId(1)))
    );
    assert_eq!(
        n.with_server(|s, now| s.remote_caps_changed(NodeId(1).session(1), caps(160), now)),
        Err(ServerError::OwnNode(NodeId(1)))
    );
    // A session outside its node's range.
    let mut stray = good.clone();
    stray.session = NodeId(4).session(1);
    assert_eq!(
        n.with_server(|s, now| s.remote_online(stray, now)),
        Err(ServerError::RemoteMismatch(NodeId(4).session(1)))
    );
    // Too many contacts.
    let mut long = good.clone();
    long.contacts = (0..501).map(|i| u(&format!("u{i}"))).collect();
    assert_eq!(
        n.with_server(|s, now| s.remote_online(long, now)),
        Err(ServerError::RemoteTooLarge(good.session))
    );
    // The same session later naming another user.
    n.with_server(|s, now| s.remote_online(good.clone(), now))
        .unwrap();
    let mut other = good.clone();
    other.user = u("carol");
    assert_eq!(
        n.with_server(|s, now| s.remote_online(other, now)),
        Err(ServerError::RemoteMismatch(good.session))
    );
    // Still held as dave's, and nothing published or panicked.
    assert!(n
        .server
        .remote_sessions()
        .any(|r| r.endpoint.user == u("dave")));
    assert!(n.published.is_empty());
}

#[test]
fn oversized_remote_capabilities_are_refused() {
    let mut limits = Limits::default();
    limits.max_caps_bytes = 10;
    let mut config = ServerConfig::default();
    config.limits = limits;
    config.node = Some(NodeId(1));
    let mut server = Server::new(config);
    let record = SessionRecord::new(NodeId(2), NodeId(2).session(1), u("bob"), caps(160), vec![]);
    assert_eq!(
        server.remote_online(record, Time::ZERO),
        Err(ServerError::RemoteTooLarge(NodeId(2).session(1)))
    );
    assert_eq!(server.remote_sessions().count(), 0);
}

#[test]
fn remote_sessions_are_bounded() {
    let mut config = ServerConfig::default();
    config.limits.max_remote_sessions = 2;
    config.node = Some(NodeId(1));
    let mut server = Server::new(config);
    for i in 1..=2 {
        let r = SessionRecord::new(NodeId(2), NodeId(2).session(i), u("bob"), caps(160), vec![]);
        server.remote_online(r, Time::ZERO).unwrap();
    }
    // A known session still updates at the limit.
    let r = SessionRecord::new(NodeId(2), NodeId(2).session(2), u("bob"), caps(176), vec![]);
    server.remote_online(r, Time::ZERO).unwrap();
    let r = SessionRecord::new(NodeId(2), NodeId(2).session(3), u("bob"), caps(160), vec![]);
    assert_eq!(
        server.remote_online(r, Time::ZERO),
        Err(ServerError::TooManyRemoteSessions(NodeId(2).session(3)))
    );
    assert_eq!(server.remote_sessions().count(), 2);
    // One gone makes room again.
    server
        .remote_offline(NodeId(2).session(1), Time::ZERO)
        .unwrap();
    let r = SessionRecord::new(NodeId(2), NodeId(2).session(3), u("bob"), caps(160), vec![]);
    server.remote_online(r, Time::ZERO).unwrap();
}

/// A snapshot frame for a remote session is its `online`, as for a local one.
#[test]
fn remote_online_frames_name_the_remote_session() {
    let mut c = Cluster::new(&directory(), &[1, 1], &ServerConfig::default());
    log_in(&mut c.nodes[1], 0, "bob", 1280);
    c.sync().unwrap();
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    c.nodes[0].run().unwrap();
    let onlines: Vec<_> = c.nodes[0]
        .sent
        .iter()
        .map(|(_, f)| decode_server(f))
        .filter_map(|m| match m {
            ServerMessage::Online(p) => Some((p.user, p.session)),
            _ => None,
        })
        .collect();
    assert_eq!(onlines, [(u("bob"), NodeId(2).session(1))]);
}

// ----- calls between nodes --------------------------------------------------------------

/// The id of the call terminal `t` of `node` holds (the one call it has).
fn the_call(node: &Sim, t: usize) -> CallId {
    *node.client(t).calls().next().expect("a call").0
}

fn ended(node: &Sim, t: usize) -> Vec<EndReason> {
    node.terminals[t]
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::CallEnded { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// alice (node 0) calls bob (node 1); returns the call once it rings at bob's.
fn alice_calls_bob(c: &mut Cluster) -> CallId {
    let bob = c.nodes[1].endpoint(0).unwrap();
    c.nodes[0]
        .command(0, |cl, now| cl.place_call(&bob, now))
        .unwrap();
    c.sync().unwrap();
    let call = the_call(&c.nodes[1], 0);
    assert_eq!(call.node(), NodeId(1), "numbered by the caller's node");
    assert_eq!(the_call(&c.nodes[0], 0), call);
    call
}

#[test]
fn a_call_across_nodes_takes_the_fast_path_in_one_relay_each_way() {
    let mut c = two_nodes();
    let bob = c.nodes[1].endpoint(0).unwrap();
    c.nodes[0]
        .command(0, |cl, now| cl.place_call(&bob, now))
        .unwrap();
    c.nodes[0].run().unwrap();
    // One offer to bob's node, carrying no capabilities.
    let offers: Vec<_> = c.nodes[0].relayed.iter().cloned().collect();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].0, NodeId(2));
    assert!(matches!(
        &offers[0].1,
        RelayMessage::Offer { capabilities: None, to, .. } if *to == bob
    ));
    c.sync().unwrap();
    let call = the_call(&c.nodes[1], 0);
    c.nodes[1]
        .command(0, |cl, now| cl.answer(call, true, now))
        .unwrap();
    c.nodes[1].run().unwrap();
    assert_eq!(c.nodes[1].relayed.len(), 1);
    assert!(matches!(
        c.nodes[1].relayed[0],
        (
            NodeId(1),
            RelayMessage::Accepted {
                capabilities: None,
                ..
            }
        )
    ));
    c.settle().unwrap();
    for (n, t) in [(0, 0), (1, 0)] {
        let held = c.nodes[n].client(t).calls().next().unwrap().1.clone();
        assert_eq!(held.state, CallState::Established);
        assert_eq!(held.path(), SetupPath::Fast);
        assert_eq!(c.nodes[n].terminals[t].call_caps_bytes, 0);
    }
    let clients = c
        .nodes
        .iter()
        .flat_map(|n| n.terminals.iter().map(|t| &t.client));
    invariant::calls_agree(clients).unwrap();
    // Bob's parameters are the negotiation over both terminals' capabilities.
    let (_, at_bob) = c.nodes[1].client(0).calls().next().unwrap();
    assert_eq!(
        at_bob.params.as_ref(),
        Some(&negotiate_pair(&caps(1280), &caps(1920)))
    );
    // Hanging up at the callee's ends it at the caller's.
    c.nodes[1]
        .command(0, |cl, now| cl.hangup(call, now))
        .unwrap();
    c.settle().unwrap();
    assert_eq!(ended(&c.nodes[0], 0), [EndReason::Hangup]);
    assert_eq!(c.nodes[0].server.call_count(), 0);
    assert_eq!(c.nodes[1].server.call_count(), 0);
}

#[test]
fn a_rejection_and_a_cancel_cross_nodes() {
    let mut c = two_nodes();
    let call = alice_calls_bob(&mut c);
    c.nodes[1]
        .command(0, |cl, now| cl.answer(call, false, now))
        .unwrap();
    c.settle().unwrap();
    assert_eq!(ended(&c.nodes[0], 0), [EndReason::Rejected]);
    assert_eq!(c.nodes[0].server.call_count(), 0);
    // The caller hangs up while it rings: the callee is told.
    let call = alice_calls_bob(&mut c);
    c.nodes[0]
        .command(0, |cl, now| cl.hangup(call, now))
        .unwrap();
    c.settle().unwrap();
    assert_eq!(ended(&c.nodes[1], 0), [EndReason::Hangup]);
    assert_eq!(c.nodes[1].server.call_count(), 0);
}

#[test]
fn a_call_to_a_lost_node_ends_at_the_callers() {
    let mut c = two_nodes();
    alice_calls_bob(&mut c);
    c.crash(1);
    c.settle().unwrap();
    assert_eq!(ended(&c.nodes[0], 0), [EndReason::PeerGone]);
    assert_eq!(c.nodes[0].server.call_count(), 0);
}

#[test]
fn an_unanswered_call_across_nodes_rings_out_at_both() {
    let mut config = ServerConfig::default();
    config.ring_timeout = std::time::Duration::from_secs(5);
    let mut c = Cluster::new(&directory(), &[1, 1], &config);
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    log_in(&mut c.nodes[1], 0, "bob", 1280);
    c.settle().unwrap();
    alice_calls_bob(&mut c);
    // Only the caller's node rings the call out.
    c.nodes[1].advance(config.ring_timeout);
    c.sync().unwrap();
    assert_eq!(c.nodes[1].server.call_count(), 1);
    c.nodes[0].advance(config.ring_timeout);
    c.settle().unwrap();
    assert_eq!(ended(&c.nodes[0], 0), [EndReason::Timeout]);
    assert_eq!(ended(&c.nodes[1], 0), [EndReason::Timeout]);
    assert_eq!(c.nodes[1].server.call_count(), 0);
}

#[test]
fn a_roster_removal_ends_calls_across_nodes() {
    let mut c = two_nodes();
    let call = alice_calls_bob(&mut c);
    c.nodes[1]
        .command(0, |cl, now| cl.answer(call, true, now))
        .unwrap();
    c.settle().unwrap();
    c.nodes[0]
        .command(0, |cl, now| cl.remove_contact(u("bob"), now))
        .unwrap();
    c.settle().unwrap();
    assert_eq!(c.nodes[0].server.call_count(), 0);
    assert_eq!(c.nodes[1].server.call_count(), 0);
    assert_eq!(ended(&c.nodes[1], 0), [EndReason::NotReachable]);
}

/// An offer the callee's node cannot deliver (it does not hold the caller's record
/// yet, the callee is not entitled, or gone) is answered `ended: not_reachable`.
#[test]
fn an_undeliverable_offer_is_answered_not_reachable() {
    let mut c = two_nodes();
    let bob = c.nodes[1].endpoint(0).unwrap();
    let alice = c.nodes[0].endpoint(0).unwrap();
    let offer = |from: Endpoint, call: u64| RelayMessage::Offer {
        call: NodeId(1).call(call),
        from,
        to: bob.clone(),
        digest: CallDigest {
            caller: caps(1920).fingerprint(),
            callee: caps(1280).fingerprint(),
        },
        capabilities: None,
        media: None,
    };
    // A caller whose record node 1 does not hold.
    let stranger = Endpoint {
        user: u("alice"),
        session: NodeId(1).session(99),
    };
    c.nodes[1]
        .with_server(|s, now| s.relay_received(NodeId(1), offer(stranger, 50), now))
        .unwrap();
    // A caller bob may not see.
    let dave = Endpoint {
        user: u("dave"),
        session: alice.session,
    };
    c.nodes[1]
        .with_server(|s, now| s.relay_received(NodeId(1), offer(dave, 51), now))
        .unwrap();
    let answers: Vec<_> = c.nodes[1].relayed.drain(..).collect();
    assert_eq!(answers.len(), 2);
    for (to, m) in answers {
        assert_eq!(to, NodeId(1));
        assert!(matches!(
            m,
            RelayMessage::Ended {
                reason: EndReason::NotReachable,
                ..
            }
        ));
    }
    assert_eq!(c.nodes[1].server.call_count(), 0);
    // The real caller gets through, once even if the offer is delivered twice.
    let real = offer(alice.clone(), 52);
    for _ in 0..2 {
        c.nodes[1]
            .with_server(|s, now| s.relay_received(NodeId(1), real.clone(), now))
            .unwrap();
    }
    c.nodes[1].run().unwrap();
    assert_eq!(c.nodes[1].server.call_count(), 1);
    let incoming = c.nodes[1].terminals[0]
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::IncomingCall { .. }))
        .count();
    assert_eq!(incoming, 1);
    assert!(c.nodes[1].relayed.is_empty());
}

#[test]
fn relays_that_do_not_fit_their_call_are_refused() {
    let mut c = two_nodes();
    let call = alice_calls_bob(&mut c);
    let bob = c.nodes[1].endpoint(0).unwrap();
    let alice = c.nodes[0].endpoint(0).unwrap();
    let n0 = &mut c.nodes[0];
    // A message about this node's own... from itself.
    assert_eq!(
        n0.with_server(|s, now| s.relay_received(NodeId(1), RelayMessage::NeedCaps { call }, now)),
        Err(ServerError::OwnNode(NodeId(1)))
    );
    // From a node that is not the callee's.
    assert_eq!(
        n0.with_server(|s, now| s.relay_received(NodeId(3), RelayMessage::NeedCaps { call }, now)),
        Err(ServerError::BadRelay(call))
    );
    // A retry is the caller's; bob's node cannot send it.
    let retry = RelayMessage::Retry {
        call,
        capabilities: caps(1280),
    };
    assert_eq!(
        n0.with_server(|s, now| s.relay_received(NodeId(2), retry, now)),
        Err(ServerError::BadRelay(call))
    );
    // An offer numbered outside the sender's range.
    let bad_offer = RelayMessage::Offer {
        call: NodeId(1).call(7),
        from: bob.clone(),
        to: alice.clone(),
        digest: CallDigest {
            caller: caps(1280).fingerprint(),
            callee: caps(1920).fingerprint(),
        },
        capabilities: None,
        media: None,
    };
    assert_eq!(
        n0.with_server(|s, now| s.relay_received(NodeId(2), bad_offer, now)),
        Err(ServerError::BadRelay(NodeId(1).call(7)))
    );
    // A message for a call that is gone is a no-op.
    let gone = RelayMessage::Ended {
        call: NodeId(1).call(999),
        reason: EndReason::Hangup,
    };
    assert_eq!(
        n0.with_server(|s, now| s.relay_received(NodeId(2), gone, now)),
        Ok(())
    );
    // Nothing changed: the call still rings, and nothing was relayed back.
    assert_eq!(n0.server.call_count(), 1);
    assert!(n0.relayed.is_empty());
    let mut single = Server::new(ServerConfig::default());
    assert_eq!(
        single.relay_received(NodeId(2), RelayMessage::NeedCaps { call }, Time::ZERO),
        Err(ServerError::NotClustered)
    );
}

/// Fallback (c) across nodes: the callee asks for the caller's capabilities, the
/// caller's node relays the question and the retry.
#[test]
fn need_caps_and_retry_are_relayed() {
    let mut c = two_nodes();
    let call = alice_calls_bob(&mut c);
    // Bob's terminal asks for the caller's capabilities (as a callee whose view of
    // the caller does not match would).
    c.nodes[1].inject(0, &encode_frame(&ClientMessage::NeedCaps { call }));
    c.nodes[1].run().unwrap();
    assert!(matches!(
        c.nodes[1].relayed.front(),
        Some((NodeId(1), RelayMessage::NeedCaps { .. }))
    ));
    c.sync().unwrap();
    // Alice's client answered with a retry carrying her capabilities, which reached
    // bob's terminal in a second `call_incoming`.
    let with_caps = c.nodes[1]
        .sent
        .iter()
        .filter(|(_, f)| {
            matches!(
                decode_server(f),
                ServerMessage::CallIncoming {
                    capabilities: Some(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(with_caps, 1);
}

// ----- which contact list decides ---------------------------------------------------

/// Two nodes; alice's and bob's terminals on the first, logged in and settled.
fn alice_and_bob_on_the_first_node() -> Cluster {
    let mut c = Cluster::new(&directory(), &[2, 0], &ServerConfig::default());
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    log_in(&mut c.nodes[0], 1, "bob", 1280);
    c.settle().unwrap();
    c
}

/// The record of alice's first session on node 2, listing `contacts`.
fn alices_record_from_node_two(contacts: &[&str]) -> SessionRecord {
    let id = NodeId(2).session(1);
    SessionRecord::new(NodeId(2), id, u("alice"), caps(160), users(contacts))
}

/// A later record of a held session with another list does not override the list of
/// a user who has a session here.
#[test]
fn a_changed_record_does_not_override_a_local_users_list() {
    let mut c = alice_and_bob_on_the_first_node();
    let mut record = alices_record_from_node_two(&["bob"]);
    c.nodes[0]
        .with_server(|s, now| s.remote_online(record.clone(), now))
        .unwrap();
    record.contacts = vec![];
    c.nodes[0]
        .with_server(|s, now| s.remote_online(record.clone(), now))
        .unwrap();
    c.nodes[0].run().unwrap();
    assert!(c.nodes[0].server.entitled(&u("bob"), &u("alice")));
    assert_eq!(table(&c.nodes[0], 1).len(), 2);
}

/// When a user's last local session ends, its remote record's list decides.
#[test]
fn the_records_list_decides_after_the_last_local_session() {
    let mut c = alice_and_bob_on_the_first_node();
    // Alice's terminal on node 2 publishes a list without bob.
    let record = alices_record_from_node_two(&[]);
    c.nodes[0]
        .with_server(|s, now| s.remote_online(record, now))
        .unwrap();
    c.nodes[0].run().unwrap();
    assert_eq!(table(&c.nodes[0], 1).len(), 2);
    c.nodes[0].command(0, |cl, now| cl.logout(now)).unwrap();
    c.nodes[0].run().unwrap();
    assert!(!c.nodes[0].server.entitled(&u("bob"), &u("alice")));
    assert!(users_in(&c.nodes[0], 1).is_empty());
    assert!(c.nodes[0]
        .server
        .contacts_of(&u("alice"))
        .is_some_and(|l| l.is_empty()));
}

/// A user online only remotely who logs in here takes the store's list (the verdict's),
/// not its record's.
#[test]
fn a_local_login_takes_the_stores_list_over_a_records() {
    let mut c = Cluster::new(&directory(), &[2, 0], &ServerConfig::default());
    log_in(&mut c.nodes[0], 1, "bob", 1280);
    c.settle().unwrap();
    let record = alices_record_from_node_two(&[]);
    c.nodes[0]
        .with_server(|s, now| s.remote_online(record, now))
        .unwrap();
    c.nodes[0].run().unwrap();
    assert!(users_in(&c.nodes[0], 1).is_empty());
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    c.nodes[0].run().unwrap();
    // The store lists bob and carol for alice: bob now sees both her terminals.
    assert_eq!(table(&c.nodes[0], 1).len(), 2);
    assert_eq!(users_in(&c.nodes[0], 0), ["bob"]);
    let contacts: Vec<UserId> = c.nodes[0]
        .server
        .contacts_of(&u("alice"))
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert_eq!(contacts, users(&["bob", "carol"]));
}

/// A record's list is held like a login's: without the user, duplicates, in order;
/// 500 entries are accepted.
#[test]
fn a_records_list_is_normalised_and_may_be_full() {
    let mut c = Cluster::new(&directory(), &[1, 0], &ServerConfig::default());
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    c.settle().unwrap();
    let list = users(&["carol", "bob", "alice", "carol"]);
    let record = SessionRecord::new(NodeId(2), NodeId(2).session(1), u("bob"), caps(160), list);
    c.nodes[0]
        .with_server(|s, now| s.remote_online(record, now))
        .unwrap();
    let held: Vec<UserId> = c.nodes[0]
        .server
        .contacts_of(&u("bob"))
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert_eq!(held, users(&["alice", "carol"]));
    let full: Vec<UserId> = (0..500).map(|i| u(&format!("u{i}"))).collect();
    let record = SessionRecord::new(NodeId(2), NodeId(2).session(2), u("dave"), caps(160), full);
    c.nodes[0]
        .with_server(|s, now| s.remote_online(record, now))
        .unwrap();
    assert_eq!(
        c.nodes[0].server.contacts_of(&u("dave")).unwrap().len(),
        500
    );
}

/// An `accepted` for a call already established does not fit it.
#[test]
fn a_second_acceptance_is_refused() {
    let mut c = two_nodes();
    let call = alice_calls_bob(&mut c);
    c.nodes[1]
        .command(0, |cl, now| cl.answer(call, true, now))
        .unwrap();
    c.settle().unwrap();
    let again = RelayMessage::Accepted {
        call,
        capabilities: None,
        media: None,
    };
    assert_eq!(
        c.nodes[0].with_server(|s, now| s.relay_received(NodeId(2), again, now)),
        Err(ServerError::BadRelay(call))
    );
    let need = RelayMessage::NeedCaps { call };
    assert_eq!(
        c.nodes[0].with_server(|s, now| s.relay_received(NodeId(2), need, now)),
        Err(ServerError::BadRelay(call))
    );
}

/// A record's terminal identifier is held, and follows a later record.
#[test]
fn a_records_terminal_identifier_is_held_and_updated() {
    let mut config = ServerConfig::default();
    config.node = Some(NodeId(1));
    let mut server = Server::new(config);
    let id = NodeId(2).session(1);
    let mut record = SessionRecord::new(NodeId(2), id, u("bob"), caps(160), vec![]);
    server.remote_online(record.clone(), Time::ZERO).unwrap();
    assert_eq!(server.remote_sessions().next().unwrap().terminal, None);
    record.terminal = Some(tid("bob-phone"));
    server.remote_online(record, Time::ZERO).unwrap();
    let view = server.remote_sessions().next().unwrap();
    assert_eq!(view.terminal, Some(&tid("bob-phone")));
    assert_eq!(view.node, NodeId(2));
    assert_eq!(view.endpoint.session, id);
}

// ----- relays that the callee's node must refuse or turn away (mutants of relay_received) --

/// An offer with one identifier out of place, whichever it is, is refused: the call
/// numbered by another node, the caller's session of another node, the callee's
/// session not of the receiving node.
#[test]
fn an_offer_with_any_one_identifier_out_of_range_is_refused() {
    let mut c = two_nodes();
    let bob = c.nodes[1].endpoint(0).unwrap();
    let alice = c.nodes[0].endpoint(0).unwrap();
    let offer = |call: CallId, from: Endpoint, to: Endpoint| RelayMessage::Offer {
        call,
        from,
        to,
        digest: CallDigest {
            caller: caps(1920).fingerprint(),
            callee: caps(1280).fingerprint(),
        },
        capabilities: None,
        media: None,
    };
    let elsewhere = |e: &Endpoint| Endpoint {
        user: e.user.clone(),
        session: NodeId(3).session(e.session.0 & 0xffff),
    };
    let cases = [
        offer(NodeId(3).call(60), alice.clone(), bob.clone()),
        offer(NodeId(1).call(61), elsewhere(&alice), bob.clone()),
        offer(NodeId(1).call(62), alice.clone(), elsewhere(&bob)),
    ];
    for m in cases {
        let call = m.call();
        assert_eq!(
            c.nodes[1].with_server(|s, now| s.relay_received(NodeId(1), m, now)),
            Err(ServerError::BadRelay(call))
        );
    }
    assert!(c.nodes[1].relayed.is_empty(), "refused, not answered");
    assert_eq!(c.nodes[1].server.call_count(), 0);
}

/// The offer's caller must be the user of the record held for its session: alice's
/// name on carol's session does not get through, although bob may be called by alice.
#[test]
fn an_offer_naming_another_user_than_the_record_is_not_reachable() {
    let mut c = Cluster::new(&directory(), &[2, 2], &ServerConfig::default());
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    log_in(&mut c.nodes[0], 1, "carol", 640);
    log_in(&mut c.nodes[1], 0, "bob", 1280);
    c.settle().unwrap();
    let bob = c.nodes[1].endpoint(0).unwrap();
    let carol = c.nodes[0].endpoint(1).unwrap();
    let posing = Endpoint {
        user: u("alice"),
        session: carol.session,
    };
    let m = RelayMessage::Offer {
        call: NodeId(1).call(70),
        from: posing,
        to: bob,
        digest: CallDigest {
            caller: caps(1920).fingerprint(),
            callee: caps(1280).fingerprint(),
        },
        capabilities: None,
        media: None,
    };
    c.nodes[1]
        .with_server(|s, now| s.relay_received(NodeId(1), m, now))
        .unwrap();
    assert_eq!(c.nodes[1].server.call_count(), 0);
    assert!(matches!(
        c.nodes[1].relayed.front(),
        Some((
            NodeId(1),
            RelayMessage::Ended {
                reason: EndReason::NotReachable,
                ..
            }
        ))
    ));
}

/// `max_calls_per_session` holds for both parties of an offer: a caller's remote
/// session at the limit, and a callee at the limit, are answered `not_reachable`.
#[test]
fn offers_beyond_the_call_limit_of_either_party_are_not_reachable() {
    let mut config = ServerConfig::default();
    config.max_calls_per_session = 1;
    let mut c = Cluster::new(&directory(), &[2, 2], &config);
    log_in(&mut c.nodes[0], 0, "alice", 1920);
    log_in(&mut c.nodes[0], 1, "alice", 1280);
    log_in(&mut c.nodes[1], 0, "bob", 1280);
    log_in(&mut c.nodes[1], 1, "carol", 640);
    c.settle().unwrap();
    // alice's first terminal calls bob: each is at the limit now.
    let _ = alice_calls_bob(&mut c);
    let first = c.nodes[0].endpoint(0).unwrap();
    let second = c.nodes[0].endpoint(1).unwrap();
    let bob = c.nodes[1].endpoint(0).unwrap();
    let carol = c.nodes[1].endpoint(1).unwrap();
    let offer = |call: u64, from: Endpoint, to: Endpoint| RelayMessage::Offer {
        call: NodeId(1).call(call),
        from,
        to,
        digest: CallDigest {
            caller: caps(1920).fingerprint(),
            callee: caps(640).fingerprint(),
        },
        capabilities: None,
        media: None,
    };
    // The caller at its limit (carol is free).
    let busy_caller = offer(80, first, carol);
    // The callee at its limit (alice's second terminal is free).
    let busy_callee = offer(81, second, bob);
    for m in [busy_caller, busy_callee] {
        c.nodes[1]
            .with_server(|s, now| s.relay_received(NodeId(1), m, now))
            .unwrap();
    }
    let answers: Vec<_> = c.nodes[1].relayed.drain(..).collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    for (_, m) in answers {
        assert!(
            matches!(
                m,
                RelayMessage::Ended {
                    reason: EndReason::NotReachable,
                    ..
                }
            ),
            "{m:?}"
        );
    }
    assert_eq!(c.nodes[1].server.call_count(), 1, "only the first call");
}

/// A retry is the caller's answer to `need_caps`: the caller's node sending one while
/// the call still rings (no `need_caps` asked) is refused.
#[test]
fn a_retry_before_need_caps_is_refused() {
    let mut c = two_nodes();
    let call = alice_calls_bob(&mut c);
    let retry = RelayMessage::Retry {
        call,
        capabilities: caps(1920),
    };
    assert_eq!(
        c.nodes[1].with_server(|s, now| s.relay_received(NodeId(1), retry, now)),
        Err(ServerError::BadRelay(call))
    );
    c.nodes[1].run().unwrap();
    let with_caps = c.nodes[1]
        .sent
        .iter()
        .filter(|(_, f)| {
            matches!(
                decode_server(f),
                ServerMessage::CallIncoming {
                    capabilities: Some(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(with_caps, 0, "no second call_incoming");
}
