//! One network, as training sees it: the [`TrainNet`] trait, implemented once per network (in
//! `lenet/mod.rs` and `wide/mod.rs`), and [`TrainNetFn`], a function generic over the network
//! that the registry (`registry.rs`) calls with the network a recipe, checkpoint or model file
//! names.
//!
//! Everything is static: code generic over `N: TrainNet` is compiled once per network, the
//! step's kernels are called directly, with no indirect calls.

use std::ops::Range;

use fmnist_core::network::Network;
use fmnist_infer::data::Dataset;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::shared::bench::{BenchError, BenchReport};
use crate::shared::config::{Conv, Model, Preset, TrainConfig};
use crate::shared::kernels::Evaluation;
use crate::shared::optim::Optim;
use crate::shared::quant::{Calibration, QuantizeError};

/// The f32 parameters of `N` as trained (batch norm separate, running statistics included).
pub type Params<N> = <<N as TrainNet>::Core as Network>::Trained;
/// The f32 parameters of `N` with batch norm folded into the convolutions.
pub type Folded<N> = <<N as TrainNet>::Core as Network>::Folded;
/// The int8 parameters of `N` (the model-file payload of kind 3).
pub type QParams<N> = <<N as TrainNet>::Core as Network>::QParams;

/// One mini-batch as the step sees it.
pub struct Batch<'a> {
    /// Its images (augmented when the recipe augments).
    pub images: &'a [&'a [u8; 784]],
    /// Their labels.
    pub labels: &'a [u8],
    /// The teachers' soft targets, one per image (empty when the run does not distil).
    pub soft: &'a [[f32; 10]],
    /// The recipe.
    pub config: &'a TrainConfig,
    /// The step (0-based) this batch is for: dropout is keyed by (seed, step).
    pub step: u64,
}

/// What a step's forward and backward pass measured.
pub struct Measured<S> {
    /// Σ cross-entropy over the batch.
    pub loss: f64,
    /// Images classified correctly.
    pub correct: usize,
    /// The batch-norm statistics of the batch (for the running estimates).
    pub bn: S,
}

/// A network the trainer can train: its parameters and their initialisation, its batched f32
/// forward and backward pass, its optimizer, its BN fold, calibration and quantization, its
/// checkpoint payload and its evaluation.
pub trait TrainNet: Sized + 'static {
    /// The network as inference sees it (parameter types, model-file architecture, the f32
    /// and int8 forward passes).
    type Core: Network;
    /// The optimizer (momentum SGD, Adam) and its per-parameter state.
    type Optim: Optim;
    /// The step's workspace: per-chunk buffers, the gradient, whole-batch buffers.
    type Work: Send;
    /// The batch-norm statistics of one step.
    type BnStats;
    /// What a checkpoint holds (postcard-encoded; every older version upgrades to it, see
    /// `checkpoint.rs`).
    type Saved: Serialize + DeserializeOwned;

    /// The recipe's `--model` value.
    const MODEL: Model;
    /// The second-convolution algorithms this network trains with (a recipe's `conv`); when
    /// there is a choice, the run's summary names the one it used.
    const CONVS: &'static [Conv];

    /// The recipe of `preset` for a training set of `n` images.
    fn preset(preset: Preset, n: usize, seed: u64) -> TrainConfig;
    /// Refuses a recipe's `conv` this network does not train with ([`TrainNet::CONVS`]):
    /// `Err` is a sentence starting `conv NAME` (the command line puts `--` before it).
    fn check_conv(conv: Conv) -> Result<(), String> {
        if Self::CONVS.contains(&conv) {
            return Ok(());
        }
        Err(format!(
            "conv {} is not an algorithm {} trains with",
            conv.name(),
            Self::MODEL.name()
        ))
    }
    /// `fmnist-train bench`: training throughput over `repeats` timed windows of `steps`
    /// steps each and evaluation throughput over `test`, on `threads` threads, as this
    /// network reports them.
    fn bench(
        train: &Dataset,
        test: &Dataset,
        steps: u64,
        repeats: usize,
        threads: usize,
    ) -> Result<BenchReport, BenchError>;

    /// Fresh parameters from `seed`.
    fn init(seed: u64) -> Box<Params<Self>>;
    /// Index ranges (in f32 units) of the trainable parameters: all but the running statistics.
    fn trainable_ranges() -> [Range<usize>; 3];
    /// The step's workspace for batches of up to `batch` images.
    fn workspace(batch: usize) -> Self::Work;
    /// Forward and backward over `batch`: the gradient of the mean loss into the workspace
    /// (see [`TrainNet::gradient`]), reductions in a fixed order whatever the thread count.
    fn forward_backward(
        work: &mut Self::Work,
        p: &Params<Self>,
        batch: &Batch<'_>,
        pool: &rayon::ThreadPool,
    ) -> Measured<Self::BnStats>;
    /// The gradient [`TrainNet::forward_backward`] left in the workspace.
    fn gradient(work: &Self::Work) -> &Params<Self>;
    /// Moves the running statistics towards the batch's.
    fn update_running(p: &mut Params<Self>, bn: &Self::BnStats);
    /// Inference-mode evaluation (running statistics): accuracy, mean loss and the logits.
    fn evaluate(p: &Params<Self>, data: &Dataset, pool: &rayon::ThreadPool) -> Evaluation;

    /// Batch norm folded into the convolutions (in f64, rounded once).
    fn fold(p: &Params<Self>) -> Box<Folded<Self>>;
    /// Calibrates the folded network on `images` by `method` and quantizes it.
    fn calibrate_and_quantize(
        f: &Folded<Self>,
        images: &[[u8; 784]],
        method: Calibration,
    ) -> Result<Box<QParams<Self>>, QuantizeError>;
    /// Rows of the layer table: (layer, output shape, parameters).
    fn layer_table() -> Vec<(&'static str, &'static str, usize)>;

    /// The checkpoint payload of a run.
    fn save(run: &RunState<Self>) -> Self::Saved;
    /// A run from a checkpoint payload (refused, with the reason, when its parts disagree).
    fn restore(saved: Self::Saved) -> Result<RunState<Self>, String>;
}

/// A run's state, whatever the network: everything needed to continue it bit-identically.
pub struct RunState<N: TrainNet> {
    /// The recipe.
    pub config: TrainConfig,
    /// Steps done.
    pub step: u64,
    /// Parameters and running statistics, `Params<N>` as f32 in field order.
    pub params: Vec<f32>,
    /// The optimizer's state.
    pub optim: N::Optim,
    /// The data-order RNG.
    pub rng: ChaCha8Rng,
    /// The current epoch's permutation of the training set.
    pub order: Vec<u32>,
    /// Position in `order` of the next batch.
    pub cursor: usize,
    /// Seconds spent in optimizer steps so far.
    pub train_seconds: f64,
}

/// A function generic over the network, for the registry's `dispatch` (a closure cannot be
/// generic): written once, compiled once per network.
pub trait TrainNetFn {
    /// What the function returns.
    type Output;
    /// The function, for network `N`.
    fn call<N: TrainNet>(self) -> Self::Output;
}

/// `p` as its f32 values in field order.
pub fn flat<N: TrainNet>(p: &Params<N>) -> &[f32] {
    bytemuck::cast_slice(bytemuck::bytes_of(p))
}

/// `p` as its f32 values in field order, mutable.
pub fn flat_mut<N: TrainNet>(p: &mut Params<N>) -> &mut [f32] {
    bytemuck::cast_slice_mut(bytemuck::bytes_of_mut(p))
}

/// Parameters from their f32 values in field order (`None` when the count is wrong). Built on
/// the heap: a wide CNN's 6.5 MB never pass through the stack.
pub fn params_from_flat<N: TrainNet>(values: &[f32]) -> Option<Box<Params<N>>> {
    if values.len() != param_count::<N>() {
        return None;
    }
    let mut p: Box<Params<N>> = bytemuck::zeroed_box();
    flat_mut::<N>(&mut p).copy_from_slice(values);
    Some(p)
}

/// f32 values in `Params<N>`.
pub fn param_count<N: TrainNet>() -> usize {
    size_of::<Params<N>>() / 4
}
