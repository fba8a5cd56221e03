//! `lb-chaos`: the chaos run (see `lb_tests::chaos` and `docs/chaos.md`).
//! `cargo xtask chaos --seconds N --seed S` builds and runs it; it exits
//! non-zero when a rule failed, after printing the seed and the command
//! that reproduces the run.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use lb_tests::chaos::{self, ChaosOptions};

#[derive(Parser)]
#[command(about = "Seeded chaos run against lb in a namespace lab")]
struct Args {
    /// Length of the fault phase in seconds.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Seed of the fault schedule (the same seed gives the same schedule).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Dead-node bound in seconds: the longest a stream may wait for an
    /// echo (default: 2 x (detection window + deregistration_delay) + 4 s).
    #[arg(long)]
    reset_bound: Option<f64>,
    /// The cp-sim binary (default: next to this one).
    #[arg(long)]
    cp_sim: Option<PathBuf>,
    /// Print the limits and the fault schedule only.
    #[arg(long)]
    schedule_only: bool,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let o = ChaosOptions {
        seconds: a.seconds,
        seed: a.seed,
        bound: a.reset_bound,
        cp_sim: a.cp_sim,
        lb_bin: None,
    };
    if a.schedule_only {
        chaos::print_plan(&o);
        return Ok(());
    }
    chaos::install_interrupt_handler();
    let v = chaos::run(&o)?;
    if !v.pass {
        std::process::exit(1);
    }
    Ok(())
}
