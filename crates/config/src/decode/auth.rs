//! Decoding of `[auth]`, `[[auth.backends]]` and `[acl]` (types in `crate::auth`).

use super::*;
use crate::auth::*;

pub(super) fn auth_section(cx: &mut Cx, mut r: Reader, listeners: &[ListenerConfig]) -> AuthConfig {
    let d = AuthConfig::default();
    let timeout_ms = r.range(cx, "timeout_ms", d.timeout_ms, 10, 60_000);
    let max_concurrent_verifications = r.range(
        cx,
        "max_concurrent_verifications",
        d.max_concurrent_verifications,
        1,
        256,
    );
    let verified_cache_secs = r.range(cx, "verified_cache_secs", d.verified_cache_secs, 0, 86_400);
    let client_id_ownership = r.get(cx, "client_id_ownership", d.client_id_ownership);
    let ownership_refusal = r.enum_or(
        cx,
        "ownership_refusal",
        d.ownership_refusal,
        &[
            ("client_id_not_valid", OwnershipRefusal::ClientIdNotValid),
            ("not_authorized", OwnershipRefusal::NotAuthorized),
        ],
    );
    let t = r.table(cx, "password_hash");
    let password_hash = password_hash_section(cx, t);
    let t = r.table(cx, "brute_force");
    let brute_force = brute_force_section(cx, t);
    let backends = backends_section(cx, &mut r, listeners);
    r.finish(cx);
    AuthConfig {
        backends,
        timeout_ms,
        max_concurrent_verifications,
        verified_cache_secs,
        password_hash,
        brute_force,
        client_id_ownership,
        ownership_refusal,
    }
}

fn password_hash_section(cx: &mut Cx, mut r: Reader) -> PasswordHashConfig {
    let d = PasswordHashConfig::default();
    let out = PasswordHashConfig {
        memory_kib: r.range(cx, "memory_kib", d.memory_kib, 8192, 1_048_576),
        iterations: r.range(cx, "iterations", d.iterations, 1, 16),
        parallelism: r.range(cx, "parallelism", d.parallelism, 1, 16),
    };
    r.finish(cx);
    out
}

fn brute_force_section(cx: &mut Cx, mut r: Reader) -> BruteForceConfig {
    let d = BruteForceConfig::default();
    let out = BruteForceConfig {
        enabled: r.get(cx, "enabled", d.enabled),
        free_failures: r.range(cx, "free_failures", d.free_failures, 1, 1000),
        max_delay_ms: r.range(cx, "max_delay_ms", d.max_delay_ms, 0, 60_000),
        lockout_after: r.range(cx, "lockout_after", d.lockout_after, 2, 100_000),
        lockout_secs: r.range(cx, "lockout_secs", d.lockout_secs, 1, 86_400),
        window_secs: r.range(cx, "window_secs", d.window_secs, 1, 86_400),
        max_tracked: r.range(cx, "max_tracked", d.max_tracked, 100, 10_000_000),
    };
    if out.lockout_after <= out.free_failures {
        r.cross(
            cx,
            "lockout_after",
            format!(
                "{} must be larger than free_failures ({})",
                out.lockout_after, out.free_failures
            ),
        );
    }
    r.finish(cx);
    out
}

fn backends_section(
    cx: &mut Cx,
    auth: &mut Reader,
    listeners: &[ListenerConfig],
) -> Vec<BackendConfig> {
    let path = auth.path("backends");
    let Some(entry) = auth.entry("backends") else {
        return Vec::new();
    };
    let Kind::Array(items) = &entry.node.kind else {
        cx.err(
            &entry.node.origin,
            &path,
            format!(
                "expected an array of tables ([[auth.backends]]), found {}",
                entry.node.kind.noun()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    // Names are checked for duplicates even on backends with other errors.
    let mut names: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Kind::Table(t) = &item.kind else {
            cx.err(
                &item.origin,
                &p,
                format!("expected a table, found {}", item.kind.noun()),
            );
            continue;
        };
        if let Some(e) = t.get("name") {
            if let Ok(name) = String::from_node(&e.node) {
                if names.contains(&name) {
                    cx.err(
                        &e.node.origin,
                        format!("{p}.name"),
                        format!("duplicate backend name \"{}\"", clip(&name)),
                    );
                }
                names.push(name);
            }
        }
        let r = Reader::new(t, p, item.origin.clone());
        if let Some(b) = backend(cx, r, listeners) {
            out.push(b);
        }
    }
    out
}

/// `https://...`, or `http://` to a loopback host (credentials must not cross a network in clear).
fn secure_url(s: &str, secure: &str, plain: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if lower.starts_with(&format!("{secure}://")) {
        return Ok(s.to_string());
    }
    if let Some(rest) = lower.strip_prefix(&format!("{plain}://")) {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
        let host = if host.starts_with('[') {
            host.split(']').next().unwrap_or("").trim_start_matches('[')
        } else {
            host.split(':').next().unwrap_or("")
        };
        let loopback = host == "localhost"
            || host
                .parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false);
        if loopback {
            return Ok(s.to_string());
        }
        return Err(format!(
            "\"{}\": {plain}:// is only allowed to a loopback host; use {secure}://",
            clip(s)
        ));
    }
    Err(format!("\"{}\" must start with {secure}://", clip(s)))
}

fn string_map(cx: &mut Cx, r: Reader) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in &r.table.entries {
        match String::from_node(&e.node) {
            Ok(v) => out.push((e.key.clone(), v)),
            Err(msg) => cx.err(&e.node.origin, r.path(&e.key), msg),
        }
    }
    cx.asked.push(r.path.clone());
    out
}

fn backend(cx: &mut Cx, mut r: Reader, listeners: &[ListenerConfig]) -> Option<BackendConfig> {
    let name = r.opt_parse(cx, "name", valid_name);
    let kind = r.opt::<String>(cx, "kind");
    let listener_names = r.get::<Vec<String>>(cx, "listeners", Vec::new());
    for l in &listener_names {
        if !listeners.iter().any(|x| &x.name == l) {
            r.cross(
                cx,
                "listeners",
                format!("no listener is named \"{}\"", clip(l)),
            );
        }
    }
    let timeout_ms = r.opt_range::<u64>(cx, "timeout_ms", 10, 60_000);
    if !r.has("name") {
        r.missing(cx, "name");
    }
    let Some(kind_s) = kind else {
        if !r.has("kind") {
            r.missing(cx, "kind");
        }
        r.finish(cx);
        return None;
    };
    let kind = match kind_s.as_str() {
        "builtin" => Some(BackendKind::Builtin {
            mosquitto_password_file: r.opt::<PathBuf>(cx, "mosquitto_password_file"),
        }),
        "certificate" => Some(BackendKind::Certificate {
            username_from: r.enum_or(
                cx,
                "username_from",
                CertField::CommonName,
                &CertField::NAMES,
            ),
        }),
        "jwt" => jwt(cx, &mut r).map(BackendKind::Jwt),
        "http" => http(cx, &mut r).map(BackendKind::Http),
        "postgres" => sql(cx, &mut r, SqlEngine::Postgres).map(BackendKind::Sql),
        "mysql" => sql(cx, &mut r, SqlEngine::Mysql).map(BackendKind::Sql),
        "redis" => redis(cx, &mut r).map(BackendKind::Redis),
        "ldap" => ldap(cx, &mut r).map(BackendKind::Ldap),
        "scram" => Some(BackendKind::Scram),
        other => {
            r.cross(
                cx,
                "kind",
                format!(
                    "expected one of \"builtin\", \"certificate\", \"jwt\", \"http\", \"postgres\", \"mysql\", \"redis\", \"ldap\", \"scram\", found \"{}\"",
                    clip(other)
                ),
            );
            None
        }
    };
    r.finish(cx);
    Some(BackendConfig {
        name: name?,
        listeners: listener_names,
        timeout_ms,
        kind: kind?,
    })
}

const JWT_ALGS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384",
];

fn jwt(cx: &mut Cx, r: &mut Reader) -> Option<JwtConfig> {
    let algorithms = r.get::<Vec<String>>(cx, "algorithms", Vec::new());
    let secret = r.opt::<String>(cx, "secret").map(AuthSecret::new);
    let secret_file = r.opt::<PathBuf>(cx, "secret_file");
    let public_key_file = r.opt::<PathBuf>(cx, "public_key_file");
    let jwks_url = r.opt_parse(cx, "jwks_url", |s| secure_url(s, "https", "http"));
    let jwks_refresh_secs = r.range(cx, "jwks_refresh_secs", 300, 10, 86_400);
    let issuer = r.opt::<String>(cx, "issuer");
    let audience = r.opt::<String>(cx, "audience");
    let leeway_secs = r.range(cx, "leeway_secs", 30, 0, 600);
    let username_claim = r.get(cx, "username_claim", "sub".to_string());
    let acl_claim = r.get(cx, "acl_claim", "acl".to_string());
    let superuser_claim = r.opt::<String>(cx, "superuser_claim");
    let mut ok = true;
    if algorithms.is_empty() {
        r.missing(cx, "algorithms");
        ok = false;
    }
    for a in &algorithms {
        if !JWT_ALGS.contains(&a.as_str()) {
            ok = false;
            r.cross(
                cx,
                "algorithms",
                format!(
                    "\"{}\" is not supported; use {}",
                    clip(a),
                    JWT_ALGS.join(", ")
                ),
            );
        }
    }
    let hmac = algorithms.iter().any(|a| a.starts_with("HS"));
    let public = algorithms.iter().any(|a| !a.starts_with("HS"));
    if hmac && public {
        ok = false;
        // Accepting both lets a token signed with the public key as an HMAC secret through.
        r.cross(
            cx,
            "algorithms",
            "mixes HMAC (HS*) with public-key algorithms: a token could be HMAC-signed with the public key; use one family per backend".to_string(),
        );
    }
    let keys = [
        secret.is_some(),
        secret_file.is_some(),
        public_key_file.is_some(),
        jwks_url.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if keys != 1 {
        ok = false;
        r.cross(
            cx,
            "algorithms",
            "set exactly one of secret, secret_file, public_key_file, jwks_url".to_string(),
        );
    } else if hmac && (public_key_file.is_some() || jwks_url.is_some()) {
        ok = false;
        r.cross(
            cx,
            "algorithms",
            "HS* algorithms need secret or secret_file".to_string(),
        );
    } else if public && (secret.is_some() || secret_file.is_some()) {
        ok = false;
        r.cross(
            cx,
            "algorithms",
            "public-key algorithms need public_key_file or jwks_url".to_string(),
        );
    }
    if let Some(s) = &secret {
        if s.expose().len() < 32 {
            ok = false;
            r.cross(
                cx,
                "secret",
                "an HMAC secret needs at least 32 characters".to_string(),
            );
        }
    }
    ok.then_some(JwtConfig {
        algorithms,
        secret,
        secret_file,
        public_key_file,
        jwks_url,
        jwks_refresh_secs,
        issuer,
        audience,
        leeway_secs,
        username_claim,
        acl_claim,
        superuser_claim,
    })
}

fn http(cx: &mut Cx, r: &mut Reader) -> Option<HttpConfig> {
    let url = r.opt_parse(cx, "url", |s| secure_url(s, "https", "http"));
    if !r.has("url") {
        r.missing(cx, "url");
    }
    let method = r
        .opt_enum(cx, "method", &[("POST", "POST"), ("GET", "GET")])
        .unwrap_or("POST")
        .to_string();
    let params = if r.has("params") {
        let t = r.table(cx, "params");
        string_map(cx, t)
    } else {
        let _ = r.table(cx, "params");
        ["username", "password", "clientid", "peerhost"]
            .iter()
            .map(|k| (k.to_string(), format!("${{{k}}}")))
            .collect()
    };
    let headers = {
        let t = r.table(cx, "headers");
        string_map(cx, t)
            .into_iter()
            .map(|(k, v)| (k, AuthSecret::new(v)))
            .collect()
    };
    let ca_file = r.opt::<PathBuf>(cx, "ca_file");
    Some(HttpConfig {
        url: url?,
        method,
        params,
        headers,
        ca_file,
    })
}

fn sql(cx: &mut Cx, r: &mut Reader, engine: SqlEngine) -> Option<SqlConfig> {
    let url = r.opt::<String>(cx, "url").map(AuthSecret::new);
    let query = r.opt::<String>(cx, "query");
    for key in ["url", "query"] {
        if !r.has(key) {
            r.missing(cx, key);
        }
    }
    let acl_query = r.opt::<String>(cx, "acl_query");
    let password_hash = r.enum_or(
        cx,
        "password_hash",
        SqlHash::Auto,
        &[
            ("auto", SqlHash::Auto),
            ("sha256-salt", SqlHash::Sha256SaltSuffix),
            ("sha256-salt-prefix", SqlHash::Sha256SaltPrefix),
        ],
    );
    let max_connections = r.range(cx, "max_connections", 4, 1, 100);
    if let Some(q) = &query {
        if !q.contains("${username}") {
            r.cross(
                cx,
                "query",
                "must use ${username} (bound as a parameter) to select the user's row".to_string(),
            );
        }
    }
    Some(SqlConfig {
        engine,
        url: url?,
        query: query?,
        acl_query,
        password_hash,
        max_connections,
    })
}

fn redis(cx: &mut Cx, r: &mut Reader) -> Option<RedisConfig> {
    let url = r.opt::<String>(cx, "url").map(AuthSecret::new);
    if !r.has("url") {
        r.missing(cx, "url");
    }
    let command = r.get(
        cx,
        "command",
        "HMGET mqtt_user:${username} password_hash is_superuser".to_string(),
    );
    if command.split_whitespace().count() < 2 {
        r.cross(
            cx,
            "command",
            "expected a command and its arguments".to_string(),
        );
    }
    let acl_command = r.opt::<String>(cx, "acl_command");
    Some(RedisConfig {
        url: url?,
        command,
        acl_command,
    })
}

fn ldap(cx: &mut Cx, r: &mut Reader) -> Option<LdapConfig> {
    let url = r.opt::<String>(cx, "url");
    if !r.has("url") {
        r.missing(cx, "url");
    }
    let starttls = r.get(cx, "starttls", false);
    let bind_dn_template = r.opt::<String>(cx, "bind_dn_template");
    let search_bind_dn = r.opt::<String>(cx, "search_bind_dn");
    let search_bind_password = r
        .opt::<String>(cx, "search_bind_password")
        .map(AuthSecret::new);
    let search_base = r.opt::<String>(cx, "search_base");
    let search_filter = r.get(cx, "search_filter", "(uid=${username})".to_string());
    let group_attribute = r.opt::<String>(cx, "group_attribute");
    let superuser_group = r.opt::<String>(cx, "superuser_group");
    let ca_file = r.opt::<PathBuf>(cx, "ca_file");
    let mut ok = true;
    if let Some(u) = &url {
        let lower = u.to_ascii_lowercase();
        if lower.starts_with("ldap://") && !starttls {
            if let Err(msg) = secure_url(u, "ldaps", "ldap") {
                ok = false;
                r.cross(cx, "url", format!("{msg}, or set starttls = true"));
            }
        } else if !lower.starts_with("ldaps://") && !lower.starts_with("ldap://") {
            ok = false;
            r.cross(
                cx,
                "url",
                format!("\"{}\" must start with ldaps:// or ldap://", clip(u)),
            );
        }
    }
    match (&bind_dn_template, &search_base) {
        (Some(_), Some(_)) | (None, None) => {
            ok = false;
            r.cross(
                cx,
                "bind_dn_template",
                "set either bind_dn_template (bind as the user) or search_base (search then bind)"
                    .to_string(),
            );
        }
        (None, Some(_)) if search_bind_dn.is_some() != search_bind_password.is_some() => {
            ok = false;
            r.cross(
                cx,
                "search_bind_dn",
                "search_bind_dn and search_bind_password go together".to_string(),
            );
        }
        _ => {}
    }
    if let Some(t) = &bind_dn_template {
        if !t.contains("${username}") {
            ok = false;
            r.cross(
                cx,
                "bind_dn_template",
                "must contain ${username}".to_string(),
            );
        }
    }
    if !ok {
        return None;
    }
    Some(LdapConfig {
        url: url?,
        starttls,
        bind_dn_template,
        search_bind_dn,
        search_bind_password,
        search_base,
        search_filter,
        group_attribute,
        superuser_group,
        ca_file,
    })
}

pub(super) fn acl_section(cx: &mut Cx, mut r: Reader) -> AclConfig {
    let d = AclConfig::default();
    let mut sources = Vec::new();
    if let Some(list) = r.opt::<Vec<String>>(cx, "sources") {
        for s in list {
            match s.as_str() {
                "identity" => sources.push(AclSource::Identity),
                "file" => sources.push(AclSource::File),
                "http" => sources.push(AclSource::Http),
                other => r.cross(
                    cx,
                    "sources",
                    format!(
                        "expected \"identity\", \"file\" or \"http\", found \"{}\"",
                        clip(other)
                    ),
                ),
            }
        }
    } else {
        sources = d.sources.clone();
    }
    let file = r.opt::<PathBuf>(cx, "file");
    if r.has("sources") && sources.contains(&AclSource::File) && file.is_none() {
        r.cross(cx, "sources", "\"file\" needs acl.file".to_string());
    }
    let http_url = r.opt_parse(cx, "http_url", |s| secure_url(s, "https", "http"));
    if sources.contains(&AclSource::Http) && http_url.is_none() && !r.has("http_url") {
        r.cross(cx, "sources", "\"http\" needs acl.http_url".to_string());
    }
    let http_timeout_ms = r.range(cx, "http_timeout_ms", d.http_timeout_ms, 10, 60_000);
    let out = AclConfig {
        sources,
        file,
        no_match: r.enum_or(
            cx,
            "no_match",
            d.no_match,
            &[("deny", NoMatch::Deny), ("allow", NoMatch::Allow)],
        ),
        cache_ttl_secs: r.range(cx, "cache_ttl_secs", d.cache_ttl_secs, 0, 3600),
        cache_max_entries: r.range(cx, "cache_max_entries", d.cache_max_entries, 1, 65_536),
        reload_check_secs: r.range(cx, "reload_check_secs", d.reload_check_secs, 1, 3600),
        disconnect_on_deny: r.get(cx, "disconnect_on_deny", d.disconnect_on_deny),
        http_url,
        http_timeout_ms,
    };
    r.finish(cx);
    out
}
