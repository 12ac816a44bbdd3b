//! Figures of a training run as PNG files, one module per figure: the training curves of a run
//! (`fmnist-train plot`, [`curves`]) and a labelled grid of training images
//! (`fmnist-train samples`, [`samples`]). Both draw on [`fmnist_infer::canvas`]: embedded font,
//! deterministic PNG bytes, nothing partial on failure.

pub mod curves;
pub mod samples;
