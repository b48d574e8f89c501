//! Calls: placed on the fast path or exchanging capabilities, answered, hung up, and the
//! call signalling that reaches the client.

use std::collections::VecDeque;

use super::{Client, ClientError, ClientEvent, Online, State, Violation};
use crate::caps::{CallDigest, CallParams, Capabilities, Fingerprint};
use crate::ids::{CallId, Endpoint, ReqId};
use crate::media::MediaDescription;
use crate::message::ClientMessage;
use crate::negotiate::negotiate_pair;
use crate::time::Time;

/// How a call's parameters were agreed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SetupPath {
    /// From the pre-computed table: no capability crossed the wire during set-up.
    Fast,
    /// At least one party's capabilities travelled in the call signalling.
    Fallback,
}

impl SetupPath {
    /// The path's name as the spec writes it: `fast` or `fallback`.
    pub fn name(self) -> &'static str {
        match self {
            SetupPath::Fast => "fast",
            SetupPath::Fallback => "fallback",
        }
    }
}

/// This end's role in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_enums)] // closed: a call has a caller and a callee
pub enum Role {
    /// This terminal placed the call.
    Caller,
    /// This terminal was called.
    Callee,
}

/// Where a call stands, from this end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallState {
    /// Caller: the request is relayed; waiting for the callee.
    Ringing,
    /// Callee: the caller's capabilities were asked for.
    AwaitingCallerCaps,
    /// Callee: waiting for the application to accept or reject.
    Incoming,
    /// Media may flow with the call's parameters.
    Established,
}

/// A call of this terminal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Call {
    /// The other terminal.
    pub peer: Endpoint,
    /// This end's role.
    pub role: Role,
    /// Where it stands.
    pub state: CallState,
    /// The parameters, from this end's point of view (known once ringing or incoming).
    pub params: Option<CallParams>,
    /// Whether any capabilities travelled in this call's signalling so far.
    pub caps_on_wire: bool,
    /// Whether this end must send its capabilities when it accepts (callee only).
    pub(super) send_caps_on_accept: bool,
    /// The digest the caller sent.
    pub digest: CallDigest,
}

/// A call request waiting for the server's `call_ringing`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Dialing {
    pub(super) peer: Endpoint,
    /// The pre-computed parameters; `None` for a prior-art call, whose parameters are
    /// computed from the callee's answer.
    pub(super) params: Option<CallParams>,
    pub(super) digest: CallDigest,
    pub(super) caps_sent: bool,
}

impl Call {
    /// The path, once established.
    pub fn path(&self) -> SetupPath {
        if self.caps_on_wire {
            SetupPath::Fallback
        } else {
            SetupPath::Fast
        }
    }
}

impl Client {
    /// Calls an online contact terminal with the pre-computed parameters. The request
    /// carries the digest only, never capabilities, even while a change of this
    /// terminal's capabilities is unacknowledged: the server relays the change to the
    /// callee before it relays the call (spec "Call set-up"). The callee falls back
    /// only if its own capabilities changed or its view of the caller does not match
    /// the digest. Returns the request tag that [`ClientEvent::CallRinging`] or
    /// [`ClientEvent::CallFailed`] echoes.
    pub fn place_call(&mut self, to: &Endpoint, now: Time) -> Result<ReqId, ClientError> {
        self.place_fast_call(to, None, now)
    }

    /// [`Client::place_call`] with this terminal's media description (an SDP offer with
    /// its ICE candidates and DTLS fingerprint, say), which the server relays to the
    /// callee in the same request: the callee's [`ClientEvent::IncomingCall`] carries
    /// it, and its acceptance can carry the answer back, so media set-up adds no round
    /// trip to the call (spec 10.8). The description reveals this terminal's network
    /// addresses to the callee.
    pub fn place_call_with_media(
        &mut self,
        to: &Endpoint,
        media: MediaDescription,
        now: Time,
    ) -> Result<ReqId, ClientError> {
        self.place_fast_call(to, Some(media), now)
    }

    /// The fast-path call of [`Client::place_call`], with or without a description.
    fn place_fast_call(
        &mut self,
        to: &Endpoint,
        media: Option<MediaDescription>,
        now: Time,
    ) -> Result<ReqId, ClientError> {
        let on = self.online_mut()?;
        let peer = on
            .peers
            .get(to)
            .ok_or_else(|| ClientError::UnknownPeer(to.clone()))?;
        let digest = CallDigest {
            caller: on.fingerprint,
            callee: peer.fingerprint,
        };
        let params = Some(peer.params.clone());
        Ok(self.dial(to, params, digest, None, media, now))
    }

    /// Calls an online contact terminal the way the patent's prior art does (spec
    /// "Call set-up", prior-art call): the request carries this terminal's
    /// capabilities and names no callee capabilities (an all-zero
    /// [`CallDigest::callee`]), so the callee negotiates from the request and answers
    /// with its own capabilities, and this end computes the parameters from that answer.
    /// The table is not used. Exists as the baseline the fast path is measured against.
    pub fn place_call_exchanging_capabilities(
        &mut self,
        to: &Endpoint,
        now: Time,
    ) -> Result<ReqId, ClientError> {
        let on = self.online_mut()?;
        if !on.peers.contains_key(to) {
            return Err(ClientError::UnknownPeer(to.clone()));
        }
        let digest = CallDigest {
            caller: on.fingerprint,
            callee: Fingerprint::NONE,
        };
        let capabilities = Some(on.caps.clone());
        Ok(self.dial(to, None, digest, capabilities, None, now))
    }

    /// Records a call request as dialing and sends it. The request tag is taken only
    /// here, once the command is carried out: a refused command changes nothing.
    pub(super) fn dial(
        &mut self,
        to: &Endpoint,
        params: Option<CallParams>,
        digest: CallDigest,
        capabilities: Option<Capabilities>,
        media: Option<MediaDescription>,
        now: Time,
    ) -> ReqId {
        let req = self.next_req();
        if let State::Online(on) = &mut self.state {
            let dialing = Dialing {
                peer: to.clone(),
                params,
                digest,
                caps_sent: capabilities.is_some(),
            };
            on.dialing.insert(req, dialing);
        }
        let to = to.clone();
        self.send(
            &ClientMessage::Call {
                req,
                to,
                digest,
                capabilities,
                media,
            },
            now,
        );
        req
    }

    /// Asks a terminal for its capabilities, the way a client without pushed
    /// capabilities must before a call (the query-first baseline, spec section 10.7).
    /// The answer arrives as [`ClientEvent::CapsResult`]; the table is not used.
    pub fn query_caps(&mut self, to: &Endpoint, now: Time) -> Result<ReqId, ClientError> {
        let req = ReqId(self.next_req);
        self.online_mut()?.queries.insert(req);
        self.next_req();
        self.send(
            &ClientMessage::QueryCaps {
                req,
                to: to.clone(),
            },
            now,
        );
        Ok(req)
    }

    /// Accepts or rejects an incoming call.
    pub fn answer(&mut self, call: CallId, accept: bool, now: Time) -> Result<(), ClientError> {
        self.respond(call, accept, None, now)
    }

    /// Accepts an incoming call with this terminal's media description (the SDP
    /// answer to the caller's, say), which the server relays to the caller with the
    /// acceptance: the caller's [`ClientEvent::CallEstablished`] carries it (spec 10.8).
    pub fn accept_with_media(
        &mut self,
        call: CallId,
        media: MediaDescription,
        now: Time,
    ) -> Result<(), ClientError> {
        self.respond(call, true, Some(media), now)
    }

    fn respond(
        &mut self,
        call: CallId,
        accept: bool,
        media: Option<MediaDescription>,
        now: Time,
    ) -> Result<(), ClientError> {
        let on = self.online_mut()?;
        let Some(c) = on
            .calls
            .get_mut(&call)
            .filter(|c| c.state == CallState::Incoming)
        else {
            return Err(ClientError::UnknownCall(call));
        };
        if !accept {
            on.calls.remove(&call);
            self.send(&ClientMessage::Reject { call }, now);
            return Ok(());
        }
        c.state = CallState::Established;
        let caps = c.send_caps_on_accept.then(|| on.caps.clone());
        c.caps_on_wire |= caps.is_some();
        let (params, path) = (c.params.clone(), c.path());
        self.send(
            &ClientMessage::Accept {
                call,
                capabilities: caps,
                media,
            },
            now,
        );
        if let Some(params) = params {
            self.events.push_back(ClientEvent::CallEstablished {
                call,
                params,
                path,
                media: None,
            });
        }
        Ok(())
    }

    /// Ends a call, ringing or established.
    pub fn hangup(&mut self, call: CallId, now: Time) -> Result<(), ClientError> {
        let on = self.online_mut()?;
        if on.calls.remove(&call).is_none() {
            return Err(ClientError::UnknownCall(call));
        }
        self.send(&ClientMessage::Hangup { call }, now);
        Ok(())
    }
}

impl Online {
    /// A call this terminal placed that is ringing; `what` names the message for the
    /// violation otherwise.
    pub(super) fn ringing_as_caller(
        &mut self,
        call: CallId,
        what: &'static str,
    ) -> Result<&mut Call, Violation> {
        self.calls
            .get_mut(&call)
            .filter(|c| c.role == Role::Caller && c.state == CallState::Ringing)
            .ok_or(Violation::UnexpectedCall { what, call })
    }

    pub(super) fn incoming(
        &mut self,
        call: CallId,
        from: Endpoint,
        digest: CallDigest,
        capabilities: Option<Capabilities>,
        media: Option<MediaDescription>,
        events: &mut VecDeque<ClientEvent>,
    ) -> Option<Violation> {
        match self.calls.get(&call).map(|c| c.state) {
            None => {}
            // The retry that carries the capabilities asked for.
            Some(CallState::AwaitingCallerCaps) if capabilities.is_some() => {}
            Some(_) => {
                return Some(Violation::UnexpectedCall {
                    what: "call_incoming",
                    call,
                })
            }
        }
        let send_caps_on_accept = digest.callee != self.fingerprint;
        let (params, caps_on_wire) = match (&capabilities, self.peers.get(&from)) {
            (Some(theirs), _) => (negotiate_pair(&self.caps, theirs), true),
            (None, Some(peer)) if peer.fingerprint == digest.caller => (peer.params.clone(), false),
            (None, _) => {
                // The caller's capabilities here are not the ones it negotiated from:
                // ask for them before bothering the user.
                self.calls.insert(
                    call,
                    Call {
                        peer: from,
                        role: Role::Callee,
                        state: CallState::AwaitingCallerCaps,
                        params: None,
                        caps_on_wire: true,
                        send_caps_on_accept,
                        digest,
                    },
                );
                self.outbox.push(ClientMessage::NeedCaps { call });
                return None;
            }
        };
        self.calls.insert(
            call,
            Call {
                peer: from.clone(),
                role: Role::Callee,
                state: CallState::Incoming,
                params: Some(params.clone()),
                caps_on_wire,
                send_caps_on_accept,
                digest,
            },
        );
        events.push_back(ClientEvent::IncomingCall {
            call,
            from,
            params,
            media,
        });
        None
    }
}
