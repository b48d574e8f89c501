//! `call-setup`: the three ways to set a call up, over the same server and the same
//! emulated network (spec sections 10.1, 10.6, 10.7).
//!
//! Two users who list each other log in, each through its own delaying relay
//! ([`crate::relay`]): every byte between a client and the server takes `delay` in
//! each direction, so one end-to-end round trip (caller → server → callee → server →
//! caller) costs `4 × delay`. The caller then places `calls` calls of each method,
//! interleaved (fast, prior art, query first, fast, ...) so that noise hits all three
//! alike; the callee's task answers every call at once. For each call the tool records
//! at the caller the time from the command to `CallEstablished`, the caller's
//! request/answer exchanges on the critical path, its messages, and the capability
//! bytes carried by every message of the set-up at both ends (decoded after the call,
//! so the accounting costs nothing on the critical path).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use precall_client::{Clock, Driver, Event, Login, Tap};
use precall_protocol::client::SetupPath;
use precall_protocol::codec::{
    decode_message, encode_payload, FrameDecoder, DEFAULT_MAX_FRAME, HEADER_LEN,
};
use precall_protocol::message::WireMessage;
use precall_protocol::{
    CallId, CallParams, Client, ClientConfig, ClientEvent, ClientMessage, Endpoint, ServerMessage,
    SessionId,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};

use crate::population::Population;
use crate::relay::Relay;
use crate::report::{ms, Report, Stats};
use crate::serverproc::Target;
use crate::verify::{Checker, DirEntry, Directory};

/// Longest wait for any one step (a login, a call, an end of call).
const STEP: Duration = Duration::from_secs(10);

/// The three set-up methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// `place_call`: the pre-computed parameters, fingerprints only.
    Fast,
    /// `place_call_exchanging_capabilities`: capabilities in the request and the answer.
    PriorArt,
    /// `query_caps`, wait for `CapsResult`, then the prior-art call.
    QueryFirst,
}

impl Method {
    const ALL: [Method; 3] = [Method::Fast, Method::PriorArt, Method::QueryFirst];

    fn name(self) -> &'static str {
        match self {
            Method::Fast => "fast path (a)",
            Method::PriorArt => "prior art (b)",
            Method::QueryFirst => "query first (c)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Method::Fast => "fast",
            Method::PriorArt => "prior_art",
            Method::QueryFirst => "query_first",
        }
    }
}

/// One frame seen during a set-up, kept for the accounting after the call.
struct Seen {
    /// Whether the caller (rather than the callee) saw it.
    caller: bool,
    /// Whether it was sent (rather than received).
    sent: bool,
    /// Its payload.
    payload: Vec<u8>,
}

/// Frames seen by both ends while a set-up is measured.
#[derive(Default)]
struct Ledger {
    measuring: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

impl Ledger {
    fn push(&self, seen: Seen) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(seen);
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(
            &mut *self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// What one end records of its frames while a set-up is measured (the JSON is decoded
/// after the call, so the accounting costs nothing on the critical path).
struct LedgerTap {
    caller: bool,
    /// The caller's switch (the callee's frames go to the ledger while the ledger is
    /// measuring).
    record: Arc<AtomicBool>,
    ledger: Arc<Ledger>,
    /// Framing only (a copy of the bytes the client receives).
    rx_frames: FrameDecoder,
}

impl LedgerTap {
    fn recording(&self) -> bool {
        if self.caller {
            self.record.load(Ordering::Acquire)
        } else {
            self.ledger.measuring.load(Ordering::Acquire)
        }
    }
}

impl Tap for LedgerTap {
    fn sent(&mut self, frame: &[u8]) {
        if self.recording() {
            self.ledger.push(Seen {
                caller: self.caller,
                sent: true,
                payload: frame[HEADER_LEN..].to_vec(),
            });
        }
    }

    fn received<'a>(&mut self, data: &'a [u8]) -> Cow<'a, [u8]> {
        let mut rest = data;
        while let Ok(Some(payload)) = self.rx_frames.decode(&mut rest) {
            if self.recording() {
                self.ledger.push(Seen {
                    caller: self.caller,
                    sent: false,
                    payload,
                });
            }
        }
        Cow::Borrowed(data)
    }
}

/// One client on the shared driver, driven step by step.
struct Link {
    driver: Driver,
    /// Whether the caller's frames go to the ledger now.
    record: Arc<AtomicBool>,
}

impl Link {
    async fn login(
        addr: std::net::SocketAddr,
        pop: &Population,
        user: usize,
        caller: bool,
        ledger: Arc<Ledger>,
    ) -> Result<(Self, SessionId)> {
        let record = Arc::new(AtomicBool::new(false));
        let login = Login {
            user: pop.name(user),
            password: pop.password(user),
            with: pop.login_with(user),
        };
        let client = Client::new(ClientConfig::default());
        let mut driver = Driver::new(client, Clock::new(), addr.to_string()).with_login(login);
        driver.set_tap(Some(Box::new(LedgerTap {
            caller,
            record: record.clone(),
            ledger,
            rx_frames: FrameDecoder::new(DEFAULT_MAX_FRAME),
        })));
        driver.connect().await.map_err(|e| anyhow!(e))?;
        driver.login().map_err(|e| anyhow!("login: {e}"))?;
        let mut link = Self { driver, record };
        link.send().await?;
        let deadline = Instant::now() + STEP;
        let mut session = None;
        loop {
            match link.next_event(deadline).await? {
                ClientEvent::LoggedIn { session: s } => session = Some(s),
                ClientEvent::Synced => break,
                ClientEvent::LoggedOut => bail!("{}: login failed", pop.name(user)),
                _ => {}
            }
        }
        let session = session.ok_or_else(|| anyhow!("synced before logged in"))?;
        Ok((link, session))
    }

    fn client(&mut self) -> &mut Client {
        self.driver.client_mut()
    }

    /// Writes every queued frame; returns how many.
    async fn send(&mut self) -> Result<usize> {
        self.driver
            .flush()
            .await
            .map_err(|e| anyhow!("the connection to the server failed: {e}"))
    }

    /// The next event, reading as needed (automatic answers of the core, caps_reply
    /// and call_retry, go out at once).
    async fn next_event(&mut self, deadline: Instant) -> Result<ClientEvent> {
        loop {
            match timeout_at(deadline, self.driver.next()).await {
                Err(_) => bail!("timed out"),
                Ok(None) => bail!("the connection to the server is gone"),
                Ok(Some(Event::Client(ev))) => return Ok(ev),
                Ok(Some(Event::Disconnected(why))) => {
                    bail!("the connection to the server failed: {why}")
                }
                Ok(Some(_)) => {}
            }
        }
    }

    fn check(&self, pop: &Population, dir: &Directory, user: usize) -> Result<(), String> {
        Checker::default().check(pop, dir, user, self.driver.client(), true)
    }
}

/// What the callee's task tells the caller.
enum CalleeNote {
    /// The callee accepted a call with these parameters.
    Accepted(CallId, CallParams),
    /// A call ended at the callee.
    Ended(CallId),
    /// The callee's session failed.
    Failed(String),
}

/// What the caller asks the callee's task.
enum CalleeCmd {
    /// Check the callee's table.
    Check(Directory, oneshot::Sender<Result<(), String>>),
}

/// The callee: answers every call at once, reports accepted and ended calls, checks
/// its table on request. Frames go to the ledger while the ledger is measuring.
async fn callee_task(
    mut link: Link,
    pop: Arc<Population>,
    user: usize,
    notes: mpsc::UnboundedSender<CalleeNote>,
    mut cmds: mpsc::UnboundedReceiver<CalleeCmd>,
) {
    let result: Result<()> = async {
        loop {
            tokio::select! {
                ev = link.next_event(Instant::now() + Duration::from_secs(3600)) => match ev? {
                    ClientEvent::IncomingCall { call, .. } => {
                        let now = link.driver.clock().now();
                        link.client()
                            .answer(call, true, now)
                            .map_err(|e| anyhow!("answer: {e}"))?;
                        link.send().await?;
                    }
                    ClientEvent::CallEstablished { call, params, .. } => {
                        let _ = notes.send(CalleeNote::Accepted(call, params));
                    }
                    ClientEvent::CallEnded { call, .. } => {
                        let _ = notes.send(CalleeNote::Ended(call));
                    }
                    ClientEvent::Violation(v) => bail!("violation at the callee: {v}"),
                    ClientEvent::LoggedOut => bail!("the callee's session ended"),
                    _ => {}
                },
                cmd = cmds.recv() => match cmd {
                    Some(CalleeCmd::Check(dir, reply)) => {
                        let _ = reply.send(link.check(&pop, &dir, user));
                    }
                    None => return Ok(()),
                },
            }
        }
    }
    .await;
    if let Err(e) = result {
        let _ = notes.send(CalleeNote::Failed(format!("{e:#}")));
    }
}

/// One measured call.
struct Sample {
    setup_us: u64,
    /// Request/answer exchanges of the caller on the critical path.
    rounds: usize,
    /// Messages the caller sent, and received, before the call was established.
    sent: usize,
    received: usize,
    /// Capability bytes in every message of the set-up, both ends, both directions.
    cap_bytes: usize,
    path: SetupPath,
}

/// The call-setup scenario.
pub async fn run(
    target: &Target,
    pop: Arc<Population>,
    calls: usize,
    delay: Duration,
) -> Result<Report> {
    let (caller_user, callee_user) = (0usize, 1usize);
    let ledger = Arc::new(Ledger::default());
    let relay_a = Relay::start(target.addr(), delay)?;
    let relay_b = Relay::start(target.addr(), delay)?;
    let (mut caller, caller_session) =
        Link::login(relay_a.addr, &pop, caller_user, true, ledger.clone()).await?;
    let (callee, callee_session) =
        Link::login(relay_b.addr, &pop, callee_user, false, ledger.clone()).await?;
    let caller_fp = caller
        .client()
        .capabilities()
        .ok_or_else(|| anyhow!("caller has no capabilities"))?
        .fingerprint();
    let callee_fp = callee
        .driver
        .client()
        .capabilities()
        .ok_or_else(|| anyhow!("callee has no capabilities"))?
        .fingerprint();
    let dir = Directory::from_entries([
        DirEntry {
            user: 0,
            session: caller_session,
            fp: caller_fp,
        },
        DirEntry {
            user: 1,
            session: callee_session,
            fp: callee_fp,
        },
    ]);
    let (note_tx, mut notes) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    tokio::spawn(callee_task(
        callee,
        pop.clone(),
        callee_user,
        note_tx,
        cmd_rx,
    ));

    // The callee logged in second: its `online` push reaches the caller after the
    // caller's login. Wait for it.
    let deadline = Instant::now() + STEP;
    let callee_name = pop.name(callee_user);
    while !caller.client().peers().any(|(e, _)| e.user == callee_name) {
        caller
            .next_event(deadline)
            .await
            .context("waiting for the callee's online push")?;
    }
    while caller.driver.poll().is_some() {}
    let mut report = Report::new(
        "call-setup",
        json!({"calls": calls, "delay_ms_one_way": delay.as_secs_f64() * 1000.0, "seed": pop.seed}),
    );
    // Verification point 1: both tables exact after login.
    verify_tables(
        &mut report,
        &caller,
        &pop,
        &dir,
        caller_user,
        &cmd_tx,
        "after login",
    )
    .await?;

    // The caller pays one set-up before measuring (warms both ends' caches).
    let callee_ep = caller
        .client()
        .peers()
        .map(|(e, _)| e.clone())
        .find(|e| e.user == pop.name(callee_user))
        .ok_or_else(|| anyhow!("the callee is not in the caller's table"))?;
    one_call(
        &mut caller,
        &ledger,
        &mut notes,
        &callee_ep,
        Method::Fast,
        &mut report,
    )
    .await?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for i in 0..calls {
        for (m, method) in Method::ALL.into_iter().enumerate() {
            let s = one_call(
                &mut caller,
                &ledger,
                &mut notes,
                &callee_ep,
                method,
                &mut report,
            )
            .await
            .with_context(|| format!("call {i} ({})", method.name()))?;
            samples[m].push(s);
        }
    }
    // Verification point 2: the tables are still exact after the calls.
    verify_tables(
        &mut report,
        &caller,
        &pop,
        &dir,
        caller_user,
        &cmd_tx,
        "after the calls",
    )
    .await?;
    drop(cmd_tx);
    summarise(&mut report, &samples, delay);
    Ok(report)
}

async fn verify_tables(
    report: &mut Report,
    caller: &Link,
    pop: &Population,
    dir: &Directory,
    caller_user: usize,
    callee: &mpsc::UnboundedSender<CalleeCmd>,
    when: &str,
) -> Result<()> {
    let (tx, rx) = oneshot::channel();
    callee
        .send(CalleeCmd::Check(dir.clone(), tx))
        .map_err(|_| anyhow!("the callee's task is gone"))?;
    let callee_result = timeout_at(Instant::now() + STEP, rx)
        .await
        .context("the callee did not answer")?
        .context("the callee's task is gone")?;
    for r in [caller.check(pop, dir, caller_user), callee_result] {
        if let Err(e) = r {
            report.verified = false;
            report.mismatches += 1;
            report.note(format!("table mismatch {when}: {e}"));
        }
    }
    Ok(())
}

/// Places one call with `method`, waits until it is established, hangs up and waits for
/// the callee to see the end.
async fn one_call(
    caller: &mut Link,
    ledger: &Ledger,
    notes: &mut mpsc::UnboundedReceiver<CalleeNote>,
    callee: &Endpoint,
    method: Method,
    report: &mut Report,
) -> Result<Sample> {
    ledger.take();
    ledger.measuring.store(true, Ordering::Release);
    caller.record.store(true, Ordering::Release);
    let deadline = Instant::now() + STEP;
    let t0 = Instant::now();
    let now = caller.driver.clock().now();
    let placed = match method {
        Method::Fast => caller.client().place_call(callee, now),
        Method::PriorArt => caller
            .client()
            .place_call_exchanging_capabilities(callee, now),
        Method::QueryFirst => caller.client().query_caps(callee, now),
    };
    placed.map_err(|e| anyhow!("{}: {e}", method.name()))?;
    let mut rounds = usize::from(caller.send().await? > 0);
    let (call, params, path, t1) = loop {
        match caller.next_event(deadline).await? {
            ClientEvent::CapsResult { .. } if method == Method::QueryFirst => {
                let now = caller.driver.clock().now();
                caller
                    .client()
                    .place_call_exchanging_capabilities(callee, now)
                    .map_err(|e| anyhow!("call after the query: {e}"))?;
                rounds += usize::from(caller.send().await? > 0);
            }
            ClientEvent::CallEstablished {
                call,
                params,
                path,
                media: _,
            } => {
                break (call, params, path, Instant::now());
            }
            ev @ (ClientEvent::CallFailed { .. }
            | ClientEvent::CallEnded { .. }
            | ClientEvent::ServerError { .. }
            | ClientEvent::Violation(_)
            | ClientEvent::LoggedOut) => bail!("set-up failed: {ev:?}"),
            _ => {}
        }
    };
    caller.record.store(false, Ordering::Release);
    let now = caller.driver.clock().now();
    caller
        .client()
        .hangup(call, now)
        .map_err(|e| anyhow!("hangup: {e}"))?;
    caller.send().await?;
    let mut callee_params = None;
    loop {
        let note = timeout_at(deadline, notes.recv())
            .await
            .context("the callee did not see the call end")?
            .ok_or_else(|| anyhow!("the callee's task is gone"))?;
        match note {
            CalleeNote::Accepted(c, p) if c == call => callee_params = Some(p),
            CalleeNote::Ended(c) if c == call => break,
            CalleeNote::Failed(why) => bail!("callee: {why}"),
            _ => {}
        }
    }
    ledger.measuring.store(false, Ordering::Release);
    // INV-CALL-AGREE: the callee's parameters mirror the caller's.
    if callee_params != Some(params.mirrored()) {
        report.verified = false;
        report.mismatches += 1;
        report.note(format!(
            "{}: call {call}: the ends disagree on parameters",
            method.name()
        ));
    }
    let (mut sent, mut received, mut cap_bytes) = (0, 0, 0);
    for seen in ledger.take() {
        let caps = if seen.sent {
            decode_message::<ClientMessage>(&seen.payload)
                .ok()
                .and_then(|m| m.call_capabilities().map(|c| encode_payload(c).len()))
        } else {
            decode_message::<ServerMessage>(&seen.payload)
                .ok()
                .and_then(|m| m.call_capabilities().map(|c| encode_payload(c).len()))
        };
        cap_bytes += caps.unwrap_or(0);
        if seen.caller {
            if seen.sent {
                sent += 1;
            } else {
                received += 1;
            }
        }
    }
    Ok(Sample {
        setup_us: crate::worker::duration_us(t1.saturating_duration_since(t0)),
        rounds,
        sent,
        received,
        cap_bytes,
        path,
    })
}

/// `lo` or `lo–hi` if the values vary.
fn range(values: impl Iterator<Item = usize>) -> (String, usize, usize) {
    let v: Vec<usize> = values.collect();
    let lo = v.iter().copied().min().unwrap_or(0);
    let hi = v.iter().copied().max().unwrap_or(0);
    let text = if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    };
    (text, lo, hi)
}

fn summarise(report: &mut Report, samples: &[Vec<Sample>], delay: Duration) {
    let rtt_us = delay.as_secs_f64() * 4e6;
    report.row([
        "method",
        "median ms",
        "p99 ms",
        "mean ms",
        "min ms",
        "max ms",
        "round trips",
        "RTTs (median/4D)",
        "caller msgs sent/recv",
        "cap bytes/call",
        "path",
    ]);
    let mut figures = serde_json::Map::new();
    let mut medians = [0.0f64; 3];
    let mut fast_rounds = (0, 0);
    let mut fast_bytes = (0, 0);
    for (m, method) in Method::ALL.into_iter().enumerate() {
        let s = &samples[m];
        let mut us: Vec<u64> = s.iter().map(|x| x.setup_us).collect();
        let st = Stats::of(&mut us);
        medians[m] = st.p50;
        let (rounds, r_lo, r_hi) = range(s.iter().map(|x| x.rounds));
        let (sent, sent_lo, sent_hi) = range(s.iter().map(|x| x.sent));
        let (recv, recv_lo, recv_hi) = range(s.iter().map(|x| x.received));
        let (bytes, b_lo, b_hi) = range(s.iter().map(|x| x.cap_bytes));
        let fast = s.iter().filter(|x| x.path == SetupPath::Fast).count();
        let rtts = if rtt_us > 0.0 {
            format!("{:.0}", st.p50 / rtt_us)
        } else {
            "-".into()
        };
        if method == Method::Fast {
            fast_rounds = (r_lo, r_hi);
            fast_bytes = (b_lo, b_hi);
        }
        let path = match fast {
            0 => "fallback".to_string(),
            n if n == s.len() => "fast".to_string(),
            n => format!("{n} fast / {} fallback", s.len() - n),
        };
        report.row([
            method.name().to_string(),
            format!("{:.3}", ms(st.p50)),
            format!("{:.3}", ms(st.p99)),
            format!("{:.3}", ms(st.mean)),
            format!("{:.3}", ms(st.min)),
            format!("{:.3}", ms(st.max)),
            rounds.clone(),
            rtts.clone(),
            format!("{sent}/{recv}"),
            bytes.clone(),
            path.clone(),
        ]);
        figures.insert(
            method.key().into(),
            json!({
                "setup_ms": st.ms_json(),
                "round_trips_counted": {"min": r_lo, "max": r_hi},
                "round_trips_from_time": if rtt_us > 0.0 { json!((st.p50 / rtt_us).round()) } else { json!(null) },
                "caller_messages_sent": {"min": sent_lo, "max": sent_hi},
                "caller_messages_received": {"min": recv_lo, "max": recv_hi},
                "capability_bytes_per_call": {"min": b_lo, "max": b_hi},
                "fast_path_calls": fast,
                "calls": s.len(),
                "path": path,
            }),
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let a_c = ratio(medians[0], medians[2]);
    let a_b = ratio(medians[0], medians[1]);
    // Paired differences: call i of (a) against call i of (b), placed back to back.
    let mut diffs: Vec<i64> = samples[0]
        .iter()
        .zip(&samples[1])
        .map(|(a, b)| {
            i64::try_from(a.setup_us).unwrap_or(i64::MAX)
                - i64::try_from(b.setup_us).unwrap_or(i64::MAX)
        })
        .collect();
    diffs.sort_unstable();
    let paired = diffs.get(diffs.len() / 2).copied().unwrap_or(0);
    figures.insert("ratio_median_a_over_c".into(), json!(a_c));
    figures.insert("ratio_median_a_over_b".into(), json!(a_b));
    figures.insert("paired_median_a_minus_b_us".into(), json!(paired));
    figures.insert(
        "round_trips_method".into(),
        json!("counted: request/answer exchanges the caller waited on before CallEstablished (each flush of requests followed by a wait); cross-checked by median set-up / (4 x one-way delay)"),
    );
    report.figures = serde_json::Value::Object(figures);
    report.note(format!(
        "median(a)/median(c) = {a_c:.3}, median(a)/median(b) = {a_b:.3}, paired median a-b = {paired} us"
    ));
    report.note(
        "round trips are counted (caller exchanges on the critical path); the RTT column is the median divided by 4 x the one-way delay",
    );
    let rounds_text = if fast_rounds.0 == fast_rounds.1 {
        fast_rounds.0.to_string()
    } else {
        format!("{}-{}", fast_rounds.0, fast_rounds.1)
    };
    report.target(
        "fast path round trips",
        "1",
        rounds_text,
        fast_rounds == (1, 1),
    );
    report.target(
        "fast path capability bytes at call time",
        "0",
        fast_bytes.1.to_string(),
        fast_bytes == (0, 0),
    );
    report.target(
        "median(a) / median(c)",
        "<= 0.55",
        format!("{a_c:.3}"),
        a_c <= 0.55,
    );
    report.target(
        "median(a) / median(b)",
        "<= 1",
        format!("{a_b:.3}"),
        a_b <= 1.0,
    );
    if fast_bytes != (0, 0) || fast_rounds != (1, 1) {
        report.verified = false;
        report.note("the fast path carried capabilities or took more than one round trip");
    }
}
