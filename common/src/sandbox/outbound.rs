//! Outbound HTTP for components (`wasi:http/outgoing-handler`): the `wasi:http` hooks a
//! component's store installs.
//!
//! Owns applying [`OutboundRules`] to each request a guest sends: refused
//! (`HTTP-request-denied`) unless the function allows the destination and the
//! invocation's [`OutboundBudget`] has room; otherwise sent by `wasmtime-wasi-http`'s
//! client with connect and first-byte timeouts of the rules' timeout, cut at the
//! invocation's deadline. Also adds up the time requests were in flight, for
//! `server-timing`. The decisions are `policy::outbound`'s; this only applies them.

pub(crate) use crate::policy::outbound::OutboundRules;
use crate::policy::outbound::{Denied, OutboundBudget};
use http_body_util::BodyExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The time outbound requests of one invocation were in flight and its budget, shared
/// with the futures of requests in flight.
#[derive(Debug, Default)]
struct Ledger {
    budget: OutboundBudget,
    /// Sum of each request's time from sending to its response head (or failure).
    busy: Duration,
}

/// One invocation's outbound HTTP: its rules (`None`: outbound HTTP is off) and ledger.
pub(super) struct Outbound {
    rules: Option<Arc<OutboundRules>>,
    deadline: Option<Instant>,
    ledger: Arc<Mutex<Ledger>>,
}

impl Outbound {
    /// Outbound HTTP under `rules`, cut at `deadline`.
    pub(super) fn new(rules: Option<Arc<OutboundRules>>, deadline: Option<Instant>) -> Self {
        Self {
            rules,
            deadline,
            ledger: Arc::default(),
        }
    }

    /// A handle that reads the time spent in outbound requests after the store is gone.
    pub(super) fn timer(&self) -> OutboundTimer {
        OutboundTimer(Arc::clone(&self.ledger))
    }

    /// The rules' verdict on `request`, taking it out of the budget when allowed.
    fn admit(&self, request: &http::Request<WasiBody>) -> Result<Arc<OutboundRules>, Denied> {
        let rules = self.rules.as_ref().ok_or(Denied::NotAllowed)?;
        let uri = request.uri();
        let host = uri.host().unwrap_or_default();
        let scheme = uri.scheme_str().unwrap_or("https");
        if !rules.permits(scheme, host, uri.port_u16()) {
            return Err(Denied::NotAllowed);
        }
        lock(&self.ledger).budget.start(rules)?;
        Ok(Arc::clone(rules))
    }
}

/// Reads how long one invocation's outbound requests were in flight.
#[derive(Debug, Clone)]
pub(super) struct OutboundTimer(Arc<Mutex<Ledger>>);

impl OutboundTimer {
    /// The summed time of the requests so far; `None` when none was sent.
    pub(super) fn total(&self) -> Option<Duration> {
        let ledger = lock(&self.0);
        (ledger.budget.sent() > 0).then_some(ledger.busy)
    }
}

fn lock(m: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // The critical sections only update counters; a poisoned lock still holds them.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The future `send_request` returns: the response and the future driving the connection.
type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        drop(fut);
        let rules = match self.admit(&request) {
            Ok(rules) => rules,
            Err(denied) => {
                tracing::debug!(uri = %request.uri(), %denied, "outbound request refused");
                return Box::new(async { Err(Error::HttpRequestDenied) });
            }
        };
        let left = self.deadline.map_or(rules.timeout, |d| {
            d.saturating_duration_since(Instant::now())
                .min(rules.timeout)
        });
        // The guest's own options may only shorten the platform's timeouts.
        let shorter = |asked: Option<Duration>| Some(asked.map_or(left, |a| a.min(left)));
        let options = RequestOptions {
            connect_timeout: shorter(options.and_then(|o| o.connect_timeout)),
            first_byte_timeout: shorter(options.and_then(|o| o.first_byte_timeout)),
            between_bytes_timeout: shorter(options.and_then(|o| o.between_bytes_timeout)),
        };
        let ledger = Arc::clone(&self.ledger);
        Box::new(async move {
            let started = Instant::now();
            let sent = tokio::time::timeout(
                left,
                wasmtime_wasi_http::default_send_request(request, Some(options)),
            )
            .await;
            {
                let mut l = lock(&ledger);
                l.budget.finish();
                l.busy += started.elapsed();
            }
            let (response, io) = sent.map_err(|_| Error::ConnectionReadTimeout)??;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}
