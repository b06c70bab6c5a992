//! A guest's stdout read as CGI output, and a device request turned into CGI variables:
//! either gives a response or a typed error, never a panic. Run: `.ci/fuzz cgi_output`.
#![no_main]

use bytes::Bytes;
use common::edge::cgi;
use http::{HeaderMap, Method, Uri};
use libfuzzer_sys::fuzz_target;
use strata_fuzz::{fields, headers};

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = cgi::parse_output(Bytes::copy_from_slice(data)) {
        // Whatever parses is a response HTTP can carry.
        let _ = (resp.status, resp.headers.len(), resp.body.len());
    }
    // The request side: method, URI, host, then header lines.
    let f = fields(data);
    let (Some(method), Some(uri), Some(host)) = (f.first(), f.get(1), f.get(2)) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method.as_bytes()), uri.parse::<Uri>()) else {
        return;
    };
    let hs: HeaderMap = headers(f.get(3..).unwrap_or_default());
    let _ = cgi::request_env(&method, &uri, host, &hs, data.len());
});
