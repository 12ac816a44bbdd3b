//! The host's choice of int8 kernels, made at run time (needs `std`: the `std` feature, or
//! tests): the [`portable`](super::portable) kernels the device's code shares (SSE2 on x86-64),
//! or on x86-64 the [`x86`](super::x86) kernels built on the CPU's integer dot products, whose
//! weights are packed once at load. Every choice gives the same bits: integer sums are exact in
//! any order, and each path is tested byte-identical to the reference kernels.

use core::any::Any;
use std::boxed::Box;

use crate::image::IMAGE_PIXELS;

/// One implementation of the int8 forward pass on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The portable kernels (what `LeNetQ::forward` and `WideQ::forward` run; SSE2 `pmaddwd`
    /// on x86-64).
    Portable,
    /// AVX2 `vpmaddwd` on i16, weights packed at load (x86-64).
    Avx2,
    /// AVX-VNNI `vpdpbusd` (VEX, 256-bit), weights packed at load (x86-64).
    AvxVnni,
    /// AVX-512 VNNI `vpdpbusd` (EVEX, 256-bit with VL), weights packed at load (x86-64).
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Portable,
        Kernel::Avx2,
        Kernel::AvxVnni,
        Kernel::Avx512Vnni,
    ];

    /// The name users select it by: `portable`, `avx2`, `avx-vnni`, `avx512-vnni`.
    pub const fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::AvxVnni => "avx-vnni",
            Kernel::Avx512Vnni => "avx512-vnni",
        }
    }

    /// The kernel of a [`Kernel::name`] (ASCII case-insensitive).
    pub fn from_name(name: &str) -> Option<Kernel> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// Whether this CPU runs it.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            match self {
                Kernel::Portable => true,
                Kernel::Avx2 => has!("avx2"),
                Kernel::AvxVnni => has!("avx2") && has!("avxvnni"),
                Kernel::Avx512Vnni => {
                    has!("avx2")
                        && has!("avx512f")
                        && has!("avx512bw")
                        && has!("avx512vl")
                        && has!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Portable
        }
    }

    /// The fastest kernel this CPU runs (measured on a Xeon with all of them:
    /// `fmnist-infer bench`, see the README).
    pub fn detect() -> Kernel {
        [Kernel::Avx512Vnni, Kernel::AvxVnni, Kernel::Avx2]
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Portable)
    }
}

impl core::fmt::Display for Kernel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// An int8 network packed for one [`Kernel`]: the logits of an image, bit-identical to the
/// network's reference pass.
pub trait HostNet: Send + Sync {
    /// The int8 logits of one image.
    fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10];
    /// The kernel it runs.
    fn kernel(&self) -> Kernel;
}

/// `params` (a network's int8 parameters: `LeNetQParams` or `WideQParams`) packed for
/// `kernel`. `None` for [`Kernel::Portable`] (run the network's own forward pass), for a kernel
/// this CPU lacks, for a network without packed kernels, and for parameters that fail their
/// check (the overflow proof the exactness rests on).
pub fn pack(params: &dyn Any, kernel: Kernel) -> Option<Box<dyn HostNet>> {
    if kernel == Kernel::Portable || !kernel.is_available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        super::x86::pack(params, kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = params;
        None
    }
}
