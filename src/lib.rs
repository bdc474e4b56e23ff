//! Rust core of mod_proxy_wstunnel.
//!
//! No httpd header is ever seen here: the C shim (c_shim/) speaks to httpd
//! and APR, and calls this core through the contract in
//! c_shim/include/wstunnel_core.h. The core is `no_std` so that the module
//! binds no glibc symbol newer than the 2.12 of CentOS 6, and it never
//! allocates: every buffer belongs to the caller.
//!
//! All `unsafe` code lives in [`ffi`].
#![cfg_attr(not(test), no_std)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod ffi;
pub mod frames;
pub mod handshake;
pub mod policy;
pub mod tunnel;
