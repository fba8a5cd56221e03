//! Issue 20: a down node is dead when the data path saw it leave traffic
//! unanswered, alive while it answers; a refused SYN takes a node out of
//! new-flow choices until a check confirms or clears it.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lb_common::RealSeen;

use super::*;
use crate::config::Config;
use crate::daemon::model::Model;
use crate::dataplane::Plan;
use crate::health::CheckOutcome;

const CONFIG: &str = crate::daemon::model::tests::two_nodes_api!();

const S: u64 = 1_000_000_000;

fn check(success: bool, reason: &str, duration: Duration) -> CheckOutcome {
    CheckOutcome {
        success,
        reason: reason.into(),
        proves_dead: reason == "refused",
        duration,
    }
}

/// Real 0 (cp-01) as the data path saw it at `now_ns`.
fn seen(m: &mut Model, s: RealSeen, now_ns: u64) {
    let id = m.listeners()[0].reals[0].id;
    m.observe_evidence(BTreeMap::from([(id, s)]), now_ns, Instant::now());
}

fn target(m: &Model) -> usize {
    m.listeners()[0].reals[0].target.unwrap()
}

fn down(m: &mut Model, reason: &str) {
    let t = target(m);
    m.record(t, &check(false, reason, Duration::from_millis(1)));
    m.record(t, &check(false, reason, Duration::from_millis(1)));
    assert_eq!(m.targets()[t].state.health(), Health::Down);
}

fn plan(m: &Model) -> Plan {
    m.plan(Instant::now()).0
}

fn keeps(m: &mut Model) -> bool {
    plan(m).listeners[0].reals[0].keeps_flows
}

#[test]
fn a_down_node_silent_for_the_bound_is_dead() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    down(&mut m, "timeout");
    // Sent data at 10 s, never answered since its last answer at 9 s.
    let s = RealSeen {
        sent_ns: 11 * S,
        reply_ns: 9 * S,
        waiting_ns: 10 * S,
        refused_ns: 0,
    };
    seen(&mut m, s, 11 * S);
    assert!(keeps(&mut m), "unanswered for 1 s: still kept");
    seen(&mut m, s, 10 * S + SILENCE_BOUND.as_nanos() as u64);
    assert!(!keeps(&mut m), "unanswered for the bound: dead, flows cut");
    // It answers again: alive, keeps its flows (while its grace lasts).
    let s = RealSeen {
        reply_ns: 13 * S,
        ..s
    };
    seen(&mut m, s, 14 * S);
    assert!(keeps(&mut m));
}

#[test]
fn a_node_that_answers_its_flows_keeps_them_whatever_its_checks_meet() {
    for reason in ["timeout", "refused", "unreachable"] {
        let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
        down(&mut m, reason);
        // Traffic every tick, answered every time.
        let s = RealSeen {
            sent_ns: 100 * S,
            reply_ns: 100 * S + 1,
            waiting_ns: 100 * S,
            refused_ns: 0,
        };
        seen(&mut m, s, 110 * S);
        assert!(keeps(&mut m), "{reason}: answering, kept");
        assert!(!plan(&m).listeners[0].reals[0].serving);
    }
}

#[test]
fn an_up_node_that_is_silent_keeps_serving() {
    // Silence alone is no verdict: the checks decide health.
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    let s = RealSeen {
        sent_ns: 20 * S,
        reply_ns: 1,
        waiting_ns: 2 * S,
        refused_ns: 0,
    };
    seen(&mut m, s, 30 * S);
    let p = plan(&m);
    assert!(p.listeners[0].reals[0].serving && p.listeners[0].reals[0].keeps_flows);
}

#[test]
fn cuts_are_reported_once_when_a_kept_node_loses_its_flows() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    down(&mut m, "timeout");
    let p = plan(&m);
    assert!(m.cuts(&p).is_empty(), "kept");
    let s = RealSeen {
        sent_ns: 20 * S,
        reply_ns: 1,
        waiting_ns: 10 * S,
        refused_ns: 0,
    };
    seen(&mut m, s, 20 * S);
    let p = plan(&m);
    let cuts = m.cuts(&p);
    assert_eq!(cuts.len(), 1);
    assert_eq!(cuts[0].backend, "cp-01");
    assert_eq!(cuts[0].silent, Duration::from_secs(10));
    let p = plan(&m);
    assert!(m.cuts(&p).is_empty(), "logged once");
}

#[test]
fn a_refusal_takes_the_node_out_until_a_check_confirms_or_clears_it() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    let t = target(&m);
    // The first reading only remembers episodes (a restart must not act
    // on old ones).
    let refused = RealSeen {
        refused_ns: 5 * S,
        ..RealSeen::default()
    };
    seen(&mut m, refused, 5 * S);
    assert!(m.targets()[t].refused_at.is_none(), "first reading");
    let refused = RealSeen {
        refused_ns: 6 * S,
        ..RealSeen::default()
    };
    seen(&mut m, refused, 6 * S);
    assert!(m.targets()[t].refused_at.is_some(), "a new episode");
    let p = plan(&m);
    assert!(!p.listeners[0].reals[0].serving, "out of new-flow choices");
    assert!(p.listeners[0].reals[0].keeps_flows, "keeps its flows");
    assert!(p.listeners[0].reals[1].serving);

    // A check that started before the refusal clears nothing.
    std::thread::sleep(Duration::from_millis(20));
    m.record(t, &check(true, "ok", Duration::from_secs(5)));
    assert!(!plan(&m).listeners[0].reals[0].serving);
    // One that started after it does.
    assert!(m.record(t, &check(true, "ok", Duration::from_millis(1))));
    assert!(plan(&m).listeners[0].reals[0].serving);

    // Confirmed: the checks take it down; the mark ends.
    let refused = RealSeen {
        refused_ns: 20 * S,
        ..RealSeen::default()
    };
    seen(&mut m, refused, 20 * S);
    assert!(m.targets()[t].refused_at.is_some());
    down(&mut m, "refused");
    assert!(m.targets()[t].refused_at.is_none());
    assert!(!plan(&m).listeners[0].reals[0].serving);
}

#[test]
fn the_last_node_up_is_not_taken_out_by_a_refusal() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    // cp-02 down: cp-01 is the only node up.
    let t2 = m.listeners()[0].reals[1].target.unwrap();
    m.record(t2, &check(false, "timeout", Duration::from_millis(1)));
    m.record(t2, &check(false, "timeout", Duration::from_millis(1)));
    seen(&mut m, RealSeen::default(), S);
    let refused = RealSeen {
        refused_ns: 2 * S,
        ..RealSeen::default()
    };
    seen(&mut m, refused, 2 * S);
    assert!(m.targets()[target(&m)].refused_at.is_some());
    assert!(
        plan(&m).listeners[0].reals[0].serving,
        "no other node: kept serving"
    );
}
