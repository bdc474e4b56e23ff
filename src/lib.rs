//! Rust core of mod_proxy_wstunnel.
//!
//! No httpd header is ever seen here: the C shim (c_shim/) speaks to httpd
//! and APR, and calls this core through the contract in
//! c_shim/include/wstunnel_core.h. The core is `no_std` so that the module
//! binds no glibc symbol newer than the 2.12 of CentOS 6. Only the reactor
//! ([`reactor`]: the tunnels that left their httpd worker) allocates, with
//! glibc's malloc ([`sys::Malloc`]); everywhere else every buffer belongs to
//! the caller.
//!
//! Dependencies run one way, down: ffi → {handshake, policy, tunnel →
//! frames} → sys.
//!
//! - [`ffi`]: the exports the contract header declares, thin wrappers over
//!   the modules below, and the header's bindgen view ([`ffi::contract`]);
//! - [`handshake`], [`policy`]: safe parsers and checks, no I/O;
//! - [`tunnel`]: the relay, following WebSocket [`frames`];
//! - [`sys`]: the OS, the few libc calls and [`sys::Socket`], used by
//!   `tunnel` and `ffi`; it uses nothing of the crate.
//!
//! `unsafe` code is denied but in [`ffi`] and [`sys`], and every `unsafe`
//! block there carries a SAFETY comment (clippy).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

extern crate alloc;

#[allow(unsafe_code)]
pub mod ffi;
pub mod frames;
pub mod handshake;
pub mod policy;
pub mod reactor;
#[allow(unsafe_code)]
pub mod sys;
pub mod tunnel;
