//! `lb run`: loads and attaches the data path, runs health checks, keeps the
//! maps in step with backend health, serves the API, detaches on SIGTERM/SIGINT.

pub mod api;
pub mod model;
pub mod status;

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::config::Config;
use crate::dataplane::{tables::Written, Dataplane};
use crate::health::{spawn_checker, CheckSpec};
use model::Model;

/// State shared between the event loop and the API.
pub struct Shared {
    /// Health and plan.
    pub model: Model,
    /// The loaded program and maps.
    pub dataplane: Dataplane,
    /// What has been written to the maps.
    pub written: Written,
    /// Attached to every configured interface.
    pub attached: bool,
}

impl Shared {
    /// Rewrites the maps from the model (only what changed is written).
    fn sync(&mut self) -> Result<()> {
        let plan = self.model.plan();
        self.written.apply(&mut self.dataplane, &plan)
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    check_forwarding()?;
    let mut dataplane = Dataplane::load(config.dataplane.conntrack_capacity)?;
    let model = Model::new(config.clone());
    let mut written = Written::default();
    // Maps are complete before the program sees its first packet.
    let mut model = model;
    written.apply(&mut dataplane, &model.plan())?;
    let mut shared = Shared {
        model,
        dataplane,
        written,
        attached: false,
    };
    for iface in &config.dataplane.interfaces {
        if let Err(e) = shared.dataplane.attach(iface, config.dataplane.xdp_mode) {
            shared.dataplane.detach_all();
            return Err(e);
        }
    }
    shared.attached = true;
    let shared = Arc::new(Mutex::new(shared));

    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("api.listen: binding {}", config.api.listen))?;
    info!(listen = %config.api.listen, "API listening");
    let api = tokio::spawn(api::serve(api_listener, shared.clone()));

    let (tx, mut rx) = mpsc::channel(1024);
    let mut checkers = Vec::new();
    {
        let s = shared.lock().unwrap_or_else(|e| e.into_inner());
        for (i, t) in s.model.targets.iter().enumerate() {
            let (interval, timeout, _, _, jitter) = t.key.params;
            let spec = CheckSpec {
                addr: t.key.addr,
                interval,
                timeout,
                jitter,
            };
            checkers.push(spawn_checker(i, spec, tx.clone()));
        }
        info!(
            listeners = s.model.config.listeners.len(),
            backends = s.model.config.backends.len(),
            checks = s.model.targets.len(),
            "running"
        );
    }
    drop(tx);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut announced_ready = false;
    loop {
        tokio::select! {
            Some((target, outcome)) = rx.recv() => {
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                if s.model.record(target, &outcome) {
                    if let Err(e) = s.sync() {
                        error!(error = %format!("{e:#}"), "updating the data path failed");
                    }
                }
                if !announced_ready && s.model.first_round_done() {
                    announced_ready = true;
                    info!("ready: attached and first round of health checks done");
                }
            }
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
        }
    }
    for c in checkers {
        c.abort();
    }
    api.abort();
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    s.dataplane.detach_all();
    s.attached = false;
    info!("stopped");
    Ok(())
}

/// The FIB lookup refuses to forward when IPv4 forwarding is off, and
/// packets handed to the kernel (neighbour not resolved yet) need it too.
fn check_forwarding() -> Result<()> {
    let v = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .context("reading /proc/sys/net/ipv4/ip_forward")?;
    if v.trim() != "1" {
        bail!("net.ipv4.ip_forward is 0: the gateway cannot forward balanced traffic; enable it (sysctl -w net.ipv4.ip_forward=1) and start again");
    }
    Ok(())
}
