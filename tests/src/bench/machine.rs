//! The machine a benchmark ran on, and the versions of the tools it used.

use std::fs;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Where the figures come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs.
    pub nproc: usize,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// First line of each tool's version output.
    pub tools: Vec<(String, String)>,
}

impl Machine {
    /// Reads the machine's description; unknown parts say so.
    pub fn probe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let tools = [
            ("wrk", &["-v"][..]),
            ("nginx", &["-v"][..]),
            ("haproxy", &["-v"][..]),
            ("iperf3", &["--version"][..]),
            ("nft", &["--version"][..]),
        ]
        .iter()
        .map(|(t, args)| (t.to_string(), tool_version(t, args)))
        .collect();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            kernel,
            memory_gib: mem_total_kib(&meminfo).map_or(0.0, |k| k as f64 / 1024.0 / 1024.0),
            tools,
        }
    }
}

/// The first `model name` of a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// `MemTotal` of a `/proc/meminfo` text, in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The first non-empty line a tool prints for its version (stdout or
/// stderr: nginx and wrk use the latter).
fn tool_version(tool: &str, args: &[&str]) -> String {
    match Command::new(tool).args(args).output() {
        Ok(o) => {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("?")
                .to_string()
        }
        Err(_) => "not installed".into(),
    }
}

/// Tools the benchmark cannot run without.
pub const REQUIRED_TOOLS: [&str; 6] = ["wrk", "nginx", "haproxy", "iperf3", "nft", "ip"];

/// Required tools that are not on `PATH`.
pub fn missing_tools() -> Vec<&'static str> {
    REQUIRED_TOOLS
        .iter()
        .copied()
        .filter(|t| {
            std::env::var_os("PATH")
                .is_none_or(|paths| !std::env::split_paths(&paths).any(|d| d.join(t).is_file()))
        })
        .collect()
}

/// Aggregate CPU time counters of `/proc/stat` (in clock ticks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// All ticks.
    pub total: u64,
    /// Idle and I/O-wait ticks.
    pub idle: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat` now.
    pub fn now() -> Option<CpuTimes> {
        parse_proc_stat(&fs::read_to_string("/proc/stat").ok()?)
    }

    /// Average number of busy CPUs between `earlier` and `self`, given
    /// `nproc` CPUs.
    pub fn busy_cpus_since(&self, earlier: &CpuTimes, nproc: usize) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        (total > 0).then(|| (total - idle.min(total)) as f64 / total as f64 * nproc as f64)
    }
}

/// The `cpu ` line of a `/proc/stat` text: user nice system idle iowait irq
/// softirq steal (guest time is already part of user).
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    Some(CpuTimes {
        total: v.iter().sum(),
        idle: v[3] + v[4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_and_memory_are_read() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
        let meminfo = "MemTotal:       24590352 kB\nMemFree:        16000000 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(24_590_352));
        assert_eq!(mem_total_kib(""), None);
    }

    #[test]
    fn busy_cpus_come_from_proc_stat_deltas() {
        let a = parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4 5\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                idle: 800
            }
        );
        let b = parse_proc_stat("cpu  400 0 400 900 100 0 0 0 0 0\n").unwrap();
        // 800 more ticks, 200 of them idle: 75% of 2 CPUs busy.
        assert_eq!(b.busy_cpus_since(&a, 2), Some(1.5));
        assert_eq!(a.busy_cpus_since(&b, 2), None);
        assert_eq!(a.busy_cpus_since(&a, 2), None);
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
    }
}
