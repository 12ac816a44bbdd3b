//! The header's two enums: which network a model file holds ([`Arch`]) and in what form
//! ([`Kind`]). Each network's code is reached from an [`Arch`] through
//! [`crate::registry::dispatch`].

/// Number of u16 slots in the shape descriptor.
pub const SHAPE_SLOTS: usize = 24;

/// Which network a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Arch {
    /// LeNet-BN, 61,750 parameters.
    LeNet = 1,
    /// The wide CNN (32@3x3, 64@3x3, 512, 10).
    Wide = 2,
}

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

impl Arch {
    /// Decodes the header field.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Arch::LeNet),
            2 => Some(Arch::Wide),
            _ => None,
        }
    }

    /// The shape descriptor this code expects for the architecture.
    pub fn shape_descriptor(self) -> [u16; SHAPE_SLOTS] {
        let mut d = [0u16; SHAPE_SLOTS];
        let used: &[u16] = match self {
            // input C,H,W; conv1 OC,K,P; conv2 OC,K,P; fc1 I,O; fc2 I,O; fc3 I,O
            Arch::LeNet => &[1, 28, 28, 6, 5, 2, 16, 5, 0, 400, 120, 120, 84, 84, 10],
            // input C,H,W; conv1 OC,K,P; conv2 OC,K,P; fc1 I,O; fc2 I,O
            Arch::Wide => &[1, 28, 28, 32, 3, 1, 64, 3, 1, 3136, 512, 512, 10],
        };
        d[..used.len()].copy_from_slice(used);
        d
    }

    /// Human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::LeNet => "LeNet-BN",
            Arch::Wide => "wide CNN",
        }
    }
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
