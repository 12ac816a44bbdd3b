//! ONNX: the f32 networks as standard ONNX graphs (opset 13), and back.
//!
//! * [`encode`] ([`export`]): an f32 model, as trained (`Conv`, `BatchNormalization`, `Relu`,
//!   `MaxPool`, …) or BN-folded (no `BatchNormalization`), as an ONNX model that ONNX Runtime,
//!   Netron, tract and other runtimes open. Input `input`: float `[N, 1, 28, 28]`, the pixels
//!   already divided by 255; output `logits`: float `[N, 10]`.
//! * [`decode`] ([`import`], [`graph`]): the graph `torch.onnx.export` makes of the documented
//!   PyTorch modules (or that [`encode`] writes) back to an f32 model, with a one-line error for
//!   any graph that is not one of the registered networks.
//!
//! The messages are a hand-declared subset of `onnx.proto` ([`proto`]) encoded with `prost`.

pub mod export;
pub mod graph;
pub mod import;
pub mod proto;

use std::fmt;

use fmnist_core::tensors::ParamsError;
use prost::Message;

use crate::params::F32Params;

/// The opset written (the default `ai.onnx` domain).
pub const OPSET: i64 = 13;
/// The IR version of ONNX 1.8, the release that introduced opset 13.
pub const IR_VERSION: i64 = 7;
/// The graph's input name.
pub const INPUT: &str = "input";
/// The graph's output name.
pub const OUTPUT: &str = "logits";
/// Batch norm's epsilon: the f32 nearest 1e-5, as the networks use it.
pub const BN_EPSILON: f32 = fmnist_core::lenet::BN_EPS;

/// Why bytes are not an ONNX model of one of the networks.
#[derive(Debug)]
pub enum OnnxError {
    /// Not protobuf, or not an ONNX `ModelProto` (truncated, another file).
    NotOnnx(String),
    /// A valid ONNX model, but not one of the networks: which layer differs, and how.
    NotOurs(String),
    /// The weights are not a model (NaN, infinite, negative running variance).
    Params(ParamsError),
}

impl fmt::Display for OnnxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnnxError::NotOnnx(why) => write!(f, "not an ONNX model: {why}"),
            OnnxError::NotOurs(why) => write!(f, "not an fmnist network: {why}"),
            OnnxError::Params(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OnnxError {}

/// The ONNX model bytes of an f32 model (kind 1 or 2).
pub fn encode(p: &F32Params) -> Vec<u8> {
    export::model(p).encode_to_vec()
}

/// Reads the f32 model an ONNX file holds.
pub fn decode(bytes: &[u8]) -> Result<F32Params, OnnxError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| {
        // prost's message spells out the field path; the first line is enough.
        OnnxError::NotOnnx(e.to_string().lines().next().unwrap_or("").to_owned())
    })?;
    if model.ir_version <= 0 {
        return Err(OnnxError::NotOnnx("no IR version".into()));
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::NotOnnx("no graph".into()))?;
    if graph.node.is_empty() {
        return Err(OnnxError::NotOnnx("the graph has no nodes".into()));
    }
    import::network(graph)
}

/// True when `bytes` decode as an ONNX model with a graph (for telling formats apart).
pub fn looks_like_onnx(bytes: &[u8]) -> bool {
    proto::ModelProto::decode(bytes)
        .is_ok_and(|m| m.ir_version > 0 && m.graph.is_some_and(|g| !g.node.is_empty()))
}
