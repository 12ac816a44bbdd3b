//! AVX2: `vpmaddwd` on i16 activations and i16 weights, two taps per 32-bit group.
//!
//! Why not `vpmaddubsw` (u8 × i8 → i16 pairs): it saturates. With activations stored as
//! `x + 128 ∈ [0, 255]` and `|w| ≤ 127`, one pair can reach 2·255·127 = 64,770 > 32,767. The
//! form that cannot saturate, `vpmaddubsw(|x|, sign(w, x))` (|x| ≤ 128, so a pair is at most
//! 2·128·127 = 32,512), costs a `vpsignb` per product and ends in the same `vpmaddwd`
//! (against ones): four instructions per 32 multiply-adds, as many as two `vpmaddwd` + two
//! `vpaddd` on i16. So this path widens instead: activations are stored as i16 by the layer
//! that produces them, the weights (packed as i8 at load, which keeps the wide CNN's 1.6 MB fc1
//! in a 2 MB L2) are sign-extended as they are loaded (`vpmovsxbw`). `vpmaddwd` forms
//! `a0·w0 + a1·w1` in i32 lanes, exact here (each product is at most 128·127 in magnitude; its
//! one wrapping case, both pairs −32768·−32768, cannot occur), so the sums equal the
//! reference kernels' bit for bit.

use core::arch::x86_64::*;

use super::kernels::Path;
use super::nets::{LeNetX86, WideX86};
use crate::image::IMAGE_PIXELS;

/// The AVX2 path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2;

// SAFETY: every method uses AVX2 only; `Kernel::Avx2` is available only when the CPU has it.
unsafe impl Path for Avx2 {
    type A = i16;
    const G: usize = 2;
    const BIAS_PER_WEIGHT: i32 = 0;
    type V = __m256i;
    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> __m256i {
        unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    fn act(x: i8) -> i16 {
        x as i16
    }
    #[inline(always)]
    fn to_i8(a: i16) -> i8 {
        a as i8
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, w: __m256i) -> __m256i {
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(a, w)) }
    }
    #[inline(always)]
    unsafe fn store8(v: __m128i, dst: *mut i16) {
        unsafe { _mm_storeu_si128(dst.cast(), v) }
    }
}

/// LeNet-BN on AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn lenet(net: &LeNetX86<Avx2>, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
    unsafe { net.forward(image) }
}

/// The wide CNN on AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn wide(net: &WideX86<Avx2>, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
    unsafe { net.forward(image) }
}
