//! The chaos run in CI (issue 20, item 5): 120 s of seeded faults against
//! the dual-stack lab, judged by the rules of `lb_tests::chaos::verdict`
//! (see `docs/chaos.md`). The seed is fixed, so the schedule is the same
//! every run; a failure prints the command that replays it.
//!
//! Root and a built `lb` are needed; without them the test skips (and
//! fails under `CI=true`).

use lb_tests::chaos::{self, ChaosOptions};
use lb_tests::netns_ready;

/// The seed CI runs with.
const SEED: u64 = 76;

#[test]
fn chaos_120_s_fixed_seed() {
    if !netns_ready("chaos_120_s_fixed_seed") {
        return;
    }
    let o = ChaosOptions {
        seconds: 120,
        seed: SEED,
        bound: None,
        cp_sim: Some(env!("CARGO_BIN_EXE_cp-sim").into()),
        lb_bin: None,
    };
    let v = chaos::run(&o).expect("running the chaos lab");
    assert!(
        v.pass,
        "chaos run failed (reproduce: {}):\n{}\n{}",
        chaos::reproduce_command(&o),
        v.table,
        v.failures.join("\n")
    );
}
