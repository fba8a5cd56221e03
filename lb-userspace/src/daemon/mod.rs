//! `lb run`: loads (or adopts) and attaches the data path, runs health
//! checks, keeps the maps in step with backend health, drains and reloads on
//! request, serves the HTTP and control APIs, and on SIGTERM/SIGINT detaches
//! (or, with `keep_attached`, leaves the data path running for the next run).

pub mod api;
pub mod control;
pub mod model;
pub mod status;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::dataplane::{
    counters,
    tables::{MapState, Written},
    Dataplane,
};
use crate::health::{spawn_checker, CheckOutcome, CheckSpec, Probers};
use control::{Request, Response};
use model::Model;
use status::{ReloadOutcome, Status};

/// How `lb run` was asked to start and stop.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The configuration file (re-read on reload).
    pub config_path: PathBuf,
    /// Remove pinned maps and links first: start from a clean slate.
    pub reset: bool,
    /// Leave the data path attached on SIGTERM (overrides the config when set).
    pub keep_attached: bool,
    /// Turn on the XDP program's debug log (forwarded to the daemon's log).
    pub ebpf_debug: bool,
}

/// State shared between the event loop and the APIs.
pub struct Shared {
    /// Health, drains and plan.
    pub model: Model,
    /// The loaded program and maps.
    pub dataplane: Dataplane,
    /// What has been written to the maps.
    pub written: Written,
    /// Attached to every configured interface.
    pub attached: bool,
    /// Outcome of the last reload.
    pub last_reload: Option<ReloadOutcome>,
    /// Prometheus metrics the daemon records (check results, reloads).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Standing warnings for `lb status` / `GET /status` (e.g. pins that
    /// will not survive a restart).
    pub warnings: Vec<String>,
}

impl Shared {
    /// Rewrites the maps from the model (only what changed is written).
    fn sync(&mut self) -> Result<()> {
        let plan = self.model.plan();
        self.written.apply(&mut self.dataplane, &plan)
    }

    /// The status document.
    pub fn status(&self) -> Result<Status> {
        let mut st = Status::collect(
            &self.model,
            &self.dataplane,
            self.attached,
            self.last_reload.clone(),
        )?;
        st.warnings = self.warnings.clone();
        Ok(st)
    }
}

/// A health-check result tagged with the model generation it belongs to.
type Checked = ((u64, usize), CheckOutcome);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config, opts: RunOptions) -> Result<()> {
    check_forwarding()?;
    let mut dataplane = Dataplane::open(
        config.dataplane.conntrack_capacity,
        &config.dataplane.pin_path,
        opts.reset,
        opts.ebpf_debug,
    )?;
    // Checked once the pin path is mounted: a bpffs private to this mount
    // namespace loses every pin (and so every flow) at the next restart.
    let pin_warning = crate::dataplane::pin_scope::detect(&config.dataplane.pin_path)
        .warning(&config.dataplane.pin_path);
    if let Some(w) = &pin_warning {
        error!("{w}");
    }
    let _ebpf_log = match opts.ebpf_debug {
        true => Some(crate::metrics::ebpf_log::spawn(&mut dataplane.ebpf)?),
        false => None,
    };
    let (mut model, mut written) = if dataplane.adopted {
        let state = MapState::read(&dataplane)?;
        info!(
            listeners = state.listeners.len(),
            reals = state.reals.len(),
            "adopting the pinned data path: tracked flows and last known health kept"
        );
        (Model::adopt(config.clone(), &state), Written::adopt(&state))
    } else {
        (Model::new(config.clone()), Written::default())
    };
    // Maps are complete before the program sees its first packet.
    written.apply(&mut dataplane, &model.plan())?;
    let mut shared = Shared {
        model,
        dataplane,
        written,
        attached: false,
        last_reload: None,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        warnings: pin_warning.into_iter().collect(),
    };
    for iface in &config.dataplane.interfaces {
        if let Err(e) = shared.dataplane.attach(iface, config.dataplane.xdp_mode) {
            if !shared.dataplane.adopted {
                shared.dataplane.detach_all();
            }
            return Err(e);
        }
    }
    shared.dataplane.finish_adoption();
    shared.attached = true;
    let shared = Arc::new(Mutex::new(shared));

    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("api.listen: binding {}", config.api.listen))?;
    info!(listen = %config.api.listen, "HTTP API listening");
    let api = tokio::spawn(api::serve(api_listener, shared.clone()));
    let control_listener = control::bind(&config.api.socket)?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<control::Envelope>(64);
    let control = tokio::spawn(control::serve(control_listener, ctl_tx));

    let (tx, mut rx) = mpsc::channel::<Checked>(1024);
    let mut checkers = spawn_checkers(&shared, &tx);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut announced_ready = false;
    loop {
        tokio::select! {
            Some(((generation, target), outcome)) = rx.recv() => {
                let mut s = lock(&shared);
                if generation != s.model.generation {
                    continue; // a checker of a configuration replaced since
                }
                let changed = s.model.record(target, &outcome);
                s.metrics.record_check(&s.model, target, &outcome, changed);
                if changed {
                    if let Err(e) = s.sync() {
                        error!(error = %format!("{e:#}"), "updating the data path failed");
                    }
                }
                if !announced_ready && s.model.first_round_done() {
                    announced_ready = true;
                    info!("ready: attached and first round of health checks done");
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                }
            }
            Some((req, reply)) = ctl_rx.recv() => {
                let resp = handle(&shared, &opts, req, &tx, &mut checkers);
                let _ = reply.send(resp);
            }
            _ = tick.tick() => {
                // Drain deadlines pass with time: the plan depends on `now`,
                // and the writer touches the maps only when it changed.
                let mut s = lock(&shared);
                s.model.tick(Instant::now());
                if let Err(e) = s.sync() {
                    error!(error = %format!("{e:#}"), "updating the data path failed");
                }
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                let _ = handle(&shared, &opts, Request::Reload, &tx, &mut checkers);
            }
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    for c in checkers {
        c.abort();
    }
    api.abort();
    control.abort();
    let _ = std::fs::remove_file(&config.api.socket);
    let mut s = lock(&shared);
    s.attached = false;
    if opts.keep_attached || s.model.config.dataplane.keep_attached {
        s.dataplane.keep_attached();
    } else {
        s.dataplane.detach_all();
    }
    info!("stopped");
    Ok(())
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// One checker per target of the current generation.
fn spawn_checkers(shared: &Mutex<Shared>, tx: &mpsc::Sender<Checked>) -> Vec<JoinHandle<()>> {
    let s = lock(shared);
    let generation = s.model.generation;
    let mut probers = Probers::new();
    let handles = s
        .model
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (interval, timeout, _, _, jitter) = t.key.params;
            let spec = CheckSpec {
                prober: probers.prober(t.key.addr, &t.key.check),
                interval,
                timeout,
                jitter,
            };
            spawn_checker((generation, i), spec, tx.clone())
        })
        .collect();
    info!(
        listeners = s.model.config.listeners.len(),
        backends = s.model.config.backends.len(),
        checks = s.model.targets.len(),
        "health checks running"
    );
    handles
}

/// Serves one control request.
fn handle(
    shared: &Mutex<Shared>,
    opts: &RunOptions,
    req: Request,
    tx: &mpsc::Sender<Checked>,
    checkers: &mut Vec<JoinHandle<()>>,
) -> Response {
    match req {
        Request::Status => match lock(shared).status() {
            Ok(st) => Response::ok(serde_json::to_value(st).ok()),
            Err(e) => Response::err(format!("{e:#}")),
        },
        Request::Reload => reload(shared, opts, tx, checkers),
        Request::Drain { node } => {
            let mut s = lock(shared);
            match s.model.drain(&node) {
                Ok(()) => sync_response(&mut s),
                Err(e) => Response::err(e),
            }
        }
        Request::Undrain { node } => {
            let mut s = lock(shared);
            match s.model.undrain(&node) {
                Ok(()) => sync_response(&mut s),
                Err(e) => Response::err(e),
            }
        }
        Request::Flows { node } => {
            let s = lock(shared);
            if !s.model.config.backends.iter().any(|b| b.name == node) {
                return Response::err(format!("no backend named {node:?}"));
            }
            match counters::tracked_flows(&s.dataplane) {
                Ok(flows) => {
                    let n: u64 = s
                        .model
                        .listeners
                        .iter()
                        .flat_map(|l| l.reals.iter())
                        .filter(|r| r.backend == node)
                        .map(|r| flows.get(&r.id).copied().unwrap_or(0))
                        .sum();
                    Response::ok(Some(serde_json::json!({ "node": node, "flows": n })))
                }
                Err(e) => Response::err(format!("{e:#}")),
            }
        }
    }
}

fn sync_response(s: &mut Shared) -> Response {
    match s.sync() {
        Ok(()) => Response::ok(None),
        Err(e) => Response::err(format!("updating the data path failed: {e:#}")),
    }
}

/// Re-reads the configuration file and applies the difference. An invalid
/// file is rejected whole: the running configuration stays untouched.
fn reload(
    shared: &Mutex<Shared>,
    opts: &RunOptions,
    tx: &mpsc::Sender<Checked>,
    checkers: &mut Vec<JoinHandle<()>>,
) -> Response {
    let t0 = Instant::now();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    let at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let result = Config::load(&opts.config_path).map_err(|e| e.to_string());
    let response = {
        let mut s = lock(shared);
        match result {
            Err(e) => {
                error!(error = %e, "reload rejected: keeping the running configuration");
                s.metrics.record_reload(false);
                s.last_reload = Some(ReloadOutcome {
                    at_unix,
                    ok: false,
                    error: Some(e.clone()),
                    apply_ms: None,
                });
                Response::err(format!("reload rejected, running configuration kept: {e}"))
            }
            Ok(new) => {
                warn_restart_only(&s.model.config, &new);
                s.model.reload(new);
                match s.sync() {
                    Ok(()) => {
                        let ms = t0.elapsed().as_secs_f64() * 1000.0;
                        info!(apply_ms = ms, "reload applied");
                        s.metrics.record_reload(true);
                        s.last_reload = Some(ReloadOutcome {
                            at_unix,
                            ok: true,
                            error: None,
                            apply_ms: Some(ms),
                        });
                        Response::ok(Some(serde_json::json!({ "apply_ms": ms })))
                    }
                    Err(e) => {
                        error!(error = %format!("{e:#}"), "reload: updating the data path failed");
                        s.metrics.record_reload(false);
                        Response::err(format!("updating the data path failed: {e:#}"))
                    }
                }
            }
        }
    };
    if response.ok {
        for c in checkers.drain(..) {
            c.abort();
        }
        *checkers = spawn_checkers(shared, tx);
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    response
}

/// Settings that only take effect at start-up.
fn warn_restart_only(old: &Config, new: &Config) {
    if old.dataplane != new.dataplane {
        warn!("reload: [dataplane] changes take effect at the next start");
    }
    if old.api != new.api {
        warn!("reload: [api] changes take effect at the next start");
    }
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
