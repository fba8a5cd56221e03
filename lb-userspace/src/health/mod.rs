//! Health checks: the per-backend up/down state machine ([`HealthState`]) and
//! the TCP connect check with its periodic checker task ([`tcp_check`],
//! [`spawn_checker`]).

mod state;
mod tcp;

pub use state::{Health, HealthState};
pub use tcp::{spawn_checker, tcp_check, CheckOutcome, CheckSpec};
