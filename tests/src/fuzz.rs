//! The fuzz harnesses: one function per `cargo fuzz` target in `fuzz/fuzz_targets/`, shared with
//! the corpus replay test (`tests/tests/fuzz_corpus.rs`) so both run exactly the same code. Each
//! takes arbitrary bytes and must return without panicking, overflowing or allocating memory
//! out of proportion to the input.

use std::path::Path;

use fmnist_core::format::{CRC32, HEADER_LEN, TRAILER_LEN};
use fmnist_core::quant::{LeNetQ, WideQ};
use fmnist_infer::data::{self, IMAGES_MAGIC, MAX_IMAGES};
use fmnist_infer::modelio::LoadedModel;

/// A harness: arbitrary bytes in, no panic.
pub type Harness = fn(&[u8]);

/// The targets, by name: the name of the `fuzz/fuzz_targets/<name>.rs` file and of its corpus
/// directory `fuzz/corpus/<name>/`.
pub const TARGETS: [(&str, Harness); 4] = [
    ("idx", idx),
    ("checkpoint", checkpoint),
    ("model_file", model_file),
    ("image", image),
];

/// The IDX parser: the bytes as raw images and labels, then through the gzip path exactly as
/// `data::load` reads a file (`decode_idx`: inflation bounded by the header's count) and the
/// parsers again. (Under libFuzzer's default 4 KB inputs, deflate's ~1000:1 ratio bounds the
/// output to a few MB.)
pub fn idx(bytes: &[u8]) {
    let f = Path::new("fuzz.idx");
    let images = |b: &[u8]| {
        if let Ok(images) = data::parse_images(f, b) {
            assert!(images.len() <= MAX_IMAGES);
            assert_eq!(16 + images.len() * 784, b.len());
            assert_eq!(b[..4], IMAGES_MAGIC.to_be_bytes());
        }
    };
    let labels = |b: &[u8]| {
        if let Ok(labels) = data::parse_labels(f, b) {
            assert!(labels.iter().all(|&l| l <= 9));
            assert_eq!(8 + labels.len(), b.len());
        }
    };
    images(bytes);
    labels(bytes);
    if let Ok(out) = data::decode_idx(bytes, 16, 784) {
        images(&out);
    }
    if let Ok(out) = data::decode_idx(bytes, 8, 1) {
        assert!(out.len() <= 8 + MAX_IMAGES + 1 || out.as_ptr() == bytes.as_ptr());
        labels(&out);
    }
}

/// Rewrites a checkpoint's length field and CRC so the bytes after the header reach the
/// postcard decoder (otherwise nearly every mutation stops at the CRC).
fn with_fixed_checkpoint_crc(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 16 {
        return None;
    }
    let mut b = bytes.to_vec();
    let n = b.len() - 16;
    b[8..12].copy_from_slice(&(n as u32).to_le_bytes());
    let crc = CRC32.checksum(&b[..12 + n]);
    b[12 + n..].copy_from_slice(&crc.to_le_bytes());
    Some(b)
}

/// Decodes a checkpoint as each network and checks its recipe (with the network's conv rule),
/// as `resume` does before it allocates anything from it.
fn use_checkpoint(bytes: &[u8]) {
    use fmnist_train::checkpoint::decode_run;
    use fmnist_train::config::Model;
    use fmnist_train::registry::dispatch;
    use fmnist_train::shared::net::{TrainNet, TrainNetFn};
    struct Use<'a>(&'a [u8]);
    impl TrainNetFn for Use<'_> {
        type Output = ();
        fn call<N: TrainNet>(self) {
            if let Ok(run) = decode_run::<N>(self.0) {
                let _ = run.config.check();
                let _ = N::check_conv(run.config.conv);
            }
        }
    }
    for &m in Model::ALL {
        dispatch(m.arch(), Use(bytes));
    }
}

/// The checkpoint loader (every network): `checkpoint::decode_run` and the recipe check on the
/// bytes as they are, then with the length and CRC made consistent.
pub fn checkpoint(bytes: &[u8]) {
    use_checkpoint(bytes);
    if let Some(b) = with_fixed_checkpoint_crc(bytes) {
        use_checkpoint(&b);
    }
}

/// A fixed input image for the int8 forward pass.
fn test_image() -> [u8; 784] {
    std::array::from_fn(|i| (i * 37 % 256) as u8)
}

fn use_model(bytes: &[u8]) {
    // The host's own reader: copies into an aligned buffer, as `fmnist-infer` does.
    let model = LoadedModel::from_bytes(bytes, Path::new("fuzz.fmnm"));
    let Ok(file) = model.file() else { return };
    let _ = file.lenet_f32();
    let _ = file.lenet_folded();
    if let Ok(q) = file.lenet_int8() {
        let net = LeNetQ::new(q).expect("lenet_int8 checked the parameters");
        let img = test_image();
        let logits = net.forward(&img);
        assert_eq!(
            logits,
            net.forward_reference(&img),
            "fast and reference kernels differ"
        );
    }
    let _ = file.wide_f32();
    let _ = file.wide_folded();
    if let Ok(q) = file.wide_int8() {
        let net = WideQ::new(q).expect("wide_int8 checked the parameters");
        let img = test_image();
        assert_eq!(
            net.forward(&img),
            net.forward_reference(&img),
            "fast and reference kernels differ"
        );
    }
}

/// The model-file parser: `format::parse` and the typed views, and for an int8 model the
/// checked wrapper and one forward pass — on the bytes as they are, then with the CRC trailer
/// recomputed so mutations of header and payload get past the checksum.
pub fn model_file(bytes: &[u8]) {
    use_model(bytes);
    if bytes.len() >= HEADER_LEN + TRAILER_LEN {
        let mut b = bytes.to_vec();
        let n = b.len() - TRAILER_LEN;
        let crc = CRC32.checksum(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        use_model(&b);
    }
}

/// Side limit of the image harness: the real loader's code with smaller limits.
pub const FUZZ_IMAGE_SIDE: u32 = 256;
/// Decoder memory limit of the image harness.
pub const FUZZ_IMAGE_ALLOC: u64 = 1 << 20;

/// The image loader of `predict`: decode PNG/JPEG bytes, then the full preprocessing to 28x28.
/// Decoding runs `predict`'s own function with limits of [`FUZZ_IMAGE_SIDE`] pixels per side
/// and [`FUZZ_IMAGE_ALLOC`] bytes instead of 16,384 and 256 MB: a 300-byte input can describe
/// a 10-megapixel image, and its pixel loops would otherwise take most of the fuzzing time
/// (the real limits have their own tests in `fmnist-infer`).
pub fn image(bytes: &[u8]) {
    use fmnist_infer::preprocess::{Invert, decode_image_within, prepare};
    let path = Path::new("fuzz.png");
    if let Ok(img) = decode_image_within(path, bytes, FUZZ_IMAGE_SIDE, FUZZ_IMAGE_ALLOC) {
        assert!(img.width() <= FUZZ_IMAGE_SIDE && img.height() <= FUZZ_IMAGE_SIDE);
        let out = prepare(&img, Invert::Auto);
        assert_eq!(out.pixels.len(), 784);
    }
}
