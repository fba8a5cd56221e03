//! Health checks: the per-backend up/down state machine ([`HealthState`]),
//! the probes by kind (TCP connect, TLS handshake, HTTPS `GET`; see
//! [`Prober`]), the periodic checker task ([`spawn_checker`]) and the
//! transition history kept for `lb status` ([`History`]).

mod checker;
pub mod files;
mod history;
mod https;
pub mod pem;
mod probe;
mod reason;
mod state;
pub mod tls;

#[cfg(test)]
pub(crate) mod test_pki;

pub use checker::{spawn_checker, CheckSpec};
pub use history::{History, Transition, HISTORY_LEN};
pub use probe::{CheckOutcome, Prober, Probers};
pub use reason::Failure;
pub use state::{Health, HealthState};
