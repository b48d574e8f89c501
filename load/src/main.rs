//! `precall-load`: load and latency measurements of precall over real loopback TCP.
//!
//! It starts a real `precall-server` process itself (on a fresh temporary SQLite store
//! filled with `precall-server admin import`, listening on `127.0.0.1:0`), unless
//! `--connect ADDR` names a running one (or `--connect A,B,C` the nodes of a cluster,
//! user `i` on node `i % n`), and drives many sessions of the core's
//! [`precall_protocol::Client`] against it, one tokio task per session. The tool only
//! moves bytes and time and records timings: every protocol decision is the core's.
//!
//! Scenarios (one subcommand each; `precall-load SCENARIO --help` lists the options):
//!
//! - `call-setup`: set-up time of the fast path, the prior-art call and the query-first
//!   call over emulated network delay ([`callsetup`]);
//! - `login-storm`: every user of a large population logs in at once, over worker
//!   processes ([`storm`], [`worker`]);
//! - `churn`: logouts, logins and capability changes at a steady rate ([`churn`]);
//! - `held`: the server's memory per idle online terminal ([`storm`]);
//! - `crash`: the server SIGKILLed at random points under load and restarted: nothing
//!   acknowledged lost, every table rebuilt ([`crash`]);
//! - `reconnect-storm`: every session's connection cut at once, all resumed through an
//!   accept-rate limit with jittered back-off, every table verified ([`reconnect`]).
//!
//! Every scenario verifies INV-ONLINE-EXACT on every client at its verification points
//! ([`verify`]); a run whose verification fails exits with status 1. Results are a
//! table on standard output and, with `--json FILE`, a JSON report; logs go to
//! standard error (`RUST_LOG`, default `info`). `BENCHMARKS.md` has the figures.

#![deny(unsafe_code)]

mod callsetup;
mod churn;
mod cpu;
mod crash;
mod phases;
mod plot;
mod population;
mod reconnect;
mod relay;
mod report;
mod rng;
mod serverproc;
mod session;
mod storm;
mod verify;
mod worker;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::population::Population;
use crate::report::{Report, Stats};
use crate::serverproc::{ServerOpts, Target};

/// Load and latency measurements of precall against a real precall-server.
#[derive(Debug, Parser)]
#[command(name = "precall-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Call set-up time: fast path (a) against prior art (b) and query first (c), over
    /// a relay that delays every byte by --delay-ms in each direction.
    CallSetup(CallSetupArgs),
    /// Every user logs in at once (over --procs worker processes); measures the login
    /// rate, the time until every table is complete, and the server's memory.
    LoginStorm(StormArgs),
    /// Logouts, logins and capability changes at a steady rate; measures presence
    /// deliveries per second and the push latency.
    Churn(ChurnArgs),
    /// Idle online sessions: the server's memory per online terminal at each count
    /// (with --server-bin given more than once, each binary at each count in turn).
    Held(HeldArgs),
    /// SIGKILL the server at a random point of each round of changes, restart it on the
    /// same store: no acknowledged contact change may be lost, and every client must
    /// rebuild a correct table.
    Crash(CrashArgs),
    /// Cut every session's connection at once while a few stay connected and change
    /// things, then let all reconnect and resume against an accept-rate limit: every
    /// session must resume (no password checked) with a correct table.
    ReconnectStorm(ReconnectArgs),
    /// Print a population as `precall-server admin import` lines (for --connect).
    Population(PopulationArgs),
    /// Draw the plot of `churn --plot` again from churn JSON reports (one line pair per
    /// server of each report; one point per rate, the medians of its steps).
    Plot(PlotArgs),
    /// A worker process of login-storm and held (started by this tool).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

/// Options of every scenario.
#[derive(Debug, Clone, Args)]
struct Common {
    /// The precall-server binary [default: the one next to this executable]. `churn`
    /// takes it more than once to measure several binaries side by side in one run
    /// (before/after): the same steps run on each in turn.
    #[arg(long = "server-bin", value_name = "PATH")]
    server_bins: Vec<PathBuf>,
    /// The names of the --server-bin binaries in the report, in the same order
    /// [default: the directory holding the binary's `target`, e.g. the worktree].
    #[arg(long = "label", value_name = "NAME")]
    labels: Vec<String>,
    /// Use the server running at ADDR instead of starting one. Its store must hold the
    /// scenario's population: `precall-load population` prints it for `admin import`.
    /// A comma-separated list names the nodes of a cluster sharing one store: user `i`
    /// connects to node `i % n` (churn and login-storm; the others take one address).
    #[arg(long, value_name = "ADDR[,ADDR...]")]
    connect: Option<String>,
    /// With --connect: the server's process id, for its memory and CPU figures; with
    /// several addresses, one id per address, comma-separated (the figures are sums).
    #[arg(
        long,
        value_name = "PID[,PID...]",
        requires = "connect",
        value_delimiter = ','
    )]
    server_pid: Vec<u32>,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Seed of the population (contact graph, capabilities) and of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Argon2id memory cost (KiB) of the imported passwords and of the server. Cheap by
    /// default so that credential checking does not hide the presence work.
    #[arg(long, default_value_t = 8)]
    argon2_m_kib: u32,
    /// Argon2id iterations (see --argon2-m-kib).
    #[arg(long, default_value_t = 1)]
    argon2_t: u32,
    /// `serve --idle-timeout-ms` of the server started [default: the server's, 60 s].
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// `serve --queue-frames` of the server started [default: the server's].
    #[arg(long)]
    queue_frames: Option<u32>,
    /// RUST_LOG of the server started (its log is kept in the temporary directory;
    /// PRECALL_LOAD_KEEP=1 keeps that directory).
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Longest wait for any phase (logins, complete tables), in seconds.
    #[arg(long, default_value_t = 120)]
    wait_s: u64,
}

/// Options of `call-setup`.
#[derive(Debug, Args)]
struct CallSetupArgs {
    /// Calls per method.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,
    /// One-way delay between each client and the server, in milliseconds.
    #[arg(long, default_value_t = 25.0)]
    delay_ms: f64,
    #[command(flatten)]
    common: Common,
}

/// Options of `login-storm`.
#[derive(Debug, Args)]
struct StormArgs {
    /// Users (one terminal each), all logging in at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Storms per server binary (with several --server-bin: A B, B A, ... each a
    /// fresh server); the figures are printed side by side.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    reps: u64,
    #[command(flatten)]
    fleet: Fleet,
    #[command(flatten)]
    common: Common,
}

/// The population and worker processes of the scenarios that log in many sessions
/// (`login-storm`, `held`).
#[derive(Debug, Args)]
struct Fleet {
    /// Contacts per user (a random symmetric graph; about this many each).
    #[arg(long, default_value_t = 50)]
    contacts: usize,
    /// Worker processes holding the client sessions.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    procs: u64,
    /// How long to let the server settle before reading its memory, in ms.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
}

/// Options of `churn`.
#[derive(Debug, Args)]
struct ChurnArgs {
    /// Users (one terminal each; all in this process).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=19_000))]
    users: u64,
    /// Contacts per user.
    #[arg(long, default_value_t = 50)]
    contacts: usize,
    /// Changes per second (a third each: logout, login, capability change).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Steps of rising rates, comma-separated changes per second (instead of --rate):
    /// each runs for --secs; the run stops for a server after its first step whose
    /// push-latency p99 reached --p99-limit-ms.
    #[arg(long, value_delimiter = ',', conflicts_with = "sweep")]
    rates: Vec<f64>,
    /// A sweep with the default steps (250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000,
    /// 8000, 12000 changes/s); like --rates.
    #[arg(long)]
    sweep: bool,
    /// Run each step this many times (with several servers: A B, B A, ... each time);
    /// a sweep judges each rate by the medians of its repetitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    reps: u64,
    /// How long to make changes, in seconds, per step [default: 20, or 3 with
    /// --rates/--sweep].
    #[arg(long)]
    secs: Option<f64>,
    /// The push-latency p99 that ends a sweep and defines the capacity, ms.
    #[arg(long, default_value_t = churn::P99_LIMIT_MS)]
    p99_limit_ms: f64,
    /// Write an SVG plot of deliveries/s against push latency p50/p99, one line per
    /// server, to FILE.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Observers decode every frame as it arrives, during the window too (by default
    /// they hold the bytes read during a step's window, timestamped, and hand them to
    /// their clients after it, so that the tool costs little while the server is
    /// measured; every table is verified either way).
    #[arg(long)]
    eager: bool,
    /// The share of the users who make the changes, in percent (the others only
    /// watch, holding what they read all window long unless --eager); every table is
    /// verified either way.
    #[arg(long, default_value_t = 100.0)]
    actors_percent: f64,
    #[command(flatten)]
    common: Common,
}

/// Options of `held`.
#[derive(Debug, Args)]
struct HeldArgs {
    /// Numbers of online sessions to measure, comma-separated; MAX is as many as the
    /// open-file limit allows the server.
    #[arg(long, default_value = "1000,10000,MAX", value_delimiter = ',')]
    counts: Vec<String>,
    #[command(flatten)]
    fleet: Fleet,
    #[command(flatten)]
    common: Common,
}

/// Options of `crash`.
#[derive(Debug, Args)]
struct CrashArgs {
    /// Users (one terminal each; all in this process).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(2..=19_000))]
    users: u64,
    /// Contacts per user.
    #[arg(long, default_value_t = 10)]
    contacts: usize,
    /// Rounds; each ends with a SIGKILL of the server and a restart.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rounds: u64,
    /// Changes per second during a round (contact additions and removals, capability
    /// changes, logouts, logins).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Length of a round in milliseconds: the kill falls at a random point of its last
    /// four fifths.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    round_ms: u64,
    /// Contact changes sent at once right before each kill, so that some are in flight
    /// when it falls.
    #[arg(long, default_value_t = 20)]
    burst: u64,
    /// A deliberate defect of the verifier, to show its check can fail (`drop-ack`:
    /// it expects an acknowledged change that never happened).
    #[arg(long, value_enum, hide = true)]
    seed_fault: Option<crash::Fault>,
    #[command(flatten)]
    common: Common,
}

/// Options of `reconnect-storm`.
#[derive(Debug, Args)]
struct ReconnectArgs {
    /// Sessions whose connections are cut at once and must all resume (all in this
    /// process, one socket each).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=18_000))]
    sessions: u64,
    /// Contacts per user (a random symmetric graph; about this many each).
    #[arg(long, default_value_t = 15)]
    contacts: usize,
    /// Users that stay connected and make changes while the others are away, as a
    /// percentage of --sessions (at least one).
    #[arg(long, default_value_t = 5.0)]
    connected_percent: f64,
    /// `serve --max-accepts-per-second` of the server: the storm is throttled by it.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    max_accepts_per_second: u32,
    /// `serve --resume-grace-ms` of the server.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    resume_grace_ms: u64,
    /// `serve --resume-log-frames` of the server.
    #[arg(long, default_value_t = 32)]
    resume_log_frames: usize,
    /// How long the cut sessions stay away after the changes are made, in ms.
    #[arg(long, default_value_t = 200)]
    away_ms: u64,
    /// Back-off of the reconnecting sessions: the ceiling of the first random wait, ms.
    #[arg(long, default_value_t = 100)]
    backoff_base_ms: u64,
    /// Back-off: the largest ceiling, ms.
    #[arg(long, default_value_t = 10_000)]
    backoff_max_ms: u64,
    /// A deliberate defect of the tool, to show its check can fail (`skip-catchup`:
    /// one resumed session's catch-up never reaches its client).
    #[arg(long, value_enum, hide = true)]
    seed_fault: Option<reconnect::Fault>,
    #[command(flatten)]
    common: Common,
}

/// Options of `plot`.
#[derive(Debug, Args)]
struct PlotArgs {
    /// The churn reports (`--json` files).
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The p99 limit drawn across, ms.
    #[arg(long, default_value_t = churn::P99_LIMIT_MS)]
    p99_limit_ms: f64,
}

/// Options of `population`.
#[derive(Debug, Args)]
struct PopulationArgs {
    /// Users.
    #[arg(long)]
    users: usize,
    /// Contacts per user.
    #[arg(long, default_value_t = 50)]
    contacts: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    raise_nofile();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("precall-load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    // Sessions still open are dropped with the runtime, without waiting for them.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("precall-load: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    let load_at_start = report::loadavg();
    let (mut report, json) = match command {
        Command::Worker(args) => {
            worker::run(args).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Plot(args) => {
            let mut series = Vec::new();
            for path in &args.reports {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let report: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                series.extend(
                    plot::series_of_report(&report)
                        .with_context(|| format!("{}: not a churn report", path.display()))?,
                );
            }
            plot::write_svg(&args.out, &series, args.p99_limit_ms)?;
            println!("wrote {}", args.out.display());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Population(args) => {
            let pop = Population::generate(args.users, args.contacts, args.seed)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            pop.write_import(&mut out)?;
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::CallSetup(a) => {
            a.common.one_server("call-setup")?;
            (call_setup(&a).await?, a.common.json)
        }
        Command::LoginStorm(a) => (login_storm(&a).await?, a.common.json),
        Command::Churn(a) => (churn_run(&a).await?, a.common.json),
        Command::Held(a) => (held(&a).await?, a.common.json),
        Command::Crash(a) => {
            a.common.one_server("crash")?;
            (crash::run(&a).await?, a.common.json)
        }
        Command::ReconnectStorm(a) => {
            a.common.one_server("reconnect-storm")?;
            (reconnect::run(&a).await?, a.common.json)
        }
    };
    report.machine = report::machine();
    report.machine["loadavg_at_start"] = json!(load_at_start);
    print!("{}", report.human());
    std::io::stdout().flush()?;
    if let Some(path) = json {
        report.write_json(&path)?;
    }
    Ok(if report.verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

impl Common {
    /// The options of the server started, with the first --server-bin.
    fn server_opts(&self) -> ServerOpts {
        self.server_opts_for(self.server_bins.first().cloned())
    }

    fn server_opts_for(&self, bin: Option<PathBuf>) -> ServerOpts {
        ServerOpts {
            bin: bin.unwrap_or_else(serverproc::default_server_bin),
            argon2_m_kib: self.argon2_m_kib,
            argon2_t: self.argon2_t,
            idle_timeout_ms: self.idle_timeout_ms,
            queue_frames: self.queue_frames,
            log_filter: self.server_log.clone(),
            extra_args: Vec::new(),
        }
    }

    /// Refuses more than one --server-bin, or more than one --connect address
    /// (scenarios that measure one server process).
    fn one_server(&self, scenario: &str) -> Result<()> {
        if let Some(list) = &self.connect {
            if serverproc::parse_addrs(list)?.len() > 1 {
                bail!("{scenario} talks to one server process: give --connect one address");
            }
        }
        if self.server_bins.len() > 1 {
            bail!(
                "{scenario} measures one server: give --server-bin once (churn compares several)"
            );
        }
        Ok(())
    }

    /// The server for `pop`: started on a fresh store, or the one given.
    fn target(&self, pop: &Population, report_params: &mut serde_json::Value) -> Result<Target> {
        let target = match &self.connect {
            Some(addr) => Target::connect(addr, &self.server_pid)?,
            None => {
                let (t, took) = Target::spawn(&self.server_opts(), pop)?;
                report_params["import_s"] = json!(took.as_secs_f64());
                t
            }
        };
        report_params["argon2"] = json!({"m_kib": self.argon2_m_kib, "t": self.argon2_t});
        report_params["server"] =
            json!(self.connect.as_deref().unwrap_or("started by precall-load"));
        report_params["server_pid_known"] = json!(!target.pids.is_empty());
        Ok(target)
    }

    /// The server binaries to compare, with their labels: one per --server-bin (the
    /// default one if none). With --connect, the one server given (no binary).
    fn server_list(&self) -> Result<Vec<(String, Option<PathBuf>)>> {
        if self.connect.is_some() {
            if self.server_bins.len() > 1 {
                bail!("--connect measures the one server given: no second --server-bin");
            }
            let label = self
                .labels
                .first()
                .cloned()
                .unwrap_or_else(|| "server".into());
            return Ok(vec![(label, None)]);
        }
        let bins: Vec<Option<PathBuf>> = if self.server_bins.is_empty() {
            vec![None]
        } else {
            self.server_bins.iter().cloned().map(Some).collect()
        };
        if !self.labels.is_empty() && self.labels.len() != bins.len() {
            bail!(
                "{} --label for {} --server-bin: give one per binary or none",
                self.labels.len(),
                bins.len()
            );
        }
        let mut out: Vec<(String, Option<PathBuf>)> = Vec::new();
        for (i, bin) in bins.into_iter().enumerate() {
            let path = bin.clone().unwrap_or_else(serverproc::default_server_bin);
            let label = self
                .labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| default_label(&path, i));
            if out.iter().any(|(l, _)| *l == label) {
                bail!("two servers named {label:?}: give --label for each --server-bin");
            }
            out.push((label, bin));
        }
        Ok(out)
    }

    /// The server `bin` (of [`Common::server_list`]) for `pop`: started on a fresh
    /// store, or the one given with --connect. Says what it started in `described`.
    fn spawn_one(
        &self,
        label: &str,
        bin: &Option<PathBuf>,
        pop: &Population,
        described: &mut Vec<serde_json::Value>,
    ) -> Result<Target> {
        if let Some(addr) = &self.connect {
            return Target::connect(addr, &self.server_pid);
        }
        let opts = self.server_opts_for(bin.clone());
        let (t, took) = Target::spawn(&opts, pop)?;
        described.push(json!({
            "label": label,
            "bin": opts.bin.display().to_string(),
            "import_s": took.as_secs_f64(),
        }));
        Ok(t)
    }

    /// Parameters that say which servers were measured.
    fn describe(&self, params: &mut serde_json::Value, described: Vec<serde_json::Value>) {
        params["argon2"] = json!({"m_kib": self.argon2_m_kib, "t": self.argon2_t});
        params["server"] = json!(self.connect.as_deref().unwrap_or("started by precall-load"));
        params["server_pid_known"] = json!(self.connect.is_none() || !self.server_pid.is_empty());
        if !described.is_empty() {
            params["server_bins"] = json!(described);
        }
    }

    /// The servers to compare, with their labels: one per --server-bin (at least one),
    /// or the one given with --connect.
    fn targets(
        &self,
        pop: &Population,
        report_params: &mut serde_json::Value,
    ) -> Result<Vec<(String, Target)>> {
        let mut out = Vec::new();
        let mut described = Vec::new();
        for (label, bin) in self.server_list()? {
            let t = self.spawn_one(&label, &bin, pop, &mut described)?;
            out.push((label, t));
        }
        self.describe(report_params, described);
        Ok(out)
    }

    fn wait(&self) -> Duration {
        Duration::from_secs(self.wait_s)
    }
}

async fn call_setup(a: &CallSetupArgs) -> Result<Report> {
    if !(a.delay_ms.is_finite() && (0.0..=10_000.0).contains(&a.delay_ms)) {
        bail!("--delay-ms must be between 0 and 10000");
    }
    let pop = Arc::new(Population::generate(2, 1, a.common.seed)?);
    let mut extra = json!({});
    let mut target = a.common.target(&pop, &mut extra)?;
    let delay = Duration::from_secs_f64(a.delay_ms / 1000.0);
    let calls = usize::try_from(a.calls).context("--calls")?;
    let result = callsetup::run(&target, pop, calls, delay).await;
    if result.is_err() {
        eprintln!("{}", target.log_tail());
    }
    let mut report = result?;
    merge(&mut report.params, extra);
    target.stop();
    Ok(report)
}

async fn login_storm(a: &StormArgs) -> Result<Report> {
    if a.common.server_list()?.len() > 1 || a.reps > 1 {
        return login_storms(a).await;
    }
    let users = usize::try_from(a.users).context("--users")?;
    let procs = usize::try_from(a.fleet.procs).context("--procs")?;
    let pop = Population::generate(users, a.fleet.contacts, a.common.seed)?;
    let mut params = json!({
        "users": users,
        "contacts_requested": a.fleet.contacts,
        "contacts_per_user": pop.contact_entries() as f64 / users as f64,
        "procs": procs,
        "settle_ms": a.fleet.settle_ms,
        "seed": a.common.seed,
    });
    let mut target = a.common.target(&pop, &mut params)?;
    drop(pop);
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let s = storm::run(
        &exe,
        &mut target,
        users,
        a.fleet.contacts,
        a.common.seed,
        procs,
        Duration::from_millis(a.fleet.settle_ms),
        a.common.wait(),
    )
    .await?;
    let mut r = Report::new("login-storm", params);
    s.verification(&mut r);
    let p = &s.complete_after_last;
    r.row(["metric", "value"]);
    r.row([
        "logins (failed)".to_string(),
        format!("{} ({})", s.logged_in, s.failed),
    ]);
    r.row([
        "first connect -> last login_ok".to_string(),
        format!("{:.1} ms", s.login_span_us as f64 / 1000.0),
    ]);
    r.row([
        "logins admitted/s".to_string(),
        format!("{:.0}", s.logins_per_s()),
    ]);
    r.row([
        "accept-queue overflows / SYN retransmits".to_string(),
        format!("{} / {}", s.tcp.listen_overflows, s.tcp.syn_retransmits),
    ]);
    r.row([
        "connect time p50 / p99 / max".to_string(),
        stats_ms(&s.connect_latency),
    ]);
    r.row([
        "login latency p50 / p99 / max".to_string(),
        stats_ms(&s.login_latency),
    ]);
    r.row([
        "table complete after last login p50 / p99 / max".to_string(),
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            p.p50 / 1000.0,
            p.p99 / 1000.0,
            p.max / 1000.0
        ),
    ]);
    r.row([
        "presence deliveries (online messages)".to_string(),
        format!(
            "{} (expected entries {})",
            s.online_msgs, s.expected_entries
        ),
    ]);
    r.row([
        "tables verified".to_string(),
        format!(
            "{} ({} mismatches, {} incomplete)",
            s.verdict.checked, s.verdict.mismatches, s.incomplete
        ),
    ]);
    let (peak, steady) = (s.settled.map(|m| m.hwm_kib), s.settled.map(|m| m.rss_kib));
    r.row([
        "server RSS baseline / peak / steady".to_string(),
        format!(
            "{} / {} / {}",
            mib(s.baseline.map(|m| m.rss_kib)),
            mib(peak),
            mib(steady)
        ),
    ]);
    let ratio = match (peak, steady) {
        (Some(p), Some(st)) if st > 0 => Some(p as f64 / st as f64),
        _ => None,
    };
    r.row([
        "peak / steady".to_string(),
        ratio.map_or("-".into(), |x| format!("{x:.2}")),
    ]);
    r.row([
        "argon2".to_string(),
        format!("m={} KiB t={}", a.common.argon2_m_kib, a.common.argon2_t),
    ]);
    r.row([
        "CPU measured over".to_string(),
        format!(
            "{:.2} s (start barrier to every table complete; tool = coordinator + workers)",
            s.cpu.wall_s
        ),
    ]);
    for row in s.cpu.rows(s.logged_in as u64, "login") {
        r.row(row);
    }
    r.row([
        "server CPU per presence delivery (online)".to_string(),
        s.cpu
            .server_us_per(s.online_msgs)
            .map_or("-".into(), |u| format!("{:.2} µs", u[2])),
    ]);
    r.figures = s.json();
    r.figures["peak_over_steady"] = json!(ratio);
    r.target(
        "table complete p99 after last login",
        "<= 5 s",
        format!("{:.3} s", p.p99 / 1e6),
        p.n > 0 && p.p99 <= 5e6,
    );
    r.target("failed logins", "0", s.failed.to_string(), s.failed == 0);
    r.target(
        "server peak / steady RSS",
        "<= 1.5",
        ratio.map_or("unknown".into(), |x| format!("{x:.2}")),
        ratio.is_some_and(|x| x <= 1.5),
    );
    Ok(r)
}

/// `login-storm` repeated (`--reps`) and/or over several server binaries: a compact
/// row per storm, and the figures side by side.
async fn login_storms(a: &StormArgs) -> Result<Report> {
    let users = usize::try_from(a.users).context("--users")?;
    let procs = usize::try_from(a.fleet.procs).context("--procs")?;
    let reps = usize::try_from(a.reps).context("--reps")?;
    let servers = a.common.server_list()?;
    if a.common.connect.is_some() && reps > 1 {
        bail!("with --connect, one storm (the server cannot be restarted between storms)");
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut r = Report::new(
        "login-storm",
        json!({
            "users": users,
            "contacts_requested": a.fleet.contacts,
            "procs": procs,
            "settle_ms": a.fleet.settle_ms,
            "seed": a.common.seed,
            "reps": reps,
            "servers": servers.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(),
        }),
    );
    r.row([
        "server",
        "rep",
        "logins/s",
        "login p99",
        "table complete p99",
        "server µs/login usr/sys/total",
        "tool µs/login",
        "server peak RSS",
        "verified",
    ]);
    let mut runs = Vec::new();
    let mut described = Vec::new();
    // Per repetition, per server: logins/s, complete p99 (ms), server µs/login, peak KiB.
    let mut figs: Vec<Vec<[Option<f64>; 4]>> = Vec::new();
    let mut worst_p99 = vec![Some(0.0f64); servers.len()];
    let mut failed = vec![0usize; servers.len()];
    for rep in 0..reps {
        let mut row = vec![[None; 4]; servers.len()];
        for i in alternate(servers.len(), rep) {
            let (label, bin) = &servers[i];
            let pop = Population::generate(users, a.fleet.contacts, a.common.seed)?;
            let mut target = a.common.spawn_one(label, bin, &pop, &mut described)?;
            drop(pop);
            let s = storm::run(
                &exe,
                &mut target,
                users,
                a.fleet.contacts,
                a.common.seed,
                procs,
                Duration::from_millis(a.fleet.settle_ms),
                a.common.wait(),
            )
            .await?;
            s.verification(&mut r);
            let p = &s.complete_after_last;
            let server_us = s.cpu.server_us_per(s.logged_in as u64);
            row[i] = [
                Some(s.logins_per_s()),
                (p.n > 0).then_some(p.p99 / 1000.0),
                server_us.map(|u| u[2]),
                s.settled.map(|m| m.hwm_kib as f64),
            ];
            worst_p99[i] = match (worst_p99[i], row[i][1]) {
                (Some(w), Some(x)) => Some(w.max(x)),
                _ => None,
            };
            failed[i] += s.failed;
            r.row([
                label.clone(),
                rep.to_string(),
                format!("{:.0}", s.logins_per_s()),
                format!("{:.1} ms", s.login_latency.p99 / 1000.0),
                format!("{:.1} ms", p.p99 / 1000.0),
                server_us.map_or("-".into(), |u| {
                    format!("{:.0} / {:.0} / {:.0}", u[0], u[1], u[2])
                }),
                s.cpu
                    .tool_us_per(s.logged_in as u64)
                    .map_or("-".into(), |t| format!("{t:.0}")),
                mib(s.settled.map(|m| m.hwm_kib)),
                s.ok().to_string(),
            ]);
            let mut f = s.json();
            f["server"] = json!(label);
            f["rep"] = json!(rep);
            runs.push(f);
        }
        figs.push(row);
    }
    a.common.describe(&mut r.params, described);
    if servers.len() > 1 {
        let labels: Vec<&str> = servers.iter().map(|(l, _)| l.as_str()).collect();
        let names = [
            "logins/s",
            "complete p99 ms",
            "server µs/login",
            "peak RSS KiB",
        ];
        let mut head = vec!["rep".to_string()];
        for m in names {
            head.extend(labels.iter().map(|l| format!("{m} {l}")));
            head.extend(labels[1..].iter().map(|l| format!("{l} / {}", labels[0])));
        }
        let mut rows = vec![head];
        for (rep, row) in figs.iter().enumerate() {
            let mut cells = vec![rep.to_string()];
            for m in 0..names.len() {
                cells.extend(
                    row.iter()
                        .map(|v| v[m].map_or("-".into(), |x| format!("{x:.1}"))),
                );
                cells.extend(row[1..].iter().map(|v| ratio(row[0][m], v[m])));
            }
            rows.push(cells);
        }
        r.table("side by side (ratio: each server over the first)", rows);
    }
    for (i, (label, _)) in servers.iter().enumerate() {
        let prefix = if servers.len() > 1 {
            format!("{label}: ")
        } else {
            String::new()
        };
        r.target(
            format!("{prefix}table complete p99 after last login (worst storm)"),
            "<= 5 s",
            worst_p99[i].map_or("unknown".into(), |p| format!("{:.3} s", p / 1000.0)),
            worst_p99[i].is_some_and(|p| p <= 5000.0),
        );
        r.target(
            format!("{prefix}failed logins"),
            "0",
            failed[i].to_string(),
            failed[i] == 0,
        );
    }
    r.figures = json!({ "runs": runs });
    Ok(r)
}

/// The default steps of `churn --sweep`, changes per second.
const SWEEP_RATES: [f64; 11] = [
    250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0, 12000.0,
];

async fn churn_run(a: &ChurnArgs) -> Result<Report> {
    let users = usize::try_from(a.users).context("--users")?;
    let sweeping = a.sweep || !a.rates.is_empty();
    let rates: Vec<f64> = if a.sweep {
        SWEEP_RATES.to_vec()
    } else if a.rates.is_empty() {
        vec![a.rate]
    } else {
        a.rates.clone()
    };
    let secs = a.secs.unwrap_or(if sweeping { 3.0 } else { 20.0 });
    let valid = rates.iter().all(|r| r.is_finite() && *r > 0.0) && secs.is_finite() && secs >= 0.0;
    if !valid {
        bail!("every rate must be positive and --secs not negative");
    }
    if !(a.actors_percent.is_finite() && a.actors_percent > 0.0 && a.actors_percent <= 100.0) {
        bail!("--actors-percent must be in (0, 100]");
    }
    if !(a.p99_limit_ms.is_finite() && a.p99_limit_ms > 0.0) {
        bail!("--p99-limit-ms must be positive");
    }
    let servers = a.common.server_bins.len().max(1);
    let room = nofile_limit().map_or(19_000, |n| n.saturating_sub(300) as usize);
    if users * servers > room {
        bail!("{users} users on each of {servers} servers need more sockets than the open-file limit allows ({room})");
    }
    let reps = usize::try_from(a.reps).context("--reps")?;
    let rates: Vec<f64> = rates
        .iter()
        .flat_map(|&r| std::iter::repeat_n(r, reps))
        .collect();
    let pop = Arc::new(Population::generate(users, a.contacts, a.common.seed)?);
    let mut extra = json!({});
    let mut targets = a.common.targets(&pop, &mut extra)?;
    let params = churn::Params {
        rates,
        secs,
        wait: a.common.wait(),
        stop_at_p99_ms: sweeping.then_some(a.p99_limit_ms),
        plot: a.plot.clone(),
        reps,
        actors: ((users as f64 * a.actors_percent / 100.0).ceil() as usize).clamp(1, users),
        hold: !a.eager,
    };
    let servers: Vec<churn::Server<'_>> = targets
        .iter()
        .map(|(label, target)| churn::Server {
            label: label.clone(),
            target,
        })
        .collect();
    let result = churn::run(&servers, pop, &params).await;
    if result.is_err() {
        for (label, t) in &targets {
            eprintln!("{label}: {}", t.log_tail());
        }
    }
    let mut report = result?;
    merge(&mut report.params, extra);
    report.params["reps"] = json!(reps);
    report.params["observers_hold_bytes"] = json!(!a.eager);
    for (_, t) in &mut targets {
        t.stop();
    }
    Ok(report)
}

/// A server binary's name in the report: the directory holding its `target`
/// directory (a worktree's name), else its path; `#N` if neither says anything.
fn default_label(bin: &std::path::Path, i: usize) -> String {
    let parts: Vec<&std::ffi::OsStr> = bin.iter().collect();
    parts
        .iter()
        .rposition(|p| *p == "target")
        .and_then(|t| t.checked_sub(1))
        .and_then(|k| parts.get(k))
        .and_then(|p| p.to_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            let s = bin.display().to_string();
            if s.is_empty() {
                format!("#{}", i + 1)
            } else {
                s
            }
        })
}

async fn held(a: &HeldArgs) -> Result<Report> {
    let max = nofile_limit().map_or(19_000, |n| n.saturating_sub(300) as usize);
    let mut counts = Vec::new();
    for c in &a.counts {
        let n = if c.eq_ignore_ascii_case("max") {
            max
        } else {
            c.trim()
                .parse::<usize>()
                .with_context(|| format!("--counts: {c:?} is not a number or MAX"))?
        };
        if n == 0 || n > max {
            bail!("--counts: {n} is not in 1..={max} (the open-file limit)");
        }
        counts.push(n);
    }
    if a.common.connect.is_some() && counts.len() != 1 {
        bail!("with --connect, give one count (the server cannot be restarted between counts)");
    }
    let procs = usize::try_from(a.fleet.procs).context("--procs")?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let servers = a.common.server_list()?;
    let mut r = Report::new(
        "held",
        json!({"counts": counts, "contacts_requested": a.fleet.contacts, "procs": procs, "settle_ms": a.fleet.settle_ms, "seed": a.common.seed}),
    );
    r.row([
        "server",
        "online terminals",
        "contacts/user",
        "baseline RSS",
        "settled RSS",
        "peak RSS",
        "bytes per terminal",
        "server CPU per login",
        "verified",
    ]);
    let mut figures = Vec::new();
    let mut described = Vec::new();
    // Per count, each server in turn (the order alternating from count to count).
    let mut per_terminal: Vec<Vec<Option<f64>>> = Vec::new();
    for (ci, &n) in counts.iter().enumerate() {
        let mut row = vec![None; servers.len()];
        for i in alternate(servers.len(), ci) {
            let (label, bin) = &servers[i];
            let pop = Population::generate(n, a.fleet.contacts, a.common.seed)?;
            let degree = pop.contact_entries() as f64 / n as f64;
            let mut target = a.common.spawn_one(label, bin, &pop, &mut described)?;
            drop(pop);
            let s = storm::run(
                &exe,
                &mut target,
                n,
                a.fleet.contacts,
                a.common.seed,
                procs,
                Duration::from_millis(a.fleet.settle_ms),
                a.common.wait(),
            )
            .await?;
            s.verification(&mut r);
            let per = match (s.baseline, s.settled) {
                (Some(b), Some(m)) if s.logged_in > 0 => {
                    Some(m.rss_kib.saturating_sub(b.rss_kib) as f64 * 1024.0 / s.logged_in as f64)
                }
                _ => None,
            };
            row[i] = per;
            r.row([
                label.clone(),
                s.logged_in.to_string(),
                format!("{degree:.1}"),
                mib(s.baseline.map(|m| m.rss_kib)),
                mib(s.settled.map(|m| m.rss_kib)),
                mib(s.settled.map(|m| m.hwm_kib)),
                per.map_or("-".into(), |b| format!("{b:.0}")),
                s.cpu
                    .server_us_per(s.logged_in as u64)
                    .map_or("-".into(), |u| format!("{:.0} µs", u[2])),
                s.ok().to_string(),
            ]);
            let prefix = if servers.len() > 1 {
                format!("{label}: ")
            } else {
                String::new()
            };
            r.target(
                format!("{prefix}RSS per idle terminal at {n}"),
                "<= 8192 B",
                per.map_or("unknown".into(), |b| format!("{b:.0} B")),
                per.is_some_and(|b| b <= 8192.0),
            );
            let mut f = s.json();
            f["server"] = json!(label);
            f["count"] = json!(n);
            f["contacts_per_user"] = json!(degree);
            f["bytes_per_terminal"] = json!(per);
            figures.push(f);
        }
        per_terminal.push(row);
    }
    a.common.describe(&mut r.params, described);
    if servers.len() > 1 {
        let labels: Vec<&str> = servers.iter().map(|(l, _)| l.as_str()).collect();
        let mut rows = vec![std::iter::once("online terminals".to_string())
            .chain(labels.iter().map(|l| format!("bytes per terminal {l}")))
            .chain(labels[1..].iter().map(|l| format!("{l} / {}", labels[0])))
            .collect::<Vec<_>>()];
        for (n, row) in counts.iter().zip(&per_terminal) {
            rows.push(
                std::iter::once(n.to_string())
                    .chain(
                        row.iter()
                            .map(|b| b.map_or("-".into(), |b| format!("{b:.0}"))),
                    )
                    .chain(row[1..].iter().map(|b| ratio(row[0], *b)))
                    .collect(),
            );
        }
        r.table("side by side (ratio: each server over the first)", rows);
    }
    r.figures = json!({ "counts": figures });
    Ok(r)
}

/// The order in which `n` servers run at step `k`: A B C, then C B A, and so on.
fn alternate(n: usize, k: usize) -> Vec<usize> {
    if k % 2 == 0 {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

/// `b / a` with three decimals, or `-`.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.3}", b / a),
        _ => "-".into(),
    }
}

fn stats_ms(s: &Stats) -> String {
    format!(
        "{:.1} / {:.1} / {:.1} ms",
        s.p50 / 1000.0,
        s.p99 / 1000.0,
        s.max / 1000.0
    )
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// Copies the members of `extra` into `params`.
fn merge(params: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(p), serde_json::Value::Object(e)) = (params.as_object_mut(), extra) {
        p.extend(e);
    }
}

/// The soft limit on open files, from `/proc/self/limits`.
pub fn nofile_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Raises the soft limit on open files to the hard limit (each session is a socket;
/// the server started inherits the limit too).
#[allow(unsafe_code)]
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed, which
    // lives for both calls.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if ok && lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            tracing::warn!("cannot raise the open-file limit");
        }
    }
}
