//! The simulator's event queue: a radix heap ordered by (virtual time, insertion order).
//!
//! Ties in time are broken by insertion order, so a run is a pure function of its inputs.
//! The queue holds at most one pending arrival per source plus one event per invocation in
//! flight and per artifact being prepared, so its size is bounded by the scenario's slots.
//!
//! Virtual time never goes backwards (every event is scheduled at or after the one being
//! handled), which is what a radix heap needs: an event is filed in the bucket of the
//! highest bit where its time differs from the last time taken out, and only the lowest
//! non-empty bucket is ever sorted out again. A push is O(1) and an event moves down at
//! most 64 times, so a fleet-scale run's tens of thousands of pending events cost far less
//! than a binary heap's log-depth sift per pop (which was a seventh of such a run).
//!
//! Insertion order among equal times needs no sequence number: an event's bucket is a
//! function of its time and `last` only, so events with equal times always share a bucket,
//! and buckets are appended to and redistributed in order.

use std::collections::VecDeque;

/// Virtual time in nanoseconds since the start of the run.
pub type Nanos = u64;

/// One scheduled event.
#[derive(Debug)]
struct Scheduled<E> {
    at: Nanos,
    event: E,
}

/// A min-queue of events by time, FIFO among equal times. An event scheduled before the
/// last time taken out is due at once: it runs at that time, after those already due.
#[derive(Debug)]
pub struct EventQueue<E> {
    /// Events at exactly `last`, in insertion order.
    due: VecDeque<Scheduled<E>>,
    /// `buckets[b]` holds events whose time first differs from `last` at bit `b`.
    buckets: [Vec<Scheduled<E>>; 64],
    last: Nanos,
    len: usize,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            due: VecDeque::new(),
            buckets: std::array::from_fn(|_| Vec::new()),
            last: 0,
            len: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `at`.
    pub fn push(&mut self, at: Nanos, event: E) {
        self.len += 1;
        let item = Scheduled {
            at: at.max(self.last),
            event,
        };
        self.file(item);
    }

    /// Removes and returns the earliest event.
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        if self.due.is_empty() {
            self.refill();
        }
        let s = self.due.pop_front()?;
        self.len -= 1;
        Some((s.at, s.event))
    }

    /// Removes and returns the earliest event if it is due before `limit`. Events at or
    /// after `limit` stay put, and so does the queue's clock: an event scheduled later
    /// at or after `limit` still comes out in order.
    pub fn pop_before(&mut self, limit: Nanos) -> Option<(Nanos, E)> {
        if self.due.is_empty() {
            let b = self.buckets.iter().position(|b| !b.is_empty())?;
            let min = self.buckets[b].iter().map(|s| s.at).min()?;
            if min >= limit {
                return None;
            }
            self.redistribute(b, min);
        } else if self.last >= limit {
            return None;
        }
        let s = self.due.pop_front()?;
        self.len -= 1;
        Some((s.at, s.event))
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<Nanos> {
        if !self.due.is_empty() {
            return Some(self.last);
        }
        let b = self.buckets.iter().find(|b| !b.is_empty())?;
        b.iter().map(|s| s.at).min()
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn file(&mut self, item: Scheduled<E>) {
        let diff = item.at ^ self.last;
        if diff == 0 {
            self.due.push_back(item);
        } else {
            self.buckets[63 - diff.leading_zeros() as usize].push(item);
        }
    }

    /// Moves the earliest events into `due`: the lowest non-empty bucket is redistributed
    /// around its minimum time, which becomes `last`.
    fn refill(&mut self) {
        let Some(b) = self.buckets.iter().position(|b| !b.is_empty()) else {
            return;
        };
        let min = self.buckets[b]
            .iter()
            .map(|s| s.at)
            .min()
            .unwrap_or(self.last);
        self.redistribute(b, min);
    }

    /// Makes `min`, the earliest time in bucket `b` (the lowest non-empty one), the
    /// queue's clock and files the bucket's events again around it.
    fn redistribute(&mut self, b: usize, min: Nanos) {
        let mut items = std::mem::take(&mut self.buckets[b]);
        self.last = min;
        // Every event lands in a lower bucket (or `due`): they all agree with the new
        // `last` on bit `b` and above.
        for item in items.drain(..) {
            self.file(item);
        }
        // Keep the bucket's allocation for its next fill.
        self.buckets[b] = items;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_time_order() {
        let mut q = EventQueue::default();
        for (t, e) in [(30, 'c'), (10, 'a'), (20, 'b'), (5, 'z')] {
            q.push(t, e);
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [(5, 'z'), (10, 'a'), (20, 'b'), (30, 'c')]);
    }

    #[test]
    fn equal_times_keep_insertion_order() {
        let mut q = EventQueue::default();
        for e in 0..100 {
            q.push(7, e);
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, e)| e).collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn random_schedules_come_out_like_a_sorted_list() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut q = EventQueue::default();
        let mut model: Vec<(Nanos, u64)> = Vec::new();
        let (mut now, mut id) = (0, 0u64);
        for _ in 0..20_000 {
            if rng.random_range(0..3) > 0 || model.is_empty() {
                // Mostly near the present, sometimes far ahead, often exactly now.
                let ahead = match rng.random_range(0..4) {
                    0 => 0,
                    1 => rng.random_range(0..16),
                    2 => rng.random_range(0..1_000_000),
                    _ => rng.random_range(0..u64::from(u32::MAX)),
                };
                q.push(now + ahead, id);
                model.push((now + ahead, id));
                id += 1;
            } else {
                // The model's earliest, first scheduled among equals.
                let i = (0..model.len()).min_by_key(|&i| model[i]).unwrap_or(0);
                let want = model.remove(i);
                assert_eq!(q.peek_time(), Some(want.0));
                assert_eq!(q.pop(), Some(want));
                now = want.0;
            }
            assert_eq!(q.len(), model.len());
        }
    }

    #[test]
    fn an_event_scheduled_in_the_past_is_due_at_once() {
        let mut q = EventQueue::default();
        q.push(10, 'a');
        q.push(20, 'b');
        assert_eq!(q.pop(), Some((10, 'a')));
        q.push(5, 'c');
        assert_eq!(q.pop(), Some((10, 'c')));
        assert_eq!(q.pop(), Some((20, 'b')));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn pop_before_stops_at_the_limit_and_keeps_later_pushes_in_order() {
        let mut q = EventQueue::default();
        q.push(10, 'a');
        q.push(30, 'c');
        assert_eq!(q.pop_before(20), Some((10, 'a')));
        assert_eq!(q.pop_before(20), None);
        assert_eq!(q.pop_before(30), None, "the limit is exclusive");
        // A message from another shard for a time before the next event but after the
        // limit: it must not be clamped to the next event's time.
        q.push(25, 'b');
        q.push(25, 'd');
        assert_eq!(q.pop_before(u64::MAX), Some((25, 'b')));
        assert_eq!(q.pop_before(26), Some((25, 'd')));
        assert_eq!(q.pop_before(30), None);
        assert_eq!(q.pop(), Some((30, 'c')));
        assert!(q.is_empty());
    }

    #[test]
    fn peek_shows_the_earliest_without_removing_it() {
        let mut q = EventQueue::default();
        q.push(9, ());
        q.push(3, ());
        assert_eq!(q.peek_time(), Some(3));
        assert_eq!(q.len(), 2);
    }
}
