#![no_main]
// See fuzz/src/targets/build_request.rs for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wstunnel_fuzz::targets::build_request::run(data));
