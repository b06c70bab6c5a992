//! The closed loop `strata-load` runs: `concurrency` HTTP/1.1 connections, each sending
//! its next request when the previous one's body has arrived, until the warm-up and then
//! the measured requests are used up or the run's time bound passes. Each measured
//! request's latency runs from handing the request to the connection to the last byte of
//! the body, as `wrk` times it. Never retries a request; a connection that fails is
//! reopened for the next one.

use super::{LoadOutcome, LoadSpec, RoundOutcome};
use crate::live::{PAYLOAD, Sample, ServerTiming};
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::cell::Cell;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The URL does not parse, or names no host and port.
    #[error("invalid URL {url:?}: an http://host:port/path URL is expected")]
    Url {
        /// The URL given.
        url: String,
    },
    /// The token cannot be sent as a header.
    #[error("the token is not a valid header value")]
    Token,
    /// A connection could not be opened.
    #[error("connecting to {authority}: {source}")]
    Connect {
        /// host:port.
        authority: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The rounds do not sum to the measured requests.
    #[error("rounds of {rounds:?} requests do not sum to the {requests} measured")]
    Rounds {
        /// The rounds' sizes.
        rounds: Vec<u64>,
        /// The measured requests.
        requests: u64,
    },
    /// The HTTP/1.1 handshake failed.
    #[error("HTTP/1.1 handshake with {authority}: {source}")]
    Handshake {
        /// host:port.
        authority: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
}

/// What every request of a run carries.
struct Template {
    path: Uri,
    host: HeaderValue,
    authority: String,
    bearer: HeaderValue,
    expect: String,
}

impl Template {
    fn new(spec: &LoadSpec) -> Result<Self, GenerateError> {
        let bad = || GenerateError::Url {
            url: spec.url.clone(),
        };
        let uri: Uri = spec.url.parse().map_err(|_| bad())?;
        let authority = uri.authority().ok_or_else(bad)?.as_str().to_owned();
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| bad())?;
        Ok(Self {
            path,
            host: HeaderValue::from_str(&authority).map_err(|_| bad())?,
            authority,
            bearer: HeaderValue::from_str(&format!("Bearer {}", spec.token))
                .map_err(|_| GenerateError::Token)?,
            expect: spec.expect.clone(),
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::from_static(PAYLOAD.as_bytes())));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.path.clone();
        let headers = req.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, self.bearer.clone());
        req
    }
}

/// One client connection and the task driving its I/O (aborted when dropped).
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Connection {
    async fn open(authority: &str) -> Result<Self, GenerateError> {
        let stream =
            TcpStream::connect(authority)
                .await
                .map_err(|source| GenerateError::Connect {
                    authority: authority.to_owned(),
                    source,
                })?;
        // Requests are small and each waits for its answer: Nagle would only delay them.
        stream
            .set_nodelay(true)
            .map_err(|source| GenerateError::Connect {
                authority: authority.to_owned(),
                source,
            })?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| GenerateError::Handshake {
                authority: authority.to_owned(),
                source,
            })?;
        let driver = tokio::spawn(async move {
            // Its error is the next request's error, recorded there.
            let _ = conn.await;
        });
        Ok(Self { sender, driver })
    }

    /// Sends one request and times it; a failed connection is reopened for the next.
    async fn call(&mut self, t: &Template) -> Sample {
        let ready = self.sender.ready().await;
        let started = Instant::now();
        let answer = match ready {
            Ok(()) => self.exchange(t).await,
            Err(e) => Err(e),
        };
        let latency = started.elapsed();
        let (ok, timing) = match answer {
            Ok(verdict) => verdict,
            Err(_) => {
                if let Ok(fresh) = Self::open(&t.authority).await {
                    *self = fresh;
                }
                (false, ServerTiming::default())
            }
        };
        Sample {
            latency,
            ok,
            timing,
        }
    }

    /// The verdict (200 from the expected tier, the payload echoed) and `server-timing`.
    async fn exchange(&mut self, t: &Template) -> Result<(bool, ServerTiming), hyper::Error> {
        let resp = self.sender.send_request(t.request()).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let at_ok = header("x-strata-executed-at").is_some_and(|v| v.starts_with(&t.expect));
        let timing = header("server-timing")
            .map(ServerTiming::parse)
            .unwrap_or_default();
        let ok = parts.status == http::StatusCode::OK && at_ok && body == PAYLOAD.as_bytes();
        Ok((ok, timing))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Runs `spec`'s closed loop on this thread's runtime and returns the measured requests.
///
/// # Errors
/// When the URL or token is invalid or a connection cannot be opened at the start.
pub async fn generate(spec: &LoadSpec) -> Result<LoadOutcome, GenerateError> {
    let t = Template::new(spec)?;
    let sizes = spec.round_sizes();
    if sizes.iter().sum::<u64>() != spec.requests {
        return Err(GenerateError::Rounds {
            rounds: sizes,
            requests: spec.requests,
        });
    }
    let deadline = Instant::now() + spec.within;
    let mut connections = Vec::with_capacity(spec.concurrency.max(1));
    for _ in 0..spec.concurrency.max(1) {
        connections.push(Connection::open(&t.authority).await?);
    }
    round(&mut connections, &t, spec.warmup, deadline).await;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut rounds = Vec::with_capacity(sizes.len());
    for n in sizes {
        let round_started = Instant::now();
        let measured = round(&mut connections, &t, n, deadline).await;
        rounds.push(RoundOutcome {
            sent: measured.len(),
            wall: round_started.elapsed(),
        });
        samples.extend(measured);
    }
    Ok(LoadOutcome {
        samples,
        wall: started.elapsed(),
        rounds,
        pid: std::process::id(),
    })
}

/// Sends `n` requests over `connections`, each connection taking the next while any are
/// left and `deadline` has not passed.
async fn round(
    connections: &mut [Connection],
    t: &Template,
    n: u64,
    deadline: Instant,
) -> Vec<Sample> {
    let taken = Cell::new(0u64);
    let take = || {
        let more = taken.get() < n && Instant::now() < deadline;
        taken.set(taken.get() + u64::from(more));
        more
    };
    let take = &take;
    let loops = connections.iter_mut().map(|c| async move {
        let mut samples = Vec::new();
        while take() {
            samples.push(c.call(t).await);
        }
        samples
    });
    futures::future::join_all(loops)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use std::time::Duration;

    /// An axum server that answers like a node of `tier`: `x-strata-executed-at`, a
    /// `server-timing`, the body echoed (or not, when `echo` is false).
    async fn node(tier: &'static str, echo: bool) -> (String, tokio::task::JoinHandle<()>) {
        let app = axum::Router::new().route(
            "/v1/functions/{name}/invoke",
            post(move |body: Bytes| async move {
                let body = if echo { body } else { Bytes::from_static(b"?") };
                (
                    [
                        ("x-strata-executed-at", tier),
                        ("server-timing", "exec;dur=0.012, instantiate;dur=0.000"),
                    ],
                    body,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/v1/functions/echo/invoke",
            listener.local_addr().expect("addr")
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, server)
    }

    fn spec(url: &str, expect: &str, requests: u64) -> LoadSpec {
        LoadSpec {
            url: url.to_owned(),
            token: "t".to_owned(),
            expect: expect.to_owned(),
            warmup: 4,
            requests,
            rounds: Vec::new(),
            concurrency: 3,
            within: Duration::from_secs(30),
        }
    }

    #[tokio::test]
    async fn rounds_are_sent_in_order_and_reported_apart() {
        let (url, server) = node("pop/p0", true).await;
        let mut s = spec(&url, "pop/", 30);
        s.rounds = vec![5, 20, 5];
        let out = generate(&s).await.expect("runs");
        let sent: Vec<usize> = out.round_samples().map(|(r, _)| r.len()).collect();
        assert_eq!(sent, [5, 20, 5]);
        assert_eq!((out.sent(), out.errors()), (30, 0));
        s.rounds = vec![5, 5];
        let refused = generate(&s).await;
        server.abort();
        assert!(matches!(refused, Err(GenerateError::Rounds { .. })));
    }

    #[tokio::test]
    async fn every_measured_request_is_timed_and_checked_with_its_server_timing() {
        let (url, server) = node("pop/p0", true).await;
        let out = generate(&spec(&url, "pop/", 50)).await.expect("runs");
        server.abort();
        assert_eq!((out.sent(), out.errors()), (50, 0));
        assert!(
            out.samples
                .iter()
                .all(|s| s.timing.exec == Some(0.012) && s.latency > Duration::ZERO)
        );
    }

    #[tokio::test]
    async fn an_answer_from_another_tier_or_with_another_body_is_an_error() {
        let (url, server) = node("region/r0", true).await;
        let out = generate(&spec(&url, "pop/", 20)).await.expect("runs");
        server.abort();
        assert_eq!(out.errors(), 20, "answered by the region, not the POP");
        let (url, server) = node("pop/p0", false).await;
        let out = generate(&spec(&url, "pop/", 20)).await.expect("runs");
        server.abort();
        assert_eq!(out.errors(), 20, "the payload was not echoed");
    }

    #[tokio::test]
    async fn the_time_bound_stops_the_run_short_of_its_requests() {
        let (url, server) = node("pop/p0", true).await;
        let mut s = spec(&url, "pop/", 1_000_000);
        s.within = Duration::from_millis(200);
        let out = generate(&s).await.expect("runs");
        server.abort();
        assert!(out.sent() < 1_000_000, "{}", out.sent());
    }

    #[tokio::test]
    async fn a_url_without_host_is_refused() {
        assert!(matches!(
            generate(&spec("/v1/functions/x/invoke", "pop/", 1)).await,
            Err(GenerateError::Url { .. })
        ));
    }
}
