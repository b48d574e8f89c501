//! Contact lists and visibility: who may see whom (spec "Visibility"), the presence
//! fan-out to entitled watchers, and contact-list changes stored before they take effect
//! (spec section 9.6).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{
    Server, ServerError, ServerEvent, StoreOutcome, StoreRequest, StoreTicket, Unstored,
    MAX_CONTACTS,
};
use crate::codec::encode_frame;
use crate::error::ErrorCode;
use crate::ids::{CallId, ConnId, Endpoint, ReqId, SessionId, UserId};
use crate::message::{EndReason, ServerMessage};
use crate::time::Time;

impl Server {
    /// The access rule (spec "Visibility"): `watcher` may see `subject`'s presence and
    /// capabilities iff both are online, are different users, and each lists the other.
    pub fn entitled(&self, watcher: &UserId, subject: &UserId) -> bool {
        watcher != subject
            && self
                .users
                .get(watcher)
                .is_some_and(|w| w.contacts.contains(subject))
            && self
                .users
                .get(subject)
                .is_some_and(|s| s.contacts.contains(watcher))
    }

    /// A contact-list change made outside the protocol (an administrator), applied to
    /// online users as if `user` had sent it; not echoed as
    /// [`ServerEvent::Store`]. Does nothing if `user` is offline: the change
    /// is in the embedder's store, read at the next login.
    ///
    /// Fails with [`ServerError::RosterFull`], changing nothing, if the addition would
    /// exceed the contact-list limit; the embedder should not store it either.
    pub fn change_roster(
        &mut self,
        user: &UserId,
        contact: &UserId,
        added: bool,
        now: Time,
    ) -> Result<(), ServerError> {
        let _ = now;
        // Changes waiting for the store count as made, so the limit holds once they are.
        let Some((has, len)) = self.projected_contacts(user, contact) else {
            return Ok(());
        };
        if user == contact {
            return Ok(());
        }
        if added && !has && len >= self.max_contacts() {
            return Err(ServerError::RosterFull(user.clone()));
        }
        self.apply_roster_change(user, contact, added, None);
        Ok(())
    }

    /// The effective contact-list limit.
    pub(super) fn max_contacts(&self) -> usize {
        self.config.max_contacts.min(MAX_CONTACTS)
    }

    /// The outcome of a [`StoreRequest`]. A stored change takes effect now: the
    /// requesting connection gets its acknowledgement (`contact_added` or
    /// `contact_removed` with its `req`), the user's other terminals and the contact's
    /// presence follow (spec section 9.6). A change that could not be stored is not
    /// applied; the request is answered with `not_stored`. Input the connection held
    /// back for it is processed next.
    pub fn complete_store(
        &mut self,
        ticket: StoreTicket,
        outcome: StoreOutcome,
        now: Time,
    ) -> Result<(), ServerError> {
        let u = self
            .unstored
            .remove(&ticket)
            .ok_or(ServerError::UnknownStoreTicket(ticket))?;
        let open = match self.conns.get_mut(&u.conn) {
            Some(c) => {
                c.unstored = c.unstored.saturating_sub(1);
                true
            }
            None => false,
        };
        match outcome {
            StoreOutcome::Stored => {
                let origin = open.then_some((u.conn, u.req));
                self.apply_roster_change(&u.user, &u.contact, u.added, origin);
            }
            StoreOutcome::Failed if open => {
                self.error(u.conn, ErrorCode::NotStored, Some(u.req), None);
            }
            StoreOutcome::Failed => {}
        }
        if open {
            self.continue_input(u.conn, now);
        }
        Ok(())
    }

    /// Sessions of the contacts of `user` that pass `keep`.
    pub(super) fn contact_sessions<'a>(
        &'a self,
        user: &UserId,
        keep: impl Fn(&UserId) -> bool + 'a,
    ) -> impl Iterator<Item = SessionId> + 'a {
        self.users
            .get(user)
            .into_iter()
            .flat_map(|u| u.contacts.iter())
            .filter(move |c| keep(c))
            .filter_map(|c| self.users.get(c))
            .flat_map(|c| c.sessions.iter().copied())
    }

    /// Sessions of other users that `user` is entitled to see.
    pub(super) fn visible_sessions(&self, user: &UserId) -> Vec<SessionId> {
        self.contact_sessions(user, |c| self.entitled(user, c))
            .collect()
    }

    /// Every session, attached or detached, of every user entitled to see `subject`.
    pub(super) fn watcher_sessions(&self, subject: &UserId) -> Vec<SessionId> {
        self.contact_sessions(subject, |w| self.entitled(w, subject))
            .collect()
    }

    /// Sends one shared frame to every entitled watcher of `subject`, optionally only
    /// those of user `only`.
    pub(super) fn push_to_watchers(
        &mut self,
        subject: &UserId,
        frame: Bytes,
        only: Option<&UserId>,
    ) {
        for session in self.watcher_sessions(subject) {
            if let Some(only) = only {
                if self.sessions.get(&session).map(|s| &s.user) != Some(only) {
                    continue;
                }
            }
            self.push_table(session, frame.clone());
        }
    }

    pub(super) fn roster_request(
        &mut self,
        session: SessionId,
        conn: ConnId,
        req: ReqId,
        contact: UserId,
        added: bool,
    ) {
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else {
            return;
        };
        if user == contact {
            self.error(conn, ErrorCode::InvalidContact, Some(req), None);
            return;
        }
        let Some((has, len)) = self.projected_contacts(&user, &contact) else {
            return;
        };
        if added && !has && len >= self.max_contacts() {
            self.error(conn, ErrorCode::RosterFull, Some(req), None);
            return;
        }
        // Stored first, applied and acknowledged once durable (`complete_store`).
        let ticket = StoreTicket(self.next_store);
        self.next_store += 1;
        self.unstored.insert(
            ticket,
            Unstored {
                conn,
                req,
                user: user.clone(),
                contact: contact.clone(),
                added,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.unstored += 1;
        }
        self.out.push_back(ServerEvent::Store(StoreRequest {
            ticket,
            user,
            contact,
            added,
        }));
    }

    /// Whether `user`'s contact list will hold `contact`, and its length, once every
    /// change waiting for the store is applied; `None` if `user` is not online.
    pub(super) fn projected_contacts(
        &self,
        user: &UserId,
        contact: &UserId,
    ) -> Option<(bool, usize)> {
        let u = self.users.get(user)?;
        let mut changed: BTreeMap<&UserId, bool> = BTreeMap::new();
        for p in self.unstored.values().filter(|p| &p.user == user) {
            changed.insert(&p.contact, p.added);
        }
        let mut len = u.contacts.len();
        for (c, &added) in &changed {
            match (added, u.contacts.contains(*c)) {
                (true, false) => len += 1,
                (false, true) => len -= 1,
                _ => {}
            }
        }
        let has = changed
            .get(contact)
            .copied()
            .unwrap_or_else(|| u.contacts.contains(contact));
        Some((has, len))
    }

    /// Applies a contact-list change of an online user and the presence it implies.
    /// `origin` is the connection and tag of the request, echoed only to it.
    pub(super) fn apply_roster_change(
        &mut self,
        user: &UserId,
        contact: &UserId,
        added: bool,
        origin: Option<(ConnId, ReqId)>,
    ) {
        let was_entitled = self.entitled(contact, user);
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        if added {
            u.contacts.insert(contact.clone());
        } else {
            u.contacts.remove(contact);
        }
        let own_sessions: Vec<SessionId> = u.sessions.iter().copied().collect();
        // Every terminal of the user learns the new contact list first ...
        for s in &own_sessions {
            let Some(link) = self.sessions.get(s).map(|s| s.link) else {
                continue;
            };
            let req = origin
                .filter(|(c, _)| link.conn() == Some(*c))
                .map(|(_, r)| r);
            let msg = if added {
                ServerMessage::ContactAdded {
                    req,
                    user: contact.clone(),
                }
            } else {
                ServerMessage::ContactRemoved {
                    req,
                    user: contact.clone(),
                }
            };
            self.push_table(*s, encode_frame(&msg));
        }
        // ... then presence follows the change of entitlement, both ways.
        let now_entitled = self.entitled(contact, user);
        if was_entitled == now_entitled {
            return;
        }
        let contact_sessions: Vec<SessionId> = self
            .users
            .get(contact)
            .map(|c| c.sessions.iter().copied().collect())
            .unwrap_or_default();
        if now_entitled {
            let pushes: Vec<(&UserId, Bytes, &UserId)> = own_sessions
                .iter()
                .filter_map(|s| self.frame_of(*s).map(|f| (user, f, contact)))
                .chain(
                    contact_sessions
                        .iter()
                        .filter_map(|s| self.frame_of(*s).map(|f| (contact, f, user))),
                )
                .collect();
            for (subject, frame, watcher) in pushes {
                self.push_to_watchers(subject, frame, Some(watcher));
            }
        } else {
            // Only a removal breaks entitlement. The user's own terminals dropped every
            // terminal of `contact` on `contact_removed`; the contact, who still lists
            // the user, is told each of the user's terminals went offline.
            for w in &contact_sessions {
                for s in &own_sessions {
                    let msg = ServerMessage::Offline(Endpoint {
                        user: user.clone(),
                        session: *s,
                    });
                    self.push_table(*w, encode_frame(&msg));
                }
            }
            // Calls between the two users end: they may no longer reach each other.
            let between =
                |a: &UserId, b: &UserId| (a == user && b == contact) || (a == contact && b == user);
            let calls: Vec<CallId> = self
                .calls
                .iter()
                .filter(|(_, c)| {
                    match (self.sessions.get(&c.caller), self.sessions.get(&c.callee)) {
                        (Some(a), Some(b)) => between(&a.user, &b.user),
                        _ => false,
                    }
                })
                .map(|(id, _)| *id)
                .collect();
            for id in calls {
                self.end_call_both(id, EndReason::NotReachable);
            }
        }
    }
}
