//! The three DSP instructions the kernels use. On Arm with the DSP extension they are
//! inline assembly; elsewhere a bit-exact emulation of the architecture's pseudocode.

#[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
mod imp {
    use core::arch::asm;

    /// `SMLAD acc, a, b`: `acc + a.lo·b.lo + a.hi·b.hi` (signed 16-bit halves, wrapping).
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let r: i32;
        // SAFETY: a pure register-only instruction of ARMv7E-M.
        unsafe {
            asm!("smlad {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a,
                 b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// `SMMLAR acc, a, b`: bits 63..32 of `acc·2^32 + a·b + 2^31`.
    #[inline(always)]
    pub fn smmlar(a: i32, b: i32, acc: i32) -> i32 {
        let r: i32;
        // SAFETY: a pure register-only instruction of ARMv7E-M.
        unsafe {
            asm!("smmlar {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a,
                 b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// `SXTB16 x`: bytes 0 and 2 sign-extended into the low and high halfwords.
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        let r: u32;
        // SAFETY: a pure register-only instruction of ARMv7E-M.
        unsafe {
            asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// `SXTB16 x, ROR #8`: bytes 1 and 3 sign-extended into the two halfwords.
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        let r: u32;
        // SAFETY: a pure register-only instruction of ARMv7E-M.
        unsafe {
            asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        r
    }
}

/// The emulation, always compiled so the host can test it against the hardware
/// definitions and run the device's algorithm.
pub mod emulated {
    /// `SMLAD`: `acc + a.lo·b.lo + a.hi·b.hi`, the sum truncated to 32 bits (the
    /// hardware sets the Q flag on overflow, which the overflow proof rules out).
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let lo = (a as i16 as i32) * (b as i16 as i32);
        let hi = ((a >> 16) as i16 as i32) * ((b >> 16) as i16 as i32);
        acc.wrapping_add(lo).wrapping_add(hi)
    }

    /// `SMMLAR`: bits 63..32 of `acc·2^32 + a·b + 2^31`, the sum taken modulo 2^64 as
    /// in the architecture's pseudocode (bits 63..32 of the exact sum).
    #[inline(always)]
    pub fn smmlar(a: i32, b: i32, acc: i32) -> i32 {
        (((acc as i64) << 32)
            .wrapping_add(a as i64 * b as i64)
            .wrapping_add(1 << 31)
            >> 32) as i32
    }

    /// `SXTB16`: bytes 0 and 2 sign-extended to halfwords.
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        let lo = x as u8 as i8 as i16 as u16 as u32;
        let hi = (x >> 16) as u8 as i8 as i16 as u16 as u32;
        lo | hi << 16
    }

    /// `SXTB16 ROR #8`: bytes 1 and 3 sign-extended to halfwords.
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        sxtb16(x.rotate_right(8))
    }
}

#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp))))]
pub use emulated::{smlad, smmlar, sxtb16, sxtb16_ror8};
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
pub use imp::{smlad, smmlar, sxtb16, sxtb16_ror8};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_instructions_hand_checked() {
        // SXTB16: bytes [0x80, 0x7f, 0xff, 0x01] (LE word 0x01ff7f80) -> (-128, -1), (127, 1).
        let w = 0x01ff_7f80u32;
        assert_eq!(emulated::sxtb16(w), 0xffff_ff80);
        assert_eq!(emulated::sxtb16_ror8(w), 0x0001_007f);
        // SMLAD: 10 + (-128)(3) + (-1)(-7) = 10 - 384 + 7 = -367.
        assert_eq!(emulated::smlad(0xffff_ff80, 0xfff9_0003, 10), -367);
        // Extremes: (-32768)(-32768)·2 + 0 wraps to i32::MIN (hardware: Q flag, same bits).
        assert_eq!(emulated::smlad(0x8000_8000, 0x8000_8000, 0), i32::MIN);
        // SMMLAR: 2^30·4 + 2^31 = 2^32 + 2^31 → 1; −2^31 + 2^31 → 0 (ties round up);
        // 3·2^32 − 2^31 + 2^31 → 3; 2^62 + 2^31 → 2^30.
        assert_eq!(emulated::smmlar(1 << 30, 4, 0), 1);
        assert_eq!(emulated::smmlar(-(1 << 30), 2, 0), 0);
        assert_eq!(emulated::smmlar(-(1 << 16), 1 << 15, 3), 3);
        assert_eq!(emulated::smmlar(i32::MIN, i32::MIN, 0), 1 << 30);
        // Bits 63..32 of (2^31 − 1)·2^32 + 2^62 + 2^31, past 2^63: 0xbfff_ffff.
        assert_eq!(
            emulated::smmlar(i32::MIN, i32::MIN, i32::MAX),
            0xbfff_ffffu32 as i32
        );
    }
}
