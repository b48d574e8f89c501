//! The online state: the contact list, the table of online contact terminals with their
//! capabilities and pre-computed call parameters (claims C1, C4, C5), and the pushes that
//! change it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Call, CallState, ClientEvent, Dialing, Role, Violation};
use crate::caps::{CallParams, Capabilities, Fingerprint};
use crate::ids::{CallId, Endpoint, ReqId, SessionId, UserId};
use crate::message::{ClientMessage, Presence, ServerMessage, WireMessage};
use crate::negotiate::negotiate_pair;
use crate::resume::ResumeToken;
use crate::time::Time;

/// A contact terminal in the table: its capabilities and the parameters of a call
/// with it, computed when its capabilities arrived.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The terminal's capabilities, as last pushed by the server.
    pub capabilities: Capabilities,
    /// Their fingerprint.
    pub fingerprint: Fingerprint,
    /// The call parameters from this terminal's point of view.
    pub params: CallParams,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Online {
    pub(super) user: UserId,
    pub(super) session: SessionId,
    pub(super) caps: Capabilities,
    pub(super) fingerprint: Fingerprint,
    pub(super) contacts: BTreeSet<UserId>,
    pub(super) peers: BTreeMap<Endpoint, Peer>,
    pub(super) synced: bool,
    /// The resume credential from `login_ok`.
    pub(super) token: Option<ResumeToken>,
    /// The number of the last table frame processed; `None` until `synced`.
    pub(super) seen: Option<u64>,
    /// What `seen` becomes at the next `synced` (the `seq` of `resumed`).
    pub(super) seen_at_sync: u64,
    /// Tags of `update_caps` requests not yet acknowledged.
    pub(super) caps_in_flight: BTreeSet<ReqId>,
    /// When to send the own capabilities again, after the server refused an
    /// `update_caps` with `caps_throttled` (section 8.5).
    pub(super) caps_retry: Option<Time>,
    pub(super) dialing: BTreeMap<ReqId, Dialing>,
    /// Tags of capability queries (query-first baseline) not yet answered.
    pub(super) queries: BTreeSet<ReqId>,
    pub(super) calls: BTreeMap<CallId, Call>,
    /// Messages the session decided to send on its own (the automatic answers of the
    /// fallback paths), drained into the transmit queue after each message.
    pub(super) outbox: Vec<ClientMessage>,
}

impl Online {
    /// Handles a message while logged in. Returns a violation if the message must be
    /// refused.
    pub(super) fn handle(
        &mut self,
        msg: ServerMessage,
        events: &mut VecDeque<ClientEvent>,
    ) -> Option<Violation> {
        // Every table frame after `synced` counts for a resume, whatever it does here
        // (the server numbered it when it sent it).
        if matches!(
            msg,
            ServerMessage::Online(_)
                | ServerMessage::Offline(_)
                | ServerMessage::ContactAdded { .. }
                | ServerMessage::ContactRemoved { .. }
        ) {
            if let Some(n) = self.seen.as_mut() {
                *n += 1;
            }
        }
        match msg {
            ServerMessage::Synced {} => {
                self.synced = true;
                self.seen.get_or_insert(self.seen_at_sync);
                events.push_back(ClientEvent::Synced);
            }
            ServerMessage::Online(p) => return self.online(p, events),
            ServerMessage::Offline(endpoint) => {
                if self.peers.remove(&endpoint).is_some() {
                    events.push_back(ClientEvent::PeerOffline { endpoint });
                }
            }
            ServerMessage::ContactAdded { req, user } => {
                self.contacts.insert(user.clone());
                events.push_back(ClientEvent::ContactsChanged {
                    req,
                    user,
                    added: true,
                });
            }
            ServerMessage::ContactRemoved { req, user } => {
                self.contacts.remove(&user);
                let gone: Vec<Endpoint> = self
                    .peers
                    .keys()
                    .filter(|e| e.user == user)
                    .cloned()
                    .collect();
                for endpoint in gone {
                    self.peers.remove(&endpoint);
                    events.push_back(ClientEvent::PeerOffline { endpoint });
                }
                events.push_back(ClientEvent::ContactsChanged {
                    req,
                    user,
                    added: false,
                });
            }
            ServerMessage::CapsAck { req } => {
                if !self.caps_in_flight.remove(&req) {
                    return Some(Violation::UnexpectedReq {
                        what: "caps_ack",
                        req,
                    });
                }
                events.push_back(ClientEvent::CapsAcknowledged { req });
            }
            ServerMessage::CallRinging { req, call } => {
                let Some(d) = self.dialing.remove(&req) else {
                    return Some(Violation::UnexpectedReq {
                        what: "call_ringing",
                        req,
                    });
                };
                let to = d.peer.clone();
                self.calls.insert(
                    call,
                    Call {
                        peer: d.peer,
                        role: Role::Caller,
                        state: CallState::Ringing,
                        params: d.params,
                        caps_on_wire: d.caps_sent,
                        send_caps_on_accept: false,
                        digest: d.digest,
                    },
                );
                events.push_back(ClientEvent::CallRinging { req, call, to });
            }
            ServerMessage::CallIncoming {
                call,
                from,
                digest,
                capabilities,
                media,
            } => return self.incoming(call, from, digest, capabilities, media, events),
            ServerMessage::CallAccepted {
                call,
                capabilities,
                media,
            } => {
                let own = self.caps.clone();
                let c = match self.ringing_as_caller(call, "call_accepted") {
                    Ok(c) => c,
                    Err(v) => return Some(v),
                };
                if let Some(theirs) = capabilities {
                    // The callee's capabilities changed since they were pushed, or this
                    // is a prior-art call.
                    c.params = Some(negotiate_pair(&own, &theirs));
                    c.caps_on_wire = true;
                }
                if c.params.is_none() {
                    // A prior-art call must be answered with the callee's capabilities.
                    return Some(Violation::UnexpectedCall {
                        what: "call_accepted",
                        call,
                    });
                }
                c.state = CallState::Established;
                if let Some(params) = c.params.clone() {
                    events.push_back(ClientEvent::CallEstablished {
                        call,
                        params,
                        path: c.path(),
                        media,
                    });
                }
            }
            ServerMessage::CallNeedCaps { call } => {
                match self.ringing_as_caller(call, "call_need_caps") {
                    Ok(c) => c.caps_on_wire = true,
                    Err(v) => return Some(v),
                }
                self.outbox.push(ClientMessage::CallRetry {
                    call,
                    capabilities: self.caps.clone(),
                });
            }
            ServerMessage::CapsQuery { from, req } => {
                if !self.is_contact(&from.user) {
                    return Some(Violation::NotAContact(from.user));
                }
                self.outbox.push(ClientMessage::CapsReply {
                    to: from,
                    req,
                    capabilities: self.caps.clone(),
                });
            }
            ServerMessage::CapsResult {
                req,
                from,
                capabilities,
            } => {
                if !self.is_contact(&from.user) {
                    return Some(Violation::NotAContact(from.user));
                }
                if !self.queries.remove(&req) {
                    return Some(Violation::UnexpectedReq {
                        what: "caps_result",
                        req,
                    });
                }
                events.push_back(ClientEvent::CapsResult {
                    req,
                    from,
                    params: negotiate_pair(&self.caps, &capabilities),
                    capabilities,
                });
            }
            ServerMessage::CallEnded { call, reason } => {
                if self.calls.remove(&call).is_some() {
                    events.push_back(ClientEvent::CallEnded { call, reason });
                }
            }
            other => return Some(Violation::Unexpected(other.type_name())),
        }
        None
    }

    /// Whether `user` is in the contact list and not this client's own user: the only
    /// users whose capabilities the client may hold (section 8.3).
    pub(super) fn is_contact(&self, user: &UserId) -> bool {
        *user != self.user && self.contacts.contains(user)
    }

    pub(super) fn online(
        &mut self,
        p: Presence,
        events: &mut VecDeque<ClientEvent>,
    ) -> Option<Violation> {
        if !self.is_contact(&p.user) {
            return Some(Violation::NotAContact(p.user));
        }
        let endpoint = p.endpoint();
        let params = negotiate_pair(&self.caps, &p.capabilities);
        let peer = Peer {
            fingerprint: p.capabilities.fingerprint(),
            capabilities: p.capabilities,
            params: params.clone(),
        };
        let event = if self.peers.insert(endpoint.clone(), peer).is_some() {
            ClientEvent::PeerUpdated { endpoint, params }
        } else {
            ClientEvent::PeerOnline { endpoint, params }
        };
        events.push_back(event);
        None
    }
}
