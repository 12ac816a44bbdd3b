//! Training-time data augmentation on the raw 28x28 u8 images.
//!
//! Every drawn image gets its own random translation, mirror, rotation, noise and erasing. The random
//! numbers come from a generator keyed by (seed, step), consumed image by image in batch order
//! on one thread, so a run stays bit-identical whatever the thread count, and a resumed run
//! draws exactly what the uninterrupted one would have (no generator state to save).

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use fmnist_core::lenet::{IMAGE_PIXELS, IMAGE_SIDE};

/// Which augmentations to apply (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Random translation by up to this many pixels along each axis, filling with black: the
    /// usual pad-by-`shift`-and-random-crop.
    pub shift: u8,
    /// Mirror left-right with probability ½.
    pub flip: bool,
    /// Rotation by an angle uniform in ±`rotate_deg` degrees (bilinear resampling).
    pub rotate_deg: f32,
    /// Additive Gaussian noise, standard deviation as a fraction of full scale (0 – 1).
    pub noise: f32,
    /// Random erasing (Zhong et al., 2017) with this probability: a rectangle of 2 – 40 % of
    /// the image, aspect ratio 0.3 – 3.3, is filled with uniform random pixels (0 = off).
    pub erase: f32,
}

impl Augment {
    /// True when no augmentation is configured.
    pub fn is_off(&self) -> bool {
        *self == Augment::default()
    }

    /// Checks the ranges a user may give.
    pub fn validate(&self) -> Result<(), String> {
        if self.shift > 8 {
            return Err(format!(
                "--shift must be at most 8 pixels, got {}",
                self.shift
            ));
        }
        if !(self.rotate_deg.is_finite() && (0.0..=45.0).contains(&self.rotate_deg)) {
            return Err(format!(
                "--rotate must be between 0 and 45 degrees, got {}",
                self.rotate_deg
            ));
        }
        if !(self.noise.is_finite() && (0.0..=1.0).contains(&self.noise)) {
            return Err(format!(
                "--noise must be between 0 and 1, got {}",
                self.noise
            ));
        }
        if !(self.erase.is_finite() && (0.0..=1.0).contains(&self.erase)) {
            return Err(format!(
                "--erase must be a probability between 0 and 1, got {}",
                self.erase
            ));
        }
        Ok(())
    }

    /// The generator for the batch of optimizer step `step` of a run seeded with `seed`.
    pub fn rng(seed: u64, step: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Streams 1 and 2 are initialisation and data order; augmentation uses 2^32 + step.
        rng.set_stream((1 << 32) + step);
        rng
    }

    /// One augmented copy of `image`, drawing from `rng`.
    pub fn apply(&self, image: &[u8; IMAGE_PIXELS], rng: &mut impl Rng) -> [u8; IMAGE_PIXELS] {
        let s = self.shift as i32;
        let (dx, dy) = if s > 0 {
            (rng.random_range(-s..=s), rng.random_range(-s..=s))
        } else {
            (0, 0)
        };
        let flip = self.flip && rng.random_bool(0.5);
        let theta = if self.rotate_deg > 0.0 {
            rng.random_range(-self.rotate_deg..=self.rotate_deg)
                .to_radians()
        } else {
            0.0
        };
        let mut out = if theta == 0.0 {
            shift_flip(image, dx, dy, flip)
        } else {
            warp(image, dx as f32, dy as f32, flip, theta)
        };
        if self.noise > 0.0 {
            let d = Normal::new(0.0f32, self.noise * 255.0).expect("finite, non-negative std");
            for p in out.iter_mut() {
                *p = (*p as f32 + d.sample(rng)).round().clamp(0.0, 255.0) as u8;
            }
        }
        // Drawn last, and only when on: recipes without it draw exactly what they did before.
        if self.erase > 0.0 && rng.random_bool(self.erase as f64) {
            random_erase(&mut out, rng);
        }
        out
    }
}

/// Random erasing: up to 100 tries to draw a rectangle of area 2 – 40 % of the image and
/// aspect ratio (height / width) in 0.3 – 1/0.3 that fits; fills the first that does with
/// uniform random pixels.
fn random_erase(image: &mut [u8; IMAGE_PIXELS], rng: &mut impl Rng) {
    const AREA: (f32, f32) = (0.02, 0.4);
    const ASPECT: f32 = 0.3;
    let n = IMAGE_SIDE;
    for _ in 0..100 {
        let area = rng.random_range(AREA.0..AREA.1) * IMAGE_PIXELS as f32;
        let aspect = rng.random_range(ASPECT..1.0 / ASPECT);
        let h = (area * aspect).sqrt().round() as usize;
        let w = (area / aspect).sqrt().round() as usize;
        if h == 0 || w == 0 || h >= n || w >= n {
            continue;
        }
        let y0 = rng.random_range(0..=n - h);
        let x0 = rng.random_range(0..=n - w);
        for row in image.chunks_exact_mut(n).skip(y0).take(h) {
            for p in &mut row[x0..x0 + w] {
                *p = rng.random();
            }
        }
        return;
    }
}

/// Exact integer translation (content moves by `dx`, `dy`) and optional mirror.
fn shift_flip(image: &[u8; IMAGE_PIXELS], dx: i32, dy: i32, flip: bool) -> [u8; IMAGE_PIXELS] {
    let n = IMAGE_SIDE as i32;
    let mut out = [0u8; IMAGE_PIXELS];
    for y in 0..n {
        let sy = y - dy;
        if !(0..n).contains(&sy) {
            continue;
        }
        for x in 0..n {
            let mut sx = x - dx;
            if flip {
                sx = n - 1 - sx;
            }
            if (0..n).contains(&sx) {
                out[(y * n + x) as usize] = image[(sy * n + sx) as usize];
            }
        }
    }
    out
}

/// Rotation by `theta` about the image centre, then translation and optional mirror, sampling
/// the source bilinearly (black outside).
fn warp(
    image: &[u8; IMAGE_PIXELS],
    dx: f32,
    dy: f32,
    flip: bool,
    theta: f32,
) -> [u8; IMAGE_PIXELS] {
    let n = IMAGE_SIDE as i32;
    let c = (IMAGE_SIDE as f32 - 1.0) / 2.0;
    let (sin, cos) = theta.sin_cos();
    let px = |x: i32, y: i32| -> f32 {
        if (0..n).contains(&x) && (0..n).contains(&y) {
            image[(y * n + x) as usize] as f32
        } else {
            0.0
        }
    };
    let mut out = [0u8; IMAGE_PIXELS];
    for y in 0..n {
        for x in 0..n {
            let mut u = x as f32 - c - dx;
            let v = y as f32 - c - dy;
            if flip {
                u = -u;
            }
            // Inverse rotation: where in the source this output pixel comes from.
            let sx = cos * u + sin * v + c;
            let sy = -sin * u + cos * v + c;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i32, y0 as i32);
            let top = px(x0, y0) * (1.0 - fx) + px(x0 + 1, y0) * fx;
            let bottom = px(x0, y0 + 1) * (1.0 - fx) + px(x0 + 1, y0 + 1) * fx;
            let v = top * (1.0 - fy) + bottom * fy;
            out[(y * n + x) as usize] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> [u8; IMAGE_PIXELS] {
        core::array::from_fn(|i| (i % 251) as u8 + 1)
    }

    #[test]
    fn off_is_the_identity_and_draws_nothing() {
        let img = ramp();
        let mut a = Augment::rng(7, 3);
        let mut b = a.clone();
        assert!(Augment::default().apply(&img, &mut a) == img);
        assert_eq!(a.random::<u64>(), b.random::<u64>());
    }

    #[test]
    fn shift_moves_content_and_fills_black() {
        let img = ramp();
        let out = shift_flip(&img, 2, -1, false);
        // out(x, y) = in(x - 2, y + 1)
        assert_eq!(out[5 * 28 + 7], img[6 * 28 + 5]);
        assert_eq!(out[5 * 28 + 1], 0, "left columns come from outside");
        assert_eq!(out[27 * 28 + 10], 0, "bottom row comes from outside");
    }

    #[test]
    fn flip_mirrors_rows_and_twice_is_identity() {
        let img = ramp();
        let f = shift_flip(&img, 0, 0, true);
        assert_eq!(f[3 * 28], img[3 * 28 + 27]);
        assert!(shift_flip(&f, 0, 0, true) == img);
    }

    #[test]
    fn zero_angle_warp_equals_exact_shift_and_flip() {
        let img = ramp();
        for (dx, dy, flip) in [(0, 0, false), (2, -2, false), (-1, 2, true)] {
            assert!(warp(&img, dx as f32, dy as f32, flip, 0.0) == shift_flip(&img, dx, dy, flip));
        }
    }

    #[test]
    fn quarter_turn_rotates_a_bar() {
        // A horizontal bar through the centre becomes a vertical one.
        let mut img = [0u8; IMAGE_PIXELS];
        for x in 4..24 {
            img[13 * 28 + x] = 255;
            img[14 * 28 + x] = 255;
        }
        let r = warp(&img, 0.0, 0.0, false, std::f32::consts::FRAC_PI_2);
        assert_eq!(r[8 * 28 + 13], 255);
        assert_eq!(r[8 * 28 + 14], 255);
        assert_eq!(r[13 * 28 + 6], 0);
    }

    #[test]
    fn erase_fills_one_rectangle_of_the_drawn_size_and_off_draws_nothing_extra() {
        let img = [0u8; IMAGE_PIXELS];
        let on = Augment {
            erase: 1.0,
            ..Default::default()
        };
        let mut sizes = std::collections::BTreeSet::new();
        for step in 0..200 {
            let out = on.apply(&img, &mut Augment::rng(3, step));
            // The non-zero pixels lie inside one rectangle of 2 – 40 % of the image.
            let lit: Vec<(usize, usize)> = (0..IMAGE_PIXELS)
                .filter(|&i| out[i] != 0)
                .map(|i| (i / 28, i % 28))
                .collect();
            assert!(!lit.is_empty(), "step {step}: nothing erased");
            let (y0, y1) = (
                lit.iter().map(|p| p.0).min().unwrap(),
                lit.iter().map(|p| p.0).max().unwrap(),
            );
            let (x0, x1) = (
                lit.iter().map(|p| p.1).min().unwrap(),
                lit.iter().map(|p| p.1).max().unwrap(),
            );
            let area = (y1 - y0 + 1) * (x1 - x0 + 1);
            assert!(
                lit.len() * 10 > area * 9,
                "step {step}: the fill is not one rectangle"
            );
            assert!(
                (IMAGE_PIXELS / 100..=IMAGE_PIXELS / 2).contains(&area),
                "step {step}: area {area}"
            );
            sizes.insert(area);
        }
        assert!(sizes.len() > 20, "rectangles vary in size: {sizes:?}");
        // Off (probability 0), a mirror-only recipe draws its one coin and nothing more, as
        // before erasing existed: old runs and checkpoints continue bit-identically.
        let flip = Augment {
            flip: true,
            ..Default::default()
        };
        let (mut a, mut b) = (Augment::rng(1, 1), Augment::rng(1, 1));
        flip.apply(&ramp(), &mut a);
        let _ = b.random_bool(0.5);
        assert_eq!(a.random::<u64>(), b.random::<u64>());
    }

    #[test]
    fn same_seed_and_step_same_images_different_step_different() {
        let aug = Augment {
            shift: 2,
            flip: true,
            rotate_deg: 10.0,
            noise: 0.05,
            erase: 0.5,
        };
        let img = ramp();
        let a = aug.apply(&img, &mut Augment::rng(1, 5));
        let b = aug.apply(&img, &mut Augment::rng(1, 5));
        let c = aug.apply(&img, &mut Augment::rng(1, 6));
        assert!(a == b);
        assert!(a != c);
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let bad = [
            Augment {
                shift: 9,
                ..Default::default()
            },
            Augment {
                rotate_deg: -1.0,
                ..Default::default()
            },
            Augment {
                rotate_deg: f32::NAN,
                ..Default::default()
            },
            Augment {
                noise: 2.0,
                ..Default::default()
            },
            Augment {
                erase: 1.5,
                ..Default::default()
            },
            Augment {
                erase: f32::NAN,
                ..Default::default()
            },
        ];
        for a in bad {
            assert!(a.validate().is_err(), "{a:?}");
        }
        assert!(
            Augment {
                shift: 2,
                flip: true,
                rotate_deg: 10.0,
                noise: 0.1,
                erase: 0.5,
            }
            .validate()
            .is_ok()
        );
    }
}
