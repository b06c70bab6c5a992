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
