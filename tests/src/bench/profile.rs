//! A system-wide CPU profile (`perf record -a`) taken while one workload
//! runs, reduced to the top processes and symbols.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::lab::run_with_timeout;

/// One line of a `perf report`: share of samples and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileLine {
    /// Percentage of all samples.
    pub pct: f64,
    /// Process name or symbol (`[k]` kernel, `[.]` user space).
    pub name: String,
}

/// The profile of one workload under one gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// Gateway key.
    pub gateway: String,
    /// Workload.
    pub workload: String,
    /// Top processes by CPU samples.
    pub by_process: Vec<ProfileLine>,
    /// Top symbols by CPU samples.
    pub by_symbol: Vec<ProfileLine>,
}

/// Whether `perf` runs here.
pub fn perf_available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running `perf record`.
#[derive(Debug)]
pub struct Recording {
    child: Child,
    log: PathBuf,
    limit: Duration,
}

/// Starts `perf record -a` for `duration`, writing to `out` (its messages
/// go to `out` with `.log` appended); wait for it with [`finish_record`].
pub fn start_record(out: &Path, duration: Duration) -> Result<Recording> {
    let log = out.with_extension("log");
    let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new("perf")
        .args(["record", "-a", "-F", "999", "-q", "-o"])
        .arg(out)
        .args(["--", "sleep", &duration.as_secs().max(1).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .context("starting perf record")?;
    Ok(Recording {
        child,
        log,
        limit: duration + Duration::from_secs(30),
    })
}

/// Waits (bounded) for a recording started by [`start_record`].
pub fn finish_record(mut rec: Recording) -> Result<()> {
    let started = Instant::now();
    let status = loop {
        if let Some(st) = rec.child.try_wait().context("waiting for perf record")? {
            break st;
        }
        if started.elapsed() > rec.limit {
            let _ = rec.child.kill();
            let _ = rec.child.wait();
            bail!("perf record did not finish within {:?}", rec.limit);
        }
        thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        bail!(
            "perf record failed ({status}): {}",
            fs::read_to_string(&rec.log).unwrap_or_default().trim()
        );
    }
    Ok(())
}

/// Runs `perf report` on `data` sorted by `key` (`comm` or `sym`) and
/// returns its first `top` lines.
pub fn report(data: &Path, key: &str, top: usize) -> Result<Vec<ProfileLine>> {
    let mut cmd = Command::new("perf");
    cmd.args(["report", "--stdio", "--no-children", "--sort", key, "-i"])
        .arg(data);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120))?;
    if !out.status.success() {
        bail!(
            "perf report failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut lines = parse_report(&String::from_utf8_lossy(&out.stdout));
    lines.truncate(top);
    Ok(lines)
}

/// Parses `perf report --stdio` lines such as `  12.34%  nginx` or
/// `   3.10%  [k] bpf_prog_0123_lb_xdp`.
pub fn parse_report(text: &str) -> Vec<ProfileLine> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let l = l.trim();
            let (pct, rest) = l.split_once('%')?;
            let pct: f64 = pct.trim().parse().ok()?;
            let name = rest.trim();
            (!name.is_empty()).then(|| ProfileLine {
                pct,
                name: name.split_whitespace().collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

/// Whether a symbol is the idle loop (time not spent on anything).
pub fn is_idle(symbol: &str) -> bool {
    ["safe_halt", "idle", "mwait"]
        .iter()
        .any(|k| symbol.contains(k))
}

/// Symbols (idle loop excluded) whose share of the samples grew most from `base` to `other`:
/// `(symbol, share in other, share in base)`, largest growth first, at most
/// `n`. A symbol missing from a (truncated) list counts as 0 there.
pub fn grown(other: &Profile, base: &Profile, n: usize) -> Vec<(String, f64, f64)> {
    let share = |p: &Profile, name: &str| {
        p.by_symbol
            .iter()
            .find(|l| l.name == name)
            .map_or(0.0, |l| l.pct)
    };
    let mut v: Vec<(String, f64, f64)> = other
        .by_symbol
        .iter()
        .map(|l| (l.name.clone(), l.pct, share(base, &l.name)))
        .filter(|(name, o, b)| o > b && !is_idle(name))
        .collect();
    v.sort_by(|a, b| (b.1 - b.2).total_cmp(&(a.1 - a.2)));
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_parsed_and_comments_skipped() {
        let text = "# Samples: 517  of event 'cpu-clock:pppH'
#
# Overhead  Symbol
# ........  .....................................
#
    42.65%  [k] pv_native_safe_halt
     3.10%  [k] bpf_prog_6deef7357e7b4530_lb_xdp
     0.39%  [.] __memchr_evex

";
        let lines = parse_report(text);
        assert_eq!(
            lines,
            [
                ProfileLine {
                    pct: 42.65,
                    name: "[k] pv_native_safe_halt".into()
                },
                ProfileLine {
                    pct: 3.10,
                    name: "[k] bpf_prog_6deef7357e7b4530_lb_xdp".into()
                },
                ProfileLine {
                    pct: 0.39,
                    name: "[.] __memchr_evex".into()
                },
            ]
        );
        let comm = parse_report("    61.00%  nginx\n    20.50%  wrk\n");
        assert_eq!(comm[1].name, "wrk");
        assert_eq!(comm[0].pct, 61.0);
    }

    #[test]
    fn growth_is_ranked_against_the_base_profile() {
        let line = |name: &str, pct: f64| ProfileLine {
            pct,
            name: name.into(),
        };
        let p = |by_symbol| Profile {
            gateway: "x".into(),
            workload: "w".into(),
            by_process: vec![],
            by_symbol,
        };
        let xdp = p(vec![
            line("[k] a", 10.0),
            line("[k] b", 8.0),
            line("[k] c", 5.0),
            line("[k] d", 1.0),
            line("[k] pv_native_safe_halt", 30.0),
        ]);
        let direct = p(vec![
            line("[k] a", 9.0),
            line("[k] c", 6.0),
            line("[k] d", 0.5),
        ]);
        let g = grown(&xdp, &direct, 2);
        assert_eq!(
            g,
            [
                ("[k] b".to_string(), 8.0, 0.0),
                ("[k] a".to_string(), 10.0, 9.0)
            ]
        );
    }
}
