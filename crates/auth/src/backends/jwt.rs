//! JWT: the MQTT password is a signed token. Keys from a secret, a PEM file or a JWKS URL
//! (refreshed periodically, and at once for an unknown `kid`, at most every 10 seconds).
//! `exp` is required; `exp`, `nbf`, `iss` and `aud` are checked; the token's expiry becomes
//! the identity's, so the broker disconnects the client when the token expires.

use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rampart_config::JwtConfig;
use tokio::sync::Mutex;

use super::{rules_from_json, Answer, Grant};
use crate::ConnectRequest;

/// Largest token accepted: a JWT is a few hundred bytes; this caps the base64 and JSON work.
const MAX_TOKEN: usize = 16 * 1024;
/// Largest JWKS document read.
const MAX_JWKS: usize = 256 * 1024;
/// An unknown `kid` refetches the JWKS at most this often (a flood of made-up kids must not
/// turn into a flood of requests to the identity provider).
const MIN_REFETCH: Duration = Duration::from_secs(10);

enum Keys {
    Static(DecodingKey),
    Jwks {
        url: String,
        client: reqwest::Client,
        refresh: Duration,
        cache: Mutex<Option<(JwkSet, Instant)>>,
    },
}

pub(crate) struct Jwt {
    keys: Keys,
    validation: Validation,
    username_claim: String,
    acl_claim: String,
    superuser_claim: Option<String>,
}

fn alg(s: &str) -> Result<Algorithm, String> {
    s.parse::<Algorithm>()
        .map_err(|_| format!("unsupported algorithm {s}"))
}

impl Jwt {
    pub(crate) fn new(c: &JwtConfig) -> Result<Jwt, String> {
        let algs = c
            .algorithms
            .iter()
            .map(|a| alg(a))
            .collect::<Result<Vec<_>, _>>()?;
        let first = *algs.first().ok_or("no algorithms")?;
        let mut validation = Validation::new(first);
        validation.algorithms = algs.clone();
        validation.leeway = c.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
        }
        match &c.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))
        };
        let keys = if let Some(s) = &c.secret {
            Keys::Static(DecodingKey::from_secret(s.expose().as_bytes()))
        } else if let Some(p) = &c.secret_file {
            let mut bytes = read(p)?;
            // Files usually end with a newline that is not part of the secret.
            while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                bytes.pop();
            }
            if bytes.len() < 32 {
                return Err(format!(
                    "{}: an HMAC secret needs at least 32 bytes",
                    p.display()
                ));
            }
            Keys::Static(DecodingKey::from_secret(&bytes))
        } else if let Some(p) = &c.public_key_file {
            let pem = read(p)?;
            let key = match first {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                _ => DecodingKey::from_rsa_pem(&pem),
            }
            .map_err(|e| format!("{}: not a usable public key: {e}", p.display()))?;
            Keys::Static(key)
        } else if let Some(url) = &c.jwks_url {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("JWKS client: {e}"))?;
            Keys::Jwks {
                url: url.clone(),
                client,
                refresh: Duration::from_secs(c.jwks_refresh_secs),
                cache: Mutex::new(None),
            }
        } else {
            return Err("no key configured".to_string());
        };
        Ok(Jwt {
            keys,
            validation,
            username_claim: c.username_claim.clone(),
            acl_claim: c.acl_claim.clone(),
            superuser_claim: c.superuser_claim.clone(),
        })
    }

    async fn fetch(client: &reqwest::Client, url: &str) -> Result<JwkSet, String> {
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("JWKS fetch: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("JWKS fetch: HTTP {}", resp.status()));
        }
        let body = super::http::read_capped(resp, MAX_JWKS).await?;
        serde_json::from_slice(&body).map_err(|e| format!("JWKS: not a key set: {e}"))
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, String> {
        let (url, client, refresh, cache) = match &self.keys {
            Keys::Static(k) => return Ok(Some(k.clone())),
            Keys::Jwks {
                url,
                client,
                refresh,
                cache,
            } => (url, client, *refresh, cache),
        };
        let mut guard = cache.lock().await;
        let find = |set: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(k) => set.find(k),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            }?;
            DecodingKey::from_jwk(jwk).ok()
        };
        let stale = match &*guard {
            None => true,
            Some((_, at)) => at.elapsed() >= refresh,
        };
        if !stale {
            if let Some((set, at)) = &*guard {
                if let Some(k) = find(set) {
                    return Ok(Some(k));
                }
                if at.elapsed() < MIN_REFETCH {
                    return Ok(None);
                }
            }
        }
        match Self::fetch(client, url).await {
            Ok(set) => {
                let k = find(&set);
                *guard = Some((set, Instant::now()));
                Ok(k)
            }
            // A failed refresh keeps using the keys we have, if they still know this kid.
            Err(e) => match guard.as_ref().and_then(|(set, _)| find(set)) {
                Some(k) => {
                    tracing::warn!(error = %e, "JWKS refresh failed; using cached keys");
                    Ok(Some(k))
                }
                None => Err(e),
            },
        }
    }

    pub(crate) async fn check(&self, req: &ConnectRequest<'_>) -> Result<Answer, String> {
        let Some(pw) = req.password else {
            return Ok(Answer::Ignore);
        };
        let Ok(token) = std::str::from_utf8(pw) else {
            return Ok(Answer::Ignore);
        };
        // Not shaped like a JWT: someone else's password.
        if token.len() > MAX_TOKEN || token.split('.').count() != 3 {
            return Ok(Answer::Ignore);
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(Answer::Deny);
        };
        if !self.validation.algorithms.contains(&header.alg) {
            return Ok(Answer::Deny);
        }
        let Some(key) = self.key_for(header.kid.as_deref()).await? else {
            return Ok(Answer::Deny);
        };
        let data = match jsonwebtoken::decode::<serde_json::Value>(token, &key, &self.validation) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(client_id = ?req.client_id, reason = %e, "JWT refused");
                return Ok(Answer::Deny);
            }
        };
        let claims = data.claims;
        let subject = claims
            .get(&self.username_claim)
            .and_then(|v| v.as_str())
            .map(str::to_string);
        if let (Some(u), Some(s)) = (req.username, &subject) {
            if u != s {
                return Ok(Answer::Deny);
            }
        }
        let acl = match claims.get(&self.acl_claim) {
            Some(v) => rules_from_json(v, "jwt claim")?,
            None => Vec::new(),
        };
        let superuser = self
            .superuser_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let expires_at = claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        Ok(Answer::Allow(Grant {
            username: subject.or_else(|| req.username.map(str::to_string)),
            superuser,
            groups: Vec::new(),
            acl,
            expires_at,
        }))
    }
}
