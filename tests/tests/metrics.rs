//! Observability in the namespace lab: `GET /metrics` against traffic of
//! known size, health failures, `/healthz`, a real Prometheus server
//! scraping the endpoint; and the shipped alert rules and dashboard.
//!
//! The lab tests need root and a built `lb` (skipped otherwise, failing
//! under `CI=true`); the promtool checks need Debian's `prometheus`
//! package (installed by `cargo xtask setup`).

#[path = "metrics/capture.rs"]
mod capture;
#[path = "metrics/expo.rs"]
mod expo;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use capture::{Capture, Packet};
use expo::Exposition;
use lb_tests::{
    is_ci, lb_or_skip, root_or_skip, spread, HealthSettings, Lab, LabOptions, Stream,
    StreamOptions, CLIENT_ADDR, KUBE_API_PORT, LB_API, TALOS_API_PORT,
};
use serde_json::Value;

fn new_lab() -> Lab {
    Lab::create(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim"))).expect("creating the lab")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// An HTTP answer.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// GET `url` from inside the lab's gateway namespace (where the API listens
/// on loopback), bounded to 10 s; any status is an answer.
fn get(lab: &Lab, url: &str, accept: Option<&str>) -> Result<Answer> {
    let url = url.to_string();
    let accept = accept.map(str::to_string);
    lab.in_ns(&lab.gateway_ns(), move || -> Result<Answer> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let mut req = agent.get(&url);
        if let Some(a) = &accept {
            req = req.header("Accept", a);
        }
        let mut resp = req.call().with_context(|| format!("GET {url}"))?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Answer {
            status: resp.status().as_u16(),
            content_type,
            body: resp.body_mut().read_to_string()?,
        })
    })?
}

/// Scrapes `/metrics` in the classic text format.
fn scrape(lab: &Lab) -> Exposition {
    let a = get(lab, &format!("http://{LB_API}/metrics"), None).expect("scraping /metrics");
    assert_eq!(a.status, 200, "/metrics: {}", a.body);
    Exposition::parse(&a.body).expect("parsing the scrape")
}

/// Waits (at most `limit`) until `cond` holds for a scrape; returns it.
fn scrape_until(
    lab: &Lab,
    limit: Duration,
    what: &str,
    cond: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let start = Instant::now();
    loop {
        let e = scrape(lab);
        if cond(&e) {
            return e;
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}; last scrape:\n{}", e.text);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `promtool ARGS` with `stdin` piped in; `None` when promtool is not
/// installed outside CI (the caller skips).
fn promtool(test: &str, args: &[&str], stdin: Option<&str>) -> Option<std::process::Output> {
    let mut cmd = Command::new("promtool");
    cmd.args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !is_ci() => {
            eprintln!("SKIPPED {test}: promtool not installed (cargo xtask setup installs it)");
            return None;
        }
        Err(e) => panic!("{test}: running promtool: {e}"),
    };
    if let Some(input) = stdin {
        use std::io::Write as _;
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes())
            .expect("writing to promtool");
    }
    Some(child.wait_with_output().expect("waiting for promtool"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `lb_*` metric name in a text.
fn lb_names(s: &str) -> BTreeSet<String> {
    let bytes = s.as_bytes();
    let mut out = BTreeSet::new();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if &bytes[i..i + 3] == b"lb_" && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            out.insert(s[start..i].to_string());
        } else {
            i += 1;
        }
    }
    out
}

/// Every PromQL expression of the dashboard (panel targets and variable queries).
fn dashboard_queries() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let path = repo_root().join("deploy/grafana/lb.json");
    let text = std::fs::read_to_string(&path).expect("reading the dashboard");
    let v: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let mut out = Vec::new();
    walk(&v, &mut out);
    out
}

/// The metric names the dashboard and the alert rules use.
fn names_used_by_deploy_files() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|q| lb_names(q))
        .collect();
    let alerts = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml"))
        .expect("reading alerts.yml");
    // What the rules evaluate (their `expr`), as for the dashboard: an
    // annotation may name a series that exists only in some configurations
    // (`lb_snat_*` needs a source-NAT address).
    let exprs: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr:"))
        .collect();
    assert!(
        exprs.len() >= 12,
        "every rule has a one-line expr: {exprs:?}"
    );
    names.extend(exprs.iter().flat_map(|e| lb_names(e)));
    names
}

#[test]
fn alert_rules_pass_promtool() {
    let Some(out) = promtool(
        "alert_rules_pass_promtool",
        &["check", "rules", "deploy/prometheus/alerts.yml"],
        None,
    ) else {
        return;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "promtool check rules: {text}");
    assert!(text.contains("SUCCESS: 13 rules found"), "{text}");
    // The rules fire (and stay quiet) as their unit tests say.
    let out = promtool(
        "alert_rules_pass_promtool",
        &["test", "rules", "deploy/prometheus/alerts_test.yml"],
        None,
    )
    .expect("promtool present");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool test rules: {text}");
}

#[test]
fn dashboard_is_grafana_json_with_queries() {
    let text = std::fs::read_to_string(repo_root().join("deploy/grafana/lb.json"))
        .expect("reading the dashboard");
    let v: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let panels = v["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Throughput per backend",
        "Backend health",
        "New flows per backend",
        "Drops by reason",
    ] {
        assert!(titles.contains(&want), "panel {want:?} missing: {titles:?}");
    }
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().map(Vec::len).unwrap_or(0);
        assert!(targets > 0, "panel {:?} queries nothing", p["title"]);
    }
    let ids: BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    assert!(lb_names(&dashboard_queries().join("\n")).len() >= 15);
}

/// Per backend: what the captures saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    in_packets: u64,
    in_bytes: u64,
    out_packets: u64,
    out_bytes: u64,
}

/// Attributes captured packets to backends: each backend's own capture
/// gives its packets to the client (out) and the client ports it serves;
/// the client's capture gives the packets to the VIP (in), per client port.
fn attribute(
    client: &[Packet],
    backends: &[(String, Ipv4Addr, Vec<Packet>)],
    vip: SocketAddrV4,
) -> BTreeMap<String, Seen> {
    let mut by_port: BTreeMap<u16, String> = BTreeMap::new();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for (name, addr, pkts) in backends {
        let s = seen.entry(name.clone()).or_default();
        for p in pkts
            .iter()
            .filter(|p| p.src == *addr && p.sport == KUBE_API_PORT && p.dst == CLIENT_ADDR)
        {
            s.out_packets += 1;
            s.out_bytes += p.ip_len;
            by_port.insert(p.dport, name.clone());
        }
    }
    for p in client
        .iter()
        .filter(|p| p.dst == *vip.ip() && p.dport == vip.port())
    {
        let name = by_port.get(&p.sport).unwrap_or_else(|| {
            panic!("client port {} never answered by a backend: {p:?}", p.sport)
        });
        let s = seen.entry(name.clone()).or_default();
        s.in_packets += 1;
        s.in_bytes += p.ip_len;
    }
    seen
}

#[test]
fn metrics_match_the_traffic_exactly() {
    let test = "metrics_match_the_traffic_exactly";
    if !root_or_skip(test) || !lb_or_skip(test) {
        return;
    }
    let lab = new_lab();
    lab.start_all_backends().expect("starting backends");
    lab.start_lb(&lab.config_toml_with(HealthSettings::default()))
        .expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");
    let client = lab.client_ns();
    let vip = lab.vip_addr(KUBE_API_PORT);
    let kube = [("listener", "kubernetes-api")];

    let before = scrape(&lab);
    assert_eq!(
        before.one("lb_listener_new_flows_total", &kube),
        0.0,
        "fresh maps"
    );

    // The reference: what the client and every node transmit.
    let cap_client = Capture::start(&lab, &client, "eth0").expect("client capture");
    let cap_backends: Vec<(String, Ipv4Addr, Capture)> = (1..=lab.backends())
        .map(|i| {
            let c = Capture::start(&lab, &lab.backend_ns(i), "eth0").expect("backend capture");
            (lab.backend_name(i), lab.backend_addr(i), c)
        })
        .collect();

    // N connections that read the greeting and close ...
    let n = 90;
    let s = spread(&lab, &client, vip, n).expect("connections");
    assert_eq!(s.failures, 0, "failed connections: {:?}", s.errors);
    let mut flows: BTreeMap<String, u64> = s
        .counts
        .iter()
        .map(|(k, v)| (k.clone(), *v as u64))
        .collect();
    // ... and echo streams carrying M bytes.
    let mut payload: BTreeMap<String, u64> = BTreeMap::new();
    let opts = StreamOptions {
        period: Duration::from_millis(5),
        chunk_size: 300,
        max_duration: Duration::from_secs(20),
        timeout: Duration::from_secs(2),
    };
    let streams: Vec<Stream> = (0..4)
        .map(|_| Stream::open_with(&lab, &client, vip, opts.clone()).expect("stream"))
        .collect();
    thread::sleep(Duration::from_millis(400));
    let mut m = 0;
    for st in streams {
        let node = st.node().to_string();
        let r = st.finish();
        assert!(r.errors.is_empty(), "stream errors: {:?}", r.errors);
        assert_eq!(r.bytes_echoed, r.bytes_sent);
        *flows.entry(node.clone()).or_default() += 1;
        *payload.entry(node).or_default() += r.bytes_sent;
        m += r.bytes_sent;
    }
    // Let the closing handshakes finish, then stop the reference.
    thread::sleep(Duration::from_millis(800));
    let client_pkts = cap_client.finish().expect("client capture");
    let backend_pkts: Vec<(String, Ipv4Addr, Vec<Packet>)> = cap_backends
        .into_iter()
        .map(|(name, addr, c)| (name, addr, c.finish().expect("backend capture")))
        .collect();
    let seen = attribute(&client_pkts, &backend_pkts, vip);

    let t = Instant::now();
    let after = scrape(&lab);
    let scrape_time = t.elapsed();
    let status = lab.lb_status().expect("lb status");
    let total_flows: u64 = flows.values().sum();
    println!(
        "{total_flows} connections ({n} short, 4 streams with {m} bytes): flows {flows:?}; \
         captured {seen:?}; one scrape took {scrape_time:?} ({} bytes)",
        after.text.len()
    );

    // Flows: exact, per backend as the client saw them.
    assert_eq!(
        after.one("lb_listener_new_flows_total", &kube),
        total_flows as f64
    );
    assert_eq!(
        after.sum("lb_backend_new_flows_total", &kube),
        total_flows as f64
    );
    assert_eq!(
        after.one("lb_xdp_events_total", &[("event", "new_flow")])
            - before.one("lb_xdp_events_total", &[("event", "new_flow")]),
        total_flows as f64
    );
    for i in 1..=lab.backends() {
        let name = lab.backend_name(i);
        let addr = lab.backend_addr(i).to_string();
        let b = [
            ("listener", "kubernetes-api"),
            ("backend", name.as_str()),
            ("address", addr.as_str()),
        ];
        let got = |metric: &str, dir: &str| {
            let mut l = b.to_vec();
            l.push(("direction", dir));
            after.one(metric, &l) as u64
        };
        assert_eq!(
            after.one("lb_backend_new_flows_total", &b) as u64,
            flows.get(&name).copied().unwrap_or(0),
            "{name}: new flows"
        );
        // Packets and bytes: exactly what the client sent to the VIP on the
        // backend's connections (in) and what the node sent back (out).
        let want = seen.get(&name).copied().unwrap_or_default();
        let have = Seen {
            in_packets: got("lb_backend_packets_total", "in"),
            in_bytes: got("lb_backend_bytes_total", "in"),
            out_packets: got("lb_backend_packets_total", "out"),
            out_bytes: got("lb_backend_bytes_total", "out"),
        };
        assert_eq!(have, want, "{name}: counters against the captured packets");
        // Each packet carries at least 40 header bytes; on top, the echo
        // payload went both ways and every connection got a greeting.
        let greetings = flows.get(&name).copied().unwrap_or(0) * (name.len() as u64 + 1);
        let echoed = payload.get(&name).copied().unwrap_or(0);
        assert!(
            have.in_bytes >= 40 * have.in_packets + echoed,
            "{name}: {have:?}"
        );
        assert!(
            have.out_bytes >= 40 * have.out_packets + echoed + greetings,
            "{name}: {have:?}"
        );
        // The same numbers as `lb status --json`.
        let sb =
            lb_tests::status_backend(&status, "kubernetes-api", &name).expect("status backend");
        for (key, v) in [
            ("fwd_packets", have.in_packets),
            ("fwd_bytes", have.in_bytes),
            ("rev_packets", have.out_packets),
            ("rev_bytes", have.out_bytes),
            ("new_flows", flows.get(&name).copied().unwrap_or(0)),
        ] {
            assert_eq!(sb[key].as_u64(), Some(v), "{name}: status {key}");
        }
        assert_eq!(after.one("lb_backend_up", &b), 1.0);
        assert_eq!(after.one("lb_backend_serving", &b), 1.0);
        assert_eq!(after.one("lb_backend_draining", &b), 0.0);
        // Every connection closed: nothing is open any more.
        assert_eq!(after.one("lb_backend_tracked_flows", &b), 0.0, "{name}");
    }
    let talos = [("listener", "talos-api")];
    assert_eq!(after.sum("lb_backend_packets_total", &talos), 0.0);
    assert_eq!(after.one("lb_listener_new_flows_total", &talos), 0.0);
    assert_eq!(after.sum("lb_xdp_dropped_packets_total", &[]), 0.0);
    assert_eq!(after.one("lb_listener_fail_open", &kube), 0.0);
    let entries = after.one("lb_conntrack_entries", &[]);
    assert!(entries >= total_flows as f64, "conntrack entries {entries}");
    assert_eq!(after.one("lb_conntrack_capacity", &[]), 262_144.0);
    assert_eq!(after.one("lb_conntrack_scan_complete", &[]), 1.0);
    for iface in lab.gateway_interfaces() {
        assert_eq!(
            after.sum("lb_xdp_attached", &[("interface", iface)]),
            1.0,
            "{iface}"
        );
    }
    assert_eq!(after.one("lb_ready", &[]), 1.0);
    assert!(after.sum("lb_health_checks_total", &[("result", "success")]) > 0.0);
    assert!(after.sum("lb_health_check_duration_seconds_count", &[]) > 0.0);
    let build: Vec<_> = after.select("lb_build_info", &[]).collect();
    assert_eq!(build.len(), 1, "{build:?}");
    assert!(!build[0].labels["git_commit"].is_empty() && !build[0].labels["version"].is_empty());
    // Counters never go backwards.
    for s in before.samples.iter().filter(|s| s.name.ends_with("_total")) {
        let now = after
            .select(&s.name, &[])
            .find(|a| a.labels == s.labels)
            .map(|a| a.value);
        assert!(
            now.is_some_and(|v| v >= s.value),
            "{} {:?} went from {} to {now:?}",
            s.name,
            s.labels,
            s.value
        );
    }

    // promtool accepts the exposition (format and naming lint).
    if let Some(out) = promtool(test, &["check", "metrics"], Some(&after.text)) {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.trim().is_empty(),
            "promtool check metrics: {text}"
        );
    }
    // OpenMetrics on request, with the same samples.
    let om = get(
        &lab,
        &format!("http://{LB_API}/metrics"),
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .expect("OpenMetrics scrape");
    assert!(
        om.content_type.starts_with("application/openmetrics-text"),
        "{}",
        om.content_type
    );
    assert!(om.body.ends_with("# EOF\n"));
    let classic = get(&lab, &format!("http://{LB_API}/metrics"), None).expect("scrape");
    assert!(
        classic
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        classic.content_type
    );
    let om_names = Exposition::parse(&om.body)
        .expect("parsing OpenMetrics")
        .names();
    assert_eq!(om_names, after.names());

    // An open connection is a tracked flow of its node, and only of it.
    let st = Stream::open(&lab, &client, vip).expect("stream");
    let node = st.node().to_string();
    let open = scrape_until(&lab, Duration::from_secs(5), "tracked flow", |e| {
        e.sum("lb_backend_tracked_flows", &kube) == 1.0
    });
    assert_eq!(
        open.one(
            "lb_backend_tracked_flows",
            &[("listener", "kubernetes-api"), ("backend", &node)]
        ),
        1.0
    );
    let r = st.finish();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    println!(
        "conntrack scan of {} entries took {} s",
        open.one("lb_conntrack_entries", &[]),
        open.one("lb_conntrack_scan_duration_seconds", &[])
    );
}

/// The lab config with `kubernetes-api` dropping new flows when every
/// backend is down, and `talos-api` checking a port no node serves (so it is
/// failing open from the start).
fn failure_config(lab: &Lab) -> String {
    let cfg = lab.config_toml_with(HealthSettings::default());
    let kube = format!("port = {KUBE_API_PORT}\n");
    let talos = format!("port = {TALOS_API_PORT}\n");
    assert_eq!(cfg.matches(&kube).count(), 1, "{cfg}");
    assert_eq!(cfg.matches(&talos).count(), 1, "{cfg}");
    cfg.replace(&kube, &format!("{kube}all_down = \"drop\"\n"))
        .replace(&talos, &format!("{talos}target_port = 50009\n"))
}

#[test]
fn failures_show_in_metrics_and_healthz() {
    let test = "failures_show_in_metrics_and_healthz";
    if !root_or_skip(test) || !lb_or_skip(test) {
        return;
    }
    let lab = new_lab();
    lab.start_all_backends().expect("starting backends");
    lab.start_lb(&failure_config(&lab)).expect("starting lb");
    let healthz = || get(&lab, &format!("http://{LB_API}/healthz"), None).expect("GET /healthz");
    let limit = Duration::from_secs(10);
    let kube = |name: &str, addr: Ipv4Addr| {
        [
            ("listener", "kubernetes-api".to_string()),
            ("backend", name.to_string()),
            ("address", addr.to_string()),
        ]
    };
    let refs = |l: &[(&'static str, String); 3]| -> Vec<(&'static str, String)> { l.to_vec() };
    let one = |e: &Exposition, name: &str, l: &[(&'static str, String)]| {
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        e.one(name, &l)
    };

    // talos-api fails open at once (its target port is closed): /healthz stays 200.
    let e = scrape_until(&lab, limit, "talos-api failing open", |e| {
        e.one("lb_listener_fail_open", &[("listener", "talos-api")]) == 1.0
    });
    assert_eq!(e.sum("lb_backend_up", &[("listener", "talos-api")]), 0.0);
    assert_eq!(
        e.sum("lb_backend_serving", &[("listener", "talos-api")]),
        3.0,
        "fail open: all serve"
    );
    assert_eq!(
        e.sum("lb_backend_up", &[("listener", "kubernetes-api")]),
        3.0
    );
    let h = healthz();
    assert_eq!(
        (h.status, h.body.as_str()),
        (200, "ok\n"),
        "failing open is healthy"
    );

    // One node down: up=0 and a transition with its reason; still healthy.
    lab.stop_backend(2).expect("stopping backend 2");
    let cp02 = refs(&kube(&lab.backend_name(2), lab.backend_addr(2)));
    let e = scrape_until(&lab, limit, "cp-02 down", |e| {
        one(e, "lb_backend_up", &cp02) == 0.0
    });
    let target = format!("{}:{KUBE_API_PORT}", lab.backend_addr(2));
    let down = [
        ("backend", lab.backend_name(2)),
        ("target", target.clone()),
        ("to", "down".to_string()),
    ];
    let transitions: Vec<_> = e
        .select(
            "lb_health_transitions_total",
            &down
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .cloned()
        .collect();
    assert_eq!(transitions.len(), 1, "{transitions:?}\n{}", e.text);
    assert_eq!(transitions[0].value, 1.0);
    assert_eq!(
        transitions[0].labels["reason"], "refused",
        "{transitions:?}"
    );
    assert!(
        e.sum(
            "lb_health_checks_total",
            &[
                ("backend", lab.backend_name(2).as_str()),
                ("target", target.as_str()),
                ("result", "failure"),
                ("reason", "refused"),
            ]
        ) >= 1.0
    );
    assert_eq!(one(&e, "lb_backend_serving", &cp02), 0.0);
    assert_eq!(healthz().status, 200);

    // Every node down: kubernetes-api (all_down = "drop") makes /healthz 503.
    lab.stop_backend(1).expect("stopping backend 1");
    lab.stop_backend(3).expect("stopping backend 3");
    let start = Instant::now();
    let h = loop {
        let h = healthz();
        if h.status == 503 || start.elapsed() > limit {
            break h;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(h.status, 503, "{}", h.body);
    assert_eq!(h.body, "listener kubernetes-api has no healthy backend\n");
    let e = scrape(&lab);
    assert_eq!(
        e.sum("lb_backend_up", &[("listener", "kubernetes-api")]),
        0.0
    );
    assert_eq!(
        e.sum("lb_backend_serving", &[("listener", "kubernetes-api")]),
        0.0
    );
    assert_eq!(
        e.one("lb_listener_fail_open", &[("listener", "kubernetes-api")]),
        0.0
    );
    // A new connection is dropped and counted.
    let vip = lab.vip_addr(KUBE_API_PORT);
    let refused = lab
        .in_ns(&lab.client_ns(), || {
            lb_tests::connect_and_name(vip, Duration::from_millis(500))
        })
        .expect("entering the client namespace");
    assert!(refused.is_err(), "a connection got through: {refused:?}");
    let e = scrape(&lab);
    assert!(
        e.one(
            "lb_listener_rejected_packets_total",
            &[("listener", "kubernetes-api")]
        ) >= 1.0
    );
    assert!(e.one("lb_xdp_dropped_packets_total", &[("reason", "no_backend")]) >= 1.0);

    // A node back: healthy again, with an up transition.
    lab.start_backend(1).expect("restarting backend 1");
    let cp01 = refs(&kube(&lab.backend_name(1), lab.backend_addr(1)));
    let e = scrape_until(&lab, limit, "cp-01 up again", |e| {
        one(e, "lb_backend_up", &cp01) == 1.0
    });
    let up_target = format!("{}:{KUBE_API_PORT}", lab.backend_addr(1));
    assert_eq!(
        e.one(
            "lb_health_transitions_total",
            &[
                ("backend", lab.backend_name(1).as_str()),
                ("target", up_target.as_str()),
                ("to", "up")
            ]
        ),
        1.0
    );
    assert_eq!(healthz().status, 200);

    // Every series the dashboard and the alert rules use exists by now.
    let names = e.names();
    let missing: Vec<String> = names_used_by_deploy_files()
        .into_iter()
        .filter(|n| !names.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "used by deploy/ but not exported: {missing:?}"
    );
}

#[test]
fn prometheus_scrapes_the_endpoint() {
    let test = "prometheus_scrapes_the_endpoint";
    if !root_or_skip(test) || !lb_or_skip(test) {
        return;
    }
    let prometheus = Path::new("/usr/bin/prometheus");
    if !prometheus.is_file() {
        if is_ci() {
            panic!("{test}: /usr/bin/prometheus missing (Debian package prometheus)");
        }
        eprintln!("SKIPPED {test}: prometheus not installed (cargo xtask setup installs it)");
        return;
    }
    let lab = new_lab();
    lab.start_all_backends().expect("starting backends");
    lab.start_lb(&lab.config_toml_with(HealthSettings::default()))
        .expect("starting lb");
    let dir = lab.dir().join("prometheus");
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: lb\n    static_configs:\n      - targets: ['{LB_API}']\n"
        ),
    )
    .expect("writing prometheus.yml");
    let listen = "127.0.0.1:9090";
    // Bounded: `timeout` ends it after two minutes; the lab stops it earlier.
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "/usr/bin/prometheus"])
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .arg("--storage.tsdb.retention.time=1h");
    let log = dir.join("prometheus.log");
    lab.spawn_in(&lab.gateway_ns(), &cmd, Some(&log))
        .expect("starting prometheus");

    // Until Prometheus has scraped lb: one lb_backend_up series per listener
    // and backend, all 1.
    let want = 2 * lab.backends();
    let query = |q: &str| -> Result<Vec<Value>> {
        let a = get(
            &lab,
            &format!("http://{listen}/api/v1/query?query={}", url_encode(q)),
            None,
        )?;
        if a.status != 200 {
            bail!("status {}: {}", a.status, a.body);
        }
        let v: Value = serde_json::from_str(&a.body)?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    };
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    let result = loop {
        match query("lb_backend_up") {
            Ok(r) if r.len() == want && r.iter().all(|s| s["value"][1] == "1") => break Some(r),
            Ok(r) => last = format!("{r:?}"),
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > Duration::from_secs(40) {
            break None;
        }
        thread::sleep(Duration::from_millis(500));
    };
    let result = result.unwrap_or_else(|| {
        panic!(
            "Prometheus never returned {want} lb_backend_up series; last: {last}\nlog:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for s in &result {
        let m = &s["metric"];
        assert_eq!(m["job"], "lb");
        seen.insert((
            m["listener"].as_str().unwrap_or_default().to_string(),
            m["backend"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let expected: BTreeSet<(String, String)> = ["kubernetes-api", "talos-api"]
        .iter()
        .flat_map(|l| (1..=lab.backends()).map(|i| (l.to_string(), lab.backend_name(i))))
        .collect();
    assert_eq!(seen, expected);
    // The target is healthy and counters arrive typed (OpenMetrics scrape).
    let up = query("up{job=\"lb\"}").expect("query up");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0]["value"][1], "1");
    let build = query("lb_build_info").expect("query lb_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    let checks = query("sum(lb_health_checks_total)").expect("query checks");
    assert!(
        checks[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            > 0.0,
        "{checks:?}"
    );
}

#[test]
fn ebpf_debug_log_reaches_json_logs() {
    let test = "ebpf_debug_log_reaches_json_logs";
    if !root_or_skip(test) || !lb_or_skip(test) {
        return;
    }
    let lab = new_lab();
    lab.start_all_backends().expect("starting backends");
    let cfg = lab.dir().join("lb-debug.toml");
    std::fs::write(&cfg, lab.config_toml_with(HealthSettings::default())).expect("config");
    let log = lab.dir().join("lb-debug.log");
    let mut cmd = Command::new(lab.lb_bin());
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .args(["--log-format", "json", "--ebpf-debug"]);
    let id = lab
        .spawn_in(&lab.gateway_ns(), &cmd, Some(&log))
        .expect("starting lb --ebpf-debug");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // Ready (the kernel accepted the program with its logging enabled).
    let start = Instant::now();
    loop {
        if let Some(st) = lab.child_exit_status(id) {
            panic!("lb exited ({st}):\n{}", read_log());
        }
        if let Ok(a) = get(&lab, &format!("http://{LB_API}/status"), None) {
            if serde_json::from_str::<Value>(&a.body).is_ok_and(|v| v["ready"] == true) {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not ready:\n{}",
            read_log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let s = spread(&lab, &lab.client_ns(), lab.vip_addr(KUBE_API_PORT), 5).expect("connections");
    assert_eq!(s.failures, 0, "{:?}", s.errors);
    // The program's records arrive as JSON lines at debug level.
    let start = Instant::now();
    let new_flows = loop {
        let lines: Vec<Value> = read_log()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
            })
            .collect();
        let flows: Vec<Value> = lines
            .into_iter()
            .filter(|v| {
                v["level"] == "DEBUG"
                    && v["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("new flow"))
            })
            .collect();
        if flows.len() >= 5 || start.elapsed() > Duration::from_secs(5) {
            break flows;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(new_flows.len(), 5, "debug records:\n{}", read_log());
    let first = &new_flows[0];
    println!("eBPF debug record: {first}");
    assert!(
        first["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("lb_ebpf")),
        "{first}"
    );
    let msg = first["fields"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&CLIENT_ADDR.to_string()), "{msg}");
    let st = lab
        .stop_child(id, Duration::from_secs(10))
        .expect("stopping lb");
    assert!(st.success(), "lb exited with {st}:\n{}", read_log());
}

#[test]
fn kernel_counters_survive_a_restart() {
    let test = "kernel_counters_survive_a_restart";
    if !root_or_skip(test) || !lb_or_skip(test) {
        return;
    }
    let lab = new_lab();
    lab.start_all_backends().expect("starting backends");
    // keep_attached: SIGTERM leaves the pinned data path for the next run.
    let mut cfg = String::new();
    for line in lab.config_toml_with(HealthSettings::default()).lines() {
        cfg.push_str(line);
        cfg.push('\n');
        if line.starts_with("xdp_mode = ") {
            cfg.push_str("keep_attached = true\n");
        }
    }
    assert!(cfg.contains("keep_attached = true"), "{cfg}");
    lab.start_lb(&cfg).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");
    let client = lab.client_ns();
    let vip = lab.vip_addr(KUBE_API_PORT);
    let kube = [("listener", "kubernetes-api")];
    let s = spread(&lab, &client, vip, 30).expect("connections");
    assert_eq!(s.failures, 0, "{:?}", s.errors);
    let before = scrape(&lab);
    assert_eq!(before.one("lb_listener_new_flows_total", &kube), 30.0);

    // The daemon goes away; the data path keeps balancing and counting.
    assert!(lab.stop_lb().expect("SIGTERM").success());
    let s = spread(&lab, &client, vip, 10).expect("connections without a daemon");
    assert_eq!(s.failures, 0, "{:?}", s.errors);
    lab.start_lb(&cfg).expect("restarting lb");
    assert!(
        lab.lb_log().contains("adopting the pinned data path"),
        "{}",
        lab.lb_log()
    );
    let after = scrape(&lab);

    // Counted from the maps themselves: nothing restarts at zero, and the
    // flows made while no daemon ran are there too.
    assert_eq!(after.one("lb_listener_new_flows_total", &kube), 40.0);
    assert_eq!(after.sum("lb_backend_new_flows_total", &kube), 40.0);
    let kernel = ["lb_backend_", "lb_listener_", "lb_xdp_"];
    let mut compared = 0;
    for s in before
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_total") && kernel.iter().any(|p| s.name.starts_with(p)))
    {
        let now = after
            .select(&s.name, &[])
            .find(|a| a.labels == s.labels)
            .map(|a| a.value);
        assert!(
            now.is_some_and(|v| v >= s.value),
            "{} {:?} went from {} to {now:?}",
            s.name,
            s.labels,
            s.value
        );
        compared += 1;
    }
    assert!(compared > 30, "only {compared} kernel counters compared");
    assert!(after.one("lb_start_time_seconds", &[]) >= before.one("lb_start_time_seconds", &[]));
}
