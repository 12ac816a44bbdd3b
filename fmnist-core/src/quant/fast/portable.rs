//! Plain Rust kernels shaped for auto-vectorization: the host's fast path.

use super::*;

/// `Σ_k w[k]·p_j[k]` for four patches sharing one weight row (one weight load feeds four
/// multiply-adds). `T` is a multiple of 8.
#[inline(always)]
fn dots4<const T: usize>(w: &[i16; T], p: &[[i16; T]; 4]) -> [i32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::dots4(w, p)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
        for k in 0..T {
            let wk = w[k] as i32;
            a0 += wk * p[0][k] as i32;
            a1 += wk * p[1][k] as i32;
            a2 += wk * p[2][k] as i32;
            a3 += wk * p[3][k] as i32;
        }
        [a0, a1, a2, a3]
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2;
pub mod swar;

/// See [`super::conv1_relu_pool`].
pub fn conv1_relu_pool(
    weight: &[[[[i8; 5]; 5]; 1]; 6],
    q: &QLayerParams<6>,
    image: &[u8; IMAGE_PIXELS],
    out: &mut [[[i8; 14]; 14]; 6],
) {
    #[cfg(target_arch = "x86_64")]
    sse2::conv1_relu_pool(weight, q, image, out);
    #[cfg(target_arch = "arm")]
    swar::conv1_relu_pool(weight, q, image, out);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "arm")))]
    conv1_patches(weight, q, image, out);
}

/// conv1 by im2col patches (the non-x86 portable kernel; tested everywhere).
pub fn conv1_patches(
    weight: &[[[[i8; 5]; 5]; 1]; 6],
    q: &QLayerParams<6>,
    image: &[u8; IMAGE_PIXELS],
    out: &mut [[[i8; 14]; 14]; 6],
) {
    // The image with 2 pixels of padding at the input zero point, widened to i16.
    let mut xp = [[q.input_zero_point as i16; 32]; 32];
    for (row, src) in xp[2..30].iter_mut().zip(image.chunks_exact(28)) {
        for (d, &p) in row[2..30].iter_mut().zip(src) {
            *d = p as i16 - 128;
        }
    }
    // Taps `ky·5 + kx`, padded with zero weights to 32.
    let mut w = [[0i16; 32]; 6];
    for (dst, src) in w.iter_mut().zip(weight) {
        for (d, &s) in dst.iter_mut().zip(src.as_flattened().as_flattened()) {
            *d = s as i16;
        }
    }
    let mut patches = [[0i16; 32]; 4];
    for py in 0..14 {
        for px in 0..14 {
            for (patch, (dy, dx)) in patches.iter_mut().zip(WINDOW) {
                let (y, x) = (2 * py + dy, 2 * px + dx);
                for ky in 0..5 {
                    patch[ky * 5..ky * 5 + 5].copy_from_slice(&xp[y + ky][x..x + 5]);
                }
            }
            for (oc, plane) in out.iter_mut().enumerate() {
                plane[py][px] = output(q, oc, max4(dots4(&w[oc], &patches)), true);
            }
        }
    }
}

/// See [`super::conv2_relu_pool`].
pub fn conv2_relu_pool(
    weight: &[[[[i8; 5]; 5]; 6]; 16],
    q: &QLayerParams<16>,
    x: &[[[i8; 14]; 14]; 6],
    out: &mut [[[i8; 5]; 5]; 16],
) {
    if cfg!(target_arch = "arm") {
        return swar::conv2_relu_pool(weight, q, x, out);
    }
    // Taps `ic·25 + ky·5 + kx` (the weight layout), padded with zero weights to 152.
    let mut w = [[0i16; 152]; 16];
    for (dst, src) in w.iter_mut().zip(weight) {
        let src: &[i8; 150] = bytemuck::cast_ref(src);
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s as i16;
        }
    }
    let mut patches = [[0i16; 152]; 4];
    for py in 0..5 {
        for px in 0..5 {
            for (patch, (dy, dx)) in patches.iter_mut().zip(WINDOW) {
                let (y, xx) = (2 * py + dy, 2 * px + dx);
                for (ic, plane) in x.iter().enumerate() {
                    for ky in 0..5 {
                        let src = &plane[y + ky][xx..xx + 5];
                        let dst = &mut patch[ic * 25 + ky * 5..ic * 25 + ky * 5 + 5];
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d = s as i16;
                        }
                    }
                }
            }
            for (oc, plane) in out.iter_mut().enumerate() {
                plane[py][px] = output(q, oc, max4(dots4(&w[oc], &patches)), true);
            }
        }
    }
}

/// `Σ_k w[k]·p_j[k]` for four i16 patches against one i8 weight row.
#[inline(always)]
fn patch_dots4<const T: usize>(w: &[i8; T], p: &[[i16; T]; 4]) -> [i32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::patch_dots4(w, p)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut acc = [0i32; 4];
        for (k, &wk) in w.iter().enumerate() {
            for (a, patch) in acc.iter_mut().zip(p) {
                *a += wk as i32 * patch[k] as i32;
            }
        }
        acc
    }
}

/// See [`super::conv_relu_pool`]: i16 patches, SSE2 `pmaddwd` on x86-64.
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
    let mut patches = [[0i8; T]; 4];
    let mut p16 = [[0i16; T]; 4];
    for py in 0..PH {
        for px in 0..PW {
            window_patches::<IC, K, P, H, W, T>(x, q.input_zero_point, py, px, &mut patches);
            for (d, s) in p16.iter_mut().zip(&patches) {
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = s as i16;
                }
            }
            for (oc, (plane, w)) in out.iter_mut().zip(weight).enumerate() {
                plane[py][px] = output(q, oc, max4(patch_dots4(w, &p16)), true);
            }
        }
    }
}

#[inline(always)]
fn dot<const I: usize>(w: &[i8; I], x: &[i16; I]) -> i32 {
    let mut acc = 0i32;
    for k in 0..I {
        acc += w[k] as i32 * x[k] as i32;
    }
    acc
}

/// See [`super::dense`].
pub fn dense<const I: usize, const O: usize>(
    weight: &[[i8; I]; O],
    q: &QLayerParams<O>,
    x: &[i8; I],
    relu: bool,
    out: &mut [i8; O],
) {
    if cfg!(target_arch = "arm") {
        return swar::dense(weight, q, x, relu, out);
    }
    let x16: [i16; I] = core::array::from_fn(|i| x[i] as i16);
    let mut o = 0;
    #[cfg(target_arch = "x86_64")]
    {
        while o + 4 <= O {
            let acc = sse2::dot_rows4(core::array::from_fn(|r| &weight[o + r]), &x16);
            for (r, &a) in acc.iter().enumerate() {
                out[o + r] = output(q, o + r, a, relu);
            }
            o += 4;
        }
    }
    while o < O {
        out[o] = output(q, o, dot(&weight[o], &x16), relu);
        o += 1;
    }
}
