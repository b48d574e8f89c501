//! The users a load run logs in: names, passwords, a symmetric contact graph, each
//! user's capabilities and registered terminal, all derived from a seed.
//!
//! Every process of a run (the coordinator and its workers) derives the same
//! population from `(users, contacts, seed)`, so only the seed crosses process
//! boundaries. The coordinator writes it as the JSON lines that
//! `precall-server admin import` reads.

use std::collections::HashSet;
use std::io::Write;

use anyhow::{Context, Result};
use precall_protocol::caps::{Bandwidth, Camera, CpuClass, Size};
use precall_protocol::server::MAX_CONTACTS;
use precall_protocol::{Capabilities, Codec, LoginWith, Password, TerminalId, UserId};
use serde_json::json;

use crate::rng::Rng;

/// A generated population.
#[derive(Debug)]
pub struct Population {
    /// The seed it was derived from.
    pub seed: u64,
    /// Sorted contact lists by user index; symmetric (i lists j iff j lists i).
    contacts: Vec<Vec<u32>>,
    /// Index into `profiles` of each user's registered capabilities.
    profile_of: Vec<u16>,
    /// The distinct capability sets users are given.
    profiles: Vec<Capabilities>,
}

impl Population {
    /// `users` users, each listing about `contacts` others (at most `users - 1` and
    /// [`MAX_CONTACTS`]), all mutual.
    pub fn generate(users: usize, contacts: usize, seed: u64) -> Result<Self> {
        let profiles = profiles()?;
        let mut rng = Rng::new(seed);
        let profile_of = (0..users)
            .map(|_| u16::try_from(rng.below(profiles.len())).unwrap_or(0))
            .collect();
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); users];
        let per_user = contacts.min(users.saturating_sub(1)).min(MAX_CONTACTS);
        if users >= 2 && per_user > 0 {
            // users * per_user / 2 distinct random pairs: every user ends up with about
            // `per_user` contacts (binomially spread), never more than the limit.
            let target = users * per_user / 2;
            let mut seen: HashSet<(u32, u32)> = HashSet::with_capacity(target);
            let mut attempts = 0usize;
            while seen.len() < target && attempts < target * 20 {
                attempts += 1;
                let (a, b) = (rng.below(users), rng.below(users));
                if a == b || lists[a].len() >= MAX_CONTACTS || lists[b].len() >= MAX_CONTACTS {
                    continue;
                }
                let (lo, hi) = (a.min(b), a.max(b));
                let pair = (index(lo), index(hi));
                if seen.insert(pair) {
                    lists[lo].push(pair.1);
                    lists[hi].push(pair.0);
                }
            }
        }
        for l in &mut lists {
            l.sort_unstable();
        }
        Ok(Self {
            seed,
            contacts: lists,
            profile_of,
            profiles,
        })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    /// User `i`'s account name.
    pub fn name(&self, i: usize) -> UserId {
        // Always valid: lowercase letter and digits.
        UserId::new(format!("u{i:06}")).unwrap_or_else(|_| unreachable!("valid user id"))
    }

    /// The index of a user of this population, from its name.
    pub fn index_of(&self, user: &UserId) -> Option<usize> {
        let i: usize = user.as_str().strip_prefix('u')?.parse().ok()?;
        (i < self.len()).then_some(i)
    }

    /// User `i`'s password.
    pub fn password(&self, i: usize) -> Password {
        Password::new(format!("pw-{i}-{}", self.seed)).unwrap_or_else(|_| unreachable!())
    }

    /// User `i`'s registered terminal.
    pub fn terminal(&self, i: usize) -> TerminalId {
        TerminalId::new(format!("T:u{i:06}")).unwrap_or_else(|_| unreachable!())
    }

    /// User `i`'s registered capabilities.
    pub fn caps(&self, i: usize) -> &Capabilities {
        &self.profiles[usize::from(self.profile_of[i])]
    }

    /// The capability profiles, for capability changes.
    pub fn profiles(&self) -> &[Capabilities] {
        &self.profiles
    }

    /// How user `i` logs in: even users by registered terminal identifier (claim C3),
    /// odd users with their capabilities inline (claim C2), the same ones.
    pub fn login_with(&self, i: usize) -> LoginWith {
        if i % 2 == 0 {
            LoginWith::TerminalId(self.terminal(i))
        } else {
            LoginWith::Capabilities(self.caps(i).clone())
        }
    }

    /// User `i`'s contact list.
    pub fn contacts(&self, i: usize) -> &[u32] {
        &self.contacts[i]
    }

    /// Whether `a` lists `b`.
    pub fn lists(&self, a: usize, b: usize) -> bool {
        self.contacts
            .get(a)
            .is_some_and(|l| l.binary_search(&index(b)).is_ok())
    }

    /// Sum of the contact-list lengths (twice the number of mutual pairs).
    pub fn contact_entries(&self) -> usize {
        self.contacts.iter().map(Vec::len).sum()
    }

    /// Writes the population as `precall-server admin import` lines: every user with its
    /// contact list, then every registered terminal.
    pub fn write_import(&self, out: &mut impl Write) -> Result<()> {
        for i in 0..self.len() {
            let contacts: Vec<UserId> = self.contacts[i]
                .iter()
                .map(|&c| self.name(c as usize))
                .collect();
            let line = json!({
                "type": "user",
                "name": self.name(i),
                "password": self.password(i).expose(),
                "contacts": contacts,
            });
            writeln!(out, "{line}").context("cannot write the import file")?;
        }
        for i in 0..self.len() {
            let line = json!({
                "type": "terminal",
                "id": self.terminal(i),
                "owner": self.name(i),
                "caps": self.caps(i),
            });
            writeln!(out, "{line}").context("cannot write the import file")?;
        }
        Ok(())
    }
}

/// A user index as stored (populations are far below 2^32 users).
fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// 24 distinct capability sets: four codec lists, three resolutions, two CPU classes,
/// with bandwidth that grows with the resolution.
fn profiles() -> Result<Vec<Capabilities>> {
    let codec_sets: [&[&str]; 4] = [
        &["h264"],
        &["h264", "vp8"],
        &["vp9", "vp8", "h264"],
        &["av1", "vp9", "h264"],
    ];
    let sizes = [
        (640u16, 360u16, 600u32),
        (1280, 720, 2500),
        (1920, 1080, 6000),
    ];
    let mut out = Vec::new();
    for codecs in codec_sets {
        let list = codecs
            .iter()
            .map(|c| Codec::new(*c))
            .collect::<Result<Vec<_>, _>>()?;
        for (width, height, kbps) in sizes {
            for cpu in [CpuClass::Mid, CpuClass::High] {
                let size = Size { width, height };
                out.push(Capabilities::new(
                    list.clone(),
                    list.clone(),
                    size,
                    Some(Camera {
                        max: size,
                        max_fps: 30,
                    }),
                    cpu,
                    Bandwidth {
                        up_kbps: kbps,
                        down_kbps: kbps * 2,
                    },
                )?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_is_symmetric_seeded_and_near_the_requested_degree() {
        let p = Population::generate(1000, 20, 42).unwrap();
        let q = Population::generate(1000, 20, 42).unwrap();
        assert_eq!(p.contacts, q.contacts);
        assert_eq!(p.profile_of, q.profile_of);
        for i in 0..p.len() {
            for &j in p.contacts(i) {
                assert!(p.lists(j as usize, i), "{i} lists {j} but not back");
                assert_ne!(j as usize, i);
            }
        }
        let mean = p.contact_entries() as f64 / p.len() as f64;
        assert!((19.0..=21.0).contains(&mean), "{mean}");
        assert_eq!(p.index_of(&p.name(17)), Some(17));
        assert_eq!(p.index_of(&UserId::new("u001000").unwrap()), None);
        assert_eq!(p.profiles().len(), 24);
        let fps: HashSet<_> = p.profiles().iter().map(|c| c.fingerprint()).collect();
        assert_eq!(fps.len(), 24);
    }

    #[test]
    fn tiny_populations_clamp_the_degree() {
        let p = Population::generate(2, 50, 1).unwrap();
        assert_eq!(p.contacts(0), &[1]);
        assert_eq!(p.contacts(1), &[0]);
        let one = Population::generate(1, 50, 1).unwrap();
        assert!(one.contacts(0).is_empty());
    }

    #[test]
    fn import_lines_name_every_user_and_terminal() {
        let p = Population::generate(10, 3, 5).unwrap();
        let mut buf = Vec::new();
        p.write_import(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 20);
        assert_eq!(lines[0]["type"], "user");
        assert_eq!(lines[10]["type"], "terminal");
        assert_eq!(lines[10]["owner"], "u000000");
    }
}
