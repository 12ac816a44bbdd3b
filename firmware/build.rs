//! Writes the memory layout for the selected profile to OUT_DIR/memory.x and passes the linker
//! scripts (cortex-m-rt's link.x, defmt.x) so the build works from any working directory.

use std::{env, fs, path::PathBuf};

fn main() {
    let qemu = env::var_os("CARGO_FEATURE_QEMU").is_some();
    let board = env::var_os("CARGO_FEATURE_BOARD").is_some();
    let layout = match (qemu, board) {
        (true, false) => "memory/qemu-mps2-an386.x",
        (false, true) => "memory/stm32f407.x",
        _ => panic!(
            "select exactly one profile: the default feature `qemu`, or \
             `--no-default-features --features board`"
        ),
    };
    if board && env::var_os("CARGO_FEATURE_WIDE").is_some() {
        panic!(
            "feature `wide` is for the QEMU profile only: the wide CNN's int8 model file is \
             1.6 MB and the STM32F407 has 1 MiB of flash in all (its model region, sectors \
             5-11, is 896 KiB; see memory/stm32f407.x)"
        );
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let mut script = fs::read_to_string(layout).unwrap();
    script.push_str(&fs::read_to_string("memory/model-section.x").unwrap());
    fs::write(out.join("memory.x"), script).unwrap();
    // No interrupt is used: the vector table holds the 16 system exceptions only (see
    // `__INTERRUPTS` in main.rs), and device.x names no interrupt handlers.
    fs::write(out.join("device.x"), "").unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FMNIST_MODEL");
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
