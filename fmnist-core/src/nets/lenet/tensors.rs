//! The tensor names of LeNet-BN's two f32 layouts, in PyTorch's `state_dict` order (what
//! [`crate::tensors::check_flat`] names a bad value by, and what the safetensors reader looks up).

use super::{LeNetFoldedParams, LeNetParams};
use crate::tensors::{Slot, Tensors, slot, total};

impl Tensors for LeNetParams {
    #[rustfmt::skip]
    const TENSORS: &'static [Slot] = &[
        slot("conv1.weight", 6 * 25), slot("conv1.bias", 6),
        slot("bn1.weight", 6), slot("bn1.bias", 6),
        slot("bn1.running_mean", 6), slot("bn1.running_var", 6),
        slot("conv2.weight", 16 * 6 * 25), slot("conv2.bias", 16),
        slot("bn2.weight", 16), slot("bn2.bias", 16),
        slot("bn2.running_mean", 16), slot("bn2.running_var", 16),
        slot("fc1.weight", 120 * 400), slot("fc1.bias", 120),
        slot("fc2.weight", 84 * 120), slot("fc2.bias", 84),
        slot("fc3.weight", 10 * 84), slot("fc3.bias", 10),
    ];
}

impl Tensors for LeNetFoldedParams {
    #[rustfmt::skip]
    const TENSORS: &'static [Slot] = &[
        slot("conv1.weight", 6 * 25), slot("conv1.bias", 6),
        slot("conv2.weight", 16 * 6 * 25), slot("conv2.bias", 16),
        slot("fc1.weight", 120 * 400), slot("fc1.bias", 120),
        slot("fc2.weight", 84 * 120), slot("fc2.bias", 84),
        slot("fc3.weight", 10 * 84), slot("fc3.bias", 10),
    ];
}

// Each table covers its struct exactly.
const _: () = assert!(total(LeNetParams::TENSORS) * 4 == size_of::<LeNetParams>());
const _: () = assert!(total(LeNetFoldedParams::TENSORS) * 4 == size_of::<LeNetFoldedParams>());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::table_offsets::offset_of_name;
    use core::mem::offset_of;

    #[test]
    fn tables_name_the_fields_at_their_offsets() {
        let t = LeNetParams::TENSORS;
        assert_eq!(
            offset_of_name(t, "conv1.bias"),
            offset_of!(LeNetParams, conv1_bias)
        );
        assert_eq!(
            offset_of_name(t, "bn1.weight"),
            offset_of!(LeNetParams, bn1)
        );
        assert_eq!(
            offset_of_name(t, "conv2.weight"),
            offset_of!(LeNetParams, conv2_weight)
        );
        assert_eq!(
            offset_of_name(t, "bn2.weight"),
            offset_of!(LeNetParams, bn2)
        );
        assert_eq!(
            offset_of_name(t, "fc1.weight"),
            offset_of!(LeNetParams, fc1_weight)
        );
        assert_eq!(
            offset_of_name(t, "fc2.bias"),
            offset_of!(LeNetParams, fc2_bias)
        );
        assert_eq!(
            offset_of_name(t, "fc3.bias"),
            offset_of!(LeNetParams, fc3_bias)
        );
        let t = LeNetFoldedParams::TENSORS;
        assert_eq!(
            offset_of_name(t, "conv2.bias"),
            offset_of!(LeNetFoldedParams, conv2_bias)
        );
        assert_eq!(
            offset_of_name(t, "fc1.weight"),
            offset_of!(LeNetFoldedParams, fc1_weight)
        );
        assert_eq!(
            offset_of_name(t, "fc3.weight"),
            offset_of!(LeNetFoldedParams, fc3_weight)
        );
    }
}
