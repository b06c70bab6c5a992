//! Function logs: what guests write to stderr, kept per function in a bounded ring buffer
//! with sequence numbers so readers can page and follow (`?since=SEQ`).
//!
//! Owns the buffer and its bounds. Never performs I/O: the executor hands stderr in
//! through [`LogSink`], the region's API reads, and a POP ships its lines to the region.
//!
//! Bounds, and what happens when they are reached: each function keeps at most
//! [`LogLimits::lines_per_function`] lines and [`LogLimits::bytes_per_function`] bytes
//! (the oldest lines are dropped and counted); a line longer than
//! [`LogLimits::max_line_bytes`] is truncated; at most [`LogLimits::max_functions`]
//! functions have a buffer (the one written least recently is dropped whole).

use crate::model::{FunctionKey, RequestId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Writes a guest's `stderr` into the node's own log (target `strata::function_log`) as
/// one event whose `stderr` field carries the text escaped: control characters
/// (newlines, ANSI escapes) appear as `\n`, `\u{1b}`, so a guest cannot forge log lines
/// or colour the operator's terminal. The message itself is fixed.
pub fn trace_guest_stderr(function: &FunctionKey, request_id: RequestId, stderr: &[u8]) {
    tracing::info!(
        target: "strata::function_log",
        function = %function,
        request_id = %request_id,
        stderr = %String::from_utf8_lossy(stderr).escape_debug(),
        "guest stderr"
    );
}

/// One log line as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    /// Position in this function's log at the node that serves it; strictly increasing.
    pub seq: u64,
    /// When the invocation's output was collected, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The invocation that wrote it (32 hex digits).
    pub request_id: String,
    /// Where it ran: `pop/<id>` or `region/<id>`.
    pub node: String,
    /// The text, without its line ending.
    pub line: String,
}

/// Bounds of a [`LogBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogLimits {
    /// Lines kept per function. Default 1000.
    pub lines_per_function: usize,
    /// Bytes of text kept per function. Default 256 KiB.
    pub bytes_per_function: usize,
    /// Longest line kept; longer ones are cut. Default 4 KiB.
    pub max_line_bytes: usize,
    /// Functions with a buffer. Default 10 000.
    pub max_functions: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            lines_per_function: 1000,
            bytes_per_function: 256 << 10,
            max_line_bytes: 4 << 10,
            max_functions: 10_000,
        }
    }
}

/// Receives each invocation's stderr. The executor calls it after every invocation that
/// wrote something; implementations must not block.
pub trait LogSink: Send + Sync + std::fmt::Debug + 'static {
    /// Records `stderr` of invocation `request_id` of `function`, collected at `ts`
    /// (milliseconds since the Unix epoch).
    fn function_log(&self, function: &FunctionKey, request_id: RequestId, ts: u64, stderr: &[u8]);
}

#[derive(Debug, Default)]
struct FunctionLog {
    lines: VecDeque<LogLine>,
    bytes: usize,
    next_seq: u64,
    /// Lines dropped to stay within the bounds, since the buffer was created.
    dropped: u64,
    /// Write counter value of the last write, for least-recently-written eviction.
    touched: u64,
}

#[derive(Debug, Default)]
struct Inner {
    functions: HashMap<FunctionKey, FunctionLog>,
    writes: u64,
}

/// A page of a function's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    /// Lines with `seq >= since`, oldest first, at most `limit`.
    pub lines: Vec<LogLine>,
    /// The `since` to ask for next.
    pub next: u64,
    /// Lines this node has dropped from this function's log to stay within its bounds.
    pub dropped: u64,
}

/// Per-function ring buffers of log lines (see the module docs for the bounds).
#[derive(Debug)]
pub struct LogBuffer {
    node: String,
    limits: LogLimits,
    inner: Mutex<Inner>,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl LogBuffer {
    /// A buffer for node `node` (`pop/<id>` or `region/<id>`) with `limits`.
    pub fn new(node: impl Into<String>, limits: LogLimits) -> Self {
        Self {
            node: node.into(),
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every operation leaves the maps consistent between statements that could panic,
        // so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends each line of `text` to `function`'s log as written by `request_id` at `node`.
    pub fn append(
        &self,
        function: &FunctionKey,
        node: &str,
        request_id: &str,
        ts: u64,
        text: &str,
    ) {
        let limits = self.limits;
        let mut inner = self.lock();
        inner.writes += 1;
        let touched = inner.writes;
        if !inner.functions.contains_key(function)
            && inner.functions.len() >= limits.max_functions.max(1)
        {
            let oldest = inner
                .functions
                .iter()
                .min_by_key(|(_, l)| l.touched)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.functions.remove(&k);
            }
        }
        let log = inner.functions.entry(function.clone()).or_default();
        log.touched = touched;
        for raw in text.lines() {
            let line = truncate(raw, limits.max_line_bytes).to_owned();
            log.bytes += line.len();
            log.lines.push_back(LogLine {
                seq: log.next_seq,
                ts,
                request_id: request_id.to_owned(),
                node: node.to_owned(),
                line,
            });
            log.next_seq += 1;
            while log.lines.len() > limits.lines_per_function.max(1)
                || (log.bytes > limits.bytes_per_function && log.lines.len() > 1)
            {
                if let Some(old) = log.lines.pop_front() {
                    log.bytes -= old.line.len();
                    log.dropped += 1;
                }
            }
        }
    }

    /// Up to `limit` lines of `function`'s log with `seq >= since`.
    pub fn read(&self, function: &FunctionKey, since: u64, limit: usize) -> LogPage {
        let inner = self.lock();
        let Some(log) = inner.functions.get(function) else {
            return LogPage {
                lines: Vec::new(),
                next: since,
                dropped: 0,
            };
        };
        let lines: Vec<LogLine> = log
            .lines
            .iter()
            .filter(|l| l.seq >= since)
            .take(limit)
            .cloned()
            .collect();
        let next = lines.last().map_or(since, |l| l.seq + 1);
        LogPage {
            lines,
            next,
            dropped: log.dropped,
        }
    }

    /// Forgets `function`'s log (the function was deleted).
    pub fn remove(&self, function: &FunctionKey) {
        self.lock().functions.remove(function);
    }
}

/// Milliseconds since the Unix epoch, for log timestamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl LogSink for LogBuffer {
    fn function_log(&self, function: &FunctionKey, request_id: RequestId, ts: u64, stderr: &[u8]) {
        let node = self.node.clone();
        self.append(
            function,
            &node,
            &request_id.to_string(),
            ts,
            &String::from_utf8_lossy(stderr),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FunctionName, TenantId};

    fn key(f: &str) -> FunctionKey {
        FunctionKey {
            tenant: TenantId::new("t").expect("valid"),
            name: FunctionName::new(f).expect("valid"),
        }
    }

    fn limits(lines: usize, bytes: usize, functions: usize) -> LogLimits {
        LogLimits {
            lines_per_function: lines,
            bytes_per_function: bytes,
            max_line_bytes: 8,
            max_functions: functions,
        }
    }

    #[test]
    fn lines_get_increasing_sequence_numbers_and_pages_follow() {
        let b = LogBuffer::new("region/r", LogLimits::default());
        b.append(&key("f"), "region/r", "r1", 1, "one\ntwo\n");
        b.append(&key("f"), "region/r", "r2", 2, "three");
        let p = b.read(&key("f"), 0, 2);
        assert_eq!(
            p.lines
                .iter()
                .map(|l| (l.seq, l.line.as_str()))
                .collect::<Vec<_>>(),
            [(0, "one"), (1, "two")]
        );
        let p = b.read(&key("f"), p.next, 10);
        assert_eq!(p.lines.len(), 1);
        assert_eq!((p.lines[0].line.as_str(), p.next), ("three", 3));
        let p = b.read(&key("f"), p.next, 10);
        assert!(p.lines.is_empty());
        assert_eq!(p.next, 3);
        assert!(b.read(&key("other"), 0, 10).lines.is_empty());
    }

    #[test]
    fn the_oldest_lines_are_dropped_and_counted_at_the_line_bound() {
        let b = LogBuffer::new("n", limits(3, 1 << 20, 10));
        for i in 0..5 {
            b.append(&key("f"), "n", "r", 0, &format!("l{i}"));
        }
        let p = b.read(&key("f"), 0, 10);
        assert_eq!(p.lines.iter().map(|l| l.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(p.dropped, 2);
    }

    #[test]
    fn the_byte_bound_holds_and_long_lines_are_cut() {
        let b = LogBuffer::new("n", limits(100, 10, 10));
        b.append(&key("f"), "n", "r", 0, "0123456789abcdef\nxy\nzz");
        let p = b.read(&key("f"), 0, 10);
        assert_eq!(p.lines[0].line.len() + p.lines[1].line.len(), 4);
        assert!(p.lines.iter().all(|l| l.line.len() <= 8));
        assert_eq!(p.dropped, 1);
    }

    #[test]
    fn the_least_recently_written_function_is_dropped_at_the_function_bound() {
        let b = LogBuffer::new("n", limits(10, 1024, 2));
        b.append(&key("a"), "n", "r", 0, "a");
        b.append(&key("b"), "n", "r", 0, "b");
        b.append(&key("a"), "n", "r", 0, "a again");
        b.append(&key("c"), "n", "r", 0, "c");
        assert!(b.read(&key("b"), 0, 10).lines.is_empty());
        assert_eq!(b.read(&key("a"), 0, 10).lines.len(), 2);
        assert_eq!(b.read(&key("c"), 0, 10).lines.len(), 1);
    }
}
