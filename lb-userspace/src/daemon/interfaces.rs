//! Interface reconciliation: brings the data path in line with the
//! configured interfaces as the kernel reports them, on every link event
//! and on every tick (a fresh `RTM_GETLINK` per interface, which also
//! catches lost events and changes that send none):
//!
//! * link state (present, up, carrier) goes to the reconciler, which sets
//!   check results aside while a link does not pass traffic and for its
//!   settle time after ([`settle_time`]);
//! * an attachment whose link was severed (interface deleted) is dropped,
//!   an interface without one is attached (again), and one whose program
//!   is no longer on the interface (detached through the bpf syscall,
//!   replaced by another tool) is attached afresh and counted;
//! * the destination MACs the program accepts (`IFACE_MACS`) follow the
//!   interface's address and its upper devices, keeping the address it had
//!   before a change for [`super::links::OLD_MAC_GRACE`].
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::{error, info, warn};

use super::links::{mac_text, LinkState, MacFilter};
use super::reconciler::Reconciler;
use crate::config::Config;
use crate::dataplane::linkwatch::{LinkEvent, LinkQuery};
use crate::dataplane::rtnl::LinkInfo;
use crate::dataplane::{macs, Dataplane};

/// Attaches to every configured interface, changing the running data path
/// last: interfaces that need a fresh attachment come first, take-overs of
/// pinned links (which replace the program a previous daemon left running)
/// after them. When a fresh attachment fails (an interface that refuses
/// XDP in the configured mode), this start-up's fresh attachments are
/// undone before any pinned link's program was replaced, so a failed start
/// leaves forwarding as it was.
pub fn attach_all(dp: &mut Dataplane, config: &Config) -> Result<()> {
    let (take_over, fresh): (Vec<&String>, Vec<&String>) = config
        .dataplane
        .interfaces
        .iter()
        .partition(|i| dp.has_pinned_link(i));
    let nothing_pinned = take_over.is_empty() && !dp.adopted;
    let mut done: Vec<&String> = Vec::new();
    for iface in fresh.iter().chain(&take_over) {
        if let Err(e) = dp.attach(iface, config.dataplane.xdp_mode) {
            if nothing_pinned {
                // Nothing ran before this start: leave the host clean.
                dp.detach_all();
            } else {
                for i in done.iter().filter(|i| fresh.contains(i)) {
                    dp.detach(i);
                }
            }
            return Err(e);
        }
        done.push(iface);
    }
    Ok(())
}

/// A link event: a configured interface that changed is reconciled with
/// what the event says. Its XDP programs are not checked here: an event
/// generated before this daemon attached may arrive after it did.
pub fn on_event(rec: &mut Reconciler<Dataplane>, ev: LinkEvent) {
    let name = ev.info().name.clone();
    if !rec.model().config().dataplane.interfaces.contains(&name) {
        return;
    }
    let info = match ev {
        LinkEvent::New(i) => Some(i),
        LinkEvent::Del(_) => None,
    };
    reconcile(rec, &name, info.as_ref(), false, Instant::now());
}

/// Asks the kernel for every configured interface and reconciles each,
/// its XDP attachment included (the tick's and start-up's full check).
pub fn refresh(rec: &mut Reconciler<Dataplane>, query: &mut LinkQuery) {
    let now = Instant::now();
    for name in rec.model().config().dataplane.interfaces.clone() {
        match query.get(&name) {
            Ok(info) => reconcile(rec, &name, info.as_ref(), true, now),
            // Not an observation: the state stays as last seen.
            Err(e) => {
                warn!(interface = %name, error = %e, "asking the kernel for the interface failed")
            }
        }
    }
}

fn reconcile(
    rec: &mut Reconciler<Dataplane>,
    name: &str,
    info: Option<&LinkInfo>,
    verify_xdp: bool,
    now: Instant,
) {
    let observed = rec.observe_link(name, info, || settle_time(name), now);
    if let Some((from, to)) = observed.state {
        log_state(name, from, to, rec.links().snapshot(now));
    }
    if let Some((old, new)) = observed.mac {
        warn!(interface = %name, old = %mac_text(&old), new = %mac_text(&new),
            "MAC address changed: the data path now accepts the new one (and the old one for a while)");
    }
    attachment(rec, name, info, verify_xdp);
    mac_filter(rec, name, info, now);
}

fn log_state(name: &str, from: LinkState, to: LinkState, snaps: Vec<super::links::LinkSnap>) {
    match to {
        LinkState::Up => info!(interface = %name, from = from.as_str(), "interface passes traffic"),
        LinkState::Settling => {
            let left = snaps
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.settle_left)
                .unwrap_or_default();
            info!(interface = %name, from = from.as_str(), settle = ?left,
                "interface passes traffic again; check results set aside while it settles")
        }
        // Down, then up without carrier yet: the same outage.
        s if from.is_failed() => {
            info!(interface = %name, state = s.as_str(), "interface still passes no traffic")
        }
        s => error!(interface = %name, state = s.as_str(),
            "interface passes no traffic: not ready, check results set aside until it does"),
    }
}

/// Brings the attachment of `name` in line with the interface: drops a
/// severed one, attaches where there is none, and (`verify_xdp`) attaches
/// afresh where the program is no longer on the interface.
fn attachment(
    rec: &mut Reconciler<Dataplane>,
    name: &str,
    info: Option<&LinkInfo>,
    verify_xdp: bool,
) {
    let held_on = rec.maps().attached_ifindex(name);
    let severed = held_on.is_some() && held_on != info.map(|i| i.ifindex);
    if severed && rec.maps_mut().forget(name) {
        error!(interface = %name, "interface vanished: XDP no longer attached to it; not ready until it is back");
    }
    let Some(info) = info else { return };
    let mut reattach = false;
    if held_on.is_some() && !severed {
        if !verify_xdp {
            return;
        }
        match rec.maps().verify_attached(name, &info.xdp) {
            Ok(()) => {
                rec.links_mut().set_xdp_problem(name, None);
                return;
            }
            Err(why) => {
                error!(interface = %name, problem = %why, "the XDP program is no longer on the interface: attaching it again");
                rec.maps_mut().forget(name);
                reattach = true;
            }
        }
    }
    let mode = rec.model().config().dataplane.xdp_mode;
    match rec.maps_mut().attach(name, mode) {
        Ok(m) => {
            if reattach {
                rec.links_mut().count_reattachment(name);
            }
            info!(interface = %name, mode = m.as_str(), "XDP re-attached");
            rec.links_mut().set_xdp_problem(name, None);
        }
        Err(e) => {
            let problem = format!("XDP program not attached: {e:#}");
            let known = rec
                .links()
                .snapshot(Instant::now())
                .into_iter()
                .any(|s| s.name == name && s.xdp_problem.as_deref() == Some(problem.as_str()));
            if !known {
                warn!(interface = %name, error = %format!("{e:#}"), "attaching XDP failed; retried every tick");
            }
            rec.links_mut().set_xdp_problem(name, Some(problem));
        }
    }
}

/// Brings the destination MACs `name` accepts in line with its address
/// (and upper devices), keeping its previous address while neighbours may
/// still use it. A filter that cannot be written is removed instead (an
/// unfiltered interface forwards; a stale filter black-holes); only when
/// even that fails is it a problem.
fn mac_filter(rec: &mut Reconciler<Dataplane>, name: &str, info: Option<&LinkInfo>, now: Instant) {
    let Some((ifindex, own)) = info.and_then(|i| Some((i.ifindex, i.mac?))) else {
        return;
    };
    if rec.maps().attached_ifindex(name) != Some(ifindex) {
        return;
    }
    let extra: Vec<[u8; 6]> = rec.links().previous_mac(name, now).into_iter().collect();
    let wanted = macs::desired(name, own, &extra);
    let filter = match macs::reconcile(rec.maps_mut(), ifindex, &wanted) {
        Ok(false) => MacFilter::Current,
        Ok(true) => {
            let list: Vec<String> = wanted.iter().map(mac_text).collect();
            info!(interface = %name, macs = %list.join(","), "destination-MAC filter updated");
            MacFilter::Current
        }
        Err(e) => match macs::forget(rec.maps_mut(), ifindex) {
            Ok(()) => MacFilter::Off(format!("{e:#}")),
            Err(e2) => MacFilter::Stale(format!("{e:#}; clearing it failed too: {e2:#}")),
        },
    };
    let text = match &filter {
        MacFilter::Current => None,
        MacFilter::Off(e) | MacFilter::Stale(e) => Some(e.clone()),
    };
    let stale = matches!(filter, MacFilter::Stale(_));
    if rec.links_mut().set_mac_filter(name, filter) {
        match (text, stale) {
            (Some(e), false) => {
                warn!(interface = %name, error = %e, "destination-MAC check off for this interface")
            }
            (Some(e), true) => {
                error!(interface = %name, error = %e, "destination-MAC filter could not be updated: frames to the interface's address are not balanced")
            }
            (None, _) => {}
        }
    }
}

/// How long after `iface` passes traffic again the gateway's own checks
/// through it are set aside, from the kernel's settings for it (defaults
/// in brackets):
///
/// * IPv6 duplicate address detection: the addresses are tentative (not
///   usable as a source) for a random delay of up to `rtr_solicit_delay`
///   [1 s] plus `dad_transmits` [1] × `retrans_time_ms` [1000]; none with
///   `accept_dad = 0`;
/// * MLD: neighbours' solicitations reach the gateway through a snooping
///   switch only once it has re-joined its solicited-node groups, within
///   `mldv2_unsolicited_report_interval` [1000 ms] (MLDv1's
///   `mldv1_unsolicited_report_interval` [10 s] when forced);
/// * one neighbour resolution lost at link-up: `retrans_time_ms` [1000].
///
/// 4 s by the defaults; IPv4 alone (ARP answers at once) needs one
/// resolution retry, `neigh/*/retrans_time_ms` [1 s].
pub fn settle_time(iface: &str) -> Duration {
    let read =
        |path: String| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let v4 = Duration::from_millis(
        read(format!("/proc/sys/net/ipv4/neigh/{iface}/retrans_time_ms")).unwrap_or(1000),
    );
    let conf = |key: &str, default: u64| {
        read(format!("/proc/sys/net/ipv6/conf/{iface}/{key}")).unwrap_or(default)
    };
    if !Path::new(&format!("/proc/sys/net/ipv6/conf/{iface}")).exists()
        || conf("disable_ipv6", 0) == 1
    {
        return v4;
    }
    let retrans = read(format!("/proc/sys/net/ipv6/neigh/{iface}/retrans_time_ms")).unwrap_or(1000);
    let all_dad = read("/proc/sys/net/ipv6/conf/all/accept_dad".into()).unwrap_or(0);
    let dad = if conf("accept_dad", 1).max(all_dad) > 0 {
        let transmits = conf("dad_transmits", 1);
        match transmits {
            0 => Duration::ZERO,
            n => {
                Duration::from_secs(conf("rtr_solicit_delay", 1))
                    + Duration::from_millis(n * retrans)
            }
        }
    } else {
        Duration::ZERO
    };
    let mld = match conf("force_mld_version", 0) {
        1 => conf("mldv1_unsolicited_report_interval", 10_000),
        _ => conf("mldv2_unsolicited_report_interval", 1000),
    };
    (dad + Duration::from_millis(mld + retrans)).max(v4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback has IPv6 settings in every namespace; an unknown
    /// interface has none: IPv4's default resolution retry, 1 s.
    #[test]
    fn settle_time_is_read_from_the_kernel_or_defaults() {
        assert_eq!(settle_time("lb-no-such-if0"), Duration::from_secs(1));
        let lo = settle_time("lo");
        assert!(
            lo >= Duration::from_secs(1) && lo <= Duration::from_secs(30),
            "{lo:?}"
        );
    }
}
