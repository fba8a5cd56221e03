//! Applying the faults of the schedule to a running lab, and what each
//! one did: when it started and was undone, which node it took away (the
//! streams of that node may end), whether a restart failed, and for how
//! long a gateway link was out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::config::{ChaosConfig, DEREGISTRATION_DELAY, SPARE_NODE};
use super::schedule::{mac_string, Fault, Link, Planned, Reload};
use super::streams::{connect_from, Family, Observations};
use crate::lab::{ns_exec, ChildId, Lab, KUBE_API_PORT};

/// Why a node's streams may end during a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Nothing may end.
    None,
    /// The node died or fell silent: its streams must end (or resume)
    /// within the dead-node bound.
    Dead,
    /// The node left the configuration: its streams are cut after the
    /// deregistration delay.
    Removed,
}

/// What one fault did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The planned fault.
    pub planned: Planned,
    /// When it started (s from the start of the chaos phase).
    pub start: f64,
    /// When it was undone (== start for one-shot faults).
    pub restored: f64,
    /// The node whose streams may end, and why.
    pub node: Option<String>,
    /// See [`Loss`].
    pub loss: Loss,
    /// A gateway link was out over this interval.
    pub link_out: Option<(f64, f64)>,
    /// A node or daemon restart that failed, with why.
    pub failed_restart: Option<String>,
    /// Any other step that did not do what it must (a valid reload
    /// refused, an invalid one accepted, a drain refused, ...).
    pub failed_step: Option<String>,
    /// Reused-port connections: (family, result).
    pub reuse: Vec<(Family, Result<String, String>)>,
}

/// The lab side of the run: the lab, the daemon's configuration and the
/// nodes' process ids.
pub struct Runner<'a> {
    /// The lab.
    pub lab: &'a Lab,
    /// The configuration in force.
    pub config: ChaosConfig,
    /// Node processes by index.
    pub nodes: BTreeMap<usize, ChildId>,
}

impl Runner<'_> {
    /// Applies `p` and returns what it did.
    pub fn apply(&mut self, obs: &Observations, p: Planned) -> Applied {
        let mut a = Applied {
            planned: p,
            start: obs.now(),
            restored: 0.0,
            node: None,
            loss: Loss::None,
            link_out: None,
            failed_restart: None,
            failed_step: None,
            reuse: Vec::new(),
        };
        if let Err(e) = self.apply_inner(obs, p.fault, &mut a) {
            a.failed_step.get_or_insert(format!("{e:#}"));
        }
        if a.restored < a.start {
            a.restored = obs.now();
        }
        a
    }

    fn apply_inner(&mut self, obs: &Observations, fault: Fault, a: &mut Applied) -> Result<()> {
        let lab = self.lab;
        match fault {
            Fault::KillNode { node, down } => {
                a.node = Some(lab.backend_name(node));
                a.loss = Loss::Dead;
                if let Some(id) = self.nodes.remove(&node) {
                    lab.kill_child(id)?;
                }
                thread::sleep(down);
                a.restored = obs.now();
                match lab.start_backend(node) {
                    Ok(id) => {
                        self.nodes.insert(node, id);
                    }
                    Err(e) => a.failed_restart = Some(format!("cp-0{node}: {e:#}")),
                }
            }
            Fault::SilenceNode { node, hold } => {
                a.node = Some(lab.backend_name(node));
                a.loss = Loss::Dead;
                silence(lab, node, true)?;
                thread::sleep(hold);
                a.restored = obs.now();
                silence(lab, node, false)?;
            }
            Fault::Reload(r) => self.reload(r, a)?,
            Fault::Drain { node, hold } => {
                self.drain(node, true)?;
                let t = obs.now();
                thread::sleep(hold);
                self.drain(node, false)?;
                drained_for(a, lab, node, obs.now() - t);
            }
            Fault::KillDaemon { down } => {
                lab.kill_lb()?;
                thread::sleep(down);
                a.restored = obs.now();
                if let Err(e) = lab.start_lb(&self.config.render(lab)) {
                    a.failed_restart = Some(format!("lb: {e:#}"));
                    // One more try, so that the rest of the run can go on.
                    thread::sleep(Duration::from_secs(1));
                    if lab.lb_state().is_none() {
                        lab.start_lb(&self.config.render(lab))?;
                    }
                }
            }
            Fault::Link { link, hold } => {
                let (gw, sw) = (lab.gateway_ns(), lab.switch_ns());
                let (ns, dev) = match link {
                    Link::Down => (gw.as_str(), "gwb"),
                    Link::Carrier => (sw.as_str(), "gw"),
                    Link::Mac { backend_side, mac } => {
                        let dev = if backend_side { "gwb" } else { "gwc" };
                        sh(
                            &gw,
                            &[
                                "ip",
                                "link",
                                "set",
                                "dev",
                                dev,
                                "address",
                                &mac_string(&mac),
                            ],
                        )?;
                        return Ok(());
                    }
                };
                sh(ns, &["ip", "link", "set", "dev", dev, "down"])?;
                thread::sleep(hold);
                a.restored = obs.now();
                sh(ns, &["ip", "link", "set", "dev", dev, "up"])?;
                a.link_out = Some((a.start, a.restored));
            }
            Fault::SynFlood { packets } => {
                let mut cmd = Command::new("hping3");
                cmd.args(["-q", "-S", "-p", &KUBE_API_PORT.to_string()])
                    .args(["-s", "1100", "-i", "u100", "-c", &packets.to_string()])
                    .arg(lab.vip().to_string());
                let log = lab.dir().join("hping3.log");
                let id = lab.spawn_in(&lab.client_ns(), &cmd, Some(&log))?;
                let limit =
                    Instant::now() + Fault::SynFlood { packets }.nominal() + Duration::from_secs(2);
                while lab.child_running(id) && Instant::now() < limit {
                    thread::sleep(Duration::from_millis(50));
                }
                lab.stop_child(id, Duration::from_secs(1))?;
            }
            Fault::PortReuse { node } => {
                self.reuse_round(a)?;
                self.drain(node, true)?;
                let t = obs.now();
                let before = a.reuse.len();
                self.reuse_round(a)?;
                let name = lab.backend_name(node);
                if a.reuse[before..]
                    .iter()
                    .any(|(_, r)| r.as_deref() == Ok(name.as_str()))
                {
                    a.failed_step = Some(format!("a new connection landed on drained {name}"));
                }
                self.drain(node, false)?;
                drained_for(a, lab, node, obs.now() - t);
                self.reuse_round(a)?;
            }
        }
        Ok(())
    }

    fn reload(&mut self, r: Reload, a: &mut Applied) -> Result<()> {
        let lab = self.lab;
        let mut next = self.config.clone();
        match r {
            Reload::Rename => next.renamed = !next.renamed,
            Reload::Timing => next.timing = (next.timing + 1) % 2,
            Reload::TargetPort => next.talos_to_kube_port = !next.talos_to_kube_port,
            Reload::AddBackend => next.spare_added = true,
            Reload::RemoveBackend => {
                next.spare_added = false;
                a.node = Some(lab.backend_name(SPARE_NODE));
                a.loss = Loss::Removed;
            }
            Reload::Invalid => {
                std::fs::write(lab.lb_config_path(), next.render_invalid(lab))?;
                let out = lab.lb_ctl(&["reload"])?;
                std::fs::write(lab.lb_config_path(), next.render(lab))?;
                if out.status.success() {
                    a.failed_step = Some("an invalid configuration was accepted".into());
                }
                return Ok(());
            }
        }
        std::fs::write(lab.lb_config_path(), next.render(lab))?;
        let out = lab.lb_ctl(&["reload"])?;
        if !out.status.success() {
            bail!(
                "reload {r:?} refused: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.config = next;
        Ok(())
    }

    /// `lb drain` (or `undrain`) of node `i` on both families.
    fn drain(&self, i: usize, on: bool) -> Result<()> {
        let verb = if on { "drain" } else { "undrain" };
        for name in [self.lab.backend_name(i), self.lab.backend_name6(i)] {
            let out = self.lab.lb_ctl(&[verb, &name])?;
            if !out.status.success() {
                bail!(
                    "lb {verb} {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }

    /// Ten connections per family from fixed client ports (the same ports
    /// every round).
    fn reuse_round(&self, a: &mut Applied) -> Result<()> {
        let lab = self.lab;
        let v4: SocketAddr = lab.vip_addr(KUBE_API_PORT).into();
        let v6 = lab.vip6_addr(KUBE_API_PORT);
        let got = lab.in_ns(&lab.client_ns(), || {
            let mut out = Vec::new();
            for port in 20_200..20_210u16 {
                for (fam, vip) in [(Family::V4, v4), (Family::V6, v6)] {
                    let r = connect_from(vip, port).map_err(|e| format!(":{port} {e:#}"));
                    out.push((fam, r));
                }
            }
            out
        })?;
        a.reuse.extend(got);
        Ok(())
    }
}

/// A drain that lasted longer than the deregistration delay (a round of
/// connections waiting out timeouts) cuts the node's flows by design: its
/// streams may end, as a removed node's.
fn drained_for(a: &mut Applied, lab: &Lab, node: usize, secs: f64) {
    if secs > DEREGISTRATION_DELAY.as_secs_f64() - 0.5 {
        a.node = Some(lab.backend_name(node));
        a.loss = Loss::Removed;
    }
}

/// Drops every frame to and from node `i`'s switch port (`on`), or lets
/// them through again: the node, its link and its sockets stay up, as in a
/// power cut seen from the network.
fn silence(lab: &Lab, i: usize, on: bool) -> Result<()> {
    let sw = lab.switch_ns();
    let table = format!("chaos_b{i}");
    if on {
        sh(&sw, &["nft", "add", "table", "bridge", &table])?;
        sh(
            &sw,
            &[
                "nft",
                &format!(
                    "add chain bridge {table} silence {{ type filter hook forward priority 0; policy accept; }}"
                ),
            ],
        )?;
        for dir in ["iifname", "oifname"] {
            sh(
                &sw,
                &[
                    "nft",
                    &format!("add rule bridge {table} silence {dir} \"b{i}\" drop"),
                ],
            )?;
        }
        Ok(())
    } else {
        sh(&sw, &["nft", "delete", "table", "bridge", &table])
    }
}

fn sh(ns: &str, args: &[&str]) -> Result<()> {
    let out = ns_exec(ns, args.iter().copied())?;
    if !out.status.success() {
        return Err(anyhow!("{args:?} in {ns} failed"));
    }
    Ok(())
}
