//! The spec's invariants as executable checks (spec section "Invariants").
//!
//! Each check is written from the spec's wording against the *observable* state of a
//! [`Server`] and its [`Client`]s, not by calling the server's own decision functions,
//! so a bug in the server's rules shows up as a violation here. The same functions are
//! used by the unit and property tests, the stateright model and the fuzz targets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::caps::Capabilities;
use crate::client::{CallState, Client, Role, Status};
use crate::codec::{decode_message, HEADER_LEN};
use crate::ids::{CallId, ConnId, Endpoint, UserId};
use crate::message::ServerMessage;
use crate::negotiate::negotiate_pair;
use crate::server::{Contacts, Server};

/// An invariant that does not hold, with its spec identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantViolation {
    /// The spec's invariant identifier, e.g. `INV-ONLINE-EXACT`.
    pub id: &'static str,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id, self.detail)
    }
}

impl std::error::Error for InvariantViolation {}

fn fail(id: &'static str, detail: String) -> Result<(), InvariantViolation> {
    Err(InvariantViolation { id, detail })
}

/// `INV-VISIBILITY` as a predicate over the server's state: `watcher` may see
/// `subject` iff they are different users, both online, each listing the other.
pub fn may_see(server: &Server, watcher: &UserId, subject: &UserId) -> bool {
    watcher != subject
        && server
            .contacts_of(watcher)
            .is_some_and(|c| c.contains(subject))
        && server
            .contacts_of(subject)
            .is_some_and(|c| c.contains(watcher))
}

/// `INV-VISIBILITY`, per frame: a frame the server transmits carries capabilities of a
/// terminal (`online`, `call_incoming` with capabilities, `caps_result`) only to a session whose
/// user may see that terminal's user, judged against the server's state right after it
/// decided to send the frame. Frames to a connection that no longer has a session (queued
/// before a close) are not judged: the client deletes everything on close.
pub fn frame_visible(
    server: &Server,
    conn: ConnId,
    frame: &[u8],
) -> Result<(), InvariantViolation> {
    let Some(payload) = frame.get(HEADER_LEN..) else {
        return Ok(());
    };
    let subject = match decode_message::<ServerMessage>(payload) {
        Ok(ServerMessage::Online(p)) => p.user,
        Ok(ServerMessage::CallIncoming {
            from,
            capabilities: Some(_),
            ..
        }) => from.user,
        Ok(ServerMessage::CapsResult { from, .. }) => from.user,
        _ => return Ok(()),
    };
    match server.user_of(conn) {
        Some(w) if !may_see(server, w, &subject) => fail(
            "INV-VISIBILITY",
            format!("capabilities of {subject} sent to {w}"),
        ),
        _ => Ok(()),
    }
}

/// What a logged-in client of `user` must hold when nothing is in flight: every online
/// terminal of every user it may see, with the server's record of its capabilities.
pub fn expected_table(server: &Server, user: &UserId) -> BTreeMap<Endpoint, Capabilities> {
    expected_table_across(&[server], user)
}

/// A user's contact list as its home node holds it: the list of a server on which the
/// user has a session of its own (in a cluster, other nodes hold copies from records).
fn home_contacts<'a>(servers: &[&'a Server], user: &UserId) -> Option<Contacts<'a>> {
    servers
        .iter()
        .find(|s| s.sessions().any(|v| v.endpoint.user == *user))
        .and_then(|s| s.contacts_of(user))
}

/// [`may_see`] across the nodes of a cluster: each user's list is its home node's.
pub fn may_see_across(servers: &[&Server], watcher: &UserId, subject: &UserId) -> bool {
    watcher != subject
        && home_contacts(servers, watcher).is_some_and(|c| c.contains(subject))
        && home_contacts(servers, subject).is_some_and(|c| c.contains(watcher))
}

/// [`expected_table`] across the nodes of a cluster (spec "Clustering"): every terminal
/// online on any node whose user `user` may see, with its node's record of its
/// capabilities.
pub fn expected_table_across(
    servers: &[&Server],
    user: &UserId,
) -> BTreeMap<Endpoint, Capabilities> {
    servers
        .iter()
        .flat_map(|s| s.sessions())
        .filter(|s| may_see_across(servers, user, &s.endpoint.user))
        .map(|s| (s.endpoint, s.capabilities.clone()))
        .collect()
}

/// `INV-PARAMS-FRESH` (C1), at every moment: every table entry's parameters are
/// [`negotiate_pair`] of the client's current capabilities and the entry's, and its
/// fingerprint is the entry's capabilities' fingerprint.
pub fn params_fresh(client: &Client) -> Result<(), InvariantViolation> {
    let Some(own) = client.capabilities() else {
        return Ok(());
    };
    for (endpoint, peer) in client.peers() {
        if peer.fingerprint != peer.capabilities.fingerprint() {
            return fail("INV-PARAMS-FRESH", format!("{endpoint}: stale fingerprint"));
        }
        if peer.params != negotiate_pair(own, &peer.capabilities) {
            return fail(
                "INV-PARAMS-FRESH",
                format!("{endpoint}: parameters not negotiated from current capabilities"),
            );
        }
    }
    Ok(())
}

/// `INV-LOGOUT-EMPTY` (C5), at every moment: a client that is not logged in holds no
/// capabilities, no parameters, no contacts and no calls. A detached (or resuming)
/// session is still logged in: it keeps its table but holds no call.
pub fn logout_empty(client: &Client) -> Result<(), InvariantViolation> {
    match client.status() {
        Status::Online => return Ok(()),
        Status::Detached | Status::Resuming => {
            return match client.calls().count() {
                0 => Ok(()),
                n => fail(
                    "INV-LOGOUT-EMPTY",
                    format!("detached client holds {n} calls"),
                ),
            }
        }
        _ => {}
    }
    let held = client.peers().count() + client.calls().count() + client.contacts().count();
    if held > 0 || client.capabilities().is_some() {
        return fail(
            "INV-LOGOUT-EMPTY",
            format!("{:?} client holds {held} entries", client.status()),
        );
    }
    Ok(())
}

/// `INV-ONLINE-EXACT` (C1, C4, C6, C9), when nothing is in flight: each logged-in
/// client holds exactly the online terminals of the users it may see, each with the
/// server's current record of its capabilities, its contact list equals the server's,
/// and its own capabilities equal the server's record of its session.
pub fn online_exact<'a>(
    server: &Server,
    clients: impl IntoIterator<Item = &'a Client>,
) -> Result<(), InvariantViolation> {
    online_exact_across(&[server], clients)
}

/// `INV-ONLINE-EXACT` across the nodes of a cluster, at quiescence (spec "Clustering"):
/// the registry delivered every change and nothing is in flight. Each logged-in client
/// of any node holds exactly the terminals online on *all* nodes of the users it may
/// see (each user's contact list being its home node's), with their nodes' records of
/// their capabilities; its own contact list and capabilities are its node's.
pub fn online_exact_across<'a>(
    servers: &[&Server],
    clients: impl IntoIterator<Item = &'a Client>,
) -> Result<(), InvariantViolation> {
    let sessions: BTreeMap<Endpoint, &Capabilities> = servers
        .iter()
        .flat_map(|s| s.sessions())
        .map(|s| (s.endpoint, s.capabilities))
        .collect();
    for client in clients {
        if client.status() != Status::Online {
            continue;
        }
        let (Some(me), Some(own)) = (client.endpoint(), client.capabilities()) else {
            continue;
        };
        let Some(record) = sessions.get(&me) else {
            return fail(
                "INV-ONLINE-EXACT",
                format!("{me} is logged in but the server has no such session"),
            );
        };
        // A client that waits to send its capabilities again after `caps_throttled`
        // is not quiescent (spec section 12): its own record is not yet the server's.
        if *record != own && !client.caps_in_flight() {
            return fail(
                "INV-ONLINE-EXACT",
                format!("{me}: own capabilities differ from the server's record"),
            );
        }
        let contacts: BTreeSet<&UserId> = client.contacts().collect();
        let server_contacts: BTreeSet<&UserId> = home_contacts(servers, &me.user)
            .map(|c| c.iter().collect())
            .unwrap_or_default();
        if contacts != server_contacts {
            return fail(
                "INV-ONLINE-EXACT",
                format!("{me}: contact list differs from the server's"),
            );
        }
        let expected = expected_table_across(servers, &me.user);
        let held: BTreeMap<&Endpoint, &Capabilities> =
            client.peers().map(|(e, p)| (e, &p.capabilities)).collect();
        for (e, caps) in &expected {
            match held.get(e) {
                None => return fail("INV-ONLINE-EXACT", format!("{me} misses {e}")),
                Some(c) if *c != caps => {
                    return fail(
                        "INV-ONLINE-EXACT",
                        format!("{me} holds stale capabilities of {e}"),
                    )
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = held.keys().find(|e| !expected.contains_key(e)) {
            return fail(
                "INV-ONLINE-EXACT",
                format!("{me} holds {extra}, which it may not see or is offline"),
            );
        }
        params_fresh(client)?;
    }
    Ok(())
}

/// `INV-CALL-AGREE`, at every moment: when both ends of a call consider it
/// established, their parameters mirror each other exactly.
pub fn calls_agree<'a>(
    clients: impl IntoIterator<Item = &'a Client>,
) -> Result<(), InvariantViolation> {
    let mut ends: BTreeMap<CallId, Vec<(Role, &crate::caps::CallParams)>> = BTreeMap::new();
    for client in clients {
        for (id, call) in client.calls() {
            if call.state == CallState::Established {
                if let Some(p) = &call.params {
                    ends.entry(*id).or_default().push((call.role, p));
                }
            }
        }
    }
    for (id, list) in ends {
        let caller = list.iter().find(|(r, _)| *r == Role::Caller);
        let callee = list.iter().find(|(r, _)| *r == Role::Callee);
        if let (Some((_, a)), Some((_, b))) = (caller, callee) {
            if a.mirrored() != **b {
                return fail(
                    "INV-CALL-AGREE",
                    format!("call {id}: caller and callee parameters differ"),
                );
            }
        }
    }
    Ok(())
}

/// Every invariant that holds at every moment, for every client.
pub fn always<'a>(
    clients: impl IntoIterator<Item = &'a Client> + Clone,
) -> Result<(), InvariantViolation> {
    for c in clients.clone() {
        params_fresh(c)?;
        logout_empty(c)?;
    }
    calls_agree(clients)
}
