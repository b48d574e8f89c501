//! Online users, their contact lists and who may see whom, with user names interned:
//! each name the server holds (a user online, or listed by one) gets a dense number
//! ([`UserIdx`]) and is kept once, so contact lists are short arrays of numbers and the
//! visibility checks and watcher walks of the presence fan-out compare integers.
//!
//! A name is held while its user is online or some online user lists it; then its number
//! is freed and reused. Numbers therefore depend on history: two servers in the same
//! logical state may number their users differently. [`Users`] compares and hashes by
//! content (names, contact lists as sets of names, sessions), never by number, so the
//! model checker sees the same state space as without interning.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use crate::ids::{SessionId, UserId};

/// The server's number for a user name it holds. Meaningful only within one [`Users`],
/// and says nothing about the names' order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct UserIdx(u32);

impl UserIdx {
    fn slot(self) -> usize {
        self.0 as usize
    }
}

/// An online user (one with at least one session, attached or detached).
#[derive(Clone, Debug)]
pub(super) struct OnlineUser {
    /// The contact list, ascending by number (searched by bisection).
    contacts: Vec<UserIdx>,
    /// The users entitled to see this one, which are exactly those it is entitled to
    /// see (spec "Visibility": both online, different, each listing the other), in name
    /// order: the order of the login snapshot and of the presence fan-out.
    visible: Vec<UserIdx>,
    /// The sessions, ascending.
    sessions: Vec<SessionId>,
}

impl OnlineUser {
    /// Whether the contact list holds `user`.
    pub(super) fn lists(&self, user: UserIdx) -> bool {
        self.contacts.binary_search(&user).is_ok()
    }

    /// The users this one may see (and who may see it), in name order.
    pub(super) fn visible(&self) -> &[UserIdx] {
        &self.visible
    }

    /// The sessions, ascending.
    pub(super) fn sessions(&self) -> &[SessionId] {
        &self.sessions
    }
}

#[derive(Clone, Debug)]
struct Slot {
    name: UserId,
    /// Entries of online users' contact lists naming this user, plus one while it is
    /// online: the name is dropped and the number freed when this reaches zero.
    refs: u32,
    online: Option<OnlineUser>,
}

/// Every online user, and the names their contact lists hold.
#[derive(Clone, Debug, Default)]
pub(super) struct Users {
    /// Indexed by [`UserIdx`]; `None` for a free number.
    slots: Vec<Option<Slot>>,
    /// Free numbers, reused last freed first.
    free: Vec<UserIdx>,
    /// Every held name's number.
    index: BTreeMap<UserId, UserIdx>,
}

impl Users {
    /// The number of a held name.
    pub(super) fn lookup(&self, name: &UserId) -> Option<UserIdx> {
        self.index.get(name).copied()
    }

    /// The name of a held number.
    pub(super) fn name(&self, user: UserIdx) -> Option<&UserId> {
        self.slot(user).map(|s| &s.name)
    }

    /// An online user.
    pub(super) fn get(&self, user: UserIdx) -> Option<&OnlineUser> {
        self.slot(user).and_then(|s| s.online.as_ref())
    }

    /// An online user, by name.
    pub(super) fn by_name(&self, name: &UserId) -> Option<(UserIdx, &OnlineUser)> {
        let user = self.lookup(name)?;
        Some((user, self.get(user)?))
    }

    fn slot(&self, user: UserIdx) -> Option<&Slot> {
        self.slots.get(user.slot()).and_then(Option::as_ref)
    }

    fn online_mut(&mut self, user: UserIdx) -> Option<&mut OnlineUser> {
        self.slots
            .get_mut(user.slot())
            .and_then(Option::as_mut)
            .and_then(|s| s.online.as_mut())
    }

    /// How many names are held (online users and the users they list).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.index.len()
    }

    /// The access rule (spec "Visibility") on numbers.
    pub(super) fn entitled(&self, watcher: UserIdx, subject: UserIdx) -> bool {
        watcher != subject
            && self.get(watcher).is_some_and(|w| w.lists(subject))
            && self.get(subject).is_some_and(|s| s.lists(watcher))
    }

    /// Holds `name` once more; returns its number.
    fn intern(&mut self, name: &UserId) -> UserIdx {
        if let Some(user) = self.lookup(name) {
            if let Some(Some(slot)) = self.slots.get_mut(user.slot()) {
                slot.refs += 1;
            }
            return user;
        }
        let slot = Slot {
            name: name.clone(),
            refs: 1,
            online: None,
        };
        let user = match self.free.pop() {
            Some(user) => {
                if let Some(free) = self.slots.get_mut(user.slot()) {
                    *free = Some(slot);
                }
                user
            }
            None => {
                // Every slot holds a name some online user lists (at most
                // `MAX_CONTACTS` + 1 per online user): memory runs out long before
                // 2^32 of them.
                let user = UserIdx(u32::try_from(self.slots.len()).unwrap_or(u32::MAX));
                self.slots.push(Some(slot));
                user
            }
        };
        self.index.insert(name.clone(), user);
        user
    }

    /// Holds `user`'s name once less; drops it and frees the number at zero.
    fn release(&mut self, user: UserIdx) {
        let Some(entry) = self.slots.get_mut(user.slot()) else {
            return;
        };
        let Some(slot) = entry else {
            return;
        };
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs == 0 {
            if let Some(slot) = entry.take() {
                self.index.remove(&slot.name);
            }
            self.free.push(user);
        }
    }

    /// `name` comes online with `contacts` (in name order; duplicates and itself skipped),
    /// and the users that list it back and are online may see it from now on; returns
    /// its number. A user already online keeps its contact list.
    pub(super) fn come_online(&mut self, name: &UserId, contacts: &[UserId]) -> UserIdx {
        if let Some((user, _)) = self.by_name(name) {
            return user;
        }
        let me = self.intern(name);
        let mut listed: Vec<UserIdx> = Vec::with_capacity(contacts.len());
        let mut last: Option<&UserId> = None;
        for c in contacts {
            if c != name && last != Some(c) {
                listed.push(self.intern(c));
            }
            last = Some(c);
        }
        // In name order, as `listed` is.
        let visible: Vec<UserIdx> = listed
            .iter()
            .copied()
            .filter(|c| self.get(*c).is_some_and(|o| o.lists(me)))
            .collect();
        for c in &visible {
            self.see(*c, me);
        }
        let mut contacts = listed;
        contacts.sort_unstable();
        if let Some(Some(slot)) = self.slots.get_mut(me.slot()) {
            slot.online = Some(OnlineUser {
                contacts,
                visible,
                sessions: Vec::new(),
            });
        }
        me
    }

    /// An online user goes offline: nobody sees it any more, and its contact list is
    /// forgotten.
    pub(super) fn go_offline(&mut self, me: UserIdx) {
        let Some(online) = self
            .slots
            .get_mut(me.slot())
            .and_then(Option::as_mut)
            .and_then(|s| s.online.take())
        else {
            return;
        };
        for v in &online.visible {
            self.unsee(*v, me);
        }
        for c in &online.contacts {
            self.release(*c);
        }
        self.release(me);
    }

    /// Adds a session to an online user.
    pub(super) fn add_session(&mut self, user: UserIdx, session: SessionId) {
        if let Some(u) = self.online_mut(user) {
            if let Err(at) = u.sessions.binary_search(&session) {
                u.sessions.insert(at, session);
            }
        }
    }

    /// Removes a session from an online user; returns whether it has none left.
    pub(super) fn remove_session(&mut self, user: UserIdx, session: SessionId) -> bool {
        let Some(u) = self.online_mut(user) else {
            return false;
        };
        u.sessions.retain(|s| *s != session);
        u.sessions.is_empty()
    }

    /// An online user's contact list gains or loses `contact`, and who may see whom
    /// follows.
    pub(super) fn set_listed(&mut self, me: UserIdx, contact: &UserId, added: bool) {
        let Some(own) = self.get(me) else {
            return;
        };
        let known = self.lookup(contact);
        let has = known.is_some_and(|c| own.lists(c));
        if added == has || known == Some(me) {
            return;
        }
        if added {
            let c = self.intern(contact);
            if let Some(u) = self.online_mut(me) {
                if let Err(at) = u.contacts.binary_search(&c) {
                    u.contacts.insert(at, c);
                }
            }
            if self.entitled(me, c) {
                self.see(me, c);
                self.see(c, me);
            }
        } else if let Some(c) = known {
            if self.entitled(me, c) {
                self.unsee(me, c);
                self.unsee(c, me);
            }
            if let Some(u) = self.online_mut(me) {
                u.contacts.retain(|x| *x != c);
            }
            self.release(c);
        }
    }

    /// `who` joins `user`'s visible list, in name order.
    fn see(&mut self, user: UserIdx, who: UserIdx) {
        let at = {
            let (Some(name), Some(u)) = (self.name(who), self.get(user)) else {
                return;
            };
            let at = u
                .visible
                .partition_point(|v| self.name(*v).is_some_and(|n| n < name));
            if u.visible.get(at) == Some(&who) {
                return;
            }
            at
        };
        if let Some(u) = self.online_mut(user) {
            u.visible.insert(at, who);
        }
    }

    /// `who` leaves `user`'s visible list.
    fn unsee(&mut self, user: UserIdx, who: UserIdx) {
        if let Some(u) = self.online_mut(user) {
            u.visible.retain(|v| *v != who);
        }
    }

    /// An online user's contact list, as names in name order.
    pub(super) fn contact_names(&self, user: UserIdx) -> Vec<&UserId> {
        let mut names: Vec<&UserId> = self
            .get(user)
            .into_iter()
            .flat_map(|u| u.contacts.iter())
            .filter_map(|c| self.name(*c))
            .collect();
        names.sort_unstable();
        names
    }

    /// The online users, in name order, with what makes their state: their contact
    /// lists as names in name order, and their sessions. Numbers and the derived lists
    /// are left out.
    fn content(&self) -> impl Iterator<Item = (&UserId, Vec<&UserId>, &[SessionId])> {
        self.index.iter().filter_map(|(name, user)| {
            let online = self.get(*user)?;
            Some((name, self.contact_names(*user), online.sessions()))
        })
    }

    /// Checks the interned state against its definition: every held name indexed
    /// under its number, counted once per contact-list entry naming it plus one if
    /// online, and every visible list exactly the entitled online users in name order.
    #[cfg(test)]
    pub(super) fn check(&self) -> Result<(), String> {
        let mut refs: BTreeMap<UserIdx, u32> = BTreeMap::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let user = UserIdx(i as u32);
            if self.lookup(&slot.name) != Some(user) {
                return Err(format!("{} not indexed as {user:?}", slot.name));
            }
            if let Some(online) = &slot.online {
                *refs.entry(user).or_default() += 1;
                for c in &online.contacts {
                    *refs.entry(*c).or_default() += 1;
                }
                if !online.contacts.windows(2).all(|w| w[0] < w[1]) {
                    return Err(format!("{}: contacts not ascending", slot.name));
                }
                let mut expected: Vec<UserIdx> = online
                    .contacts
                    .iter()
                    .copied()
                    .filter(|c| self.entitled(user, *c))
                    .collect();
                expected.sort_by_key(|c| self.name(*c));
                if online.visible != expected {
                    return Err(format!("{}: visible list wrong", slot.name));
                }
                if online.sessions.is_empty() {
                    return Err(format!("{}: online without a session", slot.name));
                }
            }
        }
        for (i, slot) in self.slots.iter().enumerate() {
            let user = UserIdx(i as u32);
            match (slot, refs.get(&user)) {
                (Some(s), Some(n)) if s.refs == *n => {}
                (None, None) if self.free.contains(&user) => {}
                _ => return Err(format!("{user:?}: reference count or free list wrong")),
            }
        }
        if self.index.len() + self.free.len() != self.slots.len() {
            return Err("index, free list and slots disagree".into());
        }
        Ok(())
    }
}

/// By content: the online users with their contact lists (as names) and sessions.
impl PartialEq for Users {
    fn eq(&self, other: &Self) -> bool {
        self.content().eq(other.content())
    }
}

impl Eq for Users {}

/// By content, as [`PartialEq`]: never by number.
impl Hash for Users {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for (name, contacts, sessions) in self.content() {
            1u8.hash(state);
            name.hash(state);
            contacts.hash(state);
            sessions.hash(state);
        }
        0u8.hash(state);
    }
}

/// The contact list of an online user, as the server holds it
/// ([`Server::contacts_of`](crate::Server::contacts_of)).
#[derive(Clone, Copy)]
pub struct Contacts<'a> {
    users: &'a Users,
    user: &'a OnlineUser,
}

impl<'a> Contacts<'a> {
    pub(super) fn new(users: &'a Users, user: &'a OnlineUser) -> Self {
        Self { users, user }
    }

    /// How many users the list holds.
    pub fn len(&self) -> usize {
        self.user.contacts.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.user.contacts.is_empty()
    }

    /// Whether the list holds `user`.
    pub fn contains(&self, user: &UserId) -> bool {
        self.users.lookup(user).is_some_and(|u| self.user.lists(u))
    }

    /// The users listed, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &'a UserId> {
        let users = self.users;
        let mut names: Vec<&'a UserId> = self
            .user
            .contacts
            .iter()
            .filter_map(|c| users.name(*c))
            .collect();
        names.sort_unstable();
        names.into_iter()
    }
}

impl fmt::Debug for Contacts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn name(i: usize) -> UserId {
        UserId::new(format!("u{i}")).unwrap()
    }

    fn hash_of(users: &Users) -> u64 {
        let mut h = DefaultHasher::new();
        users.hash(&mut h);
        h.finish()
    }

    /// Logs `user` in with one session listing `contacts`.
    fn online(users: &mut Users, user: usize, contacts: &[usize], session: u64) -> UserIdx {
        let list: Vec<UserId> = contacts.iter().map(|c| name(*c)).collect();
        let me = users.come_online(&name(user), &list);
        users.add_session(me, SessionId(session));
        me
    }

    fn offline(users: &mut Users, user: usize) {
        let me = users.lookup(&name(user)).unwrap();
        users.go_offline(me);
    }

    #[test]
    fn equal_content_under_different_numbers_is_equal_and_hashes_equal() {
        let mut a = Users::default();
        online(&mut a, 2, &[1], 1);
        online(&mut a, 1, &[2], 2);
        let mut b = Users::default();
        online(&mut b, 3, &[4, 5], 7);
        offline(&mut b, 3);
        online(&mut b, 1, &[2], 2);
        online(&mut b, 2, &[1], 1);
        assert_ne!(
            a.lookup(&name(1)),
            b.lookup(&name(1)),
            "numbered differently"
        );
        assert_eq!(a, b);
        assert_eq!(hash_of(&a), hash_of(&b));
        a.check().unwrap();
        b.check().unwrap();
        // Each may see the other, in both.
        for users in [&a, &b] {
            let one = users.lookup(&name(1)).unwrap();
            let two = users.lookup(&name(2)).unwrap();
            assert_eq!(users.get(one).unwrap().visible(), [two]);
            assert!(users.entitled(one, two) && users.entitled(two, one));
        }
    }

    #[test]
    fn different_content_differs_and_hashes_differently() {
        let base = || {
            let mut u = Users::default();
            online(&mut u, 1, &[2], 1);
            online(&mut u, 2, &[1], 2);
            u
        };
        let a = base();
        // Another contact listed.
        let mut b = base();
        let one = b.lookup(&name(1)).unwrap();
        b.set_listed(one, &name(3), true);
        // Another session.
        let mut c = base();
        c.add_session(one, SessionId(9));
        // Another user online.
        let mut d = base();
        online(&mut d, 3, &[], 3);
        // A contact listed that is not online, versus none.
        let mut e = Users::default();
        online(&mut e, 1, &[2], 1);
        let mut f = Users::default();
        online(&mut f, 1, &[], 1);
        for (x, y) in [(&a, &b), (&a, &c), (&a, &d), (&e, &f)] {
            assert_ne!(x, y);
            assert_ne!(hash_of(x), hash_of(y));
        }
        assert_eq!(a, base());
    }

    #[test]
    fn names_are_dropped_and_numbers_reused_once_nobody_holds_them() {
        let mut u = Users::default();
        online(&mut u, 1, &[2, 3], 1);
        assert_eq!(u.held(), 3, "the user and the two it lists");
        online(&mut u, 2, &[1], 2);
        assert_eq!(u.held(), 3);
        offline(&mut u, 1);
        // 2 is online and lists 1; 3 was listed by 1 only.
        assert_eq!(u.held(), 2);
        assert!(u.lookup(&name(3)).is_none());
        u.check().unwrap();
        offline(&mut u, 2);
        assert_eq!(u.held(), 0);
        let slots = u.slots.len();
        // Churn reuses the numbers: the table does not grow.
        for round in 0..10 {
            online(&mut u, 10 + round, &[20 + round, 30 + round], round as u64);
            offline(&mut u, 10 + round);
            assert_eq!(u.held(), 0);
        }
        assert_eq!(u.slots.len(), slots);
        u.check().unwrap();
    }

    #[test]
    fn come_online_skips_duplicates_and_itself_and_keeps_an_online_users_list() {
        let mut u = Users::default();
        let list = [name(1), name(2), name(2), name(3)];
        let me = u.come_online(&name(2), &list);
        u.add_session(me, SessionId(1));
        assert_eq!(u.contact_names(me), [&name(1), &name(3)]);
        assert_eq!(u.come_online(&name(2), &[name(4)]), me);
        assert_eq!(u.contact_names(me), [&name(1), &name(3)]);
        u.check().unwrap();
    }

    #[test]
    fn sessions_stay_ascending_and_the_last_one_leaving_is_reported() {
        let mut u = Users::default();
        let me = online(&mut u, 1, &[], 5);
        u.add_session(me, SessionId(3));
        u.add_session(me, SessionId(3));
        u.add_session(me, SessionId(8));
        assert_eq!(
            u.get(me).unwrap().sessions(),
            [SessionId(3), SessionId(5), SessionId(8)]
        );
        assert!(!u.remove_session(me, SessionId(5)));
        assert!(!u.remove_session(me, SessionId(3)));
        assert!(u.remove_session(me, SessionId(8)));
        let unknown = UserIdx(99);
        assert!(!u.remove_session(unknown, SessionId(8)));
    }

    #[test]
    fn visible_lists_are_in_name_order() {
        let mut u = Users::default();
        // Numbered 0.. in this order, named in another.
        online(&mut u, 5, &[3, 9, 1, 7], 1);
        for (s, w) in [9, 1, 7, 3].into_iter().enumerate() {
            online(&mut u, w, &[5], 2 + s as u64);
        }
        let five = u.lookup(&name(5)).unwrap();
        let names: Vec<&UserId> = u
            .get(five)
            .unwrap()
            .visible()
            .iter()
            .map(|v| u.name(*v).unwrap())
            .collect();
        assert_eq!(names, [&name(1), &name(3), &name(7), &name(9)]);
        u.check().unwrap();
    }

    /// `see` is idempotent: a user already in a visible list is not added again, at
    /// whatever position the name order puts it.
    #[test]
    fn seeing_a_user_twice_lists_it_once() {
        let mut u = Users::default();
        online(&mut u, 5, &[1, 3, 9], 1);
        for (s, w) in [1, 3, 9].into_iter().enumerate() {
            online(&mut u, w, &[5], 2 + s as u64);
        }
        let five = u.lookup(&name(5)).unwrap();
        let before = u.get(five).unwrap().visible().to_vec();
        for w in [1, 3, 9] {
            let w = u.lookup(&name(w)).unwrap();
            u.see(five, w);
            u.see(w, five);
        }
        assert_eq!(u.get(five).unwrap().visible(), before);
        u.check().unwrap();
    }

    #[test]
    fn the_contacts_view_answers_by_name() {
        let mut u = Users::default();
        let me = online(&mut u, 1, &[3, 2], 1);
        let view = Contacts::new(&u, u.get(me).unwrap());
        assert_eq!(view.len(), 2);
        assert!(!view.is_empty());
        assert!(view.contains(&name(2)) && view.contains(&name(3)));
        assert!(!view.contains(&name(1)) && !view.contains(&name(4)));
        assert_eq!(view.iter().collect::<Vec<_>>(), [&name(2), &name(3)]);
        assert_eq!(format!("{view:?}"), r#"{UserId("u2"), UserId("u3")}"#);
        let lonely = online(&mut u, 4, &[], 2);
        let view = Contacts::new(&u, u.get(lonely).unwrap());
        assert!(view.is_empty());
    }

    /// Logs `user` in on a server on a new connection `conn`, listing `contacts`.
    fn log_in(server: &mut crate::Server, conn: u64, user: usize, contacts: &[usize]) {
        use crate::codec::encode_frame;
        use crate::sim::sample_caps;
        use crate::{AuthVerdict, ClientMessage, ConnId, LoginWith, Password, ServerEvent, Time};
        server.connect(ConnId(conn), Time(0)).unwrap();
        let login = ClientMessage::Login {
            version: crate::PROTOCOL_VERSION,
            user: name(user),
            password: Password::new("pw").unwrap(),
            with: LoginWith::Capabilities(sample_caps(&["h264"], 640, 30)),
        };
        server.receive(ConnId(conn), &encode_frame(&login), Time(0));
        while let Some(event) = server.poll_event() {
            if let ServerEvent::Authenticate(req) = event {
                let contacts = contacts.iter().map(|c| name(*c)).collect();
                let verdict = AuthVerdict::Accepted {
                    contacts,
                    registered: None,
                };
                server.complete_auth(req.ticket, verdict, Time(0)).unwrap();
            }
        }
    }

    /// The server holds the names of the users online and of those they list, and
    /// no more: after churn, nothing; and a server compares and hashes equal to one
    /// that reached the same users by another history (other numbers).
    #[test]
    fn a_server_forgets_names_under_churn_and_compares_by_content() {
        use crate::{ConnId, Server, ServerConfig, Time};
        let config = {
            let mut c = ServerConfig::default();
            c.resume.grace = std::time::Duration::ZERO;
            c
        };
        let mut a = Server::new(config.clone());
        for round in 0..20u64 {
            let user = 100 + round as usize;
            log_in(&mut a, round, user, &[1, 2, user + 1000]);
            assert_eq!(a.users.held(), 4);
            a.connection_closed(ConnId(round), Time(0));
            assert_eq!(a.users.held(), 0, "round {round}");
        }
        assert!(a.users.slots.len() <= 4, "numbers reused");
        // `b` churned through users listing other names, so it numbers the users
        // that come online next differently; the states are the same.
        let mut b = Server::new(config);
        for round in 0..20u64 {
            let user = 100 + round as usize;
            log_in(
                &mut b,
                round,
                user,
                &[user + 1000, user + 2000, user + 3000, user + 4000],
            );
            b.connection_closed(ConnId(round), Time(0));
        }
        for s in [&mut a, &mut b] {
            log_in(s, 50, 1, &[2]);
            log_in(s, 51, 2, &[1]);
        }
        assert_ne!(a.users.lookup(&name(2)), b.users.lookup(&name(2)));
        assert_eq!(a, b);
        let hash = |s: &Server| {
            let mut h = DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&b));
        // One contact-list change later they differ.
        a.change_roster(&name(1), &name(3), true, Time(0)).unwrap();
        while a.poll_event().is_some() {}
        assert_ne!(a, b);
        assert_ne!(hash(&a), hash(&b));
    }

    /// An operation on the users.
    #[derive(Clone, Debug)]
    enum Op {
        /// User logs in (a first session, or one more) listing these.
        LogIn(usize, Vec<usize>),
        /// User's oldest session ends.
        LogOut(usize),
        /// User lists or stops listing another.
        List(usize, usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let user = 0..6usize;
        prop_oneof![
            (user.clone(), proptest::collection::vec(0..8usize, 0..5))
                .prop_map(|(u, c)| Op::LogIn(u, c)),
            user.clone().prop_map(Op::LogOut),
            (user.clone(), 0..8usize, any::<bool>()).prop_map(|(u, c, a)| Op::List(u, c, a)),
        ]
    }

    type Reference = BTreeMap<UserId, (BTreeSet<UserId>, Vec<SessionId>)>;

    proptest! {
        /// Whatever the history, the interned state is consistent (`check`), equals
        /// the plain one (names, sets of names) and is emptied by everyone leaving.
        #[test]
        fn interned_users_match_a_plain_model(ops in proptest::collection::vec(op(), 0..40)) {
            let mut u = Users::default();
            let mut plain: Reference = BTreeMap::new();
            let mut next = 1;
            for op in ops {
                match op {
                    Op::LogIn(user, contacts) => {
                        let mut list: Vec<UserId> = contacts.iter().map(|c| name(*c)).filter(|c| *c != name(user)).collect();
                        list.sort_unstable();
                        list.dedup();
                        let me = u.come_online(&name(user), &list);
                        u.add_session(me, SessionId(next));
                        let entry = plain.entry(name(user)).or_insert_with(|| (list.into_iter().collect(), Vec::new()));
                        entry.1.push(SessionId(next));
                        next += 1;
                    }
                    Op::LogOut(user) => {
                        let Some(me) = u.lookup(&name(user)) else { continue };
                        let Some(first) = u.get(me).and_then(|o| o.sessions().first().copied()) else { continue };
                        if u.remove_session(me, first) {
                            u.go_offline(me);
                        }
                        if let Some(entry) = plain.get_mut(&name(user)) {
                            entry.1.retain(|s| *s != first);
                            if entry.1.is_empty() {
                                plain.remove(&name(user));
                            }
                        }
                    }
                    Op::List(user, contact, added) => {
                        let Some((me, _)) = u.by_name(&name(user)) else { continue };
                        u.set_listed(me, &name(contact), added);
                        if let Some(entry) = plain.get_mut(&name(user)) {
                            if user != contact {
                                if added {
                                    entry.0.insert(name(contact));
                                } else {
                                    entry.0.remove(&name(contact));
                                }
                            }
                        }
                    }
                }
                prop_assert_eq!(u.check(), Ok(()));
                let content: Vec<(UserId, Vec<UserId>, Vec<SessionId>)> = u
                    .content()
                    .map(|(n, c, s)| (n.clone(), c.into_iter().cloned().collect(), s.to_vec()))
                    .collect();
                let expected: Vec<(UserId, Vec<UserId>, Vec<SessionId>)> = plain
                    .iter()
                    .map(|(n, (c, s))| (n.clone(), c.iter().cloned().collect(), s.clone()))
                    .collect();
                prop_assert_eq!(content, expected);
                // Entitlement by numbers is the spec's rule on the plain state.
                for a in 0..8 {
                    for b in 0..8 {
                        let rule = a != b
                            && plain.get(&name(a)).is_some_and(|(c, _)| c.contains(&name(b)))
                            && plain.get(&name(b)).is_some_and(|(c, _)| c.contains(&name(a)));
                        let interned = match (u.lookup(&name(a)), u.lookup(&name(b))) {
                            (Some(x), Some(y)) => u.entitled(x, y),
                            _ => false,
                        };
                        prop_assert_eq!(interned, rule, "{} sees {}", a, b);
                    }
                }
            }
            let online: Vec<UserIdx> = u.index.values().copied().filter(|x| u.get(*x).is_some()).collect();
            for me in online {
                u.go_offline(me);
            }
            prop_assert_eq!(u.held(), 0);
            prop_assert_eq!(u.check(), Ok(()));
        }
    }
}
