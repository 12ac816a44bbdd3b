//! The AVX2 kernels: 8 lanes, 16 registers, so the work is cut into blocks that fit them.
//!
//! * conv1: one pooled row, one half of its columns (8 lanes) and three channels at a time;
//!   per channel and output row two vectors, even and odd output columns (lane `j` = columns
//!   `2j` and `2j + 1`), so pooling is lane-wise: 12 accumulators. A tap whose input column lies
//!   in the padding for some lane takes its weight from [`LeNetX86`]'s `conv1_edge`, `−0` in
//!   that lane: `−0` times the zero padding is `−0`, which added leaves the sum as it was.
//! * conv2: the 16 output channels are two vectors; five positions of one output row at a
//!   time (10 accumulators), each tap's two weight vectors times the input value broadcast.
//! * dense: the weights transposed to `[i][o]`, at most eight vectors of outputs at a time.

use core::arch::x86_64::*;

use super::{Bn, EDGE, LeNetX86, PLANE_W, Planes};
use crate::lenet::IMAGE_PIXELS;

type V = __m256;

/// How many rows ahead [`dense`] prefetches its weights.
const PREFETCH: usize = 6;

/// See [`super::LeNetX86::forward`].
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn forward(p: &LeNetX86, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
    if p.bn {
        run::<true>(p, image)
    } else {
        run::<false>(p, image)
    }
}

#[target_feature(enable = "avx2")]
fn run<const BN: bool>(p: &LeNetX86, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
    let x = p.split(image);
    let mut pool1 = [[[0.0f32; 16]; 14]; 6];
    for py in 0..14 {
        for c0 in [0, 3] {
            conv1_block::<BN, 0>(p, &x, py, c0, &mut pool1);
            conv1_block::<BN, 1>(p, &x, py, c0, &mut pool1);
        }
    }
    let mut c2 = [[[0.0f32; 16]; 10]; 10];
    for (oy, row) in c2.iter_mut().enumerate() {
        conv2_block(p, &pool1, oy, 0, row);
        conv2_block(p, &pool1, oy, 5, row);
    }
    let flat = bn_relu_pool2::<BN>(&p.bn2, &c2);
    let mut h1 = [0.0f32; 128];
    dense::<400, 128, 8>(&p.fc1_w, &p.fc1_b, &flat, 0, true, &mut h1);
    dense::<400, 128, 7>(&p.fc1_w, &p.fc1_b, &flat, 8, true, &mut h1);
    let h1: &[f32; 120] = h1[..120].try_into().unwrap();
    let mut h2 = [0.0f32; 96];
    dense::<120, 96, 6>(&p.fc2_w, &p.fc2_b, h1, 0, true, &mut h2);
    dense::<120, 96, 5>(&p.fc2_w, &p.fc2_b, h1, 6, true, &mut h2);
    let mut out = [0.0f32; 16];
    dense::<84, 16, 2>(
        &p.fc3_w,
        &p.fc3_b,
        h2[..84].try_into().unwrap(),
        0,
        false,
        &mut out,
    );
    out[..10].try_into().unwrap()
}

#[target_feature(enable = "avx2")]
#[inline]
fn load(s: &[f32]) -> V {
    let s = &s[..8];
    // SAFETY: `s` is 8 readable f32; unaligned load.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn store(v: V, d: &mut [f32]) {
    let d = &mut d[..8];
    // SAFETY: `d` is 8 writable f32; unaligned store.
    unsafe { _mm256_storeu_ps(d.as_mut_ptr(), v) }
}

/// Batch norm of lane-wise values with per-lane statistics (already broadcast for conv1).
#[target_feature(enable = "avx2")]
#[inline]
fn bn(v: V, mean: V, sd: V, gamma: V, beta: V) -> V {
    _mm256_add_ps(
        _mm256_mul_ps(_mm256_div_ps(_mm256_sub_ps(v, mean), sd), gamma),
        beta,
    )
}

/// The reference's pooling step `if v > m { m = v }` (`maxps` gives its first operand only when
/// it is the greater).
#[target_feature(enable = "avx2")]
#[inline]
fn pool_step(v: V, m: V) -> V {
    _mm256_max_ps(v, m)
}

/// Pooled row `py`, columns `8·H..8·H + 8` (lanes), channels `c0..c0 + 3`: conv1 → BN → ReLU
/// → pool into `out[c][py]`.
#[target_feature(enable = "avx2")]
#[inline]
fn conv1_block<const BN: bool, const H: usize>(
    p: &LeNetX86,
    x: &Planes,
    py: usize,
    c0: usize,
    out: &mut [[[f32; 16]; 14]; 6],
) {
    // acc[dy][c][parity]
    let mut acc = [[[_mm256_setzero_ps(); 2]; 3]; 2];
    for (c, a) in acc[0].iter_mut().enumerate() {
        *a = [_mm256_set1_ps(p.conv1_b[c0 + c]); 2];
    }
    acc[1] = acc[0];
    for ky in 0..5 {
        let [a0, a1] = &mut acc;
        for (dy, a) in [(0, a0), (1, a1)] {
            // Input rows outside the image are skipped.
            let Some(iy) = (2 * py + dy + ky).checked_sub(2).filter(|&iy| iy < 28) else {
                continue;
            };
            conv1_taps::<H>(a, p, c0, ky, &x.even[iy], &x.odd[iy]);
        }
    }
    for (c, plane) in out[c0..c0 + 3].iter_mut().enumerate() {
        let mut v = [acc[0][c][0], acc[0][c][1], acc[1][c][0], acc[1][c][1]];
        if BN {
            let b = &p.bn1;
            let s = |t: &[f32; 6]| _mm256_set1_ps(t[c0 + c]);
            let (mean, sd, gamma, beta) = (s(&b.mean), s(&b.sd), s(&b.gamma), s(&b.beta));
            for v in &mut v {
                *v = bn(*v, mean, sd, gamma, beta);
            }
        }
        // Window order (0,0), (0,1), (1,0), (1,1): row dy, even then odd column.
        let mut m = _mm256_setzero_ps();
        for v in v {
            m = pool_step(v, m);
        }
        store(m, &mut plane[py][8 * H..]);
    }
}

/// The five taps `kx` of kernel row `ky` over one input row, added to one output row's
/// accumulators `a[c][parity]` (channels `c0 + c`, lanes of half `H`).
#[target_feature(enable = "avx2")]
#[inline]
fn conv1_taps<const H: usize>(
    a: &mut [[V; 2]; 3],
    p: &LeNetX86,
    c0: usize,
    ky: usize,
    even: &[f32; PLANE_W],
    odd: &[f32; PLANE_W],
) {
    for kx in 0..5 {
        // Even outputs read X = 2j + kx, odd ones X = 2j + 1 + kx (see `LeNetX86::split`).
        let at = 8 * H + kx / 2;
        let (xe, xo) = if kx % 2 == 0 {
            (load(&even[at..]), load(&odd[at..]))
        } else {
            (load(&odd[at..]), load(&even[8 * H + kx.div_ceil(2)..]))
        };
        for (c, ac) in a.iter_mut().enumerate() {
            let weight = |parity: usize| match EDGE[parity][kx] {
                usize::MAX => _mm256_set1_ps(p.conv1_w[c0 + c][ky][kx]),
                s => load(&p.conv1_edge[c0 + c][ky][s][8 * H..]),
            };
            ac[0] = _mm256_add_ps(ac[0], _mm256_mul_ps(weight(0), xe));
            ac[1] = _mm256_add_ps(ac[1], _mm256_mul_ps(weight(1), xo));
        }
    }
}

/// conv2's output row `oy`, positions `ox0..ox0 + 5`, all 16 channels (before batch norm).
#[target_feature(enable = "avx2")]
#[inline]
fn conv2_block(
    p: &LeNetX86,
    x: &[[[f32; 16]; 14]; 6],
    oy: usize,
    ox0: usize,
    out: &mut [[f32; 16]; 10],
) {
    let mut acc = [[load(&p.conv2_b), load(&p.conv2_b[8..])]; 5];
    for (ic, plane) in x.iter().enumerate() {
        for ky in 0..5 {
            let row = &plane[oy + ky][ox0..];
            for kx in 0..5 {
                let w = &p.conv2_w[(ic * 5 + ky) * 5 + kx];
                let (w0, w1) = (load(w), load(&w[8..]));
                for (k, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_set1_ps(row[k + kx]);
                    a[0] = _mm256_add_ps(a[0], _mm256_mul_ps(w0, xv));
                    a[1] = _mm256_add_ps(a[1], _mm256_mul_ps(w1, xv));
                }
            }
        }
    }
    for (o, a) in out[ox0..ox0 + 5].iter_mut().zip(acc) {
        store(a[0], o);
        store(a[1], &mut o[8..]);
    }
}

/// conv2's batch norm, ReLU and pool, flattened to fc1's input order `c·25 + y·5 + x`.
#[target_feature(enable = "avx2")]
#[inline]
fn bn_relu_pool2<const BN: bool>(b: &Bn<16>, c2: &[[[f32; 16]; 10]; 10]) -> [f32; 400] {
    let mut flat = [0.0f32; 400];
    for h in 0..2 {
        let s = |t: &[f32; 16]| load(&t[8 * h..]);
        let (mean, sd, gamma, beta) = (s(&b.mean), s(&b.sd), s(&b.gamma), s(&b.beta));
        for py in 0..5 {
            for px in 0..5 {
                let mut m = _mm256_setzero_ps();
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let mut v = load(&c2[2 * py + dy][2 * px + dx][8 * h..]);
                    if BN {
                        v = bn(v, mean, sd, gamma, beta);
                    }
                    m = pool_step(v, m);
                }
                let mut lanes = [0.0f32; 8];
                store(m, &mut lanes);
                for (c, &v) in lanes.iter().enumerate() {
                    flat[(8 * h + c) * 25 + py * 5 + px] = v;
                }
            }
        }
    }
    flat
}

/// Outputs `8·v0..8·(v0 + NV)` of `W·x + b` over the transposed weights (padding outputs are
/// computed and ignored); with `relu`, values `< 0` become `+0` (`−0` stays).
#[target_feature(enable = "avx2")]
#[inline]
fn dense<const I: usize, const N: usize, const NV: usize>(
    w: &[[f32; N]; I],
    b: &[f32; N],
    x: &[f32; I],
    v0: usize,
    relu: bool,
    out: &mut [f32; N],
) {
    let at = |k: usize| 8 * (v0 + k);
    let mut acc: [V; NV] = core::array::from_fn(|k| load(&b[at(k)..]));
    for (i, (row, &xi)) in w.iter().zip(x).enumerate() {
        if let Some(ahead) = w.get(i + PREFETCH) {
            // The weights stream from L2 (fc1's are 200 KB): ask for them a few rows early,
            // one request per 64-byte line.
            for k in (0..NV).step_by(2) {
                _mm_prefetch::<_MM_HINT_T0>(ahead[at(k)..].as_ptr().cast());
            }
        }
        let xv = _mm256_set1_ps(xi);
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_ps(*a, _mm256_mul_ps(load(&row[at(k)..]), xv));
        }
    }
    let zero = _mm256_setzero_ps();
    for (k, a) in acc.into_iter().enumerate() {
        let v = if relu {
            _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(a, zero), a)
        } else {
            a
        };
        store(v, &mut out[at(k)..]);
    }
}
