//! Keeps the metric reference honest: the table of `docs/metrics.md` lists
//! exactly the metric families a scrape exposes, each with its type.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::daemon::DaemonMetrics;
use super::{encode, tests::collector, Format};
use crate::health::{CheckOutcome, Health};

/// `name → type` of every family a classic-format scrape declares.
fn exposed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// `name → type` of every row of the page's metric table: the first cell
/// holds one or more backticked names, the second the type.
fn documented(page: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut in_table = false;
    for line in page.lines() {
        if line.starts_with("| metric | type |") {
            in_table = true;
            continue;
        }
        if in_table && !line.starts_with('|') {
            in_table = false;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        for name in names.split(',') {
            out.insert(name.trim().trim_matches('`').to_string(), kind.to_string());
        }
    }
    out
}

#[test]
fn metrics_page_lists_every_family_with_its_type() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let page = std::fs::read_to_string(&path).expect("reading docs/metrics.md");
    let doc = documented(&page);
    // The health families appear with their first check.
    let daemon = DaemonMetrics::new();
    let failed = CheckOutcome {
        success: false,
        reason: "refused".into(),
        proves_dead: true,
        duration: Duration::from_millis(3),
    };
    let target = "198.18.2.12:6443".parse().unwrap();
    daemon.record_check("cp-02", target, &failed, Some(Health::Down));
    // The classic format names counters with `_total`, as the page does.
    let text = encode(collector(), &daemon, Format::Prometheus).unwrap();
    let scraped = exposed(&text);
    assert!(
        scraped.len() >= 30,
        "only {} families scraped",
        scraped.len()
    );
    let mut problems = Vec::new();
    for (name, kind) in &scraped {
        match doc.get(name) {
            None => problems.push(format!("{name} ({kind}): exposed, not in docs/metrics.md")),
            Some(k) if k != kind => {
                problems.push(format!("{name}: exposed as {kind}, documented as {k}"))
            }
            Some(_) => {}
        }
    }
    for name in doc.keys().filter(|n| !scraped.contains_key(*n)) {
        problems.push(format!("{name}: in docs/metrics.md, not exposed"));
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md is stale:\n{}",
        problems.join("\n")
    );
}
