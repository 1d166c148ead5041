//! Metrics (Prometheus endpoint per process) and process statistics for heartbeats.

use std::net::SocketAddr;

use crate::error::{Error, Result};

/// Bucket bounds of every histogram (all of them are durations in seconds): 0.5 ms to 30 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

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
        // Histograms as Prometheus histograms (buckets), so percentiles aggregate across
        // processes (`histogram_quantile`); the exporter's default is a per-process summary.
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| Error::Config(format!("metrics buckets: {e}")))?
        .install()
        .map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}")))?;
    describe();
    Ok(Some(addr))
}

/// Counters with their help text (`# HELP` on the metrics endpoint).
const COUNTERS: &[(&str, &str)] = &[
    ("quiver_role_restarts_total", "Role restarts by the supervisor"),
    ("quiver_role_failures_total", "Role failures seen by the supervisor"),
    ("quiver_role_escalations_total", "Restart budgets spent"),
    ("quiver_requests_total", "Requests served by role and method"),
    ("quiver_request_errors_total", "Requests that failed, by role, method and error code (bounded: 13 codes)"),
    ("quiver_idling_failures_total", "Idling rounds (going idle, waking) that failed"),
    (
        "quiver_proxy_wake_failures_total",
        "Requests that could not wake the idle cluster or waited past idling.wake_timeout",
    ),
    ("quiver_proxy_searches_total", "Searches (NATS and Milvus API) a proxy scattered"),
    (
        "quiver_proxy_node_calls_total",
        "Calls a proxy sent to query nodes, by method: their rate over the searches' is the fan-out",
    ),
    ("quiver_plugin_fallbacks_total", "Policy calls the built-in answered because the kind's plugin is switched off"),
    ("quiver_trace_spans_exported_total", "Spans sent to the trace collector"),
    ("quiver_trace_export_failures_total", "Span batches the trace collector did not take (dropped)"),
    ("quiver_rows_inserted_total", "Rows acknowledged by inserts"),
    ("quiver_segments_flushed_total", "Segments sealed and flushed"),
    ("quiver_indexes_built_total", "Segment indexes built"),
];

/// Gauges with their help text.
const GAUGES: &[(&str, &str)] = &[
    ("quiver_requests_in_flight", "Requests the role is serving now"),
    (
        "quiver_dml_lag_entries",
        "Log entries the role's furthest-behind shard reader still has to read (data and query nodes)",
    ),
    ("quiver_idling_state", "1 for the cluster's idling state (awake, idle, waking), else 0"),
    ("quiver_querynode_rows", "Rows a query node serves: sealed (loaded segments) and growing"),
    ("quiver_scaling_nodes", "Nodes of a scaled role: wanted, serving, starting, draining (active coordinator)"),
    ("quiver_scaling_node_size_memory_bytes", "Memory every node of the role should have"),
    ("quiver_scaling_node_size_cpu_cores", "Cores every node of the role should have"),
    ("quiver_replica_groups_wanted", "Replica groups loaded collections ask for (active coordinator)"),
    ("quiver_replica_groups", "Replica groups formed (active coordinator)"),
    (
        "quiver_replica_groups_degraded",
        "Replica groups missing a segment or shard leader, or wanted but not formed (active coordinator)",
    ),
    ("quiver_index_backlog_segments", "Sealed segments waiting for their index (active coordinator)"),
    ("quiver_plugin_switched_off", "1 while the plugin of a kind is switched off after failing (the built-in answers)"),
    ("quiver_node_state", "1 for the role's current state (starting, serving, draining, stopped, standby), else 0"),
    ("quiver_node_healthy", "1 while the role is healthy"),
    ("quiver_node_segments", "Segments the role holds, as its heartbeat reports them"),
    ("quiver_process_resident_memory_bytes", "Resident memory of the process"),
    ("quiver_process_memory_capacity_bytes", "Memory the process may use (node.memory_limit_mb, else the machine's)"),
    ("quiver_process_cpu_cores_busy", "Cores the process kept busy since the last heartbeat"),
    ("quiver_process_cpu_cores_allowed", "Cores the process may use (cgroup quota, else the machine's)"),
];

/// Histograms (durations in seconds, [`LATENCY_BUCKETS`]) with their help text.
const HISTOGRAMS: &[(&str, &str)] = &[
    ("quiver_request_seconds", "API request latency by method"),
    ("quiver_datanode_seal_seconds", "Time to seal a segment: encode, store, report"),
    ("quiver_index_build_seconds", "Time an index node took to build a segment's index"),
    (
        "quiver_querynode_consistency_wait_seconds",
        "Time reads waited for their shards to apply the log far enough (bounded and strong reads)",
    ),
];

fn describe() {
    for &(name, help) in COUNTERS {
        metrics::describe_counter!(name, help);
    }
    for &(name, help) in GAUGES {
        metrics::describe_gauge!(name, help);
    }
    for &(name, help) in HISTOGRAMS {
        metrics::describe_histogram!(name, help);
    }
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

/// CPU cores this process may run on: its affinity mask, or its cgroup CPU quota when that is
/// smaller (fractions count: a 1.5-core quota is 1.5). The quota is cgroup v2's `cpu.max` or
/// v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none), the smallest of the process's
/// cgroup and its ancestors' (a host agent puts a sized node in a cgroup with its size's quota).
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

/// The cgroup CPU quota of this process in cores, if any.
fn cgroup_cpu_quota() -> Option<f32> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    cpu_quota(&cgroup, &mountinfo, |f| std::fs::read_to_string(f).ok())
}

/// The smallest CPU quota (cores) of the cgroups in `cgroup` (`/proc/self/cgroup`: the v2
/// line `0::<path>`, the v1 line whose controllers include `cpu`) and their ancestors, with
/// the hierarchies mounted as `mountinfo` (`/proc/self/mountinfo`) says (else where they
/// usually are), reading cgroup files with `read`.
fn cpu_quota(cgroup: &str, mountinfo: &str, read: impl Fn(&std::path::Path) -> Option<String>) -> Option<f32> {
    use std::path::{Path, PathBuf};
    // (mount point, the cgroup path mounted there, fstype, super options) of each cgroup mount.
    let mounts: Vec<(PathBuf, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            let before: Vec<&str> = before.split(' ').collect();
            let after: Vec<&str> = after.split(' ').collect();
            Some((PathBuf::from(before.get(4)?), *before.get(3)?, *after.first()?, *after.get(2)?))
        })
        .filter(|(.., fstype, _)| fstype.starts_with("cgroup"))
        .collect();
    let mut least: Option<f32> = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let v2 = id == "0" && controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "cpu") {
            continue;
        }
        let mut points: Vec<(PathBuf, &str)> = mounts
            .iter()
            .filter(|(_, _, fstype, options)| {
                if v2 {
                    *fstype == "cgroup2"
                } else {
                    *fstype == "cgroup" && options.split(',').any(|o| o == "cpu")
                }
            })
            .map(|(point, root, ..)| (point.clone(), *root))
            .collect();
        if points.is_empty() {
            let usual: &[&str] = if v2 {
                &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            } else {
                &["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]
            };
            points = usual.iter().map(|p| (PathBuf::from(p), "/")).collect();
        }
        for (point, root) in points {
            let rel = if root == "/" { path } else { path.strip_prefix(root).unwrap_or("") };
            let mut dir = point.join(rel.trim_start_matches('/'));
            while dir.starts_with(&point) {
                let quota = if v2 { v2_quota(&dir, &read) } else { v1_quota(&dir, &read) };
                if let Some(q) = quota {
                    least = Some(least.map_or(q, |l: f32| l.min(q)));
                }
                if !dir.pop() {
                    break;
                }
            }
        }
    }
    return least;

    fn v2_quota(dir: &Path, read: &impl Fn(&Path) -> Option<String>) -> Option<f32> {
        let max = read(&dir.join("cpu.max"))?;
        let mut parts = max.split_whitespace();
        let (quota, period) = (parts.next()?.parse::<f32>().ok()?, parts.next()?.parse::<f32>().ok()?);
        (quota > 0.0 && period > 0.0).then_some(quota / period)
    }

    fn v1_quota(dir: &Path, read: &impl Fn(&Path) -> Option<String>) -> Option<f32> {
        let quota = read(&dir.join("cpu.cfs_quota_us"))?.trim().parse::<f32>().ok()?;
        let period = read(&dir.join("cpu.cfs_period_us"))?.trim().parse::<f32>().ok()?;
        (quota > 0.0 && period > 0.0).then_some(quota / period)
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quotas_of_cgroup_v1_and_v2() {
        let files: std::collections::HashMap<&str, &str> = [
            ("/sys/fs/cgroup/cpu/quiver-h/qn/cpu.cfs_quota_us", "150000\n"),
            ("/sys/fs/cgroup/cpu/quiver-h/qn/cpu.cfs_period_us", "100000\n"),
            ("/sys/fs/cgroup/cpu/quiver-h/cpu.cfs_quota_us", "-1\n"),
            ("/sys/fs/cgroup/cpu/quiver-h/cpu.cfs_period_us", "100000\n"),
            ("/sys/fs/cgroup/a/b/cpu.max", "250000 100000\n"),
            ("/sys/fs/cgroup/a/cpu.max", "200000 100000\n"),
            ("/sys/fs/cgroup/x/cpu.max", "max 100000\n"),
        ]
        .into_iter()
        .collect();
        let read = |p: &std::path::Path| files.get(p.to_str().unwrap()).map(|s| s.to_string());
        let hybrid = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let v1 = "4:memory:/m\n1:cpu:/quiver-h/qn\n0::/\n";
        assert_eq!(cpu_quota(v1, hybrid, read), Some(1.5));
        assert_eq!(cpu_quota("1:cpu:/quiver-h\n", hybrid, read), None);
        // Not mounted where mountinfo says: the usual places.
        assert_eq!(cpu_quota("2:cpu,cpuacct:/quiver-h/qn\n", "", read), Some(1.5));
        // v2: the smallest of the cgroup's and its ancestors'.
        let v2 = "50 31 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cpu_quota("0::/a/b\n", v2, read), Some(2.0));
        assert_eq!(cpu_quota("0::/x\n", v2, read), None);
        assert_eq!(cpu_quota("0::/\n", v2, read), None);
    }

    /// For real: a child in a cgroup v1 with a half-core quota sees half a core (skipped where
    /// no writable v1 `cpu` hierarchy is mounted).
    #[test]
    fn cpu_cores_allowed_sees_a_cgroup_quota() {
        if std::env::var_os("QUIVER_TEST_CORES_CHILD").is_some() {
            println!("cores={}", cpu_cores_allowed());
            return;
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let Some(point) = mountinfo.lines().find_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            let after: Vec<&str> = after.split(' ').collect();
            (after.first() == Some(&"cgroup") && after.get(2)?.split(',').any(|o| o == "cpu"))
                .then(|| before.split(' ').nth(4).map(str::to_string))
                .flatten()
        }) else {
            println!("skipped: no cgroup v1 cpu hierarchy");
            return;
        };
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = cgroup
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                c.split(',').any(|c| c == "cpu").then(|| path.to_string())
            })
            .unwrap_or_else(|| "/".into());
        let dir = std::path::Path::new(&point)
            .join(own.trim_start_matches('/'))
            .join(format!("quiver-telemetry-test-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            println!("skipped: cannot create {}: {e}", dir.display());
            return;
        }
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(dir.join("cpu.cfs_quota_us"), "50000").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("echo 0 > {}/cgroup.procs && exec \"$0\" \"$@\"", dir.display()))
            .arg(std::env::current_exe().unwrap())
            .args(["telemetry::tests::cpu_cores_allowed_sees_a_cgroup_quota", "--exact", "--nocapture"])
            .env("QUIVER_TEST_CORES_CHILD", "1")
            .output()
            .unwrap();
        let _ = std::fs::remove_dir(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("cores=0.5"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    }
}
