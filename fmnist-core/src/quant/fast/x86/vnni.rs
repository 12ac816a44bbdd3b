//! VNNI: `vpdpbusd`, four u8 × i8 products summed into each i32 lane in one instruction, in
//! its VEX form on 256-bit registers (AVX-VNNI) or its EVEX form on 512-bit registers
//! (AVX-512 VNNI: twice the lanes, 32 registers; on the Xeon measured it issues two a cycle
//! like the 256-bit form, so twice the multiply-adds).
//!
//! Activations are stored as `u = x + 128 ∈ [0, 255]` (the u8 operand), weights as i8; the
//! bias of each channel is packed as `bias − 128·Σw`, so `bias' + Σ w·u = bias + Σ w·x`.
//! `vpdpbusd` (not the saturating `vpdpbusds`) adds in wrapping i32 arithmetic; every partial
//! sum `Σ w·u` is at most `n·255·127` in magnitude (n ≤ 3136: 1.02·10^8 < 2^31), and the final
//! `max + bias'` equals the reference's accumulator, which the overflow proof bounds: the
//! results are the reference kernels' bit for bit.

use core::arch::x86_64::*;

use super::kernels::Path;
use super::nets::{LeNetX86, WideX86};
use crate::image::IMAGE_PIXELS;

macro_rules! u8_path {
    ($(#[$doc:meta])* $name:ident, $v:ty, $dot:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct $name;

        // SAFETY: the methods use AVX2 and the path's `vpdpbusd`; the `Kernel` naming this
        // path is available only when the CPU has both.
        unsafe impl Path for $name {
            type A = u8;
            const G: usize = 4;
            const BIAS_PER_WEIGHT: i32 = -128;
            type V = $v;
            #[inline(always)]
            unsafe fn load_w(p: *const u8) -> $v {
                unsafe { core::ptr::read_unaligned(p.cast::<$v>()) }
            }
            #[inline(always)]
            fn act(x: i8) -> u8 {
                x as u8 ^ 0x80
            }
            #[inline(always)]
            fn to_i8(a: u8) -> i8 {
                (a ^ 0x80) as i8
            }
            #[inline(always)]
            unsafe fn dot(acc: $v, a: $v, w: $v) -> $v {
                unsafe { $dot(acc, a, w) }
            }
            #[inline(always)]
            unsafe fn store8(v: __m128i, dst: *mut u8) {
                unsafe {
                    let b = _mm_xor_si128(_mm_packs_epi16(v, v), _mm_set1_epi8(-128));
                    _mm_storel_epi64(dst.cast(), b)
                }
            }
        }
    };
}

u8_path!(
    /// AVX-VNNI (VEX `vpdpbusd` on 256-bit registers).
    AvxVnni,
    __m256i,
    _mm256_dpbusd_avx_epi32
);
u8_path!(
    /// AVX-512 VNNI (EVEX `vpdpbusd` on 512-bit registers).
    Avx512Vnni,
    __m512i,
    _mm512_dpbusd_epi32
);

/// LeNet-BN on AVX-VNNI.
///
/// # Safety
/// The CPU has AVX2 and AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
pub(crate) unsafe fn lenet_avx_vnni(
    net: &LeNetX86<AvxVnni>,
    image: &[u8; IMAGE_PIXELS],
) -> [i8; 10] {
    unsafe { net.forward(image) }
}

/// The wide CNN on AVX-VNNI.
///
/// # Safety
/// The CPU has AVX2 and AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
pub(crate) unsafe fn wide_avx_vnni(net: &WideX86<AvxVnni>, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
    unsafe { net.forward(image) }
}

/// LeNet-BN on AVX-512 VNNI.
///
/// # Safety
/// The CPU has AVX2, AVX-512 F/BW/VL and AVX-512 VNNI.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn lenet_avx512_vnni(
    net: &LeNetX86<Avx512Vnni>,
    image: &[u8; IMAGE_PIXELS],
) -> [i8; 10] {
    unsafe { net.forward(image) }
}

/// The wide CNN on AVX-512 VNNI.
///
/// # Safety
/// The CPU has AVX2, AVX-512 F/BW/VL and AVX-512 VNNI.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn wide_avx512_vnni(
    net: &WideX86<Avx512Vnni>,
    image: &[u8; IMAGE_PIXELS],
) -> [i8; 10] {
    unsafe { net.forward(image) }
}
