//! The edge's side of the `http` ABI (DESIGN §3): a device request's head as the guest
//! receives it, and the guest's response head as the device receives it.
//!
//! Owns which fields are the platform's in each direction. Toward the guest: the
//! platform's credentials (`authorization`, `proxy-authorization`), its own `x-strata-*`
//! fields, `host` (the head's authority carries it) and hop-by-hop fields are withheld.
//! Toward the device: framing and hop-by-hop fields the guest set are dropped
//! ([`super::cgi::is_platform_owned`]), as for CGI output, and the server frames the body
//! it actually sends; the `x-strata-*` fields are the platform's too. Never performs I/O.

use super::cgi::is_platform_owned;
use crate::model::{HttpRequestHead, HttpResponseHead};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;

/// Request fields never passed to a guest besides `x-strata-*`: the platform's
/// credentials, the host (carried as the authority) and hop-by-hop fields.
const WITHHELD: [&str; 9] = [
    "authorization",
    "proxy-authorization",
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

fn is_strata(name: &str) -> bool {
    name.get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case("x-strata-"))
}

/// The head an `http`-ABI guest receives for a device request to `host` (lower-case,
/// possibly with a port; empty when unknown).
pub fn request_head(
    method: &Method,
    uri: &Uri,
    host: &str,
    headers: &HeaderMap,
) -> HttpRequestHead {
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| host.to_owned());
    HttpRequestHead {
        method: method.as_str().to_owned(),
        scheme: uri.scheme_str().unwrap_or("http").to_owned(),
        authority,
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        headers: headers
            .iter()
            .filter(|(n, _)| {
                let n = n.as_str();
                !WITHHELD.contains(&n) && !is_strata(n) && !n.starts_with("proxy-")
            })
            .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
    }
}

/// The device's response for a guest that answered `head` with `body`: its status and
/// its fields but the platform's (a field HTTP cannot carry is dropped too).
pub fn render(head: &HttpResponseHead, body: Bytes) -> Response {
    let mut out = Response::new(Body::from(body));
    // wasi:http only lets a guest set a valid status; a host bug falls back to 500.
    *out.status_mut() =
        StatusCode::from_u16(head.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let fields = out.headers_mut();
    for (name, value) in &head.headers {
        if is_platform_owned(name) || is_strata(name) {
            continue;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        fields.append(n, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_sees_the_request_without_the_platforms_fields() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example:8080"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert("x-strata-affinity", HeaderValue::from_static("k"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("proxy-connection", HeaderValue::from_static("x"));
        h.insert("x-thing", HeaderValue::from_static("a"));
        h.append("x-thing", HeaderValue::from_static("b"));
        let uri: Uri = "/items?id=3".parse().expect("uri");
        let head = request_head(&Method::PUT, &uri, "shop.example", &h);
        assert_eq!(head.method, "PUT");
        assert_eq!(head.scheme, "http");
        assert_eq!(head.authority, "shop.example:8080");
        assert_eq!(head.path_and_query, "/items?id=3");
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-thing", "x-thing"]);
    }

    #[test]
    fn the_device_gets_the_guests_status_and_fields_but_not_framing() {
        let head = HttpResponseHead {
            status: 418,
            headers: vec![
                ("x-guest".into(), Bytes::from_static(b"hello")),
                ("content-length".into(), Bytes::from_static(b"999")),
                ("transfer-encoding".into(), Bytes::from_static(b"chunked")),
                ("x-strata-executed-at".into(), Bytes::from_static(b"forged")),
                ("x-bad".into(), Bytes::from_static(b"a\r\nb")),
            ],
        };
        let out = render(&head, Bytes::from_static(b"body"));
        assert_eq!(out.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(out.headers()["x-guest"], "hello");
        for dropped in [
            "content-length",
            "transfer-encoding",
            "x-strata-executed-at",
            "x-bad",
        ] {
            assert!(!out.headers().contains_key(dropped), "{dropped} kept");
        }
    }
}
