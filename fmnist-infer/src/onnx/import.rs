//! The reader: an ONNX graph's chain of layers ([`super::graph`]) matched against each
//! registered network, strictly: every layer, kernel, padding, stride, channel count and dense
//! size must be the network's. The network the graph comes closest to (the most checks passed
//! before the first failure) names the error, e.g. `conv2 has kernel 3x3, expected 5x5`.
//!
//! A graph with `BatchNormalization` nodes is the model as trained (kind 1); one without is
//! BN-folded (kind 2; PyTorch's exporter folds batch norm into the convolutions in eval mode).

use std::collections::HashMap;

use fmnist_core::format::{Arch, Kind};

use super::graph::{Floats, Layer, attr, attr_float, attr_int, attr_ints, describe};
use super::{BN_EPSILON, OnnxError};
use crate::params::{self, ConvLayer, F32Params, Layers};

/// A failed match: how far it got, and why it stopped.
struct Miss {
    score: usize,
    why: String,
}

/// Walks the chain for one network, counting the checks passed.
struct Matcher<'c, 'g> {
    layers: &'c [Layer<'g>],
    at: usize,
    score: usize,
    tensors: HashMap<String, Vec<f32>>,
}

impl<'c, 'g> Matcher<'c, 'g> {
    fn miss(&self, why: String) -> Miss {
        Miss {
            score: self.score,
            why,
        }
    }

    /// "after Conv node `conv1`" / "after the input".
    fn after(&self) -> String {
        match self.at.checked_sub(1).map(|i| self.layers[i].node()) {
            Some(n) => format!("after {}", describe(n)),
            None => "after the input".into(),
        }
    }

    /// The next layer, or a miss naming what was expected.
    fn next(&mut self, expected: &str) -> Result<&'c Layer<'g>, Miss> {
        match self.layers.get(self.at) {
            Some(l) => Ok(l),
            None => Err(self.miss(format!(
                "expected {expected} {}, found the end of the graph",
                self.after()
            ))),
        }
    }

    fn wrong_op(&self, expected: &str, found: &Layer<'_>) -> Miss {
        self.miss(format!(
            "expected {expected} {}, found {}",
            self.after(),
            describe(found.node())
        ))
    }

    /// Checks one condition, counting it.
    fn check(&mut self, ok: bool, why: impl FnOnce() -> String) -> Result<(), Miss> {
        if ok {
            self.score += 1;
            Ok(())
        } else {
            Err(self.miss(why()))
        }
    }

    fn bias(&mut self, name: String, bias: &Option<Floats>, len: usize) -> Result<Vec<f32>, Miss> {
        match bias {
            None => Ok(vec![0.0; len]),
            Some(b) => {
                let ok = b.values.len() == len && b.dims.iter().filter(|d| **d != 1).count() <= 1;
                self.check(ok, || {
                    format!("{name} has shape {:?}, expected [{len}]", b.dims)
                })?;
                Ok(b.values.clone())
            }
        }
    }

    fn conv(&mut self, n: usize, c: &ConvLayer) -> Result<(), Miss> {
        let name = format!("conv{n}");
        let l = self.next(&format!("Conv ({name})"))?;
        let Layer::Conv { node, weight, bias } = l else {
            return Err(self.wrong_op(&format!("Conv ({name})"), l));
        };
        self.score += 1;
        let d = &weight.dims;
        self.check(d.len() == 4, || {
            format!("{name} has a weight of shape {d:?}, expected 4 dims")
        })?;
        let k = c.kernel as i64;
        self.check(d[0] == c.out as i64, || {
            format!("{name} has {} output channels, expected {}", d[0], c.out)
        })?;
        self.check(d[1] == c.input as i64, || {
            format!("{name} has {} input channels, expected {}", d[1], c.input)
        })?;
        let kernel = attr_ints(node, "kernel_shape").unwrap_or_else(|| vec![d[2], d[3]]);
        self.check(d[2..] == [k, k] && kernel == [k, k], || {
            format!(
                "{name} has kernel {}x{}, expected {k}x{k}",
                kernel.first().unwrap_or(&d[2]),
                kernel.get(1).unwrap_or(&d[3])
            )
        })?;
        let p = c.pad as i64;
        let auto = attr(node, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned());
        let pads = match auto.as_deref() {
            None | Some("NOTSET") | Some("") => attr_ints(node, "pads").unwrap_or(vec![0; 4]),
            Some("VALID") => vec![0; 4],
            // Odd kernels, stride 1: the same padding each side.
            Some(_) => vec![(k - 1) / 2; 4],
        };
        self.check(pads == [p, p, p, p], || {
            format!("{name} has padding {pads:?}, expected {p} on each side")
        })?;
        for (attr_name, want) in [("strides", 1), ("dilations", 1)] {
            let v = attr_ints(node, attr_name).unwrap_or(vec![1, 1]);
            self.check(v == [want, want], || {
                format!("{name} has {attr_name} {v:?}, expected [1, 1]")
            })?;
        }
        let group = attr_int(node, "group", 1);
        self.check(group == 1, || {
            format!("{name} has group {group}, expected 1")
        })?;
        let b = self.bias(format!("{name}'s bias"), bias, c.out)?;
        self.tensors
            .insert(format!("{name}.weight"), weight.values.clone());
        self.tensors.insert(format!("{name}.bias"), b);
        self.at += 1;
        Ok(())
    }

    fn batch_norm(&mut self, n: usize, channels: usize) -> Result<(), Miss> {
        let name = format!("bn{n}");
        let l = self.next(&format!("BatchNormalization ({name})"))?;
        let Layer::BatchNorm { node, tensors } = l else {
            return Err(self.wrong_op(&format!("BatchNormalization ({name})"), l));
        };
        self.score += 1;
        for t in tensors {
            self.check(t.values.len() == channels, || {
                format!(
                    "{name} has {} channels, expected {channels}",
                    t.values.len()
                )
            })?;
        }
        let eps = attr_float(node, "epsilon", BN_EPSILON);
        self.check(eps == BN_EPSILON, || {
            format!("{name} has epsilon {eps:e}, expected 1e-5")
        })?;
        let training = attr_int(node, "training_mode", 0);
        self.check(training == 0, || {
            format!("{name} is in training mode (training_mode = {training})")
        })?;
        for (field, t) in ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .zip(tensors)
        {
            self.tensors
                .insert(format!("{name}.{field}"), t.values.clone());
        }
        self.at += 1;
        Ok(())
    }

    fn relu(&mut self, what: &str) -> Result<(), Miss> {
        let l = self.next(&format!("Relu ({what})"))?;
        let Layer::Relu { .. } = l else {
            return Err(self.wrong_op(&format!("Relu ({what})"), l));
        };
        self.score += 1;
        self.at += 1;
        Ok(())
    }

    fn max_pool(&mut self, n: usize) -> Result<(), Miss> {
        let name = format!("pool{n}");
        let l = self.next(&format!("MaxPool ({name})"))?;
        let Layer::MaxPool { node } = l else {
            return Err(self.wrong_op(&format!("MaxPool ({name})"), l));
        };
        self.score += 1;
        let kernel = attr_ints(node, "kernel_shape").unwrap_or_default();
        let strides = attr_ints(node, "strides").unwrap_or(vec![1, 1]);
        let pads = attr_ints(node, "pads").unwrap_or(vec![0; 4]);
        let dilations = attr_ints(node, "dilations").unwrap_or(vec![1, 1]);
        self.check(
            kernel == [2, 2] && strides == [2, 2] && pads.iter().all(|p| *p == 0) && dilations == [1, 1],
            || {
                format!(
                    "{name} has kernel {kernel:?}, strides {strides:?}, pads {pads:?}, expected a 2x2 max-pool of stride 2 without padding"
                )
            },
        )?;
        self.at += 1;
        Ok(())
    }

    /// ReLU and the 2x2 max-pool, in either order (they commute).
    fn relu_pool(&mut self, n: usize) -> Result<(), Miss> {
        let relu_first = !matches!(self.layers.get(self.at), Some(Layer::MaxPool { .. }));
        let what = format!("after conv{n}");
        if relu_first {
            self.relu(&what)?;
            self.max_pool(n)
        } else {
            self.max_pool(n)?;
            self.relu(&what)
        }
    }

    fn flatten(&mut self, features: usize) -> Result<(), Miss> {
        let l = self.next("Flatten")?;
        let Layer::Flatten { node, reshape } = l else {
            return Err(self.wrong_op("Flatten", l));
        };
        self.score += 1;
        match reshape {
            None => {
                let axis = attr_int(node, "axis", 1);
                self.check(axis == 1, || {
                    format!("{} flattens from axis {axis}, expected 1", describe(node))
                })?;
            }
            // A shape computed in the graph (x.view(x.size(0), -1)) is taken as a flatten.
            Some(None) => {}
            Some(Some(shape)) => {
                let f = features as i64;
                let ok = matches!(shape[..], [a, b] if b == f || (b == -1 && a != -1));
                self.check(ok, || {
                    format!(
                        "{} reshapes to {shape:?}, expected [N, {features}]",
                        describe(node)
                    )
                })?;
            }
        }
        self.at += 1;
        Ok(())
    }

    fn dense(&mut self, n: usize, input: usize, out: usize) -> Result<(), Miss> {
        let name = format!("fc{n}");
        let l = self.next(&format!("Gemm ({name})"))?;
        let Layer::Dense { weight, bias, .. } = l else {
            return Err(self.wrong_op(&format!("Gemm ({name})"), l));
        };
        self.score += 1;
        let d = &weight.dims;
        self.check(d.len() == 2, || {
            format!("{name} has a weight of shape {d:?}, expected 2 dims")
        })?;
        self.check(d[1] == input as i64, || {
            format!("{name} has {} inputs, expected {input}", d[1])
        })?;
        self.check(d[0] == out as i64, || {
            format!("{name} has {} outputs, expected {out}", d[0])
        })?;
        let b = self.bias(format!("{name}'s bias"), bias, out)?;
        self.tensors
            .insert(format!("{name}.weight"), weight.values.clone());
        self.tensors.insert(format!("{name}.bias"), b);
        self.at += 1;
        Ok(())
    }

    fn end(&mut self) -> Result<(), Miss> {
        match self.layers.get(self.at) {
            None => Ok(()),
            Some(l) => Err(self.miss(format!(
                "the graph goes on {} with {}, expected the logits",
                self.after(),
                describe(l.node())
            ))),
        }
    }

    /// The whole network.
    fn network(&mut self, layers: &Layers, kind: Kind) -> Result<(), Miss> {
        for (i, c) in layers.convs.iter().enumerate() {
            self.conv(i + 1, c)?;
            if kind == Kind::F32 {
                self.batch_norm(i + 1, c.out)?;
            }
            self.relu_pool(i + 1)?;
        }
        self.flatten(layers.dense[0].input)?;
        for (i, d) in layers.dense.iter().enumerate() {
            self.dense(i + 1, d.input, d.out)?;
            if i + 1 < layers.dense.len() {
                self.relu(&format!("after fc{}", i + 1))?;
            }
        }
        self.end()
    }
}

/// Checks the data input: float, `[N, 1, 28, 28]` (N anything).
fn check_input(
    input: &super::proto::ValueInfoProto,
    expected: [usize; 3],
) -> Result<(), OnnxError> {
    use super::proto::tensor_shape_proto::dimension::Value;
    use super::proto::type_proto;
    let Some(type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(()); // No type given: the chain's weights decide.
    };
    let fail = |what: String| OnnxError::NotOurs(format!("input `{}` {what}", input.name));
    if t.elem_type != super::proto::data_type::FLOAT {
        return Err(fail(format!(
            "has element type {}, expected float (1)",
            t.elem_type
        )));
    }
    if let Some(shape) = &t.shape {
        let dims: Vec<Option<i64>> = shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect();
        let ok = dims.len() == 4
            && dims[1..]
                .iter()
                .zip(expected)
                .all(|(d, e)| d.is_none_or(|d| d == e as i64));
        if !ok {
            let shown: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("N".into(), |v| v.to_string()))
                .collect();
            return Err(fail(format!(
                "has shape [{}], expected [N, {}, {}, {}]",
                shown.join(", "),
                expected[0],
                expected[1],
                expected[2]
            )));
        }
    }
    Ok(())
}

/// Reads the network a graph holds.
pub fn network(graph: &super::proto::GraphProto) -> Result<F32Params, OnnxError> {
    let g = super::graph::Graph::new(graph);
    let chain = g.chain().map_err(OnnxError::NotOurs)?;
    let kind = if chain.iter().any(|l| matches!(l, Layer::BatchNorm { .. })) {
        Kind::F32
    } else {
        Kind::F32Folded
    };
    let mut best: Option<(Arch, Miss)> = None;
    for &arch in params::ARCHS {
        let layers = Layers::of(arch);
        let mut m = Matcher {
            layers: &chain,
            at: 0,
            score: 0,
            tensors: HashMap::new(),
        };
        match m.network(&layers, kind) {
            Ok(()) => {
                check_input(g.data_input().map_err(OnnxError::NotOurs)?, layers.input)?;
                let mut tensors = m.tensors;
                return F32Params::from_tensors(
                    arch,
                    kind,
                    |slot| {
                        Ok(tensors
                            .remove(slot.name)
                            .expect("the matcher fills every tensor of the table"))
                    },
                    OnnxError::Params,
                );
            }
            Err(miss) => {
                if best.as_ref().is_none_or(|(_, b)| miss.score > b.score) {
                    best = Some((arch, miss));
                }
            }
        }
    }
    let (_, miss) = best.expect("at least one network");
    Err(OnnxError::NotOurs(miss.why))
}
