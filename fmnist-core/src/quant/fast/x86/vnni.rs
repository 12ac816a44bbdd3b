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

use super::kernels::{LeNetConv1, Path, requant16};
use super::nets::{LeNetX86, WideX86};
use crate::image::IMAGE_PIXELS;

macro_rules! u8_path {
    ($(#[$doc:meta])* $name:ident, $v:ty, $dot:ident $(, lenet_conv1 = $conv1:ident)?) => {
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
            $(
                #[inline(always)]
                unsafe fn lenet_conv1(c: &LeNetConv1, image: &[u8; IMAGE_PIXELS], out: &mut [u8]) {
                    unsafe { $conv1(c, image, out) }
                }
            )?
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
    _mm512_dpbusd_epi32,
    lenet_conv1 = lenet_conv1_zmm
);

/// LeNet-BN's conv1 on 512-bit `vpdpbusd` with its lanes paired (see [`LeNetConv1::pairs`]):
/// the generic kernel gives conv1's 6 channels a whole vector per output (6 of 16 lanes); here
/// lanes `2k + d` hold channel `k` of output row `2py + d`, so a vector serves two outputs.
///
/// The image is first rearranged so that one 64-bit broadcast feeds both rows: `q[r][c]` is
/// the four pixels `u[r][c..c+4]` then `u[r+1][c..c+4]` of the padded image `u` (pixels as u8,
/// `x + 128`, padding 0). Output `(y, x)`, kernel row `ky`, group `g` reads `q[y + ky][x + 4g]`
/// (its second half is row `y + 1`'s taps). Exact like the generic kernel: the same products
/// and sums, grouped differently.
///
/// # Safety
/// AVX2, AVX-512 F/BW and AVX-512 VNNI are enabled; `c` was packed for a 16-lane path; `out`
/// holds at least `14·14·6` elements.
#[inline(always)]
unsafe fn lenet_conv1_zmm(c: &LeNetConv1, image: &[u8; IMAGE_PIXELS], out: &mut [u8]) {
    /// Row stride of the padded image: every 16-byte load at column ≤ 24 stays inside.
    const S: usize = 40;
    let mut u = [0u8; 32 * S];
    for (y, row) in image.chunks_exact(28).enumerate() {
        u[(y + 2) * S + 2..(y + 2) * S + 30].copy_from_slice(row);
    }
    // q[r][c], r < 31, c < 32: 8 bytes each.
    let mut q = [0u64; 31 * 32];
    assert!(c.pairs.len() == 10 * 64 && out.len() >= 14 * 14 * 6);
    unsafe {
        // Per 128-bit lane: the dwords u[c..c+4] for 4 consecutive c (c0.. in the low lane,
        // c0+4.. in the high one).
        let pat = _mm256_setr_epi8(
            0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6, 4, 5, 6, 7, 5, 6, 7, 8, 6, 7, 8, 9, 7,
            8, 9, 10,
        );
        let up = u.as_ptr();
        let qp = q.as_mut_ptr();
        for r in 0..31 {
            for c0 in (0..32).step_by(8) {
                let a = _mm256_broadcastsi128_si256(_mm_loadu_si128(up.add(r * S + c0).cast()));
                let b =
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(up.add((r + 1) * S + c0).cast()));
                let (da, db) = (_mm256_shuffle_epi8(a, pat), _mm256_shuffle_epi8(b, pat));
                let lo = _mm256_unpacklo_epi32(da, db);
                let hi = _mm256_unpackhi_epi32(da, db);
                let d = qp.add(r * 32 + c0);
                _mm256_storeu_si256(d.cast(), _mm256_permute2x128_si256::<0x20>(lo, hi));
                _mm256_storeu_si256(d.add(4).cast(), _mm256_permute2x128_si256::<0x31>(lo, hi));
            }
        }
        let w: [__m512i; 10] =
            core::array::from_fn(|i| _mm512_loadu_si512(c.pairs.as_ptr().add(64 * i).cast()));
        // The even lanes of two vectors (16 + i indexes the second).
        let even2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let qp = q.as_ptr();
        let op = out.as_mut_ptr();
        /// Pooling windows per step: 14 independent accumulators.
        const NW: usize = 7;
        for py in 0..14 {
            for px0 in (0..14).step_by(NW) {
                let mut acc = [[_mm512_setzero_si512(); 2]; NW];
                for ky in 0..5 {
                    let row = qp.add((2 * py + ky) * 32);
                    for g in 0..2 {
                        for (n, a) in acc.iter_mut().enumerate() {
                            for (dx, ad) in a.iter_mut().enumerate() {
                                let x = 2 * (px0 + n) + dx + 4 * g;
                                let v = _mm512_set1_epi64(row.add(x).read() as i64);
                                *ad = _mm512_dpbusd_epi32(*ad, v, w[ky * 2 + g]);
                            }
                        }
                    }
                }
                // Per window: the max over its four outputs, row 2py's channels in the even
                // lanes; then two windows' 8 channels in one vector, requantized at once.
                let pooled = acc.map(|[a0, a1]| {
                    let m = _mm512_max_epi32(a0, a1);
                    _mm512_max_epi32(m, _mm512_shuffle_epi32::<0b10_11_00_01>(m))
                });
                for n in (0..NW).step_by(2) {
                    let second = pooled[(n + 1).min(NW - 1)];
                    let both = _mm512_permutex2var_epi32(pooled[n], even2, second);
                    let y = requant16(both, &c.rq_pairs, 0);
                    for (k, y) in [_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y)]
                        .into_iter()
                        .enumerate()
                        .take((NW - n).min(2))
                    {
                        let mut b = [0u8; 8];
                        Avx512Vnni::store8(y, b.as_mut_ptr());
                        let dst = op.add((py * 14 + px0 + n + k) * 6);
                        core::ptr::copy_nonoverlapping(b.as_ptr(), dst, 6);
                    }
                }
            }
        }
    }
}

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
