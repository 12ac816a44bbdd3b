//! The int8 wide CNN: its model-file payload [`WideQParams`], read in place, and the
//! integer-only forward pass [`WideQ`]. Same scheme as the int8 LeNet (`quant::lenet`).
//!
//! ```text
//! image u8 p      q = p − 128            (scale 1/255, zero point −128, exact)
//! conv1 32@3x3 pad 1 (padding taps = −128)      → requant → ReLU → max-pool 2   32x14x14 i8
//! conv2 64@3x3 pad 1 (padding taps = conv2's input zero point) → requant → ReLU → max-pool 2
//!                                                                               64x7x7 i8
//! flatten C×H×W 3136 → fc1 512 → ReLU → fc2 10 (int8 logits) → argmax
//! ```
//!
//! # No i32 accumulator can overflow
//!
//! The proof of `quant::lenet` holds word for word with this network's fan-ins `n` = 9, 288,
//! 3136 and 512: [`check_layer`] rejects weights of −128, so every product satisfies
//! `|w·x| ≤ 127·128` and every partial sum of products `|Σ w·x| ≤ n·127·128 ≤ 3136·16,256 =
//! 50,978,816 < 2^26`; it also requires `(|bias| + n·127·128)·2^max(shift,0) ≤ 2^31 − 1` per
//! output channel, which bounds every partial sum with or without the bias, the maximum of a
//! 2x2 window and the left shift of requantization. Padding taps take the input zero point, an
//! i8, so they obey the same bound. The test `accumulators_cannot_overflow_at_the_worst_case`
//! runs the extremes with overflow checks on.
//!
//! # Cost
//! Per image: conv1 225,792 multiply-adds (301,056 with its 9 taps padded to 12), conv2
//! 3,612,672, fc1 1,605,632, fc2 5,120. The convolutions run as im2col patches against weight
//! rows (`fast::conv_relu_pool`), the dense layers through `fast::dense`; on the Cortex-M4 both
//! are `SMLAD` loops of about 0.94 (conv) and 1.38 (dense) instructions per multiply-add.

use bytemuck::{Pod, Zeroable};

use super::{WIDE_FLAT, WIDE_HIDDEN};
use crate::image::{IMAGE_PIXELS, INPUT_ZERO_POINT, image_to_i8};
use crate::layers::{argmax, max_pool_2x2};
use crate::quant::conv2d::QConv2d;
use crate::quant::dense::QDense;
use crate::quant::fast;
use crate::quant::params::{QLayerParams, QParamsError, check_layer};

/// conv1's fan-in, 1·3·3, padded to a multiple of 4 for the `SMLAD` kernels.
const CONV1_TAPS: usize = 12;

/// Every tensor of the int8 wide CNN, in the model file's order: per layer the i8 weights in
/// PyTorch's layout, then its [`QLayerParams`]. 1,639,408 bytes, 4-byte aligned, no implicit
/// padding: cast the model-file payload to it with [`bytemuck`] and read it in place (flash).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct WideQParams {
    /// `conv1.weight` `[32][1][3][3]` (BN folded), per-channel symmetric.
    pub conv1_weight: [[[[i8; 3]; 3]; 1]; 32],
    /// conv1's bias, requantization and zero points.
    pub conv1: QLayerParams<32>,
    /// `conv2.weight` `[64][32][3][3]` (BN folded).
    pub conv2_weight: [[[[i8; 3]; 3]; 32]; 64],
    /// conv2's bias, requantization and zero points.
    pub conv2: QLayerParams<64>,
    /// `fc1.weight` `[512][3136]` (inputs flattened C×H×W).
    pub fc1_weight: [[i8; WIDE_FLAT]; WIDE_HIDDEN],
    /// fc1's bias, requantization and zero points.
    pub fc1: QLayerParams<WIDE_HIDDEN>,
    /// `fc2.weight` `[10][512]`.
    pub fc2_weight: [[i8; WIDE_HIDDEN]; 10],
    /// fc2's bias, requantization and zero points (no ReLU: its outputs are the logits).
    pub fc2: QLayerParams<10>,
}

impl WideQParams {
    /// Checks everything the kernels rely on (the overflow proof above and the zero-point
    /// chain): weights in −127..=127, shifts in −31..=30, multipliers ≥ 0, bias bound for the
    /// fan-ins 9, 288, 3136 and 512, conv1's input zero point −128 and each layer's input zero
    /// point equal to the previous output's.
    pub fn check(&self) -> Result<(), QParamsError> {
        check_layer(
            "conv1",
            &self.conv1,
            bytemuck::cast_slice::<_, i8>(&self.conv1_weight),
            9,
        )?;
        check_layer(
            "conv2",
            &self.conv2,
            bytemuck::cast_slice::<_, i8>(&self.conv2_weight),
            288,
        )?;
        check_layer("fc1", &self.fc1, self.fc1_weight.as_flattened(), WIDE_FLAT)?;
        check_layer(
            "fc2",
            &self.fc2,
            self.fc2_weight.as_flattened(),
            WIDE_HIDDEN,
        )?;
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
        ];
        for (layer, prev_out, this_in) in chain {
            if prev_out != this_in {
                return Err(QParamsError::ZeroPointMismatch { layer });
            }
        }
        Ok(())
    }
}

/// The intermediate int8 activations of one forward pass of the wide CNN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WideQTrace {
    /// After conv1 → ReLU → pool.
    pub pool1: [[[i8; 14]; 14]; 32],
    /// After conv2 → ReLU → pool, flattened C×H×W (index `c·49 + y·7 + x`).
    pub flat: [i8; WIDE_FLAT],
    /// After fc1 → ReLU.
    pub fc1: [i8; WIDE_HIDDEN],
    /// The int8 logits.
    pub logits: [i8; 10],
}

/// The integer-only wide CNN over checked parameters held elsewhere (RAM, a file buffer,
/// flash).
#[derive(Clone, Copy, Debug)]
pub struct WideQ<'a> {
    p: &'a WideQParams,
}

impl<'a> WideQ<'a> {
    /// Checks `p` ([`WideQParams::check`]) and wraps it.
    pub fn new(p: &'a WideQParams) -> Result<Self, QParamsError> {
        p.check()?;
        Ok(WideQ { p })
    }

    /// The parameters.
    pub fn params(&self) -> &'a WideQParams {
        self.p
    }

    /// conv1 (padding 1 at the input zero point) → requant → ReLU → 2x2 max-pool, fused: the
    /// 32x28x28 map never exists.
    #[inline(never)]
    pub fn conv1_relu_pool(&self, image: &[u8; IMAGE_PIXELS], out: &mut [[[i8; 14]; 14]; 32]) {
        // The 9 taps per channel padded with zero weights to 12.
        let mut w = [[0i8; CONV1_TAPS]; 32];
        for (d, s) in w.iter_mut().zip(&self.p.conv1_weight) {
            for (d, &s) in d.iter_mut().zip(s.as_flattened().as_flattened()) {
                *d = s;
            }
        }
        fast::conv_relu_pool::<1, 32, 3, 1, 28, 28, 14, 14, CONV1_TAPS>(
            &w,
            &self.p.conv1,
            &image_to_i8(image),
            out,
        );
    }

    /// conv2 (padding 1 at its input zero point) → requant → ReLU → 2x2 max-pool, fused;
    /// output flattened C×H×W.
    #[inline(never)]
    pub fn conv2_relu_pool(&self, x: &[[[i8; 14]; 14]; 32], out: &mut [i8; WIDE_FLAT]) {
        fast::conv_relu_pool::<32, 64, 3, 1, 14, 14, 7, 7, 288>(
            bytemuck::cast_ref(&self.p.conv2_weight),
            &self.p.conv2,
            x,
            bytemuck::cast_mut(out),
        );
    }

    /// fc1 → requant → ReLU.
    #[inline(never)]
    pub fn fc1(&self, x: &[i8; WIDE_FLAT], out: &mut [i8; WIDE_HIDDEN]) {
        fast::dense(&self.p.fc1_weight, &self.p.fc1, x, true, out);
    }

    /// fc2 → requant: the int8 logits.
    #[inline(never)]
    pub fn fc2(&self, x: &[i8; WIDE_HIDDEN], out: &mut [i8; 10]) {
        fast::dense(&self.p.fc2_weight, &self.p.fc2, x, false, out);
    }

    /// Both convolution stages: image → flattened pool2 map. The 6,272-byte pool1 map lives
    /// only here.
    #[inline(never)]
    fn features(&self, image: &[u8; IMAGE_PIXELS], flat: &mut [i8; WIDE_FLAT]) {
        let mut pool1 = [[[0i8; 14]; 14]; 32];
        self.conv1_relu_pool(image, &mut pool1);
        self.conv2_relu_pool(&pool1, flat);
    }

    /// The int8 logits of one image with the fused kernels (what the device runs). Stack: the
    /// 6,272-byte pool1 map during the convolutions, the 3,136-byte flattened map, and the
    /// kernels' scratch (3.5 KB of patches in conv2, 6.3 KB of activation pairs in fc1 on the
    /// device): about 14 KB at the peak.
    pub fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        let mut flat = [0i8; WIDE_FLAT];
        self.features(image, &mut flat);
        let mut h1 = [0i8; WIDE_HIDDEN];
        self.fc1(&flat, &mut h1);
        let mut logits = [0i8; 10];
        self.fc2(&h1, &mut logits);
        logits
    }

    /// The predicted class: argmax of the int8 logits, ties to the lowest index.
    pub fn classify(&self, image: &[u8; IMAGE_PIXELS]) -> usize {
        argmax(&self.forward(image))
    }

    /// The fused forward pass keeping every intermediate activation.
    pub fn trace(&self, image: &[u8; IMAGE_PIXELS]) -> WideQTrace {
        let mut t = WideQTrace {
            pool1: [[[0; 14]; 14]; 32],
            flat: [0; WIDE_FLAT],
            fc1: [0; WIDE_HIDDEN],
            logits: [0; 10],
        };
        self.conv1_relu_pool(image, &mut t.pool1);
        self.conv2_relu_pool(&t.pool1, &mut t.flat);
        self.fc1(&t.flat, &mut t.fc1);
        self.fc2(&t.fc1, &mut t.logits);
        t
    }

    /// The reference pass: the plain kernels ([`QConv2d`], [`QDense`]), one layer at a time as
    /// the architecture reads (full 32x28x28 and 64x14x14 maps, separate max-pool). About
    /// 50 KB of stack; for tests and the host.
    pub fn trace_reference(&self, image: &[u8; IMAGE_PIXELS]) -> WideQTrace {
        let p = self.p;
        let x = image_to_i8(image);
        let conv1 = QConv2d::<1, 32, 3, 1> {
            weight: &p.conv1_weight,
            q: &p.conv1,
        };
        let mut c1 = [[[0i8; 28]; 28]; 32];
        conv1.forward(&x, true, &mut c1);
        let mut pool1 = [[[0i8; 14]; 14]; 32];
        max_pool_2x2(&c1, &mut pool1);
        let conv2 = QConv2d::<32, 64, 3, 1> {
            weight: &p.conv2_weight,
            q: &p.conv2,
        };
        let mut c2 = [[[0i8; 14]; 14]; 64];
        conv2.forward(&pool1, true, &mut c2);
        let mut p2 = [[[0i8; 7]; 7]; 64];
        max_pool_2x2(&c2, &mut p2);
        let flat: [i8; WIDE_FLAT] = bytemuck::cast(p2);
        let mut fc1 = [0i8; WIDE_HIDDEN];
        QDense {
            weight: &p.fc1_weight,
            q: &p.fc1,
        }
        .forward(&flat, true, &mut fc1);
        let mut logits = [0i8; 10];
        QDense {
            weight: &p.fc2_weight,
            q: &p.fc2,
        }
        .forward(&fc1, false, &mut logits);
        WideQTrace {
            pool1,
            flat,
            fc1,
            logits,
        }
    }

    /// The int8 logits by the reference pass.
    pub fn forward_reference(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        self.trace_reference(image).logits
    }
}

/// The wide CNN: the [`Network`](crate::network::Network) implementation.
#[derive(Clone, Copy, Debug)]
pub enum WideCnn {}

impl crate::network::Network for WideCnn {
    const ARCH: crate::arch::Arch = crate::arch::Arch::Wide;
    const NAME: &'static str = "Wide";
    type Trained = super::WideParams;
    type Folded = super::WideFoldedParams;
    type QParams = WideQParams;
    type F32<'a> = super::Wide<'a>;
    type Int8<'a> = WideQ<'a>;

    fn f32_trained(p: &Self::Trained) -> Self::F32<'_> {
        super::Wide::from(p)
    }
    fn f32_folded(p: &Self::Folded) -> Self::F32<'_> {
        super::Wide::from(p)
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
        WideQ::new(p)
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
        let mut pool1 = [[[0i8; 14]; 14]; 32];
        probe.layer("conv1+relu+pool", || {
            net.conv1_relu_pool(image, black_box(&mut pool1))
        });
        let mut flat = [0i8; WIDE_FLAT];
        probe.layer("conv2+relu+pool", || {
            net.conv2_relu_pool(&pool1, black_box(&mut flat))
        });
        let mut h1 = [0i8; WIDE_HIDDEN];
        probe.layer("fc1+relu", || net.fc1(&flat, black_box(&mut h1)));
        let mut logits = [0i8; 10];
        probe.layer("fc2", || net.fc2(&h1, black_box(&mut logits)));
        logits
    }
    fn int8_forward_reference(net: &Self::Int8<'_>, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        net.forward_reference(image)
    }
    fn output_quant(p: &Self::QParams) -> (f32, i8) {
        (p.fc2.output_scale, p.fc2.output_zero_point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Lcg, random_image, random_wide_qparams};

    #[test]
    fn payload_size_and_field_offsets() {
        assert_eq!(size_of::<WideQParams>(), 1_639_408);
        assert_eq!(align_of::<WideQParams>(), 4);
        assert_eq!(core::mem::offset_of!(WideQParams, conv1), 288);
        assert_eq!(core::mem::offset_of!(WideQParams, conv2_weight), 812);
        assert_eq!(core::mem::offset_of!(WideQParams, conv2), 19_244);
        assert_eq!(core::mem::offset_of!(WideQParams, fc1_weight), 20_280);
        assert_eq!(core::mem::offset_of!(WideQParams, fc1), 1_625_912);
        assert_eq!(core::mem::offset_of!(WideQParams, fc2_weight), 1_634_116);
        assert_eq!(core::mem::offset_of!(WideQParams, fc2), 1_639_236);
    }

    #[test]
    fn fast_forward_is_bit_identical_to_reference_on_random_models() {
        let mut r = Lcg(7);
        let mut distinct = std::collections::BTreeSet::new();
        for seed in 0..6 {
            let p = random_wide_qparams(seed);
            let model = WideQ::new(&p).unwrap();
            for k in 0..6 {
                let img = if k == 0 {
                    core::array::from_fn(|_| r.range(0, 255) as u8)
                } else {
                    random_image(&mut r)
                };
                let fast = model.trace(&img);
                let reference = model.trace_reference(&img);
                assert_eq!(fast, reference, "seed {seed} image {k}");
                assert_eq!(model.forward(&img), reference.logits);
                assert_eq!(model.classify(&img), argmax(&reference.logits));
                distinct.extend(reference.logits);
                distinct.extend(reference.fc1);
            }
        }
        // The random models exercise the int8 range, not one saturated value.
        assert!(distinct.len() > 100, "{}", distinct.len());
    }

    #[test]
    fn check_rejects_each_bad_parameter() {
        let good = random_wide_qparams(5);
        assert_eq!(good.check(), Ok(()));
        let mut p = good.clone();
        p.conv2_weight[63][31][2][2] = -128;
        assert_eq!(
            p.check(),
            Err(QParamsError::WeightOutOfRange {
                layer: "conv2",
                channel: 63
            })
        );
        let mut p = good.clone();
        p.conv1.shift[31] = 31;
        assert_eq!(
            p.check(),
            Err(QParamsError::ShiftOutOfRange {
                layer: "conv1",
                channel: 31,
                shift: 31
            })
        );
        let mut p = good.clone();
        p.fc2.multiplier[9] = -1;
        assert_eq!(
            p.check(),
            Err(QParamsError::NegativeMultiplier {
                layer: "fc2",
                channel: 9
            })
        );
        // fc1: n·127·128 = 3136·16,256 = 50,978,816.
        let mut p = good.clone();
        p.fc1.shift[511] = 0;
        p.fc1.bias[511] = i32::MAX - 50_978_816;
        assert_eq!(p.check(), Ok(()));
        p.fc1.bias[511] += 1;
        assert_eq!(
            p.check(),
            Err(QParamsError::BiasOutOfRange {
                layer: "fc1",
                channel: 511
            })
        );
        // conv2: 288·16,256 = 4,681,728, with a left shift of 2.
        let mut p = good.clone();
        p.conv2.shift[0] = 2;
        p.conv2.bias[0] = -((i32::MAX >> 2) - 4_681_728);
        assert_eq!(p.check(), Ok(()));
        p.conv2.bias[0] -= 1;
        assert!(matches!(
            p.check(),
            Err(QParamsError::BiasOutOfRange {
                layer: "conv2",
                channel: 0
            })
        ));
        let mut p = good.clone();
        p.fc1.input_zero_point = p.conv2.output_zero_point.wrapping_add(1);
        assert_eq!(
            p.check(),
            Err(QParamsError::ZeroPointMismatch { layer: "fc1" })
        );
        let mut p = good.clone();
        p.conv1.input_zero_point = 0;
        assert_eq!(
            p.check(),
            Err(QParamsError::ZeroPointMismatch { layer: "conv1" })
        );
        assert!(WideQ::new(&p).is_err());
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
            (-1, 0, 1, 3),
            (1, 255, -1, 0),
            (1, 255, 1, 3),
        ] {
            let mut p: Box<WideQParams> = bytemuck::zeroed_box();
            let w = (127 * w_sign) as u8;
            bytemuck::bytes_of_mut(&mut p.conv1_weight).fill(w);
            bytemuck::bytes_of_mut(&mut p.conv2_weight).fill(w);
            bytemuck::bytes_of_mut(&mut p.fc1_weight).fill(w);
            bytemuck::bytes_of_mut(&mut p.fc2_weight).fill(w);
            fn set<const C: usize>(q: &mut QLayerParams<C>, n: usize, sign: i32, shift: i32) {
                q.input_scale = 1.0;
                q.output_scale = 1.0;
                q.weight_scale = [1.0; C];
                q.input_zero_point = INPUT_ZERO_POINT;
                q.output_zero_point = -128;
                let limit = ((i32::MAX >> shift) as i64 - n as i64 * 127 * 128) as i32;
                q.bias = [sign * limit; C];
                q.multiplier = [i32::MAX; C];
                q.shift = [shift; C];
            }
            set(&mut p.conv1, 9, bias_sign, shift);
            set(&mut p.conv2, 288, bias_sign, shift);
            set(&mut p.fc1, WIDE_FLAT, bias_sign, shift);
            set(&mut p.fc2, WIDE_HIDDEN, bias_sign, shift);
            let model = WideQ::new(&p).unwrap();
            let img = [pixel; IMAGE_PIXELS];
            let t = model.trace(&img);
            assert_eq!(t, model.trace_reference(&img));
            let expect = if bias_sign > 0 { 127 } else { -128 };
            assert_eq!(t.logits, [expect; 10]);
        }
    }
}

/// Host throughput, one thread, batch 1:
/// `cargo test --release -p fmnist-core --lib -- --ignored --nocapture wide_int8_throughput`.
#[cfg(test)]
mod bench {
    use super::*;
    use crate::testutil::{Lcg, random_image, random_wide_qparams};
    use std::hint::black_box;
    use std::time::Instant;

    #[test]
    #[ignore = "benchmark; run in release"]
    fn wide_int8_throughput() {
        let p = random_wide_qparams(1);
        let model = WideQ::new(&p).unwrap();
        let mut r = Lcg(3);
        let images: Vec<_> = (0..64).map(|_| random_image(&mut r)).collect();
        let run = |n: usize, f: &dyn Fn(&[u8; IMAGE_PIXELS]) -> [i8; 10]| {
            let t = Instant::now();
            let mut sink = 0i32;
            for i in 0..n {
                sink += f(black_box(&images[i % images.len()]))[i % 10] as i32;
            }
            black_box(sink);
            n as f64 / t.elapsed().as_secs_f64()
        };
        let fast = run(2_000, &|i| model.forward(i));
        let reference = run(100, &|i| model.forward_reference(i));
        println!(
            "wide int8 fast ({}): {fast:.0} images/s; reference: {reference:.0} images/s",
            if fast::USES_DSP { "dsp" } else { "portable" },
        );
    }
}

/// Compares wide int8 logits computed elsewhere (e.g. a firmware's `verify` mode under QEMU, 10
/// bytes per image) with this build's `WideQ::forward` and reference pass:
/// `FMNIST_INT8_MODEL=wide.fmq FMNIST_IMAGES=t10k-images-idx3-ubyte FMNIST_LOGITS=out.bin
/// cargo test --release -p fmnist-core --lib -- --ignored --nocapture wide_external_logits_match`
/// (`FMNIST_FIRST`: index of the first image the logits belong to).
#[cfg(test)]
mod external_logits {
    use super::*;

    #[test]
    #[ignore = "needs a wide model file, raw IDX images and a logits file"]
    fn wide_external_logits_match() {
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("set {k}"));
        let bytes = std::fs::read(var("FMNIST_INT8_MODEL")).unwrap();
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        let file =
            crate::format::parse(&bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()]).unwrap();
        let model = WideQ::new(file.wide_int8().unwrap()).unwrap();
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
            if i % 100 == 0 {
                assert_eq!(got, model.forward_reference(img), "image {}", first + i);
            }
        }
        println!("{n} images: external wide logits identical to host fast (and sampled reference)");
    }
}
