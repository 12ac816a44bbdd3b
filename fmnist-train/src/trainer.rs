//! LeNet-BN's trainer under its old path (`lenet/train.rs`).

pub use crate::lenet::train::*;
pub use crate::shared::step::*;
