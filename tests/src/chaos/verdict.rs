//! The pass rules of a chaos run, the per-second timeline and the final
//! table.
//!
//! Rules: no corrupted byte; no stream ends unless its node was killed,
//! silenced or removed; no stream waits longer than the dead-node bound for
//! an echo (so every stream of a dead node ends, or resumes, within it); no
//! new-connection outage longer than the detection window (plus the time a
//! gateway link was out, plus 1.5 s for neighbours and IPv6 to settle);
//! no failed restart; every control step does what it must (valid reloads
//! accepted, an invalid one refused, drains obeyed); reused client ports
//! always reach a node; and no second where `/healthz` says 200 while no
//! probe gets through.

use std::fmt::Write as _;

use super::faults::{Applied, Loss};
use super::streams::{End, Family, HealthzSample, ProbeRecord, StreamRecord};

/// The limits the rules use (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Dead-node bound: longest a stream may wait for an echo.
    pub bound: f64,
    /// Detection window: longest new-connection outage.
    pub detection: f64,
    /// The listeners' deregistration delay.
    pub delay: f64,
}

/// Everything the run recorded.
#[derive(Debug)]
pub struct Record<'a> {
    /// Streams.
    pub streams: &'a [StreamRecord],
    /// Probes.
    pub probes: &'a [ProbeRecord],
    /// `/healthz` samples.
    pub healthz: &'a [HealthzSample],
    /// Faults.
    pub faults: &'a [Applied],
    /// End of the run (s).
    pub end: f64,
}

/// The verdict: a table and whether every rule held.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Every rule held.
    pub pass: bool,
    /// The printed table.
    pub table: String,
    /// What broke, one line each.
    pub failures: Vec<String>,
    /// Figures for the summary (longest outages, dead-node end times...).
    pub figures: Vec<String>,
}

fn excused(r: &StreamRecord, faults: &[Applied], l: &Limits) -> bool {
    faults.iter().any(|a| {
        a.loss != Loss::None
            && a.node.as_deref() == Some(r.node.as_str())
            && r.opened <= a.restored + 0.5
            && r.ended >= a.start - 0.5
            && r.ended <= a.restored + l.bound + l.delay
    })
}

/// New-connection outages of one family: (first failed start, next
/// success start).
pub fn outages(probes: &[ProbeRecord], fam: Family, end: f64) -> Vec<(f64, f64)> {
    let mut ps: Vec<&ProbeRecord> = probes.iter().filter(|p| p.family == fam).collect();
    ps.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut out = Vec::new();
    let mut first_fail: Option<f64> = None;
    for p in ps {
        match (&p.result, first_fail) {
            (Err(_), None) => first_fail = Some(p.start),
            (Ok(_), Some(f)) => {
                out.push((f, p.start));
                first_fail = None;
            }
            _ => {}
        }
    }
    if let Some(f) = first_fail {
        out.push((f, end));
    }
    out
}

/// What an outage over `[a, b]` is allowed: the detection window, plus any
/// gateway link outage overlapping it and 1.5 s for the link to settle.
fn allowance(a: f64, b: f64, faults: &[Applied], l: &Limits) -> f64 {
    let link: f64 = faults
        .iter()
        .filter_map(|f| f.link_out)
        .filter(|&(s, e)| s <= b && e + 1.5 >= a)
        .map(|(s, e)| e - s + 1.5)
        .sum();
    l.detection + link
}

/// Seconds whose `/healthz` answer was 200 while no probe got through
/// from a second before it was asked to half a second after (at least
/// four tried). The window gives the daemon a second to notice a change
/// and keeps a fault that begins just after the sample from counting; a
/// real lie (a black hole reported healthy) lasts longer and is caught.
pub fn healthz_lies(probes: &[ProbeRecord], healthz: &[HealthzSample]) -> Vec<u64> {
    healthz
        .iter()
        .filter(|h| h.code == Some(200))
        .filter(|h| {
            let tried: Vec<_> = probes
                .iter()
                .filter(|p| p.start >= h.at - 1.0 && p.start <= h.at + 0.5)
                .collect();
            tried.len() >= 4 && tried.iter().all(|p| p.result.is_err())
        })
        .map(|h| h.second)
        .collect()
}

/// Judges a run.
pub fn judge(rec: &Record<'_>, l: &Limits) -> Verdict {
    let mut rows: Vec<(String, String, String, bool)> = Vec::new();
    let mut failures = Vec::new();
    let mut figures = Vec::new();

    let corrupt: Vec<_> = rec
        .streams
        .iter()
        .filter(|s| s.end == End::Corrupt)
        .collect();
    for s in &corrupt {
        failures.push(format!(
            "corrupt: stream {} on {}: {}",
            s.id, s.node, s.detail
        ));
    }
    rows.push((
        "no corrupted byte".into(),
        "0".into(),
        corrupt.len().to_string(),
        corrupt.is_empty(),
    ));

    let unexpected: Vec<_> = rec
        .streams
        .iter()
        .filter(|s| matches!(s.end, End::Reset | End::Eof | End::Error))
        .filter(|s| !excused(s, rec.faults, l))
        .collect();
    for s in &unexpected {
        failures.push(format!(
            "unexpected {:?} at {:.1} s: stream {} ({:?}) on {}, opened {:.1} s: {}",
            s.end, s.ended, s.id, s.family, s.node, s.opened, s.detail
        ));
    }
    rows.push((
        "no reset of a stream whose node was not killed, silenced or removed".into(),
        "0".into(),
        unexpected.len().to_string(),
        unexpected.is_empty(),
    ));

    let stalled: Vec<_> = rec
        .streams
        .iter()
        .filter(|s| s.end == End::Stalled)
        .collect();
    for s in &stalled {
        failures.push(format!(
            "stalled: stream {} ({:?}) on {}, last echo {:.1} s, given up {:.1} s: {}",
            s.id, s.family, s.node, s.last_echo, s.ended, s.detail
        ));
    }
    // How long after a kill or silence its node's streams ended.
    let mut dead_ends: Vec<(String, f64)> = Vec::new();
    let mut resumed = 0;
    for a in rec.faults.iter().filter(|a| a.loss == Loss::Dead) {
        let node = a.node.clone().unwrap_or_default();
        for s in rec
            .streams
            .iter()
            .filter(|s| s.node == node && s.opened < a.start)
        {
            if s.ended < a.start {
                continue;
            }
            if s.end != End::Clean && s.ended <= a.restored + l.bound + l.delay {
                dead_ends.push((format!("{}", a.planned.fault), s.ended - a.start));
            } else {
                resumed += 1;
            }
        }
    }
    let worst = dead_ends.iter().map(|d| d.1).fold(0.0, f64::max);
    figures.push(format!(
        "dead-node streams: {} ended after their node's kill or silence (longest {worst:.1} s), {resumed} resumed after it came back",
        dead_ends.len()
    ));
    for (what, t) in &dead_ends {
        figures.push(format!("  {t:5.1} s after: {what}"));
    }
    let ok = stalled.is_empty() && worst <= l.bound;
    rows.push((
        "every stream of a killed/silenced node ended (or resumed) within the bound".into(),
        format!("{:.0} s", l.bound),
        format!("{} stalled, longest end {worst:.1} s", stalled.len()),
        ok,
    ));

    let mut worst_excess = f64::MIN;
    let mut longest = String::new();
    for fam in [Family::V4, Family::V6] {
        let out = outages(rec.probes, fam, rec.end);
        let mut max = (0.0, 0.0, 0.0);
        for &(a, b) in &out {
            let allowed = allowance(a, b, rec.faults, l);
            if b - a > allowed {
                failures.push(format!(
                    "{fam:?} new-connection outage {:.1}-{:.1} s ({:.1} s > {allowed:.1} s allowed)",
                    a,
                    b,
                    b - a
                ));
            }
            worst_excess = worst_excess.max(b - a - allowed);
            if b - a > max.0 {
                max = (b - a, a, allowed);
            }
        }
        let n = rec.probes.iter().filter(|p| p.family == fam).count();
        let bad = rec
            .probes
            .iter()
            .filter(|p| p.family == fam && p.result.is_err())
            .count();
        figures.push(format!(
            "prober {fam:?}: {n} probes, {bad} failed, {} outages, longest {:.2} s at {:.1} s (allowed {:.1} s)",
            out.len(),
            max.0,
            max.1,
            max.2
        ));
        let _ = write!(longest, "{fam:?} {:.2} s ", max.0);
    }
    rows.push((
        "prober's longest outage within the detection window".into(),
        format!("{:.1} s (+link outages)", l.detection),
        longest.trim().to_string(),
        worst_excess <= 0.0,
    ));

    let restarts: Vec<_> = rec
        .faults
        .iter()
        .filter_map(|a| a.failed_restart.clone())
        .collect();
    failures.extend(restarts.iter().map(|r| format!("failed restart: {r}")));
    rows.push((
        "no failed restart".into(),
        "0".into(),
        restarts.len().to_string(),
        restarts.is_empty(),
    ));

    let steps: Vec<_> = rec
        .faults
        .iter()
        .filter_map(|a| {
            a.failed_step
                .as_ref()
                .map(|e| format!("{:.1} s {}: {e}", a.start, a.planned.fault))
        })
        .collect();
    failures.extend(steps.iter().cloned());
    rows.push((
        "reloads/drains did what they must (invalid refused)".into(),
        "0".into(),
        steps.len().to_string(),
        steps.is_empty(),
    ));

    let reuse: Vec<String> = rec
        .faults
        .iter()
        .flat_map(|a| {
            a.reuse.iter().filter_map(move |(f, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("{:.1} s {f:?} {e}", a.start))
            })
        })
        .collect();
    let reuse_total: usize = rec.faults.iter().map(|a| a.reuse.len()).sum();
    failures.extend(reuse.iter().map(|r| format!("reused port failed: {r}")));
    rows.push((
        "reused client ports reach a node".into(),
        "0 failed".into(),
        format!("{} of {reuse_total} failed", reuse.len()),
        reuse.is_empty(),
    ));

    let lies = healthz_lies(rec.probes, rec.healthz);
    for s in &lies {
        failures.push(format!(
            "/healthz said 200 at {s} s while no probe got through"
        ));
    }
    let c503 = rec.healthz.iter().filter(|h| h.code == Some(503)).count();
    let none = rec.healthz.iter().filter(|h| h.code.is_none()).count();
    figures.push(format!(
        "/healthz: {} samples, {c503} said 503, {none} unanswered (daemon restarting)",
        rec.healthz.len()
    ));
    rows.push((
        "no second where /healthz says ok while nothing forwards (1 s to notice)".into(),
        "0".into(),
        lies.len().to_string(),
        lies.is_empty(),
    ));

    let opened = rec.streams.len();
    let bytes: u64 = rec.streams.iter().map(|s| s.bytes).sum();
    figures.insert(
        0,
        format!(
            "streams: {opened} ({} IPv6), {bytes} bytes echoed intact, {} faults applied",
            rec.streams
                .iter()
                .filter(|s| s.family == Family::V6)
                .count(),
            rec.faults.len()
        ),
    );

    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<76} {:<22} {:<28} result",
        "rule", "limit", "measured"
    );
    for (rule, limit, measured, ok) in &rows {
        let _ = writeln!(
            table,
            "{rule:<76} {limit:<22} {measured:<28} {}",
            if *ok { "PASS" } else { "FAIL" }
        );
    }
    Verdict {
        pass: rows.iter().all(|r| r.3),
        table,
        failures,
        figures,
    }
}

/// The per-second timeline: one line per second with an event or a
/// problem, quiet stretches folded into one line.
pub fn timeline(rec: &Record<'_>) -> String {
    let mut out = String::new();
    let lies = healthz_lies(rec.probes, rec.healthz);
    let last = rec.end.ceil() as u64;
    let mut quiet_from: Option<(u64, usize, usize)> = None;
    let flush = |out: &mut String, q: &mut Option<(u64, usize, usize)>, to: u64| {
        if let Some((from, ok, n)) = q.take() {
            let to = to.saturating_sub(1);
            let span = if to > from {
                format!("{from:>5}-{to:<5}")
            } else {
                format!("{from:>5}      ")
            };
            let _ = writeln!(out, "{span} quiet: /healthz 200, probes {ok}/{n}");
        }
    };
    for s in 0..last {
        let sf = s as f64;
        let probes: Vec<_> = rec
            .probes
            .iter()
            .filter(|p| p.start >= sf && p.start < sf + 1.0)
            .collect();
        let count = |fam| {
            let v: Vec<_> = probes.iter().filter(|p| p.family == fam).collect();
            (v.iter().filter(|p| p.result.is_ok()).count(), v.len())
        };
        let (o4, n4) = count(Family::V4);
        let (o6, n6) = count(Family::V6);
        let hz = rec.healthz.iter().find(|h| h.second == s);
        let code = hz.and_then(|h| h.code);
        let mut events: Vec<String> = Vec::new();
        for a in rec.faults {
            if a.start >= sf && a.start < sf + 1.0 {
                events.push(format!("{}", a.planned.fault));
            }
            if a.restored > a.start && a.restored >= sf && a.restored < sf + 1.0 {
                events.push("restored".into());
            }
        }
        for st in rec.streams {
            if st.ended >= sf && st.ended < sf + 1.0 && st.end != End::Clean {
                events.push(format!(
                    "stream on {} {:?} {:?}",
                    st.node, st.family, st.end
                ));
            }
        }
        if lies.contains(&s) {
            events.push("HEALTHZ LIE".into());
        }
        let quiet = events.is_empty() && code == Some(200) && o4 == n4 && o6 == n6;
        if quiet {
            let q = quiet_from.get_or_insert((s, 0, 0));
            q.1 += o4 + o6;
            q.2 += n4 + n6;
            continue;
        }
        flush(&mut out, &mut quiet_from, s);
        let code = match (code, hz) {
            (Some(c), Some(h)) if c != 200 => format!("{c} {}", h.reason),
            (Some(c), _) => c.to_string(),
            (None, _) => "-".into(),
        };
        let _ = writeln!(
            out,
            "{s:>5}       /healthz {code:<28} v4 {o4:>2}/{n4:<2} v6 {o6:>2}/{n6:<2} {}",
            events.join("; ")
        );
    }
    flush(&mut out, &mut quiet_from, last);
    out
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
