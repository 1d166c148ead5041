//! Policy plugins in a running cluster: the router hot-swapped under search load, a hostile
//! router contained, a forbidden import refused, and the balancer moving segments between
//! query nodes (hand-off) while searches stay exact.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_client::{Client, Consistency, SearchParams, SegmentState};
use quiver_runtime::plugin::{CatalogListing, SlotStatus};

use crate::common::data::{self, dataset, exact_top_k, recall};
use crate::common::{eventually, quiver_cli, run, Harness, READY};

/// The router slot of `node` in the cluster's plugin listing.
async fn router_slot(client: &Client, node: &str) -> Result<SlotStatus, String> {
    let doc = client.plugin_list().await.map_err(|e| e.to_string())?;
    let listing: CatalogListing = serde_json::from_str(&doc).map_err(|e| e.to_string())?;
    listing
        .nodes
        .iter()
        .filter(|n| n.node_id == node)
        .flat_map(|n| n.slots.iter())
        .find(|s| s.kind.as_str() == "router")
        .cloned()
        .ok_or_else(|| format!("{node} reports no router slot yet"))
}

/// Searches `collection` with `clients` concurrent loops until `stop`; counts successes,
/// failures and answers that are not exact.
struct SearchLoad {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    inexact: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SearchLoad {
    fn start(client: &Client, collection: &str, rows: usize, clients: usize) -> SearchLoad {
        let queries = dataset().queries(8);
        let truth = Arc::new(exact_top_k(rows, &queries, 10));
        let req = data::search(collection, queries.clone(), 10, SearchParams::default(), Consistency::Eventually);
        let (ok, failed, inexact) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (client, req, queries, truth) = (client.clone(), req.clone(), queries.clone(), truth.clone());
                let (ok, failed, inexact, stop) = (ok.clone(), failed.clone(), inexact.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match client.search(&req).await {
                            Ok(res) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if recall(&res, &queries, &truth, 10) < 1.0 {
                                    inexact.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(e) => {
                                eprintln!("search failed: {e}");
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        SearchLoad { ok, failed, inexact, stop, tasks }
    }

    async fn finish(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("search task");
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), self.inexact.load(Ordering::Relaxed))
    }
}

async fn load_collection(client: &Client, name: &str, rows: usize) {
    data::create_simple(client, name).await;
    data::insert_rows(client, name, 0, rows, 2_000).await;
    data::flush(client, name).await;
    data::wait_segments(client, name, rows as u64, SegmentState::Flushed, Duration::from_secs(30)).await;
}

#[test]
fn router_hot_swap_under_search_load_fails_no_request() {
    run(Duration::from_secs(120), async {
        let h = Harness::standalone("plugin-swap", &[("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "1000")]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        let rows = 6_000;
        load_collection(&client, "docs", rows).await;

        let loaded = client
            .plugin_load("router", "latency-aware", quiver_plugins_bundled::EXAMPLE_ROUTER.to_vec())
            .await
            .expect("load the example router");
        assert!(loaded.contains("\"version\":1"), "{loaded}");

        let load = SearchLoad::start(&client, "docs", rows, 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let steps: [(&str, Option<&str>); 6] = [
            ("latency-aware", Some("1")),
            ("round-robin", Some("builtin")),
            ("least-loaded", Some("builtin")),
            ("hash", Some("native")), // the built-in compiled in, no sandbox
            ("hash", Some("builtin")),
            ("hash", None), // rollback: back to hash@native
        ];
        let mut switch_times = Vec::new();
        for (name, version) in steps {
            let before = router_slot(&client, "standalone-proxy").await.expect("router slot").generation;
            let started = Instant::now();
            match version {
                Some(v) => client.plugin_activate(name, v).await.expect("activate"),
                None => client.plugin_rollback("router").await.expect("rollback"),
            };
            let slot = eventually(&format!("the proxy runs {name}"), Duration::from_secs(5), || async {
                let s = router_slot(&client, "standalone-proxy").await?;
                if s.name == name && s.generation > before {
                    Ok(s)
                } else {
                    Err(format!("proxy runs {}@{} generation {}", s.name, s.version, s.generation))
                }
            })
            .await;
            switch_times.push((name, started.elapsed()));
            let native = slot.version.to_string() == "native";
            assert_eq!(slot.engine, if native { "native" } else { "wasm" }, "{slot:?}");
            // Let searches run on the new version for a while.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let (ok, failed, inexact) = load.finish().await;
        eprintln!(
            "router swaps under load: {ok} searches, {failed} failed, {inexact} inexact; switch times {switch_times:?}"
        );
        assert_eq!(failed, 0, "no search fails while the router is swapped");
        assert_eq!(inexact, 0, "every answer is exact");
        assert!(ok >= 50, "searches kept running: {ok}");
        for (name, took) in &switch_times {
            assert!(*took < Duration::from_secs(3), "{name}: switched after {took:?}");
        }
        let slot = router_slot(&client, "standalone-proxy").await.expect("router slot");
        assert_eq!(slot.fallbacks, 0, "no call needed the fallback: {slot:?}");
    });
}

#[test]
fn hostile_router_is_contained_and_forbidden_imports_are_refused() {
    run(Duration::from_secs(120), async {
        let h = Harness::standalone("plugin-hostile", &[("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "1000")]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        let rows = 3_000;
        // The first collection gets id 1: the hostile router loops forever on it.
        load_collection(&client, "docs", rows).await;
        let desc = client.describe_collection("docs").await.expect("describe");
        assert_eq!(desc.info.id, 1, "the hostile router's infinite loop is keyed on collection id 1");

        client
            .plugin_load("router", "hostile", quiver_plugins_bundled::testing::HOSTILE_ROUTER.to_vec())
            .await
            .expect("a hostile plugin passes the self-test (it behaves on other inputs)");
        client.plugin_activate("hostile", "1").await.expect("activate");
        eventually("the proxy runs hostile", Duration::from_secs(5), || async {
            let s = router_slot(&client, "standalone-proxy").await?;
            if s.name == "hostile" {
                Ok(())
            } else {
                Err(format!("runs {}", s.name))
            }
        })
        .await;

        let queries = dataset().queries(4);
        let truth = exact_top_k(rows, &queries, 10);
        let req = data::search("docs", queries.clone(), 10, SearchParams::default(), Consistency::Eventually);
        let mut latencies = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let res = client.search(&req).await.expect("searches succeed while the router plugin loops");
            latencies.push(started.elapsed());
            assert_eq!(recall(&res, &queries, &truth, 10), 1.0);
        }
        eprintln!("search latencies with a looping router: {latencies:?}");
        // Each looping call is interrupted at the 50 ms deadline; after 5 in a row the plugin
        // is switched off and the built-in answers without trying it.
        assert!(latencies.iter().all(|l| *l < Duration::from_secs(2)), "{latencies:?}");
        // Nodes refresh their plugin record every few seconds.
        let slot = eventually("the proxy reports the plugin switched off", Duration::from_secs(10), || async {
            let s = router_slot(&client, "standalone-proxy").await?;
            if s.disabled && s.fallbacks >= 20 {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        })
        .await;
        assert_eq!(slot.failures, 5, "no call reaches a switched-off plugin: {slot:?}");
        assert!(slot.last_failure.as_deref().unwrap_or_default().contains("timeout"), "{slot:?}");

        // An operator acts: activating again re-enables it (and it fails again: still contained).
        let generation = slot.generation;
        client.plugin_activate("hostile", "1").await.expect("re-activate");
        eventually("re-enabled", Duration::from_secs(5), || async {
            let s = router_slot(&client, "standalone-proxy").await?;
            if s.generation > generation && !s.disabled {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        })
        .await;
        client.search(&req).await.expect("search");
        client.plugin_rollback("router").await.expect("rollback");
        eventually("back on rendezvous", Duration::from_secs(5), || async {
            let s = router_slot(&client, "standalone-proxy").await?;
            if s.name == "rendezvous" {
                Ok(())
            } else {
                Err(s.name)
            }
        })
        .await;

        // A plugin importing the filesystem and clocks is refused at load, with the reason.
        let file = h.data_dir().join("forbidden.wasm");
        std::fs::write(&file, quiver_plugins_bundled::testing::FORBIDDEN_IMPORT).expect("write");
        let url = h.url();
        let data_dir = h.data_dir().display().to_string();
        let env = [
            ("QUIVER_URL", url.as_str()),
            ("QUIVER_CLUSTER", h.cluster.as_str()),
            ("QUIVER_CLUSTER__DATA_DIR", &data_dir),
        ];
        let path = file.display().to_string();
        let (status, _, stderr) = quiver_cli(&["ctl", "plugin", "load", "router", "spy", &path], &env, &h.data_dir());
        assert!(!status.success());
        assert!(stderr.contains("which Quiver does not provide") && stderr.contains("wasi:"), "{stderr}");
        let (status, _, stderr) = quiver_cli(&["ctl", "plugin", "validate", &path], &env, &h.data_dir());
        assert!(!status.success() && stderr.contains("refused"), "{stderr}");
        let listing = client.plugin_list().await.expect("list");
        assert!(!listing.contains("\"spy\""), "nothing was stored: {listing}");
        // The node kept serving throughout.
        client.search(&req).await.expect("search after everything");
        let status = client.status().await.expect("status");
        assert!(status.nodes.iter().all(|n| n.healthy && n.restarts == 0), "{status:?}");
    });
}

#[test]
fn balancer_moves_segments_to_a_new_query_node_while_searches_stay_exact() {
    run(Duration::from_secs(150), async {
        let mut h = Harness::new("balance");
        h.start_nats();
        let env = [
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "1000"),
            ("QUIVER_BALANCE__INTERVAL", "1s"),
            ("QUIVER_BALANCE__MAX_MOVES", "2"),
        ];
        for (id, role) in [("coord", "coordinator"), ("proxy", "proxy"), ("proxy2", "proxy"), ("dn", "datanode")] {
            h.start_node(id, &[role], &env);
        }
        // qn1 reports a small memory budget (so it looks full), qn2 joins later with a large one.
        let small: Vec<(&str, &str)> = env.iter().copied().chain([("QUIVER_NODE__MEMORY_LIMIT_MB", "128")]).collect();
        h.start_node("qn1", &["querynode"], &small);
        let client = h.client().await;
        let first: Vec<(String, u32)> =
            [("coord", "coordinator"), ("proxy", "proxy"), ("dn", "datanode"), ("qn1", "querynode")]
                .iter()
                .map(|(id, role)| (format!("{id}-{role}"), h.pid(id)))
                .collect();
        h.wait_ready(&client, &first, READY).await;
        let rows = 8_000;
        load_collection(&client, "docs", rows).await;
        let dist = client.distribution("docs").await.expect("distribution");
        assert!(dist.segments.iter().all(|s| s.nodes == ["qn1-querynode"]), "{dist:?}");

        let load = SearchLoad::start(&client, "docs", rows, 2);
        let large: Vec<(&str, &str)> = env.iter().copied().chain([("QUIVER_NODE__MEMORY_LIMIT_MB", "65536")]).collect();
        let started = Instant::now();
        h.start_node("qn2", &["querynode"], &large);
        let moved = eventually("the balancer moves segments to qn2", Duration::from_secs(40), || async {
            let d = client.distribution("docs").await.map_err(|e| e.to_string())?;
            let on_qn2 = d.segments.iter().filter(|s| s.nodes == ["qn2-querynode"]).count();
            if on_qn2 >= 2 {
                Ok(on_qn2)
            } else {
                Err(format!("{on_qn2} segments on qn2"))
            }
        })
        .await;
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (ok, failed, inexact) = load.finish().await;
        eprintln!("balance: {moved} segments on qn2 after {took:?}; {ok} searches, {failed} failed, {inexact} inexact");
        assert_eq!(failed, 0, "hand-offs lose no search");
        assert_eq!(inexact, 0, "results stay complete during hand-offs (no loss, no duplicates)");
        // Every segment is served by exactly one node once hand-offs settle.
        let d = client.distribution("docs").await.expect("distribution");
        let served: u64 = d.segments.iter().map(|s| s.segment.rows).sum();
        assert_eq!(served, rows as u64);

        // One activation switches the router of every proxy process of the cluster.
        let started = Instant::now();
        client.plugin_activate("least-loaded", "builtin").await.expect("activate");
        for proxy in ["proxy-proxy", "proxy2-proxy"] {
            eventually(&format!("{proxy} runs least-loaded"), Duration::from_secs(5), || async {
                let s = router_slot(&client, proxy).await?;
                if s.name == "least-loaded" {
                    Ok(())
                } else {
                    Err(format!("{proxy} runs {}@{}", s.name, s.version))
                }
            })
            .await;
        }
        eprintln!("both proxies switched routers within {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(3));
        let res = client
            .search(&data::search("docs", dataset().queries(2), 10, SearchParams::default(), Consistency::Strong))
            .await
            .expect("search after the switch");
        assert_eq!(res.results.len(), 2);
    });
}
