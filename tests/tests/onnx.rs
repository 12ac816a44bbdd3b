//! ONNX export checked by a real ONNX runtime (tract, pure Rust): on the 10,000 test images the
//! class is fmnist-core's and every logit within 1e-4; and ONNX import: the graph shapes an
//! exporter may emit read back to the same weights, and graphs that are not our networks
//! refused with one line naming the difference.

use std::path::Path;

use fmnist_infer::convert::{self, Source};
use fmnist_infer::data::{self, Split};
use fmnist_infer::onnx::proto::{self, AttributeProto, ModelProto, NodeProto, TensorProto};
use fmnist_infer::{Logits, Model};
use fmnist_tests::cli_models::cli_models;
use fmnist_tests::{assert_bad_input, data_dir, run, text};
use prost::Message;
use tract_onnx::prelude::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn convert_cli(model: &Path, out: &Path) -> std::process::Output {
    run(
        "fmnist-infer",
        &["convert", "--model", s(model), "--out", s(out)],
    )
}

/// Runs `onnx` in tract on the first `n` test images and compares with `fmnm` run by
/// fmnist-core: the same class for every image, the largest |logit difference| returned.
fn agreement(fmnm: &Path, n: usize, batch: usize) -> f32 {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("m.onnx");
    let o = convert_cli(fmnm, &onnx);
    assert!(o.status.success(), "{:?}", text(&o));
    let model = Model::load(fmnm).unwrap();
    let test = data::load(&data_dir(), Split::Test).unwrap();
    let runnable = tract_onnx::onnx()
        .model_for_path(&onnx)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let mut max_diff = 0f32;
    for (b, images) in test.images[..n].chunks(batch).enumerate() {
        // The documented input: p / 255 as an f32 division.
        let x: Vec<f32> = images
            .iter()
            .flat_map(|im| im.iter().map(|&p| p as f32 / 255.0))
            .collect();
        let input = Tensor::from_shape(&[images.len(), 1, 28, 28], &x).unwrap();
        let out = runnable.run(tvec!(input.into_tvalue())).unwrap();
        let logits = out[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(logits.shape(), &[images.len(), 10]);
        for (i, image) in images.iter().enumerate() {
            let Logits::F32(ours) = model.logits(image) else {
                panic!("an f32 model")
            };
            let theirs: [f32; 10] = std::array::from_fn(|c| logits[[i, c]]);
            for (a, t) in ours.iter().zip(&theirs) {
                max_diff = max_diff.max((a - t).abs());
            }
            assert_eq!(
                fmnist_core::layers::argmax(&ours),
                fmnist_core::layers::argmax(&theirs),
                "image {}: {ours:?} vs {theirs:?}",
                b * batch + i
            );
        }
    }
    eprintln!(
        "{}: {n} images, tract and fmnist-core agree, max |logit difference| {max_diff:e}",
        fmnm.display()
    );
    assert!(max_diff <= 1e-4, "max |logit difference| {max_diff:e}");
    max_diff
}

#[test]
fn tract_agrees_with_fmnist_core_on_lenet_as_trained() {
    agreement(&cli_models().lenet.trained, 10_000, 1000);
}

#[test]
fn tract_agrees_with_fmnist_core_on_lenet_folded() {
    agreement(&cli_models().lenet.folded, 10_000, 1000);
}

#[test]
fn tract_agrees_with_fmnist_core_on_wide_folded() {
    agreement(&cli_models().wide.folded, 10_000, 250);
}

#[test]
fn tract_agrees_with_fmnist_core_on_wide_as_trained() {
    agreement(&cli_models().wide.trained, 10_000, 250);
}

/// The LeNet-BN model's parameters and its exported graph.
fn lenet_graph(folded: bool) -> (Vec<u8>, ModelProto) {
    let m = &cli_models().lenet;
    let path = if folded { &m.folded } else { &m.trained };
    let (_, Source::F32(p)) = convert::read(path).unwrap() else {
        panic!("f32")
    };
    (p.to_fmnm(), fmnist_infer::onnx::export::model(&p))
}

fn graph(m: &mut ModelProto) -> &mut proto::GraphProto {
    m.graph.as_mut().unwrap()
}

fn node<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut NodeProto {
    graph(m).node.iter_mut().find(|n| n.name == name).unwrap()
}

/// Removes a single-input node, feeding its input to its users.
fn remove_node(m: &mut ModelProto, name: &str) {
    let g = graph(m);
    let i = g.node.iter().position(|n| n.name == name).unwrap();
    let n = g.node.remove(i);
    for other in &mut g.node {
        for input in &mut other.input {
            if *input == n.output[0] {
                *input = n.input[0].clone();
            }
        }
    }
}

/// Inserts `new` (taking `after`'s output) after node `after`; `after`'s users take `new`'s.
fn insert_after(m: &mut ModelProto, after: &str, mut new: NodeProto) {
    let g = graph(m);
    let i = g.node.iter().position(|n| n.name == after).unwrap();
    let out = g.node[i].output[0].clone();
    let new_out = format!("{}_out", new.name);
    for other in &mut g.node {
        for input in &mut other.input {
            if *input == out {
                *input = new_out.clone();
            }
        }
    }
    for o in &mut g.output {
        if o.name == out {
            o.name = new_out.clone();
        }
    }
    new.input = vec![out];
    new.output = vec![new_out];
    g.node.insert(i + 1, new);
}

fn op(name: &str, op_type: &str) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op_type.into(),
        ..Default::default()
    }
}

fn import(m: &ModelProto) -> Result<Vec<u8>, String> {
    fmnist_infer::onnx::decode(&m.encode_to_vec())
        .map(|p| p.to_fmnm())
        .map_err(|e| e.to_string())
}

/// What an exporter may write instead of our graph, read to the same weights: initializers
/// with other names behind `Identity` nodes, a `Constant` node, `Reshape` instead of
/// `Flatten`, `MaxPool` before `Relu`, `MatMul` + `Add` instead of `Gemm`, no input shape,
/// initializers listed as graph inputs (IR < 4).
#[test]
fn exporter_variants_import_to_the_same_weights() {
    for folded in [false, true] {
        let (fmnm, mut m) = lenet_graph(folded);
        assert_eq!(import(&m).unwrap(), fmnm, "our own graph");
        let g = graph(&mut m);
        // Renamed initializers reached through Identity nodes.
        let mut renames = Vec::new();
        for (k, t) in g.initializer.iter_mut().enumerate() {
            let new = format!("onnx::Param_{k}");
            renames.push((t.name.clone(), new.clone()));
            t.name = new;
        }
        for (old, new) in &renames {
            g.node.insert(
                0,
                NodeProto {
                    name: format!("id_{new}"),
                    op_type: "Identity".into(),
                    input: vec![new.clone()],
                    output: vec![old.clone()],
                    ..Default::default()
                },
            );
        }
        for t in &g.initializer {
            g.input.push(proto::ValueInfoProto {
                name: t.name.clone(),
                ..Default::default()
            });
        }
        g.input[0].r#type = None;
        // Flatten → Reshape to a Constant [-1, 400].
        let flatten = g.node.iter_mut().find(|n| n.name == "flatten").unwrap();
        flatten.op_type = "Reshape".into();
        flatten.attribute.clear();
        flatten.input.push("shape".into());
        g.node.insert(
            0,
            NodeProto {
                name: "shape_const".into(),
                op_type: "Constant".into(),
                output: vec!["shape".into()],
                attribute: vec![AttributeProto {
                    name: "value".into(),
                    r#type: proto::attribute_type::TENSOR,
                    t: Some(TensorProto {
                        dims: vec![2],
                        data_type: proto::data_type::INT64,
                        int64_data: vec![-1, 400],
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        // pool1 before relu1: swap the two nodes' operations and attributes.
        let relu = g.node.iter().position(|n| n.name == "relu1").unwrap();
        let pool = g.node.iter().position(|n| n.name == "pool1").unwrap();
        let (ra, pa) = (g.node[relu].clone(), g.node[pool].clone());
        g.node[relu].op_type = pa.op_type;
        g.node[relu].attribute = pa.attribute;
        g.node[pool].op_type = ra.op_type;
        g.node[pool].attribute = ra.attribute;
        // fc3 as MatMul with a transposed weight, then Add.
        let w = g
            .initializer
            .iter_mut()
            .find(|t| {
                renames
                    .iter()
                    .any(|(o, n)| o == "fc3.weight" && *n == t.name)
            })
            .unwrap();
        let vals: Vec<f32> = w
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut t = vec![0f32; vals.len()];
        for o in 0..10 {
            for i in 0..84 {
                t[i * 10 + o] = vals[o * 84 + i];
            }
        }
        w.raw_data.clear();
        w.float_data = t;
        w.dims = vec![84, 10];
        let fc3 = g.node.iter_mut().find(|n| n.name == "fc3").unwrap();
        fc3.op_type = "MatMul".into();
        fc3.attribute.clear();
        let bias = fc3.input.pop().unwrap();
        fc3.output = vec!["fc3_mm".into()];
        g.node.push(NodeProto {
            name: "fc3_add".into(),
            op_type: "Add".into(),
            input: vec!["fc3_mm".into(), bias],
            output: vec!["logits".into()],
            ..Default::default()
        });
        assert_eq!(
            import(&m).unwrap(),
            fmnm,
            "exporter variant, folded {folded}"
        );
    }
}

/// Graphs that are not our networks: the message names the layer and the difference.
#[test]
fn foreign_graphs_are_refused_naming_the_difference() {
    let expect = |m: &ModelProto, want: &str| {
        assert_eq!(import(m).unwrap_err(), want);
    };
    // A missing node.
    let (_, mut m) = lenet_graph(false);
    remove_node(&mut m, "relu3");
    expect(
        &m,
        "not an fmnist network: expected Relu (after fc1) after Gemm node `fc1`, found Gemm node `fc2`",
    );
    let (_, mut m) = lenet_graph(false);
    remove_node(&mut m, "bn2");
    expect(
        &m,
        "not an fmnist network: expected BatchNormalization (bn2) after Conv node `conv2`, found Relu node `relu2`",
    );
    // A wrong kernel size.
    let (_, mut m) = lenet_graph(true);
    let w = graph(&mut m)
        .initializer
        .iter_mut()
        .find(|t| t.name == "conv2.weight")
        .unwrap();
    w.dims = vec![16, 6, 3, 3];
    w.raw_data.truncate(16 * 6 * 9 * 4);
    node(&mut m, "conv2").attribute[0].ints = vec![3, 3];
    expect(
        &m,
        "not an fmnist network: conv2 has kernel 3x3, expected 5x5",
    );
    // An extra layer.
    let (_, mut m) = lenet_graph(true);
    insert_after(&mut m, "fc3", op("extra", "Relu"));
    expect(
        &m,
        "not an fmnist network: the graph goes on after Gemm node `fc3` with Relu node `extra`, expected the logits",
    );
    let (_, mut m) = lenet_graph(true);
    insert_after(&mut m, "relu1", op("relu1b", "Relu"));
    expect(
        &m,
        "not an fmnist network: expected MaxPool (pool1) after Relu node `relu1`, found Relu node `relu1b`",
    );
    // Another epsilon, another padding, another pool.
    let (_, mut m) = lenet_graph(false);
    node(&mut m, "bn1").attribute[0].f = 1e-3;
    expect(
        &m,
        "not an fmnist network: bn1 has epsilon 1e-3, expected 1e-5",
    );
    let (_, mut m) = lenet_graph(true);
    node(&mut m, "conv1").attribute[1].ints = vec![0; 4];
    expect(
        &m,
        "not an fmnist network: conv1 has padding [0, 0, 0, 0], expected 2 on each side",
    );
    let (_, mut m) = lenet_graph(true);
    node(&mut m, "pool2").attribute[1].ints = vec![1, 1];
    expect(
        &m,
        "not an fmnist network: pool2 has kernel [2, 2], strides [1, 1], pads [0, 0, 0, 0], expected a 2x2 max-pool of stride 2 without padding",
    );
    // The wide CNN's errors are about the wide CNN.
    let (_, Source::F32(p)) = convert::read(&cli_models().wide.folded).unwrap() else {
        panic!("f32")
    };
    let mut m = fmnist_infer::onnx::export::model(&p);
    remove_node(&mut m, "pool2");
    expect(
        &m,
        "not an fmnist network: expected MaxPool (pool2) after Relu node `relu2`, found Flatten node `flatten`",
    );
}

/// From the command line: truncated, not protobuf, not a network: one line, exit 2, no output.
#[test]
fn bad_onnx_files_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    let (_, good) = lenet_graph(false);
    let bytes = good.encode_to_vec();
    let mut ext = good.clone();
    insert_after(&mut ext, "fc3", op("softmax", "Softmax"));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "trunc.onnx",
            bytes[..bytes.len() - 1000].to_vec(),
            "trunc.onnx: not an ONNX model: failed to decode Protobuf message",
        ),
        (
            "text.onnx",
            b"this is not protobuf at all\n".to_vec(),
            "text.onnx: not an ONNX model: ",
        ),
        (
            "empty-graph.onnx",
            ModelProto {
                ir_version: 7,
                ..Default::default()
            }
            .encode_to_vec(),
            "empty-graph.onnx: not an ONNX model: no graph",
        ),
        (
            "softmax.onnx",
            ext.encode_to_vec(),
            "softmax.onnx: not an fmnist network: the graph goes on after Gemm node `fc3` with Softmax node `softmax`, expected the logits",
        ),
    ];
    for (name, data, want) in cases {
        let path = d.join(name);
        std::fs::write(&path, data).unwrap();
        let o = convert_cli(&path, &out.join("m.fmnm"));
        assert_bad_input(&o, want);
        let (_, err) = text(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(fmnist_tests::file_names(&out).is_empty());
    }
}
