//! The sample grid (`fmnist-train samples`): the first training images, labelled.

use std::path::{Path, PathBuf};

use fmnist_core::CLASS_NAMES;
use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_infer::canvas::{Canvas, DrawError, HAlign, Label, VAlign, draw_err};
use plotters::prelude::*;

use super::PlotError;

/// Nearest-neighbour scale of the sample images: each pixel becomes a 4×4 square.
pub const SAMPLE_SCALE: u32 = 4;
/// Images per row of the sample grid.
pub const SAMPLE_COLUMNS: usize = 10;
const SAMPLE_GAP: u32 = 14;
const SAMPLE_LABEL: u32 = 26;
const SAMPLE_TITLE: u32 = 48;

/// Geometry of the sample grid for `count` images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleLayout {
    /// Images.
    pub count: usize,
    /// Columns (at most [`SAMPLE_COLUMNS`]).
    pub columns: usize,
    /// Rows.
    pub rows: usize,
}

impl SampleLayout {
    /// The grid for `count` images.
    pub fn new(count: usize) -> Self {
        let columns = count.clamp(1, SAMPLE_COLUMNS);
        SampleLayout {
            count,
            columns,
            rows: count.div_ceil(columns),
        }
    }

    fn side() -> u32 {
        28 * SAMPLE_SCALE
    }

    /// Figure size in pixels.
    pub fn size(&self) -> (u32, u32) {
        let side = Self::side();
        (
            SAMPLE_GAP + self.columns as u32 * (side + SAMPLE_GAP),
            SAMPLE_TITLE + self.rows as u32 * (side + SAMPLE_LABEL + SAMPLE_GAP),
        )
    }

    /// Top-left pixel of image `k` (row-major order).
    pub fn origin(&self, k: usize) -> (u32, u32) {
        let side = Self::side();
        let (r, c) = ((k / self.columns) as u32, (k % self.columns) as u32);
        (
            SAMPLE_GAP + c * (side + SAMPLE_GAP),
            SAMPLE_TITLE + r * (side + SAMPLE_LABEL + SAMPLE_GAP),
        )
    }
}

/// Draws `images` (with `labels`) as a grid: each image scaled ×[`SAMPLE_SCALE`] by pixel
/// replication (a pixel of value v is a square of grey v: light garment on black, as stored), its
/// class name centred below.
pub fn render_samples(
    images: &[[u8; IMAGE_PIXELS]],
    labels_of: &[u8],
    title: &str,
) -> Result<Canvas, DrawError> {
    let layout = SampleLayout::new(images.len());
    let (w, h) = layout.size();
    let side = SampleLayout::side();
    let mut canvas = Canvas::new(w, h);
    canvas.draw(|root, labels| {
        root.fill(&WHITE).map_err(draw_err)?;
        labels.push(Label::new(
            title,
            (w as i32 / 2, SAMPLE_TITLE as i32 / 2),
            20.0,
            (HAlign::Center, VAlign::Center),
        ));
        for (k, &l) in labels_of.iter().enumerate().take(images.len()) {
            let (x, y) = layout.origin(k);
            let name = CLASS_NAMES.get(l as usize).copied().unwrap_or("?");
            labels.push(Label::new(
                name,
                ((x + side / 2) as i32, (y + side + 5) as i32),
                15.0,
                (HAlign::Center, VAlign::Top),
            ));
        }
        Ok(())
    })?;
    // The pixels themselves, written directly: exact values, exact squares.
    for (k, img) in images.iter().enumerate() {
        let (x0, y0) = layout.origin(k);
        for (i, &v) in img.iter().enumerate() {
            let (r, c) = ((i / 28) as u32, (i % 28) as u32);
            for dy in 0..SAMPLE_SCALE {
                for dx in 0..SAMPLE_SCALE {
                    canvas.put(
                        x0 + c * SAMPLE_SCALE + dx,
                        y0 + r * SAMPLE_SCALE + dy,
                        [v; 3],
                    );
                }
            }
        }
    }
    Ok(canvas)
}

/// Most images `samples` draws.
pub const MAX_SAMPLES: usize = 1000;

/// What `samples` wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SamplesReport {
    /// The PNG file.
    pub out: PathBuf,
    /// Images drawn (the first ones of the training set).
    pub images: usize,
    /// Width and height in pixels.
    pub size: (u32, u32),
}

/// `fmnist-train samples`: the first `count` training images of `data` as a labelled grid.
pub fn samples(
    data_dir: Option<&Path>,
    out: &Path,
    count: usize,
) -> Result<SamplesReport, PlotError> {
    if !(1..=MAX_SAMPLES).contains(&count) {
        return Err(PlotError::Count {
            count,
            max: MAX_SAMPLES,
        });
    }
    fmnist_infer::outputs::check(&[("--out", out)], &[])?;
    let dir = fmnist_infer::data::locate(data_dir).map_err(PlotError::Data)?;
    let train = fmnist_infer::data::load(&dir, fmnist_infer::data::Split::Train)
        .map_err(PlotError::Data)?;
    let n = count.min(train.len());
    let title =
        format!("Fashion-MNIST: the first {n} training images (28×28, drawn ×{SAMPLE_SCALE})");
    let canvas =
        render_samples(&train.images[..n], &train.labels[..n], &title).map_err(PlotError::Draw)?;
    fmnist_infer::outputs::write_all(&[(out, &canvas.encode_png())])?;
    Ok(SamplesReport {
        out: out.to_owned(),
        images: n,
        size: (canvas.width, canvas.height),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_exact() {
        let imgs: Vec<[u8; IMAGE_PIXELS]> = (0..3)
            .map(|k| std::array::from_fn(|i| (i * 3 + k) as u8))
            .collect();
        let c = render_samples(&imgs, &[0, 9, 5], "t").unwrap();
        let layout = SampleLayout::new(3);
        assert_eq!((c.width, c.height), layout.size());
        let (x0, y0) = layout.origin(2);
        for (i, &v) in imgs[2].iter().enumerate() {
            let (r, col) = ((i / 28) as u32, (i % 28) as u32);
            let (x, y) = (x0 + col * SAMPLE_SCALE + 3, y0 + r * SAMPLE_SCALE + 1);
            let p = 3 * (y * c.width + x) as usize;
            assert_eq!(c.rgb[p..p + 3], [v; 3]);
        }
    }
}
