//! The PostgreSQL backend (`--db postgres://…`): one database shared by every server
//! node and the admin commands.
//!
//! - The schema is created on first open in one transaction, under a transaction-level
//!   advisory lock, so nodes opening a fresh database at once do not race on
//!   `CREATE TABLE IF NOT EXISTS`; its version is the `schema_version` row of
//!   `precall_meta`, and a newer one is refused as SQLite's `user_version` is.
//! - `roster_events` ids come from an identity sequence, which hands out ids at insert
//!   time, not at commit: two appenders could commit ids 11 then 10, and a node that
//!   already read 11 would never read 10. Every transaction that appends therefore
//!   takes `LOCK TABLE roster_events IN EXCLUSIVE MODE` first (it blocks other
//!   appenders, not readers) and holds it to its commit: ids become visible in order.
//! - A broken connection fails the operation with [`StoreError::ConnectionLost`]; the
//!   next operation connects again.
//!
//! The client is `postgres`, the blocking wrapper of `tokio-postgres`: it runs its own
//! small runtime, so it is used only on the store thread, in `spawn_blocking`, or
//! outside tokio (admin); dropping it on a tokio thread hands it to a plain thread.

use std::cell::RefCell;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Config, GenericClient, NoTls};
use precall_protocol::{TerminalId, UserId};

use super::{
    redact_url, Backend, ImportCounts, ImportPlan, LoginRows, Persisted, RosterRow, StoreError,
    SCHEMA_VERSION,
};

/// The advisory lock key under which the schema is created ("precall" in ASCII).
const SCHEMA_LOCK: i64 = 0x0070_7265_6361_6c6c;

/// Every table of the store, `"user"` quoted (a reserved word in PostgreSQL).
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    phc  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    "user"  TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    contact TEXT NOT NULL,
    PRIMARY KEY ("user", contact)
);
CREATE INDEX IF NOT EXISTS contacts_contact ON contacts(contact);
CREATE TABLE IF NOT EXISTS terminals (
    id    TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    caps  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS terminals_owner ON terminals(owner);
CREATE TABLE IF NOT EXISTS roster_events (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "user"  TEXT NOT NULL,
    contact TEXT NOT NULL,
    added   BOOLEAN NOT NULL,
    origin  BIGINT
);
"#;

/// Version 1 to 2: `roster_events.origin` (NULL in the administrator's rows).
const UPGRADE_1_2: &str = "ALTER TABLE roster_events ADD COLUMN IF NOT EXISTS origin BIGINT";

/// Adds a contact-list entry (idempotent).
const ADD_CONTACT: &str =
    r#"INSERT INTO contacts ("user", contact) VALUES ($1, $2) ON CONFLICT DO NOTHING"#;
/// Removes a contact-list entry (idempotent).
const REMOVE_CONTACT: &str = r#"DELETE FROM contacts WHERE "user" = $1 AND contact = $2"#;

/// An open PostgreSQL store.
pub struct PgStore {
    config: Config,
    /// The URL without its password, for errors.
    url: String,
    /// `None` after a lost connection, until the next operation reconnects.
    client: RefCell<Option<Client>>,
    /// Tests only: how long an appending transaction waits before its commit (to
    /// widen the window the roster-event lock closes).
    #[cfg(test)]
    pub(super) pause_before_commit: Duration,
}

impl PgStore {
    /// Connects to the database at `url` and creates the schema if missing.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let mut config: Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::BadUrl {
                url: shown.clone(),
                detail: e.to_string(),
            })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let store = Self {
            config,
            url: shown,
            client: RefCell::new(None),
            #[cfg(test)]
            pause_before_commit: Duration::ZERO,
        };
        store.with(create_schema)?;
        Ok(store)
    }

    /// Runs `f` on the connection (connecting first if there is none or it broke).
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.client.borrow_mut();
        let client = match slot.take() {
            Some(c) if !c.is_closed() => c,
            _ => self
                .config
                .connect(NoTls)
                .map_err(|error| StoreError::Connect {
                    url: self.url.clone(),
                    error,
                })?,
        };
        let client = slot.insert(client);
        let result = f(client);
        if client.is_closed() {
            *slot = None;
            if let Err(StoreError::Pg(error)) = result {
                return Err(StoreError::ConnectionLost {
                    url: self.url.clone(),
                    error,
                });
            }
        }
        result
    }

    /// Tests only: waits before an appending transaction commits.
    fn before_commit(&self) {
        #[cfg(test)]
        if !self.pause_before_commit.is_zero() {
            std::thread::sleep(self.pause_before_commit);
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let Some(client) = self.client.get_mut().take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Closing runs the client's own runtime, which cannot start (or be dropped)
            // on a tokio thread: close it on a plain one.
            let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(client)));
            let theirs = slot.clone();
            let spawned = std::thread::Builder::new()
                .name("precall-pg-close".into())
                .spawn(move || drop(theirs.lock().ok().and_then(|mut c| c.take())));
            if spawned.is_err() {
                // No thread: leave the socket to the process's exit rather than panic.
                if let Some(c) = slot.lock().ok().and_then(|mut c| c.take()) {
                    std::mem::forget(c);
                }
            }
        }
    }
}

/// Creates the schema, or checks its version, in one transaction under the schema lock.
fn create_schema(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // No "already exists, skipping" notice at every open.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS precall_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    )?;
    let version: i64 = match tx.query_opt(
        "SELECT value FROM precall_meta WHERE key = 'schema_version'",
        &[],
    )? {
        Some(row) => row.try_get(0)?,
        None => 0,
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema(version));
    }
    if version < SCHEMA_VERSION {
        if version == 1 {
            tx.batch_execute(UPGRADE_1_2)?;
        }
        tx.batch_execute(SCHEMA)?;
        tx.execute(
            "INSERT INTO precall_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}

impl Backend for PgStore {
    fn add_user(&self, user: &UserId, phc: &str) -> Result<(), StoreError> {
        self.with(|c| add_user(c, user, phc))
    }

    fn set_password(&self, user: &UserId, phc: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE accounts SET phc = $2 WHERE name = $1",
                &[&user.as_str(), &phc],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownUser(user.to_string()));
            }
            Ok(())
        })
    }

    fn remove_user(&mut self, user: &UserId) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            // Locked first: no contact of this user can be added meanwhile.
            let found = tx.query_opt(
                "SELECT 1 FROM accounts WHERE name = $1 FOR UPDATE",
                &[&user.as_str()],
            )?;
            if found.is_none() {
                return Err(StoreError::UnknownUser(user.to_string()));
            }
            let removed = tx.query(
                r#"DELETE FROM contacts WHERE "user" = $1 OR contact = $1 RETURNING "user", contact"#,
                &[&user.as_str()],
            )?;
            tx.execute("DELETE FROM accounts WHERE name = $1", &[&user.as_str()])?;
            let mut events = Vec::with_capacity(removed.len());
            for row in &removed {
                events.push((row.try_get::<_, String>(0)?, row.try_get(1)?, false));
            }
            append_events(&mut tx, &events, None)?;
            self.before_commit();
            tx.commit()?;
            Ok(())
        })
    }

    fn users(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            c.query("SELECT name FROM accounts ORDER BY name", &[])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }

    fn phc(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_opt(
                "SELECT phc FROM accounts WHERE name = $1",
                &[&user.as_str()],
            )?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(StoreError::from)
        })
    }

    fn contact_names(&self, user: &UserId) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            c.query(
                r#"SELECT contact FROM contacts WHERE "user" = $1 ORDER BY contact"#,
                &[&user.as_str()],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
        })
    }

    #[cfg(test)]
    fn persist_roster(
        &self,
        user: &UserId,
        contact: &UserId,
        added: bool,
    ) -> Result<bool, StoreError> {
        self.with(|c| write_contact(c, user, contact, added))
    }

    fn persist_roster_batch(
        &mut self,
        changes: &[(UserId, UserId, bool)],
        origin: i64,
    ) -> Result<Vec<Persisted>, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            // Two round trips a change, statements prepared once a batch. The account
            // row is share-locked by the check, so it cannot go before the write: a
            // change whose account is missing is skipped and nothing is left to roll
            // back (what SQLite's savepoints do).
            let check = tx.prepare("SELECT 1 FROM accounts WHERE name = $1 FOR KEY SHARE")?;
            let add = tx.prepare(ADD_CONTACT)?;
            let remove = tx.prepare(REMOVE_CONTACT)?;
            let mut stored = Vec::with_capacity(changes.len());
            let (mut changed, mut events) = (Vec::new(), Vec::new());
            for (i, (user, contact, added)) in changes.iter().enumerate() {
                if tx.query_opt(&check, &[&user.as_str()])?.is_none() {
                    stored.push(Persisted::NotStored);
                    continue;
                }
                let write = if *added { &add } else { &remove };
                let n = tx
                    .execute(write, &[&user.as_str(), &contact.as_str()])
                    .map_err(|e| unknown_if_gone(e, user))?;
                stored.push(Persisted::Unchanged);
                if n > 0 {
                    changed.push(i);
                    events.push((user.to_string(), contact.to_string(), *added));
                }
            }
            // Logged last: the roster-event lock is held only from here to the commit.
            let ids = append_events(&mut tx, &events, Some(origin))?;
            for (i, id) in changed.into_iter().zip(ids) {
                stored[i] = Persisted::Logged(id);
            }
            tx.commit()?;
            Ok(stored)
        })
    }

    fn admin_change_contact(
        &mut self,
        user: &UserId,
        contact: &UserId,
        added: bool,
        limit: usize,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            // The account row locked: admin changes of one list are serialised, so the
            // count below stays true until the commit.
            let found = tx.query_opt(
                "SELECT 1 FROM accounts WHERE name = $1 FOR UPDATE",
                &[&user.as_str()],
            )?;
            if found.is_none() {
                return Err(StoreError::UnknownUser(user.to_string()));
            }
            if added {
                require_user(&mut tx, contact)?;
                let listed = tx
                    .query_opt(
                        r#"SELECT 1 FROM contacts WHERE "user" = $1 AND contact = $2"#,
                        &[&user.as_str(), &contact.as_str()],
                    )?
                    .is_some();
                if listed {
                    return Ok(false);
                }
                let count: i64 = tx
                    .query_one(
                        r#"SELECT COUNT(*) FROM contacts WHERE "user" = $1"#,
                        &[&user.as_str()],
                    )?
                    .try_get(0)?;
                if usize::try_from(count).unwrap_or(usize::MAX) >= limit {
                    return Err(StoreError::RosterFull(user.to_string(), limit));
                }
            }
            let changed = write_contact(&mut tx, user, contact, added)?;
            if changed {
                append_events(
                    &mut tx,
                    &[(user.to_string(), contact.to_string(), added)],
                    None,
                )?;
                self.before_commit();
            }
            tx.commit()?;
            Ok(changed)
        })
    }

    fn register_terminal(
        &self,
        id: &TerminalId,
        owner: &UserId,
        caps_json: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| register_terminal(c, id, owner, caps_json))
    }

    fn remove_terminal(&self, id: &TerminalId) -> Result<(), StoreError> {
        self.with(|c| {
            let n = c.execute("DELETE FROM terminals WHERE id = $1", &[&id.as_str()])?;
            if n == 0 {
                return Err(StoreError::UnknownTerminal(id.to_string()));
            }
            Ok(())
        })
    }

    fn terminals(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|c| {
            c.query("SELECT id, owner FROM terminals ORDER BY id", &[])?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    fn terminal_caps_json(
        &self,
        id: &TerminalId,
        user: &UserId,
    ) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_opt(
                "SELECT caps FROM terminals WHERE id = $1 AND owner = $2",
                &[&id.as_str(), &user.as_str()],
            )?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(StoreError::from)
        })
    }

    fn login_rows(
        &self,
        user: &UserId,
        terminal: Option<&TerminalId>,
    ) -> Result<Option<LoginRows>, StoreError> {
        // One round trip (and one snapshot) instead of three.
        self.with(|c| {
            let row = c.query_opt(
                r#"SELECT a.phc,
                          ARRAY(SELECT contact FROM contacts WHERE "user" = a.name
                                ORDER BY contact),
                          (SELECT caps FROM terminals WHERE id = $2 AND owner = a.name)
                   FROM accounts a WHERE a.name = $1"#,
                &[&user.as_str(), &terminal.map(TerminalId::as_str)],
            )?;
            let Some(row) = row else {
                return Ok(None);
            };
            Ok(Some((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        })
    }

    fn import(&mut self, plan: &ImportPlan<'_>) -> Result<ImportCounts, StoreError> {
        self.with(|c| {
            // Dropped without commit, the transaction rolls back.
            let mut tx = c.transaction()?;
            let mut counts = ImportCounts::default();
            for (name, phc) in &plan.users {
                add_user(&mut tx, name, phc)?;
                counts.users += 1;
            }
            for (user, contact) in &plan.contacts {
                require_user(&mut tx, contact)?;
                if write_contact(&mut tx, user, contact, true)? {
                    counts.contacts += 1;
                }
            }
            for (id, owner, caps) in &plan.terminals {
                register_terminal(&mut tx, id, owner, caps)?;
                counts.terminals += 1;
            }
            tx.commit()?;
            Ok(counts)
        })
    }

    fn last_roster_event(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            Ok(
                c.query_one("SELECT COALESCE(MAX(id), 0) FROM roster_events", &[])?
                    .try_get(0)?,
            )
        })
    }

    fn roster_rows_after(&self, after: i64) -> Result<Vec<RosterRow>, StoreError> {
        self.with(|c| {
            c.query(
                r#"SELECT id, "user", contact, added, origin FROM roster_events
                   WHERE id > $1 ORDER BY id"#,
                &[&after],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                ))
            })
            .collect()
        })
    }
}

/// Appends to `roster_events` in ascending id order of commit: the table lock, held to
/// the end of the transaction, keeps any other appender from taking an id until this
/// one has committed (or rolled back).
fn append_events(
    tx: &mut impl GenericClient,
    events: &[(String, String, bool)],
    origin: Option<i64>,
) -> Result<Vec<i64>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    tx.batch_execute("LOCK TABLE roster_events IN EXCLUSIVE MODE")?;
    let insert = tx.prepare(
        r#"INSERT INTO roster_events ("user", contact, added, origin) VALUES ($1, $2, $3, $4)
           RETURNING id"#,
    )?;
    let mut ids = Vec::with_capacity(events.len());
    for (user, contact, added) in events {
        ids.push(
            tx.query_one(&insert, &[user, contact, added, &origin])?
                .try_get(0)?,
        );
    }
    Ok(ids)
}

fn add_user(c: &mut impl GenericClient, user: &UserId, phc: &str) -> Result<(), StoreError> {
    let n = c.execute(
        "INSERT INTO accounts (name, phc) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&user.as_str(), &phc],
    )?;
    if n == 0 {
        return Err(StoreError::UserExists(user.to_string()));
    }
    Ok(())
}

fn register_terminal(
    c: &mut impl GenericClient,
    id: &TerminalId,
    owner: &UserId,
    caps_json: &str,
) -> Result<(), StoreError> {
    require_user(c, owner)?;
    c.execute(
        "INSERT INTO terminals (id, owner, caps) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, caps = EXCLUDED.caps",
        &[&id.as_str(), &owner.as_str(), &caps_json],
    )
    .map_err(|e| unknown_if_gone(e, owner))?;
    Ok(())
}

/// Adds or removes one contact row; returns whether a row changed.
fn write_contact(
    c: &mut impl GenericClient,
    user: &UserId,
    contact: &UserId,
    added: bool,
) -> Result<bool, StoreError> {
    let sql = if added { ADD_CONTACT } else { REMOVE_CONTACT };
    let n = c
        .execute(sql, &[&user.as_str(), &contact.as_str()])
        .map_err(|e| unknown_if_gone(e, user))?;
    Ok(n > 0)
}

/// Fails with [`StoreError::UnknownUser`] unless the account exists.
fn require_user(c: &mut impl GenericClient, user: &UserId) -> Result<(), StoreError> {
    match c.query_opt("SELECT 1 FROM accounts WHERE name = $1", &[&user.as_str()])? {
        Some(_) => Ok(()),
        None => Err(StoreError::UnknownUser(user.to_string())),
    }
}

/// A foreign-key refusal (the account was removed meanwhile) as [`StoreError::UnknownUser`].
fn unknown_if_gone(e: postgres::Error, user: &UserId) -> StoreError {
    if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        StoreError::UnknownUser(user.to_string())
    } else {
        StoreError::Pg(e)
    }
}
