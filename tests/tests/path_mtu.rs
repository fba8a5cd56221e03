//! A bulk stream through an MTU drop on the gateway's node side (issue 19,
//! finding 5), end to end, IPv4 and IPv6. The client's link stays at 1500;
//! mid-stream the whole backend segment (the gateway's `gwb`, the switch,
//! the nodes) drops to 1400. The client's full-size segments no longer fit
//! the gateway's egress: the program answers them with ICMP
//! frag-needed / packet too big quoting the VIP, the client lowers its path
//! MTU for the VIP and the stream goes on.
//!
//! Before the fix the stream stalled: the flow's cached route redirected
//! the segments into the smaller MTU, where the kernel drops them without a
//! word (and an uncached lookup passed them, rewritten, to the kernel,
//! whose error quoted the node's address). Figures are printed.
//!
//! Root and a built `lb` are needed; without them the test skips (and fails
//! under `CI=true`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lb_tests::lab::ip;
use lb_tests::{netns_ready, read_greeting, Families, HealthSettings, Lab, KUBE_API_PORT, LB_API};

/// Bytes sent before the drop, and in all.
const BEFORE: usize = 4 << 20;
const TOTAL: usize = 16 << 20;
/// A stream that moves nothing for this long has stalled.
const STALL: Duration = Duration::from_secs(20);

/// Sets the MTU of every link of the backend segment.
fn backend_segment_mtu(lab: &Lab, mtu: u16) -> Result<()> {
    let m = mtu.to_string();
    let sw = lab.switch_ns();
    let gw = lab.gateway_ns();
    let mut links = vec![(gw.clone(), "gwb".to_string()), (sw.clone(), "gw".into())];
    for i in 1..=lab.backends() {
        links.push((sw.clone(), format!("b{i}")));
        links.push((lab.backend_ns(i), "eth0".into()));
    }
    links.push((sw, "br0".into()));
    for (ns, dev) in links {
        ip(["-n", &ns, "link", "set", "dev", &dev, "mtu", &m])?;
    }
    Ok(())
}

/// What the stream did after the drop.
#[derive(Debug)]
struct Bulk {
    echoed: usize,
    after_drop: Duration,
}

/// Streams `TOTAL` bytes to `addr` and reads their echo back, dropping the
/// backend segment's MTU to 1400 after `BEFORE` bytes.
fn bulk(lab: &Lab, addr: SocketAddr) -> Result<Bulk> {
    let l = lab.client_ns();
    lab.in_ns(&l, || -> Result<Bulk> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(STALL))?;
        s.set_write_timeout(Some(STALL))?;
        read_greeting(&mut s)?;
        let mut r = s.try_clone()?;
        let reader = thread::spawn(move || -> (usize, Option<std::io::Error>) {
            let mut got = 0;
            let mut buf = vec![0u8; 1 << 16];
            while got < TOTAL {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) => return (got, Some(e)),
                }
            }
            (got, None)
        });
        let chunk = vec![0x5au8; 1 << 16];
        let mut sent = 0;
        let mut t_drop = None;
        let mut werr = None;
        while sent < TOTAL {
            if sent >= BEFORE && t_drop.is_none() {
                backend_segment_mtu(lab, 1400)?;
                t_drop = Some(Instant::now());
            }
            if let Err(e) = s.write_all(&chunk) {
                werr = Some(e);
                break;
            }
            sent += chunk.len();
        }
        let (echoed, rerr) = reader.join().expect("reader");
        let after_drop = t_drop.map_or(Duration::ZERO, |t| t.elapsed());
        eprintln!(
            "{addr}: sent {sent} of {TOTAL} bytes, echoed {echoed}, {:.2} s after the MTU drop \
             (write error: {werr:?}, read error: {rerr:?})",
            after_drop.as_secs_f64()
        );
        Ok(Bulk { echoed, after_drop })
    })?
}

/// A global counter from `/metrics`, 0 when absent.
fn counter(lab: &Lab, series: &str) -> Result<u64> {
    let url = format!("http://{LB_API}/metrics");
    let body = lab.in_ns(&lab.gateway_ns(), move || -> Result<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Ok(agent.get(&url).call()?.body_mut().read_to_string()?)
    })??;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

#[test]
fn bulk_stream_survives_an_mtu_drop_on_the_node_side() {
    if !netns_ready("bulk_stream_survives_an_mtu_drop_on_the_node_side") {
        return;
    }
    let lab = Lab::serving(env!("CARGO_BIN_EXE_cp-sim"));
    lab.start_lb(&lab.config_toml_families(HealthSettings::default(), Families::Dual))
        .expect("starting lb");
    let answered = r#"lb_xdp_events_total{event="too_big_answered"}"#;
    let mut failed = Vec::new();
    for addr in [
        SocketAddr::from(lab.vip_addr(KUBE_API_PORT)),
        lab.vip6_addr(KUBE_API_PORT),
    ] {
        backend_segment_mtu(&lab, 1500).expect("MTU 1500");
        let before = counter(&lab, answered).expect("metrics");
        let r = bulk(&lab, addr).with_context(|| format!("bulk stream to {addr}"));
        let after = counter(&lab, answered).expect("metrics");
        eprintln!("{addr}: too_big_answered +{}", after - before);
        match r {
            Ok(b) if b.echoed == TOTAL => {
                assert!(after > before, "{addr}: answers counted");
                assert!(b.after_drop < STALL, "{addr}: {b:?}");
            }
            Ok(b) => failed.push(format!("{addr}: stalled: {b:?}")),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if !failed.is_empty() {
        lab.dump_logs();
        panic!("a bulk stream did not complete through the MTU drop: {failed:?}");
    }
}
