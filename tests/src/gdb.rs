//! QEMU's gdbstub, driven from a test: a minimal GDB remote-protocol client ([`Gdb`]) and the
//! QEMU child process it talks to ([`Qemu`]). The board test plays the RTT host with it
//! (`board_run`), the example test feeds images and reads results (`example_run`).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// How a stop reply ended.
pub enum Stop {
    /// The CPU stopped (a breakpoint, a single step, an interrupt).
    Stopped,
    /// The program ended through semihosting with this status.
    Exited(i32),
    /// QEMU ended without a semihosting exit (its stderr says why).
    Gone,
}

impl Stop {
    /// Decodes a stop reply.
    pub fn parse(reply: &str) -> Stop {
        match reply.as_bytes().first() {
            Some(b'T' | b'S') => Stop::Stopped,
            Some(b'W') => Stop::Exited(
                i32::from_str_radix(reply[1..].split(';').next().unwrap(), 16)
                    .expect("bad exit status"),
            ),
            Some(b'X') => Stop::Gone,
            _ => panic!("unexpected gdbstub reply {reply:?}"),
        }
    }
}

/// QEMU, killed if still running when dropped.
pub struct Qemu(pub Child);

impl Qemu {
    /// Its exit status, if it exits within `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// The CPU time (user + system) it has used so far, from `/proc/PID/stat` (in clock ticks
    /// of 10 ms, Linux's fixed `USER_HZ`); zero where that cannot be read.
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap_or_default();
        // After the command name in parentheses: field 3 (state) onward; utime and stime are
        // fields 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Duration::from_millis(10 * (ticks(11) + ticks(12)))
    }

    /// Kills it (if still running) and returns its stderr.
    pub fn finish(mut self) -> String {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal GDB remote serial protocol client.
pub struct Gdb {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl Gdb {
    /// Connects to QEMU's gdbstub socket `sock` (retrying until it opens; fails if `qemu`
    /// exits first).
    pub fn connect(sock: &Path, qemu: &mut Child) -> Gdb {
        let t = Instant::now();
        let stream = loop {
            if let Ok(s) = UnixStream::connect(sock) {
                break s;
            }
            if let Some(s) = qemu.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = qemu.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("QEMU exited before its gdbstub opened ({s}): {err}");
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "QEMU's gdbstub did not open {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Gdb {
            stream,
            pending: Vec::new(),
        }
    }

    /// Sends one packet (no wait for its reply).
    pub fn send(&mut self, data: &str) {
        let sum = data.bytes().fold(0u8, |s, b| s.wrapping_add(b));
        self.stream
            .write_all(format!("${data}#{sum:02x}").as_bytes())
            .expect("gdbstub write");
    }

    /// Stops the running CPU (Ctrl-C); a stop reply follows.
    pub fn interrupt(&mut self) {
        // QEMU may have exited since the last poll; the reply that follows reports that.
        let _ = self.stream.write_all(&[3]);
    }

    /// The next packet, skipping acks and console output; `None` if nothing came within `wait`.
    pub fn reply(&mut self, wait: Duration) -> Option<String> {
        let t = Instant::now();
        loop {
            while let Some(start) = self.pending.iter().position(|&b| b == b'$') {
                let Some(end) = self.pending[start..].iter().position(|&b| b == b'#') else {
                    break;
                };
                let end = start + end;
                if self.pending.len() < end + 3 {
                    break;
                }
                let body = String::from_utf8_lossy(&self.pending[start + 1..end]).into_owned();
                self.pending.drain(..end + 3);
                // QEMU 7.2 has no no-ack mode: acknowledge every packet. QEMU closes the
                // socket right after an exit report (`W`), so the ack of that last packet may
                // meet a closed pipe: that is not an error, the packet arrived.
                let _ = self.stream.write_all(b"+");
                if body.starts_with('O') && body != "OK" {
                    continue;
                }
                return Some(body);
            }
            let left = wait.checked_sub(t.elapsed())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                // QEMU ended without an exit report (a lockup abort, say): like `X`.
                Ok(0) => return Some("X".into()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("gdbstub read: {e}"),
            }
        }
    }

    /// Sends a query and returns its reply. A stop reply that arrives meanwhile (an interrupt
    /// that crossed a breakpoint stop) is skipped: no query's reply starts with `T` or `S`.
    pub fn command(&mut self, data: &str) -> String {
        self.send(data);
        loop {
            let r = self
                .reply(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("no reply to {data:?}"));
            if !r.starts_with(['T', 'S']) {
                return r;
            }
        }
    }

    /// Sends a command whose reply must be `OK`.
    pub fn expect_ok(&mut self, data: &str) {
        let r = self.command(data);
        assert_eq!(r, "OK", "gdbstub refused {data:?}");
    }

    /// `len` bytes of target memory at `addr`.
    pub fn read_memory(&mut self, addr: u32, len: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(len as usize);
        // Small requests: the reply must fit QEMU's packet buffer.
        let mut at = addr;
        while at < addr + len {
            let n = (addr + len - at).min(1024);
            let r = self.command(&format!("m{at:x},{n:x}"));
            let bytes = unhex(&r).unwrap_or_else(|| panic!("cannot read {at:#x}: {r:?}"));
            assert_eq!(bytes.len(), n as usize, "short read at {at:#x}");
            out.extend(bytes);
            at += n;
        }
        out
    }

    /// Writes `bytes` to target memory at `addr` (RAM: QEMU ignores debugger writes to
    /// device registers).
    pub fn write_memory(&mut self, addr: u32, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(1024).enumerate() {
            let at = addr + 1024 * i as u32;
            self.expect_ok(&format!("M{at:x},{:x}:{}", chunk.len(), hex(chunk)));
        }
    }

    /// The core registers r0-r15 (QEMU 7.2 answers `p` only to a client that has read its
    /// target description, so this reads them all with `g`, r0-r15 first, 4 bytes each).
    pub fn registers(&mut self) -> [u32; 16] {
        let r = self.command("g");
        let b = unhex(&r).unwrap_or_else(|| panic!("cannot read the registers: {r:?}"));
        assert!(b.len() >= 64, "short register reply {r:?}");
        std::array::from_fn(|n| u32::from_le_bytes(b[4 * n..4 * n + 4].try_into().unwrap()))
    }

    /// Sets core register `n` (r0-r15): all registers read with `g`, written back with `G`
    /// (QEMU 7.2 answers `P`, like `p`, only after its target description is read).
    pub fn set_register(&mut self, n: usize, value: u32) {
        let r = self.command("g");
        let mut b = unhex(&r).unwrap_or_else(|| panic!("cannot read the registers: {r:?}"));
        assert!(b.len() >= 64, "short register reply {r:?}");
        b[4 * n..4 * n + 4].copy_from_slice(&value.to_le_bytes());
        self.expect_ok(&format!("G{}", hex(&b)));
    }

    /// Core register `n` (r0-r15).
    pub fn register(&mut self, n: usize) -> u32 {
        self.registers()[n]
    }
}

/// Bytes as lowercase hex, as the protocol writes them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex back to bytes (`None` if it is not hex).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}
