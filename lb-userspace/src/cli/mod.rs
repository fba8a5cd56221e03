//! Command-line helpers that are more than a request to the daemon: kept in
//! the library so that they are unit-tested like the rest.

pub mod assets;
pub mod healthz;
