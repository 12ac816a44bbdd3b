//! The input every network takes: a 28x28 u8 image, its f32 form (`p / 255`) and its int8 form
//! (`p − 128`, zero point −128).

/// Side of the square input image.
pub const IMAGE_SIDE: usize = 28;
/// Pixels per input image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;

/// Scales a pixel to [0, 1]: `p / 255`, one correctly rounded division.
#[inline(always)]
pub fn pixel_to_f32(p: u8) -> f32 {
    p as f32 / 255.0
}

/// Scales an image to `[1][28][28]` f32.
pub fn image_to_f32(image: &[u8; IMAGE_PIXELS]) -> [[[f32; IMAGE_SIDE]; IMAGE_SIDE]; 1] {
    let mut x = [[[0.0; IMAGE_SIDE]; IMAGE_SIDE]; 1];
    for (dst, &p) in x
        .as_flattened_mut()
        .as_flattened_mut()
        .iter_mut()
        .zip(image)
    {
        *dst = pixel_to_f32(p);
    }
    x
}

/// Zero point of the int8 input: `q = p − 128`.
pub const INPUT_ZERO_POINT: i8 = -128;

/// `q = p − 128` for every pixel.
#[inline]
pub fn image_to_i8(image: &[u8; IMAGE_PIXELS]) -> [[[i8; 28]; 28]; 1] {
    let mut x = [[[0i8; 28]; 28]; 1];
    for (q, &p) in x
        .as_flattened_mut()
        .as_flattened_mut()
        .iter_mut()
        .zip(image)
    {
        *q = (p ^ 0x80) as i8;
    }
    x
}
