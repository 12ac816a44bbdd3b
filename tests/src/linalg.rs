//! Small dense linear algebra for the fixtures: the Cholesky solve behind the wide CNN's readout.

/// Solves `G·X = B` for a symmetric positive definite `G` (n×n, row-major, overwritten by its
/// Cholesky factor) and `B` with 10 columns.
#[allow(clippy::needless_range_loop)] // textbook index form: rows and columns of G and X
pub fn solve_spd(g: &mut [f64], b: &[[f64; 10]]) -> Vec<[f64; 10]> {
    let n = b.len();
    for j in 0..n {
        let d = g[j * n + j] - (0..j).map(|k| g[j * n + k] * g[j * n + k]).sum::<f64>();
        assert!(d > 0.0, "the normal equations are not positive definite");
        let d = d.sqrt();
        g[j * n + j] = d;
        for i in j + 1..n {
            let s = g[i * n + j] - (0..j).map(|k| g[i * n + k] * g[j * n + k]).sum::<f64>();
            g[i * n + j] = s / d;
        }
    }
    // L·y = b, then Lᵀ·x = y.
    let mut x = b.to_vec();
    for i in 0..n {
        for c in 0..10 {
            let s = (0..i).map(|k| g[i * n + k] * x[k][c]).sum::<f64>();
            x[i][c] = (x[i][c] - s) / g[i * n + i];
        }
    }
    for i in (0..n).rev() {
        for c in 0..10 {
            let s = (i + 1..n).map(|k| g[k * n + i] * x[k][c]).sum::<f64>();
            x[i][c] = (x[i][c] - s) / g[i * n + i];
        }
    }
    x
}
