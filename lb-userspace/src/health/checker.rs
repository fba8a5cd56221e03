//! The periodic checker task of one target: runs its [`Prober`] every
//! interval, one check at a time, and reports every outcome.

use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::probe::{CheckOutcome, Prober};

/// Shortest interval [`spawn_checker`] uses; smaller ones (including zero)
/// are raised to it.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// What and how often [`spawn_checker`] checks.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// What is checked, and how (see [`super::Probers`]).
    pub prober: Prober,
    /// Time between the starts of two checks (raised to 1 ms if smaller).
    pub interval: Duration,
    /// Limit on one whole check; see [`Prober::check`].
    pub timeout: Duration,
    /// Upper bound of a uniformly random extra delay before every check but
    /// the first; zero for none.
    pub jitter: Duration,
}

/// Spawns a tokio task that runs `spec.prober`'s check every
/// `spec.interval`, sending `(id, outcome)` on `tx` after every check.
///
/// - The first check runs immediately, without jitter; every later check
///   waits for its tick plus a uniformly random extra delay in
///   `[0, spec.jitter]` (when the jitter is non-zero), which spreads the
///   checks of many targets without shifting the schedule: ticks stay
///   `interval` apart, measured start-to-start.
/// - Checks of one target never overlap: the next starts only after the
///   previous one finished and was sent, and the interval elapsed
///   ([`MissedTickBehavior::Delay`]: a late check pushes the schedule back
///   rather than causing a burst).
/// - Sending waits if the channel is full (back-pressure).
/// - The task ends as soon as `tx` is closed (the receiver dropped), even in
///   the middle of a wait or a check.
pub fn spawn_checker<I: Clone + Send + 'static>(
    id: I,
    spec: CheckSpec,
    tx: mpsc::Sender<(I, CheckOutcome)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(spec.interval.max(MIN_INTERVAL));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            // The first tick completes at once.
            tokio::select! {
                _ = ticks.tick() => {}
                _ = tx.closed() => return,
            }
            if !first && !spec.jitter.is_zero() {
                let delay = random_delay(spec.jitter);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return,
                }
            }
            first = false;
            let outcome = tokio::select! {
                outcome = spec.prober.check(spec.timeout) => outcome,
                _ = tx.closed() => return,
            };
            let message = (id.clone(), outcome);
            if tx.send(message).await.is_err() {
                return;
            }
        }
    })
}

/// Uniformly random duration in `[0, max]` (nanosecond resolution, `max`
/// capped at about 584 years).
fn random_delay(max: Duration) -> Duration {
    let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=max_nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    async fn closed_port() -> SocketAddr {
        let (l, addr) = listener().await;
        drop(l);
        addr
    }

    fn spec(addr: SocketAddr, interval_ms: u64, jitter_ms: u64) -> CheckSpec {
        CheckSpec {
            prober: Prober::tcp(addr),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(1),
            jitter: Duration::from_millis(jitter_ms),
        }
    }

    /// Drops the receiver and checks the checker task ends within 2 s.
    async fn stop_after_drop<I, T>(
        rx: mpsc::Receiver<T>,
        handle: tokio::task::JoinHandle<I>,
        why: &str,
    ) {
        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), handle)
            .await
            .expect(why)
            .unwrap();
    }

    #[tokio::test]
    async fn checker_reports_repeatedly_at_interval() {
        let (_l, addr) = listener().await;
        let (tx, mut rx) = mpsc::channel(16);
        let start = std::time::Instant::now();
        let handle = spawn_checker("cp-1", spec(addr, 50, 0), tx);
        let mut times = Vec::new();
        for _ in 0..5 {
            let (id, out) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("checker too slow")
                .expect("checker ended");
            assert_eq!(id, "cp-1");
            assert!(out.success, "{out:?}");
            times.push(start.elapsed());
        }
        // The first check runs at once.
        assert!(times[0] < Duration::from_millis(45), "{times:?}");
        // Then about every 50 ms, start-to-start (generous upper bound for
        // loaded CI machines; the lower bound is what "no overlap" promises).
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= Duration::from_millis(30), "{times:?}");
        }
        let total = times[4] - times[0];
        assert!(total >= Duration::from_millis(180), "{times:?}");
        assert!(total < Duration::from_secs(3), "{times:?}");

        stop_after_drop(
            rx,
            handle,
            "checker did not stop after the receiver was dropped",
        )
        .await;
    }

    #[tokio::test]
    async fn checker_reports_failures_too() {
        let addr = closed_port().await;
        let (tx, mut rx) = mpsc::channel(4);
        let handle = spawn_checker(7u32, spec(addr, 20, 0), tx);
        for _ in 0..2 {
            let (id, out) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(id, 7);
            assert!(!out.success);
            assert_eq!(out.reason, "refused");
        }
        stop_after_drop(
            rx,
            handle,
            "checker did not stop after the receiver was dropped",
        )
        .await;
    }

    #[tokio::test]
    async fn checker_with_jitter_stays_within_bounds() {
        let (_l, addr) = listener().await;
        let (tx, mut rx) = mpsc::channel(16);
        let start = std::time::Instant::now();
        let handle = spawn_checker((), spec(addr, 40, 30), tx);
        for _ in 0..4 {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
        }
        // Four checks: three intervals plus at most one jitter of delay at the
        // end (jitter shifts checks within their period, it does not add up).
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(120), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        stop_after_drop(
            rx,
            handle,
            "checker did not stop after the receiver was dropped",
        )
        .await;
    }

    #[tokio::test]
    async fn checker_stops_promptly_while_waiting() {
        let (_l, addr) = listener().await;
        let (tx, mut rx) = mpsc::channel(1);
        // A long interval: after the first check the task sleeps ~an hour.
        let handle = spawn_checker(1u8, spec(addr, 3_600_000, 0), tx);
        let (_, out) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(out.success);
        stop_after_drop(rx, handle, "checker kept waiting for its next tick").await;
    }

    #[tokio::test]
    async fn a_slow_target_neither_delays_others_nor_piles_up() {
        // Accepts TCP (the kernel completes the handshake) and never answers:
        // every TLS check of it runs into its 600 ms timeout.
        let (_hang, hang_addr) = listener().await;
        let (_fast, fast_addr) = listener().await;
        let slow = CheckSpec {
            prober: super::super::Probers::new(Default::default()).prober(
                hang_addr,
                &crate::config::Check::Tls(crate::config::TlsParams::default()),
            ),
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(600),
            jitter: Duration::ZERO,
        };
        let (tx, mut rx) = mpsc::channel(64);
        let start = std::time::Instant::now();
        let h1 = spawn_checker("slow", slow, tx.clone());
        let h2 = spawn_checker("fast", spec(fast_addr, 50, 0), tx);
        let mut fast_before_slow = 0;
        let mut slow_at = Vec::new();
        while slow_at.len() < 2 {
            let (id, out) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("no report within 5 s")
                .unwrap();
            if id == "slow" {
                assert_eq!(out.reason, "timeout");
                slow_at.push(start.elapsed());
            } else if slow_at.is_empty() {
                assert!(out.success, "{out:?}");
                fast_before_slow += 1;
            }
        }
        // The fast target kept its 50 ms schedule while the slow check ran.
        assert!(fast_before_slow >= 8, "only {fast_before_slow} fast checks");
        // One slow check at a time: the second starts after the first ended.
        assert!(slow_at[0] >= Duration::from_millis(600), "{slow_at:?}");
        assert!(
            slow_at[1] - slow_at[0] >= Duration::from_millis(600),
            "{slow_at:?}"
        );
        drop(rx);
        for h in [h1, h2] {
            tokio::time::timeout(Duration::from_secs(2), h)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[test]
    fn random_delay_in_range() {
        assert_eq!(random_delay(Duration::ZERO), Duration::ZERO);
        let max = Duration::from_millis(10);
        for _ in 0..1000 {
            assert!(random_delay(max) <= max);
        }
        // Huge maxima do not overflow.
        let _ = random_delay(Duration::MAX);
    }
}
