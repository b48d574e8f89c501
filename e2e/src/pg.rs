//! A PostgreSQL database of its own for a test, on the server `PRECALL_TEST_PG` names
//! (`scripts/pg start` prints one; `scripts/test` starts it and sets the variable).
//! Without the variable the test fails, saying so: it never skips.

use postgres::NoTls;

use crate::bail;
use crate::error::{Error, Res};

/// A database of its own on the test server, dropped at the end.
pub struct PgDb {
    server: String,
    name: String,
    /// Its URL, for `--db`.
    pub url: String,
}

impl PgDb {
    /// Creates a fresh database (dropped when this is dropped).
    pub fn create() -> Res<PgDb> {
        let server = match std::env::var("PRECALL_TEST_PG") {
            Ok(url) if !url.is_empty() => url,
            _ => bail!(
                "PRECALL_TEST_PG is not set: this test needs a PostgreSQL server. Run \
                 `scripts/pg start` and export PRECALL_TEST_PG=<the URL it prints> (or run \
                 `scripts/test`, which does both)"
            ),
        };
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "precall_e2e_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&server, NoTls)
            .map_err(|e| Error(format!("cannot connect to PRECALL_TEST_PG={server}: {e}")))?;
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .map_err(|e| Error(format!("{sql}: {e:?}")))?;
        }
        // The server's URL with the database name replaced.
        let base = match server.rfind('/') {
            Some(i) if i > server.find("://").map_or(0, |j| j + 2) => &server[..i],
            _ => server.as_str(),
        };
        let url = format!("{base}/{name}");
        Ok(PgDb { server, name, url })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.server, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
