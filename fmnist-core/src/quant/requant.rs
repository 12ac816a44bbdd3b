//! Requantization: an i32 accumulator times a real scale `M = multiplier · 2^(shift − 31)`,
//! in integers only, exactly as TensorFlow Lite's reference `MultiplyByQuantizedMultiplier`
//! (`tensorflow/lite/kernels/internal/common.h`, the double-rounding variant built from gemmlowp's
//! `SaturatingRoundingDoublingHighMul` and `RoundingDivideByPOT`).
//!
//! ```text
//! left  = max(shift, 0)          right = max(−shift, 0)
//! a     = x · 2^left                                     (never overflows: see the proof in
//!                                                         `quant::lenet` and `QChannels::check`)
//! h     = SaturatingRoundingDoublingHighMul(a, multiplier)
//!       = a == b == i32::MIN ? i32::MAX
//!                            : trunc((a·b + (a·b ≥ 0 ? 2^30 : 1 − 2^30)) / 2^31)   (in i64)
//! y     = RoundingDivideByPOT(h, right)
//!       = (h >> right) + ((h & mask) > (mask >> 1) + (h < 0)),  mask = 2^right − 1
//! ```
//! Both steps round to nearest. Ties differ, as in TFLite: the high multiply's negative nudge
//! is `1 − 2^30`, so its ties go toward +∞ (−1.5 → −1, 1.5 → 2); the divide's ties go away from
//! zero (−1.5 → −2, 1.5 → 2). Every step is monotone
//! non-decreasing in `x` when `multiplier ≥ 0`, which is what lets a fused kernel max-pool the
//! accumulators and requantize once.

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: `round(a·b / 2^31)` to nearest, ties toward
/// +∞ (the negative nudge is `1 − 2^30`, then the division truncates toward zero), saturating the single overflowing case `i32::MIN · i32::MIN` to `i32::MAX`.
#[inline(always)]
pub const fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    // TFLite computes `(ab + nudge) / 2^31` with `nudge = ab >= 0 ? 2^30 : 1 - 2^30` and a
    // division truncating toward zero. That equals `floor((ab + 2^30) / 2^31)` for both signs
    // (for ab < 0: trunc(v / 2^31) = floor((v + 2^31 - 1) / 2^31) with v = ab + 1 - 2^30), an
    // arithmetic shift without a branch; `literal_tflite_form_agrees` checks the identity.
    ((a as i64 * b as i64 + (1 << 30)) >> 31) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `round(x / 2^exponent)` with ties away from zero,
/// for `exponent` in `0..=31`.
#[inline(always)]
pub const fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    debug_assert!(exponent <= 31);
    let mask = ((1u32 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + (x < 0) as i32;
    (x >> exponent) + (remainder > threshold) as i32
}

/// TensorFlow Lite's reference `MultiplyByQuantizedMultiplier(x, multiplier, shift)`:
/// `x · multiplier · 2^(shift − 31)`, rounded as documented at the top of this module.
///
/// `shift` must lie in `-31..=30` and `x · 2^max(shift, 0)` must fit in an i32; model files are
/// checked for both before any kernel runs (the overflow proof in `quant::lenet`).
#[inline(always)]
pub const fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let (left, right) = if shift > 0 {
        (shift as u32, 0)
    } else {
        (0, (-shift) as u32)
    };
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x * (1 << left), multiplier),
        right,
    )
}

/// The requantization of one output channel, as stored in the model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requant {
    /// Q31 fixed-point multiplier in `[2^30, 2^31)`, or 0 for a zero scale.
    pub multiplier: i32,
    /// Power-of-two exponent, `-31..=30` (positive: left shift before the multiply).
    pub shift: i32,
}

impl Requant {
    /// `multiply_by_quantized_multiplier(acc, multiplier, shift)`.
    #[inline(always)]
    pub const fn apply(self, acc: i32) -> i32 {
        multiply_by_quantized_multiplier(acc, self.multiplier, self.shift)
    }

    /// The full output step of a layer: requantize, add the output zero point, clamp to
    /// `[lo, 127]` (`lo` = the output zero point for a fused ReLU, −128 otherwise).
    #[inline(always)]
    pub const fn to_i8(self, acc: i32, output_zero_point: i32, lo: i32) -> i8 {
        let v = self.apply(acc).saturating_add(output_zero_point);
        let v = if v < lo { lo } else { v };
        (if v > 127 { 127 } else { v }) as i8
    }
}

/// The lowest clamp of a layer's output: its zero point with a fused ReLU (real 0), −128 without.
#[inline(always)]
pub const fn clamp_floor(output_zero_point: i8, relu: bool) -> i32 {
    if relu { output_zero_point as i32 } else { -128 }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values below are derived by hand from the definitions (and agree with TFLite's
    // C++ reference, which computes the same integer expressions).

    #[test]
    fn high_mul_hand_checked() {
        // 2^30 · 2^30 / 2^31 = 2^29 exactly.
        assert_eq!(
            saturating_rounding_doubling_high_mul(1 << 30, 1 << 30),
            1 << 29
        );
        // 3 · 2^30 / 2^31 = 1.5 -> 2; -1.5 -> -1: ties go toward +inf, because the negative
        // nudge is 1 - 2^30: (-3·2^30 + 1 - 2^30) / 2^31 = -1.99999... truncates to -1.
        assert_eq!(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
        // 1 · 2^30 / 2^31 = 0.5 -> 1; -0.5 -> 0.
        assert_eq!(saturating_rounding_doubling_high_mul(1, 1 << 30), 1);
        assert_eq!(saturating_rounding_doubling_high_mul(-1, 1 << 30), 0);
        // Just past the tie, negative values round away: -(2^30 + 1) / 2^31 -> -1.
        assert_eq!(saturating_rounding_doubling_high_mul(-(1 << 30) - 1, 1), -1);
        // 0.49999... rounds to 0 on both sides.
        assert_eq!(saturating_rounding_doubling_high_mul(1, (1 << 30) - 1), 0);
        assert_eq!(saturating_rounding_doubling_high_mul(-1, (1 << 30) - 1), 0);
        // The single overflow saturates; MIN · MAX does not overflow.
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        // -2^31 · (2^31 - 1) / 2^31 = -(2^31 - 1) exactly.
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
            -i32::MAX
        );
        // 1000 · 0.75: multiplier 0.75 · 2^31 = 1610612736 -> 750.
        assert_eq!(
            saturating_rounding_doubling_high_mul(1000, 1_610_612_736),
            750
        );
    }

    #[test]
    fn rounding_divide_hand_checked() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3); // 2.5 -> 3
        assert_eq!(rounding_divide_by_pot(-5, 1), -3); // -2.5 -> -3
        assert_eq!(rounding_divide_by_pot(7, 2), 2); // 1.75 -> 2
        assert_eq!(rounding_divide_by_pot(-7, 2), -2); // -1.75 -> -2
        assert_eq!(rounding_divide_by_pot(6, 2), 2); // 1.5 -> 2
        assert_eq!(rounding_divide_by_pot(-6, 2), -2); // -1.5 -> -2
        assert_eq!(rounding_divide_by_pot(5, 2), 1); // 1.25 -> 1
        assert_eq!(rounding_divide_by_pot(-5, 2), -1); // -1.25 -> -1
        assert_eq!(rounding_divide_by_pot(-9, 0), -9);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1); // 0.99999 -> 1
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1); // -1 exactly
        assert_eq!(rounding_divide_by_pot(1 << 30, 31), 1); // 0.5 -> 1
        assert_eq!(rounding_divide_by_pot(-(1 << 30), 31), -1); // -0.5 -> -1
        assert_eq!(rounding_divide_by_pot((1 << 30) - 1, 31), 0);
    }

    #[test]
    fn multiply_by_quantized_multiplier_hand_checked() {
        // M = 0.75 = 1610612736 · 2^-31, shift 0.
        assert_eq!(multiply_by_quantized_multiplier(100, 1_610_612_736, 0), 75);
        // M = 0.75 · 2^-3 = 0.09375: 100 -> 9.375 -> 9; -100 -> -9.
        assert_eq!(multiply_by_quantized_multiplier(100, 1_610_612_736, -3), 9);
        assert_eq!(
            multiply_by_quantized_multiplier(-100, 1_610_612_736, -3),
            -9
        );
        // Double rounding: 12 · 0.09375 = 1.125, high-mul gives 9 (exact), 9/8 = 1.125 -> 1.
        assert_eq!(multiply_by_quantized_multiplier(12, 1_610_612_736, -3), 1);
        // Tie: 20 · 0.09375 = 1.875 -> 2; 4 · 0.09375 = 0.375 -> 0 ; 16 · 0.09375 = 1.5 -> 2.
        assert_eq!(multiply_by_quantized_multiplier(20, 1_610_612_736, -3), 2);
        assert_eq!(multiply_by_quantized_multiplier(4, 1_610_612_736, -3), 0);
        assert_eq!(multiply_by_quantized_multiplier(16, 1_610_612_736, -3), 2);
        assert_eq!(multiply_by_quantized_multiplier(-16, 1_610_612_736, -3), -2);
        // Left shift: M = 0.75 · 2^2 = 3: 7 -> 21.
        assert_eq!(multiply_by_quantized_multiplier(7, 1_610_612_736, 2), 21);
        assert_eq!(multiply_by_quantized_multiplier(-7, 1_610_612_736, 2), -21);
        // Multiplier 0 maps everything to 0.
        assert_eq!(multiply_by_quantized_multiplier(i32::MAX, 0, -5), 0);
        // Full-range accumulators with M just under 1.
        assert_eq!(
            multiply_by_quantized_multiplier(i32::MAX, i32::MAX, 0),
            i32::MAX - 1
        );
        assert_eq!(
            multiply_by_quantized_multiplier(i32::MIN, i32::MAX, 0),
            -i32::MAX
        );
    }

    #[test]
    fn to_i8_saturates_and_clamps() {
        let r = Requant {
            multiplier: 1 << 30, // 0.5
            shift: 0,
        };
        // 1000 · 0.5 = 500 - 128 -> 372 -> 127.
        assert_eq!(r.to_i8(1000, -128, -128), 127);
        // -1000 · 0.5 = -500 + 3 -> -497 -> -128.
        assert_eq!(r.to_i8(-1000, 3, -128), -128);
        // ReLU at zp 3: -10 · 0.5 = -5 + 3 = -2 -> 3.
        assert_eq!(r.to_i8(-10, 3, clamp_floor(3, true)), 3);
        assert_eq!(r.to_i8(-10, 3, clamp_floor(3, false)), -2);
        // 5 · 0.5 = 2.5 -> 3, + -128 = -125; -5 · 0.5 = -2.5 -> -2 (high-mul ties go up).
        assert_eq!(r.to_i8(5, -128, -128), -125);
        assert_eq!(r.to_i8(-5, 0, -128), -2);
        // Extreme zero point: saturating add keeps the clamp correct.
        assert_eq!(
            Requant {
                multiplier: i32::MAX,
                shift: 0
            }
            .to_i8(i32::MAX, 127, -128),
            127
        );
    }

    /// TFLite's expression, literally, as the oracle for the shift form used above.
    fn srdhm_literal(a: i32, b: i32) -> i32 {
        if a == i32::MIN && b == i32::MIN {
            return i32::MAX;
        }
        let ab = a as i64 * b as i64;
        let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
        ((ab + nudge) / (1i64 << 31)) as i32
    }

    #[test]
    fn literal_tflite_form_agrees() {
        let edges = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30) - 1,
            -(1 << 30),
            -(1 << 30) + 1,
            -3,
            -2,
            -1,
            0,
            1,
            2,
            3,
            (1 << 30) - 1,
            1 << 30,
            (1 << 30) + 1,
            i32::MAX - 1,
            i32::MAX,
        ];
        for &a in &edges {
            for &b in &edges {
                assert_eq!(
                    saturating_rounding_doubling_high_mul(a, b),
                    srdhm_literal(a, b),
                    "{a} {b}"
                );
            }
        }
        let mut r = crate::testutil::Lcg(0x2545_f491);
        for _ in 0..2_000_000 {
            let s = r.next_u32();
            let a = (s as i32) >> (s % 24);
            let b = r.next_u32() as i32;
            assert_eq!(
                saturating_rounding_doubling_high_mul(a, b),
                srdhm_literal(a, b),
                "{a} {b}"
            );
        }
    }

    /// Requantization is monotone non-decreasing in the accumulator, so max-pool commutes with
    /// it: checked exhaustively over a wide accumulator range for several scales.
    #[test]
    fn requantization_is_monotone_so_pooling_commutes() {
        let cases = [
            Requant {
                multiplier: 1 << 30,
                shift: 0,
            },
            Requant {
                multiplier: 1_610_612_736,
                shift: -3,
            },
            Requant {
                multiplier: 1_234_567_891,
                shift: -9,
            },
            Requant {
                multiplier: 2_147_483_647,
                shift: -12,
            },
            Requant {
                multiplier: 1_073_741_825,
                shift: -18,
            },
            Requant {
                multiplier: 1_500_000_000,
                shift: 1,
            },
            Requant {
                multiplier: 0,
                shift: 0,
            },
        ];
        for r in cases {
            let mut prev = r.apply(-(1 << 21) - 1);
            for acc in -(1 << 21)..=(1 << 21) {
                let v = r.apply(acc);
                assert!(v >= prev, "{r:?}: f({acc}) = {v} < f({}) = {prev}", acc - 1);
                prev = v;
            }
            // And so pooling the accumulators then requantizing equals the reverse, checked on
            // many windows directly (not only through monotonicity).
            let mut s = crate::testutil::Lcg(0x9e37_79b9);
            for _ in 0..20_000 {
                let mut win = [0i32; 4];
                for a in &mut win {
                    *a = (s.next_u32() as i32) >> 9; // about ±2^22
                }
                let pool_then_q = r.to_i8(*win.iter().max().unwrap(), -128, -128);
                let q_then_pool = win.iter().map(|&a| r.to_i8(a, -128, -128)).max().unwrap();
                assert_eq!(pool_then_q, q_then_pool);
            }
        }
    }
}
