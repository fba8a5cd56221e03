//! The configured interfaces' own drop counters, read at scrape time from
//! `/sys/class/net/<interface>/statistics`.
//!
//! Packets a NIC (or veth) drops before the XDP program runs, such as a
//! receive ring overflowing under a SYN flood, or after it returned, such
//! as a redirect into a full transmit queue, never reach the program's
//! counters (`lb_xdp_*`): these series are where such losses show. Each
//! is the kernel's own counter for the interface, so it only goes up
//! while the interface exists (a re-created interface starts again from
//! zero).

use std::path::Path;

/// Where the kernel publishes interface statistics.
pub const SYSFS_NET: &str = "/sys/class/net";

/// The counters exported, by their sysfs names: drops on receive (no
/// buffer, ring full, FIFO overrun) and on transmit (including frames the
/// XDP program redirected into a full queue of the interface).
pub const DROP_COUNTERS: [&str; 4] = [
    "rx_dropped",
    "rx_missed_errors",
    "rx_fifo_errors",
    "tx_dropped",
];

/// The [`DROP_COUNTERS`] of `iface` under `root` (normally
/// [`SYSFS_NET`]), in that order; `None` when the interface (or its
/// statistics) cannot be read, e.g. it is gone.
pub fn drop_counters(root: &Path, iface: &str) -> Option<Vec<(&'static str, u64)>> {
    // An interface name never contains '/', but the config is input:
    // never read outside the statistics directory.
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        return None;
    }
    let dir = root.join(iface).join("statistics");
    let mut out = Vec::with_capacity(DROP_COUNTERS.len());
    for name in DROP_COUNTERS {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        out.push((name, text.trim().parse().ok()?));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_drop_counter_and_refuses_odd_names() {
        let root = tempfile::tempdir().unwrap();
        let stats = root.path().join("gwc").join("statistics");
        std::fs::create_dir_all(&stats).unwrap();
        for (i, name) in DROP_COUNTERS.iter().enumerate() {
            std::fs::write(stats.join(name), format!("{}\n", 10 + i)).unwrap();
        }
        assert_eq!(
            drop_counters(root.path(), "gwc").unwrap(),
            [
                ("rx_dropped", 10),
                ("rx_missed_errors", 11),
                ("rx_fifo_errors", 12),
                ("tx_dropped", 13)
            ]
        );
        assert_eq!(drop_counters(root.path(), "gone"), None);
        assert_eq!(drop_counters(root.path(), "../gwc"), None);
        assert_eq!(drop_counters(root.path(), ""), None);
        std::fs::write(stats.join("tx_dropped"), "garbage").unwrap();
        assert_eq!(drop_counters(root.path(), "gwc"), None);
    }

    #[test]
    fn reads_the_loopback_of_this_machine() {
        let lo = drop_counters(Path::new(SYSFS_NET), "lo").expect("lo has statistics");
        assert_eq!(lo.len(), DROP_COUNTERS.len());
    }
}
