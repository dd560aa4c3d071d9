//! Client-id ownership: while a client id is connected under one identity, a CONNECT with
//! the same client id and a different identity is refused, so that one tenant cannot kick
//! another off (or take over its session) by reusing its client id.
//!
//! Worst-case memory: one entry (client id plus owner key) per connected client.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Owner key and the number of claims it holds.
type Owner = (Arc<str>, u32);

#[derive(Default)]
pub(crate) struct Registry {
    /// client id -> (owner key, claims held). The count lets a takeover by the same owner
    /// hold a second claim until the old connection drops its guard.
    map: Mutex<HashMap<Arc<str>, Owner>>,
}

impl Registry {
    /// Takes (or joins) ownership; `Err` when another owner holds the id.
    pub(crate) fn claim(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        owner: Arc<str>,
    ) -> Result<ClientIdClaim, ()> {
        let mut map = self.map.lock();
        match map.get_mut(client_id) {
            Some((o, n)) if *o == owner => *n += 1,
            Some(_) => return Err(()),
            None => {
                map.insert(client_id.clone(), (owner, 1));
            }
        }
        Ok(ClientIdClaim {
            registry: self.clone(),
            client_id: client_id.clone(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// Held by the connection for as long as it uses its client id; dropping it releases the id.
#[must_use = "the client id is released when the claim is dropped"]
pub struct ClientIdClaim {
    registry: Arc<Registry>,
    client_id: Arc<str>,
}

impl std::fmt::Debug for ClientIdClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdClaim")
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Drop for ClientIdClaim {
    fn drop(&mut self) {
        let mut map = self.registry.map.lock();
        if let Some((_, n)) = map.get_mut(&self.client_id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client_id);
            }
        }
    }
}
