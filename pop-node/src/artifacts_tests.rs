use super::*;
use bytes::Bytes;
use common::sandbox::{Sandbox, SandboxConfig};
use common::wire::MAX_FRAME_LEN;

const HELLO: &str = include_str!("../../examples/hello.wat");

fn cache(dir: &Path, disk_bytes: u64) -> ArtifactCache {
    let executor = Executor::new(
        Sandbox::new(SandboxConfig::default()).expect("sandbox"),
        64 << 20,
    );
    ArtifactCache::open(
        dir,
        executor,
        64 << 20,
        disk_bytes,
        10,
        Duration::from_secs(60),
    )
    .expect("opens")
}

fn precompiled(c: &ArtifactCache, wat: &str) -> (ArtifactDigest, Vec<u8>) {
    let wasm = wat::parse_str(wat).expect("wat");
    let sandbox = c.executor().sandbox();
    let module = sandbox.compile(&wasm).expect("compiles");
    (
        module.digest(),
        sandbox.precompile(&module).expect("serializes"),
    )
}

#[test]
fn an_artifact_written_to_disk_loads_back_and_warms_up_a_new_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 1 << 30);
    let (digest, bytes) = precompiled(&c, HELLO);
    c.write_to_disk(digest, &bytes, &ArtifactDigest::of(&bytes))
        .expect("writes");
    assert!(c.load_from_disk(digest).is_some());
    let restarted = cache(dir.path(), 1 << 30);
    assert_eq!(restarted.warm_up(), 1);
    assert!(restarted.executor().cached(&digest).is_some());
}

#[test]
fn a_corrupted_file_is_deleted_and_not_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 1 << 30);
    let (digest, bytes) = precompiled(&c, HELLO);
    c.write_to_disk(digest, &bytes, &ArtifactDigest::of(&bytes))
        .expect("writes");
    let path = c.path(&digest);
    let mut data = std::fs::read(&path).expect("file");
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&path, data).expect("corrupt it");
    assert!(c.load_from_disk(digest).is_none());
    assert!(!path.exists());
}

#[test]
fn the_disk_cache_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cache(dir.path(), 1);
    let (digest, bytes) = precompiled(&c, HELLO);
    c.write_to_disk(digest, &bytes, &ArtifactDigest::of(&bytes))
        .expect("writes");
    assert!(
        !c.path(&digest).exists(),
        "one file alone is over the bound"
    );
}

#[test]
fn remembered_functions_come_back_with_their_remaining_ttl_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Arc::new(cache(dir.path(), 1 << 30));
    let function = ResolvedFunction {
        key: FunctionKey {
            tenant: common::model::TenantId::new("t").expect("tenant"),
            name: common::model::FunctionName::new("f").expect("name"),
        },
        version: "$LATEST".into(),
        digest: ArtifactDigest::of(b"m"),
        config: common::model::FunctionConfig::default(),
        revision: 3,
        release: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let token = "sa_secret-bearer-token";
    c.remember(token, &function);
    assert!(
        !dir.path().join(KNOWN_FILE).exists(),
        "remembering does not touch the disk"
    );
    rt.block_on(c.flush());
    let file = std::fs::read_to_string(dir.path().join(KNOWN_FILE)).expect("known.json");
    assert!(
        !file.contains(token),
        "only the token's hash is written: {file}"
    );
    let known = Known::new(Duration::from_secs(60), 10, Instant::now());
    assert_eq!(cache(dir.path(), 1 << 30).restore(&known), 1);
    assert_eq!(
        known.tenant(token, Instant::now()).map(|t| t.to_string()),
        Some("t".to_owned())
    );
    assert_eq!(
        known
            .function(&function.key, Instant::now())
            .map(|f| f.revision),
        Some(3)
    );
    // A node whose TTL is shorter than the entry's age does not trust it.
    let strict = ArtifactCache {
        ttl: Duration::ZERO,
        ..cache(dir.path(), 1 << 30)
    };
    assert_eq!(
        strict.restore(&Known::new(Duration::from_secs(60), 10, Instant::now())),
        0
    );
}

#[test]
fn the_remembered_table_stays_within_its_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ArtifactCache {
        max_known: 16,
        ..cache(dir.path(), 1 << 30)
    };
    for i in 0..100 {
        let function = ResolvedFunction {
            key: FunctionKey {
                tenant: common::model::TenantId::new("t").expect("tenant"),
                name: common::model::FunctionName::new(format!("f{i}")).expect("name"),
            },
            version: "$LATEST".into(),
            digest: ArtifactDigest::of(b"m"),
            config: common::model::FunctionConfig::default(),
            revision: 1,
            release: None,
        };
        c.remember("token", &function);
        let held = c.known.lock().expect("lock").len();
        assert!(held <= 16, "{held} remembered after {i}");
    }
}

/// `wat` precompiled by `c`'s engine and encoded as a region sends it, as
/// [`RegionLink::fetch`] returns it.
fn fetched(c: &ArtifactCache, wat: &str) -> (ArtifactDigest, Fetched) {
    let (digest, code) = precompiled(c, wat);
    let (encoding, bytes) = artifact_encoding::encode(code).expect("encodes");
    assert_eq!(
        encoding,
        ArtifactEncoding::Zstd,
        "precompiled code compresses"
    );
    let fetched = Fetched {
        kind: ArtifactKind::Precompiled,
        encoding,
        checksum: ArtifactDigest::of(&bytes),
        bytes,
    };
    (digest, fetched)
}

#[tokio::test]
async fn precompiled_code_sent_as_it_is_loads_and_is_written_with_its_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Arc::new(cache(dir.path(), 1 << 30));
    let (digest, code) = precompiled(&c, HELLO);
    let artifact = Fetched {
        kind: ArtifactKind::Precompiled,
        encoding: ArtifactEncoding::Identity,
        checksum: ArtifactDigest::of(&code),
        bytes: code.into(),
    };
    c.admit(digest, artifact).expect("loads");
    c.flush().await;
    assert_eq!(cache(dir.path(), 1 << 30).warm_up(), 1);
}

#[tokio::test]
async fn an_artifact_that_does_not_decode_is_refused_and_nothing_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Arc::new(cache(dir.path(), 1 << 30));
    let (digest, good) = fetched(&c, HELLO);
    // What a broken or hostile region could send, each with a checksum that matches (so
    // it passes `RegionLink::fetch`): bytes that are not zstd, a truncated frame, and a
    // bomb (a 2 KiB frame declaring more than a whole frame may carry).
    let not_zstd = Bytes::from_static(b"precompiled code, honestly");
    let truncated = good.bytes.slice(..good.bytes.len() / 2);
    let bomb = artifact_encoding::encode(vec![0u8; MAX_FRAME_LEN + 1])
        .expect("encodes")
        .1;
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    // Each refused by the decoder, before anything reaches wasmtime.
    for (what, bytes, why) in [
        ("not zstd", not_zstd, "malformed zstd frame"),
        ("truncated", truncated, "malformed zstd frame"),
        ("bomb", bomb, "bound"),
    ] {
        let bad = Fetched {
            checksum: ArtifactDigest::of(&bytes),
            bytes,
            ..good.clone()
        };
        let e = c.admit(digest, bad).expect_err(what);
        assert_eq!(e.kind, common::model::ErrorKind::Internal, "{what}: {e:?}");
        assert!(e.message.contains(&digest.to_string()), "{what}: {e:?}");
        assert!(e.message.contains(why), "{what}: {e:?}");
    }
    assert!(c.executor().cached(&digest).is_none(), "nothing loaded");
    assert_eq!(c.pending_writes(), 0, "nothing to write");
    c.admit(digest, good)
        .expect("the genuine artifact still loads");
    assert!(c.executor().cached(&digest).is_some());
}

#[tokio::test]
async fn a_fetched_artifact_runs_before_its_file_is_written_and_is_on_disk_after_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Arc::new(cache(dir.path(), 1 << 30));
    let (digest, artifact) = fetched(&c, HELLO);
    c.admit(digest, artifact).expect("loads");
    assert!(c.executor().cached(&digest).is_some(), "ready in memory");
    assert!(
        !c.path(&digest).exists(),
        "the fetch's path never waits on the disk"
    );
    assert_eq!(c.pending_writes(), 1);
    c.flush().await;
    assert_eq!(c.pending_writes(), 0);
    let restarted = cache(dir.path(), 1 << 30);
    assert_eq!(
        restarted.warm_up(),
        1,
        "written with a checksum that verifies"
    );
    assert!(restarted.executor().cached(&digest).is_some());
}

#[tokio::test]
async fn past_the_pending_bound_a_fetched_artifact_runs_but_is_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = cache(dir.path(), 1 << 30);
    // One byte: the first artifact is taken (none waits), the second is over the bound.
    c.max_pending_write_bytes = 1;
    let c = Arc::new(c);
    let (first, a) = fetched(&c, HELLO);
    let (second, b) = fetched(&c, include_str!("../../examples/echo.wat"));
    c.admit(first, a).expect("loads");
    c.admit(second, b).expect("loads");
    assert!(c.executor().cached(&first).is_some());
    assert!(c.executor().cached(&second).is_some());
    assert_eq!((c.pending_writes(), c.writes_skipped()), (1, 1));
    c.flush().await;
    assert!(c.path(&first).exists());
    assert!(!c.path(&second).exists());
}
