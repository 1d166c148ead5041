//! Metrics (Prometheus endpoint per process) and process statistics for heartbeats.

use std::net::SocketAddr;

use crate::error::{Error, Result};

/// Installs the global `metrics` recorder with a Prometheus HTTP endpoint on `listen`.
/// Returns the bound address (useful with port 0).
pub fn install_prometheus(listen: &str) -> Result<Option<SocketAddr>> {
    if listen.is_empty() {
        return Ok(None);
    }
    let mut addr: SocketAddr = listen.parse().map_err(|e| Error::Config(format!("metrics.listen {listen}: {e}")))?;
    if addr.port() == 0 {
        // Reserve a free port: the exporter wants a concrete address.
        let probe = std::net::TcpListener::bind(addr)?;
        addr = probe.local_addr()?;
    }
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}")))?;
    describe();
    Ok(Some(addr))
}

fn describe() {
    metrics::describe_counter!("quiver_role_restarts_total", "Role restarts by the supervisor");
    metrics::describe_counter!("quiver_role_failures_total", "Role failures seen by the supervisor");
    metrics::describe_counter!("quiver_role_escalations_total", "Restart budgets spent");
    metrics::describe_counter!("quiver_requests_total", "API requests by method and outcome");
    metrics::describe_histogram!("quiver_request_seconds", "API request latency by method");
    metrics::describe_counter!("quiver_rows_inserted_total", "Rows acknowledged by inserts");
    metrics::describe_counter!("quiver_segments_flushed_total", "Segments sealed and flushed");
    metrics::describe_counter!("quiver_indexes_built_total", "Segment indexes built");
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`).
pub fn process_rss() -> u64 {
    let page = 4096u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * page)
        .unwrap_or(0)
}

/// Total memory of the machine in bytes (`/proc/meminfo`).
pub fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Memory the machine still has for new processes, bytes (`MemAvailable` of `/proc/meminfo`).
pub fn machine_memory_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// CPU cores this process may run on: its affinity mask, or its cgroup v2 `cpu.max` quota
/// when that is smaller (fractions count: a 1.5-core quota is 1.5).
pub fn cpu_cores_allowed() -> f32 {
    // SAFETY: `set` is a plain bitmask the kernel fills; the size passed is its own.
    let affinity = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set) as f32
        } else {
            std::thread::available_parallelism().map_or(1.0, |n| n.get() as f32)
        }
    };
    match cgroup_cpu_quota() {
        Some(quota) if quota < affinity => quota,
        _ => affinity,
    }
}

/// The cgroup v2 CPU quota of this process in cores (`cpu.max` = "quota period"), if any.
fn cgroup_cpu_quota() -> Option<f32> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let max = std::fs::read_to_string(format!("/sys/fs/cgroup{}/cpu.max", path.trim())).ok()?;
    let mut parts = max.split_whitespace();
    let (quota, period) = (parts.next()?, parts.next()?);
    let (quota, period) = (quota.parse::<f32>().ok()?, period.parse::<f32>().ok()?);
    (period > 0.0).then_some(quota / period)
}

/// CPU time (user + system) this process has used, seconds.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Cores' worth of CPU this process used since the previous sample that is at least 500 ms
/// old (the roles of one process share the sampler, so each heartbeat sees the same figure).
pub fn process_cpu_busy() -> f32 {
    use std::sync::Mutex;
    use std::time::Instant;
    static LAST: Mutex<Option<(Instant, f64, f32)>> = Mutex::new(None);
    let now = Instant::now();
    let cpu = process_cpu_seconds();
    let Ok(mut last) = LAST.lock() else { return 0.0 };
    match *last {
        Some((at, _, busy)) if now.duration_since(at).as_millis() < 500 => busy,
        Some((at, before, _)) => {
            let busy = ((cpu - before) / now.duration_since(at).as_secs_f64()).max(0.0) as f32;
            *last = Some((now, cpu, busy));
            busy
        }
        None => {
            *last = Some((now, cpu, 0.0));
            0.0
        }
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
