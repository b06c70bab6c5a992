//! Outbound HTTP from guests (`wasi:http/outgoing-handler`): which destinations a function
//! may reach and how many requests one invocation may make.
//!
//! Off by default: a function with no `allowed_outbound_hosts` may reach nothing. Entries
//! are Spin's: `scheme://host[:port]`, where the scheme may be `*`, the host `*` or
//! `*.suffix`, and the port `*`; without a port the scheme's default (80, 443) is meant.
//! [`OutboundBudget`] counts one invocation's requests against the total and concurrency
//! caps. Never performs I/O or reads a clock: the sandbox asks before it sends.

use std::time::Duration;

/// Most entries in `allowed_outbound_hosts`.
pub const MAX_ALLOWED_HOSTS: usize = 32;

/// One allowed destination pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    /// `None` for any scheme.
    scheme: Option<String>,
    host: HostMatch,
    /// `None` for any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`: hosts strictly under the suffix (stored with its leading dot).
    Under(String),
}

/// Why an `allowed_outbound_hosts` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The entry is not `scheme://host[:port]`.
    #[error("allowed_outbound_hosts entry {0:?} is not scheme://host[:port]")]
    Malformed(String),
    /// More entries than [`MAX_ALLOWED_HOSTS`].
    #[error("allowed_outbound_hosts has more than {MAX_ALLOWED_HOSTS} entries")]
    TooMany,
}

/// Why a request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The destination is not allowed.
    #[error("destination not in allowed_outbound_hosts")]
    NotAllowed,
    /// The invocation already made its most requests.
    #[error("outbound request limit reached")]
    TooMany,
    /// The invocation has its most requests in flight.
    #[error("outbound concurrency limit reached")]
    TooConcurrent,
}

/// What one function may send, and the bounds per invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRules {
    allowed: Vec<Allowed>,
    /// Most requests one invocation may make.
    pub max_requests: u32,
    /// Most requests one invocation may have in flight at once.
    pub max_concurrent: u32,
    /// Longest one request may take to connect and to answer (each, and never past the
    /// invocation's deadline).
    pub timeout: Duration,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn parse_entry(entry: &str) -> Option<Allowed> {
    let (scheme, rest) = entry.split_once("://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, "*")) => (h, None),
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (rest, default_port(scheme)),
    };
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "" => return None,
        "*" => HostMatch::Any,
        h => match h.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                HostMatch::Under(format!(".{suffix}"))
            }
            Some(_) => return None,
            None if h.contains('*') => return None,
            None => HostMatch::Exact(h.to_owned()),
        },
    };
    Some(Allowed {
        scheme: (scheme != "*").then(|| scheme.to_ascii_lowercase()),
        host,
        port,
    })
}

impl OutboundRules {
    /// Rules allowing `entries` (see the module docs).
    ///
    /// # Errors
    /// [`OutboundError`] for a malformed entry or too many.
    pub fn new(
        entries: &[String],
        max_requests: u32,
        max_concurrent: u32,
        timeout: Duration,
    ) -> Result<Self, OutboundError> {
        if entries.len() > MAX_ALLOWED_HOSTS {
            return Err(OutboundError::TooMany);
        }
        let allowed = entries
            .iter()
            .map(|e| parse_entry(e).ok_or_else(|| OutboundError::Malformed(e.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allowed,
            max_requests,
            max_concurrent,
            timeout,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed (`port` `None`: the scheme's
    /// default).
    pub fn permits(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let Some(port) = port.or_else(|| default_port(&scheme)) else {
            return false;
        };
        self.allowed.iter().any(|a| {
            a.scheme.as_ref().is_none_or(|s| *s == scheme)
                && a.port.is_none_or(|p| p == port)
                && match &a.host {
                    HostMatch::Any => true,
                    HostMatch::Exact(h) => *h == host,
                    HostMatch::Under(suffix) => {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    }
                }
        })
    }
}

/// One invocation's outbound requests so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundBudget {
    sent: u32,
    in_flight: u32,
}

impl OutboundBudget {
    /// Takes one request out of the budget if `rules` allow another now; pair with
    /// [`OutboundBudget::finish`] when its response arrived or it failed.
    ///
    /// # Errors
    /// [`Denied::TooMany`] or [`Denied::TooConcurrent`].
    pub fn start(&mut self, rules: &OutboundRules) -> Result<(), Denied> {
        if self.sent >= rules.max_requests {
            return Err(Denied::TooMany);
        }
        if self.in_flight >= rules.max_concurrent {
            return Err(Denied::TooConcurrent);
        }
        self.sent += 1;
        self.in_flight += 1;
        Ok(())
    }

    /// One request started with [`OutboundBudget::start`] is no longer in flight.
    pub fn finish(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// How many requests were started.
    pub fn sent(&self) -> u32 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> OutboundRules {
        let entries: Vec<String> = entries.iter().map(|s| (*s).to_owned()).collect();
        OutboundRules::new(&entries, 2, 1, Duration::from_secs(1)).expect("valid rules")
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let r = rules(&[]);
        assert!(!r.permits("http", "127.0.0.1", Some(80)));
    }

    #[test]
    fn entries_match_scheme_host_and_port() {
        let r = rules(&[
            "http://127.0.0.1:8080",
            "https://*.example.com",
            "*://api.test:*",
        ]);
        assert!(r.permits("http", "127.0.0.1", Some(8080)));
        assert!(!r.permits("http", "127.0.0.1", Some(8081)));
        assert!(!r.permits("https", "127.0.0.1", Some(8080)));
        assert!(r.permits("https", "a.example.com", None));
        assert!(r.permits("https", "A.B.Example.COM.", Some(443)));
        assert!(!r.permits("https", "example.com", None));
        assert!(!r.permits("https", "a.example.com", Some(8443)));
        assert!(!r.permits("http", "a.example.com", None));
        assert!(!r.permits("https", "badexample.com", None));
        assert!(r.permits("http", "api.test", Some(1)));
        assert!(r.permits("https", "api.test", None));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "127.0.0.1",
            "http://",
            "http://a/b",
            "http://a:x",
            "http://a*b",
            "http://*.",
        ] {
            let r = OutboundRules::new(&[bad.to_owned()], 1, 1, Duration::ZERO);
            assert!(matches!(r, Err(OutboundError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn the_budget_caps_total_and_concurrent_requests() {
        let r = rules(&["*://*:*"]);
        let mut b = OutboundBudget::default();
        assert_eq!(b.start(&r), Ok(()));
        assert_eq!(b.start(&r), Err(Denied::TooConcurrent));
        b.finish();
        assert_eq!(b.start(&r), Ok(()));
        b.finish();
        assert_eq!(b.start(&r), Err(Denied::TooMany));
        assert_eq!(b.sent(), 2);
    }
}
