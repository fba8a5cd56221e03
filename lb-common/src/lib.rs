//! Types shared by the XDP program (`lb-ebpf`) and the `lb` daemon.
//!
//! Everything here is `no_std`, `#[repr(C)]` with explicit padding, and
//! stores addresses and ports in network byte order exactly as they appear
//! in packets, so the kernel side never converts. Map names, sizes and
//! counter indices are defined once, here.
#![cfg_attr(not(test), no_std)]

pub mod addr;
pub mod checksum;
pub mod counters;
pub mod evidence;
pub mod hash;
pub mod maps;
pub mod snat;
pub mod tcp;

pub use addr::{ip_family, ip_from_words, ip_words};
pub use counters::{Disposition, Reason, NUM_REASONS};
pub use evidence::{RealSeen, MAP_REAL_SEEN};
pub use maps::*;
pub use snat::*;
