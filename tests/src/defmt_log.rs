//! The firmware's defmt log: decoded in-process with the `defmt-decoder` crate (no
//! `defmt-print` binary needed), and numbers read back out of its lines.

use std::path::Path;

/// Decodes a defmt byte stream with the ELF's defmt table.
pub fn decode(elf: &Path, bytes: &[u8]) -> Vec<String> {
    let elf_bytes = std::fs::read(elf).unwrap();
    let table = defmt_decoder::Table::parse(&elf_bytes)
        .expect("bad defmt table")
        .expect("the firmware has no defmt table");
    let mut decoder = table.new_stream_decoder();
    decoder.received(bytes);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                let level = frame
                    .level()
                    .map(|l| l.as_str().to_uppercase())
                    .unwrap_or_default();
                lines.push(format!("{level} {}", frame.display_message()));
            }
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                lines.push("<malformed defmt frame>".into());
                if table.encoding().can_recover() {
                    continue;
                }
                break;
            }
        }
    }
    lines
}

/// Parses the first `u32` after `key` in `line` (e.g. `"... layers 1234, ..."`).
pub fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
