//! Raw file structs -> resolved [`Config`], collecting every problem found.
//!
//! Checking carries on after a problem (with a placeholder value) so one run
//! of `lb check` reports everything that is wrong, not just the first thing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawApi, RawBackend, RawConfig, RawDataplane, RawHealth};
use super::{
    duration, Api, Backend, Config, Dataplane, HealthParams, Problem, DEFAULT_CONNTRACK_CAPACITY,
    DEFAULT_PIN_PATH, DEFAULT_SOCKET, MAX_CONNTRACK_CAPACITY, MAX_INTERFACES, MAX_THRESHOLD,
    MIN_CONNTRACK_CAPACITY,
};

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

/// Validates `raw`, returning the resolved config or every problem found.
pub(crate) fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut c = Checker::default();
    let snat = super::snat::snat(&mut c, &raw.dataplane);
    let dataplane = c.dataplane(raw.dataplane);
    let api = c.api(raw.api);
    let health = c.health("health", &HealthParams::default(), &raw.health, true);
    let check_defaults = c.check_defaults(&raw.health);
    let backends = c.backends(raw.backends);
    let explicit: Vec<bool> = raw.listeners.iter().map(|l| l.mode.is_some()).collect();
    c.default_mode = snat.default_mode;
    let listeners = c.listeners(raw.listeners, &backends, &health, &check_defaults);
    let backends: Vec<Backend> = backends.into_iter().map(|b| b.backend).collect();
    super::snat::relations(&mut c, &snat, &listeners, &explicit, &backends);
    if c.problems.is_empty() {
        Ok(Config {
            dataplane,
            snat,
            api,
            health,
            backends,
            listeners,
            cert_files: c.cert_files,
            files: Default::default(),
        })
    } else {
        Err(c.problems)
    }
}

/// A backend being checked: `address_ok` is false when `address` is a placeholder.
pub(super) struct CheckedBackend {
    pub(super) backend: Backend,
    pub(super) label: String,
    pub(super) address_ok: bool,
}

#[derive(Default)]
pub(crate) struct Checker {
    problems: Vec<Problem>,
    /// Certificate files named, for the health module to check.
    pub(crate) cert_files: Vec<super::CertFile>,
    /// `dataplane.mode`: the mode of listeners that set none.
    pub(super) default_mode: super::ListenerMode,
}

impl Checker {
    pub(crate) fn report(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn dataplane(&mut self, raw: RawDataplane) -> Dataplane {
        const KEY: &str = "dataplane.interfaces";
        let interfaces = match raw.interfaces {
            None => {
                self.report(
                    KEY,
                    "is required: list every NIC carrying client or backend traffic",
                );
                Vec::new()
            }
            Some(list) => {
                if list.is_empty() {
                    self.report(KEY, "must list at least one interface");
                }
                if list.len() > MAX_INTERFACES {
                    self.report(
                        KEY,
                        format!(
                            "{} interfaces exceed the data path limit of {MAX_INTERFACES}",
                            list.len()
                        ),
                    );
                }
                let mut seen: HashMap<&str, usize> = HashMap::new();
                for (i, name) in list.iter().enumerate() {
                    let key = format!("{KEY}[{i}]");
                    if let Err(message) = check_ifname(name) {
                        self.report(key, message);
                    } else if let Some(first) = seen.get(name.as_str()) {
                        self.report(
                            key,
                            format!("duplicate interface {name:?} (also {KEY}[{first}])"),
                        );
                    } else {
                        seen.insert(name, i);
                    }
                }
                list
            }
        };
        let conntrack_capacity = match raw.conntrack_capacity {
            None => DEFAULT_CONNTRACK_CAPACITY,
            Some(n) => match u32::try_from(n) {
                Ok(n) if (MIN_CONNTRACK_CAPACITY..=MAX_CONNTRACK_CAPACITY).contains(&n) => n,
                _ => {
                    self.report(
                        "dataplane.conntrack_capacity",
                        format!(
                            "{n} is out of range {MIN_CONNTRACK_CAPACITY}..={MAX_CONNTRACK_CAPACITY}"
                        ),
                    );
                    DEFAULT_CONNTRACK_CAPACITY
                }
            },
        };
        let pin_path = self.absolute_path(
            "dataplane.pin_path",
            raw.pin_path.as_deref().unwrap_or(DEFAULT_PIN_PATH),
        );
        Dataplane {
            interfaces,
            xdp_mode: raw.xdp_mode.unwrap_or_default(),
            conntrack_capacity,
            pin_path,
            keep_attached: raw.keep_attached.unwrap_or(false),
        }
    }

    fn api(&mut self, raw: RawApi) -> Api {
        let socket = self.absolute_path(
            "api.socket",
            raw.socket.as_deref().unwrap_or(DEFAULT_SOCKET),
        );
        let Some(text) = raw.listen else {
            return Api {
                socket,
                ..Api::default()
            };
        };
        match text.parse::<SocketAddr>() {
            Ok(listen) => Api { listen, socket },
            Err(_) => {
                self.report(
                    "api.listen",
                    format!("{text:?} is not a socket address (write e.g. \"127.0.0.1:9542\")"),
                );
                Api {
                    socket,
                    ..Api::default()
                }
            }
        }
    }

    /// A path that must be absolute (the daemon may run from any directory).
    fn absolute_path(&mut self, key: &str, text: &str) -> PathBuf {
        let p = PathBuf::from(text);
        if !p.is_absolute() {
            self.report(key, format!("{text:?} must be an absolute path"));
        }
        p
    }

    /// Resolves `raw` on top of `base`. `prefix` is the key path of the table
    /// (`health` or `listener[i] (name).health`). At the top level every
    /// relation between keys is checked; for a listener only those involving
    /// a key it sets, so a bad `[health]` is not reported once per listener.
    pub(super) fn health(
        &mut self,
        prefix: &str,
        base: &HealthParams,
        raw: &RawHealth,
        top: bool,
    ) -> HealthParams {
        let mut h = base.clone();
        if let Some(d) = self.duration(prefix, "interval", raw.interval.as_deref()) {
            h.interval = d;
        }
        if let Some(d) = self.duration(prefix, "timeout", raw.timeout.as_deref()) {
            if d.is_zero() {
                self.report(
                    format!("{prefix}.timeout"),
                    "timeout must be greater than 0",
                );
            }
            h.timeout = d;
        }
        if let Some(n) = self.threshold(prefix, "healthy_threshold", raw.healthy_threshold) {
            h.healthy_threshold = n;
        }
        if let Some(n) = self.threshold(prefix, "unhealthy_threshold", raw.unhealthy_threshold) {
            h.unhealthy_threshold = n;
        }
        if let Some(d) = self.duration(prefix, "jitter", raw.jitter.as_deref()) {
            h.jitter = d;
        }

        let (set_interval, set_timeout, set_jitter) = (
            raw.interval.is_some(),
            raw.timeout.is_some(),
            raw.jitter.is_some(),
        );
        if h.interval <= h.timeout && (top || set_interval || set_timeout) {
            let field = if set_interval || !set_timeout {
                "interval"
            } else {
                "timeout"
            };
            self.report(
                format!("{prefix}.{field}"),
                format!(
                    "interval ({}) must be greater than timeout ({})",
                    duration::format(h.interval),
                    duration::format(h.timeout)
                ),
            );
        }
        if h.jitter >= h.interval && (top || set_interval || set_jitter) {
            let field = if set_jitter || !set_interval {
                "jitter"
            } else {
                "interval"
            };
            self.report(
                format!("{prefix}.{field}"),
                format!(
                    "jitter ({}) must be less than interval ({})",
                    duration::format(h.jitter),
                    duration::format(h.interval)
                ),
            );
        }
        h
    }

    pub(super) fn duration(
        &mut self,
        prefix: &str,
        field: &str,
        text: Option<&str>,
    ) -> Option<Duration> {
        match duration::parse(text?) {
            Ok(d) => Some(d),
            Err(message) => {
                self.report(format!("{prefix}.{field}"), message);
                None
            }
        }
    }

    fn threshold(&mut self, prefix: &str, field: &str, value: Option<i64>) -> Option<u32> {
        let n = value?;
        match u32::try_from(n) {
            Ok(n) if (1..=MAX_THRESHOLD).contains(&n) => Some(n),
            _ => {
                self.report(
                    format!("{prefix}.{field}"),
                    format!("{field} {n} is out of range 1..={MAX_THRESHOLD}"),
                );
                None
            }
        }
    }

    fn backends(&mut self, raw: Vec<RawBackend>) -> Vec<CheckedBackend> {
        if raw.is_empty() {
            self.report("backend", "at least one [[backend]] is required");
        }
        let mut names: HashMap<String, String> = HashMap::new();
        let mut addresses: HashMap<IpAddr, String> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, b) in raw.into_iter().enumerate() {
            let label = label("backend", i, &b.name);
            if let Err(message) = check_name(&b.name) {
                self.report(format!("{label}.name"), message);
            } else if let Some(first) = names.get(&b.name) {
                self.report(
                    format!("{label}.name"),
                    format!("duplicate backend name {:?} (also {first})", b.name),
                );
            } else {
                names.insert(b.name.clone(), label.clone());
            }
            let (address, address_ok) = match parse_ip(&b.address, "a backend address") {
                Ok(address) => {
                    if let Some(first) = addresses.get(&address) {
                        self.report(
                            format!("{label}.address"),
                            format!("duplicate backend address {address} (also {first})"),
                        );
                    } else {
                        addresses.insert(address, label.clone());
                    }
                    (address, true)
                }
                Err(message) => {
                    self.report(format!("{label}.address"), message);
                    (IpAddr::V4(Ipv4Addr::UNSPECIFIED), false)
                }
            };
            out.push(CheckedBackend {
                backend: Backend {
                    name: b.name,
                    address,
                    drained: b.drained,
                },
                label,
                address_ok,
            });
        }
        out
    }

    pub(super) fn port(&mut self, label: &str, field: &str, value: i64) -> Option<u16> {
        match u16::try_from(value) {
            Ok(0) => {
                self.report(format!("{label}.{field}"), "port 0 is not allowed");
                None
            }
            Ok(p) => Some(p),
            Err(_) => {
                self.report(
                    format!("{label}.{field}"),
                    format!("port {value} is out of range 1..=65535"),
                );
                None
            }
        }
    }
}

/// `backend[2] (cp-03)`, or `backend[2]` when the name is empty.
pub(super) fn label(kind: &str, index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("{kind}[{index}]")
    } else {
        format!("{kind}[{index}] ({name})")
    }
}

/// Backend and listener names end up in logs, metrics and URLs: keep them plain.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "name {name:?} may only contain letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// The kernel's rules for a device name (`dev_valid_name`).
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name must not be empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name {name:?} is longer than {MAX_IFNAME_LEN} bytes"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name {name:?} must not contain '/', ':' or whitespace"
        ));
    }
    Ok(())
}

/// Parses an IPv4 or IPv6 address that can be a unicast destination; `what`
/// names the role.
pub(super) fn parse_ip(text: &str, what: &str) -> Result<IpAddr, String> {
    let addr = text
        .parse::<IpAddr>()
        .map_err(|_| format!("{text:?} is not a valid IPv4 or IPv6 address"))?;
    let why = match addr {
        IpAddr::V4(a) if a.is_broadcast() => "the broadcast address",
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            "an IPv4-mapped IPv6 address (write the IPv4 address itself)"
        }
        a if a.is_unspecified() => "the unspecified address",
        // Also keeps IPv6 keys apart from IPv4 ones in maps without a
        // family tag (VIPS): only ::/96 has an IPv4 address's zero words.
        IpAddr::V6(a) if a.segments()[..6] == [0; 6] => {
            "in the reserved ::/96 range (loopback or IPv4-compatible)"
        }
        a if a.is_multicast() => "a multicast address",
        // fe80::/10 only means something with an interface scope, which
        // neither the maps nor the FIB lookup carry.
        IpAddr::V6(a) if a.is_unicast_link_local() => "a link-local address",
        _ => return Ok(addr),
    };
    Err(format!("{addr} is {why} and cannot be {what}"))
}
