//! A saturating SYN flood (issue 19, finding 8): spoofed SYNs to the VIP's
//! HTTP port as fast as [`SENDERS`] threads go (`sendmmsg` on an AF_PACKET
//! socket, 64 frames a call), from sources in
//! 198.19.0.0/16 (the benchmark range, routed nowhere: their SYN-ACKs die
//! in the lab), while legitimate clients keep connecting and fetching a
//! page. Measured per gateway: the legitimate success rate and its
//! latency, and where the flood's packets were dropped (the gateway's and
//! the client's interface counters), since drops below the XDP program do
//! not show in its own counters.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::frames::{TcpFrame, SYN};
use super::gateways::Gateway;
use super::servers::HTTP_PORT;
use super::stats::Summary;
use crate::lab::{ns_exec, run_in_netns, Lab};

/// Longest a legitimate attempt may take (connect and response) before it
/// counts as failed.
pub const LEGIT_DEADLINE: Duration = Duration::from_secs(3);
/// Legitimate client threads.
pub const LEGIT_THREADS: usize = 4;
/// Pause between one legitimate thread's attempts.
pub const LEGIT_PAUSE: Duration = Duration::from_millis(20);
/// Distinct spoofed SYNs the senders cycle through.
const POOL: u32 = 1 << 17;
/// Sender threads (one per CPU of the benchmark machine).
pub const SENDERS: usize = 2;

/// The interface counters read around a flood, per (namespace role,
/// interface).
pub const WATCHED: [(&str, &str); 3] = [("client", "eth0"), ("gateway", "gwc"), ("gateway", "gwb")];

/// One gateway under the flood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodRun {
    /// The gateway.
    pub gateway: Gateway,
    /// Seconds the flood ran.
    pub secs: f64,
    /// Spoofed SYNs sent.
    pub syns_sent: u64,
    /// Legitimate attempts.
    pub attempts: u64,
    /// Attempts that connected and got a response within [`LEGIT_DEADLINE`].
    pub succeeded: u64,
    /// Latency of the successful attempts, ms.
    pub latency_ms: Option<Summary>,
    /// 99th percentile of the successful attempts' latency, ms.
    pub p99_ms: Option<f64>,
    /// Interface counters that moved during the flood:
    /// `(role/interface, counter, delta)`, drop and error counters only.
    pub drops: Vec<(String, String, u64)>,
    /// With lb: the `lb_interface_dropped_packets_total` and
    /// `lb_xdp_dropped_packets_total` series that moved during the flood,
    /// as `/metrics` showed them: `(series, delta)`.
    #[serde(default)]
    pub lb_metric_drops: Vec<(String, u64)>,
}

/// The series of lb's `/metrics` (in the gateway namespace) that count
/// drops: the interfaces' own (`lb_interface_dropped_packets_total`) and
/// the program's (`lb_xdp_dropped_packets_total`).
pub fn lb_interface_drops(lab: &Lab) -> Result<Vec<(String, u64)>> {
    let text = run_in_netns(&lab.gateway_ns(), || -> Result<String> {
        let mut s =
            TcpStream::connect_timeout(&crate::lab::LB_API.parse()?, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: lb\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })??;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("lb_interface_dropped_packets_total{")
                || l.starts_with("lb_xdp_dropped_packets_total{")
        })
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

impl FloodRun {
    /// Legitimate success rate, 0–1.
    pub fn success_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.succeeded as f64 / self.attempts as f64)
    }

    /// Spoofed SYNs per second.
    pub fn syn_pps(&self) -> f64 {
        if self.secs > 0.0 {
            self.syns_sent as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// The spoofed SYN number `i` of the pool: source 198.19.(i>>8 & 0xff).(i & 0xff)
/// with port 1024 + (i >> 16) * 7919 % 60000, to `dst:HTTP_PORT`.
pub fn spoofed_syn(i: u32, dst: Ipv4Addr, dmac: [u8; 6], smac: [u8; 6]) -> Vec<u8> {
    let host = i & 0xffff;
    let src = Ipv4Addr::new(198, 19, (host >> 8) as u8, (host & 0xff) as u8);
    let sport = 1024 + ((i >> 16) * 7919 + host * 31) % 60000;
    TcpFrame {
        dmac,
        smac,
        src,
        dst,
        sport: sport as u16,
        dport: HTTP_PORT,
        flags: SYN,
        payload: 0,
    }
    .bytes()
}

/// The MAC address of `dev` in namespace `ns`.
fn mac(ns: &str, dev: &str) -> Result<[u8; 6]> {
    let out = ns_exec(ns, ["cat", &format!("/sys/class/net/{dev}/address")])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the MAC of {dev} in {ns}: {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC of {dev} in {ns}: {text:?}"))
}

/// Every counter of `/sys/class/net/{dev}/statistics` in `ns`.
pub fn iface_stats(ns: &str, dev: &str) -> Result<Vec<(String, u64)>> {
    let dir = format!("/sys/class/net/{dev}/statistics");
    let out = ns_exec(ns, ["sh", "-c", &format!("cd {dir} && grep -H . *")])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

/// Sends `frames` (from `offset` on, cycling) out of `eth0` in `client`
/// until `stop`; returns how many were sent.
fn send_flood(
    client: &str,
    frames: &[Vec<u8>],
    offset: usize,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    run_in_netns(client, move || -> Result<u64> {
        // SAFETY: plain socket(2) call; the descriptor is closed below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        let name = std::ffi::CString::new("eth0")?;
        // SAFETY: name is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        // Batches of BATCH frames per sendmmsg(2) call.
        const BATCH: usize = 64;
        let mut sent = 0u64;
        let mut i = offset;
        // SAFETY: plain data; zeroed is a valid value for both.
        let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        while !stop.load(Ordering::Relaxed) {
            for k in 0..BATCH {
                let f = &frames[i % frames.len()];
                i += 1;
                iov[k].iov_base = f.as_ptr() as *mut libc::c_void;
                iov[k].iov_len = f.len();
                msgs[k].msg_hdr.msg_name = std::ptr::addr_of_mut!(sll).cast();
                msgs[k].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                msgs[k].msg_hdr.msg_iov = std::ptr::addr_of_mut!(iov[k]);
                msgs[k].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every msghdr points at live iovecs, frames and sll.
            let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
            }
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        Ok(sent)
    })?
}

/// One legitimate attempt: connect, ask for `/`, read the first bytes of
/// the answer; its duration when all of it fits in [`LEGIT_DEADLINE`].
fn legit_attempt(addr: SocketAddrV4) -> Option<Duration> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr.into(), LEGIT_DEADLINE).ok()?;
    let left = LEGIT_DEADLINE.checked_sub(t0.elapsed())?;
    s.set_read_timeout(Some(left)).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n").ok()?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).ok()?;
    let d = t0.elapsed();
    (n > 0 && d <= LEGIT_DEADLINE).then_some(d)
}

/// Floods `gateway`'s VIP for `secs` while [`LEGIT_THREADS`] clients keep
/// connecting; the gateway must be up.
pub fn flood_run(lab: &Lab, gateway: Gateway, secs: Duration) -> Result<FloodRun> {
    let vip = lab.vip();
    let addr = SocketAddrV4::new(vip, HTTP_PORT);
    let roles = |role: &str| {
        if role == "client" {
            lab.client_ns()
        } else {
            lab.gateway_ns()
        }
    };
    let before: Vec<Vec<(String, u64)>> = WATCHED
        .iter()
        .map(|(r, d)| iface_stats(&roles(r), d))
        .collect::<Result<_>>()?;
    let lb_before = if gateway.runs_lb() {
        Some(lb_interface_drops(lab)?)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let client = lab.client_ns();
    let t0 = Instant::now();
    let dmac = mac(&lab.gateway_ns(), "gwc")?;
    let smac = mac(&client, "eth0")?;
    let frames: Vec<Vec<u8>> = (0..POOL).map(|i| spoofed_syn(i, vip, dmac, smac)).collect();
    let (sent, lat, attempts) = std::thread::scope(|scope| -> Result<_> {
        let senders: Vec<_> = (0..SENDERS)
            .map(|k| {
                let stop = Arc::clone(&stop);
                let (client, frames) = (&client, &frames);
                scope.spawn(move || send_flood(client, frames, k * frames.len() / SENDERS, stop))
            })
            .collect();
        // Let the flood build up before the first legitimate attempt.
        std::thread::sleep(Duration::from_millis(500));
        let legit: Vec<_> = (0..LEGIT_THREADS)
            .map(|_| {
                let client = client.clone();
                scope.spawn(move || {
                    run_in_netns(&client, || {
                        let mut out = Vec::new();
                        while t0.elapsed() + LEGIT_DEADLINE < secs {
                            out.push(legit_attempt(addr));
                            std::thread::sleep(LEGIT_PAUSE);
                        }
                        out
                    })
                })
            })
            .collect();
        let mut all = Vec::new();
        for l in legit {
            all.extend(
                l.join()
                    .map_err(|_| anyhow::anyhow!("legitimate client panicked"))??,
            );
        }
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for t in senders {
            sent += t
                .join()
                .map_err(|_| anyhow::anyhow!("flood sender panicked"))??;
        }
        let ok: Vec<f64> = all
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        Ok((sent, ok, all.len() as u64))
    })?;
    let elapsed = t0.elapsed().as_secs_f64();
    let mut drops = Vec::new();
    for ((role, dev), b) in WATCHED.iter().zip(before) {
        for (k, v) in iface_stats(&roles(role), dev)? {
            if !(k.contains("drop") || k.contains("error") || k.contains("missed")) {
                continue;
            }
            let was = b.iter().find(|(bk, _)| *bk == k).map_or(0, |(_, bv)| *bv);
            if v > was {
                drops.push((format!("{role}/{dev}"), k, v - was));
            }
        }
    }
    let mut lb_metric_drops = Vec::new();
    if let Some(before) = lb_before {
        for (k, v) in lb_interface_drops(lab)? {
            let was = before
                .iter()
                .find(|(bk, _)| *bk == k)
                .map_or(0, |(_, bv)| *bv);
            if v > was {
                lb_metric_drops.push((k, v - was));
            }
        }
    }
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let p99 =
        (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * 0.99).round() as usize]);
    Ok(FloodRun {
        gateway,
        secs: elapsed,
        syns_sent: sent,
        attempts,
        succeeded: lat.len() as u64,
        latency_ms: Summary::of(&lat),
        p99_ms: p99,
        drops,
        lb_metric_drops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofed_syns_stay_in_the_benchmark_range_and_differ() {
        let dst = Ipv4Addr::new(198, 18, 100, 10);
        let mut seen = std::collections::HashSet::new();
        for i in [0, 1, 255, 256, 65535, 65536, POOL - 1] {
            let f = spoofed_syn(i, dst, [2; 6], [4; 6]);
            let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
            assert_eq!(src.octets()[..2], [198, 19], "{src}");
            assert_eq!(super::super::frames::ipv4_dst(&f), Some(dst));
            assert_eq!(f[47], SYN, "flags");
            assert!(seen.insert((src, u16::from_be_bytes([f[34], f[35]]))));
        }
        let run = FloodRun {
            gateway: Gateway::Xdp,
            secs: 2.0,
            syns_sent: 100,
            attempts: 4,
            succeeded: 3,
            latency_ms: None,
            p99_ms: None,
            drops: vec![],
            lb_metric_drops: vec![],
        };
        assert_eq!(run.success_rate(), Some(0.75));
        assert_eq!(run.syn_pps(), 50.0);
    }
}
