//! The session: logging in and out, detaching when the connection drops, resuming,
//! and the session's own requests (capabilities, contacts).

use std::time::Duration;

use super::{CallState, Client, ClientError, ClientEvent, State};
use crate::caps::Capabilities;
use crate::codec::{FrameDecoder, MIN_MAX_FRAME};
use crate::error::ErrorCode;
use crate::ids::{CallId, Password, ReqId, UserId};
use crate::message::{ClientMessage, EndReason, LoginWith};
use crate::negotiate::negotiate_pair;
use crate::time::Time;

impl Client {
    /// Sends a login with the user's credentials and either the terminal's
    /// capabilities (claim C2) or its registered identifier (claim C3).
    pub fn login(
        &mut self,
        user: UserId,
        password: Password,
        with: LoginWith,
        now: Time,
    ) -> Result<(), ClientError> {
        match self.state {
            State::Idle => {}
            // A new login gives up the detached session and its table.
            State::Detached(_) => self.abandon(now),
            _ => return Err(ClientError::AlreadyLoggedIn),
        }
        self.decoder = FrameDecoder::new(self.config.max_frame.max(MIN_MAX_FRAME));
        self.state = State::LoggingIn;
        self.send(
            &ClientMessage::Login {
                version: crate::message::PROTOCOL_VERSION,
                user,
                password,
                with,
            },
            now,
        );
        Ok(())
    }

    /// The user logs out: sends `logout` and deletes every received capability and
    /// every computed parameter at once (claim C5).
    pub fn logout(&mut self, now: Time) -> Result<(), ClientError> {
        match self.state {
            State::Online(_) | State::LoggingIn => {
                self.send(&ClientMessage::Logout {}, now);
                self.state = State::LoggingOut;
                Ok(())
            }
            _ => Err(ClientError::NotLoggedIn),
        }
    }

    /// The transport connection was lost. A logged-in session with a resume token is
    /// detached: its calls end, the table is kept, and [`Client::resume`] may take it
    /// over on a new connection (spec "Resumable sessions"). Otherwise everything is
    /// deleted and the client is idle.
    pub fn connection_closed(&mut self, now: Time) {
        let _ = now;
        self.out.clear();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {}
            State::Online(mut on) | State::Resuming(mut on) if on.token.is_some() => {
                for call in std::mem::take(&mut on.calls).into_keys() {
                    let reason = EndReason::PeerGone;
                    self.events
                        .push_back(ClientEvent::CallEnded { call, reason });
                }
                for (req, d) in std::mem::take(&mut on.dialing) {
                    self.events.push_back(ClientEvent::CallFailed {
                        req,
                        to: d.peer,
                        code: ErrorCode::NotReachable,
                        detail: String::new(),
                    });
                }
                // What was in flight may or may not have reached the server; `resumed`
                // tells which capabilities it holds.
                on.caps_in_flight.clear();
                on.caps_retry = None;
                on.queries.clear();
                on.outbox.clear();
                self.state = State::Detached(on);
                self.events.push_back(ClientEvent::Detached);
            }
            State::Detached(on) => self.state = State::Detached(on),
            _ => self.events.push_back(ClientEvent::LoggedOut),
        }
    }

    /// Takes the detached session over on a new connection: sends `resume` with the
    /// token and the number of table frames processed (spec "Resumable sessions").
    /// No password is needed.
    pub fn resume(&mut self, now: Time) -> Result<(), ClientError> {
        // A refused command changes nothing (section 8.2).
        let State::Detached(on) = &self.state else {
            return Err(ClientError::NotDetached);
        };
        let Some(token) = on.token.clone() else {
            return Err(ClientError::NotDetached);
        };
        let seen = on.seen;
        let State::Detached(on) = std::mem::replace(&mut self.state, State::Idle) else {
            return Err(ClientError::NotDetached);
        };
        self.decoder = FrameDecoder::new(self.config.max_frame.max(MIN_MAX_FRAME));
        self.state = State::Resuming(on);
        self.send(
            &ClientMessage::Resume {
                version: crate::message::PROTOCOL_VERSION,
                token,
                seen,
            },
            now,
        );
        Ok(())
    }

    /// Gives up a detached (or resuming) session: everything is deleted and the client
    /// is idle, as after a logout (claim C5). The server ends the session when its
    /// grace runs out.
    pub fn abandon(&mut self, now: Time) {
        let _ = now;
        if matches!(self.state, State::Detached(_) | State::Resuming(_)) {
            self.out.clear();
            self.state = State::Idle;
            self.events.push_back(ClientEvent::LoggedOut);
        }
    }

    /// This terminal's capabilities changed: recompute every parameter at once and
    /// tell the server. Returns the request tag.
    pub fn update_caps(&mut self, caps: Capabilities, now: Time) -> Result<ReqId, ClientError> {
        // Taken only if the command is carried out: a refused one changes nothing.
        let req = ReqId(self.next_req);
        let on = self.online_mut()?;
        let setting_up =
            on.calls.values().any(|c| c.state != CallState::Established) || !on.dialing.is_empty();
        if setting_up {
            return Err(ClientError::CallSetupInProgress);
        }
        on.fingerprint = caps.fingerprint();
        on.caps = caps.clone();
        on.caps_in_flight.insert(req);
        // This request carries the newest capabilities: a pending retry is superseded.
        on.caps_retry = None;
        let own = on.caps.clone();
        for peer in on.peers.values_mut() {
            peer.params = negotiate_pair(&own, &peer.capabilities);
        }
        self.next_req();
        self.send(
            &ClientMessage::UpdateCaps {
                req,
                capabilities: caps,
            },
            now,
        );
        Ok(req)
    }

    /// Sends the own current capabilities again after a `caps_throttled`; while a call
    /// is being set up (when `update_caps` is not allowed) tries again a second later.
    pub(super) fn retry_caps(&mut self, now: Time) {
        let Some(own) = self.online().map(|o| o.caps.clone()) else {
            return;
        };
        if self.update_caps(own, now).is_err() {
            if let State::Online(on) = &mut self.state {
                on.caps_retry = Some(now.after(Duration::from_secs(1)));
            }
        }
    }

    /// Asks the server to add a user to the contact list.
    pub fn add_contact(&mut self, user: UserId, now: Time) -> Result<ReqId, ClientError> {
        self.online_mut()?;
        let req = self.next_req();
        self.send(&ClientMessage::AddContact { req, user }, now);
        Ok(req)
    }

    /// Asks the server to remove a user from the contact list.
    pub fn remove_contact(&mut self, user: UserId, now: Time) -> Result<ReqId, ClientError> {
        self.online_mut()?;
        let req = self.next_req();
        self.send(&ClientMessage::RemoveContact { req, user }, now);
        Ok(req)
    }

    /// Sends what [`Online::handle`] decided to send (the automatic answers of the
    /// fallback paths).
    pub(super) fn flush_pending(&mut self, now: Time) {
        let msgs = match &mut self.state {
            State::Online(on) => std::mem::take(&mut on.outbox),
            _ => return,
        };
        for m in msgs {
            self.send(&m, now);
        }
    }

    /// A `login_ok` or `resumed` of another protocol version: the session is over.
    pub(super) fn wrong_version(&mut self) {
        self.state = State::Idle;
        self.events.push_back(ClientEvent::ServerError {
            code: ErrorCode::UnsupportedVersion,
            req: None,
            call: None,
            retry_after: None,
            detail: String::new(),
        });
        self.events.push_back(ClientEvent::LoggedOut);
    }

    /// `resumed` for this session: online again; a snapshot replaces the table. If the
    /// server holds other capabilities than this terminal has (an `update_caps` lost
    /// with the connection), they are sent again.
    pub(super) fn resumed(
        &mut self,
        caps: Capabilities,
        seq: u64,
        contacts: Option<Vec<UserId>>,
        now: Time,
    ) {
        let State::Resuming(mut on) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        let snapshot = contacts.is_some();
        if let Some(contacts) = contacts {
            for endpoint in std::mem::take(&mut on.peers).into_keys() {
                self.events.push_back(ClientEvent::PeerOffline { endpoint });
            }
            on.contacts = contacts.into_iter().collect();
        }
        // Counting resumes at `synced`: a catch-up cut short is not counted as seen,
        // so the next resume gets a snapshot.
        on.seen = None;
        on.seen_at_sync = seq;
        on.synced = false;
        let session = on.session;
        let own = on.caps.clone();
        let stale = caps.fingerprint() != on.fingerprint;
        self.state = State::Online(on);
        self.events
            .push_back(ClientEvent::Resumed { session, snapshot });
        if stale {
            // Cannot fail: online, and no call exists after a drop.
            let _ = self.update_caps(own, now);
        }
    }

    pub(super) fn server_error(
        &mut self,
        code: ErrorCode,
        req: Option<ReqId>,
        call: Option<CallId>,
        retry_after: Option<Duration>,
        detail: String,
        now: Time,
    ) {
        let event = ClientEvent::ServerError {
            code,
            req,
            call,
            retry_after,
            detail: detail.clone(),
        };
        let resuming = matches!(self.state, State::Resuming(_));
        if code.is_fatal() && code.refuses_connection() && resuming {
            // The server refused the connection without looking at the `resume`: the
            // session is still detached there (section 9.9.6).
            if let State::Resuming(on) = std::mem::replace(&mut self.state, State::Idle) {
                self.state = State::Detached(on);
            }
            self.out.clear();
            self.events.push_back(event);
            self.events.push_back(ClientEvent::Detached);
            return;
        }
        if code.is_fatal() {
            // The server closes the connection next; nothing may be kept (C5).
            if self.state != State::Idle {
                self.state = State::Idle;
                self.events.push_back(event);
                self.events.push_back(ClientEvent::LoggedOut);
            }
            return;
        }
        if let (State::Online(on), Some(r)) = (&mut self.state, req) {
            if let Some(d) = on.dialing.remove(&r) {
                self.events.push_back(ClientEvent::CallFailed {
                    req: r,
                    to: d.peer,
                    code,
                    detail,
                });
                return;
            }
            if on.caps_in_flight.remove(&r) && code == ErrorCode::CapsThrottled {
                // Not applied: the same (or newer) capabilities go again when allowed.
                let wait = retry_after.unwrap_or(Duration::from_secs(1));
                on.caps_retry = Some(now.after(wait));
            }
            on.queries.remove(&r);
        }
        if let (State::Online(on), Some(c)) = (&mut self.state, call) {
            on.calls.remove(&c);
        }
        self.events.push_back(event);
    }
}
