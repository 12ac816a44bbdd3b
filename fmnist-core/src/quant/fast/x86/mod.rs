//! x86-64 int8 kernels on the CPU's integer dot products, chosen at run time
//! ([`super::host::Kernel`]): AVX2 ([`avx2`]), AVX-VNNI and AVX-512 VNNI ([`vnni`]). One set
//! of layer kernels ([`kernels`]) is generic over the path's dot product; each path compiles
//! the whole forward pass of each network ([`nets`]) under its target features, entered
//! through one `#[target_feature]` function per network.

mod avx2;
mod kernels;
mod nets;
mod vnni;

use core::any::Any;
use std::boxed::Box;

use super::host::{HostNet, Kernel};
use crate::image::IMAGE_PIXELS;
use crate::quant::{LeNetQParams, WideQParams};

/// A packed network and the entry point of its path.
struct Packed<T> {
    net: T,
    /// Safe to call: `kernel` was available when this was built.
    run: unsafe fn(&T, &[u8; IMAGE_PIXELS]) -> [i8; 10],
    kernel: Kernel,
}

impl<T: Send + Sync> HostNet for Packed<T> {
    #[inline]
    fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        // SAFETY: `pack` builds a `Packed` only for a kernel the CPU has.
        unsafe { (self.run)(&self.net, image) }
    }
    fn kernel(&self) -> Kernel {
        self.kernel
    }
}

fn boxed<T: Send + Sync + 'static>(
    net: T,
    run: unsafe fn(&T, &[u8; IMAGE_PIXELS]) -> [i8; 10],
    kernel: Kernel,
) -> Option<Box<dyn HostNet>> {
    Some(Box::new(Packed { net, run, kernel }))
}

/// See [`super::host::pack`]; `kernel` is available and not portable.
pub(super) fn pack(params: &dyn Any, kernel: Kernel) -> Option<Box<dyn HostNet>> {
    debug_assert!(kernel.is_available());
    if let Some(p) = params.downcast_ref::<LeNetQParams>() {
        p.check().ok()?;
        return match kernel {
            Kernel::Portable => None,
            Kernel::Avx2 => boxed(nets::LeNetX86::new(p), avx2::lenet, kernel),
            Kernel::AvxVnni => boxed(nets::LeNetX86::new(p), vnni::lenet_avx_vnni, kernel),
            Kernel::Avx512Vnni => boxed(nets::LeNetX86::new(p), vnni::lenet_avx512_vnni, kernel),
        };
    }
    if let Some(p) = params.downcast_ref::<WideQParams>() {
        p.check().ok()?;
        return match kernel {
            Kernel::Portable => None,
            Kernel::Avx2 => boxed(nets::WideX86::new(p), avx2::wide, kernel),
            Kernel::AvxVnni => boxed(nets::WideX86::new(p), vnni::wide_avx_vnni, kernel),
            Kernel::Avx512Vnni => boxed(nets::WideX86::new(p), vnni::wide_avx512_vnni, kernel),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Network;
    use crate::registry::{LeNetBn, WideCnn};
    use crate::testutil::{Lcg, random_image, random_qparams, random_wide_qparams};

    /// The packed kernels this CPU runs (the test says which it skips).
    fn kernels() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|&k| k != Kernel::Portable)
            .filter(|k| {
                let ok = k.is_available();
                if !ok {
                    eprintln!("skipping {k}: this CPU lacks it");
                }
                ok
            })
            .collect()
    }

    /// An image over all of u8 half the time, a random object image otherwise.
    fn image(r: &mut Lcg, i: u32) -> [u8; IMAGE_PIXELS] {
        if i.is_multiple_of(2) {
            core::array::from_fn(|_| r.range(0, 255) as u8)
        } else {
            random_image(r)
        }
    }

    /// Every path's LeNet-BN logits equal the reference kernels' on random valid models
    /// (weights over all of −127..=127, random requantization) and images.
    #[test]
    fn lenet_every_path_matches_the_reference() {
        for k in kernels() {
            let mut r = Lcg(5);
            for seed in 0..16 {
                let p = random_qparams(300 + seed);
                let net = LeNetBn::int8(&p).unwrap();
                let host = super::super::host::pack(&*p, k).expect("packs");
                assert_eq!(host.kernel(), k);
                for i in 0..20 {
                    let img = image(&mut r, i);
                    let want = LeNetBn::int8_forward_reference(&net, &img);
                    assert_eq!(host.forward(&img), want, "{k}, seed {seed}, image {i}");
                }
            }
        }
    }

    /// The same for the wide CNN.
    #[test]
    fn wide_every_path_matches_the_reference() {
        for k in kernels() {
            let mut r = Lcg(6);
            for seed in 0..3 {
                let p = random_wide_qparams(40 + seed);
                let net = WideCnn::int8(&p).unwrap();
                let host = super::super::host::pack(&*p, k).expect("packs");
                for i in 0..4 {
                    let img = image(&mut r, i);
                    let want = WideCnn::int8_forward_reference(&net, &img);
                    assert_eq!(host.forward(&img), want, "{k}, seed {seed}, image {i}");
                }
            }
        }
    }

    /// Parameters that fail their check are not packed; the portable kernel is never packed.
    #[test]
    fn bad_parameters_and_portable_are_not_packed() {
        let mut p = random_qparams(1);
        assert!(super::super::host::pack(&*p, Kernel::Portable).is_none());
        p.conv1_weight[0][0][0][0] = -128;
        for k in kernels() {
            assert!(super::super::host::pack(&*p, k).is_none(), "{k}");
        }
        assert!(super::super::host::pack(&5u32, Kernel::detect()).is_none());
    }

    /// One layer's lanes through the vectorised output step.
    #[target_feature(enable = "avx2")]
    fn requant_lanes(acc: [i32; 8], rq: &kernels::Rq) -> [i16; 8] {
        use core::arch::x86_64::*;
        let mut out = [0i16; 8];
        // SAFETY: AVX2 is enabled here and checked by the caller; 8 lanes each way.
        unsafe {
            let v = _mm256_loadu_si256(acc.as_ptr().cast());
            _mm_storeu_si128(out.as_mut_ptr().cast(), kernels::requant8(v, rq, 0));
        }
        out
    }

    /// Two layers' worth of 8 lanes through the 16-lane output step.
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
    fn requant_lanes16(acc: [i32; 16], rq: &kernels::Rq) -> [i16; 16] {
        use core::arch::x86_64::*;
        let mut out = [0i16; 16];
        // SAFETY: AVX-512 is enabled here and checked by the caller; 16 lanes each way.
        unsafe {
            let v = _mm512_loadu_si512(acc.as_ptr().cast());
            _mm256_storeu_si256(out.as_mut_ptr().cast(), kernels::requant16(v, rq, 0));
        }
        out
    }

    /// The vectorised output steps (8 lanes, and 16 with AVX-512) equal `Requant::to_i8` lane
    /// by lane, over shifts, zero points, ReLU or not, and accumulators up to the overflow
    /// proof's bound.
    #[test]
    fn requant8_matches_scalar() {
        use crate::quant::QLayerParams;
        if !Kernel::Avx2.is_available() {
            eprintln!("skipping: this CPU lacks AVX2");
            return;
        }
        let avx512 = Kernel::Avx512Vnni.is_available();
        if !avx512 {
            eprintln!("skipping the 16-lane output step: this CPU lacks AVX-512");
        }
        /// `q`'s 8 channels twice.
        fn q16(q: &QLayerParams<8>) -> QLayerParams<16> {
            let mut d: QLayerParams<16> = bytemuck::Zeroable::zeroed();
            d.output_zero_point = q.output_zero_point;
            for l in 0..16 {
                d.bias[l] = q.bias[l % 8];
                d.multiplier[l] = q.multiplier[l % 8];
                d.shift[l] = q.shift[l % 8];
            }
            d
        }
        let mut r = Lcg(77);
        for case in 0..3_000 {
            let mut q: QLayerParams<8> = bytemuck::Zeroable::zeroed();
            q.output_zero_point = r.range(-128, 127) as i8;
            for c in 0..8 {
                q.shift[c] = r.range(-31, 3);
                q.multiplier[c] = if (case + c) % 50 == 0 {
                    0
                } else {
                    r.range(1 << 30, i32::MAX)
                };
                q.bias[c] = r.range(-1000, 1000);
            }
            let relu = case % 2 == 0;
            let rq = kernels::Rq::new(&q, &[0; 8], 0, relu, 8);
            let lo = crate::quant::requant::clamp_floor(q.output_zero_point, relu);
            for _ in 0..32 {
                let acc: [i32; 8] = core::array::from_fn(|c| {
                    let lim = (i32::MAX >> q.shift[c].max(0)) as i64 - 1000;
                    let wide = (r.next_u32() as i32) >> r.range(0, 30);
                    let v = if c % 3 == 0 { -wide } else { wide } as i64;
                    v.clamp(-lim, lim) as i32
                });
                // SAFETY: AVX2 checked above.
                let got = unsafe { requant_lanes(acc, &rq) };
                let want: [i16; 8] = core::array::from_fn(|c| {
                    q.requant(c)
                        .to_i8(acc[c] + q.bias[c], q.output_zero_point as i32, lo)
                        as i16
                });
                assert_eq!(got, want, "{q:?} {acc:?}");
                if avx512 {
                    // The same 8 lanes twice, the second copy's accumulators negated.
                    let rq16 = kernels::Rq::new(&q16(&q), &[0; 16], 0, relu, 16);
                    let acc16: [i32; 16] =
                        core::array::from_fn(|l| if l < 8 { acc[l] } else { -acc[l - 8] });
                    // SAFETY: AVX-512 checked above.
                    let got16 = unsafe { requant_lanes16(acc16, &rq16) };
                    let want16: [i16; 16] = core::array::from_fn(|l| {
                        let c = l % 8;
                        q.requant(c)
                            .to_i8(acc16[l] + q.bias[c], q.output_zero_point as i32, lo)
                            as i16
                    });
                    assert_eq!(got16, want16, "{q:?} {acc16:?}");
                }
            }
        }
    }
}
