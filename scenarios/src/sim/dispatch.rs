//! What happens to one invocation in the simulator: the POP's placement decision, local
//! execution, forwarding with region failover and limits, artifact preparation, and the
//! runtime canary's choice. Latency is the time from the POP's edge receiving the request
//! to it sending the response (device <-> POP time is not modelled).

use super::node::Artifact;
use super::queue::Nanos;
use super::seams::{CanaryJudge, Runtime, Verdict};
use super::stats::Tier;
use super::{Completion, Event, NO_POP, Sim};
use common::policy::{Decision, ForwardReason, LocalState};
use rand::Rng;

impl Sim<'_> {
    /// One invocation of `func` arriving at `pop` at `now`, running `exec` when it runs.
    pub(super) fn invoke(&mut self, now: Nanos, pop: u32, func: u32, exec: Nanos) {
        self.rec.bucket(now).arrivals += 1;
        let exec = self.canary_exec(func, exec);
        let at = self.at(now);
        let spec = &self.functions[func as usize];
        let memory_mb = spec.memory_mb;
        let p = &mut self.pops[pop as usize];
        p.placement.handle_request(at, &func);
        let slot_free = p.node.slot_free();
        let known = p.known[func as usize];
        let local = LocalState {
            placement: spec.placement,
            known: known.meta,
            artifact_ready: known.artifact == Artifact::Ready,
            slot_free,
            // The simulator's node enforces its own memory bound (`Node::acquire`); the
            // policy's budget only sees the instance's memory.
            cost_bytes: memory_mb << 20,
        };
        let decision = p.placement.decide(at, &func, local);
        if known.artifact == Artifact::Absent && p.placement.wants_artifact(&func, local) {
            self.prepare(now, pop, func);
        }
        match decision {
            Decision::Local => self.run_local(now, pop, func, exec),
            Decision::Forward(reason) => self.forward(now, pop, func, exec, reason),
        }
    }

    fn run_local(&mut self, now: Nanos, pop: u32, func: u32, exec: Nanos) {
        let memory_mb = self.functions[func as usize].memory_mb;
        let node = &mut self.pops[pop as usize].node;
        self.removed.clear();
        let before = node.used_mb;
        let started = node.acquire(now, func, memory_mb, &mut self.removed);
        let after = node.used_mb;
        self.rec
            .memory_change(Tier::Pop, now, before, after, &self.removed);
        let Some(warm) = started else {
            // A slot was free but the instance does not fit in memory: spill.
            return self.forward(now, pop, func, exec, ForwardReason::OverCapacity);
        };
        self.rec.bucket(now).local += 1;
        let mut busy = exec;
        if !warm {
            busy += self.c.instantiate;
            self.rec.cold_start(now, Tier::Pop);
        }
        let latency = self.c.pop_overhead + busy;
        self.queue.push(
            now + latency,
            Event::Complete(Completion {
                tier: Tier::Pop,
                node: pop,
                func,
                epoch: 0,
                origin: NO_POP,
                latency,
            }),
        );
    }

    fn forward(&mut self, now: Nanos, pop: u32, func: u32, exec: Nanos, reason: ForwardReason) {
        self.rec.forward(now, reason);
        let tenant = self.functions[func as usize].tenant as usize;
        let memory_mb = self.functions[func as usize].memory_mb;
        // Time lost on regions that turned out dead before this one.
        let mut waited = 0;
        for _ in 0..=self.regions.len() {
            let t = now + waited;
            let p = &mut self.pops[pop as usize];
            let Some(r) = self.chooser.choose(t, pop, &p.views) else {
                break;
            };
            let region = &mut self.regions[r as usize];
            if !region.up {
                // The POP waits for the detection timeout, then avoids the region and
                // retries elsewhere: the dead region never received the request.
                waited += self.c.failure_detect;
                p.views[r as usize].avoid_until = now + waited + self.c.retry_after;
                self.chooser.unreachable(now + waited, pop, r);
                self.rec.counters.failovers += 1;
                continue;
            }
            if self
                .s
                .region
                .tenant_concurrency
                .is_some_and(|l| region.tenant_busy[tenant] >= l)
            {
                self.rec.counters.throttled_tenant += 1;
                self.rec.bucket(now).refused += 1;
                return;
            }
            let rtt = p.views[r as usize].rtt;
            let arrive = t + rtt / 2 + self.c.region_overhead;
            self.removed.clear();
            let before = region.node.used_mb;
            let started = region
                .node
                .acquire(arrive, func, memory_mb, &mut self.removed);
            let after = region.node.used_mb;
            // Memory is accounted at `now` so the memory clock only moves forward.
            self.rec
                .memory_change(Tier::Region, now, before, after, &self.removed);
            let Some(warm) = started else {
                self.rec.counters.throttled_region_capacity += 1;
                self.rec.bucket(now).refused += 1;
                return;
            };
            region.tenant_busy[tenant] += 1;
            let mut busy = exec;
            if !warm {
                busy += self.c.deserialize + self.c.instantiate;
                self.rec.cold_start(now, Tier::Region);
            }
            let latency = self.c.pop_overhead + waited + rtt + self.c.region_overhead + busy;
            let epoch = region.epoch;
            self.queue.push(
                arrive + busy,
                Event::Complete(Completion {
                    tier: Tier::Region,
                    node: r,
                    func,
                    epoch,
                    origin: pop,
                    latency,
                }),
            );
            return;
        }
        self.rec.counters.unavailable += 1;
        self.rec.bucket(now).refused += 1;
    }

    pub(super) fn complete(&mut self, now: Nanos, c: Completion) {
        match c.tier {
            Tier::Pop => {
                let memory_mb = self.functions[c.func as usize].memory_mb;
                self.pops[c.node as usize]
                    .node
                    .release(now, c.func, memory_mb);
            }
            Tier::Region => {
                let tenant = self.functions[c.func as usize].tenant as usize;
                let region = &mut self.regions[c.node as usize];
                if region.epoch != c.epoch {
                    self.rec.counters.lost += 1;
                    return;
                }
                region.node.release(now, c.func);
                region.tenant_busy[tenant] = region.tenant_busy[tenant].saturating_sub(1);
                if c.origin != NO_POP {
                    self.pops[c.origin as usize].known[c.func as usize].meta = true;
                }
            }
        }
        self.rec.completed(c.tier, c.latency);
    }

    /// Starts preparing `func`'s artifact at `pop`, making room in the artifact cache by
    /// dropping an artifact of a function that is no longer popular; when none can go,
    /// the function stays forwarded as not ready.
    fn prepare(&mut self, now: Nanos, pop: u32, func: u32) {
        let p = &mut self.pops[pop as usize];
        if p.artifacts >= self.s.pop.max_artifacts {
            let victim = p.ready.iter().position(|f| !p.placement.is_popular(f));
            let Some(i) = victim else {
                return;
            };
            let victim = p.ready.remove(i);
            self.removed.clear();
            let before = p.node.used_mb;
            p.node.drop_idle(now, victim, &mut self.removed);
            p.known[victim as usize].artifact = Artifact::Absent;
            p.artifacts -= 1;
            let after = p.node.used_mb;
            self.rec
                .memory_change(Tier::Pop, now, before, after, &self.removed);
        }
        p.known[func as usize].artifact = Artifact::Preparing;
        p.artifacts += 1;
        self.rec.counters.prepares += 1;
        // Fetched from the nearest region (dead or not: artifacts come from the store).
        let rtt = p.views.iter().map(|v| v.rtt).min().unwrap_or(0);
        let ready = now + rtt + self.c.transfer + self.c.deserialize;
        self.queue.push(ready, Event::Prepared { pop, func });
    }

    /// Applies the canary rollout to one invocation: picks its runtime, draws its outcome,
    /// updates the function's verdict, and returns its execution time on that runtime.
    fn canary_exec(&mut self, func: u32, exec: Nanos) -> Nanos {
        let (Some(judge), Some(cfg)) = (self.judge, self.s.canary.as_ref()) else {
            return exec;
        };
        let regressed = self.functions[func as usize].regressed;
        let (outcomes, verdict) = &mut self.outcomes[func as usize];
        let runtime = match verdict {
            Verdict::Pinned => Runtime::Current,
            Verdict::Promoted => Runtime::Next,
            Verdict::Undecided if self.rng.random::<f64>() < cfg.share => Runtime::Next,
            Verdict::Undecided => Runtime::Current,
        };
        let error_rate = match runtime {
            Runtime::Next if regressed => cfg.regressed_error_rate,
            _ => cfg.base_error_rate,
        };
        let failed = self.rng.random::<f64>() < error_rate;
        self.rec.counters.errors += u64::from(failed);
        match runtime {
            Runtime::Current => {
                outcomes.current = outcomes.current.saturating_add(1);
                outcomes.current_errors += u32::from(failed);
                self.canary.current_invocations += 1;
                self.canary.current_errors += u64::from(failed);
            }
            Runtime::Next => {
                outcomes.next = outcomes.next.saturating_add(1);
                outcomes.next_errors += u32::from(failed);
                self.canary.next_invocations += 1;
                self.canary.next_errors += u64::from(failed);
            }
        }
        if *verdict == Verdict::Undecided {
            *verdict = judge.judge(outcomes);
        }
        match runtime {
            Runtime::Next => (exec as f64 * cfg.exec_factor) as Nanos,
            Runtime::Current => exec,
        }
    }
}
