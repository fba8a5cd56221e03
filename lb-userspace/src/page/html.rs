//! Renders the status page: one self-contained HTML document (inline CSS
//! and SVG, no script, no external asset) from a [`Status`] and the
//! sampled [`History`]. Every string that comes from the configuration or
//! a check (names, reasons, errors) goes through [`escape`].
use std::fmt::Write as _;
use std::net::SocketAddr;

use super::history::{self, Counts, History, SAMPLE_EVERY_MS, WINDOW_MS};
use super::svg;
use crate::daemon::status::{BackendStatus, ListenerStatus, Status};
use crate::health::Health;

/// Seconds between the page's own refreshes.
pub const REFRESH_SECS: u32 = 5;

/// What the page says about the binary serving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build {
    /// Package version.
    pub version: String,
    /// Git commit it was built from.
    pub commit: String,
}

impl Build {
    /// This binary.
    pub fn current() -> Build {
        Build {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: crate::metrics::daemon::GIT_COMMIT.into(),
        }
    }
}

/// `s` with `& < > " '` replaced by entities: safe in text and in quoted
/// attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A byte rate for people: `0 B/s`, `12.3 kB/s`, `4.5 MB/s`, …
pub fn byte_rate(per_sec: f64) -> String {
    let units = ["B/s", "kB/s", "MB/s", "GB/s"];
    let mut v = per_sec;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    match u {
        0 => format!("{v:.0} {}", units[u]),
        _ => format!("{v:.1} {}", units[u]),
    }
}

const STYLE: &str = "\
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mute:#6e7781}\
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;padding:8px 12px;max-width:1200px}\
h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:18px 0 4px}\
small,.mute{color:var(--mute)}a{color:inherit}\
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:13px}\
.b-ok{background:var(--ok)}.b-bad{background:var(--bad)}.b-warn{background:var(--warn)}\
.warning{border-left:4px solid var(--bad);padding:4px 8px;margin:6px 0}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0}dt{color:var(--mute)}dd{margin:0}\
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}\
table{border-collapse:collapse;width:100%;min-width:640px}\
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #8883;vertical-align:top}\
th{font-weight:600;font-size:12px;color:var(--mute)}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.up{color:var(--ok);fill:var(--ok)}.down{color:var(--bad);fill:var(--bad)}\
.health{font-weight:600}.reason{display:block;max-width:260px;overflow-wrap:anywhere}\
svg.spark{width:180px;height:32px;display:block}svg.spark polyline{fill:none;stroke:#0969da;stroke-width:1.5}\
svg.spark .none{stroke:var(--mute);stroke-dasharray:3 3}svg.spark .bg{fill:#8881}\
svg.timeline{width:180px;height:12px;display:block;margin-top:2px}\
td.n{white-space:nowrap}\
@media (max-width:640px){body{padding:6px}table{min-width:0}thead{display:none}\
tr{display:block;padding:6px 0;border-bottom:1px solid #8883}\
td{display:flex;justify-content:space-between;gap:12px;border:0;padding:2px 0}\
td[data-label]::before{content:attr(data-label);color:var(--mute);font-size:12px}\
td>div{text-align:right}.reason{max-width:220px}svg.spark,svg.timeline{width:160px}}";

/// The whole page for `status` at `now_ms` (Unix milliseconds).
pub fn render(status: &Status, history: &History, build: &Build, now_ms: u64) -> String {
    let mut s = String::with_capacity(8192);
    let (badge, word) = match status.ready {
        true => ("b-ok", "ready"),
        false => ("b-bad", "not ready"),
    };
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>lb: {word}</title><style>{STYLE}</style></head><body>\
         <header><h1>lb <span id=\"readiness\" class=\"badge {badge}\">{word}</span></h1>\
         <p class=\"mute\">build {} ({}) · {} UTC, refreshed every {REFRESH_SECS} s · \
         <a href=\"/status\">/status</a> (JSON) · <a href=\"/metrics\">/metrics</a></p></header>",
        escape(&build.version),
        escape(&build.commit),
        svg::clock(now_ms),
    );
    for w in &status.warnings {
        let _ = write!(s, "<p class=\"warning\">WARNING: {}</p>", escape(w));
    }
    let from = chart_start(history, now_ms);
    daemon_section(&mut s, status);
    let _ = write!(
        s,
        "<p class=\"mute\">Charts: {} to {} UTC (a sample every {} s, {} min at most).</p>",
        svg::clock(from),
        svg::clock(now_ms),
        SAMPLE_EVERY_MS / 1000,
        WINDOW_MS / 60_000
    );
    for l in &status.listeners {
        listener_section(&mut s, l, history, (from, now_ms));
    }
    s.push_str("</body></html>\n");
    s
}

/// Where the charts start: the oldest sample, at most [`WINDOW_MS`] and at
/// least a minute back.
fn chart_start(history: &History, now_ms: u64) -> u64 {
    let window = now_ms.saturating_sub(WINDOW_MS);
    let minute = now_ms.saturating_sub(60_000);
    history.oldest().unwrap_or(minute).clamp(window, minute)
}

/// Readiness, interfaces, the last reload, drains, notes.
fn daemon_section(s: &mut String, st: &Status) {
    s.push_str("<section id=\"daemon\"><h2>Daemon</h2><dl>");
    let ifaces: Vec<String> = st
        .interfaces
        .iter()
        .map(|i| format!("{} <small>({})</small>", escape(&i.name), i.mode.as_str()))
        .collect();
    let _ = write!(
        s,
        "<dt>attached</dt><dd id=\"interfaces\">{}</dd>",
        if ifaces.is_empty() {
            "nowhere".into()
        } else {
            ifaces.join(", ")
        }
    );
    if !st.missing_interfaces.is_empty() {
        let missing: Vec<String> = st.missing_interfaces.iter().map(|i| escape(i)).collect();
        let _ = write!(
            s,
            "<dt>not attached</dt><dd class=\"down\">{} (interface missing)</dd>",
            missing.join(", ")
        );
    }
    let problems: Vec<String> = st
        .links
        .iter()
        .filter_map(|l| l.problem.as_ref())
        .map(|p| escape(p))
        .collect();
    if !problems.is_empty() {
        let _ = write!(
            s,
            "<dt>not forwarding</dt><dd class=\"down\" id=\"link-problems\">{}</dd>",
            problems.join("; ")
        );
    }
    if let Some(held) = &st.checks_held {
        let _ = write!(
            s,
            "<dt>check results</dt><dd class=\"down\">set aside: {}</dd>",
            escape(held)
        );
    }
    let reload = match &st.last_reload {
        None => "none since start".to_owned(),
        Some(r) => {
            let when = svg::clock(r.at_unix.saturating_mul(1000));
            match &r.error {
                None => format!(
                    "<span class=\"up\">ok</span> at {when} ({:.1} ms)",
                    r.apply_ms.unwrap_or(0.0)
                ),
                Some(e) => format!(
                    "<span class=\"down\">rejected</span> at {when}, previous configuration \
                     kept: {}",
                    escape(e)
                ),
            }
        }
    };
    let _ = write!(
        s,
        "<dt>last reload</dt><dd id=\"last-reload\">{reload}</dd>"
    );
    if !st.drained_nodes.is_empty() {
        let nodes: Vec<String> = st
            .drained_nodes
            .iter()
            .map(|n| match st.config_drained_nodes.contains(n) {
                true => format!("{} <small>(configuration)</small>", escape(n)),
                false => escape(n),
            })
            .collect();
        let _ = write!(s, "<dt>drained</dt><dd>{}</dd>", nodes.join(", "));
    }
    if let Some(ago) = st.flows_scanned_secs_ago {
        let _ = write!(s, "<dt>flows counted</dt><dd>{ago:.0} s ago</dd>");
    }
    for n in &st.dataplane_notes {
        let _ = write!(s, "<dt>note</dt><dd>{}</dd>", escape(n));
    }
    s.push_str("</dl></section>");
}

/// One listener: its address, check and fail-open state, and its backends.
fn listener_section(s: &mut String, l: &ListenerStatus, history: &History, span: (u64, u64)) {
    let name = escape(&l.name);
    let state = match (l.retired, l.fail_open) {
        (true, _) => "<span class=\"badge b-warn\">retired, draining</span>".to_owned(),
        (false, true) => {
            "<span class=\"badge b-bad\">FAILING OPEN: every backend down</span>".to_owned()
        }
        (false, false) => String::new(),
    };
    let _ = write!(
        s,
        "<section class=\"listener\" data-listener=\"{name}\"><h2>{name} \
         <small>{} → :{}</small> {state}</h2><dl>\
         <dt>mode</dt><dd>{}</dd>\
         <dt>check</dt><dd>{}</dd><dt>all down</dt><dd>{}</dd>\
         <dt>flows</dt><dd>{} new, {} rejected, {} rescheduled</dd></dl>",
        SocketAddr::new(l.vip, l.port),
        l.target_port,
        mode_text(l),
        l.check.as_deref().map_or("-".into(), escape),
        escape(&l.all_down),
        l.new_flows,
        l.rejected,
        l.rescheduled,
    );
    s.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>backend</th><th>health, last check</th>\
         <th>state</th><th>open flows</th><th>new flows/s</th><th>in / out</th>\
         <th>new flows/s over time</th><th>health over time</th></tr></thead><tbody>",
    );
    for b in &l.backends {
        backend_row(s, &l.name, b, history, span);
    }
    s.push_str("</tbody></table></div></section>");
}

/// `dnat (nodes see the client)`, or `fullnat` with what the nodes see.
fn mode_text(l: &ListenerStatus) -> String {
    match &l.snat_ports {
        None => format!("{} (nodes see the client)", escape(&l.mode)),
        Some(ports) => {
            let addrs: Vec<String> = l.snat_addresses.iter().map(|a| a.to_string()).collect();
            format!(
                "{} (nodes see {} ports {})",
                escape(&l.mode),
                escape(&addrs.join(", ")),
                escape(ports)
            )
        }
    }
}

/// One backend's row.
fn backend_row(
    s: &mut String,
    listener: &str,
    b: &BackendStatus,
    history: &History,
    (from, now): (u64, u64),
) {
    let health = b.health.to_string();
    let state = b.state();
    let current = Counts {
        unix_ms: now,
        new_flows: b.new_flows,
        fwd_bytes: b.fwd_bytes,
        rev_bytes: b.rev_bytes,
    };
    let (rate, traffic) = match history.rates(listener, &b.name, &current) {
        Some(r) => (
            format!("{:.1}", r.new_flows),
            format!("{} / {}", byte_rate(r.fwd_bytes), byte_rate(r.rev_bytes)),
        ),
        None => ("-".into(), "-".into()),
    };
    let mut samples = history.samples(listener, &b.name);
    samples.push(current);
    let points = history::new_flow_rates(&samples);
    let chart = svg::sparkline(&points, from, now);
    let peak = points
        .iter()
        .filter(|(t, _)| *t >= from)
        .map(|(_, r)| *r)
        .reduce(f64::max)
        .map(|m| format!("<small>peak {m:.1}/s</small>"))
        .unwrap_or_default();
    let timeline = svg::timeline(&b.transitions, b.health, from, now);
    let last = b
        .transitions
        .iter()
        .max_by_key(|t| t.unix_ms)
        .map(|t| {
            format!(
                "<small>{} at {}</small>",
                match t.to {
                    Health::Up => "up",
                    Health::Down => "down",
                },
                svg::clock(t.unix_ms)
            )
        })
        .unwrap_or_default();
    let _ = write!(
        s,
        "<tr data-backend=\"{name}\" data-health=\"{health}\" data-state=\"{st}\">\
         <td><b>{name}</b> <small>{addr}</small></td>\
         <td data-label=\"health\"><div><span class=\"health {health}\">{health}</span>\
         <span class=\"reason\">{reason}</span></div></td>\
         <td data-label=\"state\"><div>{st}</div></td>\
         <td class=\"n\" data-label=\"open flows\"><div>{flows}</div></td>\
         <td class=\"n\" data-label=\"new flows/s\"><div>{rate}</div></td>\
         <td class=\"n\" data-label=\"in / out\"><div>{traffic}</div></td>\
         <td data-label=\"new flows/s\"><div>{chart}{peak}</div></td>\
         <td data-label=\"health\"><div>{timeline}{last}</div></td></tr>",
        name = escape(&b.name),
        addr = b.address,
        reason = b.last_check.as_deref().map_or("-".into(), escape),
        st = escape(&state),
        flows = b.tracked_flows,
    );
}
