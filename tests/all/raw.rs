//! A raw HTTP/1.1 client over a TCP socket, for tests that must control exactly what is
//! sent (a declared body that never comes, pipelined requests, stalls) and read whatever
//! the server answers, which no well-behaved client library does.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound on any one wait for the server in these tests (a timeout is a failure,
/// never the thing asserted).
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// One HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw client connection that reads responses one after another (pipelining).
pub(crate) struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connects"),
            buf: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("sent");
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next response (framed by its Content-Length), or `None` if the server closed.
    pub(crate) async fn response(&mut self) -> Option<RawResponse> {
        tokio::time::timeout(PATIENCE, async {
            let head_end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
                if self.fill().await == 0 {
                    return None;
                }
            };
            let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
            let mut lines = head.split("\r\n");
            let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            self.buf.drain(..head_end + 4);
            while self.buf.len() < len {
                if self.fill().await == 0 {
                    return None;
                }
            }
            let body = self.buf.drain(..len).collect();
            Some(RawResponse {
                status,
                headers,
                body,
            })
        })
        .await
        .expect("the server answers or closes within the test's patience")
    }

    /// Reads until the server closes the connection; `true` when it did.
    pub(crate) async fn closed(&mut self) -> bool {
        tokio::time::timeout(PATIENCE, async { while self.fill().await > 0 {} })
            .await
            .is_ok()
    }
}

pub(crate) fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .expect("a node URL is ip:port")
}

/// Reads (and drops) whatever `stream` receives until the peer closes it or `within`
/// passes; `true` when it was closed in time.
pub(crate) async fn ends_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(within, async {
        while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
    })
    .await
    .is_ok()
}
