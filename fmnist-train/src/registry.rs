//! The networks this trainer knows, from the one list in `networks.rs`: [`dispatch`] maps an
//! [`Arch`] (from a recipe's `--model`, a checkpoint or a model file) to the network's
//! [`TrainNet`] implementation, and what the command line asks of "the network `--model`
//! names" (its presets, its `--conv` rule) goes through it. Adding a network adds its folder
//! and one line to the list.

use fmnist_core::arch::Arch;

use crate::shared::config::{Conv, Model, Preset, TrainConfig};
use crate::shared::net::{TrainNet, TrainNetFn};

pub use crate::lenet::TrainLeNet;
pub use crate::wide::TrainWide;

/// Generates [`dispatch`] from the list of networks (`networks.rs`).
macro_rules! dispatch_fn {
    ($( $(#[$attr:meta])* $variant:ident = $arch:ident => $net:path; )+) => {
        /// Calls `f` with the network `arch` names.
        #[inline]
        pub fn dispatch<F: TrainNetFn>(arch: Arch, f: F) -> F::Output {
            match arch {
                $( Arch::$arch => f.call::<$net>(), )+
            }
        }
    };
}

crate::networks::train_networks!(dispatch_fn);

/// Calls `f` with the network `model` names.
fn with<F: TrainNetFn>(model: Model, f: F) -> F::Output {
    dispatch(model.arch(), f)
}

impl Preset {
    /// The recipe of `model` for a training set of `n` images (the network's
    /// [`TrainNet::preset`]).
    pub fn config_for(self, model: Model, n: usize, seed: u64) -> TrainConfig {
        struct Config(Preset, usize, u64);
        impl TrainNetFn for Config {
            type Output = TrainConfig;
            fn call<N: TrainNet>(self) -> TrainConfig {
                N::preset(self.0, self.1, self.2)
            }
        }
        with(model, Config(self, n, seed))
    }
}

/// Refuses a `conv` the network `model` does not train with ([`TrainNet::check_conv`]).
pub fn check_conv(model: Model, conv: Conv) -> Result<(), String> {
    struct Check(Conv);
    impl TrainNetFn for Check {
        type Output = Result<(), String>;
        fn call<N: TrainNet>(self) -> Self::Output {
            N::check_conv(self.0)
        }
    }
    with(model, Check(conv))
}

/// True when the network `model` trains with more than one conv algorithm, so that a run's
/// summary names the one it used.
pub fn names_conv(model: Model) -> bool {
    struct Choice;
    impl TrainNetFn for Choice {
        type Output = bool;
        fn call<N: TrainNet>(self) -> bool {
            N::CONVS.len() > 1
        }
    }
    with(model, Choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fmnist_core::network::Network;

    /// The list agrees with the implementations: each `--model` value maps to the
    /// architecture of the implementation `dispatch` picks, which names that value back; the
    /// encodings of the two first networks are those of every checkpoint written so far.
    #[test]
    fn every_listed_network_round_trips() {
        struct Names;
        impl TrainNetFn for Names {
            type Output = (Model, Arch);
            fn call<N: TrainNet>(self) -> (Model, Arch) {
                (N::MODEL, <N::Core as Network>::ARCH)
            }
        }
        for &m in Model::ALL {
            assert_eq!(dispatch(m.arch(), Names), (m, m.arch()));
        }
        assert_eq!(postcard::to_allocvec(&Model::Lenet).unwrap(), [0]);
        assert_eq!(postcard::to_allocvec(&Model::Wide).unwrap(), [1]);
        assert_eq!(serde_json::to_string(&Model::Wide).unwrap(), "\"Wide\"");
        assert_eq!(Model::default(), Model::Lenet);
        use clap::ValueEnum;
        let values: Vec<String> = Model::value_variants()
            .iter()
            .map(|m| m.to_possible_value().unwrap().get_name().to_string())
            .collect();
        assert_eq!(values, ["lenet", "wide"]);
    }

    #[test]
    fn every_preset_passes_the_recipe_check_and_its_network_conv_rule() {
        for &model in Model::ALL {
            for preset in [Preset::Original, Preset::Default, Preset::Fast] {
                let c = preset.config_for(model, 60_000, 1);
                assert_eq!(c.model, model);
                assert_eq!(c.check(), Ok(()), "{model:?} {preset:?}");
                assert_eq!(check_conv(model, c.conv), Ok(()), "{model:?} {preset:?}");
            }
        }
    }

    #[test]
    fn lenet_recipes_take_only_the_direct_conv_and_wide_ones_default_to_winograd() {
        for preset in [Preset::Original, Preset::Default, Preset::Fast] {
            let lenet = preset.config_for(Model::Lenet, 60_000, 1);
            let wide = preset.config_for(Model::Wide, 60_000, 1);
            assert_eq!((lenet.conv, wide.conv), (Conv::Direct, Conv::Winograd));
        }
        let e = check_conv(Model::Lenet, Conv::Winograd).unwrap_err();
        assert!(
            e.starts_with("conv winograd") && e.contains("wide CNN"),
            "{e}"
        );
        assert_eq!(check_conv(Model::Wide, Conv::Direct), Ok(()));
        assert!(names_conv(Model::Wide) && !names_conv(Model::Lenet));
    }
}
