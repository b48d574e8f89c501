//! The cluster's registry on NATS JetStream (spec section "Clustering").
//!
//! This module moves records between the core and two JetStream key-value buckets; it
//! decides nothing about the protocol (who sees whom, what a client is sent: the core
//! does that with the inputs this module produces).
//!
//! - **Sessions** (`<prefix>_sessions`, replicated `--nats-replicas` ways): one key per
//!   session of every node, `s.<node>.<session>`, whose value is the core's
//!   [`SessionRecord`](precall_protocol::server::SessionRecord) as JSON. A node writes
//!   its own sessions' keys (the core's `Publish` and `Unpublish`), in the order the
//!   core emitted them, several in flight at once; a write whose acknowledgement fails
//!   is written again unless a later write to the same key superseded it, so the
//!   bucket ends up holding what the core last said about each key. Every node watches
//!   the whole bucket: first its current values, then every change in revision order,
//!   and hands other nodes' keys to the core. When the watch fails (a lost NATS
//!   connection, a consumer gap) it is opened again, which delivers the current values
//!   once more, and the keys that disappeared meanwhile are reported deleted.
//! - **Leases** (`<prefix>_nodes`): one key per live node, `n.<node>`, holding a
//!   random nonce of the process. A node creates its key when it starts (or takes it
//!   over once it has seen it unrenewed for the TTL plus a period: an earlier life that
//!   crashed; a key that keeps being renewed is a live node with the same id, and the
//!   start is refused) and renews it every third of the TTL (`--lease-ttl-ms`) with a
//!   compare-and-set on the revision it last wrote (a renewal whose acknowledgement was
//!   lost is recognised by the nonce). A node that could not renew for a whole TTL, or
//!   whose key was deleted or taken, has lost its lease: it must stop serving (fencing),
//!   because the other nodes are about to delete its sessions.
//! - **Judging the others.** Once per period every node reads the leases and keeps, per
//!   node, since when its revision has not changed *by its own clock*. A node whose key
//!   is missing, or unchanged for the TTL plus one period, is gone: the observer tells
//!   its core, deletes that node's session keys, each with the revision it saw (racing
//!   survivors delete each key once; a key written again meanwhile is kept), and
//!   deletes the stale lease, so that every other survivor sees it gone at its next
//!   look. While the leases cannot be read (a NATS leader election), nobody's clock
//!   runs: when reads resume, every lease starts over, so an outage of the registry
//!   does not make the nodes declare each other gone. Expiry by age is not used for
//!   this (it would expire every lease at once after such an outage); the bucket's age
//!   limit (a hundred TTLs) only clears keys of nodes gone for good.
//!   A crashed node's sessions go offline for the others within the TTL plus two
//!   periods (stale after TTL + one period, seen at the next look) plus the watch's
//!   delivery; a node cut off from NATS fences itself after one TTL, before the others
//!   can call it gone (TTL + one period), so no node serves sessions the others have
//!   already dropped.
//! - A node that starts deletes whatever its id left in the bucket in an earlier life
//!   (it cannot hold those sessions any more).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};

/// How to reach the registry, from `serve`'s arguments.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// NATS server URLs (any of them; the client fails over to the others).
    pub urls: Vec<String>,
    /// This node's id (`--node-id`).
    pub node: u16,
    /// Replicas of both buckets (3 in a 3-server JetStream cluster).
    pub replicas: usize,
    /// How long a lease lives without renewal.
    pub lease_ttl: Duration,
    /// Bucket name prefix, so that several clusters can share one NATS.
    pub prefix: String,
}

/// What the registry tells the server task.
#[derive(Debug, PartialEq, Eq)]
pub enum RegistryInput {
    /// Another node's session record was put (new, or replaced).
    Put {
        /// The node the key names.
        node: u16,
        /// The session the key names.
        session: u64,
        /// The record, as the other node wrote it (JSON).
        record: Bytes,
    },
    /// Another node's session key was deleted.
    Deleted {
        /// The node the key names.
        node: u16,
        /// The session the key names.
        session: u64,
    },
    /// A node that held sessions has no lease any more: it is gone.
    NodeGone(u16),
    /// This node lost its lease: it must stop serving.
    Fenced(String),
    /// A relay message (call signalling) from another node.
    Relay {
        /// The sending node.
        from: u16,
        /// The message, as the sender encoded it (JSON).
        message: Bytes,
    },
}

/// A write to this node's own keys, from the core's events.
#[derive(Debug)]
pub enum RegistryWrite {
    /// Put the record of one of this node's sessions.
    Publish {
        /// The session.
        session: u64,
        /// The record as JSON.
        record: Bytes,
    },
    /// Delete one of this node's sessions.
    Unpublish {
        /// The session.
        session: u64,
    },
    /// Send a relay message (call signalling) to another node, on its relay subject.
    Relay {
        /// The receiving node.
        to: u16,
        /// The message as JSON.
        message: Bytes,
    },
}

/// The key of a session in the sessions bucket.
pub fn session_key(node: u16, session: u64) -> String {
    format!("s.{node}.{session}")
}

/// The node and session a sessions-bucket key names, if it is one.
pub fn parse_session_key(key: &str) -> Option<(u16, u64)> {
    let rest = key.strip_prefix("s.")?;
    let (node, session) = rest.split_once('.')?;
    Some((node.parse().ok()?, session.parse().ok()?))
}

/// The subject a node takes relay messages on.
fn relay_subject(prefix: &str, node: u16) -> String {
    format!("{prefix}.relay.{node}")
}

/// The header naming a relay message's sender.
const FROM_HEADER: &str = "Precall-From";

fn lease_key(node: u16) -> String {
    format!("n.{node}")
}

fn parse_lease_key(key: &str) -> Option<u16> {
    key.strip_prefix("n.")?.parse().ok()
}

/// The connected registry: the two buckets.
#[derive(Clone)]
pub struct Registry {
    config: RegistryConfig,
    client: async_nats::Client,
    /// This process's lease value: tells its own renewals from another process's.
    nonce: Bytes,
    js: jetstream::Context,
    sessions: kv::Store,
    leases: kv::Store,
}

impl Registry {
    /// Connects to NATS, creates the buckets if missing, takes this node's lease (waiting
    /// up to two TTLs for a lease of an earlier life of this node to expire) and deletes
    /// what an earlier life of this node left in the sessions bucket.
    pub async fn connect(config: RegistryConfig) -> Result<(Self, u64)> {
        if config.urls.is_empty() {
            bail!("no NATS server given");
        }
        let addrs: Vec<async_nats::ServerAddr> = config
            .urls
            .iter()
            .map(|u| u.parse().with_context(|| format!("bad NATS URL {u}")))
            .collect::<Result<_>>()?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("precall-node-{}", config.node))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(addrs)
            .await
            .context("cannot connect to NATS")?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(2));
        let sessions = bucket(
            &js,
            kv::Config {
                bucket: format!("{}_sessions", config.prefix),
                description: "precall: online sessions of every node".into(),
                history: 1,
                num_replicas: config.replicas,
                ..Default::default()
            },
        )
        .await?;
        let leases = bucket(
            &js,
            kv::Config {
                bucket: format!("{}_nodes", config.prefix),
                description: "precall: node leases".into(),
                history: 1,
                // Leases are judged by their renewals, not by expiry (see `Leases`);
                // the age limit only clears keys of nodes gone for good.
                max_age: config.lease_ttl * 100,
                num_replicas: config.replicas,
                ..Default::default()
            },
        )
        .await?;
        let registry = Self {
            nonce: Bytes::from(format!("{:016x}", rand_u64())),
            client,
            config,
            js,
            sessions,
            leases,
        };
        let revision = registry.take_lease().await?;
        registry.forget_earlier_life().await?;
        Ok((registry, revision))
    }

    /// Takes this node's lease key: creates it, or takes it over with a
    /// compare-and-set once it has not been renewed for the TTL plus a renewal period
    /// (an earlier life of this node that crashed). A key renewed meanwhile belongs to
    /// a live node with the same id: refused after two TTLs.
    async fn take_lease(&self) -> Result<u64> {
        let key = lease_key(self.config.node);
        let ttl = self.config.lease_ttl;
        let started = Instant::now();
        let mut last: Option<(u64, Instant)> = None;
        loop {
            match self.leases.entry(&key).await {
                Ok(Some(e)) if e.operation == Operation::Put => {
                    match last {
                        Some((rev, since)) if rev == e.revision => {
                            if since.elapsed() >= ttl + ttl / 3 {
                                match self.leases.update(&key, self.nonce.clone(), rev).await {
                                    Ok(r) => return Ok(r),
                                    Err(e) => tracing::info!(error = %e, "lease taken meanwhile"),
                                }
                                last = None;
                            }
                        }
                        _ => last = Some((e.revision, Instant::now())),
                    }
                    if started.elapsed() > ttl * 2 + ttl / 3 {
                        bail!(
                            "node id {} is held by a live node (its lease is being renewed)",
                            self.config.node
                        );
                    }
                    tracing::info!(
                        node = self.config.node,
                        "node id leased: waiting to see it expire"
                    );
                }
                Ok(_) => match self.leases.create(&key, self.nonce.clone()).await {
                    Ok(r) => return Ok(r),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => transient(started, anyhow!(e).context("cannot take the node lease"))?,
                },
                // A bucket just created may have no stream leader yet: try again.
                Err(e) => transient(started, anyhow!(e).context("cannot read the node lease"))?,
            }
            sleep(ttl / 3).await;
        }
    }

    async fn forget_earlier_life(&self) -> Result<()> {
        let prefix = format!("s.{}.", self.config.node);
        let mut stale = Vec::new();
        let mut keys = self.sessions.keys().await.context("cannot list sessions")?;
        while let Some(key) = keys.next().await {
            let key = key.context("cannot list sessions")?;
            if key.starts_with(&prefix) {
                stale.push(key);
            }
        }
        for key in &stale {
            self.sessions
                .delete(key)
                .await
                .with_context(|| format!("cannot delete {key}"))?;
        }
        if !stale.is_empty() {
            tracing::info!(
                count = stale.len(),
                "deleted this node's sessions of an earlier life"
            );
        }
        Ok(())
    }

    /// Starts the three tasks (writer, watcher, leases); their inputs go to
    /// `to_server` through `wrap`. They stop when the returned handle is dropped.
    pub fn run<T: Send + 'static>(
        self,
        lease_revision: u64,
        writes: mpsc::UnboundedReceiver<RegistryWrite>,
        to_server: mpsc::Sender<T>,
        wrap: fn(RegistryInput) -> T,
    ) -> RegistryTasks {
        let watched = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.clone().write_loop(writes));
        tasks.spawn(
            self.clone()
                .watch_loop(watched.clone(), to_server.clone(), wrap),
        );
        tasks.spawn(self.clone().relay_loop(to_server.clone(), wrap));
        tasks.spawn(self.lease_loop(lease_revision, watched, to_server, wrap));
        RegistryTasks { _tasks: tasks }
    }

    fn subject(&self, key: &str) -> String {
        format!("$KV.{}.{}", self.sessions.name, key)
    }

    async fn send_write(&self, key: &str, op: &Op) -> Result<PublishAckFuture> {
        let subject = self.subject(key);
        let fut = match op {
            Op::Put(record) => self.js.publish(subject, record.clone()).await,
            Op::Delete => {
                let mut headers = HeaderMap::new();
                headers.insert("KV-Operation", "DEL");
                self.js
                    .publish_with_headers(subject, headers, Bytes::new())
                    .await
            }
        };
        fut.map_err(|e| anyhow!(e))
    }

    /// Writes this node's keys in order, up to [`WRITES_IN_FLIGHT`] awaiting their
    /// acknowledgement; retries a failed write unless superseded.
    async fn write_loop(self, mut writes: mpsc::UnboundedReceiver<RegistryWrite>) {
        let node = self.config.node;
        // The latest operation per key and its sequence number.
        let mut latest: HashMap<String, (u64, Op)> = HashMap::new();
        let mut in_flight: VecDeque<(String, u64, PublishAckFuture)> = VecDeque::new();
        let mut seq = 0u64;
        let mut open = true;
        loop {
            // Take new writes while there is room, without waiting if some are in flight.
            while open && in_flight.len() < WRITES_IN_FLIGHT {
                let next = if in_flight.is_empty() {
                    writes.recv().await
                } else {
                    match writes.try_recv() {
                        Ok(w) => Some(w),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    }
                };
                let Some(write) = next else {
                    open = false;
                    break;
                };
                let (key, op) = match write {
                    RegistryWrite::Publish { session, record } => {
                        (session_key(node, session), Op::Put(record))
                    }
                    RegistryWrite::Unpublish { session } => {
                        (session_key(node, session), Op::Delete)
                    }
                    RegistryWrite::Relay { to, message } => {
                        // Plain NATS, at most once, in order per pair of nodes: a lost
                        // relay is a call that times out (spec 19.4).
                        let mut headers = HeaderMap::new();
                        headers.insert(FROM_HEADER, node.to_string().as_str());
                        let subject = relay_subject(&self.config.prefix, to);
                        if let Err(e) = self
                            .client
                            .publish_with_headers(subject, headers, message)
                            .await
                        {
                            tracing::warn!(to, error = %e, "relay message not sent");
                        }
                        continue;
                    }
                };
                seq += 1;
                let fut = self.send_until_sent(&key, &op).await;
                latest.insert(key.clone(), (seq, op));
                in_flight.push_back((key, seq, fut));
            }
            let Some((key, s, fut)) = in_flight.pop_front() else {
                if !open {
                    return;
                }
                continue;
            };
            match fut.await {
                Ok(_) => {
                    if latest.get(&key).is_some_and(|(l, _)| *l == s) {
                        latest.remove(&key);
                    }
                }
                Err(e) => {
                    // Superseded writes are not retried: the later one decides the key.
                    if let Some((l, op)) = latest.get(&key) {
                        if *l == s {
                            tracing::warn!(%key, error = %e, "registry write not acknowledged: writing it again");
                            let fut = self.send_until_sent(&key, op).await;
                            in_flight.push_back((key, s, fut));
                        }
                    }
                }
            }
        }
    }

    async fn send_until_sent(&self, key: &str, op: &Op) -> PublishAckFuture {
        loop {
            match self.send_write(key, op).await {
                Ok(fut) => return fut,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cannot write to the registry: retrying");
                    sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Watches the sessions bucket and reports other nodes' keys, opening the watch
    /// again when it fails.
    async fn watch_loop<T>(
        self,
        watched: Watched,
        to_server: mpsc::Sender<T>,
        wrap: fn(RegistryInput) -> T,
    ) {
        let node = self.config.node;
        let mut first = true;
        loop {
            if !first {
                sleep(Duration::from_millis(200)).await;
            }
            first = false;
            let mut watch = match self.sessions.watch_all().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the registry: retrying");
                    continue;
                }
            };
            // After a new watch: what disappeared while it was down.
            let current: BTreeSet<String> = match self.list_keys().await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the registry: watching again");
                    continue;
                }
            };
            let gone: Vec<String> = {
                let mut w = lock(&watched);
                let gone: Vec<String> = w
                    .keys()
                    .filter(|k| !current.contains(*k))
                    .cloned()
                    .collect();
                for k in &gone {
                    w.remove(k);
                }
                gone
            };
            for key in gone {
                if let Some((n, session)) = parse_session_key(&key) {
                    if to_server
                        .send(wrap(RegistryInput::Deleted { node: n, session }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            while let Some(entry) = watch.next().await {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "registry watch failed: watching again");
                        break;
                    }
                };
                let Some((n, session)) = parse_session_key(&entry.key) else {
                    tracing::warn!(key = %entry.key, "not a session key in the registry: ignored");
                    continue;
                };
                let input = match entry.operation {
                    Operation::Put => {
                        lock(&watched).insert(entry.key.clone(), entry.revision);
                        RegistryInput::Put {
                            node: n,
                            session,
                            record: entry.value,
                        }
                    }
                    Operation::Delete | Operation::Purge => {
                        lock(&watched).remove(&entry.key);
                        RegistryInput::Deleted { node: n, session }
                    }
                };
                if n == node {
                    continue;
                }
                if to_server.send(wrap(input)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Takes relay messages addressed to this node.
    async fn relay_loop<T>(self, to_server: mpsc::Sender<T>, wrap: fn(RegistryInput) -> T) {
        let subject = relay_subject(&self.config.prefix, self.config.node);
        loop {
            let mut sub = match self.client.subscribe(subject.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to relay messages: retrying");
                    sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while let Some(msg) = sub.next().await {
                let from = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(FROM_HEADER))
                    .and_then(|v| v.as_str().parse::<u16>().ok());
                let Some(from) = from else {
                    tracing::warn!("relay message without a sender: ignored");
                    continue;
                };
                let input = RegistryInput::Relay {
                    from,
                    message: msg.payload,
                };
                if to_server.send(wrap(input)).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn list_keys(&self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let mut keys = self.sessions.keys().await?;
        while let Some(k) = keys.next().await {
            out.insert(k?);
        }
        Ok(out)
    }

    /// Renews this node's lease and checks the others'.
    async fn lease_loop<T>(
        self,
        mut revision: u64,
        watched: Watched,
        to_server: mpsc::Sender<T>,
        wrap: fn(RegistryInput) -> T,
    ) {
        let node = self.config.node;
        let ttl = self.config.lease_ttl;
        let mut renewed = Instant::now();
        let mut tick = interval(ttl / 3);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut leases = Leases::new(ttl + ttl / 3);
        loop {
            tick.tick().await;
            // The renewal may not outlast the lease: the fence falls at one TTL after
            // the last renewal at the latest, however slow NATS is to answer.
            let remaining = ttl.saturating_sub(renewed.elapsed());
            let renewal = tokio::time::timeout(remaining, self.renew(revision))
                .await
                .unwrap_or_else(|_| Renewal::Failed("no answer within the lease".into()));
            match renewal {
                Renewal::Renewed(r) => {
                    revision = r;
                    renewed = Instant::now();
                }
                Renewal::Lost(why) => {
                    let _ = to_server.send(wrap(RegistryInput::Fenced(why))).await;
                    return;
                }
                Renewal::Failed(e) => {
                    tracing::warn!(error = %e, "cannot renew the node lease");
                    if renewed.elapsed() >= ttl {
                        let _ = to_server
                            .send(wrap(RegistryInput::Fenced(format!(
                                "node {node} could not renew its lease for {} ms",
                                ttl.as_millis()
                            ))))
                            .await;
                        return;
                    }
                }
            }
            // The keys first, the leases second: a node takes its lease before it
            // writes a key, so every key seen here has its node's lease in what is
            // read next, unless that node is gone.
            let seen: Vec<(String, u64)> = lock(&watched)
                .iter()
                .map(|(k, r)| (k.clone(), *r))
                .collect();
            let now = Instant::now();
            let read = tokio::time::timeout(ttl / 3, self.read_leases())
                .await
                .unwrap_or_else(|_| Err(anyhow!("no answer within a period")));
            match read {
                Ok(read) => leases.observe(read, now),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the leases");
                    leases.blind();
                    continue;
                }
            }
            // Nodes with sessions in the bucket whose lease is gone or stale.
            let mut orphans: BTreeMap<u16, Vec<(String, u64)>> = BTreeMap::new();
            for (key, rev) in seen {
                if let Some((n, _)) = parse_session_key(&key) {
                    if n != node && leases.is_gone(n, now) {
                        orphans.entry(n).or_default().push((key, rev));
                    }
                }
            }
            for (gone, keys) in orphans {
                tracing::warn!(
                    node = gone,
                    sessions = keys.len(),
                    "node lease expired: its sessions go offline"
                );
                if to_server
                    .send(wrap(RegistryInput::NodeGone(gone)))
                    .await
                    .is_err()
                {
                    return;
                }
                for (key, rev) in keys {
                    // Another survivor may have deleted it first: then the revision differs.
                    if let Err(e) = self.sessions.delete_expect_revision(&key, Some(rev)).await {
                        tracing::debug!(%key, error = %e, "not deleted (deleted or written meanwhile)");
                    }
                }
                // Its stale lease goes too, so that every survivor sees it gone at once.
                if let Some(rev) = leases.revision(gone) {
                    let _ = self
                        .leases
                        .delete_expect_revision(lease_key(gone), Some(rev))
                        .await;
                }
            }
        }
    }

    /// One renewal of this node's lease, a compare-and-set on `revision`.
    async fn renew(&self, revision: u64) -> Renewal {
        let key = lease_key(self.config.node);
        match self.leases.update(&key, self.nonce.clone(), revision).await {
            Ok(r) => Renewal::Renewed(r),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // A renewal whose acknowledgement was lost still counts: the key holds
                // this process's nonce.
                match self.leases.entry(&key).await {
                    Ok(Some(e)) if e.operation == Operation::Put && e.value == self.nonce => {
                        Renewal::Renewed(e.revision)
                    }
                    Ok(_) => Renewal::Lost(format!(
                        "the lease of node {} was deleted or taken by another process",
                        self.config.node
                    )),
                    Err(e) => Renewal::Failed(e.to_string()),
                }
            }
            Err(e) => Renewal::Failed(e.to_string()),
        }
    }

    async fn read_leases(&self) -> Result<BTreeMap<u16, u64>> {
        let mut out = BTreeMap::new();
        let mut keys = self.leases.keys().await?;
        let mut names = Vec::new();
        while let Some(k) = keys.next().await {
            names.push(k?);
        }
        for k in names {
            if let Some(n) = parse_lease_key(&k) {
                if let Some(e) = self.leases.entry(&k).await? {
                    if e.operation == Operation::Put {
                        out.insert(n, e.revision);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// An error while joining, tolerated for [`JOIN_PATIENCE`] after `started`.
fn transient(started: Instant, e: anyhow::Error) -> Result<()> {
    if started.elapsed() > JOIN_PATIENCE {
        return Err(e);
    }
    tracing::info!(error = %e, "registry not ready: trying again");
    Ok(())
}

/// How long joining the cluster tolerates registry errors (a JetStream cluster that
/// is still electing its leaders).
const JOIN_PATIENCE: Duration = Duration::from_secs(10);

/// The outcome of a renewal.
enum Renewal {
    Renewed(u64),
    /// The key is gone or holds another process's nonce: fence.
    Lost(String),
    /// No answer: try again next period.
    Failed(String),
}

/// The other nodes' leases as this node observes them: a lease is stale once its
/// revision has not changed for `stale_after` of this node's own observation time.
/// While the registry cannot be read, nothing goes stale: after a blind spell every
/// lease is given a fresh start (a NATS leader election must not make every node
/// declare every other one gone).
struct Leases {
    stale_after: Duration,
    /// Per node: the revision last read and since when it has been unchanged.
    seen: BTreeMap<u16, (u64, Instant)>,
    blind: bool,
}

impl Leases {
    fn new(stale_after: Duration) -> Self {
        Self {
            stale_after,
            seen: BTreeMap::new(),
            blind: false,
        }
    }

    fn blind(&mut self) {
        self.blind = true;
    }

    fn observe(&mut self, read: BTreeMap<u16, u64>, now: Instant) {
        let fresh_start = std::mem::take(&mut self.blind);
        self.seen.retain(|n, _| read.contains_key(n));
        for (n, rev) in read {
            match self.seen.get_mut(&n) {
                Some((r, since)) if *r == rev => {
                    if fresh_start {
                        *since = now;
                    }
                }
                _ => {
                    self.seen.insert(n, (rev, now));
                }
            }
        }
    }

    /// Whether node `n` has no lease, or a stale one.
    fn is_gone(&self, n: u16, now: Instant) -> bool {
        match self.seen.get(&n) {
            None => true,
            Some((_, since)) => now.saturating_duration_since(*since) >= self.stale_after,
        }
    }

    fn revision(&self, n: u16) -> Option<u64> {
        self.seen.get(&n).map(|(r, _)| *r)
    }
}

/// The registry's running tasks, aborted when dropped.
pub struct RegistryTasks {
    _tasks: tokio::task::JoinSet<()>,
}

/// A random number from the operating system (the lease nonce).
fn rand_u64() -> u64 {
    use password_hash::rand_core::{OsRng, RngCore};
    OsRng.next_u64()
}

/// Writes awaiting their acknowledgement at once.
const WRITES_IN_FLIGHT: usize = 256;

type Watched = std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>>;

fn lock(w: &Watched) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
enum Op {
    Put(Bytes),
    Delete,
}

async fn bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store> {
    let name = config.bucket.clone();
    // Creating a bucket that exists with the same configuration returns it; several
    // nodes starting at once may race, so retry a few times.
    let mut last = None;
    for _ in 0..20 {
        match js.create_key_value(config.clone()).await {
            Ok(store) => return Ok(store),
            Err(e) => {
                if let Ok(store) = js.get_key_value(&name).await {
                    return Ok(store);
                }
                last = Some(e);
                sleep(Duration::from_millis(250)).await;
            }
        }
    }
    Err(anyhow!("cannot create the bucket {name}: {last:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_round_trip_and_refuse_others() {
        assert_eq!(session_key(3, 281_474_976_710_657), "s.3.281474976710657");
        assert_eq!(parse_session_key("s.3.17"), Some((3, 17)));
        assert_eq!(parse_session_key("n.3"), None);
        assert_eq!(parse_session_key("s.3"), None);
        assert_eq!(parse_session_key("s.70000.1"), None);
        assert_eq!(parse_session_key("s.1.x"), None);
        assert_eq!(parse_lease_key("n.65535"), Some(65535));
        assert_eq!(parse_lease_key("s.1.2"), None);
    }

    /// A lease goes stale only after `stale_after` of observed silence; one missing
    /// from a read is gone at once; a blind spell (the registry unreadable) restarts
    /// every lease's clock.
    #[test]
    fn leases_go_stale_by_observation_not_across_a_blind_spell() {
        let t0 = Instant::now();
        let s = Duration::from_secs(2);
        let mut l = Leases::new(s);
        l.observe(BTreeMap::from([(1, 10), (2, 20)]), t0);
        assert!(!l.is_gone(1, t0 + Duration::from_millis(1999)));
        assert!(l.is_gone(1, t0 + s));
        // Node 2 renews: its clock restarts.
        l.observe(
            BTreeMap::from([(1, 10), (2, 21)]),
            t0 + Duration::from_secs(1),
        );
        assert!(!l.is_gone(2, t0 + Duration::from_millis(2500)));
        assert!(l.is_gone(2, t0 + Duration::from_secs(3)));
        // Not in the read: gone, whatever the clock says.
        assert!(l.is_gone(3, t0));
        // A blind spell: node 1's unchanged lease starts over when reads resume.
        l.blind();
        l.observe(
            BTreeMap::from([(1, 10), (2, 21)]),
            t0 + Duration::from_secs(5),
        );
        assert!(!l.is_gone(1, t0 + Duration::from_secs(6)));
        assert!(l.is_gone(1, t0 + Duration::from_secs(7)));
        assert_eq!(l.revision(2), Some(21));
        // Dropped from the read: forgotten.
        l.observe(BTreeMap::from([(2, 21)]), t0 + Duration::from_secs(8));
        assert_eq!(l.revision(1), None);
    }
}

/// Against a real three-server JetStream cluster (`nats-server`, as in `e2e::nats`).
#[cfg(test)]
mod nats_tests {
    use super::*;
    use precall_e2e::nats::NatsCluster;

    const TTL: Duration = Duration::from_millis(1500);

    fn config(cluster: &NatsCluster, node: u16) -> RegistryConfig {
        RegistryConfig {
            urls: cluster.urls(),
            node,
            replicas: 3,
            lease_ttl: TTL,
            prefix: "t".into(),
        }
    }

    struct Node {
        writes: mpsc::UnboundedSender<RegistryWrite>,
        inputs: mpsc::Receiver<RegistryInput>,
        _tasks: RegistryTasks,
    }

    async fn node(cluster: &NatsCluster, id: u16) -> Node {
        let (registry, rev) = Registry::connect(config(cluster, id))
            .await
            .expect("connect");
        let (wtx, wrx) = mpsc::unbounded_channel();
        let (itx, irx) = mpsc::channel(64);
        let tasks = registry.run(rev, wrx, itx, |i| i);
        Node {
            writes: wtx,
            inputs: irx,
            _tasks: tasks,
        }
    }

    async fn next(n: &mut Node, within: Duration) -> RegistryInput {
        tokio::time::timeout(within, n.inputs.recv())
            .await
            .expect("no registry input in time")
            .expect("registry stopped")
    }

    /// Puts and deletes reach the other node in order and not the writer; a node whose
    /// tasks stop (a crash) is reported gone within TTL plus a renewal period, and its
    /// keys are deleted; the same id cannot start twice while its lease lives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_flow_between_nodes_and_a_crashed_node_is_reported_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = NatsCluster::start(dir.path(), 3).expect("nats cluster");
        let mut a = node(&cluster, 1).await;
        let mut b = node(&cluster, 2).await;
        // The same id again is refused while node 1 renews its lease.
        let dup = tokio::time::timeout(
            Duration::from_secs(10),
            Registry::connect(config(&cluster, 1)),
        )
        .await
        .expect("duplicate id answered");
        assert!(dup.is_err(), "a second node 1 must not start");

        for s in 1..=3u64 {
            a.writes
                .send(RegistryWrite::Publish {
                    session: s,
                    record: Bytes::from(format!("{{\"s\":{s}}}")),
                })
                .expect("write");
        }
        a.writes
            .send(RegistryWrite::Unpublish { session: 2 })
            .expect("write");
        // What node 2 holds of node 1, applying its inputs in order (its watch may
        // start after some writes: then it sees the bucket's current values first).
        let mut held = BTreeMap::new();
        let want = BTreeMap::from([
            (1u64, Bytes::from("{\"s\":1}")),
            (3, Bytes::from("{\"s\":3}")),
        ]);
        while held != want {
            match next(&mut b, Duration::from_secs(5)).await {
                RegistryInput::Put {
                    node: 1,
                    session,
                    record,
                } => {
                    held.insert(session, record);
                }
                RegistryInput::Deleted { node: 1, session } => {
                    held.remove(&session);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Relay messages reach the named node only, with their sender.
        a.writes
            .send(RegistryWrite::Relay {
                to: 2,
                message: Bytes::from_static(b"ring"),
            })
            .expect("write");
        loop {
            match next(&mut b, Duration::from_secs(5)).await {
                RegistryInput::Relay { from, message } => {
                    assert_eq!((from, &message[..]), (1, &b"ring"[..]));
                    break;
                }
                RegistryInput::Deleted {
                    node: 1,
                    session: 2,
                } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // The writer does not hear its own keys.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), a.inputs.recv())
                .await
                .is_err()
        );

        // Node 1 crashes: its lease is no longer renewed.
        let crashed = std::time::Instant::now();
        drop(a);
        let mut seen = Vec::new();
        loop {
            let i = next(&mut b, TTL * 3).await;
            let done = matches!(i, RegistryInput::Deleted { session: 3, .. });
            // The deletion of session 2 may still be on its way from the first part.
            if i != (RegistryInput::Deleted {
                node: 1,
                session: 2,
            }) {
                seen.push(i);
            }
            if done {
                break;
            }
        }
        let took = crashed.elapsed();
        assert_eq!(
            seen,
            vec![
                RegistryInput::NodeGone(1),
                RegistryInput::Deleted {
                    node: 1,
                    session: 1
                },
                RegistryInput::Deleted {
                    node: 1,
                    session: 3
                }
            ]
        );
        assert!(
            took <= TTL + TTL * 2 / 3 + Duration::from_secs(1),
            "gone after {took:?}"
        );
        // Node 1 may start again now, with an empty slate.
        let (_again, _) = Registry::connect(config(&cluster, 1))
            .await
            .expect("node 1 again");
    }

    /// A node that cannot reach NATS for a TTL is fenced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_cut_off_from_nats_is_fenced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = NatsCluster::start(dir.path(), 3).expect("nats cluster");
        let mut a = node(&cluster, 1).await;
        let cut = std::time::Instant::now();
        for i in 0..3 {
            cluster.kill(i);
        }
        let i = next(&mut a, TTL * 4).await;
        assert!(matches!(i, RegistryInput::Fenced(_)), "{i:?}");
        // At most one TTL after the last renewal, which came before the cut.
        assert!(
            cut.elapsed() <= TTL + Duration::from_millis(700),
            "fenced after {:?}",
            cut.elapsed()
        );
    }
}
