//! Control-plane costs: building a Maglev table and swapping it into the
//! maps for 3, 100 and 1,000 backends, and how long new connections fail
//! after a backend dies, seen from the client.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lb_common::MAGLEV_TABLE_SIZE;
use serde::{Deserialize, Serialize};

use super::gateways::{lb_config, wait_lb_backends_up, ListenerSpec};
use super::micro;
use super::stats::Summary;
use crate::client::measure_failover;
use crate::lab::{Lab, TALOS_API_PORT};
use crate::lb::HealthSettings;

/// Maglev costs for one backend count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaglevCost {
    /// Backends in the listener.
    pub backends: usize,
    /// Building the 65,537-slot table in userspace (ms).
    pub build_ms: Summary,
    /// `Written::apply` of a plan whose serving set changed: table rebuild,
    /// write into the idle slot, listener switch, real flags (ms).
    pub swap_ms: Summary,
}

/// Measures Maglev build and swap for each size, `runs` times each; call
/// inside [`micro::MicroNs::run`].
pub fn maglev_costs(sizes: &[usize], runs: u32, ifindexes: [u32; 2]) -> Result<Vec<MaglevCost>> {
    let mut out = Vec::new();
    for &n in sizes {
        let names: Vec<String> = (0..n).map(|i| format!("cp-{:04}", i + 1)).collect();
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut build = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let table = lb::maglev::build_table(&keys, MAGLEV_TABLE_SIZE)
                .context("building a Maglev table")?;
            build.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(table);
        }
        let (mut dp, mut written) = micro::load_with_writer(None, 1024, n, ifindexes)?;
        let mut swap = Vec::new();
        for r in 0..runs as usize {
            // Alternate between one backend down and all up, so every
            // apply changes the serving set and rebuilds the table.
            let down = (r % 2 == 0).then_some(r / 2 % n);
            let plan = micro::plan(n, down);
            let t = Instant::now();
            written
                .apply(&mut dp, &plan)
                .with_context(|| format!("applying a plan of {n} backends"))?;
            swap.push(t.elapsed().as_secs_f64() * 1e3);
        }
        out.push(MaglevCost {
            backends: n,
            build_ms: Summary::of(&build).context("no Maglev build timings")?,
            swap_ms: Summary::of(&swap).context("no swap timings")?,
        });
    }
    Ok(out)
}

/// One failover measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverRun {
    /// The node stopped.
    pub node: String,
    /// From the node's death to the start of the last new connection that
    /// failed (ms).
    pub last_failure_ms: f64,
    /// New connections that failed.
    pub failed: usize,
    /// New connections tried (one every 50 ms).
    pub probes: usize,
    /// Whether a clean stretch followed within the time limit.
    pub settled: bool,
}

/// Failover figures and the health settings they were measured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failover {
    /// Health-check interval (ms).
    pub interval_ms: u64,
    /// Health-check timeout (ms).
    pub timeout_ms: u64,
    /// Consecutive failures that take a node down.
    pub unhealthy_threshold: u32,
    /// Every measurement.
    pub runs: Vec<FailoverRun>,
    /// Summary of `last_failure_ms`.
    pub last_failure_ms: Summary,
}

/// Runs `lb` with one listener (VIP:50000 over the simulated nodes), then
/// `repeats` times: stops a node, probes from the client until new
/// connections have succeeded for a while, restarts the node and waits
/// until it is back.
pub fn failover(lab: &Lab, repeats: u32, health: HealthSettings) -> Result<Failover> {
    lab.start_all_backends()?;
    let base = lab.config_toml_with(health);
    let vip = lab.vip().to_string();
    let config = lb_config(
        &base,
        &vip,
        &[ListenerSpec {
            name: "talos-api".into(),
            port: TALOS_API_PORT,
            backends: None,
        }],
    )?;
    lab.start_lb(&config)?;
    let result = (|| -> Result<Vec<FailoverRun>> {
        wait_lb_backends_up(lab, Duration::from_secs(15))?;
        let mut runs = Vec::new();
        for r in 0..repeats as usize {
            let victim = 1 + r % lab.backends();
            let node = lab.backend_name(victim);
            let t0 = Instant::now();
            lab.stop_backend(victim)?;
            let f = measure_failover(
                lab,
                &lab.client_ns(),
                lab.vip_addr(TALOS_API_PORT),
                &node,
                t0,
                Duration::from_millis(1500),
                Duration::from_secs(20),
            )?;
            runs.push(FailoverRun {
                node: node.clone(),
                last_failure_ms: f.settled_after.as_secs_f64() * 1e3,
                failed: f.probes.iter().filter(|p| p.result.is_err()).count(),
                probes: f.probes.len(),
                settled: f.settled,
            });
            lab.start_backend(victim)?;
            wait_lb_backends_up(lab, Duration::from_secs(20))?;
        }
        Ok(runs)
    })();
    let stopped = lab.stop_lb();
    for i in 1..=lab.backends() {
        let _ = lab.stop_backend(i);
    }
    let runs = result?;
    stopped?;
    let times: Vec<f64> = runs.iter().map(|r| r.last_failure_ms).collect();
    Ok(Failover {
        interval_ms: health.interval.as_millis() as u64,
        timeout_ms: health.timeout.as_millis() as u64,
        unhealthy_threshold: health.unhealthy_threshold,
        last_failure_ms: Summary::of(&times).context("no failover measurement")?,
        runs,
    })
}
