//! `quiver-bench plugins`: the per-call cost of every bundled router as a Wasm plugin against
//! its native twin, through the same slot API the proxy uses (so the fallback and validation
//! machinery is included), at 10, 100 and 1000 segments over 3 nodes; with `--e2e`, search
//! QPS with the Wasm router against the native one ([`crate::standalone::router_e2e`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Args;
use quiver_runtime::config::PluginsConfig;
use quiver_runtime::plugin::{samples, PluginHost, PluginSource, RouterSlot, VersionRef};
use serde::Serialize;

#[derive(Args)]
pub struct PluginsArgs {
    /// Calls per measured series.
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
    /// Also measure end-to-end search throughput (starts two standalone children).
    #[arg(long)]
    e2e: bool,
    /// Dataset for --e2e.
    #[arg(long, default_value = "../shared/datasets/pypi-minilm")]
    dataset: PathBuf,
    /// Rows for --e2e (from the start of base.fvecs).
    #[arg(long, default_value_t = 20_000)]
    rows: usize,
    /// Rows per segment for --e2e (rows / segment-rows segments for the router).
    #[arg(long, default_value_t = 200)]
    segment_rows: usize,
    /// Client threads for --e2e.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds per measured window for --e2e.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Windows per engine for --e2e (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub fn bench_plugins(args: PluginsArgs) -> anyhow::Result<i32> {
    per_call(args.iterations)?;
    if args.e2e {
        ensure!(
            args.duration_secs > 0.0 && args.rounds > 0 && args.threads > 0 && args.segment_rows > 0,
            "--e2e needs positive --duration-secs, --rounds, --threads and --segment-rows"
        );
        let cfg = crate::standalone::RouterE2e {
            dataset: args.dataset,
            rows: args.rows,
            segment_rows: args.segment_rows,
            threads: args.threads,
            duration: Duration::from_secs_f64(args.duration_secs),
            rounds: args.rounds,
        };
        println!();
        print!("{}", crate::standalone::router_e2e(&cfg)?);
    }
    Ok(0)
}

/// The sandbox with the default `[plugins]` settings, as `quiver plugin test` runs plugins.
fn host() -> anyhow::Result<Arc<PluginHost>> {
    let plugins = PluginsConfig { engine: "wasm".into(), ..PluginsConfig::default() };
    Ok(Arc::new(PluginHost::new(&plugins)?))
}

/// Per-call cost of every bundled router, Wasm vs native, as a markdown table.
fn per_call(iterations: usize) -> anyhow::Result<()> {
    let host = host()?;
    println!("| router | segments | wasm p50 | wasm p99 | native p50 | native p99 | added p50 |");
    println!("|---|---|---|---|---|---|---|");
    for bundled in quiver_plugins_bundled::BUNDLED.iter().filter(|b| b.kind == "router") {
        for segments in [10, 100, 1000] {
            let r = bench_router(&host, bundled.name, bundled.wasm, segments, 3, iterations)?;
            ensure!(r.fallbacks == 0, "{}: {} calls fell back to the built-in", bundled.name, r.fallbacks);
            println!(
                "| {} | {} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} |",
                r.plugin,
                r.segments,
                r.wasm.p50,
                r.wasm.p99,
                r.native.p50,
                r.native.p99,
                r.wasm.p50.saturating_sub(r.native.p50)
            );
        }
    }
    Ok(())
}

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
    /// One line for a terminal (the test prints them).
    #[cfg(test)]
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
) -> anyhow::Result<BenchReport> {
    if iterations == 0 || nodes == 0 {
        bail!("bench_router needs at least one iteration and one node");
    }
    let compiled = host.compile(wasm)?;
    let slot = RouterSlot::new(host.clone())?;
    let source = PluginSource { name: name.to_string(), version: VersionRef::Builtin, sha256: String::new() };
    let status = slot.activate_wasm(compiled, source)?;
    let native = quiver_policy::builtin::router(&status.fallback)
        .with_context(|| format!("no native router {}", status.fallback))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bundled router answers in the sandbox, without falling back, at every size.
    #[test]
    fn router_cost_wasm_against_native() {
        let host = host().unwrap();
        for bundled in quiver_plugins_bundled::BUNDLED.iter().filter(|b| b.kind == "router") {
            for segments in [10, 100, 1000] {
                let iterations = if segments == 1000 { 2_000 } else { 20_000 };
                let report = bench_router(&host, bundled.name, bundled.wasm, segments, 3, iterations).unwrap();
                assert_eq!(report.fallbacks, 0);
                eprintln!("{}", report.line());
            }
        }
    }
}
