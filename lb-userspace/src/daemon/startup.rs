//! Start-up of `lb run`: everything before the event loop. Checks that can
//! fail without touching the data path come first (forwarding, interfaces,
//! netlink); then the data path is opened (or adopted from pins), its maps
//! written completely before any interface is attached, the link state read
//! before the first check, and the readers (HTTP API, control socket, flow
//! scanner) and watchers started.
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{error, info, warn};

use super::control;
use super::events::{Daemon, Loaded, LoopState};
use super::interfaces;
use super::model::Model;
use super::reconciler::{Checked, Reconciler};
use super::snapshot::{FlowScanner, Readers, Snapshot};
use super::RunOptions;
use crate::config::Config;
use crate::dataplane::conntrack::Conntrack;
use crate::dataplane::linkwatch::{self, LinkEvent, LinkQuery};
use crate::dataplane::maps::Maps;
use crate::dataplane::tables::{MapState, Written};
use crate::dataplane::Dataplane;

/// The event loop's input channels and signals.
pub struct Inputs {
    /// Check results.
    pub checks: mpsc::Receiver<Checked>,
    /// Control requests that change state.
    pub control: mpsc::Receiver<control::Envelope>,
    /// Finished configuration reads.
    pub loaded: mpsc::Receiver<Loaded>,
    /// Netlink interface events.
    pub links: mpsc::Receiver<LinkEvent>,
    /// SIGTERM.
    pub term: Signal,
    /// SIGINT.
    pub int: Signal,
    /// SIGHUP (reload).
    pub hup: Signal,
}

/// Tasks that run beside the loop, stopped at shutdown.
pub struct Tasks {
    /// The HTTP API, the control socket, the flow scanner, the link watcher.
    pub handles: Vec<AbortHandle>,
    /// The control socket's path (removed at shutdown).
    pub socket: std::path::PathBuf,
    /// Forwards the program's debug log (left running to the end).
    pub ebpf_log: Option<JoinHandle<()>>,
}

/// Starts the daemon: returns the loop's state, its inputs, and the tasks
/// beside it.
pub async fn start(config: Config, opts: RunOptions) -> Result<(Daemon, Inputs, Tasks)> {
    preflight(&config)?;
    // Opened before anything is touched, like the interfaces' existence.
    let mut link_query =
        LinkQuery::open().context("opening a netlink socket to query interfaces")?;
    let (mut dataplane, pin_warning) = open_dataplane(&config, &opts)?;
    let ebpf_log = match opts.ebpf_debug {
        true => Some(crate::dataplane::ebpf_log::spawn(&mut dataplane.ebpf)?),
        false => None,
    };
    let readers_maps =
        Arc::new(Maps::open(&dataplane.ebpf).context("opening map handles for readers")?);
    let conntrack =
        Conntrack::open(&readers_maps).context("opening conntrack for the flow scanner")?;
    let (tx, checks) = mpsc::channel::<Checked>(1024);
    let mut rec = reconciler(&config, dataplane, tx)?;
    // Link state is known (and MAC filters current) before the first check.
    interfaces::refresh(&mut rec, &mut link_query);
    rec.start()?;
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (load_tx, loaded) = mpsc::channel::<Loaded>(16);
    let d = Daemon {
        rec,
        st: LoopState {
            attached: true,
            warnings: pin_warning.into_iter().collect(),
            ..LoopState::default()
        },
        metrics: Arc::new(crate::metrics::Metrics::new()),
        link_query,
        opts,
        load_tx,
        snap_tx,
        announced_ready: false,
    };
    d.publish();
    let (flows, scanner) = FlowScanner::spawn(conntrack);
    let readers = Readers {
        snapshot: snap_rx,
        flows,
        maps: readers_maps,
        metrics: d.metrics.clone(),
    };
    let (control, mut handles) = serve(&config, readers).await?;
    handles.push(scanner.abort_handle());
    let (link_tx, links) = mpsc::channel::<LinkEvent>(64);
    if let Ok(w) = linkwatch::spawn(link_tx).map_err(
        |e| warn!(error = %e, "cannot watch interfaces over netlink; checking them every tick only"),
    ) {
        handles.push(w.abort_handle());
    }
    let inputs = Inputs {
        checks,
        control,
        loaded,
        links,
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
    };
    let socket = config.api.socket.clone();
    Ok((
        d,
        inputs,
        Tasks {
            handles,
            socket,
            ebpf_log,
        },
    ))
}

/// Everything that can be checked before touching the data path: a
/// start-up that fails on a missing interface changes nothing.
fn preflight(config: &Config) -> Result<()> {
    check_forwarding(config)?;
    for w in crate::config::snat::accept_local_warnings(config) {
        warn!("{w}");
    }
    raise_nofile_limit();
    for iface in &config.dataplane.interfaces {
        crate::dataplane::loader::ifindex(iface)
            .with_context(|| format!("dataplane.interfaces: {iface}: nothing was changed"))?;
    }
    Ok(())
}

/// Opens (or adopts) the data path; returns it with a warning when its
/// pins will not survive a restart.
fn open_dataplane(config: &Config, opts: &RunOptions) -> Result<(Dataplane, Option<String>)> {
    let dp = &config.dataplane;
    let dataplane = Dataplane::open(
        dp.conntrack_capacity,
        &dp.pin_path,
        opts.reset,
        opts.ebpf_debug,
    )?;
    // Checked once the pin path is mounted: a bpffs private to this mount
    // namespace loses every pin (and so every flow) at the next restart.
    let pin_warning = crate::dataplane::pin_scope::detect(&dp.pin_path).warning(&dp.pin_path);
    if let Some(w) = &pin_warning {
        error!("{w}");
    }
    Ok((dataplane, pin_warning))
}

/// The reconciler of `config` on `dataplane` (adopting what pinned maps
/// hold), its plan written before any interface is attached.
fn reconciler(
    config: &Config,
    dataplane: Dataplane,
    tx: mpsc::Sender<Checked>,
) -> Result<Reconciler<Dataplane>> {
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
    let mut rec = Reconciler::new(model, written, dataplane, tx);
    // Maps are complete before the program sees its first packet.
    rec.write_initial()?;
    interfaces::attach_all(rec.maps_mut(), config)?;
    rec.maps_mut().finish_adoption();
    Ok(rec)
}

/// Starts the HTTP API and the control socket; returns the control
/// requests' channel and the two tasks.
async fn serve(
    config: &Config,
    readers: Readers,
) -> Result<(mpsc::Receiver<control::Envelope>, Vec<AbortHandle>)> {
    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("api.listen: binding {}", config.api.listen))?;
    info!(listen = %config.api.listen, "HTTP API listening");
    let api = tokio::spawn(super::api::serve(api_listener, readers.clone()));
    let control_listener = control::bind(&config.api.socket)?;
    let (ctl_tx, ctl_rx) = mpsc::channel::<control::Envelope>(64);
    let control = tokio::spawn(control::serve(control_listener, ctl_tx, readers));
    Ok((ctl_rx, vec![api.abort_handle(), control.abort_handle()]))
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
pub fn check_forwarding(config: &Config) -> Result<()> {
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

/// The loop's tick.
pub const TICK: Duration = Duration::from_millis(250);
