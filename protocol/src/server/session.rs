//! Sessions: started after a login, detached and resumed (spec "Resumable sessions"),
//! ended; their capabilities and the table frames their clients are sent.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::users::UserIdx;
use super::{count_down, over_or_at, ConnState, Link, Server, ServerEvent, Session, Timer, Window};
use crate::caps::Capabilities;
use crate::codec::{decode_message, encode_frame, HEADER_LEN};
use crate::error::ErrorCode;
use crate::ids::{CallId, ConnId, Endpoint, SessionId, TerminalId, UserId};
use crate::message::{EndReason, Presence, ServerMessage, PROTOCOL_VERSION};
use crate::resume::{ResumeConfig, ResumeToken};
use crate::time::Time;

pub(super) fn online_frame(user: &UserId, session: SessionId, caps: &Capabilities) -> Bytes {
    encode_frame(&ServerMessage::Online(Presence {
        user: user.clone(),
        session,
        capabilities: caps.clone(),
    }))
}

/// The bytes a resume's snapshot is weighed by against a delta (spec section 9.9.4):
/// its `online` frames whole, plus each contact's name with its quotes and comma in
/// `resumed.contacts` (3 bytes).
pub(super) fn snapshot_cost(frames: &[Bytes], contacts: &[UserId]) -> usize {
    frames.iter().map(Bytes::len).sum::<usize>()
        + contacts.iter().map(|c| c.as_str().len() + 3).sum::<usize>()
}

/// [`Server::push_table`] on the parts of the server it touches, so that a fan-out can
/// walk the users while it pushes.
pub(super) fn push_table_in(
    resume: &ResumeConfig,
    sessions: &mut BTreeMap<SessionId, Session>,
    out: &mut VecDeque<ServerEvent>,
    session: SessionId,
    frame: Bytes,
) {
    let Some(s) = sessions.get_mut(&session) else {
        return;
    };
    let keep = match s.link {
        Link::Attached(_) => resume.tail_frames.min(resume.log_frames),
        Link::Detached { .. } => resume.log_frames,
    };
    s.seq += 1;
    if resume.enabled() && keep > 0 {
        while s.log.len() >= keep {
            s.log.pop_front();
        }
        s.log.push_back((s.seq, frame.clone()));
    }
    if let Some(conn) = s.link.conn() {
        out.push_back(ServerEvent::Transmit { conn, frame });
    }
}

impl Server {
    pub(super) fn start_session(
        &mut self,
        conn: ConnId,
        user: UserId,
        caps: Capabilities,
        terminal: Option<TerminalId>,
        contacts: Vec<UserId>,
        now: Time,
    ) {
        let id = self.new_session_id();
        // A user already online here keeps its contact list; the verdict's is read at
        // the first login: in name order, without duplicates or the user, cut at the
        // limit. A user online only on other nodes takes the verdict's list (the
        // shared store's, fresher than their records).
        let contact_list: Vec<UserId> = match self.users.by_name(&user) {
            Some((me, _)) if self.has_local_sessions(&user) => {
                self.users.contact_names(me).into_iter().cloned().collect()
            }
            Some(_) => {
                let list = self.normalise(&user, contacts);
                self.set_contact_list(&user, &list);
                list
            }
            None => self.normalise(&user, contacts),
        };
        let me = self.users.come_online(&user, &contact_list);
        self.users.add_session(me, id);
        // The held copy of the name, shared.
        let user = self.users.name(me).cloned().unwrap_or(user);
        let online_frame = online_frame(&user, id, &caps);
        let token = self
            .config
            .resume
            .enabled()
            .then(|| ResumeToken::derive(&self.config.resume.secret, id));
        if let Some(t) = &token {
            self.tokens.insert(t.clone(), id);
        }
        self.sessions.insert(
            id,
            Session {
                user: user.clone(),
                link: Link::Attached(conn),
                token: token.clone(),
                seq: 0,
                log: VecDeque::new(),
                caps: caps.clone(),
                terminal,
                online_frame: online_frame.clone(),
                calls: BTreeSet::new(),
                caps_updates: Window {
                    start: now,
                    count: 0,
                },
            },
        );
        self.conn_online(conn, id, now);
        self.send(
            conn,
            &ServerMessage::LoginOk {
                version: PROTOCOL_VERSION,
                user: user.clone(),
                session: id,
                capabilities: caps,
                contacts: contact_list,
                resume_token: token,
            },
        );
        // The snapshot: every online terminal this user may see (C6 at login).
        self.send_snapshot(conn, me);
        self.send(conn, &ServerMessage::Synced {});
        // The push: every entitled watcher learns this terminal is online (C6).
        self.push_to_watchers(me, &online_frame, None);
        self.publish(id);
        self.out.push_back(ServerEvent::SessionStarted {
            conn,
            endpoint: Endpoint { user, session: id },
        });
    }

    pub(super) fn end_session(&mut self, id: SessionId) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        if let Some(t) = &s.token {
            self.tokens.remove(t);
        }
        if let Link::Detached { until, .. } = s.link {
            self.deadlines.remove(&(until, Timer::Detached(id)));
        }
        for call in &s.calls {
            self.end_call(*call, id, EndReason::PeerGone);
        }
        let endpoint = Endpoint {
            user: s.user.clone(),
            session: id,
        };
        // Watchers are computed while the user's roster is still known (C9).
        let frame = encode_frame(&ServerMessage::Offline(endpoint.clone()));
        if let Some(me) = self.users.lookup(&s.user) {
            self.push_to_watchers(me, &frame, None);
            if self.users.remove_session(me, id) {
                self.users.go_offline(me);
            } else if !self.has_local_sessions(&s.user) {
                self.adopt_remote_list(me);
            }
        }
        self.unpublish(id, s.user.clone());
        self.out.push_back(ServerEvent::SessionEnded {
            conn: s.link.last(),
            endpoint,
        });
    }

    /// Ends a session with a fatal error to its connection, or at once if detached.
    pub(super) fn end_session_with(&mut self, session: SessionId, code: ErrorCode) {
        match self.sessions.get(&session).map(|s| s.link) {
            Some(Link::Attached(conn)) => self.fail(conn, code, String::new()),
            Some(Link::Detached { .. }) => self.end_session(session),
            None => {}
        }
    }

    /// Drops all state of a connection; its session ends, or with `detach_at` (a drop,
    /// not a close) is detached if resumption is enabled. Returns whether it existed.
    pub(super) fn forget_conn(&mut self, conn: ConnId, detach_at: Option<Time>) -> bool {
        let Some(c) = self.conns.remove(&conn) else {
            return false;
        };
        self.deadlines.remove(&(c.deadline, Timer::Conn(conn)));
        if let Some(until) = c.throttled {
            self.deadlines.remove(&(until, Timer::Throttle(conn)));
        }
        count_down(&mut self.per_source, c.source);
        match c.state {
            ConnState::AwaitingLogin => {}
            ConnState::Authenticating { ticket, .. } => {
                if let Some((_, true)) = self.end_check(ticket, c.source) {
                    self.out.push_back(ServerEvent::AuthCancelled(ticket));
                    self.dispatch_auth();
                }
            }
            ConnState::Online(session) => match detach_at {
                Some(now) if self.config.resume.enabled() => self.detach(session, now),
                _ => self.end_session(session),
            },
        }
        true
    }

    /// Detaches a session from its connection (already forgotten): its calls end, it
    /// stays online for watchers, and its grace starts.
    pub(super) fn detach(&mut self, id: SessionId, now: Time) {
        let until = now.after(self.config.resume.grace);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Link::Attached(conn) = s.link else {
            return;
        };
        s.link = Link::Detached { last: conn, until };
        let calls: Vec<CallId> = s.calls.iter().copied().collect();
        let endpoint = Endpoint {
            user: s.user.clone(),
            session: id,
        };
        for call in calls {
            self.end_call(call, id, EndReason::PeerGone);
        }
        self.deadlines.insert((until, Timer::Detached(id)));
        self.out
            .push_back(ServerEvent::SessionDetached { conn, endpoint });
    }

    /// `resume` on a connection awaiting login (spec "Resumable sessions").
    pub(super) fn resume(
        &mut self,
        conn: ConnId,
        token: &ResumeToken,
        seen: Option<u64>,
        now: Time,
    ) {
        let source = self.conns.get(&conn).and_then(|c| c.source);
        if let Some(wait) = self.source_throttle(source, now) {
            self.fail_retry(conn, ErrorCode::LoginThrottled, wait);
            return;
        }
        let Some(id) = self.tokens.get(token).copied() else {
            // Counted like a failed login: guessing tokens is throttled per source.
            self.count_failure(None, source, now);
            self.fail(conn, ErrorCode::ResumeFailed, String::new());
            return;
        };
        // A connection the client gave up on (often still open at the server's end,
        // half-dead) is replaced; the session itself is kept.
        let old = self.sessions.get(&id).and_then(|s| s.link.conn());
        if let Some(old) = old {
            self.send(
                old,
                &ServerMessage::error_with(ErrorCode::SessionReplaced, String::new()),
            );
            if self.forget_conn(old, Some(now)) {
                self.out.push_back(ServerEvent::Close { conn: old });
            }
        }
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Link::Detached { until, .. } = s.link {
            self.deadlines.remove(&(until, Timer::Detached(id)));
        }
        s.link = Link::Attached(conn);
        let user = s.user.clone();
        let caps = s.caps.clone();
        // Only what the client missed, if the log reaches back to it and it is
        // cheaper than a snapshot.
        let first_logged = s.log.front().map_or(s.seq + 1, |(n, _)| *n);
        let missed: Option<Vec<Bytes>> = seen
            .filter(|n| *n <= s.seq && n.saturating_add(1) >= first_logged)
            .map(|n| {
                s.log
                    .iter()
                    .filter(|(k, _)| *k > n)
                    .map(|(_, f)| f.clone())
                    .collect()
            });
        self.conn_online(conn, id, now);
        let me = self.users.lookup(&user);
        let snapshot = me.map(|me| self.snapshot_frames(me)).unwrap_or_default();
        let contacts: Vec<UserId> = me
            .map(|me| self.users.contact_names(me).into_iter().cloned().collect())
            .unwrap_or_default();
        let snapshot_bytes = snapshot_cost(&snapshot, &contacts);
        let missed = missed.filter(|m| m.iter().map(Bytes::len).sum::<usize>() <= snapshot_bytes);
        let is_snapshot = missed.is_none();
        let (seq, contacts, frames) = match missed {
            // A logged `online` of a user no longer visible is left out: its
            // capabilities may not reach this user now (INV-VISIBILITY), and a later
            // frame in the log removes that terminal anyway.
            Some(m) => {
                let seq = self.sessions.get(&id).map_or(0, |s| s.seq);
                let frames = m
                    .into_iter()
                    .filter(|f| {
                        let payload = f.get(HEADER_LEN..).unwrap_or_default();
                        match decode_message::<ServerMessage>(payload) {
                            Ok(ServerMessage::Online(p)) => self.entitled(&user, &p.user),
                            _ => true,
                        }
                    })
                    .collect();
                (seq, None, frames)
            }
            None => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.seq = 0;
                    s.log.clear();
                }
                (0, Some(contacts), snapshot)
            }
        };
        let resumed = ServerMessage::Resumed {
            version: PROTOCOL_VERSION,
            session: id,
            capabilities: caps,
            seq,
            contacts,
        };
        self.send(conn, &resumed);
        let count = frames.len();
        for f in frames {
            self.send_frame(conn, f);
        }
        self.send(conn, &ServerMessage::Synced {});
        self.out.push_back(ServerEvent::SessionResumed {
            conn,
            endpoint: Endpoint { user, session: id },
            snapshot: is_snapshot,
            frames: count,
        });
    }

    /// A connection's session is `id` from now on; its idle timer starts.
    pub(super) fn conn_online(&mut self, conn: ConnId, id: SessionId, now: Time) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Online(id);
            self.deadlines.remove(&(c.deadline, Timer::Conn(conn)));
            c.deadline = now.after(self.config.idle_timeout);
            self.deadlines.insert((c.deadline, Timer::Conn(conn)));
        }
    }

    /// The sessions of the users `user` may see, in name order, then session order.
    fn visible_sessions(&self, user: UserIdx) -> impl Iterator<Item = SessionId> + '_ {
        self.users
            .get(user)
            .into_iter()
            .flat_map(|u| u.visible())
            .filter_map(|v| self.users.get(*v))
            .flat_map(|v| v.sessions().iter().copied())
    }

    /// The snapshot for `user`: the shared `online` frame of every terminal it may see.
    pub(super) fn snapshot_frames(&self, user: UserIdx) -> Vec<Bytes> {
        self.visible_sessions(user)
            .filter_map(|s| self.frame_of(s))
            .collect()
    }

    /// Sends the snapshot for `user` to `conn`.
    fn send_snapshot(&mut self, conn: ConnId, user: UserIdx) {
        let Server {
            users,
            sessions,
            remote,
            out,
            ..
        } = self;
        let Some(u) = users.get(user) else {
            return;
        };
        for v in u.visible() {
            for s in users.get(*v).map_or(&[][..], |v| v.sessions()) {
                let frame = match sessions.get(s) {
                    Some(s) => s.online_frame.clone(),
                    None => match remote.get(s) {
                        Some(r) => r.online_frame.clone(),
                        None => continue,
                    },
                };
                out.push_back(ServerEvent::Transmit { conn, frame });
            }
        }
    }

    /// Sends a table frame (`online`, `offline`, `contact_added`, `contact_removed`)
    /// to a session: numbered and logged for a resume, written if attached.
    pub(super) fn push_table(&mut self, session: SessionId, frame: Bytes) {
        push_table_in(
            &self.config.resume,
            &mut self.sessions,
            &mut self.out,
            session,
            frame,
        );
    }

    /// Counts an `update_caps` of session `id` at `now`; if the session already made
    /// `max_caps_updates` in the current window, counts nothing and returns how long
    /// until the window ends (spec section 13.6).
    pub(super) fn caps_throttle(&mut self, id: SessionId, now: Time) -> Option<Duration> {
        let l = &self.config.limits;
        let s = self.sessions.get_mut(&id)?;
        let (count, left) = s.caps_updates.current(now, l.caps_update_window);
        if over_or_at(count, l.max_caps_updates) {
            return Some(left);
        }
        s.caps_updates.hit(now, l.caps_update_window);
        None
    }

    pub(super) fn update_caps(&mut self, id: SessionId, caps: Capabilities) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.online_frame = online_frame(&s.user, id, &caps);
        s.caps = caps;
        let frame = s.online_frame.clone();
        if let Some(me) = self.users.lookup(&s.user) {
            self.push_to_watchers(me, &frame, None);
        }
        self.publish(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_weighs_its_frames_and_its_contact_list() {
        let frames = [Bytes::from_static(&[0; 10]), Bytes::from_static(&[0; 7])];
        let contacts = [UserId::new("bob").unwrap(), UserId::new("carol").unwrap()];
        // 17 bytes of frames; `"bob",` and `"carol",`: 6 + 8.
        assert_eq!(snapshot_cost(&frames, &contacts), 17 + 6 + 8);
        assert_eq!(snapshot_cost(&[], &[]), 0);
    }
}
