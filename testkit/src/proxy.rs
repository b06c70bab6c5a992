//! A UDP delay proxy: injects WAN latency between a POP and its region's QUIC port on
//! loopback.
//!
//! One client (the POP) talks to the proxy's address; every datagram is delivered to the
//! upstream (the region) `delay` later, and every answer back to the client `delay` later,
//! in order. Each direction queues at most [`QUEUE`] datagrams; when a queue is full the
//! datagram is dropped, as a congested link would (QUIC retransmits), and counted.
//! [`DelayProxy::set_down`] cuts the link: every datagram is dropped both ways until it is
//! set up again, which is what a failed region looks like from its POPs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Datagrams queued per direction before new ones are dropped.
pub const QUEUE: usize = 8192;
/// Largest datagram relayed (QUIC keeps under 1500 on loopback; this leaves room).
const MAX_DATAGRAM: usize = 65_535;

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    upstream: watch::Sender<Option<SocketAddr>>,
    dropped: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    cut: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl DelayProxy {
    /// Binds on 127.0.0.1 with a one-way `delay`. Datagrams that arrive before the upstream
    /// is set are dropped.
    ///
    /// # Errors
    /// When the sockets cannot be bound.
    pub async fn start(delay: Duration) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let (upstream, upstream_rx) = watch::channel(None);
        let (client_tx, client_rx) = watch::channel(None);
        let dropped = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicU64::new(0));
        let (to_region, to_region_rx) = mpsc::channel(QUEUE);
        let (to_client, to_client_rx) = mpsc::channel(QUEUE);
        let tasks = vec![
            // Client -> queue: remember who the client is.
            tokio::spawn(receive(
                front.clone(),
                to_region,
                dropped.clone(),
                (down.clone(), cut.clone()),
                Some(client_tx),
            )),
            // Queue -> region.
            tokio::spawn(deliver(back.clone(), to_region_rx, upstream_rx, delay)),
            // Region -> queue.
            tokio::spawn(receive(
                back,
                to_client,
                dropped.clone(),
                (down.clone(), cut.clone()),
                None,
            )),
            // Queue -> client.
            tokio::spawn(deliver(front, to_client_rx, client_rx, delay)),
        ];
        Ok(Self {
            addr,
            upstream,
            dropped,
            down,
            cut,
            tasks,
        })
    }

    /// Where the client should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets where datagrams go.
    pub fn set_upstream(&self, to: SocketAddr) {
        self.upstream.send_replace(Some(to));
    }

    /// Cuts the link (`true`: every datagram is dropped both ways) or restores it.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Datagrams dropped because the link was cut.
    pub fn cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// Datagrams dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn receive(
    socket: Arc<UdpSocket>,
    queue: mpsc::Sender<(Instant, Vec<u8>)>,
    dropped: Arc<AtomicU64>,
    (down, cut): (Arc<AtomicBool>, Arc<AtomicU64>),
    client: Option<watch::Sender<Option<SocketAddr>>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            // A transient error (e.g. ICMP unreachable surfaced on loopback): keep going.
            continue;
        };
        if down.load(Ordering::Relaxed) {
            cut.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let Some(c) = &client
            && *c.borrow() != Some(from)
        {
            c.send_replace(Some(from));
        }
        if queue.try_send((Instant::now(), buf[..n].to_vec())).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn deliver(
    socket: Arc<UdpSocket>,
    mut queue: mpsc::Receiver<(Instant, Vec<u8>)>,
    to: watch::Receiver<Option<SocketAddr>>,
    delay: Duration,
) {
    while let Some((received, datagram)) = queue.recv().await {
        tokio::time::sleep_until(received + delay).await;
        let target = *to.borrow();
        if let Some(target) = target {
            // A send error is a lost datagram, which QUIC recovers from.
            let _ = socket.send_to(&datagram, target).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_cross_the_proxy_both_ways_no_sooner_than_the_delay() {
        let delay = Duration::from_millis(20);
        let proxy = DelayProxy::start(delay).await.expect("proxy starts");
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        proxy.set_upstream(server.local_addr().expect("addr"));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let sent = std::time::Instant::now();
        client.send_to(b"ping", proxy.addr()).await.expect("send");
        let mut buf = [0u8; 16];
        let deadline = Duration::from_secs(5);
        let (n, from) = tokio::time::timeout(deadline, server.recv_from(&mut buf))
            .await
            .expect("arrives")
            .expect("recv");
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", from).await.expect("send");
        let (n, _) = tokio::time::timeout(deadline, client.recv_from(&mut buf))
            .await
            .expect("answer arrives")
            .expect("recv");
        assert_eq!(&buf[..n], b"pong");
        // The delay is a lower bound by construction, not a timing assertion on the host.
        assert!(sent.elapsed() >= delay * 2);
        assert_eq!(proxy.dropped(), 0);
    }

    #[tokio::test]
    async fn a_cut_link_drops_datagrams_until_it_is_restored() {
        let proxy = DelayProxy::start(Duration::ZERO)
            .await
            .expect("proxy starts");
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        proxy.set_upstream(server.local_addr().expect("addr"));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        proxy.set_down(true);
        client.send_to(b"lost", proxy.addr()).await.expect("send");
        // Restored once the proxy has dropped it.
        let deadline = Duration::from_secs(5);
        tokio::time::timeout(deadline, async {
            while proxy.cut() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the datagram reaches the cut proxy");
        let mut buf = [0u8; 16];
        proxy.set_down(false);
        client.send_to(b"kept", proxy.addr()).await.expect("send");
        let (n, _) = tokio::time::timeout(deadline, server.recv_from(&mut buf))
            .await
            .expect("arrives")
            .expect("recv");
        assert_eq!(&buf[..n], b"kept");
    }
}
