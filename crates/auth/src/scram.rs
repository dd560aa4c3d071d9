//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) for MQTT 5 enhanced authentication.
//!
//! The server keeps only StoredKey and ServerKey per user (derived when the password is set),
//! never the password. An unknown user gets a salt and iteration count derived from a
//! per-process secret, so the exchange looks the same as for a real user and fails only at
//! the final proof. Channel binding is not offered (`n,,` and `y,,` accepted, `p=` refused).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Iterations for new SCRAM credentials (RFC 7677 asks for at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Cap on a client-sent message, far above any real SCRAM message.
const MAX_MESSAGE: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScramAlg {
    Sha256,
    Sha512,
}

impl ScramAlg {
    pub fn from_method(m: &str) -> Option<ScramAlg> {
        match m {
            "SCRAM-SHA-256" => Some(ScramAlg::Sha256),
            "SCRAM-SHA-512" => Some(ScramAlg::Sha512),
            _ => None,
        }
    }

    pub fn method(self) -> &'static str {
        match self {
            ScramAlg::Sha256 => "SCRAM-SHA-256",
            ScramAlg::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramAlg::Sha256 => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
            ScramAlg::Sha512 => match Hmac::<Sha512>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
        }
    }

    fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramAlg::Sha256 => Sha256::digest(data).to_vec(),
            ScramAlg::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn salted(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramAlg::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            ScramAlg::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// What the server stores per user and algorithm.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramCredential(<redacted>)")
    }
}

impl ScramCredential {
    pub fn derive(alg: ScramAlg, password: &[u8], salt: Vec<u8>, iterations: u32) -> Self {
        let salted = alg.salted(password, &salt, iterations);
        let client_key = alg.hmac(&salted, b"Client Key");
        ScramCredential {
            stored_key: alg.h(&client_key),
            server_key: alg.hmac(&salted, b"Server Key"),
            salt,
            iterations,
        }
    }

    pub fn new_random(alg: ScramAlg, password: &[u8]) -> Self {
        let salt: [u8; 16] = rand::random();
        Self::derive(alg, password, salt.to_vec(), DEFAULT_ITERATIONS)
    }

    /// Stand-in for an unknown user: stable per (secret, username) so that repeated probes
    /// see the same salt, and useless because its keys are random.
    pub fn decoy(alg: ScramAlg, secret: &[u8; 32], username: &str) -> Self {
        let salt = alg.hmac(secret, username.as_bytes())[..16].to_vec();
        let k: [u8; 32] = rand::random();
        ScramCredential {
            salt,
            iterations: DEFAULT_ITERATIONS,
            stored_key: alg.h(&k),
            server_key: k.to_vec(),
        }
    }
}

/// The server side after the client-first message.
#[derive(Clone)]
pub struct ScramServer {
    pub alg: ScramAlg,
    pub username: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
    cred: ScramCredential,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("alg", &self.alg)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Parses `n,,n=user,r=nonce`; returns (gs2 header, client-first-bare, username, nonce).
pub fn parse_client_first(msg: &[u8]) -> Result<(String, String, String, String), String> {
    if msg.len() > MAX_MESSAGE {
        return Err("client-first message too long".to_string());
    }
    let s = std::str::from_utf8(msg).map_err(|_| "client-first is not UTF-8".to_string())?;
    let (gs2, bare) = if let Some(rest) = s.strip_prefix("n,,") {
        ("n,,", rest)
    } else if let Some(rest) = s.strip_prefix("y,,") {
        ("y,,", rest)
    } else {
        return Err("unsupported GS2 header (channel binding is not offered)".to_string());
    };
    let mut user = None;
    let mut nonce = None;
    for attr in bare.split(',') {
        if let Some(u) = attr.strip_prefix("n=") {
            user = Some(unescape_name(u)?);
        } else if let Some(r) = attr.strip_prefix("r=") {
            nonce = Some(r.to_string());
        } else if attr.starts_with("m=") {
            return Err("mandatory extension not supported".to_string());
        }
    }
    let user = user.ok_or("client-first without n=")?;
    let nonce = nonce
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && c != ','))
        .ok_or("client-first without a valid r=")?;
    Ok((gs2.to_string(), bare.to_string(), user, nonce))
}

fn unescape_name(u: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = u;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err("bad escape in username".to_string());
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err("empty username".to_string());
    }
    Ok(out)
}

impl ScramServer {
    /// Starts the exchange; returns the state and the server-first message.
    pub fn start(
        alg: ScramAlg,
        gs2_header: String,
        client_first_bare: String,
        username: String,
        client_nonce: &str,
        cred: ScramCredential,
    ) -> (ScramServer, Vec<u8>) {
        let snonce: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(snonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&cred.salt),
            cred.iterations
        );
        let out = server_first.clone().into_bytes();
        (
            ScramServer {
                alg,
                username,
                client_first_bare,
                server_first,
                nonce,
                gs2_header,
                cred,
            },
            out,
        )
    }

    /// Checks the client-final message; `Ok(server-final)` when the proof is right.
    pub fn finish(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        if msg.len() > MAX_MESSAGE {
            return Err("client-final message too long".to_string());
        }
        let s = std::str::from_utf8(msg).map_err(|_| "client-final is not UTF-8".to_string())?;
        let (without_proof, proof) = s.rsplit_once(",p=").ok_or("client-final without p=")?;
        let mut cbind = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                cbind = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        if cbind != Some(B64.encode(&self.gs2_header).as_str()) {
            return Err("channel binding mismatch".to_string());
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err("nonce mismatch".to_string());
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| "bad proof encoding".to_string())?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_sig = self
            .alg
            .hmac(&self.cred.stored_key, auth_message.as_bytes());
        if proof.len() != client_sig.len() {
            return Err("bad proof length".to_string());
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_sig).map(|(a, b)| a ^ b).collect();
        let ok: bool = self.alg.h(&client_key).ct_eq(&self.cred.stored_key).into();
        if !ok {
            return Err("wrong proof".to_string());
        }
        let server_sig = self
            .alg
            .hmac(&self.cred.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_sig)).into_bytes())
    }
}

/// A SCRAM client, for tests and tools.
pub struct ScramClient {
    alg: ScramAlg,
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    server_sig: Vec<u8>,
}

impl ScramClient {
    pub fn new(alg: ScramAlg, username: &str, password: &[u8]) -> (ScramClient, Vec<u8>) {
        let n: [u8; 18] = rand::random();
        let nonce = B64.encode(n);
        let user = username.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={user},r={nonce}");
        let first = format!("n,,{bare}").into_bytes();
        (
            ScramClient {
                alg,
                password: password.to_vec(),
                client_first_bare: bare,
                nonce,
                server_sig: Vec::new(),
            },
            first,
        )
    }

    /// The client-final message for a server-first message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let sf = std::str::from_utf8(server_first).map_err(|_| "not UTF-8".to_string())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iter = None;
        for a in sf.split(',') {
            if let Some(v) = a.strip_prefix("r=") {
                nonce = Some(v.to_string());
            } else if let Some(v) = a.strip_prefix("s=") {
                salt = B64.decode(v).ok();
            } else if let Some(v) = a.strip_prefix("i=") {
                iter = v.parse::<u32>().ok();
            }
        }
        let (nonce, salt, iter) = match (nonce, salt, iter) {
            (Some(n), Some(s), Some(i)) if n.starts_with(&self.nonce) => (n, s, i),
            _ => return Err("bad server-first".to_string()),
        };
        let salted = self.alg.salted(&self.password, &salt, iter);
        let client_key = self.alg.hmac(&salted, b"Client Key");
        let stored = self.alg.h(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let sig = self.alg.hmac(&stored, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = self.alg.hmac(&salted, b"Server Key");
        self.server_sig = self.alg.hmac(&server_key, auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// True if the server-final message proves the server knew the credential.
    pub fn verify_server(&self, server_final: &[u8]) -> bool {
        let expect = format!("v={}", B64.encode(&self.server_sig));
        server_final == expect.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(alg: ScramAlg, stored_pw: &[u8], client_pw: &[u8]) -> Result<bool, String> {
        let cred = ScramCredential::new_random(alg, stored_pw);
        let (mut client, first) = ScramClient::new(alg, "al,ice", client_pw);
        let (gs2, bare, user, nonce) = parse_client_first(&first)?;
        assert_eq!(user, "al,ice");
        let (server, sfirst) = ScramServer::start(alg, gs2, bare, user, &nonce, cred);
        let cfinal = client.respond(&sfirst)?;
        let sfinal = server.finish(&cfinal)?;
        Ok(client.verify_server(&sfinal))
    }

    #[test]
    fn both_algorithms() {
        for alg in [ScramAlg::Sha256, ScramAlg::Sha512] {
            assert_eq!(round(alg, b"pw", b"pw"), Ok(true));
            assert_eq!(round(alg, b"pw", b"px"), Err("wrong proof".to_string()));
        }
    }

    #[test]
    fn rejects_channel_binding_and_garbage() {
        assert!(parse_client_first(b"p=tls-unique,,n=a,r=x").is_err());
        assert!(parse_client_first(b"n,,n=a").is_err());
        assert!(parse_client_first(&[0xff; 10]).is_err());
        assert!(parse_client_first(&vec![b'a'; 5000]).is_err());
    }
}
