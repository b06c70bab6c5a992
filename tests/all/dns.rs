//! A real authoritative DNS server on loopback for tests: UDP and TCP on one port,
//! answering from an in-memory record set that tests change while it runs.
//!
//! Answers what it holds and nothing else: a name with records but none of the queried
//! type gets NOERROR/NODATA, an unknown name gets NXDOMAIN; both carry an SOA (TTL 1 s) so
//! negative answers are cached only briefly. Never recurses. The serving task stops when
//! the [`TestDns`] is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use hickory_proto::op::{Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// Records by lower-cased, fully qualified owner name.
type Zone = HashMap<Name, Vec<Record>>;

/// Bound on one TCP query's length (the protocol's own limit).
const MAX_TCP_MESSAGE: usize = u16::MAX as usize;

/// A running test DNS server.
#[derive(Debug)]
pub struct TestDns {
    /// Where to send queries (UDP and TCP).
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: JoinHandle<()>,
}

impl TestDns {
    /// Binds UDP and TCP on the same free loopback port and starts answering.
    ///
    /// # Errors
    /// When no port could be bound for both protocols.
    pub async fn start() -> anyhow::Result<Self> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let zone = Arc::new(Mutex::new(Zone::new()));
        let task = tokio::spawn(serve(udp, tcp, zone.clone()));
        Ok(Self { addr, zone, task })
    }

    /// Replaces the SRV records owned by `name` (e.g. `_strata._udp.regions.test`) with
    /// `targets`: (priority, weight, port, target host).
    pub fn set_srv(&self, name: &str, ttl: u32, targets: Vec<(u16, u16, u16, String)>) {
        let owner = fqdn(name);
        let records = targets
            .into_iter()
            .map(|(priority, weight, port, target)| {
                let srv = SRV::new(priority, weight, port, fqdn(&target));
                Record::from_rdata(owner.clone(), ttl, RData::SRV(srv))
            })
            .collect();
        self.replace(owner, &[RecordType::SRV], records);
    }

    /// Replaces the A and AAAA records owned by `name` with `ips`.
    pub fn set_a(&self, name: &str, ttl: u32, ips: Vec<IpAddr>) {
        let owner = fqdn(name);
        let records = ips
            .into_iter()
            .map(|ip| {
                let data = match ip {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                };
                Record::from_rdata(owner.clone(), ttl, data)
            })
            .collect();
        self.replace(owner, &[RecordType::A, RecordType::AAAA], records);
    }

    /// Removes every record owned by `name`.
    pub fn clear(&self, name: &str) {
        self.lock().remove(&fqdn(name));
    }

    fn replace(&self, owner: Name, types: &[RecordType], records: Vec<Record>) {
        let mut zone = self.lock();
        let entry = zone.entry(owner.clone()).or_default();
        entry.retain(|r| !types.contains(&r.record_type()));
        entry.extend(records);
        if entry.is_empty() {
            zone.remove(&owner);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Zone> {
        // A panic while holding the lock leaves a consistent map (each update is one call).
        self.zone.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Test names are fixed strings; an invalid one is a bug in the test itself.
fn fqdn(name: &str) -> Name {
    let mut parsed = Name::from_utf8(name).expect("test DNS names are valid");
    parsed.set_fqdn(true);
    parsed.to_lowercase()
}

async fn bind_pair() -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    // The UDP port is free by construction; the same TCP port almost always is too.
    for _ in 0..16 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.map_or_else(|| anyhow::anyhow!("no port"), anyhow::Error::from))
        .context("binding UDP and TCP on one port")
}

async fn serve(udp: UdpSocket, tcp: TcpListener, zone: Arc<Mutex<Zone>>) {
    let mut connections = JoinSet::new();
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            received = udp.recv_from(&mut buf) => {
                let Ok((len, from)) = received else { continue };
                if let Some(reply) = answer(&buf[..len], &zone) {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
            accepted = tcp.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_tcp(stream, zone.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// TCP carries each message behind a two-byte length.
async fn serve_tcp(mut stream: TcpStream, zone: Arc<Mutex<Zone>>) {
    let mut query = vec![0u8; MAX_TCP_MESSAGE];
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let query = &mut query[..usize::from(len)];
        if stream.read_exact(query).await.is_err() {
            return;
        }
        let Some(reply) = answer(query, &zone) else {
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(reply_len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// Builds the response to one query message; `None` for bytes that are not a query.
fn answer(query: &[u8], zone: &Mutex<Zone>) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.authoritative = true;
    response.metadata.recursion_available = true;
    let Some(question) = request.queries.first().cloned() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response.to_vec().ok();
    };
    let owner = question.name().to_lowercase();
    let held = zone
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&owner)
        .cloned();
    response.add_query(question.clone());
    match held {
        Some(records) => {
            let matching: Vec<Record> = records
                .into_iter()
                .filter(|r| r.record_type() == question.query_type())
                .collect();
            if matching.is_empty() {
                response.add_authority(soa(&owner));
            }
            response.add_answers(matching);
        }
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa(&owner));
        }
    }
    response.to_vec().ok()
}

/// The SOA sent with negative answers: its 1 s TTL and minimum bound negative caching.
fn soa(owner: &Name) -> Record {
    let host = Name::from_ascii("ns.test.").unwrap_or_else(|_| Name::root());
    let data = SOA::new(host.clone(), host, 1, 60, 60, 60, 1);
    Record::from_rdata(owner.clone(), 1, RData::SOA(data))
}

#[tokio::test]
async fn tcp_queries_are_answered() -> anyhow::Result<()> {
    use hickory_proto::op::Query;
    let dns = TestDns::start().await?;
    dns.set_a("tcp.strata.test", 30, vec![IpAddr::from([127, 0, 0, 9])]);
    let mut query = Message::query();
    query.add_query(Query::query(fqdn("tcp.strata.test"), RecordType::A));
    let bytes = query.to_vec()?;

    let mut stream = TcpStream::connect(dns.addr).await?;
    stream.write_u16(u16::try_from(bytes.len())?).await?;
    stream.write_all(&bytes).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    let reply = Message::from_vec(&reply)?;

    assert_eq!(reply.metadata.id, query.metadata.id);
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].data, RData::A(A([127, 0, 0, 9].into())));
    Ok(())
}
