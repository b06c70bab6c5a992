//! A throwaway `nats-server -js` for tests: a free loopback port, a temporary store
//! directory, killed on drop. Public so the workspace's integration tests share it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// A running `nats-server` (see the module docs).
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server. Tests that call this carry `#[ignore = "needs nats-server"]`, so
    /// they run only when asked to (`.ci/test` does when the binary is installed, and
    /// always in CI); a missing binary is then an error, never a silent skip.
    ///
    /// # Errors
    /// The binary is missing, or the server did not start or accept connections.
    pub fn start() -> Result<Self, String> {
        let binary = find_binary().ok_or(
            "nats-server is not installed (apt-get install nats-server; .ci/test installs it)",
        )?;
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("picking a port: {e}"))?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut server = Self {
            child,
            addr,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("nats-server exited at start: {status}"));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            // Polling a process we just started: nothing to wait on but the port.
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "nats-server did not listen on {} in time",
            self.addr
        ))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| is_file(p))
}

fn is_file(p: &Path) -> bool {
    p.metadata().is_ok_and(|m| m.is_file())
}
