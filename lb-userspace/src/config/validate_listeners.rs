//! Validation of the `[[listener]]` tables: addresses, ports, modes,
//! which backends each listener names, and that they are of its VIP's
//! family. The rest of the file's checks are in [`super::validate`].
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::raw::RawListener;
use super::validate::{check_name, label, parse_ip, CheckedBackend, Checker};
use super::validate_check::CheckKeys;
use super::{HealthParams, Listener, DEFAULT_DEREGISTRATION_DELAY, MAX_LISTENERS, MAX_REALS};

impl Checker {
    pub(super) fn listeners(
        &mut self,
        raw: Vec<RawListener>,
        backends: &[CheckedBackend],
        defaults: &HealthParams,
        check_defaults: &CheckKeys,
    ) -> Vec<Listener> {
        if raw.is_empty() {
            self.report("listener", "at least one [[listener]] is required");
        }
        if raw.len() > MAX_LISTENERS {
            self.report(
                "listener",
                format!(
                    "{} listeners exceed the data path limit of {MAX_LISTENERS}",
                    raw.len()
                ),
            );
        }
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, b) in backends.iter().enumerate() {
            by_name.entry(b.backend.name.as_str()).or_insert(i);
        }
        let mut names: HashMap<String, String> = HashMap::new();
        let mut endpoints: HashMap<(IpAddr, u16), String> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, l) in raw.into_iter().enumerate() {
            let label = label("listener", i, &l.name);

            if let Err(message) = check_name(&l.name) {
                self.report(format!("{label}.name"), message);
            } else if let Some(first) = names.get(&l.name) {
                self.report(
                    format!("{label}.name"),
                    format!("duplicate listener name {:?} (also {first})", l.name),
                );
            } else {
                names.insert(l.name.clone(), label.clone());
            }

            let vip = match parse_ip(&l.vip, "a VIP") {
                Ok(vip) => {
                    if let Some(b) = backends
                        .iter()
                        .find(|b| b.address_ok && b.backend.address == vip)
                    {
                        self.report(
                            format!("{label}.vip"),
                            format!(
                                "{vip} is also the address of {}; a VIP must not be a backend address",
                                b.label
                            ),
                        );
                    }
                    Some(vip)
                }
                Err(message) => {
                    self.report(format!("{label}.vip"), message);
                    None
                }
            };

            let port = self.port(&label, "port", l.port);
            let target_port = match l.target_port {
                None => port,
                Some(p) => self.port(&label, "target_port", p),
            };
            if let (Some(vip), Some(port)) = (vip, port) {
                if let Some(first) = endpoints.get(&(vip, port)) {
                    self.report(
                        format!("{label}.port"),
                        format!("{} is already used by {first}", SocketAddr::new(vip, port)),
                    );
                } else {
                    endpoints.insert((vip, port), label.clone());
                }
            }

            let indices = match &l.backends {
                None => (0..backends.len()).collect(),
                Some(list) if list.is_empty() => {
                    self.report(
                        format!("{label}.backends"),
                        "must not be empty (leave the key out to use every [[backend]])",
                    );
                    Vec::new()
                }
                Some(list) => {
                    let mut seen = HashSet::new();
                    let mut indices = Vec::with_capacity(list.len());
                    for (j, name) in list.iter().enumerate() {
                        let key = format!("{label}.backends[{j}]");
                        match by_name.get(name.as_str()) {
                            None => self.report(
                                key,
                                format!("unknown backend {name:?} (no [[backend]] has that name)"),
                            ),
                            Some(&idx) => {
                                if seen.insert(idx) {
                                    indices.push(idx);
                                } else {
                                    self.report(key, format!("backend {name:?} is listed twice"));
                                }
                            }
                        }
                    }
                    indices.sort_unstable();
                    indices
                }
            };

            if let Some(vip) = vip {
                self.same_family(&label, vip, &l.backends, &indices, backends);
            }

            let raw_health = l.health.unwrap_or_default();
            let health = self.health(&format!("{label}.health"), defaults, &raw_health, false);
            let check = self.listener_check(
                &format!("{label}.health"),
                target_port,
                &raw_health,
                check_defaults,
            );

            out.push(Listener {
                name: l.name,
                vip: vip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port: port.unwrap_or(0),
                target_port: target_port.unwrap_or(0),
                mode: l.mode.unwrap_or(self.default_mode),
                backends: indices,
                all_down: l.all_down.unwrap_or_default(),
                deregistration_delay: self
                    .duration(
                        &label,
                        "deregistration_delay",
                        l.deregistration_delay.as_deref(),
                    )
                    .unwrap_or(DEFAULT_DEREGISTRATION_DELAY),
                health,
                check,
            });
        }

        let reals: usize = out.iter().map(|l| l.backends.len()).sum();
        if reals > MAX_REALS {
            self.report(
                "listener",
                format!(
                    "{reals} (listener, backend) pairs exceed the data path limit of {MAX_REALS}"
                ),
            );
        }
        out
    }

    /// A listener's backends must be of its VIP's family: the data path
    /// rewrites the destination address in place (no NAT46/NAT64). Names the
    /// listener and each backend at fault.
    fn same_family(
        &mut self,
        label: &str,
        vip: IpAddr,
        listed: &Option<Vec<String>>,
        indices: &[usize],
        backends: &[CheckedBackend],
    ) {
        let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
        for &idx in indices {
            let b = &backends[idx];
            if !b.address_ok || b.backend.address.is_ipv4() == vip.is_ipv4() {
                continue;
            }
            // An explicit list names the entry at fault; the implicit
            // "every backend" names the listener's own key.
            let key = match listed {
                Some(list) => {
                    let j = list
                        .iter()
                        .position(|n| *n == b.backend.name)
                        .unwrap_or_default();
                    format!("{label}.backends[{j}]")
                }
                None => format!("{label}.backends"),
            };
            self.report(
                key,
                format!(
                    "{} has the {} address {}, but the listener's VIP {vip} is {}: a listener's backends must be of its VIP's family (no NAT46/NAT64; for dual stack, add a listener with a VIP of the other family)",
                    b.label,
                    family(b.backend.address),
                    b.backend.address,
                    family(vip),
                ),
            );
        }
    }
}
