//! ReLU, softmax and argmax.

/// ReLU in place: `x = max(x, 0)`.
#[inline]
pub fn relu(xs: &mut [f32]) {
    for x in xs {
        if *x < 0.0 {
            *x = 0.0;
        }
    }
}

/// The index of the largest value; ties go to the lowest index.
pub fn argmax<T: PartialOrd + Copy, const N: usize>(xs: &[T; N]) -> usize {
    const { assert!(N > 0) };
    let mut best = 0;
    for i in 1..N {
        if xs[i] > xs[best] {
            best = i;
        }
    }
    best
}

/// Softmax with the maximum subtracted first (no overflow for any finite input).
pub fn softmax<const N: usize>(logits: &[f32; N]) -> [f32; N] {
    let max = logits[argmax(logits)];
    let mut out = [0.0; N];
    let mut sum = 0.0;
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = libm::expf(l - max);
        sum += *o;
    }
    for o in &mut out {
        *o /= sum;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_close;

    #[test]
    fn relu_clamps_negatives_only() {
        let mut x = [-1.5, 0.0, 2.0, -0.0];
        relu(&mut x);
        assert_eq!(x, [0.0, 0.0, 2.0, -0.0]);
    }

    #[test]
    fn argmax_takes_lowest_index_on_ties() {
        assert_eq!(argmax(&[1, 3, 3, 2]), 1);
        assert_eq!(argmax(&[-128i8; 10]), 0);
        assert_eq!(argmax(&[0.5f32, -1.0, 7.25]), 2);
    }

    #[test]
    fn softmax_hand_checked() {
        // exp(0)=1, exp(ln 3)=3 -> [0.25, 0.75]
        let p = softmax(&[0.0, 3.0f32.ln()]);
        assert_close!(p[0], 0.25);
        assert_close!(p[1], 0.75);
        // Large logits do not overflow.
        let p = softmax(&[1000.0, 1000.0]);
        assert_eq!(p, [0.5, 0.5]);
    }
}
