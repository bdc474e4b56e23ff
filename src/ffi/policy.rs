//! Export of the Origin policy (`ProxyWebsocketAllowOrigin`).

use core::slice;

use super::contract::wst_str;
use super::handshake::str_arg;
use crate::policy::{check_origin, AllowedOrigin, OriginVerdict};

/// See `wst_origin_allowed` in the contract header. Returns 1 (allowed) or
/// 0 (refused); an invalid argument refuses.
///
/// # Safety
/// Every `wst_str` must be a valid (ptr, len) pair; a non-NULL `allowed`
/// must point to `n_allowed` initialised `wst_str`s, all valid for the call.
#[no_mangle]
pub unsafe extern "C" fn wst_origin_allowed(
    origin: wst_str,
    has_origin: core::ffi::c_int,
    host: wst_str,
    tls: core::ffi::c_int,
    allowed: *const wst_str,
    n_allowed: usize,
) -> core::ffi::c_int {
    // SAFETY: the caller guarantees the pairs are valid for the call.
    let (Some(origin), Some(host)) = (unsafe { str_arg(origin) }, unsafe { str_arg(host) }) else {
        return 0;
    };
    let rules: &[wst_str] = if n_allowed == 0 {
        &[]
    } else if allowed.is_null() || !allowed.is_aligned() || n_allowed > isize::MAX as usize / 16 {
        return 0;
    } else {
        // SAFETY: non-NULL, aligned, and the caller guarantees n_allowed
        // initialised elements valid for the call.
        unsafe { slice::from_raw_parts(allowed, n_allowed) }
    };
    let mut parsed = rules.iter().map(|r| {
        // SAFETY: every element is a valid pair (caller's guarantee).
        unsafe { str_arg(*r) }
    });
    if parsed.clone().any(|r| r.is_none()) {
        return 0;
    }
    let verdict = check_origin(
        (has_origin != 0).then_some(origin),
        host,
        tls != 0,
        parsed.by_ref().flatten().map(AllowedOrigin::parse),
    );
    core::ffi::c_int::from(verdict == OriginVerdict::Allowed)
}

exports_match_contract! {
    wst_origin_allowed: unsafe extern "C" fn(
        wst_str,
        core::ffi::c_int,
        wst_str,
        core::ffi::c_int,
        *const wst_str,
        usize,
    ) -> core::ffi::c_int;
}
