#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| estuary_fuzz::sip_message(data));
