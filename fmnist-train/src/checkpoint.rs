//! Checkpoints: a run's whole state, so it resumes bit-identically.
//!
//! ```text
//! offset size field
//! 0      4    magic "FMCK"
//! 4      2    format version (u16 LE, = 5; version 2 added augmentation, label smoothing
//!             and decoupled decay to the recipe, version 3 random erasing, version 4
//!             distillation, version 5 the wide CNN's conv algorithm; versions 2 to 4 are
//!             still read, as recipes without them and with the direct convolution)
//! 6      2    architecture (u16 LE, as in the model file: 1 = LeNet-BN, 2 = wide CNN)
//! 8      4    payload length n (u32 LE)
//! 12     n    postcard encoding of the network's payload (`TrainNet::Saved`: `TrainState` for
//!             LeNet-BN, `WideRun` for the wide CNN)
//! 12+n   4    CRC-32 (ISO-HDLC) of bytes 0 .. 12+n
//! ```
//! Written atomically (temp file, fsync, rename): a crash leaves the previous checkpoint intact.
//! Everything here is generic over the network ([`encode_run`], [`decode_run`]); the
//! LeNet-BN and wide-CNN wrappers at the end keep the older API.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use fmnist_core::arch::Arch;
use fmnist_core::network::Network;
use fmnist_core::tensors::{Rule, Tensors, check_flat};

use crate::shared::augment::Augment;
use crate::shared::config::Distill;
use crate::shared::config::TrainConfig;
use crate::shared::net::{Params, RunState, TrainNet, TrainNetFn};
use crate::shared::optim::Optim;

/// Magic bytes of a checkpoint.
pub const MAGIC: [u8; 4] = *b"FMCK";
/// Checkpoint format version.
pub const VERSION: u16 = 5;
/// The oldest version this build reads.
pub const OLDEST_VERSION: u16 = 2;
/// Largest payload accepted (a LeNet state is ~0.8 MB, a wide one ~20 MB).
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Why a checkpoint cannot be used.
#[derive(Debug)]
pub enum CheckpointError {
    /// Reading or writing failed.
    Io(PathBuf, std::io::Error),
    /// The bytes are not a usable checkpoint.
    Invalid(PathBuf, String),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            CheckpointError::Invalid(p, why) => write!(f, "{}: {why}", p.display()),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// Encodes a payload of network `N`.
pub fn encode_saved<N: TrainNet>(saved: &N::Saved) -> Vec<u8> {
    frame(
        N::Core::ARCH as u16,
        &postcard::to_allocvec(saved).expect("a checkpoint payload serializes"),
    )
}

/// Encodes a run of network `N`.
pub fn encode_run<N: TrainNet>(run: &RunState<N>) -> Vec<u8> {
    encode_saved::<N>(&N::save(run))
}

fn frame(arch: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&arch.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = fmnist_core::format::CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a checkpoint's frame (magic, version, architecture, length, CRC) and upgrades an
/// older payload to the current one: the network and the payload.
pub fn open(b: &[u8]) -> Result<(Arch, Cow<'_, [u8]>), String> {
    if b.len() < 16 {
        return Err(format!("not a checkpoint: {} bytes, too short", b.len()));
    }
    if b[..4] != MAGIC {
        return Err("not an fmnist checkpoint (bad magic; expected \"FMCK\")".into());
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(format!(
            "unsupported checkpoint version {version} (this build reads {OLDEST_VERSION} to {VERSION})"
        ));
    }
    let id = u16::from_le_bytes([b[6], b[7]]);
    let Some(arch) = Arch::from_u16(id) else {
        return Err(format!(
            "checkpoint of another architecture (id {id}); this build trains LeNet-BN (id 1) and the wide CNN (id 2)"
        ));
    };
    let n = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
    if n > MAX_PAYLOAD || b.len() != 16 + n {
        return Err(format!(
            "wrong length: header says {} bytes, file has {}",
            16 + n,
            b.len()
        ));
    }
    let stored = u32::from_le_bytes(b[12 + n..].try_into().expect("4 bytes"));
    let computed = fmnist_core::format::CRC32.checksum(&b[..12 + n]);
    if stored != computed {
        return Err(format!(
            "CRC mismatch: stored {stored:#010x}, computed {computed:#010x} (the file is corrupt)"
        ));
    }
    let payload = &b[12..12 + n];
    Ok((
        arch,
        match version {
            VERSION => Cow::Borrowed(payload),
            2 => Cow::Owned(old::upgrade::<old::AugmentV2, old::Absent>(payload)?),
            3 => Cow::Owned(old::upgrade::<Augment, old::Absent>(payload)?),
            // 4: the range check above leaves no other version.
            _ => Cow::Owned(old::upgrade::<Augment, Option<Distill>>(payload)?),
        },
    ))
}

/// The name of a network in messages.
fn name_of(arch: Arch) -> String {
    format!("{} (architecture {})", arch.name(), arch as u16)
}

/// Decodes and checks a checkpoint of network `N`; `Err` holds the reason.
pub fn decode_run<N: TrainNet>(b: &[u8]) -> Result<RunState<N>, String> {
    let (arch, payload) = open(b)?;
    if arch != N::Core::ARCH {
        return Err(format!(
            "checkpoint of the {}, not {}",
            name_of(arch),
            N::Core::ARCH.name()
        ));
    }
    let run = N::restore(whole(&payload)?)?;
    check_numbers(&run)?;
    Ok(run)
}

/// Refuses numbers no run produces: parameters that are not a model (NaN, ±inf, a negative
/// running variance: the check every reader of f32 parameters runs), optimizer state no update
/// makes (non-finite, or a negative Adam second moment), a step past the run's end, and a
/// training time that is not a number ≥ 0.
fn check_numbers<N: TrainNet>(run: &RunState<N>) -> Result<(), String> {
    let table = <Params<N> as Tensors>::TENSORS;
    check_flat(table, &run.params, Rule::Parameters).map_err(|e| format!("parameters: {e}"))?;
    run.optim.check(table)?;
    let (step, steps, seconds) = (run.step, run.config.steps, run.train_seconds);
    if step > steps {
        return Err(format!("at step {step}, past the run's {steps} steps"));
    }
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(format!(
            "training time {seconds} s is not a number of seconds ≥ 0"
        ));
    }
    Ok(())
}

/// The recipes of versions 2 to 4: version 5's without the conv algorithm (they were all
/// trained with the direct one), for versions 2 and 3 also without distillation, and for
/// version 2 also without random erasing.
mod old {
    use serde::Deserialize;

    use crate::shared::augment::Augment;
    use crate::shared::config::Distill;
    use crate::shared::config::{Conv, Model, Optimizer, Schedule, TrainConfig};

    /// Version 2's augmentation (no erasing).
    #[derive(Deserialize)]
    pub struct AugmentV2 {
        shift: u8,
        flip: bool,
        rotate_deg: f32,
        noise: f32,
    }

    impl From<AugmentV2> for Augment {
        fn from(a: AugmentV2) -> Self {
            Augment {
                shift: a.shift,
                flip: a.flip,
                rotate_deg: a.rotate_deg,
                noise: a.noise,
                erase: 0.0,
            }
        }
    }

    /// A field a version does not have: postcard encodes a unit struct as no bytes.
    #[derive(Deserialize)]
    pub struct Absent;

    impl From<Absent> for Option<Distill> {
        fn from(_: Absent) -> Self {
            None
        }
    }

    #[derive(Deserialize)]
    struct Recipe<A, D> {
        model: Model,
        batch: usize,
        steps: u64,
        optimizer: Optimizer,
        schedule: Schedule,
        checkpoint_every: u64,
        seed: u64,
        augment: A,
        label_smoothing: f32,
        distill: D,
    }

    /// The current payload of an older one whose augmentation is an `A` and whose distillation
    /// is a `D` ([`Absent`] before version 4). Both networks' states begin with the recipe, and
    /// postcard writes a struct as its fields in order, so the upgrade re-encodes that prefix
    /// (with the direct convolution, which every older run used) and keeps the rest of the
    /// bytes.
    pub fn upgrade<A, D>(payload: &[u8]) -> Result<Vec<u8>, String>
    where
        A: for<'de> Deserialize<'de> + Into<Augment>,
        D: for<'de> Deserialize<'de> + Into<Option<Distill>>,
    {
        let (old, rest): (Recipe<A, D>, &[u8]) = postcard::take_from_bytes(payload)
            .map_err(|e| format!("undecodable training state: {e}"))?;
        let config = TrainConfig {
            model: old.model,
            batch: old.batch,
            steps: old.steps,
            optimizer: old.optimizer,
            schedule: old.schedule,
            checkpoint_every: old.checkpoint_every,
            seed: old.seed,
            augment: old.augment.into(),
            label_smoothing: old.label_smoothing,
            distill: old.distill.into(),
            conv: Conv::Direct,
        };
        let mut out = postcard::to_allocvec(&config).expect("TrainConfig serializes");
        out.extend_from_slice(rest);
        Ok(out)
    }
}

/// Postcard-decodes exactly `payload`.
fn whole<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    let (value, rest): (T, &[u8]) = postcard::take_from_bytes(payload)
        .map_err(|e| format!("undecodable training state: {e}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "{} stray bytes after the training state",
            rest.len()
        ));
    }
    Ok(value)
}

/// Reads a checkpoint file's bytes (refusing a file too large to be one).
pub fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let meta = std::fs::metadata(path).map_err(|e| CheckpointError::Io(path.to_owned(), e))?;
    if meta.len() > (MAX_PAYLOAD + 16) as u64 {
        return Err(CheckpointError::Invalid(
            path.to_owned(),
            format!("{} bytes is too large for a checkpoint", meta.len()),
        ));
    }
    fmnist_infer::inputs::read(path).map_err(|e| CheckpointError::Io(path.to_owned(), e))
}

/// Reads and checks a checkpoint of any network: its recipe.
pub fn load_config(path: &Path) -> Result<TrainConfig, CheckpointError> {
    struct Config<'a>(&'a [u8]);
    impl TrainNetFn for Config<'_> {
        type Output = Result<TrainConfig, String>;
        fn call<N: TrainNet>(self) -> Self::Output {
            decode_run::<N>(self.0).map(|r| r.config)
        }
    }
    let b = read(path)?;
    let invalid = |why| CheckpointError::Invalid(path.to_owned(), why);
    let (arch, _) = open(&b).map_err(invalid)?;
    crate::registry::dispatch(arch, Config(&b)).map_err(invalid)
}

/// Reads and checks a checkpoint of network `N`.
pub fn load_run<N: TrainNet>(path: &Path) -> Result<RunState<N>, CheckpointError> {
    let b = read(path)?;
    decode_run::<N>(&b).map_err(|why| CheckpointError::Invalid(path.to_owned(), why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenet::TrainLeNet;
    use crate::lenet::train::TrainState;
    use crate::shared::config::{Conv, Model, Preset};
    use crate::shared::trainer::Trainer;
    use crate::wide::TrainWide;
    use crate::wide::train::WideRun;
    use fmnist_core::lenet::LeNetParams;
    use fmnist_infer::data::Dataset;

    const ARCH_LENET: u16 = Arch::LeNet as u16;
    const ARCH_WIDE: u16 = Arch::Wide as u16;

    fn encode(s: &TrainState) -> Vec<u8> {
        encode_saved::<TrainLeNet>(s)
    }

    fn decode(b: &[u8]) -> Result<TrainState, String> {
        decode_run::<TrainLeNet>(b).map(|r| TrainLeNet::save(&r))
    }

    fn decode_wide(b: &[u8]) -> Result<WideRun, String> {
        decode_run::<TrainWide>(b).map(|r| TrainWide::save(&r))
    }

    fn state() -> TrainState {
        let data = Dataset {
            images: vec![[7; 784]; 10],
            labels: (0..10).collect(),
        };
        let mut config = Preset::Original.config_for(Model::Lenet, 10, 3);
        config.batch = 8; // a batch fits its training set
        TrainLeNet::save(
            &Trainer::<TrainLeNet>::new(config, &data, 1)
                .unwrap()
                .state(),
        )
    }

    #[test]
    fn round_trips_exactly() {
        let s = state();
        assert!(decode(&encode(&s)).unwrap() == s);
    }

    /// A file of an older `version` of architecture `arch`: the same frame around `payload`.
    fn old_file(arch: u16, version: u16, payload: &[u8]) -> Vec<u8> {
        let mut old = frame(arch, payload);
        old[4..6].copy_from_slice(&version.to_le_bytes());
        let crc = fmnist_core::format::CRC32.checksum(&old[..old.len() - 4]);
        let at = old.len() - 4;
        old[at..].copy_from_slice(&crc.to_le_bytes());
        old
    }

    #[test]
    fn reads_versions_2_to_4_as_recipes_without_the_newer_fields() {
        let s = state();
        assert_eq!(
            (s.config.augment.erase, s.config.distill, s.config.conv),
            (0.0, None, Conv::Direct)
        );
        let cfg = postcard::to_allocvec(&s.config).unwrap();
        // The recipe ends with erase (f32, 4 bytes), label smoothing (f32, 4 bytes), distill
        // (`None`, 1 byte) and conv (`Direct`, 1 byte). Version 4 lacks conv; version 3 also
        // distill; version 2 also erase.
        let mut payload = postcard::to_allocvec(&s).unwrap();
        assert_eq!(payload[cfg.len() - 2..cfg.len()], [0, 0]);
        payload.remove(cfg.len() - 1);
        assert!(decode(&old_file(ARCH_LENET, 4, &payload)).unwrap() == s);
        payload.remove(cfg.len() - 2);
        assert!(decode(&old_file(ARCH_LENET, 3, &payload)).unwrap() == s);
        payload.drain(cfg.len() - 10..cfg.len() - 6);
        let v2 = old_file(ARCH_LENET, 2, &payload);
        assert!(decode(&v2).unwrap() == s);
        // A version-3 file cut short inside its recipe is refused, not misread.
        assert!(
            decode(&old_file(ARCH_LENET, 3, &payload[..cfg.len() - 7]))
                .unwrap_err()
                .contains("undecodable")
        );
        // Version 1 is still refused.
        assert!(
            decode(&old_file(ARCH_LENET, 1, &payload))
                .unwrap_err()
                .contains("version 1 (this build reads 2 to 5)")
        );
    }

    #[test]
    fn a_version_4_wide_run_resumes_with_the_direct_conv() {
        let data = Dataset {
            images: (0..10u8).map(|k| [k * 20; 784]).collect(),
            labels: (0..10).collect(),
        };
        let mut config = Preset::Fast.config_for(Model::Wide, data.len(), 3);
        config.batch = 4;
        config.distill = Some(crate::shared::config::Distill {
            alpha: 0.7,
            temperature: 2.0,
            teachers: 2,
            fingerprint: 0x0123_4567_89ab_cdef,
        });
        assert_eq!(config.conv, Conv::Winograd);
        let run = TrainWide::save(&Trainer::<TrainWide>::new(config, &data, 1).unwrap().state());
        let state = run.state.clone();
        let new = decode_wide(&encode_saved::<TrainWide>(&run)).unwrap();
        assert_eq!((new.config, &new.state), (config, &state));
        // Version 4 is the same payload without the recipe's last byte (conv `Winograd` = 1).
        let cfg = postcard::to_allocvec(&config).unwrap();
        let mut payload = postcard::to_allocvec(&run).unwrap();
        assert_eq!(payload[cfg.len() - 1], 1);
        payload.remove(cfg.len() - 1);
        let old = decode_wide(&old_file(ARCH_WIDE, 4, &payload)).unwrap();
        assert_eq!(
            old.config,
            TrainConfig {
                conv: Conv::Direct,
                ..config
            }
        );
        assert!(old.state == run.state);
        assert_eq!(old.config.check(), Ok(()));
    }

    #[test]
    fn every_corruption_is_reported() {
        let good = encode(&state());
        let mut b = good.clone();
        b[0] = b'X';
        assert!(decode(&b).unwrap_err().contains("bad magic"));
        let mut b = good.clone();
        b[4] = 9;
        assert!(
            decode(&b)
                .unwrap_err()
                .contains("unsupported checkpoint version 9")
        );
        let mut b = good.clone();
        b[6] = 7;
        assert!(decode(&b).unwrap_err().contains("another architecture"));
        let mut b = good.clone();
        b.truncate(b.len() - 1);
        assert!(decode(&b).unwrap_err().contains("wrong length"));
        let mut b = good.clone();
        let mid = b.len() / 2;
        b[mid] ^= 1;
        assert!(decode(&b).unwrap_err().contains("CRC mismatch"));
        assert!(decode(&good[..10]).unwrap_err().contains("too short"));
    }

    /// Intact framing and CRC around numbers no run produces: each is refused by name.
    #[test]
    fn nonsense_numbers_are_refused() {
        const FC1: usize = std::mem::offset_of!(LeNetParams, fc1_weight) / 4;
        const VAR2: usize = std::mem::offset_of!(LeNetParams, bn2) / 4 + 3 * 16;
        type Edit = fn(&mut TrainState);
        let cases: [(Edit, &str); 6] = [
            (
                |s| s.params[FC1 + 7] = f32::NAN,
                "parameters: tensor `fc1.weight` holds a non-finite value at flat index 7",
            ),
            (
                |s| s.params[VAR2 + 1] = -1.0,
                "parameters: tensor `bn2.running_var` holds a negative variance at flat index 1",
            ),
            (
                |s| s.momentum[0] = f32::INFINITY,
                "momentum: tensor `conv1.weight` holds a non-finite value at flat index 0",
            ),
            (
                |s| s.params.truncate(10),
                "parameters: 10 values where the layout has 61794",
            ),
            (|s| s.step = s.config.steps + 1, "past the run's"),
            (
                |s| s.train_seconds = -3.0,
                "training time -3 s is not a number of seconds ≥ 0",
            ),
        ];
        for (edit, want) in cases {
            let mut s = state();
            edit(&mut s);
            let e = decode(&encode(&s)).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let mut s = state();
        s.train_seconds = f64::NAN;
        assert!(
            decode(&encode(&s))
                .unwrap_err()
                .contains("training time NaN")
        );
        // A negative momentum is an ordinary value.
        let mut s = state();
        s.momentum[5] = -0.5;
        assert!(decode(&encode(&s)).is_ok());
    }
}
