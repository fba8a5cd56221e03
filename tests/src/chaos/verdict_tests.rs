//! Unit tests of the chaos run's rules (pure functions over records).

use super::*;

fn probe(family: Family, start: f64, ok: bool) -> ProbeRecord {
    ProbeRecord {
        family,
        start,
        end: start + 0.01,
        result: if ok {
            Ok("cp-01".into())
        } else {
            Err("refused".into())
        },
    }
}

fn hz(at: f64, code: u16) -> HealthzSample {
    HealthzSample {
        second: at as u64,
        at,
        code: Some(code),
        reason: String::new(),
    }
}

#[test]
fn an_outage_runs_from_the_first_failure_to_the_next_success() {
    let ps: Vec<_> = [
        (0.0, true),
        (0.1, false),
        (0.2, false),
        (1.7, true),
        (1.8, false),
    ]
    .iter()
    .map(|&(t, ok)| probe(Family::V4, t, ok))
    .collect();
    assert_eq!(outages(&ps, Family::V4, 3.0), vec![(0.1, 1.7), (1.8, 3.0)]);
    assert!(outages(&ps, Family::V6, 3.0).is_empty());
}

#[test]
fn healthz_lies_only_when_nothing_got_through_around_an_ok() {
    // Everything fails from 10 s on.
    let ps: Vec<_> = (0..200)
        .map(|i| probe(Family::V4, f64::from(i) * 0.1, i < 100))
        .collect();
    let samples = [hz(9.0, 200), hz(10.01, 200), hz(12.0, 503), hz(13.0, 200)];
    // 10.01: probes before 10 s got through (the fault began after the
    // sample); 12 s said 503; 13 s said ok while nothing forwarded.
    assert_eq!(healthz_lies(&ps, &samples), vec![13]);
}

#[test]
fn only_a_killed_silenced_or_removed_node_excuses_a_stream_end() {
    let l = Limits {
        bound: 18.0,
        detection: 2.0,
        delay: 5.0,
    };
    let s = StreamRecord {
        id: 1,
        family: Family::V4,
        node: "cp-02".into(),
        opened: 1.0,
        ended: 12.0,
        last_echo: 5.0,
        end: End::Reset,
        detail: String::new(),
        bytes: 64,
    };
    let fault = |node: &str, loss| Applied {
        planned: crate::chaos::schedule::Planned {
            at: std::time::Duration::from_secs(5),
            fault: crate::chaos::schedule::Fault::SilenceNode {
                node: 2,
                hold: std::time::Duration::from_secs(20),
            },
        },
        start: 5.0,
        restored: 25.0,
        node: Some(node.into()),
        loss,
        link_out: None,
        failed_restart: None,
        failed_step: None,
        reuse: Vec::new(),
    };
    assert!(excused(&s, &[fault("cp-02", Loss::Dead)], &l));
    assert!(!excused(&s, &[fault("cp-01", Loss::Dead)], &l));
    assert!(!excused(&s, &[fault("cp-02", Loss::None)], &l));
    // Opened after the node came back: nothing excuses it.
    let later = StreamRecord {
        opened: 30.0,
        ended: 40.0,
        ..s
    };
    assert!(!excused(&later, &[fault("cp-02", Loss::Dead)], &l));
}
