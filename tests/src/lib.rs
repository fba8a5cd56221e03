//! Test support for the XDP load balancer: a network-namespace lab
//! ([`Lab`]), a simulated control-plane node (the `cp-sim` binary), client
//! helpers that tell which node answered, and helpers to run the `lb`
//! daemon inside the lab. Integration tests live in `tests/`.
//!
//! Everything here needs root (network namespaces, XDP); tests call
//! [`root_or_skip`] first.

pub mod bench;
pub mod browser;
pub mod chaos;
pub mod checks;
pub mod client;
pub mod ha;
pub mod lab;
pub mod lb;

pub use client::{
    connect_and_name, measure_failover, measure_recovery, probe, read_greeting, spread, Failover,
    Probe, Spread, Stream, StreamOptions, StreamReport,
};
pub use lab::{
    default_lb_bin, enter_netns, find_next_to_exe, is_ci, netns_path, root_or_skip, run_in_netns,
    ChildId, Lab, LabOptions, CLIENT_ADDR, CLIENT_ADDR6, GATEWAY_BACKEND_ADDR,
    GATEWAY_BACKEND_ADDR6, GATEWAY_CLIENT_ADDR, GATEWAY_CLIENT_ADDR6, GATEWAY_INTERFACES,
    KUBE_API_PORT, LB_API, TALOS_API_PORT, VIP, VIP6,
};
pub use lb::{
    config_duration, lb_or_skip, lb_supports_run, netns_ready, status_backend, Families,
    HealthSettings,
};
