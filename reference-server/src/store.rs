//! The SQLite credential and roster store.
//!
//! One file holds the accounts (argon2id PHC strings), the contact lists, the registered
//! terminals with their capabilities, and `roster_events`: an append-only log of contact
//! changes made by the administrator, which a running server polls and applies to online
//! users. The store makes no protocol decision; it only remembers.

use std::path::Path;
use std::time::Duration;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use password_hash::rand_core::OsRng;
use password_hash::SaltString;
use precall_protocol::{Capabilities, Password, TerminalId, UserId};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

/// The schema version this binary writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY NOT NULL,
    phc  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    user    TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    contact TEXT NOT NULL,
    PRIMARY KEY (user, contact)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS terminals (
    id    TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    caps  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS terminals_owner ON terminals(owner);
CREATE TABLE IF NOT EXISTS roster_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    user    TEXT NOT NULL,
    contact TEXT NOT NULL,
    added   INTEGER NOT NULL
);
";

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (unreadable, corrupt, locked, ...).
    #[error(transparent)]
    Db(#[from] rusqlite::Error),
    /// The database was written by a newer version of this program.
    #[error("database schema version {0} is newer than this program's ({SCHEMA_VERSION})")]
    NewerSchema(i64),
    /// Hashing a password failed (bad parameters).
    #[error("password hashing: {0}")]
    Hash(String),
    /// No such account.
    #[error("unknown user {0}")]
    UnknownUser(String),
    /// The account already exists.
    #[error("user {0} already exists")]
    UserExists(String),
    /// No such registered terminal.
    #[error("unknown terminal {0}")]
    UnknownTerminal(String),
    /// A user cannot list themself.
    #[error("{0} cannot list themself as a contact")]
    SelfContact(String),
    /// The contact list is at the protocol limit.
    #[error("contact list of {0} is full ({1} entries)")]
    RosterFull(String, usize),
    /// A stored value no longer parses (hand-edited database).
    #[error("stored {what} is invalid: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
}

/// Argon2id cost parameters for new hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
}

impl Default for HashCost {
    /// The OWASP recommendation (and `argon2`'s default): 19 MiB, 2 passes.
    fn default() -> Self {
        Self { m_kib: 19456, t: 2 }
    }
}

fn hasher(cost: HashCost) -> Result<Argon2<'static>, StoreError> {
    let params =
        Params::new(cost.m_kib, cost.t, 1, None).map_err(|e| StoreError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into an argon2id PHC string with a fresh random salt. Slow by
/// design: call it off the event loop.
pub fn hash_password(password: &Password, cost: HashCost) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher(cost)?
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Hash(e.to_string()))
}

/// Verifies a password against a PHC string (the cost is read from the string). Fails
/// only if the string is not a PHC string. Slow by design: call it off the event loop.
pub fn verify_password(phc: &str, password: &Password) -> Result<bool, StoreError> {
    let hash = PasswordHash::new(phc).map_err(|e| StoreError::Corrupt {
        what: "password hash",
        detail: e.to_string(),
    })?;
    Ok(Argon2::default()
        .verify_password(password.expose().as_bytes(), &hash)
        .is_ok())
}

/// One administrator change of a contact list, as logged in `roster_events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterEvent {
    /// The row id (increasing).
    pub id: i64,
    /// Whose contact list changed.
    pub user: UserId,
    /// The contact added or removed.
    pub contact: UserId,
    /// `true` if added.
    pub added: bool,
}

/// What a login needs from the store, before the password is verified.
#[derive(Clone, Debug)]
pub struct LoginRecord {
    /// The account's PHC string.
    pub phc: String,
    /// The stored contact list.
    pub contacts: Vec<UserId>,
    /// The capabilities registered for the requested terminal identifier and this
    /// user, if one was requested and found.
    pub registered: Option<Capabilities>,
}

/// One account of a bulk import (`admin import`), its password already hashed.
#[derive(Clone, Debug)]
pub struct ImportUser {
    /// Account name; must not exist yet.
    pub name: UserId,
    /// Its argon2id PHC string.
    pub phc: String,
    /// Its contact list (one direction: this user lists them). Every entry must be an
    /// account after the import; duplicates are ignored.
    pub contacts: Vec<UserId>,
}

/// One registered terminal of a bulk import.
#[derive(Clone, Debug)]
pub struct ImportTerminal {
    /// Terminal identifier (registered, or re-registered).
    pub id: TerminalId,
    /// The account that may log in with it; must exist after the import.
    pub owner: UserId,
    /// Its capabilities.
    pub caps: Capabilities,
}

/// What a bulk import wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Accounts created.
    pub users: usize,
    /// Contact-list entries written (one per direction).
    pub contacts: usize,
    /// Terminals registered.
    pub terminals: usize,
}

/// An open store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if missing) the database at `path`, in WAL mode, and creates the
    /// schema. Fails on an unreadable or corrupt file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // The first statement that reads the file: a corrupt one fails here.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "database is not in WAL mode");
        }
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema(version));
        }
        conn.execute_batch(SCHEMA)?;
        if version < SCHEMA_VERSION {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok(Self { conn })
    }

    // ----- accounts ----------------------------------------------------------------

    /// Creates an account with an already computed PHC string.
    pub fn add_user(&self, user: &UserId, phc: &str) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "INSERT INTO accounts (name, phc) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![user.as_str(), phc],
        )?;
        if n == 0 {
            return Err(StoreError::UserExists(user.to_string()));
        }
        Ok(())
    }

    /// Replaces an account's PHC string.
    pub fn set_password(&self, user: &UserId, phc: &str) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE accounts SET phc = ?2 WHERE name = ?1",
            params![user.as_str(), phc],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownUser(user.to_string()));
        }
        Ok(())
    }

    /// Deletes an account, its contact list, its terminals, and every other user's
    /// listing of it; each removed listing is logged in `roster_events` so a running
    /// server updates online users.
    pub fn remove_user(&mut self, user: &UserId) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pairs: Vec<(String, String)> = {
            let mut stmt =
                tx.prepare("SELECT user, contact FROM contacts WHERE user = ?1 OR contact = ?1")?;
            let rows = stmt.query_map([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let n = tx.execute("DELETE FROM accounts WHERE name = ?1", [user.as_str()])?;
        if n == 0 {
            return Err(StoreError::UnknownUser(user.to_string()));
        }
        tx.execute("DELETE FROM contacts WHERE contact = ?1", [user.as_str()])?;
        for (u, c) in &pairs {
            tx.execute(
                "INSERT INTO roster_events (user, contact, added) VALUES (?1, ?2, 0)",
                params![u, c],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every account name, in ascending order.
    pub fn users(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM accounts ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The account's PHC string, if the account exists.
    pub fn phc(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT phc FROM accounts WHERE name = ?1",
                [user.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Everything a login needs, or `None` for an unknown user.
    pub fn login_record(
        &self,
        user: &UserId,
        terminal: Option<&TerminalId>,
    ) -> Result<Option<LoginRecord>, StoreError> {
        let Some(phc) = self.phc(user)? else {
            return Ok(None);
        };
        let contacts = self.contacts(user)?;
        let registered = match terminal {
            Some(id) => self.terminal_caps(id, user)?,
            None => None,
        };
        Ok(Some(LoginRecord {
            phc,
            contacts,
            registered,
        }))
    }

    // ----- contacts ----------------------------------------------------------------

    /// The stored contact list of `user`, in ascending order (empty for an unknown
    /// user). Entries that are not valid user identifiers are skipped with a warning.
    pub fn contacts(&self, user: &UserId) -> Result<Vec<UserId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT contact FROM contacts WHERE user = ?1 ORDER BY contact")?;
        let rows = stmt.query_map([user.as_str()], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for name in rows {
            let name = name?;
            match UserId::new(name.as_str()) {
                Ok(id) => out.push(id),
                Err(e) => {
                    tracing::warn!(%user, contact = name, error = %e, "skipping invalid stored contact")
                }
            }
        }
        Ok(out)
    }

    /// Persists a contact-list change outside the protocol's path (the import). Not
    /// logged in `roster_events`. Returns whether a row changed.
    pub fn persist_roster(
        &self,
        user: &UserId,
        contact: &UserId,
        added: bool,
    ) -> Result<bool, StoreError> {
        write_contact(&self.conn, user, contact, added)
    }

    /// Stores contact-list changes made through the protocol, in order, in one
    /// transaction (one write to disk for the batch). Each change is idempotent and
    /// stands alone: one that cannot be made (its user's account is gone) is rolled
    /// back to its savepoint and reported `false`, the others still commit. An error
    /// means the transaction itself failed and nothing was stored.
    pub fn persist_roster_batch(
        &mut self,
        changes: &[(UserId, UserId, bool)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = Vec::with_capacity(changes.len());
        for (user, contact, added) in changes {
            let sp = tx.savepoint()?;
            let made = persist_one(&sp, user, contact, *added);
            match made {
                Ok(()) => sp.commit()?,
                Err(StoreError::UnknownUser(_)) => drop(sp), // rolled back
                Err(e) => return Err(e),
            }
            stored.push(made.is_ok());
        }
        tx.commit()?;
        Ok(stored)
    }

    /// An administrator change: `user` (who must exist) lists, or stops listing,
    /// `contact` (who must exist to be added). Logged in `roster_events` if the list
    /// changed. `limit` is the largest contact list to allow on addition. Returns
    /// whether the list changed.
    pub fn admin_change_contact(
        &mut self,
        user: &UserId,
        contact: &UserId,
        added: bool,
        limit: usize,
    ) -> Result<bool, StoreError> {
        if user == contact {
            return Err(StoreError::SelfContact(user.to_string()));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        require_user(&tx, user)?;
        if added {
            require_user(&tx, contact)?;
            let listed = tx
                .query_row(
                    "SELECT 1 FROM contacts WHERE user = ?1 AND contact = ?2",
                    [user.as_str(), contact.as_str()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if listed {
                return Ok(false);
            }
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM contacts WHERE user = ?1",
                [user.as_str()],
                |r| r.get(0),
            )?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= limit {
                return Err(StoreError::RosterFull(user.to_string(), limit));
            }
        }
        let sql = if added {
            "INSERT INTO contacts (user, contact) VALUES (?1, ?2)"
        } else {
            "DELETE FROM contacts WHERE user = ?1 AND contact = ?2"
        };
        let changed = tx.execute(sql, params![user.as_str(), contact.as_str()])? > 0;
        if changed {
            tx.execute(
                "INSERT INTO roster_events (user, contact, added) VALUES (?1, ?2, ?3)",
                params![user.as_str(), contact.as_str(), added],
            )?;
        }
        tx.commit()?;
        Ok(changed)
    }

    // ----- terminals ---------------------------------------------------------------

    /// Registers (or re-registers) a terminal identifier for `owner` (who must exist)
    /// with its capabilities.
    pub fn register_terminal(
        &self,
        id: &TerminalId,
        owner: &UserId,
        caps: &Capabilities,
    ) -> Result<(), StoreError> {
        require_user(&self.conn, owner)?;
        let json = serde_json::to_string(caps).map_err(|e| StoreError::Corrupt {
            what: "capabilities",
            detail: e.to_string(),
        })?;
        self.conn.execute(
            "INSERT INTO terminals (id, owner, caps) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, caps = excluded.caps",
            params![id.as_str(), owner.as_str(), json],
        )?;
        Ok(())
    }

    /// Deletes a registered terminal.
    pub fn remove_terminal(&self, id: &TerminalId) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM terminals WHERE id = ?1", [id.as_str()])?;
        if n == 0 {
            return Err(StoreError::UnknownTerminal(id.to_string()));
        }
        Ok(())
    }

    /// Every registered terminal as `(id, owner)`, in ascending order of id.
    pub fn terminals(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, owner FROM terminals ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The capabilities registered for terminal `id` **and** owner `user`.
    pub fn terminal_caps(
        &self,
        id: &TerminalId,
        user: &UserId,
    ) -> Result<Option<Capabilities>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT caps FROM terminals WHERE id = ?1 AND owner = ?2",
                [id.as_str(), user.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Corrupt {
                what: "capabilities",
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    // ----- bulk import -------------------------------------------------------------

    /// Creates accounts with their contact lists and registers terminals, all in one
    /// transaction: either everything is written or, on the first error, nothing.
    ///
    /// Accounts come first (so contact lists and terminals may name accounts created
    /// later in the batch), then the contact lists, then the terminals, through the
    /// same functions as the single-item admin commands. A contact list may hold at most
    /// `limit` distinct entries. The imported accounts are new, so no server has them
    /// online: nothing is logged in `roster_events` (a new account's list is read at
    /// its first login).
    pub fn import(
        &mut self,
        users: &[ImportUser],
        terminals: &[ImportTerminal],
        limit: usize,
    ) -> Result<ImportCounts, StoreError> {
        // A transaction over a shared borrow, so that the methods below can run in it;
        // dropped without commit, it rolls back.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let mut counts = ImportCounts::default();
        for u in users {
            self.add_user(&u.name, &u.phc)?;
            counts.users += 1;
        }
        for u in users {
            let list: std::collections::BTreeSet<&UserId> = u.contacts.iter().collect();
            if list.len() > limit {
                return Err(StoreError::RosterFull(u.name.to_string(), limit));
            }
            for contact in list {
                if *contact == u.name {
                    return Err(StoreError::SelfContact(u.name.to_string()));
                }
                require_user(&self.conn, contact)?;
                if self.persist_roster(&u.name, contact, true)? {
                    counts.contacts += 1;
                }
            }
        }
        for t in terminals {
            self.register_terminal(&t.id, &t.owner, &t.caps)?;
            counts.terminals += 1;
        }
        tx.commit()?;
        Ok(counts)
    }

    // ----- roster events -----------------------------------------------------------

    /// The largest `roster_events` id so far (0 if none).
    pub fn last_roster_event(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM roster_events", [], |r| {
                r.get(0)
            })?)
    }

    /// The administrator changes logged after `after`, in order. Rows naming invalid
    /// identifiers are skipped with a warning (their id still counts as seen: the
    /// returned `i64` is the largest id read).
    pub fn roster_events_after(&self, after: i64) -> Result<(Vec<RosterEvent>, i64), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, user, contact, added FROM roster_events WHERE id > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([after], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        let (mut out, mut last) = (Vec::new(), after);
        for row in rows {
            let (id, user, contact, added) = row?;
            last = last.max(id);
            match (UserId::new(user.as_str()), UserId::new(contact.as_str())) {
                (Ok(user), Ok(contact)) => out.push(RosterEvent {
                    id,
                    user,
                    contact,
                    added,
                }),
                _ => tracing::warn!(id, user, contact, "skipping invalid roster event"),
            }
        }
        Ok((out, last))
    }
}

/// Fails with [`StoreError::UnknownUser`] unless the account exists (usable inside a
/// transaction, which dereferences to a connection).
/// One protocol contact-list change; the account must exist (it may have been removed
/// by an administrator while its user was online).
fn persist_one(
    conn: &Connection,
    user: &UserId,
    contact: &UserId,
    added: bool,
) -> Result<(), StoreError> {
    require_user(conn, user)?;
    write_contact(conn, user, contact, added).map(drop)
}

/// Adds or removes one contact row; returns whether a row changed.
fn write_contact(
    conn: &Connection,
    user: &UserId,
    contact: &UserId,
    added: bool,
) -> Result<bool, StoreError> {
    let sql = if added {
        "INSERT INTO contacts (user, contact) VALUES (?1, ?2) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM contacts WHERE user = ?1 AND contact = ?2"
    };
    Ok(conn.execute(sql, params![user.as_str(), contact.as_str()])? > 0)
}

fn require_user(conn: &Connection, user: &UserId) -> Result<(), StoreError> {
    let found = conn
        .query_row(
            "SELECT 1 FROM accounts WHERE name = ?1",
            [user.as_str()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if found {
        Ok(())
    } else {
        Err(StoreError::UnknownUser(user.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap hashes for tests.
    const CHEAP: HashCost = HashCost { m_kib: 64, t: 1 };

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn pw(s: &str) -> Password {
        Password::new(s).unwrap()
    }

    fn caps_json() -> &'static str {
        r#"{"encode":["h264","vp8"],"decode":["h264","vp8","av1"],"screen":{"width":1920,"height":1080},"camera":{"max":{"width":1920,"height":1080},"max_fps":30},"cpu":"high","bandwidth":{"up_kbps":8000,"down_kbps":20000}}"#
    }

    fn open_temp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        (dir, store)
    }

    fn with_users(store: &Store, names: &[&str]) {
        for n in names {
            store
                .add_user(&user(n), &hash_password(&pw("pw"), CHEAP).unwrap())
                .unwrap();
        }
    }

    #[test]
    fn schema_is_created_in_wal_mode_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let store = Store::open(&path).unwrap();
            let mode: String = store
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let v: i64 = store
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            for table in ["accounts", "contacts", "terminals", "roster_events"] {
                let n: i64 = store
                    .conn
                    .query_row(
                        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?1",
                        [table],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(n, 1, "{table}");
            }
            with_users(&store, &["alice"]);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.users().unwrap(), vec!["alice".to_string()]);
    }

    #[test]
    fn open_fails_on_a_directory_and_on_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Store::open(dir.path()).is_err());
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
        assert!(Store::open(&junk).is_err());
    }

    #[test]
    fn open_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::NewerSchema(99))
        ));
    }

    #[test]
    fn passwords_hash_to_argon2id_phc_and_verify() {
        let phc = hash_password(&pw("secret"), CHEAP).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify_password(&phc, &pw("secret")).unwrap());
        assert!(!verify_password(&phc, &pw("Secret")).unwrap());
        assert!(verify_password("not a phc string", &pw("secret")).is_err());
        // Two hashes of one password differ (random salt).
        assert_ne!(phc, hash_password(&pw("secret"), CHEAP).unwrap());
    }

    #[test]
    fn users_add_list_passwd_remove() {
        let (_d, mut store) = open_temp();
        with_users(&store, &["bob", "alice"]);
        assert_eq!(store.users().unwrap(), vec!["alice", "bob"]);
        assert!(matches!(
            store.add_user(&user("alice"), "x"),
            Err(StoreError::UserExists(_))
        ));
        let phc = store.phc(&user("alice")).unwrap().unwrap();
        assert!(verify_password(&phc, &pw("pw")).unwrap());
        store
            .set_password(&user("alice"), &hash_password(&pw("new"), CHEAP).unwrap())
            .unwrap();
        let phc = store.phc(&user("alice")).unwrap().unwrap();
        assert!(verify_password(&phc, &pw("new")).unwrap());
        assert!(!verify_password(&phc, &pw("pw")).unwrap());
        assert!(matches!(
            store.set_password(&user("carol"), "x"),
            Err(StoreError::UnknownUser(_))
        ));
        store.remove_user(&user("bob")).unwrap();
        assert_eq!(store.users().unwrap(), vec!["alice"]);
        assert!(store.phc(&user("bob")).unwrap().is_none());
        assert!(matches!(
            store.remove_user(&user("bob")),
            Err(StoreError::UnknownUser(_))
        ));
    }

    #[test]
    fn contacts_admin_changes_and_protocol_persistence() {
        let (_d, mut store) = open_temp();
        with_users(&store, &["alice", "bob", "carol"]);
        let (a, b, c) = (user("alice"), user("bob"), user("carol"));
        assert!(store.admin_change_contact(&a, &c, true, 500).unwrap());
        assert!(store.admin_change_contact(&a, &b, true, 500).unwrap());
        // Adding again changes nothing.
        assert!(!store.admin_change_contact(&a, &b, true, 500).unwrap());
        assert_eq!(store.contacts(&a).unwrap(), vec![b.clone(), c.clone()]);
        assert!(store.contacts(&b).unwrap().is_empty());
        assert!(matches!(
            store.admin_change_contact(&a, &a, true, 500),
            Err(StoreError::SelfContact(_))
        ));
        assert!(matches!(
            store.admin_change_contact(&a, &user("dave"), true, 500),
            Err(StoreError::UnknownUser(_))
        ));
        assert!(matches!(
            store.admin_change_contact(&user("dave"), &a, true, 500),
            Err(StoreError::UnknownUser(_))
        ));
        assert!(matches!(
            store.admin_change_contact(&b, &a, true, 0),
            Err(StoreError::RosterFull(_, 0))
        ));
        assert!(store.admin_change_contact(&a, &c, false, 500).unwrap());
        assert!(!store.admin_change_contact(&a, &c, false, 500).unwrap());
        assert_eq!(store.contacts(&a).unwrap(), vec![b.clone()]);

        // Protocol changes may name users without an account.
        assert!(store.persist_roster(&b, &user("zed"), true).unwrap());
        assert!(!store.persist_roster(&b, &user("zed"), true).unwrap());
        assert_eq!(store.contacts(&b).unwrap(), vec![user("zed")]);
        assert!(store.persist_roster(&b, &user("zed"), false).unwrap());
        assert!(store.contacts(&b).unwrap().is_empty());
    }

    #[test]
    fn roster_events_log_admin_changes_only() {
        let (_d, mut store) = open_temp();
        with_users(&store, &["alice", "bob"]);
        let (a, b) = (user("alice"), user("bob"));
        assert_eq!(store.last_roster_event().unwrap(), 0);
        store.admin_change_contact(&a, &b, true, 500).unwrap();
        store.admin_change_contact(&a, &b, true, 500).unwrap(); // no change, no event
        store.persist_roster(&b, &a, true).unwrap(); // protocol change, no event
        let start = store.last_roster_event().unwrap();
        assert!(start > 0);
        store.admin_change_contact(&a, &b, false, 500).unwrap();
        let (all, last) = store.roster_events_after(0).unwrap();
        assert_eq!(
            all.iter()
                .map(|e| (e.user.as_str(), e.contact.as_str(), e.added))
                .collect::<Vec<_>>(),
            vec![("alice", "bob", true), ("alice", "bob", false)]
        );
        assert_eq!(last, all[1].id);
        let (newer, last2) = store.roster_events_after(start).unwrap();
        assert_eq!(newer.len(), 1);
        assert!(!newer[0].added);
        assert_eq!(last2, last);
        assert!(store.roster_events_after(last).unwrap().0.is_empty());

        // Removing a user logs the removal of every listing involving them.
        store.admin_change_contact(&a, &b, true, 500).unwrap();
        store.remove_user(&b).unwrap();
        let (after, _) = store.roster_events_after(last).unwrap();
        let tail: Vec<_> = after
            .iter()
            .map(|e| (e.user.as_str(), e.contact.as_str(), e.added))
            .collect();
        assert!(
            tail.ends_with(&[("alice", "bob", false), ("bob", "alice", false)])
                || tail.ends_with(&[("bob", "alice", false), ("alice", "bob", false)]),
            "{tail:?}"
        );
        assert!(store.contacts(&a).unwrap().is_empty());
        assert!(store.contacts(&b).unwrap().is_empty());
    }

    fn import_user(name: &str, contacts: &[&str]) -> ImportUser {
        ImportUser {
            name: user(name),
            phc: hash_password(&pw(&format!("pw-{name}")), HashCost { m_kib: 8, t: 1 }).unwrap(),
            contacts: contacts.iter().map(|c| user(c)).collect(),
        }
    }

    #[test]
    fn import_writes_everything_in_one_transaction_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut store = Store::open(&path).unwrap();
        with_users(&store, &["zoe"]);
        let caps: Capabilities = serde_json::from_str(caps_json()).unwrap();
        let terminal = |id: &str, owner: &str| ImportTerminal {
            id: TerminalId::new(id).unwrap(),
            owner: user(owner),
            caps: caps.clone(),
        };
        let users = vec![
            // Contacts may name accounts created later in the batch, or existing ones,
            // and duplicates count once.
            import_user("alice", &["bob", "zoe", "bob"]),
            import_user("bob", &["alice"]),
        ];
        let counts = store
            .import(
                &users,
                &[terminal("T:a", "alice"), terminal("T:z", "zoe")],
                500,
            )
            .unwrap();
        assert_eq!(
            counts,
            ImportCounts {
                users: 2,
                contacts: 3,
                terminals: 2
            }
        );
        assert_eq!(store.users().unwrap(), vec!["alice", "bob", "zoe"]);
        assert_eq!(
            store.contacts(&user("alice")).unwrap(),
            vec![user("bob"), user("zoe")]
        );
        assert_eq!(store.contacts(&user("bob")).unwrap(), vec![user("alice")]);
        let phc = store.phc(&user("bob")).unwrap().unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        assert!(verify_password(&phc, &pw("pw-bob")).unwrap());
        let t = TerminalId::new("T:a").unwrap();
        assert_eq!(
            store.terminal_caps(&t, &user("alice")).unwrap(),
            Some(caps.clone())
        );
        // New accounts: nothing for a running server to replay.
        assert_eq!(store.last_roster_event().unwrap(), 0);

        // Any error rolls the whole batch back.
        let failing: Vec<(Vec<ImportUser>, Vec<ImportTerminal>, usize)> = vec![
            (
                vec![import_user("carol", &[]), import_user("bob", &[])],
                vec![],
                500,
            ),
            (vec![import_user("carol", &["nobody"])], vec![], 500),
            (vec![import_user("carol", &["carol"])], vec![], 500),
            (vec![import_user("carol", &["alice", "bob"])], vec![], 1),
            (
                vec![import_user("carol", &[])],
                vec![terminal("T:c", "dave")],
                500,
            ),
        ];
        for (users, terminals, limit) in failing {
            assert!(store.import(&users, &terminals, limit).is_err());
            assert_eq!(store.users().unwrap(), vec!["alice", "bob", "zoe"]);
            assert!(store.contacts(&user("carol")).unwrap().is_empty());
            assert_eq!(store.terminals().unwrap().len(), 2);
        }
        drop(store);
        // Committed to the file.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.users().unwrap(), vec!["alice", "bob", "zoe"]);
    }

    #[test]
    fn terminals_register_lookup_by_id_and_owner() {
        let (_d, mut store) = open_temp();
        with_users(&store, &["alice", "bob"]);
        let (a, b) = (user("alice"), user("bob"));
        let caps: Capabilities = serde_json::from_str(caps_json()).unwrap();
        let t = TerminalId::new("Phone:1").unwrap();
        assert!(matches!(
            store.register_terminal(&t, &user("dave"), &caps),
            Err(StoreError::UnknownUser(_))
        ));
        store.register_terminal(&t, &a, &caps).unwrap();
        assert_eq!(store.terminal_caps(&t, &a).unwrap(), Some(caps.clone()));
        // The identifier is not bob's.
        assert_eq!(store.terminal_caps(&t, &b).unwrap(), None);
        assert_eq!(
            store.terminals().unwrap(),
            vec![("Phone:1".to_string(), "alice".to_string())]
        );
        let rec = store.login_record(&a, Some(&t)).unwrap().unwrap();
        assert_eq!(rec.registered, Some(caps.clone()));
        let rec = store.login_record(&b, Some(&t)).unwrap().unwrap();
        assert_eq!(rec.registered, None);
        assert!(store.login_record(&user("dave"), None).unwrap().is_none());

        store.remove_terminal(&t).unwrap();
        assert!(matches!(
            store.remove_terminal(&t),
            Err(StoreError::UnknownTerminal(_))
        ));
        assert!(store.terminals().unwrap().is_empty());

        // Terminals go with their owner.
        store.register_terminal(&t, &a, &caps).unwrap();
        store.remove_user(&a).unwrap();
        assert!(store.terminals().unwrap().is_empty());
    }
}
