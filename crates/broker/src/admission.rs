//! Authentication at CONNECT: the bridge between the connection driver and rampart-auth,
//! including the MQTT 5 enhanced-authentication (AUTH packet) exchange.

use crate::router::Router;
use bytes::BytesMut;
use rampart_auth::{
    Action, AuthResult, AuthService, ClientAuthz, ClientIdClaim, ConnectRequest, Decision,
    EnhancedAuth, Identity, Request,
};
use rampart_codec::{
    decode, encode, Auth, Connect, Packet, Properties, ProtocolVersion, Publish, ReasonCode,
    Subscribe,
};
use rampart_core::conn_info::ConnInfo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

pub struct Admitted {
    pub identity: Arc<Identity>,
    /// `None` when authorization does not apply: an anonymous loopback client of a broker
    /// with no authentication backend and no ACL file (development mode).
    pub authz: Option<ClientAuthz>,
    /// Held for the connection's life: the client id belongs to this identity meanwhile.
    pub claim: Option<ClientIdClaim>,
    /// Authentication Method / Data for the CONNACK (the SCRAM server-final message).
    pub auth_method: Option<String>,
    pub auth_data: Option<Vec<u8>>,
}

/// True when the broker runs without any authentication or authorization configured: then
/// loopback clients are admitted as anonymous and not subject to ACL checks (like local-only
/// mode). Anything else goes through the authenticator chain and ends in deny.
pub fn open_development(router: &Router) -> bool {
    let cfg = &router.cfg;
    cfg.auth.backends.is_empty() && cfg.acl.file.is_none()
}

fn anonymous(client_id: &str, info: &ConnInfo) -> Identity {
    Identity {
        username: None,
        client_id: client_id.to_string(),
        peer: info.peer.ip(),
        listener: info.listener.clone(),
        cert: info.tls.as_ref().and_then(|t| t.client_cert.clone()),
        superuser: false,
        groups: Vec::new(),
        acl: Vec::new(),
        expires_at: None,
        backend: "anonymous".to_string(),
        auth_method: None,
    }
}

/// Authenticate a CONNECT. `Err(reason)` is the CONNACK reason code to refuse with.
pub async fn admit<S>(
    router: &Router,
    c: &Connect,
    client_id: &str,
    info: &ConnInfo,
    io: &mut S,
    rbuf: &mut BytesMut,
) -> Result<Admitted, ReasonCode>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let auth = &router.auth;
    let loopback = info.peer.ip().to_canonical().is_loopback();
    if open_development(router) && loopback && c.properties.authentication_method.is_none() {
        let identity = Arc::new(anonymous(client_id, info));
        return Ok(Admitted {
            identity,
            authz: None,
            claim: None,
            auth_method: None,
            auth_data: None,
        });
    }
    let method = c.properties.authentication_method.as_deref();
    let req = ConnectRequest {
        client_id,
        username: c.username.as_deref(),
        password: c.password.as_deref(),
        conn: info,
        protocol_level: c.protocol.level(),
        auth_method: method,
        auth_data: c.properties.authentication_data.as_deref(),
    };
    let mut result = auth.authenticate(&req).await;
    // Enhanced authentication (v5 only): exchange AUTH packets until the backend decides,
    // within the connect timeout.
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(u64::from(router.cfg.mqtt.connect_timeout_secs));
    loop {
        match result {
            AuthResult::Allow(a) => {
                let claim = auth.claim_client_id(&a.identity).map_err(|d| d.reason)?;
                let authz = Some(auth.authorizer(a.identity.clone()));
                return Ok(Admitted {
                    auth_method: a.identity.auth_method.clone(),
                    identity: a.identity,
                    authz,
                    claim: Some(claim),
                    auth_data: a.auth_data,
                });
            }
            AuthResult::Deny(d) => return Err(d.reason),
            AuthResult::Continue(ch) => {
                if !c.protocol.is_v5() {
                    return Err(ReasonCode::BadAuthenticationMethod);
                }
                let pkt = Packet::Auth(Auth {
                    reason: ReasonCode::ContinueAuthentication,
                    properties: Properties {
                        authentication_method: Some(ch.method.into()),
                        authentication_data: Some(ch.auth_data.into()),
                        ..Properties::default()
                    },
                });
                let mut out = BytesMut::new();
                if encode(&pkt, ProtocolVersion::V5, &mut out).is_err()
                    || io.write_all(&out).await.is_err()
                    || io.flush().await.is_err()
                {
                    return Err(ReasonCode::UnspecifiedError);
                }
                let (m, data) = match read_auth(router, io, rbuf, deadline).await {
                    Some(x) => x,
                    None => return Err(ReasonCode::NotAuthorized),
                };
                result = auth.continue_auth(ch.state, &m, &data).await;
            }
        }
    }
}

/// The client's next AUTH packet (method, data); `None` on anything else, on timeout or close.
async fn read_auth<R: AsyncRead + Unpin>(
    router: &Router,
    rd: &mut R,
    rbuf: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> Option<(String, Vec<u8>)> {
    loop {
        match decode(rbuf, ProtocolVersion::V5, router.cfg.mqtt.max_packet_size) {
            Ok(Some(Packet::Auth(a))) if a.reason == ReasonCode::ContinueAuthentication => {
                let m = a.properties.authentication_method?.to_string();
                let d = a
                    .properties
                    .authentication_data
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                return Some((m, d));
            }
            Ok(Some(other)) => {
                debug!(
                    packet = other.packet_type(),
                    "expected AUTH during enhanced authentication"
                );
                return None;
            }
            Ok(None) => {}
            Err(_) => return None,
        }
        rbuf.reserve(1024);
        match tokio::time::timeout_at(deadline, rd.read_buf(rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

/// The rare or slow part of a connection's authentication and authorization state, boxed
/// behind one pointer so that the common connection (no re-authentication, no "http" ACL
/// source) pays 8 bytes for it.
#[derive(Default)]
pub(crate) struct AuthExt {
    /// Kept only when CONNECT used enhanced authentication: a re-authentication runs the
    /// chain again with the same connection facts (address, listener, certificate).
    pub info: Option<ConnInfo>,
    /// A re-authentication between two AUTH packets (the server's SCRAM state).
    pub reauth: Option<Box<EnhancedAuth>>,
    /// Work the connection's packet handling waits for; no later packet is handled first.
    pub pending: Option<Pending>,
}

impl AuthExt {
    pub fn is_empty(&self) -> bool {
        self.info.is_none() && self.reauth.is_none() && self.pending.is_none()
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An awaited decision and what to do with it.
pub(crate) struct Pending {
    pub fut: BoxFuture<Done>,
    pub then: Then,
}

/// What was held back while the decision was awaited.
pub(crate) enum Then {
    /// A PUBLISH waiting for its authorization.
    Publish(Box<Publish>),
    /// A SUBSCRIBE with the decisions known so far (`None`: being asked).
    Subscribe(Box<Subscribe>, Vec<Option<Decision>>),
    /// A step of MQTT 5 re-authentication.
    Auth,
}

pub(crate) enum Done {
    /// (index in the packet, decision) for each asked request.
    Decisions(Vec<(usize, Decision)>),
    Auth(AuthResult),
}

/// One request to put to the "http" ACL source: (index, action, topic, qos, retain).
pub(crate) type Ask = (usize, Action, String, u8, bool);

/// Asks the authorization sources, including the "http" one, for each request, concurrently
/// (a SUBSCRIBE's filters are asked together). Bounded by the http timeout: an error or a
/// timeout denies (fail closed).
pub(crate) fn authorize_async(
    svc: Arc<AuthService>,
    identity: Arc<Identity>,
    asks: Vec<Ask>,
) -> BoxFuture<Done> {
    Box::pin(async move {
        let bound = svc.authorize_async_bound();
        let indexes: Vec<usize> = asks.iter().map(|a| a.0).collect();
        let all =
            futures_util::future::join_all(asks.iter().map(|(i, action, topic, qos, retain)| {
                let (svc, identity) = (&svc, &identity);
                async move {
                    let req = Request {
                        action: *action,
                        topic,
                        qos: *qos,
                        retain: *retain,
                    };
                    (*i, svc.authorize_async(identity, &req).await)
                }
            }));
        match tokio::time::timeout(bound, all).await {
            Ok(ds) => Done::Decisions(ds),
            Err(_) => Done::Decisions(indexes.into_iter().map(|i| (i, Decision::Deny)).collect()),
        }
    })
}

/// The first step of MQTT 5 re-authentication (AUTH 0x19): the chain again, with the method
/// and data of the AUTH packet and the facts of the connection.
pub(crate) fn reauth_start(
    svc: Arc<AuthService>,
    info: ConnInfo,
    identity: Arc<Identity>,
    method: String,
    data: Option<Vec<u8>>,
) -> BoxFuture<Done> {
    Box::pin(async move {
        let req = ConnectRequest {
            client_id: &identity.client_id,
            username: identity.username.as_deref(),
            password: None,
            conn: &info,
            protocol_level: 5,
            auth_method: Some(&method),
            auth_data: data.as_deref(),
        };
        Done::Auth(svc.authenticate(&req).await)
    })
}

/// A later step of re-authentication (the client's AUTH 0x18).
pub(crate) fn reauth_continue(
    svc: Arc<AuthService>,
    state: Box<EnhancedAuth>,
    method: String,
    data: Vec<u8>,
) -> BoxFuture<Done> {
    Box::pin(async move { Done::Auth(svc.continue_auth(state, &method, &data).await) })
}

/// Ready with the pending work's result; never while nothing is pending.
pub(crate) fn poll_pending_done(
    ext: &mut Option<Box<AuthExt>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Done> {
    match ext.as_mut().and_then(|e| e.pending.as_mut()) {
        Some(p) => p.fut.as_mut().poll(cx),
        None => std::task::Poll::Pending,
    }
}

/// The AUTH packet the server sends during re-authentication.
pub(crate) fn auth_packet(reason: ReasonCode, method: &str, data: Option<Vec<u8>>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: Some(method.into()),
            authentication_data: data.map(Into::into),
            ..Properties::default()
        },
    })
}
