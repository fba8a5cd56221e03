//! Steps and assertions the integration tests in `tests/` share: running the
//! `lb` CLI, placing a stream on a given node, checking that a stream came
//! through intact, and measuring failover and recovery against the limits
//! the health settings promise. They panic with the test's own wording
//! (`what`), as assertions do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{
    measure_failover, measure_recovery, Failover, HealthSettings, Lab, Stream, StreamOptions,
    StreamReport, LB_API,
};

/// Runs `lb <args>` against the lab's daemon, asserts it succeeded and
/// returns its standard output.
pub fn ctl_ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.lb_ctl(args).expect("running the lb CLI");
    assert!(
        out.status.success(),
        "lb {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Opens streams from the client namespace to `addr` until one lands on
/// `node` (at most 60 tries, so a node that never gets one fails the test
/// rather than hanging it).
pub fn stream_on(lab: &Lab, addr: impl Into<SocketAddr>, node: &str) -> Stream {
    stream_on_with(lab, addr, node, StreamOptions::default())
}

/// [`stream_on`] with stream options (e.g. a timeout long enough to ride
/// out an outage on TCP retransmissions).
pub fn stream_on_with(
    lab: &Lab,
    addr: impl Into<SocketAddr>,
    node: &str,
    opts: StreamOptions,
) -> Stream {
    let addr: SocketAddr = addr.into();
    for _ in 0..60 {
        let s =
            Stream::open_with(lab, &lab.client_ns(), addr, opts.clone()).expect("opening a stream");
        if s.node() == node {
            return s;
        }
        let _ = s.finish();
    }
    panic!("no stream to {addr} landed on {node} in 60 tries");
}

/// Asserts that a finished stream had no error, got every byte back and
/// ran long enough (more than 10 chunks) to have lived through the event
/// under test; prints its figures.
pub fn assert_intact(what: &str, r: &StreamReport) {
    assert!(r.errors.is_empty(), "{what}: stream errors {:?}", r.errors);
    assert_eq!(r.bytes_echoed, r.bytes_sent, "{what}: bytes lost");
    assert!(r.chunks > 10, "{what}: only {} chunks", r.chunks);
    println!(
        "{what}: {} chunks, {} bytes sent, {} echoed, 0 lost",
        r.chunks, r.bytes_sent, r.bytes_echoed
    );
}

/// Asserts that a drained node's stream was cut off (it ended with an
/// error) but only after flowing until the deregistration delay (at least
/// 80 chunks, about 4 s at the stream's pace).
pub fn assert_cut_off_after_delay(what: &str, cut: &StreamReport) {
    assert!(
        !cut.errors.is_empty(),
        "{what} was cut off after deregistration_delay"
    );
    assert!(
        cut.chunks >= 80,
        "{what} kept flowing until the delay: only {} chunks",
        cut.chunks
    );
}

/// Each node's share of `total` connections, as `name=n (p%)` joined by
/// commas, for the tests' printed figures.
pub fn share_summary(counts: &BTreeMap<String, usize>, total: usize) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k}={v} ({:.1}%)", *v as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How soon after a node stops new connections must have left it with
/// health settings `h`: `unhealthy_threshold` failed checks, one interval
/// for the check that was in flight, and 500 ms of slack for the probes.
pub fn failover_limit(h: &HealthSettings) -> Duration {
    h.interval * h.unhealthy_threshold + h.interval + Duration::from_millis(500)
}

/// How soon after a node restarts it must take new connections again with
/// health settings `h`: `healthy_threshold` good checks, one interval for
/// the check in flight, and a second of slack for the node's own start.
pub fn recovery_limit(h: &HealthSettings) -> Duration {
    h.interval * h.healthy_threshold + h.interval + Duration::from_secs(1)
}

/// A node taken out and brought back while the test probes a VIP: what
/// [`NodeOutage::assert_failover`] and [`NodeOutage::assert_recovery`] measure.
#[derive(Clone, Copy)]
pub struct NodeOutage<'a> {
    /// The lab the node runs in.
    pub lab: &'a Lab,
    /// The namespace the probes connect from (usually the client's).
    pub ns: &'a str,
    /// The VIP address probed.
    pub addr: SocketAddr,
    /// The node's name, as its greeting gives it.
    pub victim: &'a str,
    /// The health settings lb runs with, which set the limits.
    pub h: &'a HealthSettings,
}

impl NodeOutage<'_> {
    /// After `victim` was stopped at `t_stop`: probes `addr` from `ns` until a
    /// clean 1.2 s window follows the last probe that failed or reached
    /// `victim`, prints the measured outage, and asserts that such a window
    /// came and that the outage stayed within [`failover_limit`]. Returns the
    /// measurement for further checks.
    pub fn assert_failover(&self, what: &str, t_stop: Instant) -> Failover {
        let detect_limit = failover_limit(self.h);
        let clean_for = Duration::from_millis(1200);
        let f = measure_failover(
            self.lab,
            self.ns,
            self.addr,
            self.victim,
            t_stop,
            clean_for,
            detect_limit + clean_for + Duration::from_secs(5),
        )
        .expect("probing");
        let bad = f.bad(self.victim);
        println!(
            "{what}: new-connection outage {:?} (last probe failing or reaching {} after the \
             stop; limit {detect_limit:?}); {} probes, {} bad: {bad:?}",
            f.settled_after,
            self.victim,
            f.probes.len(),
            bad.len()
        );
        assert!(
            f.settled,
            "{what}: no clean {clean_for:?} window after the stop; bad probes: {bad:?}"
        );
        assert!(
            f.settled_after <= detect_limit,
            "{what}: failover took {:?} > {detect_limit:?}",
            f.settled_after
        );
        f
    }

    /// After `victim` was restarted at `t_start`: probes `addr` from `ns` until
    /// one reaches `victim`, prints when, and asserts that it came back within
    /// [`recovery_limit`] and that no probe failed meanwhile. Returns when it
    /// came back.
    pub fn assert_recovery(&self, what: &str, t_start: Instant) -> Duration {
        let recover_limit = recovery_limit(self.h);
        let (probes, back_at) = measure_recovery(
            self.lab,
            self.ns,
            self.addr,
            self.victim,
            t_start,
            recover_limit + Duration::from_secs(5),
        )
        .expect("probing");
        let failures: Vec<String> = probes
            .iter()
            .filter_map(|p| p.result.as_ref().err().map(|e| format!("{:?}: {e}", p.at)))
            .collect();
        println!(
            "{what}: {} reached again {back_at:?} after its restart (limit {recover_limit:?}); \
             {} probes, failures: {failures:?}",
            self.victim,
            probes.len()
        );
        let back_at = back_at
            .unwrap_or_else(|| panic!("{what}: {} never came back: {failures:?}", self.victim));
        assert!(
            back_at <= recover_limit,
            "{what}: recovery took {back_at:?} > {recover_limit:?}"
        );
        assert!(
            failures.is_empty(),
            "{what}: failures during recovery: {failures:?}"
        );
        back_at
    }
}

/// `GET path` on the lab daemon's HTTP API (from the gateway namespace,
/// 2 s to connect, 5 s to answer): the raw response, status line first,
/// or the error text when there was none.
pub fn api_get(lab: &Lab, path: &str) -> String {
    use std::io::{Read, Write};
    let api: SocketAddr = LB_API.parse().expect("LB_API");
    let got = lab.in_ns(&lab.gateway_ns(), || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&api, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    });
    match got {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => format!("no answer: {e}"),
        Err(e) => format!("no answer: {e:#}"),
    }
}
