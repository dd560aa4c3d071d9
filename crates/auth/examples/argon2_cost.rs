//! Cost of one password verification for a few argon2id parameter sets (and the migrated
//! formats), to choose `[auth.password_hash]`. Bounded: 10 verifications per row.
//!
//!     cargo run --release -p rampart-auth --example argon2_cost

use std::time::Instant;

use rampart_config::PasswordHashConfig;

fn main() {
    const RUNS: u32 = 10;
    println!("{:<36} {:>12}", "hash", "ms/verify");
    for (m, t, p) in [(8192, 1, 1), (19456, 2, 1), (47104, 1, 1), (65536, 3, 1)] {
        let params = PasswordHashConfig {
            memory_kib: m,
            iterations: t,
            parallelism: p,
        };
        let h = match rampart_auth::hash::hash_password(b"benchmark", &params) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{e}");
                return;
            }
        };
        row(&format!("argon2id m={m} t={t} p={p}"), &h, RUNS);
    }
    if let Ok(h) = bcrypt::hash("benchmark", 10) {
        row("bcrypt cost 10", &h, RUNS);
    }
    let salt = [7u8; 12];
    let mut dk = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(b"benchmark", &salt, 101, &mut dk);
    use base64::Engine;
    let e = base64::engine::general_purpose::STANDARD;
    row(
        "mosquitto $7$ (101 iterations)",
        &format!("$7$101${}${}", e.encode(salt), e.encode(dk)),
        RUNS,
    );
}

fn row(name: &str, hash: &str, runs: u32) {
    let t = Instant::now();
    for _ in 0..runs {
        assert!(rampart_auth::hash::verify_password(b"benchmark", hash));
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0 / f64::from(runs);
    println!("{name:<36} {ms:>12.2}");
}
