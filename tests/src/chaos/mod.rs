//! The chaos run (`cargo xtask chaos --seconds N --seed S`, and the CI
//! test `tests/tests/chaos.rs`): the namespace lab with four nodes and a
//! dual-stack daemon, watched by long-lived byte-checked streams (IPv4 and
//! IPv6), new-connection probers and a `/healthz` sampler, while a seeded
//! schedule of faults (`schedule.rs`) is applied one episode at a time
//! (`faults.rs`). The rules and the printed timeline and table are in
//! `verdict.rs`; `docs/chaos.md` explains them.
//!
//! Bounded in time: setup, `seconds` of faults, then a tail of at most the
//! dead-node bound (so that the streams of a node silenced near the end are
//! judged), then teardown. Everything the run creates lives in the lab,
//! whose drop removes its namespaces and processes, also on a panic; the
//! watcher threads are stopped and joined before the lab goes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod config;
pub mod faults;
pub mod schedule;
pub mod streams;
pub mod verdict;

use config::{ChaosConfig, DEREGISTRATION_DELAY, SPARE_NODE, TIMINGS};
use faults::{Applied, Loss, Runner};
use streams::{Family, Observations};
use verdict::{Limits, Record, Verdict};

use crate::checks::failover_limit;
use crate::lab::{ns_exec, Lab, LabOptions, KUBE_API_PORT, LB_API, TALOS_API_PORT};

/// Streams kept open per address family.
pub const STREAMS_PER_FAMILY: u64 = 4;

/// Set by SIGINT/SIGTERM (see [`install_interrupt_handler`]): the run stops
/// early, judges what it saw and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM end the run early (and cleanly) instead of
/// killing the process with the lab still up. For the `lb-chaos` binary.
pub fn install_interrupt_handler() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Options of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Length of the fault phase.
    pub seconds: u64,
    /// Seed of the fault schedule.
    pub seed: u64,
    /// Dead-node bound in seconds; `None`: [`default_bound`].
    pub bound: Option<f64>,
    /// `cp-sim` binary (`None`: next to the executable).
    pub cp_sim: Option<PathBuf>,
    /// `lb` binary (`None`: `$LB_BIN` or next to the executable).
    pub lb_bin: Option<PathBuf>,
}

/// The detection window: the slower of the two timings' failover limit
/// (`interval * unhealthy_threshold + interval + 0.5 s`).
pub fn detection_window() -> f64 {
    TIMINGS
        .iter()
        .map(|h| failover_limit(h).as_secs_f64())
        .fold(0.0, f64::max)
}

/// Today's dead-node bound: detection plus the deregistration delay, after
/// which the node's flows are rescheduled and reset at the client's next
/// retransmission; TCP's back-off doubles the wait, so twice that, plus 4 s
/// of margin for a loaded machine. With the chaos config: 2 × (2 + 5) + 4
/// = 18 s.
pub fn default_bound() -> f64 {
    2.0 * (detection_window() + DEREGISTRATION_DELAY.as_secs_f64()) + 4.0
}

/// The command that reproduces a run.
pub fn reproduce_command(o: &ChaosOptions) -> String {
    let mut s = format!(
        "cargo xtask chaos --seconds {} --seed {}",
        o.seconds, o.seed
    );
    if let Some(b) = o.bound {
        s.push_str(&format!(" --reset-bound {b}"));
    }
    s
}

/// Stops and joins the watcher threads when dropped (also on a panic).
struct Watchers {
    obs: Arc<Observations>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.obs.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn sleep_until(obs: &Observations, t: f64) {
    while obs.now() < t && !INTERRUPTED.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_secs_f64((t - obs.now()).clamp(0.0, 0.1)));
    }
}

/// The limits a run with options `o` is judged by.
fn limits(o: &ChaosOptions) -> Limits {
    Limits {
        bound: o.bound.unwrap_or_else(default_bound),
        detection: detection_window(),
        delay: DEREGISTRATION_DELAY.as_secs_f64(),
    }
}

/// The fault schedule of a run with options `o` (a long silence outlasts
/// the dead-node bound by 2 s).
pub fn plan(o: &ChaosOptions) -> Vec<schedule::Planned> {
    let long_silence = Duration::from_secs_f64(limits(o).bound + 2.0);
    schedule::schedule(o.seed, o.seconds, long_silence)
}

/// Prints the limits and the schedule of a run with options `o`.
pub fn print_plan(o: &ChaosOptions) {
    let limits = limits(o);
    let plan = plan(o);
    println!(
        "chaos: seed {} for {} s; dead-node bound {:.1} s, detection window {:.1} s, deregistration_delay {:.0} s",
        o.seed, o.seconds, limits.bound, limits.detection, limits.delay
    );
    println!("chaos: schedule ({} faults):", plan.len());
    for p in &plan {
        println!("  {:>7.1} s  {}", p.at.as_secs_f64(), p.fault);
    }
}

/// Runs the chaos run and returns its verdict (printed as it goes).
pub fn run(o: &ChaosOptions) -> Result<Verdict> {
    let limits = limits(o);
    let plan = plan(o);
    print_plan(o);

    let lab = Lab::create(LabOptions {
        prefix: None,
        backends: SPARE_NODE,
        cp_sim: o.cp_sim.clone(),
        lb_bin: o.lb_bin.clone(),
    })
    .context("creating the lab")?;
    let gw = lab.gateway_ns();
    for dev in ["gwb", "gwc"] {
        // A host with static addresses keeps them across a link flap.
        ns_exec(
            &gw,
            [
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.keep_addr_on_down=1"),
            ],
        )?;
    }
    let mut nodes = BTreeMap::new();
    for i in 1..=SPARE_NODE {
        nodes.insert(i, lab.start_backend(i)?);
    }
    let config = ChaosConfig::default();
    lab.start_lb(&config.render(&lab))?;
    wait_configured_up(&lab, Duration::from_secs(15))?;

    let obs = Observations::new();
    let mut w = Watchers {
        obs: Arc::clone(&obs),
        handles: Vec::new(),
    };
    let cl = lab.client_ns();
    let vips = [
        (Family::V4, SocketAddr::from((lab.vip(), 0))),
        (Family::V6, SocketAddr::from((lab.vip6(), 0))),
    ];
    for (k, &(fam, vip)) in vips.iter().enumerate() {
        let kube = SocketAddr::new(vip.ip(), KUBE_API_PORT);
        let talos = SocketAddr::new(vip.ip(), TALOS_API_PORT);
        for slot in 0..STREAMS_PER_FAMILY {
            let obs = Arc::clone(&obs);
            let n = k as u64 * STREAMS_PER_FAMILY + slot + 1;
            let bound = limits.bound;
            w.handles.push(streams::spawn_in_ns(
                &cl,
                format!("stream {n}"),
                move || streams::stream_slot(obs, n, fam, kube, bound),
            )?);
        }
        for p in 0..2 {
            let obs = Arc::clone(&obs);
            let addrs = if p == 0 {
                vec![kube, talos]
            } else {
                vec![talos, kube]
            };
            w.handles.push(streams::spawn_in_ns(
                &cl,
                format!("probe {fam:?}"),
                move || streams::prober(obs, fam, addrs),
            )?);
        }
    }
    let api: SocketAddr = LB_API.parse().context("LB_API")?;
    let o2 = Arc::clone(&obs);
    w.handles
        .push(streams::spawn_in_ns(&gw, "healthz".into(), move || {
            streams::healthz_sampler(o2, api)
        })?);

    let mut runner = Runner {
        lab: &lab,
        config,
        nodes,
    };
    let mut applied: Vec<Applied> = Vec::new();
    let started = Instant::now();
    // A fault that overran (a slow restart, connections waiting out their
    // timeouts) shifts the rest of the schedule, so that every fault keeps
    // its settle gap; the fault phase may stretch by a quarter, faults
    // shifted past that are skipped.
    let mut shift = 0.0;
    let mut skipped = 0;
    for p in &plan {
        let due = p.at.as_secs_f64() + shift;
        if due > o.seconds as f64 * 1.25 {
            skipped += 1;
            continue;
        }
        sleep_until(&obs, due);
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        let a = runner.apply(&obs, *p);
        let late = a.start - p.at.as_secs_f64();
        let mut line = format!("[{:>7.1} s] {}", a.start, p.fault);
        if late > 0.5 {
            line.push_str(&format!(" ({late:.1} s after its planned time)"));
        }
        if a.restored > a.start + 0.05 {
            line.push_str(&format!(", undone at {:.1} s", a.restored));
        }
        for e in a.failed_restart.iter().chain(a.failed_step.iter()) {
            line.push_str(&format!(" !! {e}"));
        }
        println!("{line}");
        let overrun = obs.now() - (due + p.fault.nominal().as_secs_f64() + 1.0);
        if overrun > 0.0 {
            shift += overrun;
        }
        applied.push(a);
    }
    if skipped > 0 {
        println!("chaos: {skipped} faults skipped: the run fell behind its schedule");
    }
    sleep_until(&obs, o.seconds as f64);
    // The tail: streams of a node killed or silenced near the end get the
    // whole bound to end.
    let tail = applied
        .iter()
        .filter(|a| a.loss != Loss::None)
        .map(|a| a.start + limits.bound + 1.0)
        .fold(o.seconds as f64, f64::max);
    sleep_until(&obs, tail);
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    drop(w);
    let end = obs.now();
    println!(
        "chaos: {} faults in {:.0} s (fault phase {:.0} s){}",
        applied.len(),
        end,
        started.elapsed().as_secs_f64(),
        if interrupted { "; INTERRUPTED" } else { "" }
    );

    let streams = take(&obs.streams);
    let probes = take(&obs.probes);
    let healthz = take(&obs.healthz);
    let rec = Record {
        streams: &streams,
        probes: &probes,
        healthz: &healthz,
        faults: &applied,
        end,
    };
    let mut v = verdict::judge(&rec, &limits);
    if interrupted {
        v.pass = false;
        v.failures.push("interrupted".into());
    }
    println!("\nchaos: timeline (seconds from the start of the fault phase)");
    print!("{}", verdict::timeline(&rec));
    println!();
    for f in &v.figures {
        println!("chaos: {f}");
    }
    println!("\n{}", v.table);
    if v.pass {
        println!("chaos: PASS (seed {})", o.seed);
    } else {
        for f in &v.failures {
            println!("chaos: FAIL: {f}");
        }
        let log = lab.lb_log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        println!("chaos: last lines of the lb log:");
        for l in tail.iter().rev() {
            println!("  {l}");
        }
        println!(
            "chaos: FAILED with seed {}; reproduce with: {}",
            o.seed,
            reproduce_command(o)
        );
    }
    let _ = lab.stop_lb();
    Ok(v)
}

/// Takes the records out of a watcher's list.
fn take<T>(m: &std::sync::Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Waits until `lb status` shows every configured backend of every
/// listener up.
fn wait_configured_up(lab: &Lab, limit: Duration) -> Result<()> {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < limit {
        if let Ok(st) = lab.lb_status() {
            let ls = st["listeners"].as_array().cloned().unwrap_or_default();
            let up = !ls.is_empty()
                && ls.iter().all(|l| {
                    l["backends"]
                        .as_array()
                        .is_some_and(|b| b.iter().all(|b| b["health"] == "up"))
                });
            if up {
                return Ok(());
            }
            last = st.to_string();
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("backends not up within {limit:?}: {last}")
}
