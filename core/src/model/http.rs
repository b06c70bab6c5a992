//! The HTTP request and response heads an `http`-ABI function (DESIGN §3, a
//! `wasi:http/proxy` component) sees and answers, as plain data that crosses the wire.
//!
//! The bodies travel where every ABI's do: the request body is
//! [`super::InvokeRequest::payload`], the response body [`super::InvokeResponse::body`].
//! Never performs I/O; building a head from a device request and rendering a response
//! head are the edge's (`common::edge`), which also decides which fields are the
//! platform's.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A device request as an `http`-ABI guest receives it: everything but the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequestHead {
    /// The method, as sent (`GET`, `POST`, an extension method).
    pub method: String,
    /// `https` when the device connected over TLS, else `http`.
    pub scheme: String,
    /// The host the device addressed (`Host` or the URI's authority), with its port.
    pub authority: String,
    /// The path and query, as sent (`/items?id=3`).
    pub path_and_query: String,
    /// The request's fields in order, without the platform's (credentials, `x-strata-*`,
    /// framing and hop-by-hop fields).
    pub headers: Vec<(String, Bytes)>,
}

/// An `http`-ABI guest's response: everything but the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponseHead {
    /// The status the guest set.
    pub status: u16,
    /// The guest's fields in order. The edge drops any the platform owns before sending.
    pub headers: Vec<(String, Bytes)>,
}

/// A device request's head not built yet: the edge keeps the request's parts and the head
/// is built only when something reads it (an `http`-ABI run, a forward to a region), not
/// for every request (most functions are of the other ABIs, which ignore it).
#[derive(Clone)]
pub struct HeadSource(Arc<dyn Fn() -> HttpRequestHead + Send + Sync>);

impl HeadSource {
    /// A source that builds the head with `build`.
    pub fn new(build: impl Fn() -> HttpRequestHead + Send + Sync + 'static) -> Self {
        Self(Arc::new(build))
    }

    /// The head, built now.
    pub fn build(&self) -> HttpRequestHead {
        (self.0)()
    }
}

impl fmt::Debug for HeadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HeadSource").field(&self.build()).finish()
    }
}

/// Two sources are equal when they build equal heads.
impl PartialEq for HeadSource {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.build() == other.build()
    }
}

impl Eq for HeadSource {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FunctionName, InvocationType, InvokeRequest, Qualifier, RequestId};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_kept_head_is_built_only_when_read_and_goes_on_the_wire_once_settled() {
        let built = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&built);
        let head = HttpRequestHead {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "shop.example".into(),
            path_and_query: "/items?id=3".into(),
            headers: vec![("x-echo".into(), Bytes::from_static(b"tea"))],
        };
        let expected = head.clone();
        let mut req = InvokeRequest {
            request_id: RequestId(7),
            token: None,
            function: FunctionName::new("f".to_owned()).expect("name"),
            qualifier: Qualifier::Latest,
            payload: Bytes::new(),
            invocation_type: InvocationType::RequestResponse,
            affinity: None,
            memory_mb: None,
            env: Vec::new(),
            route: None,
            http: None,
            http_source: Some(HeadSource::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                head.clone()
            })),
            authorized_tenant: None,
        };
        assert_eq!(built.load(Ordering::Relaxed), 0, "nothing built up front");
        assert_eq!(req.http_head(), Some(expected.clone()));
        assert_eq!(built.load(Ordering::Relaxed), 1);
        // Serialized as it is, the source is left behind; settled, the head travels.
        let wire = serde_json::to_value(&req).expect("serializes");
        assert!(wire["http"].is_null());
        req.settle_http_head();
        assert!(req.http_source.is_none());
        let wire: InvokeRequest =
            serde_json::from_value(serde_json::to_value(&req).expect("serializes"))
                .expect("deserializes");
        assert_eq!(wire.http, Some(expected.clone()));
        assert_eq!(wire.http_head(), Some(expected));
    }
}
