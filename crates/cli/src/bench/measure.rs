//! What the bench reads of the server (and of itself) from /proc: CPU time and RSS.

use anyhow::Context;

/// Seconds of CPU time per clock tick: USER_HZ is 100 on every Linux ABI.
pub(crate) const SECS_PER_TICK: f64 = 0.01;

/// utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat).
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let (utime, stime) = user_and_system(pid)?;
    Ok(utime + stime)
}

/// stime of a process alone (field 15 of /proc/PID/stat): its time in the kernel, in
/// clock ticks.
pub(crate) fn system_ticks(pid: u32) -> anyhow::Result<u64> {
    Ok(user_and_system(pid)?.1)
}

/// (utime, stime) of a process, in clock ticks.
fn user_and_system(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("malformed stat")?.parse()?;
    let stime: u64 = fields.get(12).context("malformed stat")?.parse()?;
    Ok((utime, stime))
}

/// A process's resident set size in KiB (VmRSS in /proc/PID/status).
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    vm_rss_kib(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// The `VmRSS:   1234 kB` line of a /proc/PID/status text.
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    line.trim().strip_suffix("kB")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_the_status_text() {
        let status = "Name:\tswitchboard\nVmPeak:\t  9000 kB\nVmRSS:\t  12345 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        // Kernel threads have no VmRSS line.
        assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn own_rss_and_cpu_are_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
    }
}
