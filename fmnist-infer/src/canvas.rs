//! The figures' canvas, shared by `fmnist-infer confusion` and `fmnist-train plot` / `samples`:
//! the embedded font, an in-memory RGB canvas plotters draws on, text, PNG encoding.
//!
//! * **No system fonts.** plotters draws the geometry (lines, markers, rectangles) into the
//!   buffer; every text is then rasterized by [`Canvas::text`] with `ab_glyph` from DejaVu Sans
//!   embedded in the binary (`assets/DejaVuSans.ttf`, licence beside it). A headless container
//!   with no font installed renders the same figures. (plotters' own text paths are not used:
//!   its `ttf` feature needs the system's fonts, and its `ab_glyph` backend, in 0.3.7, drops
//!   each glyph's left side bearing, so letters collide.)
//! * **Deterministic.** Everything is drawn into an RGB buffer in memory and encoded with the
//!   `image` crate's PNG encoder: the same input gives the same PNG bytes (no time stamps, no
//!   metadata).
//! * **Nothing partial.** A figure is rendered and encoded completely before its file is written
//!   atomically (through [`crate::outputs`] or [`crate::atomic`]: temp file, rename): a failed
//!   command leaves no PNG, or the previous one, behind.

use std::io;
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;

/// DejaVu Sans 2.37, the only font the figures use.
pub const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn font() -> &'static FontRef<'static> {
    static F: OnceLock<FontRef<'static>> = OnceLock::new();
    F.get_or_init(|| FontRef::try_from_slice(FONT).expect("the embedded DejaVu Sans parses"))
}

/// Horizontal anchor of a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HAlign {
    /// The anchor is the left end.
    Left,
    /// The anchor is the middle.
    Center,
    /// The anchor is the right end.
    Right,
}

/// Vertical anchor of a text (the line box from ascent to descent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VAlign {
    /// The anchor is the top of the line box.
    Top,
    /// The anchor is the middle of the line box.
    Center,
    /// The anchor is the bottom of the line box.
    Bottom,
}

/// A text to draw on a [`Canvas`] once plotters is done with it.
#[derive(Clone, Debug)]
pub struct Label {
    /// The text.
    pub text: String,
    /// Anchor point in pixels.
    pub at: (i32, i32),
    /// Font size in pixels (the em square).
    pub size: f32,
    /// How the text sits on the anchor.
    pub align: (HAlign, VAlign),
    /// Rotated a quarter turn counter-clockwise (reads bottom to top), for y-axis titles.
    pub vertical: bool,
    /// Colour.
    pub color: [u8; 3],
}

impl Label {
    /// Black horizontal text.
    pub fn new(
        text: impl Into<String>,
        at: (i32, i32),
        size: f32,
        align: (HAlign, VAlign),
    ) -> Self {
        Label {
            text: text.into(),
            at,
            size,
            align,
            vertical: false,
            color: [0, 0, 0],
        }
    }

    /// The same text in another colour.
    pub fn color(mut self, color: [u8; 3]) -> Self {
        self.color = color;
        self
    }

    /// The same text turned to read bottom to top.
    pub fn vertical(mut self) -> Self {
        self.vertical = true;
        self
    }
}

/// Advance width of `text` at `size` pixels, kerning included.
pub fn text_width(text: &str, size: f32) -> f32 {
    let f = font().as_scaled(PxScale::from(size));
    let mut caret = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let g = f.glyph_id(c);
        if let Some(p) = prev {
            caret += f.kern(p, g);
        }
        caret += f.h_advance(g);
        prev = Some(g);
    }
    caret
}

/// An RGB image in memory that plotters draws on, then encoded as PNG.
pub struct Canvas {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB bytes, `3 · width · height`.
    pub rgb: Vec<u8>,
}

/// An error while drawing (plotters' error, as text).
#[derive(Debug)]
pub struct DrawError(pub String);

impl std::fmt::Display for DrawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "drawing failed: {}", self.0)
    }
}

impl std::error::Error for DrawError {}

/// Turns any plotters error into a [`DrawError`].
pub fn draw_err(e: impl std::fmt::Display) -> DrawError {
    DrawError(e.to_string())
}

/// The drawing area plotters draws on: the whole canvas, in pixels.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

impl Canvas {
    /// A white canvas.
    pub fn new(width: u32, height: u32) -> Self {
        Canvas {
            width,
            height,
            rgb: vec![255; 3 * width as usize * height as usize],
        }
    }

    /// Runs `f` with a plotters drawing area over the whole canvas, then draws the labels `f`
    /// collected on top.
    pub fn draw(
        &mut self,
        f: impl FnOnce(&Area<'_>, &mut Vec<Label>) -> Result<(), DrawError>,
    ) -> Result<(), DrawError> {
        let mut labels = Vec::new();
        {
            let root = BitMapBackend::with_buffer(&mut self.rgb, (self.width, self.height))
                .into_drawing_area();
            f(&root, &mut labels)?;
            root.present().map_err(draw_err)?;
        }
        for l in &labels {
            self.text(l);
        }
        Ok(())
    }

    /// Sets one pixel (outside the canvas: ignored).
    pub fn put(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = 3 * (y as usize * self.width as usize + x as usize);
            self.rgb[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn blend(&mut self, x: i32, y: i32, rgb: [u8; 3], coverage: f32) {
        if x < 0 || y < 0 || x as u32 >= self.width || y as u32 >= self.height {
            return;
        }
        let a = coverage.clamp(0.0, 1.0);
        let i = 3 * (y as usize * self.width as usize + x as usize);
        for (dst, src) in self.rgb[i..i + 3].iter_mut().zip(rgb) {
            *dst = (*dst as f32 * (1.0 - a) + src as f32 * a).round() as u8;
        }
    }

    /// Draws a text: glyphs from the embedded font, kerned, anti-aliased.
    pub fn text(&mut self, l: &Label) {
        let scale = PxScale::from(l.size);
        let f = font().as_scaled(scale);
        let width = text_width(&l.text, l.size);
        let (ascent, descent) = (f.ascent(), f.descent());
        let dx = match l.align.0 {
            HAlign::Left => 0.0,
            HAlign::Center => -width / 2.0,
            HAlign::Right => -width,
        };
        // Baseline offset from the anchor.
        let dy = match l.align.1 {
            VAlign::Top => ascent,
            VAlign::Center => (ascent + descent) / 2.0,
            VAlign::Bottom => descent,
        };
        let mut caret = dx;
        let mut prev = None;
        for c in l.text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                caret += f.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(scale, point(caret, dy));
            caret += f.h_advance(id);
            let Some(outline) = font().outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            outline.draw(|gx, gy, cov| {
                // Text coordinates relative to the anchor: u along the text, v downwards.
                let u = b.min.x as i32 + gx as i32;
                let v = b.min.y as i32 + gy as i32;
                let (x, y) = if l.vertical {
                    (l.at.0 + v, l.at.1 - u)
                } else {
                    (l.at.0 + u, l.at.1 + v)
                };
                self.blend(x, y, l.color, cov);
            });
        }
    }
    /// The PNG file's bytes.
    pub fn encode_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(
                &self.rgb,
                self.width,
                self.height,
                image::ExtendedColorType::Rgb8,
            )
            .expect("an RGB buffer of the right size encodes into memory");
        out
    }
}

/// Writes `bytes` to `path` atomically (temp file beside it, fsync, rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic::write_atomic(path, bytes)
}
