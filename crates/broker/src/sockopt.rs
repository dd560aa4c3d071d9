//! TCP_DEFER_ACCEPT on the listening sockets: the one socket option this crate needs that
//! neither the standard library (unstable there) nor socket2 offers, hence the crate's only
//! `unsafe` block.
//!
//! Why: every MQTT client speaks first (CONNECT, a PROXY header, a TLS ClientHello or an HTTP
//! upgrade), so the listener need not be woken when a handshake completes, only when the
//! client's first bytes arrive. The broker then accepts a socket whose first packet is already
//! there and reads it at once: one wake-up per new connection instead of two. Measured on the
//! connect scenario (`rampart-bench compare --brokers rampart,mosquitto --scenarios connect
//! --pin --repeat 3`, alternating builds): 43-45k connections per broker CPU-second without
//! it, 53k with it, against Mosquitto's 38-42k in the same runs. A socket that sends nothing
//! also stays in the kernel (a request socket of a few hundred bytes) instead of taking a file
//! descriptor, a task and the per-address slots, until the deferral ends: the kernel then
//! accepts it on the client's next ACK and the connect timeout applies as before, so a silent
//! socket is closed at most `DEFER_ACCEPT_SECS` later than without the option.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// How long the kernel holds a connection that has sent nothing (Linux rounds it to SYN-ACK
/// retransmissions: one, after 1 s).
pub const DEFER_ACCEPT_SECS: u32 = 1;

/// Sets TCP_DEFER_ACCEPT on a listening socket.
pub fn set_defer_accept(sock: &impl AsFd, secs: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    let fd = sock.as_fd();
    #[allow(unsafe_code)]
    // SAFETY: `fd` is borrowed from a live socket for the whole call, and setsockopt reads
    // exactly `size_of::<c_int>()` bytes through a pointer to the local `value`.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The listener is woken by a client's first bytes, not by its handshake.
    #[tokio::test]
    async fn accept_waits_for_the_first_bytes() {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        set_defer_accept(&sock, DEFER_ACCEPT_SECS).expect("setsockopt");
        sock.bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = sock.listen(16).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Connected on the client's side, but nothing to accept yet (bounded: 300 ms is well
        // inside the 1 s deferral).
        assert!(
            tokio::time::timeout(Duration::from_millis(300), listener.accept())
                .await
                .is_err(),
            "a silent connection was accepted at once"
        );
        client.write_all(b"\x10").await.expect("write");
        let (mut server, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accepted once data arrived")
            .expect("accept");
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), server.read_exact(&mut b))
            .await
            .expect("bounded")
            .expect("read");
        assert_eq!(b, [0x10]);
    }
}
