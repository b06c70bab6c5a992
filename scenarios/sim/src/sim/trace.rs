//! Replay input in the Azure Functions 2021 invocation trace format.
//!
//! The file is CSV with the header `app,func,end_timestamp,duration`: `app` and `func` are
//! opaque ids (hashes in the published trace), `end_timestamp` is when the invocation
//! finished and `duration` how long it ran, both in seconds since the trace started. An
//! invocation arrives at `end_timestamp - duration` (clamped to 0 for the few that began
//! before the trace did). Every bad line is a typed error naming the line; parsing never
//! panics and reads at most a configured number of rows.

use std::collections::HashMap;
use std::path::Path;

/// The header every trace file starts with.
pub const HEADER: &str = "app,func,end_timestamp,duration";

/// One invocation of the trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceInvocation {
    /// Seconds since the start of the trace.
    pub arrival: f64,
    /// How long the function ran, in seconds.
    pub duration: f64,
    /// Index into [`Trace::functions`].
    pub function: u32,
}

/// A parsed trace, sorted by arrival.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Invocations in arrival order.
    pub invocations: Vec<TraceInvocation>,
    /// Each distinct (app, func) with the index of its app, in order of first appearance.
    pub functions: Vec<TraceFunction>,
    /// How many distinct apps the trace has.
    pub apps: usize,
}

/// One function of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceFunction {
    /// Index of the owning app (a tenant in the simulation).
    pub app: u32,
    /// The trace's function id.
    pub func: String,
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineFault {
    /// Not exactly four comma-separated fields.
    #[error("expected 4 fields, found {0}")]
    FieldCount(usize),
    /// An id field is empty.
    #[error("field `{0}` is empty")]
    Empty(&'static str),
    /// A time field is not a finite number.
    #[error("field `{0}` is not a number")]
    NotANumber(&'static str),
    /// A time field is negative.
    #[error("field `{0}` is negative")]
    Negative(&'static str),
}

/// Why a trace cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file cannot be read.
    #[error("cannot read trace {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The first line is not [`HEADER`].
    #[error("trace header must be `{HEADER}`, found `{0}`")]
    Header(String),
    /// A data line is malformed.
    #[error("trace line {line}: {fault}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        fault: LineFault,
    },
    /// More rows than the configured bound.
    #[error("trace has more than {0} rows")]
    TooLong(usize),
    /// No invocations at all.
    #[error("trace has no invocations")]
    Empty,
}

impl Trace {
    /// Reads and parses a trace file of at most `max_rows` rows.
    ///
    /// # Errors
    /// [`TraceError`] for an unreadable file or any bad line.
    pub fn load(path: &Path, max_rows: usize) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, max_rows)
    }

    /// Parses trace text of at most `max_rows` rows.
    ///
    /// # Errors
    /// [`TraceError`] for a bad header or any bad line.
    pub fn parse(text: &str, max_rows: usize) -> Result<Self, TraceError> {
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
        if header != HEADER {
            return Err(TraceError::Header(header.to_owned()));
        }
        let mut trace = Trace::default();
        let mut apps: HashMap<String, u32> = HashMap::new();
        let mut funcs: HashMap<(u32, String), u32> = HashMap::new();
        for (i, raw) in lines {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if trace.invocations.len() >= max_rows {
                return Err(TraceError::TooLong(max_rows));
            }
            let (app, func, end, duration) =
                parse_line(line).map_err(|fault| TraceError::Line { line: i + 1, fault })?;
            let next_app = apps.len() as u32;
            let app = *apps.entry(app.to_owned()).or_insert(next_app);
            let next_fn = funcs.len() as u32;
            let function = *funcs.entry((app, func.to_owned())).or_insert_with(|| {
                trace.functions.push(TraceFunction {
                    app,
                    func: func.to_owned(),
                });
                next_fn
            });
            trace.invocations.push(TraceInvocation {
                arrival: (end - duration).max(0.0),
                duration,
                function,
            });
        }
        if trace.invocations.is_empty() {
            return Err(TraceError::Empty);
        }
        trace
            .invocations
            .sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
        trace.apps = apps.len();
        Ok(trace)
    }

    /// Seconds from the first arrival to the last.
    pub fn span(&self) -> f64 {
        match (self.invocations.first(), self.invocations.last()) {
            (Some(a), Some(b)) => b.arrival - a.arrival,
            _ => 0.0,
        }
    }
}

fn parse_line(line: &str) -> Result<(&str, &str, f64, f64), LineFault> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [app, func, end, duration] = fields[..] else {
        return Err(LineFault::FieldCount(fields.len()));
    };
    if app.is_empty() {
        return Err(LineFault::Empty("app"));
    }
    if func.is_empty() {
        return Err(LineFault::Empty("func"));
    }
    Ok((
        app,
        func,
        seconds(end, "end_timestamp")?,
        seconds(duration, "duration")?,
    ))
}

fn seconds(s: &str, field: &'static str) -> Result<f64, LineFault> {
    let v: f64 = s
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or(LineFault::NotANumber(field))?;
    if v < 0.0 {
        return Err(LineFault::Negative(field));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "app,func,end_timestamp,duration\n\
        a1,f1,2.5,0.5\n\
        a1,f2,1.0,0.25\n\
        a2,f1,3.0,1.0\n\
        \n\
        a1,f1,0.1,0.3\n";

    #[test]
    fn a_trace_parses_into_sorted_arrivals_with_functions_per_app() {
        let t = Trace::parse(SAMPLE, 100).expect("valid");
        assert_eq!(t.apps, 2);
        assert_eq!(t.functions.len(), 3, "a2/f1 is not a1/f1");
        let arrivals: Vec<f64> = t.invocations.iter().map(|i| i.arrival).collect();
        // 0.1 - 0.3 began before the trace: clamped to 0.
        assert_eq!(arrivals, [0.0, 0.75, 2.0, 2.0]);
        assert_eq!(t.invocations[0].function, 0);
        assert_eq!(t.functions[2].app, 1);
    }

    #[test]
    fn bad_lines_are_typed_errors_naming_the_line() {
        let cases = [
            ("a,f,1.0\n", LineFault::FieldCount(3)),
            ("a,f,1.0,2.0,3\n", LineFault::FieldCount(5)),
            (",f,1.0,0.1\n", LineFault::Empty("app")),
            ("a,,1.0,0.1\n", LineFault::Empty("func")),
            ("a,f,soon,0.1\n", LineFault::NotANumber("end_timestamp")),
            ("a,f,1.0,NaN\n", LineFault::NotANumber("duration")),
            ("a,f,1.0,-0.1\n", LineFault::Negative("duration")),
        ];
        for (line, fault) in cases {
            let text = format!("{HEADER}\na,f,1.0,0.5\n{line}");
            match Trace::parse(&text, 100) {
                Err(TraceError::Line { line: 3, fault: f }) => assert_eq!(f, fault, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_wrong_header_or_empty_trace_is_refused() {
        assert!(matches!(
            Trace::parse("func,app,end,duration\n", 10),
            Err(TraceError::Header(_))
        ));
        assert!(matches!(Trace::parse("", 10), Err(TraceError::Header(_))));
        assert!(matches!(Trace::parse(HEADER, 10), Err(TraceError::Empty)));
    }

    #[test]
    fn a_trace_longer_than_the_bound_is_refused() {
        assert!(matches!(
            Trace::parse(SAMPLE, 3),
            Err(TraceError::TooLong(3))
        ));
    }
}
