//! The tensor names of the wide CNN's two f32 layouts, in PyTorch's `state_dict` order (what
//! [`crate::tensors::check_flat`] names a bad value by, and what the safetensors reader looks up).

use super::{WIDE_FLAT, WIDE_HIDDEN, WideFoldedParams, WideParams};
use crate::tensors::{Slot, Tensors, slot, total};

impl Tensors for WideParams {
    #[rustfmt::skip]
    const TENSORS: &'static [Slot] = &[
        slot("conv1.weight", 32 * 9), slot("conv1.bias", 32),
        slot("bn1.weight", 32), slot("bn1.bias", 32),
        slot("bn1.running_mean", 32), slot("bn1.running_var", 32),
        slot("conv2.weight", 64 * 32 * 9), slot("conv2.bias", 64),
        slot("bn2.weight", 64), slot("bn2.bias", 64),
        slot("bn2.running_mean", 64), slot("bn2.running_var", 64),
        slot("fc1.weight", WIDE_HIDDEN * WIDE_FLAT), slot("fc1.bias", WIDE_HIDDEN),
        slot("fc2.weight", 10 * WIDE_HIDDEN), slot("fc2.bias", 10),
    ];
}

impl Tensors for WideFoldedParams {
    #[rustfmt::skip]
    const TENSORS: &'static [Slot] = &[
        slot("conv1.weight", 32 * 9), slot("conv1.bias", 32),
        slot("conv2.weight", 64 * 32 * 9), slot("conv2.bias", 64),
        slot("fc1.weight", WIDE_HIDDEN * WIDE_FLAT), slot("fc1.bias", WIDE_HIDDEN),
        slot("fc2.weight", 10 * WIDE_HIDDEN), slot("fc2.bias", 10),
    ];
}

// Each table covers its struct exactly.
const _: () = assert!(total(WideParams::TENSORS) * 4 == size_of::<WideParams>());
const _: () = assert!(total(WideFoldedParams::TENSORS) * 4 == size_of::<WideFoldedParams>());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::table_offsets::offset_of_name;
    use core::mem::offset_of;

    #[test]
    fn tables_name_the_fields_at_their_offsets() {
        let t = WideParams::TENSORS;
        assert_eq!(offset_of_name(t, "bn1.weight"), offset_of!(WideParams, bn1));
        assert_eq!(offset_of_name(t, "bn2.weight"), offset_of!(WideParams, bn2));
        assert_eq!(
            offset_of_name(t, "fc1.weight"),
            offset_of!(WideParams, fc1_weight)
        );
        assert_eq!(
            offset_of_name(t, "fc2.bias"),
            offset_of!(WideParams, fc2_bias)
        );
        let t = WideFoldedParams::TENSORS;
        assert_eq!(
            offset_of_name(t, "conv2.bias"),
            offset_of!(WideFoldedParams, conv2_bias)
        );
        assert_eq!(
            offset_of_name(t, "fc2.weight"),
            offset_of!(WideFoldedParams, fc2_weight)
        );
    }
}
