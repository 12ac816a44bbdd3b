//! The floating-point environment that makes device f32 bit-identical to the host.
//!
//! Host (x86-64 SSE2, AArch64) and the Cortex-M4F FPU (FPv4-SP) both implement IEEE-754 binary32
//! add, multiply, divide and compare, correctly rounded. They agree bit for bit when:
//! * the same operations run in the same order: fmnist-core fixes the summation order of every
//!   layer, and Rust never reassociates float arithmetic or contracts `a * b + c` into a fused
//!   multiply-add (the M4F has `vfma.f32`, but LLVM only emits it for `f32::mul_add` or with
//!   fast-math flags, which Rust does not set);
//! * the FPU is in IEEE mode: FPSCR.FZ = 0 (subnormals are kept — the M4F handles them in
//!   hardware, without support code), RMode = round to nearest even, and DN = 0 (NaN
//!   propagation; irrelevant for finite models but kept default). These are the reset values
//!   (FPDSCR = 0); [`ieee_mode`] makes sure of them before any inference.

/// Cores without an FPU (Cortex-M0, M3: `thumbv6m-none-eabi`, `thumbv7m-none-eabi`) compute f32
/// with the compiler's soft-float routines (`compiler-builtins`: `__aeabi_fadd`, `__aeabi_fmul`,
/// …), which are IEEE-754 correctly rounded, round to nearest even, subnormals kept: the same
/// bits with no mode to set. Returns 0.
#[cfg(not(target_abi = "eabihf"))]
pub fn ieee_mode() -> u32 {
    0
}

/// Puts the FPU in the host's IEEE mode (no flush-to-zero, no default NaN, round to nearest)
/// and returns the FPSCR value found at boot.
#[cfg(target_abi = "eabihf")]
pub fn ieee_mode() -> u32 {
    use cortex_m::register::fpscr::{self, RMode};
    let found = fpscr::read();
    let mut f = found;
    f.set_fz(false);
    f.set_dn(false);
    f.set_ahp(false);
    f.set_rmode(RMode::Nearest);
    // SAFETY: only control bits known to the host's IEEE mode are written.
    unsafe { fpscr::write(f) };
    found.bits()
}
