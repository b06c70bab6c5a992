//! Finding regions: a static list, or DNS (SRV `_strata._udp.<name>`, A/AAAA fallback).
//!
//! Owns the POP's use of hickory-resolver. Answers "which region addresses, in which
//! order, valid until when"; never connects to a region and never picks one. The
//! resolver's own cache honours record TTLs, and every [`Resolution`] carries the
//! earliest expiry of the records it was built from, so callers re-resolve exactly when
//! the data may have changed.
//!
//! Configured DNS names are treated as fully qualified: search domains from the system
//! configuration are never appended, so a region name cannot silently resolve to a
//! look-alike under a local search domain.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData};
use serde::Deserialize;

/// Port used for the A/AAAA fallback when the configuration names none.
pub const DEFAULT_REGION_PORT: u16 = 4433;

/// How long a static list is considered valid: it never changes while the node runs.
const STATIC_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The service label prepended to the configured name for the SRV lookup.
const SRV_PREFIX: &str = "_strata._udp.";

fn default_port() -> u16 {
    DEFAULT_REGION_PORT
}

/// How a POP finds its regions.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RegionSource {
    /// A fixed list of region addresses, in preference order (development).
    Static(Vec<SocketAddr>),
    /// DNS: SRV records `_strata._udp.<name>`, or when there are none, the A/AAAA records
    /// of `<name>` with `port`.
    Dns {
        /// The deployment's region name, e.g. `regions.example.com` (always treated as
        /// fully qualified).
        name: String,
        /// Port for the A/AAAA fallback. Default: [`DEFAULT_REGION_PORT`] (4433).
        #[serde(default = "default_port")]
        port: u16,
    },
}

/// Why no region list could be produced.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The lookup itself failed (no answer, server failure, invalid name or resolver
    /// configuration): the regions may exist, we could not find out.
    #[error("region lookup failed: {0}")]
    Resolve(String),
    /// The lookup succeeded but names no usable region (the name does not exist, has no
    /// records, or the static list is empty).
    #[error("no regions found: {0}")]
    NoRegions(String),
}

/// The regions found by one resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Region addresses in preference order (SRV priority, then weight descending), without
    /// duplicates. Never empty.
    pub regions: Vec<SocketAddr>,
    /// When the records this list was built from expire (the minimum TTL over them);
    /// resolve again after this instant.
    pub valid_until: Instant,
}

/// Resolves a [`RegionSource`] to region addresses.
#[derive(Debug)]
pub struct Discovery {
    source: Source,
}

#[derive(Debug)]
enum Source {
    Static(Vec<SocketAddr>),
    // Boxed: a resolver is large and a static source should not pay for it.
    Dns(Box<DnsSource>),
}

#[derive(Debug)]
struct DnsSource {
    srv_name: Name,
    name: Name,
    port: u16,
    resolver: TokioResolver,
}

impl Discovery {
    /// Prepares discovery for `source`. For DNS sources, `nameserver` (UDP and TCP to that
    /// address) replaces the system configuration; `None` reads the system's
    /// (`/etc/resolv.conf` on Unix).
    ///
    /// # Errors
    /// [`DiscoveryError::Resolve`] when the name is not a valid DNS name or the system
    /// resolver configuration cannot be read.
    pub fn new(
        source: RegionSource,
        nameserver: Option<SocketAddr>,
    ) -> Result<Self, DiscoveryError> {
        let source = match source {
            RegionSource::Static(list) => Source::Static(list),
            RegionSource::Dns { name, port } => {
                let srv_name = fqdn(&format!("{SRV_PREFIX}{name}"))?;
                let name = fqdn(&name)?;
                let resolver = build_resolver(nameserver)?;
                Source::Dns(Box::new(DnsSource {
                    srv_name,
                    name,
                    port,
                    resolver,
                }))
            }
        };
        Ok(Self { source })
    }

    /// Looks the regions up now (through the resolver's TTL-honouring cache).
    ///
    /// # Errors
    /// [`DiscoveryError::NoRegions`] when the name exists nowhere or yields no address;
    /// [`DiscoveryError::Resolve`] when the DNS could not be queried.
    pub async fn resolve(&self) -> Result<Resolution, DiscoveryError> {
        match &self.source {
            Source::Static(list) if list.is_empty() => Err(DiscoveryError::NoRegions(
                "the static region list is empty".into(),
            )),
            Source::Static(list) => {
                let now = Instant::now();
                Ok(Resolution {
                    regions: list.clone(),
                    valid_until: now.checked_add(STATIC_VALIDITY).unwrap_or(now),
                })
            }
            Source::Dns(dns) => dns.resolve().await,
        }
    }
}

impl DnsSource {
    async fn resolve(&self) -> Result<Resolution, DiscoveryError> {
        let Self {
            srv_name,
            name,
            port,
            resolver,
        } = self;
        match resolver.srv_lookup(srv_name.clone()).await {
            Ok(srv) => from_srv(resolver, srv_name, &srv).await,
            Err(e) if e.is_no_records_found() => {
                // No SRV records: their absence is also data with a TTL, after which SRV
                // records may have appeared.
                let absent_until = negative_ttl(&e)
                    .map(|ttl| Instant::now() + Duration::from_secs(u64::from(ttl)));
                let mut found = from_addresses(resolver, name, *port).await?;
                if let Some(until) = absent_until {
                    found.valid_until = found.valid_until.min(until);
                }
                Ok(found)
            }
            Err(e) => Err(DiscoveryError::Resolve(format!("SRV {srv_name}: {e}"))),
        }
    }
}

fn fqdn(name: &str) -> Result<Name, DiscoveryError> {
    let mut parsed = Name::from_utf8(name)
        .map_err(|e| DiscoveryError::Resolve(format!("invalid DNS name {name:?}: {e}")))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

fn build_resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver, DiscoveryError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match nameserver {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                provider,
            );
            // An explicit name server is the whole truth: no hosts file.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        }
        None => TokioResolver::builder(provider).map_err(|e| {
            DiscoveryError::Resolve(format!("reading the system resolver configuration: {e}"))
        })?,
    };
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder
        .build()
        .map_err(|e| DiscoveryError::Resolve(format!("building the resolver: {e}")))
}

fn negative_ttl(e: &NetError) -> Option<u32> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => no_records.negative_ttl,
        _ => None,
    }
}

/// One SRV target, as found in the answer.
struct Target {
    priority: u16,
    weight: u16,
    port: u16,
    host: Name,
}

async fn from_srv(
    resolver: &TokioResolver,
    srv_name: &Name,
    lookup: &hickory_resolver::lookup::Lookup,
) -> Result<Resolution, DiscoveryError> {
    let mut targets: Vec<Target> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            // A target of "." means "no service here" (RFC 2782).
            RData::SRV(srv) if !srv.target.is_root() => Some(Target {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                host: srv.target.clone(),
            }),
            _ => None,
        })
        .collect();
    targets.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));

    let lookups = join_all(targets.iter().map(|t| resolver.lookup_ip(t.host.clone()))).await;
    let mut valid_until = lookup.valid_until();
    let mut addresses = Vec::new();
    for (target, found) in targets.iter().zip(lookups) {
        match found {
            Ok(ips) => {
                valid_until = valid_until.min(ips.valid_until());
                addresses.extend(ips.iter().map(|ip| SocketAddr::new(ip, target.port)));
            }
            // One unresolvable target must not hide the others.
            Err(e) => {
                tracing::warn!(target = %target.host, error = %e, "SRV target did not resolve")
            }
        }
    }
    finish(addresses, valid_until, srv_name)
}

async fn from_addresses(
    resolver: &TokioResolver,
    name: &Name,
    port: u16,
) -> Result<Resolution, DiscoveryError> {
    match resolver.lookup_ip(name.clone()).await {
        Ok(ips) => {
            let addresses = ips
                .iter()
                .map(|ip: IpAddr| SocketAddr::new(ip, port))
                .collect();
            finish(addresses, ips.valid_until(), name)
        }
        Err(e) if e.is_no_records_found() => Err(DiscoveryError::NoRegions(format!(
            "neither SRV {SRV_PREFIX}{name} nor A/AAAA {name} exist"
        ))),
        Err(e) => Err(DiscoveryError::Resolve(format!("A/AAAA {name}: {e}"))),
    }
}

fn finish(
    addresses: Vec<SocketAddr>,
    valid_until: Instant,
    name: &Name,
) -> Result<Resolution, DiscoveryError> {
    let mut seen = HashSet::new();
    let regions: Vec<SocketAddr> = addresses.into_iter().filter(|a| seen.insert(*a)).collect();
    if regions.is_empty() {
        return Err(DiscoveryError::NoRegions(format!(
            "{name} names no reachable address"
        )));
    }
    Ok(Resolution {
        regions,
        valid_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_static_list_is_returned_in_order() {
        let list: Vec<SocketAddr> = vec![
            "127.0.0.1:4433".parse().expect("addr"),
            "[::1]:4434".parse().expect("addr"),
        ];
        let discovery = Discovery::new(RegionSource::Static(list.clone()), None).expect("new");
        let found = discovery.resolve().await.expect("static resolves");
        assert_eq!(found.regions, list);
        assert!(found.valid_until > Instant::now() + Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn an_empty_static_list_is_no_regions() {
        let discovery = Discovery::new(RegionSource::Static(vec![]), None).expect("new");
        assert!(matches!(
            discovery.resolve().await,
            Err(DiscoveryError::NoRegions(_))
        ));
    }

    #[test]
    fn dns_source_port_defaults_to_4433() {
        #[derive(Deserialize)]
        struct Config {
            regions: RegionSource,
        }
        let config: Config =
            toml::from_str("regions = { dns = { name = \"regions.example.com\" } }")
                .expect("parses");
        assert!(matches!(
            config.regions,
            RegionSource::Dns { ref name, port: DEFAULT_REGION_PORT } if name == "regions.example.com"
        ));
    }

    #[test]
    fn an_invalid_name_is_refused_at_construction() {
        let source = RegionSource::Dns {
            name: "bad..name".into(),
            port: 1,
        };
        let nameserver = Some("127.0.0.1:53".parse().expect("addr"));
        assert!(matches!(
            Discovery::new(source, nameserver),
            Err(DiscoveryError::Resolve(_))
        ));
    }
}
