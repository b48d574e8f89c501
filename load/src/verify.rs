//! INV-ONLINE-EXACT, checked on the real clients of a load run.
//!
//! The tool knows the contact graph it generated and, from each session's `LoggedIn`
//! and [`Client::capabilities`], which terminals are online with which capabilities
//! (the [`Directory`]). A client's expected table is every online session of every user
//! that its user and that user list each other; its actual table is
//! [`Client::peers`]. They must hold the same endpoints with the same capabilities, and
//! every entry's parameters must be `negotiate_pair(own capabilities, entry's
//! capabilities)`. The same check runs over another contact graph than the generated
//! one ([`Checker::check_in`]: the crash scenario's store, which contact changes move
//! away from the population).

use std::collections::{BTreeSet, HashMap};

use precall_protocol::client::Status;
use precall_protocol::{
    negotiate_pair, CallParams, Client, Endpoint, Fingerprint, SessionId, UserId,
};
use serde::{Deserialize, Serialize};

use crate::population::Population;

/// One online terminal: its user, session and capabilities' fingerprint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirEntry {
    /// User index in the population.
    pub user: u32,
    /// Its session.
    pub session: SessionId,
    /// Fingerprint of its current capabilities.
    pub fp: Fingerprint,
}

/// Which terminals are online, by user.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    sessions: HashMap<u32, Vec<(SessionId, Fingerprint)>>,
}

impl Directory {
    /// A directory of these terminals.
    pub fn from_entries(entries: impl IntoIterator<Item = DirEntry>) -> Self {
        let mut d = Self::default();
        for e in entries {
            d.sessions
                .entry(e.user)
                .or_default()
                .push((e.session, e.fp));
        }
        d
    }

    /// Number of online terminals.
    pub fn len(&self) -> usize {
        self.sessions.values().map(Vec::len).sum()
    }

    /// What user `user`'s clients must hold, sorted by endpoint (the order of
    /// [`Client::peers`]).
    pub fn expected(&self, pop: &Population, user: usize) -> Vec<(Endpoint, Fingerprint)> {
        let contacts = pop.contacts(user).iter().copied();
        self.expected_of(pop, contacts, |c| pop.lists(c, user))
    }

    /// As [`Directory::expected`], over the contact lists `graph` (by user index)
    /// instead of the population's.
    pub fn expected_in(
        &self,
        pop: &Population,
        graph: &[BTreeSet<u32>],
        user: usize,
    ) -> Vec<(Endpoint, Fingerprint)> {
        let me = u32::try_from(user).unwrap_or(u32::MAX);
        let contacts = graph.get(user).into_iter().flatten().copied();
        self.expected_of(pop, contacts, |c| {
            graph.get(c).is_some_and(|l| l.contains(&me))
        })
    }

    /// The online sessions of those of `contacts` that `mutual` says list the user
    /// back, sorted by endpoint.
    fn expected_of(
        &self,
        pop: &Population,
        contacts: impl Iterator<Item = u32>,
        mutual: impl Fn(usize) -> bool,
    ) -> Vec<(Endpoint, Fingerprint)> {
        let mut out = Vec::new();
        for c in contacts {
            if !mutual(c as usize) {
                continue;
            }
            if let Some(list) = self.sessions.get(&c) {
                let name = pop.name(c as usize);
                out.extend(list.iter().map(|(session, fp)| {
                    (
                        Endpoint {
                            user: name.clone(),
                            session: *session,
                        },
                        *fp,
                    )
                }));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// How many entries user `user`'s clients must hold.
    pub fn expected_len(&self, pop: &Population, user: usize) -> usize {
        pop.contacts(user)
            .iter()
            .filter(|&&c| pop.lists(c as usize, user))
            .filter_map(|c| self.sessions.get(c))
            .map(Vec::len)
            .sum()
    }
}

/// Checks tables, remembering the parameters it negotiated (a run has few distinct
/// capability sets).
#[derive(Default)]
pub struct Checker {
    params: HashMap<(Fingerprint, Fingerprint), CallParams>,
}

impl Checker {
    /// Whether `client` (a session of user `user`) holds exactly its expected table.
    /// Quick mode compares endpoints and the fingerprints the client stored; full mode
    /// also recomputes each entry's fingerprint from its capabilities and checks its
    /// parameters. The error says what differs first.
    pub fn check(
        &mut self,
        pop: &Population,
        dir: &Directory,
        user: usize,
        client: &Client,
        full: bool,
    ) -> Result<(), String> {
        self.check_table(&pop.name(user), &dir.expected(pop, user), client, full)
    }

    /// As [`Checker::check`], over the contact lists `graph` (by user index) instead of
    /// the population's.
    pub fn check_in(
        &mut self,
        pop: &Population,
        graph: &[BTreeSet<u32>],
        dir: &Directory,
        user: usize,
        client: &Client,
        full: bool,
    ) -> Result<(), String> {
        let expected = dir.expected_in(pop, graph, user);
        self.check_table(&pop.name(user), &expected, client, full)
    }

    /// Whether `client` (user `me`'s) is online and holds exactly `expected`.
    fn check_table(
        &mut self,
        me: &UserId,
        expected: &[(Endpoint, Fingerprint)],
        client: &Client,
        full: bool,
    ) -> Result<(), String> {
        if client.status() != Status::Online || client.user() != Some(me) {
            return Err(format!("{me}: not online ({:?})", client.status()));
        }
        let Some(own) = client.capabilities() else {
            return Err(format!("{me}: no own capabilities"));
        };
        let own_fp = own.fingerprint();
        let mut actual = client.peers();
        for (endpoint, fp) in expected {
            let Some((got, peer)) = actual.next() else {
                return Err(format!("{me}: missing {endpoint}"));
            };
            if got != endpoint {
                return Err(if got < endpoint {
                    format!("{me}: unexpected {got}")
                } else {
                    format!("{me}: missing {endpoint}")
                });
            }
            if peer.fingerprint != *fp {
                return Err(format!("{me}: stale capabilities for {endpoint}"));
            }
            if full {
                let theirs = peer.capabilities.fingerprint();
                if theirs != *fp {
                    return Err(format!(
                        "{me}: capabilities of {endpoint} do not match their fingerprint"
                    ));
                }
                let params = self
                    .params
                    .entry((own_fp, theirs))
                    .or_insert_with(|| negotiate_pair(own, &peer.capabilities));
                if peer.params != *params {
                    return Err(format!("{me}: wrong parameters for {endpoint}"));
                }
            }
        }
        if let Some((extra, _)) = actual.next() {
            return Err(format!("{me}: unexpected {extra}"));
        }
        Ok(())
    }
}

/// The outcome of checking many tables.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Verdict {
    /// Tables checked.
    pub checked: usize,
    /// Tables that differ from the expected one.
    pub mismatches: usize,
    /// Entries the checked tables hold, in total.
    pub entries: usize,
    /// The first few differences.
    pub examples: Vec<String>,
}

impl Verdict {
    /// Records one table's result.
    pub fn record(&mut self, result: Result<(), String>) {
        self.checked += 1;
        if let Err(e) = result {
            self.mismatches += 1;
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
    }

    /// Adds another process's verdict.
    pub fn merge(&mut self, other: Verdict) {
        self.checked += other.checked;
        self.mismatches += other.mismatches;
        self.entries += other.entries;
        for e in other.examples {
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use precall_protocol::sim::{Directory as Store, Sim};
    use precall_protocol::{LoginWith, ServerConfig};

    /// Three users who all list each other, logged in through the in-memory network.
    fn world() -> (Population, Sim) {
        let pop = Population::generate(3, 2, 9).unwrap();
        let mut store = Store::default();
        for i in 0..3 {
            store.add_user(&pop.name(i), pop.password(i).expose());
        }
        for i in 0..3 {
            for &c in pop.contacts(i) {
                store.befriend(&pop.name(i), &pop.name(c as usize));
            }
        }
        let mut sim = Sim::new(store, 3, ServerConfig::default());
        for i in 0..3 {
            let with = LoginWith::Capabilities(pop.caps(i).clone());
            sim.login(i, &pop.name(i), pop.password(i).expose(), with);
        }
        sim.settle().unwrap();
        (pop, sim)
    }

    fn entry(sim: &Sim, i: usize) -> DirEntry {
        let c = sim.client(i);
        DirEntry {
            user: u32::try_from(i).unwrap(),
            session: c.session().unwrap(),
            fp: c.capabilities().unwrap().fingerprint(),
        }
    }

    #[test]
    fn exact_tables_pass_and_differences_are_named() {
        let (pop, sim) = world();
        let all = Directory::from_entries((0..3).map(|i| entry(&sim, i)));
        assert_eq!(all.len(), 3);
        let mut checker = Checker::default();
        for i in 0..3 {
            assert_eq!(all.expected_len(&pop, i), 2);
            for full in [false, true] {
                checker.check(&pop, &all, i, sim.client(i), full).unwrap();
            }
        }
        // A directory without user 2: everyone else holds an unexpected entry.
        let without = Directory::from_entries((0..2).map(|i| entry(&sim, i)));
        let err = checker
            .check(&pop, &without, 0, sim.client(0), true)
            .unwrap_err();
        assert!(err.contains("unexpected u000002"), "{err}");
        // A directory with a session nobody was told of: it is missing.
        let mut extra: Vec<DirEntry> = (0..3).map(|i| entry(&sim, i)).collect();
        extra.push(DirEntry {
            session: SessionId(999),
            ..entry(&sim, 1)
        });
        let extra = Directory::from_entries(extra);
        let err = checker
            .check(&pop, &extra, 0, sim.client(0), true)
            .unwrap_err();
        assert!(err.contains("missing u000001/999"), "{err}");
        // Different capabilities than the directory says: stale.
        let mut stale: Vec<DirEntry> = (0..3).map(|i| entry(&sim, i)).collect();
        stale[1].fp = Fingerprint([7; 16]);
        let err = checker
            .check(
                &pop,
                &Directory::from_entries(stale),
                0,
                sim.client(0),
                false,
            )
            .unwrap_err();
        assert!(err.contains("stale capabilities"), "{err}");
        // A client that is not logged in never passes.
        let idle = Client::new(precall_protocol::ClientConfig::default());
        assert!(checker.check(&pop, &all, 0, &idle, false).is_err());

        let mut v = Verdict::default();
        v.record(Ok(()));
        v.record(Err("x".into()));
        assert_eq!((v.checked, v.mismatches, v.examples.len()), (2, 1, 1));
    }
}
