//! The Hub's HTTP side: a repository's commit and file list, and resumable, checked downloads
//! into the cache layout of [`super`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, ETAG, HeaderMap, LOCATION, RANGE};
use sha2::{Digest, Sha256};

use super::{Hub, Repo, RepoKind};

/// Whether downloads draw a progress bar (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Hidden,
    Stderr,
}

impl Progress {
    /// A bar on stderr when it is a terminal.
    pub fn stderr() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() { Self::Stderr } else { Self::Hidden }
    }
}

/// A repository's resolved commit and its files.
pub struct Info {
    pub commit: String,
    pub files: Vec<String>,
}

/// Percent-encodes a path segment (revisions such as `refs/pr/1` contain `/`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn client(follow: bool) -> anyhow::Result<reqwest::Client> {
    let policy =
        if follow { reqwest::redirect::Policy::limited(10) } else { reqwest::redirect::Policy::none() };
    Ok(reqwest::Client::builder().connect_timeout(Duration::from_secs(30)).redirect(policy).build()?)
}

fn auth(hub: &Hub, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &hub.token {
        Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
        None => req,
    }
}

/// What an error status means for a user (the token never appears).
fn status_error(hub: &Hub, repo: &Repo, status: StatusCode, what: &str) -> anyhow::Error {
    let name = format!("{}@{}", repo.id, repo.revision);
    match status {
        StatusCode::UNAUTHORIZED if hub.token.is_none() => anyhow::anyhow!(
            "{name}: {what}: HTTP 401 — the repository is gated or private; set HF_TOKEN to a token with access (and accept its terms at {}/{})",
            hub.endpoint,
            repo.id
        ),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => anyhow::anyhow!(
            "{name}: {what}: HTTP {status} — the token in HF_TOKEN has no access; accept the repository's terms at {}/{} or use another token",
            hub.endpoint,
            repo.id
        ),
        StatusCode::NOT_FOUND => {
            anyhow::anyhow!(
                "{name}: {what}: HTTP 404 — no such repository, revision or file on {}",
                hub.endpoint
            )
        }
        s => anyhow::anyhow!("{name}: {what}: HTTP {s} from {}", hub.endpoint),
    }
}

/// `GET /api/{models,datasets}/{id}/revision/{rev}`: the commit and every file.
pub fn repo_info(hub: &Hub, repo: &Repo) -> anyhow::Result<Info> {
    let kind = match repo.kind {
        RepoKind::Model => "models",
        RepoKind::Dataset => "datasets",
    };
    let url = format!("{}/api/{kind}/{}/revision/{}", hub.endpoint, repo.id, encode(&repo.revision));
    let rt = runtime()?;
    // reqwest's client needs the runtime it will run on.
    let _in = rt.enter();
    let http = client(true)?;
    let v: serde_json::Value = rt.block_on(async {
        let resp = auth(hub, http.get(&url).timeout(Duration::from_secs(60)))
            .send()
            .await
            .with_context(|| format!("{}: reaching {}", repo.id, hub.endpoint))?;
        if !resp.status().is_success() {
            return Err(status_error(hub, repo, resp.status(), "repository info"));
        }
        resp.json().await.with_context(|| format!("{}: repository info is not JSON", repo.id))
    })?;
    let commit = v["sha"].as_str().context("repository info: no `sha`")?.to_string();
    let files = v["siblings"]
        .as_array()
        .context("repository info: no `siblings`")?
        .iter()
        .filter_map(|s| s["rfilename"].as_str().map(str::to_string))
        .collect();
    Ok(Info { commit, files })
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// An ETag as the cache names blobs: without quotes or the weak prefix.
fn clean_etag(s: &str) -> String {
    s.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `snapshots/<commit>/<path>` pointing at `blobs/<etag>` (relative, as huggingface_hub makes
/// it); a copy where symbolic links are not possible.
fn link(blob: &Path, snap: &Path, depth: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(snap.parent().context("snapshot path")?)?;
    let _ = std::fs::remove_file(snap);
    let target = PathBuf::from("../".repeat(depth + 2)).join("blobs").join(blob.file_name().context("blob")?);
    #[cfg(unix)]
    if std::os::unix::fs::symlink(&target, snap).is_ok() {
        return Ok(());
    }
    let _ = target;
    std::fs::copy(blob, snap).with_context(|| format!("copying into {}", snap.display()))?;
    Ok(())
}

/// One file at `commit` into the cache (resuming a partial download), checked, linked into the
/// snapshot; returns the snapshot path.
pub fn fetch_file(
    hub: &Hub,
    repo: &Repo,
    commit: &str,
    path: &str,
    progress: &Progress,
) -> anyhow::Result<PathBuf> {
    let dir = hub.repo_dir(repo);
    let snap = dir.join("snapshots").join(commit).join(path);
    if snap.exists() {
        return Ok(snap);
    }
    let prefix = if repo.kind == RepoKind::Dataset { "datasets/" } else { "" };
    let url = format!("{}/{prefix}{}/resolve/{commit}/{path}", hub.endpoint, repo.id);
    let what = format!("downloading {path}");
    let rt = runtime()?;
    let _in = rt.enter();
    // HEAD without following redirects: LFS files redirect to storage, and their sha256 and size
    // are on the Hub's own answer.
    let head = rt
        .block_on(auth(hub, client(false)?.head(&url).timeout(Duration::from_secs(60))).send())
        .with_context(|| format!("{}: {what}", repo.id))?;
    let status = head.status();
    if !(status.is_success() || status.is_redirection()) {
        return Err(status_error(hub, repo, status, &what));
    }
    let h = head.headers();
    let etag = header(h, "x-linked-etag").or_else(|| header(h, ETAG.as_str())).map(clean_etag);
    let etag = etag
        .filter(|e| !e.is_empty() && !e.contains('/'))
        .with_context(|| format!("{}: {path}: no ETag", repo.id))?;
    let size: Option<u64> = header(h, "x-linked-size")
        .or_else(|| if status.is_success() { header(h, CONTENT_LENGTH.as_str()) } else { None })
        .and_then(|s| s.parse().ok());
    let source = if status.is_redirection() {
        let loc = header(h, LOCATION.as_str()).context("redirect without Location")?;
        reqwest::Url::parse(&url)?.join(loc)?.to_string()
    } else {
        url.clone()
    };
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let blob = blobs.join(&etag);
    if !blob.exists() {
        let part = blobs.join(format!("{etag}.incomplete"));
        download(hub, repo, &source, &part, size, path, progress, &rt)?;
        if is_sha256(&etag) {
            let got = sha256_file(&part)?;
            if got != etag {
                let _ = std::fs::remove_file(&part);
                bail!(
                    "{}: {path}: sha256 {got} does not match the Hub's {etag}; the partial file was removed, run again",
                    repo.id
                );
            }
        }
        std::fs::rename(&part, &blob).with_context(|| format!("moving {} into place", part.display()))?;
    }
    link(&blob, &snap, path.matches('/').count())?;
    Ok(snap)
}

/// Appends to `part` from its current length (HTTP range), until `size` bytes.
#[allow(clippy::too_many_arguments)]
fn download(
    hub: &Hub,
    repo: &Repo,
    url: &str,
    part: &Path,
    size: Option<u64>,
    path: &str,
    progress: &Progress,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if size.is_some_and(|s| have == s) {
        return Ok(());
    }
    let mut req = client(true)?.get(url);
    // Storage behind a redirect gets no token (reqwest drops it across hosts as well).
    if url.starts_with(&hub.endpoint) {
        req = auth(hub, req);
    }
    if have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    rt.block_on(async {
        let mut resp = req.send().await.with_context(|| format!("{}: downloading {path}", repo.id))?;
        let status = resp.status();
        let (mut file, start) = match status {
            StatusCode::PARTIAL_CONTENT => (std::fs::OpenOptions::new().append(true).open(part)?, have),
            s if s.is_success() => (std::fs::File::create(part)?, 0),
            s => return Err(status_error(hub, repo, s, &format!("downloading {path}"))),
        };
        let bar = match progress {
            Progress::Stderr => {
                let b = indicatif::ProgressBar::new(size.unwrap_or(0));
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b.set_message(format!("{}/{path}", repo.id));
                b.set_position(start);
                Some(b)
            }
            Progress::Hidden => None,
        };
        let mut got = start;
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(120), resp.chunk())
                .await
                .with_context(|| format!("{}: downloading {path}: no data for 120 s", repo.id))?
                .with_context(|| {
                    format!(
                        "{}: downloading {path}: interrupted after {got} bytes (run again to resume)",
                        repo.id
                    )
                })?;
            let Some(chunk) = chunk else { break };
            file.write_all(&chunk)?;
            got += chunk.len() as u64;
            if let Some(b) = &bar {
                b.set_position(got);
            }
        }
        file.sync_all()?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if let Some(s) = size
            && got != s
        {
            bail!("{}: downloading {path}: got {got} of {s} bytes (run again to resume)", repo.id);
        }
        Ok(())
    })
}
