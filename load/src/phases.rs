//! Phases shared by the multi-session scenarios: log every session in at once, then
//! wait until every table holds exactly its expected entries and check them all.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use precall_protocol::client::Status;
use precall_protocol::SessionId;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout_at, Instant};

use crate::session::{Cmd, Hub, Note, Notes};
use crate::verify::{Checker, DirEntry, Directory, Verdict};

/// How often table completion is polled.
const POLL: Duration = Duration::from_millis(10);

/// Converts this process's instants to wall-clock microseconds, so that processes on
/// one machine can compare times.
#[derive(Clone, Copy, Debug)]
pub struct Wall {
    at: Instant,
    us: u64,
}

impl Wall {
    /// Anchors the conversion now.
    pub fn new() -> Self {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Self {
            at: Instant::now(),
            us,
        }
    }

    /// `t` in microseconds since the Unix epoch.
    pub fn us(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.at).as_micros();
        let before = self.at.saturating_duration_since(t).as_micros();
        let since = u64::try_from(since).unwrap_or(u64::MAX);
        let before = u64::try_from(before).unwrap_or(u64::MAX);
        self.us.saturating_add(since).saturating_sub(before)
    }
}

/// What happened to the logins.
#[derive(Debug)]
pub struct Logins {
    /// When the first `Login` command was given.
    pub first_connect: Instant,
    /// Sessions that logged in: local index, session, when `login_ok` arrived.
    pub logged: Vec<(usize, SessionId, Instant)>,
    /// Sessions that did not: local index and why.
    pub failed: Vec<(usize, String)>,
}

/// Tells every session to log in at once and waits until each has logged in or
/// failed, at most `limit`.
pub async fn login_all(
    cmds: &[mpsc::UnboundedSender<Cmd>],
    notes: &mut Notes,
    limit: Duration,
) -> Logins {
    let first_connect = Instant::now();
    for tx in cmds {
        let _ = tx.send(Cmd::Login);
    }
    let deadline = first_connect + limit;
    let mut done = vec![false; cmds.len()];
    let (mut logged, mut failed) = (Vec::new(), Vec::new());
    while logged.len() + failed.len() < cmds.len() {
        match timeout_at(deadline, notes.recv()).await {
            Ok(Some((local, note, at))) => match note {
                Note::LoggedIn(session) if !done[local] => {
                    done[local] = true;
                    logged.push((local, session, at));
                }
                Note::Failed(why) if !done[local] => {
                    done[local] = true;
                    failed.push((local, why));
                }
                _ => {}
            },
            Ok(None) | Err(_) => break,
        }
    }
    for (local, d) in done.iter().enumerate() {
        if !d {
            failed.push((local, format!("no login_ok within {limit:?}")));
        }
    }
    Logins {
        first_connect,
        logged,
        failed,
    }
}

/// Every logged-in session of the hub, as directory entries.
pub fn dir_entries(hub: &Hub) -> Vec<DirEntry> {
    (0..hub.slots.len())
        .filter_map(|k| {
            let slot = hub.slot(k);
            let c = &slot.client;
            if c.status() != Status::Online {
                return None;
            }
            Some(DirEntry {
                user: u32::try_from(slot.user).ok()?,
                session: c.session()?,
                fp: c.capabilities()?.fingerprint(),
            })
        })
        .collect()
}

/// Waits (at most `limit`) until every online session's table holds exactly its
/// expected entries, recording in each slot when it did (the time of the change that
/// completed it), then checks every table in full.
pub async fn await_tables(hub: &Arc<Hub>, dir: &Directory, limit: Duration) -> Verdict {
    let deadline = Instant::now() + limit;
    let pop = hub.pop.clone();
    let mut checker = Checker::default();
    let mut pending: Vec<(usize, usize)> = (0..hub.slots.len())
        .filter_map(|k| {
            let slot = hub.slot(k);
            (slot.client.status() == Status::Online).then(|| (k, dir.expected_len(&pop, slot.user)))
        })
        .collect();
    loop {
        pending.retain(|&(k, want)| {
            let mut slot = hub.slot(k);
            if slot.client.peers().count() != want {
                return true;
            }
            if checker
                .check(&pop, dir, slot.user, &slot.client, false)
                .is_err()
            {
                return true;
            }
            slot.complete = slot.last_change.or(slot.logged_in);
            false
        });
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        sleep(POLL).await;
    }
    let mut verdict = Verdict::default();
    for k in 0..hub.slots.len() {
        let slot = hub.slot(k);
        if slot.client.status() != Status::Online {
            continue;
        }
        verdict.entries += slot.client.peers().count();
        verdict.record(checker.check(&pop, dir, slot.user, &slot.client, true));
    }
    verdict
}
