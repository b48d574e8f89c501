//! `serve --nats`: this process as one node of a cluster (spec section "Clustering").
//!
//! The glue between the core's cluster events and inputs and the registry (module
//! `registry`): the core's [`ServerEvent::Publish`] and [`ServerEvent::Unpublish`]
//! become writes of this node's keys, and what the registry reports of the other nodes
//! becomes [`Server::remote_online`], [`Server::remote_offline`] and
//! [`Server::remote_node_gone`]; the core's [`ServerEvent::Relay`] (call signalling
//! between nodes) goes to the other node's relay subject and comes back out of it as
//! [`Server::relay_received`]. Nothing here decides who sees whom.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use precall_protocol::server::{RelayMessage, SessionRecord};
#[cfg(doc)]
use precall_protocol::ServerEvent;
use precall_protocol::{NodeId, Server, SessionId, Time};
use tokio::sync::mpsc;

use crate::registry::{Registry, RegistryConfig, RegistryInput, RegistryTasks, RegistryWrite};

/// Cluster options of `serve`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Run as one node of a cluster whose registry is this NATS JetStream (URLs separated
    /// by commas; the client fails over between them). Needs --node-id and, for the
    /// nodes to share accounts and contact lists, a shared --db postgres://...
    #[arg(long, value_delimiter = ',')]
    pub nats: Vec<String>,
    /// This node's id in the cluster (1 to 65535), unique among live nodes.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub node_id: Option<u16>,
    /// How long this node's lease lives without renewal, in milliseconds (it is renewed
    /// every third of this): a crashed node's terminals stay online for the others at
    /// most this plus two thirds of it, plus the registry's delivery.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub lease_ttl_ms: u64,
    /// Replicas of the registry's buckets (the JetStream cluster's size, at most 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: u8,
    /// Prefix of the registry's bucket names, so that clusters can share one NATS.
    #[arg(long, default_value = "precall")]
    pub nats_prefix: String,
}

impl ClusterArgs {
    /// The node id, if clustering is asked for; an error if half of it is.
    pub fn node(&self) -> Result<Option<NodeId>> {
        match (self.nats.is_empty(), self.node_id) {
            (true, None) => Ok(None),
            (false, Some(n)) => Ok(Some(NodeId(n))),
            (false, None) => bail!("--nats needs --node-id"),
            (true, Some(_)) => bail!("--node-id needs --nats"),
        }
    }
}

/// This node's link to the registry.
pub struct Cluster {
    writes: mpsc::UnboundedSender<RegistryWrite>,
    _tasks: RegistryTasks,
}

impl Cluster {
    /// Connects to the registry and takes this node's lease; the registry's reports go
    /// to `to_server` wrapped by `wrap`.
    pub async fn start<T: Send + 'static>(
        args: &ClusterArgs,
        node: NodeId,
        to_server: mpsc::Sender<T>,
        wrap: fn(RegistryInput) -> T,
    ) -> Result<Self> {
        let config = RegistryConfig {
            urls: args.nats.clone(),
            node: node.0,
            replicas: usize::from(args.nats_replicas),
            lease_ttl: Duration::from_millis(args.lease_ttl_ms),
            prefix: args.nats_prefix.clone(),
        };
        let (registry, lease) = tokio::time::timeout(
            Duration::from_millis(args.lease_ttl_ms * 2) + Duration::from_secs(15),
            Registry::connect(config),
        )
        .await
        .context("the registry did not answer")?
        .context("cannot join the cluster")?;
        tracing::info!(node = node.0, nats = ?args.nats, "joined the cluster");
        let (writes, rx) = mpsc::unbounded_channel();
        let tasks = registry.run(lease, rx, to_server, wrap);
        Ok(Self {
            writes,
            _tasks: tasks,
        })
    }

    /// Writes a local session's record ([`ServerEvent::Publish`]).
    pub fn publish(&self, record: &SessionRecord) {
        match serde_json::to_vec(record) {
            Ok(json) => {
                let _ = self.writes.send(RegistryWrite::Publish {
                    session: record.session.0,
                    record: Bytes::from(json),
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a session record"),
        }
    }

    /// Sends a relay message to another node ([`ServerEvent::Relay`]).
    pub fn relay(&self, to: NodeId, message: &RelayMessage) {
        match serde_json::to_vec(message) {
            Ok(json) => {
                let _ = self.writes.send(RegistryWrite::Relay {
                    to: to.0,
                    message: Bytes::from(json),
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a relay message"),
        }
    }

    /// Deletes a local session's record ([`ServerEvent::Unpublish`]).
    pub fn unpublish(&self, session: SessionId) {
        let _ = self
            .writes
            .send(RegistryWrite::Unpublish { session: session.0 });
    }
}

/// Hands one report of the registry to the core. Returns why this node must stop
/// serving, if it lost its lease.
pub fn apply(server: &mut Server, input: RegistryInput, now: Time) -> Option<String> {
    let result = match input {
        RegistryInput::Put {
            node,
            session,
            record,
        } => match serde_json::from_slice::<SessionRecord>(&record) {
            Ok(r) if r.node == NodeId(node) && r.session == SessionId(session) => {
                server.remote_online(r, now)
            }
            Ok(_) => {
                tracing::warn!(
                    node,
                    session,
                    "registry record under another session's key: ignored"
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(node, session, error = %e, "unreadable registry record: ignored");
                Ok(())
            }
        },
        RegistryInput::Deleted { session, .. } => server.remote_offline(SessionId(session), now),
        RegistryInput::NodeGone(node) => server.remote_node_gone(NodeId(node), now).map(|n| {
            tracing::warn!(node, sessions = n, "node gone: its sessions are offline");
        }),
        RegistryInput::Fenced(why) => return Some(why),
        RegistryInput::Relay { from, message } => {
            match serde_json::from_slice::<RelayMessage>(&message) {
                Ok(m) => server.relay_received(NodeId(from), m, now),
                Err(e) => {
                    tracing::warn!(from, error = %e, "unreadable relay message: ignored");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "registry input refused by the core");
    }
    None
}
