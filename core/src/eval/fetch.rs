//! Downloads LongBench-Chat's public files (questions, few-shot answers, judge template) into a
//! cache folder, verified by their git blob SHA-1 at the pinned upstream revision, so what is
//! scored is what the paper scored. Files already cached and verified are not downloaded again.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha1::{Digest, Sha1};

/// Upstream location (THUDM/LongAlign, Apache-2.0). The checksums are those of commit 450ecc8;
/// if upstream ever changes a file, the download fails loudly instead of scoring something else.
pub const BASE_URL: &str = "https://raw.githubusercontent.com/THUDM/LongAlign/main/LongBench_Chat";

/// (file, git blob SHA-1 at that revision).
pub const FILES: [(&str, &str); 3] = [
    ("test_cases.json", "8afc5426134b8692b16fcf61c3f097db0025d6f4"),
    ("few_shots.json", "a998a13df60d5113a3d0983f04abfe7ef9a0c90e"),
    ("prompt_fs.txt", "a7268a5fc4dfd3bf42d2bf0babe2ad303939a734"),
];

/// `git hash-object`: SHA-1 of `blob <len>\0<bytes>`.
pub fn git_blob_sha1(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The default cache folder: `$LONGALIGN_CACHE` or `~/.cache/longalign`, then `longbench-chat`.
pub fn default_dir() -> PathBuf {
    let root = std::env::var_os("LONGALIGN_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache/longalign")
    });
    root.join("longbench-chat")
}

/// What happened to each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Cached(PathBuf),
    Downloaded(PathBuf),
}

/// Makes sure every file is in `dir` with the expected checksum (`expected` overrides the pinned
/// `NAME=SHA1` (a `--checksum` override): the file name and the 40-digit hex git blob SHA-1.
pub fn parse_checksum(s: &str) -> Result<(String, String), String> {
    let (n, h) = s.split_once('=').ok_or("expected NAME=SHA1")?;
    if h.len() != 40 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{h:?} is not a 40-digit hex SHA-1"));
    }
    Ok((n.to_string(), h.to_ascii_lowercase()))
}

/// ones, e.g. for a mirror at another revision). `offline` refuses to download.
pub fn fetch(
    dir: &Path,
    base_url: &str,
    expected: &[(String, String)],
    offline: bool,
) -> anyhow::Result<Vec<Fetched>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (name, pinned) in FILES {
        let want = expected.iter().find(|(n, _)| n == name).map_or(pinned, |(_, s)| s.as_str());
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|bytes| git_blob_sha1(&bytes) == want) {
            out.push(Fetched::Cached(path));
            continue;
        }
        missing.push((name, want, path));
    }
    if missing.is_empty() {
        return Ok(out);
    }
    if offline {
        let names: Vec<&str> = missing.iter().map(|m| m.0).collect();
        bail!(
            "--offline: {} not cached (or changed) in {}; run `core-cli data fetch longbench-chat` with network access",
            names.join(", "),
            dir.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)).build()?;
    for (name, want, path) in missing {
        let url = format!("{}/{name}", base_url.trim_end_matches('/'));
        let bytes = rt.block_on(async {
            let resp = http.get(&url).send().await.with_context(|| format!("downloading {url}"))?;
            let status = resp.status();
            if !status.is_success() {
                bail!("downloading {url}: HTTP {status}");
            }
            Ok(resp.bytes().await.with_context(|| format!("downloading {url}"))?.to_vec())
        })?;
        let got = git_blob_sha1(&bytes);
        if got != want {
            bail!("{url}: checksum mismatch (git blob SHA-1 {got}, expected {want}); not saved");
        }
        crate::util::write_atomic(&path, &bytes)?;
        out.push(Fetched::Downloaded(path));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn git_blob_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(super::git_blob_sha1(b"hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
    }
}
