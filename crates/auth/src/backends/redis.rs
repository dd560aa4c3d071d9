//! Redis: a configured command such as `HMGET mqtt_user:${username} password_hash is_superuser`.
//! The command is split on whitespace once, at start; placeholders are filled inside each
//! argument, so a username with spaces stays one argument (no command injection).
//!
//! Reply: an array [hash, superuser] (superuser "1"/"true"), or a single string hash. A nil
//! hash is "unknown user". The optional `acl_command` (e.g. `HGETALL mqtt_acl:${username}`)
//! answers topic -> action pairs, each an allow rule for this client.

use rampart_config::RedisConfig;
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::Mutex;

use super::{fill, verify, Answer, Grant, Shared};
use crate::acl::AclRule;
use crate::ConnectRequest;

/// Rules read from one `acl_command` reply at most.
const MAX_ACL_ENTRIES: usize = 1000;

/// A hash reply (RESP2: flat [k1, v1, k2, v2, ..]; RESP3: a map) of topic -> action.
fn acl_rules(v: &Value) -> Result<Vec<AclRule>, String> {
    let pairs: Vec<(String, String)> = match v {
        Value::Nil => Vec::new(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => return Err("acl_command: expected a hash reply".to_string()),
    };
    pairs
        .iter()
        .take(MAX_ACL_ENTRIES)
        .map(|(topic, action)| {
            AclRule::from_parts("allow", action, topic, "redis acl_command".to_string())
                .map_err(|e| format!("acl_command: bad rule: {e}"))
        })
        .collect()
}

pub(crate) struct RedisBackend {
    client: redis::Client,
    args: Vec<String>,
    acl_args: Option<Vec<String>>,
    /// One multiplexed connection, reconnected after an error.
    conn: Mutex<Option<MultiplexedConnection>>,
    shared: Shared,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

impl RedisBackend {
    pub(crate) fn new(c: &RedisConfig, shared: &Shared) -> Result<RedisBackend, String> {
        let client = redis::Client::open(c.url.expose())
            .map_err(|e| format!("bad redis url: {:?}", e.kind()))?;
        Ok(RedisBackend {
            client,
            args: c.command.split_whitespace().map(str::to_string).collect(),
            acl_args: c
                .acl_command
                .as_ref()
                .map(|a| a.split_whitespace().map(str::to_string).collect()),
            conn: Mutex::new(None),
            shared: shared.clone(),
        })
    }

    async fn run(&self, args: &[String]) -> Result<Value, String> {
        let mut guard = self.conn.lock().await;
        let mut conn = match guard.as_ref() {
            Some(c) => c.clone(),
            None => {
                let c = self
                    .client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                *guard = Some(c.clone());
                c
            }
        };
        drop(guard);
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        match cmd.query_async::<Value>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                *self.conn.lock().await = None;
                Err(format!("command: {e}"))
            }
        }
    }

    pub(crate) async fn check(&self, req: &ConnectRequest<'_>) -> Result<Answer, String> {
        let Some(user) = req.username else {
            return Ok(Answer::Ignore);
        };
        if self.args.is_empty() {
            return Err("empty command".to_string());
        }
        let args: Vec<String> = self.args.iter().map(|a| fill(a, req)).collect();
        let reply = self.run(&args).await?;
        let (hash, superuser) = match &reply {
            Value::Array(items) => (
                items.first().and_then(text),
                items
                    .get(1)
                    .and_then(text)
                    .is_some_and(|s| s == "1" || s.eq_ignore_ascii_case("true")),
            ),
            Value::Nil => (None, false),
            other => (text(other), false),
        };
        let password = req.password.unwrap_or_default();
        let known = hash.is_some();
        let ok = verify(&self.shared, hash, password).await?;
        if !known {
            return Ok(Answer::Ignore);
        }
        if !ok {
            return Ok(Answer::Deny);
        }
        let acl = match &self.acl_args {
            Some(a) if !a.is_empty() => {
                let args: Vec<String> = a.iter().map(|x| fill(x, req)).collect();
                acl_rules(&self.run(&args).await?)?
            }
            _ => Vec::new(),
        };
        Ok(Answer::Allow(Grant {
            username: Some(user.to_string()),
            superuser,
            acl,
            ..Grant::default()
        }))
    }
}
