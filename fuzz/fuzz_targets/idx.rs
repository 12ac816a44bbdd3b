#![no_main]
//! `cargo fuzz run idx`: see `fmnist_tests::fuzz::idx`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fmnist_tests::fuzz::idx(data));
