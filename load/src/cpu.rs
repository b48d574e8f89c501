//! CPU time: of the server process alone, of the load tool's own processes, and of the
//! whole machine, so that a report says who used the cores during a measured phase.
//!
//! A process's time comes from `/proc/PID/stat` (fields 14 and 15, `utime` and
//! `stime`, in clock ticks of `sysconf(_SC_CLK_TCK)`: every thread of the process,
//! those that ended included). The machine's comes from the first line of `/proc/stat`
//! (busy = everything but `idle` and `iowait`). Clock ticks are 10 ms here, so a phase
//! should last seconds for the figures to mean something.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Instant;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`; 100 if it cannot be read).
#[allow(unsafe_code)]
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User and system CPU time of a process, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuTimes {
    /// Time in user mode.
    pub user_s: f64,
    /// Time in the kernel on the process's behalf.
    pub system_s: f64,
}

impl CpuTimes {
    /// Process `pid`'s times so far, if it exists.
    pub fn of_pid(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse_stat(&text)
    }

    /// This process's times so far.
    pub fn own() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        Self::parse_stat(&text)
    }

    /// Reads `utime` and `stime` from the text of a `/proc/PID/stat` file. The command
    /// name (field 2) is in parentheses and may hold spaces and parentheses itself:
    /// the fields are counted after its last `)`.
    pub fn parse_stat(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        // After the name: field 3 (state) is index 0, so fields 14 and 15 are 11 and 12.
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let tck = clk_tck();
        Some(Self {
            user_s: utime as f64 / tck,
            system_s: stime as f64 / tck,
        })
    }

    /// User plus system time.
    pub fn total_s(&self) -> f64 {
        self.user_s + self.system_s
    }

    /// The time used since `earlier` (never negative).
    pub fn since(self, earlier: Self) -> Self {
        Self {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            system_s: (self.system_s - earlier.system_s).max(0.0),
        }
    }

    /// The sum of two processes' times.
    pub fn plus(self, other: Self) -> Self {
        Self {
            user_s: self.user_s + other.user_s,
            system_s: self.system_s + other.system_s,
        }
    }
}

/// The machine's CPU time so far, all cores: busy and total, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MachineCpu {
    /// Time not idle (user, nice, system, irq, softirq, steal).
    pub busy_s: f64,
    /// All time, idle included.
    pub total_s: f64,
}

impl MachineCpu {
    /// Reads the first (`cpu`) line of `/proc/stat`.
    pub fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(text.lines().next()?)
    }

    /// Parses the `cpu` line of `/proc/stat`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut it = line.split_whitespace();
        if it.next()? != "cpu" {
            return None;
        }
        // user nice system idle iowait irq softirq steal (guest time is in user).
        let v: Vec<u64> = it.take(8).map(|s| s.parse().ok()).collect::<Option<_>>()?;
        if v.len() < 5 {
            return None;
        }
        let total: u64 = v.iter().sum();
        let idle = v[3] + v[4];
        let tck = clk_tck();
        Some(Self {
            busy_s: (total - idle) as f64 / tck,
            total_s: total as f64 / tck,
        })
    }
}

/// CPU readings at the start of a phase: the server's (if its process ids are known;
/// summed over the nodes of a cluster), this process's and the machine's.
#[derive(Clone, Debug)]
pub struct Meter {
    server_pids: Vec<u32>,
    server: Option<CpuTimes>,
    /// Each node's reading, with several server processes (a cluster).
    by_node: Vec<Option<CpuTimes>>,
    tool: Option<CpuTimes>,
    machine: Option<MachineCpu>,
    at: Instant,
}

impl Meter {
    /// Takes the readings now.
    pub fn start(server_pids: &[u32]) -> Self {
        Self {
            server_pids: server_pids.to_vec(),
            server: sum_of_pids(server_pids),
            by_node: if server_pids.len() > 1 {
                server_pids.iter().map(|&p| CpuTimes::of_pid(p)).collect()
            } else {
                Vec::new()
            },
            tool: CpuTimes::own(),
            machine: MachineCpu::read(),
            at: Instant::now(),
        }
    }

    /// What was used since [`Meter::start`]. `workers` is the CPU time of the tool's
    /// worker processes over the same phase (reported by them), added to the tool's.
    pub fn stop(&self, workers: Option<CpuTimes>) -> CpuUse {
        let server = match (self.server, sum_of_pids(&self.server_pids)) {
            (Some(a), Some(b)) => Some(b.since(a)),
            _ => None,
        };
        let server_by_node = self
            .by_node
            .iter()
            .zip(&self.server_pids)
            .map(|(a, &pid)| match (a, CpuTimes::of_pid(pid)) {
                (Some(a), Some(b)) => Some(b.since(*a)),
                _ => None,
            })
            .collect();
        let tool = match (self.tool, CpuTimes::own()) {
            (Some(a), Some(b)) => Some(b.since(a)),
            _ => None,
        };
        let tool = match (tool, workers) {
            (Some(t), Some(w)) => Some(t.plus(w)),
            (t, None) => t,
            (None, w) => w,
        };
        let (machine_busy_s, machine_total_s) = match (self.machine, MachineCpu::read()) {
            (Some(a), Some(b)) => (
                Some((b.busy_s - a.busy_s).max(0.0)),
                Some((b.total_s - a.total_s).max(0.0)),
            ),
            _ => (None, None),
        };
        CpuUse {
            wall_s: self.at.elapsed().as_secs_f64(),
            server,
            server_by_node,
            tool,
            machine_busy_s,
            machine_total_s,
        }
    }
}

/// The times of processes `pids` summed, if there are some and they all exist.
fn sum_of_pids(pids: &[u32]) -> Option<CpuTimes> {
    let mut sum: Option<CpuTimes> = None;
    for &pid in pids {
        let t = CpuTimes::of_pid(pid)?;
        sum = Some(sum.map_or(t, |s| s.plus(t)));
    }
    sum
}

/// The CPU time used during a phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CpuUse {
    /// The phase's length.
    pub wall_s: f64,
    /// The server process's time (unknown without its process id); with several
    /// server processes (a cluster), their sum.
    pub server: Option<CpuTimes>,
    /// With several server processes, each one's time (in `--server-pid` order; empty
    /// for one).
    #[serde(default)]
    pub server_by_node: Vec<Option<CpuTimes>>,
    /// The load tool's processes' time (this one and its workers).
    pub tool: Option<CpuTimes>,
    /// The whole machine's busy time, all cores and every process (other work
    /// included).
    pub machine_busy_s: Option<f64>,
    /// The whole machine's time, busy or not (wall time × cores).
    pub machine_total_s: Option<f64>,
}

impl CpuUse {
    /// Server CPU per unit of work (`per` units, for example deliveries), in µs:
    /// user, system and total. `None` if unknown or nothing was done.
    pub fn server_us_per(&self, per: u64) -> Option<[f64; 3]> {
        let s = self.server?;
        (per > 0).then(|| {
            let k = 1e6 / per as f64;
            [s.user_s * k, s.system_s * k, s.total_s() * k]
        })
    }

    /// The tool's CPU per unit of work, in µs (total).
    pub fn tool_us_per(&self, per: u64) -> Option<f64> {
        let t = self.tool?;
        (per > 0).then(|| t.total_s() * 1e6 / per as f64)
    }

    /// How busy the machine was: busy time over all time (0 to 1).
    pub fn machine_busy(&self) -> Option<f64> {
        match (self.machine_busy_s, self.machine_total_s) {
            // Both are sums of rounded tick counts: keep the quotient in range.
            (Some(b), Some(t)) if t > 0.0 => Some((b / t).clamp(0.0, 1.0)),
            _ => None,
        }
    }

    /// The figures as JSON, with the per-unit figures for `per` units of `unit`.
    pub fn json(&self, per: u64, unit: &str) -> Value {
        let per_unit = self.server_us_per(per);
        json!({
            "wall_s": self.wall_s,
            "server_user_s": self.server.map(|s| s.user_s),
            "server_system_s": self.server.map(|s| s.system_s),
            "server_cores": self.server.map(|s| s.total_s() / self.wall_s.max(1e-9)),
            "server_by_node_s": self.server_by_node.iter().map(|t| t.map(|t| t.total_s())).collect::<Vec<_>>(),
            "tool_user_s": self.tool.map(|s| s.user_s),
            "tool_system_s": self.tool.map(|s| s.system_s),
            "tool_cores": self.tool.map(|s| s.total_s() / self.wall_s.max(1e-9)),
            "machine_busy_s": self.machine_busy_s,
            "machine_busy_fraction": self.machine_busy(),
            "units": per,
            "unit": unit,
            "server_user_us_per_unit": per_unit.map(|p| p[0]),
            "server_system_us_per_unit": per_unit.map(|p| p[1]),
            "server_us_per_unit": per_unit.map(|p| p[2]),
            "tool_us_per_unit": self.tool_us_per(per),
        })
    }

    /// Rows for the human table: the server's, the tool's and the machine's CPU, and
    /// the per-unit figures (`unit` names one unit, e.g. "delivery").
    pub fn rows(&self, per: u64, unit: &str) -> Vec<[String; 2]> {
        let secs = |t: Option<CpuTimes>| {
            t.map_or("- (process id unknown)".to_string(), |t| {
                format!(
                    "{:.2} / {:.2} s ({:.2} cores)",
                    t.user_s,
                    t.system_s,
                    t.total_s() / self.wall_s.max(1e-9)
                )
            })
        };
        let mut rows = vec![["server CPU user / system".to_string(), secs(self.server)]];
        if !self.server_by_node.is_empty() {
            let each: Vec<String> = self
                .server_by_node
                .iter()
                .map(|t| t.map_or("-".into(), |t| format!("{:.2}", t.total_s())))
                .collect();
            rows.push([
                "server CPU by node (user + system)".to_string(),
                format!("{} s", each.join(" / ")),
            ]);
        }
        rows.extend([
            ["load tool CPU user / system".to_string(), secs(self.tool)],
            [
                "machine busy (all processes)".to_string(),
                match (self.machine_busy_s, self.machine_busy()) {
                    (Some(b), Some(f)) => format!(
                        "{b:.2} s of {:.2} s ({:.0} %)",
                        self.machine_total_s.unwrap_or(0.0),
                        f * 100.0
                    ),
                    _ => "-".into(),
                },
            ],
        ]);
        rows.push([
            format!("server CPU per {unit} user / system / total"),
            self.server_us_per(per).map_or("-".into(), |p| {
                format!("{:.2} / {:.2} / {:.2} µs", p[0], p[1], p[2])
            }),
        ]);
        rows.push([
            format!("load tool CPU per {unit}"),
            self.tool_us_per(per)
                .map_or("-".into(), |t| format!("{t:.2} µs")),
        ]);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_strange_name() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0";
        let t = CpuTimes::parse_stat(line).unwrap();
        let tck = clk_tck();
        assert!((t.user_s - 250.0 / tck).abs() < 1e-9, "{t:?}");
        assert!((t.system_s - 75.0 / tck).abs() < 1e-9, "{t:?}");
        assert!(CpuTimes::parse_stat("42 (x) S 1 2").is_none());
    }

    #[test]
    fn parses_the_machine_line() {
        let m = MachineCpu::parse("cpu  100 0 50 800 50 0 0 0 0 0").unwrap();
        let tck = clk_tck();
        assert!((m.busy_s - 150.0 / tck).abs() < 1e-9, "{m:?}");
        assert!((m.total_s - 1000.0 / tck).abs() < 1e-9, "{m:?}");
        assert!(MachineCpu::parse("cpu0 1 2 3 4 5").is_none());
    }

    #[test]
    fn own_time_grows_with_work() {
        let meter = Meter::start(&[std::process::id()]);
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed().as_millis() < 60 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = meter.stop(None);
        let server = used.server.unwrap();
        assert!(server.total_s() > 0.0, "{used:?}");
        let per = used.server_us_per(1000).unwrap();
        assert!(per[2].is_finite() && per[2] > 0.0, "{per:?}");
        assert!(used.server_us_per(0).is_none());
        assert!(used.tool.unwrap().total_s() > 0.0);
        assert!(used.server_by_node.is_empty());
        assert!(CpuTimes::of_pid(u32::MAX).is_none());
    }

    #[test]
    fn several_server_processes_are_summed_and_kept_by_node() {
        let me = std::process::id();
        let meter = Meter::start(&[me, me]);
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed().as_millis() < 60 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = meter.stop(None);
        assert_eq!(used.server_by_node.len(), 2);
        let one = used.server_by_node[0].unwrap().total_s();
        assert!(one > 0.0, "{used:?}");
        // The same process twice, read a moment apart: the sum is about twice one.
        let sum = used.server.unwrap().total_s();
        assert!(sum >= one && sum <= 2.0 * one + 0.05, "{used:?}");
        assert!(used.rows(1, "x").iter().any(|r| r[0].contains("by node")));
        assert!(Meter::start(&[me, u32::MAX]).stop(None).server.is_none());
    }
}
