//! The writer: an f32 model (as trained or BN-folded) as a standard ONNX graph.
//!
//! For each convolution `convN` (stride 1, zero padding as the network has it): `Conv`, then
//! (as trained only) `BatchNormalization` with epsilon 1e-5, `Relu`, `MaxPool` 2x2 stride 2;
//! then `Flatten` (axis 1, C×H×W order) and one `Gemm` per dense layer (`transB = 1`, the
//! weights in PyTorch's `[out, in]`), each but the last followed by `Relu`. Initializers carry
//! the PyTorch `state_dict` names (`conv1.weight`, `bn1.running_var`, …) and the values as
//! little-endian `raw_data`. Input `input`: float `[N, 1, 28, 28]` (N symbolic), pixels already
//! divided by 255; output `logits`: float `[N, 10]`.

use fmnist_core::format::Kind;

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_type, data_type, tensor_shape_proto,
    type_proto,
};
use super::{BN_EPSILON, INPUT, IR_VERSION, OPSET, OUTPUT};
use crate::params::{F32Params, Layers};

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: v,
        ..Default::default()
    }
}

/// A float tensor value `[dims]` with a batch dimension `N`.
fn float_value(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => Value::DimValue(*v),
                None => Value::DimParam("N".into()),
            }),
            denotation: String::new(),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

/// Appends nodes one after the other: each takes the previous one's output.
struct Chain {
    nodes: Vec<NodeProto>,
    last: String,
}

impl Chain {
    fn push(&mut self, op: &str, name: &str, params: &[&str], attribute: Vec<AttributeProto>) {
        let out = format!("{name}_out");
        let mut input = vec![std::mem::replace(&mut self.last, out.clone())];
        input.extend(params.iter().map(|p| (*p).to_owned()));
        self.nodes.push(NodeProto {
            input,
            output: vec![out],
            name: name.into(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
    }
}

/// The ONNX model of `p` (kind 1 or 2; the caller checks it is not int8).
pub fn model(p: &F32Params) -> ModelProto {
    assert!(p.kind != Kind::Int8, "only f32 models are ONNX graphs here");
    let layers = Layers::of(p.arch);
    let initializer = p
        .tensors()
        .map(|(slot, values)| TensorProto {
            dims: layers
                .shape(slot.name)
                .expect("every table name has a shape")
                .iter()
                .map(|&d| d as i64)
                .collect(),
            data_type: data_type::FLOAT,
            name: slot.name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        })
        .collect();
    let mut chain = Chain {
        nodes: Vec::new(),
        last: INPUT.into(),
    };
    let mut relu = 0;
    for (i, c) in layers.convs.iter().enumerate() {
        let n = i + 1;
        let (k, pad) = (c.kernel as i64, c.pad as i64);
        chain.push(
            "Conv",
            &format!("conv{n}"),
            &[&format!("conv{n}.weight"), &format!("conv{n}.bias")],
            vec![
                ints("kernel_shape", &[k, k]),
                ints("pads", &[pad, pad, pad, pad]),
                ints("strides", &[1, 1]),
                ints("dilations", &[1, 1]),
                int("group", 1),
            ],
        );
        if p.kind == Kind::F32 {
            let bn = format!("bn{n}");
            chain.push(
                "BatchNormalization",
                &bn,
                &[
                    &format!("{bn}.weight"),
                    &format!("{bn}.bias"),
                    &format!("{bn}.running_mean"),
                    &format!("{bn}.running_var"),
                ],
                vec![float("epsilon", BN_EPSILON)],
            );
        }
        relu += 1;
        chain.push("Relu", &format!("relu{relu}"), &[], vec![]);
        chain.push(
            "MaxPool",
            &format!("pool{n}"),
            &[],
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        );
    }
    chain.push("Flatten", "flatten", &[], vec![int("axis", 1)]);
    for (i, _) in layers.dense.iter().enumerate() {
        let n = i + 1;
        chain.push(
            "Gemm",
            &format!("fc{n}"),
            &[&format!("fc{n}.weight"), &format!("fc{n}.bias")],
            vec![
                float("alpha", 1.0),
                float("beta", 1.0),
                int("transA", 0),
                int("transB", 1),
            ],
        );
        if n < layers.dense.len() {
            relu += 1;
            chain.push("Relu", &format!("relu{relu}"), &[], vec![]);
        }
    }
    // The last node's output is the graph's.
    chain.nodes.last_mut().expect("a network has layers").output = vec![OUTPUT.into()];
    let [c, h, w] = layers.input.map(|d| Some(d as i64));
    let classes = layers.dense.last().expect("a dense layer").out as i64;
    let graph = GraphProto {
        node: chain.nodes,
        name: format!("fmnist {}", p.describe()),
        initializer,
        doc_string: "Input: pixels divided by 255 (p / 255 as f32), N x 1 x 28 x 28. \
                     Output: the ten logits; the class is their argmax."
            .into(),
        input: vec![float_value(INPUT, &[None, c, h, w])],
        output: vec![float_value(OUTPUT, &[None, Some(classes)])],
        value_info: vec![],
    };
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "fmnist-infer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: format!("fmnist {}", p.describe()),
        graph: Some(graph),
    }
}
