#![no_main]
//! `cargo fuzz run checkpoint`: see `fmnist_tests::fuzz::checkpoint`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fmnist_tests::fuzz::checkpoint(data));
