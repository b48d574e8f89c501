//! The store thread: every database access of a running server, in order.
//!
//! One thread owns the SQLite connection and runs jobs in the order the server task
//! queued them, so a contact change persisted before a login is seen by that login's
//! lookup, and two changes of one list land in order. The slow part of a login, the
//! argon2id verification, does not run here: the thread hands it to tokio's blocking
//! pool (at most `parallelism` at once, each holding its memory cost) and the verdict
//! goes back to the server task as an [`Input::Verdict`].

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use precall_protocol::server::{AuthRequest, AuthVerdict};
use precall_protocol::{Password, UserId};
use tokio::sync::Semaphore;

use crate::serve::Input;
use crate::store::{verify_password, LoginRecord, Store, StoreError};

/// A job for the store thread.
pub enum Job {
    /// Look up and verify a login, then send [`Input::Verdict`].
    Auth(AuthRequest),
    /// Persist a contact-list change a user made through the protocol.
    Persist {
        /// Whose list.
        user: UserId,
        /// The contact.
        contact: UserId,
        /// `true` if added.
        added: bool,
    },
    /// Read the administrator changes after this id, then send [`Input::Roster`].
    PollRoster {
        /// The last id already applied.
        after: i64,
    },
}

/// The running store thread.
pub struct Worker {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

impl Worker {
    /// Starts the thread. `dummy_phc` is verified for unknown users so that their
    /// rejection takes as long as a wrong password.
    pub fn start(
        store: Store,
        inputs: tokio::sync::mpsc::Sender<Input>,
        dummy_phc: String,
        parallelism: usize,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel();
        let rt = tokio::runtime::Handle::current();
        let ctx = Ctx {
            store,
            inputs,
            rt,
            dummy_phc: Arc::from(dummy_phc),
            hashing: Arc::new(Semaphore::new(parallelism.max(1))),
        };
        let thread = std::thread::Builder::new()
            .name("precall-store".into())
            .spawn(move || ctx.run(rx))?;
        Ok(Self { jobs, thread })
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
    store: Store,
    inputs: tokio::sync::mpsc::Sender<Input>,
    rt: tokio::runtime::Handle,
    dummy_phc: Arc<str>,
    hashing: Arc<Semaphore>,
}

impl Ctx {
    fn run(self, rx: mpsc::Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            match job {
                Job::Auth(req) => self.auth(req),
                Job::Persist {
                    user,
                    contact,
                    added,
                } => {
                    if let Err(e) = self.store.persist_roster(&user, &contact, added) {
                        tracing::error!(%user, %contact, added, error = %e, "cannot persist contact change");
                    }
                    // Committed (or failed for good): the held output may leave.
                    let _ = self.inputs.blocking_send(Input::Persisted);
                }
                Job::PollRoster { after } => {
                    let result = self.store.roster_events_after(after);
                    // Fails only once the server task is gone.
                    let _ = self.inputs.blocking_send(Input::Roster(result));
                }
            }
        }
    }

    fn auth(&self, req: AuthRequest) {
        let record = self.store.login_record(&req.user, req.terminal.as_ref());
        let (inputs, hashing, dummy) = (
            self.inputs.clone(),
            self.hashing.clone(),
            self.dummy_phc.clone(),
        );
        let AuthRequest {
            ticket,
            user,
            password,
            ..
        } = req;
        self.rt.spawn(async move {
            let verdict = match hashing.acquire_owned().await {
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
