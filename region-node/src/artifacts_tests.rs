use super::*;
use crate::store::Store;
use common::model::{FunctionName, TenantId};
use common::sandbox::{Sandbox, SandboxConfig};
use common::wire::ArtifactEncoding;

const HELLO: &str = include_str!("../../examples/hello.wat");
const ECHO: &str = include_str!("../../examples/echo.wat");

/// Artifacts over a fresh registry with tenant `t`, keeping `max_bytes` of code.
fn artifacts(dir: &std::path::Path, max_bytes: usize) -> Artifacts {
    let registry = Registry::new(Store::open(&dir.join("r.redb")).expect("store opens"));
    registry
        .create_tenant(TenantId::new("t").expect("valid"), 512)
        .expect("tenant");
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    Artifacts::new(
        Executor::new(sandbox, 64 << 20),
        Arc::new(registry),
        max_bytes,
    )
}

/// Deploys `wat` as `name` the way the control API does: precompiled, then stored.
async fn deploy(a: &Artifacts, name: &str, wat: &str) -> ArtifactDigest {
    let wasm = wat::parse_str(wat).expect("wat");
    let config = FunctionConfig::default();
    a.prepare_deploy(Bytes::from(wasm.clone()), &config)
        .await
        .expect("valid module");
    a.registry
        .deploy(
            &TenantId::new("t").expect("valid"),
            &FunctionName::new(name).expect("valid"),
            config,
            &wasm,
            None,
        )
        .expect("stored");
    ArtifactDigest::of(&wasm)
}

/// The kind of a fetch's answer, after checking its checksum like a POP does.
fn answer(msg: Message, digest: ArtifactDigest) -> ArtifactKind {
    decoded(msg, digest).0
}

/// A fetch's answer checked like a POP does (the checksum of the bytes as sent; wasm sent
/// as it is), and its bytes decoded.
fn decoded(msg: Message, digest: ArtifactDigest) -> (ArtifactKind, ArtifactEncoding, Bytes) {
    match msg {
        Message::Artifact {
            digest: d,
            kind,
            encoding,
            checksum,
            bytes,
        } => {
            assert_eq!(d, digest);
            assert_eq!(
                checksum,
                ArtifactDigest::of(&bytes),
                "checksum of the bytes sent"
            );
            if kind == ArtifactKind::Wasm {
                assert_eq!(
                    encoding,
                    ArtifactEncoding::Identity,
                    "wasm is sent as it is"
                );
            }
            let code = common::artifact_encoding::decode(encoding, bytes).expect("decodes");
            (kind, encoding, code)
        }
        other => panic!("not an artifact: {other:?}"),
    }
}

#[tokio::test]
async fn precompiled_code_is_sent_compressed_and_decodes_to_code_the_engine_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = artifacts(dir.path(), 64 << 20);
    let digest = deploy(&a, "echo", ECHO).await;
    let sandbox = a.executor.sandbox();
    let reply = a.fetch(digest, &sandbox.fingerprint()).await;
    let Message::Artifact { bytes: sent, .. } = &reply else {
        panic!("not an artifact: {reply:?}");
    };
    let sent = sent.len();
    let (kind, encoding, code) = decoded(reply, digest);
    assert_eq!(
        (kind, encoding),
        (ArtifactKind::Precompiled, ArtifactEncoding::Zstd)
    );
    assert!(
        sent * 2 < code.len(),
        "{sent} bytes sent for {}",
        code.len()
    );
    // SAFETY: bytes this test's own region precompiled for this engine, just now.
    #[allow(unsafe_code)]
    let module = unsafe { sandbox.load_precompiled(digest, &code) }.expect("loads");
    assert_eq!(module.digest(), digest);
}

#[tokio::test]
async fn a_deployed_module_is_fetched_precompiled_without_compiling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = artifacts(dir.path(), 64 << 20);
    let digest = deploy(&a, "hello", HELLO).await;
    let ours = a.executor.sandbox().fingerprint();
    for _ in 0..2 {
        let kind = answer(a.fetch(digest, &ours).await, digest);
        assert_eq!(kind, ArtifactKind::Precompiled);
    }
    assert_eq!(a.fetches(), 2);
    assert_eq!(
        a.compiles_on_fetch(),
        0,
        "both fetches were reads of the deploy's code"
    );
}

#[tokio::test]
async fn an_evicted_artifact_is_compiled_on_its_next_fetch_and_kept_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for one artifact: deploying the second evicts the first.
    let probe_dir = tempfile::tempdir().expect("tempdir");
    let probe = artifacts(probe_dir.path(), usize::MAX);
    let d = deploy(&probe, "hello", HELLO).await;
    let ours = probe.executor.sandbox().fingerprint();
    let one = match probe.fetch(d, &ours).await {
        Message::Artifact { bytes, .. } => bytes.len(),
        other => panic!("not an artifact: {other:?}"),
    };
    let a = artifacts(dir.path(), one + one / 2);
    let hello = deploy(&a, "hello", HELLO).await;
    deploy(&a, "echo", ECHO).await;
    assert_eq!(
        answer(a.fetch(hello, &ours).await, hello),
        ArtifactKind::Precompiled
    );
    assert_eq!(a.compiles_on_fetch(), 1);
    assert_eq!(
        answer(a.fetch(hello, &ours).await, hello),
        ArtifactKind::Precompiled
    );
    assert_eq!(a.compiles_on_fetch(), 1, "cached again by the first fetch");
}

#[tokio::test]
async fn another_engine_gets_the_wasm_checksummed_by_its_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = artifacts(dir.path(), 64 << 20);
    let digest = deploy(&a, "hello", HELLO).await;
    let other = EngineFingerprint("wasmtime-other/0".into());
    assert_eq!(
        answer(a.fetch(digest, &other).await, digest),
        ArtifactKind::Wasm
    );
    assert_eq!(a.compiles_on_fetch(), 0);
}
