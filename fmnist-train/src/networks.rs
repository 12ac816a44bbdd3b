//! The one list of networks this trainer knows: one line per network. It names each network's
//! `--model` value (the recipe's [`crate::shared::config::Model`]: its position in the list is
//! its encoding in every checkpoint, so lines are only ever appended), the core's
//! [`fmnist_core::arch::Arch`] variant and the [`crate::shared::net::TrainNet`] implementation
//! in the network's folder.
//!
//! The list is a macro that hands the lines to another macro, so that each file takes only
//! what it needs and imports nothing here: `shared/config.rs` generates `Model` from the
//! names (the implementations' paths are dropped unread), `registry.rs` generates `dispatch`
//! from the implementations. This file imports nothing.

/// Calls `$m! { ... }` with the list: per network its doc comment (the `--model` value's
/// help), attributes, `ModelVariant = ArchVariant => implementation;`.
macro_rules! train_networks {
    ($m:ident) => {
        $m! {
            /// LeNet-BN, 61,750 parameters: the microcontroller model.
            #[default]
            Lenet = LeNet => crate::lenet::TrainLeNet;
            /// The wide CNN, 1,630,282 parameters (conv 32/64 @3x3, dense 512, dropout).
            Wide = Wide => crate::wide::TrainWide;
        }
    };
}

pub(crate) use train_networks;
