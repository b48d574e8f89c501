//! The `server` target: an arbitrary sequence of events over several connections into
//! the real [`crate::server::Server`], through the in-memory network of
//! [`crate::sim::Sim`].
//!
//! Terminals `0..WIRED` are real [`crate::client::Client`]s driven by commands, the
//! clients the end-of-run `INV-ONLINE-EXACT` is judged for. Terminals
//! `WIRED..WIRED + RAW` are hostile connections: they write arbitrary messages and
//! bytes, may log in as anyone, and never read what they get.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::caps::Capabilities;
use crate::client::{Client, ClientEvent};
use crate::codec::encode_frame;
use crate::fuzz::input::PASSWORD;
use crate::ids::{CallId, Endpoint, Password, TerminalId, UserId};
use crate::message::{ClientMessage, LoginWith};
use crate::server::ServerConfig;
use crate::sim::{sample_caps, Directory, Sim};
use crate::time::Time;

/// Terminals driven by a real client.
const WIRED: usize = 3;
/// Hostile raw connections.
const RAW: usize = 2;

/// One event.
#[derive(Arbitrary, Debug)]
enum Step {
    /// A wired terminal logs in (connecting first if needed).
    Login {
        t: u8,
        user: UserId,
        password: Password,
        with: LoginWith,
    },
    /// A wired terminal's application issues a command.
    Command { t: u8, command: Command },
    /// A wired terminal's connection dies.
    Drop { t: u8 },
    /// A wired terminal reconnects and resumes its detached session (if it has one).
    Resume { t: u8 },
    /// A raw connection writes one well-formed message (connecting first if needed).
    Send { r: u8, msg: ClientMessage },
    /// A raw connection writes arbitrary bytes.
    Bytes { r: u8, bytes: Vec<u8> },
    /// A raw connection goes away.
    RawDrop { r: u8 },
    /// Everything in flight is delivered.
    Run,
    /// Time passes (milliseconds; the server's timers are 30 s to 60 s).
    Advance { ms: u32 },
    /// Credential checks are held from now on, or answered at once.
    HoldAuth(bool),
    /// The oldest held credential check is answered.
    ReleaseAuth,
    /// An administrator changes a stored contact list.
    Roster {
        user: UserId,
        contact: UserId,
        added: bool,
    },
}

/// A wired terminal's command; indices pick among what its client holds.
#[derive(Arbitrary, Debug)]
enum Command {
    Logout,
    UpdateCaps(Capabilities),
    AddContact(UserId),
    RemoveContact(UserId),
    Call { peer: u8, prior_art: bool },
    Answer { call: u8, accept: bool },
    Hangup { call: u8 },
    QueryCaps { peer: u8 },
}

/// The sample store: four users with the sample password; alice and bob, and alice
/// and carol, list each other; bob lists carol, who does not list him; dave lists
/// nobody. Each of the first three has a registered terminal.
fn directory() -> Directory {
    let mut d = Directory::default();
    let [alice, bob, carol, dave] =
        ["alice", "bob", "carol", "dave"].map(|n| UserId::new(n).unwrap_or_else(|e| panic!("{e}")));
    for u in [&alice, &bob, &carol, &dave] {
        d.add_user(u, PASSWORD);
    }
    d.befriend(&alice, &bob);
    d.befriend(&alice, &carol);
    if let Some(acc) = d.accounts.get_mut(&bob) {
        acc.contacts.insert(carol.clone());
    }
    for (id, owner, caps) in [
        ("t-alice", &alice, sample_caps(&["h264", "vp8"], 1280, 30)),
        ("t-bob", &bob, sample_caps(&["vp8"], 640, 15)),
        ("kiosk-1", &carol, sample_caps(&["av1", "h264"], 1920, 60)),
    ] {
        let id = TerminalId::new(id).unwrap_or_else(|e| panic!("{e}"));
        d.register(&id, owner, caps);
    }
    d
}

fn command(sim: &mut Sim, t: usize, command: Command) {
    sim.command(t, |c, now| run_command(c, command, now));
}

fn run_command(c: &mut Client, command: Command, now: Time) {
    let peers: Vec<Endpoint> = c.peers().map(|(e, _)| e.clone()).collect();
    let calls: Vec<CallId> = c.calls().map(|(id, _)| *id).collect();
    let pick = |i: u8| calls.get(usize::from(i) % calls.len().max(1)).copied();
    // A refused command is the client's business (the client target checks it).
    let _ = match command {
        Command::Logout => c.logout(now),
        Command::UpdateCaps(caps) => c.update_caps(caps, now).map(drop),
        Command::AddContact(u) => c.add_contact(u, now).map(drop),
        Command::RemoveContact(u) => c.remove_contact(u, now).map(drop),
        Command::Call { peer, prior_art } => {
            match peers.get(usize::from(peer) % peers.len().max(1)) {
                Some(to) if prior_art => c.place_call_exchanging_capabilities(to, now).map(drop),
                Some(to) => c.place_call(to, now).map(drop),
                None => Ok(()),
            }
        }
        Command::Answer { call, accept } => {
            pick(call).map_or(Ok(()), |id| c.answer(id, accept, now))
        }
        Command::Hangup { call } => pick(call).map_or(Ok(()), |id| c.hangup(id, now)),
        Command::QueryCaps { peer } => match peers.get(usize::from(peer) % peers.len().max(1)) {
            Some(to) => c.query_caps(to, now).map(drop),
            None => Ok(()),
        },
    };
}

/// Runs the target on one input. Panics when a property breaks.
pub fn server(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut sim = Sim::new(directory(), WIRED + RAW, ServerConfig::default());
    let wired = |t: u8| usize::from(t) % WIRED;
    let raw = |r: u8| WIRED + usize::from(r) % RAW;
    let mut steps = 0;
    while !u.is_empty() && steps < 256 {
        steps += 1;
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        match step {
            Step::Login {
                t,
                user,
                password,
                with,
            } => sim.login(wired(t), &user, password.expose(), with),
            Step::Command { t, command: cmd } => command(&mut sim, wired(t), cmd),
            Step::Drop { t } => sim.drop_connection(wired(t)),
            Step::Resume { t } => {
                let _ = sim.resume(wired(t));
            }
            Step::Send { r, msg } => {
                let r = raw(r);
                if sim.terminals[r].conn.is_none() {
                    sim.connect(r);
                }
                sim.inject(r, &encode_frame(&msg));
            }
            Step::Bytes { r, bytes } => {
                let r = raw(r);
                if sim.terminals[r].conn.is_none() {
                    sim.connect(r);
                }
                sim.inject(r, &bytes);
            }
            Step::RawDrop { r } => sim.drop_connection(raw(r)),
            Step::Run => {
                if let Err(v) = sim.run() {
                    panic!("{v}");
                }
            }
            Step::Advance { ms } => sim.advance(Duration::from_millis((ms % 130_000).into())),
            Step::HoldAuth(hold) => sim.hold_auth = hold,
            Step::ReleaseAuth => {
                sim.release_auth();
            }
            Step::Roster {
                user,
                contact,
                added,
            } => sim.change_roster(&user, &contact, added),
        }
        if let Err(v) = sim.check() {
            panic!("after step {steps}: {v}");
        }
    }
    // Everything delivered: answer held checks, then settle.
    sim.hold_auth = false;
    while sim.release_auth() {}
    if let Err(v) = sim.settle() {
        panic!("at the end: {v}");
    }
    for (i, t) in sim.terminals.iter().enumerate().take(WIRED) {
        if let Some(ClientEvent::Violation(v)) = t
            .events
            .iter()
            .find(|e| matches!(e, ClientEvent::Violation(_)))
        {
            panic!("the server made wired terminal {i} refuse a message: {v}");
        }
    }
}
