//! Clustering (spec "Clustering"): the records a clustered node publishes for its own
//! sessions, and the sessions of other nodes it holds so that visibility, the login
//! snapshot and the presence fan-out treat them like its own.
//!
//! A remote session is kept in `Server::remote` and listed among its user's sessions
//! in `users`, so the entitlement rule, the snapshot and the fan-out walk it like a
//! local one; only pushes *to* it are skipped (its own node writes to its client).
//! Which contact list decides a user's entitlement: the local one while the user has a
//! session on this node (read from the shared store at login, changed by its requests),
//! otherwise the list in its latest applied remote record.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::call::{Call, CallState};
use super::session::online_frame;
use super::users::UserIdx;
use super::{
    over_or_at, RelayMessage, Server, ServerError, ServerEvent, SessionRecord, MAX_CONTACTS,
};
use crate::caps::Capabilities;
use crate::codec::encode_frame;
use crate::ids::{CallId, Endpoint, NodeId, SessionId, TerminalId, UserId};
use crate::message::{EndReason, ServerMessage};
use crate::time::Time;

/// A session of another node, as its latest applied record describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Remote {
    pub(super) node: NodeId,
    pub(super) user: UserId,
    pub(super) terminal: Option<TerminalId>,
    pub(super) caps: Capabilities,
    /// The user's contact list in the record, normalised (name order, no duplicates,
    /// not the user, cut at the limit).
    pub(super) contacts: Vec<UserId>,
    /// Its `online` push, encoded once.
    pub(super) online_frame: Bytes,
    /// Calls between it and a local session.
    pub(super) calls: BTreeSet<CallId>,
}

/// A read-only view of one session of another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteView<'a> {
    /// The node it lives on.
    pub node: NodeId,
    /// The terminal.
    pub endpoint: Endpoint,
    /// Its capabilities, as last published.
    pub capabilities: &'a Capabilities,
    /// The registered terminal identifier it logged in with, if its record names one.
    pub terminal: Option<&'a TerminalId>,
}

impl Server {
    /// This node's id, or [`ServerError::NotClustered`].
    fn own_node(&self) -> Result<NodeId, ServerError> {
        self.config.node.ok_or(ServerError::NotClustered)
    }

    /// A session of another node came online, or its record changed (capabilities,
    /// its user's contact list): the registry delivered `record` (spec "Clustering").
    ///
    /// Local users entitled to see the record's user are pushed `online` for it,
    /// exactly as for a local session; a record equal to the one held (a redelivery)
    /// changes nothing and pushes nothing. Nothing is published back. Fails, changing
    /// nothing, on a server without a node id, a record of this node, a session not
    /// numbered in its node's range or naming another user than before, a record over
    /// the size limits, or a new session beyond [`Limits::max_remote_sessions`](crate::server::Limits::max_remote_sessions).
    pub fn remote_online(&mut self, record: SessionRecord, now: Time) -> Result<(), ServerError> {
        let _ = now;
        let own = self.own_node()?;
        let id = record.session;
        if record.node == own {
            return Err(ServerError::OwnNode(own));
        }
        if id.node() != record.node {
            return Err(ServerError::RemoteMismatch(id));
        }
        if record.contacts.len() > MAX_CONTACTS || self.caps_too_large(&record.capabilities) {
            return Err(ServerError::RemoteTooLarge(id));
        }
        let contacts = self.normalise(&record.user, record.contacts);
        match self.remote.get(&id) {
            Some(r) if r.user != record.user || r.node != record.node => {
                Err(ServerError::RemoteMismatch(id))
            }
            Some(r) => {
                let caps_changed = r.caps != record.capabilities;
                let list_changed = r.contacts != contacts;
                if let Some(r) = self.remote.get_mut(&id) {
                    r.terminal = record.terminal;
                }
                if list_changed {
                    if let Some(r) = self.remote.get_mut(&id) {
                        r.contacts = contacts.clone();
                    }
                    if !self.has_local_sessions(&record.user) {
                        self.set_contact_list(&record.user, &contacts);
                    }
                }
                if caps_changed {
                    let frame = online_frame(&record.user, id, &record.capabilities);
                    if let Some(r) = self.remote.get_mut(&id) {
                        r.caps = record.capabilities;
                        r.online_frame = frame.clone();
                    }
                    if let Some(me) = self.users.lookup(&record.user) {
                        self.push_to_watchers(me, &frame, None);
                    }
                }
                Ok(())
            }
            None => {
                if over_or_at(self.remote.len(), self.config.limits.max_remote_sessions) {
                    return Err(ServerError::TooManyRemoteSessions(id));
                }
                let user = record.user;
                if self.users.by_name(&user).is_some() && !self.has_local_sessions(&user) {
                    self.set_contact_list(&user, &contacts);
                }
                let me = self.users.come_online(&user, &contacts);
                self.users.add_session(me, id);
                let user = self.users.name(me).cloned().unwrap_or(user);
                let frame = online_frame(&user, id, &record.capabilities);
                self.remote.insert(
                    id,
                    Remote {
                        node: record.node,
                        user,
                        terminal: record.terminal,
                        caps: record.capabilities,
                        contacts,
                        online_frame: frame.clone(),
                        calls: BTreeSet::new(),
                    },
                );
                self.push_to_watchers(me, &frame, None);
                Ok(())
            }
        }
    }

    /// A session of another node changed its capabilities. The same as
    /// [`Server::remote_online`] with the held record's other fields; a session not
    /// held (its record not delivered yet, or already deleted) is a no-op.
    pub fn remote_caps_changed(
        &mut self,
        session: SessionId,
        capabilities: Capabilities,
        now: Time,
    ) -> Result<(), ServerError> {
        let own = self.own_node()?;
        if session.node() == own {
            return Err(ServerError::OwnNode(own));
        }
        let Some(r) = self.remote.get(&session) else {
            return Ok(());
        };
        let record = SessionRecord {
            node: r.node,
            session,
            user: r.user.clone(),
            terminal: r.terminal.clone(),
            capabilities,
            contacts: r.contacts.clone(),
        };
        self.remote_online(record, now)
    }

    /// A session of another node went offline (its record was deleted): local users
    /// who saw it are pushed `offline`, and its calls end. A session not held (already
    /// gone, or never delivered) is a no-op, so a redelivered deletion is harmless.
    pub fn remote_offline(&mut self, session: SessionId, now: Time) -> Result<(), ServerError> {
        let _ = now;
        let own = self.own_node()?;
        if session.node() == own {
            return Err(ServerError::OwnNode(own));
        }
        self.end_remote(session);
        Ok(())
    }

    /// Another node is gone (its lease in the registry expired, spec "Clustering"):
    /// every session of it held here goes offline, as with [`Server::remote_offline`].
    /// Returns how many there were.
    pub fn remote_node_gone(&mut self, node: NodeId, now: Time) -> Result<usize, ServerError> {
        let _ = now;
        let own = self.own_node()?;
        if node == own {
            return Err(ServerError::OwnNode(own));
        }
        let gone: Vec<SessionId> = self
            .remote
            .iter()
            .filter(|(_, r)| r.node == node)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.end_remote(*id);
        }
        Ok(gone.len())
    }

    /// A call message relayed from node `from` ([`ServerEvent::Relay`] there), for a
    /// call between a terminal of that node and one of this node (spec "Clustering").
    ///
    /// An offer rings the local callee (`call_incoming`) if it is an attached
    /// terminal entitled to be called by the caller, whose record this node holds,
    /// and not busy; otherwise the offer is answered with
    /// [`RelayMessage::Ended`] `not_reachable`. The others move the call as the
    /// corresponding client message would at a single node, and tell the local party.
    /// A message for a call that no longer exists (it ended meanwhile), and a repeated
    /// offer, are no-ops. Fails with [`ServerError::BadRelay`], changing nothing, for
    /// a message that does not fit its call (identifiers outside the sending node's
    /// range, a party not of the sending node, or out of the call's state), and with
    /// [`ServerError::OwnNode`] or [`ServerError::NotClustered`] like the other
    /// remote inputs.
    pub fn relay_received(
        &mut self,
        from: NodeId,
        message: RelayMessage,
        now: Time,
    ) -> Result<(), ServerError> {
        let _ = now;
        let own = self.own_node()?;
        if from == own {
            return Err(ServerError::OwnNode(own));
        }
        let call = message.call();
        if let RelayMessage::Offer {
            call,
            from: caller,
            to,
            digest,
            capabilities,
            media,
        } = message
        {
            if call.node() != from || caller.session.node() != from || to.session.node() != own {
                return Err(ServerError::BadRelay(call));
            }
            if self.calls.contains_key(&call) {
                return Ok(());
            }
            let max = self.config.max_calls_per_session;
            let held = self
                .remote
                .get(&caller.session)
                .is_some_and(|r| r.user == caller.user && r.calls.len() < max);
            let free = self
                .sessions
                .get(&to.session)
                .is_some_and(|s| s.calls.len() < max);
            let conn = self.peer_conn(to.session);
            let Some(conn) = conn.filter(|_| held && free && self.reachable(&caller.user, &to))
            else {
                let reason = EndReason::NotReachable;
                let message = RelayMessage::Ended { call, reason };
                self.out.push_back(ServerEvent::Relay {
                    node: from,
                    message,
                });
                return Ok(());
            };
            let caps_sent = capabilities.is_some();
            self.calls.insert(
                call,
                Call {
                    caller: caller.session,
                    callee: to.session,
                    digest,
                    state: CallState::Ringing { caps_sent },
                    // The caller's node rings the call out and tells this one.
                    deadline: None,
                    media: media.clone(),
                },
            );
            self.join_call(call, [caller.session, to.session]);
            let incoming = ServerMessage::CallIncoming {
                call,
                from: caller,
                digest,
                capabilities,
                media,
            };
            self.send(conn, &incoming);
            return Ok(());
        }
        let Some(c) = self.calls.get(&call).cloned() else {
            return Ok(());
        };
        let of_sender = |s: &SessionId| self.remote.get(s).is_some_and(|r| r.node == from);
        let (remote_party, caller_remote) = match (of_sender(&c.caller), of_sender(&c.callee)) {
            (true, false) => (c.caller, true),
            (false, true) => (c.callee, false),
            _ => return Err(ServerError::BadRelay(call)),
        };
        match message {
            RelayMessage::Accepted {
                capabilities,
                media,
                ..
            } if !caller_remote && matches!(c.state, CallState::Ringing { .. }) => {
                self.establish(call, c.caller, capabilities, media);
            }
            RelayMessage::NeedCaps { .. }
                if !caller_remote && c.state == (CallState::Ringing { caps_sent: false }) =>
            {
                self.ask_caller_caps(call, c.caller);
            }
            RelayMessage::Retry { capabilities, .. }
                if caller_remote && c.state == CallState::AwaitingCallerCaps =>
            {
                self.ring_with_caps(call, c, capabilities);
            }
            RelayMessage::Ended { reason, .. } => self.end_call(call, remote_party, reason),
            _ => return Err(ServerError::BadRelay(call)),
        }
        Ok(())
    }

    /// Every session of other nodes held, in session order.
    pub fn remote_sessions(&self) -> impl Iterator<Item = RemoteView<'_>> {
        self.remote.iter().map(|(id, r)| RemoteView {
            node: r.node,
            endpoint: Endpoint {
                user: r.user.clone(),
                session: *id,
            },
            capabilities: &r.caps,
            terminal: r.terminal.as_ref(),
        })
    }

    /// Drops a remote session: its watchers are pushed `offline`, its calls end, and
    /// its user goes offline here if it has no session left.
    pub(super) fn end_remote(&mut self, id: SessionId) {
        let Some(r) = self.remote.remove(&id) else {
            return;
        };
        for call in &r.calls {
            self.end_call(*call, id, EndReason::PeerGone);
        }
        let frame = encode_frame(&ServerMessage::Offline(Endpoint {
            user: r.user.clone(),
            session: id,
        }));
        if let Some(me) = self.users.lookup(&r.user) {
            self.push_to_watchers(me, &frame, None);
            if self.users.remove_session(me, id) {
                self.users.go_offline(me);
            }
        }
    }

    /// A contact list as a record or a login gives it, the way the server holds it:
    /// in name order, without duplicates or the user, cut at the limit.
    pub(super) fn normalise(&self, user: &UserId, contacts: Vec<UserId>) -> Vec<UserId> {
        let mut list: Vec<UserId> = contacts.into_iter().filter(|c| c != user).collect();
        list.sort_unstable();
        list.dedup();
        list.truncate(self.max_contacts());
        list
    }

    /// Whether `user` has a session on this node.
    pub(super) fn has_local_sessions(&self, user: &UserId) -> bool {
        self.users
            .by_name(user)
            .is_some_and(|(_, u)| u.sessions().iter().any(|s| self.sessions.contains_key(s)))
    }

    /// Makes an online user's contact list `list` (normalised), one change at a time,
    /// with the presence each change implies (as an administrator's change would).
    pub(super) fn set_contact_list(&mut self, user: &UserId, list: &[UserId]) {
        let Some((me, _)) = self.users.by_name(user) else {
            return;
        };
        let held: Vec<UserId> = self.users.contact_names(me).into_iter().cloned().collect();
        for c in held.iter().filter(|c| list.binary_search(c).is_err()) {
            self.apply_roster_change(user, c, false, None);
        }
        for c in list.iter().filter(|c| held.binary_search(c).is_err()) {
            self.apply_roster_change(user, c, true, None);
        }
    }

    /// After a user's last local session ended while it has sessions on other nodes:
    /// its entitlement follows the list of one of their records again.
    pub(super) fn adopt_remote_list(&mut self, me: UserIdx) {
        let Some(first) = self
            .users
            .get(me)
            .and_then(|u| u.sessions().iter().find_map(|s| self.remote.get(s)))
        else {
            return;
        };
        let (user, list) = (first.user.clone(), first.contacts.clone());
        self.set_contact_list(&user, &list);
    }

    /// The record of a local session, as published.
    pub(super) fn record_of(&self, id: SessionId) -> Option<SessionRecord> {
        let node = self.config.node?;
        let s = self.sessions.get(&id)?;
        let contacts = self
            .users
            .by_name(&s.user)
            .map(|(me, _)| self.users.contact_names(me).into_iter().cloned().collect())
            .unwrap_or_default();
        Some(SessionRecord {
            node,
            session: id,
            user: s.user.clone(),
            terminal: s.terminal.clone(),
            capabilities: s.caps.clone(),
            contacts,
        })
    }

    /// Clustered nodes: publishes the record of a local session.
    pub(super) fn publish(&mut self, id: SessionId) {
        if let Some(record) = self.record_of(id) {
            self.out.push_back(ServerEvent::Publish(record));
        }
    }

    /// Clustered nodes: publishes the records of every local session of `user` (its
    /// contact list changed).
    pub(super) fn publish_user(&mut self, user: &UserId) {
        if self.config.node.is_none() {
            return;
        }
        let own: Vec<SessionId> = self
            .users
            .by_name(user)
            .map(|(_, u)| {
                u.sessions()
                    .iter()
                    .copied()
                    .filter(|s| self.sessions.contains_key(s))
                    .collect()
            })
            .unwrap_or_default();
        for s in own {
            self.publish(s);
        }
    }

    /// Clustered nodes: deletes the record of a local session that ended.
    pub(super) fn unpublish(&mut self, session: SessionId, user: UserId) {
        if let Some(node) = self.config.node {
            self.out.push_back(ServerEvent::Unpublish {
                node,
                session,
                user,
            });
        }
    }

    /// A new session identifier: in this node's range if clustered.
    pub(super) fn new_session_id(&mut self) -> SessionId {
        let n = self.next_session;
        self.next_session += 1;
        match self.config.node {
            Some(node) => node.session(n),
            None => SessionId(n),
        }
    }

    /// A new call identifier: in this node's range if clustered.
    pub(super) fn new_call_id(&mut self) -> CallId {
        let n = self.next_call;
        self.next_call += 1;
        match self.config.node {
            Some(node) => node.call(n),
            None => CallId(n),
        }
    }
}
