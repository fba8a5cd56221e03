//! The event loop's inputs as one type ([`Event`]) and what the loop does
//! with each ([`Daemon::on`]): every change to the daemon's state arrives
//! here, one at a time, and reaches the [`Reconciler`], its single owner.
//! After each event the loop publishes a new snapshot for the readers.
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::control::{Request, Response};
use super::model::TargetKey;
use super::reconciler::Reconciler;
use super::snapshot::Snapshot;
use super::startup::Tasks;
use super::status::ReloadOutcome;
use super::{interfaces, load_config, RunOptions, CONFIG_READ_TIMEOUT};
use crate::config::{Config, ConfigError};
use crate::dataplane::linkwatch::{LinkEvent, LinkQuery};
use crate::dataplane::Dataplane;
use crate::health::CheckOutcome;
use crate::metrics::Metrics;

/// A configuration read finished (off the event loop), with whoever asked.
pub type Loaded = (Result<Config, String>, Instant, Option<Reply>);

/// Where the answer to a control request goes.
pub type Reply = oneshot::Sender<Response>;

/// A command that changes the daemon's state (status and flow counts are
/// answered by the control task from snapshots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Drain a node across all its listeners.
    Drain(String),
    /// End a node's drain.
    Undrain(String),
    /// Re-read the configuration file and apply it.
    Reload,
}

impl Command {
    /// The command of a control request; `None` for a request the loop
    /// does not serve (status, flows).
    pub fn of(req: Request) -> Option<Command> {
        match req {
            Request::Drain { node } => Some(Command::Drain(node)),
            Request::Undrain { node } => Some(Command::Undrain(node)),
            Request::Reload => Some(Command::Reload),
            Request::Status | Request::Flows { .. } => None,
        }
    }
}

/// Everything that changes the daemon's state.
#[derive(Debug)]
pub enum Event {
    /// A check result, tagged with its target's identity.
    Checked(TargetKey, CheckOutcome),
    /// A command (control socket, or SIGHUP's reload without a reply).
    Command(Command, Option<Reply>),
    /// Time passed: drains expire, settle times pass, links are asked for.
    Tick(Instant),
    /// A netlink event about an interface.
    Link(LinkEvent),
    /// A configuration read (for a reload) finished.
    ConfigLoaded(Loaded),
}

/// What the event loop knows besides the reconciler's state, for snapshots.
#[derive(Default)]
pub struct LoopState {
    /// The program is attached (until shutdown).
    pub attached: bool,
    /// The last reload.
    pub last_reload: Option<ReloadOutcome>,
    /// Standing warnings (e.g. pins that will not survive a restart).
    pub warnings: Vec<String>,
}

/// The event loop's state: the reconciler and what events need beside it.
pub struct Daemon {
    /// The single owner of the model, the writer and the maps.
    pub rec: Reconciler<Dataplane>,
    /// For snapshots.
    pub st: LoopState,
    /// Counters of checks and reloads.
    pub metrics: Arc<Metrics>,
    /// Asks the kernel about interfaces at every tick.
    pub link_query: LinkQuery,
    /// How the daemon was started (the configuration path).
    pub opts: RunOptions,
    /// Where configuration reads report back.
    pub load_tx: mpsc::Sender<Loaded>,
    /// Where snapshots are published.
    pub snap_tx: watch::Sender<Arc<Snapshot>>,
    /// Readiness was announced to systemd.
    pub announced_ready: bool,
}

impl Daemon {
    /// Handles one event.
    pub fn on(&mut self, ev: Event) {
        match ev {
            Event::Checked(key, outcome) => self.checked(&key, &outcome),
            Event::Command(Command::Reload, reply) => self.start_reload(reply),
            Event::Command(cmd, reply) => {
                let result = match cmd {
                    Command::Drain(node) => self.rec.drain(&node),
                    Command::Undrain(node) => self.rec.undrain(&node),
                    Command::Reload => unreachable!("handled above"),
                };
                let resp = match result {
                    Ok(()) => Response::ok(None),
                    Err(e) => Response::err(e),
                };
                if let Some(reply) = reply {
                    let _ = reply.send(resp);
                }
            }
            Event::Tick(now) => {
                // Link events can be lost, and an XDP program detached
                // through the bpf syscall sends none: ask the kernel.
                interfaces::refresh(&mut self.rec, &mut self.link_query);
                // Drain deadlines and settle times pass with time: the plan
                // depends on `now`, and the writer touches the maps only
                // when it changed (or retries a write that failed).
                self.rec.tick(now);
            }
            Event::Link(ev) => interfaces::on_event(&mut self.rec, ev),
            Event::ConfigLoaded((result, t0, reply)) => {
                let resp = self.apply_reload(result, t0);
                if let Some(reply) = reply {
                    let _ = reply.send(resp);
                }
            }
        }
    }

    /// Stops the tasks beside the loop and the checkers, publishes the
    /// last snapshot, and leaves the data path attached or detaches it.
    pub fn shut_down(mut self, tasks: Tasks) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        for t in &tasks.handles {
            t.abort();
        }
        let _ = std::fs::remove_file(&tasks.socket);
        self.rec.stop_checkers();
        self.st.attached = false;
        self.publish();
        let keep = self.opts.keep_attached || self.rec.model().config().dataplane.keep_attached;
        self.rec.leave_dataplane(keep);
    }

    fn checked(&mut self, key: &TargetKey, outcome: &CheckOutcome) {
        let transition = self.rec.record(key, outcome);
        let model = self.rec.model();
        if let Some(t) = model.target_index(key).map(|i| &model.targets()[i]) {
            self.metrics
                .record_check(&t.backend, t.key.addr, outcome, transition);
        }
        if !self.announced_ready && model.first_round_done() {
            self.announced_ready = true;
            info!("ready: attached and first round of health checks done");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        }
    }

    /// Publishes the current state as a new snapshot.
    pub fn publish(&self) {
        let mut snap = self.rec.snapshot();
        snap.attached = self.st.attached;
        snap.last_reload = self.st.last_reload.clone();
        snap.warnings = self.st.warnings.clone();
        self.snap_tx.send_if_modified(|cur| {
            if **cur == snap {
                false
            } else {
                *cur = Arc::new(snap);
                true
            }
        });
    }

    /// Reads the configuration file off the event loop (bounded in size
    /// and time, see [`crate::config::read_bounded`]); the result comes
    /// back as [`Event::ConfigLoaded`], while the loop keeps handling
    /// check results and requests.
    fn start_reload(&self, reply: Option<Reply>) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        let t0 = Instant::now();
        let path = self.opts.config_path.clone();
        let load_tx = self.load_tx.clone();
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

    /// Applies a configuration read by [`Daemon::start_reload`] as one
    /// transaction: an invalid file, a write to the maps that fails, or a
    /// reload while the reconciler holds leaves the running configuration,
    /// checkers and maps as they were; the outcome is reported (response,
    /// status, metric).
    fn apply_reload(&mut self, result: Result<Config, String>, t0: Instant) -> Response {
        let at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let applied = result.and_then(|new| {
            // A first IPv6 listener needs IPv6 forwarding as start-up does.
            super::startup::check_forwarding(&new).map_err(|e| format!("{e:#}"))?;
            for w in crate::config::snat::accept_local_warnings(&new) {
                warn!("reload: {w}");
            }
            warn_restart_only(self.rec.model().config(), &new);
            self.rec.reload(new)
        });
        let (ok, error, apply_ms) = match &applied {
            Err(e) => {
                error!(error = %e, "reload rejected: keeping the running configuration");
                (false, Some(e.clone()), None)
            }
            Ok(()) => {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                info!(apply_ms = ms, "reload applied");
                (true, None, Some(ms))
            }
        };
        self.metrics.record_reload(ok);
        self.st.last_reload = Some(ReloadOutcome {
            at_unix,
            ok,
            error,
            apply_ms,
        });
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        match (applied, apply_ms) {
            (Err(e), _) => {
                Response::err(format!("reload rejected, running configuration kept: {e}"))
            }
            (Ok(()), ms) => {
                Response::ok(Some(serde_json::json!({ "apply_ms": ms.unwrap_or(0.0) })))
            }
        }
    }
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
