//! Configuration (`lb.toml`): parsing and validation.
//!
//! The file is read into private serde structs that mirror it key for key
//! (unknown keys are errors), then validated into the resolved types here:
//! defaults filled in, backend names turned into indices, per-listener health
//! overrides merged with `[health]`. Every validation problem names the key
//! path it concerns, e.g. `listener[0] (kubernetes-api).port`.
//!
//! See `examples/lb.toml` for a commented sample.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod check;
mod duration;
mod raw;
pub mod read;
pub mod snat;
mod validate;
mod validate_check;
mod validate_listeners;

pub use snat::{ListenerMode, PortRange, Snat};

pub use check::{
    Check, CheckKind, ClientAuth, HttpsParams, TlsParams, DEFAULT_EXPECT_STATUS,
    DEFAULT_HTTPS_PATH, KUBE_API_PORT, TALOS_API_PORT,
};

#[cfg(test)]
mod doc_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_check;
#[cfg(test)]
mod tests_snat;

/// Most listeners the data path holds.
pub const MAX_LISTENERS: usize = lb_common::MAX_LISTENERS as usize;
/// Most (listener, backend) pairs the data path holds.
pub const MAX_REALS: usize = lb_common::MAX_REALS as usize;
/// Most interfaces the data path redirects between.
pub const MAX_INTERFACES: usize = lb_common::MAX_INTERFACES as usize;
/// Default `dataplane.conntrack_capacity` (flows per direction).
pub const DEFAULT_CONNTRACK_CAPACITY: u32 = lb_common::DEFAULT_CONNTRACK_CAPACITY;
/// Smallest accepted `dataplane.conntrack_capacity`.
pub const MIN_CONNTRACK_CAPACITY: u32 = 1024;
/// Largest accepted `dataplane.conntrack_capacity`.
pub const MAX_CONNTRACK_CAPACITY: u32 = 16_777_216;
/// Largest accepted `healthy_threshold` / `unhealthy_threshold` (the smallest is 1).
pub const MAX_THRESHOLD: u32 = 100;
/// Default `api.listen`.
pub const DEFAULT_API_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9542));

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// `[dataplane]`: where and how the XDP program runs.
    pub dataplane: Dataplane,
    /// The full-NAT keys of `[dataplane]` (`mode`, `snat_ipv4`,
    /// `snat_ipv6`, `snat_ports`). Kept apart from [`Config::dataplane`]:
    /// unlike the rest of `[dataplane]`, a reload applies them.
    pub snat: Snat,
    /// `[api]`: the read-only HTTP API.
    pub api: Api,
    /// `[health]`: the health-check defaults (each listener has its effective copy).
    pub health: HealthParams,
    /// Every `[[backend]]`, in file order.
    pub backends: Vec<Backend>,
    /// Every `[[listener]]`, in file order.
    pub listeners: Vec<Listener>,
    /// Certificate and key files the configuration names, with the key
    /// naming each. Validation does no file I/O: the health module loads
    /// and checks them (`health::files::check`) when the configuration is
    /// applied and for `lb check`.
    #[serde(skip)]
    pub cert_files: Vec<CertFile>,
    /// The contents of [`Config::cert_files`], read (bounded) when the
    /// configuration is loaded for use; empty after validation alone.
    #[serde(skip)]
    pub files: read::FileContents,
}

/// A certificate or key file named by the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFile {
    /// Where it is written, e.g. `health.ca_file`.
    pub key: String,
    /// The file(s).
    pub file: CertFileKind,
}

/// What a [`CertFile`] must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertFileKind {
    /// CA certificates to verify servers with (`ca_file`).
    Ca(PathBuf),
    /// A client certificate and its key (`client_cert`, `client_key`); the
    /// key is the table prefix (`health`, `listener[0] (api).health`).
    ClientAuth(ClientAuth),
}

/// `[dataplane]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dataplane {
    /// Every NIC carrying client or backend traffic; the program is attached to each.
    pub interfaces: Vec<String>,
    /// How the XDP program is attached.
    pub xdp_mode: XdpMode,
    /// Conntrack map size (flows) of each direction.
    pub conntrack_capacity: u32,
    /// bpffs directory where maps and XDP links are pinned, so a restarted
    /// or upgraded daemon adopts the running data path.
    pub pin_path: PathBuf,
    /// Leave the data path attached (and pinned) when the daemon stops on SIGTERM.
    pub keep_attached: bool,
}

/// Default of `dataplane.pin_path`.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/lb";
/// Default of `api.socket`.
pub const DEFAULT_SOCKET: &str = "/run/lb/lb.sock";
/// Default of a listener's `deregistration_delay` (as an AWS NLB target group).
pub const DEFAULT_DEREGISTRATION_DELAY: Duration = Duration::from_secs(30);

/// How the XDP program is attached (`dataplane.xdp_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode where the driver supports it, generic (SKB) mode otherwise.
    #[default]
    Auto,
    /// Driver mode only; attaching fails if the driver lacks XDP support.
    Native,
    /// Generic (SKB) mode: works on any NIC, slower.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Api {
    /// Address the read-only HTTP API listens on.
    pub listen: SocketAddr,
    /// Unix socket of the control API (`lb status/reload/drain/undrain`), mode 0600.
    pub socket: PathBuf,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: DEFAULT_API_LISTEN,
            socket: PathBuf::from(DEFAULT_SOCKET),
        }
    }
}

/// Health-check parameters: `[health]`, or a listener's effective set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthParams {
    /// Time between the starts of two checks of one backend.
    #[serde(serialize_with = "duration::serialize")]
    pub interval: Duration,
    /// How long one check (a TCP connect) may take.
    #[serde(serialize_with = "duration::serialize")]
    pub timeout: Duration,
    /// Consecutive successes that bring a backend up.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a backend down.
    pub unhealthy_threshold: u32,
    /// Upper bound of a random extra delay before each check.
    #[serde(serialize_with = "duration::serialize")]
    pub jitter: Duration,
}

impl Default for HealthParams {
    fn default() -> Self {
        HealthParams {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            jitter: Duration::ZERO,
        }
    }
}

impl fmt::Display for HealthParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "interval={} timeout={} healthy={} unhealthy={}",
            duration::format(self.interval),
            duration::format(self.timeout),
            self.healthy_threshold,
            self.unhealthy_threshold
        )?;
        if !self.jitter.is_zero() {
            write!(f, " jitter={}", duration::format(self.jitter))?;
        }
        Ok(())
    }
}

/// One `[[backend]]`: a control-plane node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// Unique name.
    pub name: String,
    /// The node's address.
    pub address: IpAddr,
    /// Drained by the configuration (`drained = true`): no new flows on any
    /// listener, tracked flows kept for the deregistration delay. The drain
    /// of a gateway pair: both gateways read the same file.
    pub drained: bool,
}

/// One `[[listener]]`: a VIP:port balanced over backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Virtual IP clients connect to.
    pub vip: IpAddr,
    /// Port clients connect to.
    pub port: u16,
    /// Port on the backends (defaults to `port`).
    pub target_port: u16,
    /// `dnat` (the client's address is kept) or `fullnat` (the nodes see a
    /// source-NAT address); default `dataplane.mode`, else `dnat`.
    pub mode: ListenerMode,
    /// Indices into [`Config::backends`], ascending (i.e. in `[[backend]]` file order).
    pub backends: Vec<usize>,
    /// What to do when every backend is down.
    pub all_down: AllDown,
    /// How long a removed or drained backend keeps its tracked flows.
    #[serde(serialize_with = "duration::serialize")]
    pub deregistration_delay: Duration,
    /// Effective health-check parameters: `[health]` merged with `[listener.health]`.
    pub health: HealthParams,
    /// Effective health check: `[listener.health]` over `[health]` over the
    /// default for `target_port` (see [`CheckKind::default_for_port`]).
    pub check: Check,
}

/// What a listener does when every backend is down (`listener.all_down`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDown {
    /// Balance over every backend anyway: a health checker that is wrong (or
    /// cut off) should not take the control plane offline.
    #[default]
    FailOpen,
    /// Drop new connections.
    Drop,
}

impl fmt::Display for AllDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllDown::FailOpen => "fail_open",
            AllDown::Drop => "drop",
        })
    }
}

/// One validation problem: the key path it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Key path, e.g. `listener[0] (kubernetes-api).port`.
    pub key: String,
    /// What is wrong, e.g. `port 0 is not allowed`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not TOML, or not the expected shape: a wrong type, a missing key or an
    /// unknown key (the message names the key and the line).
    #[error("{message}")]
    Parse {
        /// The TOML parser's message.
        message: String,
    },
    /// Exactly one validation problem.
    #[error("{key}: {message}")]
    Invalid {
        /// Key path, e.g. `listener[0] (kubernetes-api).port`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Several validation problems, in file order.
    #[error("{}", format_problems(.problems))]
    Multiple {
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// A parse or validation error in a file read by [`Config::load`].
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: Box<ConfigError>,
    },
}

fn format_problems(problems: &[Problem]) -> String {
    let mut out = format!("{} problems:", problems.len());
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

impl ConfigError {
    /// The validation problems this error carries (empty for I/O and parse errors).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Invalid { key, message } => vec![Problem {
                key: key.clone(),
                message: message.clone(),
            }],
            ConfigError::Multiple { problems } => problems.clone(),
            ConfigError::InFile { error, .. } => error.problems(),
            ConfigError::Io { .. } | ConfigError::Parse { .. } => Vec::new(),
        }
    }

    /// One problem as [`ConfigError::Invalid`], several as [`ConfigError::Multiple`].
    pub fn from_problems(mut problems: Vec<Problem>) -> ConfigError {
        if problems.len() == 1 {
            let Problem { key, message } = problems.remove(0);
            ConfigError::Invalid { key, message }
        } else {
            ConfigError::Multiple { problems }
        }
    }
}

/// Largest configuration file read (checked before reading).
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Longest line of a TOML error message kept: the parser quotes the
/// offending line, which may be megabytes long.
const MAX_ERROR_LINE: usize = 200;

/// Cuts every line of `message` to [`MAX_ERROR_LINE`] characters.
fn truncate_lines(message: &str) -> String {
    message
        .lines()
        .map(|l| match l.char_indices().nth(MAX_ERROR_LINE) {
            Some((at, _)) => format!("{}… ({} bytes cut)", &l[..at], l.len() - at),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a configuration file without ever blocking on it or reading more
/// than [`MAX_CONFIG_BYTES`] (see [`read::read_bounded`]).
pub fn read_bounded(path: &Path) -> std::io::Result<String> {
    let data = read::read_bounded(path, MAX_CONFIG_BYTES, "a configuration")?;
    String::from_utf8(data)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

impl Config {
    /// Parses and validates the text of an `lb.toml`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|err| ConfigError::Parse {
            message: truncate_lines(err.to_string().trim_end()),
        })?;
        validate::validate(raw).map_err(ConfigError::from_problems)
    }

    /// Reads (see [`read_bounded`]), parses and validates an `lb.toml`;
    /// every error names the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_bounded(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text).map_err(|error| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(error),
        })
    }

    /// A human-readable, multi-line summary (what `lb check` prints).
    pub fn summary(&self) -> String {
        let dp = &self.dataplane;
        let mut out = format!(
            "interfaces: {} (xdp_mode={}, conntrack_capacity={} flows per direction)\n",
            dp.interfaces.join(", "),
            dp.xdp_mode,
            dp.conntrack_capacity
        );
        out.push_str(&format!("api: http://{} (read-only)\n", self.api.listen));
        out.push_str(&format!("health defaults: {}\n", self.health));
        out.push_str(&format!("backends ({}):\n", self.backends.len()));
        for b in &self.backends {
            out.push_str(&format!("  {} {}\n", b.name, b.address));
        }
        out.push_str(&format!("listeners ({}):\n", self.listeners.len()));
        for l in &self.listeners {
            let backends: Vec<String> = l
                .backends
                .iter()
                .filter_map(|&i| self.backends.get(i))
                .map(|b| format!("{} {}", b.name, b.address))
                .collect();
            out.push_str(&format!(
                "  {} {} -> {} mode={} backends [{}] all_down={} health: {}\n",
                l.name,
                SocketAddr::new(l.vip, l.port),
                l.target_port,
                l.mode,
                backends.join(", "),
                l.all_down,
                l.health
            ));
            out.push_str(&format!("    check: {}\n", l.check));
            if let Some(line) = self.fullnat_line(l) {
                out.push_str(&line);
            }
        }
        out
    }
}
