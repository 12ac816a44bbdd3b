//! One folder per network, each the whole network as inference sees it: `mod.rs` (the f32
//! parameter layouts and forward pass), `int8.rs` (the int8 payload, the integer-only forward
//! pass and the network's [`crate::network::Network`] implementation) and `tensors.rs` (the
//! tensor-name table of each f32 layout). Shared layers are in [`crate::layers`] and
//! [`crate::quant`]; the list of networks is [`crate::registry`].

pub mod lenet;
pub mod wide;
