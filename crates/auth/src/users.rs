//! Built-in users: records in the store's KV space, namespace [`USERS_NS`], key = username,
//! value = JSON [`UserRecord`]. `rampart ctl users` and the admin API write them; the broker
//! reads them on each login (from a blocking thread, like every store read).

use serde::{Deserialize, Serialize};

use rampart_config::PasswordHashConfig;
use rampart_store::{Store, WriteBatch};

use crate::scram::{ScramAlg, ScramCredential};

pub const USERS_NS: &str = "users";

/// Per-client rules: key = client id, value = JSON array of identity-form rules. They apply
/// to whoever connects with that client id (client ids are chosen by clients: prefer rules
/// on users or certificates, and keep client-id ownership on).
pub const CLIENT_ACL_NS: &str = "client_acl";

/// Longest username accepted by `rampart ctl users add` (MQTT allows 65535; nobody needs it).
pub const MAX_USERNAME_LEN: usize = 256;

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct UserRecord {
    /// A hash in one of the formats of [`crate::hash`]; argon2id for users added here.
    pub hash: String,
    #[serde(default)]
    pub superuser: bool,
    /// ACL rules in the identity form (`allow publish a/${username}/#`).
    #[serde(default)]
    pub acl: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Present when the password was set through Rampart (not for imported hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha256: Option<ScramCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha512: Option<ScramCredential>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("hash", &"<redacted>")
            .field("superuser", &self.superuser)
            .field("acl", &self.acl)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    /// A record for a new password: argon2id plus SCRAM credentials.
    pub fn with_password(password: &[u8], params: &PasswordHashConfig) -> Result<Self, String> {
        let mut r = UserRecord::default();
        r.set_password(password, params)?;
        Ok(r)
    }

    pub fn set_password(
        &mut self,
        password: &[u8],
        params: &PasswordHashConfig,
    ) -> Result<(), String> {
        self.hash = crate::hash::hash_password(password, params)?;
        self.scram_sha256 = Some(ScramCredential::new_random(ScramAlg::Sha256, password));
        self.scram_sha512 = Some(ScramCredential::new_random(ScramAlg::Sha512, password));
        Ok(())
    }

    pub fn scram(&self, alg: ScramAlg) -> Option<&ScramCredential> {
        match alg {
            ScramAlg::Sha256 => self.scram_sha256.as_ref(),
            ScramAlg::Sha512 => self.scram_sha512.as_ref(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("bad user record: {e}"))
    }
}

pub fn valid_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_USERNAME_LEN {
        return Err(format!("a username has 1..={MAX_USERNAME_LEN} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == ':') {
        return Err("a username cannot contain control characters or ':'".to_string());
    }
    Ok(())
}

pub fn get_user(store: &dyn Store, name: &str) -> Result<Option<UserRecord>, String> {
    match store.get_kv(USERS_NS, name.as_bytes()) {
        Ok(Some(v)) => UserRecord::decode(&v).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("store: {e}")),
    }
}

pub fn list_users(store: &dyn Store) -> Result<Vec<(String, UserRecord)>, String> {
    let rows = store.scan_kv(USERS_NS).map_err(|e| format!("store: {e}"))?;
    rows.into_iter()
        .map(|(k, v)| {
            let name = String::from_utf8_lossy(&k).into_owned();
            UserRecord::decode(&v).map(|r| (name, r))
        })
        .collect()
}

pub fn put_user(batch: &mut WriteBatch, name: &str, rec: &UserRecord) {
    batch.put_kv(USERS_NS, name.as_bytes().to_vec(), rec.encode());
}

pub fn delete_user(batch: &mut WriteBatch, name: &str) {
    batch.delete_kv(USERS_NS, name.as_bytes().to_vec());
}

pub fn get_client_rules(store: &dyn Store, client_id: &str) -> Result<Vec<String>, String> {
    match store.get_kv(CLIENT_ACL_NS, client_id.as_bytes()) {
        Ok(Some(v)) => serde_json::from_slice(&v).map_err(|e| format!("bad client rules: {e}")),
        Ok(None) => Ok(Vec::new()),
        Err(e) => Err(format!("store: {e}")),
    }
}

/// Sets a client's rules; an empty list removes them.
pub fn put_client_rules(batch: &mut WriteBatch, client_id: &str, rules: &[String]) {
    if rules.is_empty() {
        batch.delete_kv(CLIENT_ACL_NS, client_id.as_bytes().to_vec());
    } else {
        let v = serde_json::to_vec(rules).unwrap_or_default();
        batch.put_kv(CLIENT_ACL_NS, client_id.as_bytes().to_vec(), v);
    }
}
