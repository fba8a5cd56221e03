//! The BPF side of the daemon: loading and attaching the XDP program
//! ([`loader`]), writing listeners, reals and Maglev tables ([`tables`]) and
//! reading the kernel: counters ([`counters`]), the conntrack scan
//! ([`conntrack`]) and its clock ([`clock`]).

pub mod clock;
pub mod conntrack;
pub mod counters;
pub mod ebpf_log;
pub mod layout;
pub mod linkwatch;
pub mod loader;
pub mod macs;
pub mod maps;
pub mod netdev;
pub mod pin_scope;
pub mod pins;
pub mod plan;
pub mod rtnl;
pub mod snat;
pub mod tables;

pub use loader::{AttachMode, Dataplane};
pub use plan::{ListenerPlan, MapState, Plan, RealPlan, SnatPlan};
