//! Writes the memory layout for the selected profile to OUT_DIR/memory.x and passes the linker
//! scripts (cortex-m-rt's link.x, defmt.x) so the build works from any working directory.

use std::{env, fs, path::PathBuf};

/// The QEMU machines with a memory layout (`memory/qemu-MACHINE.x`).
const MACHINES: [&str; 4] = ["microbit", "mps2-an385", "mps2-an386", "mps2-an505"];

fn main() {
    println!(
        "cargo::rustc-check-cfg=cfg(machine, values(\"{}\"))",
        MACHINES.join("\", \"")
    );
    let qemu = env::var_os("CARGO_FEATURE_QEMU").is_some();
    let board = env::var_os("CARGO_FEATURE_BOARD").is_some();
    let layout = match (qemu, board) {
        (true, false) => {
            let machine = qemu_machine();
            println!("cargo:rustc-cfg=machine=\"{machine}\"");
            format!("memory/qemu-{machine}.x")
        }
        (false, true) => "memory/stm32f407.x".to_string(),
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
    let mut script = fs::read_to_string(&layout).unwrap();
    script.push_str(&fs::read_to_string("memory/model-section.x").unwrap());
    fs::write(out.join("memory.x"), script).unwrap();
    // No interrupt is used: the vector table holds the 16 system exceptions only (see
    // `__INTERRUPTS` in main.rs), and device.x names no interrupt handlers.
    fs::write(out.join("device.x"), "").unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FMNIST_MODEL");
    println!("cargo:rerun-if-env-changed=FMNIST_MACHINE");
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}

/// The QEMU machine of a `qemu` build: the one whose core the target is built for
/// (`thumbv6m-none-eabi` → `microbit`, Cortex-M0; `thumbv7m-none-eabi` → `mps2-an385`, M3;
/// `thumbv7em-none-eabihf` → `mps2-an386`, M4F, whose ELF also runs on `mps2-an500`, M7;
/// `thumbv8m.main-none-eabihf` → `mps2-an505`, M33), or `FMNIST_MACHINE` when set (e.g. the
/// Cortex-M0 build on `mps2-an385`, whose 4 MiB of code memory holds the f32 model file that
/// the micro:bit's 256 KiB of flash cannot).
fn qemu_machine() -> String {
    if let Ok(m) = env::var("FMNIST_MACHINE") {
        let m = if m == "mps2-an500" {
            "mps2-an386".to_string()
        } else {
            m
        };
        assert!(
            MACHINES.contains(&m.as_str()),
            "FMNIST_MACHINE={m}: not one of {MACHINES:?} (or mps2-an500)"
        );
        return m;
    }
    let target = env::var("TARGET").unwrap();
    match target.split('-').next().unwrap() {
        "thumbv6m" => "microbit",
        "thumbv7m" => "mps2-an385",
        "thumbv7em" => "mps2-an386",
        "thumbv8m.main" => "mps2-an505",
        _ => panic!("no QEMU machine for target {target}: see README.md, `Every core`"),
    }
    .to_string()
}
