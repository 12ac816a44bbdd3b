//! Building the firmware, running it on QEMU and reading what it says.
//!
//! * [`firmware`] builds `firmware/` for `thumbv7em-none-eabihf` once per test process (one
//!   profile at a time, under a lock) and returns a copy of the ELF;
//! * [`run`] starts `qemu-system-arm -machine mps2-an386` on it with a model loaded into the
//!   model region, decodes the defmt log with the `defmt-decoder` crate (no `defmt-print`
//!   needed) and returns exit status and log lines;
//! * [`test_set`] writes the Fashion-MNIST test split as un-gzipped IDX files the firmware
//!   streams through semihosting;
//! * [`random_int8`], [`random_folded`], [`random_wide_int8`] make valid pseudo-random models
//!   (an LCG), [`wide_model`] a wide CNN that classifies (random features, fitted readout,
//!   quantized), and [`model_file`] wraps a payload in the FMNM container.
//!
//! Needs `qemu-system-arm` (Debian: `qemu-system-arm`), the `thumbv7em-none-eabihf` target
//! and, for [`sizes`], `llvm-size` (`rustup component add llvm-tools`) or `arm-none-eabi-size`
//! (Debian: `binutils-arm-none-eabi`). A missing tool fails the test with the install command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::{IMAGE_PIXELS, LeNetFoldedParams};
use fmnist_core::quant::{LeNetQParams, QLayerParams, WideQParams};
use fmnist_core::wide::{WIDE_FLAT, WIDE_HIDDEN, WideFoldedParams};

/// Where the model region starts on the QEMU profile (`firmware/memory/qemu-mps2-an386.x`).
pub const MODEL_ADDR: u32 = 0x0002_0000;

/// Exit status of the firmware for a refused model.
pub const EXIT_MODEL: i32 = 2;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The firmware crate.
pub fn firmware_dir() -> PathBuf {
    root().join("firmware")
}

/// A firmware build profile: cargo features on top of `--no-default-features`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// QEMU, LeNet-BN int8 and f32 and the wide CNN int8 (the default features).
    Qemu,
    /// QEMU, LeNet-BN int8 models only: the build the memory targets are about.
    QemuInt8,
    /// QEMU, LeNet-BN f32 models only.
    QemuF32,
    /// QEMU, int8 models: LeNet-BN and the wide CNN (the wide CNN's memory figures).
    QemuWide,
    /// STM32F407 with RTT logging: builds here, runs on hardware only.
    Board,
}

impl Profile {
    fn features(self) -> &'static str {
        match self {
            Profile::Qemu => "qemu,int8,f32,wide",
            Profile::QemuInt8 => "qemu,int8",
            Profile::QemuF32 => "qemu,f32",
            Profile::QemuWide => "qemu,int8,wide",
            Profile::Board => "board",
        }
    }

    /// Short name used in file names and the sizes file.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Qemu => "qemu",
            Profile::QemuInt8 => "qemu-int8",
            Profile::QemuF32 => "qemu-f32",
            Profile::QemuWide => "qemu-wide",
            Profile::Board => "board",
        }
    }
}

static BUILDS: Mutex<Option<HashMap<Profile, PathBuf>>> = Mutex::new(None);

/// Builds the firmware (release) for `profile` and returns a private copy of the ELF.
pub fn firmware(profile: Profile) -> PathBuf {
    let mut builds = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let builds = builds.get_or_insert_with(HashMap::new);
    if let Some(elf) = builds.get(&profile) {
        return elf.clone();
    }
    let dir = firmware_dir();
    let target_dir = dir.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let t = Instant::now();
    let out = Command::new(cargo)
        .current_dir(&dir)
        // The host build's flags (e.g. target-cpu=native) must not leak into the firmware.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .args(["build", "--release", "--target", "thumbv7em-none-eabihf"])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--no-default-features", "--features", profile.features()])
        .stdout(Stdio::inherit())
        .output()
        .expect("cannot run cargo to build the firmware");
    if !out.status.success() {
        panic!(
            "building the firmware ({}) failed:\n{}\nIs the target installed? \
             `rustup target add thumbv7em-none-eabihf`",
            profile.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "firmware ({}) built in {:.1} s",
        profile.name(),
        t.elapsed().as_secs_f64()
    );
    let built = target_dir.join("thumbv7em-none-eabihf/release/fmnist-firmware");
    let copy = target_dir.join(format!(
        "fmnist-tests/fmnist-firmware-{}.elf",
        profile.name()
    ));
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&built, &copy).unwrap();
    builds.insert(profile, copy.clone());
    copy
}

/// What a QEMU run produced.
#[derive(Debug)]
pub struct Run {
    /// QEMU's exit status (the firmware's semihosting exit code).
    pub status: i32,
    /// The decoded defmt log, one `LEVEL message` line per frame.
    pub log: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Run {
    /// The log as one string.
    pub fn text(&self) -> String {
        self.log.join("\n")
    }

    /// The first log line containing `needle`.
    pub fn line(&self, needle: &str) -> Option<&str> {
        self.log
            .iter()
            .find(|l| l.contains(needle))
            .map(String::as_str)
    }
}

/// Fails with the install command when `qemu-system-arm` is missing.
pub fn require_qemu() {
    let ok = Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "qemu-system-arm not found: the firmware tests need it \
         (Debian/Ubuntu: `apt-get install -y qemu-system-arm`)"
    );
}

/// Runs the firmware on QEMU mps2-an386 with `model` loaded at [`MODEL_ADDR`] and `args` as its
/// semihosting command line. Bench and demo modes get `-icount shift=0` (one instruction per
/// virtual nanosecond: the TIMER0 count they log is exact); verify runs about 10 % faster without.
pub fn run(elf: &Path, model: Option<&Path>, args: &[&str], timeout: Duration) -> Run {
    require_qemu();
    let mut cmd = Command::new("timeout");
    cmd.arg(timeout.as_secs().to_string())
        .arg("qemu-system-arm")
        .args(["-machine", "mps2-an386", "-cpu", "cortex-m4"])
        .args(["-display", "none", "-serial", "none", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"]);
    if matches!(args.first(), Some(&"bench") | Some(&"demo")) {
        cmd.args(["-icount", "shift=0"]);
    }
    if let Some(m) = model {
        cmd.arg("-device")
            .arg(format!("loader,file={},addr={MODEL_ADDR:#x}", m.display()));
    }
    cmd.arg("-kernel")
        .arg(elf)
        .arg("-append")
        .arg(args.join(" "));
    for a in args {
        assert!(
            !a.contains(' '),
            "semihosting arguments cannot hold spaces: {a}"
        );
    }
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("cannot start timeout/qemu-system-arm");
    let elapsed = t.elapsed();
    let status = out.status.code().unwrap_or(-1);
    assert_ne!(
        status,
        124,
        "QEMU timed out after {timeout:?}; log so far:\n{}",
        decode(elf, &out.stdout).join("\n")
    );
    Run {
        status,
        log: decode(elf, &out.stdout),
        elapsed,
    }
}

/// QEMU processes a verify run is split into (each takes a contiguous range of images).
pub const VERIFY_PARTS: u32 = 2;

/// What a verify run over the whole test set produced.
#[derive(Debug)]
pub struct Verify {
    /// The device's logits, image after image (10 bytes per int8 image, 40 per f32 image).
    pub logits: Vec<u8>,
    /// Images the device classified correctly (from its `verify NAME: N images, C correct` lines).
    pub correct: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The decoded logs of all parts.
    pub log: String,
}

/// Runs verify mode over the whole test set in [`VERIFY_PARTS`] parallel QEMU processes, each
/// streaming a contiguous range of images, one verify per test process at a time; `name` is
/// the model kind the firmware logs (`int8`, `f32` or `wide-int8`). The timeout applies to each
/// QEMU process. Panics with the log when a part fails.
pub fn verify(profile: Profile, model: &Path, name: &str, timeout: Duration) -> Verify {
    let set = test_set();
    let elf = firmware(profile);
    let n = set.images.len() as u32;
    // One verify at a time: each already keeps [`VERIFY_PARTS`] cores busy, and two at once
    // (the test harness runs tests in parallel) would stretch both past their timeouts.
    static VERIFY_LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = VERIFY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let parts: Vec<(PathBuf, Run)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..VERIFY_PARTS)
            .map(|k| {
                let (first, last) = (n * k / VERIFY_PARTS, n * (k + 1) / VERIFY_PARTS);
                let out = model.with_extension(format!("device-logits-{k}"));
                let elf = &elf;
                s.spawn(move || {
                    let (first_s, count_s) = (first.to_string(), (last - first).to_string());
                    let args = [
                        "verify",
                        set.images_path.to_str().unwrap(),
                        set.labels_path.to_str().unwrap(),
                        out.to_str().unwrap(),
                        &first_s,
                        &count_s,
                    ];
                    let run = run(elf, Some(model), &args, timeout);
                    (out, run)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = t.elapsed();
    let mut logits = Vec::new();
    let mut correct = 0;
    let mut log = String::new();
    for (out, run) in &parts {
        log.push_str(&run.text());
        log.push('\n');
        assert_eq!(run.status, 0, "verify failed:\n{}", run.text());
        logits.extend(std::fs::read(out).unwrap());
        let _ = std::fs::remove_file(out);
        let line = run
            .line(&format!("verify {name}:"))
            .unwrap_or_else(|| panic!("no verify summary in:\n{}", run.text()));
        correct += number_after(line, "images,").unwrap();
    }
    Verify {
        logits,
        correct,
        elapsed,
        log,
    }
}

/// Decodes a defmt byte stream with the ELF's defmt table.
pub fn decode(elf: &Path, bytes: &[u8]) -> Vec<String> {
    let elf_bytes = std::fs::read(elf).unwrap();
    let table = defmt_decoder::Table::parse(&elf_bytes)
        .expect("bad defmt table")
        .expect("the firmware has no defmt table");
    let mut decoder = table.new_stream_decoder();
    decoder.received(bytes);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                let level = frame
                    .level()
                    .map(|l| l.as_str().to_uppercase())
                    .unwrap_or_default();
                lines.push(format!("{level} {}", frame.display_message()));
            }
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                lines.push("<malformed defmt frame>".into());
                if table.encoding().can_recover() {
                    continue;
                }
                break;
            }
        }
    }
    lines
}

/// The Fashion-MNIST test split as un-gzipped IDX files, written once per process.
pub struct TestSet {
    /// `t10k-images-idx3-ubyte`.
    pub images_path: PathBuf,
    /// `t10k-labels-idx1-ubyte`.
    pub labels_path: PathBuf,
    /// The images.
    pub images: Vec<[u8; IMAGE_PIXELS]>,
    /// The labels.
    pub labels: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// Loads the test split (`FMNIST_DATA`, then the Debian package's folder, see
/// `fmnist_infer::data::locate`) and writes it raw for the firmware.
pub fn test_set() -> &'static TestSet {
    static SET: OnceLock<TestSet> = OnceLock::new();
    SET.get_or_init(|| {
        use fmnist_infer::data;
        let dir = data::locate(None).unwrap_or_else(|e| {
            panic!("Fashion-MNIST not found ({e}); `apt-get install dataset-fashion-mnist`")
        });
        let set = data::load(&dir, data::Split::Test).unwrap_or_else(|e| panic!("{e}"));
        let tmp = tempfile::tempdir().unwrap();
        let images_path = tmp.path().join("t10k-images-idx3-ubyte");
        let labels_path = tmp.path().join("t10k-labels-idx1-ubyte");
        std::fs::write(&images_path, data::encode_images(&set.images)).unwrap();
        std::fs::write(&labels_path, data::encode_labels(&set.labels)).unwrap();
        TestSet {
            images_path,
            labels_path,
            images: set.images,
            labels: set.labels,
            _dir: tmp,
        }
    })
}

/// Optimizer steps of the short deterministic training run behind [`trained`].
pub const TRAIN_STEPS: u64 = 300;

/// A briefly trained LeNet-BN in the two forms the device runs.
pub struct Trained {
    /// BN folded into the convolutions (`Kind::F32Folded`).
    pub folded: Box<LeNetFoldedParams>,
    /// Quantized (`Kind::Int8`), calibrated min/max on 1,000 training images.
    pub int8: Box<LeNetQParams>,
}

/// Trains LeNet-BN for [`TRAIN_STEPS`] steps (batch 64, SGD lr 0.05 momentum 0.9, constant
/// rate, seed 7: deterministic, a few seconds), folds and quantizes it. Once per process.
pub fn trained() -> &'static Trained {
    static TRAINED: OnceLock<Trained> = OnceLock::new();
    TRAINED.get_or_init(|| {
        use fmnist_infer::data;
        use fmnist_train::config::{Preset, Schedule};
        use fmnist_train::{fold, quantize, trainer};
        let t = Instant::now();
        let dir = data::locate(None).unwrap_or_else(|e| panic!("{e}"));
        let train = data::load(&dir, data::Split::Train).unwrap_or_else(|e| panic!("{e}"));
        let mut config = Preset::Fast.config(train.len(), 7);
        config.steps = TRAIN_STEPS;
        config.schedule = Schedule::Constant;
        let mut tr = trainer::Trainer::new(config, &train, 2).unwrap();
        for _ in 0..TRAIN_STEPS {
            tr.step();
        }
        let p = tr.params();
        let folded = fold::fold_batch_norm(p);
        let int8 =
            quantize::quantize_lenet(p, &train.images[..1000], quantize::Calibration::MinMax)
                .expect("quantizing the trained model");
        eprintln!(
            "trained LeNet-BN for {TRAIN_STEPS} steps in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Trained { folded, int8 }
    })
}

/// Scales every 97th weight of the dense layers into the subnormal range, so that sums and
/// products on the device cross it: a flush-to-zero FPU would give different logits.
pub fn with_subnormals(p: &LeNetFoldedParams) -> Box<LeNetFoldedParams> {
    let mut q = Box::new(*p);
    for xs in [
        q.fc1_weight.as_flattened_mut(),
        q.fc2_weight.as_flattened_mut(),
        q.fc3_weight.as_flattened_mut(),
    ] {
        for (i, x) in xs.iter_mut().enumerate() {
            if i % 97 == 13 {
                *x *= 1e-38;
            }
        }
    }
    q
}

/// A complete model file (header, payload, CRC).
pub fn model_file(arch: Arch, kind: Kind, payload: &[u8]) -> Vec<u8> {
    fmnist_infer::modelio::encode_model(arch, kind, payload)
}

/// A 32-bit LCG (Numerical Recipes constants): reproducible test data with no dependency.
pub struct Lcg(pub u32);

impl Lcg {
    /// The next raw value.
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + ((self.next_u32() >> 8) % (hi - lo + 1) as u32) as i32
    }

    /// Uniform in `[-a, a)`.
    pub fn uniform(&mut self, a: f32) -> f32 {
        ((self.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * a
    }
}

/// Valid pseudo-random int8 LeNet parameters (not a trained model): weights in −127..=127,
/// zero points chained, shifts chosen so activations spread over the int8 range.
pub fn random_int8(seed: u32) -> Box<LeNetQParams> {
    let mut r = Lcg(seed);
    let mut p: Box<LeNetQParams> = bytemuck::zeroed_box();
    for w in bytemuck::bytes_of_mut(&mut p.conv1_weight)
        .iter_mut()
        .chain(bytemuck::bytes_of_mut(&mut p.conv2_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc1_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc2_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc3_weight))
    {
        *w = r.range(-127, 127) as i8 as u8;
    }
    let zps: [i8; 5] = std::array::from_fn(|_| r.range(-128, -90) as i8);
    let input_zp = fmnist_core::quant::lenet::INPUT_ZERO_POINT;
    random_layer(&mut r, &mut p.conv1, input_zp, zps[0], (-10, -6));
    random_layer(&mut r, &mut p.conv2, zps[0], zps[1], (-13, -9));
    random_layer(&mut r, &mut p.fc1, zps[1], zps[2], (-14, -10));
    random_layer(&mut r, &mut p.fc2, zps[2], zps[3], (-13, -9));
    random_layer(&mut r, &mut p.fc3, zps[3], zps[4], (-12, -8));
    p.check().expect("random int8 parameters must be valid");
    p
}

fn random_layer<const C: usize>(
    r: &mut Lcg,
    q: &mut QLayerParams<C>,
    zp_in: i8,
    zp_out: i8,
    shifts: (i32, i32),
) {
    q.input_zero_point = zp_in;
    q.output_zero_point = zp_out;
    q.input_scale = 0.01;
    q.output_scale = 0.02;
    for c in 0..C {
        q.bias[c] = r.range(-300_000, 300_000);
        q.multiplier[c] = r.range(1 << 30, i32::MAX);
        q.shift[c] = r.range(shifts.0, shifts.1);
        q.weight_scale[c] = 0.001;
    }
}

/// Valid pseudo-random int8 wide-CNN parameters (not a trained model): weights in −127..=127,
/// zero points chained, shifts chosen for each layer's fan-in (9, 288, 3136, 512) so that
/// activations spread over the int8 range rather than saturate.
pub fn random_wide_int8(seed: u32) -> Box<WideQParams> {
    let mut r = Lcg(seed);
    let mut p: Box<WideQParams> = bytemuck::zeroed_box();
    for w in bytemuck::bytes_of_mut(&mut p.conv1_weight)
        .iter_mut()
        .chain(bytemuck::bytes_of_mut(&mut p.conv2_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc1_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc2_weight))
    {
        *w = r.range(-127, 127) as i8 as u8;
    }
    let zps: [i8; 4] = std::array::from_fn(|_| r.range(-128, -90) as i8);
    let input_zp = fmnist_core::quant::lenet::INPUT_ZERO_POINT;
    random_layer(&mut r, &mut p.conv1, input_zp, zps[0], (-9, -5));
    random_layer(&mut r, &mut p.conv2, zps[0], zps[1], (-14, -10));
    random_layer(&mut r, &mut p.fc1, zps[1], zps[2], (-16, -12));
    random_layer(&mut r, &mut p.fc2, zps[2], zps[3], (-15, -11));
    p.check()
        .expect("random wide int8 parameters must be valid");
    p
}

/// Training images the wide CNN's readout is fitted on and its activations calibrated on.
pub const WIDE_FIT_IMAGES: usize = 2000;

/// A wide CNN that classifies, in the two forms the host has for it, built without training
/// (seconds instead of the minutes a wide training run takes).
pub struct WideModel {
    /// BN-folded f32 weights: He-uniform random convolutions and fc1, fc2 fitted.
    pub folded: Box<WideFoldedParams>,
    /// Their int8 quantization.
    pub int8: Box<WideQParams>,
}

/// Builds [`WideModel`] once per process, deterministically (an LCG, fixed images):
///
/// 1. conv1, conv2 and fc1 are He-uniform random f32 (random features: ReLU and pooling keep
///    them informative), biases small;
/// 2. fc2 is the ridge-regression fit of one-hot labels on the fc1 activations of
///    [`WIDE_FIT_IMAGES`] evenly spaced training images (f64 normal equations, Cholesky);
/// 3. activation ranges are the min/max over those images of the f32 forward pass
///    (`fmnist_core::wide::Wide`), and fmnist-train's quantizer
///    (`quantize::quantize_wide_with_ranges`: weights symmetric per channel, activations per
///    tensor, zero-point-folded int32 biases, TFLite multipliers, `WideQParams::check`) makes
///    the int8 model.
///
/// Its int8 test accuracy is around 80 %: logits spread over the int8 range and every class
/// is predicted, which a purely random int8 model does not do (its ReLUs clamp, one class wins).
pub fn wide_model() -> &'static WideModel {
    static MODEL: OnceLock<WideModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        use fmnist_infer::data;
        let t = Instant::now();
        let dir = data::locate(None).unwrap_or_else(|e| panic!("{e}"));
        let train = data::load(&dir, data::Split::Train).unwrap_or_else(|e| panic!("{e}"));
        let step = train.len() / WIDE_FIT_IMAGES;
        let fit: Vec<usize> = (0..WIDE_FIT_IMAGES).map(|i| i * step).collect();

        let mut r = Lcg(0x3a1d_e001);
        let mut f: Box<WideFoldedParams> = bytemuck::zeroed_box();
        let mut fill = |xs: &mut [f32], fan_in: usize, scale: f32| {
            let a = scale * (6.0 / fan_in as f32).sqrt();
            xs.iter_mut().for_each(|x| *x = r.uniform(a));
        };
        fill(bytemuck::cast_slice_mut(&mut f.conv1_weight), 9, 1.0);
        fill(&mut f.conv1_bias, 9, 0.1);
        fill(bytemuck::cast_slice_mut(&mut f.conv2_weight), 288, 1.0);
        fill(&mut f.conv2_bias, 288, 0.1);
        fill(f.fc1_weight.as_flattened_mut(), WIDE_FLAT, 1.0);
        fill(&mut f.fc1_bias, WIDE_FLAT, 0.1);

        // fc1 activations and the ranges of pool1, pool2 and fc1, in two threads.
        struct Part {
            h: Vec<[f32; WIDE_HIDDEN]>,
            max: [f32; 3],
        }
        let net = fmnist_core::wide::Wide::from(&*f);
        let run = |idx: &[usize]| {
            let mut part = Part {
                h: Vec::with_capacity(idx.len()),
                max: [0.0; 3],
            };
            for &i in idx {
                let t = Box::new(net.trace(&train.images[i]));
                let m = |xs: &[f32], m: f32| xs.iter().fold(m, |m, &x| m.max(x));
                part.max[0] = m(t.pool1.as_flattened().as_flattened(), part.max[0]);
                part.max[1] = m(&t.flat, part.max[1]);
                part.max[2] = m(&t.fc1, part.max[2]);
                part.h.push(t.fc1);
            }
            part
        };
        let (a, b) = fit.split_at(fit.len() / 2);
        let parts = std::thread::scope(|s| {
            let ha = s.spawn(|| run(a));
            let hb = s.spawn(|| run(b));
            [ha.join().unwrap(), hb.join().unwrap()]
        });
        let max: [f32; 3] = std::array::from_fn(|k| parts[0].max[k].max(parts[1].max[k]));
        let h: Vec<&[f32; WIDE_HIDDEN]> = parts.iter().flat_map(|p| &p.h).collect();

        // Ridge regression of one-hot labels on [h, 1].
        const N: usize = WIDE_HIDDEN + 1;
        let mut g = vec![0f64; N * N];
        let mut hy = vec![[0f64; 10]; N];
        let mut row = [0f64; N];
        for (hi, &i) in h.iter().zip(&fit) {
            for (d, &v) in row.iter_mut().zip(hi.iter()) {
                *d = v as f64;
            }
            row[N - 1] = 1.0;
            for j in 0..N {
                if row[j] != 0.0 {
                    for k in j..N {
                        g[j * N + k] += row[j] * row[k];
                    }
                    hy[j][train.labels[i] as usize] += row[j];
                }
            }
        }
        let mean_diag = (0..N).map(|j| g[j * N + j]).sum::<f64>() / N as f64;
        for j in 0..N {
            g[j * N + j] += 1e-3 * mean_diag;
            for k in 0..j {
                g[j * N + k] = g[k * N + j];
            }
        }
        let w = solve_spd(&mut g, &hy);
        for (c, (row, bias)) in f.fc2_weight.iter_mut().zip(&mut f.fc2_bias).enumerate() {
            for (d, wj) in row.iter_mut().zip(&w) {
                *d = wj[c] as f32;
            }
            *bias = w[N - 1][c] as f32;
        }
        let (mut lo, mut hi) = (0f32, 0f32);
        for hi_row in &h {
            for c in 0..10 {
                let z =
                    (0..WIDE_HIDDEN).fold(f.fc2_bias[c], |z, j| z + hi_row[j] * f.fc2_weight[c][j]);
                lo = lo.min(z);
                hi = hi.max(z);
            }
        }

        use fmnist_train::quantize::{ActQuant, WideActRanges, quantize_wide_with_ranges};
        let ranges = WideActRanges {
            conv1: ActQuant::from_range(0.0, max[0]),
            conv2: ActQuant::from_range(0.0, max[1]),
            fc1: ActQuant::from_range(0.0, max[2]),
            fc2: ActQuant::from_range(lo, hi),
        };
        let int8 = quantize_wide_with_ranges(&f, &ranges).expect("quantizing the wide CNN");
        eprintln!(
            "built the wide CNN (random features, fitted readout) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        WideModel { folded: f, int8 }
    })
}

/// Solves `G·X = B` for a symmetric positive definite `G` (n×n, row-major, overwritten by its
/// Cholesky factor) and `B` with 10 columns.
#[allow(clippy::needless_range_loop)] // textbook index form: rows and columns of G and X
fn solve_spd(g: &mut [f64], b: &[[f64; 10]]) -> Vec<[f64; 10]> {
    let n = b.len();
    for j in 0..n {
        let d = g[j * n + j] - (0..j).map(|k| g[j * n + k] * g[j * n + k]).sum::<f64>();
        assert!(d > 0.0, "the normal equations are not positive definite");
        let d = d.sqrt();
        g[j * n + j] = d;
        for i in j + 1..n {
            let s = g[i * n + j] - (0..j).map(|k| g[i * n + k] * g[j * n + k]).sum::<f64>();
            g[i * n + j] = s / d;
        }
    }
    // L·y = b, then Lᵀ·x = y.
    let mut x = b.to_vec();
    for i in 0..n {
        for c in 0..10 {
            let s = (0..i).map(|k| g[i * n + k] * x[k][c]).sum::<f64>();
            x[i][c] = (x[i][c] - s) / g[i * n + i];
        }
    }
    for i in (0..n).rev() {
        for c in 0..10 {
            let s = (i + 1..n).map(|k| g[k * n + i] * x[k][c]).sum::<f64>();
            x[i][c] = (x[i][c] - s) / g[i * n + i];
        }
    }
    x
}

/// Pseudo-random BN-folded f32 LeNet weights (He-uniform per layer, not a trained model).
/// Every 97th weight is scaled into the subnormal range, so products and sums cross it: the
/// device must not flush subnormals to zero.
pub fn random_folded(seed: u32) -> Box<LeNetFoldedParams> {
    let mut r = Lcg(seed);
    let mut p: Box<LeNetFoldedParams> = bytemuck::zeroed_box();
    let mut fill = |xs: &mut [f32], fan_in: usize| {
        let a = (6.0 / fan_in as f32).sqrt();
        for (i, x) in xs.iter_mut().enumerate() {
            *x = r.uniform(a);
            if i % 97 == 13 {
                *x *= 1e-38;
            }
        }
    };
    fill(bytemuck::cast_slice_mut(&mut p.conv1_weight), 25);
    fill(&mut p.conv1_bias, 25);
    fill(bytemuck::cast_slice_mut(&mut p.conv2_weight), 150);
    fill(&mut p.conv2_bias, 150);
    fill(p.fc1_weight.as_flattened_mut(), 400);
    fill(&mut p.fc1_bias, 400);
    fill(p.fc2_weight.as_flattened_mut(), 120);
    fill(&mut p.fc2_bias, 120);
    fill(p.fc3_weight.as_flattened_mut(), 84);
    fill(&mut p.fc3_bias, 84);
    p
}

/// Section sizes of an ELF, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// `.vector_table` + `.text`.
    pub text: u64,
    /// `.rodata`.
    pub rodata: u64,
    /// `.data` (flash and RAM).
    pub data: u64,
    /// `.bss` + `.uninit`.
    pub bss: u64,
}

/// Section sizes, read with `llvm-size -A` (rustup's llvm-tools or a system LLVM) or
/// `arm-none-eabi-size -A`.
pub fn sizes(elf: &Path) -> Sizes {
    let out = size_tools()
        .into_iter()
        .find_map(|tool| {
            Command::new(&tool)
                .arg("-A")
                .arg(elf)
                .output()
                .ok()
                .filter(|o| o.status.success())
        })
        .expect(
            "no size tool: `rustup component add llvm-tools` or \
             `apt-get install binutils-arm-none-eabi`",
        );
    let text = String::from_utf8(out.stdout).unwrap();
    let section = |name: &str| -> u64 {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next()? == name).then(|| f.next()?.parse::<u64>().ok())?
            })
            .sum()
    };
    Sizes {
        text: section(".vector_table") + section(".text"),
        rodata: section(".rodata"),
        data: section(".data"),
        bss: section(".bss") + section(".uninit"),
    }
}

/// `llvm-objdump -d -C` of an ELF (rustup's llvm-tools, or one on the PATH).
pub fn disassemble(elf: &Path) -> String {
    let mut tools: Vec<PathBuf> = size_tools()
        .into_iter()
        .filter_map(|t| {
            let name = t
                .file_name()?
                .to_str()?
                .replace("llvm-size", "llvm-objdump");
            (name.ends_with("llvm-objdump")).then(|| t.with_file_name(name))
        })
        .collect();
    tools.push("arm-none-eabi-objdump".into());
    for tool in tools {
        let Ok(out) = Command::new(&tool)
            .args(["-d", "--no-show-raw-insn", "-C"])
            .arg(elf)
            .output()
        else {
            continue;
        };
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
    }
    panic!(
        "no disassembler: `rustup component add llvm-tools` (or apt-get install binutils-arm-none-eabi)"
    );
}

/// The functions reachable through direct calls and branches from every function whose name
/// contains `entry`, keyed by name, from a disassembly; plus the functions among them that make
/// an indirect call (`blx rN`, `bx` to a register other than `lr`), which this walk cannot follow.
pub fn reachable_functions(disassembly: &str, entry: &str) -> (Vec<String>, Vec<String>) {
    use std::collections::{BTreeMap, BTreeSet};
    let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut indirect: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in disassembly.lines() {
        let t = line.trim();
        // "000051ac <fmnist_core::quant::lenet::LeNetQ::forward::h...>:"
        if let Some(name) = t
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .map(|(_, n)| n)
        {
            current = Some(name.to_string());
            calls.entry(name.to_string()).or_default();
            continue;
        }
        let Some(cur) = &current else { continue };
        let mut words = t.split_whitespace().skip(1);
        let Some(op) = words.next() else { continue };
        let operand = words.next().unwrap_or("");
        let is_branch = op == "bl"
            || op == "blx"
            || op.starts_with('b')
                && !op.starts_with("bic")
                && !op.starts_with("bfc")
                && !op.starts_with("bfi")
                && !op.starts_with("bkpt");
        if !is_branch {
            continue;
        }
        if (op.starts_with("blx") || op.starts_with("bx")) && operand.starts_with('r') {
            indirect.insert(cur.clone());
            continue;
        }
        if let Some(target) = t
            .split_once('<')
            .and_then(|(_, r)| r.split(['>', '+']).next())
            && target != cur
        {
            calls.get_mut(cur).unwrap().insert(target.to_string());
        }
    }
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = calls
        .keys()
        .filter(|k| k.contains(entry))
        .cloned()
        .collect();
    assert!(
        !stack.is_empty(),
        "no function named like {entry} in the disassembly"
    );
    while let Some(f) = stack.pop() {
        if seen.insert(f.clone())
            && let Some(callees) = calls.get(&f)
        {
            stack.extend(callees.iter().cloned());
        }
    }
    let indirect = seen
        .iter()
        .filter(|f| indirect.contains(*f))
        .cloned()
        .collect();
    (seen.into_iter().collect(), indirect)
}

fn size_tools() -> Vec<PathBuf> {
    let mut tools = Vec::new();
    // rustup's llvm-tools: <sysroot>/lib/rustlib/<host>/bin/llvm-size
    if let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output() {
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Ok(entries) = std::fs::read_dir(sysroot.join("lib/rustlib")) {
            for e in entries.flatten() {
                let p = e.path().join("bin/llvm-size");
                if p.exists() {
                    tools.push(p);
                }
            }
        }
    }
    tools.push("llvm-size".into());
    tools.push("arm-none-eabi-size".into());
    tools
}

/// Parses the first `u32` after `key` in `line` (e.g. `"... layers 1234, ..."`).
pub fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
