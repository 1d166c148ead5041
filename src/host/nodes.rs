//! The node processes of a host agent: what `start_node` and `stop_node` change and what the
//! heartbeat reports. Sized nodes are held to their size by `super::sizing`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use quiver_runtime::{Config, Error, Result};
use quiver_schemas::{HostStatus, HostedNode, NodeSize, Role, StartNode};

use super::sizing::{Enforcement, Sizer};
use crate::process::{self, Launch, Process, RestartPolicy};

/// How many ports above the configured one are tried for a node's gRPC or metrics endpoint.
const PORT_SPAN: u16 = 100;

/// How the agent starts a node process.
#[derive(Debug, Clone)]
pub struct NodeLauncher {
    /// The `quiver` binary.
    pub program: PathBuf,
    /// Arguments before `--role <role>`: `run [--config FILE]`.
    pub args: Vec<String>,
    /// Environment of every node, before the per-node variables.
    pub env: Vec<(String, String)>,
    /// Whether nodes keep the agent's own `QUIVER_*` variables (see [`Launch`]).
    pub inherit_quiver_env: bool,
    /// `<dir>/<node id>.log`.
    pub logs_dir: PathBuf,
    /// Written into the logs before each start.
    pub starter: &'static str,
    pub policy: RestartPolicy,
    /// `proxy.grpc_host` of the nodes.
    pub grpc_host: String,
    /// `proxy.grpc_port` of the nodes: the first port tried for a proxy (0: no gRPC API).
    pub grpc_port: u16,
    /// `proxy.http_host` of the nodes.
    pub http_host: String,
    /// `proxy.http_port` of the nodes: the first port tried for a proxy's HTTP admin API (0: off).
    pub http_port: u16,
    /// Host of the nodes' Prometheus endpoints.
    pub metrics_host: String,
    /// `host.metrics_port_base` (0: no endpoint).
    pub metrics_port_base: u16,
}

impl NodeLauncher {
    /// A launcher whose ports come from `config` (the nodes' configuration).
    pub fn new(config: &Config, program: PathBuf, args: Vec<String>, env: Vec<(String, String)>) -> NodeLauncher {
        let metrics_host = config
            .metrics
            .listen
            .parse::<std::net::SocketAddr>()
            .map_or_else(|_| "127.0.0.1".to_string(), |a| a.ip().to_string());
        NodeLauncher {
            program,
            args,
            env,
            inherit_quiver_env: false,
            logs_dir: config.cluster.data_dir.join("logs"),
            starter: "quiver host",
            policy: RestartPolicy::default(),
            grpc_host: config.proxy.grpc_host.clone(),
            grpc_port: config.proxy.grpc_port,
            http_host: config.proxy.http_host.clone(),
            http_port: config.proxy.http_port,
            metrics_host,
            metrics_port_base: config.host.metrics_port_base,
        }
    }
}

/// One process of the agent.
struct Hosted {
    process: Process,
    /// Started through `start_node` (by the scaler), not from a cluster file.
    managed: bool,
    /// Ports handed to it (gRPC, metrics), so two nodes starting at once do not get the same.
    ports: Vec<u16>,
    /// The size it was started with (unsized: no limits).
    size: NodeSize,
    /// Times the kernel killed it for going beyond its memory limit, across its restarts.
    oom_kills: u32,
}

/// The processes a host agent runs.
pub struct HostedNodes {
    host_id: String,
    launcher: NodeLauncher,
    max_nodes: u32,
    stop_grace: Duration,
    nodes: Vec<Hosted>,
    /// Holds sized nodes to their sizes.
    sizer: Sizer,
}

impl HostedNodes {
    /// The processes of agent `host_id`, sized nodes held to their sizes with `enforcement`
    /// ([`Enforcement::detect`]); removes the empty node cgroups that agents of this id that
    /// are gone left behind.
    pub fn new(
        host_id: String,
        launcher: NodeLauncher,
        max_nodes: u32,
        stop_grace: Duration,
        enforcement: Enforcement,
    ) -> HostedNodes {
        let sizer = Sizer::new(enforcement, &host_id);
        HostedNodes { host_id, launcher, max_nodes, stop_grace, nodes: Vec::new(), sizer }
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Takes on a process started by the caller (a node of a cluster file): reported, stopped
    /// by `stop_node`, but not started by the scaler.
    pub fn adopt(&mut self, process: Process) {
        self.nodes.push(Hosted { process, managed: false, ports: Vec::new(), size: NodeSize::UNSIZED, oom_kills: 0 });
    }

    /// `start_node`: starts `quiver run --role <role>` as node `node_id`. A node of that id
    /// already here (running, restarting or stopping) is left alone, whatever its size.
    ///
    /// A sized node (`req.size`) is held to its size (`super::sizing`): refused if the host
    /// cannot hold it (`ResourceExhausted`) or if only one of CPU and memory is set
    /// (`InvalidArgument`); started in its cgroups or on its cores, with its memory budget
    /// and thread counts in its environment. An unsized node gets none of that.
    pub fn start(&mut self, req: &StartNode) -> Result<()> {
        let id = &req.node_id;
        if !quiver_runtime::config::is_subject_token(id) || id.len() > 64 {
            return Err(Error::InvalidArgument(format!(
                "node id {id:?}: use 1 to 64 letters, digits, '-' and '_' (it names subjects and files)"
            )));
        }
        if let Some(h) = self.nodes.iter().find(|h| &h.process.name == id) {
            if h.process.roles != [req.role.as_str()] {
                return Err(Error::AlreadyExists(format!(
                    "host {}: node {id} already runs here with roles {:?}; start the {} under another id",
                    self.host_id,
                    h.process.roles,
                    req.role.as_str()
                )));
            }
            return Ok(());
        }
        let running = self.nodes.iter().filter(|h| !h.process.stopping()).count();
        if running >= self.max_nodes as usize {
            return Err(Error::ResourceExhausted(format!(
                "host {} already runs {running} node processes, its host.max_nodes; start the node on another \
                 host, or raise host.max_nodes there",
                self.host_id
            )));
        }
        self.sizer.check(id, req.size)?;
        let l = &self.launcher;
        let taken: Vec<u16> = self.nodes.iter().flat_map(|h| h.ports.iter().copied()).collect();
        let mut ports = Vec::new();
        let mut env = l.env.clone();
        env.push(("QUIVER_NODE__ID".into(), id.clone()));
        env.push(("QUIVER_NODE__HOST_AGENT".into(), self.host_id.clone()));
        if req.role == Role::Proxy {
            // Several proxies may share the machine: each listener gets the first free port
            // at or above the configured one.
            let listeners = [
                (
                    "the proxy's Milvus gRPC API",
                    "proxy.grpc_port",
                    "QUIVER_PROXY__GRPC_PORT",
                    &l.grpc_host,
                    l.grpc_port,
                ),
                ("the proxy's HTTP admin API", "proxy.http_port", "QUIVER_PROXY__HTTP_PORT", &l.http_host, l.http_port),
            ];
            for (what, key, var, host, base) in listeners.into_iter().filter(|(.., base)| *base != 0) {
                let taken: Vec<u16> = taken.iter().chain(&ports).copied().collect();
                let port = free_port(host, base, &taken).ok_or_else(|| {
                    Error::ResourceExhausted(format!(
                        "host {}: no free port for {what} on {host} from {base} to {}; free one or set another {key}",
                        self.host_id,
                        base.saturating_add(PORT_SPAN - 1)
                    ))
                })?;
                ports.push(port);
                env.push((var.into(), port.to_string()));
            }
        }
        let metrics = if l.metrics_port_base == 0 {
            String::new()
        } else {
            let taken: Vec<u16> = taken.iter().chain(&ports).copied().collect();
            let port = free_port(&l.metrics_host, l.metrics_port_base, &taken).ok_or_else(|| {
                Error::ResourceExhausted(format!(
                    "host {}: no free port for a metrics endpoint on {} from host.metrics_port_base {}; free one \
                     or set another base (0 turns the endpoints off)",
                    self.host_id, l.metrics_host, l.metrics_port_base
                ))
            })?;
            ports.push(port);
            format!("{}:{port}", l.metrics_host)
        };
        env.push(("QUIVER_METRICS__LISTEN".into(), metrics));
        let limits = self.sizer.place(id, req.size)?;
        env.extend(limits.env);
        let l = &self.launcher;
        let mut args = l.args.clone();
        args.extend(["--role".to_string(), req.role.as_str().to_string()]);
        let launch = Launch {
            program: l.program.clone(),
            args,
            env,
            inherit_quiver_env: l.inherit_quiver_env,
            log: l.logs_dir.join(format!("{id}.log")),
            starter: l.starter,
        };
        let mut process = Process::new(id, vec![req.role.as_str().to_string()], launch, l.policy);
        process.set_placement(limits.placement);
        process.start();
        if process.pid().is_none() {
            self.sizer.release(id);
            let why = process.last_exit().unwrap_or("unknown").to_string();
            return Err(Error::Unavailable(format!(
                "host {}: cannot start node {id}: {why}; see {}",
                self.host_id,
                process.log().display()
            )));
        }
        self.nodes.push(Hosted { process, managed: true, ports, size: req.size, oom_kills: 0 });
        Ok(())
    }

    /// `stop_node`: SIGTERM (the node drains and exits), never restarted, SIGKILL after
    /// `host.stop_grace`. An unknown id is no error: it may have gone already.
    pub fn stop(&mut self, node_id: &str) {
        match self.nodes.iter_mut().find(|h| h.process.name == node_id) {
            Some(h) => h.process.stop(self.stop_grace),
            None => tracing::info!(node = node_id, "stop_node for a node not running here; nothing to do"),
        }
    }

    /// Reaps, restarts and kills as due; counts the OOM kills of sized nodes that exited;
    /// forgets nodes that were stopped and have exited (and removes their cgroups). True if
    /// anything changed.
    pub fn poll(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for h in &mut self.nodes {
            if !h.size.is_unsized() && h.process.pid().is_none() && !h.process.stopping() {
                // Waiting to be restarted: it joins its cgroups again, so they must be there.
                self.sizer.ensure(&h.process.name, h.size);
            }
            if h.process.poll(now) {
                changed = true;
                if !h.size.is_unsized() {
                    // The node's cgroup counts every kill since it was made (it outlives restarts).
                    let kills = self.sizer.oom_kills(&h.process.name);
                    if kills > h.oom_kills {
                        tracing::warn!(
                            node = %h.process.name,
                            size = %h.size,
                            oom_kills = kills,
                            "node killed for going beyond its memory limit (OOM)"
                        );
                        h.oom_kills = kills;
                    }
                }
            }
        }
        let before = self.nodes.len();
        let sizer = &mut self.sizer;
        self.nodes.retain(|h| {
            let done = h.process.finished();
            if done && !h.size.is_unsized() {
                sizer.release(&h.process.name);
            }
            !done
        });
        self.sizer.tidy();
        changed || self.nodes.len() != before
    }

    /// Every process with whether the scaler started it.
    pub fn processes(&self) -> impl Iterator<Item = (&Process, bool)> {
        self.nodes.iter().map(|h| (&h.process, h.managed))
    }

    /// Stops every process (SIGTERM, SIGKILL after `grace`) and waits for them.
    pub async fn stop_all(&mut self, grace: Duration) {
        let mut procs: Vec<&mut Process> = self.nodes.iter_mut().map(|h| &mut h.process).collect();
        process::stop_all(&mut procs, grace).await;
        for h in self.nodes.iter().filter(|h| !h.size.is_unsized()) {
            self.sizer.release(&h.process.name);
        }
    }

    /// The heartbeat's list of processes.
    pub fn hosted(&self) -> Vec<HostedNode> {
        self.nodes
            .iter()
            .map(|h| HostedNode {
                node_id: h.process.name.clone(),
                roles: h.process.roles.iter().filter_map(|r| Role::parse(r)).collect(),
                pid: h.process.pid().unwrap_or(0),
                restarts: h.process.restarts(),
                managed: h.managed,
                stopping: h.process.stopping(),
                last_exit: h.process.last_exit().unwrap_or_default().to_string(),
                size: h.size,
                oom_kills: h.oom_kills,
            })
            .collect()
    }

    /// The agent's registry entry as of now.
    pub fn status(&self, started_ms: u64) -> HostStatus {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        HostStatus {
            host_id: self.host_id.clone(),
            hostname: quiver_runtime::telemetry::hostname(),
            pid: std::process::id(),
            cpus,
            mem_total: quiver_runtime::telemetry::machine_memory(),
            mem_available: quiver_runtime::telemetry::machine_memory_available(),
            max_nodes: self.max_nodes,
            nodes: self.hosted(),
            started_ms,
            heartbeat_ms: process::now_ms(),
            enforcement: self.sizer.mode().name().to_string(),
        }
    }
}

/// The first port at or above `base` (trying [`PORT_SPAN`]) that is not in `taken` and can be
/// bound on `host` now.
pub fn free_port(host: &str, base: u16, taken: &[u16]) -> Option<u16> {
    (0..PORT_SPAN)
        .filter_map(|i| base.checked_add(i))
        .filter(|p| !taken.contains(p))
        .find(|p| std::net::TcpListener::bind((host, *p)).is_ok())
}

/// The agent's id: `host.id`, else the hostname with every character that cannot be in a
/// subject token replaced by '-'.
pub fn host_id(config: &Config) -> String {
    if !config.host.id.is_empty() {
        return config.host.id.clone();
    }
    let name: String = quiver_runtime::telemetry::hostname()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    if name.is_empty() {
        "host".into()
    } else {
        name
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn free_port_skips_bound_and_taken_ports() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        if port > u16::MAX - 10 {
            return;
        }
        let got = free_port("127.0.0.1", port, &[]).unwrap();
        assert!(got > port, "{got} is bound");
        let next = free_port("127.0.0.1", port, &[got]).unwrap();
        assert!(next > got, "{next} was taken");
        assert_eq!(free_port("127.0.0.1", u16::MAX, &[u16::MAX]), None);
    }

    #[test]
    fn the_id_is_a_subject_token() {
        let mut c = Config::default();
        assert!(quiver_runtime::config::is_subject_token(&host_id(&c)), "{}", host_id(&c));
        c.host.id = "rack-1".into();
        assert_eq!(host_id(&c), "rack-1");
    }

    fn table(dir: &std::path::Path, max_nodes: u32) -> HostedNodes {
        sized_table(dir, max_nodes, "h1", Enforcement::None, "exec sleep 30")
    }

    /// A table of agent `host_id` in `mode` whose nodes are `sh -c <script> sh --role <role>`.
    fn sized_table(
        dir: &std::path::Path,
        max_nodes: u32,
        host_id: &str,
        mode: Enforcement,
        script: &str,
    ) -> HostedNodes {
        let mut config = Config::default();
        config.cluster.data_dir = dir.into();
        let args = vec!["-c".into(), script.into(), "sh".into()];
        let launcher = NodeLauncher::new(&config, "sh".into(), args, Vec::new());
        std::fs::create_dir_all(&launcher.logs_dir).unwrap();
        HostedNodes::new(host_id.into(), launcher, max_nodes, Duration::from_secs(5), mode)
    }

    fn start_node(id: &str, role: Role) -> StartNode {
        StartNode { node_id: id.into(), role, size: NodeSize::UNSIZED }
    }

    fn sized(id: &str, cpu_millis: u32, memory_mb: u64) -> StartNode {
        StartNode {
            node_id: id.into(),
            role: Role::QueryNode,
            size: NodeSize { cpu_millis, memory_bytes: memory_mb << 20 },
        }
    }

    /// Polls until `done` holds of the table, for at most `secs`.
    fn wait_for(t: &mut HostedNodes, secs: u64, what: &str, done: impl Fn(&HostedNodes) -> bool) {
        let start = Instant::now();
        while !done(t) {
            assert!(start.elapsed() < Duration::from_secs(secs), "{what}: not after {secs} s: {:?}", t.hosted());
            t.poll(Instant::now());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid_of(t: &HostedNodes, id: &str) -> u32 {
        t.hosted().iter().find(|n| n.node_id == id).map(|n| n.pid).unwrap()
    }

    /// `/proc/<pid>/environ` as `KEY=value` strings.
    /// The environment of node process `pid` once it runs its program (`sleep`): read between
    /// the agent's fork and the exec, /proc/<pid>/environ can be empty.
    fn environ(pid: u32) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !proc_file(pid, "cmdline").starts_with("sleep\0") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        raw.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
    }

    fn proc_file(pid: u32, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap()
    }

    fn read(dir: &std::path::Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap().trim().to_string()
    }

    /// The modes usable on this machine (printed, with why the others are not).
    fn usable_modes() -> Vec<Enforcement> {
        Enforcement::ALL
            .into_iter()
            .filter(|m| match m.usable() {
                Ok(()) => {
                    println!("enforcement {m}: usable here");
                    true
                }
                Err(why) => {
                    println!("enforcement {m}: not usable here: {why}");
                    false
                }
            })
            .collect()
    }

    #[test]
    fn sized_nodes_are_held_to_their_size_in_every_usable_mode() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for mode in usable_modes() {
            let dir = tempfile::tempdir().unwrap();
            let host = format!("sz-{}-{}", mode.name(), std::process::id());
            let mut t = sized_table(dir.path(), 4, &host, mode, "exec sleep 30");
            assert_eq!(t.status(1).enforcement, mode.name());
            t.start(&sized("qn-a", 500, 96)).unwrap();
            t.start(&sized("qn-b", 700, 160)).unwrap();
            t.start(&start_node("qn-u", Role::QueryNode)).unwrap();
            let hosted = t.hosted();
            assert_eq!(hosted[0].size, NodeSize { cpu_millis: 500, memory_bytes: 96 << 20 });
            assert_eq!((hosted[1].size.cpu_millis, hosted[2].size), (700, NodeSize::UNSIZED));
            assert!(hosted.iter().all(|n| n.oom_kills == 0));
            let (a, b, u) = (pid_of(&t, "qn-a"), pid_of(&t, "qn-b"), pid_of(&t, "qn-u"));
            // Every mode: the memory budget and the thread counts.
            for (pid, mb) in [(a, "96"), (b, "160")] {
                let env = environ(pid);
                for want in [
                    format!("QUIVER_NODE__MEMORY_LIMIT_MB={mb}"),
                    "QUIVER_NODE__IO_THREADS=2".into(),
                    "QUIVER_QUERYNODE__SEARCH_THREADS=1".into(),
                    "QUIVER_INDEXNODE__BUILD_THREADS=1".into(),
                    "OMP_NUM_THREADS=1".into(),
                ] {
                    assert!(env.contains(&want), "{mode}: {want} not in {env:?}");
                }
            }
            // An unsized node: nothing new.
            let env = environ(u);
            assert!(!env.iter().any(|v| v.starts_with("QUIVER_NODE__MEMORY_LIMIT_MB=")), "{env:?}");
            assert!(!env.iter().any(|v| v.starts_with("OMP_NUM_THREADS=") || v.contains("SEARCH_THREADS")), "{env:?}");
            assert!(!proc_file(u, "cgroup").contains("quiver-"), "{}", proc_file(u, "cgroup"));
            let all_cpus = proc_file(std::process::id(), "status")
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .unwrap()
                .to_string();
            assert!(proc_file(u, "status").contains(&all_cpus));
            let dirs: Vec<_> = ["qn-a", "qn-b"].iter().flat_map(|n| t.sizer.node_cgroups(n)).collect();
            match mode {
                Enforcement::CgroupV1 => {
                    for (pid, node, quota, limit) in
                        [(a, "qn-a", "50000", 96u64 << 20), (b, "qn-b", "70000", 160 << 20)]
                    {
                        let cgroups = proc_file(pid, "cgroup");
                        let suffix = format!("/quiver-{host}/{}/{node}", std::process::id());
                        for controller in ["cpu", "memory"] {
                            let line = cgroups
                                .lines()
                                .find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == controller)))
                                .unwrap();
                            assert!(
                                line.ends_with(&suffix),
                                "{mode}: {node} is not in its {controller} cgroup: {cgroups}"
                            );
                        }
                        let dirs = t.sizer.node_cgroups(node);
                        assert_eq!(read(&dirs[0], "cpu.cfs_period_us"), "100000");
                        assert_eq!(read(&dirs[0], "cpu.cfs_quota_us"), quota);
                        assert_eq!(read(&dirs[1], "memory.limit_in_bytes"), limit.to_string());
                        assert!(read(&dirs[1], "cgroup.procs").split_whitespace().any(|p| p == pid.to_string()));
                    }
                }
                Enforcement::CgroupV2 => {
                    for (pid, node, quota, limit) in
                        [(a, "qn-a", "50000", 96u64 << 20), (b, "qn-b", "70000", 160 << 20)]
                    {
                        let cgroups = proc_file(pid, "cgroup");
                        let line = cgroups.lines().find(|l| l.starts_with("0::")).unwrap();
                        let suffix = format!("/quiver-{host}/{}/{node}", std::process::id());
                        assert!(line.ends_with(&suffix), "{mode}: {cgroups}");
                        let dirs = t.sizer.node_cgroups(node);
                        assert_eq!(read(&dirs[0], "cpu.max"), format!("{quota} 100000"));
                        assert_eq!(read(&dirs[0], "memory.max"), limit.to_string());
                    }
                }
                Enforcement::Affinity => {
                    let allowed = |pid| {
                        let status = proc_file(pid, "status");
                        let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).unwrap().to_string();
                        line.split_whitespace().nth(1).unwrap().to_string()
                    };
                    // One core each, the least used first: the first two of the agent's.
                    assert_eq!(allowed(a), "0", "{mode}");
                    if cores > 1 {
                        assert_eq!(allowed(b), "1", "{mode}");
                    }
                    assert!(dirs.is_empty());
                }
                Enforcement::None => {
                    assert!(dirs.is_empty());
                    assert!(proc_file(a, "status").contains(&all_cpus));
                }
            }
            for d in &dirs {
                assert!(d.is_dir(), "{}", d.display());
            }
            for n in ["qn-a", "qn-b", "qn-u"] {
                t.stop(n);
            }
            wait_for(&mut t, 5, "stopped", |t| t.hosted().is_empty());
            for d in dirs.iter().flat_map(|d| d.ancestors().take(3)) {
                assert!(!d.exists(), "{mode}: {} left behind", d.display());
            }
            println!("enforcement {mode}: sized nodes checked");
        }
    }

    #[test]
    fn a_node_beyond_its_memory_limit_is_oom_killed_and_counted() {
        let Some(mode) =
            usable_modes().into_iter().find(|m| matches!(m, Enforcement::CgroupV1 | Enforcement::CgroupV2))
        else {
            println!("skipped: no cgroup mode is usable here, so nothing kills a node beyond its memory");
            return;
        };
        if std::process::Command::new("python3").arg("-c").arg("pass").status().map_or(true, |s| !s.success()) {
            println!("skipped: no python3 to allocate memory with");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let host = format!("oom-{}", std::process::id());
        let script = "exec python3 -c 'x = bytearray(300 << 20); import time; time.sleep(30)'";
        let mut t = sized_table(dir.path(), 2, &host, mode, script);
        t.launcher.policy.backoff_initial = Duration::from_millis(100);
        t.start(&sized("qn-big", 1000, 64)).unwrap();
        wait_for(&mut t, 20, "OOM-killed", |t| t.hosted()[0].oom_kills >= 1);
        let n = &t.hosted()[0];
        assert_eq!(n.last_exit, "killed by SIGKILL", "{n:?}");
        println!("{mode}: OOM-killed once: {n:?}");
        // It is restarted, killed again, and the count goes on.
        wait_for(&mut t, 20, "OOM-killed again", |t| t.hosted()[0].oom_kills >= 2 && t.hosted()[0].restarts >= 1);
        let dirs = t.sizer.node_cgroups("qn-big");
        assert!(dirs.iter().all(|d| d.is_dir()));
        t.stop("qn-big");
        wait_for(&mut t, 5, "stopped", |t| t.hosted().is_empty());
        assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
    }

    #[test]
    fn what_agents_of_the_id_that_are_gone_left_is_removed_at_start() {
        let Some(mode) =
            usable_modes().into_iter().find(|m| matches!(m, Enforcement::CgroupV1 | Enforcement::CgroupV2))
        else {
            println!("skipped: no cgroup mode is usable here");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let host = format!("stale-{}", std::process::id());
        let t = sized_table(dir.path(), 2, &host, mode, "exec sleep 30");
        // <host root>/<agent pid>/<node>, per hierarchy.
        let roots: Vec<PathBuf> =
            t.sizer.node_cgroups("x").iter().map(|d| d.parent().unwrap().parent().unwrap().to_path_buf()).collect();
        drop(t);
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id().to_string();
        gone.wait().unwrap();
        let mut stale = Vec::new();
        let mut live = Vec::new();
        for root in &roots {
            stale.push(root.join(&dead).join("qn-1"));
            // The layout without the agent level.
            stale.push(root.join("qn-2"));
            // Another agent of the same id, alive (pid 1): left alone.
            live.push(root.join("1").join("qn-1"));
        }
        for d in stale.iter().chain(&live) {
            std::fs::create_dir_all(d).unwrap();
        }
        let t = sized_table(dir.path(), 2, &host, mode, "exec sleep 30");
        for d in &stale {
            assert!(!d.exists(), "{} left behind", d.display());
        }
        assert!(!roots[0].join(&dead).exists());
        for d in &live {
            assert!(d.is_dir(), "{} removed", d.display());
            std::fs::remove_dir(d).unwrap();
            std::fs::remove_dir(d.parent().unwrap()).unwrap();
            std::fs::remove_dir(d.parent().unwrap().parent().unwrap()).unwrap();
        }
        assert_eq!(t.sizer.mode(), mode);
    }

    #[test]
    fn sizes_that_make_no_sense_or_do_not_fit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mode = Enforcement::detect("auto").unwrap();
        println!("auto: {mode}");
        let mut t = sized_table(dir.path(), 4, &format!("bad-{}", std::process::id()), mode, "exec sleep 30");
        let cores = t.status(1).cpus;
        let e = t.start(&sized("qn-1", 0, 1024)).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("both CPU and memory")), "{e}");
        let e = t.start(&sized("qn-1", 1000, 0)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let e = t.start(&sized("qn-1", (cores + 1) * 1000, 1024)).unwrap_err();
        let host = t.host_id().to_string();
        assert!(
            matches!(&e, Error::ResourceExhausted(m) if m.contains(&host) && m.contains(&format!("has {cores} CPU"))),
            "{e}"
        );
        let machine_mb = quiver_runtime::telemetry::machine_memory() >> 20;
        let e = t.start(&sized("qn-1", 1000, machine_mb + 1024)).unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)), "{e}");
        assert!(t.hosted().is_empty());
        assert!(t.sizer.node_cgroups("qn-1").iter().all(|d| !d.exists()));
    }

    #[test]
    fn start_is_idempotent_bounded_and_stop_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = table(dir.path(), 1);
        let req = start_node("qn-1", Role::QueryNode);
        t.start(&req).unwrap();
        t.start(&req).unwrap();
        assert_eq!(t.hosted().len(), 1);
        let other = start_node("qn-2", Role::QueryNode);
        assert!(matches!(t.start(&other), Err(Error::ResourceExhausted(_))));
        let clash = start_node("qn-1", Role::DataNode);
        assert!(matches!(t.start(&clash), Err(Error::AlreadyExists(_))));
        let bad = start_node("a.b", Role::DataNode);
        assert!(matches!(t.start(&bad), Err(Error::InvalidArgument(_))));
        let s = t.status(1);
        assert!(s.nodes[0].pid != 0 && s.nodes[0].managed && s.nodes[0].roles == [Role::QueryNode]);
        assert_eq!((s.enforcement.as_str(), s.nodes[0].size, s.nodes[0].oom_kills), ("none", NodeSize::UNSIZED, 0));
        t.stop("qn-1");
        t.stop("unknown");
        assert!(t.hosted()[0].stopping);
        let start = Instant::now();
        while !t.hosted().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5), "not gone after SIGTERM");
            t.poll(Instant::now());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Room again once it is gone.
        t.start(&other).unwrap();
        let env = std::fs::read_to_string(dir.path().join("logs/qn-2.log")).unwrap();
        assert!(env.contains("==== quiver host: starting qn-2"), "{env}");
    }
}
