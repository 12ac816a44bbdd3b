//! Turning an arbitrary PNG or JPEG into a 28x28 Fashion-MNIST-like input.
//!
//! Fashion-MNIST was made from product photos on a light background: trim the edges close to the
//! corner colour (5 % of the intensity range), resize so the longer side is 28 pixels, centre on
//! a 28x28 canvas, negate (object light on black), 8-bit grey. The steps here follow it:
//!
//! 1. **Grey.** Decode (any size, grey or colour, 8 or 16 bit, with or without alpha) to 8-bit
//!    RGBA; composite alpha over white (`c' = (c·a + 255·(255 − a) + 127) / 255`, integer); take
//!    the Rec. 709 luma `Y = (2126·R + 7152·G + 722·B + 5000) / 10000` (integer).
//! 2. **Invert.** The border ring is the outermost row and column on every side. `--invert auto`
//!    negates the image (`Y → 255 − Y`) when more than half of the ring's pixels are light
//!    (`Y ≥ 128`), i.e. on a light background; `yes` always negates, `no` never. Afterwards the
//!    object is light on a dark background.
//! 3. **Background.** `bg` = the median of the border ring (after step 2).
//! 4. **Bounding box.** Object pixels are those with `Y > bg + 13` (13 = 5 % of 255, Zalando's
//!    trimming threshold). Crop to their bounding box; an image without any is kept whole.
//! 5. **Levels.** Inside the crop, `Y → round(max(Y − bg, 0) · 255 / (255 − bg))`, so the
//!    background becomes 0 as in Fashion-MNIST (the identity when `bg` is 0).
//! 6. **Fit.** Resize the crop so its longer side is 28 pixels and the shorter side
//!    `max(1, round(short · 28 / long))` (aspect kept) with `image`'s triangle (bilinear) filter,
//!    whose support widens with the reduction ratio, so a large photo is area-averaged.
//! 7. **Centre.** Paste it on a 28x28 black canvas at `((28 − w) / 2, (28 − h) / 2)` (integer
//!    division).

use std::path::{Path, PathBuf};

use fmnist_core::lenet::{IMAGE_PIXELS, IMAGE_SIDE};
use image::{DynamicImage, GrayImage, ImageError, ImageFormat, imageops};

use crate::error::{Error, Result};

/// The `--invert` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Invert {
    /// Negate when the border is mostly light.
    #[default]
    Auto,
    /// Always negate.
    Yes,
    /// Never negate.
    No,
}

/// A prepared 28x28 input and what was done to get it.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Row-major 28x28 grey pixels, object light on black.
    pub pixels: [u8; IMAGE_PIXELS],
    /// Whether the image was negated.
    pub inverted: bool,
    /// Background level found on the border (after negation).
    pub background: u8,
    /// The object's bounding box in the source image: x, y, width, height.
    pub bbox: (u32, u32, u32, u32),
    /// Source width and height.
    pub source_size: (u32, u32),
}

/// Object threshold above the background: 5 % of 255.
pub const TRIM_THRESHOLD: u8 = 13;

/// The widest or tallest image `predict` decodes: a few bytes of header must not make it
/// allocate gigabytes (decoding, then the RGBA copy of step 1).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most memory the decoder may allocate (an 8-bit RGB photo of about 85 megapixels).
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// Reads and decodes a PNG or JPEG, recognised by content (not by extension); any failure is
/// bad input naming the file.
pub fn read_image(path: &Path) -> Result<DynamicImage> {
    let bytes = crate::inputs::read(path).map_err(|e| Error::bad(path, e))?;
    decode_image(path, &bytes)
}

/// Decodes the bytes of a PNG or JPEG read from `path` (named in errors), recognised by content,
/// within [`MAX_IMAGE_SIDE`] and [`MAX_DECODE_BYTES`].
pub fn decode_image(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    decode_image_within(path, bytes, MAX_IMAGE_SIDE, MAX_DECODE_BYTES)
}

/// [`decode_image`] with other limits: at most `max_side` pixels wide or tall, at most
/// `max_alloc` bytes of decoder memory. (The fuzz harness uses small limits, so each run stays
/// short while every limit check is still exercised.)
pub fn decode_image_within(
    path: &Path,
    bytes: &[u8],
    max_side: u32,
    max_alloc: u64,
) -> Result<DynamicImage> {
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        Ok(other) => {
            return Err(Error::bad(
                path,
                format!("not a PNG or JPEG image ({other:?} is not supported)"),
            ));
        }
        Err(_) if bytes.is_empty() => {
            return Err(Error::bad(path, "not a PNG or JPEG image (empty file)"));
        }
        Err(_) => {
            return Err(Error::bad(
                path,
                "not a PNG or JPEG image (unrecognised content)",
            ));
        }
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    limits.max_alloc = Some(max_alloc);
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    reader.limits(limits);
    let decoded = contain_panic(|| reader.decode()).ok_or_else(|| {
        Error::bad(
            path,
            format!("corrupt image: the {format:?} decoder failed on it"),
        )
    })?;
    decoded.map_err(|e| match e {
        ImageError::Unsupported(u) => Error::bad(path, format!("unsupported image: {u}")),
        ImageError::Decoding(d) => Error::bad(path, format!("corrupt image: {d}")),
        ImageError::Limits(l) => Error::bad(path, format!("image too large: {l}")),
        other => Error::bad(path, format!("cannot decode image: {other}")),
    })
}

thread_local! {
    /// Set while [`contain_panic`] runs a decoder on this thread.
    static CONTAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a third-party decoder) and turns a panic inside it into `None`, printing nothing.
///
/// The decoders are supposed to return errors, but fuzzing found a 1,262-byte JPEG on which
/// zune-jpeg 0.5.15 (the newest release, used by `image`) panics in its AVX2 IDCT
/// (`tests/data/zune-jpeg-idct-panic.jpg`). A bad file must give one error line and exit code 2,
/// not a panic trace, so the decode call is contained: the panic hook stays silent for panics
/// on this thread while `f` runs and defers to the previous hook otherwise.
fn contain_panic<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINING.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
    let was = CONTAINING.with(|c| c.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(was));
    r.ok()
}

/// Step 1: 8-bit grey, alpha composited over white.
pub fn to_grey(img: &DynamicImage) -> GrayImage {
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = GrayImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as u32;
        let c = |v: u8| (v as u32 * a + 255 * (255 - a) + 127) / 255;
        let y = (2126 * c(p[0]) + 7152 * c(p[1]) + 722 * c(p[2]) + 5000) / 10000;
        o[0] = y.min(255) as u8;
    }
    out
}

fn border_ring(g: &GrayImage) -> Vec<u8> {
    let (w, h) = g.dimensions();
    let mut ring = Vec::with_capacity(2 * (w + h) as usize);
    for (x, y, p) in g.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            ring.push(p[0]);
        }
    }
    ring
}

/// Steps 1 to 7 on a decoded image.
pub fn prepare(img: &DynamicImage, invert: Invert) -> Prepared {
    let mut g = to_grey(img);
    let (w, h) = g.dimensions();
    // 2. invert
    let ring = border_ring(&g);
    let light = ring.iter().filter(|&&p| p >= 128).count();
    let inverted = match invert {
        Invert::Yes => true,
        Invert::No => false,
        Invert::Auto => 2 * light > ring.len(),
    };
    if inverted {
        imageops::invert(&mut g);
    }
    // 3. background
    let mut ring = border_ring(&g);
    ring.sort_unstable();
    let bg = ring[ring.len() / 2];
    // 4. bounding box
    let thr = bg as u16 + TRIM_THRESHOLD as u16;
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in g.enumerate_pixels() {
        if p[0] as u16 > thr {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    let (bx, by, bw, bh) = if x0 == u32::MAX {
        (0, 0, w, h)
    } else {
        (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
    };
    let mut crop = imageops::crop_imm(&g, bx, by, bw, bh).to_image();
    // 5. levels
    if bg > 0 {
        let range = 255 - bg as u32;
        for p in crop.pixels_mut() {
            let v = p[0].saturating_sub(bg) as u32;
            p[0] = ((v * 255 + range / 2) / range.max(1)).min(255) as u8;
        }
    }
    // 6. fit the longer side to 28
    let side = IMAGE_SIDE as u32;
    let (nw, nh) = if bw >= bh {
        (
            side,
            ((bh as u64 * side as u64 * 2 + bw as u64) / (2 * bw as u64)).max(1) as u32,
        )
    } else {
        (
            ((bw as u64 * side as u64 * 2 + bh as u64) / (2 * bh as u64)).max(1) as u32,
            side,
        )
    };
    let small = imageops::resize(&crop, nw, nh, imageops::FilterType::Triangle);
    // 7. centre
    let mut canvas = GrayImage::new(side, side);
    imageops::replace(
        &mut canvas,
        &small,
        ((side - nw) / 2) as i64,
        ((side - nh) / 2) as i64,
    );
    let mut pixels = [0u8; IMAGE_PIXELS];
    pixels.copy_from_slice(canvas.as_raw());
    Prepared {
        pixels,
        inverted,
        background: bg,
        bbox: (bx, by, bw, bh),
        source_size: (w, h),
    }
}

/// Reads `path` and prepares it.
pub fn prepare_file(path: &Path, invert: Invert) -> Result<Prepared> {
    Ok(prepare(&read_image(path)?, invert))
}

/// A 28x28 grey image of `pixels` (for saving what the model saw).
pub fn to_gray_image(pixels: &[u8; IMAGE_PIXELS]) -> GrayImage {
    GrayImage::from_raw(IMAGE_SIDE as u32, IMAGE_SIDE as u32, pixels.to_vec())
        .expect("784 pixels make a 28x28 image")
}

/// Where `predict --save-input DIR` saves the input of each of `images`:
/// `DIR/<image stem>.28x28.png`. Refused (bad input) when `DIR` is not a folder, when two images
/// share a stem (one would overwrite the other), or when a destination cannot be written or is
/// one of the images.
pub fn saved_inputs(dir: &Path, images: &[PathBuf]) -> Result<Vec<PathBuf>> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::bad(
                dir,
                "--save-input needs a directory, this is a file",
            ));
        }
        Err(e) => return Err(Error::bad(dir, format!("--save-input: {e}"))),
    }
    let dests: Vec<PathBuf> = images
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            dir.join(format!("{stem}.28x28.png"))
        })
        .collect();
    for (i, d) in dests.iter().enumerate() {
        if let Some(j) = dests[..i].iter().position(|e| e == d) {
            return Err(Error::bad(
                d,
                format!(
                    "--save-input would save both {} and {} here (the same file stem)",
                    images[j].display(),
                    images[i].display()
                ),
            ));
        }
    }
    let outs: Vec<(&str, &Path)> = dests
        .iter()
        .map(|d| ("--save-input", d.as_path()))
        .collect();
    let ins: Vec<(&str, &Path)> = images.iter().map(|p| ("IMAGE", p.as_path())).collect();
    crate::outputs::check(&outs, &ins)?;
    Ok(dests)
}

/// Writes each prepared input as a PNG to its destination from [`saved_inputs`]: all or none.
pub fn save_inputs(dests: &[PathBuf], prepared: &[Prepared]) -> Result<()> {
    let mut pngs = Vec::with_capacity(dests.len());
    for (d, p) in dests.iter().zip(prepared) {
        let mut png = std::io::Cursor::new(Vec::new());
        to_gray_image(&p.pixels)
            .write_to(&mut png, ImageFormat::Png)
            .map_err(|e| Error::failure(d, e))?;
        pngs.push(png.into_inner());
    }
    let files: Vec<(&Path, &[u8])> = dests
        .iter()
        .zip(&pngs)
        .map(|(d, b)| (d.as_path(), b.as_slice()))
        .collect();
    crate::outputs::write_all(&files)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    #[test]
    fn a_jpeg_that_panics_the_decoder_is_a_corrupt_image_error() {
        let bytes = include_bytes!("../tests/data/zune-jpeg-idct-panic.jpg");
        let path = Path::new("crash.jpg");
        let r = decode_image(path, bytes);
        // The panic is in zune-jpeg's AVX2 code path (the one CI machines take).
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        if avx2 {
            let e = r.expect_err("the decoder fails on it");
            assert!(
                e.to_string()
                    .contains("crash.jpg: corrupt image: the Jpeg decoder failed on it"),
                "{e}"
            );
        }
        // Panics outside a decoder still unwind as before; a decoder that returns is untouched.
        assert!(std::panic::catch_unwind(|| panic!("outside")).is_err());
        assert_eq!(contain_panic(|| 7), Some(7));
    }

    /// A 28x28 test image: a light 10x20 rectangle (value 200) on black.
    fn rect_28() -> [u8; IMAGE_PIXELS] {
        let mut p = [0u8; IMAGE_PIXELS];
        for y in 4..24 {
            for x in 9..19 {
                p[y * 28 + x] = 200;
            }
        }
        p
    }

    #[test]
    fn object_filling_the_frame_comes_back_unchanged() {
        // A 28-tall object that is already centred: the crop is 10x28 → resized to 10x28 → same.
        let mut p = [0u8; IMAGE_PIXELS];
        for y in 0..28 {
            for x in 9..19 {
                p[y * 28 + x] = (100 + y * 5) as u8;
            }
        }
        let img = DynamicImage::ImageLuma8(to_gray_image(&p));
        let out = prepare(&img, Invert::Auto);
        assert!(!out.inverted);
        assert_eq!(out.bbox, (9, 0, 10, 28));
        assert_eq!(out.pixels, p);
    }

    #[test]
    fn dark_object_on_white_is_inverted_cropped_and_centred() {
        // 300x200 white colour image with a dark-blue 60x120 box at (40, 30).
        let mut img = RgbImage::from_pixel(300, 200, Rgb([255, 255, 255]));
        for y in 30..150 {
            for x in 40..100 {
                img.put_pixel(x, y, Rgb([10, 20, 60]));
            }
        }
        let out = prepare(&DynamicImage::ImageRgb8(img), Invert::Auto);
        assert!(out.inverted);
        assert_eq!(out.background, 0);
        assert_eq!(out.bbox, (40, 30, 60, 120));
        // 60x120 → 14x28, placed at x = 7.
        for y in 0..28 {
            for x in 0..28 {
                let v = out.pixels[y * 28 + x];
                if (7..21).contains(&x) {
                    assert!(v > 200, "({x},{y}) = {v}");
                } else {
                    assert_eq!(v, 0, "({x},{y})");
                }
            }
        }
        // Forcing "no" keeps it dark on white: the whole image is the "object".
        let img2 = RgbImage::from_pixel(30, 20, Rgb([255, 255, 255]));
        let out2 = prepare(&DynamicImage::ImageRgb8(img2), Invert::No);
        assert!(!out2.inverted);
        assert_eq!(out2.background, 255);
    }

    #[test]
    fn transparent_background_counts_as_white() {
        let mut img = RgbaImage::from_pixel(50, 50, Rgba([0, 0, 0, 0]));
        for y in 10..40 {
            for x in 20..30 {
                img.put_pixel(x, y, Rgba([0, 0, 0, 255]));
            }
        }
        let out = prepare(&DynamicImage::ImageRgba8(img), Invert::Auto);
        assert!(out.inverted);
        assert_eq!(out.bbox, (20, 10, 10, 30));
    }

    #[test]
    fn grey_background_is_levelled_to_black() {
        let mut p = [40u8; IMAGE_PIXELS];
        for (i, v) in rect_28().iter().enumerate() {
            if *v > 0 {
                p[i] = 240;
            }
        }
        let out = prepare(&DynamicImage::ImageLuma8(to_gray_image(&p)), Invert::No);
        assert_eq!(out.background, 40);
        // (240 − 40) · 255 / 215 = 237.2
        assert_eq!(out.pixels.iter().copied().max(), Some(237));
        // Corners are background.
        assert_eq!(out.pixels[0], 0);
    }

    /// A PNG with the header (IHDR) of a `w`x`h` 8-bit RGB image and one byte of pixel data.
    fn png_without_pixels(w: u32, h: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let crc = fmnist_core::format::CRC32.checksum(&[&kind[..], data].concat());
            out.extend_from_slice(&crc.to_be_bytes());
        }
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut b, b"IHDR", &ihdr);
        // A zlib stream holding one zero byte (one stored block): far too little pixel data.
        let zlib = [
            0x78, 0x01, 0x01, 0x01, 0x00, 0xfe, 0xff, 0x00, 0x00, 0x01, 0x00, 0x01,
        ];
        chunk(&mut b, b"IDAT", &zlib);
        chunk(&mut b, b"IEND", &[]);
        b
    }

    #[test]
    fn huge_dimensions_in_a_tiny_file_are_refused_before_allocating() {
        // Under 100 bytes claiming 100000x100000 (30 GB of pixels), or 12000x12000 (432 MB:
        // under the `image` crate's default 512 MB cap, which would allocate it, but over ours),
        // or one column more than the widest accepted: all refused as too large before decoding.
        for (w, h) in [
            (100_000, 100_000),
            (12_000, 12_000),
            (MAX_IMAGE_SIDE + 1, 1),
        ] {
            let e = decode_image(Path::new("big.png"), &png_without_pixels(w, h))
                .err()
                .unwrap_or_else(|| panic!("{w}x{h} decoded"))
                .to_string();
            assert!(
                e.contains("big.png") && e.contains("image too large"),
                "{w}x{h}: {e}"
            );
        }
        // A small one with the same structure gets past the limits to the missing pixel data.
        let e = decode_image(Path::new("small.png"), &png_without_pixels(4, 4))
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("too large"), "{e}");
    }

    #[test]
    fn blank_image_does_not_panic() {
        for img in [
            DynamicImage::ImageLuma8(GrayImage::new(1, 1)),
            DynamicImage::ImageLuma8(GrayImage::new(1000, 3)),
            DynamicImage::ImageRgb8(RgbImage::from_pixel(3, 700, Rgb([255, 255, 255]))),
        ] {
            let out = prepare(&img, Invert::Auto);
            assert_eq!(out.pixels.len(), 784);
        }
    }
}
