//! The only module with `unsafe` code: the exports declared in the contract
//! header, the bindgen view of that header, and thin wrappers over the libc
//! calls the tunnel makes. Every `unsafe` block carries a SAFETY comment.

pub mod handshake;
pub mod policy;
pub mod sys;
pub mod tunnel;

#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code, clippy::all, clippy::indexing_slicing)]
pub mod contract {
    include!(concat!(env!("OUT_DIR"), "/contract.rs"));
}

/// A module that panics would take a whole httpd child, and every tunnel in
/// it, down. The core is written not to panic (clippy denies the usual
/// sources); should one slip through, abort rather than unwind across C.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: abort() has no preconditions and never returns.
    unsafe { libc::abort() }
}

/// The precompiled `core` refers to the unwinding personality routine even
/// though this crate aborts on panic; without a definition the module would
/// carry an undefined symbol and httpd's dlopen(RTLD_NOW) would refuse it.
/// It is never called: nothing unwinds.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
