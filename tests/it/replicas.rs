//! In-memory replicas (MISSION S2): a multi-process cluster with four query nodes serving a
//! collection in two replica groups, under continuous search and insert load, while query
//! nodes are SIGKILLed (a shard leader, then one that is not) and restarted, and the
//! coordinator is SIGKILLed and restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_client::{Client, ClientError, Consistency, Distribution, SearchParams, SegmentState};

use crate::common::data::{self, dataset, exact_top_k, recall};
use crate::common::{eventually, run, Harness, READY};

const QUERY_NODES: [&str; 4] = ["qn1", "qn2", "qn3", "qn4"];

fn node_id(proc: &str) -> String {
    format!("{proc}-querynode")
}

/// Every replica group has nodes, every shard a confirmed leader in every group, and every
/// sealed segment one holder in every group; none of it on a node of `gone`.
fn fully_replicated(d: &Distribution, replicas: usize, gone: &[String]) -> Result<(), String> {
    if d.replicas.len() != replicas {
        return Err(format!("{} replica groups", d.replicas.len()));
    }
    let group_of: BTreeMap<&str, u32> =
        d.replicas.iter().flat_map(|g| g.nodes.iter().map(move |n| (n.as_str(), g.id))).collect();
    if let Some(g) = d.replicas.iter().find(|g| g.nodes.is_empty()) {
        return Err(format!("replica group {} has no node", g.id));
    }
    if let Some(n) = gone.iter().find(|n| group_of.contains_key(n.as_str())) {
        return Err(format!("{n} is still in a group"));
    }
    let mut shards: Vec<u32> = d.shards.iter().map(|s| s.shard).collect();
    shards.dedup();
    for shard in shards {
        let groups: BTreeSet<u32> =
            d.leaders_of(shard).filter_map(|l| group_of.get(l.leader.as_str()).copied()).collect();
        if groups.len() != replicas {
            return Err(format!("shard {shard} has leaders in groups {groups:?}: {:?}", d.shards));
        }
    }
    for s in &d.segments {
        let groups: BTreeSet<u32> = s.nodes.iter().filter_map(|n| group_of.get(n.as_str()).copied()).collect();
        if groups.len() != replicas || s.nodes.len() != replicas {
            return Err(format!("segment {} is held by {:?}", s.segment.id, s.nodes));
        }
    }
    Ok(())
}

async fn wait_replicated(client: &Client, replicas: usize, gone: &[String], limit: Duration) -> Distribution {
    eventually("fully replicated", limit, || async {
        let d = client.distribution("docs").await.map_err(|e| e.to_string())?;
        fully_replicated(&d, replicas, gone).map(|()| d)
    })
    .await
}

/// Search and insert load running until stopped; counts failures and keeps their messages.
struct Load {
    stop: Arc<AtomicBool>,
    searches: Arc<AtomicU64>,
    inserted: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    latencies_us: Arc<Mutex<Vec<u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Searches (bounded consistency, every answer must have k hits) on two tasks, and inserts
    /// base rows `from..to` in batches of 200 on a third.
    fn start(client: &Client, from: usize, to: usize) -> Load {
        let load = Load {
            stop: Arc::default(),
            searches: Arc::default(),
            inserted: Arc::new(AtomicU64::new(from as u64)),
            failures: Arc::default(),
            latencies_us: Arc::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for t in 0..2 {
            let (client, stop, searches, failures, latencies) = (
                client.clone(),
                load.stop.clone(),
                load.searches.clone(),
                load.failures.clone(),
                load.latencies_us.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let ds = dataset();
                let mut q = t;
                while !stop.load(Ordering::Relaxed) {
                    let query = ds.queries(100)[(q % 100) * ds.dim..(q % 100 + 1) * ds.dim].to_vec();
                    let req = data::search("docs", query, 10, SearchParams::default(), Consistency::Bounded);
                    let started = Instant::now();
                    match client.search(&req).await {
                        Ok(r) if r.results.first().is_some_and(|h| h.pks.len() == 10) => {
                            latencies.lock().unwrap().push(started.elapsed().as_micros() as u64);
                        }
                        Ok(r) => failures.lock().unwrap().push(format!("incomplete result: {:?}", r.results)),
                        Err(e) => failures.lock().unwrap().push(format!("search failed: {e}")),
                    }
                    searches.fetch_add(1, Ordering::Relaxed);
                    q += 2;
                }
            }));
        }
        let (client, stop, inserted, failures) =
            (client.clone(), load.stop.clone(), load.inserted.clone(), load.failures.clone());
        tasks.push(tokio::spawn(async move {
            let ds = dataset();
            let mut at = from;
            while at < to && !stop.load(Ordering::Relaxed) {
                let end = (at + 200).min(to);
                let rows = quiver_client::schema::rows(at as i64..end as i64, ds.dim32(), ds.rows(at, end));
                match client.insert("docs", rows).await {
                    Ok(_) => {
                        at = end;
                        inserted.store(at as u64, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().unwrap().push(format!("insert failed: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
        Load { tasks, ..load }
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    async fn stop(self) -> (u64, u64, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let mut lat = self.latencies_us.lock().unwrap().clone();
        lat.sort_unstable();
        (self.searches.load(Ordering::Relaxed), self.inserted.load(Ordering::Relaxed), lat)
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn two_replicas_survive_query_node_kills_under_load() {
    run(Duration::from_secs(170), async {
        let mut h = Harness::new("replicas");
        h.start_nats();
        // Row-count placement spreads segments deterministically (see cluster.rs); no balance
        // moves, so that what moves is what the failures move.
        let env = [
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2500"),
            ("QUIVER_PLUGINS__BALANCER", "row-count"),
            ("QUIVER_BALANCE__INTERVAL", "1h"),
        ];
        let mut procs = vec![("coord", "coordinator"), ("proxy", "proxy"), ("dn", "datanode"), ("ixn", "indexnode")];
        procs.extend(QUERY_NODES.iter().map(|q| (*q, "querynode")));
        for (id, role) in &procs {
            h.start_node(id, &[role], &env);
        }
        let client = h.client().await;
        let nodes: Vec<(String, u32)> = procs.iter().map(|(id, role)| (format!("{id}-{role}"), h.pid(id))).collect();
        h.wait_ready(&client, &nodes, READY).await;

        let (initial, total) = (10_000, 20_000);
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, initial, 2_000).await;
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", initial as u64, SegmentState::Flushed, Duration::from_secs(30)).await;

        // More replicas than query nodes: a clear error, nothing changes.
        match client.load_collection("docs", 5).await {
            Err(ClientError::InvalidArgument(m)) => {
                assert!(m.contains("replica_number 5 needs at least 5 query nodes") && m.contains("4 are alive"), "{m}")
            }
            other => panic!("loading 5 replicas on 4 query nodes: {other:?}"),
        }
        client.load_collection("docs", 2).await.expect("load with 2 replicas");
        let started = Instant::now();
        let d = wait_replicated(&client, 2, &[], Duration::from_secs(30)).await;
        eprintln!("2 replicas loaded in {:?}: groups {:?}", started.elapsed(), d.replicas);
        assert!(d.replicas.iter().all(|g| g.nodes.len() == 2), "4 nodes in 2 groups of 2: {:?}", d.replicas);

        let load = Load::start(&client, initial, total);
        tokio::time::sleep(Duration::from_secs(1)).await;

        // 1. SIGKILL the leader of shard 0 in group 0; its group's other node takes over its
        //    segments and the shard, while group 1 answers for it meanwhile.
        let d = client.distribution("docs").await.expect("distribution");
        let leader = d.leaders_of(0).find(|l| l.replica == 0).expect("group 0 leads shard 0").leader.clone();
        let leader_proc = QUERY_NODES.iter().find(|q| node_id(q) == leader).expect("a query node");
        let killed = Instant::now();
        h.proc(leader_proc).kill();
        wait_replicated(&client, 2, std::slice::from_ref(&leader), Duration::from_secs(40)).await;
        let leader_recovery = killed.elapsed();
        assert!(load.failures().is_empty(), "failures after killing the leader: {:?}", load.failures());
        h.proc(leader_proc).restart().expect("restart");
        let d = eventually("the killed leader rejoins", Duration::from_secs(40), || async {
            let d = client.distribution("docs").await.map_err(|e| e.to_string())?;
            fully_replicated(&d, 2, &[])?;
            d.replicas.iter().any(|g| g.nodes.contains(&leader)).then_some(d).ok_or_else(|| "not back yet".to_string())
        })
        .await;
        let leader_rejoin = killed.elapsed();

        // 2. Restart a node at once (a stale proxy cache: the node is listed but holds nothing).
        let other = d.replicas[1].nodes[0].clone();
        let other_proc = QUERY_NODES.iter().find(|q| node_id(q) == other).expect("a query node");
        h.proc(other_proc).restart().expect("restart");
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait_replicated(&client, 2, &[], Duration::from_secs(40)).await;

        // 3. SIGKILL a node that leads no shard.
        let d = client.distribution("docs").await.expect("distribution");
        let leaders: BTreeSet<&str> = d.shards.iter().map(|s| s.leader.as_str()).collect();
        let plain = d
            .replicas
            .iter()
            .flat_map(|g| g.nodes.iter())
            .find(|n| !leaders.contains(n.as_str()))
            .expect("a node leading nothing")
            .clone();
        let plain_proc = QUERY_NODES.iter().find(|q| node_id(q) == plain).expect("a query node");
        let killed = Instant::now();
        h.proc(plain_proc).kill();
        wait_replicated(&client, 2, std::slice::from_ref(&plain), Duration::from_secs(40)).await;
        let plain_recovery = killed.elapsed();
        h.proc(plain_proc).restart().expect("restart");

        // Let the inserts finish under load, then stop it.
        eventually("all rows inserted", Duration::from_secs(60), || async {
            let n = load.inserted.load(Ordering::Relaxed);
            (n == total as u64).then_some(()).ok_or(format!("{n} inserted"))
        })
        .await;
        let failures = load.failures();
        let (searches, _, latencies) = load.stop().await;
        eprintln!(
            "replicas: {searches} searches under load, {} failed; p50 {} µs, p99 {} µs, max {} µs; \
             recovery after SIGKILL: leader {leader_recovery:?} (rejoined at {leader_rejoin:?}), non-leader {plain_recovery:?}",
            failures.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0),
        );
        assert!(failures.is_empty(), "{} failed operations: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        assert!(searches > 100, "the load ran ({searches} searches)");

        // Complete results after recovery: every acknowledged row, exactly once.
        wait_replicated(&client, 2, &[], Duration::from_secs(40)).await;
        let ds = dataset();
        let queries = ds.queries(100);
        let truth = exact_top_k(total, &queries, 10);
        let req = data::search("docs", queries.clone(), 10, SearchParams::default(), Consistency::Strong);
        let r = recall(&client.search(&req).await.expect("search"), &queries, &truth, 10);
        assert_eq!(r, 1.0, "exact search over both replicas after the kills (recall {r})");
        assert_eq!(data::count(&client, "docs").await, 20_000, "every row counted once");

        // A restarted coordinator keeps the replica groups and who holds what.
        let before = eventually("all four nodes back in groups", Duration::from_secs(40), || async {
            let d = client.distribution("docs").await.map_err(|e| e.to_string())?;
            fully_replicated(&d, 2, &[])?;
            let members: usize = d.replicas.iter().map(|g| g.nodes.len()).sum();
            (members == 4).then_some(d).ok_or_else(|| format!("{members} nodes in groups"))
        })
        .await;
        h.proc("coord").kill();
        h.proc("coord").restart().expect("restart");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = wait_replicated(&client, 2, &[], Duration::from_secs(30)).await;
        assert_eq!(before.replicas, after.replicas, "replica groups survive a coordinator restart");
        let holders = |d: &Distribution| -> BTreeMap<u64, BTreeSet<String>> {
            d.segments.iter().map(|s| (s.segment.id, s.nodes.iter().cloned().collect())).collect()
        };
        assert_eq!(holders(&before), holders(&after), "no segment moved because the coordinator restarted");
        let r = recall(&client.search(&req).await.expect("search"), &queries, &truth, 10);
        assert_eq!(r, 1.0);

        // Back to one replica: one group stays; the other group's nodes join it.
        client.load_collection("docs", 1).await.expect("load with 1 replica");
        let d = wait_replicated(&client, 1, &[], Duration::from_secs(30)).await;
        assert_eq!(d.replicas[0].nodes.len(), 4, "{:?}", d.replicas);
        let r = recall(&client.search(&req).await.expect("search"), &queries, &truth, 10);
        assert_eq!(r, 1.0);
    });
}

/// Many small segments (200), three query nodes in two replica groups, and two of them
/// SIGKILLed at once, one from each group: the survivor takes its group's missing segments
/// over while the searches running all along keep being answered (failing over, retrying
/// within their deadline), and the killed nodes serve again soon after their restart even
/// with a hundred segments each to load.
#[test]
fn many_segments_keep_serving_through_two_query_node_kills() {
    run(Duration::from_secs(200), async {
        let nodes3 = &QUERY_NODES[..3];
        let mut h = Harness::new("manyseg");
        h.start_nats();
        let env = [
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "100"),
            ("QUIVER_PLUGINS__BALANCER", "row-count"),
            ("QUIVER_BALANCE__INTERVAL", "1h"),
        ];
        let mut procs = vec![("coord", "coordinator"), ("proxy", "proxy"), ("dn", "datanode"), ("ixn", "indexnode")];
        procs.extend(nodes3.iter().map(|q| (*q, "querynode")));
        for (id, role) in &procs {
            h.start_node(id, &[role], &env);
        }
        let client = h.client().await;
        let nodes: Vec<(String, u32)> = procs.iter().map(|(id, role)| (format!("{id}-{role}"), h.pid(id))).collect();
        h.wait_ready(&client, &nodes, READY).await;

        let total = 20_000;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, total, 100).await;
        data::flush(&client, "docs").await;
        data::wait_segments(&client, "docs", total as u64, SegmentState::Flushed, Duration::from_secs(60)).await;
        client.load_collection("docs", 2).await.expect("load with 2 replicas");
        let d = wait_replicated(&client, 2, &[], Duration::from_secs(60)).await;
        assert!(d.segments.len() >= 150, "{} segments", d.segments.len());

        let load = Load::start(&client, total, total);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let victims: Vec<String> = d.replicas.iter().map(|g| g.nodes[0].clone()).collect();
        let procs_of: Vec<&str> =
            victims.iter().map(|v| *nodes3.iter().find(|q| node_id(q) == *v).expect("a query node")).collect();
        let killed = Instant::now();
        for p in &procs_of {
            h.proc(p).kill();
        }
        // The survivor serves its whole group's copy.
        let survivor = nodes3.iter().map(|q| node_id(q)).find(|n| !victims.contains(n)).expect("a survivor");
        eventually("the survivor holds every segment", Duration::from_secs(60), || async {
            let d = client.distribution("docs").await.map_err(|e| e.to_string())?;
            let missing = d.segments.iter().filter(|s| !s.nodes.contains(&survivor)).count();
            (missing == 0).then_some(()).ok_or(format!("{missing} segments not on {survivor}"))
        })
        .await;
        let taken_over = killed.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let restarted = Instant::now();
        for p in &procs_of {
            h.proc(p).restart().expect("restart");
        }
        wait_replicated(&client, 2, &[], Duration::from_secs(90)).await;
        let rejoined = restarted.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let failures = load.failures();
        let (searches, _, latencies) = load.stop().await;
        eprintln!(
            "many segments ({}): {searches} searches through two kills, {} failed; p50 {} µs, p99 {} µs, max {} µs; \
             survivor took over in {taken_over:?}, restarted nodes fully replicated again in {rejoined:?}",
            d.segments.len(),
            failures.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0),
        );
        assert!(failures.is_empty(), "{} failed searches: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        assert!(searches > 50, "the load ran ({searches} searches)");
    });
}
