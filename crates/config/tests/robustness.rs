//! Damaged configs never panic and always produce well-formed errors.

use rampart_config::*;

/// A small deterministic PRNG (xorshift64*), so that failures reproduce without a seed file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "\"",
    "'",
    "\n",
    "#",
    ",",
    "{",
    "}",
    ".",
    "-1",
    "0",
    "99999999999999999999",
    "true",
    "1.5",
    "1979-05-27",
    "\"\u{1F600}\"",
    "listeners",
    "tls",
    "__",
    "\\",
    "\"\"\"",
];

#[test]
fn mutated_examples_never_panic() {
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rampart.example.toml"),
    )
    .expect("read example");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Bounded: 3000 mutants of a ~7 KiB file take well under a second.
    for _ in 0..3000 {
        let mut chars: Vec<char> = base.chars().collect();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(chars.len());
            match rng.below(3) {
                0 => {
                    let len = rng.below(40).min(chars.len() - at);
                    chars.drain(at..at + len);
                }
                1 => {
                    let piece = PIECES[rng.below(PIECES.len())];
                    for (i, c) in piece.chars().enumerate() {
                        chars.insert(at + i, c);
                    }
                }
                _ => {
                    let from = rng.below(chars.len());
                    let len = rng.below(30).min(chars.len() - from);
                    let copy: Vec<char> = chars[from..from + len].to_vec();
                    for (i, c) in copy.into_iter().enumerate() {
                        chars.insert(at.min(chars.len()) + i, c);
                    }
                }
            }
            if chars.is_empty() {
                break;
            }
        }
        let text: String = chars.into_iter().collect();
        let max_line = text.lines().count() + 1;
        let env = vec![("RAMPART_MQTT__MAX_QOS".to_string(), "1".to_string())];
        match Config::from_str(&text, "m.toml", &env) {
            Ok(c) => assert!(!c.listeners.is_empty()),
            Err(errors) => {
                assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    assert!(
                        e.file == "m.toml" || e.file == "env RAMPART_MQTT__MAX_QOS",
                        "{e}"
                    );
                    if let Some(line) = e.line {
                        assert!(line >= 1 && line <= max_line, "{e} (of {max_line} lines)");
                    }
                    assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
                }
            }
        }
    }
}
