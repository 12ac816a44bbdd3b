//! The wide CNN: the f32 parameter layout shared by the trainer, the file format and inference.
//!
//! ```text
//! input 1x28x28 (u8, scaled to [0,1])
//! conv1 32@3x3 pad 1 -> BN -> ReLU -> max-pool 2   32x14x14
//! conv2 64@3x3 pad 1 -> BN -> ReLU -> max-pool 2   64x7x7
//! flatten 3136 -> dense 512 -> ReLU -> (dropout 0.5 in training) -> dense 10
//! ```

use bytemuck::{Pod, Zeroable};

use crate::lenet::BnParams;

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

#[cfg(test)]
mod tests {
    use super::*;

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
