//! Data-path micro-costs through BPF_PROG_TEST_RUN: ns per packet on each
//! path of `lb_xdp` (a new flow's SYN, the backend's SYN-ACK, the client's
//! first ACK that promotes the flow, the backend's first reply and the
//! client's FIN, an
//! established forward packet, a reply, pass-through traffic) and of the
//! trivial forwarder `xdp_fwd`, each read against a trivial `XDP_TX`
//! program in the same run.
//!
//! # Method
//! `BPF_PROG_TEST_RUN` with `repeat = N` runs the program N times on *one*
//! buffer, and `lb_xdp` rewrites that buffer (DNAT, MACs, TTL): from the
//! second run on it would measure a different path (a client talking to a
//! backend directly). So every case is measured as many single runs
//! (`repeat = 1`), each on a fresh copy of its frame, and the median of the
//! kernel-reported times is taken. Each run opens a new flow (a different
//! source port and address): its SYN, the backend's SYN-ACK, the client's
//! first ACK (acknowledging the SYN-ACK, so it promotes the flow), the
//! backend's first reply and the client's FIN are timed in that order, so each path meets a flow in the state it has in
//! real traffic. The cases
//! take turns run by run, so interference hits them alike. A single
//! run's time includes the test harness's fixed cost (bottom halves off and
//! on, two clock reads); the baseline program measured the same way carries
//! the same cost, and the baseline with `repeat = N` (it leaves the frame
//! alone) shows how large that cost is.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb::dataplane::{tables::Written, Dataplane, ListenerPlan, Plan, RealPlan};
use lb_common::PROGRAM_NAME;
use serde::{Deserialize, Serialize};

use super::frames::{ipv4_dst, TcpFrame, ACK, FIN, SYN};
use super::stats::quantile;
use crate::lab::run_in_netns;

/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`.
pub const XDP_REDIRECT: u32 = 4;
/// Name of the trivial program in the XDP object.
pub const BASELINE_PROGRAM: &str = "xdp_tx_baseline";
/// Name of the trivial forwarder in the XDP object (the `xdp-fwd` gateway).
pub const FWD_PROGRAM: &str = "xdp_fwd";

/// The VIP the micro benchmarks balance.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
/// The VIP port.
pub const PORT: u16 = 80;
/// The client address of single-flow cases.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The gateway's own client-side address (target of pass-through traffic).
pub const GW_C: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const MAC_GW_C: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const MAC_GW_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];

/// Address of backend `i` (0-based): the lab's three, then 198.18.4.0 on.
pub fn backend_addr(i: usize) -> Ipv4Addr {
    if i < 3 {
        Ipv4Addr::new(198, 18, 2, 11 + i as u8)
    } else {
        let j = i - 3;
        Ipv4Addr::new(198, 18, 4 + (j / 250) as u8, 1 + (j % 250) as u8)
    }
}

fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, 0x11 + i as u8]
}

/// A plan with one listener, VIP:80, over `n` backends; `down` (if any)
/// not serving.
pub fn plan(n: usize, down: Option<usize>) -> Plan {
    Plan {
        listeners: vec![ListenerPlan {
            id: 0,
            vip: VIP.into(),
            port: PORT,
            target_port: PORT,
            fullnat: false,
            reals: (0..n)
                .map(|i| RealPlan {
                    id: i as u32,
                    name: format!("cp-{:04}", i + 1),
                    addr: backend_addr(i).into(),
                    port: PORT,
                    fullnat: false,
                    serving: Some(i) != down,
                    draining: false,
                    keeps_flows: Some(i) != down,
                })
                .collect(),
        }],
        snat: Default::default(),
    }
}

/// Client addresses of the new flows `packet_costs` opens (60000 ports each).
const NEW_FLOW_CLIENTS: u32 = 4;

/// The `i`-th client address of new flows: 198.18.1.10 on.
fn new_flow_client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 10)) + i)
}

/// A network namespace of the benchmark's own, removed on drop: the
/// gateway's two interfaces (veth pairs whose peers stay inside),
/// addresses, forwarding, and permanent neighbours for the client and the
/// three backends, so FIB lookups in the program succeed.
#[derive(Debug)]
pub struct MicroNs {
    name: String,
}

impl MicroNs {
    /// Creates the namespace.
    pub fn create() -> Result<MicroNs> {
        let ns = MicroNs {
            name: format!("lbbm{}", std::process::id()),
        };
        crate::lab::ip(["netns", "add", &ns.name])?;
        ns.build()
            .context("setting up the micro-benchmark namespace")?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn build(&self) -> Result<()> {
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let n = |args: String| -> Result<()> {
            let mut v = vec!["-n".to_string(), self.name.clone()];
            v.extend(args.split_whitespace().map(String::from));
            crate::lab::ip(v)
        };
        n(format!(
            "link add name gwc address {} type veth peer name pc",
            mac(MAC_GW_C)
        ))?;
        n(format!(
            "link add name gwb address {} type veth peer name pb",
            mac(MAC_GW_B)
        ))?;
        for d in ["lo", "gwc", "pc", "gwb", "pb"] {
            n(format!("link set dev {d} up"))?;
        }
        n(format!("addr add {GW_C}/24 dev gwc"))?;
        n(format!("addr add {GW_B}/24 dev gwb"))?;
        n(format!(
            "neigh add {CLIENT} lladdr {} dev gwc nud permanent",
            mac(MAC_CLIENT)
        ))?;
        // The new flows' clients (see `packet_costs`), so their SYN-ACKs
        // are forwarded rather than passed to the kernel to resolve them.
        for i in 0..NEW_FLOW_CLIENTS {
            n(format!(
                "neigh add {} lladdr {} dev gwc nud permanent",
                new_flow_client(i),
                mac(MAC_CLIENT)
            ))?;
        }
        for i in 0..3 {
            n(format!(
                "neigh add {} lladdr {} dev gwb nud permanent",
                backend_addr(i),
                mac(backend_mac(i))
            ))?;
        }
        crate::lab::ns_exec(&self.name, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace (BPF_PROG_TEST_RUN does
    /// its FIB lookups in the caller's namespace).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        run_in_netns(&self.name, f)
    }

    /// Interface index of `iface` inside the namespace.
    pub fn ifindex(&self, iface: &str) -> Result<u32> {
        let out = crate::lab::ns_exec(
            &self.name,
            ["cat", &format!("/sys/class/net/{iface}/ifindex")],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .with_context(|| format!("ifindex of {iface}: {text:?}"))
    }
}

impl Drop for MicroNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Loads the data path (and the baseline program) with conntrack maps of
/// `capacity` entries, allows redirects between the two interfaces and
/// writes the balancing plan for `backends` backends. Call inside
/// [`MicroNs::run`]. `object` is another build of the XDP object than the
/// embedded one (to compare two builds side by side).
pub fn load_dataplane(
    object: Option<&[u8]>,
    capacity: u32,
    backends: usize,
    ifindexes: [u32; 2],
) -> Result<Dataplane> {
    load_with_writer(object, capacity, backends, ifindexes).map(|(dp, _)| dp)
}

/// [`load_dataplane`], also returning the map writer that wrote the plan.
pub fn load_with_writer(
    object: Option<&[u8]>,
    capacity: u32,
    backends: usize,
    ifindexes: [u32; 2],
) -> Result<(Dataplane, Written)> {
    let mut dp = match object {
        Some(o) => Dataplane::load_object(o, capacity),
        None => Dataplane::load(capacity),
    }
    .context("loading the XDP object")?;
    for i in ifindexes {
        dp.allow_redirect(i)?;
    }
    let baseline: &mut Xdp = dp
        .ebpf
        .program_mut(BASELINE_PROGRAM)
        .with_context(|| format!("{BASELINE_PROGRAM} missing from the XDP object (rebuild it)"))?
        .try_into()?;
    baseline.load().context("loading the baseline program")?;
    let fwd: &mut Xdp = dp
        .ebpf
        .program_mut(FWD_PROGRAM)
        .with_context(|| format!("{FWD_PROGRAM} missing from the XDP object (rebuild it)"))?
        .try_into()?;
    fwd.load().context("loading the forwarder program")?;
    let mut written = Written::default();
    written.apply(&mut dp, &plan(backends, None))?;
    Ok((dp, written))
}

/// The data path and the baseline of a loaded [`Dataplane`].
pub fn programs(dp: &Dataplane) -> Result<(&Xdp, &Xdp)> {
    let lb: &Xdp = dp
        .ebpf
        .program(PROGRAM_NAME)
        .context("lb_xdp missing")?
        .try_into()?;
    let base: &Xdp = dp
        .ebpf
        .program(BASELINE_PROGRAM)
        .context("baseline missing")?
        .try_into()?;
    Ok((lb, base))
}

/// The trivial forwarder of a loaded [`Dataplane`].
pub fn forwarder(dp: &Dataplane) -> Result<&Xdp> {
    Ok(dp
        .ebpf
        .program(FWD_PROGRAM)
        .context("xdp_fwd missing")?
        .try_into()?)
}

/// One run of `prog` on `frame` arriving on `ingress`: the action, the
/// kernel-measured time in ns, and the output frame.
pub fn run_once(prog: &Xdp, frame: &[u8], ingress: u32) -> Result<(u32, f64, Vec<u8>)> {
    let (action, ns, out) = run_n(prog, frame, ingress, 1)?;
    Ok((action, ns, out))
}

/// `repeat` runs of `prog` on one copy of `frame`: the last action, the
/// kernel's average time per run in ns, and the output frame.
pub fn run_n(prog: &Xdp, frame: &[u8], ingress: u32, repeat: u32) -> Result<(u32, f64, Vec<u8>)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let len = u32::try_from(frame.len()).context("frame too long")?;
    let ctx: Vec<u8> = [0, len, 0, ingress, 0, 0]
        .iter()
        .flat_map(|w: &u32| w.to_ne_bytes())
        .collect();
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, r.duration.as_nanos() as f64, out))
}

/// Cost of one kind of packet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PacketCost {
    /// Short key.
    pub case: String,
    /// What the packet is.
    pub what: String,
    /// Action the program returned (checked on every run).
    pub action: String,
    /// Single runs measured.
    pub runs: u32,
    /// Median ns per packet.
    pub median_ns: f64,
    /// 10th percentile.
    pub p10_ns: f64,
    /// 90th percentile.
    pub p90_ns: f64,
    /// Median over the baseline program's median.
    pub vs_baseline: f64,
    /// Median minus the harness cost (see [`PacketCosts::harness_ns`]).
    pub net_ns: f64,
}

/// All packet costs of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PacketCosts {
    /// The baseline `XDP_TX` program, single runs.
    pub baseline: PacketCost,
    /// The baseline with `repeat` runs per call: average ns per run.
    pub baseline_repeat_ns: f64,
    /// `repeat` used for [`PacketCosts::baseline_repeat_ns`].
    pub repeat: u32,
    /// Fixed cost of a single run in the harness: baseline single-run
    /// median minus the baseline's per-run time with `repeat`.
    pub harness_ns: f64,
    /// The data path's cases.
    pub cases: Vec<PacketCost>,
}

impl PacketCosts {
    /// A case by key.
    pub fn case(&self, key: &str) -> Option<&PacketCost> {
        self.cases.iter().find(|c| c.case == key)
    }
}

fn action_name(a: u32) -> String {
    match a {
        1 => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        other => format!("action {other}"),
    }
}

/// Measures `runs` single runs of `prog` on the frames `frame(i)` and
/// checks that every run returns `want`.
pub fn measure(
    prog: &Xdp,
    ingress: u32,
    runs: u32,
    want: u32,
    mut frame: impl FnMut(u32) -> Vec<u8>,
) -> Result<(f64, f64, f64)> {
    let mut ns = Vec::with_capacity(runs as usize);
    for i in 0..runs {
        let (action, t, _) = run_once(prog, &frame(i), ingress)?;
        if action != want {
            bail!(
                "run {i}: program returned {}, expected {}",
                action_name(action),
                action_name(want)
            );
        }
        ns.push(t);
    }
    let q = |p| quantile(&ns, p).unwrap_or(f64::NAN);
    Ok((q(0.5), q(0.1), q(0.9)))
}

/// Sets the TCP sequence number of an IPv4 frame without options,
/// updating the TCP checksum.
fn set_seq(frame: &mut [u8], seq: u32) {
    let old = u32::from_be_bytes(frame[38..42].try_into().expect("4 bytes"));
    let c = u16::from_be_bytes([frame[50], frame[51]]);
    let c = lb_common::checksum::update_u32(c, old, seq);
    frame[38..42].copy_from_slice(&seq.to_be_bytes());
    frame[50..52].copy_from_slice(&c.to_be_bytes());
}

/// A client → VIP:80 frame from `src:sport`.
pub fn to_vip(src: Ipv4Addr, sport: u16, flags: u8) -> Vec<u8> {
    TcpFrame {
        dmac: MAC_GW_C,
        smac: MAC_CLIENT,
        src,
        dst: VIP,
        sport,
        dport: PORT,
        flags,
        payload: if flags == SYN { 0 } else { 64 },
    }
    .bytes()
}

/// One kind of packet measured by [`packet_costs`].
struct Case<'a> {
    key: &'static str,
    what: &'static str,
    prog: &'a Xdp,
    ingress: u32,
    want: u32,
    frame: Box<dyn Fn(u32) -> Vec<u8> + 'a>,
}

/// Measures the four packet kinds and the baseline; call inside
/// [`MicroNs::run`] with the interfaces' indexes. The cases take turns run
/// by run, so a burst of other activity on the machine hits all of them
/// alike and the ratios against the baseline hold.
pub fn packet_costs(
    object: Option<&[u8]>,
    runs: u32,
    repeat: u32,
    ifindexes: [u32; 2],
) -> Result<PacketCosts> {
    let [gwc, gwb] = ifindexes;
    let dp = load_dataplane(object, 1 << 18, 3, ifindexes)?;
    let (lb, base) = programs(&dp)?;
    let fwd = forwarder(&dp)?;

    // Open the flow whose packets the established and reply cases send.
    let established = to_vip(CLIENT, 40000, ACK);
    let (action, _, out) = run_once(lb, &to_vip(CLIENT, 40000, SYN), gwc)?;
    if action != XDP_REDIRECT {
        bail!("the opening SYN got {}", action_name(action));
    }
    let backend = ipv4_dst(&out).context("no output frame")?;
    let b = (0..3)
        .find(|&i| backend_addr(i) == backend)
        .with_context(|| format!("SYN sent to {backend}, not a backend"))?;
    // Complete the handshake: only a proven flow is established. The
    // backend's SYN-ACK carries ISN 0x01ff_ffff, which the client's ACK
    // frames (ack 0x0200_0000) acknowledge.
    let mut synack = TcpFrame {
        dmac: MAC_GW_B,
        smac: backend_mac(b),
        src: backend,
        dst: CLIENT,
        sport: PORT,
        dport: 40000,
        flags: SYN | ACK,
        payload: 0,
    }
    .bytes();
    set_seq(&mut synack, 0x01ff_ffff);
    for (what, frame, ingress) in [
        ("SYN-ACK", &synack, gwb),
        ("handshake ACK", &established, gwc),
    ] {
        let (action, _, _) = run_once(lb, frame, ingress)?;
        if action != XDP_REDIRECT {
            bail!("the {what} got {}", action_name(action));
        }
    }
    let reply = TcpFrame {
        dmac: MAC_GW_B,
        smac: backend_mac(b),
        src: backend,
        dst: CLIENT,
        sport: PORT,
        dport: 40000,
        flags: ACK,
        payload: 64,
    }
    .bytes();
    let pass = TcpFrame {
        dmac: MAC_GW_C,
        smac: MAC_CLIENT,
        src: CLIENT,
        dst: GW_C,
        sport: 50000,
        dport: 22,
        flags: ACK,
        payload: 64,
    }
    .bytes();
    let routed = TcpFrame {
        dmac: MAC_GW_C,
        smac: MAC_CLIENT,
        src: CLIENT,
        dst: backend_addr(0),
        sport: 40001,
        dport: PORT,
        flags: ACK,
        payload: 64,
    }
    .bytes();
    let fixed = |f: Vec<u8>| -> Box<dyn Fn(u32) -> Vec<u8>> { Box::new(move |_| f.clone()) };
    // Run i's new flow: 60000 ports per client address.
    let client = |i: u32| (new_flow_client(i / 60000), 1024 + (i % 60000) as u16);
    if runs / 60000 >= NEW_FLOW_CLIENTS {
        bail!("at most {} runs", NEW_FLOW_CLIENTS * 60000);
    }
    let flow = move |i: u32, flags: u8| {
        let (src, sport) = client(i);
        to_vip(src, sport, flags)
    };
    // The backend the current run's SYN went to (set by the loop below), so
    // that run's SYN-ACK comes from it and the first ACK promotes the flow.
    let syn_backend = std::rc::Rc::new(std::cell::Cell::new(0usize));
    // A segment of run i's flow from its backend.
    let from_backend = {
        let b = syn_backend.clone();
        move |i: u32, flags: u8| {
            let (dst, dport) = client(i);
            let b = b.get();
            TcpFrame {
                dmac: MAC_GW_B,
                smac: backend_mac(b),
                src: backend_addr(b),
                dst,
                sport: PORT,
                dport,
                flags,
                payload: if flags & SYN != 0 { 0 } else { 64 },
            }
            .bytes()
        }
    };
    let synack_of = {
        let from_backend = from_backend.clone();
        move |i: u32| {
            let mut f = from_backend(i, SYN | ACK);
            set_seq(&mut f, 0x01ff_ffff);
            f
        }
    };
    let cases = [
        Case {
            key: "baseline",
            what: "trivial program returning XDP_TX",
            prog: base,
            ingress: gwc,
            want: XDP_TX,
            frame: fixed(established.clone()),
        },
        Case {
            key: "new_flow_syn",
            what: "new-flow SYN to the VIP (Maglev pick, conntrack insert, DNAT, FIB, redirect)",
            prog: lb,
            ingress: gwc,
            want: XDP_REDIRECT,
            frame: Box::new(move |i| flow(i, SYN)),
        },
        Case {
            key: "syn_ack",
            what: "the backend's SYN-ACK of that flow (embryonic reply: ISN recorded, source NAT, FIB, redirect)",
            prog: lb,
            ingress: gwb,
            want: XDP_REDIRECT,
            frame: Box::new(synack_of),
        },
        Case {
            key: "first_ack",
            what: "first ACK of that new flow (the handshake's last segment: promotion to the established tables)",
            prog: lb,
            ingress: gwc,
            want: XDP_REDIRECT,
            frame: Box::new(move |i| flow(i, ACK)),
        },
        Case {
            key: "first_reply",
            what: "first reply of that flow, once established (reverse conntrack hit, source NAT, redirect)",
            prog: lb,
            ingress: gwb,
            want: XDP_REDIRECT,
            frame: Box::new(move |i| from_backend(i, ACK)),
        },
        Case {
            key: "established",
            what: "established client → VIP packet (conntrack hit, DNAT, FIB, redirect)",
            prog: lb,
            ingress: gwc,
            want: XDP_REDIRECT,
            frame: fixed(established.clone()),
        },
        Case {
            key: "fin",
            what: "FIN of that new flow (client closes)",
            prog: lb,
            ingress: gwc,
            want: XDP_REDIRECT,
            frame: Box::new(move |i| flow(i, FIN | ACK)),
        },
        Case {
            key: "reply",
            what: "backend → client reply (reverse conntrack hit, source NAT back to the VIP, redirect)",
            prog: lb,
            ingress: gwb,
            want: XDP_REDIRECT,
            frame: fixed(reply),
        },
        Case {
            key: "pass_through",
            what: "non-VIP TCP to the gateway itself (passed to the kernel)",
            prog: lb,
            ingress: gwc,
            want: XDP_PASS,
            frame: fixed(pass),
        },
        Case {
            key: "xdp_fwd",
            what: "xdp_fwd: client → backend packet (FIB lookup, MACs, TTL, redirect; the XDP ceiling)",
            prog: fwd,
            ingress: gwc,
            want: XDP_REDIRECT,
            frame: fixed(routed),
        },
    ];
    let mut ns: Vec<Vec<f64>> = cases
        .iter()
        .map(|_| Vec::with_capacity(runs as usize))
        .collect();
    for i in 0..runs {
        for (c, times) in cases.iter().zip(ns.iter_mut()) {
            let (action, t, out) = run_once(c.prog, &(c.frame)(i), c.ingress)?;
            if action != c.want {
                bail!(
                    "{} run {i}: program returned {}, expected {}",
                    c.key,
                    action_name(action),
                    action_name(c.want)
                );
            }
            if c.key == "new_flow_syn" {
                let to = ipv4_dst(&out).context("no output frame")?;
                let b = (0..3)
                    .find(|&b| backend_addr(b) == to)
                    .with_context(|| format!("run {i}: SYN sent to {to}, not a backend"))?;
                syn_backend.set(b);
            }
            times.push(t);
        }
    }
    // Every run's first ACK must have promoted its flow (plus the flow the
    // established and reply cases use), or "first_ack" timed another path.
    let promoted: u64 = dp
        .maps
        .stats
        .get(&(lb_common::Reason::EmbryonicPromoted as u32), 0)
        .context("reading STATS")?
        .iter()
        .sum();
    if promoted != u64::from(runs) + 1 {
        bail!(
            "{promoted} flows promoted, expected {}: the first ACKs did not complete the handshake",
            u64::from(runs) + 1
        );
    }
    let (_, repeat_ns, _) = run_n(base, &established, gwc, repeat)?;
    let q = |v: &[f64], p| quantile(v, p).unwrap_or(f64::NAN);
    let base_median = q(&ns[0], 0.5);
    let harness_ns = (base_median - repeat_ns).max(0.0);
    let mut costs: Vec<PacketCost> = cases
        .iter()
        .zip(ns.iter())
        .map(|(c, v)| {
            let m = q(v, 0.5);
            PacketCost {
                case: c.key.into(),
                what: c.what.into(),
                action: action_name(c.want),
                runs,
                median_ns: m,
                p10_ns: q(v, 0.1),
                p90_ns: q(v, 0.9),
                vs_baseline: m / base_median,
                net_ns: m - harness_ns,
            }
        })
        .collect();
    let baseline = costs.remove(0);
    Ok(PacketCosts {
        baseline,
        baseline_repeat_ns: repeat_ns,
        repeat,
        harness_ns,
        cases: costs,
    })
}
