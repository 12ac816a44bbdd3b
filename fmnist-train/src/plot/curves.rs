//! The training curves (`fmnist-train plot`).
//!
//! `plot` reads the JSON-lines log that [`crate::run`] writes and draws two figures:
//!
//! * `loss.png` — cross-entropy loss against the step, **log scale**: every step's mini-batch
//!   loss (light), its centred moving average over [`smoothing_window`] steps, the mean training
//!   loss over each evaluation interval (the steps since the previous evaluation, usually an
//!   epoch) and the test loss at each evaluation, as points;
//! * `accuracy.png` — the same for accuracy, linear scale. The y axis starts 0.1 below the
//!   lowest evaluation-interval mean or test accuracy (rounded down to a tenth), so the
//!   early steps of a long run may fall below it.

use std::io;
use std::path::{Path, PathBuf};

use fmnist_infer::canvas::{Area, Canvas, DrawError, HAlign, Label, VAlign, draw_err, text_width};
use plotters::prelude::*;

use super::PlotError;
use crate::shared::log::{LogLineError, LogRecord, RecordKind};

/// One training step of the log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepRecord {
    /// Step number (1-based).
    pub step: u64,
    /// Mini-batch loss; NaN where the log has `null` (a diverged step): a gap in the curves.
    pub loss: f64,
    /// Mini-batch accuracy, 0..=1.
    pub accuracy: f64,
}

/// One evaluation on the test set (written with each checkpoint).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalRecord {
    /// Step after which it was evaluated.
    pub step: u64,
    /// Test accuracy, 0..=1.
    pub test_accuracy: f64,
    /// Test loss; NaN where the log has `null`: no point.
    pub test_loss: f64,
}

/// A parsed training log.
#[derive(Clone, Debug, Default)]
pub struct TrainLog {
    /// Step records in step order.
    pub steps: Vec<StepRecord>,
    /// Evaluation records in step order.
    pub evals: Vec<EvalRecord>,
    /// Planned steps of the run (`total`, else the last step).
    pub total: u64,
}

/// Parses a training log's text (`file` names it in errors).
///
/// Every line must be a step record (`step`, `loss`, `accuracy`) or an evaluation record
/// (`step`, `test_accuracy`, `test_loss`), each value a number or `null` (kept as NaN, drawn as a
/// gap); blank lines are skipped, and so is an unfinished last
/// line (no newline yet: the log of a run still in progress). Anything else is an error naming
/// the file and the line.
pub fn parse_log(file: &Path, text: &str) -> Result<TrainLog, String> {
    let mut log = TrainLog::default();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let unfinished = i + 1 == lines.len();
        let bad = |why: &str| format!("{}: line {}: {why}", file.display(), i + 1);
        let r = match LogRecord::parse(line) {
            Ok(r) => r,
            Err(LogLineError::NotJson(_) | LogLineError::NoStep) if unfinished => continue,
            Err(LogLineError::NotJson(e)) => return Err(bad(&format!("not a JSON object ({e})"))),
            Err(LogLineError::NoStep) => {
                return Err(bad("not a training-log record (no \"step\")"));
            }
            Err(LogLineError::Neither) => {
                return Err(bad(
                    "neither a step record (loss, accuracy) nor an evaluation record (test_accuracy, test_loss)",
                ));
            }
        };
        if let Some(t) = r.total {
            log.total = log.total.max(t);
        }
        let step = r.step;
        match r.kind {
            RecordKind::Step { loss, accuracy, .. } => log.steps.push(StepRecord {
                step,
                loss,
                accuracy,
            }),
            RecordKind::Eval {
                test_accuracy,
                test_loss,
                ..
            } => log.evals.push(EvalRecord {
                step,
                test_accuracy,
                test_loss,
            }),
        }
    }
    if log.steps.is_empty() {
        return Err(format!(
            "{}: no training steps in the log (expected JSON lines with \"step\", \"loss\" and \"accuracy\")",
            file.display()
        ));
    }
    log.steps.sort_by_key(|s| s.step);
    log.evals.sort_by_key(|e| e.step);
    let last = log.steps.last().map_or(0, |s| s.step);
    log.total = log.total.max(last);
    Ok(log)
}

/// Reads and parses a training log file.
pub fn read_log(file: &Path) -> Result<TrainLog, PlotError> {
    let bytes = fmnist_infer::inputs::read(file)
        .map_err(|e| PlotError::Log(format!("{}: cannot read the log: {e}", file.display())))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        PlotError::Log(format!(
            "{}: not a training log (not UTF-8 text)",
            file.display()
        ))
    })?;
    parse_log(file, &text).map_err(PlotError::Log)
}

/// Moving-average window for `n` step records: 1 % of the steps, at least 1, made odd so the
/// average is centred.
pub fn smoothing_window(n: usize) -> usize {
    (n / 100).max(1) | 1
}

/// Centred moving average of `values` over `window` points (fewer at the ends). Non-finite
/// values (gaps) are left out of the averages and stay gaps.
pub fn moving_average(values: &[f64], window: usize) -> Vec<f64> {
    let half = window / 2;
    // Prefix sums of the finite values and of their count.
    let mut prefix = Vec::with_capacity(values.len() + 1);
    prefix.push((0.0, 0usize));
    for v in values {
        let (sum, n) = prefix.last().copied().unwrap_or((0.0, 0));
        prefix.push(if v.is_finite() {
            (sum + v, n + 1)
        } else {
            (sum, n)
        });
    }
    (0..values.len())
        .map(|i| {
            if !values[i].is_finite() {
                return f64::NAN;
            }
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(values.len());
            (prefix[hi].0 - prefix[lo].0) / (prefix[hi].1 - prefix[lo].1) as f64
        })
        .collect()
}

/// Mean training (loss, accuracy) over the steps of each evaluation interval (after the previous
/// evaluation, up to and including this one), as (step, loss, accuracy); intervals without step
/// records are left out, and a mean over an interval with a gap (NaN) is NaN, no point.
pub fn interval_means(log: &TrainLog) -> Vec<(u64, f64, f64)> {
    let mut out = Vec::new();
    let mut prev = 0;
    for e in &log.evals {
        let in_interval: Vec<&StepRecord> = log
            .steps
            .iter()
            .filter(|s| s.step > prev && s.step <= e.step)
            .collect();
        if !in_interval.is_empty() {
            let n = in_interval.len() as f64;
            out.push((
                e.step,
                in_interval.iter().map(|s| s.loss).sum::<f64>() / n,
                in_interval.iter().map(|s| s.accuracy).sum::<f64>() / n,
            ));
        }
        prev = e.step;
    }
    out
}

/// Size of the `loss.png` and `accuracy.png` figures.
pub const CURVE_SIZE: (u32, u32) = (1000, 600);

const RAW: RGBColor = RGBColor(31, 119, 180);
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const TEST: RGBColor = RGBColor(214, 39, 40);

/// Which of the two training figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Cross-entropy loss, log scale.
    Loss,
    /// Accuracy, linear scale.
    Accuracy,
}

struct Series {
    raw: Vec<(f64, f64)>,
    smooth: Vec<(f64, f64)>,
    train: Vec<(f64, f64)>,
    test: Vec<(f64, f64)>,
}

fn series(log: &TrainLog, metric: Metric) -> Series {
    let pick = |s: &StepRecord| match metric {
        Metric::Loss => s.loss,
        Metric::Accuracy => s.accuracy,
    };
    let xs: Vec<f64> = log.steps.iter().map(|s| s.step as f64).collect();
    let ys: Vec<f64> = log.steps.iter().map(pick).collect();
    let smooth = moving_average(&ys, smoothing_window(ys.len()));
    Series {
        raw: xs.iter().copied().zip(ys.iter().copied()).collect(),
        smooth: xs.iter().copied().zip(smooth).collect(),
        train: interval_means(log)
            .into_iter()
            .map(|(s, l, a)| {
                (
                    s as f64,
                    match metric {
                        Metric::Loss => l,
                        Metric::Accuracy => a,
                    },
                )
            })
            .collect(),
        test: log
            .evals
            .iter()
            .map(|e| {
                (
                    e.step as f64,
                    match metric {
                        Metric::Loss => e.test_loss,
                        Metric::Accuracy => e.test_accuracy,
                    },
                )
            })
            .collect(),
    }
}

/// Keeps the points inside `lo..=hi`, split into runs of consecutive points, so a line never
/// leaves the plotting area.
fn runs_inside(points: &[(f64, f64)], lo: f64, hi: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &(x, y) in points {
        if (lo..=hi).contains(&y) {
            out.last_mut().expect("never empty").push((x, y));
        } else if !out.last().expect("never empty").is_empty() {
            out.push(Vec::new());
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// A "nice" tick spacing (1, 2 or 5 × 10^k) giving about `target` intervals over `span`.
pub fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|v| *v >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
}

/// Ticks of a log axis over `lo..=hi`: 1, 2 and 5 × 10^k, with their labels.
fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    for k in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(k);
            if (lo..=hi).contains(&v) {
                out.push((v, format!("{:.*}", (-k).max(0) as usize, v)));
            }
        }
    }
    out
}

/// Ticks of a linear axis from `lo` to `hi`, `step` apart, labelled by `fmt`.
fn linear_ticks(lo: f64, hi: f64, step: f64, fmt: impl Fn(f64) -> String) -> Vec<(f64, String)> {
    let first = (lo / step - 1e-9).ceil() as i64;
    (first..)
        .map(|i| i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .map(|v| (v, fmt(v)))
        .collect()
}

/// A legend entry's marker.
#[derive(Clone, Copy, Debug)]
enum Marker {
    Line(RGBAColor, u32),
    Square(RGBColor),
    Dot(RGBColor),
}

/// Draws a framed legend with its top-right (`upper`) or bottom-right corner at `corner`.
fn legend(
    root: &Area<'_>,
    labels: &mut Vec<Label>,
    entries: &[(Marker, String)],
    corner: (i32, i32),
    upper: bool,
) -> Result<(), DrawError> {
    const SIZE: f32 = 15.0;
    const ROW: i32 = 22;
    let text_w = entries
        .iter()
        .map(|(_, t)| text_width(t, SIZE).ceil() as i32)
        .max()
        .unwrap_or(0);
    let (w, h) = (text_w + 52, ROW * entries.len() as i32 + 12);
    let (x0, y0) = (corner.0 - w, if upper { corner.1 } else { corner.1 - h });
    root.draw(&Rectangle::new(
        [(x0, y0), (x0 + w, y0 + h)],
        WHITE.mix(0.92).filled(),
    ))
    .map_err(draw_err)?;
    root.draw(&Rectangle::new(
        [(x0, y0), (x0 + w, y0 + h)],
        BLACK.mix(0.4),
    ))
    .map_err(draw_err)?;
    for (i, (marker, text)) in entries.iter().enumerate() {
        let y = y0 + 6 + ROW * i as i32 + ROW / 2;
        let x = x0 + 10;
        match *marker {
            Marker::Line(c, width) => root
                .draw(&PathElement::new(
                    vec![(x, y), (x + 28, y)],
                    c.stroke_width(width),
                ))
                .map_err(draw_err)?,
            Marker::Square(c) => root
                .draw(&Rectangle::new(
                    [(x + 9, y - 5), (x + 19, y + 5)],
                    c.filled(),
                ))
                .map_err(draw_err)?,
            Marker::Dot(c) => root
                .draw(&Circle::new((x + 14, y), 5, c.filled()))
                .map_err(draw_err)?,
        }
        labels.push(Label::new(
            text.clone(),
            (x + 38, y),
            SIZE,
            (HAlign::Left, VAlign::Center),
        ));
    }
    Ok(())
}

/// Plot-area margins of the training figures: top, right, bottom, left.
const CURVE_MARGINS: (i32, i32, i32, i32) = (56, 24, 64, 88);

/// Draws one training figure into a canvas of [`CURVE_SIZE`].
pub fn render_curves(log: &TrainLog, metric: Metric, title: &str) -> Result<Canvas, DrawError> {
    let s = series(log, metric);
    let (w, h) = (CURVE_SIZE.0 as i32, CURVE_SIZE.1 as i32);
    let (mt, mr, mb, ml) = CURVE_MARGINS;
    let x_max = log.total.max(1) as f64;
    let x_step = nice_step(x_max, 8.0).max(1.0);
    let x_ticks = linear_ticks(0.0, x_max, x_step, |v| format!("{v:.0}"));
    let what = match metric {
        Metric::Loss => "loss",
        Metric::Accuracy => "accuracy",
    };
    let mut canvas = Canvas::new(CURVE_SIZE.0, CURVE_SIZE.1);
    canvas.draw(|root, labels| {
        root.fill(&WHITE).map_err(draw_err)?;
        labels.push(Label::new(
            title,
            (w / 2, mt / 2),
            22.0,
            (HAlign::Center, VAlign::Center),
        ));
        labels.push(Label::new(
            "step",
            (ml + (w - ml - mr) / 2, h - 18),
            17.0,
            (HAlign::Center, VAlign::Center),
        ));
        let area = root.margin(mt, mb, ml, mr);
        let (lo, hi, y_ticks, y_title) = match metric {
            Metric::Loss => {
                let positive = || {
                    s.raw
                        .iter()
                        .chain(&s.train)
                        .chain(&s.test)
                        .map(|p| p.1)
                        .filter(|y| *y > 0.0)
                };
                let lo = positive().fold(f64::INFINITY, f64::min).min(1.0) * 0.9;
                let hi = positive().fold(0.0, f64::max).max(lo * 4.0) * 1.1;
                (lo, hi, log_ticks(lo, hi), "loss (cross-entropy, log scale)")
            }
            Metric::Accuracy => {
                let lowest = s
                    .train
                    .iter()
                    .chain(&s.test)
                    .map(|p| p.1)
                    .fold(1.0, f64::min);
                let lo = ((lowest - 0.1) * 10.0).floor().max(0.0) / 10.0;
                let step = nice_step(1.0 - lo, 8.0).max(0.01);
                let ticks = linear_ticks(lo, 1.0, step, |v| format!("{:.0} %", 100.0 * v));
                (lo, 1.0, ticks, "accuracy")
            }
        };
        labels.push(
            Label::new(
                y_title,
                (20, mt + (h - mt - mb) / 2),
                17.0,
                (HAlign::Center, VAlign::Center),
            )
            .vertical(),
        );
        let grid = BLACK.mix(0.12);
        let (left, right, top, bottom) = (ml, w - mr, mt, h - mb);
        let mut ticks = |x_of: &dyn Fn(f64) -> i32, y_of: &dyn Fn(f64) -> i32| {
            let mut grid_lines = Vec::new();
            for (v, t) in &x_ticks {
                let x = x_of(*v);
                grid_lines.push(vec![(x, top), (x, bottom)]);
                grid_lines.push(vec![(x, bottom), (x, bottom + 5)]);
                labels.push(Label::new(
                    t.clone(),
                    (x, bottom + 8),
                    14.0,
                    (HAlign::Center, VAlign::Top),
                ));
            }
            for (v, t) in &y_ticks {
                let y = y_of(*v);
                grid_lines.push(vec![(left, y), (right, y)]);
                grid_lines.push(vec![(left - 5, y), (left, y)]);
                labels.push(Label::new(
                    t.clone(),
                    (left - 8, y),
                    14.0,
                    (HAlign::Right, VAlign::Center),
                ));
            }
            grid_lines
        };
        let grid_lines = match metric {
            Metric::Loss => {
                let mut chart = ChartBuilder::on(&area)
                    .build_cartesian_2d(0.0..x_max, (lo..hi).log_scale())
                    .map_err(draw_err)?;
                let lines = ticks(&|x| chart.backend_coord(&(x, lo)).0, &|y| {
                    chart.backend_coord(&(0.0, y)).1
                });
                for l in lines {
                    root.draw(&PathElement::new(l, grid)).map_err(draw_err)?;
                }
                draw_series(&mut chart, &s, lo, hi, what)?
            }
            Metric::Accuracy => {
                let mut chart = ChartBuilder::on(&area)
                    .build_cartesian_2d(0.0..x_max, lo..hi)
                    .map_err(draw_err)?;
                let lines = ticks(&|x| chart.backend_coord(&(x, lo)).0, &|y| {
                    chart.backend_coord(&(0.0, y)).1
                });
                for l in lines {
                    root.draw(&PathElement::new(l, grid)).map_err(draw_err)?;
                }
                draw_series(&mut chart, &s, lo, hi, what)?
            }
        };
        root.draw(&Rectangle::new([(left, top), (right, bottom)], BLACK))
            .map_err(draw_err)?;
        let upper = metric == Metric::Loss;
        let corner = (right - 10, if upper { top + 10 } else { bottom - 10 });
        legend(root, labels, &grid_lines, corner, upper)
    })?;
    Ok(canvas)
}

/// Draws the series inside `lo..=hi`; returns the legend entries.
fn draw_series<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    s: &Series,
    lo: f64,
    hi: f64,
    what: &str,
) -> Result<Vec<(Marker, String)>, DrawError>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    let mut legend = Vec::new();
    for run in runs_inside(&s.raw, lo, hi) {
        chart
            .draw_series(LineSeries::new(run, RAW.mix(0.18)))
            .map_err(draw_err)?;
    }
    legend.push((
        Marker::Line(RAW.mix(0.3), 2),
        format!("train {what}, each step (one mini-batch)"),
    ));
    for run in runs_inside(&s.smooth, lo, hi) {
        chart
            .draw_series(LineSeries::new(run, TRAIN.stroke_width(2)))
            .map_err(draw_err)?;
    }
    legend.push((
        Marker::Line(TRAIN.to_rgba(), 2),
        format!(
            "train {what}, moving average over {} steps",
            smoothing_window(s.raw.len())
        ),
    ));
    let inside = |v: &[(f64, f64)]| -> Vec<(f64, f64)> {
        v.iter()
            .copied()
            .filter(|p| (lo..=hi).contains(&p.1))
            .collect()
    };
    if !s.train.is_empty() {
        chart
            .draw_series(
                inside(&s.train).into_iter().map(|p| {
                    EmptyElement::at(p) + Rectangle::new([(-5, -5), (5, 5)], TRAIN.filled())
                }),
            )
            .map_err(draw_err)?;
        legend.push((
            Marker::Square(TRAIN),
            format!("train {what}, mean since the previous evaluation"),
        ));
    }
    if !s.test.is_empty() {
        let pts = inside(&s.test);
        chart
            .draw_series(LineSeries::new(pts.clone(), TEST.stroke_width(1)))
            .map_err(draw_err)?;
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 5, TEST.filled())))
            .map_err(draw_err)?;
        legend.push((
            Marker::Dot(TEST),
            format!("test {what} (all test images), at each evaluation"),
        ));
    }
    Ok(legend)
}

/// What `plot` wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlotReport {
    /// The log read.
    pub log: PathBuf,
    /// The loss figure.
    pub loss: PathBuf,
    /// The accuracy figure.
    pub accuracy: PathBuf,
    /// Step records plotted.
    pub steps: usize,
    /// Evaluation records plotted.
    pub evaluations: usize,
    /// Width and height of each figure.
    pub size: (u32, u32),
}

/// `fmnist-train plot`: reads `log`, writes `out/loss.png` and `out/accuracy.png`.
pub fn plot(log_path: &Path, out: &Path) -> Result<PlotReport, PlotError> {
    let log = read_log(log_path)?;
    let name = log_path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| format!(" ({})", n.to_string_lossy()))
        .unwrap_or_default();
    let figures = [
        (Metric::Loss, "loss.png", format!("Training loss{name}")),
        (
            Metric::Accuracy,
            "accuracy.png",
            format!("Training and test accuracy{name}"),
        ),
    ];
    // The folder may be missing (it is created), but not be a file; then render and encode
    // both figures before writing either, and write both or neither.
    if out.exists() && !out.is_dir() {
        return Err(PlotError::Folder(
            out.to_owned(),
            io::Error::new(io::ErrorKind::AlreadyExists, "a file stands there"),
        ));
    }
    let mut encoded = Vec::new();
    for (metric, file, title) in &figures {
        let c = render_curves(&log, *metric, title).map_err(PlotError::Draw)?;
        encoded.push((out.join(file), c.encode_png()));
    }
    let created = !out.exists();
    std::fs::create_dir_all(out).map_err(|e| PlotError::Folder(out.to_owned(), e))?;
    let names: Vec<(&str, &Path)> = encoded
        .iter()
        .map(|(p, _)| ("--out", p.as_path()))
        .collect();
    let files: Vec<(&Path, &[u8])> = encoded
        .iter()
        .map(|(p, b)| (p.as_path(), b.as_slice()))
        .collect();
    let written = fmnist_infer::outputs::check(&names, &[("--log", log_path)])
        .and_then(|()| fmnist_infer::outputs::write_all(&files));
    if let Err(e) = written {
        if created {
            let _ = std::fs::remove_dir(out);
        }
        return Err(e.into());
    }
    Ok(PlotReport {
        log: log_path.to_owned(),
        loss: encoded[0].0.clone(),
        accuracy: encoded[1].0.clone(),
        steps: log.steps.len(),
        evaluations: log.evals.len(),
        size: CURVE_SIZE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_text() -> String {
        let mut s = String::new();
        for step in 1..=40u64 {
            s += &format!(
                "{{\"time\":\"t\",\"step\":{step},\"total\":40,\"loss\":{},\"accuracy\":{},\"lr\":1e-2}}\n",
                2.0 / step as f64,
                1.0 - 1.0 / step as f64
            );
            if step % 20 == 0 {
                s += &format!(
                    "{{\"time\":\"t\",\"step\":{step},\"total\":40,\"test_accuracy\":0.8,\"test_loss\":0.5,\"checkpoint\":\"c\"}}\n"
                );
            }
        }
        s
    }

    #[test]
    fn parses_steps_and_evaluations_and_skips_an_unfinished_last_line() {
        let mut t = log_text();
        t += "{\"time\":\"t\",\"st";
        let log = parse_log(Path::new("l.jsonl"), &t).unwrap();
        assert_eq!((log.steps.len(), log.evals.len(), log.total), (40, 2, 40));
        let m = interval_means(&log);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, 20);
        let want: f64 = (1..=20).map(|s| 2.0 / s as f64).sum::<f64>() / 20.0;
        assert!((m[0].1 - want).abs() < 1e-12);
    }

    #[test]
    fn garbled_lines_name_the_file_and_line() {
        let t = format!("{}garbage\n{}", log_text(), log_text());
        let e = parse_log(Path::new("l.jsonl"), &t).unwrap_err();
        assert!(e.starts_with("l.jsonl: line 43: not a JSON object"), "{e}");
        let e = parse_log(Path::new("l.jsonl"), "{\"step\":1}\n").unwrap_err();
        assert!(e.contains("line 1: neither a step record"), "{e}");
        let e = parse_log(Path::new("l.jsonl"), "").unwrap_err();
        assert!(e.contains("no training steps"), "{e}");
    }

    #[test]
    fn moving_average_is_centred_and_keeps_length() {
        assert_eq!(smoothing_window(18_760), 187);
        assert_eq!(smoothing_window(20), 1);
        let m = moving_average(&[1.0, 2.0, 3.0, 4.0, 5.0], 3);
        assert_eq!(m, vec![1.5, 2.0, 3.0, 4.0, 4.5]);
    }

    #[test]
    fn null_values_of_a_diverged_run_are_gaps() {
        let t = "{\"step\":1,\"total\":9,\"loss\":2.5,\"accuracy\":0.1}\n\
                 {\"step\":1,\"total\":9,\"test_accuracy\":0.1,\"test_loss\":null}\n\
                 {\"step\":2,\"total\":9,\"loss\":null,\"accuracy\":0.2}\n";
        let log = parse_log(Path::new("l.jsonl"), t).unwrap();
        assert_eq!((log.steps.len(), log.evals.len()), (2, 1));
        assert!(log.steps[1].loss.is_nan() && log.evals[0].test_loss.is_nan());
        for metric in [Metric::Loss, Metric::Accuracy] {
            render_curves(&log, metric, "t").unwrap();
        }
        let m = moving_average(&[1.0, f64::NAN, 3.0, 5.0], 3);
        assert_eq!((m[0], m[2], m[3]), (1.0, 4.0, 4.0));
        assert!(m[1].is_nan());
        // Only loss-free steps: still a figure.
        let only = "{\"step\":1,\"total\":9,\"loss\":null,\"accuracy\":0.1}\n";
        let log = parse_log(Path::new("l.jsonl"), only).unwrap();
        render_curves(&log, Metric::Loss, "t").unwrap();
    }

    #[test]
    fn figures_are_deterministic() {
        let log = parse_log(Path::new("l.jsonl"), &log_text()).unwrap();
        let a = render_curves(&log, Metric::Loss, "t").unwrap().encode_png();
        let b = render_curves(&log, Metric::Loss, "t").unwrap().encode_png();
        assert_eq!(a, b);
    }
}
