//! The checker tasks, one per target identity, following the model's
//! targets: a checker whose target is gone stops, a new target gets one,
//! and one whose timing or certificate files changed is restarted (the
//! target's state is kept by the model).
use std::collections::BTreeMap;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::model::{Model, TargetKey, Timing};
use crate::health::{spawn_checker, CheckOutcome, CheckSpec, Probers};

/// A check result, tagged with the identity of the target it is about.
pub type Checked = (TargetKey, CheckOutcome);

/// The running checker tasks, one per target identity.
#[derive(Default)]
pub struct Checkers {
    running: BTreeMap<TargetKey, Running>,
}

/// A running checker: its timing, the fingerprint of the certificate files
/// its check was built from, and its task.
struct Running {
    timing: Timing,
    files: u64,
    handle: JoinHandle<()>,
}

impl Checkers {
    /// Makes the running checkers match `model`'s targets: a checker whose
    /// target is gone stops, a new target gets one, and one whose timing
    /// or certificate files' contents changed (a CA bundle rotated at the
    /// same path) is restarted (its target's state is kept by the model).
    pub fn follow(&mut self, model: &Model, tx: &mpsc::Sender<Checked>) {
        let files = &model.config().files;
        let mut probers = Probers::new(files.clone());
        let mut next = BTreeMap::new();
        for t in model.targets() {
            let fingerprint = files.fingerprint(t.key.check.files());
            match self.running.remove(&t.key) {
                Some(r) if r.timing == t.timing && r.files == fingerprint => {
                    next.insert(t.key.clone(), r);
                }
                old => {
                    if let Some(r) = old {
                        r.handle.abort();
                    }
                    let spec = CheckSpec {
                        prober: probers.prober(t.key.addr, &t.key.check),
                        interval: t.timing.interval,
                        timeout: t.timing.timeout,
                        jitter: t.timing.jitter,
                    };
                    let handle = spawn_checker(t.key.clone(), spec, tx.clone());
                    let r = Running {
                        timing: t.timing,
                        files: fingerprint,
                        handle,
                    };
                    next.insert(t.key.clone(), r);
                }
            }
        }
        for (_, r) in std::mem::take(&mut self.running) {
            r.handle.abort();
        }
        self.running = next;
    }

    /// The running checkers: target and timing.
    pub fn running(&self) -> impl Iterator<Item = (&TargetKey, &Timing)> {
        self.running.iter().map(|(k, r)| (k, &r.timing))
    }

    /// Stops every checker.
    pub fn stop(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.handle.abort();
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.stop();
    }
}
