//! The layer tables of the two networks (`fmnist-train summary`): layer, output shape and
//! parameter count of each row.

use fmnist_core::lenet::LeNetParams;
use fmnist_core::wide::WideParams;

use crate::shared::config::Model;

/// Rows of the layer table of `model`: (layer, output shape, parameters).
pub fn layer_table(model: Model) -> Vec<(&'static str, &'static str, usize)> {
    match model {
        Model::Lenet => lenet_table(),
        Model::Wide => wide_table(),
    }
}

fn wide_table() -> Vec<(&'static str, &'static str, usize)> {
    let p: Box<WideParams> = bytemuck::zeroed_box();
    let n = |s: usize| s / 4;
    vec![
        (
            "conv1 (Conv2d 1→32, 3x3, pad 1)",
            "[32, 28, 28]",
            n(size_of_val(&p.conv1_weight) + size_of_val(&p.conv1_bias)),
        ),
        (
            "bn1 (BatchNorm2d)",
            "[32, 28, 28]",
            n(size_of_val(&p.bn1.gamma) + size_of_val(&p.bn1.beta)),
        ),
        ("relu1 + maxpool1 (2x2)", "[32, 14, 14]", 0),
        (
            "conv2 (Conv2d 32→64, 3x3, pad 1)",
            "[64, 14, 14]",
            n(size_of_val(&p.conv2_weight) + size_of_val(&p.conv2_bias)),
        ),
        (
            "bn2 (BatchNorm2d)",
            "[64, 14, 14]",
            n(size_of_val(&p.bn2.gamma) + size_of_val(&p.bn2.beta)),
        ),
        ("relu2 + maxpool2 (2x2)", "[64, 7, 7]", 0),
        ("flatten", "[3136]", 0),
        (
            "fc1 (Linear 3136→512) + ReLU",
            "[512]",
            n(size_of_val(&p.fc1_weight) + size_of_val(&p.fc1_bias)),
        ),
        ("dropout (p = 0.5, training only)", "[512]", 0),
        (
            "fc2 (Linear 512→10)",
            "[10]",
            n(size_of_val(&p.fc2_weight) + size_of_val(&p.fc2_bias)),
        ),
    ]
}

fn lenet_table() -> Vec<(&'static str, &'static str, usize)> {
    let p = LeNetParams::default_zeroed();
    let n = |s: usize| s / 4;
    vec![
        (
            "conv1 (Conv2d 1→6, 5x5, pad 2)",
            "[6, 28, 28]",
            n(size_of_val(&p.conv1_weight) + size_of_val(&p.conv1_bias)),
        ),
        (
            "bn1 (BatchNorm2d)",
            "[6, 28, 28]",
            n(size_of_val(&p.bn1.gamma) + size_of_val(&p.bn1.beta)),
        ),
        ("relu1 + maxpool1 (2x2)", "[6, 14, 14]", 0),
        (
            "conv2 (Conv2d 6→16, 5x5)",
            "[16, 10, 10]",
            n(size_of_val(&p.conv2_weight) + size_of_val(&p.conv2_bias)),
        ),
        (
            "bn2 (BatchNorm2d)",
            "[16, 10, 10]",
            n(size_of_val(&p.bn2.gamma) + size_of_val(&p.bn2.beta)),
        ),
        ("relu2 + maxpool2 (2x2)", "[16, 5, 5]", 0),
        ("flatten", "[400]", 0),
        (
            "fc1 (Linear 400→120) + ReLU",
            "[120]",
            n(size_of_val(&p.fc1_weight) + size_of_val(&p.fc1_bias)),
        ),
        (
            "fc2 (Linear 120→84) + ReLU",
            "[84]",
            n(size_of_val(&p.fc2_weight) + size_of_val(&p.fc2_bias)),
        ),
        (
            "fc3 (Linear 84→10)",
            "[10]",
            n(size_of_val(&p.fc3_weight) + size_of_val(&p.fc3_bias)),
        ),
    ]
}

trait Zeroed {
    fn default_zeroed() -> Box<Self>;
}

impl Zeroed for LeNetParams {
    fn default_zeroed() -> Box<Self> {
        bytemuck::zeroed_box()
    }
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
