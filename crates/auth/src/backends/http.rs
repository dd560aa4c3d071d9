//! HTTP: the broker asks an auth service. POST sends the configured params as a JSON object,
//! GET as a query string (values encoded, never spliced into the URL text).
//!
//! The answer: HTTP 200 with a JSON body `{"result": "allow" | "deny" | "ignore",
//! "is_superuser": bool, "acl": [...], "username": "..."}`; 204 is allow; 401 and 403 are
//! deny; anything else (and a body that does not parse) is a backend error, which denies.

use std::time::Duration;

use rampart_config::HttpConfig;

use super::{fill, rules_from_json, Answer, Grant};
use crate::ConnectRequest;

/// Largest response body read.
const MAX_BODY: usize = 64 * 1024;

pub(crate) struct Http {
    client: reqwest::Client,
    url: String,
    post: bool,
    params: Vec<(String, String)>,
    headers: Vec<(String, rampart_config::AuthSecret)>,
}

/// Reads a body up to `cap` bytes; more is an error (a misbehaving server cannot make us
/// buffer without bound).
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {}", e.without_url()))?
    {
        if out.len() + chunk.len() > cap {
            return Err(format!("answer larger than {cap} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

impl Http {
    pub(crate) fn new(c: &HttpConfig) -> Result<Http, String> {
        let mut b = reqwest::Client::builder()
            // The chain's timeout bounds the whole call; this bounds a stuck connect.
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(c.url.to_ascii_lowercase().starts_with("https://"));
        if let Some(p) = &c.ca_file {
            let pem = std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: not a PEM bundle: {e}", p.display()))?;
            for cert in certs {
                b = b.add_root_certificate(cert);
            }
        }
        let client = b.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Http {
            client,
            url: c.url.clone(),
            post: c.method == "POST",
            params: c.params.clone(),
            headers: c.headers.clone(),
        })
    }

    pub(crate) async fn check(&self, req: &ConnectRequest<'_>) -> Result<Answer, String> {
        let values: Vec<(String, String)> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), fill(v, req)))
            .collect();
        let mut r = if self.post {
            let body: serde_json::Map<String, serde_json::Value> = values
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            self.client.post(&self.url).json(&body)
        } else {
            self.client.get(&self.url).query(&values)
        };
        for (k, v) in &self.headers {
            r = r.header(k.as_str(), v.expose());
        }
        // `without_url`: a GET URL carries the password in its query string.
        let resp = r
            .send()
            .await
            .map_err(|e| format!("request: {}", e.without_url()))?;
        let status = resp.status().as_u16();
        match status {
            204 => return Ok(Answer::Allow(Grant::default())),
            401 | 403 => return Ok(Answer::Deny),
            200 => {}
            other => return Err(format!("HTTP {other}")),
        }
        let body = read_capped(resp, MAX_BODY).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
        match v.get("result").and_then(|r| r.as_str()) {
            Some("allow") => {}
            Some("deny") => return Ok(Answer::Deny),
            Some("ignore") => return Ok(Answer::Ignore),
            _ => return Err("answer without result allow/deny/ignore".to_string()),
        }
        let acl = match v.get("acl") {
            Some(a) => rules_from_json(a, "http answer")?,
            None => Vec::new(),
        };
        Ok(Answer::Allow(Grant {
            username: v
                .get("username")
                .and_then(|u| u.as_str())
                .map(str::to_string),
            superuser: v
                .get("is_superuser")
                .and_then(|b| b.as_bool())
                .unwrap_or(false),
            groups: Vec::new(),
            acl,
            expires_at: None,
        }))
    }
}
