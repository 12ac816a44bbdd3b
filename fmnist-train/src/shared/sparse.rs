//! GEMMs whose left operand is mostly zeros, with the same values as [`gemm`].
//!
//! The wide CNN's fc1 backward multiplies by the gradient of its hidden layer, which ReLU and
//! dropout 0.5 leave 74-91 % zeros (measured over the first 400 steps of the `default` recipe:
//! the share of zeros grows as the ReLUs settle). A dense GEMM spends most of its multiply-adds
//! on those zeros; here each row of the left operand is a list of its non-zero entries
//! ([`SparseRows`]), and each output row is the sum of the rows of `b` they select.
//!
//! Why by hand: the result must be the bits `matrixmultiply`'s FMA kernels give for the dense
//! product (the trainer's output does not depend on which path ran), and no sparse crate
//! promises a summation order. Each output is one FMA chain from +0.0 over every 256-deep block
//! of k in order, the blocks merged as `matrixmultiply` 0.3 merges them (`acc + 0.0` into the
//! output for the first block, `acc + c` for the next). Leaving a zero term out changes nothing
//! a term of ±0·b would have: adding ±0 to a sum leaves it as it is, save the sign of a zero
//! sum, and a zero times an infinite or NaN `b` is not propagated (a network with such weights
//! has diverged already). The fast path needs AVX2 and FMA ([`available`]); elsewhere callers
//! use [`gemm`], whose kernel without FMA rounds differently.
//!
//! [`gemm`]: crate::shared::kernels::gemm

/// The depth of `matrixmultiply`'s k blocks for f32 (its `S_KC`).
const KC: usize = 256;
/// Output columns per register tile: 14 AVX vectors, plus one for the broadcast value.
const TILE: usize = 14 * 8;

/// Whether [`sparse_gemm`] can run on this CPU: exactly where [`gemm`] runs its own AVX2 + FMA
/// kernel, whose values it reproduces.
///
/// [`gemm`]: crate::shared::gemm::gemm
pub fn available() -> bool {
    crate::shared::gemm::has_avx2_fma()
}

/// The non-zero entries of a matrix's rows (compressed sparse rows), each row's in increasing
/// column order. Buffers are kept between refills.
#[derive(Clone, Debug, Default)]
pub struct SparseRows {
    /// Row `r`'s entries are `start[r]..start[r + 1]` of `col` and `val`.
    start: Vec<usize>,
    col: Vec<u32>,
    val: Vec<f32>,
    /// Columns of the dense matrix (k of the product).
    cols: usize,
}

impl SparseRows {
    /// The rows of the row-major `rows`×`cols` matrix `a`.
    pub fn fill_rows(&mut self, a: &[f32], rows: usize, cols: usize) {
        assert!(a.len() >= rows * cols);
        self.clear(cols);
        for row in a[..rows * cols].chunks_exact(cols) {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    self.col.push(j as u32);
                    self.val.push(v);
                }
            }
            self.start.push(self.col.len());
        }
    }

    /// The columns of the row-major `rows`×`cols` matrix `a`, as rows (its transpose).
    pub fn fill_columns(&mut self, a: &[f32], rows: usize, cols: usize) {
        assert!(a.len() >= rows * cols);
        self.clear(rows);
        // Count per column, then place: one pass over `a` each.
        let mut count = vec![0usize; cols + 1];
        for row in a[..rows * cols].chunks_exact(cols) {
            for (j, &v) in row.iter().enumerate() {
                count[j + 1] += (v != 0.0) as usize;
            }
        }
        for j in 0..cols {
            count[j + 1] += count[j];
        }
        let nnz = count[cols];
        self.col.resize(nnz, 0);
        self.val.resize(nnz, 0.0);
        self.start.extend_from_slice(&count[1..]);
        let mut next = count;
        for (i, row) in a[..rows * cols].chunks_exact(cols).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    let at = next[j];
                    self.col[at] = i as u32;
                    self.val[at] = v;
                    next[j] += 1;
                }
            }
        }
    }

    fn clear(&mut self, cols: usize) {
        self.start.clear();
        self.start.push(0);
        self.col.clear();
        self.val.clear();
        self.cols = cols;
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.start.len() - 1
    }

    /// Non-zero entries held.
    pub fn nonzeros(&self) -> usize {
        self.col.len()
    }
}

/// `c[r − rows.start][..n] = Σ_j a[r][j] · b[j·ldb..][..n]` for the rows `rows` of `a`, with
/// `c`'s rows `ldc` apart: `gemm(rows.len(), k, n, a, (k, 1), b, (ldb, 1), 0.0, c, (ldc, 1))`
/// on the dense `a`, value for value (see the module docs). Panics unless [`available`].
pub fn sparse_gemm(
    a: &SparseRows,
    rows: std::ops::Range<usize>,
    b: &[f32],
    ldb: usize,
    n: usize,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(rows.end <= a.rows() && n > 0 && n <= ldb && n <= ldc);
    assert!(a.cols == 0 || (a.cols - 1) * ldb + n <= b.len());
    assert!(rows.is_empty() || (rows.len() - 1) * ldc + n <= c.len());
    assert!(available(), "sparse_gemm needs AVX2 and FMA");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX2 and FMA; every column index is < a.cols, so the asserts above
    // keep each read of `b` and each write of `c` inside the slices.
    unsafe {
        avx2::product(a, rows, b, ldb, n, c, ldc)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{KC, SparseRows, TILE};

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn product(
        a: &SparseRows,
        rows: std::ops::Range<usize>,
        b: &[f32],
        ldb: usize,
        n: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        let (b, c) = (b.as_ptr(), c.as_mut_ptr());
        // Column tiles outermost: a tile's columns of `b` (k × 448 bytes) stay in cache while
        // every row reads them.
        let mut col = 0;
        while col + TILE <= n {
            // SAFETY: as the caller's (columns col..col + TILE < n).
            unsafe { tile::<14>(a, rows.clone(), b.add(col), ldb, c.add(col), ldc) };
            col += TILE;
        }
        while col + 8 <= n {
            // SAFETY: as above.
            unsafe { tile::<1>(a, rows.clone(), b.add(col), ldb, c.add(col), ldc) };
            col += 8;
        }
        for col in col..n {
            // SAFETY: as above.
            unsafe { column(a, rows.clone(), b.add(col), ldb, c.add(col), ldc) };
        }
    }

    /// `V`·8 output columns of every row: the chain of each k block in registers.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const V: usize>(
        a: &SparseRows,
        rows: std::ops::Range<usize>,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        for (r, out) in rows.clone().zip((0..).map(|i| i * ldc)) {
            let (s, e) = (a.start[r], a.start[r + 1]);
            let (cols, vals) = (&a.col[s..e], &a.val[s..e]);
            // SAFETY: row `r` of `c` is inside the caller's slice.
            let out = unsafe { c.add(out) };
            let mut acc = [_mm256_setzero_ps(); V];
            let mut block = 0;
            let mut first = true;
            for (&j, &v) in cols.iter().zip(vals) {
                let j = j as usize;
                if j / KC != block {
                    // SAFETY: as above.
                    unsafe { merge(&mut acc, out, first) };
                    first = false;
                    block = j / KC;
                }
                let v = _mm256_set1_ps(v);
                // SAFETY: j < a.cols, so row j of `b` is inside the caller's slice.
                let brow = unsafe { b.add(j * ldb) };
                for (q, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: as above.
                    *acc = _mm256_fmadd_ps(v, unsafe { _mm256_loadu_ps(brow.add(8 * q)) }, *acc);
                }
            }
            // SAFETY: as above.
            unsafe { merge(&mut acc, out, first) };
        }
    }

    /// Ends a k block: `c = acc + 0.0` for the first, `c = acc + c` after; `acc` back to zero.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn merge<const V: usize>(acc: &mut [__m256; V], out: *mut f32, first: bool) {
        for (q, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's row has V·8 columns here.
            unsafe {
                let p = out.add(8 * q);
                let base = if first {
                    _mm256_setzero_ps()
                } else {
                    _mm256_loadu_ps(p)
                };
                _mm256_storeu_ps(p, _mm256_add_ps(*acc, base));
            }
            *acc = _mm256_setzero_ps();
        }
    }

    /// One output column of every row, in scalars (the same chain and merges).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn column(
        a: &SparseRows,
        rows: std::ops::Range<usize>,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        for (r, out) in rows.clone().zip((0..).map(|i| i * ldc)) {
            let (s, e) = (a.start[r], a.start[r + 1]);
            let (mut acc, mut block, mut first) = (0.0f32, 0, true);
            // SAFETY: as in `tile`.
            let out = unsafe { &mut *c.add(out) };
            for (&j, &v) in a.col[s..e].iter().zip(&a.val[s..e]) {
                let j = j as usize;
                if j / KC != block {
                    *out = acc + if first { 0.0 } else { *out };
                    (acc, first, block) = (0.0, false, j / KC);
                }
                // SAFETY: as in `tile`.
                acc = v.mul_add(unsafe { *b.add(j * ldb) }, acc);
            }
            *out = acc + if first { 0.0 } else { *out };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::kernels::gemm;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A `rows`×`cols` matrix with about `density` of its entries non-zero, some of the zeros
    /// negative.
    fn sparse_matrix(rng: &mut ChaCha8Rng, rows: usize, cols: usize, density: f64) -> Vec<f32> {
        (0..rows * cols)
            .map(|_| {
                if rng.random_bool(density) {
                    rng.random_range(-1.0f32..1.0)
                } else if rng.random_bool(0.5) {
                    -0.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn fill_rows_and_columns_list_the_non_zeros_in_order() {
        let a = [0.0, 2.0, 0.0, -0.0, 5.0, 0.0, 7.0, 0.0, 9.0];
        let mut s = SparseRows::default();
        s.fill_rows(&a, 3, 3);
        assert_eq!((s.rows(), s.nonzeros()), (3, 4));
        assert_eq!(s.start, [0, 1, 2, 4]);
        assert_eq!(s.col, [1, 1, 0, 2]);
        assert_eq!(s.val, [2.0, 5.0, 7.0, 9.0]);
        s.fill_columns(&a, 3, 3);
        assert_eq!(s.start, [0, 1, 3, 4]);
        assert_eq!(s.col, [2, 0, 1, 2]);
        assert_eq!(s.val, [7.0, 2.0, 5.0, 9.0]);
    }

    /// Bit for bit against the dense GEMM: shapes across the 256-deep k blocks (k = 512 is fc1's
    /// backward), column counts with 112-wide tiles, 8-wide vectors and scalar tails, densities
    /// from none to all, and the two ways the trainer builds the rows.
    #[test]
    fn same_bits_as_the_dense_gemm() {
        if !available() {
            eprintln!("skipped: no AVX2 + FMA on this CPU, so sparse_gemm is never used");
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut s = SparseRows::default();
        for &(m, k, n) in &[
            (5, 512, 784),
            (3, 300, 129),
            (7, 256, 112),
            (4, 257, 5),
            (2, 128, 3136),
            (6, 700, 250),
            (1, 1, 1),
        ] {
            for density in [0.0, 0.01, 0.2, 1.0] {
                let a = sparse_matrix(&mut rng, m, k, density);
                let ldb = n + 3;
                let b: Vec<f32> = (0..k * ldb).map(|_| rng.random_range(-2.0..2.0)).collect();
                let mut want = vec![0.0f32; m * n];
                gemm(m, k, n, &a, (k, 1), &b, (ldb, 1), 0.0, &mut want, (n, 1));
                s.fill_rows(&a, m, k);
                let mut got = vec![f32::NAN; m * n];
                sparse_gemm(&s, 0..m, &b, ldb, n, &mut got, n);
                assert_eq!(bits(&got), bits(&want), "{m}x{k}x{n}, density {density}");
                // The transpose's rows, a range of them, into a wider `c`.
                let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
                s.fill_columns(&at, k, m);
                let (lo, hi) = (m / 3, m);
                let ldc = n + 1;
                let mut got = vec![f32::NAN; (hi - lo) * ldc];
                sparse_gemm(&s, lo..hi, &b, ldb, n, &mut got, ldc);
                for r in lo..hi {
                    assert_eq!(
                        bits(&got[(r - lo) * ldc..][..n]),
                        bits(&want[r * n..][..n]),
                        "{m}x{k}x{n}, density {density}, transposed row {r}"
                    );
                }
            }
        }
    }
}
