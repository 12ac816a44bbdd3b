//! TensorBoard event files: the run's scalars (training loss and accuracy, learning rate, test
//! loss and accuracy, images/s) in the format `tensorboard --logdir` reads.
//!
//! An event file is a sequence of TFRecords, each framing one serialized `tensorflow.Event`
//! protobuf:
//!
//! ```text
//! u64 little-endian   length n of the data
//! u32 little-endian   masked CRC-32C of the 8 length bytes
//! n bytes             data (an Event)
//! u32 little-endian   masked CRC-32C of the data
//! ```
//!
//! with `masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8` (wrapping). The first event holds
//! `file_version = "brain.Event:2"`; each later one a wall time, a step and a `Summary` of
//! `simple_value` scalars. TensorBoard reads every file whose name contains `tfevents`.
//!
//! Written by hand (about a hundred lines with `prost` for the three messages): the Rust
//! TensorBoard writers on crates.io are unmaintained (tensorboard-rs: last release 2022, protobuf
//! 2, image and 14 MB of dependencies).
//!
//! One file per run folder, [`FILE_NAME`]. A resumed run keeps the events up to its checkpoint's
//! step and drops the rest (they are about to be trained again), so the curves continue without
//! duplicates, as the JSON log does.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crc::{CRC_32_ISCSI, Crc};
use prost::Message;

/// The event file's name in the run folder (TensorBoard picks up any name containing `tfevents`).
pub const FILE_NAME: &str = "events.out.tfevents.fmnist-train";

/// The scalar tags written, in TensorBoard's `group/name` form.
pub mod tags {
    /// Mini-batch loss of each training step.
    pub const TRAIN_LOSS: &str = "train/loss";
    /// Mini-batch accuracy of each training step (0..=1).
    pub const TRAIN_ACCURACY: &str = "train/accuracy";
    /// The learning rate of each training step.
    pub const LEARNING_RATE: &str = "train/learning_rate";
    /// Training throughput at each evaluation (images per second since the run started).
    pub const IMAGES_PER_SECOND: &str = "train/images_per_second";
    /// Test-set loss at each evaluation.
    pub const TEST_LOSS: &str = "test/loss";
    /// Test-set accuracy at each evaluation (0..=1).
    pub const TEST_ACCURACY: &str = "test/accuracy";
}

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
const FILE_VERSION: &str = "brain.Event:2";

/// `tensorflow.Event` (the fields this writer uses; tensorflow/core/util/event.proto).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The training step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event holds.
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// The file's first event: `brain.Event:2`.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// Scalars.
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary` (tensorflow/core/framework/summary.proto).
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// The scalars of one step.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorflow.Summary.Value` with its `simple_value` (a scalar).
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    /// The curve's name.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The scalar.
    #[prost(float, tag = "2")]
    pub simple_value: f32,
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let c = CRC32C.checksum(bytes);
    (c.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

/// One TFRecord around `data`.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// Why an event file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Reading the file failed.
    Io(io::Error),
    /// The bytes are not a sequence of well-formed records of events.
    Corrupt {
        /// Byte offset of the bad record.
        offset: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => e.fmt(f),
            ReadError::Corrupt { offset, why } => write!(f, "bad record at byte {offset}: {why}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// The events of event-file bytes. A torn last record (a crash while writing it) ends the list
/// without error, as TensorBoard treats it; anything else malformed is an error.
pub fn decode(bytes: &[u8]) -> Result<Vec<Event>, ReadError> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 12 {
            break; // torn header
        }
        let len_bytes = &rest[..8];
        let stored = u32::from_le_bytes(rest[8..12].try_into().unwrap());
        if masked_crc(len_bytes) != stored {
            return Err(ReadError::Corrupt {
                offset: at,
                why: "length CRC mismatch",
            });
        }
        let n = u64::from_le_bytes(len_bytes.try_into().unwrap());
        let Some(end) = usize::try_from(n).ok().and_then(|n| n.checked_add(16)) else {
            return Err(ReadError::Corrupt {
                offset: at,
                why: "length out of range",
            });
        };
        if rest.len() < end {
            break; // torn body
        }
        let data = &rest[12..end - 4];
        let stored = u32::from_le_bytes(rest[end - 4..end].try_into().unwrap());
        if masked_crc(data) != stored {
            return Err(ReadError::Corrupt {
                offset: at,
                why: "data CRC mismatch",
            });
        }
        events.push(Event::decode(data).map_err(|_| ReadError::Corrupt {
            offset: at,
            why: "not an Event protobuf",
        })?);
        at += end;
    }
    Ok(events)
}

/// The events of the file at `path`.
pub fn read(path: &Path) -> Result<Vec<Event>, ReadError> {
    decode(&std::fs::read(path).map_err(ReadError::Io)?)
}

/// The scalars of `events` as `(step, tag, value)`, in file order.
pub fn scalars(events: &[Event]) -> Vec<(u64, String, f32)> {
    events
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) => Some((e.step, s)),
            _ => None,
        })
        .flat_map(|(step, s)| {
            s.value
                .iter()
                .map(move |v| (step as u64, v.tag.clone(), v.simple_value))
        })
        .collect()
}

/// Appends events to a run folder's event file; every event reaches the file when it is written
/// (a crash loses at most the one being written, which readers skip).
#[derive(Debug)]
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// Starts `dir`'s event file: a new one for a new run (`resume_step` `None`), or for a resumed
    /// run the existing events up to and including `resume_step` (the rest are dropped, the file
    /// replaced atomically; a missing or unreadable old file starts afresh).
    pub fn start(dir: &Path, resume_step: Option<u64>, wall_time: f64) -> io::Result<EventWriter> {
        let path = dir.join(FILE_NAME);
        let kept = match resume_step {
            Some(step) => read(&path)
                .map(|events| {
                    events
                        .into_iter()
                        .filter(|e| matches!(e.what, Some(What::Summary(_))))
                        .filter(|e| u64::try_from(e.step).is_ok_and(|s| s <= step))
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let version = Event {
            wall_time,
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.into())),
        };
        let mut bytes = Vec::new();
        for e in std::iter::once(&version).chain(&kept) {
            bytes.extend_from_slice(&record(&e.encode_to_vec()));
        }
        fmnist_infer::atomic::write_atomic(&path, &bytes)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(EventWriter { file, path })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event of `values` at `step`. Non-finite values (a diverged step) are written as
    /// they are: TensorBoard shows NaN as a gap.
    pub fn scalars(&mut self, step: u64, wall_time: f64, values: &[(&str, f32)]) -> io::Result<()> {
        let event = Event {
            wall_time,
            step: step as i64,
            what: Some(What::Summary(Summary {
                value: values
                    .iter()
                    .map(|&(tag, simple_value)| Value {
                        tag: tag.into(),
                        simple_value,
                    })
                    .collect(),
            })),
        };
        self.file.write_all(&record(&event.encode_to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask() {
        // CRC-32C check value.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        // ((c >> 15) | (c << 17)) + 0xA282EAD8 of that value, worked out by hand.
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn first_record_is_the_file_version_event_byte_for_byte() {
        // The protobuf of Event{wall_time: 1.5, file_version: "brain.Event:2"}: field 1 (double)
        // = 09 + 8 bytes, field 3 (string) = 1a 0d + 13 bytes; step 0 is not written.
        let e = Event {
            wall_time: 1.5,
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.into())),
        };
        let mut want = vec![0x09];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x1a, 13]);
        want.extend_from_slice(b"brain.Event:2");
        assert_eq!(e.encode_to_vec(), want);
        let r = record(&want);
        assert_eq!(&r[..8], &(want.len() as u64).to_le_bytes());
        assert_eq!(r.len(), want.len() + 16);
        assert_eq!(decode(&r).unwrap(), vec![e]);
    }

    #[test]
    fn resume_keeps_events_up_to_the_step_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::start(dir.path(), None, 1.0).unwrap();
        for step in 1..=5 {
            w.scalars(step, 2.0, &[(tags::TRAIN_LOSS, step as f32)])
                .unwrap();
        }
        drop(w);
        let mut w = EventWriter::start(dir.path(), Some(3), 3.0).unwrap();
        w.scalars(
            4,
            4.0,
            &[(tags::TRAIN_LOSS, 40.0), (tags::TEST_ACCURACY, 0.5)],
        )
        .unwrap();
        let got = scalars(&read(w.path()).unwrap());
        let want: Vec<(u64, String, f32)> = vec![
            (1, tags::TRAIN_LOSS.into(), 1.0),
            (2, tags::TRAIN_LOSS.into(), 2.0),
            (3, tags::TRAIN_LOSS.into(), 3.0),
            (4, tags::TRAIN_LOSS.into(), 40.0),
            (4, tags::TEST_ACCURACY.into(), 0.5),
        ];
        assert_eq!(got, want);
        // A new run starts afresh.
        let w = EventWriter::start(dir.path(), None, 5.0).unwrap();
        assert!(scalars(&read(w.path()).unwrap()).is_empty());
    }

    #[test]
    fn torn_last_record_is_skipped_and_corruption_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::start(dir.path(), None, 1.0).unwrap();
        w.scalars(1, 2.0, &[(tags::TRAIN_LOSS, 1.0)]).unwrap();
        w.scalars(2, 2.0, &[(tags::TRAIN_LOSS, 2.0)]).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let torn = &bytes[..bytes.len() - 3];
        assert_eq!(scalars(&decode(torn).unwrap()).len(), 1);
        let mut bad = bytes.clone();
        let last = bad.len() - 6;
        bad[last] ^= 1;
        assert!(matches!(
            decode(&bad),
            Err(ReadError::Corrupt {
                why: "data CRC mismatch",
                ..
            })
        ));
    }
}
