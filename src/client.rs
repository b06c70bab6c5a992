//! The CLI's HTTP client: where the region and POP are, which token to send, and turning
//! error bodies into messages that say what to do.

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `strata dev` writes to `<state-dir>/dev.json` and the CLI reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevFile {
    /// The POP's base URL.
    pub pop_url: String,
    /// The region's base URL.
    pub region_url: String,
    /// The dev tenant's token.
    pub token: String,
    /// The operator token.
    pub admin_token: Option<String>,
    /// The POP's HTTPS base URL (`https://localhost:PORT`; HTTP/1.1 and HTTP/2).
    #[serde(default)]
    pub pop_https_url: Option<String>,
    /// The POP's HTTP/3 base URL (`https://localhost:UDPPORT`).
    #[serde(default)]
    pub pop_h3_url: Option<String>,
    /// The dev CA's certificate (PEM path) that the POP's HTTPS certificate chains to.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

impl DevFile {
    /// The path of dev.json under `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("dev.json")
    }

    /// Reads dev.json, if present.
    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Flags that override dev.json.
#[derive(Debug, Default)]
pub struct Overrides {
    pub region: Option<String>,
    pub pop: Option<String>,
    pub token: Option<String>,
    pub admin_token: Option<String>,
}

/// Everything a command needs to talk to a deployment.
#[derive(Debug)]
pub struct Context {
    pub http: reqwest::Client,
    region: Option<String>,
    pop: Option<String>,
    token: Option<String>,
    admin_token: Option<String>,
    pub state_dir: PathBuf,
    pub json: bool,
}

const NO_DEPLOYMENT: &str =
    "no deployment found: run `strata dev` in another terminal, or pass --region/--pop/--token";

impl Context {
    pub fn new(state_dir: &Path, o: Overrides, json: bool) -> anyhow::Result<Self> {
        let dev = DevFile::load(state_dir)?;
        let pick = |flag: Option<String>, f: fn(&DevFile) -> Option<String>| {
            flag.or_else(|| dev.as_ref().and_then(f))
        };
        Ok(Self {
            http: reqwest::Client::new(),
            region: pick(o.region, |d| Some(d.region_url.clone())),
            pop: pick(o.pop, |d| Some(d.pop_url.clone())),
            token: pick(o.token, |d| Some(d.token.clone())),
            admin_token: pick(o.admin_token, |d| d.admin_token.clone()),
            state_dir: state_dir.to_owned(),
            json,
        })
    }

    pub fn region(&self) -> anyhow::Result<&str> {
        self.region
            .as_deref()
            .map(trim_slash)
            .ok_or_else(|| anyhow!(NO_DEPLOYMENT))
    }

    pub fn pop(&self) -> anyhow::Result<&str> {
        self.pop
            .as_deref()
            .map(trim_slash)
            .ok_or_else(|| anyhow!(NO_DEPLOYMENT))
    }

    pub fn token(&self) -> anyhow::Result<&str> {
        self.token.as_deref().ok_or_else(|| anyhow!(NO_DEPLOYMENT))
    }

    pub fn admin_token(&self) -> anyhow::Result<&str> {
        self.admin_token
            .as_deref()
            .ok_or_else(|| anyhow!("no operator token: pass --admin-token or run `strata dev`"))
    }

    /// The operator token when `operator` (a command's `--all` / `--operator`), else the
    /// tenant's.
    pub fn token_as(&self, operator: bool) -> anyhow::Result<&str> {
        if operator {
            self.admin_token()
        } else {
            self.token()
        }
    }
}

fn trim_slash(s: &str) -> &str {
    s.trim_end_matches('/')
}

/// Sends `req`, and for a non-2xx answer turns the error body into an error message.
pub async fn send_json<T: for<'de> Deserialize<'de>>(
    req: reqwest::RequestBuilder,
) -> anyhow::Result<T> {
    let bytes = send(req).await?;
    serde_json::from_slice(&bytes).context("parsing response")
}

/// Sends `req` and returns the body of a 2xx answer (empty for 204).
///
/// # Errors
/// The error body as a message with a hint (non-2xx), or a network error.
pub async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<bytes::Bytes> {
    let resp = req.send().await.map_err(unreachable)?;
    let status = resp.status();
    let bytes = resp.bytes().await.context("reading response")?;
    if !status.is_success() {
        bail!("{}", error_message(status, &bytes));
    }
    Ok(bytes)
}

/// A network error as something a person can act on.
pub fn unreachable(e: reqwest::Error) -> anyhow::Error {
    let url = e.url().map(|u| u.to_string()).unwrap_or_default();
    anyhow!("cannot reach {url}: {e}; is the node running (`strata dev`)?")
}

/// `status: kind: message` from a Strata error body (or the raw body), and on a second
/// line what to do about it.
pub fn error_message(status: reqwest::StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        kind: String,
        message: String,
        #[serde(default)]
        limit: Option<serde_json::Value>,
        #[serde(default)]
        retry_after_ms: Option<u64>,
    }
    let Ok(b) = serde_json::from_slice::<Body>(body) else {
        let what = format!("{status}: {}", String::from_utf8_lossy(body));
        return format!("{what}\n  hint: {}", hint(status));
    };
    let mut out = format!("{status}: {}: {}", b.error.kind, b.error.message);
    // A throttled reply names its limit; a quota's `limit` is just its value.
    if let Some(limit) = b.error.limit.as_ref().filter(|l| l.is_object()) {
        let field = |k: &str| limit[k].as_str().unwrap_or("?").to_owned();
        out.push_str(&format!(
            "\n  limit: {} {} of {}",
            field("scope"),
            field("kind"),
            limit["value"]
        ));
    }
    match b.error.retry_after_ms {
        Some(ms) => out.push_str(&format!("\n  hint: the platform is busy; retry in {ms} ms")),
        None => out.push_str(&format!("\n  hint: {}", hint(status))),
    }
    out
}

/// What a person can do about an error with `status`.
pub fn hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "the request was refused as the message says; fix it and retry",
        401 => "pass a valid tenant token (--token, STRATA_TOKEN or dev.json)",
        403 => "this token may not do that; use the owning tenant's token or --admin-token",
        404 => "check the name (`strata ls`, `strata route ls`) and the qualifier",
        409 => "someone changed it first, or it already exists; re-read it and retry",
        413 => "send less: the payload or module is over the limit",
        422 => "the request body does not have the expected shape; see `strata --help`",
        429 | 503 => "the platform is busy; retry after the retry-after interval",
        502 => "the function answered with malformed output; check its logs (`strata logs`)",
        500..=599 => "the node failed; check its logs and retry",
        _ => "see the message above",
    }
}

/// A module as wasm bytes: binary passes through, WebAssembly text is converted.
///
/// # Errors
/// The WAT parse error when the bytes are neither.
pub fn module_bytes(bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    Ok(wat::parse_bytes(&bytes)?.into_owned())
}

/// The multipart body of a deploy: `config` (JSON) and `module` (wasm).
///
/// # Errors
/// When the config cannot be serialised.
pub fn deploy_form(
    config: &serde_json::Value,
    module: Vec<u8>,
) -> anyhow::Result<reqwest::multipart::Form> {
    Ok(reqwest::multipart::Form::new()
        .part(
            "config",
            reqwest::multipart::Part::bytes(serde_json::to_vec(config)?)
                .mime_str("application/json")?,
        )
        .part(
            "module",
            reqwest::multipart::Part::bytes(module).mime_str("application/wasm")?,
        ))
}
