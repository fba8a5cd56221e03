//! Counts the IPv4/TCP packets an interface transmits, with an AF_PACKET
//! socket opened inside a lab namespace: the reference the data path's
//! counters are checked against.
//!
//! Only outgoing packets are taken (the sender's own view, before any
//! receive-side merging), by their IP header: the addresses, ports and IP
//! total length, which is what the XDP program adds to its byte counters.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lb_tests::Lab;

/// One transmitted TCP/IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// IP total length (header included).
    pub ip_len: u64,
}

/// A running capture; [`Capture::finish`] stops it.
pub struct Capture {
    what: String,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Vec<Packet>>>>,
}

/// A capture stops by itself after this long.
const MAX_DURATION: Duration = Duration::from_secs(120);

const ETH_P_IP: u16 = 0x0800;
/// Outgoing packets reach only sockets bound to every protocol.
const ETH_P_ALL: u16 = 0x0003;

impl Capture {
    /// Starts capturing what `iface` in namespace `ns` transmits.
    pub fn start(lab: &Lab, ns: &str, iface: &str) -> Result<Capture> {
        let what = format!("{ns}/{iface}");
        let name = std::ffi::CString::new(iface)?;
        let fd = lab.in_ns(ns, || -> Result<OwnedFd> {
            // SAFETY: plain socket(2) call; the result is checked.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                    i32::from(ETH_P_ALL.to_be()),
                )
            };
            if raw < 0 {
                return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
            }
            // SAFETY: `raw` is a new descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: `name` is a valid NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {iface:?}");
            }
            // SAFETY: sockaddr_ll is plain data; all-zero is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: `sll` is a valid sockaddr_ll of the size given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::addr_of!(sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
            }
            set_opt(&fd, libc::SO_RCVBUF, 8 << 20)?;
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: `tv` is a valid timeval of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::addr_of!(tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO");
            }
            Ok(fd)
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name(format!("capture {what}"))
            .spawn(move || read_loop(&fd, &stop2))
            .context("spawning the capture thread")?;
        Ok(Capture {
            what,
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the capture and returns the packets, failing if the socket
    /// dropped any (then the reference would be incomplete).
    pub fn finish(mut self) -> Result<Vec<Packet>> {
        self.stop.store(true, Ordering::SeqCst);
        let h = self.handle.take().expect("finished once");
        h.join()
            .map_err(|_| anyhow::anyhow!("capture thread of {} panicked", self.what))?
            .with_context(|| format!("capture on {}", self.what))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn set_opt(fd: &OwnedFd, opt: i32, v: i32) -> Result<()> {
    // SAFETY: `v` is a valid int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            std::ptr::addr_of!(v).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setsockopt");
    }
    Ok(())
}

fn read_loop(fd: &OwnedFd, stop: &AtomicBool) -> Result<Vec<Packet>> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    // Drain what is queued once `stop` is set: stop after a timeout.
    let mut stopping = false;
    while start.elapsed() < MAX_DURATION {
        if stop.load(Ordering::SeqCst) {
            stopping = true;
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: `buf` and `from` are valid for writes of the sizes given.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                std::ptr::addr_of_mut!(from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    if stopping {
                        break;
                    }
                    continue;
                }
                std::io::ErrorKind::Interrupted => continue,
                _ => return Err(e).context("recvfrom"),
            }
        }
        let n = n as usize;
        if from.sll_pkttype != libc::PACKET_OUTGOING || from.sll_protocol != ETH_P_IP.to_be() {
            continue;
        }
        if n > buf.len() {
            bail!(
                "a {n}-byte packet (segmentation offload?): lengths would not be per wire packet"
            );
        }
        if let Some(p) = parse(&buf[..n]) {
            out.push(p);
        }
    }
    let drops = packet_drops(fd)?;
    if drops != 0 {
        bail!("the capture socket dropped {drops} packets");
    }
    Ok(out)
}

/// Parses an IPv4/TCP packet's addresses, ports and total length.
fn parse(p: &[u8]) -> Option<Packet> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 6 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let tcp = p.get(ihl..ihl + 4)?;
    Some(Packet {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        sport: u16::from_be_bytes([tcp[0], tcp[1]]),
        dport: u16::from_be_bytes([tcp[2], tcp[3]]),
        ip_len: u64::from(u16::from_be_bytes([p[2], p[3]])),
    })
}

/// Packets the socket dropped (PACKET_STATISTICS; reading resets it).
fn packet_drops(fd: &OwnedFd) -> Result<u32> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as u32;
    // SAFETY: `st` is valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            std::ptr::addr_of_mut!(st).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("PACKET_STATISTICS");
    }
    Ok(st.tp_drops)
}
