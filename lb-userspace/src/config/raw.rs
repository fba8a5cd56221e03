//! The file as written: serde structs that mirror `lb.toml` key for key.
//!
//! Everything that needs a key path in its error message (addresses,
//! durations, ranges) is kept loosely typed here and checked in
//! [`super::validate`]; only the shape of the file and enum spellings are
//! enforced by serde. `deny_unknown_fields` everywhere turns a misspelt key
//! into a parse error that names it.

use serde::Deserialize;

use super::{AllDown, CheckKind, ListenerMode, XdpMode};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub dataplane: RawDataplane,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default, rename = "backend")]
    pub backends: Vec<RawBackend>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
}

/// `[dataplane]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDataplane {
    pub interfaces: Option<Vec<String>>,
    pub xdp_mode: Option<XdpMode>,
    pub conntrack_capacity: Option<i64>,
    pub pin_path: Option<String>,
    pub keep_attached: Option<bool>,
    pub mode: Option<ListenerMode>,
    pub snat_ipv4: Option<Vec<String>>,
    pub snat_ipv6: Option<Vec<String>>,
    pub snat_ports: Option<String>,
}

/// `[api]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    pub listen: Option<String>,
    pub socket: Option<String>,
}

/// `[health]` and `[listener.health]`: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    pub jitter: Option<String>,
    pub kind: Option<CheckKind>,
    pub path: Option<String>,
    pub expect_status: Option<Vec<i64>>,
    pub server_name: Option<String>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

/// One `[[backend]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub drained: bool,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub name: String,
    pub vip: String,
    pub port: i64,
    pub target_port: Option<i64>,
    pub backends: Option<Vec<String>>,
    pub all_down: Option<AllDown>,
    pub deregistration_delay: Option<String>,
    pub mode: Option<ListenerMode>,
    pub health: Option<RawHealth>,
}
