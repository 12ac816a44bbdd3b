//! Winograd F(2×2, 3×3) for conv2 of the wide CNN (32 → 64 channels, 14×14, pad 1), in all
//! three passes of training.
//!
//! Each 14×14 plane is cut into 7×7 tiles of 2×2 outputs, read from overlapping 4×4 input
//! tiles of the zero-padded 16×16 plane. With `V = Bᵀ·d·B` (input tile), `U = G·g·Gᵀ` (filter)
//! and `Y = Aᵀ·M·A` (output tile), the convolution becomes 16 independent GEMMs, one per
//! position ξ of the 4×4 transformed tile, over the channels and the tiles:
//!
//! ```text
//! forward       M[ξ]  (64×T) = U[ξ]  (64×32) · V[ξ]  (32×T)
//! input grad    dV[ξ] (32×T) = U[ξ]ᵀ (32×64) · dM[ξ] (64×T),   dM = A·dY·Aᵀ, dd += B·dV·Bᵀ
//! weight grad   dU[ξ] (64×32) = dM[ξ] (64×T) · V[ξ]ᵀ (T×32),   dg = Gᵀ·dU·G
//! ```
//!
//! 16 × 64 × 32 multiply-adds per tile instead of 4 × 64 × 288 per four outputs: 2.25× fewer
//! in each pass (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). The
//! transforms take only additions and halvings. The tile-to-output layout of the three passes is
//! fixed, so the arithmetic depends on nothing but the data, as for the direct kernels.
//!
//! Buffers hold `[16][rows][T]` with `T` = 49 tiles per image (tile `i·49 + ty·7 + tx`), each
//! of the 16 planes followed by [`SLACK`] spare floats: the transforms move eight tiles (one
//! row of seven and the next row's first) per vector, and whatever lands past a row's seventh
//! tile is overwritten in order or falls into the slack.

use crate::shared::kernels::{gemm, simd_dispatch};

use super::common::{BnGrad, C1, C2, P2, bn_pool_grad_row, grow};

/// Tiles per image (7×7).
pub const TILES: usize = 49;
/// Spare floats after each transformed plane (see the module docs).
pub const SLACK: usize = 8;

/// Floats of a `[16][rows][n·49]` buffer with its slack.
pub fn plane_len(rows: usize, n: usize) -> usize {
    rows * n * TILES + SLACK
}

/// The transformed conv2 filters `U = G·g·Gᵀ`, `[16][64][32]`: computed once per step.
pub struct Filters {
    u: Vec<f32>,
}

/// `G·k` for three taps: `[k0, (k0+k1+k2)/2, (k0−k1+k2)/2, k2]`.
#[inline(always)]
fn g3(k: [f32; 3]) -> [f32; 4] {
    [
        k[0],
        0.5 * (k[0] + k[1] + k[2]),
        0.5 * (k[0] - k[1] + k[2]),
        k[2],
    ]
}

/// `Gᵀ·u`, the adjoint of [`g3`].
#[inline(always)]
fn gt4(u: [f32; 4]) -> [f32; 3] {
    [
        u[0] + 0.5 * (u[1] + u[2]),
        0.5 * (u[1] - u[2]),
        0.5 * (u[1] + u[2]) + u[3],
    ]
}

impl Filters {
    /// Transforms conv2's weights `[64][32][3][3]`.
    pub fn new(w: &[[[[f32; 3]; 3]; C1]; C2]) -> Self {
        let mut u = vec![0.0f32; 16 * C2 * C1];
        for (o, wo) in w.iter().enumerate() {
            for (c, g) in wo.iter().enumerate() {
                // Rows first (h = g·Gᵀ, 3×4), then columns (G·h, 4×4).
                let h: [[f32; 4]; 3] = std::array::from_fn(|k| g3(g[k]));
                for b in 0..4 {
                    let col = g3([h[0][b], h[1][b], h[2][b]]);
                    for (a, &x) in col.iter().enumerate() {
                        u[((a * 4 + b) * C2 + o) * C1 + c] = x;
                    }
                }
            }
        }
        Filters { u }
    }

    fn plane(&self, xi: usize) -> &[f32] {
        &self.u[xi * C2 * C1..][..C2 * C1]
    }
}

/// Eight tiles' values of one transform position: the unit of the vectorised transforms.
type L = [f32; 8];

// Plain loops over fixed-size arrays, not `array::from_fn`: these compile to single vector
// instructions once inlined, where `from_fn` is left as an out-of-line call.
#[inline(always)]
fn add(a: L, b: L) -> L {
    let mut r = a;
    for x in 0..8 {
        r[x] += b[x];
    }
    r
}

#[inline(always)]
fn sub(a: L, b: L) -> L {
    let mut r = a;
    for x in 0..8 {
        r[x] -= b[x];
    }
    r
}

#[inline(always)]
fn neg(a: L) -> L {
    let mut r = a;
    for v in &mut r {
        *v = -*v;
    }
    r
}

#[inline(always)]
fn load(s: &[f32]) -> L {
    let mut r = [0.0f32; 8];
    r.copy_from_slice(&s[..8]);
    r
}

#[inline(always)]
fn store(d: &mut [f32], v: L) {
    d[..8].copy_from_slice(&v);
}

/// `Bᵀ·d`: `[d0 − d2, d1 + d2, d2 − d1, d1 − d3]`.
#[inline(always)]
fn bt(d: [L; 4]) -> [L; 4] {
    [
        sub(d[0], d[2]),
        add(d[1], d[2]),
        sub(d[2], d[1]),
        sub(d[1], d[3]),
    ]
}

/// `B·x`, the adjoint of [`bt`]: `[x0, x1 − x2 + x3, x1 + x2 − x0, −x3]`.
#[inline(always)]
fn b4(x: [L; 4]) -> [L; 4] {
    [
        x[0],
        add(sub(x[1], x[2]), x[3]),
        sub(add(x[1], x[2]), x[0]),
        neg(x[3]),
    ]
}

/// `Aᵀ·m`: `[m0 + m1 + m2, m1 − m2 − m3]`.
#[inline(always)]
fn at(m: [L; 4]) -> [L; 2] {
    [add(add(m[0], m[1]), m[2]), sub(sub(m[1], m[2]), m[3])]
}

/// `A·y`, the adjoint of [`at`]: `[y0, y0 + y1, y0 − y1, −y1]`.
#[inline(always)]
fn a4(y: [L; 2]) -> [L; 4] {
    [y[0], add(y[0], y[1]), sub(y[0], y[1]), neg(y[1])]
}

/// One 14-wide row as its even and odd columns, each padded to eight lanes with zeros.
#[inline(always)]
fn split_row(row: &[f32]) -> (L, L) {
    let mut p = [0.0f32; 16];
    p[..14].copy_from_slice(&row[..14]);
    let (mut even, mut odd) = ([0.0f32; 8], [0.0f32; 8]);
    for x in 0..8 {
        even[x] = p[2 * x];
        odd[x] = p[2 * x + 1];
    }
    (even, odd)
}

/// The inverse of [`split_row`]: writes the first seven lanes of `even` and `odd` interleaved.
#[inline(always)]
fn join_row(row: &mut [f32], even: L, odd: L) {
    let mut p = [0.0f32; 16];
    for x in 0..8 {
        p[2 * x] = even[x];
        p[2 * x + 1] = odd[x];
    }
    row[..14].copy_from_slice(&p[..14]);
}

simd_dispatch! {
    /// `V = Bᵀ·d·B` of every 4×4 tile of the zero-padded planes of `a` (`[32][n][14·14]`) into
    /// `v` (`[16][32][n·49]` with slack).
    fn input_transform(a: &[f32], n: usize, v: &mut [f32]) {
        let t = n * TILES;
        let ps = C1 * t + SLACK;
        assert!(a.len() >= C1 * n * P2 && v.len() >= 16 * ps);
        for c in 0..C1 {
            for i in 0..n {
                let src = &a[(c * n + i) * P2..][..P2];
                // The padded 16×16 plane by column parity: e[y][k] is padded column 2k (data
                // column 2k − 1), o[y][k] padded column 2k + 1 (data column 2k).
                let mut e = [[0.0f32; 9]; 16];
                let mut o = [[0.0f32; 9]; 16];
                for y in 0..14 {
                    let (even, odd) = split_row(&src[y * 14..]);
                    o[y + 1][..8].copy_from_slice(&even);
                    e[y + 1][1..9].copy_from_slice(&odd);
                }
                // Along rows: tile tx reads padded columns 2tx..2tx+3, which are e[tx], o[tx],
                // e[tx+1], o[tx+1]; r[y][b] = (d·B)[y][b] for eight tiles.
                let mut r = [[[0.0f32; 8]; 4]; 16];
                for (y, ry) in r.iter_mut().enumerate() {
                    *ry = bt([load(&e[y]), load(&o[y]), load(&e[y][1..]), load(&o[y][1..])]);
                }
                // Along columns (the eighth tile is overwritten later, or lands in the slack).
                for ty in 0..7 {
                    let at = c * t + i * TILES + ty * 7;
                    let y = 2 * ty;
                    for b in 0..4 {
                        let col = bt([r[y][b], r[y + 1][b], r[y + 2][b], r[y + 3][b]]);
                        for (a4, &lanes) in col.iter().enumerate() {
                            store(&mut v[(a4 * 4 + b) * ps + at..], lanes);
                        }
                    }
                }
            }
        }
    }
}

simd_dispatch! {
    /// `Y = Aᵀ·M·A` of every tile of `m` (`[16][64][n·49]` with slack) plus `bias` into `z`
    /// (`[64][n][14·14]`).
    fn output_transform(m: &[f32], n: usize, bias: &[f32], z: &mut [f32]) {
        let t = n * TILES;
        let ps = C2 * t + SLACK;
        assert!(m.len() >= 16 * ps && z.len() >= C2 * n * P2 && bias.len() >= C2);
        for o in 0..C2 {
            let b8 = [bias[o]; 8];
            for i in 0..n {
                let dst = &mut z[(o * n + i) * P2..][..P2];
                for ty in 0..7 {
                    let base = o * t + i * TILES + ty * 7;
                    let mut mm = [[0.0f32; 8]; 16];
                    for (xi, l) in mm.iter_mut().enumerate() {
                        *l = load(&m[xi * ps + base..]);
                    }
                    // Along each row of the tile (over b), then down the columns (over a).
                    let mut s = [[[0.0f32; 8]; 2]; 4];
                    for (a, sa) in s.iter_mut().enumerate() {
                        *sa = at([mm[4 * a], mm[4 * a + 1], mm[4 * a + 2], mm[4 * a + 3]]);
                    }
                    let y0 = at([s[0][0], s[1][0], s[2][0], s[3][0]]);
                    let y1 = at([s[0][1], s[1][1], s[2][1], s[3][1]]);
                    for dy in 0..2 {
                        let row = &mut dst[(2 * ty + dy) * 14..][..14];
                        join_row(row, add(y0[dy], b8), add(y1[dy], b8));
                    }
                }
            }
        }
    }
}

/// `dM = A·dY·Aᵀ` of the seven 2×2 tiles in two 14-wide output rows (`rows`, zero past 14)
/// into `dm` (`[16][64][n·49]`, planes `ps` apart) at tile `base`.
#[inline(always)]
fn store_output_grad(dm: &mut [f32], ps: usize, base: usize, rows: &[[f32; 16]; 2]) {
    let split = |r: &[f32; 16]| split_row(&r[..14]);
    let (y00, y01) = split(&rows[0]);
    let (y10, y11) = split(&rows[1]);
    // Along the rows (over the output column), then down the columns.
    let u0 = a4([y00, y01]);
    let u1 = a4([y10, y11]);
    for b in 0..4 {
        let col = a4([u0[b], u1[b]]);
        for (a, &lanes) in col.iter().enumerate() {
            store(&mut dm[(a * 4 + b) * ps + base..], lanes);
        }
    }
}

simd_dispatch! {
    /// `dM = A·dY·Aᵀ` of every 2×2 output tile of `dz` (`[64][n][14·14]`) into `dm`
    /// (`[16][64][n·49]` with slack); the bias gradient (Σdz per channel) into `gbias`.
    fn output_grad_transform(dz: &[f32], n: usize, dm: &mut [f32], gbias: &mut [f32]) {
        let t = n * TILES;
        let ps = C2 * t + SLACK;
        assert!(dm.len() >= 16 * ps && dz.len() >= C2 * n * P2 && gbias.len() >= C2);
        for o in 0..C2 {
            let mut sum = 0.0f64;
            for i in 0..n {
                let src = &dz[(o * n + i) * P2..][..P2];
                for ty in 0..7 {
                    let mut rows = [[0.0f32; 16]; 2];
                    for (dy, r) in rows.iter_mut().enumerate() {
                        r[..14].copy_from_slice(&src[(2 * ty + dy) * 14..][..14]);
                    }
                    store_output_grad(dm, ps, o * t + i * TILES + ty * 7, &rows);
                }
                sum += plane_sum(src);
            }
            gbias[o] = sum as f32;
        }
    }
}

/// Σ of one 14×14 plane: f32 lanes, then f64.
#[inline(always)]
fn plane_sum(p: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 14];
    for row in p.chunks_exact(14) {
        for x in 0..14 {
            lanes[x] += row[x];
        }
    }
    lanes.iter().map(|&v| v as f64).sum()
}

simd_dispatch! {
    /// [`output_grad_transform`] of the `dz` that `g` defines for conv2's output `z`
    /// (`[64][n][14·14]`; `g`'s pooled output (c, i, q) at `c·49 + i·3136 + q`), without
    /// storing it: the same values, element by element, as `bn_backward` gives.
    fn pool_bn_grad_transform(z: &[f32], g: &BnGrad, n: usize, dm: &mut [f32], gbias: &mut [f32]) {
        let t = n * TILES;
        let ps = C2 * t + SLACK;
        assert!(dm.len() >= 16 * ps && z.len() >= C2 * n * P2 && gbias.len() >= C2);
        for o in 0..C2 {
            let bn = g.channel(o);
            let mut sum = 0.0f64;
            for i in 0..n {
                let src = &z[(o * n + i) * P2..][..P2];
                let mut lanes = [0.0f32; 14];
                for ty in 0..7 {
                    let mut rows = [[0.0f32; 16]; 2];
                    // The pool windows of this tile row are its seven 2×2 tiles.
                    let q = o * 49 + i * 3136 + ty * 7;
                    for (dy, r) in rows.iter_mut().enumerate() {
                        let y = 2 * ty + dy;
                        bn_pool_grad_row(
                            &bn,
                            &src[y * 14..][..14],
                            &g.dout[q..][..7],
                            &g.arg[q..][..7],
                            (i * P2 + y * 14) as u32,
                            &mut r[..14],
                        );
                    }
                    for r in &rows {
                        for x in 0..14 {
                            lanes[x] += r[x];
                        }
                    }
                    store_output_grad(dm, ps, o * t + i * TILES + ty * 7, &rows);
                }
                sum += lanes.iter().map(|&v| v as f64).sum::<f64>();
            }
            gbias[o] = sum as f32;
        }
    }
}

simd_dispatch! {
    /// `dd = Σ B·dV·Bᵀ` over the overlapping tiles of `dv` (`[16][32][n·49]` with slack), cut
    /// back to the unpadded planes of `da` (`[32][n][14·14]`).
    #[allow(clippy::needless_range_loop)] // k indexes the tile row and two arrays
    fn input_grad_transform(dv: &[f32], n: usize, da: &mut [f32]) {
        let t = n * TILES;
        let ps = C1 * t + SLACK;
        assert!(dv.len() >= 16 * ps && da.len() >= C1 * n * P2);
        for c in 0..C1 {
            for i in 0..n {
                // The padded 16×16 gradient by column parity, as in `input_transform`.
                let mut e = [[0.0f32; 9]; 16];
                let mut o = [[0.0f32; 9]; 16];
                for ty in 0..7 {
                    let base = c * t + i * TILES + ty * 7;
                    // The seven tiles of this row; the eighth lane must stay 0.
                    let mut d = [[0.0f32; 8]; 16];
                    for (xi, l) in d.iter_mut().enumerate() {
                        *l = load(&dv[xi * ps + base..]);
                        l[7] = 0.0;
                    }
                    // Down the tile's columns (over a), then along its rows (over b), added
                    // into padded columns 2tx..2tx+3 = e[tx], o[tx], e[tx+1], o[tx+1].
                    let mut q = [[[0.0f32; 8]; 4]; 4];
                    for (b, qb) in q.iter_mut().enumerate() {
                        *qb = b4([d[b], d[4 + b], d[8 + b], d[12 + b]]);
                    }
                    for k in 0..4 {
                        let r = b4([q[0][k], q[1][k], q[2][k], q[3][k]]);
                        let yy = 2 * ty + k;
                        let (er, or) = (&mut e[yy], &mut o[yy]);
                        for x in 0..8 {
                            er[x] += r[0][x];
                            or[x] += r[1][x];
                        }
                        for x in 0..8 {
                            er[x + 1] += r[2][x];
                            or[x + 1] += r[3][x];
                        }
                    }
                }
                let dst = &mut da[(c * n + i) * P2..][..P2];
                for y in 0..14 {
                    join_row(&mut dst[y * 14..], load(&o[y + 1]), load(&e[y + 1][1..]));
                }
            }
        }
    }
}

/// Conv2's weight gradient `[64][32][3][3]` (flattened) from its Winograd-domain form `du`
/// (`[16][64][32]`): `dg = Gᵀ·dU·G`.
fn weight_grad_transform(du: &[f32], g: &mut [f32]) {
    assert!(du.len() >= 16 * C2 * C1 && g.len() >= C2 * C1 * 9);
    for o in 0..C2 {
        for c in 0..C1 {
            let x: [[f32; 4]; 4] = std::array::from_fn(|a| {
                std::array::from_fn(|b| du[((a * 4 + b) * C2 + o) * C1 + c])
            });
            // Down the columns (Gᵀ over a), then along the rows (over b).
            let p: [[f32; 3]; 4] =
                std::array::from_fn(|b| gt4([x[0][b], x[1][b], x[2][b], x[3][b]]));
            let out = &mut g[(o * C1 + c) * 9..][..9];
            for k in 0..3 {
                let row = gt4([p[0][k], p[1][k], p[2][k], p[3][k]]);
                out[k * 3..][..3].copy_from_slice(&row);
            }
        }
    }
}

/// Per-thread scratch of the Winograd-domain tensors, reused by every chunk a thread computes,
/// so it stays in cache instead of adding 3.2 MB per chunk to the step's memory traffic. The
/// backward pass transforms conv2's input again rather than keeping V from the forward pass:
/// that costs less than writing and reading back four times the input. Every element read is
/// written first (the slack excepted, whose lanes are never used), so stale contents cannot
/// leak into the results.
struct Scratch {
    /// `[16][32][T]`: V.
    v: Vec<f32>,
    /// `[16][64][T]`: M in the forward pass, dM in the backward.
    m: Vec<f32>,
    /// `[16][32][T]`: dV.
    dv: Vec<f32>,
    /// `[16][64][32]`: dU.
    du: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new(Scratch { v: Vec::new(), m: Vec::new(), dv: Vec::new(), du: Vec::new() })
    };
}

/// Runs `body` with this thread's scratch, sized for `n` images.
fn with_scratch<R>(n: usize, body: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with_borrow_mut(|s| {
        grow(&mut s.v, 16 * plane_len(C1, n));
        grow(&mut s.m, 16 * plane_len(C2, n));
        grow(&mut s.dv, 16 * plane_len(C1, n));
        grow(&mut s.du, 16 * C2 * C1);
        body(s)
    })
}

/// Conv2 forward of `n` images: `a` (`[32][n][14·14]`) → `z` (`[64][n][14·14]`, with bias).
pub fn forward(f: &Filters, bias: &[f32], a: &[f32], n: usize, z: &mut [f32]) {
    with_scratch(n, |s| forward_in(f, bias, a, n, &mut s.v, &mut s.m, z))
}

fn forward_in(
    f: &Filters,
    bias: &[f32],
    a: &[f32],
    n: usize,
    v: &mut [f32],
    m: &mut [f32],
    z: &mut [f32],
) {
    let t = n * TILES;
    let (pv, pm) = (plane_len(C1, n), plane_len(C2, n));
    input_transform(a, n, v);
    for xi in 0..16 {
        gemm(
            C2,
            C1,
            t,
            f.plane(xi),
            (C1, 1),
            &v[xi * pv..][..C1 * t],
            (t, 1),
            0.0,
            &mut m[xi * pm..][..C2 * t],
            (t, 1),
        );
    }
    output_transform(m, n, bias, z);
}

/// Where conv2's output gradient comes from.
pub enum OutputGrad<'a> {
    /// Given, `[64][n][14·14]`.
    Plain(&'a [f32]),
    /// Computed on the fly from conv2's output `z` through BN2 → ReLU → pool 2.
    PoolBn(&'a [f32], BnGrad<'a>),
}

/// Conv2 backward of `n` images from the gradient of its output: the weight gradient into `g`
/// (`[64][32·9]`), the bias gradient into `gbias` and the input gradient into `da`
/// (`[32][n][14·14]`). `a` is conv2's input, as given to [`forward`].
pub fn backward(
    f: &Filters,
    dz: OutputGrad,
    n: usize,
    a: &[f32],
    g: &mut [f32],
    gbias: &mut [f32],
    da: &mut [f32],
) {
    with_scratch(n, |s| {
        input_transform(a, n, &mut s.v);
        backward_in(f, dz, n, &s.v, &mut s.m, &mut s.dv, &mut s.du, g, gbias, da)
    })
}

#[allow(clippy::too_many_arguments)]
fn backward_in(
    f: &Filters,
    dz: OutputGrad,
    n: usize,
    v: &[f32],
    dm: &mut [f32],
    dv: &mut [f32],
    du: &mut [f32],
    g: &mut [f32],
    gbias: &mut [f32],
    da: &mut [f32],
) {
    let t = n * TILES;
    let (pv, pm) = (plane_len(C1, n), plane_len(C2, n));
    match dz {
        OutputGrad::Plain(dz) => output_grad_transform(dz, n, dm, gbias),
        OutputGrad::PoolBn(z, g) => pool_bn_grad_transform(z, &g, n, dm, gbias),
    }
    for xi in 0..16 {
        let dmx = &dm[xi * pm..][..C2 * t];
        // dU[ξ] (64×32) = dM[ξ] (64×T) · V[ξ]ᵀ (T×32)
        gemm(
            C2,
            t,
            C1,
            dmx,
            (t, 1),
            &v[xi * pv..][..C1 * t],
            (1, t),
            0.0,
            &mut du[xi * C2 * C1..][..C2 * C1],
            (C1, 1),
        );
        // dV[ξ] (32×T) = U[ξ]ᵀ (32×64) · dM[ξ] (64×T)
        gemm(
            C1,
            C2,
            t,
            f.plane(xi),
            (1, C1),
            dmx,
            (t, 1),
            0.0,
            &mut dv[xi * pv..][..C1 * t],
            (t, 1),
        );
    }
    weight_grad_transform(du, g);
    input_grad_transform(dv, n, da);
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the references index by the formula's variables
mod tests {
    use super::super::common::NONE;
    use super::*;

    /// Reference conv2 (3×3, pad 1) by definition, in f64.
    fn conv_ref(w: &[[[[f32; 3]; 3]; C1]; C2], bias: &[f32], a: &[f32], n: usize) -> Vec<f64> {
        let mut z = vec![0.0f64; C2 * n * P2];
        for o in 0..C2 {
            for i in 0..n {
                for y in 0..14 {
                    for x in 0..14 {
                        let mut s = bias[o] as f64;
                        for c in 0..C1 {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (sy, sx) = (y + ky, x + kx);
                                    if (1..=14).contains(&sy) && (1..=14).contains(&sx) {
                                        s += w[o][c][ky][kx] as f64
                                            * a[(c * n + i) * P2 + (sy - 1) * 14 + sx - 1] as f64;
                                    }
                                }
                            }
                        }
                        z[(o * n + i) * P2 + y * 14 + x] = s;
                    }
                }
            }
        }
        z
    }

    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn weights(seed: u64) -> Box<[[[[f32; 3]; 3]; C1]; C2]> {
        let flat = noise(C2 * C1 * 9, seed);
        let mut w: Box<[[[[f32; 3]; 3]; C1]; C2]> = bytemuck::zeroed_box();
        bytemuck::cast_slice_mut::<_, f32>(&mut w[..]).copy_from_slice(&flat);
        w
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        let scale = want.iter().fold(0.0f64, |m, &x| m.max(x.abs()));
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * scale,
                "{what}[{k}]: {g} vs {w} (scale {scale})"
            );
        }
    }

    #[test]
    fn forward_matches_the_definition() {
        for n in [1, 3, 8] {
            let w = weights(1);
            let bias = noise(C2, 2);
            let a = noise(C1 * n * P2, 3 + n as u64);
            let f = Filters::new(&w);
            let mut z = vec![0.0f32; C2 * n * P2];
            forward(&f, &bias, &a, n, &mut z);
            close(&z, &conv_ref(&w, &bias, &a, n), "z");
        }
    }

    /// The fused BN2 → pool2 backward gives the transform of exactly the `dz` that
    /// `bn_backward` stores, so the three gradients are the same bits.
    #[test]
    fn fused_pool_bn_backward_is_bit_identical_to_the_stored_gradient() {
        let n = 3;
        let np = n * P2;
        let z = noise(C2 * np, 21);
        let dout = noise(n * 3136, 22);
        // Each pooled output's winner: some window element, or none (ReLU cut it).
        let mut arg = vec![NONE; n * 3136];
        for c in 0..C2 {
            for i in 0..n {
                for q in 0..49 {
                    let pick = (c * 7 + i * 5 + q * 3) % 5;
                    if pick < 4 {
                        let (py, px) = (q / 7, q % 7);
                        let at = i * P2 + (2 * py + pick / 2) * 14 + 2 * px + pick % 2;
                        arg[c * 49 + i * 3136 + q] = at as u32;
                    }
                }
            }
        }
        let stat = |seed| -> Vec<f32> { noise(C2, seed).iter().map(|v| 1.0 + 0.5 * v).collect() };
        let (mean, invstd, gamma) = (noise(C2, 23), stat(24), stat(25));
        let dsum: Vec<f64> = noise(C2, 26).iter().map(|&v| v as f64 * 10.0).collect();
        let dxsum: Vec<f64> = noise(C2, 27).iter().map(|&v| v as f64 * 10.0).collect();
        let grad = BnGrad {
            mean: &mean,
            invstd: &invstd,
            gamma: &gamma,
            count: np,
            dsum: &dsum,
            dxsum: &dxsum,
            dout: &dout,
            arg: &arg,
        };
        let mut dz = vec![0.0f32; C2 * np];
        super::super::common::bn_backward(
            &z,
            &mut dz,
            C2,
            n,
            14,
            &grad,
            super::super::common::Layout {
                channel: 49,
                image: 3136,
            },
        );
        let f = Filters::new(&weights(28));
        let a = noise(C1 * np, 29);
        let run = |grad: OutputGrad| {
            let (mut g, mut gb, mut da) =
                (vec![0.0; C2 * C1 * 9], vec![0.0; C2], vec![0.0; C1 * np]);
            backward(&f, grad, n, &a, &mut g, &mut gb, &mut da);
            (g, gb, da)
        };
        let plain = run(OutputGrad::Plain(&dz));
        let fused = run(OutputGrad::PoolBn(&z, grad));
        assert!(plain.0 == fused.0, "weight gradients differ");
        assert!(plain.2 == fused.2, "input gradients differ");
        for (a, b) in plain.1.iter().zip(&fused.1) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "bias gradient {a} vs {b}"
            );
        }
        assert!(plain.1.iter().any(|&b| b != 0.0));
    }

    /// The backward pass is the adjoint of the forward: for the loss L = Σ dz·z, dL/da and
    /// dL/dw by definition.
    #[test]
    fn backward_matches_the_definition() {
        for n in [1, 5, 8] {
            let w = weights(4);
            let a = noise(C1 * n * P2, 5 + n as u64);
            let dz = noise(C2 * n * P2, 6 + n as u64);
            let f = Filters::new(&w);
            let mut g = vec![0.0f32; C2 * C1 * 9];
            let mut gb = vec![0.0f32; C2];
            let mut da = vec![f32::NAN; C1 * n * P2];
            backward(&f, OutputGrad::Plain(&dz), n, &a, &mut g, &mut gb, &mut da);
            // By definition: da[c][i][p] = Σ w[o][c][ky][kx]·dz[o][i][p − shift], dw = Σ dz·a.
            let mut want_da = vec![0.0f64; C1 * n * P2];
            let mut want_g = vec![0.0f64; C2 * C1 * 9];
            for o in 0..C2 {
                for i in 0..n {
                    for y in 0..14 {
                        for x in 0..14 {
                            let d = dz[(o * n + i) * P2 + y * 14 + x] as f64;
                            for c in 0..C1 {
                                for ky in 0..3 {
                                    for kx in 0..3 {
                                        let (sy, sx) = (y + ky, x + kx);
                                        if (1..=14).contains(&sy) && (1..=14).contains(&sx) {
                                            let at = (c * n + i) * P2 + (sy - 1) * 14 + sx - 1;
                                            want_da[at] += w[o][c][ky][kx] as f64 * d;
                                            want_g[(o * C1 + c) * 9 + ky * 3 + kx] +=
                                                a[at] as f64 * d;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            close(&da, &want_da, "da");
            close(&g, &want_g, "dw");
            let want_gb: Vec<f64> = (0..C2)
                .map(|o| dz[o * n * P2..][..n * P2].iter().map(|&x| x as f64).sum())
                .collect();
            close(&gb, &want_gb, "db");
        }
    }
}
