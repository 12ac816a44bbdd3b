#![no_main]
//! `cargo fuzz run model_file`: see `fmnist_tests::fuzz::model_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fmnist_tests::fuzz::model_file(data));
