//! Byte-stream adapters used by the listeners: a stream with bytes already read in front
//! (after a PROXY header), and MQTT over WebSocket binary frames.

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// `inner` with `prefix` read first: the bytes that arrived with a PROXY header.
pub struct Prefixed<S> {
    /// Boxed, and `None` once read: most streams have no prefix, and an idle connection's
    /// task carries this struct for its whole life (8 bytes here instead of 32).
    prefix: Option<Box<Bytes>>,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix: (!prefix.is_empty()).then(|| Box::new(Bytes::from(prefix))),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// MQTT over WebSocket: the MQTT byte stream is carried in binary messages, and a message may
/// hold any part of a packet [MQTT-6.0.0-2]. A text message is a protocol error
/// [MQTT-6.0.0-1] and closes the connection.
pub struct WsBytes<S> {
    ws: WebSocketStream<S>,
    /// Unread rest of the last binary message.
    pending: Bytes,
    closed: bool,
}

impl<S> WsBytes<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsBytes {
            ws,
            pending: Bytes::new(),
            closed: false,
        }
    }
}

fn ws_err(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                // Pings are answered by tungstenite itself on the next read or write.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "[MQTT-6.0.0-1] text WebSocket message",
                    )))
                }
                Some(Ok(Message::Close(_))) | None => {
                    self.closed = true;
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_err(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Backpressure: what earlier writes left buffered goes out before more is taken.
        ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(ws_err)?;
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_err)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_err)?;
        // The connection driver does not flush after each write (plain TCP needs none), so
        // push the frame out now; if the socket is full, the next write or flush finishes it.
        if let Poll::Ready(Err(e)) = Pin::new(&mut self.ws).poll_flush(cx) {
            return Poll::Ready(Err(ws_err(e)));
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_err)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(ws_err(e))),
        }
    }
}

/// WebSocket subprotocols MQTT clients ask for; the first one the client lists is echoed.
pub const WS_SUBPROTOCOLS: &[&str] = &["mqtt", "mqttv3.1"];

/// Runs the WebSocket upgrade on `stream`: the request path must be `path`, the `Origin`
/// (when an allow-list is configured and the client sends one) must be listed, and the client
/// must offer the `mqtt` subprotocol, which is echoed. `max_message` bounds one message.
// The callback's error type is tungstenite's HTTP response, large by its definition.
#[allow(clippy::result_large_err)]
pub async fn accept_ws<S>(
    stream: S,
    path: &str,
    origins: &[String],
    max_message: usize,
) -> Result<WsBytes<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    let mut refusal: Option<String> = None;
    let refuse = |status: StatusCode, why: &str, slot: &mut Option<String>| -> ErrorResponse {
        *slot = Some(why.to_string());
        let mut r = ErrorResponse::new(Some(why.to_string()));
        *r.status_mut() = status;
        r
    };
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != path {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "unknown WebSocket path",
                &mut refusal,
            ));
        }
        if !origins.is_empty() {
            if let Some(o) = req.headers().get("origin") {
                let ok = o
                    .to_str()
                    .is_ok_and(|o| origins.iter().any(|a| a.eq_ignore_ascii_case(o)));
                if !ok {
                    return Err(refuse(
                        StatusCode::FORBIDDEN,
                        "Origin not allowed",
                        &mut refusal,
                    ));
                }
            }
        }
        let offered = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| WS_SUBPROTOCOLS.iter().any(|s| s.eq_ignore_ascii_case(p)))
            .map(str::to_string);
        match offered.and_then(|p| HeaderValue::from_str(&p).ok()) {
            Some(v) => {
                resp.headers_mut().insert("sec-websocket-protocol", v);
                Ok(resp)
            }
            None => Err(refuse(
                StatusCode::BAD_REQUEST,
                "the mqtt WebSocket subprotocol is required",
                &mut refusal,
            )),
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await {
        Ok(ws) => Ok(WsBytes::new(ws)),
        Err(e) => Err(refusal.unwrap_or_else(|| e.to_string())),
    }
}
