//! The networks this build knows, listed once. The `networks!` list below generates the
//! header's [`Arch`] enum (its values, [`Arch::from_u16`], [`Arch::name`],
//! [`Arch::shape_descriptor`], [`Arch::ALL`]) and [`dispatch`], which maps an [`Arch`] to the
//! network's [`Network`](crate::network::Network) implementation. Adding a network adds one line to the list (and its
//! `impl Network`, see `network.rs`).

use crate::arch::SHAPE_SLOTS;
use crate::network::NetworkFn;

pub use crate::nets::lenet::int8::LeNetBn;
pub use crate::nets::wide::int8::WideCnn;

/// The shape descriptor `used`, zero-padded to [`SHAPE_SLOTS`].
const fn pad(used: &[u16]) -> [u16; SHAPE_SLOTS] {
    assert!(used.len() <= SHAPE_SLOTS);
    let mut d = [0u16; SHAPE_SLOTS];
    let mut i = 0;
    while i < used.len() {
        d[i] = used[i];
        i += 1;
    }
    d
}

/// One line per network: `Variant = header value => implementation, "name", [shape descriptor]`.
macro_rules! networks {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $value:literal => $net:ty, $name:literal, [$($shape:literal),* $(,)?];
    )+) => {
        /// Which network a file holds (the header's architecture field), one value per line of
        /// the registry (`registry.rs`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub enum Arch {
            $( $(#[$doc])* $variant = $value, )+
        }

        impl Arch {
            /// Every registered network, in the list's order.
            pub const ALL: &[Arch] = &[$(Arch::$variant),+];

            /// Decodes the header field.
            pub const fn from_u16(v: u16) -> Option<Self> {
                match v {
                    $( $value => Some(Arch::$variant), )+
                    _ => None,
                }
            }

            /// The shape descriptor this code expects for the architecture.
            pub const fn shape_descriptor(self) -> [u16; SHAPE_SLOTS] {
                match self {
                    $( Arch::$variant => const { pad(&[$($shape),*]) }, )+
                }
            }

            /// Human-readable name.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Arch::$variant => $name, )+
                }
            }
        }

        /// Calls `f` with the network `arch` names.
        #[inline]
        pub fn dispatch<F: NetworkFn>(arch: Arch, f: F) -> F::Output {
            match arch {
                $( Arch::$variant => f.call::<$net>(), )+
            }
        }
    };
}

networks! {
    /// LeNet-BN, 61,750 parameters. Shapes: input C,H,W; conv1 OC,K,P; conv2 OC,K,P; fc1 I,O;
    /// fc2 I,O; fc3 I,O.
    LeNet = 1 => LeNetBn, "LeNet-BN", [1, 28, 28, 6, 5, 2, 16, 5, 0, 400, 120, 120, 84, 84, 10];
    /// The wide CNN (32@3x3, 64@3x3, 512, 10). Shapes: input C,H,W; conv1 OC,K,P; conv2
    /// OC,K,P; fc1 I,O; fc2 I,O.
    Wide = 2 => WideCnn, "wide CNN", [1, 28, 28, 32, 3, 1, 64, 3, 1, 3136, 512, 512, 10];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Network;

    /// The list and the implementations agree: each value decodes to itself, names the
    /// implementation whose `ARCH` it is, and the values are distinct.
    #[test]
    fn every_registered_network_round_trips() {
        struct ArchOf;
        impl NetworkFn for ArchOf {
            type Output = Arch;
            fn call<N: Network>(self) -> Arch {
                N::ARCH
            }
        }
        for &a in Arch::ALL {
            assert_eq!(Arch::from_u16(a as u16), Some(a));
            assert_eq!(dispatch(a, ArchOf), a);
            assert_ne!(a.shape_descriptor(), [0; SHAPE_SLOTS]);
        }
        assert_eq!(Arch::from_u16(0), None);
        assert_eq!(Arch::from_u16(Arch::ALL.len() as u16 + 1), None);
        assert_eq!(Arch::LeNet.name(), "LeNet-BN");
        assert_eq!(Arch::Wide.shape_descriptor()[9], 3136);
    }

    /// The layer-by-layer pass gives the fused forward pass's logits, through every layer.
    #[test]
    fn probed_forward_equals_forward() {
        use crate::network::LayerProbe;
        use crate::testutil::{Lcg, random_image, random_qparams, random_wide_qparams};
        struct Names(Vec<&'static str>);
        impl LayerProbe for Names {
            fn layer<R>(&mut self, layer: &'static str, step: impl FnOnce() -> R) -> R {
                self.0.push(layer);
                step()
            }
        }
        fn check<N: Network>(p: &N::QParams, layers: usize) {
            let net = N::int8(p).unwrap();
            let mut r = Lcg(7);
            for _ in 0..4 {
                let img = random_image(&mut r);
                let mut names = Names(Vec::new());
                let probed = N::int8_forward_probed(&net, &img, &mut names);
                assert_eq!(probed, N::int8_forward(&net, &img), "{}", N::NAME);
                assert_eq!(names.0.len(), layers, "{}: {:?}", N::NAME, names.0);
            }
        }
        check::<LeNetBn>(&random_qparams(3), 5);
        check::<WideCnn>(&random_wide_qparams(3), 4);
    }
}
