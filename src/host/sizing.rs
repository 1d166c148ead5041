//! Node sizes on a host: how a host agent holds a sized node (`StartNode.size`, in the seed's
//! unit of 1 CPU : 4 GiB) to its CPU and memory. The mode is `host.enforcement`; `auto` takes
//! the first of `cgroup-v2`, `cgroup-v1`, `affinity` that works on this host, and the agent
//! reports the one in effect in its heartbeat (`quiver ctl status`).
//!
//! What each mode really guarantees:
//!
//! - `cgroup-v2`, `cgroup-v1`: the kernel enforces both. CPU: a CFS quota (`cpu.max`, or
//!   `cpu.cfs_quota_us` / `cpu.cfs_period_us`) of the size's CPU per 100 ms period, on any of
//!   the host's cores: a 1.5-CPU node gets at most 150 ms of CPU time every 100 ms, however
//!   many threads it runs. Memory: a hard limit (`memory.max`, or `memory.limit_in_bytes`)
//!   equal to the size; a node that goes beyond it (after the kernel has reclaimed what it
//!   can, page cache first) is killed with SIGKILL. Each such kill is an OOM event: counted in
//!   the node's `oom_kills` (across its restarts), and the node is restarted as after any
//!   exit. Swap is not allowed to stretch the limit where the host accounts for it
//!   (`memory.swap.max` = 0, `memory.memsw.limit_in_bytes` = the limit).
//! - `affinity`: CPU only, by whole cores: the node's threads may run on ceil(CPU) of the
//!   agent's cores (`sched_setaffinity`), the least used by other sized nodes first, so a
//!   1.5-CPU node may use 2 full cores. Memory is held only by the node's own budget (below),
//!   which refuses loads but cannot stop other allocations (a large search, an index build):
//!   nothing kills a node that goes beyond its size, and `oom_kills` stays 0.
//! - `none`: neither; only the budget and the thread counts below.
//!
//! In every mode a sized node is also started with its memory budget and thread counts:
//! `node.memory_limit_mb` = the size's memory (a query node refuses segment loads beyond it
//! and reports each refusal as an OOM event), and `node.io_threads` (at least 2),
//! `querynode.search_threads`, `indexnode.build_threads` and `OMP_NUM_THREADS` = the size's
//! CPU rounded up. The kernel limit equals the budget, not more: the node refuses loads before
//! the kernel would kill it for them, and what the budget does not count (the runtime, request
//! buffers, a build's scratch space) is what can still get it killed. An unsized node
//! (0 CPU, 0 memory) gets none of this: it may use the whole host.
//!
//! Cgroups: a node's cgroup is `<the agent's cgroup>/quiver-<host id>/<agent pid>/<node id>`
//! (in each of the v1 `cpu` and `memory` hierarchies), made when the node starts, re-used (or
//! made again if gone) when it is restarted, removed once it has stopped for good. The pid
//! level keeps apart two agents of the same id on one machine (of two clusters, whose node ids
//! may be the same too). An agent removes, when it starts, what agents of its id that are gone
//! left behind (node cgroups with no process in them). Under cgroup v2 the agent's own
//! cgroup must have the `cpu` and `memory` controllers (systemd: `Delegate=yes`); since a v2
//! cgroup that holds processes cannot hand controllers to its children, an agent that is
//! alone in its cgroup moves itself into `<its cgroup>/quiver-agent` first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use quiver_runtime::{Error, Result};
use quiver_schemas::NodeSize;

use crate::process::Placement;

/// The CFS period written with every quota (the kernel's default, 100 ms).
const PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel takes (1 ms per period).
const MIN_QUOTA_US: u64 = 1_000;
/// Under cgroup v2, the leaf cgroup the agent moves itself into (see the module doc).
const AGENT_LEAF: &str = "quiver-agent";
/// Most search threads a node may be given (`querynode.search_threads` is validated so).
const MAX_SEARCH_THREADS: u64 = 1024;

/// How node sizes are enforced on a host (`host.enforcement`; see the module doc for what
/// each guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// `cpu.max` and `memory.max` in a cgroup v2 of the node's own.
    CgroupV2,
    /// `cpu.cfs_quota_us` and `memory.limit_in_bytes` in cgroup v1 `cpu` and `memory` cgroups.
    CgroupV1,
    /// CPU affinity to whole cores; memory by the node's own budget only.
    Affinity,
    /// Only the node's memory budget and thread counts.
    None,
}

impl Enforcement {
    /// What `auto` tries, in this order.
    pub const AUTO: [Enforcement; 3] = [Enforcement::CgroupV2, Enforcement::CgroupV1, Enforcement::Affinity];
    /// Every mode.
    pub const ALL: [Enforcement; 4] =
        [Enforcement::CgroupV2, Enforcement::CgroupV1, Enforcement::Affinity, Enforcement::None];

    /// The mode's name in `host.enforcement` and in `HostStatus.enforcement`.
    pub fn name(self) -> &'static str {
        match self {
            Enforcement::CgroupV2 => "cgroup-v2",
            Enforcement::CgroupV1 => "cgroup-v1",
            Enforcement::Affinity => "affinity",
            Enforcement::None => "none",
        }
    }

    /// The mode of that name (`auto` is not one).
    pub fn parse(name: &str) -> Option<Enforcement> {
        Enforcement::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The mode for `host.enforcement` = `configured`: `auto` is the first of [`Self::AUTO`]
    /// usable here (else `none`); a mode named explicitly must be usable here, else the error
    /// says why it is not.
    pub fn detect(configured: &str) -> Result<Enforcement> {
        if configured == "auto" {
            let mut skipped = Vec::new();
            for mode in Enforcement::AUTO {
                match mode.usable() {
                    Ok(()) => {
                        tracing::info!(enforcement = mode.name(), skipped = ?skipped, "node sizes: enforcement chosen");
                        return Ok(mode);
                    }
                    Err(why) => skipped.push(format!("{}: {why}", mode.name())),
                }
            }
            tracing::warn!(skipped = ?skipped, "node sizes: no enforcement works here; only budgets and thread counts");
            return Ok(Enforcement::None);
        }
        let mode = Enforcement::parse(configured).ok_or_else(|| {
            Error::Config(format!(
                "host.enforcement = {configured:?}: must be auto, cgroup-v2, cgroup-v1, affinity or none"
            ))
        })?;
        mode.usable().map_err(|why| {
            Error::Config(format!(
                "host.enforcement = {}: not usable on this host: {why}; set host.enforcement = auto to use what \
                 works here",
                mode.name()
            ))
        })?;
        Ok(mode)
    }

    /// Whether the mode works on this host now, or why not. Probing a cgroup mode creates and
    /// removes a test cgroup; under cgroup v2 it may move this process into a leaf cgroup of
    /// its own (see the module doc).
    pub fn usable(self) -> std::result::Result<(), String> {
        probe(self).map(|_| ())
    }
}

impl std::fmt::Display for Enforcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a mode puts nodes.
#[derive(Debug, Clone, PartialEq)]
enum Layout {
    /// The agent's cgroup v2: node cgroups go below it.
    V2 {
        base: PathBuf,
    },
    /// The agent's cgroups in the v1 `cpu` and `memory` hierarchies.
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
    },
    /// The CPUs the agent may run on.
    Affinity {
        cpus: Vec<usize>,
    },
    None,
}

fn probe(mode: Enforcement) -> std::result::Result<Layout, String> {
    match mode {
        Enforcement::CgroupV2 => probe_v2(),
        Enforcement::CgroupV1 => probe_v1(),
        Enforcement::Affinity => allowed_cpus().map(|cpus| Layout::Affinity { cpus }),
        Enforcement::None => Ok(Layout::None),
    }
}

/// What a sized node is started with: environment on top of the launcher's, and its placement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeLimits {
    pub env: Vec<(String, String)>,
    pub placement: Placement,
}

/// Holds the sized nodes of one host agent to their sizes (see the module doc).
pub struct Sizer {
    mode: Enforcement,
    /// Where nodes go, or why the mode stopped working since it was detected.
    layout: std::result::Result<Layout, String>,
    host_id: String,
    /// This agent's level below the host root: its pid, so that two agents of the same id on
    /// one machine (of different clusters) never share a node cgroup.
    agent: String,
    /// Cores of the host (as the heartbeat reports them): larger sizes are refused.
    host_cpus: u32,
    /// Memory of the machine: larger sizes are refused.
    host_memory: u64,
    /// Sized nodes placed and not released, with the cores each holds (affinity).
    placed: HashMap<String, Vec<usize>>,
    /// Node cgroups that could not be removed yet (a process still in them); retried.
    leftovers: Vec<PathBuf>,
    /// Cgroups were made since [`Sizer::tidy`] last found nothing placed.
    dirty: bool,
}

impl Sizer {
    /// The sizer of agent `host_id` in `mode`; removes the empty node cgroups a previous agent
    /// of this id left behind.
    pub fn new(mode: Enforcement, host_id: &str) -> Sizer {
        let layout = probe(mode);
        if let Err(why) = &layout {
            tracing::error!(enforcement = mode.name(), error = %why, "cannot enforce node sizes; sized nodes refused");
        }
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let host_memory = quiver_runtime::telemetry::machine_memory();
        let mut sizer = Sizer::with_layout(mode, layout, host_id, host_cpus, host_memory);
        sizer.remove_stale();
        sizer
    }

    fn with_layout(
        mode: Enforcement,
        layout: std::result::Result<Layout, String>,
        host_id: &str,
        host_cpus: u32,
        host_memory: u64,
    ) -> Sizer {
        Sizer {
            mode,
            layout,
            host_id: host_id.into(),
            agent: std::process::id().to_string(),
            host_cpus,
            host_memory,
            placed: HashMap::new(),
            leftovers: Vec::new(),
            dirty: false,
        }
    }

    /// The mode in effect.
    pub fn mode(&self) -> Enforcement {
        self.mode
    }

    /// The cgroups of the agents of this id: `<agent's cgroup>/quiver-<host id>` (one per v1
    /// hierarchy); none without cgroups.
    fn host_roots(&self) -> Vec<PathBuf> {
        let name = format!("quiver-{}", self.host_id);
        match &self.layout {
            Ok(Layout::V2 { base }) => vec![base.join(name)],
            Ok(Layout::V1 { cpu, memory }) => vec![cpu.join(&name), memory.join(&name)],
            _ => Vec::new(),
        }
    }

    /// This agent's cgroups for its nodes: `<host root>/<agent pid>`.
    fn agent_dirs(&self) -> Vec<PathBuf> {
        self.host_roots().into_iter().map(|r| r.join(&self.agent)).collect()
    }

    /// The cgroups of node `node_id` (v2: one; v1: `cpu`, then `memory`), existing or not.
    pub fn node_cgroups(&self, node_id: &str) -> Vec<PathBuf> {
        self.agent_dirs().into_iter().map(|r| r.join(node_id)).collect()
    }

    /// Removes what agents of this id that are gone left behind: their node cgroups with no
    /// process left in them, then their own and the host root if empty. Those of a live agent
    /// of the same id (another cluster's, on this machine) are left alone.
    fn remove_stale(&mut self) {
        for root in self.host_roots() {
            let Ok(entries) = std::fs::read_dir(&root) else { continue };
            for dir in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let alive = name.parse::<u32>().is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if name == self.agent || alive {
                    continue;
                }
                // An agent's cgroup holds its nodes'; a node cgroup (older layout) holds none.
                let nodes: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map(|e| e.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
                    .unwrap_or_default();
                for node in nodes.iter().chain([&dir]) {
                    match cgroup_procs(node) {
                        Ok(procs) if procs.is_empty() => match std::fs::remove_dir(node) {
                            Ok(()) => tracing::info!(cgroup = %node.display(), "removed a stale node cgroup"),
                            Err(e) => {
                                tracing::warn!(cgroup = %node.display(), error = %e, "cannot remove a stale cgroup")
                            }
                        },
                        Ok(procs) => tracing::warn!(
                            cgroup = %node.display(),
                            ?procs,
                            "a stale node cgroup still holds processes; left in place"
                        ),
                        Err(e) => {
                            tracing::warn!(cgroup = %node.display(), error = %e, "cannot read a stale cgroup")
                        }
                    }
                }
            }
            let _ = std::fs::remove_dir(&root);
        }
    }

    /// Whether this host can hold node `node_id` of `size`, with no side effects: both CPU and
    /// memory or neither (`InvalidArgument`), no more than the host has (`ResourceExhausted`),
    /// the mode still working (`Unavailable`). Unsized is always fine.
    pub fn check(&self, node_id: &str, size: NodeSize) -> Result<()> {
        if size.is_unsized() {
            return Ok(());
        }
        if size.cpu_millis == 0 || size.memory_bytes == 0 {
            return Err(Error::InvalidArgument(format!(
                "node {node_id}: a size of {} CPU and {} bytes of memory: a size needs both CPU and memory (or \
                 neither, for an unsized node)",
                f64::from(size.cpu_millis) / 1000.0,
                size.memory_bytes
            )));
        }
        if u64::from(size.cpu_millis) > u64::from(self.host_cpus) * 1000 || size.memory_bytes > self.host_memory {
            return Err(Error::ResourceExhausted(format!(
                "host {} cannot hold node {node_id} of {size}: it has {} CPU and {} of memory; start the node on a \
                 larger host, or make it smaller",
                self.host_id,
                self.host_cpus,
                gib(self.host_memory)
            )));
        }
        if let Err(why) = &self.layout {
            return Err(Error::Unavailable(format!(
                "host {}: cannot enforce node sizes with {}: {why}",
                self.host_id,
                self.mode.name()
            )));
        }
        Ok(())
    }

    /// Sets up the limits of node `node_id` of `size` ([`Sizer::check`] first): its cgroups
    /// (made with their limits, or re-used), its cores, its environment. An unsized node gets
    /// nothing. Undo with [`Sizer::release`].
    pub fn place(&mut self, node_id: &str, size: NodeSize) -> Result<NodeLimits> {
        self.check(node_id, size)?;
        if size.is_unsized() {
            return Ok(NodeLimits::default());
        }
        let mut placement = Placement::default();
        self.dirty = true;
        let cores = match &self.layout {
            Ok(Layout::V2 { base }) => {
                let dir = self.setup_v2(base, node_id, size).map_err(|why| self.setup_error(node_id, size, why))?;
                placement.cgroups = vec![dir];
                Vec::new()
            }
            Ok(Layout::V1 { cpu, memory }) => {
                let dirs =
                    self.setup_v1(cpu, memory, node_id, size).map_err(|why| self.setup_error(node_id, size, why))?;
                placement.cgroups = dirs;
                Vec::new()
            }
            Ok(Layout::Affinity { cpus }) => {
                let cores = self.least_used(node_id, cpus, size.cpu_millis.div_ceil(1000) as usize);
                placement.cpus = cores.clone();
                cores
            }
            _ => Vec::new(),
        };
        self.placed.insert(node_id.to_string(), cores);
        tracing::info!(node = node_id, %size, enforcement = self.mode.name(), placement = %placement, "node sized");
        Ok(NodeLimits { env: node_env(size), placement })
    }

    fn setup_error(&self, node_id: &str, size: NodeSize, why: String) -> Error {
        for dir in self.node_cgroups(node_id) {
            let _ = std::fs::remove_dir(&dir);
        }
        Error::Unavailable(format!("host {}: cannot set up the cgroup of node {node_id} ({size}): {why}", self.host_id))
    }

    fn setup_v2(&self, base: &Path, node_id: &str, size: NodeSize) -> std::result::Result<PathBuf, String> {
        let root = base.join(format!("quiver-{}", self.host_id));
        let agent = root.join(&self.agent);
        for parent in [base, &root, &agent] {
            make_dir(parent)?;
            enable_controllers(parent).map_err(|e| format!("{}/cgroup.subtree_control: {e}", parent.display()))?;
        }
        let dir = agent.join(node_id);
        make_dir(&dir)?;
        write(&dir.join("cpu.max"), &format!("{} {PERIOD_US}", quota_us(size.cpu_millis)))?;
        write(&dir.join("memory.max"), &size.memory_bytes.to_string())?;
        // Best effort: only where the host has swap accounting, and the group kill only on
        // kernels that have it.
        write_if_present(&dir.join("memory.swap.max"), "0");
        write_if_present(&dir.join("memory.oom.group"), "1");
        Ok(dir)
    }

    fn setup_v1(
        &self,
        cpu: &Path,
        memory: &Path,
        node_id: &str,
        size: NodeSize,
    ) -> std::result::Result<Vec<PathBuf>, String> {
        let name = format!("quiver-{}", self.host_id);
        let cpu_dir = cpu.join(&name).join(&self.agent).join(node_id);
        make_dir(&cpu_dir)?;
        write(&cpu_dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
        write(&cpu_dir.join("cpu.cfs_quota_us"), &quota_us(size.cpu_millis).to_string())?;
        let mem_dir = memory.join(&name).join(&self.agent).join(node_id);
        make_dir(&mem_dir)?;
        // memsw (memory + swap) may never be below the memory limit: lift it, set the limit,
        // then bring memsw down to it. Present only where the host accounts for swap.
        let memsw = mem_dir.join("memory.memsw.limit_in_bytes");
        write_if_present(&memsw, "-1");
        write(&mem_dir.join("memory.limit_in_bytes"), &size.memory_bytes.to_string())?;
        write_if_present(&memsw, &size.memory_bytes.to_string());
        Ok(vec![cpu_dir, mem_dir])
    }

    /// Makes the cgroups of placed node `node_id` again if they are gone (an operator, or an
    /// agent of the same id that took them for stale while the node waited to be restarted):
    /// called before each restart, since the node joins them on every start.
    pub fn ensure(&self, node_id: &str, size: NodeSize) {
        let dirs = self.node_cgroups(node_id);
        if !self.placed.contains_key(node_id) || dirs.iter().all(|d| d.is_dir()) {
            return;
        }
        let made = match &self.layout {
            Ok(Layout::V2 { base }) => self.setup_v2(base, node_id, size).map(|_| ()),
            Ok(Layout::V1 { cpu, memory }) => self.setup_v1(cpu, memory, node_id, size).map(|_| ()),
            _ => Ok(()),
        };
        match made {
            Ok(()) => tracing::warn!(node = node_id, %size, "the node's cgroups were gone; made them again"),
            Err(why) => tracing::warn!(node = node_id, %size, error = %why, "cannot make the node's cgroups again"),
        }
    }

    /// `n` of `allowed`, those held by the fewest other placed nodes first (then the lowest).
    fn least_used(&self, node_id: &str, allowed: &[usize], n: usize) -> Vec<usize> {
        let mut uses: HashMap<usize, usize> = HashMap::new();
        for core in self.placed.iter().filter(|(id, _)| id.as_str() != node_id).flat_map(|(_, c)| c) {
            *uses.entry(*core).or_default() += 1;
        }
        let mut order = allowed.to_vec();
        order.sort_by_key(|c| (uses.get(c).copied().unwrap_or(0), *c));
        order.truncate(n.max(1));
        order.sort_unstable();
        order
    }

    /// Times the kernel killed a process of node `node_id` for going beyond its memory limit,
    /// as its cgroup counts them (since it was made: across the node's restarts); 0 without
    /// cgroups or when the kernel does not count them (v1 before Linux 4.13).
    pub fn oom_kills(&self, node_id: &str) -> u32 {
        let file = match &self.layout {
            Ok(Layout::V2 { .. }) => self.node_cgroups(node_id).pop().map(|d| d.join("memory.events")),
            Ok(Layout::V1 { .. }) => self.node_cgroups(node_id).pop().map(|d| d.join("memory.oom_control")),
            _ => None,
        };
        file.and_then(|f| std::fs::read_to_string(f).ok()).and_then(|t| oom_kill_count(&t)).unwrap_or(0)
    }

    /// Forgets node `node_id`, stopped for good: frees its cores and removes its cgroups
    /// (one that still holds a process is retried by [`Sizer::tidy`]), then this agent's
    /// roots once no sized node is left.
    pub fn release(&mut self, node_id: &str) {
        if self.placed.remove(node_id).is_none() {
            return;
        }
        for dir in self.node_cgroups(node_id) {
            if let Err(e) = std::fs::remove_dir(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(node = node_id, cgroup = %dir.display(), error = %e, "cgroup busy; retrying");
                    self.leftovers.push(dir);
                }
            }
        }
        self.tidy();
    }

    /// Retries removing node cgroups that still held a process; removes this agent's roots
    /// once nothing is left in them.
    pub fn tidy(&mut self) {
        if !self.leftovers.is_empty() {
            self.leftovers.retain(|d| d.exists() && std::fs::remove_dir(d).is_err());
        }
        if self.dirty && self.placed.is_empty() && self.leftovers.is_empty() {
            self.dirty = false;
            for dir in self.agent_dirs().into_iter().chain(self.host_roots()) {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// The environment of a sized node: its memory budget and thread counts (module doc).
fn node_env(size: NodeSize) -> Vec<(String, String)> {
    let cores = u64::from(size.cpu_millis.div_ceil(1000).max(1));
    let mb = (size.memory_bytes >> 20).max(1);
    [
        ("QUIVER_NODE__MEMORY_LIMIT_MB", mb),
        ("QUIVER_NODE__IO_THREADS", cores.max(2)),
        ("QUIVER_QUERYNODE__SEARCH_THREADS", cores.min(MAX_SEARCH_THREADS)),
        ("QUIVER_INDEXNODE__BUILD_THREADS", cores),
        ("OMP_NUM_THREADS", cores),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The CFS quota of `cpu_millis` per [`PERIOD_US`], at least the kernel's minimum.
fn quota_us(cpu_millis: u32) -> u64 {
    (u64::from(cpu_millis) * PERIOD_US / 1000).max(MIN_QUOTA_US)
}

/// `23.5 GiB`.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// The `oom_kill N` line of `memory.events` (v2) or `memory.oom_control` (v1).
fn oom_kill_count(text: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some("oom_kill")).then(|| parts.next()?.parse().ok()).flatten()
    })
}

fn make_dir(dir: &Path) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn write(file: &Path, value: &str) -> std::result::Result<(), String> {
    std::fs::write(file, value).map_err(|e| format!("cannot write {value} to {}: {e}", file.display()))
}

fn write_if_present(file: &Path, value: &str) {
    if file.exists() {
        if let Err(e) = std::fs::write(file, value) {
            tracing::debug!(file = %file.display(), value, error = %e, "cannot write an optional cgroup setting");
        }
    }
}

/// The pids in a cgroup's `cgroup.procs`.
fn cgroup_procs(dir: &Path) -> std::io::Result<Vec<u32>> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    Ok(text.split_whitespace().filter_map(|p| p.parse().ok()).collect())
}

/// A name for a test cgroup no other probe uses.
fn probe_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("quiver-probe-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq)]
struct Mount {
    /// The directory of the file system mounted here (a cgroup mount may show a subtree).
    root: String,
    point: PathBuf,
    fstype: String,
    /// Super options: a cgroup v1 mount lists its controllers there (`rw,cpu,cpuacct`).
    options: Vec<String>,
}

fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse_mountinfo(&t)).unwrap_or_default()
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let before: Vec<&str> = before.split(' ').collect();
            let after: Vec<&str> = after.split(' ').collect();
            Some(Mount {
                root: unescape(before.get(3)?),
                point: PathBuf::from(unescape(before.get(4)?)),
                fstype: after.first()?.to_string(),
                options: after.get(2)?.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(hierarchy id, controllers, path)` of each line of `/proc/self/cgroup`: `("4", "memory",
/// "/a")`, `("0", "", "/b")` for cgroup v2.
fn parse_cgroups(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            Some((parts.next()?.to_string(), parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

fn own_cgroups() -> Vec<(String, String, String)> {
    std::fs::read_to_string("/proc/self/cgroup").map(|t| parse_cgroups(&t)).unwrap_or_default()
}

/// The directory of cgroup `path` (as `/proc/self/cgroup` shows it) under `mount`.
fn cgroup_dir(mount: &Mount, path: &str) -> PathBuf {
    let rel = if mount.root == "/" { path } else { path.strip_prefix(mount.root.as_str()).unwrap_or("") };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(rel)
    }
}

/// Usable: a cgroup2 mount where the agent's cgroup has `cpu` and `memory` and can enable them
/// for a child, and a child can be made with them.
fn probe_v2() -> std::result::Result<Layout, String> {
    let mounts = mounts();
    let v2 = |m: &&Mount| m.fstype == "cgroup2";
    let mount = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .find_map(|p| mounts.iter().filter(v2).find(|m| m.point == Path::new(p)))
        .or_else(|| mounts.iter().find(v2))
        .ok_or("no cgroup2 file system is mounted")?;
    let path = own_cgroups()
        .into_iter()
        .find(|(id, controllers, _)| id == "0" && controllers.is_empty())
        .map(|(.., p)| p)
        .ok_or("this process is in no cgroup v2 cgroup (/proc/self/cgroup has no 0:: line)")?;
    let mut base = cgroup_dir(mount, &path);
    if base.file_name() == Some(AGENT_LEAF.as_ref()) {
        // Moved there by an earlier probe: nodes go next to it.
        base.pop();
    }
    let file = base.join("cgroup.controllers");
    let controllers = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let have: Vec<&str> = controllers.split_whitespace().collect();
    if !(have.contains(&"cpu") && have.contains(&"memory")) {
        return Err(format!(
            "the agent's cgroup {} has the controllers [{}], not cpu and memory (delegate them to it, e.g. \
             systemd's Delegate=yes)",
            base.display(),
            controllers.trim()
        ));
    }
    delegate(&base)?;
    let probe = base.join(probe_name());
    std::fs::create_dir(&probe).map_err(|e| format!("cannot create a cgroup in {}: {e}", base.display()))?;
    let works = (|| {
        for f in ["cpu.max", "memory.max"] {
            if !probe.join(f).exists() {
                return Err(format!("the test cgroup {} has no {f}", probe.display()));
            }
        }
        enable_controllers(&probe).map_err(|e| format!("{}/cgroup.subtree_control: {e}", probe.display()))
    })();
    let _ = std::fs::remove_dir(&probe);
    works?;
    Ok(Layout::V2 { base })
}

/// Enables `cpu` and `memory` for the children of `base`, the agent's own cgroup v2. A cgroup
/// with processes cannot (the "no internal processes" rule): if the agent is the only one in
/// it, it moves itself into `<base>/quiver-agent` first.
fn delegate(base: &Path) -> std::result::Result<(), String> {
    let why =
        |e: std::io::Error| format!("cannot enable cpu and memory in {}/cgroup.subtree_control: {e}", base.display());
    match enable_controllers(base) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => return Err(why(e)),
    }
    let me = std::process::id();
    let others: Vec<u32> = cgroup_procs(base)
        .map_err(|e| format!("cannot read {}/cgroup.procs: {e}", base.display()))?
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    if !others.is_empty() {
        return Err(format!(
            "the agent's cgroup {} also holds other processes ({} of them), and a cgroup v2 with processes cannot \
             hand controllers to children; run the agent in a cgroup of its own",
            base.display(),
            others.len()
        ));
    }
    let leaf = base.join(AGENT_LEAF);
    make_dir(&leaf)?;
    write(&leaf.join("cgroup.procs"), &me.to_string())?;
    tracing::info!(cgroup = %leaf.display(), "moved the agent into a leaf cgroup to delegate cpu and memory");
    enable_controllers(base).map_err(why)
}

/// Writes `+cpu +memory` into `dir/cgroup.subtree_control` unless both are on already.
fn enable_controllers(dir: &Path) -> std::io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&file).unwrap_or_default();
    let on: Vec<&str> = on.split_whitespace().collect();
    if on.contains(&"cpu") && on.contains(&"memory") {
        return Ok(());
    }
    std::fs::write(&file, "+cpu +memory")
}

/// Usable: writable v1 `cpu` and `memory` hierarchies, where the agent's cgroups have the
/// quota and limit files and a test child can be made and removed.
fn probe_v1() -> std::result::Result<Layout, String> {
    let mounts = mounts();
    let groups = own_cgroups();
    let dir = |controller: &str| -> std::result::Result<PathBuf, String> {
        let has = |list: &str| list.split(',').any(|c| c == controller);
        let mount = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))
            .ok_or_else(|| format!("no cgroup v1 hierarchy with the {controller} controller is mounted"))?;
        let path = groups.iter().find(|(id, c, _)| id != "0" && has(c)).map_or("/", |(.., p)| p.as_str());
        Ok(cgroup_dir(mount, path))
    };
    let (cpu, memory) = (dir("cpu")?, dir("memory")?);
    for (d, file) in [(&cpu, "cpu.cfs_quota_us"), (&memory, "memory.limit_in_bytes")] {
        if !d.join(file).exists() {
            return Err(format!("{} has no {file}", d.display()));
        }
        let probe = d.join(probe_name());
        std::fs::create_dir(&probe).map_err(|e| format!("cannot create a cgroup in {}: {e}", d.display()))?;
        std::fs::remove_dir(&probe).map_err(|e| format!("cannot remove the test cgroup {}: {e}", probe.display()))?;
    }
    Ok(Layout::V1 { cpu, memory })
}

/// The CPUs this process may run on.
fn allowed_cpus() -> std::result::Result<Vec<usize>, String> {
    // SAFETY: `set` is a plain bitmask the kernel fills; the size passed is its own, and
    // CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(format!("sched_getaffinity: {}", std::io::Error::last_os_error()));
        }
        let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
        let cpus: Vec<usize> = (0..max).filter(|c| libc::CPU_ISSET(*c, &set)).collect();
        if cpus.is_empty() {
            return Err("this process may run on no CPU".into());
        }
        Ok(cpus)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_carries_the_budget_and_thread_counts() {
        let env = node_env(NodeSize { cpu_millis: 1500, memory_bytes: 6 << 30 });
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("QUIVER_NODE__MEMORY_LIMIT_MB"), Some("6144"));
        assert_eq!(get("QUIVER_NODE__IO_THREADS"), Some("2"));
        assert_eq!(get("QUIVER_QUERYNODE__SEARCH_THREADS"), Some("2"));
        assert_eq!(get("QUIVER_INDEXNODE__BUILD_THREADS"), Some("2"));
        assert_eq!(get("OMP_NUM_THREADS"), Some("2"));
        let small = node_env(NodeSize { cpu_millis: 100, memory_bytes: 1000 });
        assert!(small.contains(&("QUIVER_NODE__MEMORY_LIMIT_MB".into(), "1".into())), "{small:?}");
        assert!(small.contains(&("OMP_NUM_THREADS".into(), "1".into())), "{small:?}");
        let big = node_env(NodeSize { cpu_millis: 8000, memory_bytes: 32 << 30 });
        assert!(big.contains(&("QUIVER_NODE__IO_THREADS".into(), "8".into())), "{big:?}");
        // Every variable names a key the configuration has.
        let env: Vec<(String, String)> = big.into_iter().filter(|(k, _)| k.starts_with("QUIVER_")).collect();
        let c = quiver_runtime::Config::load(None, env).unwrap();
        assert_eq!(
            (c.node.memory_limit_mb, c.node.io_threads, c.querynode.search_threads, c.indexnode.build_threads),
            (32 << 10, 8, 8, 8)
        );
    }

    #[test]
    fn quotas_and_oom_counts() {
        assert_eq!(quota_us(1500), 150_000);
        assert_eq!(quota_us(1), MIN_QUOTA_US);
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(oom_kill_count(v1), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v2), Some(2));
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn mountinfo_and_cgroup_paths() {
        let mounts = parse_mountinfo(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
             50 31 0:40 /docker/abc /sys/fs/cgroup/memory rw shared:5 - cgroup cgroup rw,memory\n\
             60 31 0:41 / /mnt/with\\040space rw - ext4 /dev/sda rw\n",
        );
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].options, ["rw", "cpu", "cpuacct"]);
        assert_eq!(mounts[1].fstype, "cgroup2");
        assert_eq!(mounts[3].point, Path::new("/mnt/with space"));
        assert_eq!(cgroup_dir(&mounts[0], "/"), Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(cgroup_dir(&mounts[0], "/a/b"), Path::new("/sys/fs/cgroup/cpu/a/b"));
        assert_eq!(cgroup_dir(&mounts[2], "/docker/abc"), Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(cgroup_dir(&mounts[2], "/docker/abc/x"), Path::new("/sys/fs/cgroup/memory/x"));
        let groups = parse_cgroups("4:memory:/process_api/x\n2:cpu,cpuacct:/\n0::/user.slice\n");
        assert_eq!(groups[1], ("2".into(), "cpu,cpuacct".into(), "/".into()));
        assert_eq!(groups[2], ("0".into(), String::new(), "/user.slice".into()));
    }

    #[test]
    fn names_and_explicit_modes() {
        for mode in Enforcement::ALL {
            assert_eq!(Enforcement::parse(mode.name()), Some(mode));
            match (mode.usable(), Enforcement::detect(mode.name())) {
                (Ok(()), Ok(m)) => {
                    println!("{mode}: usable here");
                    assert_eq!(m, mode);
                }
                (Err(why), Err(e)) => {
                    println!("{mode}: not usable here: {why}");
                    let e = e.to_string();
                    assert!(e.contains(mode.name()) && e.contains(&why), "{e}");
                }
                (usable, detected) => panic!("{mode}: usable {usable:?} but detected {detected:?}"),
            }
        }
        assert_eq!(Enforcement::parse("auto"), None);
        let e = Enforcement::detect("cgroups").unwrap_err().to_string();
        assert!(e.contains("host.enforcement") && e.contains("cgroup-v1"), "{e}");
        let auto = Enforcement::detect("auto").unwrap();
        let first = Enforcement::AUTO.into_iter().find(|m| m.usable().is_ok()).unwrap_or(Enforcement::None);
        assert_eq!(auto, first);
        println!("auto: {auto}");
    }

    #[test]
    fn cgroup_v2_files_are_written_under_the_agents_cgroup() {
        // A stand-in for a cgroup2 tree: the files a real one has, in a plain directory.
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        std::fs::write(base.join("cgroup.subtree_control"), "").unwrap();
        let layout = Ok(Layout::V2 { base: base.clone() });
        let mut s = Sizer::with_layout(Enforcement::CgroupV2, layout, "h2", 4, 16 << 30);
        let size = NodeSize { cpu_millis: 1500, memory_bytes: 3 << 30 };
        let limits = s.place("qn-1", size).unwrap();
        let agent = base.join("quiver-h2").join(std::process::id().to_string());
        let node = agent.join("qn-1");
        assert_eq!(limits.placement, Placement { cgroups: vec![node.clone()], cpus: Vec::new() });
        assert_eq!(s.node_cgroups("qn-1"), std::slice::from_ref(&node));
        let read = |f: &Path| std::fs::read_to_string(f).unwrap();
        assert_eq!(read(&base.join("cgroup.subtree_control")), "+cpu +memory");
        assert_eq!(read(&base.join("quiver-h2/cgroup.subtree_control")), "+cpu +memory");
        assert_eq!(read(&agent.join("cgroup.subtree_control")), "+cpu +memory");
        assert_eq!(read(&node.join("cpu.max")), "150000 100000");
        assert_eq!(read(&node.join("memory.max")), (3u64 << 30).to_string());
        assert!(limits.env.contains(&("QUIVER_NODE__MEMORY_LIMIT_MB".into(), "3072".into())));
        std::fs::write(node.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert_eq!(s.oom_kills("qn-1"), 1);
        assert_eq!(s.oom_kills("other"), 0);
        // Gone while the node waited to restart: made again, limits included.
        std::fs::remove_dir_all(&node).unwrap();
        s.ensure("qn-1", size);
        assert_eq!(read(&node.join("cpu.max")), "150000 100000");
        assert_eq!(read(&node.join("memory.max")), (3u64 << 30).to_string());
        // Not for a node it does not hold.
        s.ensure("qn-2", size);
        assert!(!agent.join("qn-2").exists());
    }

    #[test]
    fn affinity_takes_the_least_used_cores() {
        let layout = Ok(Layout::Affinity { cpus: vec![0, 1, 2, 3] });
        let mut s = Sizer::with_layout(Enforcement::Affinity, layout, "h3", 4, 16 << 30);
        let size = |millis| NodeSize { cpu_millis: millis, memory_bytes: 1 << 30 };
        assert_eq!(s.place("a", size(1500)).unwrap().placement.cpus, [0, 1]);
        assert_eq!(s.place("b", size(500)).unwrap().placement.cpus, [2]);
        // 3 is unused; then the lowest of those used once.
        assert_eq!(s.place("c", size(2000)).unwrap().placement.cpus, [0, 3]);
        s.release("a");
        // 0 and 1 are free again (c holds 0 and 3, b holds 2): 1 is the least used.
        assert_eq!(s.place("d", size(1000)).unwrap().placement.cpus, [1]);
        assert!(s.oom_kills("d") == 0 && s.node_cgroups("d").is_empty());
    }

    #[test]
    fn sizes_the_host_cannot_hold_or_that_make_no_sense_are_refused() {
        let mut s = Sizer::with_layout(Enforcement::None, Ok(Layout::None), "h4", 2, 8 << 30);
        let e = s.place("x", NodeSize { cpu_millis: 0, memory_bytes: 1 << 30 }).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let e = s.place("x", NodeSize { cpu_millis: 1000, memory_bytes: 0 }).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let e = s.place("x", NodeSize { cpu_millis: 3000, memory_bytes: 1 << 30 }).unwrap_err();
        assert!(
            matches!(&e, Error::ResourceExhausted(m) if m.contains("host h4") && m.contains("has 2 CPU and 8.0 GiB")),
            "{e}"
        );
        let e = s.place("x", NodeSize { cpu_millis: 1000, memory_bytes: 9 << 30 }).unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)), "{e}");
        assert_eq!(s.place("x", NodeSize::UNSIZED).unwrap(), NodeLimits::default());
        let limits = s.place("x", NodeSize { cpu_millis: 2000, memory_bytes: 8 << 30 }).unwrap();
        assert!(limits.placement.is_empty() && limits.env.len() == 5);
        // A mode that stopped working refuses sized nodes, not unsized ones.
        let broken = Sizer::with_layout(Enforcement::CgroupV1, Err("gone".into()), "h4", 2, 8 << 30);
        let e = broken.check("x", NodeSize { cpu_millis: 1000, memory_bytes: 1 << 30 }).unwrap_err();
        assert!(matches!(&e, Error::Unavailable(m) if m.contains("cgroup-v1: gone")), "{e}");
        broken.check("x", NodeSize::UNSIZED).unwrap();
    }
}
