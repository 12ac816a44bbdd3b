//! The ten Fashion-MNIST classes, in label order.

/// Number of classes.
pub const NUM_CLASSES: usize = 10;

/// Class names indexed by label (0..=9), as in Zalando's Fashion-MNIST release.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The name of `label`, or `None` when it is not a Fashion-MNIST label.
pub fn class_name(label: usize) -> Option<&'static str> {
    CLASS_NAMES.get(label).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_label_order() {
        assert_eq!(class_name(0), Some("T-shirt/top"));
        assert_eq!(class_name(9), Some("Ankle boot"));
        assert_eq!(class_name(10), None);
    }
}
