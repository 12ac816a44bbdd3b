//! LeNet-BN's f32 forward pass on x86-64 hosts, with AVX2 (`avx2.rs`) or AVX-512F (`avx512.rs`)
//! chosen at run time ([`Simd`]), giving the same bits as the portable pass the device runs
//! ([`LeNet::forward`], and [`LeNet::forward_layers`], the reference): every path, every bit.
//!
//! How the same bits survive vectorization (`docs/model-format.md` §8 is the order):
//!
//! * the vectors run *across* outputs, never along a sum: a lane is one output (a convolution
//!   position or channel, a dense row), and its accumulator takes the bias and then the terms
//!   one at a time in the documented order (ascending `ic, ky, kx`; ascending `i`);
//! * every term is a separate multiply and add, each rounded (`mul_ps` then `add_ps`; no FMA
//!   instruction is enabled, so none can be formed);
//! * conv1's padding taps are skipped, as the reference skips them: rows wholly (no
//!   instruction runs for an input row outside the image); columns per lane, by a weight of
//!   `−0` in that lane times the zero padding: `−0 · x = −0` for every `x ≥ 0`, and
//!   `a + (−0) = a` for every `a`, `±0` included, so the lane's sum is left exactly as it was;
//! * batch norm is `((x − mean) / sd) · gamma + beta` with the reference's `sd`
//!   (`libm::sqrtf(var + eps)`, computed once here); ReLU + max-pool is
//!   `m = +0; m = max(v, m)` over the window in the reference's order (`maxps` returns its
//!   first operand only when it is greater, as the reference's `if v > m`); the dense layers'
//!   ReLU replaces values `< 0` with `+0` and keeps `−0`;
//! * the input is `p / 255` through a table of the 256 values [`pixel_to_f32`] gives.
//!
//! The dense weights are transposed once, in [`LeNetX86::prepare`], to `[i][o]` rows padded to
//! a multiple of 16 outputs, and conv2's to `[tap][oc]`: a row of outputs is one vector load.
//! `tests/tests/host_kernels.rs` runs every path this CPU has over the 10,000 test images,
//! and the tests below on random models and images, comparing the logits bit for bit.

use bytemuck::Zeroable;

use super::{IMAGE_PIXELS, LeNet, pixel_to_f32};

mod avx2;
mod avx512;

/// An x86-64 SIMD level this CPU has: a value exists only once [`Simd::avx2`] or
/// [`Simd::avx512`] found the instructions, which makes [`LeNetX86::forward`] safe to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Simd(Level);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Avx2,
    Avx512,
}

impl Simd {
    /// AVX2 (256-bit vectors), if the CPU has it.
    pub fn avx2() -> Option<Simd> {
        std::is_x86_feature_detected!("avx2").then_some(Simd(Level::Avx2))
    }

    /// AVX-512F (512-bit vectors and per-lane masks), if the CPU has it.
    pub fn avx512() -> Option<Simd> {
        std::is_x86_feature_detected!("avx512f").then_some(Simd(Level::Avx512))
    }

    /// The widest level the CPU has (AVX-512F, else AVX2), `None` if it has neither.
    pub fn best() -> Option<Simd> {
        Self::avx512().or_else(Self::avx2)
    }

    /// `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

/// One batch norm as the kernels apply it, per channel: `((x − mean) / sd) · gamma + beta`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Zeroable)]
struct Bn<const C: usize> {
    mean: [f32; C],
    /// `libm::sqrtf(var + eps)`, the reference's denominator.
    sd: [f32; C],
    gamma: [f32; C],
    beta: [f32; C],
}

/// conv1's taps that reach the padding in some lane `j` of a 16-lane vector of even (lane `j`
/// = output column `2j`) or odd (`2j + 1`) columns: `(parity, kx, lane)`. The kernels take these
/// taps' weights from [`LeNetX86`]'s `conv1_edge`, `−0` in that lane.
const EDGE_TAPS: [(usize, usize, usize); 6] = [
    (0, 0, 0),
    (0, 1, 0),
    (0, 4, 13),
    (1, 0, 0),
    (1, 3, 13),
    (1, 4, 13),
];

/// `EDGE[parity][kx]`: the index in [`EDGE_TAPS`] of that tap, `usize::MAX` when it reaches no
/// padding.
const EDGE: [[usize; 5]; 2] = {
    let mut t = [[usize::MAX; 5]; 2];
    let mut s = 0;
    while s < EDGE_TAPS.len() {
        let (p, k, _) = EDGE_TAPS[s];
        t[p][k] = s;
        s += 1;
    }
    t
};

/// A LeNet's weights laid out for the x86 kernels (about 270 KB): conv1 as given, conv2
/// transposed to `[tap][oc]`, the dense layers to `[i][o]` (outputs zero-padded to a multiple
/// of 16), the batch norms with their `sd`, and the input table. Built once per model by
/// [`LeNetX86::prepare`] into storage the caller provides (`bytemuck::zeroed_box` on the host:
/// it is too large for a stack).
#[repr(C, align(64))]
#[derive(Clone, Zeroable)]
pub struct LeNetX86 {
    /// `p / 255` for every pixel value `p`.
    pixel: [f32; 256],
    /// conv1 `[oc][ky][kx]`.
    conv1_w: [[[f32; 5]; 5]; 6],
    conv1_b: [f32; 6],
    /// For each `(oc, ky)` and each tap of [`EDGE_TAPS`], the weight in all 16 lanes except
    /// `−0` in the one lane whose input column lies in the padding (AVX2 loads 8 of them).
    conv1_edge: [[[[f32; 16]; EDGE_TAPS.len()]; 5]; 6],
    bn1: Bn<6>,
    /// conv2 `[ic·25 + ky·5 + kx][oc]`.
    conv2_w: [[f32; 16]; 150],
    conv2_b: [f32; 16],
    bn2: Bn<16>,
    /// fc1 `[i][o]`, `o` padded to 128 (zeros).
    fc1_w: [[f32; 128]; 400],
    fc1_b: [f32; 128],
    /// fc2 `[i][o]`, `o` padded to 96.
    fc2_w: [[f32; 96]; 120],
    fc2_b: [f32; 96],
    /// fc3 `[i][o]`, `o` padded to 16.
    fc3_w: [[f32; 16]; 84],
    fc3_b: [f32; 16],
    /// Whether the model has its batch norms (kind 1); `false` when folded (kind 2).
    bn: bool,
}

impl LeNetX86 {
    /// Lays out `net`'s weights (either kind: a BN-folded model has no batch norms).
    /// `net`'s two batch norms must both be present or both absent, as every [`LeNet`] built
    /// from a parameter struct has them; panics otherwise.
    pub fn prepare(&mut self, net: &LeNet<'_>) {
        for (p, v) in self.pixel.iter_mut().enumerate() {
            *v = pixel_to_f32(p as u8);
        }
        for (dst, src) in self.conv1_w.iter_mut().zip(net.conv1.weight) {
            *dst = src[0];
        }
        self.conv1_b = *net.conv1.bias;
        for (oc, planes) in self.conv1_edge.iter_mut().enumerate() {
            for (ky, slots) in planes.iter_mut().enumerate() {
                for (slot, &(_, kx, lane)) in slots.iter_mut().zip(&EDGE_TAPS) {
                    *slot = [self.conv1_w[oc][ky][kx]; 16];
                    slot[lane] = -0.0;
                }
            }
        }
        for (oc, kernel) in net.conv2.weight.iter().enumerate() {
            for (t, &w) in kernel.as_flattened().as_flattened().iter().enumerate() {
                self.conv2_w[t][oc] = w;
            }
        }
        self.conv2_b = *net.conv2.bias;
        transpose(net.fc1.weight, &mut self.fc1_w);
        pad(net.fc1.bias, &mut self.fc1_b);
        transpose(net.fc2.weight, &mut self.fc2_w);
        pad(net.fc2.bias, &mut self.fc2_b);
        transpose(net.fc3.weight, &mut self.fc3_w);
        pad(net.fc3.bias, &mut self.fc3_b);
        match (&net.bn1, &net.bn2) {
            (Some(b1), Some(b2)) => {
                self.bn1 = bn(b1);
                self.bn2 = bn(b2);
                self.bn = true;
            }
            (None, None) => self.bn = false,
            _ => panic!("a LeNet has both batch norms or neither"),
        }
    }

    /// The logits of one image with the given instruction set: bit-identical to
    /// [`LeNet::forward`] on the model this was prepared from.
    pub fn forward(&self, simd: Simd, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        match simd.0 {
            // SAFETY: a `Simd` of this level exists only if the CPU has AVX2.
            Level::Avx2 => unsafe { avx2::forward(self, image) },
            // SAFETY: a `Simd` of this level exists only if the CPU has AVX-512F.
            Level::Avx512 => unsafe { avx512::forward(self, image) },
        }
    }

    /// The image in conv1's padded coordinates `X = x + 2`, split by column parity:
    /// `even[y][m]` is column `X = 2m`, `odd[y][m]` column `X = 2m + 1`, zero where `X` lies in
    /// the padding (`X < 2`, `X ≥ 30`) and beyond. Even output columns `ox = 2j` then read tap
    /// `kx` at `X = 2j + kx`, odd ones at `2j + 1 + kx`: for every `kx` one contiguous run of
    /// each array, and a 2x2 pooling window's columns land in two vectors, lane `j` both.
    fn split(&self, image: &[u8; IMAGE_PIXELS]) -> Planes {
        let mut s = Planes {
            even: [[0.0; PLANE_W]; 28],
            odd: [[0.0; PLANE_W]; 28],
        };
        for ((even, odd), row) in s
            .even
            .iter_mut()
            .zip(&mut s.odd)
            .zip(image.chunks_exact(28))
        {
            for (m, px) in row.chunks_exact(2).enumerate() {
                even[m + 1] = self.pixel[px[0] as usize];
                odd[m + 1] = self.pixel[px[1] as usize];
            }
        }
        s
    }
}

/// Width of a [`Planes`] row: 15 columns of image and padding, room for a 16-lane load at
/// offset 2, and zeros.
const PLANE_W: usize = 32;

/// The input image split by column parity (see [`LeNetX86::split`]).
#[repr(C, align(64))]
struct Planes {
    even: [[f32; PLANE_W]; 28],
    odd: [[f32; PLANE_W]; 28],
}

/// `dst[i][o] = w[o][i]`; the padding columns stay as they are (zero).
fn transpose<const I: usize, const O: usize, const OP: usize>(
    w: &[[f32; I]; O],
    dst: &mut [[f32; OP]; I],
) {
    const { assert!(O <= OP && OP.is_multiple_of(16)) };
    for (o, row) in w.iter().enumerate() {
        for (i, &v) in row.iter().enumerate() {
            dst[i][o] = v;
        }
    }
}

fn pad<const O: usize, const OP: usize>(b: &[f32; O], dst: &mut [f32; OP]) {
    dst[..O].copy_from_slice(b);
}

fn bn<const C: usize>(b: &crate::layers::BatchNorm<'_, C>) -> Bn<C> {
    Bn {
        mean: *b.mean,
        sd: core::array::from_fn(|c| libm::sqrtf(b.var[c] + b.eps)),
        gamma: *b.gamma,
        beta: *b.beta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenet::{LeNetFoldedParams, LeNetParams};
    use crate::testutil::{Lcg, random_image, random_lenet_params};

    fn levels() -> Vec<Simd> {
        let found: Vec<Simd> = [Simd::avx2(), Simd::avx512()]
            .into_iter()
            .flatten()
            .collect();
        if found.len() < 2 {
            eprintln!("this CPU lacks AVX2 or AVX-512F: testing only {found:?}");
        }
        found
    }

    fn prepared(net: &LeNet<'_>) -> Box<LeNetX86> {
        let mut x: Box<LeNetX86> = bytemuck::zeroed_box();
        x.prepare(net);
        x
    }

    /// Random images, plus the ones that reach the corners of the arithmetic: all black (every
    /// product a signed zero), all white, and a checkerboard.
    fn images(n: usize, seed: u32) -> Vec<[u8; IMAGE_PIXELS]> {
        let mut r = Lcg(seed);
        let mut v: Vec<_> = (0..n).map(|_| random_image(&mut r)).collect();
        v.push([0; IMAGE_PIXELS]);
        v.push([255; IMAGE_PIXELS]);
        v.push(core::array::from_fn(|i| {
            if (i + i / 28) % 2 == 0 { 255 } else { 0 }
        }));
        v
    }

    fn check(net: &LeNet<'_>, images: &[[u8; IMAGE_PIXELS]]) {
        let x = prepared(net);
        for simd in levels() {
            for (k, img) in images.iter().enumerate() {
                let want = net.forward_layers(img).map(f32::to_bits);
                assert_eq!(net.forward(img).map(f32::to_bits), want);
                assert_eq!(
                    x.forward(simd, img).map(f32::to_bits),
                    want,
                    "{} image {k}",
                    simd.name()
                );
            }
        }
    }

    #[test]
    fn both_kinds_are_bit_identical_to_the_reference() {
        for seed in [1, 2, 3] {
            let p = random_lenet_params(seed);
            check(&LeNet::from(&*p), &images(40, seed));
            let folded = fold(&p);
            check(&LeNet::from(&*folded), &images(40, seed + 100));
        }
    }

    /// Zero biases, negative weights and a black image: sums of signed zeros, where skipping a
    /// padding tap and adding it differ (`−0 + +0 = +0`); large weights for overflow to
    /// infinity.
    #[test]
    fn signed_zeros_and_overflow_are_bit_identical() {
        let mut p = random_lenet_params(9);
        p.conv1_bias = [-0.0; 6];
        p.conv2_bias = [-0.0; 16];
        p.fc1_bias = [-0.0; 120];
        p.bn1.beta = [0.0; 6];
        p.bn1.running_mean = [0.0; 6];
        for w in p
            .conv1_weight
            .as_flattened_mut()
            .as_flattened_mut()
            .as_flattened_mut()
        {
            *w = -w.abs();
        }
        check(&LeNet::from(&*p), &images(4, 5));
        let mut q = random_lenet_params(10);
        for w in q.fc1_weight.as_flattened_mut() {
            *w *= 3e37;
        }
        check(&LeNet::from(&*q), &images(4, 6));
    }

    /// A BN-folded layout of `p` (any numbers do: only the layout matters here).
    fn fold(p: &LeNetParams) -> Box<LeNetFoldedParams> {
        let mut f: Box<LeNetFoldedParams> = bytemuck::zeroed_box();
        f.conv1_weight = p.conv1_weight;
        f.conv1_bias = p.conv1_bias;
        f.conv2_weight = p.conv2_weight;
        f.conv2_bias = p.conv2_bias;
        f.fc1_weight = p.fc1_weight;
        f.fc1_bias = p.fc1_bias;
        f.fc2_weight = p.fc2_weight;
        f.fc2_bias = p.fc2_bias;
        f.fc3_weight = p.fc3_weight;
        f.fc3_bias = p.fc3_bias;
        f
    }

    #[test]
    fn edge_taps_are_the_padding_ones() {
        // Lane j of the even (odd) vector is output column 2j (2j + 1); its tap kx reads
        // input column ox + kx - 2. Every lane of 0..14 that reads outside 0..28 is listed.
        for (parity, slots) in EDGE.iter().enumerate() {
            for (kx, &slot) in slots.iter().enumerate() {
                let outside: Vec<usize> = (0..14)
                    .filter(|&j| !(0..28).contains(&((2 * j + parity + kx) as isize - 2)))
                    .collect();
                match slot {
                    usize::MAX => assert!(outside.is_empty(), "{parity} {kx}"),
                    s => assert_eq!(outside, [EDGE_TAPS[s].2]),
                }
            }
        }
    }
}
