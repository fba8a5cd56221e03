//! Kernel-side run time of the attached XDP program (`bpf_stats`): which
//! program is attached to an interface, and its `run_time_ns`/`run_cnt`.

use std::os::fd::OwnedFd;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aya::programs::loaded_programs;
use aya::sys::{enable_stats, Stats};
use serde_json::Value;

use crate::lab::run_with_timeout;

/// Keeps BPF run-time statistics on while alive. This is the fd-scoped form
/// of `sysctl kernel.bpf_stats_enabled=1` (`BPF_ENABLE_STATS`): the kernel
/// switches the statistics off again when the last holder closes its fd,
/// also when the benchmark dies.
#[derive(Debug)]
pub struct StatsEnabled(#[allow(dead_code)] OwnedFd);

impl StatsEnabled {
    /// Turns the statistics on.
    pub fn new() -> Result<StatsEnabled> {
        Ok(StatsEnabled(
            enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?,
        ))
    }
}

/// Cumulative run statistics of one program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Total time spent in the program.
    pub run_time_ns: u64,
    /// Number of runs (packets).
    pub run_cnt: u64,
}

impl RunStats {
    /// Reads the statistics of program `id`.
    pub fn of(id: u32) -> Result<RunStats> {
        for info in loaded_programs() {
            let info = info.context("listing loaded BPF programs")?;
            if info.id() == id {
                return Ok(RunStats {
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    run_cnt: info.run_count(),
                });
            }
        }
        bail!("no loaded BPF program with id {id}")
    }

    /// Runs and nanoseconds per run between `earlier` and `self`; `None`
    /// when the program did not run.
    pub fn since(&self, earlier: &RunStats) -> Option<(u64, f64)> {
        let runs = self.run_cnt.checked_sub(earlier.run_cnt)?;
        let ns = self.run_time_ns.checked_sub(earlier.run_time_ns)?;
        (runs > 0).then(|| (runs, ns as f64 / runs as f64))
    }
}

/// The id of the XDP program attached to `iface` in namespace `ns`.
pub fn attached_xdp_prog(ns: &str, iface: &str) -> Result<u32> {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", ns, "-j", "link", "show", "dev", iface]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(5))?;
    if !out.status.success() {
        bail!(
            "ip link show {iface} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("ip -j link printed no JSON")?;
    xdp_prog_id(&v).ok_or_else(|| anyhow!("no XDP program attached to {iface} in {ns}"))
}

/// Finds the first `prog.id` under an `xdp` object of `ip -j link`
/// output (single or multi-attach form).
pub fn xdp_prog_id(v: &Value) -> Option<u32> {
    fn prog_id(v: &Value) -> Option<u32> {
        match v {
            Value::Object(m) => {
                if let Some(id) = m
                    .get("prog")
                    .and_then(|p| p.get("id"))
                    .and_then(Value::as_u64)
                {
                    return u32::try_from(id).ok();
                }
                m.values().find_map(prog_id)
            }
            Value::Array(a) => a.iter().find_map(prog_id),
            _ => None,
        }
    }
    match v {
        Value::Array(a) => a.iter().find_map(xdp_prog_id),
        Value::Object(m) => m.get("xdp").and_then(prog_id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_id_is_found_in_both_ip_link_forms() {
        let single: Value = serde_json::from_str(
            r#"[{"ifindex":3,"ifname":"gwc","xdp":{"mode":1,"prog":{"id":42,"name":"lb_xdp","tag":"ab","jited":1}}}]"#,
        )
        .unwrap();
        assert_eq!(xdp_prog_id(&single), Some(42));
        let multi: Value = serde_json::from_str(
            r#"[{"ifname":"gwc","xdp":{"mode":4,"attached":[{"mode":1,"prog":{"id":7}}]}}]"#,
        )
        .unwrap();
        assert_eq!(xdp_prog_id(&multi), Some(7));
        let none: Value = serde_json::from_str(r#"[{"ifname":"gwc","mtu":1500}]"#).unwrap();
        assert_eq!(xdp_prog_id(&none), None);
    }

    #[test]
    fn per_run_cost_is_the_ratio_of_deltas() {
        let a = RunStats {
            run_time_ns: 1_000,
            run_cnt: 10,
        };
        let b = RunStats {
            run_time_ns: 31_000,
            run_cnt: 310,
        };
        assert_eq!(b.since(&a), Some((300, 100.0)));
        assert_eq!(a.since(&a), None);
        assert_eq!(a.since(&b), None);
    }
}
