//! Issue 12, "failover that tolerates disagreement": what the writer puts
//! in the mid-flow table and the `REAL_F_KEEPS_FLOWS` flag as checks fail
//! by timeout (no proof), by refusal (proof), and as drains run out.
use std::time::Duration;

use lb_common::{Listener, REAL_F_KEEPS_FLOWS, REAL_F_SERVING};

use super::tests::{config, fail, key, started};
use super::*;
use crate::dataplane::maps::FakeMaps;
use crate::health::Health;

/// A failed check that proves nothing (the node may be behind a filter).
fn timeout() -> CheckOutcome {
    CheckOutcome {
        success: false,
        reason: "timeout".into(),
        proves_dead: false,
        duration: Duration::from_millis(1),
    }
}

fn listener(r: &Reconciler<FakeMaps>) -> Listener {
    *r.maps.listeners.get(&key()).expect("listener written")
}

/// The healthy table packets read now, and the mid-flow one.
fn tables(r: &Reconciler<FakeMaps>) -> (Vec<u32>, Vec<u32>) {
    let l = listener(r);
    (
        r.maps.tables[&l.table].clone(),
        r.maps.tables[&l.midflow_table].clone(),
    )
}

/// Whether two tables are equal, without printing 65537 slots when not.
fn same(a: &[u32], b: &[u32]) -> bool {
    a.len() == b.len() && a == b
}

/// The real id of node `name` on the one listener.
fn real_id(r: &Reconciler<FakeMaps>, name: &str) -> u32 {
    let real = r.model.listeners()[0]
        .reals
        .iter()
        .find(|x| x.backend == name);
    real.expect("configured node").id
}

fn flags(r: &Reconciler<FakeMaps>, name: &str) -> u8 {
    r.maps.reals[&real_id(r, name)].flags
}

/// Records `outcome` for node `name`'s check.
fn record(r: &mut Reconciler<FakeMaps>, name: &str, outcome: &CheckOutcome) {
    let t = r.model.targets().iter().find(|t| t.backend == name);
    let key = t.expect("node checked").key.clone();
    r.record(&key, outcome);
}

/// Down by timeouts: out of the healthy table, but it keeps its flows and
/// the mid-flow table stays the table every node up gave; once down for
/// longer than the deregistration delay (2 s here) it is proven dead.
#[tokio::test]
async fn a_node_down_by_timeouts_keeps_its_flows_until_the_grace_ends() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let (all_up, midflow) = tables(&r);
    assert!(same(&midflow, &all_up), "all up: the two tables agree");
    let cp02 = real_id(&r, "cp-02");
    assert!(all_up.contains(&cp02));

    record(&mut r, "cp-02", &timeout());
    record(&mut r, "cp-02", &timeout());
    assert_eq!(r.model.targets()[1].state.health(), Health::Down);
    let (healthy, midflow) = tables(&r);
    assert!(!healthy.contains(&cp02), "no new flows for a down node");
    assert!(
        same(&midflow, &all_up),
        "mid-flow packets still map as when all were up"
    );
    assert_eq!(flags(&r, "cp-02") & REAL_F_SERVING, 0);
    assert_ne!(
        flags(&r, "cp-02") & REAL_F_KEEPS_FLOWS,
        0,
        "keeps its flows"
    );

    r.tick(Instant::now() + Duration::from_millis(1500));
    assert!(same(&tables(&r).1, &all_up), "still within the grace");
    r.tick(Instant::now() + Duration::from_secs(3));
    let (healthy, midflow) = tables(&r);
    assert!(
        same(&midflow, &healthy),
        "proven dead: the mid-flow table drops it too"
    );
    assert_eq!(
        flags(&r, "cp-02") & REAL_F_KEEPS_FLOWS,
        0,
        "flows rescheduled"
    );
}

/// Issue 20: a refused (or unreachable) check is what a host firewall
/// answers too (TCP RST, ICMP admin-prohibited), so by itself it proves
/// nothing: the node keeps its flows and its mid-flow slots (its silence in
/// the data path would prove it dead, see `evidence_tests`).
#[tokio::test]
async fn a_refused_check_alone_does_not_prove_a_down_node_dead() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let (all_up, _) = tables(&r);
    let cp02 = real_id(&r, "cp-02");
    record(&mut r, "cp-02", &fail());
    record(&mut r, "cp-02", &timeout());
    assert_eq!(r.model.targets()[1].state.health(), Health::Down);
    let (healthy, midflow) = tables(&r);
    assert!(midflow.contains(&cp02), "kept in the mid-flow table");
    assert!(same(&midflow, &all_up));
    assert!(!healthy.contains(&cp02), "no new flows");
    assert_ne!(flags(&r, "cp-02") & REAL_F_KEEPS_FLOWS, 0);
    assert_eq!(flags(&r, "cp-02") & REAL_F_SERVING, 0, "down");
}

/// A drained node keeps its place in the mid-flow table while its flows
/// drain; when the deregistration delay ends it is gone from it.
#[tokio::test]
async fn a_drained_node_leaves_the_midflow_table_when_its_drain_ends() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let (all_up, _) = tables(&r);
    let cp02 = real_id(&r, "cp-02");
    r.drain("cp-02").unwrap();
    let (healthy, midflow) = tables(&r);
    assert!(!healthy.contains(&cp02));
    assert!(
        same(&midflow, &all_up),
        "draining: keeps its mid-flow slots"
    );
    r.tick(Instant::now() + Duration::from_secs(3));
    let (healthy, midflow) = tables(&r);
    assert!(same(&midflow, &healthy), "drain over: gone");
    assert_eq!(flags(&r, "cp-02") & REAL_F_KEEPS_FLOWS, 0);
}

/// Two gateways with the same nodes (listed in another order, so their real
/// ids differ) that disagree about cp-02: the survivor's mid-flow table
/// names, slot by slot, the node the other gateway's healthy table names.
#[tokio::test]
async fn gateways_that_disagree_map_midflow_packets_to_the_same_node() {
    let (master, _rx) = started(config("echo", 7000, "60s"));
    let mut reversed = config("echo", 7000, "60s");
    reversed.backends.reverse();
    for l in &mut reversed.listeners {
        l.backends = vec![0, 1];
    }
    let (mut survivor, _rx2) = started(reversed);
    assert_ne!(real_id(&master, "cp-01"), real_id(&survivor, "cp-01"));
    record(&mut survivor, "cp-02", &timeout());
    record(&mut survivor, "cp-02", &timeout());
    let name = |r: &Reconciler<FakeMaps>, id: u32| -> String {
        let real = r.model.listeners()[0].reals.iter().find(|x| x.id == id);
        real.expect("real of the listener").backend.clone()
    };
    let (master_healthy, _) = tables(&master);
    let (survivor_healthy, survivor_midflow) = tables(&survivor);
    assert!(!same(&survivor_healthy, &survivor_midflow), "they disagree");
    for (slot, (m, s)) in master_healthy.iter().zip(&survivor_midflow).enumerate() {
        assert_eq!(name(&master, *m), name(&survivor, *s), "slot {slot}");
    }
}
