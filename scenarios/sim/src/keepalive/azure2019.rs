//! Reader of the Azure Functions 2019 dataset's files (AzurePublicDataset,
//! `AzureFunctionsDataset2019`), so a user with the real data can replay it.
//!
//! - `invocations_per_function_md.anon.dNN.csv`: `HashOwner,HashApp,HashFunction,Trigger`
//!   then 1440 columns `1..1440`, the invocations in each minute of day NN. Files are given
//!   in day order; file `i` starts at minute `1440 × i`.
//! - `function_durations_percentiles.anon.dNN.csv` (optional):
//!   `HashOwner,HashApp,HashFunction,Average,...`, the function's mean execution time in
//!   ms; a function without one draws from the paper's fit.
//! - `app_memory_percentiles.anon.dNN.csv` (optional): `HashOwner,HashApp,SampleCount,
//!   AverageAllocatedMb,...`; an app without one draws from the paper's fit.
//!
//! Applications are keyed by (owner, app). Every bad line is a typed error naming the file
//! and line; at most `max_rows` rows are read over all files.

use super::generate::{exec_seconds, memory_mb};
use super::{AppActivity, Workload, blocks_from_minutes};
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Minutes per day file.
const MINUTES: usize = 1440;

/// An application's key in the files: (HashOwner, HashApp).
type AppKey = (String, String);
/// One active minute of an application: (minute, invocations, busy seconds).
type Minute = (u32, u64, f64);

/// Why the files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's header is not the expected one.
    #[error("{path}: header must start with `{expected}`")]
    Header {
        /// The file.
        path: PathBuf,
        /// The expected start.
        expected: &'static str,
    },
    /// A data line is malformed.
    #[error("{path} line {line}: {fault}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        fault: String,
    },
    /// More rows than the bound.
    #[error("more than {0} rows")]
    TooLong(usize),
    /// No invocation at all.
    #[error("no invocations in the files")]
    Empty,
}

const INVOCATIONS_HEADER: &str = "HashOwner,HashApp,HashFunction,Trigger,1,";
const DURATIONS_HEADER: &str = "HashOwner,HashApp,HashFunction,Average,";
const MEMORY_HEADER: &str = "HashOwner,HashApp,SampleCount,AverageAllocatedMb";

/// Reads the files into a workload; missing durations and memory are drawn from `seed`.
///
/// # Errors
/// [`AzureError`] for an unreadable file, a bad header or line, or too many rows.
pub fn load(
    invocations: &[PathBuf],
    durations: &[PathBuf],
    memory: &[PathBuf],
    max_rows: usize,
    seed: u64,
) -> Result<Workload, AzureError> {
    let mut rows = 0usize;
    let mut exec_ms: HashMap<(String, String, String), f64> = HashMap::new();
    for path in durations {
        each_row(path, DURATIONS_HEADER, &mut rows, max_rows, |f| {
            let [owner, app, func, average, ..] = f else {
                return Err("expected at least 4 fields".into());
            };
            let ms = number(average, "Average")?;
            exec_ms.insert((owner.to_string(), app.to_string(), func.to_string()), ms);
            Ok(())
        })?;
    }
    let mut app_memory: HashMap<AppKey, f64> = HashMap::new();
    for path in memory {
        each_row(path, MEMORY_HEADER, &mut rows, max_rows, |f| {
            let [owner, app, _, mb, ..] = f else {
                return Err("expected at least 4 fields".into());
            };
            app_memory.insert(
                (owner.to_string(), app.to_string()),
                number(mb, "AverageAllocatedMb")?,
            );
            Ok(())
        })?;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut apps: HashMap<AppKey, Vec<Minute>> = HashMap::new();
    let mut order: Vec<AppKey> = Vec::new();
    let mut function_daily = Vec::new();
    for (day, path) in invocations.iter().enumerate() {
        each_row(path, INVOCATIONS_HEADER, &mut rows, max_rows, |f| {
            if f.len() != 4 + MINUTES {
                return Err(format!(
                    "expected {} fields, found {}",
                    4 + MINUTES,
                    f.len()
                ));
            }
            let key = (f[0].to_string(), f[1].to_string());
            let exec = exec_ms
                .get(&(f[0].to_string(), f[1].to_string(), f[2].to_string()))
                .map_or_else(|| exec_seconds(&mut rng), |ms| (ms / 1e3).max(0.0));
            let minutes = apps.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                Vec::new()
            });
            let mut total = 0u64;
            for (m, v) in f[4..].iter().enumerate() {
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("minute {} is not a count: `{v}`", m + 1))?;
                if n > 0 {
                    let minute = (day * MINUTES + m) as u32;
                    minutes.push((minute, n, n as f64 * exec));
                    total += n;
                }
            }
            if total > 0 {
                function_daily.push(total as f64);
            }
            Ok(())
        })?;
    }
    let apps: Vec<AppActivity> = order
        .into_iter()
        .filter_map(|key| {
            let minutes = apps.remove(&key)?;
            // Functions of one app active in the same minute: add them up.
            let mut merged: Vec<Minute> = Vec::with_capacity(minutes.len());
            let mut sorted = minutes;
            sorted.sort_by_key(|m| m.0);
            for (m, n, busy) in sorted {
                match merged.last_mut() {
                    Some(last) if last.0 == m => {
                        last.1 += n;
                        last.2 += busy;
                    }
                    _ => merged.push((m, n, busy)),
                }
            }
            let blocks = blocks_from_minutes(merged);
            (!blocks.is_empty()).then(|| AppActivity {
                memory_mb: app_memory
                    .get(&key)
                    .copied()
                    .filter(|mb| *mb > 0.0)
                    .unwrap_or_else(|| memory_mb(&mut rng)),
                blocks,
            })
        })
        .collect();
    if apps.is_empty() {
        return Err(AzureError::Empty);
    }
    Ok(Workload {
        apps,
        function_daily_invocations: function_daily,
        span_s: (invocations.len() * MINUTES * 60) as f64,
    })
}

fn number(field: &str, name: &str) -> Result<f64, String> {
    field
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("`{name}` is not a non-negative number: `{field}`"))
}

/// Calls `row` with the fields of every data line of `path` after checking its header.
fn each_row(
    path: &Path,
    header: &'static str,
    rows: &mut usize,
    max_rows: usize,
    mut row: impl FnMut(&[&str]) -> Result<(), String>,
) -> Result<(), AzureError> {
    let text = std::fs::read_to_string(path).map_err(|source| AzureError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut lines = text.lines().enumerate();
    let first = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
    if !first.starts_with(header) {
        return Err(AzureError::Header {
            path: path.to_owned(),
            expected: header,
        });
    }
    let mut fields = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        *rows += 1;
        if *rows > max_rows {
            return Err(AzureError::TooLong(max_rows));
        }
        fields.clear();
        fields.extend(line.split(',').map(str::trim));
        row(&fields).map_err(|fault| AzureError::Line {
            path: path.to_owned(),
            line: i + 1,
            fault,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test row: app, function, (minute, invocations) pairs.
    type Row<'a> = (&'a str, &'a str, &'a [(usize, u64)]);

    fn day(rows: &[Row<'_>]) -> String {
        let mut s = String::from("HashOwner,HashApp,HashFunction,Trigger");
        for m in 1..=MINUTES {
            s.push_str(&format!(",{m}"));
        }
        s.push('\n');
        for (app, func, counts) in rows {
            let mut minutes = vec![0u64; MINUTES];
            for &(m, n) in counts.iter() {
                minutes[m] = n;
            }
            s.push_str(&format!("o,{app},{func},http"));
            for n in minutes {
                s.push_str(&format!(",{n}"));
            }
            s.push('\n');
        }
        s
    }

    #[test]
    fn day_files_become_per_app_blocks_with_their_durations_and_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d1 = dir.path().join("d01.csv");
        let d2 = dir.path().join("d02.csv");
        std::fs::write(
            &d1,
            day(&[("a", "f1", &[(0, 2), (10, 1)]), ("a", "f2", &[(0, 1)])]),
        )
        .expect("write");
        std::fs::write(&d2, day(&[("b", "g", &[(5, 3)])])).expect("write");
        let durations = dir.path().join("durations.csv");
        std::fs::write(
            &durations,
            "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum\no,a,f1,500,3,1,900\no,a,f2,2000,1,2000,2000\n",
        )
        .expect("write");
        let memory = dir.path().join("memory.csv");
        std::fs::write(
            &memory,
            "HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1\no,a,10,300,200\n",
        )
        .expect("write");
        let w = load(&[d1, d2], &[durations], &[memory], 100, 1).expect("loads");
        assert_eq!(w.apps.len(), 2);
        assert_eq!(w.span_s, 2.0 * 86_400.0);
        let a = &w.apps[0];
        assert_eq!(a.memory_mb, 300.0);
        // Minute 0: 2 x 0.5 s + 1 x 2 s busy; minute 10: 0.5 s.
        assert_eq!(a.blocks.len(), 2);
        assert_eq!((a.blocks[0].invocations, a.blocks[0].end), (3, 3.0));
        assert_eq!(a.blocks[1].start, 600.0);
        // Day two starts at minute 1440.
        assert_eq!(w.apps[1].blocks[0].start, (1440.0 + 5.0) * 60.0);
        assert_eq!(w.function_daily_invocations, vec![3.0, 1.0, 3.0]);
    }

    #[test]
    fn bad_files_are_typed_errors_naming_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad_header = dir.path().join("h.csv");
        std::fs::write(&bad_header, "app,func,end_timestamp,duration\n").expect("write");
        assert!(matches!(
            load(&[bad_header], &[], &[], 10, 1),
            Err(AzureError::Header { .. })
        ));
        let short = dir.path().join("s.csv");
        let mut text = day(&[]);
        text.push_str("o,a,f,http,1,2\n");
        std::fs::write(&short, &text).expect("write");
        assert!(matches!(
            load(&[short], &[], &[], 10, 1),
            Err(AzureError::Line { line: 2, .. })
        ));
        let nan = dir.path().join("n.csv");
        let text = day(&[("a", "f", &[(0, 1)])]).replace("http,1,", "http,x,");
        std::fs::write(&nan, &text).expect("write");
        assert!(matches!(
            load(std::slice::from_ref(&nan), &[], &[], 10, 1),
            Err(AzureError::Line { .. })
        ));
        let empty = dir.path().join("e.csv");
        std::fs::write(&empty, day(&[("a", "f", &[])])).expect("write");
        assert!(matches!(
            load(std::slice::from_ref(&empty), &[], &[], 10, 1),
            Err(AzureError::Empty)
        ));
        assert!(matches!(
            load(&[empty], &[], &[], 0, 1),
            Err(AzureError::TooLong(0))
        ));
        assert!(matches!(
            load(&[dir.path().join("missing.csv")], &[], &[], 10, 1),
            Err(AzureError::Io { .. })
        ));
    }
}
