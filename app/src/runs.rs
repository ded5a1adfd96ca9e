//! Training runs as the app sees them: a `core-cli train` process it may have started, and the
//! run folder's `events.jsonl`, which is all it reads. The app holds no training state, so it can
//! attach to a run started from the command line, or to a run folder copied from another machine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use longalign::train::events::StepEvent;

/// Where `core-cli` is: `$LONGALIGN_CORE_CLI`, else beside this executable (cargo puts both in
/// the same target folder), else on the PATH.
pub fn core_cli() -> PathBuf {
    if let Some(p) = std::env::var_os("LONGALIGN_CORE_CLI") {
        return PathBuf::from(p);
    }
    let name = format!("core-cli{}", std::env::consts::EXE_SUFFIX);
    if let Ok(me) = std::env::current_exe() {
        for dir in me.ancestors().skip(1).take(2) {
            let p = dir.join(&name);
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}

/// What to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// `tiny`, `small`, `medium` or a model directory.
    pub model: String,
    pub backend: longalign::backend::Backend,
    pub steps: usize,
    pub lr: f64,
}

impl Default for Launch {
    fn default() -> Self {
        Self { model: "tiny".into(), backend: longalign::backend::Backend::Cpu, steps: 50, lr: 3e-3 }
    }
}

/// A run folder the app watches, and the process it started there (if any).
pub struct Run {
    pub dir: PathBuf,
    pub events: Vec<StepEvent>,
    pub error: Option<String>,
    pub child: Option<Child>,
    /// How the started process ended, once it has.
    pub exit: Option<String>,
    seen: Option<(SystemTime, u64)>,
    last_poll: Option<Instant>,
}

impl Run {
    pub fn attach(dir: PathBuf) -> Self {
        let mut r = Self {
            dir,
            events: Vec::new(),
            error: None,
            child: None,
            exit: None,
            seen: None,
            last_poll: None,
        };
        r.poll(true);
        r
    }

    /// Starts `core-cli train` writing to `dir` (the arguments of the plan view: data, strategy,
    /// loss, max tokens; the launch settings: model, backend, steps, lr). Output goes to
    /// `dir/train.log`.
    pub fn start(dir: PathBuf, train_args: Vec<String>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("train.log"))?;
        let child = Command::new(core_cli())
            .args(&train_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", core_cli().display()))?;
        let mut r = Self::attach(dir);
        r.error = None;
        r.child = Some(child);
        Ok(r)
    }

    pub fn running(&self) -> bool {
        self.child.is_some() && self.exit.is_none()
    }

    pub fn stop(&mut self) {
        if let Some(c) = &mut self.child
            && self.exit.is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
            self.exit = Some("stopped".into());
        }
    }

    /// Re-reads events when the file changed (at most twice a second unless `force`), and notes
    /// the process's end.
    pub fn poll(&mut self, force: bool) {
        if !force && self.last_poll.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
            return;
        }
        self.last_poll = Some(Instant::now());
        if let Some(c) = &mut self.child
            && self.exit.is_none()
            && let Ok(Some(status)) = c.try_wait()
        {
            self.exit = Some(if status.success() {
                "finished".into()
            } else {
                let log = std::fs::read_to_string(self.dir.join("train.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                format!("failed ({status}): {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
            });
        }
        let path = self.dir.join("events.jsonl");
        let stamp =
            std::fs::metadata(&path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp.is_none() {
            self.error = (!self.running()).then(|| format!("{}: no events yet", path.display()));
            return;
        }
        if stamp == self.seen && !force {
            return;
        }
        self.seen = stamp;
        match longalign::train::events::read_complete_events(&path) {
            Ok(ev) => {
                self.events = ev;
                self.error = None;
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.stop();
    }
}
