#![no_main]
//! `cargo fuzz run image`: see `fmnist_tests::fuzz::image`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fmnist_tests::fuzz::image(data));
