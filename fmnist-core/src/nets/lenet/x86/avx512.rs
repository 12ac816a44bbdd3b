//! The AVX-512F kernels: 16 lanes, 32 registers, per-lane masks.
//!
//! * conv1: one pooled row at a time, all six channels; per channel and output row two
//!   vectors, even and odd output columns (lane `j` = columns `2j` and `2j + 1`, 14 of the 16
//!   lanes used), so pooling is lane-wise: 24 accumulators. A tap whose input column lies in the
//!   padding for some lane takes its weight from [`LeNetX86`]'s `conv1_edge`, `−0` in that
//!   lane: `−0` times the zero padding is `−0`, which added leaves the sum as it was.
//! * conv2: the 16 output channels are one vector; one output row (10 positions) at a time, each
//!   tap's weight vector times the input value broadcast, then batch norm and pooling lane-wise.
//! * dense: the weights transposed to `[i][o]`, one vector per 16 outputs, the input value
//!   broadcast.

use core::arch::x86_64::*;

use super::{Bn, EDGE, LeNetX86, PLANE_W, Planes};
use crate::lenet::IMAGE_PIXELS;

type V = __m512;

/// How many rows ahead [`dense`] prefetches its weights.
const PREFETCH: usize = 6;

/// See [`super::LeNetX86::forward`].
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward(p: &LeNetX86, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
    if p.bn {
        run::<true>(p, image)
    } else {
        run::<false>(p, image)
    }
}

#[target_feature(enable = "avx512f")]
fn run<const BN: bool>(p: &LeNetX86, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
    let x = p.split(image);
    let mut pool1 = [[[0.0f32; 16]; 14]; 6];
    for py in 0..14 {
        conv1_row::<BN>(p, &x, py, &mut pool1);
    }
    let mut c2 = [[[0.0f32; 16]; 10]; 10];
    for (oy, row) in c2.iter_mut().enumerate() {
        conv2_row(p, &pool1, oy, row);
    }
    let flat = bn_relu_pool2::<BN>(&p.bn2, &c2);
    let mut h1 = [0.0f32; 128];
    dense::<400, 128, 8>(&p.fc1_w, &p.fc1_b, &flat, true, &mut h1);
    let mut h2 = [0.0f32; 96];
    dense::<120, 96, 6>(
        &p.fc2_w,
        &p.fc2_b,
        h1[..120].try_into().unwrap(),
        true,
        &mut h2,
    );
    let mut out = [0.0f32; 16];
    dense::<84, 16, 1>(
        &p.fc3_w,
        &p.fc3_b,
        h2[..84].try_into().unwrap(),
        false,
        &mut out,
    );
    out[..10].try_into().unwrap()
}

#[target_feature(enable = "avx512f")]
#[inline]
fn load(s: &[f32]) -> V {
    let s = &s[..16];
    // SAFETY: `s` is 16 readable f32; unaligned load.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

#[target_feature(enable = "avx512f")]
#[inline]
fn store(v: V, d: &mut [f32]) {
    let d = &mut d[..16];
    // SAFETY: `d` is 16 writable f32; unaligned store.
    unsafe { _mm512_storeu_ps(d.as_mut_ptr(), v) }
}

/// Batch norm of lane-wise values with per-lane statistics (already broadcast for conv1).
#[target_feature(enable = "avx512f")]
#[inline]
fn bn(v: V, mean: V, sd: V, gamma: V, beta: V) -> V {
    _mm512_add_ps(
        _mm512_mul_ps(_mm512_div_ps(_mm512_sub_ps(v, mean), sd), gamma),
        beta,
    )
}

/// The reference's pooling step `if v > m { m = v }` (`maxps` gives its first operand only when
/// it is the greater).
#[target_feature(enable = "avx512f")]
#[inline]
fn pool_step(v: V, m: V) -> V {
    _mm512_max_ps(v, m)
}

/// Pooled row `py` of conv1 → BN → ReLU → pool, all six channels, into `out[c][py]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn conv1_row<const BN: bool>(p: &LeNetX86, x: &Planes, py: usize, out: &mut [[[f32; 16]; 14]; 6]) {
    // acc[dy][c][parity]
    let mut acc = [[[_mm512_setzero_ps(); 2]; 6]; 2];
    for (c, a) in acc[0].iter_mut().enumerate() {
        *a = [_mm512_set1_ps(p.conv1_b[c]); 2];
    }
    acc[1] = acc[0];
    for ky in 0..5 {
        let [a0, a1] = &mut acc;
        for (dy, a) in [(0, a0), (1, a1)] {
            // Input rows outside the image are skipped.
            let Some(iy) = (2 * py + dy + ky).checked_sub(2).filter(|&iy| iy < 28) else {
                continue;
            };
            conv1_taps(a, p, ky, &x.even[iy], &x.odd[iy]);
        }
    }
    for (c, plane) in out.iter_mut().enumerate() {
        let mut v = [acc[0][c][0], acc[0][c][1], acc[1][c][0], acc[1][c][1]];
        if BN {
            let b = &p.bn1;
            let s = |t: &[f32; 6]| _mm512_set1_ps(t[c]);
            let (mean, sd, gamma, beta) = (s(&b.mean), s(&b.sd), s(&b.gamma), s(&b.beta));
            for v in &mut v {
                *v = bn(*v, mean, sd, gamma, beta);
            }
        }
        // Window order (0,0), (0,1), (1,0), (1,1): row dy, even then odd column.
        let mut m = _mm512_setzero_ps();
        for v in v {
            m = pool_step(v, m);
        }
        store(m, &mut plane[py]);
    }
}

/// The five taps `kx` of kernel row `ky` over one input row, added to one output row's
/// accumulators `a[c][parity]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn conv1_taps(
    a: &mut [[V; 2]; 6],
    p: &LeNetX86,
    ky: usize,
    even: &[f32; PLANE_W],
    odd: &[f32; PLANE_W],
) {
    for kx in 0..5 {
        // Even outputs read X = 2j + kx, odd ones X = 2j + 1 + kx (see `LeNetX86::split`).
        let (xe, xo) = if kx % 2 == 0 {
            (load(&even[kx / 2..]), load(&odd[kx / 2..]))
        } else {
            (load(&odd[kx / 2..]), load(&even[kx.div_ceil(2)..]))
        };
        for (c, ac) in a.iter_mut().enumerate() {
            let weight = |parity: usize| match EDGE[parity][kx] {
                usize::MAX => _mm512_set1_ps(p.conv1_w[c][ky][kx]),
                s => load(&p.conv1_edge[c][ky][s]),
            };
            ac[0] = _mm512_add_ps(ac[0], _mm512_mul_ps(weight(0), xe));
            ac[1] = _mm512_add_ps(ac[1], _mm512_mul_ps(weight(1), xo));
        }
    }
}

/// conv2's output row `oy`, all 16 channels per position (before batch norm).
#[target_feature(enable = "avx512f")]
#[inline]
fn conv2_row(p: &LeNetX86, x: &[[[f32; 16]; 14]; 6], oy: usize, out: &mut [[f32; 16]; 10]) {
    let mut acc = [load(&p.conv2_b); 10];
    for (ic, plane) in x.iter().enumerate() {
        for ky in 0..5 {
            let row = &plane[oy + ky];
            for kx in 0..5 {
                let w = load(&p.conv2_w[(ic * 5 + ky) * 5 + kx]);
                for (ox, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(w, _mm512_set1_ps(row[ox + kx])));
                }
            }
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        store(a, o);
    }
}

/// conv2's batch norm, ReLU and pool, flattened to fc1's input order `c·25 + y·5 + x`.
#[target_feature(enable = "avx512f")]
#[inline]
fn bn_relu_pool2<const BN: bool>(b: &Bn<16>, c2: &[[[f32; 16]; 10]; 10]) -> [f32; 400] {
    let (mean, sd, gamma, beta) = (load(&b.mean), load(&b.sd), load(&b.gamma), load(&b.beta));
    let mut flat = [0.0f32; 400];
    for py in 0..5 {
        for px in 0..5 {
            let mut m = _mm512_setzero_ps();
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let mut v = load(&c2[2 * py + dy][2 * px + dx]);
                if BN {
                    v = bn(v, mean, sd, gamma, beta);
                }
                m = pool_step(v, m);
            }
            let mut lanes = [0.0f32; 16];
            store(m, &mut lanes);
            for (c, &v) in lanes.iter().enumerate() {
                flat[c * 25 + py * 5 + px] = v;
            }
        }
    }
    flat
}

/// `out = W·x + b` over the transposed weights, `N = 16·NV` outputs (the padding ones are
/// computed and ignored); with `relu`, values `< 0` become `+0` (`−0` stays).
#[target_feature(enable = "avx512f")]
#[inline]
fn dense<const I: usize, const N: usize, const NV: usize>(
    w: &[[f32; N]; I],
    b: &[f32; N],
    x: &[f32; I],
    relu: bool,
    out: &mut [f32; N],
) {
    const { assert!(N == 16 * NV) };
    let mut acc: [V; NV] = core::array::from_fn(|k| load(&b[16 * k..]));
    for (i, (row, &xi)) in w.iter().zip(x).enumerate() {
        if let Some(ahead) = w.get(i + PREFETCH) {
            // The weights stream from L2 (fc1's are 200 KB): ask for them a few rows early.
            for k in 0..NV {
                _mm_prefetch::<_MM_HINT_T0>(ahead[16 * k..].as_ptr().cast());
            }
        }
        let xv = _mm512_set1_ps(xi);
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm512_add_ps(*a, _mm512_mul_ps(load(&row[16 * k..]), xv));
        }
    }
    let zero = _mm512_setzero_ps();
    for (k, a) in acc.into_iter().enumerate() {
        let v = if relu {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, zero);
            _mm512_mask_mov_ps(a, neg, zero)
        } else {
            a
        };
        store(v, &mut out[16 * k..]);
    }
}
