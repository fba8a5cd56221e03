//! TCP connect health check and the periodic checker task around it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Result of one health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Whether the check passed.
    pub success: bool,
    /// `"ok"`, `"refused"`, `"timeout"`, `"unreachable"`, or the I/O error's
    /// message for anything else.
    pub reason: String,
    /// How long the check took.
    pub duration: Duration,
}

/// Shortest interval [`spawn_checker`] uses; smaller ones (including zero)
/// are raised to it.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Connects to `addr` and succeeds if the TCP handshake completes within
/// `timeout`; the socket is closed right away (a normal FIN close, no data
/// sent). Never takes longer than `timeout` (plus scheduling slack).
pub async fn tcp_check(addr: SocketAddr, timeout: Duration) -> CheckOutcome {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
    let duration = start.elapsed();
    let (success, reason) = match result {
        Ok(Ok(stream)) => {
            drop(stream);
            (true, "ok".to_owned())
        }
        Ok(Err(e)) => (false, error_reason(&e)),
        Err(_elapsed) => (false, "timeout".to_owned()),
    };
    CheckOutcome {
        success,
        reason,
        duration,
    }
}

/// Short, stable reason for a failed connect.
fn error_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".to_owned(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            "unreachable".to_owned()
        }
        io::ErrorKind::TimedOut => "timeout".to_owned(),
        _ => e.to_string(),
    }
}

/// What and how often [`spawn_checker`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSpec {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// Time between the starts of two checks (raised to 1 ms if smaller).
    pub interval: Duration,
    /// Limit on one check; see [`tcp_check`].
    pub timeout: Duration,
    /// Upper bound of a uniformly random extra delay before every check but
    /// the first; zero for none.
    pub jitter: Duration,
}

/// Spawns a tokio task that runs [`tcp_check`] against `spec.addr` every
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
                outcome = tcp_check(spec.addr, spec.timeout) => outcome,
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

    #[tokio::test]
    async fn succeeds_against_listener() {
        let (_l, addr) = listener().await;
        let out = tcp_check(addr, Duration::from_secs(2)).await;
        assert!(out.success, "{out:?}");
        assert_eq!(out.reason, "ok");
        assert!(out.duration < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn refused_against_closed_port() {
        let addr = closed_port().await;
        let out = tcp_check(addr, Duration::from_secs(2)).await;
        assert!(!out.success, "{out:?}");
        assert_eq!(out.reason, "refused");
        assert!(out.duration < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn tiny_timeout_is_bounded() {
        let (_l, addr) = listener().await;
        for timeout in [Duration::ZERO, Duration::from_nanos(1)] {
            let start = std::time::Instant::now();
            let out = tcp_check(addr, timeout).await;
            assert!(
                out.success || out.reason == "timeout",
                "unexpected outcome {out:?}"
            );
            assert_eq!(out.success, out.reason == "ok");
            assert!(start.elapsed() < Duration::from_millis(500), "{out:?}");
        }
    }

    #[tokio::test]
    async fn error_reasons() {
        let r = |k| error_reason(&io::Error::from(k));
        assert_eq!(r(io::ErrorKind::ConnectionRefused), "refused");
        assert_eq!(r(io::ErrorKind::HostUnreachable), "unreachable");
        assert_eq!(r(io::ErrorKind::NetworkUnreachable), "unreachable");
        assert_eq!(r(io::ErrorKind::TimedOut), "timeout");
        assert_eq!(
            r(io::ErrorKind::AddrNotAvailable),
            io::Error::from(io::ErrorKind::AddrNotAvailable).to_string()
        );
    }

    fn spec(addr: SocketAddr, interval_ms: u64, jitter_ms: u64) -> CheckSpec {
        CheckSpec {
            addr,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(1),
            jitter: Duration::from_millis(jitter_ms),
        }
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

        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), handle)
            .await
            .expect("checker did not stop after the receiver was dropped")
            .unwrap();
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
        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), handle)
            .await
            .unwrap()
            .unwrap();
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
        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), handle)
            .await
            .unwrap()
            .unwrap();
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
        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), handle)
            .await
            .expect("checker kept waiting for its next tick")
            .unwrap();
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
