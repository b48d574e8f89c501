//! Calls: placed on the fast path or with capabilities, relayed, answered, rung out and
//! ended (spec "Call set-up").

use bytes::Bytes;

use super::{RelayMessage, Server, ServerEvent, Timer};
use crate::caps::{CallDigest, Capabilities};
use crate::error::ErrorCode;
use crate::ids::{CallId, ConnId, Endpoint, ReqId, SessionId, UserId};
use crate::media::MediaDescription;
use crate::message::{EndReason, ServerMessage};
use crate::time::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum CallState {
    /// Relayed to the callee; `caps_sent` if the caller's capabilities went with it.
    Ringing {
        caps_sent: bool,
    },
    /// The callee asked for the caller's capabilities.
    AwaitingCallerCaps,
    Established,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Call {
    pub(super) caller: SessionId,
    pub(super) callee: SessionId,
    pub(super) digest: CallDigest,
    pub(super) state: CallState,
    /// Ring deadline, until the call is established.
    pub(super) deadline: Option<Time>,
    /// The caller's media description, kept while ringing to relay it again with the
    /// retry of the fallback path (spec 10.8); dropped once established.
    pub(super) media: Option<MediaDescription>,
}

/// The fields of a `call` request.
pub(super) struct CallRequest {
    pub(super) req: ReqId,
    pub(super) to: Endpoint,
    pub(super) digest: CallDigest,
    pub(super) capabilities: Option<Capabilities>,
    pub(super) media: Option<MediaDescription>,
}

impl Server {
    pub(super) fn place_call(
        &mut self,
        session: SessionId,
        conn: ConnId,
        request: CallRequest,
        now: Time,
    ) {
        let CallRequest {
            req,
            to,
            digest,
            capabilities,
            media,
        } = request;
        let Some(caller) = self.sessions.get(&session) else {
            return;
        };
        let caller_user = caller.user.clone();
        // A terminal of another node: reachable if held and entitled; its node checks
        // again and decides.
        let remote_node = self
            .remote
            .get(&to.session)
            .filter(|r| r.user == to.user)
            .map(|r| r.node)
            .filter(|_| self.entitled(&caller_user, &to.user));
        if remote_node.is_none() && !self.reachable(&caller_user, &to) {
            // The same answer for offline, unknown and non-contact targets: a call
            // must not reveal presence the caller may not see.
            self.error(conn, ErrorCode::NotReachable, Some(req), None);
            return;
        }
        let max = self.config.max_calls_per_session;
        let busy = |s: &SessionId| {
            self.sessions
                .get(s)
                .map(|s| s.calls.len())
                .or_else(|| self.remote.get(s).map(|r| r.calls.len()))
                .is_none_or(|n| n >= max)
        };
        if busy(&session) || busy(&to.session) {
            self.error(conn, ErrorCode::Busy, Some(req), None);
            return;
        }
        let id = self.new_call_id();
        let caps_sent = capabilities.is_some();
        let deadline = now.after(self.config.ring_timeout);
        self.deadlines.insert((deadline, Timer::Call(id)));
        self.calls.insert(
            id,
            Call {
                caller: session,
                callee: to.session,
                digest,
                state: CallState::Ringing { caps_sent },
                deadline: Some(deadline),
                media: media.clone(),
            },
        );
        self.join_call(id, [session, to.session]);
        self.send(conn, &ServerMessage::CallRinging { req, call: id });
        if let Some(node) = remote_node {
            let from = Endpoint {
                user: caller_user,
                session,
            };
            let message = RelayMessage::Offer {
                call: id,
                from,
                to,
                digest,
                capabilities,
                media,
            };
            self.out.push_back(ServerEvent::Relay { node, message });
            return;
        }
        let Some(callee_conn) = self.peer_conn(to.session) else {
            return;
        };
        self.send(
            callee_conn,
            &ServerMessage::CallIncoming {
                call: id,
                from: Endpoint {
                    user: caller_user,
                    session,
                },
                digest,
                capabilities,
                media,
            },
        );
    }

    /// Whether `to` is an attached terminal of a user `from` may see: the one
    /// condition for relaying anything from `from` to it (calls, capability queries
    /// and replies). A detached terminal cannot answer, so it is not reachable.
    pub(super) fn reachable(&self, from: &UserId, to: &Endpoint) -> bool {
        self.sessions
            .get(&to.session)
            .is_some_and(|s| s.user == to.user && s.link.conn().is_some())
            && self.entitled(from, &to.user)
    }

    /// Relays a capability query (query-first baseline) to the terminal asked.
    pub(super) fn query_caps(
        &mut self,
        session: SessionId,
        conn: ConnId,
        req: ReqId,
        to: Endpoint,
    ) {
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else {
            return;
        };
        let target = self
            .peer_conn(to.session)
            .filter(|_| self.reachable(&user, &to));
        let Some(target) = target else {
            // The same answer as a call to that terminal: no presence is revealed.
            self.error(conn, ErrorCode::NotReachable, Some(req), None);
            return;
        };
        let from = Endpoint { user, session };
        self.send(target, &ServerMessage::CapsQuery { from, req });
    }

    /// Relays the answer to a capability query. The capabilities must be the ones the
    /// server records for the answering session (its own `update_caps` precede the
    /// answer on its connection); an answer to a terminal no longer reachable is
    /// dropped, as the asker is gone or no longer entitled.
    pub(super) fn caps_reply(
        &mut self,
        session: SessionId,
        conn: ConnId,
        to: Endpoint,
        req: ReqId,
        capabilities: Capabilities,
    ) {
        let Some(me) = self.sessions.get(&session) else {
            return;
        };
        if me.caps != capabilities {
            let detail = "caps_reply differs from the session's capabilities".to_owned();
            let msg = ServerMessage::Error {
                code: ErrorCode::InvalidState,
                req: Some(req),
                call: None,
                detail,
                retry_after_ms: None,
            };
            self.send(conn, &msg);
            return;
        }
        let user = me.user.clone();
        let Some(target) = self
            .peer_conn(to.session)
            .filter(|_| self.reachable(&user, &to))
        else {
            return;
        };
        let from = Endpoint { user, session };
        let msg = ServerMessage::CapsResult {
            req,
            from,
            capabilities,
        };
        self.send(target, &msg);
    }

    /// Looks up a call the sender is a party to, answering `unknown_call` otherwise.
    /// Returns the call and whether the sender is the caller.
    pub(super) fn party_call(
        &mut self,
        session: SessionId,
        conn: ConnId,
        call: CallId,
    ) -> Option<(Call, bool)> {
        match self.calls.get(&call) {
            Some(c) if c.caller == session => Some((c.clone(), true)),
            Some(c) if c.callee == session => Some((c.clone(), false)),
            _ => {
                self.error(conn, ErrorCode::UnknownCall, None, Some(call));
                None
            }
        }
    }

    /// The shared `online` frame of a session.
    pub(super) fn frame_of(&self, session: SessionId) -> Option<Bytes> {
        match self.sessions.get(&session) {
            Some(s) => Some(s.online_frame.clone()),
            None => self.remote.get(&session).map(|r| r.online_frame.clone()),
        }
    }

    /// The connection of an attached session.
    pub(super) fn peer_conn(&self, session: SessionId) -> Option<ConnId> {
        self.sessions.get(&session).and_then(|s| s.link.conn())
    }

    pub(super) fn call_retry(
        &mut self,
        session: SessionId,
        conn: ConnId,
        call: CallId,
        caps: Capabilities,
    ) {
        let Some((c, is_caller)) = self.party_call(session, conn, call) else {
            return;
        };
        if !is_caller || c.state != CallState::AwaitingCallerCaps {
            self.error(conn, ErrorCode::InvalidState, None, Some(call));
            return;
        }
        self.ring_with_caps(call, c, caps);
    }

    /// The caller of a call awaiting its capabilities sent them: the call rings again
    /// and the callee gets them, at its client or at its node (8.6.2, 19.4).
    pub(super) fn ring_with_caps(&mut self, call: CallId, c: Call, caps: Capabilities) {
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.state = CallState::Ringing { caps_sent: true };
        }
        let Some(user) = self.party_user(c.caller).cloned() else {
            return;
        };
        if let Some(peer) = self.peer_conn(c.callee) {
            let from = Endpoint {
                user,
                session: c.caller,
            };
            self.send(
                peer,
                &ServerMessage::CallIncoming {
                    call,
                    from,
                    digest: c.digest,
                    capabilities: Some(caps),
                    media: c.media,
                },
            );
        } else {
            let message = RelayMessage::Retry {
                call,
                capabilities: caps,
            };
            self.relay_to(c.callee, message);
        }
    }

    /// Checks the sender is the callee of a ringing call.
    pub(super) fn ringing_for_callee(
        &mut self,
        session: SessionId,
        conn: ConnId,
        call: CallId,
    ) -> Option<(Call, bool)> {
        let (c, is_caller) = self.party_call(session, conn, call)?;
        match c.state {
            CallState::Ringing { caps_sent } if !is_caller => Some((c, caps_sent)),
            _ => {
                self.error(conn, ErrorCode::InvalidState, None, Some(call));
                None
            }
        }
    }

    pub(super) fn call_accept(
        &mut self,
        session: SessionId,
        conn: ConnId,
        call: CallId,
        caps: Option<Capabilities>,
        media: Option<MediaDescription>,
    ) {
        let Some((c, _)) = self.ringing_for_callee(session, conn, call) else {
            return;
        };
        self.establish(call, c.caller, caps, media);
    }

    /// The callee accepted a ringing call: it is established (its ring-out deadline
    /// dropped) and the caller is told, at its client or at its node.
    pub(super) fn establish(
        &mut self,
        call: CallId,
        caller: SessionId,
        caps: Option<Capabilities>,
        media: Option<MediaDescription>,
    ) {
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.state = CallState::Established;
            entry.media = None;
            if let Some(d) = entry.deadline.take() {
                self.deadlines.remove(&(d, Timer::Call(call)));
            }
        }
        if let Some(peer) = self.peer_conn(caller) {
            self.send(
                peer,
                &ServerMessage::CallAccepted {
                    call,
                    capabilities: caps,
                    media,
                },
            );
        } else {
            let message = RelayMessage::Accepted {
                call,
                capabilities: caps,
                media,
            };
            self.relay_to(caller, message);
        }
    }

    pub(super) fn call_need_caps(&mut self, session: SessionId, conn: ConnId, call: CallId) {
        let Some((c, caps_sent)) = self.ringing_for_callee(session, conn, call) else {
            return;
        };
        if caps_sent {
            // The callee already has the caller's capabilities: asking again would loop.
            self.error(conn, ErrorCode::InvalidState, None, Some(call));
            return;
        }
        self.ask_caller_caps(call, c.caller);
    }

    /// The callee asked for the caller's capabilities: the call awaits them and the
    /// caller is asked, at its client or at its node (8.6.2, 19.4).
    pub(super) fn ask_caller_caps(&mut self, call: CallId, caller: SessionId) {
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.state = CallState::AwaitingCallerCaps;
        }
        if let Some(peer) = self.peer_conn(caller) {
            self.send(peer, &ServerMessage::CallNeedCaps { call });
        } else {
            self.relay_to(caller, RelayMessage::NeedCaps { call });
        }
    }

    pub(super) fn call_reject(&mut self, session: SessionId, conn: ConnId, call: CallId) {
        let Some((c, is_caller)) = self.party_call(session, conn, call) else {
            return;
        };
        if is_caller || c.state == CallState::Established {
            self.error(conn, ErrorCode::InvalidState, None, Some(call));
            return;
        }
        self.end_call(call, session, EndReason::Rejected);
    }

    pub(super) fn call_hangup(&mut self, session: SessionId, conn: ConnId, call: CallId) {
        if self.party_call(session, conn, call).is_some() {
            self.end_call(call, session, EndReason::Hangup);
        }
    }

    /// Removes a call and tells the party other than `by`.
    pub(super) fn end_call(&mut self, call: CallId, by: SessionId, reason: EndReason) {
        let Some(c) = self.calls.remove(&call) else {
            return;
        };
        if let Some(d) = c.deadline {
            self.deadlines.remove(&(d, Timer::Call(call)));
        }
        for s in [c.caller, c.callee] {
            if let Some(s) = self.sessions.get_mut(&s) {
                s.calls.remove(&call);
            }
            if let Some(r) = self.remote.get_mut(&s) {
                r.calls.remove(&call);
            }
        }
        let other = if c.caller == by { c.callee } else { c.caller };
        self.tell_ended(other, call, reason);
    }

    /// Tells a party that a call ended: its client if local and attached, its node if
    /// it lives on another.
    pub(super) fn tell_ended(&mut self, party: SessionId, call: CallId, reason: EndReason) {
        if let Some(peer) = self.peer_conn(party) {
            self.send(peer, &ServerMessage::CallEnded { call, reason });
        } else {
            self.relay_to(party, RelayMessage::Ended { call, reason });
        }
    }

    /// Relays a call message to the node of a remote session (nothing if not remote).
    pub(super) fn relay_to(&mut self, party: SessionId, message: RelayMessage) {
        if let Some(node) = self.remote.get(&party).map(|r| r.node) {
            self.out.push_back(ServerEvent::Relay { node, message });
        }
    }

    /// Records a new call in its parties' sessions, local or remote.
    pub(super) fn join_call(&mut self, call: CallId, parties: [SessionId; 2]) {
        for s in parties {
            if let Some(s) = self.sessions.get_mut(&s) {
                s.calls.insert(call);
            }
            if let Some(r) = self.remote.get_mut(&s) {
                r.calls.insert(call);
            }
        }
    }

    /// The user of a session, local or remote.
    pub(super) fn party_user(&self, session: SessionId) -> Option<&UserId> {
        match self.sessions.get(&session) {
            Some(s) => Some(&s.user),
            None => self.remote.get(&session).map(|r| &r.user),
        }
    }

    /// Removes a call and tells both parties.
    pub(super) fn end_call_both(&mut self, call: CallId, reason: EndReason) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let caller = c.caller;
        self.tell_ended(caller, call, reason);
        self.end_call(call, caller, reason);
    }
}
