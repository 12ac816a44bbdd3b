//! The header's two enums: which network a model file holds ([`Arch`], generated from the one
//! list of networks in [`crate::registry`], which also maps it to the network's code through
//! [`crate::registry::dispatch`]) and in what form ([`Kind`]).

/// Number of u16 slots in the shape descriptor.
pub const SHAPE_SLOTS: usize = 24;

pub use crate::registry::Arch;

/// What form the weights take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// f32 as trained, batch norm as separate tensors.
    F32 = 1,
    /// f32 with batch norm folded into the convolutions.
    F32Folded = 2,
    /// Integer-only int8.
    Int8 = 3,
}

impl Kind {
    /// Decodes the header field.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Kind::F32),
            2 => Some(Kind::F32Folded),
            3 => Some(Kind::Int8),
            _ => None,
        }
    }

    /// Human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::F32 => "f32",
            Kind::F32Folded => "f32 (BN folded)",
            Kind::Int8 => "int8",
        }
    }
}
