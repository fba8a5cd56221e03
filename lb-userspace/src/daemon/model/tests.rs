//! Unit tests of the model.
use super::*;
use crate::dataplane::plan::Plan;
use crate::health::CheckOutcome;

/// Two nodes behind the Kubernetes API listener, checked every 2 s with
/// thresholds 2: the start of every model test's configuration.
macro_rules! two_nodes_api {
    () => {
        r#"
[dataplane]
interfaces = ["eth1"]
[health]
interval = "2s"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 2
[[backend]]
name = "cp-01"
address = "192.168.30.31"
[[backend]]
name = "cp-02"
address = "192.168.30.32"
[[listener]]
name = "kubernetes-api"
vip = "192.168.30.30"
port = 6443
"#
    };
}
pub(super) use two_nodes_api;

const CONFIG: &str = concat!(
    two_nodes_api!(),
    r#"[[listener]]
name = "talos-api"
vip = "192.168.30.30"
port = 50000
all_down = "drop"
[[listener]]
name = "talos-api-workers"
vip = "192.168.30.30"
port = 50001
target_port = 50000
all_down = "drop"
"#
);

fn outcome(success: bool) -> CheckOutcome {
    CheckOutcome {
        success,
        reason: if success { "ok" } else { "refused" }.into(),
        proves_dead: !success,
        duration: Duration::from_millis(1),
    }
}

/// The plan of `m` now.
fn plan(m: &Model) -> Plan {
    m.plan(Instant::now()).0
}

/// The plan of `m` at `now`.
fn plan_at(m: &Model, now: Instant) -> Plan {
    m.plan(now).0
}

/// Whether listener `i` of `m` fails open.
fn failing_open(m: &Model, i: usize) -> bool {
    m.condition(&m.listeners()[i]).failing_open
}

fn serving(plan: &Plan, listener: usize) -> Vec<bool> {
    plan.listeners[listener]
        .reals
        .iter()
        .map(|r| r.serving)
        .collect()
}

#[test]
fn listeners_sharing_a_backend_port_share_checks() {
    let m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    // 2 backends × (6443, 50000); 50001 → 50000 reuses the 50000 checks.
    assert_eq!(m.targets().len(), 4);
    assert_eq!(
        m.listeners()[1].reals[0].target.unwrap(),
        m.listeners()[2].reals[0].target.unwrap()
    );
    let ids: Vec<u32> = m
        .listeners()
        .iter()
        .flat_map(|l| l.reals.iter())
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 5], "real ids are dense and stable");
}

#[test]
fn down_backend_leaves_the_table_and_all_down_fails_open_or_drops() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    assert_eq!(
        serving(&plan(&m), 0),
        vec![true, true],
        "start up on probation"
    );
    let t0 = m.listeners()[0].reals[0].target.unwrap();
    assert!(
        m.record(t0, &outcome(false)),
        "probation: one failure takes it down"
    );
    assert_eq!(serving(&plan(&m), 0), vec![false, true]);
    let t1 = m.listeners()[0].reals[1].target.unwrap();
    assert!(m.record(t1, &outcome(false)));
    let p = plan(&m);
    assert_eq!(
        serving(&p, 0),
        vec![true, true],
        "fail open: every backend serves"
    );
    assert!(failing_open(&m, 0));
    // Recovery needs healthy_threshold successes. (The first one
    // already changes the plan: a node that answers is no longer
    // proven dead, so it keeps flows again.)
    m.record(t1, &outcome(true));
    assert_eq!(m.targets()[t1].state.health(), Health::Down);
    assert!(m.record(t1, &outcome(true)));
    assert_eq!(serving(&plan(&m), 0), vec![false, true]);
    assert!(!failing_open(&m, 0));
}

/// Issue 12: a down node is proven dead only by its own answer (refused,
/// unreachable) during the current failure streak, or by staying down
/// for longer than the grace; until then it keeps flows.
#[test]
fn proven_dead_needs_the_nodes_answer_or_the_grace() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    let r = m.listeners()[0].reals[0].clone();
    let t = r.target.unwrap();
    let grace = m.listeners()[0].deregistration_delay;
    let keeps = |m: &Model, at: Instant| plan_at(m, at).listeners[0].reals[0].keeps_flows;
    let timeout = CheckOutcome {
        success: false,
        reason: "timeout".into(),
        proves_dead: false,
        duration: Duration::from_millis(1),
    };
    assert!(!m.proven_dead(&r, grace, Instant::now()), "up");
    assert!(
        m.record(t, &timeout),
        "probation: down at the first failure"
    );
    let now = Instant::now();
    assert!(!m.proven_dead(&r, grace, now), "a timeout proves nothing");
    assert!(keeps(&m, now));
    assert!(!plan_at(&m, now).listeners[0].reals[0].serving);
    let later = now + grace + Duration::from_secs(1);
    assert!(
        m.proven_dead(&r, grace, later),
        "down for longer than the grace"
    );
    assert!(!keeps(&m, later));

    // A refused check is what a host firewall answers too: by itself it
    // proves nothing (issue 20; data-path silence does, see
    // `evidence_tests`).
    m.record(t, &outcome(false));
    assert!(!m.proven_dead(&r, grace, Instant::now()));
    assert!(keeps(&m, Instant::now()));
}

#[test]
fn all_down_drop_serves_nothing() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    for r in m.listeners()[1].reals.clone() {
        m.record(r.target.unwrap(), &outcome(false));
    }
    let p = plan(&m);
    assert_eq!(serving(&p, 1), vec![false, false]);
    assert_eq!(
        serving(&p, 2),
        vec![false, false],
        "shared checks: 50001 follows 50000"
    );
    assert_eq!(serving(&p, 0), vec![true, true], "6443 checks are separate");
    assert!(!failing_open(&m, 1));
}

#[test]
fn first_round_needs_every_target() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    for t in 0..m.targets().len() - 1 {
        m.record(t, &outcome(true));
    }
    assert!(!m.first_round_done());
    let last = m.targets().len() - 1;
    m.record(last, &outcome(true));
    assert!(m.first_round_done());
}

fn with_backends(listeners_backends: &str) -> Config {
    let text = CONFIG.replace(
        "port = 6443\n",
        &format!("port = 6443\nbackends = [{listeners_backends}]\n"),
    );
    Config::from_toml_str(&text).unwrap()
}

#[test]
fn reload_keeps_ids_and_new_backends_wait_for_checks() {
    let mut m = Model::new(with_backends("\"cp-01\""));
    for t in 0..m.targets().len() {
        m.record(t, &outcome(true));
    }
    let before: Vec<u32> = m.listeners()[0].reals.iter().map(|r| r.id).collect();
    m.reload(with_backends("\"cp-01\", \"cp-02\""));
    let p = plan(&m);
    assert_eq!(
        p.listeners[0].reals[0].id, before[0],
        "cp-01 keeps its real id"
    );
    assert_eq!(
        serving(&p, 0),
        vec![true, false],
        "a backend added by reload waits for healthy_threshold successes"
    );
    let t = m.listeners()[0].reals[1].target.unwrap();
    assert!(!m.record(t, &outcome(true)));
    assert!(m.record(t, &outcome(true)));
    assert_eq!(serving(&plan(&m), 0), vec![true, true]);
}

#[test]
fn removed_backend_drains_then_goes() {
    let mut m = Model::new(with_backends("\"cp-01\", \"cp-02\""));
    let t0 = Instant::now();
    m.reload_at(with_backends("\"cp-01\""), t0);
    let p = plan_at(&m, t0);
    let r = &p.listeners[0].reals[1];
    assert!(!r.serving && r.draining, "removed backend drains: {r:?}");
    let later = t0 + Duration::from_secs(31);
    assert!(m.tick(later), "after deregistration_delay it is forgotten");
    assert_eq!(plan_at(&m, later).listeners[0].reals.len(), 1);
}

/// [`CONFIG`] with `drained = true` on cp-02.
fn cp02_drained_in_config() -> Config {
    let text = CONFIG.replace(
        "address = \"192.168.30.32\"\n",
        "address = \"192.168.30.32\"\ndrained = true\n",
    );
    Config::from_toml_str(&text).unwrap()
}

#[test]
fn drained_in_the_configuration_is_a_drain_undrain_cannot_end() {
    // At start-up: cp-02 takes no new flows on any listener.
    let mut m = Model::new(cp02_drained_in_config());
    for l in &plan(&m).listeners {
        let r = &l.reals[1];
        assert!(!r.serving && r.draining, "{r:?}");
    }
    assert!(m.all_drained().contains("cp-02"));
    let err = m.undrain("cp-02").unwrap_err();
    assert!(err.contains("drained = true"), "{err}");
    assert!(!plan(&m).listeners[0].reals[1].serving);

    // Taking the line out and reloading ends the drain.
    m.reload(Config::from_toml_str(CONFIG).unwrap());
    assert_eq!(serving(&plan(&m), 0), vec![true, true]);
    assert!(m.all_drained().is_empty());

    // Putting it in by reload drains again; a drain by hand on top
    // outlives the configuration's.
    m.reload(cp02_drained_in_config());
    assert!(!plan(&m).listeners[0].reals[1].serving);
    m.drain("cp-02").unwrap();
    m.reload(Config::from_toml_str(CONFIG).unwrap());
    assert!(
        !plan(&m).listeners[0].reals[1].serving,
        "still drained by hand"
    );
    m.undrain("cp-02").unwrap();
    assert_eq!(serving(&plan(&m), 0), vec![true, true]);
}

#[test]
fn drain_and_undrain_a_node() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    m.drain("cp-02").unwrap();
    let p = plan(&m);
    for l in &p.listeners {
        let r = &l.reals[1];
        assert!(!r.serving && r.draining, "{r:?}");
    }
    assert!(m.drain("cp-09").is_err());
    m.undrain("cp-02").unwrap();
    assert_eq!(serving(&plan(&m), 0), vec![true, true]);
}

/// Issue 19 finding 9: a node removed, re-added and removed again within
/// its deregistration delay keeps its identity, so its flows drain until
/// the LAST removal's deadline (a re-added node used to get a new real,
/// and the old one, holding the flows, went at the first deadline).
#[test]
fn a_quick_revert_keeps_the_real_and_its_flows() {
    let both = || with_backends("\"cp-01\", \"cp-02\"");
    let mut m = Model::new(both());
    let id = m.listeners()[0].reals[1].id;
    let t0 = Instant::now();
    m.reload_at(with_backends("\"cp-01\""), t0);
    m.reload_at(both(), t0 + Duration::from_secs(10));
    assert_eq!(m.listeners()[0].reals[1].id, id, "re-added: same real");
    assert_eq!(m.listeners()[0].reals.len(), 2, "no second real");
    m.reload_at(with_backends("\"cp-01\""), t0 + Duration::from_secs(20));
    // Past the first removal's deadline (30 s), before the last one's.
    let t3 = t0 + Duration::from_secs(31);
    m.tick(t3);
    let p = plan_at(&m, t3);
    let r = p.listeners[0].reals.iter().find(|r| r.id == id);
    assert!(
        r.is_some_and(|r| r.draining && !r.serving),
        "still draining: {r:?}"
    );
    let later = t0 + Duration::from_secs(51);
    m.tick(later);
    assert_eq!(plan_at(&m, later).listeners[0].reals.len(), 1, "then gone");
}

#[path = "alarm_tests.rs"]
mod alarm_tests;
