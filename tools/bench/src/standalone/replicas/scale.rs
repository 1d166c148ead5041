//! `quiver-bench scale`: query nodes scaled 1 → N → 1 through the API while clients search
//! (MISSION issue 13), on the replicas bench's cluster, loading and sampled clients.
//!
//! 1. `quiver cluster up` with ONE query node in the cluster file (plus coordinator, proxy,
//!    data node, index node); the supervisor is the host agent the scaler starts new query
//!    nodes through (`qn-<n>`). Row-count balancer with the periodic balance on
//!    (`balance.interval` 2 s): new query nodes get their share through balance hand-offs.
//! 2. `--rows` rows in `--segments` sealed segments with the index, loaded with 1 replica.
//! 3. `--threads` closed-loop clients (consistency Eventually) for the whole run, every call
//!    recorded; meanwhile a controller holds `--steady-secs` at 1 node, calls
//!    `scale("querynode", --to)`, waits until the scaler converged, every query node holds a
//!    segment and the layout stayed unchanged `--stable-secs`, holds `--steady-secs`, calls
//!    `scale("querynode", 1)`, waits until converged with one query node left, holds
//!    `--steady-secs`. It polls the registry, the scaler and the layout every 250 ms.
//! 4. The report ([`super::scale_report`]): per second and per phase, the times from the
//!    scaler's events, and the hand-offs by reason. Any failed search fails the run.
//!
//! With `--scale-curve 1,2,4,8` it measures steady QPS at each query-node count instead,
//! scaling through the API between the steps (for machines with the cores to show it).

use super::cluster::{BenchCluster, ClusterSpec};
use super::kill::{sampled_search, Sample};
use super::report::{print_report, RunFacts};
use super::scale_report::{CurveStep, ScaleReport};
use super::*;
use quiver_client::{ClusterEvents, NodeState, Role};

#[derive(Args)]
pub struct BenchScaleArgs {
    #[command(flatten)]
    workload: Workload,
    /// Base rows to use (default: the whole file). Below the file size, exact ground truth is
    /// recomputed by brute force.
    #[arg(long)]
    rows: Option<usize>,
    /// Sealed segments the data is cut into (datanode.segment_max_rows = ceil(rows / segments)).
    #[arg(long, default_value_t = 8)]
    segments: usize,
    /// Rows per insert call.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Closed-loop search clients, running for the whole timeline.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds held at each node count (1, --to, back to 1; each step of --scale-curve).
    #[arg(long, default_value_t = 10.0)]
    steady_secs: f64,
    /// Query nodes to scale out to.
    #[arg(long, default_value_t = 3)]
    to: u32,
    /// Seconds the layout must stay unchanged before the hand-offs count as finished.
    #[arg(long, default_value_t = 5.0)]
    stable_secs: f64,
    /// Longest wait for each scale-out or scale-in to finish.
    #[arg(long, default_value_t = 180.0)]
    change_timeout_secs: f64,
    /// Instead of the 1 → --to → 1 timeline: steady QPS at each of these query-node counts,
    /// comma separated (e.g. 1,2,4,8), scaling through the API between the steps.
    #[arg(long, value_delimiter = ',')]
    scale_curve: Vec<u32>,
    #[command(flatten)]
    run: ClusterRunArgs,
}

/// The bench's node environment besides the replicas bench's: the periodic balance on, so new
/// query nodes get their share by hand-offs, and a fast scaler.
const SCALE_ENV: [(&str, &str); 1] = [("QUIVER_SCALING__INTERVAL", "500ms")];

/// `[balance] interval` of the bench's cluster.
pub(super) const BALANCE_INTERVAL: &str = "2s";

/// Registry, scaler and layout poll interval.
pub(super) const POLL: Duration = Duration::from_millis(250);

impl BenchScaleArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.threads == 0 || self.segments == 0 || self.workload.k == 0 || self.batch == 0 {
            bail!("--threads, --segments, -k and --batch must be at least 1");
        }
        if self.to < 2 {
            bail!("--to must be at least 2 (the cluster starts with 1 query node)");
        }
        if self.scale_curve.contains(&0) {
            bail!("--scale-curve wants query-node counts of at least 1, e.g. 1,2,4,8");
        }
        for (name, v) in [
            ("--steady-secs", self.steady_secs),
            ("--stable-secs", self.stable_secs),
            ("--change-timeout-secs", self.change_timeout_secs),
        ] {
            if !v.is_finite() || v <= 0.0 {
                bail!("{name} must be a positive number of seconds, got {v}");
            }
        }
        Ok(())
    }
}

pub fn bench_scale(args: BenchScaleArgs) -> anyhow::Result<i32> {
    args.check()?;
    let mut node_env: Vec<(String, String)> = SCALE_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    node_env.extend(parse_node_env(&args.run.node_env)?);
    let threads = args.threads.to_string();
    let bench_args = standalone_args(&args.workload, args.rows, &["--threads", &threads])?;
    let (params, search) = args.workload.params()?;
    let data = Data::load(&bench_args, params.metric)?;
    let segment_max_rows = data.n.div_ceil(args.segments).max(1);
    let spec = ClusterSpec {
        bench: "scale",
        query_nodes: vec!["qn1".into()],
        segment_max_rows,
        balance_interval: BALANCE_INTERVAL,
        restart_backoff_secs: 1.0,
        keep: args.run.keep,
    };
    let mut report = ScaleReport {
        facts: RunFacts::new(cpu_model(), &args.workload, &data, &params, search),
        k: args.workload.k,
        threads: args.threads,
        to: args.to,
        steady: Duration::from_secs_f64(args.steady_secs),
        stable: Duration::from_secs_f64(args.stable_secs),
        segment_max_rows,
        node_env: node_env.clone(),
        load: ClusterLoad::default(),
        timeline: None,
        curve: Vec::new(),
    };
    let mut cluster = BenchCluster::create(&spec, &node_env)?;
    cluster.up()?;
    let rt = runtime(2)?;
    let client = connect(&rt, &cluster.url)?.with_timeout(Duration::from_secs(5));
    load_data(&rt, &client, &data, &params, args.batch, segment_max_rows, &mut report.load)?;
    let (secs, layout) = rt.block_on(load_replicas(&client, 1, data.n as u64))?;
    eprintln!("quiver: loaded with 1 replica after {secs:.1}s: {layout}");
    report.load.loads.push((1, secs, layout));
    std::thread::sleep(Duration::from_secs(2));
    report.load.processes = cluster.processes()?;
    let watch = cluster.watched()?;
    let ctl = Controller { rt: &rt, client: &client, args: &args };
    if args.scale_curve.is_empty() {
        report.timeline = Some(run_timeline(&args, &data, &search, &cluster, &watch, &ctl)?);
    } else {
        for &n in &args.scale_curve {
            report.curve.push(ctl.curve_step(n, &cluster, &data, &search)?);
        }
    }
    cluster.down()?;
    report.facts.finish();
    print_report(&report.markdown(), args.run.out.as_deref())?;
    let failed = report.failed_searches();
    if !failed.is_empty() {
        eprintln!("{} searches failed:", failed.len());
        for (at, why) in &failed {
            eprintln!("  +{at:.3} s: {why}");
        }
        return Ok(1);
    }
    Ok(0)
}

/// What the run saw, against the clients' samples.
pub(super) struct Timeline {
    pub(super) samples: Vec<Sample>,
    pub(super) result: LoadResult,
    /// The first search's start.
    pub(super) t0: Instant,
    pub(super) marks: Marks,
    pub(super) polls: Vec<Poll>,
    pub(super) poll_errors: usize,
    /// The scaler's events and the hand-offs from the first scale request on.
    pub(super) events: ClusterEvents,
}

/// The controller's steps and what it saw (instants, and the wall-clock ms of the requests to
/// place the coordinator's events).
#[derive(Default)]
pub(super) struct Marks {
    pub(super) out_requested: Option<(Instant, u64)>,
    /// The scaler converged on --to serving query nodes.
    pub(super) out_converged: Option<Instant>,
    /// Each new query node's first poll holding a segment.
    pub(super) first_held: BTreeMap<String, Instant>,
    /// The last layout change before it stayed unchanged for --stable-secs.
    pub(super) out_last_change: Option<Instant>,
    pub(super) out_settled: Option<Instant>,
    pub(super) in_requested: Option<(Instant, u64)>,
    pub(super) in_converged: Option<Instant>,
    pub(super) end: Option<Instant>,
}

/// One poll of the registry, the scaler and the layout.
pub(super) struct Poll {
    pub(super) at: Instant,
    /// Query nodes registered and serving.
    pub(super) serving: Vec<String>,
    pub(super) converged: bool,
    pub(super) desired: u32,
    /// Segment id → holders.
    pub(super) layout: BTreeMap<u64, Vec<String>>,
}

impl Poll {
    fn holds(&self, node: &str) -> bool {
        self.layout.values().any(|h| h.iter().any(|n| n == node))
    }
}

fn run_timeline(
    args: &BenchScaleArgs,
    data: &Data,
    search: &SearchParams,
    cluster: &BenchCluster,
    watch: &[Watched],
    ctl: &Controller,
) -> anyhow::Result<Timeline> {
    let started: OnceLock<Instant> = OnceLock::new();
    let stop = AtomicBool::new(false);
    let samples: Vec<Mutex<Vec<Sample>>> =
        (0..args.threads).map(|_| Mutex::new(Vec::with_capacity(64 * 1024))).collect();
    // The clients end when the controller is done, at the latest after every wait timed out.
    let cap = Duration::from_secs_f64(4.0 * args.steady_secs + 3.0 * args.change_timeout_secs + 60.0);
    let (result, steps) = std::thread::scope(|s| {
        let controller = s.spawn(|| {
            let steps = ctl.timeline(&started);
            stop.store(true, Ordering::SeqCst);
            steps
        });
        let result = drive_threads_until(data, args.workload.k, args.threads, Duration::ZERO, cap, &stop, watch, |t| {
            sampled_search(&cluster.url, data, args.workload.k, *search, &started, &samples[t])
        });
        // A client that could not start ends the load; the controller must not wait for it.
        stop.store(true, Ordering::SeqCst);
        let steps = controller.join().unwrap_or_else(|_| Err(anyhow!("the scale controller panicked")));
        (result, steps)
    });
    let (marks, polls, poll_errors) = steps?;
    let result = result?;
    let mut samples: Vec<Sample> = samples.into_iter().flat_map(|m| m.into_inner().unwrap_or_default()).collect();
    samples.sort_by_key(|s| s.start);
    let t0 = started.get().copied().ok_or_else(|| anyhow!("no search ran"))?;
    let since_ms = marks.out_requested.map_or(0, |(_, ms)| ms);
    let mut events = ctl.rt.block_on(retry("events", || ctl.client.events()))?;
    events.handoffs.retain(|e| e.at_ms >= since_ms);
    events.scaling.retain(|e| e.at_ms >= since_ms);
    Ok(Timeline { samples, result, t0, marks, polls, poll_errors, events })
}

/// Drives the cluster's size through the API and watches it.
struct Controller<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: &'a Client,
    args: &'a BenchScaleArgs,
}

/// What a wait for a node count found: when the scaler converged, each node's first poll
/// holding a segment, the last layout change, and when the layout had been still long enough.
#[derive(Default)]
struct Settled {
    converged: Option<Instant>,
    first_held: BTreeMap<String, Instant>,
    last_change: Option<Instant>,
    at: Option<Instant>,
}

impl Controller<'_> {
    fn timeline(&self, started: &OnceLock<Instant>) -> anyhow::Result<(Marks, Vec<Poll>, usize)> {
        let (mut marks, mut polls, mut errors) = (Marks::default(), Vec::new(), 0);
        let t = Instant::now();
        while started.get().is_none() {
            if t.elapsed() > Duration::from_secs(60) {
                bail!("no search started within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let steady = Duration::from_secs_f64(self.args.steady_secs);
        let to = self.args.to;
        self.hold(steady, &mut polls, &mut errors);

        marks.out_requested = Some(self.scale(to)?);
        let before: Vec<String> = polls.last().map(|p: &Poll| p.serving.clone()).unwrap_or_default();
        let s = self.settle(to, &mut polls, &mut errors)?;
        marks.out_converged = s.converged;
        marks.first_held = s.first_held.into_iter().filter(|(n, _)| !before.contains(n)).collect();
        marks.out_last_change = s.last_change;
        marks.out_settled = s.at;
        self.hold(steady, &mut polls, &mut errors);

        marks.in_requested = Some(self.scale(1)?);
        let s = self.settle(1, &mut polls, &mut errors)?;
        marks.in_converged = s.converged;
        self.hold(steady, &mut polls, &mut errors);
        marks.end = Some(Instant::now());
        Ok((marks, polls, errors))
    }

    /// `scale("querynode", n)`; returns when it was asked, as an instant and wall-clock ms.
    fn scale(&self, n: u32) -> anyhow::Result<(Instant, u64)> {
        let at = (Instant::now(), wall_ms());
        let reply = self.rt.block_on(self.client.scale("querynode", n)).context("scale querynode")?;
        eprintln!(
            "scale: querynode {} → {}{}",
            reply.previous,
            reply.replicas,
            match reply.warning.is_empty() {
                true => String::new(),
                false => format!(" ({})", reply.warning),
            }
        );
        Ok(at)
    }

    /// Polls for `d`.
    fn hold(&self, d: Duration, polls: &mut Vec<Poll>, errors: &mut usize) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.poll_into(polls, errors);
            std::thread::sleep(POLL.min(end.saturating_duration_since(Instant::now())));
        }
    }

    fn poll_into(&self, polls: &mut Vec<Poll>, errors: &mut usize) {
        match self.rt.block_on(self.poll()) {
            Ok(p) => polls.push(p),
            Err(_) => *errors += 1,
        }
    }

    async fn poll(&self) -> anyhow::Result<Poll> {
        let status = self.client.status().await?;
        let d = self.client.distribution(COLLECTION).await?;
        let at = Instant::now();
        let mut serving: Vec<String> = status
            .nodes
            .iter()
            .filter(|n| n.role == Role::QueryNode && n.state == NodeState::Serving && n.healthy)
            .map(|n| n.node_id.clone())
            .collect();
        serving.sort();
        let qn = status.roles.iter().find(|r| r.role == Role::QueryNode);
        let layout = d
            .segments
            .iter()
            .filter(|s| s.segment.state != SegmentState::Dropped)
            .map(|s| {
                let mut holders = s.nodes.clone();
                holders.sort();
                (s.segment.id, holders)
            })
            .collect();
        Ok(Poll {
            at,
            serving,
            converged: qn.is_some_and(|r| r.converged),
            desired: qn.map_or(0, |r| r.desired),
            layout,
        })
    }

    /// Polls until the scaler converged on `n` serving query nodes, every one of them holds a
    /// segment (when there are as many segments), every segment has one holder, and the
    /// layout stayed unchanged for --stable-secs.
    fn settle(&self, n: u32, polls: &mut Vec<Poll>, errors: &mut usize) -> anyhow::Result<Settled> {
        let stable = Duration::from_secs_f64(self.args.stable_secs);
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.change_timeout_secs);
        let mut st = Settled::default();
        let mut why = String::from("no poll answered");
        let from = polls.len();
        loop {
            self.poll_into(polls, errors);
            if let Some(p) = polls.last().filter(|_| polls.len() > from) {
                let changed = polls.len() < 2 || polls[polls.len() - 2].layout != p.layout;
                if changed || st.last_change.is_none() {
                    st.last_change = Some(p.at);
                }
                for node in p.serving.iter().filter(|node| p.holds(node)) {
                    st.first_held.entry(node.clone()).or_insert(p.at);
                }
                let converged = p.converged && p.desired == n && p.serving.len() == n as usize;
                if converged && st.converged.is_none() {
                    st.converged = Some(p.at);
                    eprintln!("scale: converged on {n} query node(s): {:?}", p.serving);
                }
                let idle: Vec<&String> = p.serving.iter().filter(|node| !p.holds(node)).collect();
                let shared = idle.is_empty() || p.layout.len() < n as usize;
                let single = p.layout.values().all(|h| h.len() == 1);
                let still = st.last_change.is_some_and(|c| p.at.duration_since(c) >= stable);
                if converged && shared && single && still {
                    st.at = Some(p.at);
                    return Ok(st);
                }
                why = match (converged, shared, single) {
                    (false, _, _) => {
                        format!("scaler: {} serving, desired {}, converged {}", p.serving.len(), p.desired, p.converged)
                    }
                    (_, false, _) => format!("{idle:?} hold no segment"),
                    (_, _, false) => "a segment has several holders (hand-off under way)".to_string(),
                    _ => "the layout changed less than --stable-secs ago".to_string(),
                };
            }
            if Instant::now() > deadline {
                bail!("{n} query node(s) not settled after {} s: {why}", self.args.change_timeout_secs);
            }
            std::thread::sleep(POLL);
        }
    }

    /// `--scale-curve`: scale to `n`, settle, then measure `--steady-secs` of search.
    fn curve_step(
        &self,
        n: u32,
        cluster: &BenchCluster,
        data: &Data,
        search: &SearchParams,
    ) -> anyhow::Result<CurveStep> {
        let (asked, _) = self.scale(n)?;
        let (mut polls, mut errors) = (Vec::new(), 0);
        let settled = self.settle(n, &mut polls, &mut errors)?;
        let took = settled.at.unwrap_or_else(Instant::now).duration_since(asked);
        let layout = self.rt.block_on(retry("distribution", || self.client.distribution(COLLECTION)))?;
        // Proxies refetch the layout on the coordinator's event; give them a moment.
        std::thread::sleep(Duration::from_secs(1));
        let watch = cluster.watched()?;
        let result = quiver_threads(
            &cluster.url,
            data,
            self.args.workload.k,
            *search,
            Consistency::Eventually,
            self.args.threads,
            Duration::from_secs(1),
            Duration::from_secs_f64(self.args.steady_secs),
            &watch,
        )?;
        eprintln!(
            "curve: {n} query node(s) after {:.1}s: {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, {} errors",
            took.as_secs_f64(),
            result.qps,
            result.p50_us,
            result.p99_us,
            result.errors
        );
        Ok(CurveStep { nodes: n, settle: took, layout: layout_summary(&layout), result })
    }
}

/// Wall-clock ms since the epoch (the coordinator's events carry these).
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
