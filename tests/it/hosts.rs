//! `quiver host`: two agents on one NATS, driven over the bus as the coordinator's scaler
//! drives them. `start_node` starts a node that registers with its host agent, `stop_node`
//! stops it for good, `host.max_nodes` is enforced, a SIGKILLed agent takes its nodes with it,
//! a SIGTERMed one stops them and leaves the hosts registry.

use std::time::Duration;

use quiver_runtime::bus::CallOptions;
use quiver_runtime::{Bus, Registry};
use quiver_schemas::protocol::host;
use quiver_schemas::{HostStatus, HostedNode, Role, StartNode, StopNode};

use crate::common::{eventually, process_alive, run, Harness};

/// The bus and registry as the coordinator sees them (the `node` principal).
async fn connect(h: &Harness) -> (Bus, Registry) {
    let seed = std::fs::read_to_string(h.data_dir().join("credentials/node.nk")).expect("node.nk");
    let options = async_nats::ConnectOptions::new().nkey(seed.trim().to_string());
    let bus = Bus::connect_with(&h.url(), &h.cluster, "it-hosts", Duration::from_secs(10), options).await.unwrap();
    let registry = Registry::open(&bus, Duration::from_secs(5), 1).await.unwrap();
    (bus, registry)
}

async fn host_entry(registry: &Registry, id: &str) -> Result<HostStatus, String> {
    let hosts = registry.hosts().await.map_err(|e| e.to_string())?;
    hosts.into_iter().find(|h| h.host_id == id).ok_or_else(|| format!("host {id} is not registered"))
}

/// Waits until host `id` runs node `node` (pid != 0) and the node registered with it.
async fn wait_running(registry: &Registry, id: &str, node: &str, role: Role) -> HostedNode {
    eventually(&format!("{node} running on {id} and registered"), Duration::from_secs(20), || async {
        let entry = host_entry(registry, id).await?;
        let hosted = entry.nodes.iter().find(|n| n.node_id == node).ok_or("not listed")?.clone();
        if hosted.pid == 0 {
            return Err(format!("not running: {hosted:?}"));
        }
        let nodes = registry.nodes().await.map_err(|e| e.to_string())?;
        let reg_id = format!("{node}-{}", role.as_str());
        let n = nodes.iter().find(|n| n.node_id == reg_id).ok_or(format!("{reg_id} not registered"))?;
        if n.host_agent != id || n.pid != hosted.pid {
            return Err(format!("{reg_id}: host_agent {:?}, pid {} (host says {})", n.host_agent, n.pid, hosted.pid));
        }
        Ok(hosted)
    })
    .await
}

#[test]
fn host_agents_start_and_stop_nodes() {
    run(Duration::from_secs(90), async {
        let mut h = Harness::new("hosts");
        h.start_nats();
        h.start_quiver("host-a", &["host", "--id", "ha"], &[("QUIVER_HOST__STOP_GRACE", "20s")]);
        h.start_quiver("host-b", &["host", "--id", "hb"], &[("QUIVER_HOST__MAX_NODES", "1")]);
        let (bus, registry) = connect(&h).await;
        for id in ["ha", "hb"] {
            let entry =
                eventually(&format!("host {id} registered"), Duration::from_secs(20), || host_entry(&registry, id))
                    .await;
            assert!(entry.cpus >= 1 && entry.mem_total > 0 && entry.nodes.is_empty(), "{entry:?}");
        }

        // start_node: the node runs, registers as <id>-indexnode with its host agent; again: nothing new.
        let opts = CallOptions::default();
        let start = |node: &str| StartNode { node_id: node.into(), role: Role::IndexNode, size: Default::default() };
        bus.call_node::<host::StartNode>("ha", &start("ix-1"), &opts).await.expect("start_node");
        let hosted = wait_running(&registry, "ha", "ix-1", Role::IndexNode).await;
        assert!(hosted.managed && !hosted.stopping && hosted.roles == [Role::IndexNode], "{hosted:?}");
        bus.call_node::<host::StartNode>("ha", &start("ix-1"), &opts).await.expect("start_node again");
        let entry = host_entry(&registry, "ha").await.unwrap();
        assert_eq!(entry.nodes.len(), 1, "{entry:?}");
        assert_eq!(entry.nodes[0].pid, hosted.pid, "a second start_node started nothing new");
        assert!(h.dir.path().join("data/logs/ix-1.log").is_file());

        // stop_node: it drains and exits, is not restarted and leaves the host's list.
        bus.call_node::<host::StopNode>("ha", &StopNode { node_id: "ix-1".into() }, &opts).await.expect("stop_node");
        eventually("ix-1 gone", Duration::from_secs(20), || async {
            let entry = host_entry(&registry, "ha").await?;
            if !entry.nodes.is_empty() || process_alive(hosted.pid) {
                return Err(format!("{:?}", entry.nodes));
            }
            Ok(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let entry = host_entry(&registry, "ha").await.unwrap();
        assert!(entry.nodes.is_empty(), "restarted after stop_node: {entry:?}");
        bus.call_node::<host::StopNode>("ha", &StopNode { node_id: "ix-1".into() }, &opts)
            .await
            .expect("stop_node of a node that is gone is no error");

        // host.max_nodes = 1 on hb: the second start is refused.
        bus.call_node::<host::StartNode>("hb", &start("ix-2"), &opts).await.expect("start_node on hb");
        let on_b = wait_running(&registry, "hb", "ix-2", Role::IndexNode).await;
        let refused = bus.call_node::<host::StartNode>("hb", &start("ix-3"), &opts).await.unwrap_err();
        assert!(refused.to_string().contains("host.max_nodes"), "{refused}");

        // SIGKILL of agent hb: its node dies with it.
        h.proc("host-b").kill();
        eventually("ix-2 dies with its agent", Duration::from_secs(5), || async {
            if process_alive(on_b.pid) {
                Err("still running".to_string())
            } else {
                Ok(())
            }
        })
        .await;

        // SIGTERM of agent ha: it stops its nodes, deregisters and exits 0.
        bus.call_node::<host::StartNode>("ha", &start("ix-4"), &opts).await.expect("start_node");
        let on_a = wait_running(&registry, "ha", "ix-4", Role::IndexNode).await;
        let status = h.proc("host-a").terminate(Duration::from_secs(30)).expect("host agent exits on SIGTERM");
        assert!(status.success(), "{status}");
        assert!(!process_alive(on_a.pid), "the agent's node outlived it");
        let hosts = registry.hosts().await.unwrap();
        assert!(!hosts.iter().any(|h| h.host_id == "ha"), "still registered: {hosts:?}");
    });
}
