//! What the server core asks of its embedder ([`ServerEvent`]: frames to write,
//! connections to close, credential checks to run, contact-list changes to store), the
//! answers it takes back ([`AuthVerdict`], [`StoreOutcome`]) and its errors.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::caps::{CallDigest, Capabilities};
use crate::ids::{CallId, ConnId, Endpoint, NodeId, Password, SessionId, TerminalId, UserId};
use crate::media::MediaDescription;
use crate::message::EndReason;

/// Identifies one pending credential check.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AuthTicket(pub u64);

/// A credential check the embedder must run, then answer with
/// [`Server::complete_auth`](crate::Server::complete_auth).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AuthRequest {
    /// Echo this in [`Server::complete_auth`](crate::Server::complete_auth).
    pub ticket: AuthTicket,
    /// The connection logging in.
    pub conn: ConnId,
    /// The account name.
    pub user: UserId,
    /// The password to verify.
    pub password: Password,
    /// For a login by terminal identifier (claim C8), the identifier whose registered
    /// capabilities the embedder must look up for this user.
    pub terminal: Option<TerminalId>,
}

/// What the embedder's credential store says about an [`AuthRequest`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum AuthVerdict {
    /// The credentials are good.
    Accepted {
        /// The user's stored contact list.
        contacts: Vec<UserId>,
        /// For a login by terminal identifier: the capabilities registered for that
        /// identifier and this user, or `None` if there are none.
        registered: Option<Capabilities>,
    },
    /// Unknown user or wrong password (indistinguishable on the wire).
    Rejected,
    /// The store failed; the client gets `internal`.
    Failed,
}

/// Identifies one contact-list change waiting for the embedder's store.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct StoreTicket(pub u64);

/// A contact-list change the embedder must make durable, then answer with
/// [`Server::complete_store`](crate::Server::complete_store). Tickets are issued in increasing order; the embedder
/// must store the changes in that order (it may commit several in one transaction).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StoreRequest {
    /// Echo this in [`Server::complete_store`](crate::Server::complete_store).
    pub ticket: StoreTicket,
    /// Whose contact list.
    pub user: UserId,
    /// The contact added or removed.
    pub contact: UserId,
    /// `true` if added. Storing is idempotent: the list may already be as asked.
    pub added: bool,
}

/// What the embedder's store says about a [`StoreRequest`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum StoreOutcome {
    /// The change is durable.
    Stored,
    /// The change cannot be stored (for example the account was removed meanwhile):
    /// it is not applied and the request is answered with `not_stored`.
    Failed,
}

/// One session as a clustered node publishes it to the cluster's registry (spec
/// "Clustering"): what another node needs to decide who may see it and to push it.
/// The embedder stores it under the session's key ([`ServerEvent::Publish`]) and hands
/// the records of other nodes to [`Server::remote_online`](crate::Server::remote_online).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionRecord {
    /// The node the session lives on.
    pub node: NodeId,
    /// The session, numbered in the node's range.
    pub session: SessionId,
    /// The user logged in on it.
    pub user: UserId,
    /// The registered terminal identifier it logged in with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<TerminalId>,
    /// Its current capabilities.
    pub capabilities: Capabilities,
    /// The user's contact list as the node holds it, in name order (at most
    /// [`MAX_CONTACTS`](crate::server::MAX_CONTACTS)): other nodes decide entitlement
    /// with it.
    pub contacts: Vec<UserId>,
}

impl SessionRecord {
    /// A record without a registered terminal identifier (an adapter's tests, a
    /// registry that lost the field); published records come from the server.
    pub fn new(
        node: NodeId,
        session: SessionId,
        user: UserId,
        capabilities: Capabilities,
        contacts: Vec<UserId>,
    ) -> Self {
        Self {
            node,
            session,
            user,
            terminal: None,
            capabilities,
            contacts,
        }
    }
}

/// A call message between two nodes of a cluster (spec "Clustering"): the call
/// signalling of a call whose parties live on different nodes. The embedder carries it
/// to the node named in [`ServerEvent::Relay`] and hands it over with
/// [`Server::relay_received`](crate::Server::relay_received). The call keeps the
/// caller's node's identifier at both nodes.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RelayMessage {
    /// The caller's node offers a call to a terminal of the receiving node.
    Offer {
        /// The call.
        call: CallId,
        /// The caller's terminal (a session of the sending node).
        from: Endpoint,
        /// The callee's terminal (a session of the receiving node).
        to: Endpoint,
        /// The call digest the caller computed.
        digest: CallDigest,
        /// The caller's capabilities, on the prior-art path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capabilities: Option<Capabilities>,
        /// The caller's media description, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaDescription>,
    },
    /// The callee accepted.
    Accepted {
        /// The call.
        call: CallId,
        /// The callee's capabilities, on fallback path (b).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capabilities: Option<Capabilities>,
        /// The callee's media description, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaDescription>,
    },
    /// The callee asks for the caller's capabilities (fallback path (c)).
    NeedCaps {
        /// The call.
        call: CallId,
    },
    /// The caller retries with its capabilities (fallback path (c)).
    Retry {
        /// The call.
        call: CallId,
        /// The caller's capabilities.
        capabilities: Capabilities,
    },
    /// The call ended at the sending node (rejected, hung up, cancelled, rung out, a
    /// party gone, or the offer could not be delivered).
    Ended {
        /// The call.
        call: CallId,
        /// Why.
        reason: EndReason,
    },
}

impl RelayMessage {
    /// The call the message is about.
    pub fn call(&self) -> CallId {
        match self {
            RelayMessage::Offer { call, .. }
            | RelayMessage::Accepted { call, .. }
            | RelayMessage::NeedCaps { call }
            | RelayMessage::Retry { call, .. }
            | RelayMessage::Ended { call, .. } => *call,
        }
    }
}

/// Something the embedder must do.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// Write this frame to the connection, after everything queued before it.
    Transmit {
        /// The connection.
        conn: ConnId,
        /// A complete frame. Presence pushes share one buffer among all recipients.
        frame: Bytes,
    },
    /// Flush what was queued for the connection, then close it. The server has already
    /// forgotten it; later events for it are ignored.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Run a credential check.
    Authenticate(AuthRequest),
    /// The connection of a pending credential check closed: skip the check if it has not
    /// run yet (its verdict would be discarded anyway).
    AuthCancelled(AuthTicket),
    /// Store a contact-list change a user asked for, then report the outcome with
    /// [`Server::complete_store`](crate::Server::complete_store). The change takes effect (and is acknowledged) only
    /// then, so an acknowledged change is durable (spec section 9.6).
    Store(StoreRequest),
    /// A session began (for logs and metrics).
    SessionStarted {
        /// The connection.
        conn: ConnId,
        /// The terminal.
        endpoint: Endpoint,
    },
    /// A session ended (for logs and metrics). `conn` is the connection it last had.
    SessionEnded {
        /// The connection.
        conn: ConnId,
        /// The terminal.
        endpoint: Endpoint,
    },
    /// A session's connection dropped; the session stays resumable for the grace
    /// period (for logs and metrics).
    SessionDetached {
        /// The connection that dropped.
        conn: ConnId,
        /// The terminal.
        endpoint: Endpoint,
    },
    /// A session was resumed on a new connection (for logs and metrics).
    SessionResumed {
        /// The new connection.
        conn: ConnId,
        /// The terminal.
        endpoint: Endpoint,
        /// Whether the client got a full snapshot rather than only what it missed.
        snapshot: bool,
        /// How many frames the catch-up held (the snapshot's `online` frames, or the
        /// missed table frames).
        frames: usize,
    },
    /// Clustered nodes only: put this record of a local session into the registry
    /// under its session's key, replacing the one there (a session came online, or its
    /// capabilities or its user's contact list changed).
    Publish(SessionRecord),
    /// Clustered nodes only: delete a local session's record from the registry (the
    /// session ended: logout, close, end of its grace, shutdown).
    Unpublish {
        /// This node.
        node: NodeId,
        /// The session.
        session: SessionId,
        /// Its user.
        user: UserId,
    },
    /// Clustered nodes only: carry this call message to `node` and hand it over there
    /// with [`Server::relay_received`](crate::Server::relay_received), after the
    /// relays to that node queued before it.
    Relay {
        /// The node to deliver to.
        node: NodeId,
        /// The message.
        message: RelayMessage,
    },
}

/// Misuse of the [`Server`](crate::Server) API by the embedder (never caused by a peer's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// [`Server::connect`](crate::Server::connect) with an identifier already in use.
    #[error("connection {0} is already open")]
    DuplicateConn(ConnId),
    /// [`Server::complete_auth`](crate::Server::complete_auth) with a ticket that is not pending (already answered,
    /// or the connection went away): nothing happened.
    #[error("no pending credential check {0:?}")]
    UnknownTicket(AuthTicket),
    /// [`Server::change_roster`](crate::Server::change_roster) would exceed the user's contact-list limit.
    #[error("contact list of {0} is full")]
    RosterFull(UserId),
    /// [`Server::complete_store`](crate::Server::complete_store) with a ticket that is not pending.
    #[error("no pending store request {0:?}")]
    UnknownStoreTicket(StoreTicket),
    /// A cluster input ([`Server::remote_online`](crate::Server::remote_online), ...) to a
    /// server without a node id: nothing happened.
    #[error("the server is not a cluster node")]
    NotClustered,
    /// A cluster input about this node's own sessions (the registry's echo of what it
    /// published): ignored, as the node knows its sessions first-hand.
    #[error("input about this node's own sessions ({0})")]
    OwnNode(NodeId),
    /// A remote record whose session is not numbered in its node's range, or that
    /// names another user or node than the record of the same session held.
    #[error("remote record of session {0} is inconsistent")]
    RemoteMismatch(SessionId),
    /// A remote record with a contact list longer than
    /// [`MAX_CONTACTS`](crate::server::MAX_CONTACTS), or capabilities larger than
    /// [`Limits::max_caps_bytes`](crate::server::Limits::max_caps_bytes).
    #[error("remote record of session {0} is too large")]
    RemoteTooLarge(SessionId),
    /// A new remote session beyond
    /// [`Limits::max_remote_sessions`](crate::server::Limits::max_remote_sessions): not held.
    #[error("too many remote sessions; session {0} not held")]
    TooManyRemoteSessions(SessionId),
    /// A relayed call message that does not fit the call it names (not numbered by
    /// the sending node, naming sessions the receiving node does not hold as
    /// described, or out of the call's state): nothing happened.
    #[error("relayed message for call {0} does not fit it")]
    BadRelay(CallId),
}
