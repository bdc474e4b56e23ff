#![no_main]
// See fuzz/src/targets/handshake_ffi.rs for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wstunnel_fuzz::targets::handshake_ffi::run(data));
