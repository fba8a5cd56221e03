//! `lb`: XDP TCP load balancer for Kubernetes control planes.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lb::config::Config;
use lb::daemon::status::Status;

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
    /// Load and attach the data path, run health checks, serve the API.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
        /// Log output format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a configuration file and print the effective settings.
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/lb/lb.toml")]
        config: PathBuf,
    },
    /// Show the running daemon's view: listeners, backends, health, counters.
    Status {
        /// Address of the daemon's API (`[api] listen`).
        #[arg(long, default_value = "127.0.0.1:9542")]
        api: SocketAddr,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
        Command::Run { config, log_format } => run(config, log_format),
        Command::Check { config } => check(config),
        Command::Status { api, json } => status(api, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf, log_format: LogFormat) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let config = Config::load(&path)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(lb::daemon::run(config))
}

fn check(path: PathBuf) -> Result<()> {
    let config = Config::load(&path)?;
    println!("{}: OK", path.display());
    print!("{}", config.summary());
    Ok(())
}

fn status(api: SocketAddr, json: bool) -> Result<()> {
    let url = format!("http://{api}/status");
    let body = ureq::get(&url)
        .call()
        .with_context(|| format!("querying the daemon at {url} (is `lb run` running?)"))?
        .body_mut()
        .read_to_string()
        .context("reading the daemon's answer")?;
    let status: Status = serde_json::from_str(&body).context("parsing the daemon's answer")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}
