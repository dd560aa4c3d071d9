//! Session expiry and will delay timers. Each is a sleeping task that acts only if the
//! session is still disconnected in the same generation it was armed for.

use crate::router::Router;
use crate::session::SessionShared;
use std::sync::Arc;
use std::time::Duration;

/// End the session `expiry_secs` after disconnection unless the client came back.
/// `u32::MAX` means the session does not expire ([MQTT-3.1.2-?] 0xFFFFFFFF).
pub fn schedule_expiry(
    router: &Arc<Router>,
    session: &Arc<SessionShared>,
    generation: u64,
    expiry_secs: u32,
) {
    if expiry_secs == u32::MAX {
        return;
    }
    let router = Arc::downgrade(router);
    let session = session.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::from(expiry_secs))).await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let mut slot = session.slot.lock();
        if slot.generation != generation || slot.conn.is_some() || slot.dead {
            return;
        }
        slot.dead = true;
        let state = slot.parked.take();
        if let Some(state) = &state {
            router.drop_session_state(&session, state);
        }
        router.registry.remove_if_same(&session);
        drop(slot);
        if let Some(state) = &state {
            router.redeliver_shared(&session, state);
        }
        tracing::debug!(client_id = %session.client_id, "session expired");
    });
}

/// Publish the will after `delay_secs` unless the client reconnected first.
pub fn schedule_will(
    router: &Arc<Router>,
    session: &Arc<SessionShared>,
    generation: u64,
    delay_secs: u32,
    will: rampart_codec::Will,
) {
    let router = Arc::downgrade(router);
    let session = session.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::from(delay_secs))).await;
        let Some(router) = router.upgrade() else {
            return;
        };
        {
            let slot = session.slot.lock();
            // A reconnection bumps the generation and cancels the will ([MQTT-3.1.3-9]).
            if slot.generation != generation || slot.conn.is_some() {
                return;
            }
        }
        router.publish_will(&session.client_id, will);
    });
}
