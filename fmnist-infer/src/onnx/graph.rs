//! Reading an ONNX graph as a chain of layers, tolerant of what exporters emit.
//!
//! From the graph's one data input, the chain follows each value to the one node that uses it,
//! up to the graph's output. On the way:
//!
//! * `Identity` and `Dropout` (inference) pass their input through; `Constant` nodes are
//!   constants like initializers; weights are found by value, whatever their names (PyTorch's
//!   exporter names fused weights `onnx::Conv_23` and the like);
//! * nodes that only compute shapes (`Shape`, `Gather`, `Unsqueeze`, `Concat`, `Cast`, …: the
//!   `x.view(x.size(0), -1)` pattern) are not layers;
//! * `MatMul` then `Add` of a constant is read as one dense layer, like `Gemm`.
//!
//! What the chain must then be is [`super::import`]'s business.

use std::collections::HashMap;

use super::proto::{GraphProto, NodeProto, TensorProto, data_type};
use crate::safetensors_io::f16_to_f32;

/// A node, for messages: ``Relu node `relu3` ``.
pub fn describe(node: &NodeProto) -> String {
    let name = if node.name.is_empty() {
        node.output.first().map_or("", String::as_str)
    } else {
        &node.name
    };
    format!("{} node `{name}`", node.op_type)
}

/// A constant float tensor: dims and values.
#[derive(Clone, Debug)]
pub struct Floats {
    /// Its dims.
    pub dims: Vec<i64>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// One layer of the chain.
#[derive(Clone, Debug)]
pub enum Layer<'g> {
    /// `Conv` with a constant weight (and bias).
    Conv {
        node: &'g NodeProto,
        weight: Floats,
        bias: Option<Floats>,
    },
    /// `BatchNormalization` with constant scale, bias, mean and variance.
    BatchNorm {
        node: &'g NodeProto,
        /// scale, B, mean, var.
        tensors: [Floats; 4],
    },
    /// `Relu`.
    Relu { node: &'g NodeProto },
    /// `MaxPool`.
    MaxPool { node: &'g NodeProto },
    /// `Flatten`, or `Reshape` (with its target shape when it is a constant).
    Flatten {
        node: &'g NodeProto,
        reshape: Option<Option<Vec<i64>>>,
    },
    /// `Gemm`, or `MatMul` followed by `Add`: weight as `[out, in]`.
    Dense {
        node: &'g NodeProto,
        /// `[out, in]`.
        weight: Floats,
        bias: Option<Floats>,
    },
    /// Anything else.
    Other { node: &'g NodeProto },
}

impl<'g> Layer<'g> {
    /// The node it came from.
    pub fn node(&self) -> &'g NodeProto {
        match self {
            Layer::Conv { node, .. }
            | Layer::BatchNorm { node, .. }
            | Layer::Relu { node }
            | Layer::MaxPool { node }
            | Layer::Flatten { node, .. }
            | Layer::Dense { node, .. }
            | Layer::Other { node } => node,
        }
    }
}

/// Nodes that compute shapes, never layer values.
const SHAPE_OPS: [&str; 9] = [
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Slice",
    "Constant",
    "ConstantOfShape",
];

/// Nodes that pass their first input through in inference.
const PASS_OPS: [&str; 2] = ["Identity", "Dropout"];

/// The graph's values, constants and aliases.
pub struct Graph<'g> {
    graph: &'g GraphProto,
    constants: HashMap<&'g str, &'g TensorProto>,
    alias: HashMap<&'g str, &'g str>,
}

/// An attribute of a node.
pub fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n super::proto::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer list attribute (`None` when absent).
pub fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// An integer attribute, or `default`.
pub fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

/// A float attribute, or `default`.
pub fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

impl<'g> Graph<'g> {
    /// Indexes the constants (initializers, `Constant` nodes) and pass-through nodes.
    pub fn new(graph: &'g GraphProto) -> Self {
        let mut constants: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let mut alias = HashMap::new();
        for n in &graph.node {
            match n.op_type.as_str() {
                "Constant" => {
                    if let (Some(out), Some(t)) = (
                        n.output.first(),
                        attr(n, "value").and_then(|a| a.t.as_ref()),
                    ) {
                        constants.insert(out.as_str(), t);
                    }
                }
                op if PASS_OPS.contains(&op) => {
                    if let (Some(out), Some(input)) = (n.output.first(), n.input.first()) {
                        alias.insert(out.as_str(), input.as_str());
                    }
                }
                _ => {}
            }
        }
        Graph {
            graph,
            constants,
            alias,
        }
    }

    /// The value `name` stands for, through pass-through nodes.
    pub fn resolve<'a>(&'a self, mut name: &'a str) -> &'a str {
        for _ in 0..=self.alias.len() {
            match self.alias.get(name) {
                Some(to) => name = to,
                None => break,
            }
        }
        name
    }

    fn constant(&self, name: &str) -> Option<&'g TensorProto> {
        self.constants.get(self.resolve(name)).copied()
    }

    /// The float constant `name` (FLOAT; DOUBLE rounded to nearest and FLOAT16 converted).
    pub fn floats(&self, name: &str, role: &str) -> Result<Floats, String> {
        let t = self.constant(name).ok_or_else(|| {
            format!("{role} `{name}` is not a constant (an initializer or Constant node)")
        })?;
        if t.data_location == 1 {
            return Err(format!(
                "tensor `{name}` is stored in an external file; save the model with its weights inside"
            ));
        }
        let raw = &t.raw_data;
        let values: Vec<f32> = match t.data_type {
            data_type::FLOAT if !raw.is_empty() => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            data_type::FLOAT => t.float_data.clone(),
            data_type::DOUBLE if !raw.is_empty() => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            data_type::DOUBLE => t.double_data.iter().map(|v| *v as f32).collect(),
            // FLOAT16 is stored in raw_data, or as one value per int32_data entry.
            data_type::FLOAT16 if !raw.is_empty() => raw
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            data_type::FLOAT16 => t.int32_data.iter().map(|v| f16_to_f32(*v as u16)).collect(),
            other => {
                return Err(format!(
                    "{role} `{name}` has data type {other}, expected float (1)"
                ));
            }
        };
        let count: i64 = t.dims.iter().product();
        if t.dims.iter().any(|d| *d < 0) || count as usize != values.len() {
            return Err(format!(
                "tensor `{name}` holds {} values for dims {:?}",
                values.len(),
                t.dims
            ));
        }
        Ok(Floats {
            dims: t.dims.clone(),
            values,
        })
    }

    /// The integer constant `name` (INT64 or INT32), `None` when it is computed.
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        let t = self.constant(name)?;
        Some(match t.data_type {
            data_type::INT64 if !t.raw_data.is_empty() => t
                .raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            data_type::INT64 => t.int64_data.clone(),
            data_type::INT32 => t.int32_data.iter().map(|v| *v as i64).collect(),
            _ => return None,
        })
    }

    /// True when `name` is a constant.
    fn is_constant(&self, name: &str) -> bool {
        self.constant(name).is_some()
    }

    /// The graph's one data input: its name (inputs that are initializers are not data).
    pub fn data_input(&self) -> Result<&'g super::proto::ValueInfoProto, String> {
        let data: Vec<_> = self
            .graph
            .input
            .iter()
            .filter(|v| !self.constants.contains_key(v.name.as_str()))
            .collect();
        match data[..] {
            [one] => Ok(one),
            [] => Err("the graph has no input".into()),
            _ => Err(format!(
                "the graph has {} inputs ({}), expected one image batch",
                data.len(),
                data.iter()
                    .map(|v| format!("`{}`", v.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The chain of layers from the data input to the graph's output.
    pub fn chain(&self) -> Result<Vec<Layer<'g>>, String> {
        let input = self.data_input()?.name.as_str();
        let output = match &self.graph.output[..] {
            [one] => self.resolve(&one.name).to_owned(),
            outs => {
                return Err(format!(
                    "the graph has {} outputs, expected one (the logits)",
                    outs.len()
                ));
            }
        };
        // Who uses each value, as a layer's data input.
        let mut users: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
        for n in &self.graph.node {
            let op = n.op_type.as_str();
            if SHAPE_OPS.contains(&op) || PASS_OPS.contains(&op) {
                continue;
            }
            for i in &n.input {
                if !i.is_empty() && !self.is_constant(i) {
                    let v = users.entry(self.resolve(i)).or_default();
                    if !v.iter().any(|m| std::ptr::eq(*m, n)) {
                        v.push(n);
                    }
                }
            }
        }
        let mut layers = Vec::new();
        let mut value = input.to_owned();
        for _ in 0..=self.graph.node.len() {
            let node = match users.get(value.as_str()).map(Vec::as_slice) {
                None | Some([]) if value == output => return Ok(merge_matmul_add(layers)),
                None | Some([]) => {
                    return Err(match layers.last() {
                        Some(l) => format!(
                            "the graph stops after {}: its output `{value}` is not the graph's output `{output}`",
                            describe(l.node())
                        ),
                        None => format!("no node uses the input `{value}`"),
                    });
                }
                Some([one]) => *one,
                Some(many) => {
                    return Err(format!(
                        "the value `{value}` goes to {} nodes ({}); a network here is one chain",
                        many.len(),
                        many.iter()
                            .map(|n| describe(n))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            };
            if node.output.len() != 1 && !PASS_OPS.contains(&node.op_type.as_str()) {
                // MaxPool may have an optional second output (indices).
                if !(node.op_type == "MaxPool" && node.output.len() == 2) {
                    return Err(format!(
                        "{} has {} outputs, expected one",
                        describe(node),
                        node.output.len()
                    ));
                }
            }
            layers.push(self.layer(node, &value)?);
            value = self.resolve(&node.output[0]).to_owned();
        }
        Err("the graph has a cycle".into())
    }

    /// One node as a layer; `data` is the value the chain brings to it.
    fn layer(&self, node: &'g NodeProto, data: &str) -> Result<Layer<'g>, String> {
        let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty());
        let first_is_data = input(0).is_some_and(|i| self.resolve(i) == data);
        let what = describe(node);
        if !first_is_data && node.op_type != "Add" {
            return Ok(Layer::Other { node });
        }
        let need = |i: usize, role: &str| -> Result<Floats, String> {
            let name = input(i).ok_or_else(|| format!("{what} has no {role}"))?;
            self.floats(name, &format!("{what}'s {role}"))
        };
        let opt = |i: usize, role: &str| -> Result<Option<Floats>, String> {
            input(i).map(|_| need(i, role)).transpose()
        };
        Ok(match node.op_type.as_str() {
            "Conv" => Layer::Conv {
                node,
                weight: need(1, "weight")?,
                bias: opt(2, "bias")?,
            },
            "BatchNormalization" => Layer::BatchNorm {
                node,
                tensors: [
                    need(1, "scale")?,
                    need(2, "bias")?,
                    need(3, "mean")?,
                    need(4, "variance")?,
                ],
            },
            "Relu" => Layer::Relu { node },
            "MaxPool" => Layer::MaxPool { node },
            "Flatten" => Layer::Flatten {
                node,
                reshape: None,
            },
            "Reshape" => Layer::Flatten {
                node,
                reshape: Some(input(1).and_then(|s| self.ints(s))),
            },
            "Gemm" => {
                if attr_int(node, "transA", 0) != 0
                    || attr_float(node, "alpha", 1.0) != 1.0
                    || attr_float(node, "beta", 1.0) != 1.0
                {
                    return Err(format!(
                        "{what} has transA, alpha or beta other than 0, 1, 1 (not a Linear layer)"
                    ));
                }
                let w = need(1, "weight")?;
                Layer::Dense {
                    node,
                    weight: if attr_int(node, "transB", 0) != 0 {
                        w
                    } else {
                        transpose(w)
                    },
                    bias: opt(2, "bias")?,
                }
            }
            // y = x W (W is [in, out]); an `Add` of a constant bias may follow.
            "MatMul" => Layer::Dense {
                node,
                weight: transpose(need(1, "weight")?),
                bias: None,
            },
            "Add" => {
                // The data on either side, the constant on the other.
                let other = node
                    .input
                    .iter()
                    .find(|i| self.resolve(i) != data)
                    .ok_or_else(|| format!("{what} adds a value to itself"))?;
                match self.floats(other, &format!("{what}'s addend")) {
                    Ok(b) => Layer::Dense {
                        node,
                        weight: Floats {
                            dims: vec![],
                            values: vec![],
                        },
                        bias: Some(b),
                    },
                    Err(_) => Layer::Other { node },
                }
            }
            _ => Layer::Other { node },
        })
    }
}

/// `[a, b]` to `[b, a]` (a weight that is not 2-D is left for the matcher to refuse).
fn transpose(w: Floats) -> Floats {
    let [a, b] = w.dims[..] else { return w };
    let (a, b) = (a as usize, b as usize);
    let mut values = vec![0f32; w.values.len()];
    for i in 0..a {
        for j in 0..b {
            values[j * a + i] = w.values[i * b + j];
        }
    }
    Floats {
        dims: vec![b as i64, a as i64],
        values,
    }
}

/// `MatMul` then `Add` of a constant: one dense layer. (A bare `Add` is parsed as a dense layer
/// without weights, so that it is merged here or refused by the matcher.)
fn merge_matmul_add(layers: Vec<Layer<'_>>) -> Vec<Layer<'_>> {
    let mut out: Vec<Layer<'_>> = Vec::with_capacity(layers.len());
    for l in layers {
        if let Layer::Dense {
            node,
            weight,
            bias: Some(b),
        } = &l
            && weight.dims.is_empty()
            && let Some(Layer::Dense {
                node: prev,
                bias: prev_bias @ None,
                ..
            }) = out.last_mut()
            && prev.op_type == "MatMul"
        {
            let _ = node;
            *prev_bias = Some(b.clone());
            continue;
        }
        let l = match l {
            Layer::Dense { node, weight, .. } if weight.dims.is_empty() => Layer::Other { node },
            l => l,
        };
        out.push(l);
    }
    out
}
