//! Batched LeNet-BN forward and backward for training.
//!
//! A mini-batch is cut into chunks of [`CHUNK`] images that do not depend on the thread count;
//! the chunks run in parallel and every cross-chunk sum (batch-norm statistics, gradients) is
//! reduced in chunk order. Same seed → same bits, whatever the number of threads.
//!
//! Convolutions are im2col + GEMM (`shared::gemm`); everything else is plain loops that the
//! compiler vectorises. Batch norm uses batch statistics in training (biased variance to
//! normalise, unbiased for the running estimate, as PyTorch does) and running statistics in
//! evaluation.

use fmnist_core::lenet::{IMAGE_PIXELS, LeNetParams};
use fmnist_infer::data::Dataset;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::shared::config::Distill;
use crate::shared::kernels::{
    BnBatch, Evaluation, PIXELS, distilled_loss_grad, gemm, simd_dispatch, smoothed_loss_grad,
    sum_and_squares,
};

/// Images per chunk: the unit of parallel work.
pub const CHUNK: usize = 16;

/// He-normal (std = sqrt(2 / fan_in)) weights, zero biases, identity batch norm.
pub fn init_params(seed: u64) -> Box<LeNetParams> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
    let mut fill = |w: &mut [f32], fan_in: usize| {
        let d = Normal::new(0.0f32, (2.0 / fan_in as f32).sqrt()).expect("positive std");
        w.iter_mut().for_each(|v| *v = d.sample(&mut rng));
    };
    fill(bytemuck::cast_slice_mut(&mut p.conv1_weight), 25);
    fill(bytemuck::cast_slice_mut(&mut p.conv2_weight), 150);
    fill(p.fc1_weight.as_flattened_mut(), 400);
    fill(p.fc2_weight.as_flattened_mut(), 120);
    fill(p.fc3_weight.as_flattened_mut(), 84);
    p.bn1 = fmnist_core::lenet::BnParams::identity();
    p.bn2 = fmnist_core::lenet::BnParams::identity();
    p
}

const P1: usize = 28 * 28; // conv1 output positions per image
const Q1: usize = 14 * 14; // pool1 outputs per channel
const P2: usize = 10 * 10; // conv2 output positions per image
const K2: usize = 6 * 25; // conv2 taps
/// Spare floats after the pooled conv1 output: the conv2 kernels read a little past the last row
/// (into values whose products are discarded).
const A1_TAIL: usize = 16;
const F: usize = 400; // flattened pool2
const NONE: u32 = u32::MAX;
/// Row width of the padded conv1 input (2 + 28 + 6: each output row reads 32 values per tap).
const XW: usize = 36;
/// Padded conv1 input per image (32 rows; one spare row keeps the last reads in bounds).
const XP: usize = 33 * XW;

/// What the training loss compares the logits with.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    /// Images in the whole mini-batch (the loss is the batch mean).
    pub batch: usize,
    /// Label smoothing ε: target (1 − ε)·one-hot + ε/10.
    pub smoothing: f32,
    /// Knowledge distillation: the teacher term's weight and temperature. The teacher's
    /// softened probabilities are in each chunk (see [`Chunk::set_soft_targets`]).
    pub distill: Option<Distill>,
}

/// Buffers of one chunk, allocated once and reused every step.
pub struct Chunk {
    /// Images in this chunk this step.
    pub n: usize,
    col1: Vec<f32>,
    z1: Vec<f32>,
    a1: Vec<f32>,
    arg1: Vec<u32>,
    dz2t: Vec<[f32; 16]>,
    z2: Vec<f32>,
    a2: Vec<f32>,
    arg2: Vec<u32>,
    h1: Vec<f32>,
    h2: Vec<f32>,
    /// `[n][10]` logits of the last forward pass.
    pub logits: Vec<f32>,
    labels: Vec<u8>,
    soft: Vec<f32>,
    dz1: Vec<f32>,
    dz2: Vec<f32>,
    dcol2: Vec<f32>,
    da1: Vec<f32>,
    da2: Vec<f32>,
    dh1: Vec<f32>,
    dh2: Vec<f32>,
    dlogits: Vec<f32>,
    /// Gradients of this chunk (running-statistics fields unused).
    pub grads: Box<LeNetParams>,
    /// Partial per-channel sums for the batch-norm reductions (Σx, Σx² or Σdy, Σdy·x̂).
    pub sums: [[f64; 16]; 2],
    /// Σ cross-entropy loss over the chunk.
    pub loss: f64,
    /// Correct predictions in the chunk.
    pub correct: usize,
}

impl Default for Chunk {
    fn default() -> Self {
        let z = |len: usize| vec![0.0f32; len];
        Chunk {
            n: 0,
            col1: z(CHUNK * XP),
            z1: z(6 * CHUNK * P1),
            a1: z(CHUNK * 6 * Q1 + A1_TAIL),
            arg1: vec![NONE; 6 * CHUNK * Q1],
            dz2t: vec![[0.0; 16]; CHUNK * P2],
            z2: z(16 * CHUNK * P2),
            a2: z(CHUNK * F),
            arg2: vec![NONE; CHUNK * F],
            h1: z(CHUNK * 120),
            h2: z(CHUNK * 84),
            logits: z(CHUNK * 10),
            labels: vec![0; CHUNK],
            soft: z(CHUNK * 10),
            dz1: z(6 * CHUNK * P1),
            dz2: z(16 * CHUNK * P2),
            dcol2: z(K2 * CHUNK * P2),
            da1: z(CHUNK * 6 * Q1),
            da2: z(CHUNK * F),
            dh1: z(CHUNK * 120),
            dh2: z(CHUNK * 84),
            dlogits: z(CHUNK * 10),
            grads: bytemuck::zeroed_box(),
            sums: [[0.0; 16]; 2],
            loss: 0.0,
            correct: 0,
        }
    }
}

impl Chunk {
    /// Stage 1: im2col of the images and conv1 (pre-BN) into `z1`; Σz, Σz² per channel.
    pub fn conv1(&mut self, p: &LeNetParams, images: &[&[u8; IMAGE_PIXELS]], labels: &[u8]) {
        conv1_stage(self, p, images, labels)
    }

    /// The teacher's softened probabilities `[n][10]` for this chunk's images (read by
    /// [`Chunk::head`] when the targets distil).
    pub fn set_soft_targets(&mut self, soft: &[[f32; 10]]) {
        self.soft[..soft.len() * 10].copy_from_slice(soft.as_flattened());
    }

    #[inline(always)]
    fn channel_sums<const C: usize>(&mut self, first: bool) {
        let (z, len) = if first {
            (&self.z1, self.n * P1)
        } else {
            (&self.z2, self.n * P2)
        };
        self.sums = [[0.0; 16]; 2];
        for c in 0..C {
            let (s, q) = sum_and_squares(&z[c * len..][..len]);
            self.sums[0][c] = s;
            self.sums[1][c] = q;
        }
    }

    /// Stage 2: BN1 → ReLU → pool1 (remembering the arg-max), im2col, conv2 into `z2`; sums.
    pub fn conv2(&mut self, p: &LeNetParams, bn1: &BnBatch<6>) {
        conv2_stage(self, p, bn1)
    }

    /// Stage 3: BN2 → ReLU → pool2, the dense layers and the logits. With `targets` set,
    /// also the training loss and the backward pass down to the BN2 sums; without, the plain
    /// cross-entropy (evaluation).
    pub fn head(&mut self, p: &LeNetParams, bn2: &BnBatch<16>, targets: Option<Targets>) {
        head_stage(self, p, bn2, targets)
    }

    /// Stage 4: BN2 backward (needs the batch sums Σdy, Σdy·x̂), conv2 backward, then the
    /// BN1 sums of this chunk.
    pub fn back_conv2(
        &mut self,
        p: &LeNetParams,
        bn1: &BnBatch<6>,
        bn2: &BnBatch<16>,
        dsum: &[f64; 16],
        dxsum: &[f64; 16],
    ) {
        back_conv2_stage(self, p, bn1, bn2, dsum, dxsum)
    }

    /// Stage 5: BN1 backward and the conv1 weight gradient.
    pub fn back_conv1(
        &mut self,
        p: &LeNetParams,
        bn1: &BnBatch<6>,
        dsum: &[f64; 6],
        dxsum: &[f64; 6],
    ) {
        back_conv1_stage(self, p, bn1, dsum, dxsum)
    }
}

simd_dispatch! {
    /// conv1 over padded images `xps` (`[n][XP]`) into `z1` (`[6][n][784]`).
    fn conv1_forward(xps: &[f32], w: &[[[[f32; 5]; 5]; 1]; 6], bias: &[f32; 6], z1: &mut [f32]) {
        let n = xps.len() / XP;
        let np = n * P1;
        for i in 0..n {
            let xp = &xps[i * XP..][..XP];
            for g in 0..2 {
                for y in 0..28 {
                    let mut acc = [[0.0f32; 32]; 3];
                    for (o, a) in acc.iter_mut().enumerate() {
                        *a = [bias[3 * g + o]; 32];
                    }
                    for ky in 0..5 {
                        let row = &xp[(y + ky) * XW..][..XW];
                        for kx in 0..5 {
                            let xs: &[f32; 32] = row[kx..kx + 32].try_into().unwrap();
                            for (o, a) in acc.iter_mut().enumerate() {
                                let wv = w[3 * g + o][0][ky][kx];
                                for l in 0..32 {
                                    a[l] += wv * xs[l];
                                }
                            }
                        }
                    }
                    for (o, a) in acc.iter().enumerate() {
                        z1[(3 * g + o) * np + i * P1 + y * 28..][..28].copy_from_slice(&a[..28]);
                    }
                }
            }
        }
    }
}

simd_dispatch! {
    /// dW1 += Σ dz1 · x over padded images `xps` and `dz` (`[6][n][784]`).
    fn conv1_weight_grad(xps: &[f32], dz: &[f32], gw: &mut [[[[f32; 5]; 5]; 1]; 6]) {
        let n = xps.len() / XP;
        let np = n * P1;
        for c in 0..6 {
            // 8 partial sums per weight, added at the end.
            let mut acc = [[[0.0f32; 8]; 5]; 5];
            for i in 0..n {
                let xp = &xps[i * XP..][..XP];
                let d = &dz[c * np + i * P1..][..P1];
                for y in 0..28 {
                    let mut dr = [0.0f32; 32];
                    dr[..28].copy_from_slice(&d[y * 28..][..28]);
                    for ky in 0..5 {
                        let row = &xp[(y + ky) * XW..][..XW];
                        for kx in 0..5 {
                            let a = &mut acc[ky][kx];
                            for v in 0..4 {
                                for l in 0..8 {
                                    a[l] += dr[v * 8 + l] * row[kx + v * 8 + l];
                                }
                            }
                        }
                    }
                }
            }
            for ky in 0..5 {
                for kx in 0..5 {
                    gw[c][0][ky][kx] += acc[ky][kx].iter().sum::<f32>();
                }
            }
        }
    }
}

/// conv2 weights as `[tap][oc]` (tap = ic·25 + ky·5 + kx): output channels contiguous.
fn transpose_conv2(w: &[[[[f32; 5]; 5]; 6]; 16]) -> [[f32; 16]; K2] {
    let mut t = [[0.0; 16]; K2];
    for (c, wc) in w.iter().enumerate() {
        for (ic, plane) in wc.iter().enumerate() {
            for (ky, row) in plane.iter().enumerate() {
                for (kx, &v) in row.iter().enumerate() {
                    t[ic * 25 + ky * 5 + kx][c] = v;
                }
            }
        }
    }
    t
}

simd_dispatch! {
    /// conv2 straight from the pooled conv1 output `a1` (`[n][6][14][14]` + tail) into `z2`
    /// (`[16][n][100]`), 4 output pixels x 16 channels per register block.
    fn conv2_forward(a1: &[f32], wt: &[[f32; 16]; K2], bias: &[f32; 16], z2: &mut [f32]) {
        let n = (a1.len() - A1_TAIL) / (6 * Q1);
        let np2 = n * P2;
        for i in 0..n {
            let img = &a1[i * 6 * Q1..];
            for y in 0..10 {
                for xb in [0, 4, 8] {
                    let mut acc = [*bias; 4];
                    for ic in 0..6 {
                        for ky in 0..5 {
                            let row: &[f32; 8 + 4] = img[ic * Q1 + (y + ky) * 14 + xb..][..12].try_into().unwrap();
                            for kx in 0..5 {
                                let w = &wt[ic * 25 + ky * 5 + kx];
                                for (j, a) in acc.iter_mut().enumerate() {
                                    let v = row[kx + j];
                                    for l in 0..16 {
                                        a[l] += v * w[l];
                                    }
                                }
                            }
                        }
                    }
                    for (j, a) in acc.iter().enumerate() {
                        if xb + j < 10 {
                            for (c, &v) in a.iter().enumerate() {
                                z2[c * np2 + i * P2 + y * 10 + xb + j] = v;
                            }
                        }
                    }
                }
            }
        }
    }
}

simd_dispatch! {
    /// dW2 (as `[tap][oc]`) += Σ over positions of a1 · dz2ᵀ, 5 taps x 16 channels per block.
    fn conv2_weight_grad(a1: &[f32], dz2t: &[[f32; 16]], gwt: &mut [[f32; 16]; K2]) {
        let n = dz2t.len() / P2;
        for ic in 0..6 {
            for ky in 0..5 {
                let mut acc = [[0.0f32; 16]; 5];
                for i in 0..n {
                    for y in 0..10 {
                        let row: &[f32; 14] = a1[(i * 6 + ic) * Q1 + (y + ky) * 14..][..14].try_into().unwrap();
                        for x in 0..10 {
                            let d = &dz2t[i * P2 + y * 10 + x];
                            for (kx, a) in acc.iter_mut().enumerate() {
                                let v = row[x + kx];
                                for l in 0..16 {
                                    a[l] += v * d[l];
                                }
                            }
                        }
                    }
                }
                for (kx, a) in acc.iter().enumerate() {
                    for (g, &v) in gwt[ic * 25 + ky * 5 + kx].iter_mut().zip(a) {
                        *g += v;
                    }
                }
            }
        }
    }
}

/// `y[n][O] = x[n][I] · Wᵀ + b`, optional ReLU.
fn dense_forward<const I: usize, const O: usize>(
    x: &[f32],
    w: &[[f32; I]; O],
    b: &[f32; O],
    y: &mut [f32],
    relu: bool,
) {
    let n = x.len() / I;
    for row in y.chunks_exact_mut(O) {
        row.copy_from_slice(b);
    }
    gemm(n, I, O, x, (I, 1), w.as_flattened(), (1, I), 1.0, y, (O, 1));
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
}

/// Accumulates dW += dyᵀ·x and db += Σdy; writes dx = dy·W when asked.
fn dense_backward<const I: usize, const O: usize>(
    x: &[f32],
    dy: &[f32],
    w: &[[f32; I]; O],
    dw: &mut [[f32; I]; O],
    db: &mut [f32; O],
    dx: Option<&mut [f32]>,
) {
    let n = x.len() / I;
    gemm(
        O,
        n,
        I,
        dy,
        (1, O),
        x,
        (I, 1),
        1.0,
        dw.as_flattened_mut(),
        (I, 1),
    );
    for row in dy.chunks_exact(O) {
        for (a, &b) in db.iter_mut().zip(row) {
            *a += b;
        }
    }
    if let Some(dx) = dx {
        gemm(
            n,
            O,
            I,
            dy,
            (O, 1),
            w.as_flattened(),
            (I, 1),
            0.0,
            dx,
            (I, 1),
        );
    }
}

/// Zeroes gradients where the ReLU output was 0.
fn relu_mask(d: &mut [f32], y: &[f32]) {
    for (d, &y) in d.iter_mut().zip(y) {
        if y <= 0.0 {
            *d = 0.0;
        }
    }
}

simd_dispatch! {
    fn conv1_stage(ch: &mut Chunk, p: &LeNetParams, images: &[&[u8; IMAGE_PIXELS]], labels: &[u8]) {
        let n = images.len();
        assert!(n <= CHUNK && n == labels.len() && n > 0);
        ch.n = n;
        ch.labels[..n].copy_from_slice(labels);
        let np = n * P1;
        let lut = &*PIXELS;
        for (i, img) in images.iter().enumerate() {
            // Zero-padded copy: 2 pixels top/left, and wide enough right that every output row
            // reads 32 contiguous values (28 valid) from each of its 5x5 taps.
            let xp = &mut ch.col1[i * XP..][..XP];
            xp.fill(0.0);
            for y in 0..28 {
                for x in 0..28 {
                    xp[(y + 2) * XW + x + 2] = lut[img[y * 28 + x] as usize];
                }
            }
        }
        conv1_forward(&ch.col1[..n * XP], &p.conv1_weight, &p.conv1_bias, &mut ch.z1[..6 * np]);
        ch.channel_sums::<6>(true);
    }
}

simd_dispatch! {
    fn conv2_stage(ch: &mut Chunk, p: &LeNetParams, bn1: &BnBatch<6>) {
        let n = ch.n;
        let np1 = n * P1;
        for c in 0..6 {
            let (m, s, g, b) = (bn1.mean[c], bn1.invstd[c], p.bn1.gamma[c], p.bn1.beta[c]);
            let z = &ch.z1[c * np1..][..np1];
            for i in 0..n {
                for py in 0..14 {
                    for px in 0..14 {
                        let mut best = 0.0f32;
                        let mut arg = NONE;
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let at = i * P1 + (2 * py + dy) * 28 + 2 * px + dx;
                            let v = (z[at] - m) * s * g + b;
                            if v > best {
                                best = v;
                                arg = at as u32;
                            }
                        }
                        let o = (i * 6 + c) * Q1 + py * 14 + px;
                        ch.a1[o] = best;
                        ch.arg1[c * n * Q1 + i * Q1 + py * 14 + px] = arg;
                    }
                }
            }
        }
        let wt = transpose_conv2(&p.conv2_weight);
        conv2_forward(&ch.a1[..n * 6 * Q1 + A1_TAIL], &wt, &p.conv2_bias, &mut ch.z2[..16 * n * P2]);
        ch.channel_sums::<16>(false);
    }
}

simd_dispatch! {
    fn head_stage(ch: &mut Chunk, p: &LeNetParams, bn2: &BnBatch<16>, targets: Option<Targets>) {
        let n = ch.n;
        let np2 = n * P2;
        for c in 0..16 {
            let (m, s, g, b) = (bn2.mean[c], bn2.invstd[c], p.bn2.gamma[c], p.bn2.beta[c]);
            let z = &ch.z2[c * np2..][..np2];
            for i in 0..n {
                for py in 0..5 {
                    for px in 0..5 {
                        let mut best = 0.0f32;
                        let mut arg = NONE;
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let at = i * P2 + (2 * py + dy) * 10 + 2 * px + dx;
                            let v = (z[at] - m) * s * g + b;
                            if v > best {
                                best = v;
                                arg = at as u32;
                            }
                        }
                        let o = i * F + c * 25 + py * 5 + px;
                        ch.a2[o] = best;
                        ch.arg2[o] = arg;
                    }
                }
            }
        }
        dense_forward(&ch.a2[..n * F], &p.fc1_weight, &p.fc1_bias, &mut ch.h1[..n * 120], true);
        dense_forward(&ch.h1[..n * 120], &p.fc2_weight, &p.fc2_bias, &mut ch.h2[..n * 84], true);
        dense_forward(&ch.h2[..n * 84], &p.fc3_weight, &p.fc3_bias, &mut ch.logits[..n * 10], false);

        ch.loss = 0.0;
        ch.correct = 0;
        for i in 0..n {
            let l = &ch.logits[i * 10..][..10];
            let y = ch.labels[i] as usize;
            let pred = fmnist_core::layers::argmax::<f32, 10>(l.try_into().unwrap());
            ch.correct += (pred == y) as usize;
            let m = l[pred];
            let sum: f32 = l.iter().map(|&v| libm::expf(v - m)).sum();
            let lse = m + libm::logf(sum);
            let Some(t) = targets else {
                ch.loss += (lse - l[y]) as f64;
                continue;
            };
            let d = &mut ch.dlogits[i * 10..][..10];
            ch.loss += match t.distill {
                None => smoothed_loss_grad(l, lse, y, t.smoothing, t.batch, d),
                Some(k) => {
                    let soft = &ch.soft[i * 10..][..10];
                    distilled_loss_grad(l, lse, y, t.smoothing, soft, k, t.batch, d)
                }
            } as f64;
        }
        if targets.is_none() {
            return;
        }

        let g = &mut *ch.grads;
        dense_backward(
            &ch.h2[..n * 84],
            &ch.dlogits[..n * 10],
            &p.fc3_weight,
            &mut g.fc3_weight,
            &mut g.fc3_bias,
            Some(&mut ch.dh2[..n * 84]),
        );
        relu_mask(&mut ch.dh2[..n * 84], &ch.h2[..n * 84]);
        dense_backward(
            &ch.h1[..n * 120],
            &ch.dh2[..n * 84],
            &p.fc2_weight,
            &mut g.fc2_weight,
            &mut g.fc2_bias,
            Some(&mut ch.dh1[..n * 120]),
        );
        relu_mask(&mut ch.dh1[..n * 120], &ch.h1[..n * 120]);
        dense_backward(
            &ch.a2[..n * F],
            &ch.dh1[..n * 120],
            &p.fc1_weight,
            &mut g.fc1_weight,
            &mut g.fc1_bias,
            Some(&mut ch.da2[..n * F]),
        );
        // Σdy and Σdy·x̂ for BN2, from the sparse pool/ReLU routing.
        ch.sums = [[0.0; 16]; 2];
        for i in 0..n {
            for c in 0..16 {
                for q in 0..25 {
                    let o = i * F + c * 25 + q;
                    let arg = ch.arg2[o];
                    if arg != NONE {
                        let dy = ch.da2[o] as f64;
                        let xhat = ((ch.z2[c * np2 + arg as usize] - bn2.mean[c]) * bn2.invstd[c]) as f64;
                        ch.sums[0][c] += dy;
                        ch.sums[1][c] += dy * xhat;
                    }
                }
            }
        }
    }
}

simd_dispatch! {
    fn back_conv1_stage(ch: &mut Chunk, p: &LeNetParams, bn1: &BnBatch<6>, dsum: &[f64; 6], dxsum: &[f64; 6]) {
        let n = ch.n;
        let np1 = n * P1;
        let total = bn1.count as f32;
        for c in 0..6 {
            let k = p.bn1.gamma[c] * bn1.invstd[c] / total;
            let (m, s) = (bn1.mean[c], bn1.invstd[c]);
            let (sd, sdx) = (dsum[c] as f32, dxsum[c] as f32);
            let dz = &mut ch.dz1[c * np1..][..np1];
            for (d, &z) in dz.iter_mut().zip(&ch.z1[c * np1..][..np1]) {
                *d = -k * (sd + (z - m) * s * sdx);
            }
            let k = p.bn1.gamma[c] * bn1.invstd[c];
            for i in 0..n {
                for q in 0..Q1 {
                    let arg = ch.arg1[c * n * Q1 + i * Q1 + q];
                    if arg != NONE {
                        dz[arg as usize] += k * ch.da1[(i * 6 + c) * Q1 + q];
                    }
                }
            }
        }
        let g = &mut *ch.grads;
        let dz = &ch.dz1[..6 * np1];
        for c in 0..6 {
            g.conv1_bias[c] += sum_and_squares(&dz[c * np1..][..np1]).0 as f32;
        }
        conv1_weight_grad(&ch.col1[..n * XP], dz, &mut g.conv1_weight);
    }
}

simd_dispatch! {
    fn back_conv2_stage(ch: &mut Chunk, p: &LeNetParams, bn1: &BnBatch<6>, bn2: &BnBatch<16>, dsum: &[f64; 16], dxsum: &[f64; 16]) {
        let n = ch.n;
        let np2 = n * P2;
        let g = &mut *ch.grads;
        let total = bn2.count as f32;
        for c in 0..16 {
            let k = p.bn2.gamma[c] * bn2.invstd[c] / total;
            let (m, s) = (bn2.mean[c], bn2.invstd[c]);
            let (sd, sdx) = (dsum[c] as f32, dxsum[c] as f32);
            let dz = &mut ch.dz2[c * np2..][..np2];
            for (d, &z) in dz.iter_mut().zip(&ch.z2[c * np2..][..np2]) {
                *d = -k * (sd + (z - m) * s * sdx);
            }
        }
        for i in 0..n {
            for c in 0..16 {
                let k = p.bn2.gamma[c] * bn2.invstd[c];
                for q in 0..25 {
                    let o = i * F + c * 25 + q;
                    let arg = ch.arg2[o];
                    if arg != NONE {
                        ch.dz2[c * np2 + arg as usize] += k * ch.da2[o];
                    }
                }
            }
        }
        let dz = &ch.dz2[..16 * np2];
        for c in 0..16 {
            g.conv2_bias[c] += sum_and_squares(&dz[c * np2..][..np2]).0 as f32;
        }
        // dW2 from dz2ᵀ ([np2][16]) and the pooled activations, without im2col.
        for (pos, row) in ch.dz2t[..np2].iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = dz[c * np2 + pos];
            }
        }
        let mut gwt = [[0.0f32; 16]; K2];
        conv2_weight_grad(&ch.a1[..n * 6 * Q1 + A1_TAIL], &ch.dz2t[..np2], &mut gwt);
        for (t, row) in gwt.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                g.conv2_weight[c][t / 25][(t / 5) % 5][t % 5] += v;
            }
        }
        // dcol2[150][np2] = W2ᵀ[150][16] · dz2[16][np2]
        let w = bytemuck::cast_slice::<_, f32>(&p.conv2_weight);
        gemm(K2, 16, np2, w, (1, K2), dz, (np2, 1), 0.0, &mut ch.dcol2[..K2 * np2], (np2, 1));
        // col2im into da1[i][ic][14][14]
        ch.da1[..n * 6 * Q1].fill(0.0);
        for ic in 0..6 {
            for ky in 0..5 {
                for kx in 0..5 {
                    let row = &ch.dcol2[(ic * 25 + ky * 5 + kx) * np2..][..np2];
                    for i in 0..n {
                        let dst = &mut ch.da1[(i * 6 + ic) * Q1..][..Q1];
                        for y in 0..10 {
                            let d = &mut dst[(y + ky) * 14 + kx..][..10];
                            for (a, &b) in d.iter_mut().zip(&row[i * P2 + y * 10..][..10]) {
                                *a += b;
                            }
                        }
                    }
                }
            }
        }
        // Σdy and Σdy·x̂ for BN1.
        let np1 = n * P1;
        ch.sums = [[0.0; 16]; 2];
        for c in 0..6 {
            for i in 0..n {
                for q in 0..Q1 {
                    let arg = ch.arg1[c * n * Q1 + i * Q1 + q];
                    if arg != NONE {
                        let dy = ch.da1[(i * 6 + c) * Q1 + q] as f64;
                        let xhat = ((ch.z1[c * np1 + arg as usize] - bn1.mean[c]) * bn1.invstd[c]) as f64;
                        ch.sums[0][c] += dy;
                        ch.sums[1][c] += dy * xhat;
                    }
                }
            }
        }
    }
}

/// Batched inference-mode forward over `data` (BN with running statistics).
pub fn evaluate_with(p: &LeNetParams, data: &Dataset, pool: &rayon::ThreadPool) -> Evaluation {
    let bn1 = BnBatch::<6>::from_running(&p.bn1.running_mean, &p.bn1.running_var);
    let bn2 = BnBatch::<16>::from_running(&p.bn2.running_mean, &p.bn2.running_var);
    let groups: Vec<(usize, usize)> = (0..data.len())
        .step_by(CHUNK)
        .map(|s| (s, (s + CHUNK).min(data.len())))
        .collect();
    let per_chunk: Vec<(Vec<[f32; 10]>, f64, usize)> = pool.install(|| {
        groups
            .par_iter()
            .map_init(Chunk::default, |ch, &(s, e)| {
                let imgs: Vec<&[u8; IMAGE_PIXELS]> = data.images[s..e].iter().collect();
                ch.conv1(p, &imgs, &data.labels[s..e]);
                ch.conv2(p, &bn1);
                ch.head(p, &bn2, None);
                let logits = ch.logits[..(e - s) * 10]
                    .chunks_exact(10)
                    .map(|l| l.try_into().unwrap())
                    .collect();
                (logits, ch.loss, ch.correct)
            })
            .collect()
    });
    let mut logits = Vec::with_capacity(data.len());
    let (mut loss, mut correct) = (0.0, 0);
    for (l, ls, c) in per_chunk {
        logits.extend(l);
        loss += ls;
        correct += c;
    }
    Evaluation {
        accuracy: correct as f64 / data.len().max(1) as f64,
        loss: loss / data.len().max(1) as f64,
        logits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothed_loss_and_gradient_match_the_formula() {
        let p = init_params(5);
        let images: Vec<[u8; IMAGE_PIXELS]> = (0..CHUNK)
            .map(|i| std::array::from_fn(|j| ((i * 31 + j * 7) % 256) as u8))
            .collect();
        let refs: Vec<&[u8; IMAGE_PIXELS]> = images.iter().collect();
        let labels: Vec<u8> = (0..CHUNK as u8).map(|i| i % 10).collect();
        for eps in [0.0f32, 0.1, 0.3] {
            let mut ch = Chunk::default();
            ch.conv1(&p, &refs, &labels);
            let bn1 = BnBatch::<6>::from_sums(
                &ch.sums[0][..6].try_into().unwrap(),
                &ch.sums[1][..6].try_into().unwrap(),
                CHUNK * 784,
            );
            ch.conv2(&p, &bn1);
            let bn2 = BnBatch::<16>::from_sums(&ch.sums[0], &ch.sums[1], CHUNK * 100);
            let t = Targets {
                batch: 64,
                smoothing: eps,
                distill: None,
            };
            ch.head(&p, &bn2, Some(t));
            let mut loss = 0.0f64;
            for (i, &y) in labels.iter().enumerate() {
                let l: Vec<f64> = ch.logits[i * 10..][..10]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let m = l.iter().cloned().fold(f64::MIN, f64::max);
                let lse = m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                let mut gsum = 0.0f64;
                for (j, &lj) in l.iter().enumerate() {
                    let q = eps as f64 / 10.0
                        + if j == y as usize {
                            1.0 - eps as f64
                        } else {
                            0.0
                        };
                    loss += q * (lse - lj);
                    let g = ((lj - lse).exp() - q) / 64.0;
                    let got = ch.dlogits[i * 10 + j] as f64;
                    assert!(
                        (got - g).abs() < 1e-6,
                        "eps {eps} image {i} class {j}: {got} vs {g}"
                    );
                    gsum += got;
                }
                assert!(gsum.abs() < 1e-6, "a softmax gradient sums to zero");
            }
            assert!(
                (ch.loss - loss).abs() < 1e-3 * loss,
                "eps {eps}: {} vs {loss}",
                ch.loss
            );
        }
    }

    /// The distillation loss in f64, for the finite-difference check.
    fn distilled_loss_f64(l: &[f64], y: usize, eps: f64, soft: &[f64], a: f64, t: f64) -> f64 {
        let lse = |k: f64| {
            let m = l.iter().cloned().fold(f64::MIN, f64::max) / k;
            m + l.iter().map(|v| (v / k - m).exp()).sum::<f64>().ln()
        };
        let (l1, lt) = (lse(1.0), lse(t));
        let mut hard = 0.0;
        let mut kl = 0.0;
        for j in 0..10 {
            let q = eps / 10.0 + if j == y { 1.0 - eps } else { 0.0 };
            hard += q * (l1 - l[j]);
            kl += soft[j] * (soft[j].ln() - (l[j] / t - lt));
        }
        (1.0 - a) * hard + a * t * t * kl
    }

    #[test]
    fn distilled_loss_and_gradient_match_finite_differences() {
        let l = [2.0f32, -1.0, 0.5, 3.0, 0.0, -2.0, 1.0, 0.25, -0.5, 1.5];
        let teacher = [1.0f32, -2.0, 0.0, 4.0, 0.5, -1.0, 0.0, 0.0, -1.0, 2.0];
        let lf: Vec<f64> = l.iter().map(|&v| v as f64).collect();
        let m = lf.iter().cloned().fold(f64::MIN, f64::max);
        let lse = (m + lf.iter().map(|v| (v - m).exp()).sum::<f64>().ln()) as f32;
        for (a, t, eps) in [(0.9f32, 4.0f32, 0.0f32), (0.5, 2.0, 0.1), (1.0, 1.0, 0.0)] {
            let soft = crate::shared::kernels::soften(&teacher, t);
            let sf: Vec<f64> = soft.iter().map(|&v| v as f64).collect();
            let k = crate::shared::config::Distill {
                alpha: a,
                temperature: t,
                teachers: 1,
                fingerprint: 0,
            };
            let mut d = [0.0f32; 10];
            let loss = distilled_loss_grad(&l, lse, 3, eps, &soft, k, 8, &mut d);
            let want = distilled_loss_f64(&lf, 3, eps as f64, &sf, a as f64, t as f64);
            assert!((loss as f64 - want).abs() < 1e-4, "{loss} vs {want}");
            for j in 0..10 {
                let h = 1e-5;
                let (mut up, mut down) = (lf.clone(), lf.clone());
                up[j] += h;
                down[j] -= h;
                let g = (distilled_loss_f64(&up, 3, eps as f64, &sf, a as f64, t as f64)
                    - distilled_loss_f64(&down, 3, eps as f64, &sf, a as f64, t as f64))
                    / (2.0 * h)
                    / 8.0;
                assert!(
                    (d[j] as f64 - g).abs() < 1e-5,
                    "α {a} T {t} class {j}: {} vs {g}",
                    d[j]
                );
            }
        }
        // α = 0 is the label loss alone, bit for bit.
        let soft = crate::shared::kernels::soften(&teacher, 4.0);
        let k = crate::shared::config::Distill {
            alpha: 0.0,
            temperature: 4.0,
            teachers: 1,
            fingerprint: 0,
        };
        let (mut d0, mut d1) = ([0.0f32; 10], [0.0f32; 10]);
        let l0 = smoothed_loss_grad(&l, lse, 3, 0.1, 8, &mut d0);
        let l1 = distilled_loss_grad(&l, lse, 3, 0.1, &soft, k, 8, &mut d1);
        assert_eq!(
            (l0.to_bits(), d0.map(f32::to_bits)),
            (l1.to_bits(), d1.map(f32::to_bits))
        );
    }
}
