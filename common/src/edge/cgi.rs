//! CGI (RFC 3875, the parts that make sense for a WebAssembly guest) for HTTP routes: a
//! device request becomes environment variables plus the body on stdin, and the guest's
//! stdout becomes the HTTP response.
//!
//! Output contract: if the first line of stdout is a header field (`Name: value`), stdout
//! starts with a header block ended by a blank line (`\n\n` or `\r\n\r\n`); `Status: NNN
//! [reason]` sets the status (default 200, or 302 with a `Location:` and no status), every
//! other field becomes a response header. Otherwise all of stdout is the body (200,
//! `text/plain; charset=utf-8` when it is UTF-8, `application/octet-stream` when not).
//! A header block that starts but is malformed (no blank line within
//! [`MAX_HEADER_BLOCK`], more than [`MAX_HEADER_FIELDS`] fields, a bad line, a status
//! outside 200-599, a name or value HTTP cannot carry such as one holding CR or LF) is the
//! guest's fault and answers 502 Bad Gateway with kind `invalid_cgi_response`, like a web
//! server whose CGI script misbehaves.
//!
//! The guest never frames the connection: framing and hop-by-hop fields
//! ([`is_platform_owned`]: `Content-Length`, `Transfer-Encoding`, `Connection`,
//! `Keep-Alive`, `Upgrade`, `TE`, `Trailer`, `Proxy-*`) are dropped from its header block,
//! and the server computes the framing from the body it actually sends. Dropping (rather
//! than refusing) keeps ordinary CGI scripts that print their own `Content-Length`
//! working. Never performs I/O.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use bytes::Bytes;

/// Largest header block a guest may print before its blank line, in bytes.
pub const MAX_HEADER_BLOCK: usize = 16 << 10;

/// Most header fields (including `Status`) a guest may print in its header block.
pub const MAX_HEADER_FIELDS: usize = 64;

/// Response fields that describe the connection or its framing, which only the platform's
/// HTTP server may set: a guest's copy is dropped (see the module docs).
const PLATFORM_OWNED: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// Whether a response field named `name` belongs to the platform (framing, hop-by-hop, or
/// any `Proxy-*` field), so a guest may not set it.
pub fn is_platform_owned(name: &str) -> bool {
    PLATFORM_OWNED.iter().any(|p| name.eq_ignore_ascii_case(p))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// Request headers not passed to the guest: credentials for the platform are not the
/// function's business (RFC 3875 §4.1.18 lets servers withhold them), and hop-by-hop
/// fields describe the connection, not the request.
const WITHHELD: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "connection",
    "transfer-encoding",
];

/// The CGI meta-variables for a request to `host` matching a route. `PATH_INFO` is the
/// whole request path (`SCRIPT_NAME` is empty): guests route on the path they were sent.
pub fn request_env(
    method: &Method,
    uri: &Uri,
    host: &str,
    headers: &HeaderMap,
    body_len: usize,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("GATEWAY_INTERFACE".to_owned(), "CGI/1.1".to_owned()),
        ("SERVER_PROTOCOL".to_owned(), "HTTP/1.1".to_owned()),
        ("REQUEST_METHOD".to_owned(), method.as_str().to_owned()),
        ("SCRIPT_NAME".to_owned(), String::new()),
        ("PATH_INFO".to_owned(), uri.path().to_owned()),
        (
            "QUERY_STRING".to_owned(),
            uri.query().unwrap_or("").to_owned(),
        ),
        ("SERVER_NAME".to_owned(), host.to_owned()),
        ("CONTENT_LENGTH".to_owned(), body_len.to_string()),
    ];
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        env.push(("CONTENT_TYPE".to_owned(), ct.to_owned()));
    }
    for (name, value) in headers {
        let n = name.as_str();
        if WITHHELD.contains(&n) || name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH {
            continue;
        }
        // Non-ASCII header values cannot be a WASI environment string faithfully; skip
        // them rather than pass a lossy copy the guest might trust.
        let Ok(v) = value.to_str() else { continue };
        let key = format!("HTTP_{}", n.to_ascii_uppercase().replace('-', "_"));
        // Repeated fields are combined as RFC 3875 §4.1.18 says.
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(v);
            }
            None => env.push((key, v.to_owned())),
        }
    }
    env
}

/// Why a guest's output is not a valid CGI response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgiError {
    /// The header block has no terminating blank line within [`MAX_HEADER_BLOCK`].
    #[error("the CGI header block has no blank line within the first {MAX_HEADER_BLOCK} bytes")]
    Unterminated,
    /// A line in the header block is not `Name: value`.
    #[error("CGI header line {0:?} is not `Name: value`")]
    BadLine(String),
    /// `Status:` is not a three-digit final status code 200-599.
    #[error("CGI Status {0:?} is not a three-digit HTTP status code from 200 to 599")]
    BadStatus(String),
    /// The header block has more than [`MAX_HEADER_FIELDS`] fields.
    #[error("the CGI header block has more than {MAX_HEADER_FIELDS} fields")]
    TooManyFields,
    /// A header name or value HTTP cannot carry.
    #[error("CGI header {0:?} cannot be sent over HTTP")]
    BadHeader(String),
}

/// A guest's stdout as an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiResponse {
    /// The status (200 unless the guest said otherwise).
    pub status: StatusCode,
    /// The guest's headers (and a default `content-type`).
    pub headers: HeaderMap,
    /// Everything after the header block.
    pub body: Bytes,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits `line` (without its line ending) into a header name and trimmed value.
fn field(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let (name, value) = line.split_once(':')?;
    is_token(name).then(|| (name, value.trim()))
}

/// The next line of `out` from `at`: (line without `\r\n`/`\n`, index after it).
fn next_line(out: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = out.get(at..)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let line = &rest[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, at + nl + 1))
}

fn default_content_type(body: &[u8]) -> HeaderValue {
    HeaderValue::from_static(if std::str::from_utf8(body).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    })
}

/// Interprets a guest's stdout (see the module docs for the contract).
///
/// # Errors
/// [`CgiError`] when a header block starts but is malformed.
pub fn parse_output(out: Bytes) -> Result<CgiResponse, CgiError> {
    let first = out
        .iter()
        .position(|&b| b == b'\n')
        .map_or(&out[..], |i| &out[..i]);
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let starts_with_header = field(first).is_some();
    if !starts_with_header {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, default_content_type(&out));
        return Ok(CgiResponse {
            status: StatusCode::OK,
            headers,
            body: out,
        });
    }
    let mut headers = HeaderMap::new();
    let mut status = None;
    let mut at = 0;
    let mut fields = 0usize;
    loop {
        let Some((line, next)) = next_line(&out, at).filter(|(_, n)| *n <= MAX_HEADER_BLOCK) else {
            return Err(CgiError::Unterminated);
        };
        at = next;
        if line.is_empty() {
            break;
        }
        let (name, value) =
            field(line).ok_or_else(|| CgiError::BadLine(String::from_utf8_lossy(line).into()))?;
        fields += 1;
        if fields > MAX_HEADER_FIELDS {
            return Err(CgiError::TooManyFields);
        }
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or_default();
            let parsed = (code.len() == 3)
                .then(|| code.parse::<u16>().ok())
                .flatten()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|c| (200..600).contains(&c.as_u16()));
            status = Some(parsed.ok_or_else(|| CgiError::BadStatus(value.to_owned()))?);
            continue;
        }
        let bad = || CgiError::BadHeader(name.to_owned());
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        // `HeaderValue` refuses CR, LF and NUL: a value cannot smuggle a line break.
        let v = HeaderValue::from_str(value).map_err(|_| bad())?;
        if is_platform_owned(name) {
            continue;
        }
        headers.append(n, v);
    }
    let body = out.slice(at..);
    let status = status.unwrap_or(if headers.contains_key(header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, default_content_type(&body));
    }
    Ok(CgiResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CgiResponse, CgiError> {
        parse_output(Bytes::from(s.to_owned()))
    }

    #[test]
    fn plain_output_is_the_body() {
        let r = parse("Hello, world!\n").expect("valid");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "Hello, world!\n");
        assert_eq!(r.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        let r = parse_output(Bytes::from_static(b"\xff\x00")).expect("valid");
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(parse("").expect("valid").body, "");
    }

    #[test]
    fn status_and_headers_shape_the_response() {
        let r = parse(
            "Status: 201 Created\r\nContent-Type: application/json\r\nX-A: 1\r\nX-A: 2\r\n\r\n{}",
        )
        .expect("valid");
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(r.body, "{}");
        let r = parse("Content-Type: text/html\n\n<p>").expect("valid");
        assert_eq!((r.status, r.body.as_ref()), (StatusCode::OK, &b"<p>"[..]));
        let r = parse("Location: /elsewhere\n\n").expect("valid");
        assert_eq!(r.status, StatusCode::FOUND);
    }

    #[test]
    fn a_malformed_header_block_is_an_error() {
        assert_eq!(
            parse("Status: 200\nno blank line"),
            Err(CgiError::Unterminated)
        );
        assert!(matches!(
            parse("Status: 2000\n\n"),
            Err(CgiError::BadStatus(_))
        ));
        assert!(matches!(
            parse("Status: abc\n\n"),
            Err(CgiError::BadStatus(_))
        ));
        assert!(matches!(
            parse("Status: 099\n\n"),
            Err(CgiError::BadStatus(_))
        ));
        // Informational statuses would leave the real response still to come.
        for s in ["100", "101", "103", "199", "600"] {
            assert!(
                matches!(
                    parse(&format!("Status: {s}\n\n")),
                    Err(CgiError::BadStatus(_))
                ),
                "{s}"
            );
        }
        assert!(matches!(
            parse("X-Ok: 1\nnot a header\n\n"),
            Err(CgiError::BadLine(_))
        ));
        let mut huge = "X-Big: ".to_owned();
        huge.push_str(&"a".repeat(MAX_HEADER_BLOCK));
        huge.push_str("\n\n");
        assert_eq!(parse(&huge), Err(CgiError::Unterminated));
    }

    #[test]
    fn framing_and_hop_by_hop_fields_are_dropped() {
        let r = parse(
            "Content-Length: 0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\
             Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nTE: trailers\r\nTrailer: X\r\n\
             Proxy-Authenticate: Basic\r\nproxy-connection: close\r\nX-Kept: yes\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nPWNED",
        )
        .expect("valid");
        for name in [
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "upgrade",
            "te",
            "trailer",
            "proxy-authenticate",
            "proxy-connection",
        ] {
            assert!(!r.headers.contains_key(name), "{name} kept");
        }
        assert_eq!(r.headers["x-kept"], "yes");
        // What followed the blank line is body, whatever it looks like.
        assert_eq!(r.body, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nPWNED");
        assert!(is_platform_owned("PROXY-X") && !is_platform_owned("proxy"));
        assert!(!is_platform_owned("x-proxy-id") && !is_platform_owned("content-type"));
    }

    #[test]
    fn the_header_block_is_bounded_in_count_and_line_breaks_cannot_be_injected() {
        let many: String = (0..=MAX_HEADER_FIELDS)
            .map(|i| format!("X-{i}: v\n"))
            .collect();
        assert_eq!(parse(&format!("{many}\n")), Err(CgiError::TooManyFields));
        let enough: String = (0..MAX_HEADER_FIELDS)
            .map(|i| format!("X-{i}: v\n"))
            .collect();
        assert!(parse(&format!("{enough}\n")).is_ok());
        // A bare CR inside a value (the only line break that survives line splitting)
        // and control bytes are refused, never passed to the wire.
        assert!(matches!(
            parse("X-A: a\rSet-Cookie: x=1\n\n"),
            Err(CgiError::BadHeader(_))
        ));
        assert!(matches!(
            parse("X-A: a\0b\n\n"),
            Err(CgiError::BadHeader(_))
        ));
        assert!(matches!(
            parse("X-A: 1\nX B: 2\n\n"),
            Err(CgiError::BadLine(_))
        ));
    }

    #[test]
    fn the_request_becomes_cgi_variables() {
        let mut h = HeaderMap::new();
        h.insert("x-thing", HeaderValue::from_static("a"));
        h.append("x-thing", HeaderValue::from_static("b"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let uri: Uri = "/api/items?id=3".parse().expect("uri");
        let env = request_env(&Method::POST, &uri, "shop.example", &h, 5);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("REQUEST_METHOD"), Some("POST"));
        assert_eq!(get("PATH_INFO"), Some("/api/items"));
        assert_eq!(get("QUERY_STRING"), Some("id=3"));
        assert_eq!(get("SERVER_NAME"), Some("shop.example"));
        assert_eq!(get("CONTENT_LENGTH"), Some("5"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("HTTP_X_THING"), Some("a, b"));
        assert_eq!(get("HTTP_AUTHORIZATION"), None);
    }
}
