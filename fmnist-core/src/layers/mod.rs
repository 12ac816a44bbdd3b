//! f32 layers. Shapes are const generics; sizes that derive from others are explicit const
//! parameters checked at compile time (`const { assert!(..) }`), so a wrong model does not build.
//!
//! # Summation order
//! Every layer adds its terms in one documented order (the bias first, then the inputs in
//! ascending index order, skipping zero-padding taps). IEEE-754 single precision then gives the
//! same bits on every machine that runs these functions without fused multiply-add, which Rust
//! never introduces on its own: that is what lets the device reproduce the host bit for bit.

pub mod activation;
pub mod batchnorm;
pub mod conv2d;
pub mod dense;
pub mod maxpool2d;

pub use activation::{argmax, relu, softmax};
pub use batchnorm::BatchNorm;
pub use conv2d::Conv2d;
pub use dense::Dense;
pub use maxpool2d::max_pool_2x2;

/// Asserts that two f32 values agree within an absolute tolerance (tests only).
#[cfg(test)]
#[macro_export]
macro_rules! assert_close {
    ($a:expr, $b:expr) => {
        $crate::assert_close!($a, $b, 1e-6)
    };
    ($a:expr, $b:expr, $tol:expr) => {{
        let (a, b): (f32, f32) = ($a, $b);
        assert!((a - b).abs() <= $tol, "{a} != {b} (tolerance {})", $tol);
    }};
}
