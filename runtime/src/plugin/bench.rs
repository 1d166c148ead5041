//! Per-call cost of a Wasm router against its native twin, through the same slot API the
//! proxy uses (so the fallback and validation machinery is included). `quiver bench plugins`
//! prints these reports; the tests print them too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::host::PluginHost;
use super::kinds::RouterSlot;
use super::samples;
use super::slot::PluginSource;
use super::VersionRef;
use crate::error::{Error, Result};

/// Latency percentiles of one series of calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Mean.
    pub mean: Duration,
}

impl LatencySummary {
    fn of(mut samples: Vec<Duration>) -> LatencySummary {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).copied().unwrap_or_default()
        };
        let total: Duration = samples.iter().sum();
        let mean = total.checked_div(samples.len().max(1) as u32).unwrap_or_default();
        LatencySummary { p50: at(0.50), p99: at(0.99), mean }
    }
}

/// One router measured at one request size.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The plugin measured.
    pub plugin: String,
    /// Segments per request.
    pub segments: usize,
    /// Nodes per request (every node holds every segment).
    pub nodes: usize,
    /// Calls measured per series.
    pub iterations: usize,
    /// `RouterSlot::route` running the Wasm plugin (conversion, sandboxed call, validation).
    pub wasm: LatencySummary,
    /// The native built-in of the same name, called directly.
    pub native: LatencySummary,
    /// Calls the built-in answered because the plugin failed (should be 0).
    pub fallbacks: u64,
}

impl BenchReport {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        format!(
            "{:<14} {:>5} segments x {} nodes: wasm p50 {:>8.2?} p99 {:>8.2?} | native p50 {:>8.2?} p99 {:>8.2?} \
             | overhead p50 {:>8.2?}",
            self.plugin,
            self.segments,
            self.nodes,
            self.wasm.p50,
            self.wasm.p99,
            self.native.p50,
            self.native.p99,
            self.wasm.p50.saturating_sub(self.native.p50),
        )
    }
}

/// Measures the Wasm router `wasm` (named `name`; its native twin is the built-in of that
/// name, or the configured router) on requests of `segments` segments over `nodes` nodes,
/// `iterations` calls each after a warm-up. Runs on the calling thread; takes about
/// `iterations` × (wasm + native) per-call time plus one compile.
pub fn bench_router(
    host: &Arc<PluginHost>,
    name: &str,
    wasm: &[u8],
    segments: usize,
    nodes: usize,
    iterations: usize,
) -> Result<BenchReport> {
    if iterations == 0 || nodes == 0 {
        return Err(Error::InvalidArgument("bench_router needs at least one iteration and one node".into()));
    }
    let compiled = host.compile(wasm)?;
    let slot = RouterSlot::new(host.clone())?;
    let source = PluginSource { name: name.to_string(), version: VersionRef::Builtin, sha256: String::new() };
    let status = slot.activate_wasm(compiled, source)?;
    let native = quiver_policy::builtin::router(&status.fallback)
        .ok_or_else(|| Error::Internal(format!("no native router {}", status.fallback)))?;
    let mut request = samples::route_request(segments, nodes);
    // As the proxy sends them: every node at weight 1 (weighted rendezvous takes a logarithm
    // per comparison, which the proxy's requests never need today).
    for node in &mut request.nodes {
        node.weight = 1.0;
    }
    let warmup = (iterations / 10).clamp(10, 1_000);
    for _ in 0..warmup {
        request.sequence += 1;
        std::hint::black_box(slot.route(&request));
        std::hint::black_box(native.route(&request));
    }
    let mut wasm_times = Vec::with_capacity(iterations);
    let mut native_times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        request.sequence += 1;
        let start = Instant::now();
        std::hint::black_box(slot.route(std::hint::black_box(&request)));
        wasm_times.push(start.elapsed());
        let start = Instant::now();
        std::hint::black_box(native.route(std::hint::black_box(&request)));
        native_times.push(start.elapsed());
    }
    Ok(BenchReport {
        plugin: name.to_string(),
        segments,
        nodes,
        iterations,
        wasm: LatencySummary::of(wasm_times),
        native: LatencySummary::of(native_times),
        fallbacks: slot.status().fallbacks,
    })
}
