//! The store's tests, run against both backends: each test below `both_backends!` is
//! one function taking a [`Kind`], instantiated as `store::tests::sqlite::NAME` and
//! `store::tests::pg::NAME`. The PostgreSQL ones need a server: the URL of a role with
//! CREATEDB in `PRECALL_TEST_PG` (`scripts/pg start` prints one; `scripts/test` starts
//! it and sets the variable). Each test creates its own database and drops it after,
//! so they run in parallel. Without `PRECALL_TEST_PG` they fail; nothing is skipped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use postgres::NoTls;
use precall_protocol::{Capabilities, Password, TerminalId, UserId};

use super::*;

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Sqlite,
    Pg,
}

/// The environment variable naming the test server.
const PG_ENV: &str = "PRECALL_TEST_PG";

/// The URL of the PostgreSQL server for the tests; fails the test when there is none.
pub(crate) fn pg_url() -> String {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{PG_ENV} is not set: the PostgreSQL store tests need a server. Run \
             `scripts/pg start` and export {PG_ENV}=<the URL it prints> (or run \
             `scripts/test`, which does both)"
        ),
    }
}

/// `url` with its database name replaced by `name`.
fn with_dbname(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let query = tail.split_once('?').map(|(_, q)| q);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// A fresh, empty store location: a temporary SQLite file, or a new PostgreSQL
/// database (dropped with this value).
pub(crate) struct TestDb {
    pub(crate) target: DbTarget,
    _dir: Option<tempfile::TempDir>,
    /// `(server URL, database name)` of a PostgreSQL database to drop.
    pg: Option<(String, String)>,
}

impl TestDb {
    pub(crate) fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Self {
                    target: DbTarget::Sqlite(dir.path().join("db.sqlite")),
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Kind::Pg => {
                static SEQ: AtomicU32 = AtomicU32::new(0);
                let server = pg_url();
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let name = format!(
                    "precall_test_{}_{}_{nanos}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed)
                );
                let mut admin = postgres::Client::connect(&server, NoTls).unwrap_or_else(|e| {
                    panic!(
                        "cannot connect to {PG_ENV}={server} (is `scripts/pg start` running?): {e}"
                    )
                });
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .unwrap();
                Self {
                    target: DbTarget::Postgres(with_dbname(&server, &name)),
                    _dir: None,
                    pg: Some((server, name)),
                }
            }
        }
    }

    pub(crate) fn open(&self) -> Store {
        Store::open(&self.target).unwrap()
    }

    /// Writes a version 1 database (its `roster_events` without `origin`, one
    /// administrator event in it), as the previous program left it.
    fn make_version_1(&self) {
        match &self.target {
            DbTarget::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.execute_batch(
                    "CREATE TABLE roster_events (
                         id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL,
                         contact TEXT NOT NULL, added INTEGER NOT NULL);
                     INSERT INTO roster_events (user, contact, added) VALUES ('ann', 'bea', 1);
                     PRAGMA user_version = 1;",
                )
                .unwrap();
            }
            DbTarget::Postgres(url) => {
                let mut c = postgres::Client::connect(url, NoTls).unwrap();
                c.batch_execute(
                    r#"CREATE TABLE precall_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
                       INSERT INTO precall_meta VALUES ('schema_version', 1);
                       CREATE TABLE roster_events (
                           id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                           "user" TEXT NOT NULL, contact TEXT NOT NULL, added BOOLEAN NOT NULL);
                       INSERT INTO roster_events ("user", contact, added) VALUES ('ann', 'bea', true);"#,
                )
                .unwrap();
            }
        }
    }

    /// Writes `version` as the stored schema version, as a newer program would.
    fn set_schema_version(&self, version: i64) {
        match &self.target {
            DbTarget::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.pragma_update(None, "user_version", version).unwrap();
            }
            DbTarget::Postgres(url) => {
                let mut c = postgres::Client::connect(url, NoTls).unwrap();
                c.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS precall_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
                     INSERT INTO precall_meta VALUES ('schema_version', {version})
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ))
                .unwrap();
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.pg {
            if let Ok(mut c) = postgres::Client::connect(server, NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

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

fn with_users(store: &Store, names: &[&str]) {
    for n in names {
        store
            .add_user(&user(n), &hash_password(&pw("pw"), CHEAP).unwrap())
            .unwrap();
    }
}

/// Instantiates each test for both backends.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Kind::Sqlite) } )*
        }
        mod pg {
            $( #[test] fn $name() { super::$name(super::Kind::Pg) } )*
        }
    };
}

both_backends!(
    schema_is_created_and_reopens,
    open_refuses_a_newer_schema,
    users_add_list_passwd_remove,
    contacts_admin_changes_and_protocol_persistence,
    protocol_batches_store_each_change_alone_and_log_it,
    roster_events_log_admin_changes,
    a_version_1_database_is_upgraded,
    import_writes_everything_in_one_transaction_or_nothing,
    terminals_register_lookup_by_id_and_owner,
);

fn schema_is_created_and_reopens(kind: Kind) {
    let db = TestDb::new(kind);
    {
        let store = db.open();
        with_users(&store, &["alice"]);
        assert_eq!(store.last_roster_event().unwrap(), 0);
    }
    let store = db.open();
    assert_eq!(store.users().unwrap(), vec!["alice".to_string()]);
}

fn open_refuses_a_newer_schema(kind: Kind) {
    let db = TestDb::new(kind);
    db.set_schema_version(99);
    assert!(matches!(
        Store::open(&db.target),
        Err(StoreError::NewerSchema(99))
    ));
}

fn a_version_1_database_is_upgraded(kind: Kind) {
    let db = TestDb::new(kind);
    db.make_version_1();
    let mut store = db.open();
    let (old, _) = store.roster_events_after(0).unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].origin, None);
    with_users(&store, &["alice", "bob"]);
    let stored = store
        .persist_roster_batch(&[(user("alice"), user("bob"), true)], 3)
        .unwrap();
    let (new, _) = store.roster_events_after(old[0].id).unwrap();
    assert_eq!(stored, [Persisted::Logged(new[0].id)]);
    assert_eq!(new[0].origin, Some(3));
    drop(store);
    // Reopening at the new version changes nothing.
    assert_eq!(db.open().roster_events_after(0).unwrap().0.len(), 2);
}

fn users_add_list_passwd_remove(kind: Kind) {
    let db = TestDb::new(kind);
    let mut store = db.open();
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

fn contacts_admin_changes_and_protocol_persistence(kind: Kind) {
    let db = TestDb::new(kind);
    let mut store = db.open();
    with_users(&store, &["alice", "bob", "carol"]);
    let (a, b, c) = (user("alice"), user("bob"), user("carol"));
    assert!(store.admin_change_contact(&a, &c, true, 500).unwrap());
    assert!(store.admin_change_contact(&a, &b, true, 500).unwrap());
    // Adding again changes nothing.
    assert!(!store.admin_change_contact(&a, &b, true, 500).unwrap());
    assert_eq!(store.contacts(&a).unwrap(), vec![b.clone(), c.clone()]);
    assert!(store.contacts(&b).unwrap().is_empty());
    // A login reads the same list.
    let rec = store.login_record(&a, None).unwrap().unwrap();
    assert_eq!(rec.contacts, vec![b.clone(), c.clone()]);
    assert!(verify_password(&rec.phc, &pw("pw")).unwrap());
    assert!(store
        .login_record(&b, None)
        .unwrap()
        .unwrap()
        .contacts
        .is_empty());
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

fn protocol_batches_store_each_change_alone_and_log_it(kind: Kind) {
    let db = TestDb::new(kind);
    let mut store = db.open();
    with_users(&store, &["alice", "bob"]);
    let (a, b, gone, zed) = (user("alice"), user("bob"), user("gone"), user("zed"));
    let stored = store
        .persist_roster_batch(
            &[
                (a.clone(), b.clone(), true),
                // No such account: this one alone is not stored.
                (gone.clone(), a.clone(), true),
                (b.clone(), a.clone(), true),
                (a.clone(), b.clone(), true), // idempotent: stored, nothing logged
                (b.clone(), zed.clone(), true),
                (b.clone(), zed.clone(), false),
            ],
            7,
        )
        .unwrap();
    let (events, last) = store.roster_events_after(0).unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(
        stored,
        [
            Persisted::Logged(ids[0]),
            Persisted::NotStored,
            Persisted::Logged(ids[1]),
            Persisted::Unchanged,
            Persisted::Logged(ids[2]),
            Persisted::Logged(ids[3]),
        ]
    );
    assert_eq!(last, ids[3]);
    // Logged in order, tagged with the storing node, for the other nodes.
    assert_eq!(
        events
            .iter()
            .map(|e| (e.user.as_str(), e.contact.as_str(), e.added, e.origin))
            .collect::<Vec<_>>(),
        [
            ("alice", "bob", true, Some(7)),
            ("bob", "alice", true, Some(7)),
            ("bob", "zed", true, Some(7)),
            ("bob", "zed", false, Some(7)),
        ]
    );
    assert_eq!(store.contacts(&a).unwrap(), vec![b.clone()]);
    assert_eq!(store.contacts(&b).unwrap(), vec![a.clone()]);
    assert!(store.contacts(&gone).unwrap().is_empty());
    // Committed: another connection sees them.
    drop(store);
    assert_eq!(db.open().contacts(&a).unwrap(), vec![b]);
}

fn roster_events_log_admin_changes(kind: Kind) {
    let db = TestDb::new(kind);
    let mut store = db.open();
    with_users(&store, &["alice", "bob"]);
    let (a, b) = (user("alice"), user("bob"));
    assert_eq!(store.last_roster_event().unwrap(), 0);
    store.admin_change_contact(&a, &b, true, 500).unwrap();
    store.admin_change_contact(&a, &b, true, 500).unwrap(); // no change, no event
    store.persist_roster(&b, &a, true).unwrap(); // a single write, not logged
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
    assert!(all.iter().all(|e| e.origin.is_none()), "{all:?}");
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

fn import_writes_everything_in_one_transaction_or_nothing(kind: Kind) {
    let db = TestDb::new(kind);
    let mut store = db.open();
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
    // Committed.
    let store = db.open();
    assert_eq!(store.users().unwrap(), vec!["alice", "bob", "zoe"]);
}

fn terminals_register_lookup_by_id_and_owner(kind: Kind) {
    let db = TestDb::new(kind);
    let mut store = db.open();
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

// ----- backend-independent ---------------------------------------------------------

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
fn db_argument_selects_the_backend_and_urls_print_without_password() {
    let t = |s: &str| DbTarget::from(std::ffi::OsString::from(s));
    assert_eq!(t("x.db"), DbTarget::Sqlite("x.db".into()));
    assert_eq!(
        t("/var/lib/postgres"),
        DbTarget::Sqlite("/var/lib/postgres".into())
    );
    assert_eq!(
        t("postgres://u@h/d"),
        DbTarget::Postgres("postgres://u@h/d".into())
    );
    assert_eq!(
        t("postgresql://u@h/d"),
        DbTarget::Postgres("postgresql://u@h/d".into())
    );
    assert_eq!(
        t("postgres://alice:s3cret@db.example:5433/precall?sslmode=disable&password=x").to_string(),
        "postgres://alice@db.example:5433/precall?sslmode=disable"
    );
    assert_eq!(redact_url("postgres://h:5432/d"), "postgres://h:5432/d");
    assert_eq!(redact_url("postgres://a:p@h"), "postgres://a@h");
    assert_eq!(redact_url("postgres://a:p/q@r@h/d"), "postgres://a@h/d");
    assert_eq!(redact_url("postgres://h/d?password=x"), "postgres://h/d");
}

// ----- SQLite only ---------------------------------------------------------------

#[test]
fn sqlite_schema_is_in_wal_mode_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
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
}

#[test]
fn sqlite_open_fails_on_a_directory_and_on_garbage() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Store::open(&DbTarget::Sqlite(dir.path().into())).is_err());
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    assert!(Store::open(&DbTarget::Sqlite(junk)).is_err());
}

// ----- PostgreSQL only -------------------------------------------------------------

#[test]
fn pg_schema_has_its_version_and_tables() {
    let db = TestDb::new(Kind::Pg);
    drop(db.open());
    let DbTarget::Postgres(url) = &db.target else {
        unreachable!()
    };
    let mut c = postgres::Client::connect(url, NoTls).unwrap();
    let v: i64 = c
        .query_one(
            "SELECT value FROM precall_meta WHERE key = 'schema_version'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, SCHEMA_VERSION);
    for table in ["accounts", "contacts", "terminals", "roster_events"] {
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = $1",
                &[&table],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{table}");
    }
}

#[test]
fn pg_bad_url_and_unreachable_server_are_typed_errors_without_the_password() {
    for bad in [
        "postgres://u:pw@host:notaport/db",
        "postgres://u:pw@host/db?sslmode=sideways",
    ] {
        match Store::open(&DbTarget::Postgres(bad.into())) {
            Err(e @ StoreError::BadUrl { .. }) => {
                assert!(!e.to_string().contains("pw"), "{e}");
            }
            other => panic!("{bad}: {:?}", other.map(|_| ())),
        }
    }
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://u:hunter2@127.0.0.1:{port}/db");
    match Store::open(&DbTarget::Postgres(url)) {
        Err(e @ StoreError::Connect { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("postgres://u@127.0.0.1:{port}/db")),
                "{text}"
            );
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.to_lowercase().contains("refused"), "{text}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn pg_lost_connection_is_reported_then_reconnected() {
    let db = TestDb::new(Kind::Pg);
    let store = db.open();
    with_users(&store, &["alice"]);
    let DbTarget::Postgres(url) = &db.target else {
        unreachable!()
    };
    let mut killer = postgres::Client::connect(url, NoTls).unwrap();
    let killed: i64 = killer
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    // The server closes the socket asynchronously.
    let mut lost = None;
    for _ in 0..50 {
        match store.users() {
            Err(e) => {
                lost = Some(e);
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    match lost {
        Some(StoreError::ConnectionLost { url: shown, .. }) => {
            assert_eq!(shown, redact_url(url));
        }
        other => panic!("want ConnectionLost, got {other:?}"),
    }
    assert_eq!(store.users().unwrap(), vec!["alice"]);
}

#[test]
fn pg_nodes_opening_a_fresh_database_at_once_all_succeed() {
    let db = TestDb::new(Kind::Pg);
    let barrier = std::sync::Barrier::new(6);
    std::thread::scope(|s| {
        let opens: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    Store::open(&db.target).map(drop)
                })
            })
            .collect();
        for o in opens {
            o.join().unwrap().unwrap();
        }
    });
    with_users(&db.open(), &["alice"]);
}

/// A node polling `roster_events` misses no event, whatever order concurrent
/// appenders commit in: appender `slow` takes its id and waits before committing, an
/// appender `fast` starting meanwhile must not commit a larger id before it.
#[test]
fn pg_roster_events_are_never_visible_out_of_id_order() {
    let db = TestDb::new(Kind::Pg);
    let setup = db.open();
    with_users(&setup, &["alice", "bob", "carol", "dave"]);
    let DbTarget::Postgres(url) = &db.target else {
        unreachable!()
    };
    let mut slow = crate::store::pg::PgStore::open(url).unwrap();
    slow.pause_before_commit = Duration::from_millis(600);
    let mut slow = Store { db: Box::new(slow) };
    let mut fast = db.open();
    let poller = db.open();

    let mut seen = Vec::new();
    let mut last = 0;
    std::thread::scope(|s| {
        let slow = s.spawn(move || {
            slow.admin_change_contact(&user("alice"), &user("bob"), true, 500)
                .unwrap()
        });
        // `slow` now holds an id and sits before its commit.
        std::thread::sleep(Duration::from_millis(200));
        assert!(fast
            .admin_change_contact(&user("carol"), &user("dave"), true, 500)
            .unwrap());
        let (events, l) = poller.roster_events_after(last).unwrap();
        seen.extend(events);
        last = l;
        assert!(slow.join().unwrap());
    });
    let (events, _) = poller.roster_events_after(last).unwrap();
    seen.extend(events);
    let mut pairs: Vec<_> = seen
        .iter()
        .map(|e| (e.user.as_str(), e.contact.as_str()))
        .collect();
    pairs.sort_unstable();
    assert_eq!(
        pairs,
        [("alice", "bob"), ("carol", "dave")],
        "the poller missed an event: {seen:?}"
    );
}

/// The same without any pause: several nodes appending at once while one polls; the
/// poller ends up with every logged event, each once.
#[test]
fn pg_a_poller_sees_every_event_of_concurrent_appenders() {
    const WRITERS: usize = 4;
    const CHANGES: usize = 40;
    let db = TestDb::new(Kind::Pg);
    let setup = db.open();
    let names: Vec<String> = (0..WRITERS * 2).map(|i| format!("u{i}")).collect();
    with_users(
        &setup,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let done = std::sync::atomic::AtomicUsize::new(0);
    let poller = db.open();
    let mut seen = Vec::new();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (db, done) = (&db, &done);
            s.spawn(move || {
                let mut store = db.open();
                let (a, b) = (
                    user(&format!("u{}", 2 * w)),
                    user(&format!("u{}", 2 * w + 1)),
                );
                for i in 0..CHANGES {
                    assert!(store.admin_change_contact(&a, &b, i % 2 == 0, 500).unwrap());
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let mut last = 0;
        loop {
            let finished = done.load(Ordering::SeqCst) == WRITERS;
            let (events, l) = poller.roster_events_after(last).unwrap();
            seen.extend(events.into_iter().map(|e| e.id));
            last = l;
            if finished {
                break;
            }
        }
    });
    let all: Vec<i64> = poller
        .roster_events_after(0)
        .unwrap()
        .0
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all.len(), WRITERS * CHANGES);
    assert_eq!(seen, all, "the poller missed (or repeated) events");
}
