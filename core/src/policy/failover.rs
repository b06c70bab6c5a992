//! Failover of one request across regions: which failures move it to another region and
//! what the region choice is told about each. Used by the POP's upstream link and by the
//! simulator's forward, so both retry exactly alike.
//!
//! The rule: a request goes to each region at most once, and to another region only while
//! the previous one certainly never received it. A region that could not be reached (no
//! connection, or one known down) is marked unreachable; a request whose connection was
//! gone before its stream opened was not sent, so it is marked a failure and tried
//! elsewhere; a request that was sent and then failed (reset, lost connection, timeout)
//! is marked a failure and never retried, because the region may have run it
//! (request-response invocations are at most once).
//!
//! Never performs I/O: the shell chooses the region (with its
//! [`RegionChoice`] or the simulator's), sends, and reports
//! how the attempt ended.

use super::region::RegionChoice;
use std::time::Instant;

/// How a failed attempt to send a request to a region ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The region could not be reached: nothing was sent.
    Unreachable,
    /// The connection was gone before the request's stream opened: nothing was sent.
    NotSent,
    /// The request was sent and then failed: the region may have run it.
    Sent,
}

/// What the region choice should hear about the region that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// It could not be reached (`RegionChoice::handle_unreachable`).
    Unreachable,
    /// A request to it failed (`RegionChoice::handle_failure`).
    Failed,
}

impl Mark {
    /// Tells `choice` about `region` at `now`.
    pub fn apply<K: Clone + PartialEq>(
        self,
        choice: &mut RegionChoice<K>,
        now: Instant,
        region: &K,
    ) {
        match self {
            Mark::Unreachable => choice.handle_unreachable(now, region),
            Mark::Failed => choice.handle_failure(now, region),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Tell the region choice this about the region.
    pub mark: Mark,
    /// Try another region (`true`), or end the request with the failure.
    pub retry: bool,
}

/// One request's way across the regions.
#[derive(Debug, Clone)]
pub struct Failover<R> {
    tried: Vec<R>,
}

impl<R> Default for Failover<R> {
    fn default() -> Self {
        Self { tried: Vec::new() }
    }
}

impl<R: PartialEq> Failover<R> {
    /// A request not sent anywhere yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The regions tried so far, in order (to exclude from the next choice).
    pub fn tried(&self) -> &[R] {
        &self.tried
    }

    /// Records `chosen` as the next region to try and returns it; `None` (give up) when
    /// nothing was chosen or the region was tried already.
    pub fn attempt(&mut self, chosen: Option<R>) -> Option<&R> {
        let region = chosen.filter(|r| !self.tried.contains(r))?;
        self.tried.push(region);
        self.tried.last()
    }

    /// The attempt at the last region ended in `failure`: what to mark and whether to go
    /// on (module docs).
    pub fn failed(&self, failure: Failure) -> Step {
        match failure {
            Failure::Unreachable => Step {
                mark: Mark::Unreachable,
                retry: true,
            },
            Failure::NotSent => Step {
                mark: Mark::Failed,
                retry: true,
            },
            Failure::Sent => Step {
                mark: Mark::Failed,
                retry: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_tried_at_most_once() {
        let mut f = Failover::new();
        assert_eq!(f.attempt(Some(1)), Some(&1));
        assert_eq!(f.attempt(Some(2)), Some(&2));
        assert_eq!(f.attempt(Some(1)), None, "1 was tried already");
        assert_eq!(f.attempt(None), None);
        assert_eq!(f.tried(), &[1, 2]);
    }

    #[test]
    fn only_a_request_that_was_never_received_moves_on() {
        let f = Failover::<u32>::new();
        assert_eq!(
            f.failed(Failure::Unreachable),
            Step {
                mark: Mark::Unreachable,
                retry: true
            }
        );
        assert_eq!(
            f.failed(Failure::NotSent),
            Step {
                mark: Mark::Failed,
                retry: true
            }
        );
        assert_eq!(
            f.failed(Failure::Sent),
            Step {
                mark: Mark::Failed,
                retry: false
            }
        );
    }
}
