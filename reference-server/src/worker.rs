//! The store thread: every database access of a running server, in order.
//!
//! One thread owns the database connection (SQLite, or PostgreSQL, whose blocking client
//! must not run on a tokio thread) and runs jobs in the order the server task
//! queued them, so a contact change persisted before a login is seen by that login's
//! lookup, and two changes of one list land in order. The slow part of a login, the
//! argon2id verification, does not run here: the thread hands it to tokio's blocking
//! pool (at most `parallelism` at once, each holding its memory cost) and the verdict
//! goes back to the server task as an [`Input::Verdict`].
//!
//! Contact-list changes are committed in groups: the changes queued one after another
//! go into one transaction (one write to disk), and their outcomes go back together as
//! one [`Input::Stored`], so a flood of changes costs one commit per batch. The changes
//! that changed a list are logged in the store's roster-change log with this node's
//! `origin`, for the other nodes sharing the store; their log ids go back with them.

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use precall_protocol::server::{AuthRequest, AuthTicket, AuthVerdict, StoreOutcome, StoreRequest};
use precall_protocol::{Password, UserId};
use tokio::sync::Semaphore;

use crate::serve::Input;
use crate::store::{verify_password, LoginRecord, Persisted, Store, StoreError};

/// A job for the store thread.
pub enum Job {
    /// Look up and verify a login, then send [`Input::Verdict`].
    Auth(AuthRequest),
    /// Store a contact-list change a user made through the protocol, then send
    /// [`Input::Stored`] (with the other changes committed in the same transaction).
    Store(StoreRequest),
    /// Read the logged contact-list changes after this id, then send [`Input::Roster`].
    PollRoster {
        /// The last id already applied.
        after: i64,
    },
}

/// Most contact-list changes committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Credential checks whose connection closed before they ran: skipped when their turn
/// comes. Shared between the server task, which adds them, and the checks.
pub type Cancelled = Arc<Mutex<HashSet<AuthTicket>>>;

/// The running store thread.
pub struct Worker {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
    /// Checks to skip.
    pub cancelled: Cancelled,
}

impl Worker {
    /// Starts the thread. `dummy_phc` is verified for unknown users so that their
    /// rejection takes as long as a wrong password; `origin` tags this node's logged
    /// contact changes.
    pub fn start(
        store: Store,
        origin: i64,
        inputs: tokio::sync::mpsc::Sender<Input>,
        dummy_phc: String,
        parallelism: usize,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel();
        let rt = tokio::runtime::Handle::current();
        let cancelled = Cancelled::default();
        let ctx = Ctx {
            cancelled: cancelled.clone(),
            store,
            origin,
            inputs,
            rt,
            dummy_phc: Arc::from(dummy_phc),
            hashing: Arc::new(Semaphore::new(parallelism.max(1))),
        };
        let thread = std::thread::Builder::new()
            .name("precall-store".into())
            .spawn(move || ctx.run(rx))?;
        Ok(Self {
            jobs,
            thread,
            cancelled,
        })
    }

    /// Queues a job; never blocks.
    pub fn submit(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            tracing::error!("store thread is gone; job dropped");
        }
    }

    /// Runs every queued job, then stops the thread.
    pub fn finish(self) {
        drop(self.jobs);
        if self.thread.join().is_err() {
            tracing::error!("store thread panicked");
        }
    }
}

struct Ctx {
    cancelled: Cancelled,
    store: Store,
    origin: i64,
    inputs: tokio::sync::mpsc::Sender<Input>,
    rt: tokio::runtime::Handle,
    dummy_phc: Arc<str>,
    hashing: Arc<Semaphore>,
}

impl Ctx {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut next = None;
        while let Some(job) = next.take().or_else(|| rx.recv().ok()) {
            match job {
                Job::Auth(req) => self.auth(req),
                Job::Store(first) => {
                    // Every change queued right behind it joins the batch; the first
                    // other job waits for the batch to commit (jobs stay in order).
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(Job::Store(req)) => batch.push(req),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.store(batch);
                }
                Job::PollRoster { after } => {
                    let result = self.store.roster_events_after(after);
                    // Fails only once the server task is gone.
                    let _ = self.inputs.blocking_send(Input::Roster(result));
                }
            }
        }
    }

    /// Commits a batch of contact-list changes and reports each outcome.
    fn store(&mut self, batch: Vec<StoreRequest>) {
        let changes: Vec<(UserId, UserId, bool)> = batch
            .iter()
            .map(|r| (r.user.clone(), r.contact.clone(), r.added))
            .collect();
        let stored = match self.store.persist_roster_batch(&changes, self.origin) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(changes = batch.len(), error = %e, "cannot store contact changes");
                vec![Persisted::NotStored; batch.len()]
            }
        };
        let logged = batch
            .iter()
            .zip(&stored)
            .filter_map(|(r, p)| match p {
                Persisted::Logged(id) => Some((r.user.clone(), r.contact.clone(), *id)),
                _ => None,
            })
            .collect();
        let outcomes = batch
            .iter()
            .zip(stored)
            .map(|(r, p)| {
                let ok = p.is_stored();
                if !ok {
                    tracing::warn!(user = %r.user, contact = %r.contact, added = r.added, "contact change not stored");
                }
                let outcome = if ok { StoreOutcome::Stored } else { StoreOutcome::Failed };
                (r.ticket, outcome)
            })
            .collect();
        // Fails only once the server task is gone.
        let _ = self.inputs.blocking_send(Input::Stored(outcomes, logged));
    }

    fn auth(&self, req: AuthRequest) {
        let record = self.store.login_record(&req.user, req.terminal.as_ref());
        let (inputs, hashing, dummy, cancelled) = (
            self.inputs.clone(),
            self.hashing.clone(),
            self.dummy_phc.clone(),
            self.cancelled.clone(),
        );
        let AuthRequest {
            ticket,
            user,
            password,
            ..
        } = req;
        self.rt.spawn(async move {
            let verdict = match hashing.acquire_owned().await {
                // The client left while the check waited: nobody needs its verdict.
                Ok(_) if take(&cancelled, ticket) => return,
                Ok(_permit) => {
                    tokio::task::spawn_blocking(move || verdict(&user, record, &password, &dummy))
                        .await
                        .unwrap_or(AuthVerdict::Failed)
                }
                Err(_) => AuthVerdict::Failed,
            };
            let _ = inputs.send(Input::Verdict(ticket, verdict)).await;
        });
    }
}

/// Whether `ticket` was cancelled; forgets it either way.
pub fn take(cancelled: &Cancelled, ticket: AuthTicket) -> bool {
    cancelled
        .lock()
        .map(|mut set| set.remove(&ticket))
        .unwrap_or(false)
}

/// The verdict on a login, from the stored record. Slow: verifies a password hash.
fn verdict(
    user: &UserId,
    record: Result<Option<LoginRecord>, StoreError>,
    password: &Password,
    dummy_phc: &str,
) -> AuthVerdict {
    match record {
        Err(e) => {
            tracing::error!(%user, error = %e, "credential store failed");
            AuthVerdict::Failed
        }
        Ok(None) => {
            // Same work as for a known user: an unknown name is not revealed by timing.
            let _ = verify_password(dummy_phc, password);
            tracing::info!(%user, "login rejected: unknown user");
            AuthVerdict::Rejected
        }
        Ok(Some(rec)) => match verify_password(&rec.phc, password) {
            Ok(true) => AuthVerdict::Accepted {
                contacts: rec.contacts,
                registered: rec.registered,
            },
            Ok(false) => {
                tracing::info!(%user, "login rejected: wrong password");
                AuthVerdict::Rejected
            }
            Err(e) => {
                tracing::error!(%user, error = %e, "stored password hash is unusable");
                AuthVerdict::Failed
            }
        },
    }
}
