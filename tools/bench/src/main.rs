//! `quiver-bench`: Quiver's benchmarks, a tool beside the product (the `quiver` binary holds
//! what operators run). Each command prints a markdown report; BENCHMARKS.md keeps the results
//! with the command lines that produced them.
//!
//! - `standalone` ([`standalone`]): raw faiss in-process against `quiver standalone` through
//!   the NATS SDK (and, with `--milvus`, through pymilvus over the Milvus gRPC API, against
//!   faiss-cpu from PyPI in process and Milvus 2.3.5 standalone from PyPI, with a summary of
//!   the four).
//! - `replicas` ([`standalone::replicas`]): search QPS with 1 vs 2 replicas on a local
//!   multi-process cluster, and what clients see while a query node is SIGKILLed. It drives
//!   the load, reads the data and counts CPU with the standalone benchmark's pieces, hence its
//!   place below it.
//! - `scale` ([`standalone::replicas`]'s `scale`): query nodes scaled 1 → N → 1 through the
//!   API under search load on the same kind of cluster, with a per-second timeline and the
//!   times of each step; with `--scale-curve`, steady QPS per query-node count.
//! - `filter` ([`filter`]): the query node's filtered-search kernel against raw faiss with a
//!   bitmap selector, in process.
//! - `scalar-index` ([`scalar_index`]): a selective filter's bitmap and filtered search of a
//!   segment with and without its scalar indexes (STL_SORT, INVERTED), in process.
//! - `simd` ([`simd`]): per-query HNSW search on each faiss SIMD build Quiver links against
//!   faiss-cpu from PyPI on the same index, and index build time by OpenMP threads.
//! - `flat` ([`flat`]): brute force over rows without an index (the query node's kernel)
//!   against raw faiss `IndexFlat`, in process, single queries and batches.
//! - `plugins` ([`plugins`]): per-call cost of the bundled Wasm routers against their native
//!   twins; with `--e2e`, search QPS with the Wasm router against the native one.
//!
//! Quiver processes are started from the `quiver` binary [`quiver_testkit::quiver_bin`] finds:
//! `QUIVER_BIN` (set by `scripts/env.sh`), else the `quiver` built beside this executable.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod filter;
mod flat;
mod plugins;
mod pyvenv;
mod scalar_index;
mod simd;
mod standalone;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "quiver-bench",
    version,
    about = "Quiver's benchmarks: Quiver against raw faiss, replicas, filters, plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark Quiver standalone against raw faiss on a dataset.
    Standalone(standalone::BenchArgs),
    /// Benchmark search QPS with 1 vs 2 replicas on a local multi-process cluster, and latency
    /// while a query node is SIGKILLed.
    Replicas(standalone::replicas::BenchReplicasArgs),
    /// Scale query nodes 1 → N → 1 through the API under search load on a local multi-process
    /// cluster: latency, failures and the times of each step (or, with --scale-curve, steady
    /// QPS per query-node count).
    Scale(standalone::replicas::BenchScaleArgs),
    /// A make-before-break resize of the query node under search load (QPS, p50, p99 before,
    /// during and after), then the time an idle cluster takes to answer its first search.
    Elastic(standalone::replicas::BenchElasticArgs),
    /// Benchmark filtered search (the query node's path) against raw faiss with a bitmap selector.
    Filter(filter::BenchFilterArgs),
    /// A selective filter with and without the segment's scalar indexes (bitmap and filtered
    /// search), in process.
    ScalarIndex(scalar_index::BenchScalarIndexArgs),
    /// Per-query HNSW search on each faiss SIMD build (generic, avx2, avx512) against faiss-cpu
    /// from PyPI on the same index; index build time with 1 vs N threads.
    Simd(simd::BenchSimdArgs),
    /// Benchmark brute force over unindexed rows (the query node's kernel) against raw faiss IndexFlat.
    Flat(flat::BenchFlatArgs),
    /// Per-call cost of every bundled router as a Wasm plugin vs natively (10 / 100 / 1000
    /// segments over 3 nodes), and with --e2e, search QPS with the Wasm router vs native.
    Plugins(plugins::PluginsArgs),
}

fn main() {
    let cli = Cli::parse();
    // The benchmarks log only what goes wrong (RUST_LOG overrides it); the Quiver processes
    // they start log to their own files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Standalone(args) => standalone::bench(args),
        Command::Replicas(args) => standalone::replicas::bench_replicas(args),
        Command::Scale(args) => standalone::replicas::bench_scale(args),
        Command::Elastic(args) => standalone::replicas::bench_elastic(args),
        Command::Filter(args) => filter::bench_filter(args).map(|()| 0),
        Command::ScalarIndex(args) => scalar_index::bench_scalar_index(args).map(|()| 0),
        Command::Simd(args) => simd::bench_simd(args).map(|()| 0),
        Command::Flat(args) => flat::bench_flat(args).map(|()| 0),
        Command::Plugins(args) => plugins::bench_plugins(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
