//! Coordinator high availability: two coordinator processes, one active and one hot standby
//! (`NodeState::Standby`), over a NATS KV lease (`actors/src/coordinator/lease.rs`).
//!
//! - The active one is SIGKILLed under search + insert load: the standby takes over within a few
//!   seconds, no insert and no search fails (proxies hold timestamp and id blocks and send
//!   coordinator calls again while nothing serves them), and the restarted one comes back as
//!   the standby.
//! - The active one is paused (SIGSTOP) until the standby has taken over, then resumed: it
//!   steps down without having written anything (its writes are fenced on the epoch), and the
//!   cluster has exactly one active coordinator.

use std::time::{Duration, Instant};

use quiver_client::{Client, ClusterStatus, NodeState, SegmentState};

use crate::common::data;
use crate::common::load::Load;
use crate::common::{eventually, indexed_docs, run, start_one_per_role, Harness, READY};

const LEASE_TTL: &str = "3s";

pub(crate) fn state_of(s: &ClusterStatus, node: &str) -> Option<NodeState> {
    s.nodes.iter().find(|n| n.node_id == node).map(|n| n.state)
}

/// Waits until `check` holds for the cluster's status; returns how long that took.
pub(crate) async fn wait_status(
    client: &Client,
    what: &str,
    limit: Duration,
    check: impl Fn(&ClusterStatus) -> Result<(), String>,
) -> Duration {
    let started = Instant::now();
    let poll = client.clone().with_timeout(Duration::from_secs(3));
    eventually(what, limit, || async {
        let s = poll.status().await.map_err(|e| e.to_string())?;
        check(&s)
    })
    .await;
    started.elapsed()
}

/// Waits until `active` serves as the coordinator and `standby` waits as one.
pub(crate) async fn wait_roles(client: &Client, active: &str, standby: &str, limit: Duration) {
    wait_status(client, &format!("{active} active, {standby} standby"), limit, |s| {
        match (state_of(s, active), state_of(s, standby)) {
            (Some(NodeState::Serving), Some(NodeState::Standby)) => Ok(()),
            other => Err(format!("states {other:?}")),
        }
    })
    .await;
}

/// Waits until coordinator `node` serves (it took over).
async fn wait_active(client: &Client, node: &str, limit: Duration) {
    wait_status(client, &format!("{node} active"), limit, |s| match state_of(s, node) {
        Some(NodeState::Serving) => Ok(()),
        other => Err(format!("{node} is {other:?}")),
    })
    .await;
}

/// A cluster with coordinators `c1` (active) and `c2` (standby) and one node of each other role.
async fn start(h: &mut Harness, env: &[(&str, &str)]) -> Client {
    h.start_nats();
    let (client, _) = start_one_per_role(h, "c1", env).await;
    h.start_node("c2", &["coordinator"], env);
    wait_roles(&client, "c1-coordinator", "c2-coordinator", READY).await;
    client
}

#[test]
fn a_standby_coordinator_takes_over_and_no_write_or_search_fails() {
    run(Duration::from_secs(180), async {
        let mut h = Harness::new("coordha");
        let env = [("QUIVER_COORDINATOR__LEASE_TTL", LEASE_TTL), ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "3000")];
        let client = start(&mut h, &env).await;
        indexed_docs(&client, 4_000).await;

        let load = Load::start(&client, 4_000, 4_000, 60_000);
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.proc("c1").kill();
        let killed = Instant::now();
        wait_active(&client, "c2-coordinator", Duration::from_secs(30)).await;
        let takeover = killed.elapsed();
        // The new coordinator does the coordinator's work under the load: flushes and builds.
        tokio::time::sleep(Duration::from_secs(3)).await;
        data::flush(&client, "docs").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let inserted = load.inserted.clone();
        let failures = load.failures();
        let searches = load.stop().await;
        assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        // Keys 0..n, each acknowledged once: nothing lost, nothing doubled.
        let n = inserted.load(std::sync::atomic::Ordering::Relaxed) as usize;
        assert!(n > 4_000, "the load inserted nothing");
        data::flush(&client, "docs").await;
        assert_eq!(data::count(&client, "docs").await, n as i64);
        data::wait_segments(&client, "docs", n as u64, SegmentState::Indexed, Duration::from_secs(90)).await;
        assert_eq!(data::count(&client, "docs").await, n as i64, "rows doubled or lost after index builds");

        // The killed coordinator comes back as the standby; one coordinator acts.
        h.proc("c1").restart().expect("restart c1");
        wait_roles(&client, "c2-coordinator", "c1-coordinator", READY).await;
        println!(
            "coordinator SIGKILL under load: standby active after {takeover:?} (lease_ttl {LEASE_TTL}); \
             {searches} searches, {n} rows, 0 failed"
        );
    });
}

#[test]
fn a_paused_coordinator_that_was_replaced_writes_nothing_and_steps_down() {
    run(Duration::from_secs(150), async {
        let mut h = Harness::new("coordfence");
        let env = [("QUIVER_COORDINATOR__LEASE_TTL", LEASE_TTL)];
        let client = start(&mut h, &env).await;
        indexed_docs(&client, 2_000).await;

        let c1 = h.pid("c1").to_string();
        signal("-STOP", &c1);
        wait_active(&client, "c2-coordinator", Duration::from_secs(30)).await;
        // Writes go on while the old coordinator is paused (it still holds its subscription).
        data::insert_rows(&client, "docs", 2_000, 3_000, 500).await;

        signal("-CONT", &c1);
        wait_roles(&client, "c2-coordinator", "c1-coordinator", Duration::from_secs(30)).await;
        let log = h.proc("c1").log();
        assert!(log.contains("stepping down"), "c1 did not step down:\n{}", h.proc("c1").log_tail(30));

        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", 3_000, SegmentState::Indexed, Duration::from_secs(60)).await;
        assert_eq!(data::count(&client, "docs").await, 3_000);
        assert!(h.proc("c1").is_running() && h.proc("c2").is_running());
    });
}

fn signal(sig: &str, pid: &str) {
    let status = std::process::Command::new("kill").args([sig, pid]).status().expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// The fence itself, against a real nats-server: writes fenced on the epoch key's revision are
/// stored while it stands and refused (puts and deletes, nothing changed) once a takeover moved
/// it, while the new holder's writes go through.
#[test]
fn writes_fenced_on_an_epoch_are_refused_once_another_coordinator_took_over() {
    use quiver_runtime::{bus::Bus, Error, JsonBucket};
    use quiver_schemas::protocol::keys::COORD_EPOCH;
    run(Duration::from_secs(30), async {
        let mut h = Harness::new("fence");
        h.start_nats();
        let seed = std::fs::read_to_string(h.data_dir().join("credentials").join("node.nk")).expect("node.nk");
        let options = async_nats::ConnectOptions::new().nkey(seed.trim().to_string());
        let bus = Bus::connect_with(&h.url(), &h.cluster, "fence-test", Duration::from_secs(5), options).await.unwrap();
        let meta = JsonBucket::open(&bus, &bus.subjects().meta_bucket(), Duration::ZERO, 1).await.unwrap();

        let first = meta.update(COORD_EPOCH, &1u64, 0).await.unwrap();
        let old = meta.fenced(COORD_EPOCH, first);
        old.put("layout.1", &"epoch 1").await.unwrap();
        old.put("layout.2", &"epoch 1").await.unwrap();

        let second = meta.update(COORD_EPOCH, &2u64, first).await.unwrap();
        let new = meta.fenced(COORD_EPOCH, second);
        let refused = old.put("layout.1", &"late write of epoch 1").await.unwrap_err();
        assert!(matches!(&refused, Error::Stale(m) if m.contains("fenced out")), "{refused}");
        assert!(matches!(old.delete("layout.2").await, Err(Error::Stale(_))));
        assert_eq!(meta.get::<String>("layout.1").await.unwrap().as_deref(), Some("epoch 1"));
        assert_eq!(meta.get::<String>("layout.2").await.unwrap().as_deref(), Some("epoch 1"));

        new.put("layout.1", &"epoch 2").await.unwrap();
        new.delete("layout.2").await.unwrap();
        assert_eq!(meta.get::<String>("layout.1").await.unwrap().as_deref(), Some("epoch 2"));
        assert_eq!(meta.get::<String>("layout.2").await.unwrap(), None);
    });
}
