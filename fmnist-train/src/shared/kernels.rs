//! What the two networks' training kernels share: the GEMM, the pixel table, batch-norm batch
//! statistics, Σx and Σx² in f64, the loss gradients (label smoothing, distillation), the AVX2
//! dispatch macro and the evaluation record. Below both networks' files (`nn.rs`, `wide_nn.rs`
//! and `wide_nn/winograd.rs`); it imports none of them.

use fmnist_core::lenet::{BN_EPS, pixel_to_f32};

use crate::shared::config::Distill;

/// Defines `fn $name` that runs its body compiled for AVX2 when the CPU has it (checked at run
/// time, cached by std), and as baseline code otherwise.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

pub(crate) use simd_dispatch;

/// `pixel_to_f32` of every byte: the same values without a division per pixel.
pub static PIXELS: std::sync::LazyLock<[f32; 256]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|p| pixel_to_f32(p as u8)));
/// `c = a·b + beta·c` on strided row/column layouts (single-threaded); both trainers use it.
/// Bit-identical to `matrixmultiply` 0.3.11 on AVX2+FMA CPUs (see `gemm.rs`).
pub use crate::shared::gemm::gemm;

/// Per-channel statistics of one batch-norm layer for the current batch.
#[derive(Clone, Copy, Debug)]
pub struct BnBatch<const C: usize> {
    /// Mean used to normalise.
    pub mean: [f32; C],
    /// 1 / sqrt(var + eps).
    pub invstd: [f32; C],
    /// Unbiased variance (for the running estimate).
    pub var_unbiased: [f32; C],
    /// Values per channel over the whole batch.
    pub count: usize,
}

impl<const C: usize> BnBatch<C> {
    /// From per-channel Σx and Σx² over `count` values.
    pub fn from_sums(sum: &[f64; C], sumsq: &[f64; C], count: usize) -> Self {
        let mut s = BnBatch {
            mean: [0.0; C],
            invstd: [0.0; C],
            var_unbiased: [0.0; C],
            count,
        };
        let n = count as f64;
        for c in 0..C {
            let mean = sum[c] / n;
            let var = (sumsq[c] / n - mean * mean).max(0.0);
            s.mean[c] = mean as f32;
            s.invstd[c] = (1.0 / (var + BN_EPS as f64).sqrt()) as f32;
            s.var_unbiased[c] = if count > 1 {
                (var * n / (n - 1.0)) as f32
            } else {
                var as f32
            };
        }
        s
    }

    /// From running statistics (evaluation mode).
    pub fn from_running(mean: &[f32; C], var: &[f32; C]) -> Self {
        let mut s = BnBatch {
            mean: *mean,
            invstd: [0.0; C],
            var_unbiased: *var,
            count: 0,
        };
        for (inv, &v) in s.invstd.iter_mut().zip(var) {
            *inv = 1.0 / libm::sqrtf(v + BN_EPS);
        }
        s
    }
}

/// Σx and Σx² in f64, from 16 f32 lanes flushed every 1,024 values.
#[inline(always)]
pub fn sum_and_squares(xs: &[f32]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX.
            return unsafe { sum_and_squares_avx(xs) };
        }
    }
    sum_and_squares_portable(xs)
}

#[inline(always)]
fn sum_and_squares_portable(xs: &[f32]) -> (f64, f64) {
    let (mut s, mut q) = (0.0f64, 0.0f64);
    for block in xs.chunks(1024) {
        let (mut ls, mut lq) = ([0.0f32; 16], [0.0f32; 16]);
        let mut it = block.chunks_exact(16);
        for v in &mut it {
            for l in 0..16 {
                ls[l] += v[l];
                lq[l] += v[l] * v[l];
            }
        }
        for &v in it.remainder() {
            s += v as f64;
            q += (v * v) as f64;
        }
        s += ls.iter().map(|&v| v as f64).sum::<f64>();
        q += lq.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s, q)
}

/// [`sum_and_squares_portable`] with the 16 lanes in four AVX registers: LLVM builds the
/// portable loop's lane arrays as scalar code with spills. Each lane adds its values in the
/// same order, multiplying then adding (no fused multiply-add), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn sum_and_squares_avx(xs: &[f32]) -> (f64, f64) {
    use std::arch::x86_64::*;
    let (mut s, mut q) = (0.0f64, 0.0f64);
    for block in xs.chunks(1024) {
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut q0, mut q1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut it = block.chunks_exact(16);
        for v in &mut it {
            // SAFETY: `v` holds 16 floats.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_ps(v.as_ptr()),
                    _mm256_loadu_ps(v.as_ptr().add(8)),
                )
            };
            s0 = _mm256_add_ps(s0, a);
            s1 = _mm256_add_ps(s1, b);
            q0 = _mm256_add_ps(q0, _mm256_mul_ps(a, a));
            q1 = _mm256_add_ps(q1, _mm256_mul_ps(b, b));
        }
        for &v in it.remainder() {
            s += v as f64;
            q += (v * v) as f64;
        }
        let (mut ls, mut lq) = ([0.0f32; 16], [0.0f32; 16]);
        // SAFETY: each array holds 16 floats.
        unsafe {
            _mm256_storeu_ps(ls.as_mut_ptr(), s0);
            _mm256_storeu_ps(ls.as_mut_ptr().add(8), s1);
            _mm256_storeu_ps(lq.as_mut_ptr(), q0);
            _mm256_storeu_ps(lq.as_mut_ptr().add(8), q1);
        }
        s += ls.iter().map(|&v| v as f64).sum::<f64>();
        q += lq.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s, q)
}

/// The cross-entropy of one row of logits `l` (whose log-sum-exp is `lse`) against the
/// smoothed target q = ε/10 everywhere plus 1 − ε on label `y`, and its gradient
/// `(softmax(l) − q) / batch` written into `d`. With ε = 0 this is exactly the plain
/// cross-entropy and its gradient.
#[inline(always)]
pub fn smoothed_loss_grad(
    l: &[f32],
    lse: f32,
    y: usize,
    eps: f32,
    batch: usize,
    d: &mut [f32],
) -> f32 {
    let (off, on) = (eps / 10.0, 1.0 - eps + eps / 10.0);
    let mut loss = 0.0f32;
    for (j, dj) in d.iter_mut().enumerate() {
        let q = if j == y { on } else { off };
        if q != 0.0 {
            loss += q * (lse - l[j]);
        }
        let pj = libm::expf(l[j] - lse);
        *dj = (pj - q) / batch as f32;
    }
    loss
}

/// The distillation loss of one row of logits `l` (log-sum-exp `lse`): (1 − α) times the
/// smoothed cross-entropy against label `y`, plus α·T² times KL(`soft` ‖ softmax(l / T)),
/// where `soft` is the teacher's softmax at temperature T (Hinton et al., 2015). Its gradient,
/// (1 − α)(softmax(l) − q)/batch + α·T·(softmax(l / T) − soft)/batch, is written into `d`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn distilled_loss_grad(
    l: &[f32],
    lse: f32,
    y: usize,
    eps: f32,
    soft: &[f32],
    distill: Distill,
    batch: usize,
    d: &mut [f32],
) -> f32 {
    let hard = smoothed_loss_grad(l, lse, y, eps, batch, d);
    let (alpha, t) = (distill.alpha, distill.temperature);
    let m = l.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) / t;
    let sum: f32 = l.iter().map(|&v| libm::expf(v / t - m)).sum();
    let lse_t = m + libm::logf(sum);
    let mut kl = 0.0f32;
    for ((dj, &lj), &pt) in d.iter_mut().zip(l).zip(soft) {
        let log_ps = lj / t - lse_t;
        if pt > 0.0 {
            kl += pt * (libm::logf(pt) - log_ps);
        }
        let ps = libm::expf(log_ps);
        *dj = (1.0 - alpha) * *dj + alpha * t * (ps - pt) / batch as f32;
    }
    (1.0 - alpha) * hard + alpha * t * t * kl
}

/// Accuracy, mean loss and logits of a model on a data set.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Fraction correct.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Logits of every image, in order.
    pub logits: Vec<[f32; 10]>,
}

/// softmax(l / T).
pub fn soften(l: &[f32; 10], temperature: f32) -> [f32; 10] {
    let m = l.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let e: [f32; 10] = std::array::from_fn(|j| libm::expf((l[j] - m) / temperature));
    let s: f32 = e.iter().sum();
    e.map(|v| v / s)
}

/// Σ over chunks, in chunk order, of the first `C` channels of each chunk's two per-channel
/// sums (`sums` picks them): the deterministic reduction of batch-norm statistics.
pub fn reduce_sums<T, const C: usize, const N: usize>(
    chunks: &[T],
    sums: impl Fn(&T) -> &[[f64; N]; 2],
) -> ([f64; C], [f64; C]) {
    let (mut s, mut q) = ([0.0; C], [0.0; C]);
    for ch in chunks {
        let sums = sums(ch);
        for c in 0..C {
            s[c] += sums[0][c];
            q[c] += sums[1][c];
        }
    }
    (s, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_and_squares_vector_path_matches_its_portable_definition() {
        // Lengths across the 16-lane and 1,024-value edges, with a remainder in each block.
        for len in [0, 1, 15, 16, 17, 784, 1023, 1024, 1025, 1568, 3000] {
            let xs: Vec<f32> = (0..len as u32)
                .map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) % 20_001) as f32 / 997.0 - 10.0)
                .collect();
            let (a, b) = (sum_and_squares(&xs), sum_and_squares_portable(&xs));
            assert_eq!(a.0.to_bits(), b.0.to_bits(), "Σx, {len} values");
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "Σx², {len} values");
            let want: f64 = xs.iter().map(|&v| v as f64).sum();
            assert!(
                (a.0 - want).abs() <= 1e-3 * (1.0 + want.abs()),
                "{} vs {want}",
                a.0
            );
        }
    }

    #[test]
    fn soften_is_a_distribution_that_flattens_with_temperature() {
        let l = [3.0, 1.0, 0.0, -1.0, 0.5, 0.0, 0.0, 0.0, 2.0, -4.0];
        let p1 = soften(&l, 1.0);
        let p4 = soften(&l, 4.0);
        for p in [p1, p4] {
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(p.iter().all(|&v| v > 0.0));
        }
        assert!(p4[0] < p1[0] && p4[9] > p1[9], "{p1:?} {p4:?}");
        // T = 1 is the plain softmax.
        let s: f32 = l.iter().map(|&v| v.exp()).sum();
        assert!((p1[0] - 3.0f32.exp() / s).abs() < 1e-6);
    }
}
