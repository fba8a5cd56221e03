//! Full-NAT in the model and the writer: the source-NAT maps follow the
//! configuration, a mode change drains like a `target_port` change, an
//! address taken out stays recognised while its flows drain, and a reload
//! is applied or rejected whole.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use lb_common::{
    EndpointKey, ListenerKey, LISTENER_F_FULLNAT, REAL_F_DRAINING, REAL_F_SERVING, SNAT_V4, SNAT_V6,
};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::daemon::model::Model;
use crate::daemon::reconciler::Reconciler;
use crate::dataplane::snat::fake::FakeAll;
use crate::dataplane::tables::{MapState, Written};
use crate::health::CheckOutcome;

/// One listener (VIP 198.18.0.10:7000) over two loopback nodes; `extra`
/// goes into `[dataplane]`, `mode` into the listener.
fn config(extra: &str, mode: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"
[dataplane]
interfaces = ["eth1"]
{extra}
[health]
interval = "60s"
timeout = "1s"
[[backend]]
name = "cp-01"
address = "127.0.0.11"
[[backend]]
name = "cp-02"
address = "127.0.0.12"
[[listener]]
name = "api"
vip = "198.18.0.10"
port = 7000
deregistration_delay = "2s"
mode = "{mode}"
"#
    ))
    .unwrap()
}

const SNAT_A: &str = "snat_ipv4 = [\"198.18.0.100\"]\nsnat_ports = \"2000-2999\"";
const SNAT_B: &str = "snat_ipv4 = [\"198.18.0.101\"]\nsnat_ports = \"2000-2999\"";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ok() -> CheckOutcome {
    CheckOutcome {
        success: true,
        reason: "ok".into(),
        proves_dead: false,
        duration: Duration::from_millis(1),
    }
}

fn started(
    c: Config,
) -> (
    Reconciler<FakeAll>,
    mpsc::Receiver<crate::daemon::reconciler::Checked>,
) {
    let (tx, rx) = mpsc::channel(1024);
    let mut r = Reconciler::new(Model::new(c), Written::default(), FakeAll::default(), tx);
    r.start().unwrap();
    let keys: Vec<_> = r.model.targets().iter().map(|t| t.key.clone()).collect();
    for k in keys {
        r.record(&k, &ok());
    }
    (r, rx)
}

fn key() -> ListenerKey {
    ListenerKey::tcp_v4([198, 18, 0, 10], 7000)
}

fn flags(r: &Reconciler<FakeAll>) -> u16 {
    r.maps.tables.listeners.get(&key()).expect("listener").flags
}

/// Ports of the reals with `flag` set.
fn reals(r: &Reconciler<FakeAll>, flag: u8) -> usize {
    r.maps
        .tables
        .reals
        .values()
        .filter(|x| x.family != 0 && x.flags & flag != 0)
        .count()
}

fn addrs(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

#[tokio::test]
async fn a_fullnat_listener_gets_its_flag_and_the_source_nat_maps() {
    let (r, _rx) = started(config(SNAT_A, "fullnat"));
    assert_ne!(flags(&r) & LISTENER_F_FULLNAT, 0);
    let v4 = r.maps.snat[&SNAT_V4];
    assert_eq!(v4.count, 1);
    assert_eq!(v4.addrs[0], lb_common::ip_words(ip("198.18.0.100")));
    assert_eq!((v4.port_lo, v4.port_hi), (2000, 2999));
    assert_eq!(r.maps.snat[&SNAT_V6].count, 0, "no IPv6 address");
    assert_eq!(r.maps.addrs, addrs(&["198.18.0.100"]));
    // A full-NAT node's replies go to the source-NAT address: no
    // untracked-reply fallback from its endpoint to the client.
    assert!(!r
        .maps
        .tables
        .fallback
        .contains_key(&EndpointKey::tcp(ip("127.0.0.11"), 7000)));
}

#[tokio::test]
async fn a_dnat_listener_leaves_configured_source_nat_addresses_unused() {
    let (r, _rx) = started(config(SNAT_A, "dnat"));
    assert_eq!(flags(&r) & LISTENER_F_FULLNAT, 0);
    assert_eq!(r.maps.snat[&SNAT_V4].count, 0);
    assert!(r.maps.addrs.is_empty());
    assert!(r
        .maps
        .tables
        .fallback
        .contains_key(&EndpointKey::tcp(ip("127.0.0.11"), 7000)));
}

/// Issue 18 item 5: a listener changing mode drains its old flows like a
/// `target_port` change: new reals take new flows at once (health kept),
/// the old ones keep their flows for the deregistration delay.
#[tokio::test]
async fn a_mode_change_drains_the_old_flows_and_keeps_health() {
    let (mut r, _rx) = started(config(SNAT_A, "dnat"));
    let id = r.maps.tables.listeners[&key()].id;
    r.reload(config(SNAT_A, "fullnat")).unwrap();
    assert_eq!(r.maps.tables.listeners[&key()].id, id, "same listener");
    assert_ne!(flags(&r) & LISTENER_F_FULLNAT, 0);
    assert_eq!(reals(&r, REAL_F_SERVING), 2, "health carried over");
    assert_eq!(reals(&r, REAL_F_DRAINING), 2, "old DNAT reals drain");
    assert_eq!(r.maps.snat[&SNAT_V4].count, 1);
    r.tick(Instant::now() + Duration::from_secs(10));
    assert_eq!(reals(&r, REAL_F_DRAINING), 0, "drained, then gone");
    assert_eq!(reals(&r, REAL_F_SERVING), 2);

    // And back: the full-NAT reals drain, and the source-NAT maps stay
    // until they are gone.
    r.reload(config(SNAT_A, "dnat")).unwrap();
    assert_eq!(flags(&r) & LISTENER_F_FULLNAT, 0);
    assert_eq!(reals(&r, REAL_F_DRAINING), 2);
    assert_eq!(r.maps.snat[&SNAT_V4].count, 1, "draining flows use it");
    assert_eq!(r.maps.addrs, addrs(&["198.18.0.100"]));
    r.tick(Instant::now() + Duration::from_secs(10));
    assert_eq!(r.maps.snat[&SNAT_V4].count, 0);
    assert!(r.maps.addrs.is_empty());
}

/// An address a reload takes out gets no new flows at once but stays
/// recognised (its flows' replies translated) until they have drained.
#[tokio::test]
async fn a_replaced_source_address_stays_recognised_while_its_flows_drain() {
    let (mut r, _rx) = started(config(SNAT_A, "fullnat"));
    r.reload(config(SNAT_B, "fullnat")).unwrap();
    let v4 = r.maps.snat[&SNAT_V4];
    assert_eq!(
        (v4.count, v4.addrs[0]),
        (1, lb_common::ip_words(ip("198.18.0.101")))
    );
    assert_eq!(r.maps.addrs, addrs(&["198.18.0.100", "198.18.0.101"]));
    assert_eq!(reals(&r, REAL_F_DRAINING), 0, "flows are not drained");
    r.tick(Instant::now() + Duration::from_secs(10));
    assert_eq!(r.maps.addrs, addrs(&["198.18.0.101"]));
}

/// A reload whose write fails leaves the source-NAT maps (and everything
/// else) as the running configuration has them.
#[tokio::test]
async fn a_failed_reload_restores_the_source_nat_maps() {
    let (mut r, _rx) = started(config(SNAT_A, "fullnat"));
    let before = r.maps.snat.clone();
    // Fail after the first write of the reload: the new address is in.
    r.maps.tables.fail_from = Some(r.maps.tables.writes + 2);
    assert!(r.reload(config(SNAT_B, "dnat")).is_err());
    r.maps.tables.fail_from = None;
    r.tick(Instant::now());
    assert_eq!(r.maps.snat, before);
    assert_eq!(r.maps.addrs, addrs(&["198.18.0.100"]));
    assert_ne!(flags(&r) & LISTENER_F_FULLNAT, 0);
    assert_eq!(r.model.config().snat.ipv4[0].to_string(), "198.18.0.100");
    assert_eq!(reals(&r, REAL_F_DRAINING), 0);
}

/// A restart that finds the listener pinned in the other mode starts it
/// with new reals (as for a new target port); in the same mode it adopts
/// them. Stale source-NAT addresses in the pins are removed.
#[tokio::test]
async fn a_restart_adopts_reals_only_in_the_same_mode() {
    let (r, _rx) = started(config(SNAT_A, "fullnat"));
    let state = MapState {
        listeners: r
            .maps
            .tables
            .listeners
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect(),
        reals: r.maps.tables.reals.iter().map(|(i, v)| (*i, *v)).collect(),
        snat_addrs: vec![ip("198.18.0.100"), ip("198.18.0.99")],
    };
    let old: BTreeSet<u32> = state.reals.iter().map(|(i, _)| *i).collect();
    let ids = |m: &Model| -> BTreeSet<u32> {
        let (plan, _) = m.plan(std::time::Instant::now());
        plan.listeners[0].reals.iter().map(|x| x.id).collect()
    };
    let same = Model::adopt(config(SNAT_A, "fullnat"), &state);
    assert_eq!(ids(&same), old);
    let other = Model::adopt(config(SNAT_A, "dnat"), &state);
    assert!(ids(&other).is_disjoint(&old), "new reals in dnat mode");

    let (tx, _rx2) = mpsc::channel(16);
    let maps = FakeAll {
        addrs: state.snat_addrs.iter().copied().collect(),
        ..FakeAll::default()
    };
    let mut r2 = Reconciler::new(same, Written::adopt(&state), maps, tx);
    r2.start().unwrap();
    assert_eq!(r2.maps.addrs, addrs(&["198.18.0.100"]));
    assert_eq!(r2.maps.snat[&SNAT_V4].count, 1);
}
