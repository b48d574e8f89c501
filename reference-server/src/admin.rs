//! The `admin` subcommands: accounts, contact lists and registered terminals.
//!
//! They write the database directly (SQLite, or PostgreSQL's transactions, serialise
//! them with running servers).
//! Contact changes are also appended to `roster_events`, which a running server polls
//! and applies to online users through `Server::change_roster`. `import` creates many
//! accounts, contact lists and terminals from JSON lines in one transaction (for load
//! tests and migrations).

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use precall_protocol::server::MAX_CONTACTS;
use precall_protocol::{Capabilities, Password, TerminalId, UserId};
use serde_json::{Map, Value};

use crate::store::{hash_password, HashCost, ImportTerminal, ImportUser, Store};
use crate::{AdminArgs, AdminCommand, ContactCommand, TerminalCommand, UserCommand};

/// Runs one admin command.
pub fn run(args: AdminArgs) -> Result<()> {
    let mut store =
        Store::open(&args.db).with_context(|| format!("cannot open database {}", args.db))?;
    let cost = args.cost.cost();
    let mut out = std::io::stdout().lock();
    match args.command {
        AdminCommand::User(cmd) => match cmd {
            UserCommand::Add { name, password } => {
                let phc = hash_password(&password_arg(&password, &name)?, cost)?;
                store.add_user(&name, &phc)?;
            }
            UserCommand::Passwd { name, password } => {
                let phc = hash_password(&password_arg(&password, &name)?, cost)?;
                store.set_password(&name, &phc)?;
            }
            UserCommand::Remove { name } => store.remove_user(&name)?,
            UserCommand::List => {
                for name in store.users()? {
                    writeln!(out, "{name}")?;
                }
            }
        },
        AdminCommand::Contact(cmd) => match cmd {
            ContactCommand::Add { user, contact } => {
                if !store.admin_change_contact(&user, &contact, true, MAX_CONTACTS)? {
                    eprintln!("{user} already lists {contact}");
                }
            }
            ContactCommand::Remove { user, contact } => {
                if !store.admin_change_contact(&user, &contact, false, MAX_CONTACTS)? {
                    eprintln!("{user} does not list {contact}");
                }
            }
            ContactCommand::List { user } => {
                require_user(&store, &user)?;
                for c in store.contacts(&user)? {
                    writeln!(out, "{c}")?;
                }
            }
            ContactCommand::Dump => dump_contacts(&store, &mut out)?,
        },
        AdminCommand::Terminal(cmd) => match cmd {
            TerminalCommand::Register { id, owner, caps } => {
                store.register_terminal(&id, &owner, &read_caps(&caps)?)?;
            }
            TerminalCommand::List => {
                for (id, owner) in store.terminals()? {
                    writeln!(out, "{id} {owner}")?;
                }
            }
            TerminalCommand::Remove { id } => store.remove_terminal(&id)?,
        },
        AdminCommand::Import { file } => {
            let batch = if file.as_os_str() == "-" {
                parse_import(std::io::stdin().lock(), "standard input")?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                parse_import(std::io::BufReader::new(f), &file.display().to_string())?
            };
            let users = hash_all(batch.users, cost)?;
            let counts = store.import(&users, &batch.terminals, MAX_CONTACTS)?;
            writeln!(
                out,
                "imported {} users, {} contact entries, {} terminals",
                counts.users, counts.contacts, counts.terminals
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

fn password_arg(args: &precall_cli::PasswordArgs, user: &UserId) -> Result<Password> {
    let pw = args.read(&format!("password for {user}: "))?;
    Password::new(pw).context("invalid password")
}

fn require_user(store: &Store, user: &UserId) -> Result<()> {
    if store.phc(user)?.is_none() {
        bail!("unknown user {user}");
    }
    Ok(())
}

/// Writes every contact-list entry as `USER CONTACT` lines, by user then contact name
/// (`admin contact dump`).
fn dump_contacts(store: &Store, out: &mut impl Write) -> Result<()> {
    for name in store.users()? {
        let user = UserId::new(name.clone())
            .with_context(|| format!("stored account name {name:?} is not a user id"))?;
        for c in store.contacts(&user)? {
            writeln!(out, "{user} {c}")?;
        }
    }
    Ok(())
}

/// Reads a capabilities object, validated exactly as the wire decoder does.
fn read_caps(path: &Path) -> Result<Capabilities> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read caps file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "bad caps file {}: not a capabilities object",
            path.display()
        )
    })
}

/// A user line of an import, password not yet hashed.
#[derive(Debug)]
struct PlainUser {
    name: UserId,
    password: Password,
    contacts: Vec<UserId>,
}

/// A parsed import file.
#[derive(Debug, Default)]
struct ImportBatch {
    users: Vec<PlainUser>,
    terminals: Vec<ImportTerminal>,
}

/// Parses an import's JSON lines (format in `precall-server admin import --help`);
/// errors name the source and the line.
fn parse_import(input: impl BufRead, source: &str) -> Result<ImportBatch> {
    let mut batch = ImportBatch::default();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {source}"))?;
        if line.trim().is_empty() {
            continue;
        }
        parse_line(&line, &mut batch).with_context(|| format!("{source}, line {}", i + 1))?;
    }
    Ok(batch)
}

/// Removes a required member.
fn member(obj: &mut Map<String, Value>, key: &str) -> Result<Value> {
    obj.remove(key)
        .ok_or_else(|| anyhow!("missing member {key:?}"))
}

/// Removes and decodes a required member into the type the binding asks for.
macro_rules! take {
    ($obj:expr, $key:literal) => {
        serde_json::from_value(member($obj, $key)?).context(concat!("bad \"", $key, "\""))
    };
}

fn parse_line(line: &str, batch: &mut ImportBatch) -> Result<()> {
    let mut obj: Map<String, Value> = serde_json::from_str(line).context("not a JSON object")?;
    let ty: String = take!(&mut obj, "type")?;
    match ty.as_str() {
        "user" => {
            let name: UserId = take!(&mut obj, "name")?;
            let password: String = take!(&mut obj, "password")?;
            let password = Password::new(password).context("invalid password")?;
            let contacts = match obj.remove("contacts") {
                None => Vec::new(),
                Some(v) => serde_json::from_value(v).context("bad \"contacts\"")?,
            };
            batch.users.push(PlainUser {
                name,
                password,
                contacts,
            });
        }
        "terminal" => {
            let id: TerminalId = take!(&mut obj, "id")?;
            let owner: UserId = take!(&mut obj, "owner")?;
            let caps: Capabilities = take!(&mut obj, "caps")?;
            batch.terminals.push(ImportTerminal { id, owner, caps });
        }
        other => bail!("unknown type {other:?} (expected \"user\" or \"terminal\")"),
    }
    if let Some(extra) = obj.keys().next() {
        bail!("unknown member {extra:?}");
    }
    Ok(())
}

/// Hashes every password, on every core (argon2id is slow by design).
fn hash_all(users: Vec<PlainUser>, cost: HashCost) -> Result<Vec<ImportUser>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = users.len().div_ceil(threads).max(1);
    let hashed: Vec<Result<Vec<ImportUser>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = users
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|u| {
                            Ok(ImportUser {
                                name: u.name.clone(),
                                phc: hash_password(&u.password, cost)?,
                                contacts: u.contacts.clone(),
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow!("a hashing thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(users.len());
    for part in hashed {
        out.extend(part?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{Kind, TestDb};

    const CAPS: &str = r#"{"encode":["h264"],"decode":["h264"],"screen":{"width":1280,"height":720},"cpu":"high","bandwidth":{"up_kbps":8000,"down_kbps":8000}}"#;

    #[test]
    fn import_lines_parse_with_line_numbers_in_errors() {
        let text = format!(
            "{}\n\n{}\n{}\n",
            r#"{"type":"user","name":"alice","password":"pw","contacts":["bob"]}"#,
            r#"{"type":"user","name":"bob","password":"pw"}"#,
            format_args!(r#"{{"type":"terminal","id":"T:1","owner":"alice","caps":{CAPS}}}"#),
        );
        let batch = parse_import(text.as_bytes(), "t").unwrap();
        assert_eq!(batch.users.len(), 2);
        assert_eq!(batch.users[0].contacts, vec![UserId::new("bob").unwrap()]);
        assert!(batch.users[1].contacts.is_empty());
        assert_eq!(batch.terminals.len(), 1);
        assert_eq!(batch.terminals[0].owner.as_str(), "alice");

        for (bad, why) in [
            (
                r#"{"type":"user","name":"Alice","password":"pw"}"#,
                "bad \"name\"",
            ),
            (
                r#"{"type":"user","name":"a"}"#,
                "missing member \"password\"",
            ),
            (
                r#"{"type":"user","name":"a","password":"p","x":1}"#,
                "unknown member",
            ),
            (r#"{"type":"group"}"#, "unknown type"),
            (r#"[1]"#, "not a JSON object"),
            (
                r#"{"type":"terminal","id":"T:1","owner":"a","caps":{}}"#,
                "bad \"caps\"",
            ),
        ] {
            let text = format!(
                "{}\n{bad}\n",
                r#"{"type":"user","name":"z","password":"p"}"#
            );
            let err = format!(
                "{:#}",
                parse_import(text.as_bytes(), "f.jsonl").unwrap_err()
            );
            assert!(err.contains("f.jsonl, line 2"), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn contact_dump_lists_every_entry_by_user_sqlite() {
        contact_dump_lists_every_entry_by_user(Kind::Sqlite);
    }

    #[test]
    fn contact_dump_lists_every_entry_by_user_pg() {
        contact_dump_lists_every_entry_by_user(Kind::Pg);
    }

    fn contact_dump_lists_every_entry_by_user(kind: Kind) {
        let db = TestDb::new(kind);
        let mut store = db.open();
        let phc =
            hash_password(&Password::new("pw").unwrap(), HashCost { m_kib: 8, t: 1 }).unwrap();
        let user = |n: &str| UserId::new(n).unwrap();
        for n in ["carol", "alice", "bob"] {
            store.add_user(&user(n), &phc).unwrap();
        }
        for (u, c) in [("alice", "bob"), ("alice", "carol"), ("carol", "alice")] {
            assert!(store
                .admin_change_contact(&user(u), &user(c), true, MAX_CONTACTS)
                .unwrap());
        }
        let mut out = Vec::new();
        dump_contacts(&store, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "alice bob\nalice carol\ncarol alice\n"
        );
        store.remove_user(&user("carol")).unwrap();
        let mut out = Vec::new();
        dump_contacts(&store, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "alice bob\n");
    }

    #[test]
    fn hashing_keeps_order_and_cost() {
        let users: Vec<PlainUser> = (0..5)
            .map(|i| PlainUser {
                name: UserId::new(format!("u{i}")).unwrap(),
                password: Password::new(format!("p{i}")).unwrap(),
                contacts: vec![],
            })
            .collect();
        let hashed = hash_all(users, HashCost { m_kib: 8, t: 1 }).unwrap();
        let names: Vec<&str> = hashed.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["u0", "u1", "u2", "u3", "u4"]);
        for (i, u) in hashed.iter().enumerate() {
            assert!(
                u.phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"),
                "{}",
                u.phc
            );
            let pw = Password::new(format!("p{i}")).unwrap();
            assert!(crate::store::verify_password(&u.phc, &pw).unwrap());
        }
    }
}
