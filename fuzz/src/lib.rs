//! Helpers shared by the fuzz targets: splitting fuzz input into text fields and header
//! lines, so one byte string drives a parser that takes several inputs.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The input split at `\n` into fields, each decoded lossily as UTF-8.
pub fn fields(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == b'\n')
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Header lines (`name: value`) as a map; lines HTTP cannot carry are left out, as the
/// HTTP server would have refused them.
pub fn headers(lines: &[String]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_bytes(value.trim().as_bytes()),
        ) {
            map.append(n, v);
        }
    }
    map
}
