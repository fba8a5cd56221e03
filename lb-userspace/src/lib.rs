//! The `lb` daemon as a library: configuration, Maglev tables, health checks,
//! the BPF data-path driver and the daemon loop. `main.rs` is the CLI on top.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod health;
pub mod init;
pub mod maglev;
pub mod metrics;
pub mod page;
pub mod table;
