//! Connections: opened, bytes in, frames decoded and paused, requests dispatched,
//! deadlines fired, closed.

use std::net::IpAddr;
use std::time::Duration;

use super::{
    over, over_or_at, source_key, CallRequest, Conn, ConnState, Server, ServerError, Timer, Window,
};
use crate::codec::{decode_message, FrameDecoder, MIN_MAX_FRAME};
use crate::error::{DecodeError, ErrorCode, FrameError};
use crate::ids::{CallId, ConnId, ReqId, SessionId};
use crate::message::{ClientMessage, EndReason, LoginWith, ServerMessage, PROTOCOL_VERSION};
use crate::time::{millis, Time};

/// Whether a message is a contact-list change (which may queue up behind another).
pub(super) fn is_roster_request(msg: &ClientMessage) -> bool {
    matches!(
        msg,
        ClientMessage::AddContact { .. } | ClientMessage::RemoveContact { .. }
    )
}

/// The request tag and call a message names, for error replies.
pub(super) fn request_tags(msg: &ClientMessage) -> (Option<ReqId>, Option<CallId>) {
    match msg {
        ClientMessage::UpdateCaps { req, .. }
        | ClientMessage::AddContact { req, .. }
        | ClientMessage::RemoveContact { req, .. }
        | ClientMessage::Call { req, .. }
        | ClientMessage::QueryCaps { req, .. } => (Some(*req), None),
        ClientMessage::CallRetry { call, .. }
        | ClientMessage::Accept { call, .. }
        | ClientMessage::Reject { call }
        | ClientMessage::NeedCaps { call }
        | ClientMessage::Hangup { call } => (None, Some(*call)),
        _ => (None, None),
    }
}

impl Server {
    /// A transport connection opened.
    pub fn connect(&mut self, conn: ConnId, now: Time) -> Result<(), ServerError> {
        self.connect_from(conn, None, now)
    }

    /// A transport connection opened from `source` (the peer's address), which the
    /// per-source limits and login throttling count by ([`source_key`]: an IPv6 peer
    /// counts by its /64). A connection over a limit is answered with its fatal error
    /// and closed at once (spec section 13.6).
    pub fn connect_from(
        &mut self,
        conn: ConnId,
        source: Option<IpAddr>,
        now: Time,
    ) -> Result<(), ServerError> {
        let source = source.map(source_key);
        if self.conns.contains_key(&conn) {
            return Err(ServerError::DuplicateConn(conn));
        }
        let deadline = now.after(self.config.login_timeout);
        let frames = Window {
            start: now,
            count: 0,
        };
        self.conns.insert(
            conn,
            Conn {
                state: ConnState::AwaitingLogin,
                decoder: FrameDecoder::new(self.config.max_frame.max(MIN_MAX_FRAME)),
                deadline,
                source,
                frames,
                unstored: 0,
                stalled: None,
                inbox: Vec::new(),
                throttled: None,
            },
        );
        if let Some(ip) = source {
            *self.per_source.entry(ip).or_default() += 1;
        }
        self.deadlines.insert((deadline, Timer::Conn(conn)));
        let limits = &self.config.limits;
        let second = Duration::from_secs(1);
        let second_began = self.accepts.start;
        let accepted = self.accepts.hit(now, second);
        if self.accepts.start != second_began {
            self.accepts_by_source.clear();
        }
        let from_source_now = source.map_or(0, |ip| {
            let n = self.accepts_by_source.entry(ip).or_default();
            *n = n.saturating_add(1);
            *n
        });
        let from_source = source.and_then(|ip| self.per_source.get(&ip)).copied();
        let crowded = over(self.conns.len(), limits.max_connections)
            || over(from_source.unwrap_or(0), limits.max_connections_per_source);
        let refusal = if crowded {
            Some((ErrorCode::TooManyConnections, second))
        } else if over(accepted as usize, limits.max_accepts_per_second as usize)
            || over(
                from_source_now as usize,
                limits.max_accepts_per_second_per_source as usize,
            )
        {
            let (_, left) = self.accepts.current(now, second);
            Some((ErrorCode::RateLimited, left))
        } else {
            None
        };
        if let Some((code, retry)) = refusal {
            self.fail_retry(conn, code, retry);
        }
        Ok(())
    }

    /// Bytes arrived on a connection. Bytes for a connection the server does not know
    /// (never opened, or already closed) are ignored.
    ///
    /// While the connection's input is paused ([`Server::accepts_input`] is false) the
    /// bytes are kept, undecoded, and processed in order once it resumes. An embedder
    /// should stop reading from a paused connection (TCP backpressure); one that goes
    /// on past a frame's worth of bytes gets the connection closed with `rate_limited`.
    pub fn receive(&mut self, conn: ConnId, data: &[u8], now: Time) {
        let limit = self.config.max_frame.max(MIN_MAX_FRAME) as usize + 4;
        let max_unstored = self.max_unstored();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.paused(max_unstored) || !c.inbox.is_empty() {
            if c.inbox.len() + data.len() > limit {
                self.fail_retry(conn, ErrorCode::RateLimited, Duration::from_secs(1));
                return;
            }
            c.inbox.extend_from_slice(data);
            return;
        }
        self.decode_input(conn, data, now);
    }

    /// Whether the server takes input from `conn` now. It does not while the
    /// connection has [`Limits::max_unstored_changes`](crate::server::Limits::max_unstored_changes) contact-list changes waiting for
    /// the store, or a request that must wait for them (spec section 9.6), nor for the
    /// rest of a second in which it sent [`Limits::max_frames_per_second`](crate::server::Limits::max_frames_per_second) frames (spec
    /// section 13.6); it resumes by itself in [`Server::complete_store`] and
    /// [`Server::handle_timeout`]. False for an unknown connection.
    pub fn accepts_input(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| !c.paused(self.max_unstored()) && c.inbox.is_empty())
    }

    /// Decodes and handles the frames in `data`, keeping the rest in the connection's
    /// inbox as soon as its input pauses.
    pub(super) fn decode_input(&mut self, conn: ConnId, mut data: &[u8], now: Time) {
        let max_unstored = self.max_unstored();
        while !data.is_empty() {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.paused(max_unstored) {
                c.inbox.extend_from_slice(data);
                return;
            }
            // At the frame rate limit, the rest waits for the next second.
            let second = Duration::from_secs(1);
            let (frames, left) = c.frames.current(now, second);
            if over_or_at(frames, self.config.limits.max_frames_per_second) {
                let until = now.after(left);
                c.throttled = Some(until);
                c.inbox.extend_from_slice(data);
                self.deadlines.insert((until, Timer::Throttle(conn)));
                return;
            }
            match c.decoder.decode(&mut data) {
                Ok(None) => return,
                Ok(Some(payload)) => {
                    c.frames.hit(now, second);
                    // Only a complete frame counts as activity: a peer trickling a
                    // partial frame cannot hold its session open.
                    if matches!(c.state, ConnState::Online(_)) {
                        let deadline = now.after(self.config.idle_timeout);
                        if deadline != c.deadline {
                            self.deadlines.remove(&(c.deadline, Timer::Conn(conn)));
                            c.deadline = deadline;
                            self.deadlines.insert((deadline, Timer::Conn(conn)));
                        }
                    }
                    match decode_message::<ClientMessage>(&payload) {
                        // Requests after a contact-list change that waits for the store
                        // are answered after its acknowledgement: they wait too (only
                        // further changes may queue up behind it).
                        Ok(msg) if c.unstored > 0 && !is_roster_request(&msg) => {
                            c.stalled = Some(msg);
                        }
                        Ok(msg) => self.handle_message(conn, msg, now),
                        Err(e) => self.refuse(conn, &e),
                    }
                }
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                        FrameError::Empty => ErrorCode::Malformed,
                    };
                    self.fail(conn, code, e.to_string());
                    return;
                }
            }
        }
    }

    /// Processes what a connection's paused input kept, as far as it may go now.
    pub(super) fn continue_input(&mut self, conn: ConnId, now: Time) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.unstored > 0 && c.stalled.is_some() {
            return;
        }
        if let Some(msg) = c.stalled.take() {
            self.handle_message(conn, msg, now);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let inbox = std::mem::take(&mut c.inbox);
        self.decode_input(conn, &inbox, now);
    }

    /// The effective limit on a connection's contact-list changes waiting for the store.
    pub(super) fn max_unstored(&self) -> usize {
        self.config.limits.max_unstored_changes.max(1)
    }

    /// The transport connection closed or failed. If resumption is enabled the
    /// session, if any, is detached: it stays online for its watchers and resumable
    /// until the grace ends (spec "Resumable sessions"); its calls end. Otherwise it
    /// ends at once and the user's contacts are told the terminal went offline (claim
    /// C9).
    pub fn connection_closed(&mut self, conn: ConnId, now: Time) {
        self.forget_conn(conn, Some(now));
    }

    /// Fires every deadline that has passed: closes connections that did not log in
    /// in time (`login_timeout`) or went idle (`idle_timeout`), ends calls that rang
    /// too long (reason `timeout`), ends detached sessions whose grace is over, and
    /// processes the held input of connections whose frame-rate pause is over (ask
    /// [`Server::accepts_input`] again for paused connections afterwards).
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&(deadline, timer)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            match timer {
                Timer::Conn(conn) => {
                    let code = match self.conns.get(&conn).map(|c| &c.state) {
                        Some(ConnState::Online(_)) => ErrorCode::IdleTimeout,
                        _ => ErrorCode::LoginTimeout,
                    };
                    self.fail(conn, code, String::new());
                }
                Timer::Call(call) => {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.deadline = None;
                    }
                    self.end_call_both(call, EndReason::Timeout);
                }
                Timer::Detached(session) => {
                    // The grace is over: the terminal goes offline for its watchers.
                    if self
                        .sessions
                        .get(&session)
                        .is_some_and(|s| s.link.conn().is_none())
                    {
                        self.end_session(session);
                    }
                }
                Timer::Throttle(conn) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.throttled = None;
                        self.continue_input(conn, now);
                    }
                }
            }
        }
    }

    /// Ends every connection with `server_shutdown`, and every detached session.
    pub fn shutdown(&mut self, now: Time) {
        let _ = now;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.fail(conn, ErrorCode::ServerShutdown, String::new());
        }
        let detached: Vec<SessionId> = self.sessions.keys().copied().collect();
        for session in detached {
            self.end_session(session);
        }
    }

    /// Answers a payload that did not decode.
    pub(super) fn refuse(&mut self, conn: ConnId, e: &DecodeError) {
        let code = e.code();
        if code.is_fatal() {
            self.fail(conn, code, e.to_string());
        } else {
            self.send(conn, &ServerMessage::error_with(code, e.to_string()));
        }
    }

    pub(super) fn handle_message(&mut self, conn: ConnId, msg: ClientMessage, now: Time) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let source = c.source;
        let session = match (&c.state, msg) {
            (_, ClientMessage::Ping {}) => {
                self.send(conn, &ServerMessage::Pong {});
                return;
            }
            (_, ClientMessage::Logout {}) => {
                self.send(conn, &ServerMessage::LoggedOut {});
                self.close(conn);
                return;
            }
            (
                ConnState::AwaitingLogin,
                ClientMessage::Login {
                    version,
                    user,
                    password,
                    with,
                },
            ) => {
                debug_assert_eq!(version, PROTOCOL_VERSION, "checked by the decoder");
                // A throttled account or source gets no credential check at all.
                if let Some(wait) = self.login_throttle(&user, source, now) {
                    self.fail_retry(conn, ErrorCode::LoginThrottled, wait);
                    return;
                }
                // One source cannot fill the credential checker ahead of everyone else.
                let checks = source
                    .and_then(|ip| self.checks_per_source.get(&ip))
                    .copied();
                if over_or_at(
                    checks.unwrap_or(0),
                    self.config.limits.max_auth_checks_per_source,
                ) {
                    self.fail_retry(conn, ErrorCode::RateLimited, Duration::from_secs(1));
                    return;
                }
                if let LoginWith::Capabilities(caps) = &with {
                    if self.caps_too_large(caps) {
                        self.fail(conn, ErrorCode::CapsTooLarge, String::new());
                        return;
                    }
                }
                self.begin_auth(conn, user, password, with);
                return;
            }
            (
                ConnState::AwaitingLogin,
                ClientMessage::Resume {
                    version,
                    token,
                    seen,
                },
            ) => {
                debug_assert_eq!(version, PROTOCOL_VERSION, "checked by the decoder");
                self.resume(conn, &token, seen, now);
                return;
            }
            (
                ConnState::Online(_) | ConnState::Authenticating { .. },
                ClientMessage::Login { .. } | ClientMessage::Resume { .. },
            ) => {
                self.error(conn, ErrorCode::AlreadyLoggedIn, None, None);
                return;
            }
            (ConnState::Online(s), msg) => (*s, msg),
            (_, msg) => {
                let (req, call) = request_tags(&msg);
                self.error(conn, ErrorCode::NotLoggedIn, req, call);
                return;
            }
        };
        let (session, msg) = session;
        match msg {
            ClientMessage::UpdateCaps { req, capabilities } => {
                if self.caps_too_large(&capabilities) {
                    self.fail(conn, ErrorCode::CapsTooLarge, String::new());
                    return;
                }
                if let Some(wait) = self.caps_throttle(session, now) {
                    self.send(
                        conn,
                        &ServerMessage::Error {
                            code: ErrorCode::CapsThrottled,
                            req: Some(req),
                            call: None,
                            detail: String::new(),
                            retry_after_ms: Some(millis(wait)),
                        },
                    );
                    return;
                }
                self.update_caps(session, capabilities);
                self.send(conn, &ServerMessage::CapsAck { req });
            }
            ClientMessage::AddContact { req, user } => {
                self.roster_request(session, conn, req, user, true)
            }
            ClientMessage::RemoveContact { req, user } => {
                self.roster_request(session, conn, req, user, false)
            }
            ClientMessage::Call {
                req,
                to,
                digest,
                capabilities,
                media,
            } => {
                let request = CallRequest {
                    req,
                    to,
                    digest,
                    capabilities,
                    media,
                };
                self.place_call(session, conn, request, now)
            }
            ClientMessage::CallRetry { call, capabilities } => {
                self.call_retry(session, conn, call, capabilities)
            }
            ClientMessage::Accept {
                call,
                capabilities,
                media,
            } => self.call_accept(session, conn, call, capabilities, media),
            ClientMessage::Reject { call } => self.call_reject(session, conn, call),
            ClientMessage::NeedCaps { call } => self.call_need_caps(session, conn, call),
            ClientMessage::Hangup { call } => self.call_hangup(session, conn, call),
            ClientMessage::QueryCaps { req, to } => self.query_caps(session, conn, req, to),
            ClientMessage::CapsReply {
                to,
                req,
                capabilities,
            } => self.caps_reply(session, conn, to, req, capabilities),
            // Handled above; a new variant reaches here only if this match is not
            // updated, and is answered as unknown.
            ClientMessage::Login { .. }
            | ClientMessage::Resume { .. }
            | ClientMessage::Ping {}
            | ClientMessage::Logout {} => self.error(conn, ErrorCode::UnknownMessage, None, None),
        }
    }
}
