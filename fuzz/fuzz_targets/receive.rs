#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::radius::fuzzing::receive(data));
