//! The layer tables of the networks (`fmnist-train summary`): layer, output shape and
//! parameter count of each row (each network's table is in its folder).

use crate::registry;
use crate::shared::config::Model;
use crate::shared::net::{TrainNet, TrainNetFn};

/// Rows of the layer table of `model`: (layer, output shape, parameters).
pub fn layer_table(model: Model) -> Vec<(&'static str, &'static str, usize)> {
    struct Table;
    impl TrainNetFn for Table {
        type Output = Vec<(&'static str, &'static str, usize)>;
        fn call<N: TrainNet>(self) -> Self::Output {
            N::layer_table()
        }
    }
    registry::dispatch(model.arch(), Table)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_total_the_parameter_counts() {
        let total = |m| layer_table(m).iter().map(|r| r.2).sum::<usize>();
        assert_eq!(total(Model::Lenet), 61_750);
        assert_eq!(total(Model::Wide), fmnist_core::wide::WIDE_PARAMETERS);
    }
}
