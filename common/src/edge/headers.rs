//! The `x-strata-*` and `server-timing` headers on every invoke response (the invoke
//! API's and HTTP routes' alike), written without the formatter and, for the values a
//! node repeats, without copying them again: this runs on every response.

use super::error::REQUEST_ID;
use crate::model::{ExecutedAt, InvokeResponse};
use axum::http::header::InvalidHeaderValue;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

// The response headers' names, parsed once rather than on every response.
static H_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID);
static H_EXECUTED_AT: HeaderName = HeaderName::from_static("x-strata-executed-at");
static H_START: HeaderName = HeaderName::from_static("x-strata-start");
static H_VERSION: HeaderName = HeaderName::from_static("x-strata-version");
static H_RUNTIME: HeaderName = HeaderName::from_static("x-strata-runtime");
static H_PEAK_MEMORY: HeaderName = HeaderName::from_static("x-strata-peak-memory-bytes");
static H_FUNCTION_ERROR: HeaderName = HeaderName::from_static("x-strata-function-error");
static H_SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// How many headers [`set_strata_headers`] writes at most.
pub(super) const COUNT: usize = 8;

/// The `x-strata-*` and `server-timing` headers every invoke response carries.
pub(super) fn set_strata_headers(h: &mut HeaderMap, resp: &InvokeResponse) {
    // Room for all of them at once rather than growing the map on the way.
    h.reserve(COUNT);
    let mut set = |name: &HeaderName, value: Result<HeaderValue, _>| {
        // A value that is not a valid header (a version or node name never is) is left
        // out rather than failing the response.
        if let Ok(v) = value {
            h.insert(name.clone(), v);
        }
    };
    let id = resp.request_id.hex();
    set(&H_REQUEST_ID, HeaderValue::from_bytes(&id));
    REPEATED.with_borrow_mut(|r| {
        set(&H_EXECUTED_AT, r.executed_at(&resp.executed_at));
        set(&H_VERSION, r.version.value(&resp.version));
        if let Some(runtime) = &resp.runtime {
            set(&H_RUNTIME, r.runtime.value(runtime));
        }
    });
    set(&H_START, Ok(HeaderValue::from_static(resp.start.as_str())));
    set(
        &H_PEAK_MEMORY,
        Ok(HeaderValue::from(resp.peak_memory_bytes)),
    );
    if let Some(fe) = &resp.function_error {
        set(
            &H_FUNCTION_ERROR,
            Ok(HeaderValue::from_static(fe.kind.as_str())),
        );
    }
    let mut timing = String::with_capacity(80);
    timing.push_str("exec;dur=");
    push_millis(&mut timing, resp.timing.exec);
    timing.push_str(", instantiate;dur=");
    push_millis(&mut timing, resp.timing.instantiate);
    if let Some(f) = resp.timing.forward {
        timing.push_str(", forward;dur=");
        push_millis(&mut timing, f);
    }
    if let Some(o) = resp.timing.outbound {
        timing.push_str(", outbound;dur=");
        push_millis(&mut timing, o);
    }
    if let Some(c) = resp.timing.compile {
        timing.push_str(", compile;dur=");
        push_millis(&mut timing, c);
    }
    set(&H_SERVER_TIMING, HeaderValue::try_from(timing));
}

thread_local! {
    /// The header values a node's responses repeat, as last written on this thread.
    static REPEATED: std::cell::RefCell<Repeated> = std::cell::RefCell::default();
}

/// Header values kept from the last response: a node writes the same executed-at on
/// every response and the same few versions and runtime releases, and a kept value is
/// shared rather than copied again.
#[derive(Default)]
struct Repeated {
    executed_at: Option<(ExecutedAt, HeaderValue)>,
    version: LastValue,
    runtime: LastValue,
}

impl Repeated {
    fn executed_at(&mut self, at: &ExecutedAt) -> Result<HeaderValue, InvalidHeaderValue> {
        if let Some((kept, v)) = &self.executed_at
            && kept == at
        {
            return Ok(v.clone());
        }
        let v = HeaderValue::try_from(executed_at(at))?;
        self.executed_at = Some((at.clone(), v.clone()));
        Ok(v)
    }
}

/// One header's last value and the text it was made from.
#[derive(Default)]
struct LastValue(Option<(String, HeaderValue)>);

impl LastValue {
    fn value(&mut self, text: &str) -> Result<HeaderValue, InvalidHeaderValue> {
        if let Some((kept, v)) = &self.0
            && kept == text
        {
            return Ok(v.clone());
        }
        let v = HeaderValue::from_str(text)?;
        self.0 = Some((text.to_owned(), v.clone()));
        Ok(v)
    }
}

/// `at` as its `Display` writes it (`pop/<node>`, `region/<node>`), without the formatter.
fn executed_at(at: &ExecutedAt) -> String {
    let (tier, node) = match at {
        ExecutedAt::Pop(n) => ("pop/", n),
        ExecutedAt::Region(n) => ("region/", n),
    };
    let mut out = String::with_capacity(tier.len() + node.0.len());
    out.push_str(tier);
    out.push_str(&node.0);
    out
}

/// Appends `d` in milliseconds with three decimals (to the nearest microsecond, halves
/// up), with integer arithmetic and no formatter: written on every response.
fn push_millis(out: &mut String, d: std::time::Duration) {
    let micros = d.as_nanos().saturating_add(500) / 1000;
    push_decimal(out, micros / 1000);
    let frac = micros % 1000;
    out.push('.');
    for digit in [frac / 100, frac / 10 % 10, frac % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, mut n: u128) {
    let mut digits = [0u8; 39];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::push_millis;
    use crate::model::{ExecutedAt, InvokeResponse, NodeId, RequestId, StartKind, Timing};
    use axum::http::HeaderMap;
    use std::time::Duration;

    #[test]
    fn kept_values_follow_each_response() {
        let response = |at: ExecutedAt, version: &str, runtime: Option<&str>| InvokeResponse {
            request_id: RequestId(7),
            executed_at: at,
            start: StartKind::Warm,
            version: version.into(),
            body: Default::default(),
            function_error: None,
            timing: Timing::default(),
            peak_memory_bytes: 0,
            queued: false,
            runtime: runtime.map(str::to_owned),
            http: None,
        };
        let pop = || ExecutedAt::Pop(NodeId("pop-1".into()));
        let region = || ExecutedAt::Region(NodeId("eu".into()));
        for (at, version, runtime) in [
            (pop(), "1", Some("2026.10")),
            (pop(), "1", Some("2026.10")),
            (region(), "2", Some("2026.11")),
            (pop(), "1", None),
            (region(), "3", Some("2026.10")),
        ] {
            let mut h = HeaderMap::new();
            super::set_strata_headers(&mut h, &response(at.clone(), version, runtime));
            let get = |n: &str| h.get(n).map(|v| v.to_str().expect("ASCII").to_owned());
            assert_eq!(get("x-strata-executed-at"), Some(at.to_string()));
            assert_eq!(get("x-strata-version").as_deref(), Some(version));
            assert_eq!(get("x-strata-runtime").as_deref(), runtime);
        }
    }

    #[test]
    fn server_timing_has_a_compile_entry_only_when_the_run_compiled() {
        let response = |compile: Option<Duration>| InvokeResponse {
            request_id: RequestId(7),
            executed_at: ExecutedAt::Region(NodeId("eu".into())),
            start: StartKind::Cold,
            version: "1".into(),
            body: Default::default(),
            function_error: None,
            timing: Timing {
                instantiate: Duration::from_micros(12),
                exec: Duration::from_micros(2_500),
                forward: None,
                outbound: None,
                compile,
            },
            peak_memory_bytes: 0,
            queued: false,
            runtime: None,
            http: None,
        };
        let timing = |r: &InvokeResponse| {
            let mut h = HeaderMap::new();
            super::set_strata_headers(&mut h, r);
            h.get("server-timing")
                .map(|v| v.to_str().expect("ASCII").to_owned())
        };
        assert_eq!(
            timing(&response(Some(Duration::from_micros(41_250)))).as_deref(),
            Some("exec;dur=2.500, instantiate;dur=0.012, compile;dur=41.250")
        );
        assert_eq!(
            timing(&response(None)).as_deref(),
            Some("exec;dur=2.500, instantiate;dur=0.012")
        );
    }

    #[test]
    fn the_executed_at_header_is_its_display() {
        for at in [
            ExecutedAt::Pop(NodeId("pop-1".into())),
            ExecutedAt::Region(NodeId("eu-west".into())),
        ] {
            assert_eq!(super::executed_at(&at), at.to_string());
        }
    }

    #[test]
    fn server_timing_durations_read_as_float_formatting_did() {
        for nanos in [
            0,
            1,
            499,
            501,
            999,
            1_000,
            123_456,
            1_234_567,
            98_765_432_100,
        ] {
            let d = Duration::from_nanos(nanos);
            let mut ours = String::new();
            push_millis(&mut ours, d);
            assert_eq!(
                ours,
                format!("{:.3}", d.as_secs_f64() * 1000.0),
                "{nanos} ns"
            );
        }
        // Past f64's exact range the digits are still exact.
        let mut ours = String::new();
        push_millis(&mut ours, Duration::MAX);
        assert_eq!(ours, "18446744073709551616000.000");
    }
}
