//! An f32 model of any registered network as named tensors: the values of one FMNM payload
//! (kind 1 or 2), the tensor names of `fmnist_core::tensors` and PyTorch's shapes. The
//! exchange formats (safetensors, ONNX) read and write models through this one type, so
//! neither keeps a list of names or shapes of its own.
//!
//! Names and counts come from the network's [`Tensors`] table ([`table`]); shapes are derived
//! from the header's shape descriptor ([`Arch::shape_descriptor`]), which holds every layer's
//! channels, kernel, padding and dense sizes ([`Layers`]).

use fmnist_core::format::{Arch, FormatError, Kind, ModelFile};
use fmnist_core::network::{Network, NetworkFn};
use fmnist_core::registry::dispatch;
use fmnist_core::tensors::{ParamsError, Rule, Slot, Tensors, check_flat};

/// Every registered network (the order [`Arch`] values go in): the core's one list, so a new
/// network needs nothing here. A test checks it covers every network [`dispatch`] knows.
pub const ARCHS: &[Arch] = Arch::ALL;

/// The tensor table of `(arch, kind)`; empty for int8, which is not named f32 tensors.
pub fn table(arch: Arch, kind: Kind) -> &'static [Slot] {
    struct TableOf(Kind);
    impl NetworkFn for TableOf {
        type Output = &'static [Slot];
        fn call<N: Network>(self) -> &'static [Slot] {
            match self.0 {
                Kind::F32 => N::Trained::TENSORS,
                Kind::F32Folded => N::Folded::TENSORS,
                Kind::Int8 => &[],
            }
        }
    }
    dispatch(arch, TableOf(kind))
}

/// One convolution: `out` channels of `kernel`×`kernel`, zero padding `pad`, stride 1, each
/// followed (kind 1) by batch norm, then ReLU and a 2x2 max-pool of stride 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvLayer {
    /// Input channels.
    pub input: usize,
    /// Output channels.
    pub out: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Zero padding on each side.
    pub pad: usize,
}

/// One dense layer, `out × input` weights; every one but the last is followed by ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseLayer {
    /// Inputs.
    pub input: usize,
    /// Outputs.
    pub out: usize,
}

/// A network's layers, read from its shape descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layers {
    /// Input channels, height, width.
    pub input: [usize; 3],
    /// `conv1`, `conv2`.
    pub convs: Vec<ConvLayer>,
    /// `fc1`, `fc2`, ….
    pub dense: Vec<DenseLayer>,
}

impl Layers {
    /// The layers of `arch`: input C, H, W; then conv out-channels, kernel, padding for two
    /// convolutions; then (in, out) pairs of the dense layers until a zero.
    pub fn of(arch: Arch) -> Layers {
        let d = arch.shape_descriptor().map(usize::from);
        let mut channels = d[0];
        let convs = (0..2)
            .map(|i| {
                let c = ConvLayer {
                    input: channels,
                    out: d[3 + 3 * i],
                    kernel: d[4 + 3 * i],
                    pad: d[5 + 3 * i],
                };
                channels = c.out;
                c
            })
            .collect();
        let dense = d[9..]
            .chunks_exact(2)
            .take_while(|p| p[0] != 0)
            .map(|p| DenseLayer {
                input: p[0],
                out: p[1],
            })
            .collect();
        Layers {
            input: [d[0], d[1], d[2]],
            convs,
            dense,
        }
    }

    /// Height and width after convolution `i` and its pool.
    pub fn pooled_side(&self, i: usize) -> [usize; 2] {
        let [_, mut h, mut w] = self.input;
        for c in &self.convs[..=i] {
            h = (h + 2 * c.pad + 1 - c.kernel) / 2;
            w = (w + 2 * c.pad + 1 - c.kernel) / 2;
        }
        [h, w]
    }

    /// PyTorch's shape of the tensor named `name` (`conv2.weight`, `bn1.running_var`,
    /// `fc1.bias`, …), `None` for a name this network does not have.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let (layer, field) = name.split_once('.')?;
        let index = |prefix: &str| -> Option<usize> {
            layer
                .strip_prefix(prefix)?
                .parse::<usize>()
                .ok()?
                .checked_sub(1)
        };
        if let Some(c) = index("conv").and_then(|i| self.convs.get(i)) {
            return match field {
                "weight" => Some(vec![c.out, c.input, c.kernel, c.kernel]),
                "bias" => Some(vec![c.out]),
                _ => None,
            };
        }
        if let Some(c) = index("bn").and_then(|i| self.convs.get(i)) {
            return matches!(field, "weight" | "bias" | "running_mean" | "running_var")
                .then(|| vec![c.out]);
        }
        if let Some(l) = index("fc").and_then(|i| self.dense.get(i)) {
            return match field {
                "weight" => Some(vec![l.out, l.input]),
                "bias" => Some(vec![l.out]),
                _ => None,
            };
        }
        None
    }
}

/// An f32 model (kind 1 or 2) of a registered network: its values in the order of its
/// [`table`], which is also its FMNM payload and PyTorch's `state_dict` order.
#[derive(Clone, Debug, PartialEq)]
pub struct F32Params {
    /// The network.
    pub arch: Arch,
    /// [`Kind::F32`] or [`Kind::F32Folded`].
    pub kind: Kind,
    /// Every value, tensor after tensor.
    pub values: Vec<f32>,
}

impl F32Params {
    /// The tensor table.
    pub fn table(&self) -> &'static [Slot] {
        table(self.arch, self.kind)
    }

    /// Every tensor: its slot and its values, in table order.
    pub fn tensors(&self) -> impl Iterator<Item = (&'static Slot, &[f32])> {
        let mut at = 0;
        self.table().iter().map(move |s| {
            let t = &self.values[at..at + s.len];
            at += s.len;
            (s, t)
        })
    }

    /// Builds the model from one tensor at a time (`get` returns the values of a slot, which
    /// must be `slot.len` long), then runs the parameter check every reader runs.
    pub fn from_tensors<E>(
        arch: Arch,
        kind: Kind,
        mut get: impl FnMut(&'static Slot) -> Result<Vec<f32>, E>,
        params_error: impl Fn(ParamsError) -> E,
    ) -> Result<F32Params, E> {
        let table = table(arch, kind);
        let mut values = Vec::with_capacity(fmnist_core::tensors::total(table));
        for slot in table {
            let t = get(slot)?;
            assert_eq!(t.len(), slot.len, "{} has the table's length", slot.name);
            values.extend_from_slice(&t);
        }
        check_flat(table, &values, Rule::Parameters).map_err(params_error)?;
        Ok(F32Params { arch, kind, values })
    }

    /// The f32 tensors of a checked model file (kind 1 or 2; `None` for int8).
    pub fn from_file(file: &ModelFile<'_>) -> Option<Result<F32Params, FormatError>> {
        struct Read<'a, 'b>(&'b ModelFile<'a>);
        impl NetworkFn for Read<'_, '_> {
            type Output = Option<Result<Vec<f32>, FormatError>>;
            fn call<N: Network>(self) -> Self::Output {
                fn flat<T: Tensors>(p: &T) -> Vec<f32> {
                    bytemuck::cast_slice(std::slice::from_ref(p)).to_vec()
                }
                match self.0.header.kind {
                    Kind::F32 => Some(self.0.trained::<N>().map(flat)),
                    Kind::F32Folded => Some(self.0.folded::<N>().map(flat)),
                    Kind::Int8 => None,
                }
            }
        }
        let (arch, kind) = (file.header.arch, file.header.kind);
        dispatch(arch, Read(file)).map(|r| r.map(|values| F32Params { arch, kind, values }))
    }

    /// The FMNM payload bytes (little-endian f32, in table order).
    pub fn payload(&self) -> Vec<u8> {
        self.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A complete FMNM file.
    pub fn to_fmnm(&self) -> Vec<u8> {
        crate::modelio::encode_model(self.arch, self.kind, &self.payload())
    }

    /// "LeNet-BN, f32 as trained" and the like, for messages.
    pub fn describe(&self) -> String {
        describe(self.arch, self.kind)
    }
}

/// "LeNet-BN, f32 as trained", "wide CNN, f32 (BN folded)", "LeNet-BN, int8".
pub fn describe(arch: Arch, kind: Kind) -> String {
    let kind = match kind {
        Kind::F32 => "f32 as trained",
        k => k.name(),
    };
    format!("{}, {kind}", arch.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fmnist_core::tensors::total;

    /// Every registered network is in [`ARCHS`]: `dispatch` of each `Arch` value.
    #[test]
    fn archs_are_the_registered_networks() {
        struct ArchOf;
        impl NetworkFn for ArchOf {
            type Output = Arch;
            fn call<N: Network>(self) -> Arch {
                N::ARCH
            }
        }
        for &a in ARCHS {
            assert_eq!(dispatch(a, ArchOf), a);
        }
        for v in 1..=ARCHS.len() as u16 + 1 {
            assert_eq!(
                Arch::from_u16(v).is_some(),
                ARCHS.iter().any(|a| *a as u16 == v)
            );
        }
    }

    /// Every tensor of every table has a shape, whose size is the table's count.
    #[test]
    fn shapes_cover_every_table() {
        for &arch in ARCHS {
            let layers = Layers::of(arch);
            for kind in [Kind::F32, Kind::F32Folded] {
                for s in table(arch, kind) {
                    let shape = layers.shape(s.name).unwrap_or_else(|| panic!("{}", s.name));
                    assert_eq!(shape.iter().product::<usize>(), s.len, "{}", s.name);
                }
            }
            let last = layers.convs.len() - 1;
            let [h, w] = layers.pooled_side(last);
            assert_eq!(layers.convs[last].out * h * w, layers.dense[0].input);
        }
        let l = Layers::of(Arch::LeNet);
        assert_eq!(l.shape("conv2.weight"), Some(vec![16, 6, 5, 5]));
        assert_eq!(l.shape("fc3.weight"), Some(vec![10, 84]));
        assert_eq!(l.shape("fc4.weight"), None);
        assert_eq!(l.shape("bn1.num_batches_tracked"), None);
        let w = Layers::of(Arch::Wide);
        assert_eq!(w.shape("conv1.weight"), Some(vec![32, 1, 3, 3]));
        assert_eq!(w.shape("fc1.weight"), Some(vec![512, 3136]));
        assert_eq!(w.shape("fc3.bias"), None);
        assert_eq!(total(table(Arch::Wide, Kind::Int8)), 0);
    }
}
