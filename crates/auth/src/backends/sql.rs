//! PostgreSQL and MySQL/MariaDB. The configured query's `${...}` placeholders are replaced by
//! bind parameters (`$1`.. or `?`) and the values are bound: a client's username never
//! becomes SQL text.
//!
//! The query returns at most one row with `password_hash` and optionally `salt` and
//! `is_superuser`; no row is "unknown user" (verified against the dummy hash, then ignored).
//! `acl_query` rows are (`permission`, `action`, `topic`).

use std::time::Duration;

use rampart_config::{SqlConfig, SqlEngine, SqlHash};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use super::{fill, verify, Answer, Grant, Shared};
use crate::acl::AclRule;
use crate::ConnectRequest;

/// Rows read from `acl_query` at most: rules are checked in order on every decision miss.
const MAX_ACL_ROWS: usize = 1000;

enum Pool {
    Pg(PgPool),
    My(MySqlPool),
}

pub(crate) struct Sql {
    pool: Pool,
    /// Query text with bind markers, and the placeholder for each marker in order.
    query: (String, Vec<String>),
    acl_query: Option<(String, Vec<String>)>,
    hash: SqlHash,
    shared: Shared,
}

/// `SELECT .. WHERE u = ${username}` -> (`SELECT .. WHERE u = $1`, ["${username}"]).
pub(crate) fn bind_markers(query: &str, engine: SqlEngine) -> (String, Vec<String>) {
    let mut out = String::with_capacity(query.len());
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(i) = rest.find("${") {
        let tail = &rest[i..];
        let Some(end) = tail.find('}') else { break };
        out.push_str(&rest[..i]);
        names.push(tail[..=end].to_string());
        match engine {
            SqlEngine::Postgres => out.push_str(&format!("${}", names.len())),
            SqlEngine::Mysql => out.push('?'),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    (out, names)
}

fn flag_pg(row: &PgRow) -> bool {
    row.try_get::<bool, _>("is_superuser")
        .or_else(|_| row.try_get::<i32, _>("is_superuser").map(|v| v != 0))
        .or_else(|_| row.try_get::<i64, _>("is_superuser").map(|v| v != 0))
        .unwrap_or(false)
}

fn flag_my(row: &MySqlRow) -> bool {
    row.try_get::<bool, _>("is_superuser")
        .or_else(|_| row.try_get::<i64, _>("is_superuser").map(|v| v != 0))
        .or_else(|_| row.try_get::<i32, _>("is_superuser").map(|v| v != 0))
        .or_else(|_| row.try_get::<i8, _>("is_superuser").map(|v| v != 0))
        .unwrap_or(false)
}

impl Sql {
    pub(crate) fn new(c: &SqlConfig, shared: &Shared, timeout: Duration) -> Result<Sql, String> {
        let url = c.url.expose();
        // Waiting for a pool connection gives up before the chain's timeout, so that a
        // database that is down is reported as down (an error), not as slow.
        let acquire = (timeout / 2).min(Duration::from_secs(10));
        // Lazy: the broker starts even if the database is down; logins then fail closed.
        let pool = match c.engine {
            SqlEngine::Postgres => Pool::Pg(
                PgPoolOptions::new()
                    .max_connections(c.max_connections)
                    .acquire_timeout(acquire)
                    .connect_lazy(url)
                    .map_err(|e| format!("bad postgres url: {}", redact(&e.to_string(), url)))?,
            ),
            SqlEngine::Mysql => Pool::My(
                MySqlPoolOptions::new()
                    .max_connections(c.max_connections)
                    .acquire_timeout(acquire)
                    .connect_lazy(url)
                    .map_err(|e| format!("bad mysql url: {}", redact(&e.to_string(), url)))?,
            ),
        };
        Ok(Sql {
            pool,
            query: bind_markers(&c.query, c.engine),
            acl_query: c.acl_query.as_deref().map(|q| bind_markers(q, c.engine)),
            hash: c.password_hash,
            shared: shared.clone(),
        })
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Pg(_) => "postgres",
            Pool::My(_) => "mysql",
        }
    }

    pub(crate) async fn check(&self, req: &ConnectRequest<'_>) -> Result<Answer, String> {
        let Some(user) = req.username else {
            return Ok(Answer::Ignore);
        };
        let args: Vec<String> = self.query.1.iter().map(|p| fill(p, req)).collect();
        // (hash, salt, superuser)
        let row: Option<(String, Option<String>, bool)> = match &self.pool {
            Pool::Pg(pool) => {
                let mut q = sqlx::query(&self.query.0);
                for a in &args {
                    q = q.bind(a);
                }
                let row = q.fetch_optional(pool).await.map_err(err)?;
                match row {
                    Some(r) => Some((
                        r.try_get::<String, _>("password_hash").map_err(err)?,
                        r.try_get::<Option<String>, _>("salt").ok().flatten(),
                        flag_pg(&r),
                    )),
                    None => None,
                }
            }
            Pool::My(pool) => {
                let mut q = sqlx::query(&self.query.0);
                for a in &args {
                    q = q.bind(a);
                }
                let row = q.fetch_optional(pool).await.map_err(err)?;
                match row {
                    Some(r) => Some((
                        r.try_get::<String, _>("password_hash").map_err(err)?,
                        r.try_get::<Option<String>, _>("salt").ok().flatten(),
                        flag_my(&r),
                    )),
                    None => None,
                }
            }
        };
        let password = req.password.unwrap_or_default();
        let Some((hash, salt, superuser)) = row else {
            verify(&self.shared, None, password).await?;
            return Ok(Answer::Ignore);
        };
        let ok = match self.hash {
            SqlHash::Auto => verify(&self.shared, Some(hash), password).await?,
            SqlHash::Sha256SaltSuffix | SqlHash::Sha256SaltPrefix => {
                let salt = salt.unwrap_or_default();
                let first = self.hash == SqlHash::Sha256SaltPrefix;
                crate::hash::verify_sha256_salted(password, salt.as_bytes(), &hash, first)
            }
        };
        if !ok {
            return Ok(Answer::Deny);
        }
        let acl = match &self.acl_query {
            Some(q) => self.acl_rows(q, req).await?,
            None => Vec::new(),
        };
        Ok(Answer::Allow(Grant {
            username: Some(user.to_string()),
            superuser,
            groups: Vec::new(),
            acl,
            expires_at: None,
        }))
    }

    async fn acl_rows(
        &self,
        q: &(String, Vec<String>),
        req: &ConnectRequest<'_>,
    ) -> Result<Vec<AclRule>, String> {
        let args: Vec<String> = q.1.iter().map(|p| fill(p, req)).collect();
        let mut triples = Vec::new();
        match &self.pool {
            Pool::Pg(pool) => {
                let mut query = sqlx::query(&q.0);
                for a in &args {
                    query = query.bind(a);
                }
                for r in query
                    .fetch_all(pool)
                    .await
                    .map_err(err)?
                    .iter()
                    .take(MAX_ACL_ROWS)
                {
                    triples.push((
                        r.try_get::<String, _>("permission").map_err(err)?,
                        r.try_get::<String, _>("action").map_err(err)?,
                        r.try_get::<String, _>("topic").map_err(err)?,
                    ));
                }
            }
            Pool::My(pool) => {
                let mut query = sqlx::query(&q.0);
                for a in &args {
                    query = query.bind(a);
                }
                for r in query
                    .fetch_all(pool)
                    .await
                    .map_err(err)?
                    .iter()
                    .take(MAX_ACL_ROWS)
                {
                    triples.push((
                        r.try_get::<String, _>("permission").map_err(err)?,
                        r.try_get::<String, _>("action").map_err(err)?,
                        r.try_get::<String, _>("topic").map_err(err)?,
                    ));
                }
            }
        }
        triples
            .iter()
            .map(|(p, a, t)| {
                AclRule::from_parts(p, a, t, "sql acl_query".to_string())
                    .map_err(|e| format!("sql acl_query: bad rule: {e}"))
            })
            .collect()
    }
}

/// Database errors never carry bound values; they may carry the URL, which holds a password.
fn err(e: sqlx::Error) -> String {
    e.to_string()
}

fn redact(msg: &str, url: &str) -> String {
    if url.is_empty() {
        msg.to_string()
    } else {
        msg.replace(url, "<url>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_bind_markers() {
        let q = "SELECT password_hash FROM u WHERE name = ${username} AND cid = ${clientid} OR name = ${username}";
        let (pg, names) = bind_markers(q, SqlEngine::Postgres);
        assert_eq!(
            pg,
            "SELECT password_hash FROM u WHERE name = $1 AND cid = $2 OR name = $3"
        );
        assert_eq!(names, ["${username}", "${clientid}", "${username}"]);
        let (my, _) = bind_markers(q, SqlEngine::Mysql);
        assert_eq!(
            my,
            "SELECT password_hash FROM u WHERE name = ? AND cid = ? OR name = ?"
        );
    }
}
