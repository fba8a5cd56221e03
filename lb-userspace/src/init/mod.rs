//! `lb init`: generates a checked high-availability setup from a few flags:
//! the `lb.toml` both gateways run, each gateway's `keepalived.conf` (and
//! notify script with `--notify-*`), and the steps to apply by hand
//! (printed). Two layouts: routed (DNAT, the gateways are the nodes'
//! router; routes change on the nodes) and `--one-arm` (full-NAT on the
//! nodes' LAN; nothing changes on the nodes). See [`layout`] for what
//! each refuses.
//!
//! Nothing is written unless everything validates: the files are rendered
//! in memory, `lb.toml` goes through the same validation as `lb check`, the
//! keepalived files are written next to their destination under a temporary
//! name and checked with `keepalived -t` (where keepalived is installed),
//! and only then renamed into place.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::{Config, XdpMode, DEFAULT_API_LISTEN};

pub mod keepalived;
pub mod keepalived_check;
pub mod layout;
pub mod lb_toml;
pub mod notify;
pub mod spec;
pub mod steps;

#[cfg(test)]
mod one_arm_tests;
#[cfg(test)]
mod tests;

pub use spec::{Cidr, Gateway, Host, Layout, Notify, OneArm, Routed, Spec};
pub use steps::instructions;

/// Flags of `lb init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// A control-plane node, NAME=ADDRESS (repeat for each node).
    #[arg(long = "node", value_name = "NAME=ADDRESS", required = true)]
    pub nodes: Vec<Host>,
    /// A worker running the ingress controller, NAME=ADDRESS (repeat);
    /// adds listeners 80 and 443 balanced over the workers.
    #[arg(long = "worker", value_name = "NAME=ADDRESS")]
    pub workers: Vec<Host>,
    /// Add the Talos API listener for workers: VIP:50001 -> nodes:50000.
    #[arg(long)]
    pub talos_workers_listener: bool,
    /// The VIP clients connect to.
    #[arg(long)]
    pub vip: Ipv4Addr,
    /// One-arm layout: the gateways sit on the nodes' LAN with one interface
    /// (--interface), every listener is full-NAT from --snat-address, and
    /// nothing changes on the nodes or the clients. The client's address is
    /// not preserved.
    #[arg(long, requires_all = ["interface", "snat_address"])]
    pub one_arm: bool,
    /// With --one-arm: the gateways' one interface, on the nodes' LAN.
    #[arg(long, requires = "one_arm")]
    pub interface: Option<String>,
    /// With --one-arm: the source-NAT address the nodes see, a free address
    /// on the LAN that keepalived moves with the VIP.
    #[arg(long, value_name = "ADDRESS", requires = "one_arm")]
    pub snat_address: Option<Ipv4Addr>,
    /// Routed layout: the gateways' client-side interface.
    #[arg(long, required_unless_present = "one_arm", conflicts_with = "one_arm")]
    pub client_interface: Option<String>,
    /// Routed layout: the gateways' backend-side interface (the nodes' network).
    #[arg(long, required_unless_present = "one_arm", conflicts_with = "one_arm")]
    pub backend_interface: Option<String>,
    /// Routed layout: floating client-side address with prefix, e.g.
    /// 198.51.100.1/24: the clients' next hop to the VIP.
    #[arg(
        long,
        value_name = "ADDRESS/PREFIX",
        required_unless_present = "one_arm",
        conflicts_with = "one_arm"
    )]
    pub client_floating: Option<Cidr>,
    /// Routed layout: floating backend-side address with prefix, e.g.
    /// 192.0.2.1/24: the nodes route replies to clients through it.
    #[arg(
        long,
        value_name = "ADDRESS/PREFIX",
        required_unless_present = "one_arm",
        conflicts_with = "one_arm"
    )]
    pub backend_floating: Option<Cidr>,
    /// This gateway (the preferred master): NAME=CLIENT_ADDRESS,BACKEND_ADDRESS
    /// (routed) or NAME=ADDRESS (--one-arm).
    #[arg(long = "gateway", value_name = "NAME=ADDRESS[,BACKEND]")]
    pub this: Gateway,
    /// The other gateway of the pair, in the form of --gateway. Without it
    /// only lb.toml is generated (a single gateway).
    #[arg(long, value_name = "NAME=ADDRESS[,BACKEND]")]
    pub peer: Option<Gateway>,
    /// Routed layout: a network the clients are in (repeat); the nodes get
    /// a route to it via the backend-side floating address. Default: a
    /// default route.
    #[arg(
        long = "client-network",
        value_name = "ADDRESS/PREFIX",
        conflicts_with = "one_arm"
    )]
    pub client_networks: Vec<Cidr>,
    /// keepalived runs CMD when this gateway becomes master (written into a
    /// notify script); `{gateway}` stands for the gateway's name, e.g.
    /// 'hcloud floating-ip assign lb-vip {gateway}' on Hetzner Cloud.
    #[arg(long, value_name = "CMD")]
    pub notify_master: Option<String>,
    /// keepalived runs CMD when this gateway becomes backup.
    #[arg(long, value_name = "CMD")]
    pub notify_backup: Option<String>,
    /// keepalived runs CMD when this gateway enters FAULT (lb unhealthy).
    #[arg(long, value_name = "CMD")]
    pub notify_fault: Option<String>,
    /// Where the notify scripts are installed on the gateways.
    #[arg(long, value_name = "DIR", default_value = spec::DEFAULT_SCRIPT_DIR)]
    pub script_dir: PathBuf,
    /// `[dataplane] xdp_mode` of lb.toml: auto, native or generic.
    #[arg(long, default_value = "auto", value_parser = parse_xdp_mode)]
    pub xdp_mode: XdpMode,
    /// Full path of the lb binary keepalived runs (`lb healthz`); default:
    /// this binary when it is installed in a system directory (/usr/bin,
    /// /usr/local/bin, …), else /usr/bin/lb, where the package puts it.
    #[arg(long)]
    pub lb_bin: Option<PathBuf>,
    /// `[api] listen` of lb.toml, asked by `lb healthz`.
    #[arg(long, default_value_t = DEFAULT_API_LISTEN)]
    pub api_listen: SocketAddr,
    /// VRRP advertisement interval (e.g. "500ms"); a backup takes over
    /// after about 3 of them. Default: 200ms, the shortest with a safety
    /// margin in the lab (see docs/ha.md).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub advert_int: Option<Duration>,
    /// VRRP router id of the client side; the backend side uses the next one.
    #[arg(long, default_value_t = spec::DEFAULT_VRID)]
    pub vrid: u8,
    /// The preferred master does not take the addresses back when it returns.
    #[arg(long)]
    pub nopreempt: bool,
    /// Check every listener with a TCP connect only.
    #[arg(long)]
    pub tcp_checks: bool,
    /// Directory to write lb.toml and keepalived-NAME.conf into.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
}

impl InitArgs {
    /// The generation spec (defaults filled in).
    pub fn spec(&self) -> Result<Spec> {
        let current = std::env::current_exe().and_then(|p| p.canonicalize()).ok();
        let lb_bin = track_script_bin(self.lb_bin.as_deref(), current.as_deref());
        let layout = if self.one_arm {
            Layout::OneArm(OneArm {
                interface: self
                    .interface
                    .clone()
                    .context("--one-arm needs --interface")?,
                snat: self
                    .snat_address
                    .context("--one-arm needs --snat-address")?,
            })
        } else {
            let need = |flag: &str| format!("{flag} is needed (or pass --one-arm)");
            Layout::Routed(Routed {
                client_interface: self
                    .client_interface
                    .clone()
                    .with_context(|| need("--client-interface"))?,
                backend_interface: self
                    .backend_interface
                    .clone()
                    .with_context(|| need("--backend-interface"))?,
                client_floating: self
                    .client_floating
                    .with_context(|| need("--client-floating"))?,
                backend_floating: self
                    .backend_floating
                    .with_context(|| need("--backend-floating"))?,
                client_networks: self.client_networks.clone(),
            })
        };
        let mut spec = Spec::new(
            self.nodes.clone(),
            self.vip,
            layout,
            self.this.clone(),
            self.peer.clone(),
            lb_bin,
        );
        spec.workers = self.workers.clone();
        spec.talos_workers_listener = self.talos_workers_listener;
        spec.api_listen = self.api_listen;
        spec.xdp_mode = self.xdp_mode;
        spec.advert_int = self.advert_int.unwrap_or(spec::DEFAULT_ADVERT_INT);
        spec.vrid = self.vrid;
        spec.nopreempt = self.nopreempt;
        spec.tcp_checks = self.tcp_checks;
        spec.notify = Notify {
            master: self.notify_master.clone(),
            backup: self.notify_backup.clone(),
            fault: self.notify_fault.clone(),
        };
        spec.script_dir = self.script_dir.clone();
        Ok(spec)
    }
}

fn parse_xdp_mode(s: &str) -> Result<XdpMode, String> {
    match s {
        "auto" => Ok(XdpMode::Auto),
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        _ => Err(format!("{s:?}: expected auto, native or generic")),
    }
}

/// Where the Debian package (`cargo xtask dist`) installs `lb`, and so the
/// binary its systemd unit and, by default, keepalived's track script run.
pub const INSTALLED_BIN: &str = "/usr/bin/lb";

/// Directories an installed (not a build tree's) binary lives in.
const SYSTEM_BIN_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/bin",
    "/sbin",
];

/// The binary keepalived's track script runs: `explicit` (`--lb-bin`), else
/// the running binary `current` when it is installed in a system directory,
/// else [`INSTALLED_BIN`]. A build tree's copy that happened to run `lb
/// init` is never it: the gateway runs the installed one.
pub fn track_script_bin(explicit: Option<&Path>, current: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match current {
        Some(c)
            if c.parent()
                .is_some_and(|d| SYSTEM_BIN_DIRS.iter().any(|s| d == Path::new(s))) =>
        {
            c.to_path_buf()
        }
        _ => PathBuf::from(INSTALLED_BIN),
    }
}

/// The generated files, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// `lb.toml` (the same on both gateways).
    pub lb_toml: String,
    /// `(file name, text)` of each gateway's keepalived configuration.
    pub keepalived: Vec<(String, String)>,
    /// `(file name, text)` of each gateway's notify script (`--notify-*`).
    pub scripts: Vec<(String, String)>,
    /// Clients the layout cannot serve, one line each (printed first).
    pub warnings: Vec<String>,
    /// Routes and settings to apply by hand, as printable instructions.
    pub instructions: String,
}

/// Renders every file and validates `lb.toml` as `lb check` does. Refuses
/// inconsistent flags and layouts the mode cannot serve ([`layout`]).
pub fn generate(spec: &Spec) -> Result<Generated> {
    let problems = spec.problems();
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    let lb_toml = lb_toml::render(spec);
    Config::from_toml_str(&lb_toml).context("the generated lb.toml does not pass `lb check`")?;
    let mut keepalived = Vec::new();
    let mut scripts = Vec::new();
    if let Some(peer) = &spec.peer {
        for (me, other) in [(&spec.this, peer), (peer, &spec.this)] {
            keepalived.push((
                format!("keepalived-{}.conf", me.name),
                keepalived::render(spec, me, other),
            ));
            if let Some(text) = notify::script(spec, me) {
                scripts.push((notify::script_name(me), text));
            }
        }
    }
    let warnings = match &spec.layout {
        Layout::Routed(r) => layout::routed_warnings(spec, r),
        Layout::OneArm(_) => Vec::new(),
    };
    Ok(Generated {
        lb_toml,
        keepalived,
        scripts,
        warnings,
        instructions: instructions(spec),
    })
}

/// Writes the files into `dir` after validating them: `lb.toml` as `lb
/// check` does, each keepalived file with `keepalived -t` when keepalived is
/// installed, each notify script with `sh -n` (mode 0755). Returns one
/// line per check done. Nothing is left behind when a check fails.
pub fn write_checked(
    generated: &Generated,
    spec: &Spec,
    dir: &Path,
    force: bool,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files: Vec<(String, &str)> = vec![("lb.toml".to_owned(), generated.lb_toml.as_str())];
    for (n, t) in generated.keepalived.iter().chain(&generated.scripts) {
        files.push((n.clone(), t.as_str()));
    }
    if !force {
        for (name, _) in &files {
            let p = dir.join(name);
            if p.exists() {
                bail!("{} exists (pass --force to replace it)", p.display());
            }
        }
    }
    let tmp: Vec<PathBuf> = files
        .iter()
        .map(|(n, _)| dir.join(format!(".{n}.lb-init.tmp")))
        .collect();
    let result = stage_and_check(&files, &tmp, spec);
    if result.is_err() {
        for t in &tmp {
            let _ = std::fs::remove_file(t);
        }
        return result;
    }
    for ((name, _), t) in files.iter().zip(&tmp) {
        std::fs::rename(t, dir.join(name))
            .with_context(|| format!("moving {} into place", t.display()))?;
    }
    result
}

fn stage_and_check(files: &[(String, &str)], tmp: &[PathBuf], spec: &Spec) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut report = Vec::new();
    for ((name, text), t) in files.iter().zip(tmp) {
        std::fs::write(t, text).with_context(|| format!("writing {}", t.display()))?;
        if name == "lb.toml" {
            Config::load(t).with_context(|| format!("{name} does not pass `lb check`"))?;
            report.push(format!("{name}: lb check OK"));
            continue;
        }
        if name.ends_with(".sh") {
            std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", t.display()))?;
            match notify::check(t).with_context(|| format!("running sh -n on {name}"))? {
                Ok(()) => report.push(format!("{name}: sh -n OK")),
                Err(e) => bail!("{name}: a --notify-* command is not valid shell: {e}"),
            }
            continue;
        }
        let verdict = keepalived::check(t, &spec.interfaces())
            .with_context(|| format!("{name} does not pass `keepalived -t`"))?;
        report.push(match verdict {
            keepalived::Verdict::Accepted => format!("{name}: keepalived -t OK"),
            keepalived::Verdict::AcceptedButMissing(ifaces) => format!(
                "{name}: keepalived -t OK apart from interfaces missing on this machine ({}); \
                 run `keepalived -t -f /etc/keepalived/keepalived.conf` on the gateway",
                ifaces.join(", ")
            ),
            keepalived::Verdict::NotInstalled => {
                format!("{name}: not checked (keepalived is not installed here)")
            }
        });
    }
    Ok(report)
}

/// `lb init`: generate, check, write, print what was done, the warnings
/// and the steps.
pub fn run(args: &InitArgs) -> Result<()> {
    let spec = args.spec()?;
    let generated = generate(&spec)?;
    let report = write_checked(&generated, &spec, &args.output, args.force)?;
    println!("wrote into {}:", args.output.display());
    for line in report {
        println!("  {line}");
    }
    println!();
    for w in &generated.warnings {
        println!("Warning: {w}");
    }
    if !generated.warnings.is_empty() {
        println!();
    }
    print!("{}", generated.instructions);
    Ok(())
}
