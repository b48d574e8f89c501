//! The `admin` subcommands: accounts, contact lists and registered terminals.
//!
//! They write the database directly (SQLite serialises them with a running server).
//! Contact changes are also appended to `roster_events`, which a running server polls
//! and applies to online users through `Server::change_roster`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use precall_protocol::server::MAX_CONTACTS;
use precall_protocol::{Capabilities, Password, UserId};

use crate::store::{hash_password, Store};
use crate::{AdminArgs, AdminCommand, ContactCommand, TerminalCommand, UserCommand};

/// Runs one admin command.
pub fn run(args: AdminArgs) -> Result<()> {
    let mut store = Store::open(&args.db)
        .with_context(|| format!("cannot open database {}", args.db.display()))?;
    let cost = args.cost.cost();
    let mut out = std::io::stdout().lock();
    match args.command {
        AdminCommand::User(cmd) => match cmd {
            UserCommand::Add { name, password } => {
                let phc = hash_password(&password_arg(password)?, cost)?;
                store.add_user(&name, &phc)?;
            }
            UserCommand::Passwd { name, password } => {
                let phc = hash_password(&password_arg(password)?, cost)?;
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
    }
    out.flush()?;
    Ok(())
}

fn password_arg(s: String) -> Result<Password> {
    Password::new(s).context("invalid password")
}

fn require_user(store: &Store, user: &UserId) -> Result<()> {
    if store.phc(user)?.is_none() {
        bail!("unknown user {user}");
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
