//! `lb`: XDP TCP load balancer for Kubernetes control planes.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use lb::config::{Config, DEFAULT_SOCKET};
use lb::daemon::control::{self, Request, Response};
use lb::daemon::status::Status;
use lb::daemon::RunOptions;

#[derive(Parser)]
#[command(
    name = "lb",
    version,
    about = "XDP TCP load balancer for Kubernetes control planes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load (or adopt) and attach the data path, run health checks, serve the APIs.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
        /// Log output format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Remove pinned maps and links first instead of adopting them.
        #[arg(long)]
        reset: bool,
        /// On SIGTERM leave the data path attached for the next `lb run`
        /// (as `[dataplane] keep_attached = true`).
        #[arg(long)]
        keep_attached: bool,
        /// Turn on the XDP program's debug log (new flows and their backend,
        /// reschedules, drops), forwarded to this log at debug level. Off by
        /// default: it costs the data path a ring-buffer write per event.
        #[arg(long)]
        ebpf_debug: bool,
    },
    /// Validate a configuration file and print the effective settings.
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
    },
    /// Show the running daemon's view: listeners, backends, health, drains, flows.
    Status {
        /// The daemon's control socket (`[api] socket`).
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Ask the HTTP API (`[api] listen`) instead of the control socket.
        #[arg(long)]
        api: Option<SocketAddr>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon re-read its configuration (as SIGHUP).
    /// Exits non-zero when the new configuration is rejected.
    Reload {
        /// The daemon's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Drain a control-plane node across all its listeners: no new flows,
    /// tracked flows continue until they end or the deregistration delay passes.
    Drain {
        /// Backend name, e.g. cp-01.
        node: String,
        /// Return only when the node carries no tracked flow.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (non-zero exit), e.g. "5m".
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// The daemon's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Exit 0 when this gateway forwards (XDP attached, every listener has a
    /// healthy node or fails open), else non-zero with the reason: keepalived's
    /// track script.
    Healthz(lb::cli::healthz::HealthzArgs),
    /// Generate a checked HA pair setup: lb.toml, each gateway's
    /// keepalived.conf, and the routes the nodes need.
    Init(Box<lb::init::InitArgs>),
    /// Remove the data path a stopped daemon left attached (pinned links
    /// and maps under `[dataplane] pin_path`). Refused while `lb run` runs.
    Detach {
        /// Configuration file (for `pin_path`).
        #[arg(long, short, default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
    },
    /// Write the man pages and shell completions generated from this
    /// definition into DIR (`cargo xtask dist` packages them).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory.
        dir: PathBuf,
    },
    /// End a node's drain: it takes new flows again once healthy.
    Undrain {
        /// Backend name.
        node: String,
        /// The daemon's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            log_format,
            reset,
            keep_attached,
            ebpf_debug,
        } => run(config, log_format, reset, keep_attached, ebpf_debug),
        Command::Check { config } => check(config),
        Command::Status { socket, api, json } => status(&socket, api, json),
        Command::Reload { socket } => ask(&socket, Request::Reload).map(|r| {
            if let Some(ms) = r.data.and_then(|d| d["apply_ms"].as_f64()) {
                println!("reloaded: new configuration active after {ms:.1} ms");
            }
        }),
        Command::Drain {
            node,
            wait,
            timeout,
            socket,
        } => drain(&socket, &node, wait, timeout),
        Command::Healthz(args) => lb::cli::healthz::run(&args),
        Command::Init(args) => lb::init::run(&args),
        Command::Detach { config } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|c| lb::dataplane::loader::detach_pinned(&c.dataplane.pin_path))
            .map(|n| println!("detached: {n} pinned link(s) and the pinned maps removed")),
        Command::GenerateAssets { dir } => {
            lb::cli::assets::write(Cli::command(), &dir).map(|files| {
                for f in files {
                    println!("{}", f.display());
                }
            })
        }
        Command::Undrain { node, socket } => ask(&socket, Request::Undrain { node: node.clone() })
            .map(|_| println!("{node}: undrained")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    path: PathBuf,
    log_format: LogFormat,
    reset: bool,
    keep_attached: bool,
    ebpf_debug: bool,
) -> Result<()> {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("LB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if ebpf_debug {
        let target = lb::dataplane::ebpf_log::EBPF_LOG_TARGET;
        filter = filter.add_directive(format!("{target}=debug").parse()?);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let config = lb::daemon::load_config(&path)?;
    let opts = RunOptions {
        config_path: path,
        reset,
        keep_attached,
        ebpf_debug,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(lb::daemon::run(config, opts))
}

fn check(path: PathBuf) -> Result<()> {
    let config = lb::daemon::load_config(&path)?;
    println!("{}: OK", path.display());
    print!("{}", config.summary());
    for w in lb::config::snat::accept_local_warnings(&config) {
        println!("warning: {w}");
    }
    Ok(())
}

/// Sends a request; a refusal by the daemon is an error.
fn ask(socket: &Path, req: Request) -> Result<Response> {
    let r = control::request(socket, &req, Duration::from_secs(30))?;
    if !r.ok {
        bail!("{}", r.error.unwrap_or_else(|| "request failed".into()));
    }
    Ok(r)
}

fn status(socket: &Path, api: Option<SocketAddr>, json: bool) -> Result<()> {
    let status: Status = match api {
        Some(api) => {
            let url = format!("http://{api}/status");
            let body = ureq::get(&url)
                .call()
                .with_context(|| format!("querying the daemon at {url} (is `lb run` running?)"))?
                .body_mut()
                .read_to_string()
                .context("reading the daemon's answer")?;
            serde_json::from_str(&body).context("parsing the daemon's answer")?
        }
        None => {
            let data = ask(socket, Request::Status)?
                .data
                .context("the daemon sent no status")?;
            serde_json::from_value(data).context("parsing the daemon's status")?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}

fn drain(socket: &Path, node: &str, wait: bool, timeout: Duration) -> Result<()> {
    ask(socket, Request::Drain { node: node.into() })?;
    println!("{node}: draining (no new flows)");
    if !wait {
        return Ok(());
    }
    let drained_at = Instant::now();
    let deadline = drained_at + timeout;
    loop {
        let r = ask(socket, Request::Flows { node: node.into() })?;
        let data = r.data.unwrap_or_default();
        let flows = data["flows"].as_u64().unwrap_or(0);
        // Counts come from the daemon's background conntrack scan: only a
        // scan that started after the drain can say the node has no flows.
        let fresh = data["scanned_secs_ago"]
            .as_f64()
            .is_some_and(|ago| ago < drained_at.elapsed().as_secs_f64());
        if flows == 0 && fresh {
            println!("{node}: no tracked flows left");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{node} still carries {flows} tracked flow(s) after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
