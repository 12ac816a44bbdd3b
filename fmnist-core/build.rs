//! Sets `cfg(fmnist_dsp)` for Arm targets that always have the DSP extension (ARMv7E-M:
//! Cortex-M4/M7), whose `target_feature = "dsp"` stable Rust does not expose to `cfg`.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(fmnist_dsp)");
    println!("cargo::rerun-if-env-changed=TARGET");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em-") {
        println!("cargo::rustc-cfg=fmnist_dsp");
    }
}
