//! The kill phase: load with 2 replicas, SIGKILL a query node, and watch the layout recover.

use super::cluster::BenchCluster;
use super::*;

/// One search of a phase with a timeline.
#[derive(Clone)]
pub(super) struct Sample {
    pub(super) start: Instant,
    pub(super) end: Instant,
    pub(super) ok: bool,
    /// Hits in the exact top-k.
    pub(super) hits: u32,
    /// Why it failed.
    pub(super) error: Option<String>,
}

/// One benchmark client for [`drive_threads`]: its own runtime and NATS connection, searches
/// with consistency Eventually, every call recorded into `slot`, the first call's start into
/// `started`.
pub(super) fn sampled_search<'a>(
    url: &str,
    data: &'a Data,
    k: usize,
    search: SearchParams,
    started: &'a OnceLock<Instant>,
    slot: &'a Mutex<Vec<Sample>>,
) -> anyhow::Result<impl FnMut(usize) -> anyhow::Result<Vec<i64>> + 'a> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), Client::connect(url, CLUSTER)).await })
        .context("connecting a benchmark client timed out")??;
    Ok(move |q: usize| -> anyhow::Result<Vec<i64>> {
        let req = search_request(data, q, k, search, Consistency::Eventually);
        let t0 = Instant::now();
        started.get_or_init(|| t0);
        let res = rt.block_on(client.search(&req));
        let end = Instant::now();
        let ids = res.map(ids_of);
        let hits =
            ids.as_ref().map_or(0, |ids| ids.iter().take(k).filter(|id| data.truth[q].contains(*id)).count() as u32);
        let error = ids.as_ref().err().map(|e| format!("{e:#}"));
        if let Ok(mut v) = slot.lock() {
            v.push(Sample { start: t0, end, ok: ids.is_ok(), hits, error });
        }
        Ok(ids?)
    })
}

/// What the layout monitor saw after the kill (instants).
#[derive(Default)]
pub(super) struct Recovery {
    pub(super) killed_at: Option<Instant>,
    /// The supervisor's state file shows a new pid for the node.
    pub(super) restarted_at: Option<Instant>,
    pub(super) new_pid: Option<u32>,
    pub(super) last_exit: Option<String>,
    /// The registry lists the node with the new pid, healthy.
    pub(super) rejoined_at: Option<Instant>,
    /// The coordinator took the dead process's segments out of the layout (or the node out of
    /// its group).
    pub(super) dropped_at: Option<Instant>,
    /// Fully replicated again, with the killed node (if in a group) back as a new process that
    /// holds what the layout says.
    pub(super) replicated_at: Option<Instant>,
    /// Layout changes: (when, summary).
    pub(super) events: Vec<(Instant, String)>,
    pub(super) poll_errors: usize,
}

pub(super) struct KillReport {
    pub(super) node: String,
    pub(super) old_pid: u32,
    pub(super) threads: usize,
    pub(super) phase: Duration,
    pub(super) kill_after: Duration,
    pub(super) result: LoadResult,
    pub(super) samples: Vec<Sample>,
    pub(super) window_start: Instant,
    pub(super) recovery: Recovery,
    pub(super) layout_before: String,
    pub(super) recovery_timeout: Duration,
}

pub(super) fn kill_phase(
    args: &BenchReplicasArgs,
    data: &Data,
    search: &SearchParams,
    cluster: &BenchCluster,
    watch: &[Watched],
) -> anyhow::Result<KillReport> {
    let threads = args.kill_threads();
    let node = args.kill_node.clone();
    let registry_id = format!("{node}-querynode");
    let st = cluster.state()?;
    let old_pid = st
        .node(&node)
        .and_then(|p| p.pid)
        .ok_or_else(|| anyhow!("the supervisor's state lists no running process for {node}"))?;
    let rt = runtime(1)?;
    let client = rt.block_on(Client::connect(&cluster.url, CLUSTER))?.with_timeout(Duration::from_secs(5));
    let (registered, d) = rt.block_on(async {
        let status = client.status().await?;
        let d = client.distribution(COLLECTION).await?;
        anyhow::Ok((status.nodes.into_iter().find(|n| n.node_id == registry_id).map(|n| n.pid), d))
    })?;
    let layout_before = layout_summary(&d);
    let held_before = d.segments.iter().filter(|s| s.nodes.contains(&registry_id)).count();
    if registered != Some(old_pid) {
        bail!("{registry_id}: the supervisor runs pid {old_pid} but the registry lists {registered:?}");
    }
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let phase = Duration::from_secs_f64(args.kill_phase_secs);
    let kill_after = Duration::from_secs_f64(args.kill_after_secs);
    let recovery_timeout = Duration::from_secs_f64(args.recovery_timeout_secs);
    eprintln!(
        "kill phase: {threads} client(s), {:.0}s measured; SIGKILL {node} (pid {old_pid}) after {:.0}s; layout {layout_before}",
        phase.as_secs_f64(),
        kill_after.as_secs_f64()
    );

    let started: OnceLock<Instant> = OnceLock::new();
    let done = AtomicBool::new(false);
    let samples: Vec<Mutex<Vec<Sample>>> = (0..threads).map(|_| Mutex::new(Vec::with_capacity(64 * 1024))).collect();
    let (result, recovery) = std::thread::scope(|s| {
        let monitor = s.spawn(|| {
            let ctx = Monitor {
                rt: &rt,
                client: &client,
                cluster,
                node: &node,
                registry_id: &registry_id,
                old_pid,
                held_before,
                done: &done,
                recovery_timeout,
            };
            ctx.run(&started, warmup + kill_after)
        });
        let result = drive_threads(data, args.workload.k, threads, warmup, phase, watch, |t| {
            sampled_search(&cluster.url, data, args.workload.k, *search, &started, &samples[t])
        });
        done.store(true, Ordering::SeqCst);
        let recovery = monitor.join().unwrap_or_else(|_| Err(anyhow!("the layout monitor panicked")));
        (result, recovery)
    });
    let result = result?;
    let recovery = recovery?;
    let mut all: Vec<Sample> = samples.into_iter().flat_map(|m| m.into_inner().unwrap_or_default()).collect();
    all.sort_by_key(|s| s.start);
    let window_start = started.get().copied().unwrap_or_else(Instant::now) + warmup;
    Ok(KillReport {
        node,
        old_pid,
        threads,
        phase,
        kill_after,
        result,
        samples: all,
        window_start,
        recovery,
        layout_before,
        recovery_timeout,
    })
}

/// Kills the node at the right moment, then polls the supervisor's state, the registry and the
/// layout until the layout is fully replicated again (or the recovery timeout passes).
struct Monitor<'a> {
    pub(super) rt: &'a tokio::runtime::Runtime,
    pub(super) client: &'a Client,
    pub(super) cluster: &'a BenchCluster,
    pub(super) node: &'a str,
    pub(super) registry_id: &'a str,
    pub(super) old_pid: u32,
    /// Segments the node held before the kill.
    pub(super) held_before: usize,
    pub(super) done: &'a AtomicBool,
    pub(super) recovery_timeout: Duration,
}

/// Layout poll interval after the kill (a status and a distribution call to the proxy each).
pub(super) const POLL: Duration = Duration::from_millis(100);

impl Monitor<'_> {
    pub(super) fn run(&self, started: &OnceLock<Instant>, kill_at: Duration) -> anyhow::Result<Recovery> {
        let mut rec = Recovery::default();
        // The first search marks the start; give the clients 60 s to connect.
        let t = Instant::now();
        let first = loop {
            if let Some(s) = started.get() {
                break *s;
            }
            if self.done.load(Ordering::SeqCst) || t.elapsed() > Duration::from_secs(60) {
                return Ok(rec);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        std::thread::sleep((first + kill_at).saturating_duration_since(Instant::now()));
        sigkill_query_node(self.old_pid)?;
        let killed = Instant::now();
        rec.killed_at = Some(killed);
        eprintln!("kill phase: SIGKILLed {} (pid {})", self.node, self.old_pid);
        let mut last_summary = String::new();
        while killed.elapsed() < self.recovery_timeout {
            let now = Instant::now();
            if rec.restarted_at.is_none() {
                if let Some(p) = self.cluster.state().ok().as_ref().and_then(|st| st.node(self.node)) {
                    if p.pid.is_some_and(|pid| pid != self.old_pid) {
                        rec.restarted_at = Some(now);
                        rec.new_pid = p.pid;
                        rec.last_exit = p.last_exit.clone();
                        eprintln!(
                            "kill phase: supervisor restarted {} as pid {:?} after {:.2}s (restarts {}, last exit {:?})",
                            self.node,
                            p.pid,
                            now.duration_since(killed).as_secs_f64(),
                            p.restarts,
                            p.last_exit
                        );
                    }
                }
            }
            match self.rt.block_on(self.poll()) {
                Ok((back, d)) => {
                    if back.as_ref().is_some_and(|b| b.healthy) && rec.rejoined_at.is_none() {
                        rec.rejoined_at = Some(now);
                    }
                    let summary = layout_summary(&d);
                    if summary != last_summary {
                        rec.events.push((now, summary.clone()));
                        last_summary = summary;
                    }
                    let in_group = d.replicas.iter().any(|g| g.nodes.iter().any(|n| n == self.registry_id));
                    let held = d.segments.iter().filter(|s| s.nodes.iter().any(|n| n == self.registry_id)).count();
                    if rec.dropped_at.is_none() && (!in_group || held < self.held_before) {
                        rec.dropped_at = Some(now);
                    }
                    // Until the coordinator notices, the layout still lists the dead process as
                    // a holder. Its holdings count once the coordinator dropped and re-confirmed
                    // them, or once the new process itself reports holding as many segments
                    // (heartbeat, so up to node.heartbeat_interval late).
                    let node_ok = !in_group
                        || back.is_some_and(|b| b.healthy && (rec.dropped_at.is_some() || b.segments as usize == held));
                    if node_ok && fully_replicated(&d, 2).is_ok() {
                        rec.replicated_at = Some(now);
                        eprintln!(
                            "kill phase: fully replicated again {:.2}s after the kill",
                            now.duration_since(killed).as_secs_f64()
                        );
                        break;
                    }
                }
                Err(_) => rec.poll_errors += 1,
            }
            std::thread::sleep(POLL.saturating_sub(now.elapsed()));
        }
        Ok(rec)
    }

    /// The registry entry of the node's new process, if any; and the layout.
    pub(super) async fn poll(&self) -> anyhow::Result<(Option<NodeStatus>, Distribution)> {
        let status = self.client.status().await?;
        let back = status.nodes.into_iter().find(|n| n.node_id == self.registry_id && n.pid != self.old_pid);
        Ok((back, self.client.distribution(COLLECTION).await?))
    }
}

/// SIGKILL, after checking that the pid is still a query node process.
fn sigkill_query_node(pid: u32) -> anyhow::Result<()> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).with_context(|| format!("no process {pid}"))?;
    if !String::from_utf8_lossy(&cmdline).contains("querynode") {
        bail!("process {pid} is not a query node any more; not killing it");
    }
    let p = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) with a positive pid only signals that one process.
    if p <= 0 || unsafe { libc::kill(p, libc::SIGKILL) } != 0 {
        bail!("cannot SIGKILL {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Latency statistics of some samples, in µs.
pub(super) struct Stats {
    pub(super) calls: usize,
    pub(super) failed: usize,
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
    pub(super) recall: f64,
}

pub(super) fn stats<'a>(samples: impl Iterator<Item = &'a Sample>, k: usize) -> Stats {
    let (mut lat, mut failed, mut hits) = (Vec::new(), 0, 0u64);
    for s in samples {
        if s.ok {
            lat.push(s.end.duration_since(s.start).as_nanos() as u64);
            hits += u64::from(s.hits);
        } else {
            failed += 1;
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| match lat.len() {
        0 => f64::NAN,
        n => lat[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0,
    };
    Stats {
        calls: lat.len() + failed,
        failed,
        p50: pct(0.5),
        p99: pct(0.99),
        max: pct(1.0),
        recall: if lat.is_empty() { f64::NAN } else { hits as f64 / (lat.len() * k) as f64 },
    }
}
