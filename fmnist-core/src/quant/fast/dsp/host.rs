//! The Rust versions of the assembly kernels in `cortex_m4`, on the emulated `SMLAD` and
//! `SXTB16` ([`super::intrinsics`]): same data layouts, same pairings, same sums, so the host
//! tests exercise what the device computes.

use super::intrinsics::{smlad, sxtb16, sxtb16_ror8};
use super::{CONV2_WINDOWS, Conv1Image, Conv1Weights, Conv2Image, Conv2Weights, WindowPairs};

/// The four sums `[(0,0), (0,1), (1,0), (1,1)]` of the 2x2 window at rows `y, y+1` and
/// columns `2px, 2px+1` of conv1, in Rust: one window of `cortex_m4::window_rows2`.
#[inline(always)]
pub(super) fn window_rows(w: &Conv1Weights, xt: &Conv1Image, px: usize, y: usize) -> [i32; 4] {
    let (mut a00, mut a01, mut a10, mut a11) = (0i32, 0i32, 0i32, 0i32);
    for ky in 0..5 {
        for j in 0..3 {
            let [k0, k1] = w.0[ky][j];
            let (x0, x1) = (xt.0[px + j][y + ky], xt.0[px + j][y + ky + 1]);
            a00 = smlad(k0, x0, a00);
            a10 = smlad(k0, x1, a10);
            a01 = smlad(k1, x0, a01);
            a11 = smlad(k1, x1, a11);
        }
    }
    [a00, a01, a10, a11]
}

/// [`window_rows`] at rows `y` and `y + 2`: what `cortex_m4::window_rows2` computes.
#[inline(always)]
pub(super) fn window_rows2(
    w: &Conv1Weights,
    xt: &Conv1Image,
    px: usize,
    y: usize,
) -> [[i32; 4]; 2] {
    [window_rows(w, xt, px, y), window_rows(w, xt, px, y + 2)]
}

/// `Σ w·p_j` of one weight row against the four patches, in Rust: what
/// `cortex_m4::patch_dots4` computes.
#[inline(always)]
pub(super) fn patch_dots4<const T: usize>(w: &[i8; T], p: &WindowPairs) -> [i32; 4] {
    let mut acc = [0i32; 4];
    for (word, group) in w.as_chunks::<4>().0.iter().zip(&p.0) {
        let word = u32::from_le_bytes(word.map(|b| b as u8));
        let (w02, w13) = (sxtb16(word), sxtb16_ror8(word));
        for (a, &[x02, x13]) in acc.iter_mut().zip(group) {
            *a = smlad(w13, x13, smlad(w02, x02, *a));
        }
    }
    acc
}

/// The four sums `[(0,0), (0,1), (1,0), (1,1)]` of the 2x2 window `win` (top-left input
/// `CONV2_WINDOWS[win]` = `[x, y]`) of conv2, in Rust: what `cortex_m4::conv2_window` computes.
#[inline(always)]
pub(super) fn conv2_window(w: &Conv2Weights, xt: &Conv2Image, win: usize) -> [i32; 4] {
    let [x, y] = CONV2_WINDOWS[win].map(usize::from);
    let (mut a00, mut a01, mut a10, mut a11) = (0i32, 0i32, 0i32, 0i32);
    for (p, wp) in w.0.iter().enumerate() {
        for (ky, wr) in wp.iter().enumerate() {
            for (kx, &k) in wr.iter().enumerate() {
                let (c0, c1) = (&xt.0[x + kx][p], &xt.0[x + kx + 1][p]);
                a00 = smlad(k, c0[y + ky], a00);
                a01 = smlad(k, c1[y + ky], a01);
                a10 = smlad(k, c0[y + ky + 1], a10);
                a11 = smlad(k, c1[y + ky + 1], a11);
            }
        }
    }
    [a00, a01, a10, a11]
}

/// `Σ w·x` of four consecutive weight rows (`rows[r]` = the words of `block[r]`): what
/// `cortex_m4::dense_rows4` computes.
#[inline(always)]
pub(super) fn dense_rows4<const I: usize>(
    _block: &[[i8; I]],
    rows: [&[[u8; 4]]; 4],
    xs: &[[u32; 2]],
) -> [i32; 4] {
    let mut acc = [0i32; 4];
    for (g, &[x02, x13]) in xs.iter().enumerate() {
        for r in 0..4 {
            let word = u32::from_le_bytes(rows[r][g]);
            acc[r] = smlad(sxtb16_ror8(word), x13, smlad(sxtb16(word), x02, acc[r]));
        }
    }
    acc
}
