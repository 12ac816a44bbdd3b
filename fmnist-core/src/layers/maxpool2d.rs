//! 2x2 max-pooling with stride 2.

/// 2x2 max-pool, stride 2, over `C` channels.
///
/// # Shapes
/// `[C][H][W]` → `[C][OH][OW]` with `H = 2·OH`, `W = 2·OW`.
pub fn max_pool_2x2<
    T: PartialOrd + Copy,
    const C: usize,
    const H: usize,
    const W: usize,
    const OH: usize,
    const OW: usize,
>(
    input: &[[[T; W]; H]; C],
    out: &mut [[[T; OW]; OH]; C],
) {
    const { assert!(H == 2 * OH && W == 2 * OW) };
    for (plane_in, plane_out) in input.iter().zip(out.iter_mut()) {
        for (oy, row) in plane_out.iter_mut().enumerate() {
            for (ox, o) in row.iter_mut().enumerate() {
                let mut best = plane_in[2 * oy][2 * ox];
                for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                    let v = plane_in[2 * oy + dy][2 * ox + dx];
                    if v > best {
                        best = v;
                    }
                }
                *o = best;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_max_of_each_window() {
        let input = [[
            [1.0, 5.0, -1.0, -2.0],
            [3.0, 2.0, -3.0, -0.5],
            [0.0, 0.0, 9.0, 8.0],
            [0.0, 0.25, 7.0, 6.0],
        ]];
        let mut out = [[[0.0; 2]; 2]];
        max_pool_2x2(&input, &mut out);
        assert_eq!(out, [[[5.0, -0.5], [0.25, 9.0]]]);
    }

    #[test]
    fn works_on_int8() {
        let input = [[[-128i8, -127], [-128, -128]]];
        let mut out = [[[0i8; 1]; 1]];
        max_pool_2x2(&input, &mut out);
        assert_eq!(out, [[[-127]]]);
    }
}
