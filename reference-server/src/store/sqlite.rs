//! The SQLite backend: one file, in WAL mode; writers serialised by SQLite
//! (`BEGIN IMMEDIATE`), so `roster_events` ids commit in order by construction.

use std::path::Path;
use std::time::Duration;

use precall_protocol::{TerminalId, UserId};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{Backend, ImportCounts, ImportPlan, Persisted, RosterRow, StoreError, SCHEMA_VERSION};

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
    added   INTEGER NOT NULL,
    origin  INTEGER
);
";

/// Version 1 to 2: `roster_events.origin` (NULL in the administrator's rows).
const UPGRADE_1_2: &str = "ALTER TABLE roster_events ADD COLUMN origin INTEGER;";

/// An open SQLite store.
pub struct SqliteStore {
    pub(super) conn: Connection,
}

impl SqliteStore {
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
        if version < SCHEMA_VERSION {
            // One transaction: the tables, the upgrade and the version, or nothing.
            let tx = conn.unchecked_transaction()?;
            if version == 1 {
                tx.execute_batch(UPGRADE_1_2)?;
            }
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        Ok(Self { conn })
    }
}

impl Backend for SqliteStore {
    fn add_user(&self, user: &UserId, phc: &str) -> Result<(), StoreError> {
        add_user(&self.conn, user, phc)
    }

    fn set_password(&self, user: &UserId, phc: &str) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE accounts SET phc = ?2 WHERE name = ?1",
            params![user.as_str(), phc],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownUser(user.to_string()));
        }
        Ok(())
    }

    fn remove_user(&mut self, user: &UserId) -> Result<(), StoreError> {
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

    fn users(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM accounts ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn phc(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT phc FROM accounts WHERE name = ?1",
                [user.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn contact_names(&self, user: &UserId) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT contact FROM contacts WHERE user = ?1 ORDER BY contact")?;
        let rows = stmt.query_map([user.as_str()], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    #[cfg(test)]
    fn persist_roster(
        &self,
        user: &UserId,
        contact: &UserId,
        added: bool,
    ) -> Result<bool, StoreError> {
        write_contact(&self.conn, user, contact, added)
    }

    fn persist_roster_batch(
        &mut self,
        changes: &[(UserId, UserId, bool)],
        origin: i64,
    ) -> Result<Vec<Persisted>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = Vec::with_capacity(changes.len());
        for (user, contact, added) in changes {
            // Nothing is written before the check: a change that fails it leaves
            // nothing to roll back.
            match require_user(&tx, user) {
                Ok(()) => {}
                Err(StoreError::UnknownUser(_)) => {
                    stored.push(Persisted::NotStored);
                    continue;
                }
                Err(e) => return Err(e),
            }
            if !write_contact(&tx, user, contact, *added)? {
                stored.push(Persisted::Unchanged);
                continue;
            }
            tx.execute(
                "INSERT INTO roster_events (user, contact, added, origin) VALUES (?1, ?2, ?3, ?4)",
                params![user.as_str(), contact.as_str(), added, origin],
            )?;
            stored.push(Persisted::Logged(tx.last_insert_rowid()));
        }
        tx.commit()?;
        Ok(stored)
    }

    fn admin_change_contact(
        &mut self,
        user: &UserId,
        contact: &UserId,
        added: bool,
        limit: usize,
    ) -> Result<bool, StoreError> {
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

    fn register_terminal(
        &self,
        id: &TerminalId,
        owner: &UserId,
        caps_json: &str,
    ) -> Result<(), StoreError> {
        register_terminal(&self.conn, id, owner, caps_json)
    }

    fn remove_terminal(&self, id: &TerminalId) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM terminals WHERE id = ?1", [id.as_str()])?;
        if n == 0 {
            return Err(StoreError::UnknownTerminal(id.to_string()));
        }
        Ok(())
    }

    fn terminals(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, owner FROM terminals ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn terminal_caps_json(
        &self,
        id: &TerminalId,
        user: &UserId,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT caps FROM terminals WHERE id = ?1 AND owner = ?2",
                [id.as_str(), user.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn import(&mut self, plan: &ImportPlan<'_>) -> Result<ImportCounts, StoreError> {
        // Dropped without commit, the transaction rolls back.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut counts = ImportCounts::default();
        for (name, phc) in &plan.users {
            add_user(&tx, name, phc)?;
            counts.users += 1;
        }
        for (user, contact) in &plan.contacts {
            require_user(&tx, contact)?;
            if write_contact(&tx, user, contact, true)? {
                counts.contacts += 1;
            }
        }
        for (id, owner, caps) in &plan.terminals {
            register_terminal(&tx, id, owner, caps)?;
            counts.terminals += 1;
        }
        tx.commit()?;
        Ok(counts)
    }

    fn last_roster_event(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM roster_events", [], |r| {
                r.get(0)
            })?)
    }

    fn roster_rows_after(&self, after: i64) -> Result<Vec<RosterRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, user, contact, added, origin FROM roster_events WHERE id > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([after], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn add_user(conn: &Connection, user: &UserId, phc: &str) -> Result<(), StoreError> {
    let n = conn.execute(
        "INSERT INTO accounts (name, phc) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
        params![user.as_str(), phc],
    )?;
    if n == 0 {
        return Err(StoreError::UserExists(user.to_string()));
    }
    Ok(())
}

fn register_terminal(
    conn: &Connection,
    id: &TerminalId,
    owner: &UserId,
    caps_json: &str,
) -> Result<(), StoreError> {
    require_user(conn, owner)?;
    conn.execute(
        "INSERT INTO terminals (id, owner, caps) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, caps = excluded.caps",
        params![id.as_str(), owner.as_str(), caps_json],
    )?;
    Ok(())
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

/// Fails with [`StoreError::UnknownUser`] unless the account exists (usable inside a
/// transaction, which dereferences to a connection).
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
