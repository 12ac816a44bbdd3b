//! LeNet-BN: the f32 model, its parameter layout and its forward pass.
//!
//! ```text
//! input 1x28x28 (u8, scaled to [0,1])
//! conv1 6@5x5 pad 2 -> BN -> ReLU -> max-pool 2   6x14x14
//! conv2 16@5x5      -> BN -> ReLU -> max-pool 2   16x5x5
//! flatten 400 -> dense 120 -> ReLU -> dense 84 -> ReLU -> dense 10
//! ```

//!
//! This folder is the whole network: the f32 model here, its int8 twin and its `impl Network`
//! in [`int8`], its tensor-name table in `tensors.rs`.

use bytemuck::{Pod, Zeroable};

use crate::layers::{BatchNorm, Conv2d, Dense, max_pool_2x2, relu};

pub mod int8;
mod tensors;
// The host's x86-64 SIMD versions of the f32 forward pass (AVX2, AVX-512F), chosen at run time.
#[cfg(all(target_arch = "x86_64", any(test, feature = "std")))]
pub mod x86;

// The input and batch-norm pieces every network shares, under their old paths.
pub use crate::image::{IMAGE_PIXELS, IMAGE_SIDE, image_to_f32, pixel_to_f32};
pub use crate::layers::batchnorm::{BN_EPS, BnParams};

/// Trainable parameters of LeNet-BN (the running statistics are buffers, not parameters).
pub const LENET_PARAMETERS: usize = 156 + 12 + 2_416 + 32 + 48_120 + 10_164 + 850;

/// Every tensor of a trained LeNet-BN, in PyTorch's state_dict order, as one plain-old-data
/// struct: 61,794 little-endian f32 (61,750 parameters and 44 running statistics). Cast a byte
/// slice to it with [`bytemuck`] to read it in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct LeNetParams {
    /// `conv1.weight` `[6][1][5][5]`.
    pub conv1_weight: [[[[f32; 5]; 5]; 1]; 6],
    /// `conv1.bias`.
    pub conv1_bias: [f32; 6],
    /// `bn1.*`.
    pub bn1: BnParams<6>,
    /// `conv2.weight` `[16][6][5][5]`.
    pub conv2_weight: [[[[f32; 5]; 5]; 6]; 16],
    /// `conv2.bias`.
    pub conv2_bias: [f32; 16],
    /// `bn2.*`.
    pub bn2: BnParams<16>,
    /// `fc1.weight` `[120][400]`.
    pub fc1_weight: [[f32; 400]; 120],
    /// `fc1.bias`.
    pub fc1_bias: [f32; 120],
    /// `fc2.weight` `[84][120]`.
    pub fc2_weight: [[f32; 120]; 84],
    /// `fc2.bias`.
    pub fc2_bias: [f32; 84],
    /// `fc3.weight` `[10][84]`.
    pub fc3_weight: [[f32; 84]; 10],
    /// `fc3.bias`.
    pub fc3_bias: [f32; 10],
}

/// LeNet with each batch norm folded into the convolution before it: what the device runs in
/// f32. 61,706 f32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct LeNetFoldedParams {
    /// Folded `conv1.weight` `[6][1][5][5]`.
    pub conv1_weight: [[[[f32; 5]; 5]; 1]; 6],
    /// Folded `conv1.bias`.
    pub conv1_bias: [f32; 6],
    /// Folded `conv2.weight` `[16][6][5][5]`.
    pub conv2_weight: [[[[f32; 5]; 5]; 6]; 16],
    /// Folded `conv2.bias`.
    pub conv2_bias: [f32; 16],
    /// `fc1.weight` `[120][400]`.
    pub fc1_weight: [[f32; 400]; 120],
    /// `fc1.bias`.
    pub fc1_bias: [f32; 120],
    /// `fc2.weight` `[84][120]`.
    pub fc2_weight: [[f32; 120]; 84],
    /// `fc2.bias`.
    pub fc2_bias: [f32; 84],
    /// `fc3.weight` `[10][84]`.
    pub fc3_weight: [[f32; 84]; 10],
    /// `fc3.bias`.
    pub fc3_bias: [f32; 10],
}

/// The LeNet-BN forward pass over weights held elsewhere (RAM, a file buffer or flash).
/// With `bn1`/`bn2` set to `None` it is the BN-folded model.
#[derive(Clone, Copy, Debug)]
pub struct LeNet<'a> {
    /// conv1 6@5x5, padding 2.
    pub conv1: Conv2d<'a, 1, 6, 5, 2>,
    /// Batch norm after conv1 (`None` once folded).
    pub bn1: Option<BatchNorm<'a, 6>>,
    /// conv2 16@5x5, no padding.
    pub conv2: Conv2d<'a, 6, 16, 5, 0>,
    /// Batch norm after conv2 (`None` once folded).
    pub bn2: Option<BatchNorm<'a, 16>>,
    /// 400 → 120.
    pub fc1: Dense<'a, 400, 120>,
    /// 120 → 84.
    pub fc2: Dense<'a, 120, 84>,
    /// 84 → 10.
    pub fc3: Dense<'a, 84, 10>,
}

/// The intermediate activations of one forward pass, for inspection and tests.
#[derive(Clone, Debug)]
pub struct LeNetTrace {
    /// After conv1 → BN → ReLU → pool.
    pub pool1: [[[f32; 14]; 14]; 6],
    /// After conv2 → BN → ReLU → pool, flattened C×H×W.
    pub flat: [f32; 400],
    /// After fc1 → ReLU.
    pub fc1: [f32; 120],
    /// After fc2 → ReLU.
    pub fc2: [f32; 84],
    /// The logits.
    pub logits: [f32; 10],
}

impl<'a> From<&'a LeNetParams> for LeNet<'a> {
    fn from(p: &'a LeNetParams) -> Self {
        LeNet {
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
            fc3: Dense {
                weight: &p.fc3_weight,
                bias: &p.fc3_bias,
            },
        }
    }
}

impl<'a> From<&'a LeNetFoldedParams> for LeNet<'a> {
    fn from(p: &'a LeNetFoldedParams) -> Self {
        LeNet {
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
            fc3: Dense {
                weight: &p.fc3_weight,
                bias: &p.fc3_bias,
            },
        }
    }
}

impl LeNet<'_> {
    /// The ten logits for one 28x28 image, without allocating. The largest 6x28x28 map never
    /// exists: convolution, BN, ReLU and pooling are fused (bit-identical to the layer-by-layer
    /// pass, see [`LeNet::forward_layers`]). Stack use is about 8 KB.
    pub fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        self.trace(image).logits
    }

    /// The forward pass keeping every intermediate activation.
    pub fn trace(&self, image: &[u8; IMAGE_PIXELS]) -> LeNetTrace {
        let x = image_to_f32(image);
        let mut pool1 = [[[0.0; 14]; 14]; 6];
        self.conv1
            .forward_bn_relu_pool(&x, self.bn1.as_ref(), &mut pool1);
        let mut pool2 = [[[0.0f32; 5]; 5]; 16];
        self.conv2
            .forward_bn_relu_pool(&pool1, self.bn2.as_ref(), &mut pool2);
        let flat: [f32; 400] = bytemuck::cast(pool2);
        let mut fc1 = [0.0; 120];
        self.fc1.forward(&flat, &mut fc1);
        relu(&mut fc1);
        let mut fc2 = [0.0; 84];
        self.fc2.forward(&fc1, &mut fc2);
        relu(&mut fc2);
        let mut logits = [0.0; 10];
        self.fc3.forward(&fc2, &mut logits);
        LeNetTrace {
            pool1,
            flat,
            fc1,
            fc2,
            logits,
        }
    }

    /// The reference forward pass, one layer at a time as the architecture table reads. Needs
    /// about 25 KB of stack (the full 6x28x28 map); meant for tests.
    pub fn forward_layers(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        let x = image_to_f32(image);
        let mut c1 = [[[0.0f32; 28]; 28]; 6];
        self.conv1.forward(&x, &mut c1);
        if let Some(bn) = &self.bn1 {
            bn.forward(bytemuck::cast_mut::<_, [[f32; 784]; 6]>(&mut c1));
        }
        relu(c1.as_flattened_mut().as_flattened_mut());
        let mut p1 = [[[0.0f32; 14]; 14]; 6];
        max_pool_2x2(&c1, &mut p1);
        let mut c2 = [[[0.0f32; 10]; 10]; 16];
        self.conv2.forward(&p1, &mut c2);
        if let Some(bn) = &self.bn2 {
            bn.forward(bytemuck::cast_mut::<_, [[f32; 100]; 16]>(&mut c2));
        }
        relu(c2.as_flattened_mut().as_flattened_mut());
        let mut p2 = [[[0.0f32; 5]; 5]; 16];
        max_pool_2x2(&c2, &mut p2);
        let flat: [f32; 400] = bytemuck::cast(p2);
        let mut h1 = [0.0; 120];
        self.fc1.forward(&flat, &mut h1);
        relu(&mut h1);
        let mut h2 = [0.0; 84];
        self.fc2.forward(&h1, &mut h2);
        relu(&mut h2);
        let mut logits = [0.0; 10];
        self.fc3.forward(&h2, &mut logits);
        logits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_matches_the_report() {
        assert_eq!(LENET_PARAMETERS, 61_750);
        // 61,750 parameters + 44 running statistics.
        assert_eq!(size_of::<LeNetParams>(), (61_750 + 44) * 4);
        // BN folded away: the 44 statistics and 44 gamma/beta values are gone.
        assert_eq!(size_of::<LeNetFoldedParams>(), 61_706 * 4);
    }

    #[test]
    fn fused_forward_is_bit_identical_to_layer_by_layer() {
        let p = crate::testutil::random_lenet_params(7);
        let model = LeNet::from(&*p);
        let mut image = [0u8; IMAGE_PIXELS];
        for (i, px) in image.iter_mut().enumerate() {
            *px = ((i * 37 + i / 28 * 11) % 256) as u8;
        }
        let a = model.forward(&image);
        let b = model.forward_layers(&image);
        assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits));
    }

    #[test]
    fn pixel_scaling_is_exact_at_the_ends() {
        assert_eq!(pixel_to_f32(0), 0.0);
        assert_eq!(pixel_to_f32(255), 1.0);
    }
}
