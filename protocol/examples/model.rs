//! Model-check the real precall state machines with stateright, or explore them.
//!
//! ```text
//! cargo run --release -p precall-protocol --features model --example model -- check
//! cargo run --release -p precall-protocol --features model --example model -- check --friends 3 --async-auth
//! cargo run --release -p precall-protocol --features model --example model -- explore --addr localhost:3000
//! ```
//!
//! `check` runs the checker to completion (breadth-first unless `--dfs`) and prints
//! stateright's report; `explore` serves stateright's Explorer web UI, in which every
//! state shows the server's and each terminal's real state and every step names the
//! frames delivered.

use std::time::Instant;

use precall_protocol::model::{ModelConfig, PrecallActor, ALWAYS, SOMETIMES};
use stateright::actor::ActorModel;
use stateright::report::WriteReporter;
use stateright::{Checker, Model};

const USAGE: &str = "\
usage: model (check | explore) [options]

configuration (default: the configuration `cargo test` checks):
  --extended        carol's terminal logs in too (what CI checks)
  --any-order       each terminal may take its menu in any order, not just in order
  --friends N       N users who all list each other, one terminal each, every terminal
                    with the menu: log in, change capabilities, call, answer, drop
  --async-auth      credential checks complete as separate steps

check:
  --dfs             depth-first instead of breadth-first
  --threads N       checker threads (default 2)

explore:
  --addr HOST:PORT  where to serve the Explorer (default localhost:3000)
";

struct Args {
    mode: String,
    friends: Option<usize>,
    extended: bool,
    any_order: bool,
    async_auth: bool,
    dfs: bool,
    threads: usize,
    addr: String,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("missing mode")?;
    let mut args = Args {
        mode,
        friends: None,
        extended: false,
        any_order: false,
        async_auth: false,
        dfs: false,
        threads: 2,
        addr: "localhost:3000".into(),
    };
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--friends" => {
                let n = value("--friends")?;
                args.friends = Some(n.parse().map_err(|_| format!("bad --friends {n}"))?);
            }
            "--async-auth" => args.async_auth = true,
            "--extended" => args.extended = true,
            "--any-order" => args.any_order = true,
            "--dfs" => args.dfs = true,
            "--threads" => {
                let n = value("--threads")?;
                args.threads = n.parse().map_err(|_| format!("bad --threads {n}"))?;
            }
            "--addr" => args.addr = value("--addr")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

// The harness reads the wall clock to print how long the check took; the core never does.
#[allow(clippy::disallowed_methods)]
fn main() {
    let args = match parse() {
        Ok(a) if a.mode == "check" || a.mode == "explore" => a,
        Ok(a) => {
            eprintln!("unknown mode {}\n\n{USAGE}", a.mode);
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let base = match (args.friends, args.extended) {
        (Some(n), _) => ModelConfig::all_friends(n, args.async_auth),
        (None, true) => ModelConfig::extended(),
        (None, false) => ModelConfig::default_check(),
    };
    let cfg = ModelConfig {
        async_auth: args.async_auth,
        in_order: base.in_order && !args.any_order,
        ..base
    };
    println!(
        "precall model: {} users, {} terminals, async auth {}",
        cfg.users.len(),
        cfg.terminals.len(),
        cfg.async_auth
    );
    let builder = cfg.into_model().checker().threads(args.threads);
    if args.mode == "explore" {
        println!("serving the stateright Explorer on http://{}", args.addr);
        builder.serve(args.addr.as_str());
        return;
    }
    let started = Instant::now();
    let mut out = std::io::stdout();
    let mut reporter = WriteReporter::new(&mut out);
    let ok = if args.dfs {
        summarize(builder.spawn_dfs().join_and_report(&mut reporter), started)
    } else {
        summarize(builder.spawn_bfs().join_and_report(&mut reporter), started)
    };
    if !ok {
        std::process::exit(1);
    }
}

/// Prints the state count and each property's outcome; returns whether all passed.
fn summarize(
    checker: impl Checker<ActorModel<PrecallActor, ModelConfig>>,
    started: Instant,
) -> bool {
    println!(
        "{} unique states, max depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    let mut ok = true;
    for name in ALWAYS {
        let failed = checker.discovery(name).is_some();
        println!(
            "{}  always {name}",
            if failed { "FAILED " } else { "ok     " }
        );
        ok &= !failed;
    }
    for name in SOMETIMES {
        let reached = checker.discovery(name).is_some();
        println!(
            "{}  sometimes {name}",
            if reached { "ok     " } else { "MISSING" }
        );
        ok &= reached;
    }
    ok
}
