//! The sampler: the machine's vital signs as one JSON object (the contract's
//! `{"type":"sample"}`), read with `sysinfo`.
//!
//! sysinfo can read everything at once (`System::new_all`: every process's details,
//! every CPU's frequency…); that costs far more than what a sample shows. Each sample
//! refreshes only what it reports: CPU usage, memory and swap, disks' space and I/O,
//! the networks' counters, the temperatures, and this one process. The process count
//! is the number of entries in `/proc` on Linux (one `readdir`, not a read of every
//! process's files). Rates (disk I/O, network) are bytes per second over the time since
//! the previous sample. A value this system cannot give is left out, never sent as 0.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;
use sysinfo::{
    Components, CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, Pid,
    ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System,
};

/// How often the list of temperature sensors is read again (they rarely come and go,
/// and listing them reads many files).
const COMPONENTS_RELIST: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads samples; keeps what the rates are computed against.
#[derive(Debug)]
pub struct Sampler {
    system: System,
    disks: Disks,
    networks: Networks,
    components: Components,
    components_listed: Instant,
    /// This process, for its own RSS and CPU.
    pid: Option<Pid>,
    /// When the counters were last read.
    last: Instant,
}

/// One sample, as the contract lays it out.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Always `"sample"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it was taken, Unix milliseconds.
    pub time: u64,
    /// CPU use.
    pub cpu: Cpu,
    /// Load averages over 1, 5 and 15 minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<[f64; 3]>,
    /// Memory, bytes.
    pub mem: Mem,
    /// Swap, bytes.
    pub swap: Swap,
    /// Space per mounted file system.
    pub disks: Vec<DiskUse>,
    /// Disk I/O, bytes per second over every disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<Io>,
    /// Traffic per network interface, bytes per second (loopback left out).
    pub net: Vec<Net>,
    /// Processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub procs: Option<usize>,
    /// Seconds since boot.
    pub uptime: u64,
    /// Temperature sensors, where the system has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub temps: Vec<Temp>,
    /// The agent itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<Own>,
}

/// CPU use, percent (0-100).
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    /// The mean over the cores.
    pub total: f32,
    /// Per core.
    pub cores: Vec<f32>,
}

/// Memory, bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Mem {
    /// Installed.
    pub total: u64,
    /// In use.
    pub used: u64,
    /// Available to new work without swapping.
    pub available: u64,
}

/// Swap, bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Swap {
    /// Configured.
    pub total: u64,
    /// In use.
    pub used: u64,
}

/// A file system's space.
#[derive(Debug, Clone, Serialize)]
pub struct DiskUse {
    /// Where it is mounted.
    pub mount: String,
    /// Bytes in all.
    pub total: u64,
    /// Bytes used.
    pub used: u64,
}

/// Disk I/O, bytes per second.
#[derive(Debug, Clone, Serialize)]
pub struct Io {
    /// Read.
    pub read: u64,
    /// Written.
    pub write: u64,
}

/// A network interface's traffic, bytes per second.
#[derive(Debug, Clone, Serialize)]
pub struct Net {
    /// Its name.
    pub iface: String,
    /// Received.
    pub rx: u64,
    /// Sent.
    pub tx: u64,
}

/// A temperature sensor.
#[derive(Debug, Clone, Serialize)]
pub struct Temp {
    /// Its label.
    pub label: String,
    /// Degrees Celsius.
    pub celsius: f32,
}

/// The agent's own use.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Own {
    /// Resident memory, bytes.
    pub rss: u64,
    /// CPU, percent of one core since the previous sample.
    pub cpu: f32,
}

impl Sampler {
    /// A sampler, with a first reading taken so that the first sample's rates and CPU
    /// use cover the time since now.
    pub fn new() -> Sampler {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::everything()),
        );
        let mut sampler = Sampler {
            system,
            disks: Disks::new_with_refreshed_list_specifics(disk_refresh()),
            networks: Networks::new_with_refreshed_list(),
            components: Components::new_with_refreshed_list(),
            components_listed: Instant::now(),
            pid: sysinfo::get_current_pid().ok(),
            last: Instant::now(),
        };
        sampler.refresh_own();
        sampler
    }

    /// How many logical cores the machine has.
    pub fn cores(&self) -> usize {
        self.system.cpus().len()
    }

    /// The operating system, e.g. `Debian GNU/Linux 12`.
    pub fn os() -> String {
        match (System::name(), System::os_version()) {
            (Some(name), Some(version)) => format!("{name} {version}"),
            (Some(name), None) => name,
            _ => std::env::consts::OS.to_owned(),
        }
    }

    fn refresh_own(&mut self) {
        if let Some(pid) = self.pid {
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                false,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
        }
    }

    /// Takes a sample.
    pub fn sample(&mut self) -> Sample {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64().max(0.001);
        self.last = now;
        let rate = |bytes: u64| (bytes as f64 / elapsed).round() as u64;

        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let cores: Vec<f32> = self
            .system
            .cpus()
            .iter()
            .map(|c| round1(c.cpu_usage().clamp(0.0, 100.0)))
            .collect();
        let total = if cores.is_empty() {
            0.0
        } else {
            round1(cores.iter().sum::<f32>() / cores.len() as f32)
        };

        self.disks.refresh_specifics(true, disk_refresh());
        let mut mounts = HashSet::new();
        let mut devices = HashSet::new();
        let (mut read, mut write) = (0, 0);
        let mut disks = Vec::new();
        for disk in self.disks.list() {
            if devices.insert(disk.name().to_owned()) {
                let usage = disk.usage();
                read += usage.read_bytes;
                write += usage.written_bytes;
            }
            let mount = disk.mount_point().to_string_lossy().into_owned();
            if disk.total_space() == 0 || !shown_mount(&mount) || !mounts.insert(mount.clone()) {
                continue;
            }
            disks.push(DiskUse {
                mount,
                total: disk.total_space(),
                used: disk.total_space().saturating_sub(disk.available_space()),
            });
        }

        self.networks.refresh(true);
        let mut net: Vec<Net> = self
            .networks
            .iter()
            .filter(|(name, _)| name.as_str() != "lo")
            .map(|(name, data)| Net {
                iface: name.clone(),
                rx: rate(data.received()),
                tx: rate(data.transmitted()),
            })
            .collect();
        net.sort_by(|a, b| a.iface.cmp(&b.iface));

        if now.duration_since(self.components_listed) > COMPONENTS_RELIST {
            self.components.refresh(true);
            self.components_listed = now;
        } else {
            for c in self.components.list_mut() {
                c.refresh();
            }
        }
        let temps = self
            .components
            .list()
            .iter()
            .filter_map(|c| {
                let celsius = c.temperature()?;
                celsius.is_finite().then(|| Temp {
                    label: c.label().to_owned(),
                    celsius: round1(celsius),
                })
            })
            .collect();

        self.refresh_own();
        let agent = self
            .pid
            .and_then(|pid| self.system.process(pid))
            .map(|p| Own {
                rss: p.memory(),
                cpu: round1(p.cpu_usage()),
            });

        let load = System::load_average();
        Sample {
            kind: "sample",
            time: now_ms(),
            cpu: Cpu { total, cores },
            // Windows has no load average: sysinfo then says 0, 0, 0.
            load: (!cfg!(windows)).then_some([load.one, load.five, load.fifteen]),
            mem: Mem {
                total: self.system.total_memory(),
                used: self.system.used_memory(),
                available: self.system.available_memory(),
            },
            swap: Swap {
                total: self.system.total_swap(),
                used: self.system.used_swap(),
            },
            disks,
            // Linux and the BSDs give per-disk counters; elsewhere sysinfo has none.
            io: cfg!(target_os = "linux").then(|| Io {
                read: rate(read),
                write: rate(write),
            }),
            net,
            procs: process_count(),
            uptime: System::uptime(),
            temps,
            agent,
        }
    }
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler::new()
    }
}

fn disk_refresh() -> DiskRefreshKind {
    DiskRefreshKind::nothing().with_storage().with_io_usage()
}

/// Whether a mount point is a place for data rather than the kernel's or a container
/// runtime's (`/proc`, `/sys`, `/dev`, files bind-mounted one by one such as
/// `/etc/hosts`).
fn shown_mount(mount: &str) -> bool {
    let system = ["/proc", "/sys", "/dev", "/run", "/snap", "/boot/efi"];
    !system
        .iter()
        .any(|s| mount == *s || mount.starts_with(&format!("{s}/")))
        && !mount.starts_with("/etc/")
}

/// The number of processes: the numeric entries of `/proc` (Linux). Elsewhere none is
/// reported rather than paying for a full process scan.
fn process_count() -> Option<usize> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(
        entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count(),
    )
}

fn round1(x: f32) -> f32 {
    (x * 10.0).round() / 10.0
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_has_sane_values() {
        let mut sampler = Sampler::new();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let s = sampler.sample();
        assert!(sampler.cores() > 0);
        assert_eq!(s.cpu.cores.len(), sampler.cores());
        assert!((0.0..=100.0).contains(&s.cpu.total));
        assert!(s.mem.total > 0 && s.mem.used <= s.mem.total);
        assert!(s.uptime > 0);
        let own = s.agent.expect("the agent's own figures");
        assert!(own.rss > 0);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["type"], "sample");
        assert!(json.get("temps").is_none() || json["temps"].is_array());
    }

    #[test]
    fn kernel_mounts_are_left_out() {
        assert!(shown_mount("/"));
        assert!(shown_mount("/home"));
        assert!(shown_mount("/data/run"));
        assert!(!shown_mount("/proc"));
        assert!(!shown_mount("/dev/shm"));
        assert!(!shown_mount("/etc/hosts"));
    }
}
