#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::radius::fuzzing::packet_round_trip(data));
