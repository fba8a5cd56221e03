//! Connection slots of the HTTP API that idle clients cannot hold against
//! the callers that matter (keepalived's `lb healthz`, Prometheus).
//!
//! The API serves at most [`Slots::new`]'s `max` connections at once, so a
//! flood of clients cannot take the daemon's descriptors. Before, the
//! accept loop then stopped accepting: 200 idle connections from any local
//! user queued `lb healthz` behind them in the kernel's backlog until its
//! timeout (0 of 11 succeeded), which pushes a healthy gateway out of VRRP.
//! Now the loop always accepts; when every slot is taken, the connection
//! open longest with no request in flight (idle, or still trickling its
//! headers) is closed to make room. A real caller sends its request at once
//! and is served in milliseconds, so it is never the one closed; only when
//! every slot is busy serving a request is the new connection refused.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;

/// The open API connections, oldest first.
#[derive(Clone)]
pub struct Slots {
    max: usize,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    open: BTreeMap<u64, Open>,
}

/// One open connection: its requests in flight, and how to close it.
struct Open {
    in_flight: Arc<AtomicUsize>,
    abort: Option<AbortHandle>,
}

/// A connection's place among the open ones; dropping it frees the place.
pub struct Slot {
    id: u64,
    in_flight: Arc<AtomicUsize>,
    inner: Arc<Mutex<Inner>>,
}

/// A request in flight on a connection (see [`Slot::request`]).
pub struct InFlight(Arc<AtomicUsize>);

impl Slots {
    /// At most `max` connections open at once.
    pub fn new(max: usize) -> Slots {
        Slots {
            max,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection, closing the oldest one with no request
    /// in flight when all are taken; `None` when every open connection is
    /// serving a request.
    pub fn admit(&self) -> Option<Slot> {
        let mut evicted = None;
        let slot = {
            let mut inner = self.lock();
            if inner.open.len() >= self.max {
                let idle = inner
                    .open
                    .iter()
                    .find(|(_, o)| o.in_flight.load(Ordering::SeqCst) == 0)
                    .map(|(id, _)| *id)?;
                evicted = inner.open.remove(&idle).and_then(|o| o.abort);
            }
            let id = inner.next;
            inner.next += 1;
            let in_flight = Arc::new(AtomicUsize::new(0));
            inner.open.insert(
                id,
                Open {
                    in_flight: in_flight.clone(),
                    abort: None,
                },
            );
            Slot {
                id,
                in_flight,
                inner: self.inner.clone(),
            }
        };
        // Outside the lock: aborting may drop the task (and its slot) here.
        if let Some(abort) = evicted {
            abort.abort();
        }
        Some(slot)
    }

    /// Records how to close connection `id`'s task (the task owns its
    /// [`Slot`]); a connection evicted before this is closed at once.
    pub fn set_abort(&self, id: u64, abort: AbortHandle) {
        let evicted = match self.lock().open.get_mut(&id) {
            Some(open) => {
                open.abort = Some(abort);
                None
            }
            None => Some(abort),
        };
        // Outside the lock, as in `admit`.
        if let Some(abort) = evicted {
            abort.abort();
        }
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open.len()
    }
}

impl Slot {
    /// This connection's key in the table (see [`Slots::set_abort`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The counter of this connection's requests in flight, for the
    /// connection's service to mark requests with ([`InFlight::enter`]).
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }
}

impl InFlight {
    /// Marks a request in flight on the connection counted by `counter`.
    pub fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_oldest_idle_connection() {
        let slots = Slots::new(3);
        let a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let c = slots.admit().unwrap();
        let busy = InFlight::enter(&a.counter());
        // a is busy: b, the oldest idle one, makes room.
        let d = slots.admit().unwrap();
        assert_eq!(slots.open(), 3);
        let ids: Vec<u64> = slots.lock().open.keys().copied().collect();
        assert_eq!(ids, vec![a.id, c.id, d.id]);
        drop(b); // the evicted slot's own drop changes nothing more
        assert_eq!(slots.open(), 3);
        drop(busy);
        let _e = slots.admit().unwrap();
        let ids: Vec<u64> = slots.lock().open.keys().copied().collect();
        assert_eq!(ids, vec![c.id, d.id, 4], "a, idle again, was the oldest");
    }

    #[test]
    fn every_connection_busy_refuses_the_new_one() {
        let slots = Slots::new(2);
        let a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let (_x, _y) = (InFlight::enter(&a.counter()), InFlight::enter(&b.counter()));
        assert!(slots.admit().is_none());
        drop(a);
        assert!(
            slots.admit().is_some(),
            "a closed connection frees its slot"
        );
    }

    #[tokio::test]
    async fn eviction_closes_the_connections_task() {
        let slots = Slots::new(1);
        let a = slots.admit().unwrap();
        let task = tokio::spawn(async move {
            let _a = a;
            std::future::pending::<()>().await
        });
        slots.set_abort(0, task.abort_handle());
        let _b = slots.admit().unwrap();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(slots.open(), 1);
    }
}
