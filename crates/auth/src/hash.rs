//! Password hashes: argon2id for every new hash, and verification of the formats migrated
//! users arrive with.
//!
//! | format                                   | from                                   |
//! |------------------------------------------|----------------------------------------|
//! | `$argon2id$v=19$m=..,t=..,p=..$salt$hash` | Rampart (default), any PHC argon2 tool |
//! | `$pbkdf2-sha512$i=..,l=..$salt$hash`     | PHC PBKDF2 (passlib-style, RustCrypto) |
//! | `$7$iterations$salt$hash` (base64)        | Mosquitto 2 `mosquitto_passwd` (PBKDF2-SHA512) |
//! | `$6$salt$hash` (base64)                   | Mosquitto 1.x (salted SHA-512)          |
//! | `$2a$` / `$2b$` / `$2y$`                  | bcrypt                                 |
//! | `$sha256$salt$hexhash`                    | salted SHA-256 of migrated users: sha256(password + salt) |
//!
//! Every comparison of derived bytes is constant-time. Plain-text "hashes" are never
//! accepted: an unrecognised string verifies nothing.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use parking_lot::Mutex;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use rampart_config::PasswordHashConfig;

/// Upper bound on PBKDF2 iterations accepted from a stored hash: a hash file is trusted
/// input, but a typo of 10^9 iterations should not turn every login into a minute of CPU.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Argon2,
    Pbkdf2Sha512,
    MosquittoPbkdf2,
    MosquittoSha512,
    Bcrypt,
    Sha256Salted,
    Unknown,
}

pub fn kind_of(hash: &str) -> HashKind {
    if hash.starts_with("$argon2") {
        HashKind::Argon2
    } else if hash.starts_with("$pbkdf2-sha512$") {
        HashKind::Pbkdf2Sha512
    } else if hash.starts_with("$7$") {
        HashKind::MosquittoPbkdf2
    } else if hash.starts_with("$6$") {
        HashKind::MosquittoSha512
    } else if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        HashKind::Bcrypt
    } else if hash.starts_with("$sha256$") {
        HashKind::Sha256Salted
    } else {
        HashKind::Unknown
    }
}

fn argon2(p: &PasswordHashConfig) -> Result<Argon2<'static>, String> {
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
        .map_err(|e| format!("argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A new argon2id PHC string with a random 16-byte salt.
pub fn hash_password(password: &[u8], p: &PasswordHashConfig) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2(p)?
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing: {e}"))
}

/// True if `password` matches `hash`. Never panics; a malformed hash is false.
pub fn verify_password(password: &[u8], hash: &str) -> bool {
    match kind_of(hash) {
        HashKind::Argon2 => verify_argon2(password, hash),
        HashKind::Pbkdf2Sha512 => match PasswordHash::new(hash) {
            Ok(h) => {
                let iterations = h.params.get_decimal("i").unwrap_or(0);
                iterations <= MAX_PBKDF2_ITERATIONS
                    && pbkdf2::Pbkdf2.verify_password(password, &h).is_ok()
            }
            Err(_) => false,
        },
        HashKind::MosquittoPbkdf2 => verify_mosquitto_pbkdf2(password, hash),
        HashKind::MosquittoSha512 => verify_mosquitto_sha512(password, hash),
        HashKind::Bcrypt => bcrypt::verify(password, hash).unwrap_or(false),
        HashKind::Sha256Salted => {
            let mut parts = hash.split('$').skip(2);
            let (Some(salt), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
                return false;
            };
            verify_sha256_salted(password, salt.as_bytes(), hex, false)
        }
        HashKind::Unknown => false,
    }
}

/// Upper bound on the argon2 memory cost accepted from a stored hash (KiB): like the PBKDF2
/// bound, a hash from a backend row must not make one login allocate gigabytes.
const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;

/// Scratch memory of finished argon2 verifications, kept for the next ones. Each login would
/// otherwise allocate and free `m` KiB (19 MiB by default) on whichever blocking thread runs
/// it; glibc then keeps those blocks in that thread's arena, so RSS grew with the number of
/// threads that ever verified, far past the `max_concurrent_verifications` x `m` that the
/// verification permits are meant to bound. Reused buffers keep it at that bound.
static ARGON2_SCRATCH: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());
/// At most this many buffers are kept (the permits bound how many are in use at once).
const MAX_POOLED_SCRATCH: usize = 16;

/// Verifies an argon2 PHC string with the parameters inside it, on reused scratch memory.
fn verify_argon2(password: &[u8], hash: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(h.algorithm),
        Params::try_from(&h),
        h.salt,
        h.hash,
    ) else {
        return false;
    };
    let version = match h.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    let ctx = Argon2::new(algorithm, version, params);
    let mut scratch = ARGON2_SCRATCH.lock().pop().unwrap_or_default();
    if scratch.len() < blocks {
        scratch.resize(blocks, Block::default());
    }
    let mut out = [0u8; 64];
    let out = &mut out[..expected.len().min(64)];
    let ok = ctx
        .hash_password_into_with_memory(password, salt, out, &mut scratch[..blocks])
        .is_ok()
        && bool::from(out.ct_eq(expected.as_bytes()));
    let mut pool = ARGON2_SCRATCH.lock();
    if pool.len() < MAX_POOLED_SCRATCH {
        pool.push(scratch);
    }
    ok
}

/// `hex(sha256(password + salt))` (or `salt + password` when `salt_first`), compared in
/// constant time. Used by `$sha256$` hashes and the SQL backends' `sha256-salt` modes.
pub fn verify_sha256_salted(
    password: &[u8],
    salt: &[u8],
    hex_digest: &str,
    salt_first: bool,
) -> bool {
    let mut h = Sha256::new();
    if salt_first {
        h.update(salt);
        h.update(password);
    } else {
        h.update(password);
        h.update(salt);
    }
    let got = hex(&h.finalize());
    got.as_bytes()
        .ct_eq(hex_digest.to_ascii_lowercase().as_bytes())
        .into()
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Mosquitto 2: `$7$<iterations>$<base64 salt>$<base64 pbkdf2-sha512(password, salt)>`.
fn verify_mosquitto_pbkdf2(password: &[u8], hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let [_, _, iter, salt, digest] = parts.as_slice() else {
        return false;
    };
    let (Ok(iter), Some(salt), Some(digest)) = (iter.parse::<u32>(), b64(salt), b64(digest)) else {
        return false;
    };
    if iter == 0 || iter > MAX_PBKDF2_ITERATIONS || digest.is_empty() || digest.len() > 64 {
        return false;
    }
    let mut out = vec![0u8; digest.len()];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iter, &mut out);
    out.ct_eq(&digest).into()
}

/// Mosquitto 1.x: `$6$<base64 salt>$<base64 sha512(password + salt)>`.
fn verify_mosquitto_sha512(password: &[u8], hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let [_, _, salt, digest] = parts.as_slice() else {
        return false;
    };
    let (Some(salt), Some(digest)) = (b64(salt), b64(digest)) else {
        return false;
    };
    let mut h = Sha512::new();
    h.update(password);
    h.update(&salt);
    h.finalize().as_slice().ct_eq(&digest).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One line of a Mosquitto password file: `username:hash`. Blank lines and `#` comments
/// are skipped. Errors name the line.
pub fn parse_mosquitto_passwd(text: &str) -> Result<Vec<(String, String)>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) if !user.is_empty() && kind_of(hash) != HashKind::Unknown => {
                out.push((user.to_string(), hash.to_string()))
            }
            Some((user, _)) if !user.is_empty() => errors.push(format!(
                "line {}: user \"{}\": unrecognised hash (expected $7$ or $6$ from mosquitto_passwd)",
                i + 1,
                user
            )),
            _ => errors.push(format!("line {}: expected username:hash", i + 1)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHashConfig {
        PasswordHashConfig {
            memory_kib: 8192,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn argon2id_round_trip() {
        let h = hash_password(b"correct horse", &cheap()).expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{h}");
        assert!(verify_password(b"correct horse", &h));
        assert!(!verify_password(b"correct horsE", &h));
        assert!(!verify_password(b"", &h));
    }

    #[test]
    fn argon2_variants_and_bounds() {
        // Hashes made by the crate's own hasher (argon2i and argon2d, another version, a
        // shorter output) verify through the reused-scratch path.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        for (alg, version, len) in [
            (Algorithm::Argon2i, Version::V0x13, 32),
            (Algorithm::Argon2d, Version::V0x10, 16),
            (Algorithm::Argon2id, Version::V0x13, 64),
        ] {
            let params = Params::new(1024, 2, 2, Some(len)).expect("params");
            let h = Argon2::new(alg, version, params)
                .hash_password(b"pw", &salt)
                .expect("hash")
                .to_string();
            assert!(verify_password(b"pw", &h), "{h}");
            assert!(!verify_password(b"pw2", &h), "{h}");
        }
        // A stored hash asking for more memory than the bound verifies nothing (and returns
        // at once instead of allocating 4 GiB).
        assert!(!verify_password(
            b"pw",
            "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
        ));
    }

    #[test]
    fn pbkdf2_sha512_phc() {
        use pbkdf2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let h = pbkdf2::Pbkdf2
            .hash_password_customized(
                b"pw",
                Some(pbkdf2::Algorithm::Pbkdf2Sha512.ident()),
                None,
                pbkdf2::Params {
                    rounds: 1000,
                    output_length: 64,
                },
                &salt,
            )
            .expect("hash")
            .to_string();
        assert!(h.starts_with("$pbkdf2-sha512$"), "{h}");
        assert!(verify_password(b"pw", &h));
        assert!(!verify_password(b"pW", &h));
    }

    #[test]
    fn mosquitto_formats() {
        // Built the way mosquitto_passwd builds them.
        let salt = b"0123456789abcdef";
        let mut dk = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(b"secret", salt, 101, &mut dk);
        let e = base64::engine::general_purpose::STANDARD;
        let h7 = format!("$7$101${}${}", e.encode(salt), e.encode(dk));
        assert!(verify_password(b"secret", &h7));
        assert!(!verify_password(b"Secret", &h7));
        let mut sh = Sha512::new();
        sh.update(b"secret");
        sh.update(salt);
        let h6 = format!("$6${}${}", e.encode(salt), e.encode(sh.finalize()));
        assert!(verify_password(b"secret", &h6));
        assert!(!verify_password(b"secreT", &h6));
        let file = format!("# comment\nalice:{h7}\n\nbob:{h6}\n");
        let users = parse_mosquitto_passwd(&file).expect("parse");
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].0, "alice");
        let bad = parse_mosquitto_passwd("carol:plaintext\nnocolon\n").expect_err("bad");
        assert_eq!(bad.len(), 2);
        assert!(bad[0].starts_with("line 1: user \"carol\""), "{bad:?}");
    }

    #[test]
    fn bcrypt_and_sha256() {
        let h = bcrypt::hash("pw", 4).expect("bcrypt");
        assert!(verify_password(b"pw", &h));
        assert!(!verify_password(b"px", &h));
        let mut s = Sha256::new();
        s.update(b"pwSALT");
        let h = format!("$sha256$SALT${}", hex(&s.finalize()));
        assert!(verify_password(b"pw", &h));
        assert!(!verify_password(b"pw2", &h));
    }

    #[test]
    fn unknown_formats_verify_nothing() {
        for h in [
            "pw",
            "",
            "$argon2id$garbage",
            "$7$x$y$z",
            "$sha256$only",
            "$6$$",
        ] {
            assert!(!verify_password(b"pw", h), "{h}");
        }
        // An absurd iteration count is refused instead of burning CPU.
        assert!(!verify_password(b"pw", "$7$4000000000$AAAA$AAAA"));
    }
}
