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

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
