//! What this process holds in memory, and what the machine has.

/// Peak resident set size of this process so far (Linux `VmHWM`; `None` elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// Resident set size of this process now (Linux `VmRSS`; `None` elsewhere).
pub fn rss_bytes() -> Option<u64> {
    status_kb("VmRSS:").map(|kb| kb * 1024)
}

/// Memory this machine has available now (Linux `MemAvailable`; `None` elsewhere).
pub fn available_bytes() -> Option<u64> {
    kb_field("/proc/meminfo", "MemAvailable:").map(|kb| kb * 1024)
}

/// Memory this machine has in all (Linux `MemTotal`; `None` elsewhere).
pub fn total_bytes() -> Option<u64> {
    kb_field("/proc/meminfo", "MemTotal:").map(|kb| kb * 1024)
}

fn status_kb(key: &str) -> Option<u64> {
    kb_field("/proc/self/status", key)
}

/// The number after `key` in a `/proc` file of `key value kB` lines.
fn kb_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn peak_rss_is_read_on_linux() {
        let kb = super::peak_rss_bytes().expect("VmHWM on Linux") / 1024;
        // A test binary holds at least a megabyte and far less than a terabyte.
        assert!((1024..1 << 30).contains(&kb), "{kb} kB");
    }
}
