//! `lb run`: loads (or adopts) and attaches the data path, runs health
//! checks, keeps the maps in step with backend health, drains and reloads on
//! request, serves the HTTP and control APIs, and on SIGTERM/SIGINT detaches
//! (or, with `keep_attached`, leaves the data path running for the next run).

pub mod api;
pub mod control;
pub mod model;
pub mod reconciler;
pub mod status;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::dataplane::{counters, tables::MapState, tables::Written, Dataplane};
use control::{Request, Response};
use model::Model;
use reconciler::{Checked, Reconciler};
use status::{ReloadOutcome, Status};

/// How long a reload waits for the configuration file to be read.
const CONFIG_READ_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The owner of the model, the writer and the data path.
    pub reconciler: Reconciler<Dataplane>,
    /// Attached to every configured interface.
    pub attached: bool,
    /// Outcome of the last reload.
    pub last_reload: Option<ReloadOutcome>,
    /// Prometheus metrics the daemon records (check results, reloads).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Shared {
    /// The model in force.
    pub fn model(&self) -> &Model {
        &self.reconciler.model
    }

    /// The loaded data path.
    pub fn dataplane(&self) -> &Dataplane {
        &self.reconciler.maps
    }

    /// The status document.
    pub fn status(&self) -> Result<Status> {
        Status::collect(
            self.model(),
            self.dataplane(),
            self.attached,
            self.last_reload.clone(),
        )
    }
}

/// A configuration read finished (off the event loop), with whoever asked.
type Loaded = (
    Result<Config, String>,
    Instant,
    Option<oneshot::Sender<Response>>,
);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config, opts: RunOptions) -> Result<()> {
    check_forwarding()?;
    let mut dataplane = Dataplane::open(
        config.dataplane.conntrack_capacity,
        &config.dataplane.pin_path,
        opts.reset,
        opts.ebpf_debug,
    )?;
    let _ebpf_log = match opts.ebpf_debug {
        true => Some(crate::metrics::ebpf_log::spawn(&mut dataplane.ebpf)?),
        false => None,
    };
    let (model, written) = if dataplane.adopted {
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
    let (tx, mut rx) = mpsc::channel::<Checked>(1024);
    let mut reconciler = Reconciler::new(model, written, dataplane, tx);
    // Maps are complete before the program sees its first packet.
    reconciler.sync()?;
    for iface in &config.dataplane.interfaces {
        let dp = &mut reconciler.maps;
        if let Err(e) = dp.attach(iface, config.dataplane.xdp_mode) {
            if !dp.adopted {
                dp.detach_all();
            }
            return Err(e);
        }
    }
    reconciler.maps.finish_adoption();
    reconciler.start()?;
    let shared = Arc::new(Mutex::new(Shared {
        reconciler,
        attached: true,
        last_reload: None,
        metrics: Arc::new(crate::metrics::Metrics::new()),
    }));

    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("api.listen: binding {}", config.api.listen))?;
    info!(listen = %config.api.listen, "HTTP API listening");
    let api = tokio::spawn(api::serve(api_listener, shared.clone()));
    let control_listener = control::bind(&config.api.socket)?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<control::Envelope>(64);
    let control = tokio::spawn(control::serve(control_listener, ctl_tx));
    let (load_tx, mut load_rx) = mpsc::channel::<Loaded>(16);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut announced_ready = false;
    loop {
        tokio::select! {
            Some((key, outcome)) = rx.recv() => {
                let mut s = lock(&shared);
                let changed = s.reconciler.record(&key, &outcome);
                if let Some(i) = s.model().target_index(&key) {
                    s.metrics.record_check(s.model(), i, &outcome, changed);
                }
                if !announced_ready && s.model().first_round_done() {
                    announced_ready = true;
                    info!("ready: attached and first round of health checks done");
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                }
            }
            Some((req, reply)) = ctl_rx.recv() => {
                match req {
                    Request::Reload => start_reload(&opts, &load_tx, Some(reply)),
                    req => {
                        let resp = handle(&shared, req);
                        let _ = reply.send(resp);
                    }
                }
            }
            Some((result, t0, reply)) = load_rx.recv() => {
                let resp = apply_reload(&shared, result, t0);
                if let Some(reply) = reply {
                    let _ = reply.send(resp);
                }
            }
            _ = tick.tick() => {
                // Drain deadlines pass with time: the plan depends on `now`,
                // and the writer touches the maps only when it changed (or
                // retries a write that failed).
                lock(&shared).reconciler.tick(Instant::now());
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                start_reload(&opts, &load_tx, None);
            }
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    api.abort();
    control.abort();
    let _ = std::fs::remove_file(&config.api.socket);
    let mut s = lock(&shared);
    s.reconciler.stop_checkers();
    s.attached = false;
    let keep = opts.keep_attached || s.model().config.dataplane.keep_attached;
    if keep {
        s.reconciler.maps.keep_attached();
    } else {
        s.reconciler.maps.detach_all();
    }
    info!("stopped");
    Ok(())
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves one control request (reloads go through [`start_reload`]).
fn handle(shared: &Mutex<Shared>, req: Request) -> Response {
    match req {
        Request::Status => match lock(shared).status() {
            Ok(st) => Response::ok(serde_json::to_value(st).ok()),
            Err(e) => Response::err(format!("{e:#}")),
        },
        Request::Reload => Response::err("internal: reload is handled by the event loop"),
        Request::Drain { node } => {
            let mut s = lock(shared);
            match s.reconciler.model.drain(&node) {
                Ok(()) => sync_response(&mut s),
                Err(e) => Response::err(e),
            }
        }
        Request::Undrain { node } => {
            let mut s = lock(shared);
            match s.reconciler.model.undrain(&node) {
                Ok(()) => sync_response(&mut s),
                Err(e) => Response::err(e),
            }
        }
        Request::Flows { node } => {
            let s = lock(shared);
            if !s.model().config.backends.iter().any(|b| b.name == node) {
                return Response::err(format!("no backend named {node:?}"));
            }
            match counters::tracked_flows(s.dataplane()) {
                Ok(flows) => {
                    let n: u64 = s
                        .model()
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
    match s.reconciler.sync() {
        Ok(()) => Response::ok(None),
        Err(e) => Response::err(format!("updating the data path failed: {e:#}")),
    }
}

/// Reads the configuration file off the event loop (bounded in size and
/// time, see [`crate::config::read_bounded`]); the result comes back to
/// the loop, which keeps handling check results and requests meanwhile.
fn start_reload(
    opts: &RunOptions,
    load_tx: &mpsc::Sender<Loaded>,
    reply: Option<oneshot::Sender<Response>>,
) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    let t0 = Instant::now();
    let path = opts.config_path.clone();
    let load_tx = load_tx.clone();
    tokio::spawn(async move {
        let shown = path.display().to_string();
        let read = tokio::task::spawn_blocking(move || Config::load(&path));
        let result = match tokio::time::timeout(CONFIG_READ_TIMEOUT, read).await {
            Ok(Ok(r)) => r.map_err(|e: ConfigError| e.to_string()),
            Ok(Err(e)) => Err(format!("reading {shown}: {e}")),
            Err(_) => Err(format!(
                "reading {shown} took more than {CONFIG_READ_TIMEOUT:?}: gave up"
            )),
        };
        let _ = load_tx.send((result, t0, reply)).await;
    });
}

/// Applies a configuration read by [`start_reload`] as one transaction: an
/// invalid file, or a write to the maps that fails, leaves the running
/// configuration, checkers and maps as they were.
fn apply_reload(shared: &Mutex<Shared>, result: Result<Config, String>, t0: Instant) -> Response {
    let at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut s = lock(shared);
    let applied = result.and_then(|new| {
        warn_restart_only(&s.model().config, &new);
        s.reconciler
            .reload(new)
            .map_err(|e| format!("updating the data path failed: {e:#}"))
    });
    let response = match applied {
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
    };
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
