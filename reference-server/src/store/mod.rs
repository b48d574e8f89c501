//! The credential and roster store, in SQLite (a file, the default) or PostgreSQL
//! (`--db postgres://…`, shared by several server nodes).
//!
//! The store holds the accounts (argon2id PHC strings), the contact lists, the registered
//! terminals with their capabilities, and `roster_events`: an append-only log of contact
//! changes, made by the administrator or stored for a user by a server node (tagged with
//! that node's `origin`), which every running server polls and applies to its online
//! users. The store makes no protocol decision; it only remembers.
//!
//! [`Store`] is the one API; the SQL lives in the two backends side by side
//! (`sqlite.rs`, `pg.rs`), each a [`Backend`]. What does not depend on the database
//! (password hashing, checking a change before it is written, encoding capabilities,
//! validating what is read back) is here, once.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use password_hash::rand_core::OsRng;
use password_hash::SaltString;
use precall_protocol::{Capabilities, Password, TerminalId, UserId};

mod pg;
mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

/// The schema version this binary writes (SQLite: `PRAGMA user_version`; PostgreSQL:
/// the `schema_version` row of `precall_meta`). Version 2 added `roster_events.origin`;
/// a version 1 database is upgraded on open.
pub const SCHEMA_VERSION: i64 = 2;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (unreadable, corrupt, locked, ...).
    #[error(transparent)]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL answered with an error (constraint, permission, bad SQL, ...).
    #[error("PostgreSQL: {}", pg_detail(.0))]
    Pg(postgres::Error),
    /// The `postgres://` URL does not parse.
    #[error("bad PostgreSQL URL {url}: {detail}")]
    BadUrl {
        /// The URL, without its password.
        url: String,
        /// Why it does not parse.
        detail: String,
    },
    /// The PostgreSQL server could not be reached (refused, unknown host, bad
    /// credentials, no such database).
    #[error("cannot connect to PostgreSQL at {url}: {}", pg_detail(.error))]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The client's error.
        error: postgres::Error,
    },
    /// The connection to the PostgreSQL server broke; the next operation reconnects.
    #[error("lost the connection to PostgreSQL at {url}: {}", pg_detail(.error))]
    ConnectionLost {
        /// The URL, without its password.
        url: String,
        /// The client's error.
        error: postgres::Error,
    },
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

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        Self::Pg(e)
    }
}

/// A PostgreSQL error in full: the client's own text is terse ("db error"), the
/// server's message and the underlying I/O error are in its sources.
fn pg_detail(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Where the store is (`--db`): a SQLite file, or a PostgreSQL database for a
/// `postgres://` or `postgresql://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file (created, in WAL mode, if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user@host:port/dbname`).
    Postgres(String),
}

impl From<OsString> for DbTarget {
    fn from(s: OsString) -> Self {
        match s.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::Postgres(url.to_owned())
            }
            _ => Self::Sqlite(PathBuf::from(s)),
        }
    }
}

impl fmt::Display for DbTarget {
    /// The path, or the URL without its password (fit for logs and errors).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// A URL without its password: the password of the user-info part and any `password`
/// query parameter are left out.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (rest, None),
    };
    // The last `@` ends the user-info part (a password may hold `@` or `/`).
    let mut out = match main.rfind('@') {
        Some(at) => {
            let userinfo = &main[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}@{}", &main[at + 1..])
        }
        None => main.to_owned(),
    };
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.to_ascii_lowercase().starts_with("password="))
            .collect();
        if !kept.is_empty() {
            out = format!("{out}?{}", kept.join("&"));
        }
    }
    if scheme.is_empty() {
        out
    } else {
        format!("{scheme}://{out}")
    }
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

/// One change of a contact list, as logged in `roster_events`.
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
    /// The server node that stored it for its user (see
    /// [`Store::persist_roster_batch`]); `None` for an administrator change.
    pub origin: Option<i64>,
}

/// What became of one protocol contact-list change (see [`Store::persist_roster_batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persisted {
    /// Not stored: the user's account is gone.
    NotStored,
    /// Stored; the list already was that way, so nothing was logged.
    Unchanged,
    /// Stored and logged in `roster_events` with this id.
    Logged(i64),
}

impl Persisted {
    /// Whether the change is durable.
    pub fn is_stored(self) -> bool {
        self != Self::NotStored
    }
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

/// A bulk import checked and encoded, ready for one transaction.
struct ImportPlan<'a> {
    /// `(name, phc)` of each new account.
    users: Vec<(&'a UserId, &'a str)>,
    /// Each `(user, contact)` entry once; every contact must be an account.
    contacts: Vec<(&'a UserId, &'a UserId)>,
    /// `(id, owner, caps as JSON)`.
    terminals: Vec<(&'a TerminalId, &'a UserId, String)>,
}

/// A login's rows as read back: PHC string, contact names, capabilities JSON.
type LoginRows = (String, Vec<String>, Option<String>);

/// A roster-event row as read back, before its names are validated.
type RosterRow = (i64, String, String, bool, Option<i64>);

/// The operations each database implements: the SQL, nothing else. All multi-row
/// changes are one transaction; the ones that append to `roster_events` make each
/// appended id visible to pollers only once every smaller id is (see `pg.rs`).
trait Backend: Send {
    fn add_user(&self, user: &UserId, phc: &str) -> Result<(), StoreError>;
    fn set_password(&self, user: &UserId, phc: &str) -> Result<(), StoreError>;
    /// Deletes the account and every listing of it, logging each removed listing.
    fn remove_user(&mut self, user: &UserId) -> Result<(), StoreError>;
    fn users(&self) -> Result<Vec<String>, StoreError>;
    fn phc(&self, user: &UserId) -> Result<Option<String>, StoreError>;
    /// The contact names of `user`, ascending, unvalidated.
    fn contact_names(&self, user: &UserId) -> Result<Vec<String>, StoreError>;
    #[cfg(test)]
    fn persist_roster(
        &self,
        user: &UserId,
        contact: &UserId,
        added: bool,
    ) -> Result<bool, StoreError>;
    fn persist_roster_batch(
        &mut self,
        changes: &[(UserId, UserId, bool)],
        origin: i64,
    ) -> Result<Vec<Persisted>, StoreError>;
    /// [`Store::admin_change_contact`] once `user != contact` is checked.
    fn admin_change_contact(
        &mut self,
        user: &UserId,
        contact: &UserId,
        added: bool,
        limit: usize,
    ) -> Result<bool, StoreError>;
    fn register_terminal(
        &self,
        id: &TerminalId,
        owner: &UserId,
        caps_json: &str,
    ) -> Result<(), StoreError>;
    fn remove_terminal(&self, id: &TerminalId) -> Result<(), StoreError>;
    fn terminals(&self) -> Result<Vec<(String, String)>, StoreError>;
    fn terminal_caps_json(
        &self,
        id: &TerminalId,
        user: &UserId,
    ) -> Result<Option<String>, StoreError>;
    /// What a login reads: the PHC string, the contact names (ascending) and the
    /// capabilities JSON of `terminal` if registered to `user`; `None` for an unknown
    /// user. By default three reads; a backend may do it in one round trip.
    fn login_rows(
        &self,
        user: &UserId,
        terminal: Option<&TerminalId>,
    ) -> Result<Option<LoginRows>, StoreError> {
        let Some(phc) = self.phc(user)? else {
            return Ok(None);
        };
        let contacts = self.contact_names(user)?;
        let caps = match terminal {
            Some(id) => self.terminal_caps_json(id, user)?,
            None => None,
        };
        Ok(Some((phc, contacts, caps)))
    }
    fn import(&mut self, plan: &ImportPlan<'_>) -> Result<ImportCounts, StoreError>;
    fn last_roster_event(&self) -> Result<i64, StoreError>;
    /// The rows with an id above `after`, ascending.
    fn roster_rows_after(&self, after: i64) -> Result<Vec<RosterRow>, StoreError>;
}

/// An open store, on either database.
pub struct Store {
    db: Box<dyn Backend>,
}

impl Store {
    /// Opens the store at `target`, creating the schema if missing (in one transaction;
    /// on PostgreSQL safe against several nodes opening a fresh database at once).
    /// Fails on an unreadable or corrupt file, an unreachable server, or a schema
    /// written by a newer version ([`StoreError::NewerSchema`]).
    ///
    /// PostgreSQL's client runs its own small runtime: open, use and drop the store on
    /// a plain thread (or in `spawn_blocking`), never on a tokio worker.
    pub fn open(target: &DbTarget) -> Result<Self, StoreError> {
        let db: Box<dyn Backend> = match target {
            DbTarget::Sqlite(path) => Box::new(sqlite::SqliteStore::open(path)?),
            DbTarget::Postgres(url) => Box::new(pg::PgStore::open(url)?),
        };
        Ok(Self { db })
    }

    // ----- accounts ----------------------------------------------------------------

    /// Creates an account with an already computed PHC string.
    pub fn add_user(&self, user: &UserId, phc: &str) -> Result<(), StoreError> {
        self.db.add_user(user, phc)
    }

    /// Replaces an account's PHC string.
    pub fn set_password(&self, user: &UserId, phc: &str) -> Result<(), StoreError> {
        self.db.set_password(user, phc)
    }

    /// Deletes an account, its contact list, its terminals, and every other user's
    /// listing of it; each removed listing is logged in `roster_events` so a running
    /// server updates online users.
    pub fn remove_user(&mut self, user: &UserId) -> Result<(), StoreError> {
        self.db.remove_user(user)
    }

    /// Every account name, in ascending order.
    pub fn users(&self) -> Result<Vec<String>, StoreError> {
        self.db.users()
    }

    /// The account's PHC string, if the account exists.
    pub fn phc(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        self.db.phc(user)
    }

    /// Everything a login needs, or `None` for an unknown user.
    pub fn login_record(
        &self,
        user: &UserId,
        terminal: Option<&TerminalId>,
    ) -> Result<Option<LoginRecord>, StoreError> {
        let Some((phc, contacts, caps)) = self.db.login_rows(user, terminal)? else {
            return Ok(None);
        };
        Ok(Some(LoginRecord {
            phc,
            contacts: valid_contacts(user, contacts),
            registered: caps.as_deref().map(caps_from_json).transpose()?,
        }))
    }

    // ----- contacts ----------------------------------------------------------------

    /// The stored contact list of `user`, in ascending order (empty for an unknown
    /// user). Entries that are not valid user identifiers are skipped with a warning.
    pub fn contacts(&self, user: &UserId) -> Result<Vec<UserId>, StoreError> {
        Ok(valid_contacts(user, self.db.contact_names(user)?))
    }

    /// Persists one contact-list change, alone, outside the protocol's batching. Not
    /// logged in `roster_events`. Returns whether a row changed. (Tests only: the
    /// server stores changes with [`Store::persist_roster_batch`].)
    #[cfg(test)]
    pub fn persist_roster(
        &self,
        user: &UserId,
        contact: &UserId,
        added: bool,
    ) -> Result<bool, StoreError> {
        self.db.persist_roster(user, contact, added)
    }

    /// Stores contact-list changes made through the protocol, in order, in one
    /// transaction (one write to disk for the batch). Each change is idempotent and
    /// stands alone: one that cannot be made (its user's account is gone) is left out
    /// and reported [`Persisted::NotStored`], the others still commit. Each change
    /// that changed the list is logged in `roster_events` with `origin` (the storing
    /// node), for the other nodes sharing the store. An error means the transaction
    /// itself failed and nothing was stored.
    pub fn persist_roster_batch(
        &mut self,
        changes: &[(UserId, UserId, bool)],
        origin: i64,
    ) -> Result<Vec<Persisted>, StoreError> {
        self.db.persist_roster_batch(changes, origin)
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
        self.db.admin_change_contact(user, contact, added, limit)
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
        self.db.register_terminal(id, owner, &caps_to_json(caps)?)
    }

    /// Deletes a registered terminal.
    pub fn remove_terminal(&self, id: &TerminalId) -> Result<(), StoreError> {
        self.db.remove_terminal(id)
    }

    /// Every registered terminal as `(id, owner)`, in ascending order of id.
    pub fn terminals(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.db.terminals()
    }

    /// The capabilities registered for terminal `id` **and** owner `user`. (Tests only:
    /// a login reads them with [`Store::login_record`].)
    #[cfg(test)]
    pub fn terminal_caps(
        &self,
        id: &TerminalId,
        user: &UserId,
    ) -> Result<Option<Capabilities>, StoreError> {
        self.db
            .terminal_caps_json(id, user)?
            .as_deref()
            .map(caps_from_json)
            .transpose()
    }

    // ----- bulk import -------------------------------------------------------------

    /// Creates accounts with their contact lists and registers terminals, all in one
    /// transaction: either everything is written or, on the first error, nothing.
    ///
    /// Contact lists and terminals may name accounts created later in the batch. A
    /// contact list may hold at most `limit` distinct entries. The imported accounts
    /// are new, so no server has them online: nothing is logged in `roster_events` (a
    /// new account's list is read at its first login).
    pub fn import(
        &mut self,
        users: &[ImportUser],
        terminals: &[ImportTerminal],
        limit: usize,
    ) -> Result<ImportCounts, StoreError> {
        let mut plan = ImportPlan {
            users: users.iter().map(|u| (&u.name, u.phc.as_str())).collect(),
            contacts: Vec::new(),
            terminals: Vec::with_capacity(terminals.len()),
        };
        for u in users {
            let list: BTreeSet<&UserId> = u.contacts.iter().collect();
            if list.len() > limit {
                return Err(StoreError::RosterFull(u.name.to_string(), limit));
            }
            if list.contains(&u.name) {
                return Err(StoreError::SelfContact(u.name.to_string()));
            }
            plan.contacts.extend(list.into_iter().map(|c| (&u.name, c)));
        }
        for t in terminals {
            plan.terminals
                .push((&t.id, &t.owner, caps_to_json(&t.caps)?));
        }
        self.db.import(&plan)
    }

    // ----- roster events -----------------------------------------------------------

    /// The largest `roster_events` id so far (0 if none).
    pub fn last_roster_event(&self) -> Result<i64, StoreError> {
        self.db.last_roster_event()
    }

    /// The contact-list changes logged after `after`, in order. Rows naming invalid
    /// identifiers are skipped with a warning (their id still counts as seen: the
    /// returned `i64` is the largest id read).
    pub fn roster_events_after(&self, after: i64) -> Result<(Vec<RosterEvent>, i64), StoreError> {
        let (mut out, mut last) = (Vec::new(), after);
        for (id, user, contact, added, origin) in self.db.roster_rows_after(after)? {
            last = last.max(id);
            match (UserId::new(user.as_str()), UserId::new(contact.as_str())) {
                (Ok(user), Ok(contact)) => out.push(RosterEvent {
                    id,
                    user,
                    contact,
                    added,
                    origin,
                }),
                _ => tracing::warn!(id, user, contact, "skipping invalid roster event"),
            }
        }
        Ok((out, last))
    }
}

/// Capabilities as stored (their wire JSON).
fn caps_to_json(caps: &Capabilities) -> Result<String, StoreError> {
    serde_json::to_string(caps).map_err(|e| StoreError::Corrupt {
        what: "capabilities",
        detail: e.to_string(),
    })
}

/// Capabilities as read back.
fn caps_from_json(json: &str) -> Result<Capabilities, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what: "capabilities",
        detail: e.to_string(),
    })
}

/// The stored contact names of `user` that are valid user identifiers; the others are
/// skipped with a warning.
fn valid_contacts(user: &UserId, names: Vec<String>) -> Vec<UserId> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match UserId::new(name.as_str()) {
            Ok(id) => out.push(id),
            Err(e) => {
                tracing::warn!(%user, contact = name, error = %e, "skipping invalid stored contact")
            }
        }
    }
    out
}
