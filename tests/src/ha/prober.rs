//! New connections through the VIP at a fixed rate, each in its own thread,
//! and the outage they show around an event (a takeover).

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::client::connect_and_name;
use crate::lab::{enter_netns, netns_path};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection attempt of a [`Prober`].
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it started.
    pub at: Instant,
    /// The node that greeted, or why it failed.
    pub result: Result<String, String>,
}

/// Opens a connection through `addr` every `period` from a namespace, each
/// in its own thread (so a lost SYN does not delay the next attempt), each
/// bounded by `timeout`. Stops on [`Prober::finish`] or after `max`.
pub struct Prober {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Prober {
    /// Starts probing.
    pub fn start(
        ns: &str,
        addr: SocketAddrV4,
        period: Duration,
        timeout: Duration,
        max: Duration,
    ) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let path = netns_path(ns);
        let (stop2, attempts2) = (Arc::clone(&stop), Arc::clone(&attempts));
        let handle = thread::spawn(move || -> Result<()> {
            // Threads spawned from here inherit the namespace.
            enter_netns(&path)?;
            let start = Instant::now();
            let mut workers = Vec::new();
            while !stop2.load(Ordering::SeqCst) && start.elapsed() < max {
                let at = Instant::now();
                let attempts = Arc::clone(&attempts2);
                workers.push(thread::spawn(move || {
                    let result = connect_and_name(addr, timeout).map_err(|e| format!("{e:#}"));
                    lock(&attempts).push(Attempt { at, result });
                }));
                workers.retain(|w| !w.is_finished());
                if let Some(rest) = period.checked_sub(at.elapsed()) {
                    thread::sleep(rest);
                }
            }
            for w in workers {
                let _ = w.join();
            }
            Ok(())
        });
        Prober {
            stop,
            attempts,
            handle: Some(handle),
        }
    }

    /// The attempts so far, in start order.
    pub fn attempts(&self) -> Vec<Attempt> {
        let mut v = lock(&self.attempts).clone();
        v.sort_by_key(|a| a.at);
        v
    }

    /// Stops and returns every attempt, in start order.
    pub fn finish(mut self) -> Result<Vec<Attempt>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().map_err(|_| anyhow!("prober panicked"))??;
        }
        Ok(self.attempts())
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// New-connection outage in a window of a [`Prober`]'s attempts.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    /// Attempts started in the window.
    pub attempts: usize,
    /// Of which failed.
    pub failed: usize,
    /// From the window's start to the first failed attempt's start.
    pub first_failure: Option<Duration>,
    /// From the first failed attempt's start to the end of the last one's
    /// slot (last start + period): how long new connections were out.
    pub outage: Duration,
    /// Distinct nodes that answered in the window.
    pub nodes: BTreeMap<String, usize>,
    /// The first few errors.
    pub errors: Vec<String>,
}

impl Outage {
    /// Measures attempts started in `[from, to)`.
    pub fn measure(attempts: &[Attempt], from: Instant, to: Instant, period: Duration) -> Outage {
        let mut o = Outage::default();
        let mut first = None;
        let mut last = None;
        for a in attempts.iter().filter(|a| a.at >= from && a.at < to) {
            o.attempts += 1;
            match &a.result {
                Ok(n) => *o.nodes.entry(n.clone()).or_default() += 1,
                Err(e) => {
                    o.failed += 1;
                    first.get_or_insert(a.at);
                    last = Some(a.at);
                    if o.errors.len() < 5 {
                        o.errors.push(e.clone());
                    }
                }
            }
        }
        if let (Some(f), Some(l)) = (first, last) {
            o.first_failure = Some(f.duration_since(from));
            o.outage = l.duration_since(f) + period;
        }
        o
    }
}
