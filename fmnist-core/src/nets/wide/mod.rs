//! The wide CNN: the f32 parameter layout shared by the trainer, the file format and inference.
//!
//! ```text
//! input 1x28x28 (u8, scaled to [0,1])
//! conv1 32@3x3 pad 1 -> BN -> ReLU -> max-pool 2   32x14x14
//! conv2 64@3x3 pad 1 -> BN -> ReLU -> max-pool 2   64x7x7
//! flatten 3136 -> dense 512 -> ReLU -> (dropout 0.5 in training) -> dense 10
//! ```
//!
//! This folder is the whole network: the f32 model here, its int8 twin and its `impl Network`
//! in [`int8`], its tensor-name table in `tensors.rs`.

use bytemuck::{Pod, Zeroable};

use crate::image::{IMAGE_PIXELS, image_to_f32};
use crate::layers::batchnorm::BnParams;
use crate::layers::{BatchNorm, Conv2d, Dense, max_pool_2x2, relu};

pub mod int8;
mod tensors;

/// Trainable parameters of the wide CNN (running statistics are buffers, not parameters).
pub const WIDE_PARAMETERS: usize = 320 + 64 + 18_496 + 128 + 1_606_144 + 5_130;

/// Flattened features after the second pool: 64 channels of 7x7.
pub const WIDE_FLAT: usize = 64 * 7 * 7;

/// Units of the hidden dense layer.
pub const WIDE_HIDDEN: usize = 512;

/// Every tensor of a trained wide CNN, in PyTorch's state_dict order (`conv1`, `bn1`, `conv2`,
/// `bn2`, `fc1`, `fc2`), as one plain-old-data struct of little-endian f32: 1,630,282 parameters
/// and 192 running statistics.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct WideParams {
    /// `conv1.weight` `[32][1][3][3]`.
    pub conv1_weight: [[[[f32; 3]; 3]; 1]; 32],
    /// `conv1.bias`.
    pub conv1_bias: [f32; 32],
    /// `bn1.*`.
    pub bn1: BnParams<32>,
    /// `conv2.weight` `[64][32][3][3]`.
    pub conv2_weight: [[[[f32; 3]; 3]; 32]; 64],
    /// `conv2.bias`.
    pub conv2_bias: [f32; 64],
    /// `bn2.*`.
    pub bn2: BnParams<64>,
    /// `fc1.weight` `[512][3136]`.
    pub fc1_weight: [[f32; WIDE_FLAT]; WIDE_HIDDEN],
    /// `fc1.bias`.
    pub fc1_bias: [f32; WIDE_HIDDEN],
    /// `fc2.weight` `[10][512]`.
    pub fc2_weight: [[f32; WIDE_HIDDEN]; 10],
    /// `fc2.bias`.
    pub fc2_bias: [f32; 10],
}

/// The wide CNN with each batch norm folded into the convolution before it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct WideFoldedParams {
    /// Folded `conv1.weight` `[32][1][3][3]`.
    pub conv1_weight: [[[[f32; 3]; 3]; 1]; 32],
    /// Folded `conv1.bias`.
    pub conv1_bias: [f32; 32],
    /// Folded `conv2.weight` `[64][32][3][3]`.
    pub conv2_weight: [[[[f32; 3]; 3]; 32]; 64],
    /// Folded `conv2.bias`.
    pub conv2_bias: [f32; 64],
    /// `fc1.weight` `[512][3136]`.
    pub fc1_weight: [[f32; WIDE_FLAT]; WIDE_HIDDEN],
    /// `fc1.bias`.
    pub fc1_bias: [f32; WIDE_HIDDEN],
    /// `fc2.weight` `[10][512]`.
    pub fc2_weight: [[f32; WIDE_HIDDEN]; 10],
    /// `fc2.bias`.
    pub fc2_bias: [f32; 10],
}

/// The wide CNN's forward pass over weights held elsewhere (RAM, a file buffer or flash).
/// With `bn1`/`bn2` set to `None` it is the BN-folded model.
#[derive(Clone, Copy, Debug)]
pub struct Wide<'a> {
    /// conv1 32@3x3, padding 1.
    pub conv1: Conv2d<'a, 1, 32, 3, 1>,
    /// Batch norm after conv1 (`None` once folded).
    pub bn1: Option<BatchNorm<'a, 32>>,
    /// conv2 64@3x3, padding 1.
    pub conv2: Conv2d<'a, 32, 64, 3, 1>,
    /// Batch norm after conv2 (`None` once folded).
    pub bn2: Option<BatchNorm<'a, 64>>,
    /// 3136 → 512.
    pub fc1: Dense<'a, WIDE_FLAT, WIDE_HIDDEN>,
    /// 512 → 10.
    pub fc2: Dense<'a, WIDE_HIDDEN, 10>,
}

/// The intermediate activations of one forward pass, for inspection and tests (about 40 KB:
/// box it or keep it off small stacks).
#[derive(Clone, Debug)]
pub struct WideTrace {
    /// After conv1 → BN → ReLU → pool.
    pub pool1: [[[f32; 14]; 14]; 32],
    /// After conv2 → BN → ReLU → pool, flattened C×H×W (index `c·49 + y·7 + x`).
    pub flat: [f32; WIDE_FLAT],
    /// After fc1 → ReLU.
    pub fc1: [f32; WIDE_HIDDEN],
    /// The logits.
    pub logits: [f32; 10],
}

impl<'a> From<&'a WideParams> for Wide<'a> {
    fn from(p: &'a WideParams) -> Self {
        Wide {
            conv1: Conv2d {
                weight: &p.conv1_weight,
                bias: &p.conv1_bias,
            },
            bn1: Some(p.bn1.layer()),
            conv2: Conv2d {
                weight: &p.conv2_weight,
                bias: &p.conv2_bias,
            },
            bn2: Some(p.bn2.layer()),
            fc1: Dense {
                weight: &p.fc1_weight,
                bias: &p.fc1_bias,
            },
            fc2: Dense {
                weight: &p.fc2_weight,
                bias: &p.fc2_bias,
            },
        }
    }
}

impl<'a> From<&'a WideFoldedParams> for Wide<'a> {
    fn from(p: &'a WideFoldedParams) -> Self {
        Wide {
            conv1: Conv2d {
                weight: &p.conv1_weight,
                bias: &p.conv1_bias,
            },
            bn1: None,
            conv2: Conv2d {
                weight: &p.conv2_weight,
                bias: &p.conv2_bias,
            },
            bn2: None,
            fc1: Dense {
                weight: &p.fc1_weight,
                bias: &p.fc1_bias,
            },
            fc2: Dense {
                weight: &p.fc2_weight,
                bias: &p.fc2_bias,
            },
        }
    }
}

impl Wide<'_> {
    /// The ten logits for one 28x28 image, without allocating. The 32x28x28 and 64x14x14 maps
    /// never exist: convolution, BN, ReLU and pooling are fused (bit-identical to the
    /// layer-by-layer pass, see [`Wide::forward_layers`]). Stack use is about 42 KB (the 3 KB
    /// input, the 25 KB pool1 map and the 12.5 KB flattened pool2 map, live one after another
    /// as far as the compiler allows).
    pub fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        let flat = self.features(image);
        let mut h1 = [0.0; WIDE_HIDDEN];
        self.fc1.forward(&flat, &mut h1);
        relu(&mut h1);
        let mut logits = [0.0; 10];
        self.fc2.forward(&h1, &mut logits);
        logits
    }

    /// conv1 → BN → ReLU → pool → conv2 → BN → ReLU → pool, flattened C×H×W.
    #[inline(never)]
    fn features(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; WIDE_FLAT] {
        let mut pool1 = [[[0.0; 14]; 14]; 32];
        self.conv1
            .forward_bn_relu_pool(&image_to_f32(image), self.bn1.as_ref(), &mut pool1);
        let mut pool2 = [[[0.0f32; 7]; 7]; 64];
        self.conv2
            .forward_bn_relu_pool(&pool1, self.bn2.as_ref(), &mut pool2);
        bytemuck::cast(pool2)
    }

    /// The forward pass keeping every intermediate activation.
    pub fn trace(&self, image: &[u8; IMAGE_PIXELS]) -> WideTrace {
        let x = image_to_f32(image);
        let mut pool1 = [[[0.0; 14]; 14]; 32];
        self.conv1
            .forward_bn_relu_pool(&x, self.bn1.as_ref(), &mut pool1);
        let mut pool2 = [[[0.0f32; 7]; 7]; 64];
        self.conv2
            .forward_bn_relu_pool(&pool1, self.bn2.as_ref(), &mut pool2);
        let flat: [f32; WIDE_FLAT] = bytemuck::cast(pool2);
        let mut fc1 = [0.0; WIDE_HIDDEN];
        self.fc1.forward(&flat, &mut fc1);
        relu(&mut fc1);
        let mut logits = [0.0; 10];
        self.fc2.forward(&fc1, &mut logits);
        WideTrace {
            pool1,
            flat,
            fc1,
            logits,
        }
    }

    /// The reference forward pass, one layer at a time as the architecture table reads. Needs
    /// about 200 KB of stack (the full 32x28x28 and 64x14x14 maps); meant for tests, on a
    /// thread with a large stack.
    pub fn forward_layers(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        let x = image_to_f32(image);
        let mut c1 = [[[0.0f32; 28]; 28]; 32];
        self.conv1.forward(&x, &mut c1);
        if let Some(bn) = &self.bn1 {
            bn.forward(bytemuck::cast_mut::<_, [[f32; 784]; 32]>(&mut c1));
        }
        relu(c1.as_flattened_mut().as_flattened_mut());
        let mut p1 = [[[0.0f32; 14]; 14]; 32];
        max_pool_2x2(&c1, &mut p1);
        let mut c2 = [[[0.0f32; 14]; 14]; 64];
        self.conv2.forward(&p1, &mut c2);
        if let Some(bn) = &self.bn2 {
            bn.forward(bytemuck::cast_mut::<_, [[f32; 196]; 64]>(&mut c2));
        }
        relu(c2.as_flattened_mut().as_flattened_mut());
        let mut p2 = [[[0.0f32; 7]; 7]; 64];
        max_pool_2x2(&c2, &mut p2);
        let flat: [f32; WIDE_FLAT] = bytemuck::cast(p2);
        let mut h1 = [0.0; WIDE_HIDDEN];
        self.fc1.forward_reference(&flat, &mut h1);
        relu(&mut h1);
        let mut logits = [0.0; 10];
        self.fc2.forward_reference(&h1, &mut logits);
        logits
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A structured test image (stripes and a gradient).
    pub fn test_image() -> [u8; IMAGE_PIXELS] {
        core::array::from_fn(|i| ((i * 37 + i / 28 * 11) % 256) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::testutil::random_wide_params;

    /// Runs `f` on a thread with a 64 MB stack (the layer-by-layer pass keeps full maps).
    fn big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn fused_forward_is_bit_identical_to_layer_by_layer() {
        big_stack(|| {
            let p = random_wide_params(7);
            let model = Wide::from(&*p);
            let image = test_image();
            let a = model.forward(&image);
            let b = model.forward_layers(&image);
            assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits));
            let t = model.trace(&image);
            assert_eq!(t.logits.map(f32::to_bits), a.map(f32::to_bits));
            // Not a degenerate model: logits differ and the hidden layer is partly active.
            assert!(a.iter().any(|&v| v != a[0]), "{a:?}");
            let active = t.fc1.iter().filter(|&&v| v > 0.0).count();
            assert!(active > 50 && active < 500, "{active}");
        });
    }

    /// BN folded by hand (the formula of `fmnist_train::fold`) gives the same logits up to
    /// rounding.
    #[test]
    fn folded_model_is_close_to_the_unfolded_one() {
        big_stack(|| {
            let p = random_wide_params(11);
            let mut f: Box<WideFoldedParams> = bytemuck::zeroed_box();
            fn fold<const C: usize, const N: usize>(
                bn: &BnParams<C>,
                w: &[[f32; N]; C],
                b: &[f32; C],
                wf: &mut [[f32; N]; C],
                bf: &mut [f32; C],
            ) {
                for c in 0..C {
                    let k =
                        bn.gamma[c] / (bn.running_var[c] + crate::layers::batchnorm::BN_EPS).sqrt();
                    for (d, &s) in wf[c].iter_mut().zip(&w[c]) {
                        *d = s * k;
                    }
                    bf[c] = (b[c] - bn.running_mean[c]) * k + bn.beta[c];
                }
            }
            fold(
                &p.bn1,
                bytemuck::cast_ref::<_, [[f32; 9]; 32]>(&p.conv1_weight),
                &p.conv1_bias,
                bytemuck::cast_mut::<_, [[f32; 9]; 32]>(&mut f.conv1_weight),
                &mut f.conv1_bias,
            );
            fold(
                &p.bn2,
                bytemuck::cast_ref::<_, [[f32; 288]; 64]>(&p.conv2_weight),
                &p.conv2_bias,
                bytemuck::cast_mut::<_, [[f32; 288]; 64]>(&mut f.conv2_weight),
                &mut f.conv2_bias,
            );
            f.fc1_weight = p.fc1_weight;
            f.fc1_bias = p.fc1_bias;
            f.fc2_weight = p.fc2_weight;
            f.fc2_bias = p.fc2_bias;
            let image = test_image();
            let a = Wide::from(&*p).forward(&image);
            let b = Wide::from(&*f).forward(&image);
            let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(&b) {
                crate::assert_close!(*x, *y, 1e-4 * scale);
            }
        });
    }

    /// Hand-checked shapes: a model whose only non-zero parameters route one pixel through
    /// one channel of each layer to one logit.
    #[test]
    fn hand_checked_single_path() {
        big_stack(|| {
            let mut p: Box<WideFoldedParams> = bytemuck::zeroed_box();
            // conv1 channel 5: the centre tap, so output (y, x) = pixel (y, x).
            p.conv1_weight[5][0][1][1] = 1.0;
            // conv2 channel 9 reads conv1 channel 5 through its bottom-right tap: output
            // (y, x) = pool1 (y + 1, x + 1).
            p.conv2_weight[9][5][2][2] = 2.0;
            // pool2 (9, 3, 4) is flat index 9·49 + 3·7 + 4 = 466; fc1 unit 100 reads it.
            p.fc1_weight[100][466] = 0.5;
            p.fc2_bias[2] = -1.0;
            p.fc2_weight[2][100] = 4.0;
            // Pixel (y, x) reaches pool2 (3, 4) iff its pool1 cell (y/2, x/2) is in the window
            // of conv2 outputs (6..8, 8..10), i.e. pool1 rows 7..9 and columns 9..11: pixel
            // rows 14..18, columns 18..22. Put 255 at (15, 19) → pool1 (7, 9) = 1.0.
            let mut image = [0u8; IMAGE_PIXELS];
            image[15 * 28 + 19] = 255;
            let model = Wide::from(&*p);
            let t = model.trace(&image);
            assert_eq!(t.pool1[5][7][9], 1.0);
            assert_eq!(t.flat[466], 2.0);
            assert_eq!(t.fc1[100], 1.0);
            let mut want = [0.0; 10];
            want[2] = 3.0;
            assert_eq!(t.logits, want);
            assert_eq!(model.forward_layers(&image), want);
            // One pixel outside the receptive field changes nothing.
            let mut image = [0u8; IMAGE_PIXELS];
            image[13 * 28 + 19] = 255;
            let mut want = [0.0; 10];
            want[2] = -1.0;
            assert_eq!(model.forward(&image), want);
        });
    }

    #[test]
    fn parameter_count_matches_the_design() {
        assert_eq!(WIDE_PARAMETERS, 1_630_282);
        // All f32: the parameters plus 2 x (32 + 64) running statistics.
        assert_eq!(size_of::<WideParams>() / 4, WIDE_PARAMETERS + 2 * (32 + 64));
        assert_eq!(
            size_of::<WideFoldedParams>() / 4,
            WIDE_PARAMETERS - 2 * (32 + 64)
        );
    }
}
