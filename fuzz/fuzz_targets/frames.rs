#![no_main]
// See fuzz/src/targets/frames.rs for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wstunnel_fuzz::targets::frames::run(data));
