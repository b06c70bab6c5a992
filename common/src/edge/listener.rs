//! Binding the device-facing HTTP listener with a chosen accept backlog.
//!
//! Owns the socket options of the nodes' TCP listeners; never accepts or serves (the serve
//! loop takes the returned [`TcpListener`]). `tokio::net::TcpListener::bind` listens with
//! a backlog of 128, so a burst of thousands of connects overflows the kernel's accept
//! queue and the excess waits for SYN retransmits (1 s, then 3 s): a connect p99 of
//! seconds. A deeper backlog absorbs the burst while the accept loop catches up.
//!
//! The kernel caps the backlog at `net.core.somaxconn` (`/proc/sys/net/core/somaxconn`;
//! 4096 by default since Linux 5.4); a larger value is silently reduced to it.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// The accept backlog the nodes listen with unless configured otherwise.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Binds `addr` and listens with room for `backlog` connections not yet accepted (capped
/// by the kernel at `net.core.somaxconn`). Sets `SO_REUSEADDR` as
/// `tokio::net::TcpListener::bind` does, so a restarted node can bind its port while old
/// connections are in `TIME_WAIT`. Must be called inside a tokio runtime.
///
/// # Errors
/// The I/O error of creating, binding or listening on the socket (address in use,
/// permission denied, no runtime).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_and_accepts_more_connects_than_the_old_backlog_before_accepting() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"), 1024).expect("bind");
        let addr = listener.local_addr().expect("addr");
        // 300 connects complete without a single accept: they all fit the accept queue
        // (with tokio's default backlog of 128 the rest would hang in SYN retries).
        let mut held = Vec::new();
        for _ in 0..300 {
            let connect = tokio::net::TcpStream::connect(addr);
            let stream = tokio::time::timeout(std::time::Duration::from_millis(500), connect)
                .await
                .expect("connect completes from the backlog")
                .expect("connect");
            held.push(stream);
        }
        let (_accepted, _) = listener.accept().await.expect("accept");
    }

    #[tokio::test]
    async fn an_address_in_use_is_an_error_not_a_panic() {
        let first = bind("127.0.0.1:0".parse().expect("addr"), 16).expect("bind");
        let taken = first.local_addr().expect("addr");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("std bind");
        let other = std_listener.local_addr().expect("addr");
        drop(std_listener);
        assert!(bind(other, 16).is_ok());
        // SO_REUSEADDR does not allow two listeners on one port.
        assert!(bind(taken, 16).is_err());
    }
}
