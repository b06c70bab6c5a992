//! The keep-alive comparison through `scenarios run` (the report it writes).

/// `scenarios run` on a small generated workload: `report.json` has the `keepalive`
/// list, the report the CDF plot, and the cold-start half of the paper's result holds:
/// the hybrid policy has far fewer cold starts than fixed 10-minute keep-alive, at the
/// median and 75th-percentile app and in total. (The memory half does not hold on the
/// generated workload: docs/performance.md, "Keep-alive policies".)
#[tokio::test]
async fn a_keepalive_scenario_reports_each_policy_and_the_published_direction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("k.toml");
    std::fs::write(
        &file,
        r#"
        name = "k"
        duration_s = 5
        [topology]
        pops = 1
        regions = 1
        [functions]
        count = 10
        [arrivals]
        kind = "poisson"
        rate_per_pop = 20
        [keepalive.source]
        kind = "generate"
        apps = 200
        days = 2
        "#,
    )
    .expect("write");
    let out = dir.path().join("out");
    let args = crate::run::RunArgs {
        file,
        out: Some(out.clone()),
        live: false,
        scaled: false,
    };
    crate::run::run(&args).await.expect("runs");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("json"))
            .expect("valid JSON");
    let rows = json["keepalive"].as_array().expect("a keepalive list");
    let policies: Vec<&str> = rows.iter().filter_map(|r| r["policy"].as_str()).collect();
    assert_eq!(policies, ["fixed-10min", "hybrid-histogram", "trend"]);
    for r in rows {
        for field in [
            "cold_start_pct_p50",
            "cold_start_pct_p75",
            "wasted_memory_gb_s",
        ] {
            assert!(r[field].as_f64().is_some_and(|v| v >= 0.0), "{field}: {r}");
        }
    }
    let get = |i: usize, f: &str| rows[i][f].as_f64().unwrap_or(f64::NAN);
    for f in ["cold_start_pct_p50", "cold_start_pct_p75", "cold_starts"] {
        assert!(
            get(1, f) < 0.8 * get(0, f),
            "hybrid has clearly fewer cold starts ({f}): {rows:?}"
        );
    }
    for ext in ["svg", "png"] {
        assert!(out.join(format!("keepalive-cdf.{ext}")).exists());
    }
    let md = std::fs::read_to_string(out.join("report.md")).expect("md");
    assert!(md.contains("## Keep-alive policies") && md.contains("keepalive-cdf.svg"));
}
