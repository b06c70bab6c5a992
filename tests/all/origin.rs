//! The region's planner through real nodes: admission comes before compile. A tenant at
//! its concurrency limit invoking a function whose module this region has never compiled
//! for its release is refused (429) without the region compiling it.

use crate::canary::PLAIN;
use crate::support::{TestCluster, dev_hogged, header, throttled};
use common::model::ArtifactDigest;
use common::sandbox::Release;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_limit_is_refused_before_the_region_compiles_its_module() {
    let c = TestCluster::start().await;
    let region = c.nodes.region_url();
    // Deploy compiles for the current release only: a function pinned to the next one is
    // compiled for it by its first run at the region.
    let plain = wat::parse_str(PLAIN).expect("wat");
    let digest = ArtifactDigest::of(&plain);
    c.nodes
        .deploy("pinned", json!({"runtime": Release::Next.name()}), plain)
        .await
        .expect("deploys");
    assert!(!c.nodes.region.has_module_on(Release::Next, &digest));
    let hog = dev_hogged(&c).await;
    // Through the POP (which forwards a function it does not run) and at the region:
    // refused for the tenant's concurrency, and nothing was compiled for it.
    for base in [c.nodes.pop_url(), region.clone()] {
        let resp = c.invoke_at(&base, "pinned", "").await;
        let (limit, _wait) = throttled(resp).await;
        assert_eq!(limit, ("tenant".into(), "concurrency".into(), 1), "{base}");
        assert!(
            !c.nodes.region.has_module_on(Release::Next, &digest),
            "the region compiled the module of an invocation it refused ({base})"
        );
    }
    assert_eq!(hog.await.expect("hog task"), 504);
    // Admitted, the run compiles it (so the check above can see a compile).
    let resp = c.invoke_at(&region, "pinned", "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-strata-runtime"), Release::Next.name());
    assert!(c.nodes.region.has_module_on(Release::Next, &digest));
    c.nodes.shutdown().await;
}
