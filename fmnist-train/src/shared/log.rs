//! One line of the training log (`train-log.jsonl`): the type the trainer writes and every reader
//! (`plot`, the run-folder check, the log truncation on resume) parses.
//!
//! A line is a JSON object: a step record
//! `{"time":…,"step":…,"total":…,"loss":…,"accuracy":…,"lr":…}` or an evaluation record
//! `{"time":…,"step":…,"total":…,"test_accuracy":…,"test_loss":…,"checkpoint":…}`. Losses and
//! accuracies are written with 6 decimals, the learning rate as `{:.6e}`, a non-finite value
//! (a diverged run) as `null`, which reads back as NaN. `time`, `total`, `lr` and `checkpoint`
//! may be missing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

/// One line of the training log.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "Line")]
pub struct LogRecord {
    /// When it was written (`YYYY-MM-DD HH:MM:SS.mmm`, UTC).
    pub time: Option<String>,
    /// Optimizer steps done (1-based).
    pub step: u64,
    /// Planned steps of the run.
    pub total: Option<u64>,
    /// What was measured.
    pub kind: RecordKind,
}

/// What a log line measured.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordKind {
    /// One training step (one mini-batch).
    Step {
        /// Mini-batch loss; NaN for `null` (a diverged step).
        loss: f64,
        /// Mini-batch accuracy, 0..=1; NaN for `null`.
        accuracy: f64,
        /// The learning rate used.
        lr: Option<f32>,
    },
    /// An evaluation on the test set (written with each checkpoint).
    Eval {
        /// Test accuracy, 0..=1; NaN for `null`.
        test_accuracy: f64,
        /// Test loss; NaN for `null`.
        test_loss: f64,
        /// The checkpoint written at this step.
        checkpoint: Option<PathBuf>,
    },
}

/// Every field a line may have, as read (flat, without `flatten`/`untagged`, which do not read
/// numbers under serde_json's `arbitrary_precision`, on in this workspace). A number field is
/// `None` when missing, NaN when `null`.
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    time: Option<String>,
    step: u64,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    loss: Option<f64>,
    #[serde(default, deserialize_with = "nullable")]
    accuracy: Option<f64>,
    #[serde(default)]
    lr: Option<f32>,
    #[serde(default, deserialize_with = "nullable")]
    test_accuracy: Option<f64>,
    #[serde(default, deserialize_with = "nullable")]
    test_loss: Option<f64>,
    #[serde(default)]
    checkpoint: Option<PathBuf>,
}

impl TryFrom<Line> for LogRecord {
    type Error = &'static str;
    fn try_from(l: Line) -> Result<Self, Self::Error> {
        let kind = match (l.loss, l.accuracy, l.test_accuracy, l.test_loss) {
            (Some(loss), Some(accuracy), _, _) => RecordKind::Step {
                loss,
                accuracy,
                lr: l.lr,
            },
            (_, _, Some(test_accuracy), Some(test_loss)) => RecordKind::Eval {
                test_accuracy,
                test_loss,
                checkpoint: l.checkpoint,
            },
            _ => return Err("neither a step record nor an evaluation record"),
        };
        Ok(LogRecord {
            time: l.time,
            step: l.step,
            total: l.total,
            kind,
        })
    }
}

/// Why a line is not a log record.
#[derive(Debug)]
pub enum LogLineError {
    /// Not JSON.
    NotJson(serde_json::Error),
    /// JSON without a `step` (a non-negative integer).
    NoStep,
    /// A `step` but neither a step record's nor an evaluation record's numbers.
    Neither,
}

/// A present number, or NaN for a present `null`.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Some(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN)))
}

/// `x` with 6 decimals, or `null` when it is not finite (a diverged run's loss): the log stays
/// valid JSON.
fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6}")
    } else {
        "null".into()
    }
}

impl LogRecord {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<LogRecord, LogLineError> {
        /// A `step`.
        #[derive(Deserialize)]
        struct Stepped {
            #[allow(dead_code)]
            step: u64,
        }
        serde_json::from_str(line).or_else(|_| {
            serde_json::from_str::<IgnoredAny>(line).map_err(LogLineError::NotJson)?;
            // An object (not an array, which serde reads into a struct by position) with a step.
            serde_json::from_str::<BTreeMap<String, IgnoredAny>>(line)
                .ok()
                .and_then(|_| serde_json::from_str::<Stepped>(line).ok())
                .ok_or(LogLineError::NoStep)?;
            Err(LogLineError::Neither)
        })
    }

    /// The line as the trainer writes it (without the newline).
    pub fn to_line(&self) -> String {
        let time = self.time.as_deref().map_or_else(String::new, |t| {
            format!(
                r#""time":{},"#,
                serde_json::to_string(t).expect("text serializes")
            )
        });
        let total = self
            .total
            .map_or_else(String::new, |t| format!(r#","total":{t}"#));
        let step = self.step;
        let kind = match &self.kind {
            RecordKind::Step { loss, accuracy, lr } => {
                let lr = lr.map_or_else(String::new, |lr| format!(r#","lr":{lr:.6e}"#));
                format!(
                    r#""loss":{},"accuracy":{accuracy:.6}{lr}"#,
                    json_number(*loss)
                )
            }
            RecordKind::Eval {
                test_accuracy,
                test_loss,
                checkpoint,
            } => {
                let checkpoint = checkpoint.as_ref().map_or_else(String::new, |p| {
                    format!(
                        r#","checkpoint":{}"#,
                        serde_json::to_string(p).expect("path serializes")
                    )
                });
                format!(
                    r#""test_accuracy":{test_accuracy:.6},"test_loss":{}{checkpoint}"#,
                    json_number(*test_loss)
                )
            }
        };
        format!("{{{time}\"step\":{step}{total},{kind}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_losses_are_logged_as_null() {
        assert_eq!(json_number(0.25), "0.250000");
        assert_eq!(json_number(f64::NAN), "null");
        assert_eq!(json_number(f64::INFINITY), "null");
    }

    #[test]
    fn writes_the_lines_the_trainer_always_wrote() {
        let step = LogRecord {
            time: Some("2026-01-02 03:04:05.678".into()),
            step: 7,
            total: Some(60),
            kind: RecordKind::Step {
                loss: 2.7613958,
                accuracy: 0.125,
                lr: Some(0.01),
            },
        };
        assert_eq!(
            step.to_line(),
            r#"{"time":"2026-01-02 03:04:05.678","step":7,"total":60,"loss":2.761396,"accuracy":0.125000,"lr":1.000000e-2}"#
        );
        let eval = LogRecord {
            time: Some("t".into()),
            step: 20,
            total: Some(60),
            kind: RecordKind::Eval {
                test_accuracy: 0.5,
                test_loss: f64::INFINITY,
                checkpoint: Some("d/checkpoint-0000020.fmck".into()),
            },
        };
        assert_eq!(
            eval.to_line(),
            r#"{"time":"t","step":20,"total":60,"test_accuracy":0.500000,"test_loss":null,"checkpoint":"d/checkpoint-0000020.fmck"}"#
        );
        for r in [step, eval] {
            let back = LogRecord::parse(&r.to_line()).unwrap();
            assert_eq!(back.to_line(), r.to_line());
        }
    }

    #[test]
    fn reads_nulls_as_nan_and_tells_bad_lines_apart() {
        let r = LogRecord::parse(r#"{"step":3,"loss":null,"accuracy":0.2}"#).unwrap();
        assert_eq!((r.step, r.total, r.time), (3, None, None));
        let RecordKind::Step { loss, accuracy, lr } = r.kind else {
            panic!("not a step")
        };
        assert!(loss.is_nan() && accuracy == 0.2 && lr.is_none());
        assert!(matches!(
            LogRecord::parse(r#"{"step": 3, "loss": "#),
            Err(LogLineError::NotJson(_))
        ));
        for no_step in [r#"{"loss":1,"accuracy":0.2}"#, "[3]", r#"{"step":-1}"#] {
            assert!(matches!(
                LogRecord::parse(no_step),
                Err(LogLineError::NoStep)
            ));
        }
        for neither in [r#"{"step":1}"#, r#"{"step":1,"loss":"x","accuracy":0.2}"#] {
            assert!(matches!(
                LogRecord::parse(neither),
                Err(LogLineError::Neither)
            ));
        }
    }
}
