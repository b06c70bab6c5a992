//! Region discovery against a real DNS server on loopback ([`crate::dns::TestDns`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use pop_node::discovery::{Discovery, DiscoveryError, RegionSource};

use crate::dns::TestDns;

/// Bound on waiting for a record change to become visible.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn dns_source(name: &str) -> RegionSource {
    RegionSource::Dns {
        name: name.into(),
        port: 4433,
    }
}

#[tokio::test]
async fn srv_records_resolve_to_region_addresses() -> anyhow::Result<()> {
    let dns = TestDns::start().await?;
    dns.set_srv(
        "_strata._udp.regions.strata.test",
        60,
        vec![
            (20, 100, 4500, "backup.strata.test".into()),
            (10, 1, 4433, "light.strata.test".into()),
            (10, 9, 4434, "heavy.strata.test".into()),
        ],
    );
    dns.set_a("backup.strata.test", 60, vec![ip(3)]);
    dns.set_a("light.strata.test", 60, vec![ip(1)]);
    dns.set_a("heavy.strata.test", 5, vec![ip(2), "::1".parse()?]);
    let discovery = Discovery::new(dns_source("regions.strata.test"), Some(dns.addr))?;

    let before = Instant::now();
    let found = discovery.resolve().await?;

    // Priority first, then weight descending; a target's addresses keep the SRV port.
    assert_eq!(
        found.regions,
        vec![
            SocketAddr::new(ip(2), 4434),
            SocketAddr::new("::1".parse()?, 4434),
            SocketAddr::new(ip(1), 4433),
            SocketAddr::new(ip(3), 4500),
        ]
    );
    // Valid for the shortest TTL among the records used (5 s), not the SRV's 60 s.
    assert!(found.valid_until <= Instant::now() + Duration::from_secs(5));
    assert!(found.valid_until > before);
    Ok(())
}

#[tokio::test]
async fn a_record_fallback_when_no_srv() -> anyhow::Result<()> {
    let dns = TestDns::start().await?;
    dns.set_a("regions.strata.test", 30, vec![ip(7), ip(8)]);
    let discovery = Discovery::new(
        RegionSource::Dns {
            name: "regions.strata.test".into(),
            port: 5000,
        },
        Some(dns.addr),
    )?;

    let found = discovery.resolve().await?;

    assert_eq!(
        found.regions,
        vec![SocketAddr::new(ip(7), 5000), SocketAddr::new(ip(8), 5000)]
    );
    Ok(())
}

#[tokio::test]
async fn changed_records_are_seen_after_ttl() -> anyhow::Result<()> {
    let dns = TestDns::start().await?;
    dns.set_a("regions.strata.test", 1, vec![ip(1)]);
    let discovery = Discovery::new(dns_source("regions.strata.test"), Some(dns.addr))?;
    let first = discovery.resolve().await?;
    assert_eq!(first.regions, vec![SocketAddr::new(ip(1), 4433)]);

    dns.set_a("regions.strata.test", 1, vec![ip(2)]);

    // Re-resolve each time the previous answer expires, as the POP does, until the new
    // address shows up; bounded in time and attempts.
    let moved = vec![SocketAddr::new(ip(2), 4433)];
    let deadline = Instant::now() + CHANGE_DEADLINE;
    let mut valid_until = first.valid_until;
    for _ in 0..100 {
        let next_try = valid_until.max(Instant::now() + Duration::from_millis(20));
        if next_try > deadline {
            break;
        }
        tokio::time::sleep_until(next_try.into()).await;
        let found = discovery.resolve().await?;
        if found.regions == moved {
            return Ok(());
        }
        valid_until = found.valid_until;
    }
    anyhow::bail!("the changed A record was not seen within {CHANGE_DEADLINE:?}")
}

#[tokio::test]
async fn missing_name_is_a_typed_error() -> anyhow::Result<()> {
    let dns = TestDns::start().await?;
    let discovery = Discovery::new(dns_source("nowhere.strata.test"), Some(dns.addr))?;

    let err = discovery.resolve().await.expect_err("nothing is published");

    assert!(matches!(err, DiscoveryError::NoRegions(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn withdrawn_records_become_no_regions_after_ttl() -> anyhow::Result<()> {
    let dns = TestDns::start().await?;
    dns.set_a("regions.strata.test", 1, vec![ip(1)]);
    let discovery = Discovery::new(dns_source("regions.strata.test"), Some(dns.addr))?;
    let mut valid_until = discovery.resolve().await?.valid_until;

    dns.clear("regions.strata.test");

    let deadline = Instant::now() + CHANGE_DEADLINE;
    for _ in 0..100 {
        let next_try = valid_until.max(Instant::now() + Duration::from_millis(20));
        if next_try > deadline {
            break;
        }
        tokio::time::sleep_until(next_try.into()).await;
        match discovery.resolve().await {
            Err(DiscoveryError::NoRegions(_)) => return Ok(()),
            Ok(found) => valid_until = found.valid_until,
            Err(other) => return Err(other.into()),
        }
    }
    anyhow::bail!("the withdrawn name still resolved after {CHANGE_DEADLINE:?}")
}
