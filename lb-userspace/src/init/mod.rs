//! `lb init`: generates a checked high-availability setup from a few flags:
//! the `lb.toml` both gateways run, each gateway's `keepalived.conf`, and
//! the routes the nodes and clients need (printed as instructions).
//!
//! Nothing is written unless everything validates: the files are rendered
//! in memory, `lb.toml` goes through the same validation as `lb check`, the
//! keepalived files are written next to their destination under a temporary
//! name and checked with `keepalived -t` (where keepalived is installed),
//! and only then renamed into place.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::{Config, DEFAULT_API_LISTEN};

pub mod keepalived;
pub mod lb_toml;
pub mod spec;

#[cfg(test)]
mod tests;

pub use spec::{Cidr, Gateway, Host, Spec};

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
    /// The gateways' client-side interface.
    #[arg(long)]
    pub client_interface: String,
    /// The gateways' backend-side interface (the nodes' network).
    #[arg(long)]
    pub backend_interface: String,
    /// Floating client-side address with prefix, e.g. 198.51.100.1/24: the
    /// clients' next hop to the VIP.
    #[arg(long, value_name = "ADDRESS/PREFIX")]
    pub client_floating: Cidr,
    /// Floating backend-side address with prefix, e.g. 192.0.2.1/24:
    /// the nodes route replies to clients through it.
    #[arg(long, value_name = "ADDRESS/PREFIX")]
    pub backend_floating: Cidr,
    /// This gateway (the preferred master): NAME=CLIENT_ADDRESS,BACKEND_ADDRESS.
    #[arg(long = "gateway", value_name = "NAME=CLIENT,BACKEND")]
    pub this: Gateway,
    /// The other gateway of the pair: NAME=CLIENT_ADDRESS,BACKEND_ADDRESS.
    /// Without it only lb.toml is generated (a single gateway).
    #[arg(long, value_name = "NAME=CLIENT,BACKEND")]
    pub peer: Option<Gateway>,
    /// A network the clients are in (repeat); the nodes get a route to it
    /// via the backend-side floating address. Default: a default route.
    #[arg(long = "client-network", value_name = "ADDRESS/PREFIX")]
    pub client_networks: Vec<Cidr>,
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
    /// margin in the lab (see README, "High availability").
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
        let mut spec = Spec::new(
            self.nodes.clone(),
            self.vip,
            (
                self.client_interface.clone(),
                self.backend_interface.clone(),
            ),
            (self.client_floating, self.backend_floating),
            self.this.clone(),
            self.peer.clone(),
            lb_bin,
        );
        spec.workers = self.workers.clone();
        spec.talos_workers_listener = self.talos_workers_listener;
        spec.client_networks = self.client_networks.clone();
        spec.api_listen = self.api_listen;
        spec.advert_int = self.advert_int.unwrap_or(spec::DEFAULT_ADVERT_INT);
        spec.vrid = self.vrid;
        spec.nopreempt = self.nopreempt;
        spec.tcp_checks = self.tcp_checks;
        Ok(spec)
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
    /// Routes and settings to apply by hand, as printable instructions.
    pub instructions: String,
}

/// Renders every file and validates `lb.toml` as `lb check` does.
pub fn generate(spec: &Spec) -> Result<Generated> {
    let problems = spec.problems();
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    let lb_toml = lb_toml::render(spec);
    Config::from_toml_str(&lb_toml).context("the generated lb.toml does not pass `lb check`")?;
    let keepalived = match &spec.peer {
        Some(peer) => vec![
            (
                format!("keepalived-{}.conf", spec.this.name),
                keepalived::render(spec, &spec.this, peer),
            ),
            (
                format!("keepalived-{}.conf", peer.name),
                keepalived::render(spec, peer, &spec.this),
            ),
        ],
        None => Vec::new(),
    };
    Ok(Generated {
        lb_toml,
        keepalived,
        instructions: instructions(spec),
    })
}

/// What the operator does by hand: routes on the nodes and the clients,
/// forwarding and the files' places on the gateways.
pub fn instructions(spec: &Spec) -> String {
    let mut s = String::new();
    let w = &mut s;
    let back = spec.backend_floating.address;
    let front = spec.client_floating.address;
    let _ = writeln!(
        w,
        "On every node (control plane and workers): lb keeps the client's address,\n\
         so replies must go back through the gateway that holds {back}:"
    );
    if spec.client_networks.is_empty() {
        let _ = writeln!(w, "  ip route replace default via {back}");
    } else {
        for n in &spec.client_networks {
            let _ = writeln!(w, "  ip route replace {} via {back}", n.network());
        }
    }
    let _ = writeln!(
        w,
        "  (Talos: machine.network.interfaces[].routes, gateway {back})"
    );
    let _ = writeln!(w, "On the clients' router (or each client):");
    let _ = writeln!(w, "  ip route replace {}/32 via {front}", spec.vip);
    let gateways: Vec<&Gateway> = std::iter::once(&spec.this).chain(&spec.peer).collect();
    let keepalived = if spec.peer.is_some() {
        " keepalived"
    } else {
        ""
    };
    for g in gateways {
        let _ = writeln!(w, "On gateway {}:", g.name);
        let _ = writeln!(w, "  sysctl -w net.ipv4.ip_forward=1");
        if spec.lb_bin == Path::new(INSTALLED_BIN) {
            let _ = writeln!(
                w,
                "  apt install ./lb_{}-1_amd64.deb{keepalived}   # {INSTALLED_BIN} and the lb unit \
                 (`cargo xtask dist`; the unit is not enabled yet)",
                env!("CARGO_PKG_VERSION")
            );
        } else {
            let _ = writeln!(
                w,
                "  # lb runs from {}: install deploy/systemd/lb.service with that path \
                 (README, docs/install.md)",
                spec.lb_bin.display()
            );
        }
        let _ = writeln!(w, "  install -D -m 0644 lb.toml /etc/lb/lb.toml");
        let _ = writeln!(w, "  lb check --config /etc/lb/lb.toml");
        if spec.peer.is_some() {
            let _ = writeln!(
                w,
                "  install -D -m 0644 keepalived-{}.conf /etc/keepalived/keepalived.conf",
                g.name
            );
        }
        let _ = writeln!(w, "  systemctl enable --now lb{keepalived}");
    }
    s
}

/// Writes the files into `dir` after validating them: `lb.toml` as `lb
/// check` does, each keepalived file with `keepalived -t` when keepalived is
/// installed. Returns one line per check done. Nothing is left behind when
/// a check fails.
pub fn write_checked(
    generated: &Generated,
    spec: &Spec,
    dir: &Path,
    force: bool,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files: Vec<(String, &str)> = vec![("lb.toml".to_owned(), generated.lb_toml.as_str())];
    files.extend(
        generated
            .keepalived
            .iter()
            .map(|(n, t)| (n.clone(), t.as_str())),
    );
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
    let mut report = Vec::new();
    for ((name, text), t) in files.iter().zip(tmp) {
        std::fs::write(t, text).with_context(|| format!("writing {}", t.display()))?;
        if name == "lb.toml" {
            Config::load(t).with_context(|| format!("{name} does not pass `lb check`"))?;
            report.push(format!("{name}: lb check OK"));
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

/// `lb init`: generate, check, write, print what was done and the routes.
pub fn run(args: &InitArgs) -> Result<()> {
    let spec = args.spec()?;
    let generated = generate(&spec)?;
    let report = write_checked(&generated, &spec, &args.output, args.force)?;
    println!("wrote into {}:", args.output.display());
    for line in report {
        println!("  {line}");
    }
    println!();
    print!("{}", generated.instructions);
    Ok(())
}
