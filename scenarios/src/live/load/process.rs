//! Finding `strata-load` and running it as a child process: the [`LoadSpec`] goes to its
//! stdin as JSON, the [`LoadOutcome`] comes back on its stdout. The child is killed when
//! its run outlives the spec's time bound plus [`SLACK`], or when the caller stops waiting.

use super::{LoadOutcome, LoadSpec};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// The load generator's binary name (without the platform's executable suffix).
pub const BINARY: &str = "strata-load";

/// How long past its own time bound a run may take: the process's start, connecting,
/// writing its output.
pub const SLACK: Duration = Duration::from_secs(30);

/// Why a load run through `strata-load` failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The running executable's path is unknown, so nothing is beside it.
    #[error("locating the running executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// The binary is not where the workspace's build puts it.
    #[error(
        "the load generator `{BINARY}` is not at {}: build it beside this binary with \
         `cargo build --release -p scenarios --bin {BINARY}` (without `--release` for a \
         debug build)",
        list(looked)
    )]
    Missing {
        /// Where it was looked for.
        looked: Vec<PathBuf>,
    },
    /// The process could not be started or fed its spec.
    #[error("starting {}: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The process outlived its run's bound and was killed.
    #[error("{} did not finish within {limit:?} and was killed", binary.display())]
    Timeout {
        /// The binary.
        binary: PathBuf,
        /// The bound.
        limit: Duration,
    },
    /// The process exited unsuccessfully.
    #[error("{} failed ({status}): {stderr}", binary.display())]
    Failed {
        /// The binary.
        binary: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// The end of its stderr.
        stderr: String,
    },
    /// Its stdout is not a load outcome (or the spec could not be written as JSON).
    #[error("{}: not a load outcome: {source}", binary.display())]
    Protocol {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(" or ")
}

/// Most stderr kept in [`LoadgenError::Failed`], bytes (its end).
const STDERR_KEPT: usize = 2000;

/// The `strata-load` binary to run loads with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loadgen {
    binary: PathBuf,
}

impl Loadgen {
    /// `strata-load` beside the running executable (see [`Loadgen::beside`]): how
    /// `scenarios` and `strata scenario run` find it, both built into the same target
    /// directory as it.
    ///
    /// # Errors
    /// [`LoadgenError::Missing`] naming where it looked and how to build it.
    pub fn locate() -> Result<Self, LoadgenError> {
        let exe = std::env::current_exe().map_err(LoadgenError::CurrentExe)?;
        Self::beside(&exe)
    }

    /// [`Loadgen::locate`], after building the package's binaries when this process was
    /// started by `cargo run` (which builds only the binary it runs).
    ///
    /// # Errors
    /// When that build fails, or as [`Loadgen::locate`].
    pub fn build_and_locate() -> anyhow::Result<Self> {
        crate::bench::server::build_bins()?;
        Ok(Self::locate()?)
    }

    /// `strata-load` in `exe`'s directory, or, when that directory is a `deps` one (where
    /// cargo puts test binaries), in its parent (where it puts the package's binaries).
    ///
    /// # Errors
    /// [`LoadgenError::Missing`] naming where it looked and how to build it.
    pub fn beside(exe: &Path) -> Result<Self, LoadgenError> {
        let name = format!("{BINARY}{}", std::env::consts::EXE_SUFFIX);
        let dir = exe.parent();
        let up = dir
            .filter(|d| d.file_name() == Some("deps".as_ref()))
            .and_then(Path::parent);
        let looked: Vec<PathBuf> = dir.into_iter().chain(up).map(|d| d.join(&name)).collect();
        match looked.iter().find(|p| p.is_file()) {
            Some(binary) => Ok(Self::at(binary.clone())),
            None => Err(LoadgenError::Missing { looked }),
        }
    }

    /// The binary at `binary` (tests pass cargo's `CARGO_BIN_EXE_strata-load`).
    pub fn at(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
        }
    }

    /// The binary's path.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Runs `spec` in a `strata-load` process and returns what it measured.
    ///
    /// # Errors
    /// When the process cannot start, fails, outlives `spec.within` + [`SLACK`], or
    /// answers something that is not a [`LoadOutcome`].
    pub async fn run(&self, spec: &LoadSpec) -> Result<LoadOutcome, LoadgenError> {
        let binary = || self.binary.clone();
        let spawn = |source| LoadgenError::Spawn {
            binary: binary(),
            source,
        };
        let input = serde_json::to_vec(spec).map_err(|source| LoadgenError::Protocol {
            binary: binary(),
            source,
        })?;
        let mut child = tokio::process::Command::new(&self.binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A process that exits without reading its input is judged by its exit
            // status and output below, not by the broken pipe.
            match stdin.write_all(&input).await {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(spawn(e)),
                _ => {}
            }
            // Dropped here: end of input, the generator starts.
        }
        let limit = spec.within + SLACK;
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| LoadgenError::Timeout {
                binary: binary(),
                limit,
            })?
            .map_err(spawn)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let cut = stderr.len().saturating_sub(STDERR_KEPT);
            let cut = (cut..stderr.len())
                .find(|&i| stderr.is_char_boundary(i))
                .unwrap_or(stderr.len());
            return Err(LoadgenError::Failed {
                binary: binary(),
                status: output.status,
                stderr: stderr[cut..].trim().to_owned(),
            });
        }
        serde_json::from_slice(&output.stdout).map_err(|source| LoadgenError::Protocol {
            binary: binary(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_is_found_beside_the_running_one_or_above_a_deps_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!("{BINARY}{}", std::env::consts::EXE_SUFFIX);
        let deps = dir.path().join("deps");
        std::fs::create_dir(&deps).expect("mkdir");
        let test_exe = deps.join("scenarios-0123");
        match Loadgen::beside(&test_exe) {
            Err(e @ LoadgenError::Missing { .. }) => {
                let shown = e.to_string();
                assert!(shown.contains(&deps.join(&name).display().to_string()));
                assert!(shown.contains(&dir.path().join(&name).display().to_string()));
                assert!(shown.contains("cargo build --release -p scenarios --bin strata-load"));
            }
            other => panic!("expected Missing, got {other:?}"),
        }
        std::fs::write(dir.path().join(&name), b"").expect("write");
        let found = Loadgen::beside(&test_exe).expect("found one up from deps");
        assert_eq!(found.binary(), dir.path().join(&name));
        let found = Loadgen::beside(&dir.path().join("strata")).expect("found beside");
        assert_eq!(found.binary(), dir.path().join(&name));
    }

    #[tokio::test]
    async fn a_binary_that_is_not_a_load_generator_is_an_error() {
        let spec = LoadSpec {
            url: "http://127.0.0.1:9/".to_owned(),
            token: String::new(),
            expect: String::new(),
            warmup: 0,
            requests: 1,
            rounds: Vec::new(),
            concurrency: 1,
            within: Duration::from_secs(1),
        };
        let missing = Loadgen::at("/nonexistent/strata-load").run(&spec).await;
        assert!(
            matches!(missing, Err(LoadgenError::Spawn { .. })),
            "{missing:?}"
        );
        // `true` exits 0 with nothing on stdout; `false` exits 1.
        let silent = Loadgen::at("true").run(&spec).await;
        assert!(
            matches!(silent, Err(LoadgenError::Protocol { .. })),
            "{silent:?}"
        );
        let failing = Loadgen::at("false").run(&spec).await;
        assert!(
            matches!(failing, Err(LoadgenError::Failed { .. })),
            "{failing:?}"
        );
    }
}
