//! The plan's alarms: the plan logs nothing, the reconciler's alarm log
//! logs each edge once.
use super::*;
use crate::daemon::alarms::AlarmLog;

/// Captures what `f` logs.
fn logs_of(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

/// Issue 10, finding 7: `all_down = "drop"` warns once per transition,
/// not on every tick.
#[test]
fn all_down_drop_is_logged_once_per_transition() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    for r in m.listeners()[1].reals.clone() {
        m.record(r.target.unwrap(), &outcome(false));
    }
    let mut log = AlarmLog::default();
    let logs = logs_of(|| {
        for _ in 0..10 {
            let (_, alarms) = m.plan(Instant::now());
            log.observe(m.listeners(), &alarms);
        }
    });
    let talos = logs
        .lines()
        .filter(|l| {
            l.contains("new flows are dropped") && l.trim_end().ends_with("listener=talos-api")
        })
        .count();
    assert_eq!(talos, 1, "{logs}");
    let t = m.listeners()[1].reals[0].target.unwrap();
    m.record(t, &outcome(true));
    m.record(t, &outcome(true));
    let logs = logs_of(|| {
        for _ in 0..10 {
            let (_, alarms) = m.plan(Instant::now());
            log.observe(m.listeners(), &alarms);
        }
    });
    assert!(logs.contains("new flows accepted"), "{logs}");
    assert!(!logs.contains("new flows are dropped"), "{logs}");
}

/// Issue 21: the plan is pure: planning an all-down listener many times
/// logs nothing and changes nothing (the reconciler logs the edges).
#[test]
fn plan_logs_nothing_and_is_repeatable() {
    let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
    for r in m.listeners()[1].reals.clone() {
        m.record(r.target.unwrap(), &outcome(false));
    }
    let now = Instant::now();
    let first = m.plan(now);
    let logs = logs_of(|| {
        for _ in 0..3 {
            assert_eq!(m.plan(now), first);
        }
    });
    assert_eq!(logs, "", "planning logs nothing");
    let kinds: Vec<_> = first.1.iter().map(|a| (a.name.as_str(), a.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("talos-api", AlarmKind::Dropping),
            ("talos-api-workers", AlarmKind::Dropping)
        ]
    );
}
