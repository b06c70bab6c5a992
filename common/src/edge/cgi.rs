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
//! [`MAX_HEADER_BLOCK`], a bad line, a bad status, a field HTTP cannot carry) is the
//! guest's fault and answers 502 Bad Gateway with kind `invalid_cgi_response`, like a web
//! server whose CGI script misbehaves. Never performs I/O.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use bytes::Bytes;

/// Largest header block a guest may print before its blank line, in bytes.
pub const MAX_HEADER_BLOCK: usize = 16 << 10;

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
    /// `Status:` is not a three-digit code 100-599.
    #[error("CGI Status {0:?} is not a three-digit HTTP status code")]
    BadStatus(String),
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
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or_default();
            let parsed = (code.len() == 3)
                .then(|| code.parse::<u16>().ok())
                .flatten()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|c| (100..600).contains(&c.as_u16()));
            status = Some(parsed.ok_or_else(|| CgiError::BadStatus(value.to_owned()))?);
            continue;
        }
        let bad = || CgiError::BadHeader(name.to_owned());
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let v = HeaderValue::from_str(value).map_err(|_| bad())?;
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
