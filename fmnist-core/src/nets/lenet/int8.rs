//! The int8 LeNet: its model-file payload [`LeNetQParams`], read in place, and the integer-only
//! forward pass [`LeNetQ`].
//!
//! ```text
//! image u8 p      q = p − 128            (scale 1/255, zero point −128, exact)
//! conv1 6@5x5 pad 2 (padding taps = −128) → requant → ReLU → max-pool 2    6x14x14 i8
//! conv2 16@5x5                            → requant → ReLU → max-pool 2    16x5x5 i8
//! flatten C×H×W 400 → fc1 120 → ReLU → fc2 84 → ReLU → fc3 10 (int8 logits) → argmax
//! ```
//!
//! # No i32 accumulator can overflow
//!
//! Every accumulator is `bias + Σ_{k<n} w_k·x_k` over a layer's fan-in `n` (25, 150, 400, 120,
//! 84; at most 400), summed in any order, where `w_k` is a stored weight and `x_k` a stored int8
//! activation (or the input zero point, for a padding tap).
//!
//! 1. [`check_layer`] rejects any weight of −128, so `|w| ≤ 127`; activations are i8, so
//!    `|x| ≤ 128`; hence `|w·x| ≤ 16,256` and any partial sum of products satisfies
//!    `|Σ w·x| ≤ n·127·128 ≤ 400·16,256 = 6,502,400 < 2^23`.
//! 2. Equivalently in the unfolded form: the bias stored is `b_q − zp_in·Σw`, and
//!    `bias + Σ w·x = b_q + Σ w·(x − zp_in)` with `|x − zp_in| ≤ 255`; the folded form is the one
//!    computed, so the bound of step 1 is the one that matters.
//! 3. [`check_layer`] also requires, per output channel, `(|bias| + n·127·128)·2^max(shift,0) ≤
//!    2^31 − 1`. Every partial sum (with or without the bias, in any order, and the maximum of a
//!    2x2 window) is then at most `|bias| + n·127·128` in magnitude, and so is the value shifted
//!    left by requantization: no addition, no max and no left shift leaves the i32 range. The
//!    quantizer (fmnist-train) refuses to produce parameters that break this, and
//!    [`LeNetQ::new`] (hence `ModelFile::lenet_int8`) refuses to run them.
//! 4. The requantization product `a·m` is formed in i64 (or by `SMULL`-class instructions), the
//!    only overflowing case `i32::MIN·i32::MIN` is saturated, and by 3 `a ≠ i32::MIN`. The final
//!    `+ zp_out` saturates before the clamp to `[lo, 127]`.
//!
//! The test `accumulators_cannot_overflow_at_the_worst_case` runs the worst case (|w| = 127 with
//! the input at either extreme, bias at the limit) through the kernels with overflow checks on.

use bytemuck::{Pod, Zeroable};

use crate::layers::{argmax, max_pool_2x2};
use crate::quant::conv2d::QConv2d;
use crate::quant::dense::QDense;
use crate::quant::fast;
use crate::quant::params::{QLayerParams, QParamsError, check_layer};

use crate::image::IMAGE_PIXELS;
// The int8 input every network shares, under its old paths.
pub use crate::image::{INPUT_ZERO_POINT, image_to_i8};

/// Every tensor of the int8 LeNet, in the model file's order: per layer the i8 weights in
/// PyTorch's layout, then its [`QLayerParams`]. 65,308 bytes, 4-byte aligned, no implicit
/// padding: cast the model-file payload to it with [`bytemuck`] and read it in place (flash).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct LeNetQParams {
    /// `conv1.weight` `[6][1][5][5]` (BN folded), per-channel symmetric.
    pub conv1_weight: [[[[i8; 5]; 5]; 1]; 6],
    /// Explicit padding to a 4-byte boundary (written as zero).
    pub _pad_conv1: [u8; 2],
    /// conv1's bias, requantization and zero points.
    pub conv1: QLayerParams<6>,
    /// `conv2.weight` `[16][6][5][5]` (BN folded).
    pub conv2_weight: [[[[i8; 5]; 5]; 6]; 16],
    /// conv2's bias, requantization and zero points.
    pub conv2: QLayerParams<16>,
    /// `fc1.weight` `[120][400]` (inputs flattened C×H×W).
    pub fc1_weight: [[i8; 400]; 120],
    /// fc1's bias, requantization and zero points.
    pub fc1: QLayerParams<120>,
    /// `fc2.weight` `[84][120]`.
    pub fc2_weight: [[i8; 120]; 84],
    /// fc2's bias, requantization and zero points.
    pub fc2: QLayerParams<84>,
    /// `fc3.weight` `[10][84]`.
    pub fc3_weight: [[i8; 84]; 10],
    /// fc3's bias, requantization and zero points (no ReLU: its outputs are the logits).
    pub fc3: QLayerParams<10>,
}

impl LeNetQParams {
    /// Checks everything the kernels rely on (the overflow proof above and the zero-point
    /// chain): weights in −127..=127, shifts in −31..=30, multipliers ≥ 0, bias bound, conv1's
    /// input zero point −128 and each layer's input zero point equal to the previous output's.
    pub fn check(&self) -> Result<(), QParamsError> {
        check_layer(
            "conv1",
            &self.conv1,
            bytemuck::cast_slice::<_, i8>(&self.conv1_weight),
            25,
        )?;
        check_layer(
            "conv2",
            &self.conv2,
            bytemuck::cast_slice::<_, i8>(&self.conv2_weight),
            150,
        )?;
        check_layer("fc1", &self.fc1, self.fc1_weight.as_flattened(), 400)?;
        check_layer("fc2", &self.fc2, self.fc2_weight.as_flattened(), 120)?;
        check_layer("fc3", &self.fc3, self.fc3_weight.as_flattened(), 84)?;
        let chain = [
            ("conv1", INPUT_ZERO_POINT, self.conv1.input_zero_point),
            (
                "conv2",
                self.conv1.output_zero_point,
                self.conv2.input_zero_point,
            ),
            (
                "fc1",
                self.conv2.output_zero_point,
                self.fc1.input_zero_point,
            ),
            ("fc2", self.fc1.output_zero_point, self.fc2.input_zero_point),
            ("fc3", self.fc2.output_zero_point, self.fc3.input_zero_point),
        ];
        for (layer, prev_out, this_in) in chain {
            if prev_out != this_in {
                return Err(QParamsError::ZeroPointMismatch { layer });
            }
        }
        Ok(())
    }
}

/// The intermediate int8 activations of one forward pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QTrace {
    /// After conv1 → ReLU → pool.
    pub pool1: [[[i8; 14]; 14]; 6],
    /// After conv2 → ReLU → pool, flattened C×H×W.
    pub flat: [i8; 400],
    /// After fc1 → ReLU.
    pub fc1: [i8; 120],
    /// After fc2 → ReLU.
    pub fc2: [i8; 84],
    /// The int8 logits.
    pub logits: [i8; 10],
}

/// The integer-only LeNet over checked parameters held elsewhere (RAM, a file buffer, flash).
#[derive(Clone, Copy, Debug)]
pub struct LeNetQ<'a> {
    p: &'a LeNetQParams,
}

impl<'a> LeNetQ<'a> {
    /// Checks `p` ([`LeNetQParams::check`]) and wraps it.
    pub fn new(p: &'a LeNetQParams) -> Result<Self, QParamsError> {
        p.check()?;
        Ok(LeNetQ { p })
    }

    /// The parameters.
    pub fn params(&self) -> &'a LeNetQParams {
        self.p
    }

    /// conv1 (padding 2 at the input zero point) → requant → ReLU → 2x2 max-pool, fused: the
    /// 6x28x28 map never exists.
    #[inline(never)]
    pub fn conv1_relu_pool(&self, image: &[u8; IMAGE_PIXELS], out: &mut [[[i8; 14]; 14]; 6]) {
        fast::conv1_relu_pool(&self.p.conv1_weight, &self.p.conv1, image, out);
    }

    /// conv2 → requant → ReLU → 2x2 max-pool, fused; output flattened C×H×W.
    #[inline(never)]
    pub fn conv2_relu_pool(&self, x: &[[[i8; 14]; 14]; 6], out: &mut [i8; 400]) {
        fast::conv2_relu_pool(
            &self.p.conv2_weight,
            &self.p.conv2,
            x,
            bytemuck::cast_mut(out),
        );
    }

    /// fc1 → requant → ReLU.
    #[inline(never)]
    pub fn fc1(&self, x: &[i8; 400], out: &mut [i8; 120]) {
        fast::dense(&self.p.fc1_weight, &self.p.fc1, x, true, out);
    }

    /// fc2 → requant → ReLU.
    #[inline(never)]
    pub fn fc2(&self, x: &[i8; 120], out: &mut [i8; 84]) {
        fast::dense(&self.p.fc2_weight, &self.p.fc2, x, true, out);
    }

    /// fc3 → requant: the int8 logits.
    #[inline(never)]
    pub fn fc3(&self, x: &[i8; 84], out: &mut [i8; 10]) {
        fast::dense(&self.p.fc3_weight, &self.p.fc3, x, false, out);
    }

    /// The int8 logits of one image with the fused kernels (what the device runs). Stack: the
    /// 1,176-byte pool1 map, 400 + 120 + 84 bytes of activations, and the kernels' scratch.
    pub fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        let mut pool1 = [[[0i8; 14]; 14]; 6];
        self.conv1_relu_pool(image, &mut pool1);
        let mut flat = [0i8; 400];
        self.conv2_relu_pool(&pool1, &mut flat);
        let mut h1 = [0i8; 120];
        self.fc1(&flat, &mut h1);
        let mut h2 = [0i8; 84];
        self.fc2(&h1, &mut h2);
        let mut logits = [0i8; 10];
        self.fc3(&h2, &mut logits);
        logits
    }

    /// The predicted class: argmax of the int8 logits, ties to the lowest index.
    pub fn classify(&self, image: &[u8; IMAGE_PIXELS]) -> usize {
        argmax(&self.forward(image))
    }

    /// The fused forward pass keeping every intermediate activation.
    pub fn trace(&self, image: &[u8; IMAGE_PIXELS]) -> QTrace {
        let mut t = QTrace {
            pool1: [[[0; 14]; 14]; 6],
            flat: [0; 400],
            fc1: [0; 120],
            fc2: [0; 84],
            logits: [0; 10],
        };
        self.conv1_relu_pool(image, &mut t.pool1);
        self.conv2_relu_pool(&t.pool1, &mut t.flat);
        self.fc1(&t.flat, &mut t.fc1);
        self.fc2(&t.fc1, &mut t.fc2);
        self.fc3(&t.fc2, &mut t.logits);
        t
    }

    /// The reference pass: the plain kernels, one layer at a time as the architecture reads
    /// (full 6x28x28 map, separate max-pool). About 7 KB of stack; for tests and benchmarks.
    pub fn trace_reference(&self, image: &[u8; IMAGE_PIXELS]) -> QTrace {
        let p = self.p;
        let x = image_to_i8(image);
        let conv1 = QConv2d::<1, 6, 5, 2> {
            weight: &p.conv1_weight,
            q: &p.conv1,
        };
        let mut c1 = [[[0i8; 28]; 28]; 6];
        conv1.forward(&x, true, &mut c1);
        let mut pool1 = [[[0i8; 14]; 14]; 6];
        max_pool_2x2(&c1, &mut pool1);
        let conv2 = QConv2d::<6, 16, 5, 0> {
            weight: &p.conv2_weight,
            q: &p.conv2,
        };
        let mut c2 = [[[0i8; 10]; 10]; 16];
        conv2.forward(&pool1, true, &mut c2);
        let mut p2 = [[[0i8; 5]; 5]; 16];
        max_pool_2x2(&c2, &mut p2);
        let flat: [i8; 400] = bytemuck::cast(p2);
        let mut fc1 = [0i8; 120];
        QDense {
            weight: &p.fc1_weight,
            q: &p.fc1,
        }
        .forward(&flat, true, &mut fc1);
        let mut fc2 = [0i8; 84];
        QDense {
            weight: &p.fc2_weight,
            q: &p.fc2,
        }
        .forward(&fc1, true, &mut fc2);
        let mut logits = [0i8; 10];
        QDense {
            weight: &p.fc3_weight,
            q: &p.fc3,
        }
        .forward(&fc2, false, &mut logits);
        QTrace {
            pool1,
            flat,
            fc1,
            fc2,
            logits,
        }
    }

    /// The int8 logits by the reference pass.
    pub fn forward_reference(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        self.trace_reference(image).logits
    }
}

/// LeNet-BN: the [`Network`](crate::network::Network) implementation.
#[derive(Clone, Copy, Debug)]
pub enum LeNetBn {}

impl crate::network::Network for LeNetBn {
    const ARCH: crate::arch::Arch = crate::arch::Arch::LeNet;
    const NAME: &'static str = "LeNet";
    type Trained = super::LeNetParams;
    type Folded = super::LeNetFoldedParams;
    type QParams = LeNetQParams;
    type F32<'a> = super::LeNet<'a>;
    type Int8<'a> = LeNetQ<'a>;

    fn f32_trained(p: &Self::Trained) -> Self::F32<'_> {
        super::LeNet::from(p)
    }
    fn f32_folded(p: &Self::Folded) -> Self::F32<'_> {
        super::LeNet::from(p)
    }
    #[inline]
    fn forward(net: &Self::F32<'_>, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        net.forward(image)
    }
    fn forward_layers(net: &Self::F32<'_>, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        net.forward_layers(image)
    }
    fn check_int8(p: &Self::QParams) -> Result<(), QParamsError> {
        p.check()
    }
    fn int8(p: &Self::QParams) -> Result<Self::Int8<'_>, QParamsError> {
        LeNetQ::new(p)
    }
    #[inline]
    fn int8_forward(net: &Self::Int8<'_>, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        net.forward(image)
    }
    fn int8_forward_probed<P: crate::network::LayerProbe>(
        net: &Self::Int8<'_>,
        image: &[u8; IMAGE_PIXELS],
        probe: &mut P,
    ) -> [i8; 10] {
        // `black_box` keeps each step's input and output in memory, so a probe that times the
        // step times the whole step.
        use core::hint::black_box;
        let image = black_box(image);
        let mut pool1 = [[[0i8; 14]; 14]; 6];
        probe.layer("conv1+relu+pool", || {
            net.conv1_relu_pool(image, black_box(&mut pool1))
        });
        let mut flat = [0i8; 400];
        probe.layer("conv2+relu+pool", || {
            net.conv2_relu_pool(&pool1, black_box(&mut flat))
        });
        let mut h1 = [0i8; 120];
        probe.layer("fc1+relu", || net.fc1(&flat, black_box(&mut h1)));
        let mut h2 = [0i8; 84];
        probe.layer("fc2+relu", || net.fc2(&h1, black_box(&mut h2)));
        let mut logits = [0i8; 10];
        probe.layer("fc3", || net.fc3(&h2, black_box(&mut logits)));
        logits
    }
    fn int8_forward_reference(net: &Self::Int8<'_>, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        net.forward_reference(image)
    }
    fn output_quant(p: &Self::QParams) -> (f32, i8) {
        (p.fc3.output_scale, p.fc3.output_zero_point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn payload_size_and_field_offsets() {
        assert_eq!(size_of::<QLayerParams<6>>(), 12 + 16 * 6);
        assert_eq!(size_of::<LeNetQParams>(), 65_308);
        assert_eq!(align_of::<LeNetQParams>(), 4);
        assert_eq!(core::mem::offset_of!(LeNetQParams, conv1), 152);
        assert_eq!(core::mem::offset_of!(LeNetQParams, conv2_weight), 260);
        assert_eq!(core::mem::offset_of!(LeNetQParams, conv2), 2_660);
        assert_eq!(core::mem::offset_of!(LeNetQParams, fc1_weight), 2_928);
        assert_eq!(core::mem::offset_of!(LeNetQParams, fc1), 50_928);
        assert_eq!(core::mem::offset_of!(LeNetQParams, fc2_weight), 52_860);
        assert_eq!(core::mem::offset_of!(LeNetQParams, fc2), 62_940);
        assert_eq!(core::mem::offset_of!(LeNetQParams, fc3_weight), 64_296);
        assert_eq!(core::mem::offset_of!(LeNetQParams, fc3), 65_136);
    }

    #[test]
    fn input_mapping_is_p_minus_128() {
        let mut img = [0u8; IMAGE_PIXELS];
        img[0] = 0;
        img[1] = 128;
        img[2] = 255;
        img[3] = 127;
        let x = image_to_i8(&img);
        assert_eq!(&x[0][0][..4], &[-128, 0, 127, -1]);
    }

    #[test]
    fn fused_forward_is_bit_identical_to_reference_on_random_models() {
        let mut r = Lcg(99);
        let mut distinct = std::collections::BTreeSet::new();
        for seed in 0..12 {
            let p = random_qparams(seed);
            let model = LeNetQ::new(&p).unwrap();
            for _ in 0..25 {
                let img = random_image(&mut r);
                let fused = model.trace(&img);
                let reference = model.trace_reference(&img);
                assert_eq!(fused, reference, "seed {seed}");
                assert_eq!(model.forward(&img), reference.logits);
                assert_eq!(model.classify(&img), argmax(&reference.logits));
                distinct.extend(reference.logits);
            }
        }
        // The random models exercise the int8 range, not one saturated value.
        assert!(distinct.len() > 50, "{}", distinct.len());
    }

    #[test]
    fn check_rejects_each_bad_parameter() {
        let good = random_qparams(5);
        assert_eq!(good.check(), Ok(()));
        let mut p = good.clone();
        p.fc2_weight[7][3] = -128;
        assert_eq!(
            p.check(),
            Err(QParamsError::WeightOutOfRange {
                layer: "fc2",
                channel: 7
            })
        );
        let mut p = good.clone();
        p.conv2.shift[4] = 31;
        assert_eq!(
            p.check(),
            Err(QParamsError::ShiftOutOfRange {
                layer: "conv2",
                channel: 4,
                shift: 31
            })
        );
        let mut p = good.clone();
        p.conv1.shift[0] = -32;
        assert!(matches!(
            p.check(),
            Err(QParamsError::ShiftOutOfRange { shift: -32, .. })
        ));
        let mut p = good.clone();
        p.fc3.multiplier[9] = -1;
        assert_eq!(
            p.check(),
            Err(QParamsError::NegativeMultiplier {
                layer: "fc3",
                channel: 9
            })
        );
        // fc1: n·127·128 = 6,502,400; the largest bias with no left shift is 2^31-1 - that.
        let mut p = good.clone();
        p.fc1.shift[0] = 0;
        p.fc1.bias[0] = i32::MAX - 6_502_400;
        assert_eq!(p.check(), Ok(()));
        p.fc1.bias[0] += 1;
        assert_eq!(
            p.check(),
            Err(QParamsError::BiasOutOfRange {
                layer: "fc1",
                channel: 0
            })
        );
        p.fc1.bias[0] = -(i32::MAX - 6_502_400) - 1;
        assert!(p.check().is_err());
        // A left shift of 3 divides the room by 8.
        let mut p = good.clone();
        p.fc1.shift[1] = 3;
        p.fc1.bias[1] = (i32::MAX >> 3) - 6_502_400;
        assert_eq!(p.check(), Ok(()));
        p.fc1.bias[1] += 1;
        assert!(matches!(
            p.check(),
            Err(QParamsError::BiasOutOfRange { channel: 1, .. })
        ));
        let mut p = good.clone();
        p.fc2.input_zero_point = p.fc1.output_zero_point.wrapping_add(1);
        assert_eq!(
            p.check(),
            Err(QParamsError::ZeroPointMismatch { layer: "fc2" })
        );
        let mut p = good.clone();
        p.conv1.input_zero_point = 0;
        assert_eq!(
            p.check(),
            Err(QParamsError::ZeroPointMismatch { layer: "conv1" })
        );
        assert!(LeNetQ::new(&p).is_err());
    }

    /// The overflow proof's worst case, run with overflow checks on (the test profile keeps
    /// them): every weight ±127, every input at an extreme, every bias at the largest value the
    /// check admits, left shifts where the bound allows. Any i32 overflow would panic.
    #[test]
    fn accumulators_cannot_overflow_at_the_worst_case() {
        for (w_sign, pixel, bias_sign, shift) in [
            (1i8, 0u8, 1i32, 0),
            (1, 255, 1, 0),
            (-1, 0, -1, 0),
            (-1, 0, 1, 0),
            (-1, 0, 1, 4),
            (-1, 255, 1, 0),
            (1, 0, -1, 0),
            (1, 255, 1, 4),
            (-1, 0, -1, 4),
        ] {
            let mut p: Box<LeNetQParams> = bytemuck::zeroed_box();
            let w = 127 * w_sign;
            bytemuck::bytes_of_mut(&mut p.conv1_weight).fill(w as u8);
            bytemuck::bytes_of_mut(&mut p.conv2_weight).fill(w as u8);
            bytemuck::bytes_of_mut(&mut p.fc1_weight).fill(w as u8);
            bytemuck::bytes_of_mut(&mut p.fc2_weight).fill(w as u8);
            bytemuck::bytes_of_mut(&mut p.fc3_weight).fill(w as u8);
            fn set<const C: usize>(q: &mut QLayerParams<C>, n: usize, sign: i32, shift: i32) {
                q.input_scale = 1.0;
                q.output_scale = 1.0;
                q.weight_scale = [1.0; C];
                q.input_zero_point = INPUT_ZERO_POINT;
                q.output_zero_point = -128;
                let limit = ((i32::MAX >> shift) as i64 - n as i64 * 127 * 128) as i32;
                q.bias = [sign * limit; C];
                // The largest multiplier: requantization must not overflow either.
                q.multiplier = [i32::MAX; C];
                q.shift = [shift; C];
            }
            set(&mut p.conv1, 25, bias_sign, shift);
            set(&mut p.conv2, 150, bias_sign, shift);
            set(&mut p.fc1, 400, bias_sign, shift);
            set(&mut p.fc2, 120, bias_sign, shift);
            set(&mut p.fc3, 84, bias_sign, shift);
            let model = LeNetQ::new(&p).unwrap();
            let img = [pixel; IMAGE_PIXELS];
            let t = model.trace(&img);
            assert_eq!(t, model.trace_reference(&img));
            // A saturated bias dominates: every output sits at a clamp.
            let expect = if bias_sign > 0 { 127 } else { -128 };
            assert_eq!(t.logits, [expect; 10]);
        }
    }
}

/// Host throughput, one thread, batch 1:
/// `cargo test --release -p fmnist-core --lib -- --ignored --nocapture int8_throughput`.
#[cfg(test)]
mod bench {
    use super::*;
    use crate::testutil::*;
    use std::hint::black_box;
    use std::time::Instant;

    /// CPU time of this thread in seconds (Linux `schedstat`, ns), so a loaded machine does
    /// not count other processes' time; wall time elsewhere.
    fn cpu_seconds() -> f64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .map(|ns| ns as f64 * 1e-9)
            .unwrap_or_else(|| {
                static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
                START.get_or_init(Instant::now).elapsed().as_secs_f64()
            })
    }

    fn images_per_second(
        n: usize,
        images: &[[u8; IMAGE_PIXELS]],
        f: impl Fn(&[u8; 784]) -> [i8; 10],
    ) -> f64 {
        let t = cpu_seconds();
        let mut sink = 0i32;
        for i in 0..n {
            sink += f(black_box(&images[i % images.len()]))[i % 10] as i32;
        }
        black_box(sink);
        n as f64 / (cpu_seconds() - t)
    }

    #[test]
    #[ignore = "benchmark; run in release"]
    fn int8_throughput() {
        let p = random_qparams(1);
        let model = LeNetQ::new(&p).unwrap();
        let mut r = Lcg(3);
        let images: Vec<_> = (0..256).map(|_| random_image(&mut r)).collect();
        let fused = images_per_second(100_000, &images, |i| model.forward(i));
        let reference = images_per_second(5_000, &images, |i| model.forward_reference(i));
        println!(
            "int8 fused ({}): {fused:.0} images/s; reference: {reference:.0} images/s; x{:.1}",
            if crate::quant::fast::USES_DSP {
                "dsp"
            } else {
                "portable"
            },
            fused / reference
        );
        let img = &images[0];
        let mut pool1 = [[[0i8; 14]; 14]; 6];
        let mut flat = [0i8; 400];
        let mut h1 = [0i8; 120];
        let mut h2 = [0i8; 84];
        let mut lg = [0i8; 10];
        let time = |name: &str, f: &mut dyn FnMut()| {
            let t = cpu_seconds();
            for _ in 0..20_000 {
                f();
            }
            println!("  {name}: {:.2} us", (cpu_seconds() - t) / 20_000.0 * 1e6);
        };
        time("conv1+relu+pool", &mut || {
            model.conv1_relu_pool(black_box(img), &mut pool1)
        });
        time("conv2+relu+pool", &mut || {
            model.conv2_relu_pool(black_box(&pool1), &mut flat)
        });
        time("fc1", &mut || model.fc1(black_box(&flat), &mut h1));
        time("fc2", &mut || model.fc2(black_box(&h1), &mut h2));
        time("fc3", &mut || model.fc3(black_box(&h2), &mut lg));
    }
}

/// 100,000 (or `FMNIST_BENCH_N`) fused forward passes and nothing else, for `perf stat` or
/// `valgrind --tool=callgrind` (instructions per image),
/// which do not depend on the machine's load the way wall time does: `perf stat -e instructions,cycles target/release/deps/fmnist_core-* --ignored --exact
/// quant::lenet::bench_fused_only::int8_fused_100k`.
#[cfg(test)]
mod bench_fused_only {
    use super::*;
    use crate::testutil::*;

    #[test]
    #[ignore = "benchmark; run in release under perf stat"]
    fn int8_fused_100k() {
        let p = random_qparams(1);
        let model = LeNetQ::new(&p).unwrap();
        let mut r = Lcg(3);
        let images: Vec<_> = (0..256).map(|_| random_image(&mut r)).collect();
        let n = std::env::var("FMNIST_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000usize);
        let mut sink = 0i32;
        for i in 0..n {
            sink += model.forward(std::hint::black_box(&images[i % 256]))[i % 10] as i32;
        }
        std::hint::black_box(sink);
    }
}

/// Compares int8 logits computed elsewhere (e.g. the firmware's `verify` mode under QEMU, 10
/// bytes per image) with this build's `LeNetQ::forward` and reference pass:
/// `FMNIST_INT8_MODEL=m.fmq FMNIST_IMAGES=t10k-images-idx3-ubyte FMNIST_LOGITS=out.bin
/// cargo test -p fmnist-core --lib -- --ignored --nocapture external_logits_match`.
#[cfg(test)]
mod external_logits {
    use super::*;

    #[test]
    #[ignore = "needs a model file, raw IDX images and a logits file"]
    fn external_logits_match() {
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("set {k}"));
        let bytes = std::fs::read(var("FMNIST_INT8_MODEL")).unwrap();
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        let file =
            crate::format::parse(&bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()]).unwrap();
        let model = LeNetQ::new(file.lenet_int8().unwrap()).unwrap();
        let images = std::fs::read(var("FMNIST_IMAGES")).unwrap();
        let logits = std::fs::read(var("FMNIST_LOGITS")).unwrap();
        let first: usize = std::env::var("FMNIST_FIRST")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let n = logits.len() / 10;
        assert!(n > 0);
        for i in 0..n {
            let at = 16 + (first + i) * IMAGE_PIXELS;
            let img: &[u8; IMAGE_PIXELS] = images[at..at + IMAGE_PIXELS].try_into().unwrap();
            let got: [i8; 10] = core::array::from_fn(|k| logits[10 * i + k] as i8);
            assert_eq!(got, model.forward(img), "image {}", first + i);
            assert_eq!(got, model.forward_reference(img), "image {}", first + i);
        }
        println!("{n} images: external logits identical to host fused and reference");
    }
}
