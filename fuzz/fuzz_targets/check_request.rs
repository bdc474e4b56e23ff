#![no_main]
// See fuzz/src/targets/check_request.rs for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wstunnel_fuzz::targets::check_request::run(data));
