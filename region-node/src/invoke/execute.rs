//! Layer 5, execute: loads the module for the plan's release (compiling it when it is not
//! cached here, timed as the response's `server-timing: compile`) and runs it, then does
//! what the origin planner says follows ([`origin::after_run`]): a module the next release
//! refuses to link is that release's platform failure and runs again on the current one
//! (no guest code ran, so running it again cannot repeat a side effect); the outcome the
//! runtime canary counts.
//!
//! Runs only what the admit layer admitted; never refuses for capacity or a limit.

use super::InvokeError;
use crate::fleet::{Fleet, Fleets};
use crate::registry::Registry;
use common::exec::Executor;
use common::model::{ExecutedAt, InvokeRequest, InvokeResponse, NodeId, ResolvedFunction};
use common::policy::canary::Side;
use common::policy::origin::{self, Plan, Ran};
use common::sandbox::Release;
use std::sync::Arc;
use tracing::warn;

/// What the execute layer runs with.
#[derive(Debug, Clone, Copy)]
pub struct Runner<'a> {
    /// This node (the responses' `executed_at`).
    pub node: &'a NodeId,
    /// Where the module's code is read when it is not cached.
    pub registry: &'a Arc<Registry>,
    /// Loads and runs modules on either release.
    pub executor: &'a Executor,
    /// The fleets' warm lanes and the dedicated fleet's run times.
    pub fleets: &'a Fleets,
}

/// A run and what the canary counts of it.
#[derive(Debug)]
pub struct Executed {
    /// The response, or why there is none.
    pub response: Result<InvokeResponse, InvokeError>,
    /// The canary's count (release, failed), when the plan counts this run.
    pub count: Option<(Side, bool)>,
}

/// Runs `req` as `function` as `plan` says (already admitted).
pub async fn run(
    runner: Runner<'_>,
    function: &ResolvedFunction,
    req: &InvokeRequest,
    plan: &Plan,
) -> Executed {
    let release = Release::from(plan.release);
    let (response, ran) = match run_on(runner, function, req, release, plan.fleet).await {
        Ok((response, platform_fault)) => (Ok(response), Ran::Done { platform_fault }),
        Err(e @ InvokeError::Module { .. }) if release == Release::Next => {
            warn!(function = %function.key, %release, error = %super::chain(&e),
                "the release refused the module");
            (Err(e), Ran::LinkRefused)
        }
        Err(e) => (Err(e), Ran::Failed),
    };
    let after = origin::after_run(plan.release, plan.counted, ran);
    let response = if after.rerun_on_current {
        run_on(runner, function, req, Release::Current, plan.fleet)
            .await
            .map(|r| r.0)
    } else {
        response
    };
    if plan.fleet == Fleet::Dedicated
        && let Ok(r) = &response
    {
        runner.fleets.record(function, r.timing.exec);
    }
    Executed {
        response,
        count: after.count,
    }
}

/// Runs `req` on `release`; also says whether a failure was the platform's.
async fn run_on(
    runner: Runner<'_>,
    function: &ResolvedFunction,
    req: &InvokeRequest,
    release: Release,
    fleet: Fleet,
) -> Result<(InvokeResponse, bool), InvokeError> {
    let executor = runner.executor;
    let (module, compiled) = match executor.cached_on(release, &function.digest) {
        Some(m) => (m, None),
        None => {
            // Timed for `server-timing: compile` (the simulator's
            // `cold_start.region_compile_ms` is calibrated from it).
            let started = std::time::Instant::now();
            let registry = Arc::clone(runner.registry);
            let digest = function.digest;
            let wasm = tokio::task::spawn_blocking(move || registry.module(&digest))
                .await
                .map_err(|source| InvokeError::Task {
                    what: "store",
                    source,
                })?
                .map_err(InvokeError::Store)?;
            let module = match release {
                Release::Current => executor.prepare(wasm.into()).await,
                Release::Next => executor.prepare_on(release, wasm.into()).await,
            }
            .map_err(|source| InvokeError::Module { release, source })?;
            (module, Some(started.elapsed()))
        }
    };
    let (mut response, platform_fault) = executor
        .run_outcome(
            module,
            function,
            req,
            compiled.is_some(),
            ExecutedAt::Region(runner.node.clone()),
            runner.fleets.lane(fleet),
        )
        .await
        .map_err(InvokeError::Run)?;
    response.timing.compile = compiled;
    Ok((response, platform_fault))
}
