#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| estuary_fuzz::b2bua(data));
