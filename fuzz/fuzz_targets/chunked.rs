#![no_main]
// See fuzz/src/targets/chunked.rs for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wstunnel_fuzz::targets::chunked::run(data));
