//! The Hugging Face Hub: `--model org/name[@revision]`, `--tokenizer org/name`, `--data
//! hf://datasets/org/name[@revision]/path/file.jsonl`, downloaded into the cache that
//! transformers, candle and mistral.rs share, with the environment they read:
//!
//! | variable | meaning |
//! |---|---|
//! | `HF_ENDPOINT` | the Hub (default `https://huggingface.co`; a mirror or a test server) |
//! | `HF_TOKEN` (or `$HF_HOME/token`) | sent as `Authorization: Bearer` (gated and private repos); never printed |
//! | `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub` | the cache |
//! | `HF_HUB_OFFLINE=1` | no network: only what the cache holds |
//!
//! ```text
//!   CACHE/models--org--name/
//!     refs/main                       the commit `main` resolved to
//!     blobs/<etag>                    file contents (etag = sha256 for LFS files, checked)
//!     snapshots/<commit>/config.json  → ../../blobs/<etag>   (what we hand to the loader)
//! ```
//!
//! Downloads go to `blobs/<etag>.incomplete` and resume from its length with an HTTP range
//! request; a finished blob is renamed into place, so an interrupted run never leaves a file that
//! looks complete. The protocol is the Hub's: `GET /api/{models,datasets}/{id}/revision/{rev}`
//! (commit and file list), `GET /{id}/resolve/{rev}/{file}` (headers `X-Repo-Commit`,
//! `X-Linked-Etag` / `ETag`, `X-Linked-Size` / `Content-Length`).

mod http;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

pub use http::Progress;

/// Where and how to reach the Hub; [`Hub::from_env`] reads what transformers reads.
#[derive(Clone)]
pub struct Hub {
    pub endpoint: String,
    pub token: Option<String>,
    pub cache: PathBuf,
    pub offline: bool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache", &self.cache)
            .field("offline", &self.offline)
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Hub {
    pub fn from_env() -> Self {
        let home = env("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env("HOME").unwrap_or_else(|| ".".into())).join(".cache"))
                .join("huggingface")
        });
        let token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| std::fs::read_to_string(home.join("token")).ok().map(|t| t.trim().to_string()))
            .filter(|t| !t.is_empty());
        let offline =
            env("HF_HUB_OFFLINE").is_some_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"));
        Self {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .into(),
            token,
            cache: env("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| home.join("hub")),
            offline,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

/// A repository at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub kind: RepoKind,
    /// `org/name`.
    pub id: String,
    pub revision: String,
}

impl Repo {
    fn folder(&self) -> String {
        let kind = match self.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        };
        format!("{kind}--{}", self.id.replace('/', "--"))
    }

    /// `org/name` or `org/name@revision`.
    fn parse_id(s: &str, kind: RepoKind) -> Option<Self> {
        let (id, revision) = s.split_once('@').unwrap_or((s, "main"));
        let mut parts = id.split('/');
        let ok = |p: Option<&str>| {
            p.is_some_and(|p| {
                !p.is_empty()
                    && p != "."
                    && p != ".."
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
        };
        let valid = ok(parts.next()) && ok(parts.next()) && parts.next().is_none();
        let rev_ok = !revision.is_empty() && !revision.contains("..") && !revision.starts_with('/');
        (valid && rev_ok).then(|| Self { kind, id: id.to_string(), revision: revision.to_string() })
    }
}

/// What a `--model` / `--tokenizer` value names: a local path, or a Hub model `org/name[@rev]`.
/// An existing path always wins, so a local folder called `org/name` stays local.
pub fn model_ref(s: &str) -> Option<Repo> {
    if s.starts_with("hf://") {
        return s.strip_prefix("hf://").and_then(|r| Repo::parse_id(r, RepoKind::Model));
    }
    if Path::new(s).exists() || s.starts_with('.') || s.starts_with('/') || s.starts_with('~') {
        return None;
    }
    Repo::parse_id(s, RepoKind::Model)
}

/// A `--data` value `hf://datasets/org/name[@rev]/path/in/repo` (or `hf://org/name/path` for a
/// file of a model repo): the repository and the file's path in it.
pub fn file_ref(s: &str) -> Option<(Repo, String)> {
    let rest = s.strip_prefix("hf://")?;
    let (kind, rest) = match rest.strip_prefix("datasets/") {
        Some(r) => (RepoKind::Dataset, r),
        None => (RepoKind::Model, rest),
    };
    let mut it = rest.splitn(3, '/');
    let (org, name, path) = (it.next()?, it.next()?, it.next()?);
    let repo = Repo::parse_id(&format!("{org}/{name}"), kind)?;
    let clean = !path.is_empty() && path.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    clean.then(|| (repo, path.to_string()))
}

/// The files of a model repository a training or inference run needs.
fn wanted(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    !file.contains('/')
        && (name.ends_with(".safetensors")
            || matches!(
                name,
                "config.json"
                    | "generation_config.json"
                    | "model.safetensors.index.json"
                    | "tokenizer.json"
                    | "tokenizer_config.json"
                    | "special_tokens_map.json"
                    | "chat_template.jinja"
                    | "chat_template.json"
            ))
}

impl Hub {
    fn repo_dir(&self, repo: &Repo) -> PathBuf {
        self.cache.join(repo.folder())
    }

    /// The commit the cache has for `repo`'s revision (a commit hash names itself).
    fn cached_commit(&self, repo: &Repo) -> Option<String> {
        let dir = self.repo_dir(repo);
        let is_hash = repo.revision.len() == 40 && repo.revision.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hash && dir.join("snapshots").join(&repo.revision).is_dir() {
            return Some(repo.revision.clone());
        }
        std::fs::read_to_string(dir.join("refs").join(&repo.revision)).ok().map(|s| s.trim().to_string())
    }

    fn offline_error(&self, repo: &Repo, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "HF_HUB_OFFLINE is set and {}@{} ({what}) is not in the cache {}; run once with network access",
            repo.id,
            repo.revision,
            self.cache.display()
        )
    }

    /// A model repository's snapshot folder with its weights, config and tokenizer files,
    /// downloading what the cache lacks.
    pub fn model(&self, repo: &Repo, progress: &Progress) -> anyhow::Result<PathBuf> {
        if self.offline {
            let commit = self.cached_commit(repo).ok_or_else(|| self.offline_error(repo, "no snapshot"))?;
            let snap = self.repo_dir(repo).join("snapshots").join(commit);
            if !snap.join("config.json").exists() && !snap.join("tokenizer.json").exists() {
                return Err(self.offline_error(repo, "snapshot without config.json or tokenizer.json"));
            }
            return Ok(snap);
        }
        let info = http::repo_info(self, repo)?;
        let files: Vec<&String> = info.files.iter().filter(|f| wanted(f)).collect();
        if files.is_empty() {
            bail!(
                "{}@{}: no model or tokenizer files (config.json, *.safetensors, tokenizer.json)",
                repo.id,
                repo.revision
            );
        }
        for f in &files {
            http::fetch_file(self, repo, &info.commit, f, progress)?;
        }
        self.write_ref(repo, &info.commit)?;
        Ok(self.repo_dir(repo).join("snapshots").join(&info.commit))
    }

    /// One file of a repository (a dataset file), downloading it if the cache lacks it.
    pub fn file(&self, repo: &Repo, path: &str, progress: &Progress) -> anyhow::Result<PathBuf> {
        if self.offline {
            let commit = self.cached_commit(repo).ok_or_else(|| self.offline_error(repo, path))?;
            let p = self.repo_dir(repo).join("snapshots").join(commit).join(path);
            return if p.exists() { Ok(p) } else { Err(self.offline_error(repo, path)) };
        }
        let info = http::repo_info(self, repo)?;
        if !info.files.iter().any(|f| f == path) {
            bail!("{}@{} has no file {path:?}", repo.id, repo.revision);
        }
        let p = http::fetch_file(self, repo, &info.commit, path, progress)?;
        self.write_ref(repo, &info.commit)?;
        Ok(p)
    }

    fn write_ref(&self, repo: &Repo, commit: &str) -> anyhow::Result<()> {
        if repo.revision == commit {
            return Ok(());
        }
        let refs = self.repo_dir(repo).join("refs");
        let path = refs.join(&repo.revision);
        std::fs::create_dir_all(path.parent().unwrap_or(&refs))
            .with_context(|| format!("creating {}", refs.display()))?;
        crate::util::write_atomic(&path, commit.as_bytes())
    }
}

/// `--model` / `--tokenizer`: a Hub id becomes its snapshot folder (downloaded as needed); a
/// preset name or a local path comes back unchanged.
pub fn resolve_model(s: &str) -> anyhow::Result<String> {
    if crate::model::LlamaConfig::preset(s).is_some() || s == "builtin" {
        return Ok(s.to_string());
    }
    match model_ref(s) {
        Some(repo) => {
            let dir = Hub::from_env().model(&repo, &Progress::stderr())?;
            Ok(dir.display().to_string())
        }
        None => Ok(s.to_string()),
    }
}

/// [`resolve_model`] for a path argument.
pub fn resolve_path(p: &Path) -> anyhow::Result<PathBuf> {
    resolve_model(&p.to_string_lossy()).map(PathBuf::from)
}

/// `--data`: an `hf://` file becomes its cached path (downloaded as needed); others unchanged.
pub fn resolve_file(p: &Path) -> anyhow::Result<PathBuf> {
    match p.to_str().and_then(file_ref) {
        Some((repo, path)) => Hub::from_env().file(&repo, &path, &Progress::stderr()),
        None if p.to_str().is_some_and(|s| s.starts_with("hf://")) => {
            bail!("{}: expected hf://datasets/org/name[@revision]/path/in/repo", p.display())
        }
        None => Ok(p.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_the_hub_names_them() {
        let m = model_ref("Qwen/Qwen2.5-0.5B-Instruct").unwrap();
        assert_eq!(
            (m.id.as_str(), m.revision.as_str(), m.kind),
            ("Qwen/Qwen2.5-0.5B-Instruct", "main", RepoKind::Model)
        );
        assert_eq!(model_ref("org/name@v1.0").unwrap().revision, "v1.0");
        assert_eq!(m.folder(), "models--Qwen--Qwen2.5-0.5B-Instruct");
        for local in ["./org/name", "/abs/path", "tiny", "a/b/c", "org/..", "org/na me", "org/name@"] {
            assert!(model_ref(local).is_none(), "{local}");
        }
        let (r, p) = file_ref("hf://datasets/THUDM/LongAlign-10k@abc/long.jsonl").unwrap();
        assert_eq!(
            (r.kind, r.id.as_str(), r.revision.as_str(), p.as_str()),
            (RepoKind::Dataset, "THUDM/LongAlign-10k", "abc", "long.jsonl")
        );
        assert_eq!(r.folder(), "datasets--THUDM--LongAlign-10k");
        assert_eq!(file_ref("hf://org/model/sub/f.json").unwrap().1, "sub/f.json");
        for bad in
            ["hf://datasets/org", "hf://datasets/org/name/", "hf://datasets/org/name/../x", "data.jsonl"]
        {
            assert!(file_ref(bad).is_none(), "{bad}");
        }
        assert!(resolve_file(Path::new("hf://datasets/only-org")).is_err());
        assert_eq!(resolve_file(Path::new("local.jsonl")).unwrap(), PathBuf::from("local.jsonl"));
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let h = Hub {
            endpoint: "http://x".into(),
            token: Some("hf_secret".into()),
            cache: "c".into(),
            offline: false,
        };
        assert!(!format!("{h:?}").contains("hf_secret"));
    }
}
