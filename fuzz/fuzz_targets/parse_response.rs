#![no_main]
// See fuzz/src/targets/parse_response.rs for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wstunnel_fuzz::targets::parse_response::run(data));
