//! `lb run`: loads (or adopts) and attaches the data path, runs health
//! checks, keeps the maps in step with backend health, drains and reloads on
//! request, serves the HTTP and control APIs, and on SIGTERM/SIGINT detaches
//! (or, with `keep_attached`, leaves the data path running for the next run).

mod alarms;
pub mod api;
mod api_slots;
pub mod control;
mod interfaces;
pub mod links;
pub mod model;
pub mod reconciler;
pub mod snapshot;
pub mod snat;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::dataplane::linkwatch::{self, LinkEvent, LinkQuery};
use crate::dataplane::maps::Maps;
use crate::dataplane::{tables::MapState, tables::Written, Dataplane};
use crate::metrics::kernel::Conntrack;
use control::{Request, Response};
use model::Model;
use reconciler::{Checked, Reconciler};
use snapshot::{FlowScanner, Readers, Snapshot};
use status::ReloadOutcome;

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

/// What the event loop knows besides the reconciler's state, for snapshots.
#[derive(Default)]
struct LoopState {
    attached: bool,
    last_reload: Option<ReloadOutcome>,
    /// Standing warnings (e.g. pins that will not survive a restart).
    warnings: Vec<String>,
}

/// Publishes the current state as a new snapshot.
fn publish(rec: &Reconciler<Dataplane>, st: &LoopState, tx: &watch::Sender<Arc<Snapshot>>) {
    let mut snap = Snapshot::of(&rec.model, rec.written.current());
    snap.attached = st.attached;
    snap.interfaces = rec.maps.attachments();
    snap.missing_interfaces = rec
        .model
        .config()
        .dataplane
        .interfaces
        .iter()
        .filter(|i| !snap.interfaces.iter().any(|(a, _)| a == *i))
        .cloned()
        .collect();
    snap.links = rec.links().snapshot(Instant::now());
    snap.checks_held = rec.held().map(str::to_string);
    snap.last_reload = st.last_reload.clone();
    snap.dataplane_notes = rec.maps.layout_notes.clone();
    snap.warnings = st.warnings.clone();
    snap.write_failed = rec.written.is_dirty();
    tx.send_if_modified(|cur| {
        if **cur == snap {
            false
        } else {
            *cur = Arc::new(snap);
            true
        }
    });
}

/// Reads and validates the configuration at `path` (see [`Config::load`]),
/// then loads and checks the certificate files it names (see
/// [`crate::health::files`]) and compares the source-NAT ports with this
/// host's ephemeral ports ([`crate::config::snat::check_host`]): what `lb
/// run`, a reload and `lb check` apply.
pub fn load_config(path: &std::path::Path) -> Result<Config, ConfigError> {
    let mut config = Config::load(path)?;
    crate::health::files::load(&mut config).map_err(|error| ConfigError::InFile {
        path: path.to_owned(),
        error: Box::new(error),
    })?;
    // The source-NAT ports against this gateway's own ephemeral ports.
    crate::config::snat::check_host(&config).map_err(|p| ConfigError::InFile {
        path: path.to_owned(),
        error: Box::new(ConfigError::from_problems(vec![p])),
    })?;
    Ok(config)
}

/// A configuration read finished (off the event loop), with whoever asked.
type Loaded = (
    Result<Config, String>,
    Instant,
    Option<oneshot::Sender<Response>>,
);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config, opts: RunOptions) -> Result<()> {
    check_forwarding(&config)?;
    for w in crate::config::snat::accept_local_warnings(&config) {
        warn!("{w}");
    }
    raise_nofile_limit();
    // Everything that can be checked before touching the data path is: a
    // start-up that fails on a missing interface changes nothing.
    for iface in &config.dataplane.interfaces {
        crate::dataplane::loader::ifindex(iface)
            .with_context(|| format!("dataplane.interfaces: {iface}: nothing was changed"))?;
    }
    // Opened before anything is touched, like the interfaces' existence.
    let mut link_query =
        LinkQuery::open().context("opening a netlink socket to query interfaces")?;
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
        true => Some(crate::dataplane::ebpf_log::spawn(&mut dataplane.ebpf)?),
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
    let readers_maps =
        Arc::new(Maps::open(&dataplane.ebpf).context("opening map handles for readers")?);
    let conntrack =
        Conntrack::open(&readers_maps).context("opening conntrack for the flow scanner")?;
    let (tx, mut rx) = mpsc::channel::<Checked>(1024);
    let mut rec = Reconciler::new(model, written, dataplane, tx);
    // Maps are complete before the program sees its first packet.
    rec.sync()?;
    interfaces::attach_all(&mut rec.maps, &config)?;
    rec.maps.finish_adoption();
    // Link state is known (and MAC filters current) before the first check.
    interfaces::refresh(&mut rec, &mut link_query);
    rec.start()?;
    let mut st = LoopState {
        attached: true,
        warnings: pin_warning.into_iter().collect(),
        ..LoopState::default()
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    publish(&rec, &st, &snap_tx);
    let (flows, scanner) = FlowScanner::spawn(conntrack);
    let readers = Readers {
        snapshot: snap_rx,
        flows,
        maps: readers_maps,
        metrics: metrics.clone(),
    };

    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("api.listen: binding {}", config.api.listen))?;
    info!(listen = %config.api.listen, "HTTP API listening");
    let api = tokio::spawn(api::serve(api_listener, readers.clone()));
    let control_listener = control::bind(&config.api.socket)?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<control::Envelope>(64);
    let control = tokio::spawn(control::serve(control_listener, ctl_tx, readers));
    let (load_tx, mut load_rx) = mpsc::channel::<Loaded>(16);
    let (link_tx, mut link_rx) = mpsc::channel::<LinkEvent>(64);
    let linkwatch = linkwatch::spawn(link_tx)
        .map_err(|e| warn!(error = %e, "cannot watch interfaces over netlink; checking them every tick only"))
        .ok();

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut announced_ready = false;
    loop {
        tokio::select! {
            Some((key, outcome)) = rx.recv() => {
                // A link event already queued comes first: a check that
                // failed because the link went down must find it held.
                while let Ok(ev) = link_rx.try_recv() {
                    interfaces::on_event(&mut rec, ev);
                }
                let transition = rec.record(&key, &outcome);
                if let Some(t) = rec.model.target_index(&key).map(|i| &rec.model.targets()[i]) {
                    metrics.record_check(&t.backend, t.key.addr, &outcome, transition);
                }
                if !announced_ready && rec.model.first_round_done() {
                    announced_ready = true;
                    info!("ready: attached and first round of health checks done");
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                }
            }
            Some((req, reply)) = ctl_rx.recv() => {
                match req {
                    Request::Reload => start_reload(&opts, &load_tx, Some(reply)),
                    req => {
                        let _ = reply.send(handle(&mut rec, req));
                    }
                }
            }
            Some((result, t0, reply)) = load_rx.recv() => {
                let resp = apply_reload(&mut rec, &mut st, &metrics, result, t0);
                if let Some(reply) = reply {
                    let _ = reply.send(resp);
                }
            }
            Some(ev) = link_rx.recv() => interfaces::on_event(&mut rec, ev),
            _ = tick.tick() => {
                // Link events can be lost, and an XDP program detached
                // through the bpf syscall sends none: ask the kernel.
                interfaces::refresh(&mut rec, &mut link_query);
                // Drain deadlines and settle times pass with time: the plan
                // depends on `now`, and the writer touches the maps only
                // when it changed (or retries a write that failed).
                rec.tick(Instant::now());
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                start_reload(&opts, &load_tx, None);
            }
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
        }
        publish(&rec, &st, &snap_tx);
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    api.abort();
    control.abort();
    scanner.abort();
    if let Some(w) = linkwatch {
        w.abort();
    }
    let _ = std::fs::remove_file(&config.api.socket);
    rec.stop_checkers();
    st.attached = false;
    publish(&rec, &st, &snap_tx);
    let keep = opts.keep_attached || rec.model.config().dataplane.keep_attached;
    if keep {
        rec.maps.keep_attached();
    } else {
        rec.maps.detach_all();
    }
    info!("stopped");
    Ok(())
}

/// Serves one control request that changes state (status and flow counts
/// are answered by the control task from snapshots; reloads go through
/// [`start_reload`]).
fn handle(rec: &mut Reconciler<Dataplane>, req: Request) -> Response {
    let changed = match req {
        Request::Drain { node } => rec.model.drain(&node),
        Request::Undrain { node } => rec.model.undrain(&node),
        Request::Status | Request::Flows { .. } | Request::Reload => {
            return Response::err("internal: request not handled by the event loop")
        }
    };
    match changed {
        Err(e) => Response::err(e),
        Ok(()) => match rec.sync() {
            Ok(()) => Response::ok(None),
            Err(e) => Response::err(format!("updating the data path failed: {e:#}")),
        },
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
        let read = tokio::task::spawn_blocking(move || load_config(&path));
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
/// configuration, checkers and maps as they were; the outcome is reported
/// (response, status, metric).
fn apply_reload(
    rec: &mut Reconciler<Dataplane>,
    st: &mut LoopState,
    metrics: &crate::metrics::Metrics,
    result: Result<Config, String>,
    t0: Instant,
) -> Response {
    let at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let applied = result.and_then(|new| {
        // A first IPv6 listener needs IPv6 forwarding as start-up does.
        check_forwarding(&new).map_err(|e| format!("{e:#}"))?;
        for w in crate::config::snat::accept_local_warnings(&new) {
            warn!("reload: {w}");
        }
        warn_restart_only(rec.model.config(), &new);
        rec.reload(new)
            .map_err(|e| format!("updating the data path failed: {e:#}"))
    });
    let response = match applied {
        Err(e) => {
            error!(error = %e, "reload rejected: keeping the running configuration");
            metrics.record_reload(false);
            st.last_reload = Some(ReloadOutcome {
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
            metrics.record_reload(true);
            st.last_reload = Some(ReloadOutcome {
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

/// Raises the soft descriptor limit to the hard one: health checks need one
/// descriptor per check in flight, and the APIs cap their own connections.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, writable rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The FIB lookup refuses to forward when forwarding is off for the
/// packet's family, and packets handed to the kernel (neighbour not resolved
/// yet) need it too: IPv4 always, IPv6 when a listener has an IPv6 VIP.
/// Checked at start-up and at every reload.
fn check_forwarding(config: &Config) -> Result<()> {
    let mut needed = vec![("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward")];
    if config.listeners.iter().any(|l| l.vip.is_ipv6()) {
        needed.push((
            "net.ipv6.conf.all.forwarding",
            "/proc/sys/net/ipv6/conf/all/forwarding",
        ));
    }
    for (name, path) in needed {
        let v = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        if v.trim() != "1" {
            bail!("{name} is 0: the gateway cannot forward balanced traffic; enable it (sysctl -w {name}=1) and start again");
        }
    }
    Ok(())
}
