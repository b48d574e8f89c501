//! Results: order statistics, the human table on standard output and the JSON report.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

/// Order statistics of a sample, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Stats {
    /// Sample size.
    pub n: usize,
    /// Smallest value.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Stats {
    /// The statistics of `v` (sorted in place).
    pub fn of(v: &mut [u64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        Self {
            n: v.len(),
            min: v[0] as f64,
            p50: percentile(v, 50.0) as f64,
            p99: percentile(v, 99.0) as f64,
            max: v[v.len() - 1] as f64,
            mean: sum / v.len() as f64,
        }
    }

    /// The statistics in milliseconds, as JSON.
    pub fn ms_json(&self) -> Value {
        json!({
            "n": self.n,
            "min": ms(self.min),
            "p50": ms(self.p50),
            "p99": ms(self.p99),
            "max": ms(self.max),
            "mean": ms(self.mean),
        })
    }
}

/// Microseconds to milliseconds, rounded to the microsecond.
pub fn ms(us: f64) -> f64 {
    (us).round() / 1000.0
}

/// The median of `v` (the mean of the two middle values for an even count); `NaN`
/// for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[m],
        _ => (v[m - 1] + v[m]) / 2.0,
    }
}

/// Nearest-rank percentile of a sorted, non-empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One target and whether the run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What is measured.
    pub name: String,
    /// The target, in words.
    pub target: String,
    /// The measured figure, in words.
    pub measured: String,
    /// Whether it was met.
    pub met: bool,
}

/// A scenario's results.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The scenario's name (its subcommand).
    pub scenario: &'static str,
    /// Whether every verification point passed (INV-ONLINE-EXACT and the scenario's
    /// own checks).
    pub verified: bool,
    /// Tables (or calls) that did not match.
    pub mismatches: usize,
    /// The run's parameters.
    pub params: Value,
    /// The measured figures.
    pub figures: Value,
    /// The targets.
    pub targets: Vec<Check>,
    /// Anything worth knowing about the run.
    pub notes: Vec<String>,
    /// The machine (filled in when the run ends).
    pub machine: Value,
    /// The human table: a header row, then data rows.
    #[serde(skip)]
    pub rows: Vec<Vec<String>>,
    /// More human tables, each with a title, printed after the first.
    #[serde(skip)]
    pub tables: Vec<(String, Vec<Vec<String>>)>,
}

impl Report {
    /// An empty, so far verified report.
    pub fn new(scenario: &'static str, params: Value) -> Self {
        Self {
            scenario,
            verified: true,
            mismatches: 0,
            params,
            figures: json!({}),
            targets: Vec::new(),
            notes: Vec::new(),
            machine: Value::Null,
            rows: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// Adds a note.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Adds a target.
    pub fn target(
        &mut self,
        name: impl Into<String>,
        target: impl Into<String>,
        measured: impl Into<String>,
        met: bool,
    ) {
        self.targets.push(Check {
            name: name.into(),
            target: target.into(),
            measured: measured.into(),
            met,
        });
    }

    /// Adds a row to the human table (the first one is the header).
    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Adds a titled table (header row first), printed after the main one.
    pub fn table(&mut self, title: impl Into<String>, rows: Vec<Vec<String>>) {
        self.tables.push((title.into(), rows));
    }

    /// The human form: the tables, the targets, the notes, the verdict.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "precall-load {}  {}", self.scenario, self.params);
        out.push_str(&table(&self.rows));
        for (title, rows) in &self.tables {
            let _ = writeln!(out, "\n{title}:");
            out.push_str(&table(rows));
        }
        if !self.targets.is_empty() {
            let mut rows = vec![vec![
                "target".to_string(),
                "wanted".into(),
                "measured".into(),
                "met".into(),
            ]];
            for t in &self.targets {
                rows.push(vec![
                    t.name.clone(),
                    t.target.clone(),
                    t.measured.clone(),
                    if t.met { "yes" } else { "NO" }.into(),
                ]);
            }
            out.push('\n');
            out.push_str(&table(&rows));
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(
            out,
            "verified: {} ({} mismatches)",
            self.verified, self.mismatches
        );
        out
    }

    /// Writes the JSON report.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Left-aligned columns separated by two spaces, the header underlined.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    out
}

/// The kernel's TCP counters that explain slow connects: accept-queue overflows and
/// SYN retransmissions (`/proc/net/netstat`, this network namespace).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TcpCounters {
    /// Connections dropped because a listener's accept queue was full.
    pub listen_overflows: u64,
    /// SYNs dropped at a listener (overflows included).
    pub listen_drops: u64,
    /// SYNs sent again after a timeout (the client side of a drop).
    pub syn_retransmits: u64,
}

impl TcpCounters {
    /// The counters now (zero if unreadable).
    pub fn read() -> Self {
        let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut c = Self::default();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            if !names.starts_with("TcpExt:") {
                continue;
            }
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                let v = v.parse().unwrap_or(0);
                match n {
                    "ListenOverflows" => c.listen_overflows = v,
                    "ListenDrops" => c.listen_drops = v,
                    "TCPSynRetrans" => c.syn_retransmits = v,
                    _ => {}
                }
            }
        }
        c
    }

    /// What happened since `earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            listen_overflows: self
                .listen_overflows
                .saturating_sub(earlier.listen_overflows),
            listen_drops: self.listen_drops.saturating_sub(earlier.listen_drops),
            syn_retransmits: self.syn_retransmits.saturating_sub(earlier.syn_retransmits),
        }
    }
}

/// The load averages (1, 5, 15 minutes): other work on the machine skews every
/// figure, so the report says how busy it was.
pub fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The machine the run was on.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string());
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_at_end": loadavg(),
        "cpu_model": cpu,
        "kernel": kernel,
        "nofile_limit": crate::nofile_limit(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_empty_sets() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = Stats::of(&mut v);
        assert_eq!(
            (s.n, s.min, s.p50, s.p99, s.max),
            (100, 1.0, 50.0, 99.0, 100.0)
        );
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert_eq!(Stats::of(&mut []).n, 0);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn human_form_aligns_and_says_the_verdict() {
        let mut r = Report::new("x", json!({"a": 1}));
        r.row(["method", "median"]);
        r.row(["fast", "1.0"]);
        r.target("t", "<= 1", "1", true);
        r.verified = false;
        let text = r.human();
        assert!(text.contains("method  median"), "{text}");
        assert!(text.contains("verified: false"), "{text}");
    }
}
