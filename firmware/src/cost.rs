//! A deterministic cost counter.
//!
//! * QEMU (`qemu`): a timer of the machine. With QEMU's `-icount shift=0` one instruction takes
//!   1 ns of virtual time, so the count is identical run to run: the mps2 boards' CMSDK TIMER0
//!   (one tick is 40 instructions at 25 MHz, 50 on the an505 at 20 MHz), the micro:bit's nRF51
//!   TIMER0 (62.5 instructions per tick at 16 MHz).
//! * A real board (`board`): the DWT cycle counter (`DWT.CYCCNT`), in core clock cycles.
//!
//! [`now`] returns a wrapping `u32` count; subtract two readings with `wrapping_sub`.

/// What [`now`] counts.
#[cfg(feature = "qemu")]
pub const UNIT: &str = "instructions";
/// What [`now`] counts.
#[cfg(feature = "board")]
pub const UNIT: &str = "cycles";

/// The CMSDK TIMER0 of the mps2 boards (a 32-bit down counter at the system clock: 25 MHz on
/// the an385/an386/an500, 20 MHz on the an505; the an505's Secure code reaches it at the
/// Non-secure address too).
#[cfg(all(feature = "qemu", not(machine = "microbit")))]
mod imp {
    const TIMER0: usize = 0x4000_0000;
    const CTRL: *mut u32 = TIMER0 as *mut u32;
    const VALUE: *mut u32 = (TIMER0 + 4) as *mut u32;
    const RELOAD: *mut u32 = (TIMER0 + 8) as *mut u32;
    /// Instructions per tick under `-icount shift=0` (1 ns per instruction).
    #[cfg(machine = "mps2-an505")]
    pub const PER_TICK: u32 = 50;
    /// Instructions per tick under `-icount shift=0` (1 ns per instruction).
    #[cfg(not(machine = "mps2-an505"))]
    pub const PER_TICK: u32 = 40;
    pub const DIVISOR: u32 = 1;

    pub fn start() {
        // SAFETY: the CMSDK timer registers of the mps2 machines; nothing else uses TIMER0.
        unsafe {
            RELOAD.write_volatile(u32::MAX);
            VALUE.write_volatile(u32::MAX);
            CTRL.write_volatile(1);
        }
    }

    #[inline(always)]
    pub fn now() -> u32 {
        // SAFETY: a read of the running timer's VALUE register.
        let value = unsafe { VALUE.read_volatile() };
        (u32::MAX - value).wrapping_mul(PER_TICK)
    }
}

/// The nRF51's TIMER0 (an up counter at 16 MHz, prescaler 0, 32-bit mode): one tick is 62.5
/// instructions under `-icount shift=0`, so [`now`] counts half-instructions (125 per tick) and
/// [`measure`] halves the difference. Resolution: one tick, 62.5 instructions.
#[cfg(all(feature = "qemu", machine = "microbit"))]
mod imp {
    const TIMER0: usize = 0x4000_8000;
    const TASKS_START: *mut u32 = TIMER0 as *mut u32;
    const TASKS_CAPTURE0: *mut u32 = (TIMER0 + 0x040) as *mut u32;
    const MODE: *mut u32 = (TIMER0 + 0x504) as *mut u32;
    const BITMODE: *mut u32 = (TIMER0 + 0x508) as *mut u32;
    const PRESCALER: *mut u32 = (TIMER0 + 0x510) as *mut u32;
    const CC0: *mut u32 = (TIMER0 + 0x540) as *mut u32;
    pub const DIVISOR: u32 = 2;

    pub fn start() {
        // SAFETY: the nRF51 TIMER0 registers; nothing else uses TIMER0.
        unsafe {
            MODE.write_volatile(0);
            BITMODE.write_volatile(3);
            PRESCALER.write_volatile(0);
            TASKS_START.write_volatile(1);
        }
    }

    #[inline(always)]
    pub fn now() -> u32 {
        // SAFETY: capture the running count into CC[0] and read it.
        let ticks = unsafe {
            TASKS_CAPTURE0.write_volatile(1);
            CC0.read_volatile()
        };
        ticks.wrapping_mul(125)
    }
}

#[cfg(feature = "board")]
mod imp {
    use cortex_m::peripheral::{DCB, DWT};
    pub const DIVISOR: u32 = 1;

    pub fn start() {
        // SAFETY: single-threaded start-up; only this module touches DCB and DWT.
        let mut p = unsafe { cortex_m::Peripherals::steal() };
        p.DCB.enable_trace();
        p.DWT.enable_cycle_counter();
        let _ = DCB::is_debugger_attached();
    }

    #[inline(always)]
    pub fn now() -> u32 {
        DWT::cycle_count()
    }
}

/// Starts the counter (once, at boot).
pub fn start() {
    imp::start()
}

/// The current count (wrapping).
#[inline(always)]
pub fn now() -> u32 {
    imp::now()
}

/// Runs `f` and returns its result and its cost.
#[inline(always)]
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, u32) {
    use core::sync::atomic::{Ordering, compiler_fence};
    // The fences keep the compiler from moving `f`'s work across the counter reads.
    compiler_fence(Ordering::SeqCst);
    let t0 = now();
    compiler_fence(Ordering::SeqCst);
    let r = core::hint::black_box(f());
    compiler_fence(Ordering::SeqCst);
    let t1 = now();
    compiler_fence(Ordering::SeqCst);
    (r, t1.wrapping_sub(t0) / imp::DIVISOR)
}
