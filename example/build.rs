//! The linker script: cortex-m-rt's `link.x` over a `memory.x` for the QEMU machine of the
//! target (the firmware's layouts, `../firmware/memory/`: FLASH for the program, MODEL for the
//! model file, RAM). Your own firmware has one `memory.x` for its chip, with a MODEL region and
//! the `_model_start` symbol (`../firmware/memory/model-section.x`).

use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap();
    let machine = match target.split('-').next().unwrap() {
        "thumbv6m" => "microbit", // Cortex-M0 (its layout also lies inside the an385's)
        "thumbv7m" => "mps2-an385", // Cortex-M3
        "thumbv7em" => "mps2-an386", // Cortex-M4F; the same ELF runs on mps2-an500 (M7)
        "thumbv8m.main" => "mps2-an505", // Cortex-M33
        _ => panic!("no QEMU machine for target {target}"),
    };
    let layouts = PathBuf::from("../firmware/memory");
    let mut script = fs::read_to_string(layouts.join(format!("qemu-{machine}.x"))).unwrap();
    script.push_str(&fs::read_to_string(layouts.join("model-section.x")).unwrap());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::write(out.join("memory.x"), script).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../firmware/memory");
}
