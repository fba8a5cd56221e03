//! `lb run`: loads (or adopts) and attaches the data path, runs health
//! checks, keeps the maps in step with backend health, drains and reloads on
//! request, serves the HTTP and control APIs, and on SIGTERM/SIGINT detaches
//! (or, with `keep_attached`, leaves the data path running for the next run).

mod alarms;
pub mod api;
mod api_slots;
mod checkers;
pub mod control;
pub mod events;
mod interfaces;
pub mod links;
pub mod model;
pub mod reconciler;
pub mod snapshot;
pub mod snat;
mod startup;
pub mod status;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::info;

use crate::config::{Config, ConfigError};
use events::{Command, Event};

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

/// Runs the daemon until SIGTERM or SIGINT: start-up (see [`startup`]),
/// then one event at a time (see [`events`]), publishing a snapshot after
/// each, then shutdown.
pub async fn run(config: Config, opts: RunOptions) -> Result<()> {
    let (mut d, mut inputs, tasks) = startup::start(config, opts).await?;
    let mut tick = tokio::time::interval(startup::TICK);
    loop {
        let ev = tokio::select! {
            Some((key, outcome)) = inputs.checks.recv() => {
                // A link event already queued comes first: a check that
                // failed because the link went down must find it held.
                while let Ok(ev) = inputs.links.try_recv() {
                    d.on(Event::Link(ev));
                }
                Event::Checked(key, outcome)
            }
            Some((req, reply)) = inputs.control.recv() => match Command::of(req) {
                Some(cmd) => Event::Command(cmd, Some(reply)),
                None => {
                    let _ = reply.send(control::Response::err("internal: request not handled by the event loop"));
                    continue;
                }
            },
            Some(loaded) = inputs.loaded.recv() => Event::ConfigLoaded(loaded),
            Some(ev) = inputs.links.recv() => Event::Link(ev),
            _ = tick.tick() => Event::Tick(Instant::now()),
            _ = inputs.hup.recv() => {
                info!("SIGHUP: reloading");
                Event::Command(Command::Reload, None)
            }
            _ = inputs.term.recv() => { info!("SIGTERM"); break; }
            _ = inputs.int.recv() => { info!("SIGINT"); break; }
        };
        d.on(ev);
        d.publish();
    }
    d.shut_down(tasks);
    info!("stopped");
    Ok(())
}
