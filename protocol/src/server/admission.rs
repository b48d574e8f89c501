//! Admission: who may connect and log in, how fast, and the credential checks the core
//! schedules one source at a time (spec sections 13.4 and 13.6).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use super::{
    count_down, over, over_or_at, AuthRequest, AuthTicket, AuthVerdict, ConnState, Server,
    ServerError, ServerEvent,
};
use crate::caps::Capabilities;
use crate::codec::encode_payload;
use crate::error::ErrorCode;
use crate::ids::{ConnId, Password, UserId};
use crate::message::LoginWith;
use crate::time::Time;

/// A fixed-window counter: how many events since `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Window {
    pub(super) start: Time,
    pub(super) count: u32,
}

/// The source a per-source limit counts a peer address by (spec section 13.6): an IPv4
/// address as it is (also one mapped into IPv6), an IPv6 address by its /64 prefix (the
/// rest zero), because one host or site is typically given a whole /64 and could
/// otherwise open every connection from another address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

impl Window {
    /// Counts one event at `now` in windows of `len`; returns the count so far.
    pub(super) fn hit(&mut self, now: Time, len: Duration) -> u32 {
        if now >= self.start.after(len) {
            *self = Window {
                start: now,
                count: 0,
            };
        }
        self.count = self.count.saturating_add(1);
        self.count
    }

    /// The count of the window current at `now`, and how long until it ends.
    pub(super) fn current(&self, now: Time, len: Duration) -> (u32, Duration) {
        let end = self.start.after(len);
        if now >= end {
            (0, Duration::ZERO)
        } else {
            (self.count, end.since(now))
        }
    }
}

impl Server {
    /// The answer to an [`AuthRequest`].
    pub fn complete_auth(
        &mut self,
        ticket: AuthTicket,
        verdict: AuthVerdict,
        now: Time,
    ) -> Result<(), ServerError> {
        // Only a check handed out in an `Authenticate` can be answered.
        if !self.auth_running.contains(&ticket) {
            return Err(ServerError::UnknownTicket(ticket));
        }
        let source = self
            .tickets
            .get(&ticket)
            .and_then(|c| self.conns.get(c))
            .and_then(|c| c.source);
        let (conn, _) = self
            .end_check(ticket, source)
            .ok_or(ServerError::UnknownTicket(ticket))?;
        self.dispatch_auth();
        let Some(c) = self.conns.get(&conn) else {
            return Err(ServerError::UnknownTicket(ticket));
        };
        let ConnState::Authenticating { user, with, .. } = c.state.clone() else {
            return Err(ServerError::UnknownTicket(ticket));
        };
        let (contacts, registered) = match verdict {
            AuthVerdict::Accepted {
                contacts,
                registered,
            } => (contacts, registered),
            AuthVerdict::Rejected => {
                let source = c.source;
                self.count_failure(Some(user), source, now);
                self.fail(conn, ErrorCode::BadCredentials, String::new());
                return Ok(());
            }
            AuthVerdict::Failed => {
                self.fail(conn, ErrorCode::Internal, "credential store".into());
                return Ok(());
            }
        };
        let (caps, terminal) = match with {
            LoginWith::Capabilities(caps) => (caps, None),
            LoginWith::TerminalId(id) => match registered {
                Some(caps) => (caps, Some(id)),
                None => {
                    self.fail(conn, ErrorCode::UnknownTerminal, String::new());
                    return Ok(());
                }
            },
        };
        // The same registered terminal logging in again replaces its old session.
        if let Some(t) = &terminal {
            let old = self.users.by_name(&user).and_then(|(_, u)| {
                u.sessions()
                    .iter()
                    .copied()
                    .find(|s| self.sessions.get(s).and_then(|s| s.terminal.as_ref()) == Some(t))
            });
            if let Some(old) = old {
                self.end_session_with(old, ErrorCode::SessionReplaced);
            }
        }
        let online = self
            .users
            .by_name(&user)
            .map_or(0, |(_, u)| u.sessions().len());
        if online >= self.config.max_sessions_per_user {
            // Counted as a failed login, so a flood of valid logins over the limit is
            // throttled like one of wrong passwords.
            let source = self.conns.get(&conn).and_then(|c| c.source);
            self.count_failure(Some(user), source, now);
            self.fail(conn, ErrorCode::TooManySessions, String::new());
            return Ok(());
        }
        self.start_session(conn, user, caps, terminal, contacts, now);
        Ok(())
    }

    /// How long logins for `user` from `source` are throttled, if they are.
    pub(super) fn login_throttle(
        &self,
        user: &UserId,
        source: Option<IpAddr>,
        now: Time,
    ) -> Option<Duration> {
        let l = &self.config.limits;
        let window = l.login_failure_window;
        let by_user = self
            .failures_by_user
            .get(user)
            .map(|w| w.current(now, window))
            .filter(|(n, _)| over_or_at(*n, l.max_login_failures_per_account))
            .map(|(_, left)| left);
        by_user.max(self.source_throttle(source, now))
    }

    /// How long logins and resumes from `source` are throttled, if they are.
    pub(super) fn source_throttle(&self, source: Option<IpAddr>, now: Time) -> Option<Duration> {
        let l = &self.config.limits;
        source
            .and_then(|ip| self.failures_by_source.get(&ip))
            .map(|w| w.current(now, l.login_failure_window))
            .filter(|(n, _)| over_or_at(*n, l.max_login_failures_per_source))
            .map(|(_, left)| left)
    }

    /// Counts a failed login (for `user`, if one was named) or resume from `source`.
    pub(super) fn count_failure(
        &mut self,
        user: Option<UserId>,
        source: Option<IpAddr>,
        now: Time,
    ) {
        let window = self.config.limits.login_failure_window;
        let fresh = Window {
            start: now,
            count: 0,
        };
        if let Some(user) = user {
            self.failures_by_user
                .entry(user)
                .or_insert(fresh)
                .hit(now, window);
        }
        if let Some(ip) = source {
            self.failures_by_source
                .entry(ip)
                .or_insert(fresh)
                .hit(now, window);
        }
        self.prune_failures(now);
    }

    /// Whether a capability document exceeds [`Limits::max_caps_bytes`].
    pub(super) fn caps_too_large(&self, caps: &Capabilities) -> bool {
        over(
            encode_payload(caps).len(),
            self.config.limits.max_caps_bytes,
        )
    }

    /// Forgets failure windows that have ended, so the tables stay bounded by the
    /// accounts and sources that failed within one window.
    pub(super) fn prune_failures(&mut self, now: Time) {
        let window = self.config.limits.login_failure_window;
        self.failures_by_user
            .retain(|_, w| w.current(now, window).0 > 0);
        self.failures_by_source
            .retain(|_, w| w.current(now, window).0 > 0);
    }

    pub(super) fn begin_auth(
        &mut self,
        conn: ConnId,
        user: UserId,
        password: Password,
        with: LoginWith,
    ) {
        let ticket = AuthTicket(self.next_ticket);
        self.next_ticket += 1;
        let terminal = match &with {
            LoginWith::TerminalId(t) => Some(t.clone()),
            LoginWith::Capabilities(_) => None,
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Authenticating {
                ticket,
                user: user.clone(),
                with,
            };
        }
        self.tickets.insert(ticket, conn);
        let source = self.conns.get(&conn).and_then(|c| c.source);
        if let Some(ip) = source {
            *self.checks_per_source.entry(ip).or_default() += 1;
        }
        let req = AuthRequest {
            ticket,
            conn,
            user,
            password,
            terminal,
        };
        match self.auth_waiting.iter_mut().find(|(s, _)| *s == source) {
            Some((_, queue)) => queue.push_back(req),
            // A source with nothing waiting takes its turn after those waiting now.
            None => self.auth_waiting.push_back((source, VecDeque::from([req]))),
        }
        self.dispatch_auth();
    }

    /// Hands waiting credential checks to the embedder while fewer than
    /// `max_auth_checks_running` are running: one from each source in turn (spec
    /// section 13.4).
    pub(super) fn dispatch_auth(&mut self) {
        let max = self.config.limits.max_auth_checks_running;
        while !over_or_at(self.auth_running.len(), max) {
            let Some((source, mut queue)) = self.auth_waiting.pop_front() else {
                return;
            };
            let Some(req) = queue.pop_front() else {
                continue;
            };
            if !queue.is_empty() {
                self.auth_waiting.push_back((source, queue));
            }
            self.auth_running.insert(req.ticket);
            self.out.push_back(ServerEvent::Authenticate(req));
        }
    }

    /// Forgets a pending credential check of a connection from `source`. Returns its
    /// connection and whether the embedder was running it; one that was still waiting
    /// is dropped from its queue.
    pub(super) fn end_check(
        &mut self,
        ticket: AuthTicket,
        source: Option<IpAddr>,
    ) -> Option<(ConnId, bool)> {
        let conn = self.tickets.remove(&ticket)?;
        count_down(&mut self.checks_per_source, source);
        let running = self.auth_running.remove(&ticket);
        if !running {
            for (_, queue) in &mut self.auth_waiting {
                queue.retain(|r| r.ticket != ticket);
            }
            self.auth_waiting.retain(|(_, queue)| !queue.is_empty());
        }
        Some((conn, running))
    }
}
