//! Reload and write-failure behaviour of the reconciler, on in-memory maps
//! that fail on demand (issue 10, defects 1-4).
use std::time::Duration;

use lb_common::{ListenerKey, REAL_F_DRAINING, REAL_F_SERVING};

use super::*;
use crate::daemon::model::Timing;
use crate::dataplane::maps::FakeMaps;
use crate::dataplane::tables::MapState;
use crate::health::Health;

/// Loopback backends: the checkers the tests start probe nothing outside
/// the host, and results are fed by hand.
pub(super) fn config(name: &str, target_port: u16, interval: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"
[dataplane]
interfaces = ["eth1"]
[health]
interval = "{interval}"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 2
[[backend]]
name = "cp-01"
address = "127.0.0.11"
[[backend]]
name = "cp-02"
address = "127.0.0.12"
[[listener]]
name = "{name}"
vip = "198.18.0.10"
port = 7000
target_port = {target_port}
deregistration_delay = "2s"
"#
    ))
    .unwrap()
}

pub(super) fn ok() -> CheckOutcome {
    CheckOutcome {
        success: true,
        reason: "ok".into(),
        proves_dead: false,
        duration: Duration::from_millis(1),
    }
}

pub(super) fn fail() -> CheckOutcome {
    CheckOutcome {
        success: false,
        reason: "refused".into(),
        proves_dead: true,
        duration: Duration::from_millis(1),
    }
}

pub(super) fn started(c: Config) -> (Reconciler<FakeMaps>, mpsc::Receiver<Checked>) {
    let (tx, rx) = mpsc::channel(1024);
    let mut r = Reconciler::new(Model::new(c), Written::default(), FakeMaps::default(), tx);
    r.start().unwrap();
    // Both backends confirmed up.
    for key in r
        .model
        .targets()
        .iter()
        .map(|t| t.key.clone())
        .collect::<Vec<_>>()
    {
        r.record(&key, &ok());
    }
    (r, rx)
}

pub(super) fn key() -> ListenerKey {
    ListenerKey::tcp_v4([198, 18, 0, 10], 7000)
}

/// Defect 1: a rename must not take the VIP:port offline once the old
/// name's drain ends.
#[tokio::test]
async fn renaming_a_listener_keeps_its_vip_port_in_the_data_path() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let before = *r.maps.listeners.get(&key()).unwrap();
    r.reload(config("echo-renamed", 7000, "60s")).unwrap();
    assert_eq!(
        r.model.listeners().len(),
        1,
        "updated in place, nothing retired"
    );
    assert_eq!(r.model.listeners()[0].name, "echo-renamed");
    // Well past the deregistration delay.
    r.tick(Instant::now() + Duration::from_secs(10));
    let after = r
        .maps
        .listeners
        .get(&key())
        .expect("VIP:7000 still balanced");
    assert_eq!(after.id, before.id, "same listener id: its counters go on");
    let serving = r
        .maps
        .reals
        .values()
        .filter(|x| x.flags & REAL_F_SERVING != 0)
        .count();
    assert_eq!(serving, 2);
}

/// Defect 1: a target_port change updates the listener in place; the old
/// mapping's reals drain on the old port, then go; the VIP stays balanced.
#[tokio::test]
async fn a_target_port_change_drains_the_old_mapping_and_keeps_the_vip() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    r.reload(config("echo", 7001, "60s")).unwrap();
    let l = *r.maps.listeners.get(&key()).expect("VIP:7000 balanced");
    assert_eq!(u16::from_be(l.target_port), 7001);
    let ports = |r: &Reconciler<FakeMaps>, flag: u8| -> Vec<u16> {
        r.maps
            .reals
            .values()
            .filter(|x| x.family != 0 && x.flags & flag != 0)
            .map(|x| u16::from_be(x.port))
            .collect()
    };
    assert_eq!(
        ports(&r, REAL_F_DRAINING),
        vec![7000, 7000],
        "old flows drain on 7000"
    );
    assert_eq!(
        ports(&r, REAL_F_SERVING),
        vec![7001, 7001],
        "healthy backends keep serving on the new port while it is checked"
    );
    r.tick(Instant::now() + Duration::from_secs(10));
    assert!(
        r.maps.listeners.contains_key(&key()),
        "still balanced after the drain"
    );
    assert_eq!(ports(&r, REAL_F_DRAINING), Vec::<u16>::new());
    assert_eq!(ports(&r, REAL_F_SERVING), vec![7001, 7001]);
}

/// Defect 2: a health-timing change keeps state and history and restarts
/// the checkers with the new timing.
#[tokio::test]
async fn a_health_timing_change_keeps_state_and_history() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let k0 = r.model.targets()[0].key.clone();
    // cp-01 goes down (two failures) and has a transition in its history.
    r.record(&k0, &fail());
    r.record(&k0, &fail());
    assert_eq!(r.model.targets()[0].state.health(), Health::Down);
    let history = r.model.targets()[0].state.history().to_vec();
    assert_eq!(history.len(), 1);
    let cp02 = r.model.targets()[1].state.clone();
    r.reload(config("echo", 7000, "50s")).unwrap();
    assert_eq!(r.model.targets()[0].state.health(), Health::Down);
    assert_eq!(r.model.targets()[0].state.history().to_vec(), history);
    assert_eq!(
        r.model.targets()[1].state,
        cp02,
        "up stays up, streaks kept"
    );
    assert_eq!(r.model.targets()[1].checks, 1, "result count kept");
    assert!(r
        .checkers()
        .running()
        .all(|(_, t)| t.interval == Duration::from_secs(50)));
    assert!(!r.model.condition(&r.model.listeners()[0]).failing_open);
    let serving = r
        .maps
        .reals
        .values()
        .filter(|x| x.flags & REAL_F_SERVING != 0)
        .count();
    assert_eq!(serving, 1, "cp-02 still serving, cp-01 still out");
}

/// Defect 3: a reload whose map write fails changes nothing: the running
/// configuration, checkers and health go on, and results still count.
#[tokio::test]
async fn a_reload_whose_write_fails_leaves_everything_running() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let running: Vec<(TargetKey, Timing)> = r
        .checkers()
        .running()
        .map(|(k, t)| (k.clone(), *t))
        .collect();
    r.maps.fail_from = Some(r.maps.writes + 1);
    let err = r.reload(config("echo", 7001, "30s")).unwrap_err();
    assert!(format!("{err:#}").contains("injected"), "{err:#}");
    assert_eq!(r.model.config(), &config("echo", 7000, "60s"));
    let after: Vec<(TargetKey, Timing)> = r
        .checkers()
        .running()
        .map(|(k, t)| (k.clone(), *t))
        .collect();
    assert_eq!(after, running, "checkers untouched");
    // Checks of the running configuration still count.
    r.maps.fail_from = None;
    let k0 = r.model.targets()[0].key.clone();
    r.record(&k0, &fail());
    assert_eq!(
        r.record(&k0, &fail()),
        Some(Health::Down),
        "a failing node is still taken out"
    );
    let l = *r.maps.listeners.get(&key()).unwrap();
    assert_eq!(u16::from_be(l.target_port), 7000);
}

/// Defect 4: a failed write neither resets counters nor forgets entries to
/// remove.
#[tokio::test]
async fn a_failed_write_keeps_counters_and_still_removes_stale_entries() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    assert_eq!(
        r.maps.resets.values().sum::<u32>(),
        2,
        "each new real zeroed once"
    );
    // Move the listener to another port: the old listener key must go.
    let moved = |p: u16| {
        let mut c = config("echo", 7000, "60s");
        c.listeners[0].port = p;
        c
    };
    // Fail in the middle of the write.
    r.maps.fail_from = Some(r.maps.writes + 3);
    assert!(r.reload(moved(7100)).is_err());
    r.maps.fail_from = None;
    r.tick(Instant::now());
    assert!(!r.written.is_dirty(), "retried at the tick");
    assert_eq!(
        r.maps.resets.values().copied().max(),
        Some(1),
        "no counter zeroed twice: {:?}",
        r.maps.resets
    );
    // The running config (port 7000) is back in the maps...
    assert!(r.maps.listeners.contains_key(&key()));
    // ...and a reload that succeeds now removes it.
    r.reload(moved(7100)).unwrap();
    r.tick(Instant::now() + Duration::from_secs(10));
    assert!(
        !r.maps.listeners.contains_key(&key()),
        "stale listener removed"
    );
    assert!(r
        .maps
        .listeners
        .contains_key(&ListenerKey::tcp_v4([198, 18, 0, 10], 7100)));
    assert_eq!(r.maps.resets.values().copied().max(), Some(1));
}

/// Ids are allocated against the data path's limits: listeners removed and
/// replaced while the old ones drain cannot overflow `MAX_LISTENERS`; the
/// reload is refused cleanly and nothing changes.
#[tokio::test]
async fn a_reload_past_the_listener_limit_is_refused_cleanly() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let with_ports = |first: u16| {
        let mut c = config("echo", 7000, "60s");
        let proto = c.listeners[0].clone();
        c.listeners = (0..20u16)
            .map(|i| {
                let mut l = proto.clone();
                l.name = format!("l{}", first + i);
                l.port = first + i;
                l
            })
            .collect();
        c
    };
    r.reload(with_ports(8000)).unwrap();
    // 20 draining + 20 new = 40 > 32.
    let err = r.reload(with_ports(9000)).unwrap_err();
    assert!(format!("{err:#}").contains("exceed"), "{err:#}");
    assert_eq!(r.model.config(), &with_ports(8000));
}

/// A dual-stack config: the same two nodes on one IPv4 and one IPv6 listener.
fn dual_stack() -> Config {
    Config::from_toml_str(
        r#"
[dataplane]
interfaces = ["eth1"]
[health]
interval = "60s"
timeout = "1s"
[[backend]]
name = "cp-01"
address = "127.0.0.11"
[[backend]]
name = "cp-02"
address = "127.0.0.12"
[[backend]]
name = "cp-01-v6"
address = "fd00:198:18:2::11"
[[backend]]
name = "cp-02-v6"
address = "fd00:198:18:2::12"
[[listener]]
name = "api"
vip = "198.18.0.10"
port = 7000
backends = ["cp-01", "cp-02"]
[[listener]]
name = "api-v6"
vip = "fd00:198:18:100::10"
port = 7000
backends = ["cp-01-v6", "cp-02-v6"]
"#,
    )
    .unwrap()
}

/// IPv6 listeners and reals are written with FAMILY_V6 and their 16-byte
/// addresses, next to the IPv4 ones; a daemon restarted on those maps
/// adopts the IPv6 listener's and reals' ids (their flows and counters).
#[tokio::test]
async fn ipv6_listener_is_written_and_adopted_next_to_ipv4() {
    use lb_common::{ip_words, EndpointKey, VipKey, FAMILY_V4, FAMILY_V6};
    use std::net::IpAddr;

    let vip6: IpAddr = "fd00:198:18:100::10".parse().unwrap();
    let node6: IpAddr = "fd00:198:18:2::11".parse().unwrap();
    let (r, _rx) = started(dual_stack());
    let key6 = ListenerKey::tcp(vip6, 7000);
    assert_eq!(key6.family, FAMILY_V6);
    let l4 = *r.maps.listeners.get(&key()).expect("IPv4 listener");
    let l6 = *r.maps.listeners.get(&key6).expect("IPv6 listener");
    assert_ne!(l4.id, l6.id);
    let reals = |lid: u32| -> Vec<lb_common::Real> {
        r.maps
            .reals
            .values()
            .filter(|x| x.listener == lid)
            .copied()
            .collect()
    };
    assert!(reals(l4.id).iter().all(|x| x.family == FAMILY_V4));
    let r6 = reals(l6.id);
    assert_eq!(r6.len(), 2);
    assert!(r6
        .iter()
        .all(|x| x.family == FAMILY_V6 && x.flags & REAL_F_SERVING != 0));
    assert!(r6.iter().any(|x| x.addr == ip_words(node6)));
    assert!(r.maps.vips.contains(&VipKey::of(vip6)));
    let fb = r
        .maps
        .fallback
        .get(&EndpointKey::tcp(node6, 7000))
        .expect("IPv6 reply fallback");
    assert_eq!((fb.vip, u16::from_be(fb.vport)), (ip_words(vip6), 7000));

    // A restart: the maps as the old daemon left them.
    let state = MapState {
        listeners: r.maps.listeners.iter().map(|(k, v)| (*k, *v)).collect(),
        reals: r.maps.reals.iter().map(|(id, v)| (*id, *v)).collect(),
        snat_addrs: vec![],
    };
    let model = Model::adopt(dual_stack(), &state);
    let (plan, _) = model.plan(Instant::now());
    let p6 = plan
        .listeners
        .iter()
        .find(|l| l.vip == vip6)
        .expect("IPv6 listener planned");
    assert_eq!(p6.id, l6.id, "the IPv6 listener keeps its id");
    let mut ids: Vec<u32> = p6.reals.iter().map(|x| x.id).collect();
    ids.sort_unstable();
    let mut old: Vec<u32> = r
        .maps
        .reals
        .iter()
        .filter(|(_, x)| x.listener == l6.id)
        .map(|(id, _)| *id)
        .collect();
    old.sort_unstable();
    assert_eq!(ids, old, "the IPv6 reals keep their ids");
    assert!(p6.reals.iter().all(|x| x.serving), "adopted health: up");
    // The writer continuing from those maps writes nothing it need not.
    let mut maps = FakeMaps {
        reals: r.maps.reals.clone(),
        listeners: r.maps.listeners.clone(),
        vips: r.maps.vips.clone(),
        fallback: r.maps.fallback.clone(),
        ..FakeMaps::default()
    };
    let mut written = Written::adopt(&state);
    written.apply_to(&mut maps, &plan).unwrap();
    assert_eq!(maps.listeners.get(&key6).map(|l| l.id), Some(l6.id));
    assert_eq!(maps.reals, r.maps.reals, "same reals, same addresses");
    assert_eq!(maps.vips, r.maps.vips);
}
