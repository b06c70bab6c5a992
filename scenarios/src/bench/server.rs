//! Benchmark servers as child processes: the driver starts one at a time, reads the one
//! JSON line it prints when it is ready (its URLs and token), and stops it when done.
//!
//! A server lives until its stdin closes, so it also stops when the driver dies; the
//! driver kills it on drop besides, so no server outlives a run.

use anyhow::{Context as _, bail};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a server may take to print its ready line.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// A running benchmark server.
#[derive(Debug)]
pub struct Server {
    name: String,
    child: Child,
    /// What the server printed when it was ready.
    pub ready: serde_json::Value,
}

impl Server {
    /// Starts `binary` with `args` and waits for its ready line.
    ///
    /// # Errors
    /// When it cannot start, exits, or prints no ready line within two minutes.
    pub fn start(binary: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let name = binary
            .file_name()
            .map_or_else(|| "server".into(), |n| n.to_string_lossy().into_owned());
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(read.map(|_| line));
        });
        let mut server = Self {
            name,
            child,
            ready: serde_json::Value::Null,
        };
        let line = match rx.recv_timeout(READY_WITHIN) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            Ok(Ok(_)) => bail!("{} exited before it was ready", server.name),
            Ok(Err(e)) => bail!("reading {}'s ready line: {e}", server.name),
            Err(_) => bail!("{} was not ready within {READY_WITHIN:?}", server.name),
        };
        server.ready = serde_json::from_str(&line)
            .with_context(|| format!("{}'s ready line {line:?}", server.name))?;
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A string field of the ready line.
    ///
    /// # Errors
    /// When the field is missing.
    pub fn field(&self, name: &str) -> anyhow::Result<String> {
        self.ready[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{} did not report `{name}`", self.name))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// For a server binary: prints `ready` as one JSON line, then waits until stdin closes
/// (the driver stopped or died).
///
/// # Errors
/// When stdout cannot be written.
pub async fn announce_and_wait(ready: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ready}")?;
    out.flush()?;
    drop(out);
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let stdin = std::io::stdin();
        while stdin.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    })
    .await?;
    Ok(())
}

/// The path of the sibling binary `name` (next to the running one), built first with
/// `cargo build --release -p scenarios --bins` when this process was started by cargo.
///
/// # Errors
/// When the build fails or the binary is missing.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("the running binary's path")?;
    let dir = me.parent().context("the running binary's directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the benchmark's servers with \
             `cargo build --release -p scenarios --bins` (or run `cargo run --release -p \
             scenarios -- bench`, which builds them)",
            path.display()
        );
    }
    Ok(path)
}

/// Builds the package's binaries (the benchmark's servers, the `strata-load` load
/// generator) when this process was started by `cargo run` (which builds only the binary
/// it runs), so they match this source.
///
/// # Errors
/// When the build fails.
pub fn build_bins() -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let release = !cfg!(debug_assertions);
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "scenarios", "--bins", "--manifest-path"])
        .arg(manifest);
    // `cargo run` gives this process the package's own variables; build scripts that
    // watch them (ring's) would see a change and rebuild half the tree.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let runs = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ];
        if runs.iter().any(|p| name.starts_with(p)) || name == "CARGO_PRIMARY_PACKAGE" {
            cmd.env_remove(name.as_ref());
        }
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the scenarios binaries failed: {status}");
    }
    Ok(())
}
