//! LDAP: bind as the user (DN from a template, the username DN-escaped), or search for the
//! user with a service account (the username filter-escaped) and bind as the entry found.
//! ldaps:// or StartTLS; plain ldap:// only to loopback (checked by the config).
//!
//! An empty password is refused before any bind: LDAP treats a simple bind with an empty
//! password as an unauthenticated bind, which "succeeds" for any DN.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{dn_escape, ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rampart_config::LdapConfig;

use super::{Answer, Grant};
use crate::ConnectRequest;

/// Result code of a wrong password (RFC 4511 invalidCredentials).
const INVALID_CREDENTIALS: u32 = 49;
/// Entries looked at per search; more than one match is an error anyway.
const MAX_ENTRIES: i32 = 2;

pub(crate) struct LdapBackend {
    cfg: LdapConfig,
    settings: LdapConnSettings,
}

impl LdapBackend {
    pub(crate) fn new(c: &LdapConfig) -> Result<LdapBackend, String> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(10))
            .set_starttls(c.starttls);
        if let Some(p) = &c.ca_file {
            settings = settings.set_config(Arc::new(client_config(p)?));
        }
        Ok(LdapBackend {
            cfg: c.clone(),
            settings,
        })
    }

    async fn connect(&self) -> Result<Ldap3Handle, String> {
        let (conn, ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.cfg.url)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let task = tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        Ok(Ldap3Handle { ldap, task })
    }

    pub(crate) async fn check(&self, req: &ConnectRequest<'_>) -> Result<Answer, String> {
        let Some(user) = req.username else {
            return Ok(Answer::Ignore);
        };
        let password = req.password.unwrap_or_default();
        if password.is_empty() {
            return Ok(Answer::Deny);
        }
        let Ok(password) = std::str::from_utf8(password) else {
            return Ok(Answer::Deny);
        };
        let mut h = self.connect().await?;
        let result = self.authenticate(&mut h.ldap, user, password).await;
        let _ = h.ldap.unbind().await;
        h.task.abort();
        result
    }

    async fn authenticate(
        &self,
        ldap: &mut Ldap,
        user: &str,
        password: &str,
    ) -> Result<Answer, String> {
        let dn = if let Some(t) = &self.cfg.bind_dn_template {
            t.replace("${username}", &dn_escape(user))
        } else {
            if let (Some(dn), Some(pw)) = (&self.cfg.search_bind_dn, &self.cfg.search_bind_password)
            {
                ldap.simple_bind(dn, pw.expose())
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| format!("service bind: {e}"))?;
            }
            let base = self.cfg.search_base.as_deref().unwrap_or("");
            let filter = self
                .cfg
                .search_filter
                .replace("${username}", &ldap_escape(user));
            let (entries, _) = ldap
                .with_search_options(ldap3::SearchOptions::new().sizelimit(MAX_ENTRIES))
                .search(base, Scope::Subtree, &filter, vec!["1.1"])
                .await
                .and_then(|r| r.success())
                .map_err(|e| format!("search: {e}"))?;
            let entries: Vec<SearchEntry> = entries
                .into_iter()
                .filter(|e| !e.is_ref())
                .map(SearchEntry::construct)
                .collect();
            match entries.len() {
                0 => return Ok(Answer::Ignore),
                1 => entries[0].dn.clone(),
                _ => return Err("search matched more than one entry".to_string()),
            }
        };
        let res = ldap
            .simple_bind(&dn, password)
            .await
            .map_err(|e| format!("bind: {e}"))?;
        match res.rc {
            0 => {}
            INVALID_CREDENTIALS => return Ok(Answer::Deny),
            rc => return Err(format!("bind: result code {rc}")),
        }
        let groups = match &self.cfg.group_attribute {
            Some(attr) => {
                let (entries, _) = ldap
                    .search(&dn, Scope::Base, "(objectClass=*)", vec![attr.as_str()])
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| format!("group lookup: {e}"))?;
                entries
                    .into_iter()
                    .filter(|e| !e.is_ref())
                    .map(SearchEntry::construct)
                    .flat_map(|e| {
                        e.attrs
                            .into_iter()
                            .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
                            .flat_map(|(_, v)| v)
                    })
                    .collect::<Vec<String>>()
            }
            None => Vec::new(),
        };
        let superuser = self.cfg.superuser_group.as_ref().is_some_and(|g| {
            groups.iter().any(|x| {
                x.eq_ignore_ascii_case(g) || cn_of(x).is_some_and(|cn| cn.eq_ignore_ascii_case(g))
            })
        });
        // Groups are offered to `group:` ACL rules both as DNs and by their CN.
        let mut all = groups.clone();
        all.extend(groups.iter().filter_map(|g| cn_of(g).map(str::to_string)));
        Ok(Answer::Allow(Grant {
            username: Some(user.to_string()),
            superuser,
            groups: all,
            acl: Vec::new(),
            expires_at: None,
        }))
    }
}

struct Ldap3Handle {
    ldap: Ldap,
    task: tokio::task::JoinHandle<()>,
}

/// `cn=admins,ou=groups,...` -> `admins`.
fn cn_of(dn: &str) -> Option<&str> {
    let first = dn.split(',').next()?;
    let (k, v) = first.split_once('=')?;
    k.trim().eq_ignore_ascii_case("cn").then_some(v.trim())
}

fn client_config(p: &std::path::Path) -> Result<rustls021::ClientConfig, String> {
    let pem = std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))?;
    let mut roots = rustls021::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = cert.map_err(|e| format!("{}: bad PEM: {e}", p.display()))?;
        roots
            .add(&rustls021::Certificate(der.to_vec()))
            .map_err(|e| format!("{}: bad certificate: {e}", p.display()))?;
    }
    Ok(rustls021::ClientConfig::builder()
        .with_safe_defaults()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
