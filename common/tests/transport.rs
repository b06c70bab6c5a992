//! The transport contract over real QUIC on loopback: mutual TLS with the dev CA, ALPN,
//! one stream per request, rejection of garbage without harming the connection.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::transport::{
    Channel, Client, NodeTls, PeerConnection, REGION_SERVER_NAME, Server, ServerStream, TlsFiles,
    TransportError, dev_ca,
};
use common::wire::{MAX_FRAME_LEN, Message};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Bound on waits for events that happen within milliseconds on loopback.
const WAIT: Duration = Duration::from_secs(10);

/// A region stand-in: answers `Ping` with `Pong`, echoes anything else, rejects streams
/// whose request does not parse, and reports every handshake's outcome.
struct EchoRegion {
    server: Arc<Server>,
    addr: SocketAddr,
    handshakes: mpsc::Receiver<Result<(), TransportError>>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoRegion {
    async fn start(bind: SocketAddr, tls: &NodeTls) -> Result<Self, TransportError> {
        let server = Arc::new(Server::bind(bind, tls)?);
        let addr = server.local_addr()?;
        let (report, handshakes) = mpsc::channel(16);
        let task = tokio::spawn(accept_loop(server.clone(), report));
        Ok(Self {
            server,
            addr,
            handshakes,
            task,
        })
    }

    async fn next_handshake(&mut self) -> Result<(), TransportError> {
        tokio::time::timeout(WAIT, self.handshakes.recv())
            .await
            .expect("a handshake finishes in time")
            .expect("the accept loop is running")
    }
}

impl Drop for EchoRegion {
    fn drop(&mut self) {
        self.server.close();
        self.task.abort();
    }
}

async fn accept_loop(server: Arc<Server>, report: mpsc::Sender<Result<(), TransportError>>) {
    let mut connections = JoinSet::new();
    while let Some(connecting) = server.accept().await {
        let report = report.clone();
        connections.spawn(async move {
            match connecting.handshake().await {
                Ok(conn) => {
                    let _ = report.try_send(Ok(()));
                    serve(conn).await;
                }
                Err(e) => {
                    let _ = report.try_send(Err(e));
                }
            }
        });
    }
}

async fn serve(conn: PeerConnection) {
    let mut streams = JoinSet::new();
    while let Ok(Some(stream)) = conn.accept_stream().await {
        streams.spawn(answer(stream));
    }
}

async fn answer(mut stream: ServerStream) {
    match stream.read_request(MAX_FRAME_LEN).await {
        Ok(Message::Ping { nonce }) => {
            let _ = stream.reply(&Message::Pong { nonce }).await;
        }
        Ok(other) => {
            let _ = stream.reply(&other).await;
        }
        Err(e) => stream.reject(&e.to_string()),
    }
}

fn load(files: &TlsFiles) -> NodeTls {
    NodeTls::load(files).expect("TLS files load")
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn ping(channel: &common::transport::Channel, nonce: u64) -> Result<Message, TransportError> {
    channel
        .request(&Message::Ping { nonce }, MAX_FRAME_LEN)
        .await
}

/// A dev CA in a temporary directory, an echo region using it, and a POP channel to it.
async fn connected() -> (tempfile::TempDir, EchoRegion, Channel) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(dir.path()).expect("dev CA");
    let region = EchoRegion::start(localhost(), &load(&certs.region))
        .await
        .expect("region starts");
    let client = Client::new(&load(&certs.pop)).expect("client");
    let channel = client
        .connect(region.addr, REGION_SERVER_NAME)
        .await
        .expect("connects");
    (dir, region, channel)
}

#[tokio::test]
async fn ping_gets_pong_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(dir.path()).expect("dev CA");
    let mut region = EchoRegion::start(localhost(), &load(&certs.region))
        .await
        .expect("region starts");
    let client = Client::new(&load(&certs.pop)).expect("client");

    let channel = client
        .connect(region.addr, REGION_SERVER_NAME)
        .await
        .expect("connects");
    region
        .next_handshake()
        .await
        .expect("server accepts the POP");
    assert_eq!(
        ping(&channel, 7).await.expect("reply"),
        Message::Pong { nonce: 7 }
    );
    assert_eq!(channel.remote_address(), region.addr);
    assert!(!channel.is_closed());
}

#[tokio::test]
async fn concurrent_requests_share_one_channel() {
    let (_dir, _region, channel) = connected().await;

    let mut requests = JoinSet::new();
    for nonce in 0..64 {
        let channel = channel.clone();
        requests.spawn(async move { (nonce, ping(&channel, nonce).await) });
    }
    while let Some(done) = requests.join_next().await {
        let (nonce, reply) = done.expect("task completes");
        assert_eq!(reply.expect("reply"), Message::Pong { nonce });
    }
}

#[tokio::test]
async fn pop_with_a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(dir.path()).expect("dev CA");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = dev_ca::init(other_dir.path()).expect("another dev CA");
    let mut region = EchoRegion::start(localhost(), &load(&certs.region))
        .await
        .expect("region starts");
    // The POP trusts the right CA (so it accepts the region) but presents a certificate
    // issued by another one: only the region can refuse it.
    let intruder = TlsFiles {
        ca_cert: certs.pop.ca_cert.clone(),
        ..other.pop.clone()
    };
    let client = Client::new(&load(&intruder)).expect("client");

    let outcome = match client.connect(region.addr, REGION_SERVER_NAME).await {
        Ok(channel) => ping(&channel, 1).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let err = outcome.expect_err("the request must fail");
    assert!(err.request_was_not_sent(), "refused at handshake: {err}");
    let server_side = region.next_handshake().await;
    assert!(
        matches!(server_side, Err(TransportError::Connect(_))),
        "{server_side:?}"
    );
}

#[tokio::test]
async fn region_with_a_certificate_from_another_ca_is_refused_by_the_pop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(dir.path()).expect("dev CA");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = dev_ca::init(other_dir.path()).expect("another dev CA");
    let region = EchoRegion::start(localhost(), &load(&other.region))
        .await
        .expect("region starts");
    let client = Client::new(&load(&certs.pop)).expect("client");

    let err = client
        .connect(region.addr, REGION_SERVER_NAME)
        .await
        .expect_err("unknown issuer");
    assert!(matches!(err, TransportError::Connect(_)), "{err}");
}

#[tokio::test]
async fn a_request_and_its_reply_are_read_to_their_ends_so_neither_side_stops_a_stream() {
    let (_dir, _region, channel) = connected().await;
    // Small frames, and one reply spanning hundreds of packets.
    let large = Message::Artifact {
        digest: common::model::ArtifactDigest::of(b"m"),
        kind: common::wire::ArtifactKind::Wasm,
        encoding: common::wire::ArtifactEncoding::Identity,
        checksum: common::model::ArtifactDigest::of(b"m"),
        bytes: vec![7u8; 300_000].into(),
    };
    for nonce in 0..20 {
        assert_eq!(
            ping(&channel, nonce).await.expect("reply"),
            Message::Pong { nonce }
        );
    }
    assert_eq!(
        channel.request(&large, MAX_FRAME_LEN).await.expect("reply"),
        large
    );
    // One more round trip: whatever the region sent about the earlier streams has arrived
    // before this reply, and our own frames about them have left.
    ping(&channel, 99).await.expect("reply");
    assert_eq!(
        channel.stops(),
        (0, 0),
        "STOP_SENDING frames (sent, received): every stream was read to its end"
    );
}

#[tokio::test]
async fn garbage_on_a_stream_is_rejected_and_the_channel_lives_on() {
    let (_dir, _region, channel) = connected().await;

    let oversized_header: &[u8] = b"\xff\xff\xff\xffgarbage";
    let valid_header_bad_body: &[u8] = &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff];
    for garbage in [oversized_header, valid_header_bad_body] {
        match channel.request_raw(garbage).await {
            Err(TransportError::Stream(_)) => {}
            Ok(reply) => assert!(reply.is_empty(), "unexpected reply {reply:?}"),
            Err(other) => panic!("expected a stream-level refusal, got {other}"),
        }
        assert_eq!(
            ping(&channel, 9).await.expect("reply"),
            Message::Pong { nonce: 9 }
        );
    }
    assert!(!channel.is_closed());
}

#[tokio::test]
async fn a_client_offering_another_alpn_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(dir.path()).expect("dev CA");
    let mut region = EchoRegion::start(localhost(), &load(&certs.region))
        .await
        .expect("region starts");
    // The previous protocol version: refused since `strata/6` (artifacts say how their
    // bytes are encoded; a `strata/5` POP would not decode compressed code).
    let config = raw_client_config(&certs.pop, b"strata/5");
    let endpoint = quinn::Endpoint::client(localhost()).expect("endpoint");

    let connecting = endpoint
        .connect_with(config, region.addr, REGION_SERVER_NAME)
        .expect("valid connect parameters");
    let outcome = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("the handshake ends in time");
    assert!(outcome.is_err(), "a strata/5 client must be refused");
    assert!(region.next_handshake().await.is_err());
}

/// A quinn client built directly, offering `alpn` with an otherwise valid POP identity.
fn raw_client_config(files: &TlsFiles, alpn: &[u8]) -> quinn::ClientConfig {
    let read = |p: &Path| std::fs::read(p).expect("read PEM");
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read(&files.ca_cert)) {
        roots.add(ca.expect("CA PEM")).expect("CA cert");
    }
    let chain = CertificateDer::pem_slice_iter(&read(&files.cert))
        .collect::<Result<Vec<_>, _>>()
        .expect("cert PEM");
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)).expect("key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC config");
    quinn::ClientConfig::new(Arc::new(quic))
}

#[tokio::test]
async fn a_closed_channel_refuses_requests_before_sending() {
    let (_dir, _region, channel) = connected().await;

    channel.close();
    assert!(channel.is_closed());
    let err = ping(&channel, 1).await.expect_err("closed");
    assert!(matches!(err, TransportError::Closed), "{err}");
    assert!(err.request_was_not_sent());
}

#[tokio::test]
async fn server_shutdown_is_seen_by_the_channel() {
    let (_dir, region, channel) = connected().await;
    ping(&channel, 1).await.expect("reply");

    region.server.close();
    tokio::time::timeout(WAIT, channel.closed())
        .await
        .expect("the close reaches the POP");
    assert!(channel.is_closed());
    let err = ping(&channel, 2).await.expect_err("closed");
    assert!(err.request_was_not_sent(), "{err}");
}

#[tokio::test]
async fn a_reissued_leaf_still_chains_to_the_existing_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(dir.path()).expect("dev CA");
    std::fs::remove_file(&certs.pop.cert).expect("remove the POP certificate");
    let reissued = dev_ca::init(dir.path()).expect("dev CA reused");
    let region = EchoRegion::start(localhost(), &load(&certs.region))
        .await
        .expect("region starts");
    let client = Client::new(&load(&reissued.pop)).expect("client");
    let channel = client
        .connect(region.addr, REGION_SERVER_NAME)
        .await
        .expect("connects");
    assert_eq!(
        ping(&channel, 3).await.expect("reply"),
        Message::Pong { nonce: 3 }
    );
}

#[ignore = "needs ipv6"]
#[tokio::test]
async fn ipv6_regions_are_reachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(dir.path()).expect("dev CA");
    let loopback6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
    let region = EchoRegion::start(loopback6, &load(&certs.region))
        .await
        .expect("region starts on the IPv6 loopback");
    let client = Client::new(&load(&certs.pop)).expect("client");
    let channel = client
        .connect(region.addr, REGION_SERVER_NAME)
        .await
        .expect("connects over IPv6");
    assert_eq!(
        ping(&channel, 6).await.expect("reply"),
        Message::Pong { nonce: 6 }
    );
}
