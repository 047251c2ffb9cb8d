#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otter_fuzz::manifest_decode(data));
