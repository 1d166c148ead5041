//! `quiver cluster up | status | down`: a local multi-process cluster from a cluster file, kept
//! running by a background supervisor. A SIGKILLed node is restarted (new pid, counted, registered
//! again); `down` leaves no process behind; `up` on a running cluster starts nothing; a bad
//! cluster file is refused, naming the key, before anything starts.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use quiver_client::{Client, ConnectOptions, Consistency, SearchParams, SegmentState};

use crate::common::data::{self, dataset, exact_top_k, recall};
use crate::common::{eventually, free_port, process_alive, quiver_cli, run};

/// A cluster file in a temp dir and the cluster `quiver cluster` runs from it. Dropping it runs
/// `cluster down` (printing the logs first if the test is failing), so a failed test leaves
/// nothing running even though the supervisor is detached from the test process.
struct LocalCluster {
    dir: tempfile::TempDir,
    file: PathBuf,
    name: String,
    nats_port: u16,
}

impl LocalCluster {
    /// Writes a cluster file: managed nats-server on a free port, data dir `data` beside the
    /// file, gRPC and metrics off, fast restarts, then the given `[[node]]` tables.
    fn new(test: &str, nodes: &str) -> LocalCluster {
        LocalCluster::with_nats(test, free_port().expect("free port"), "", nodes)
    }

    /// [`LocalCluster::new`] with the managed NATS on `nats_port` and `nats` added to its table.
    fn with_nats(test: &str, nats_port: u16, nats: &str, nodes: &str) -> LocalCluster {
        let dir = tempfile::Builder::new().prefix(&format!("quiver-it-{test}-")).tempdir().expect("tempdir");
        let name = format!("it_{test}_{}", std::process::id());
        let log = std::env::var("QUIVER_IT_LOG").unwrap_or_else(|_| "info".into());
        let text = format!(
            r#"
[cluster]
name = "{name}"
data_dir = "data"
[cluster.env]
QUIVER_PROXY__GRPC_PORT = 0
QUIVER_PROXY__HTTP_PORT = 0
QUIVER_METRICS__LISTEN = ""
RUST_LOG = "{log}"
[nats]
port = {nats_port}
{nats}
[supervisor]
backoff_initial = "300ms"
stop_grace = "5s"
{nodes}
"#
        );
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, text).expect("write cluster file");
        LocalCluster { dir, file, name, nats_port }
    }

    /// `quiver cluster <command> --config <file>`, run in the temp dir.
    fn cli(&self, command: &str, extra: &[&str]) -> (ExitStatus, String, String) {
        let file = self.file.display().to_string();
        let mut args = vec!["cluster", command, "--config", &file];
        args.extend_from_slice(extra);
        quiver_cli(&args, &[], self.dir.path())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The supervisor's state file (`None` while there is none).
    fn state(&self) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.data_dir().join("cluster/state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// `(pid, restarts)` of a node according to the supervisor.
    fn node(&self, id: &str) -> (Option<u32>, u64) {
        let state = self.state().expect("state file");
        let node = state["nodes"].as_array().expect("nodes").iter().find(|n| n["name"] == id).expect("node in state");
        (node["pid"].as_u64().map(|p| p as u32), node["restarts"].as_u64().expect("restarts"))
    }

    /// Every pid the cluster runs: the supervisor, the nats-server and the nodes.
    fn pids(&self) -> Vec<u32> {
        let state = self.state().expect("state file");
        let mut pids = vec![state["supervisor_pid"].as_u64().expect("supervisor pid") as u32];
        pids.push(state["nats"]["pid"].as_u64().expect("nats pid") as u32);
        pids.extend(
            state["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["pid"].as_u64()).map(|p| p as u32),
        );
        pids
    }

    /// A client as admin, with the credentials `up` generated under the data dir (security is
    /// on by default).
    async fn client(&self) -> Client {
        let url = format!("nats://127.0.0.1:{}", self.nats_port);
        let options = ConnectOptions::default()
            .credentials_file(self.data_dir().join("credentials/admin.credentials"))
            .expect("the cluster's admin credentials");
        Client::connect_with(&url, &self.name, &options).await.expect("connect").with_timeout(Duration::from_secs(20))
    }

    fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.data_dir().join(format!("logs/{node}.log"))).unwrap_or_default()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("==== test failed; cluster {} in {} ====", self.name, self.dir.path().display());
            if let Ok(dir) = std::fs::read_dir(self.data_dir().join("logs")) {
                for entry in dir.flatten() {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                    eprintln!("---- last lines of {} ----\n{tail}", entry.path().display());
                }
            }
        }
        if self.file.exists() {
            let (status, _, err) = self.cli("down", &[]);
            if !status.success() {
                eprintln!("cluster down failed: {err}");
            }
        }
    }
}

const NODES: &str = r#"
[[node]]
id = "coord"
roles = ["coordinator"]
[[node]]
id = "proxy"
roles = ["proxy"]
[[node]]
id = "dn"
roles = ["datanode", "indexnode"]
[[node]]
id = "qn1"
roles = ["querynode"]
[[node]]
id = "qn2"
roles = ["querynode"]
"#;

/// The first of `n` consecutive free ports.
fn free_run(n: u16) -> u16 {
    // `free_port` hands out ports in turn: taking all `n` from it keeps them from other tests.
    loop {
        let first = free_port().expect("free port");
        if (1..n).all(|i| free_port().ok() == first.checked_add(i)) {
            return first;
        }
    }
}

/// The lines of `status`/`up` output for one node (one per role).
fn rows<'a>(table: &'a str, node: &str) -> Vec<&'a str> {
    table.lines().filter(|l| l.split_whitespace().next() == Some(node)).collect()
}

#[test]
fn cluster_up_restarts_a_killed_node_and_down_leaves_nothing() {
    run(Duration::from_secs(60), async {
        let c = LocalCluster::new("clustercli", NODES);
        let (status, out, err) = c.cli("up", &["--timeout", "30s"]);
        assert!(status.success(), "cluster up failed: {out}\n{err}");
        for node in ["coord", "proxy", "dn", "qn1", "qn2"] {
            let lines = rows(&out, node);
            assert!(!lines.is_empty() && lines.iter().all(|l| l.contains("healthy")), "{node} in:\n{out}");
        }
        assert_eq!(rows(&out, "dn").len(), 2, "one row per role:\n{out}");
        let supervisor = c.pids()[0];

        // A second `up` starts nothing and says why.
        let (status, _, err) = c.cli("up", &[]);
        assert!(!status.success(), "a second up must fail");
        assert!(err.contains("already running"), "{err}");
        assert_eq!(c.pids()[0], supervisor, "still the same supervisor");

        let (status, out, err) = c.cli("status", &[]);
        assert!(status.success(), "status: {err}");
        assert!(out.contains(&format!("supervisor pid {supervisor}")), "{out}");
        assert!(rows(&out, "nats-server").iter().any(|l| l.contains(" yes ")), "{out}");
        for line in ["coord", "proxy", "dn", "qn1", "qn2"].iter().flat_map(|n| rows(&out, n)) {
            assert!(line.contains(" yes ") && line.contains("healthy"), "{line}");
        }

        // Data goes in and comes back through the SDK.
        let client = c.client().await;
        let n = 3_000;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, n, 1_000).await;
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", n as u64, SegmentState::Flushed, Duration::from_secs(15)).await;
        let queries = dataset().queries(20);
        let truth = exact_top_k(n, &queries, 10);
        let req = data::search("docs", queries.clone(), 10, SearchParams::default(), Consistency::Strong);
        let r = recall(&client.search(&req).await.expect("search"), &queries, &truth, 10);
        assert_eq!(r, 1.0, "exact search over the cluster");

        // SIGKILL a query node: the supervisor starts it again (new pid, one restart), and the
        // new process registers.
        let (old, restarts) = c.node("qn1");
        let old = old.expect("qn1 runs");
        assert_eq!(restarts, 0);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), nix::sys::signal::Signal::SIGKILL)
            .expect("kill qn1");
        let new = eventually("qn1 restarted by the supervisor", Duration::from_secs(15), || async {
            match c.node("qn1") {
                (Some(pid), 1) if pid != old => Ok(pid),
                other => Err(format!("qn1 (pid, restarts) = {other:?}")),
            }
        })
        .await;
        assert!(!process_alive(old));
        eventually("the new qn1 registered and healthy", Duration::from_secs(15), || async {
            let s = client.status().await.map_err(|e| e.to_string())?;
            match s.nodes.iter().find(|n| n.node_id == "qn1-querynode") {
                Some(n) if n.pid == new && n.healthy => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let (_, out, _) = c.cli("status", &[]);
        let line = rows(&out, "qn1").concat();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.get(2..5), Some(&[new.to_string().as_str(), "yes", "1"][..]), "{out}");
        assert!(line.contains("healthy") && line.contains("killed by SIGKILL"), "{out}");
        assert_eq!(c.log("qn1").matches("quiver cluster: starting qn1").count(), 2, "one log across restarts");

        // The restarted node serves again: searches are complete.
        eventually("exact search after the restart", Duration::from_secs(20), || {
            let (req, queries, truth) = (req.clone(), &queries, &truth);
            let client = client.clone().with_timeout(Duration::from_secs(5));
            async move {
                let res = client.search(&req).await.map_err(|e| e.to_string())?;
                let r = recall(&res, queries, truth, 10);
                if r == 1.0 {
                    Ok(())
                } else {
                    Err(format!("recall {r}"))
                }
            }
        })
        .await;

        // `down` stops everything; it is idempotent.
        let pids = c.pids();
        assert_eq!(pids.len(), 7, "supervisor, nats-server and five nodes: {pids:?}");
        let (status, out, err) = c.cli("down", &[]);
        assert!(status.success(), "down: {out}\n{err}");
        assert!(out.contains("stopped"), "{out}");
        let left: Vec<u32> = pids.iter().copied().filter(|p| process_alive(*p)).collect();
        assert!(left.is_empty(), "processes left after down: {left:?}");
        let (status, out, _) = c.cli("down", &[]);
        assert!(status.success() && out.contains("not running"), "{out}");
        let (status, out, _) = c.cli("status", &[]);
        assert_eq!(status.code(), Some(3), "status of a stopped cluster: {out}");
        assert!(out.contains("not running"), "{out}");
    });
}

#[test]
fn processes_die_with_a_killed_supervisor() {
    run(Duration::from_secs(45), async {
        let nodes = "[[node]]\nid = \"all\"\nroles = [\"coordinator\", \"proxy\", \"datanode\", \"indexnode\"]\n\
                     [[node]]\nid = \"qn\"\nroles = [\"querynode\"]\n";
        let c = LocalCluster::new("clusterorphans", nodes);
        let (status, out, err) = c.cli("up", &["--timeout", "30s"]);
        assert!(status.success(), "cluster up failed: {out}\n{err}");
        let pids = c.pids();
        assert_eq!(pids.len(), 4, "supervisor, nats-server, two nodes: {pids:?}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0] as i32), nix::sys::signal::Signal::SIGKILL)
            .expect("kill the supervisor");
        // PR_SET_PDEATHSIG: the kernel kills every child with it.
        eventually("no process outlives the supervisor", Duration::from_secs(5), || async {
            let left: Vec<u32> = pids.iter().copied().filter(|p| process_alive(*p)).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still running: {left:?}"))
            }
        })
        .await;
        let (status, out, _) = c.cli("status", &[]);
        assert_eq!(status.code(), Some(3), "{out}");
        assert!(out.contains("not running") && out.contains("left over"), "{out}");
        // The stale state does not stop a new `up`.
        let (status, out, err) = c.cli("up", &["--timeout", "30s"]);
        assert!(status.success(), "cluster up after a killed supervisor: {out}\n{err}");
        assert_ne!(c.pids()[0], pids[0]);
        let (status, out, err) = c.cli("down", &[]);
        assert!(status.success(), "down: {out}\n{err}");
    });
}

#[test]
fn cluster_file_errors_name_the_key_and_start_nothing() {
    let cases: [(&str, &str, &str); 5] = [
        ("unknown key", "[[node]]\nid = \"a\"\nroles = [\"coordinator\", \"proxy\"]\nrole = \"x\"\n", "role"),
        ("missing roles", "[[node]]\nid = \"a\"\n", "roles"),
        (
            "duplicate id",
            "[[node]]\nid = \"a\"\nroles = [\"coordinator\", \"proxy\"]\n\
             [[node]]\nid = \"a\"\nroles = [\"querynode\"]\n",
            "node[1].id",
        ),
        (
            "unknown override",
            "[[node]]\nid = \"a\"\nroles = [\"coordinator\", \"proxy\"]\nenv = { QUIVER_QUERYNODE__NO_SUCH_KEY = 1 }\n",
            "no_such_key",
        ),
        ("unknown role", "[[node]]\nid = \"a\"\nroles = [\"coordinator\", \"proxy\", \"querynod\"]\n", "querynod"),
    ];
    for (what, nodes, key) in cases {
        let c = LocalCluster::new("clusterbad", nodes);
        let (status, out, err) = c.cli("up", &["--timeout", "5s"]);
        assert!(!status.success(), "{what}: up must fail:\n{out}");
        assert!(err.contains(key), "{what}: the error names {key:?}: {err}");
        assert!(err.contains("cluster.toml"), "{what}: the error names the file: {err}");
        assert!(!c.data_dir().exists(), "{what}: nothing may be started (no data dir)");
        // Nothing to stop: drop needs no `down` (which would fail on the same file).
        std::fs::remove_file(&c.file).expect("remove file");
    }
}

/// The supervisor is a host agent (`<name>-local`): its file nodes are listed unmanaged, the
/// scaler's `start_node` adds a managed node that `status` shows, `stop_node` stops a file node
/// for good.
#[test]
fn cluster_supervisor_is_a_host_agent() {
    use quiver_runtime::bus::CallOptions;
    use quiver_schemas::protocol::host;
    use quiver_schemas::{Role, StartNode, StopNode};

    run(Duration::from_secs(60), async {
        let nodes = r#"
[[node]]
id = "all"
roles = ["coordinator", "proxy", "datanode"]
[[node]]
id = "ix1"
roles = ["indexnode"]
"#;
        let c = LocalCluster::new("clusterhost", nodes);
        let (status, out, err) = c.cli("up", &["--timeout", "30s"]);
        assert!(status.success(), "cluster up failed: {out}\n{err}");
        let seed = std::fs::read_to_string(c.data_dir().join("credentials/node.nk")).expect("node.nk");
        let options = async_nats::ConnectOptions::new().nkey(seed.trim().to_string());
        let url = format!("nats://127.0.0.1:{}", c.nats_port);
        let bus = quiver_runtime::Bus::connect_with(&url, &c.name, "it", Duration::from_secs(10), options)
            .await
            .expect("connect as node");
        let registry = quiver_runtime::Registry::open(&bus, Duration::from_secs(5), 1).await.expect("registry");
        let host_id = format!("{}-local", c.name);
        let entry = eventually("the supervisor registered as a host", Duration::from_secs(15), || async {
            let hosts = registry.hosts().await.map_err(|e| e.to_string())?;
            hosts.into_iter().find(|h| h.host_id == host_id).ok_or_else(|| "not yet".to_string())
        })
        .await;
        assert_eq!(entry.nodes.len(), 2, "{entry:?}");
        assert!(entry.nodes.iter().all(|n| !n.managed && n.pid != 0), "{entry:?}");

        let opts = CallOptions::default();
        let req = StartNode { node_id: "ix-9".into(), role: Role::IndexNode, size: Default::default() };
        bus.call_node::<host::StartNode>(&host_id, &req, &opts).await.expect("start_node");
        eventually("ix-9 registered with the supervisor's host agent", Duration::from_secs(20), || async {
            let nodes = registry.nodes().await.map_err(|e| e.to_string())?;
            match nodes.iter().find(|n| n.node_id == "ix-9-indexnode") {
                Some(n) if n.host_agent == host_id => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let (status, out, err) = c.cli("status", &[]);
        assert!(status.success(), "status: {err}");
        assert!(rows(&out, "ix-9*").iter().any(|l| l.contains(" yes ")), "{out}");

        // A file node stopped by the scaler stays stopped.
        let (pid, _) = c.node("ix1");
        let pid = pid.expect("ix1 runs");
        bus.call_node::<host::StopNode>(&host_id, &StopNode { node_id: "ix1".into() }, &opts).await.expect("stop_node");
        eventually("ix1 stopped for good", Duration::from_secs(20), || async {
            let state = c.state().ok_or("no state")?;
            let listed = state["nodes"].as_array().ok_or("no nodes")?.iter().any(|n| n["name"] == "ix1");
            if listed || process_alive(pid) {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        let (status, _, err) = c.cli("down", &[]);
        assert!(status.success(), "down: {err}");
        // The agent deregisters before the nats-server stops.
        let log = c.log("supervisor");
        assert!(!log.contains("cannot remove the host's registry entry"), "{log}");
    });
}

/// `[nats] servers = 3`: the supervisor runs a 3-server NATS cluster (routes, JetStream on each),
/// the nodes get every server's URL and keep three replicas of every stream and KV bucket (one on
/// each server, as JetStream reports), and a SIGKILLed server is restarted and rejoins while the
/// cluster goes on.
#[test]
fn a_cluster_runs_a_three_server_nats_cluster_with_three_replicas() {
    run(Duration::from_secs(120), async {
        let (ports, routes) = (free_run(3), free_run(3));
        let c = LocalCluster::with_nats("natsthree", ports, &format!("servers = 3\nroute_port = {routes}"), NODES);
        let (status, out, err) = c.cli("up", &["--timeout", "60s"]);
        assert!(status.success(), "cluster up failed: {out}\n{err}");
        let (_, out, _) = c.cli("status", &[]);
        for i in 0..3 {
            assert!(rows(&out, &format!("nats-server-{i}")).iter().any(|l| l.contains(" yes ")), "{out}");
        }
        let client = c.client().await;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, 2_000, 500).await;
        data::flush(&client, "docs").await;
        assert_eq!(data::count(&client, "docs").await, 2_000);

        // Every stream (the DML logs, the KV buckets) has three replicas.
        let seed = std::fs::read_to_string(c.data_dir().join("credentials/node.nk")).expect("node.nk");
        let nc = async_nats::ConnectOptions::new()
            .nkey(seed.trim().to_string())
            .connect(format!("nats://127.0.0.1:{ports}"))
            .await
            .expect("connect as node");
        let js = async_nats::jetstream::new(nc);
        let mut names = js.stream_names();
        let mut streams = 0;
        while let Some(name) = futures::StreamExt::next(&mut names).await {
            let name = name.expect("stream name");
            let mut stream = js.get_stream(&name).await.expect("stream");
            let info = stream.info().await.expect("stream info");
            assert_eq!(info.config.num_replicas, 3, "{name}");
            let cluster = info.cluster.clone().expect("clustered");
            assert_eq!(cluster.replicas.len(), 2, "{name}: a leader and two replicas: {cluster:?}");
            streams += 1;
        }
        assert!(streams >= 4, "the DML stream and the KV buckets: {streams}");

        // A server SIGKILLed: the supervisor starts it again and the cluster goes on.
        let state = c.state().expect("state");
        let server = state["more_nats"][0]["pid"].as_u64().expect("nats-server-1 pid") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(server), nix::sys::signal::Signal::SIGKILL).expect("kill");
        data::insert_rows(&client, "docs", 2_000, 3_000, 500).await;
        eventually("nats-server-1 restarted", Duration::from_secs(15), || async {
            let pid = c.state().and_then(|s| s["more_nats"][0]["pid"].as_u64());
            match pid {
                Some(p) if p as i32 != server && process_alive(p as u32) => Ok(()),
                other => Err(format!("pid {other:?}")),
            }
        })
        .await;
        data::flush(&client, "docs").await;
        assert_eq!(data::count(&client, "docs").await, 3_000);
    });
}
