//! `quiver-bench elastic`: what a make-before-break resize does to search latency, and how long
//! an idle cluster takes to answer its first search (MISSION S3.5, S3.6; issue 15).
//!
//! 1. `quiver cluster up` (coordinator, proxy, data node, index node, one query node; the
//!    supervisor is the host agent), with `idling.enabled` and `idling.after = --idle-after-secs`.
//! 2. `--rows` rows in `--segments` segments with the index, loaded with 1 replica.
//! 3. `--threads` closed-loop clients (consistency Eventually): `--steady-secs` before the resize,
//!    a window of `--window-secs` that starts with `scale querynode --cpu --resize-cpu` (the
//!    scaler starts a query node of that size, hands the segments over, drains the old one),
//!    `--steady-secs` after. QPS, p50, p99 and failures of each.
//! 4. No requests until the cluster idles (its compute processes stop), then one search: its
//!    latency (the wake as a client sees it) and the coordinator's measured start-up time.

use super::cluster::{BenchCluster, ClusterSpec};
use super::report::print_report;
use super::scale::BALANCE_INTERVAL;
use super::*;
use quiver_client::{NodeSize, Role, ScaleRequest};

#[derive(Args)]
pub struct BenchElasticArgs {
    #[command(flatten)]
    workload: Workload,
    /// Base rows to use (default: the whole file).
    #[arg(long)]
    rows: Option<usize>,
    /// Sealed segments the data is cut into.
    #[arg(long, default_value_t = 8)]
    segments: usize,
    /// Rows per insert call.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Closed-loop search clients.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds of search before and after the resize.
    #[arg(long, default_value_t = 10.0)]
    steady_secs: f64,
    /// Seconds of search from the resize request on.
    #[arg(long, default_value_t = 20.0)]
    window_secs: f64,
    /// The query nodes' new size in cores (memory follows at `scaling.memory_per_cpu_mb`).
    #[arg(long, default_value_t = 1.0)]
    resize_cpu: f64,
    /// `scaling.memory_per_cpu_mb` of the cluster.
    #[arg(long, default_value_t = 2048)]
    memory_per_cpu_mb: u64,
    /// `idling.after` of the cluster.
    #[arg(long, default_value_t = 20.0)]
    idle_after_secs: f64,
    #[command(flatten)]
    run: ClusterRunArgs,
}

struct Phase {
    name: &'static str,
    result: LoadResult,
}

pub fn bench_elastic(args: BenchElasticArgs) -> anyhow::Result<i32> {
    if args.threads == 0 || args.segments == 0 || args.batch == 0 || args.workload.k == 0 {
        bail!("--threads, --segments, --batch and -k must be at least 1");
    }
    for (name, v) in [
        ("--steady-secs", args.steady_secs),
        ("--window-secs", args.window_secs),
        ("--idle-after-secs", args.idle_after_secs),
        ("--resize-cpu", args.resize_cpu),
    ] {
        if !v.is_finite() || v <= 0.0 {
            bail!("{name} must be a positive number, got {v}");
        }
    }
    let mut node_env: Vec<(String, String)> = [
        ("QUIVER_SCALING__INTERVAL", "500ms".to_string()),
        ("QUIVER_SCALING__MEMORY_PER_CPU_MB", args.memory_per_cpu_mb.to_string()),
        ("QUIVER_IDLING__ENABLED", "true".to_string()),
        ("QUIVER_IDLING__AFTER", format!("{}ms", (args.idle_after_secs * 1000.0) as u64)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    node_env.extend(parse_node_env(&args.run.node_env)?);
    let threads = args.threads.to_string();
    let bench_args = standalone_args(&args.workload, args.rows, &["--threads", &threads])?;
    let (params, search) = args.workload.params()?;
    let data = Data::load(&bench_args, params.metric)?;
    let segment_max_rows = data.n.div_ceil(args.segments).max(1);
    let spec = ClusterSpec {
        bench: "elastic",
        query_nodes: vec!["qn1".into()],
        segment_max_rows,
        balance_interval: BALANCE_INTERVAL,
        restart_backoff_secs: 1.0,
        keep: args.run.keep,
    };
    let mut cluster = BenchCluster::create(&spec, &node_env)?;
    cluster.up()?;
    let rt = runtime(2)?;
    let client = connect(&rt, &cluster.url)?.with_timeout(Duration::from_secs(600));
    let mut load = ClusterLoad::default();
    load_data(&rt, &client, &data, &params, args.batch, segment_max_rows, &mut load)?;
    let (secs, layout) = rt.block_on(load_replicas(&client, 1, data.n as u64))?;
    eprintln!("quiver: loaded with 1 replica after {secs:.1}s: {layout}");

    // The resize under load.
    let steady = Duration::from_secs_f64(args.steady_secs);
    let run = |d: Duration| -> anyhow::Result<LoadResult> {
        let watch = cluster.watched()?;
        quiver_threads(
            &cluster.url,
            &data,
            args.workload.k,
            search,
            Consistency::Eventually,
            args.threads,
            Duration::ZERO,
            d,
            &watch,
        )
    };
    let mut phases = vec![Phase { name: "before (unsized)", result: run(steady)? }];
    let size = NodeSize { cpu_millis: (args.resize_cpu * 1000.0).round() as u32, memory_bytes: 0 };
    let (during, resized) =
        std::thread::scope(|s| -> anyhow::Result<(LoadResult, anyhow::Result<(Duration, NodeSize)>)> {
            let window = s.spawn(|| run(Duration::from_secs_f64(args.window_secs)));
            std::thread::sleep(Duration::from_millis(500));
            let took = rt.block_on(resize(&client, size));
            let during = window.join().map_err(|_| anyhow!("the search window panicked"))??;
            Ok((during, took))
        })?;
    let (took, size) = resized?;
    phases.push(Phase { name: "window from the resize request", result: during });
    phases.push(Phase { name: "after (resized)", result: run(steady)? });

    // Idle, then one search.
    let (idle_wait, wake, startup_ms) = rt.block_on(idle_and_wake(&client, &data, args.workload.k, search))?;
    cluster.down()?;

    let mut md = String::new();
    let _ = writeln!(md, "### quiver-bench elastic: {} rows, dim {}, {} segments", data.n, data.dim, args.segments);
    let _ = writeln!(md, "\n{} ({} cores)\n", cpu_model(), available_cores());
    let _ = writeln!(md, "| phase | QPS | p50 ms | p99 ms | failed |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for p in &phases {
        let r = &p.result;
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2} | {:.2} | {} |",
            p.name,
            r.qps,
            r.p50_us / 1000.0,
            r.p99_us / 1000.0,
            r.errors
        );
    }
    let _ = writeln!(
        md,
        "\nResize of the query node to {size} (make-before-break) converged {:.1} s after the request.",
        took.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "Idle after {:.1} s without requests; the first search then took {:.2} s (the coordinator measured a \
         start-up of {:.2} s: nodes started, segments loaded, shards led).",
        idle_wait.as_secs_f64(),
        wake.as_secs_f64(),
        startup_ms as f64 / 1000.0
    );
    print_report(&md, args.run.out.as_deref())?;
    let failed: usize = phases.iter().map(|p| p.result.errors).sum();
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Resizes the query nodes and waits until the scaler converged on the new size; how long
/// that took, and the size.
async fn resize(client: &Client, size: NodeSize) -> anyhow::Result<(Duration, NodeSize)> {
    let t = Instant::now();
    let req = ScaleRequest { role: "querynode".into(), replicas: 0, size };
    let reply = client.scale_with(&req).await.context("resize")?;
    eprintln!("resize: querynode {} → {}", reply.previous_size, reply.size);
    loop {
        let s = client.scaling().await?;
        if let Some(r) = s.roles.iter().find(|r| r.role == Role::QueryNode) {
            if r.converged && r.resizing == 0 && r.size == reply.size {
                return Ok((t.elapsed(), reply.size));
            }
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("the resize did not converge in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (without data requests) until the cluster idles; then times one search.
async fn idle_and_wake(
    client: &Client,
    data: &Data,
    k: usize,
    search: SearchParams,
) -> anyhow::Result<(Duration, Duration, u64)> {
    let t = Instant::now();
    loop {
        if client.idling().await?.state == "idle" {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the cluster did not idle in 10 minutes: {:?}", client.idling().await?);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle_wait = t.elapsed();
    eprintln!("idle after {:.1} s; searching once", idle_wait.as_secs_f64());
    let req = search_request(data, 0, k, search, Consistency::Eventually);
    let t = Instant::now();
    client.search(&req).await.context("the search that wakes the cluster")?;
    let wake = t.elapsed();
    let startup = client.idling().await?.last_startup_ms;
    Ok((idle_wait, wake, startup))
}
