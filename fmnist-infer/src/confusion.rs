//! The confusion matrix of an evaluation as a PNG heat map (`fmnist-infer confusion`).
//!
//! Rows are the true class, columns the predicted class, both named from
//! [`fmnist_core::CLASS_NAMES`]; each cell shows its count. A cell's colour is the share of its
//! row (the images of that true class) on a square-root scale, white (0) to dark blue (all of
//! them), so the few-percent confusions stay visible next to the ~90 % diagonal. The title names
//! the model kind and the accuracy.
//!
//! Drawing, text and PNG encoding are [`crate::canvas`]'s: deterministic, and
//! independent of the machine's fonts.

use std::path::Path;

use fmnist_core::CLASS_NAMES;
use plotters::prelude::*;

use crate::canvas::{Canvas, DrawError, HAlign, Label, VAlign, draw_err, text_width};
use crate::cli::thousands;
use crate::error::{Error, Result};
use crate::eval::EvalReport;

/// Side of one cell in pixels.
pub const CELL: i32 = 84;
const LEFT: i32 = 150;
const TOP: i32 = 86;
const RIGHT: i32 = 30;
const BOTTOM: i32 = 86;

/// Width and height of the figure.
pub const SIZE: (u32, u32) = (
    (LEFT + 10 * CELL + RIGHT) as u32,
    (TOP + 10 * CELL + BOTTOM) as u32,
);

/// The colour of a cell holding `share` (0..=1) of its row.
pub fn cell_color(share: f64) -> [u8; 3] {
    let t = share.clamp(0.0, 1.0).sqrt();
    let (from, to) = ([255.0, 255.0, 255.0], [8.0, 48.0, 107.0]);
    std::array::from_fn(|i| (from[i] + (to[i] - from[i]) * t).round() as u8)
}

/// Font size (at most `max`) at which every class name fits in `width` pixels.
fn fitting_size(max: f32, width: f32) -> f32 {
    let widest = CLASS_NAMES
        .iter()
        .map(|n| text_width(n, max))
        .fold(0.0, f32::max);
    if widest <= width {
        max
    } else {
        (max * width / widest).floor()
    }
}

/// Draws the heat map of `report` into a canvas of [`SIZE`].
pub fn render(report: &EvalReport) -> std::result::Result<Canvas, DrawError> {
    let mut canvas = Canvas::new(SIZE.0, SIZE.1);
    let (w, h) = (SIZE.0 as i32, SIZE.1 as i32);
    canvas.draw(|root, labels| {
        root.fill(&WHITE).map_err(draw_err)?;
        labels.push(Label::new(
            format!(
                "Confusion matrix: {} model, accuracy {:.2} % ({} / {} test images)",
                report.kind,
                100.0 * report.accuracy,
                thousands(report.correct),
                thousands(report.images)
            ),
            (w / 2, 26),
            21.0,
            (HAlign::Center, VAlign::Center),
        ));
        let file = Path::new(&report.model).file_name().map_or_else(
            || report.model.clone(),
            |f| f.to_string_lossy().into_owned(),
        );
        labels.push(
            Label::new(file, (w / 2, 54), 14.0, (HAlign::Center, VAlign::Center))
                .color([90, 90, 90]),
        );
        let name_size = fitting_size(14.0, (CELL - 6) as f32);
        for (t, row) in report.confusion.iter().enumerate() {
            let total: u32 = row.iter().sum();
            let y = TOP + t as i32 * CELL;
            labels.push(Label::new(
                CLASS_NAMES[t],
                (LEFT - 10, y + CELL / 2),
                14.0,
                (HAlign::Right, VAlign::Center),
            ));
            for (p, &count) in row.iter().enumerate() {
                let x = LEFT + p as i32 * CELL;
                let share = if total == 0 {
                    0.0
                } else {
                    f64::from(count) / f64::from(total)
                };
                let [r, g, b] = cell_color(share);
                root.draw(&Rectangle::new(
                    [(x, y), (x + CELL, y + CELL)],
                    RGBColor(r, g, b).filled(),
                ))
                .map_err(draw_err)?;
                let ink = if count == 0 {
                    [170, 170, 170]
                } else if share.sqrt() > 0.55 {
                    [255, 255, 255]
                } else {
                    [0, 0, 0]
                };
                labels.push(
                    Label::new(
                        count.to_string(),
                        (x + CELL / 2, y + CELL / 2),
                        if p == t { 18.0 } else { 16.0 },
                        (HAlign::Center, VAlign::Center),
                    )
                    .color(ink),
                );
            }
        }
        for (p, name) in CLASS_NAMES.iter().enumerate() {
            labels.push(Label::new(
                *name,
                (LEFT + p as i32 * CELL + CELL / 2, TOP + 10 * CELL + 8),
                name_size,
                (HAlign::Center, VAlign::Top),
            ));
        }
        let grid = BLACK.mix(0.15);
        for i in 0..=10 {
            let o = i * CELL;
            root.draw(&PathElement::new(
                vec![(LEFT + o, TOP), (LEFT + o, TOP + 10 * CELL)],
                grid,
            ))
            .map_err(draw_err)?;
            root.draw(&PathElement::new(
                vec![(LEFT, TOP + o), (LEFT + 10 * CELL, TOP + o)],
                grid,
            ))
            .map_err(draw_err)?;
        }
        root.draw(&Rectangle::new(
            [(LEFT, TOP), (LEFT + 10 * CELL, TOP + 10 * CELL)],
            BLACK,
        ))
        .map_err(draw_err)?;
        labels.push(Label::new(
            "predicted class",
            (LEFT + 5 * CELL, h - 26),
            17.0,
            (HAlign::Center, VAlign::Center),
        ));
        labels.push(
            Label::new(
                "true class",
                (18, TOP + 5 * CELL),
                17.0,
                (HAlign::Center, VAlign::Center),
            )
            .vertical(),
        );
        Ok(())
    })?;
    Ok(canvas)
}

/// Renders `report` and writes it to `out` atomically. A missing or read-only folder is bad
/// input (exit 2); other write failures, a full disk say, are not (exit 1).
pub fn write_png(report: &EvalReport, out: &Path) -> Result<()> {
    let canvas = render(report).map_err(|e| Error::failure(out, e))?;
    crate::outputs::write_all(&[(out, &canvas.encode_png())])?;
    Ok(())
}

/// Checks before the evaluation that `out` can be written and is not the model file `model`
/// (bad input otherwise).
pub fn check_output(out: &Path, model: &Path) -> Result<()> {
    crate::outputs::check(&[("--png", out)], &[("--model", model)])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_run_from_white_to_dark_blue() {
        assert_eq!(cell_color(0.0), [255, 255, 255]);
        assert_eq!(cell_color(1.0), [8, 48, 107]);
        assert!(cell_color(0.01)[0] < 255);
    }

    #[test]
    fn class_names_fit_their_column() {
        let s = fitting_size(14.0, (CELL - 6) as f32);
        assert!(s > 9.0);
        for n in CLASS_NAMES {
            assert!(text_width(n, s) <= (CELL - 6) as f32, "{n}");
        }
    }
}
