//! Contact lists and visibility: who may see whom (spec "Visibility"), the presence
//! fan-out to entitled watchers, and contact-list changes stored before they take effect
//! (spec section 9.6). The lists themselves, interned, are in `users`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::session::push_table_in;
use super::users::UserIdx;
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
        match (self.users.lookup(watcher), self.users.lookup(subject)) {
            (Some(w), Some(s)) => self.users.entitled(w, s),
            _ => false,
        }
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

    /// Sends one shared frame to every session, attached or detached, of every user
    /// entitled to see `subject` (in name order, then session order), or with `only`
    /// to those of that user alone if it is entitled. No allocation: the walk is over
    /// the subject's list of entitled users, kept current as users come and go.
    pub(super) fn push_to_watchers(
        &mut self,
        subject: UserIdx,
        frame: &Bytes,
        only: Option<UserIdx>,
    ) {
        let Server {
            users,
            sessions,
            out,
            config,
            ..
        } = self;
        let Some(s) = users.get(subject) else {
            return;
        };
        for w in s.visible() {
            if only.is_some_and(|o| o != *w) {
                continue;
            }
            let Some(w) = users.get(*w) else {
                continue;
            };
            for session in w.sessions() {
                push_table_in(&config.resume, sessions, out, *session, frame.clone());
            }
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
        let listed = self.contacts_of(user)?;
        let mut changed: BTreeMap<&UserId, bool> = BTreeMap::new();
        for p in self.unstored.values().filter(|p| &p.user == user) {
            changed.insert(&p.contact, p.added);
        }
        let mut len = listed.len();
        for (c, &added) in &changed {
            match (added, listed.contains(c)) {
                (true, false) => len += 1,
                (false, true) => len -= 1,
                _ => {}
            }
        }
        let has = changed
            .get(contact)
            .copied()
            .unwrap_or_else(|| listed.contains(contact));
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
        let Some((me, _)) = self.users.by_name(user) else {
            return;
        };
        self.users.set_listed(me, contact, added);
        self.publish_user(user);
        let own_sessions: Vec<SessionId> = self
            .users
            .get(me)
            .map(|u| u.sessions().to_vec())
            .unwrap_or_default();
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
        // Entitlement changed, so the contact is online.
        let Some((them, online)) = self.users.by_name(contact) else {
            return;
        };
        let contact_sessions: Vec<SessionId> = online.sessions().to_vec();
        if now_entitled {
            let pushes: Vec<(UserIdx, Bytes, UserIdx)> = own_sessions
                .iter()
                .filter_map(|s| self.frame_of(*s).map(|f| (me, f, them)))
                .chain(
                    contact_sessions
                        .iter()
                        .filter_map(|s| self.frame_of(*s).map(|f| (them, f, me))),
                )
                .collect();
            for (subject, frame, watcher) in pushes {
                self.push_to_watchers(subject, &frame, Some(watcher));
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
                .filter(
                    |(_, c)| match (self.party_user(c.caller), self.party_user(c.callee)) {
                        (Some(a), Some(b)) => between(a, b),
                        _ => false,
                    },
                )
                .map(|(id, _)| *id)
                .collect();
            for id in calls {
                self.end_call_both(id, EndReason::NotReachable);
            }
        }
    }
}
