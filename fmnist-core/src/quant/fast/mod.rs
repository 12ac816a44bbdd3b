//! The kernels [`super::LeNetQ`] runs: fused (convolution + requantization + ReLU + 2x2
//! max-pool in one pass, the full convolution map never exists) and bit-identical to the plain
//! reference kernels ([`super::QConv2d`], [`super::QDense`]); the tests below compare them on
//! many random layers.
//!
//! Two implementations of the same arithmetic:
//!
//! * [`portable`]: plain Rust shaped for auto-vectorization (i16 patches and weights, four
//!   windows per weight load); what the host runs;
//! * [`dsp`]: the Cortex-M4 kernels built on the dual 16-bit multiply-accumulate `SMLAD` (and
//!   the byte unpack `SXTB16` for the dense layers, [`dsp::intrinsics`]), with the convolution
//!   windows and the dense row loop as hand-scheduled inline assembly on Arm targets with the
//!   DSP extension and a Rust version of the same arithmetic elsewhere (on the emulated
//!   instructions), so the host tests exercise the data layouts and pairings the device uses;
//!   requantization through [`dsp::Rq`], exhaustively tested against `Requant::to_i8`.
//!
//! On the host (the `std` feature, x86-64) a third family, picked at run time by
//! `host::Kernel`: the `x86` kernels on the CPU's integer dot products (AVX2 `vpmaddwd`,
//! AVX-VNNI and AVX-512 VNNI `vpdpbusd`) over channel-last buffers, with weights packed once
//! at load; same arithmetic, same bits.
//!
//! All compute `max over the 2x2 window of Σ w·x`, then add the bias and requantize once.
//! That equals pooling the requantized outputs because requantization and the clamp are
//! monotone non-decreasing (`requant::tests::requantization_is_monotone_so_pooling_commutes`),
//! and `max(a + b, c + b) = max(a, c) + b` exactly in integers.

use super::params::QLayerParams;
use super::requant::clamp_floor;
use crate::lenet::IMAGE_PIXELS;

/// The four output offsets `(dy, dx)` of a 2x2 pooling window.
const WINDOW: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// `bias + best`, requantized, zero point added, clamped (ReLU when `relu`).
#[inline(always)]
fn output<const C: usize>(q: &QLayerParams<C>, c: usize, best: i32, relu: bool) -> i8 {
    q.requant(c).to_i8(
        q.bias[c] + best,
        q.output_zero_point as i32,
        clamp_floor(q.output_zero_point, relu),
    )
}

#[inline(always)]
fn max4(a: [i32; 4]) -> i32 {
    a[0].max(a[1]).max(a[2].max(a[3]))
}

/// Whether this build runs the [`dsp`] kernels (Arm with the DSP extension).
pub const USES_DSP: bool = cfg!(all(
    target_arch = "arm",
    any(target_feature = "dsp", fmnist_dsp)
));

/// conv1 (6@5x5, padding 2 at the input zero point) → requant → ReLU → 2x2 max-pool, straight
/// from the u8 image (`q = p − 128`).
#[inline]
pub fn conv1_relu_pool(
    weight: &[[[[i8; 5]; 5]; 1]; 6],
    q: &QLayerParams<6>,
    image: &[u8; IMAGE_PIXELS],
    out: &mut [[[i8; 14]; 14]; 6],
) {
    if USES_DSP {
        dsp::conv1_relu_pool(weight, q, image, out)
    } else {
        portable::conv1_relu_pool(weight, q, image, out)
    }
}

/// conv2 (16@5x5) → requant → ReLU → 2x2 max-pool.
#[inline]
pub fn conv2_relu_pool(
    weight: &[[[[i8; 5]; 5]; 6]; 16],
    q: &QLayerParams<16>,
    x: &[[[i8; 14]; 14]; 6],
    out: &mut [[[i8; 5]; 5]; 16],
) {
    if USES_DSP {
        dsp::conv2_relu_pool(weight, q, x, out)
    } else {
        portable::conv2_relu_pool(weight, q, x, out)
    }
}

/// Dense → requant (→ ReLU). `I` must be a multiple of 4 (400, 120 and 84 are).
#[inline]
pub fn dense<const I: usize, const O: usize>(
    weight: &[[i8; I]; O],
    q: &QLayerParams<O>,
    x: &[i8; I],
    relu: bool,
    out: &mut [i8; O],
) {
    if USES_DSP {
        dsp::dense(weight, q, x, relu, out)
    } else {
        portable::dense(weight, q, x, relu, out)
    }
}

/// Longest im2col patch [`conv_relu_pool`] takes: the wide CNN's conv2, 32·3·3 taps.
pub const MAX_TAPS: usize = 288;

/// A `K`x`K` convolution (stride 1, padding `P` at the input zero point) → requant → ReLU →
/// 2x2 max-pool, as a matrix product: for each pooling window the four im2col patches of its
/// outputs (taps in the weight order `ic, ky, kx`), then per output channel the dot products
/// of the weight row with the four patches, whose maximum is requantized once. The weights are
/// PyTorch's `[OC][IC][K][K]` read as rows `[OC][T]`; when `T > IC·K·K` (a fan-in that is not a
/// multiple of 4, padded by the caller) the extra taps must have zero weights.
///
/// # Shapes
/// input `[IC][H][W]` → output `[OC][PH][PW]` with `2·PH = H + 2P − K + 1`,
/// `2·PW = W + 2P − K + 1`; `K ≤ 3`; `IC·K·K ≤ T ≤ MAX_TAPS`, `T` a multiple of 4.
#[inline]
pub fn conv_relu_pool<
    const IC: usize,
    const OC: usize,
    const K: usize,
    const P: usize,
    const H: usize,
    const W: usize,
    const PH: usize,
    const PW: usize,
    const T: usize,
>(
    weight: &[[i8; T]; OC],
    q: &QLayerParams<OC>,
    x: &[[[i8; W]; H]; IC],
    out: &mut [[[i8; PW]; PH]; OC],
) {
    const { assert!(2 * PH + K == H + 2 * P + 1 && 2 * PW + K == W + 2 * P + 1) };
    const { assert!(IC * K * K <= T && T <= MAX_TAPS && T.is_multiple_of(4) && T >= 4) };
    if USES_DSP {
        dsp::conv_relu_pool::<IC, OC, K, P, H, W, PH, PW, T>(weight, q, x, out)
    } else {
        portable::conv_relu_pool::<IC, OC, K, P, H, W, PH, PW, T>(weight, q, x, out)
    }
}

/// The four im2col patches of the 2x2 pooling window `(py, px)`: patch `j` holds, for output
/// `(2py + dy, 2px + dx)` (`WINDOW[j]`), the input under tap `ic·K·K + ky·K + kx`, or the input
/// zero point `zp` where the tap falls in the padding. Taps from `IC·K·K` to `T` are left as
/// they are (their weights are zero).
///
/// The four patches of one input channel all lie in one `(K+1)x(K+1)` region of the input;
/// it is read once (padding handled per region row, and per column only at the left and right
/// edges) and then scattered into the four patches.
#[inline(always)]
fn window_patches<
    const IC: usize,
    const K: usize,
    const P: usize,
    const H: usize,
    const W: usize,
    const T: usize,
>(
    x: &[[[i8; W]; H]; IC],
    zp: i8,
    py: usize,
    px: usize,
    patches: &mut [[i8; T]; 4],
) {
    const { assert!(K < REGION) };
    let (y0, x0) = (2 * py, 2 * px);
    // The region's columns x0 − P ..= x0 − P + K, when all of them are inside the input.
    let cols = x0
        .checked_sub(P)
        .filter(|&c| c + K < W)
        .map(|c| c..c + K + 1);
    let [p0, p1, p2, p3] = patches;
    fn chunks<const K: usize, const T: usize>(p: &mut [i8; T]) -> &mut [[i8; K]] {
        p.as_chunks_mut::<K>().0
    }
    let (c0, c1, c2, c3) = (
        chunks::<K, T>(p0),
        chunks::<K, T>(p1),
        chunks::<K, T>(p2),
        chunks::<K, T>(p3),
    );
    let per_channel = c0
        .chunks_exact_mut(K)
        .zip(c1.chunks_exact_mut(K))
        .zip(c2.chunks_exact_mut(K))
        .zip(c3.chunks_exact_mut(K));
    for ((((r0, r1), r2), r3), plane) in per_channel.zip(x) {
        let mut region = [[zp; REGION]; REGION];
        for (r, reg) in region.iter_mut().take(K + 1).enumerate() {
            let Some(src) = (y0 + r).checked_sub(P).and_then(|iy| plane.get(iy)) else {
                continue;
            };
            match cols.clone().and_then(|c| src.get(c)) {
                Some(s) => {
                    for (d, &v) in reg.iter_mut().zip(s) {
                        *d = v;
                    }
                }
                None => {
                    for (c, d) in reg.iter_mut().take(K + 1).enumerate() {
                        if let Some(&v) = (x0 + c).checked_sub(P).and_then(|ix| src.get(ix)) {
                            *d = v;
                        }
                    }
                }
            }
        }
        for (rows, (dy, dx)) in [r0, r1, r2, r3].into_iter().zip(WINDOW) {
            for (ky, row) in rows.iter_mut().enumerate() {
                for (kx, d) in row.iter_mut().enumerate() {
                    *d = region[(dy + ky) % REGION][(dx + kx) % REGION];
                }
            }
        }
    }
}

/// Side of the input region [`window_patches`] reads per channel (`K + 1 ≤ REGION`): kernels
/// up to 3x3, the only size the im2col path serves (a larger region costs its initialisation
/// on every channel of every window).
const REGION: usize = 4;

pub mod dsp;
#[cfg(any(test, feature = "std"))]
pub mod host;
pub mod portable;
#[cfg(all(target_arch = "x86_64", any(test, feature = "std")))]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{QConv2d, QDense, max_pool_2x2};
    use crate::testutil::{Lcg, random_image, random_qparams};

    /// The im2col convolution and the wide dense layers, both implementations, against the
    /// reference kernels on random valid layers and inputs over all of i8.
    #[test]
    fn wide_layers_both_paths_match_the_reference() {
        use crate::testutil::random_wide_qparams;
        let mut r = Lcg(31);
        for seed in 0..6 {
            let p = random_wide_qparams(500 + seed);
            // conv1 (9 taps padded to 12) on the image
            let img: [u8; IMAGE_PIXELS] = if seed % 2 == 0 {
                core::array::from_fn(|_| r.range(0, 255) as u8)
            } else {
                random_image(&mut r)
            };
            let x = crate::quant::lenet::image_to_i8(&img);
            let mut full = [[[0i8; 28]; 28]; 32];
            QConv2d::<1, 32, 3, 1> {
                weight: &p.conv1_weight,
                q: &p.conv1,
            }
            .forward(&x, true, &mut full);
            let mut want1 = [[[0i8; 14]; 14]; 32];
            max_pool_2x2(&full, &mut want1);
            let mut w12 = [[0i8; 12]; 32];
            for (d, s) in w12.iter_mut().zip(&p.conv1_weight) {
                d[..9].copy_from_slice(s.as_flattened().as_flattened());
            }
            let mut a = [[[0i8; 14]; 14]; 32];
            portable::conv_relu_pool::<1, 32, 3, 1, 28, 28, 14, 14, 12>(&w12, &p.conv1, &x, &mut a);
            assert_eq!(a, want1, "portable conv1, seed {seed}");
            let mut b = [[[0i8; 14]; 14]; 32];
            dsp::conv_relu_pool::<1, 32, 3, 1, 28, 28, 14, 14, 12>(&w12, &p.conv1, &x, &mut b);
            assert_eq!(b, want1, "dsp conv1, seed {seed}");
            // conv2 on random input
            let mut x2 = [[[0i8; 14]; 14]; 32];
            x2.iter_mut()
                .flatten()
                .flatten()
                .for_each(|v| *v = r.range(-128, 127) as i8);
            let mut full2 = [[[0i8; 14]; 14]; 64];
            QConv2d::<32, 64, 3, 1> {
                weight: &p.conv2_weight,
                q: &p.conv2,
            }
            .forward(&x2, true, &mut full2);
            let mut want2 = [[[0i8; 7]; 7]; 64];
            max_pool_2x2(&full2, &mut want2);
            let w288: &[[i8; 288]; 64] = bytemuck::cast_ref(&p.conv2_weight);
            let mut a2 = [[[0i8; 7]; 7]; 64];
            portable::conv_relu_pool::<32, 64, 3, 1, 14, 14, 7, 7, 288>(
                w288, &p.conv2, &x2, &mut a2,
            );
            assert_eq!(a2, want2, "portable conv2, seed {seed}");
            let mut b2 = [[[0i8; 7]; 7]; 64];
            dsp::conv_relu_pool::<32, 64, 3, 1, 14, 14, 7, 7, 288>(w288, &p.conv2, &x2, &mut b2);
            assert_eq!(b2, want2, "dsp conv2, seed {seed}");
            // fc1 (3136 inputs) and fc2 (512), with and without ReLU
            let x3136: Vec<i8> = (0..3136).map(|_| r.range(-128, 127) as i8).collect();
            let x3136: &[i8; 3136] = x3136.as_slice().try_into().unwrap();
            let x512: [i8; 512] = core::array::from_fn(|_| r.range(-128, 127) as i8);
            for relu in [true, false] {
                let mut want = [0i8; 512];
                QDense {
                    weight: &p.fc1_weight,
                    q: &p.fc1,
                }
                .forward(x3136, relu, &mut want);
                let mut got = [0i8; 512];
                portable::dense(&p.fc1_weight, &p.fc1, x3136, relu, &mut got);
                assert_eq!(got, want, "portable fc1");
                dsp::dense(&p.fc1_weight, &p.fc1, x3136, relu, &mut got);
                assert_eq!(got, want, "dsp fc1");
                let mut want = [0i8; 10];
                QDense {
                    weight: &p.fc2_weight,
                    q: &p.fc2,
                }
                .forward(&x512, relu, &mut want);
                let mut got = [0i8; 10];
                portable::dense(&p.fc2_weight, &p.fc2, &x512, relu, &mut got);
                assert_eq!(got, want, "portable fc2");
                dsp::dense(&p.fc2_weight, &p.fc2, &x512, relu, &mut got);
                assert_eq!(got, want, "dsp fc2");
            }
        }
    }

    /// Both implementations against the reference kernels, layer by layer, on random valid
    /// layers (weights over the whole −127..=127 range) and random inputs over all of i8.
    #[test]
    fn both_fast_paths_match_the_reference_layer_by_layer() {
        let mut r = Lcg(2024);
        for seed in 0..40 {
            let p = random_qparams(1000 + seed);
            let img = if seed % 4 == 0 {
                core::array::from_fn(|_| r.range(0, 255) as u8)
            } else {
                random_image(&mut r)
            };
            // conv1
            let x = crate::quant::lenet::image_to_i8(&img);
            let conv1 = QConv2d::<1, 6, 5, 2> {
                weight: &p.conv1_weight,
                q: &p.conv1,
            };
            let mut full = [[[0i8; 28]; 28]; 6];
            conv1.forward(&x, true, &mut full);
            let mut want1 = [[[0i8; 14]; 14]; 6];
            max_pool_2x2(&full, &mut want1);
            let mut a = [[[0i8; 14]; 14]; 6];
            portable::conv1_relu_pool(&p.conv1_weight, &p.conv1, &img, &mut a);
            assert_eq!(a, want1, "portable conv1, seed {seed}");
            let mut a = [[[0i8; 14]; 14]; 6];
            portable::conv1_patches(&p.conv1_weight, &p.conv1, &img, &mut a);
            assert_eq!(a, want1, "portable conv1 patches, seed {seed}");
            let mut b = [[[0i8; 14]; 14]; 6];
            dsp::conv1_relu_pool(&p.conv1_weight, &p.conv1, &img, &mut b);
            assert_eq!(b, want1, "dsp conv1, seed {seed}");
            // conv2 on random i8 input over the whole range
            let mut x2 = [[[0i8; 14]; 14]; 6];
            x2.iter_mut()
                .flatten()
                .flatten()
                .for_each(|v| *v = r.range(-128, 127) as i8);
            let conv2 = QConv2d::<6, 16, 5, 0> {
                weight: &p.conv2_weight,
                q: &p.conv2,
            };
            let mut full2 = [[[0i8; 10]; 10]; 16];
            conv2.forward(&x2, true, &mut full2);
            let mut want2 = [[[0i8; 5]; 5]; 16];
            max_pool_2x2(&full2, &mut want2);
            let mut a2 = [[[0i8; 5]; 5]; 16];
            portable::conv2_relu_pool(&p.conv2_weight, &p.conv2, &x2, &mut a2);
            assert_eq!(a2, want2, "portable conv2, seed {seed}");
            let mut b2 = [[[0i8; 5]; 5]; 16];
            dsp::conv2_relu_pool(&p.conv2_weight, &p.conv2, &x2, &mut b2);
            assert_eq!(b2, want2, "dsp conv2, seed {seed}");
            // dense layers, with and without ReLU
            let x400: [i8; 400] = core::array::from_fn(|_| r.range(-128, 127) as i8);
            for relu in [true, false] {
                let mut want = [0i8; 120];
                QDense {
                    weight: &p.fc1_weight,
                    q: &p.fc1,
                }
                .forward(&x400, relu, &mut want);
                let mut got = [0i8; 120];
                portable::dense(&p.fc1_weight, &p.fc1, &x400, relu, &mut got);
                assert_eq!(got, want);
                dsp::dense(&p.fc1_weight, &p.fc1, &x400, relu, &mut got);
                assert_eq!(got, want);
                let x84: [i8; 84] = core::array::from_fn(|_| r.range(-128, 127) as i8);
                let mut want3 = [0i8; 10];
                QDense {
                    weight: &p.fc3_weight,
                    q: &p.fc3,
                }
                .forward(&x84, relu, &mut want3);
                let mut got3 = [0i8; 10];
                portable::dense(&p.fc3_weight, &p.fc3, &x84, relu, &mut got3);
                assert_eq!(got3, want3);
                dsp::dense(&p.fc3_weight, &p.fc3, &x84, relu, &mut got3);
                assert_eq!(got3, want3);
            }
        }
    }
}
