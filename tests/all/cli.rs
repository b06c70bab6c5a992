//! The `strata` binary as a newcomer uses it: `strata dev` in one process, the other
//! commands finding it through dev.json.

use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn strata(state_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.arg("--state-dir").arg(state_dir);
    cmd.env_remove("STRATA_REGION")
        .env_remove("STRATA_POP")
        .env_remove("STRATA_TOKEN");
    cmd
}

/// Starts `strata dev` on ephemeral ports and waits until it says it is up.
async fn start_dev(state_dir: &Path) -> Child {
    let mut child = strata(state_dir)
        .args([
            "dev",
            "--region-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
        ])
        .args(["--pop-listen", "127.0.0.1:0"])
        .args(["--pop-https-listen", "127.0.0.1:0"])
        .args(["--pop-h3-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("strata dev starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    loop {
        match lines.next_line().await.expect("reads stdout") {
            Some(line) if line.contains("Ctrl-C stops it") => break,
            Some(line) => seen.push(line),
            None => panic!("strata dev exited before it was up: {seen:?}"),
        }
    }
    child
}

async fn run(state_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = strata(state_dir).args(args).output().await.expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_dev_serves_and_the_cli_finds_it_through_dev_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = start_dev(dir.path()).await;
    let dev_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dev.json")).expect("dev.json"))
            .expect("json");
    assert!(
        dev_json["pop_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:"))
    );
    assert!(dev_json["token"].as_str().is_some_and(|t| !t.is_empty()));
    // HTTPS at the POP for `localhost`, trusted through the dev CA dev.json names.
    let https = dev_json["pop_https_url"].as_str().expect("pop_https_url");
    assert!(https.starts_with("https://localhost:"), "{https}");
    let ca = dev_json["ca_cert"].as_str().expect("ca_cert");
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--cacert", ca, "-w", " %{http_version}"])
        .arg(format!("{https}/healthz"))
        .output()
        .await
        .expect("curl runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok 2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // HTTP/3 on the UDP port dev.json names, with the same certificate.
    let h3 = dev_json["pop_h3_url"].as_str().expect("pop_h3_url");
    let port: u16 = h3
        .strip_prefix("https://localhost:")
        .and_then(|p| p.parse().ok())
        .expect("https://localhost:PORT");
    let ep = scenarios::bench::h3::endpoint(
        scenarios::bench::h3::client_config(Path::new(ca)).expect("client config"),
    )
    .expect("endpoint");
    let client = scenarios::bench::h3::H3Client::connect(
        &ep,
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "localhost",
    )
    .await
    .expect("HTTP/3 connection");
    let req = http::Request::get(format!("{h3}/healthz"))
        .body(())
        .expect("request");
    let (resp, body) = client.send(req, bytes::Bytes::new()).await.expect("served");
    assert_eq!(
        (resp.status().as_u16(), body.as_ref()),
        (200, b"ok".as_ref())
    );

    let (code, out, err) = run(dir.path(), &["invoke", "hello", "--data", "cli", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["status"], 200);
    assert_eq!(v["body"], "Hello, cli!\n");
    assert_eq!(v["executed_at"], "region/region-1");
    assert_eq!(v["version"], "$LATEST");
    assert_eq!(v["function_error"], serde_json::Value::Null);
    assert_eq!(v["request_id"].as_str().map(str::len), Some(32));

    let echo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/echo.wat");
    let echo = echo.to_str().expect("utf-8 path");
    let (code, _, err) = run(dir.path(), &["deploy", "mirror", echo, "--memory-mb", "64"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(dir.path(), &["ls", "--json"]).await;
    assert_eq!(code, 0);
    let names: Vec<String> =
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["functions"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|f| f["name"].as_str().map(str::to_owned))
            .collect();
    assert_eq!(names, ["echo", "hello", "mirror"]);
    let (code, out, _) = run(dir.path(), &["invoke", "mirror", "--data", "round trip"]).await;
    assert_eq!((code, out.as_str()), (0, "round trip"));
    let (code, _, _) = run(dir.path(), &["rm", "mirror"]).await;
    assert_eq!(code, 0);
    let (code, _, err) = run(dir.path(), &["invoke", "mirror"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");

    // A component is deployed with the http ABI without being told.
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/http/hello.wat");
    let web = web.to_str().expect("utf-8 path");
    let (code, _, err) = run(dir.path(), &["deploy", "web", web]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(dir.path(), &["invoke", "web", "--data", "x"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "POST /v1/functions/web/invoke\nx"),
        "{err}"
    );
    // Instance reuse is opt-in, shown by `info`, and only for components.
    let (code, out, _) = run(dir.path(), &["info", "web"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("instances:       fresh per request"), "{out}");
    let (code, _, err) = run(dir.path(), &["deploy", "warm", web, "--reuse-instances"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(dir.path(), &["info", "warm"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("instances:       reused"), "{out}");
    let (code, _, err) = run(dir.path(), &["deploy", "plain", echo, "--reuse-instances"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("reuse_instances is only for abi"), "{err}");
    dev.kill().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_deployment_the_cli_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = run(dir.path(), &["ls"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("strata dev"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_init_writes_a_ca_and_node_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let (code, _, err) = run(
        dir.path(),
        &["certs", "init", certs.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    for f in [
        "ca.pem",
        "region.pem",
        "region-key.pem",
        "pop.pem",
        "pop-key.pem",
    ] {
        assert!(certs.join(f).exists(), "{f} missing");
    }
}

/// Writes stdin to stderr (its log) and nothing to stdout.
const NOISY: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_logs_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = start_dev(dir.path()).await;
    let dev_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dev.json")).expect("dev.json"))
            .expect("json");
    let pop_url = dev_json["pop_url"].as_str().expect("pop_url").to_owned();

    let (code, out, err) = run(
        dir.path(),
        &["route", "add", "shop.example", "/", "hello", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let route: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    let id = route["id"].as_str().expect("id").to_owned();
    let (code, out, _) = run(dir.path(), &["route", "ls"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("ID"), "{out}");
    assert!(out.contains(&id) && out.contains("shop.example"), "{out}");
    let (code, _, err) = run(
        dir.path(),
        &["route", "add", "shop.example", "api", "hello"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("bad_request") && err.contains("hint:"),
        "{err}"
    );

    // A plain request through the POP, once its route table has caught up.
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let resp = http
            .get(format!("{pop_url}/index.html"))
            .header("host", "shop.example")
            .send()
            .await
            .expect("sent");
        if resp.status() == 200 {
            assert_eq!(resp.text().await.expect("body"), "Hello, world!\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "route never served");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (code, _, err) = run(dir.path(), &["route", "rm", &id]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(dir.path(), &["route", "rm", &id]).await;
    assert_eq!(code, 1);
    assert!(err.contains("404") && err.contains("hint:"), "{err}");

    let noisy = dir.path().join("noisy.wat");
    std::fs::write(&noisy, NOISY).expect("writes");
    let noisy = noisy.to_str().expect("utf-8 path");
    let (code, _, err) = run(dir.path(), &["deploy", "noisy", noisy]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(dir.path(), &["invoke", "noisy", "--data", "a log line"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(dir.path(), &["logs", "noisy", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let page: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(page["lines"][0]["line"], "a log line");
    let (code, out, _) = run(dir.path(), &["logs", "noisy"]).await;
    assert_eq!(code, 0);
    assert!(out.trim_end().ends_with(" a log line"), "{out}");
    let (code, _, err) = run(dir.path(), &["logs", "nope"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not_found"), "{err}");

    // --follow prints what is there, then new lines as they arrive (one JSON object each).
    let mut follow = strata(dir.path())
        .args(["logs", "noisy", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("follows");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout piped")).lines();
    let next_line = async |lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| {
        let line = tokio::time::timeout(std::time::Duration::from_secs(15), lines.next_line())
            .await
            .expect("a line within the deadline")
            .expect("reads")
            .expect("still following");
        serde_json::from_str::<serde_json::Value>(&line).expect("one JSON object per line")
    };
    assert_eq!(next_line(&mut lines).await["line"], "a log line");
    let (code, _, _) = run(dir.path(), &["invoke", "noisy", "--data", "later"]).await;
    assert_eq!(code, 0);
    assert_eq!(next_line(&mut lines).await["line"], "later");
    follow.kill().await.expect("stops");
    dev.kill().await.expect("stops");
}
