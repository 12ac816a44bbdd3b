//! Sets `cfg(fmnist_dsp)` for Arm targets with the DSP extension, whose `target_feature =
//! "dsp"` stable Rust does not expose to `cfg`: ARMv7E-M (Cortex-M4/M7) always has it; on
//! ARMv8-M Mainline (Cortex-M33) it is optional, so it counts when the build enables it
//! (`-C target-cpu=cortex-m33` or `-C target-feature=+dsp`, as `firmware/.cargo/config.toml`
//! does). ARMv6-M (M0/M0+) and ARMv7-M (M3) have no DSP extension: the portable kernels.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(fmnist_dsp)");
    println!("cargo::rerun-if-env-changed=TARGET");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let v8m_dsp = target.starts_with("thumbv8m.main-")
        && (flags.contains("+dsp") || flags.contains("target-cpu=cortex-m33"));
    if target.starts_with("thumbv7em-") || v8m_dsp {
        println!("cargo::rustc-cfg=fmnist_dsp");
    }
}
