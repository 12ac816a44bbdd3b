//! `docs/model-format.md` is the source of truth for the f32 arithmetic: this test reads the
//! worked example of its section 8.1 out of the document itself, recomputes every row with plain
//! f32 operations in the documented order (independently of the layer code), checks that the
//! example's inputs are those of the real model and image it names, and that the layer code the
//! device runs gives the document's bits.

use std::path::Path;

use fmnist_core::format::{self, Arch, Kind};
use fmnist_core::layers::Conv2d;
use fmnist_core::lenet::{BN_EPS, LeNetFoldedParams, LeNetParams, image_to_f32, pixel_to_f32};
use fmnist_infer::data::{self, Split};
use fmnist_tests::{data_dir, run, text, workspace_root};

/// The f32 whose bits are written `0x` and eight hex digits (either case) at the start of `s`
/// (after backticks and spaces).
fn bits(s: &str) -> f32 {
    let h = s.trim_start_matches([' ', '`']);
    let h = h
        .strip_prefix("0x")
        .and_then(|h| h.get(..8))
        .unwrap_or_else(|| panic!("not hex bits: {s}"));
    f32::from_bits(u32::from_str_radix(h, 16).unwrap_or_else(|_| panic!("not hex bits: {s}")))
}

/// The value written right after `` `name = `` in `text`, as bits.
fn named(text: &str, name: &str) -> f32 {
    let key = format!("`{name} = ");
    let at = text
        .find(&key)
        .unwrap_or_else(|| panic!("no {key} in section 8.1"))
        + key.len();
    bits(&text[at..at + 10])
}

/// The value in the row of the two-column table whose first cell is `` `step` ``.
fn row(text: &str, step: &str) -> f32 {
    let key = format!("| `{step}` | ");
    let at = text.find(&key).unwrap_or_else(|| panic!("no row {step}")) + key.len();
    bits(text[at..].split('|').next().unwrap())
}

/// One tap row of the table: (ky, kx, weight, pixel, x, product, acc after).
struct Tap {
    ky: usize,
    kx: usize,
    w: f32,
    p: u8,
    x: f32,
    prod: f32,
    acc: f32,
}

fn taps(section: &str) -> Vec<Tap> {
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // "", "ky, kx", "(y, x)", w, p, x, prod, acc, ""
            if cells.len() != 9 {
                return None;
            }
            let (ky, kx) = cells[1].split_once(", ")?;
            Some(Tap {
                ky: ky.parse().ok()?,
                kx: kx.parse().ok()?,
                w: bits(cells[3]),
                p: cells[4].parse().ok()?,
                x: bits(cells[5]),
                prod: bits(cells[6]),
                acc: bits(cells[7]),
            })
        })
        .collect()
}

fn same(a: f32, b: f32, what: &str) {
    assert_eq!(a.to_bits(), b.to_bits(), "{what}: {a:e} vs {b:e}");
}

/// The payload of a model file of `kind`, its header and CRC checked by the library's reader.
fn payload<T: bytemuck::Pod>(path: &Path, kind: Kind) -> Box<T> {
    let b = std::fs::read(path).unwrap();
    let m = format::parse(&b).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!((m.header.arch, m.header.kind), (Arch::LeNet, kind));
    Box::new(bytemuck::pod_read_unaligned(m.payload))
}

#[test]
fn the_worked_example_of_section_8_1_holds() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/model-format.md")).unwrap();
    let start = doc.find("### 8.1 Worked example").expect("section 8.1");
    let end = start + doc[start..].find("\n## 9.").expect("section 9");
    let s = &doc[start..end];

    // 1. The document's own arithmetic, recomputed with plain f32 operations in its order:
    // x = p / 255 (a division), acc = bias, then acc + (w · x) tap by tap, two roundings each.
    let taps = taps(s);
    assert_eq!(taps.len(), 25, "the table has 25 taps");
    let bias = named(s, "bias[0]");
    let mut acc = bias;
    for (i, t) in taps.iter().enumerate() {
        assert_eq!((t.ky, t.kx), (i / 5, i % 5), "taps in ky, kx order");
        same(t.p as f32 / 255.0, t.x, "x = p / 255");
        let prod = t.w * t.x;
        same(prod, t.prod, "w · x");
        acc += prod;
        same(acc, t.acc, "acc after the tap");
    }
    let (mean, var, gamma, beta) = (
        named(s, "mean"),
        named(s, "var"),
        named(s, "gamma"),
        named(s, "beta"),
    );
    let eps = 1e-5f32;
    same(eps, f32::from_bits(0x3727_C5AC), "eps");
    same(var + eps, row(s, "var + eps"), "var + eps");
    let sd = (var + eps).sqrt();
    same(sd, row(s, "sd = sqrt(var + eps)"), "sd");
    let d = acc - mean;
    same(d, row(s, "d = acc − mean"), "d");
    let q = d / sd;
    same(q, row(s, "q = d / sd"), "q");
    let g = q * gamma;
    same(g, row(s, "g = q · gamma"), "g");
    let y = g + beta;
    same(y, row(s, "y = g + beta"), "y");

    // 2. Its inputs are the real ones: the named training run and the first test image.
    let tmp = tempfile::tempdir().unwrap();
    let d_ = tmp.path().join("D");
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--steps",
            "60",
            "--threads",
            "2",
            "--out",
            d_.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let model = d_.join("model.fmnm");
    let o = run(
        "fmnist-train",
        &[
            "export",
            "--checkpoint",
            model.to_str().unwrap(),
            "--out",
            d_.join("int8.fmnm").to_str().unwrap(),
            "--folded-out",
            d_.join("folded.fmnm").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let p: Box<LeNetParams> = payload(&model, Kind::F32);
    let image = data::load(&data_dir(), Split::Test).unwrap().images[0];
    same(p.conv1_bias[0], bias, "conv1.bias[0]");
    for t in &taps {
        same(p.conv1_weight[0][0][t.ky][t.kx], t.w, "conv1.weight");
        assert_eq!(image[(12 + t.ky) * 28 + 12 + t.kx], t.p, "pixel");
        same(pixel_to_f32(t.p), t.x, "pixel_to_f32");
    }
    same(p.bn1.running_mean[0], mean, "mean");
    same(p.bn1.running_var[0], var, "var");
    same(p.bn1.gamma[0], gamma, "gamma");
    same(p.bn1.beta[0], beta, "beta");
    same(BN_EPS, eps, "BN_EPS");

    // 3. The layer code the device runs gives the document's bits, on the whole image.
    let input = image_to_f32(&image);
    let conv1 = Conv2d::<1, 6, 5, 2> {
        weight: &p.conv1_weight,
        bias: &p.conv1_bias,
    };
    let out = conv1.output_at(&input, 0, 14, 14);
    same(out, taps[24].acc, "Conv2d::output_at");
    same(p.bn1.layer().apply(0, out), y, "BatchNorm::apply");
    let at = s.find("the same output is `").expect("folded result") + "the same output is ".len();
    let folded_y = bits(&s[at..at + 12]);
    let at = s.find("folded bias\n`").map(|i| i + "folded bias\n".len());
    let at = at
        .or_else(|| s.find("folded bias `").map(|i| i + "folded bias ".len()))
        .expect("folded bias");
    let folded_bias = bits(&s[at..at + 12]);
    let f: Box<LeNetFoldedParams> = payload(&d_.join("folded.fmnm"), Kind::F32Folded);
    same(f.conv1_bias[0], folded_bias, "folded conv1 bias");
    let conv1 = Conv2d::<1, 6, 5, 2> {
        weight: &f.conv1_weight,
        bias: &f.conv1_bias,
    };
    same(conv1.output_at(&input, 0, 14, 14), folded_y, "folded conv1");
}
