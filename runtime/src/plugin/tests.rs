//! Tests of the plugin system with real wasmtime and the real bundled components: native
//! twins, containment of a hostile plugin, switch-off, hot swap under load, refusals, and the
//! catalog and watcher against a real nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_policy::balancer::BalanceSettings;
use quiver_policy::router::{Rendezvous, Router};
use tokio_util::sync::CancellationToken;

use super::test_support::{host, host_with_timeout, TestCluster};
use super::*;
use quiver_plugins_bundled::testing::{FORBIDDEN_IMPORT, HOSTILE_ROUTER};
use quiver_plugins_bundled::{BUNDLED, EXAMPLE_ROUTER};

/// Slack over the call timeout for a contained call (one epoch tick, 10 % of it; the rest is
/// scheduling on a loaded 2-core machine, dropping the instance, and the native answer).
const SLACK: Duration = Duration::from_millis(400);

fn source(name: &str, version: VersionRef) -> PluginSource {
    PluginSource { name: name.into(), version, sha256: String::new() }
}

#[test]
fn bundled_plugins_answer_like_their_native_twins() {
    let host = host();
    let mut checked = Vec::new();
    for bundled in BUNDLED {
        let kind: Kind = bundled.kind.parse().unwrap();
        let start = Instant::now();
        let compiled = host.compile(bundled.wasm).unwrap();
        let took = start.elapsed();
        assert_eq!(compiled.kind(), kind, "{} exports the wrong kind", bundled.name);
        let src = PluginSource::builtin(bundled.name);
        match kind {
            Kind::Router => {
                let slot = RouterSlot::new(host.clone()).unwrap();
                slot.activate_wasm(compiled, src).unwrap();
                let native = quiver_policy::builtin::router(bundled.name).unwrap();
                let mut requests = samples::route_requests();
                for sequence in [0, 1, 2, 99, u64::MAX] {
                    let mut big = samples::route_request(1000, 5);
                    big.sequence = sequence;
                    requests.push(big);
                }
                for request in &requests {
                    assert_eq!(slot.try_route(request).unwrap(), native.route(request), "router {}", bundled.name);
                }
            }
            Kind::Balancer => {
                let slot = BalancerSlot::new(host.clone()).unwrap();
                slot.activate_wasm(compiled, src).unwrap();
                let native = quiver_policy::builtin::balancer(bundled.name).unwrap();
                let (view, items) = samples::cluster_view();
                assert_eq!(slot.try_place(&view, &items).unwrap(), native.place(&view, &items));
                for settings in [
                    BalanceSettings::default(),
                    BalanceSettings { max_moves: 1, ..Default::default() },
                    BalanceSettings { memory_usage_max_difference_percentage: 1.0, ..Default::default() },
                ] {
                    assert_eq!(slot.try_plan(&view, &settings).unwrap(), native.plan(&view, &settings));
                }
            }
            Kind::Discovery => {
                let slot = DiscoverySlot::new(host.clone()).unwrap();
                slot.activate_wasm(compiled, src).unwrap();
                let native = quiver_policy::builtin::discovery(bundled.name).unwrap();
                let (nodes, mut settings) = samples::node_records();
                assert_eq!(slot.try_classify(&nodes, &settings).unwrap(), native.classify(&nodes, &settings));
                settings.static_nodes.clear();
                assert_eq!(slot.try_classify(&nodes, &settings).unwrap(), native.classify(&nodes, &settings));
            }
            Kind::Autoscaler => {
                let slot = AutoscalerSlot::new(host.clone()).unwrap();
                slot.activate_wasm(compiled, src).unwrap();
                let native = quiver_policy::builtin::autoscaler(bundled.name).unwrap();
                for (window, current, settings) in samples::metrics_windows() {
                    let wasm = slot.try_recommend(&window, &current, &settings).unwrap();
                    assert_eq!(wasm, native.recommend(&window, &current, &settings));
                }
            }
        }
        checked.push(format!(
            "{}/{} ({} KiB, compiled in {took:.0?})",
            bundled.kind,
            bundled.name,
            bundled.wasm.len() >> 10
        ));
    }
    eprintln!("bundled plugins identical to their native twins: {}", checked.join(", "));
    assert!(!checked.is_empty());
}

/// MISSION S3.3 / S3.4 at every boundary, answered by the bundled `threshold` autoscaler as
/// the Wasm component the coordinator runs (not its native twin): the CPU thresholds (75 %
/// keeps, above doubles; 37.5 % keeps, below halves), memory at 125 % of peak and 150 % after
/// an out-of-memory event, the larger of CPU and memory winning, 1 CPU : 4 GiB, the bounds, and
/// min = max pinning the size; and `recommend_strict` answering an out-of-bounds answer with
/// an error (nothing changes) where `recommend` falls back.
#[test]
fn the_wasm_threshold_autoscaler_meets_every_boundary() {
    use quiver_policy::autoscaler::{AutoscaleSettings, MetricSample, ReplicaSize, GIB};
    let host = host();
    let bundled = BUNDLED.iter().find(|b| b.kind == "autoscaler" && b.name == "threshold").unwrap();
    let slot = AutoscalerSlot::new(host.clone()).unwrap();
    slot.activate_wasm(host.compile(bundled.wasm).unwrap(), PluginSource::builtin("threshold")).unwrap();
    let size = |cpus: u32, gib: u64| ReplicaSize { cpu_millis: cpus * 1000, memory_bytes: gib * GIB };
    let sample = |cpu: f64, memory_gib: f64, oom: bool| MetricSample {
        at_ms: 1,
        cpu_percent: cpu,
        memory_used: (memory_gib * GIB as f64) as u64,
        oom,
    };
    let defaults = AutoscaleSettings::default();
    let ask = |window: &[MetricSample], current: ReplicaSize, settings: &AutoscaleSettings| {
        slot.try_recommend(window, &current, settings).unwrap().size
    };
    // CPU, with little memory in use (the CPU rule decides).
    let cases = [(75.0, size(2, 8)), (75.01, size(4, 16)), (37.5, size(2, 8)), (37.49, size(1, 4)), (50.0, size(2, 8))];
    for (cpu, want) in cases {
        assert_eq!(ask(&[sample(cpu, 1.0, false)], size(2, 8), &defaults), want, "cpu peak {cpu}%");
    }
    // The peak decides, not the mean.
    let spiky = [sample(10.0, 1.0, false), sample(90.0, 1.0, false), sample(10.0, 1.0, false)];
    assert_eq!(ask(&spiky, size(2, 8), &defaults), size(4, 16));
    // Memory: 125 % of the peak (12 GiB → 15 GiB → 4 CPU / 16 GiB), 150 % after an OOM
    // (12 GiB → 18 GiB → 5 CPU / 20 GiB); exactly 16 GiB × 125 % = 20 GiB is not rounded further.
    assert_eq!(ask(&[sample(50.0, 12.0, false)], size(2, 8), &defaults), size(4, 16));
    assert_eq!(ask(&[sample(50.0, 12.0, false), sample(50.0, 11.0, true)], size(2, 8), &defaults), size(5, 20));
    assert_eq!(ask(&[sample(50.0, 16.0, false)], size(2, 8), &defaults), size(5, 20));
    // The larger wins: CPU doubles 8 → 16 CPU over memory's 15 GiB; memory's 40 GiB over a halving.
    assert_eq!(ask(&[sample(80.0, 12.0, false)], size(8, 32), &defaults), size(16, 64));
    assert_eq!(ask(&[sample(10.0, 30.0, false)], size(8, 32), &defaults), size(10, 40));
    // Bounds: clamped to the max (64 GiB) and the min (4 GiB).
    assert_eq!(ask(&[sample(95.0, 1.0, false)], size(16, 64), &defaults), size(16, 64));
    assert_eq!(ask(&[sample(1.0, 1.0, false)], size(1, 4), &defaults), size(1, 4));
    // S3.4: min = max pins the size whatever the window says.
    let pinned = AutoscaleSettings { min_memory_bytes: 8 * GIB, max_memory_bytes: 8 * GIB, ..defaults.clone() };
    for window in [vec![sample(99.0, 30.0, true)], vec![sample(1.0, 0.5, false)], Vec::new()] {
        assert_eq!(ask(&window, size(1, 4), &pinned), size(2, 8));
    }
    // An answer outside the bounds (inverted bounds: the plugin keeps the current size, which
    // lies outside them): the strict call reports the failure (the coordinator changes
    // nothing), the lenient one answers natively.
    let broken = AutoscaleSettings { min_memory_bytes: 64 * GIB, max_memory_bytes: 4 * GIB, ..defaults };
    let lenient = slot.recommend(&[sample(99.0, 1.0, false)], &size(2, 8), &broken);
    assert_eq!(lenient.size, size(2, 8), "{lenient:?}");
    match slot.recommend_strict(&[sample(99.0, 1.0, false)], &size(2, 8), &broken) {
        Err(f) => assert!(f.detail.contains("outside the bounds"), "{f:?}"),
        Ok(r) => panic!("an out-of-bounds answer was accepted: {r:?}"),
    }
}

/// The value of a counter in Prometheus text, by a substring of its labels.
fn counter(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn hostile_router_is_contained_counted_and_switched_off() {
    let timeout = Duration::from_millis(50);
    let host = host_with_timeout(timeout);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics_text = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let slot = RouterSlot::new(host.clone()).unwrap();
        let compiled = host.compile(HOSTILE_ROUTER).unwrap();
        slot.activate_wasm(compiled.clone(), source("hostile", VersionRef::Number(1))).unwrap();
        // A memory bomb is stopped by the memory cap or, if committing 64 MiB takes longer
        // than the deadline on a loaded machine, by the deadline: contained either way (it is
        // checked against a small cap below). A huge answer (32 MiB in the guest, plus its
        // canonical-ABI copy) may hit the cap before the host sees its length, or, on a loaded
        // machine, the deadline while it fills memory.
        let cases: [(u64, &[&str]); 7] = [
            (1, &["timeout"]),
            (2, &["memory", "timeout"]),
            (3, &["trap"]),
            (4, &["invalid-output"]),
            (5, &["invalid-output"]),
            (6, &["invalid-output", "memory", "timeout"]),
            (7, &[]),
        ];
        for (collection, reason) in cases {
            let mut request = samples::route_request(20, 3);
            request.collection = collection;
            let before = slot.status();
            let instances = slot.instantiations();
            let start = Instant::now();
            let routes = slot.route(&request);
            let took = start.elapsed();
            assert_eq!(routes, Rendezvous.route(&request), "case {collection}: the answer must be the built-in's");
            assert!(took < timeout + SLACK, "case {collection} took {took:?}, deadline {timeout:?}");
            let after = slot.status();
            let fails = !reason.is_empty();
            if fails {
                assert_eq!(after.failures, before.failures + 1, "case {collection} not counted");
                assert_eq!(after.fallbacks, before.fallbacks + 1);
                let last = after.last_failure.clone().unwrap();
                assert!(
                    reason.iter().any(|r| last.starts_with(r)),
                    "case {collection}: expected {reason:?}, got {last}"
                );
            } else {
                assert_eq!(after.failures, before.failures, "case {collection}: {:?}", after.last_failure);
            }
            // The next call runs on a fresh instance when the last one failed.
            let mut fine = request.clone();
            fine.collection = 0;
            assert_eq!(slot.route(&fine), Rendezvous.route(&fine));
            let created = slot.instantiations() - instances;
            assert_eq!(created, u64::from(fails), "case {collection}: instances created");
            let outcome = if fails { after.last_failure.unwrap_or_default() } else { "no failure".into() };
            eprintln!("hostile case {collection}: contained in {took:?} ({outcome})");
        }
        assert!(!slot.status().disabled);

        // Under a small cap the memory bomb is stopped by the cap.
        let small = Arc::new(
            PluginHost::new(&crate::config::PluginsConfig { memory_limit_mb: 8, ..Default::default() }).unwrap(),
        );
        let capped = RouterSlot::new(small.clone()).unwrap();
        capped.activate_wasm(small.compile(HOSTILE_ROUTER).unwrap(), source("hostile", VersionRef::Number(1))).unwrap();
        let mut bomb = samples::route_request(20, 3);
        bomb.collection = 2;
        let start = Instant::now();
        assert_eq!(capped.route(&bomb), Rendezvous.route(&bomb));
        let took = start.elapsed();
        let last = capped.status().last_failure.unwrap();
        assert!(last.starts_with("memory: exceeded the memory cap of 8 MiB"), "{last}");
        eprintln!("hostile case 2 under an 8 MiB cap: contained in {took:?} ({last})");

        // Failures in a row switch the plugin off; then the built-in answers without Wasm.
        let mut trap = samples::route_request(20, 3);
        trap.collection = 3;
        let max = host.settings().max_consecutive_failures;
        for _ in 0..max {
            assert_eq!(slot.route(&trap), Rendezvous.route(&trap));
        }
        let off = slot.status();
        assert!(off.disabled, "{off:?}");
        assert!(off.disabled_reason.clone().unwrap().contains(&format!("{max} failed calls in a row")));
        assert_eq!(off.consecutive_failures, max);
        let instances = slot.instantiations();
        let start = Instant::now();
        assert_eq!(slot.route(&trap), Rendezvous.route(&trap));
        assert!(start.elapsed() < Duration::from_millis(5));
        let still = slot.status();
        assert_eq!((still.failures, still.fallbacks), (off.failures, off.fallbacks + 1));
        assert_eq!(slot.instantiations(), instances, "a switched-off plugin must not run");

        // Activating a version again (an operator's swap) switches it back on.
        let back = slot.activate_wasm(compiled, source("hostile", VersionRef::Number(1))).unwrap();
        assert!(!back.disabled && back.failures == 0 && back.generation > off.generation);
    });
    let text = metrics_text.render();
    let failures = "quiver_plugin_failures_total";
    let count = |reason: &str| counter(&text, failures, &format!("reason=\"{reason}\""));
    let (timeouts, memory, invalid) = (count("timeout"), count("memory"), count("invalid-output"));
    assert!(timeouts >= 1 && memory >= 1 && invalid >= 2, "{text}");
    assert_eq!(count("trap"), 1 + 5);
    // Six failing cases, five traps in a row, and the bomb under the small cap.
    assert_eq!(timeouts + memory + invalid + count("trap"), 6 + 5 + 1);
    assert!(counter(&text, "quiver_plugin_calls_total", r#"plugin="hostile""#) >= 20);
    assert!(text.contains("quiver_plugin_call_seconds"));
}

#[test]
fn swap_under_load_loses_no_call() {
    let host = host();
    let slot = Arc::new(RouterSlot::new(host.clone()).unwrap());
    let compiled = host.compile(EXAMPLE_ROUTER).unwrap();
    let rendezvous = host.compile_bundled(Kind::Router, "rendezvous").unwrap();
    slot.activate_wasm(rendezvous.clone(), PluginSource::builtin("rendezvous")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..3u64)
        .map(|t| {
            let (slot, stop) = (slot.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut calls = 0u64;
                let mut request = samples::route_request(50, 3);
                while !stop.load(Ordering::Relaxed) {
                    request.sequence = t * 1_000_000 + calls;
                    let routes = slot.route(&request);
                    request.check(&routes).unwrap();
                    assert_eq!(routes, Rendezvous.route(&request));
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let swaps = 30;
    for i in 0..swaps {
        std::thread::sleep(Duration::from_millis(3));
        match i % 3 {
            0 => slot.activate_native("rendezvous").map(|_| ()).unwrap(),
            1 => slot.activate_wasm(rendezvous.clone(), PluginSource::builtin("rendezvous")).map(|_| ()).unwrap(),
            _ => slot.rollback().map(|_| ()).unwrap(),
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let calls: u64 = callers.into_iter().map(|c| c.join().unwrap()).sum();
    let status = slot.status();
    assert_eq!(status.generation, swaps + 1);
    assert_eq!(status.total_calls, calls);
    assert_eq!((status.total_failures, status.total_fallbacks), (0, 0), "{status:?}");
    // The example router is another plugin: its own kind check and self-test apply.
    assert_eq!(compiled.kind(), Kind::Router);
    eprintln!("{calls} calls across {swaps} swaps, none lost or failed");
}

#[test]
fn forbidden_import_is_refused_with_a_clear_message() {
    let err = host().compile(FORBIDDEN_IMPORT).unwrap_err().to_string();
    assert!(err.starts_with("plugin imports wasi:"), "{err}");
    assert!(err.contains("wasi:filesystem") || err.contains("wasi:clocks"), "{err}");
    assert!(err.contains("which Quiver does not provide: plugins may import only wasi:io/*"), "{err}");
    assert!(err.contains("docs/plugins.md"), "{err}");
}

#[test]
fn non_components_and_wrong_kinds_are_refused() {
    let host = host();
    let err = host.compile(b"\0asm\x01\0\0\0").unwrap_err().to_string();
    assert!(err.contains("core WebAssembly module, not a component"), "{err}");
    let err = host.compile(b"hello").unwrap_err().to_string();
    assert!(err.contains("not a WebAssembly component: the 5 bytes do not start"), "{err}");
    let router = host.compile(HOSTILE_ROUTER).unwrap();
    let slot = BalancerSlot::new(host.clone()).unwrap();
    let err = slot.activate_wasm(router, source("x", VersionRef::Number(1))).unwrap_err().to_string();
    assert!(err.contains("is a router") && err.contains("not a balancer"), "{err}");
    assert_eq!(slot.status().generation, 0);
}

#[test]
fn inspection_reports_kind_imports_and_self_test() {
    let report = host().inspect(HOSTILE_ROUTER).unwrap();
    assert_eq!(report.kind, Kind::Router);
    assert!(report.self_test_passed, "{report:?}");
    assert!(report.exports.contains(&"quiver:policy/router@0.1.0".to_string()));
    assert!(report.imports.iter().all(|i| i.starts_with("wasi:io/") || i.starts_with("wasi:cli/")));
    assert_eq!(report.sha256, sha256_hex(HOSTILE_ROUTER));
}

/// Polls `done` every 10 ms; how long it took, or `None` past `limit`.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Some(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_distributes_versions_and_rolls_back() {
    let cluster = TestCluster::start("plugintest").await;
    let host = host();
    let catalog = cluster.catalog(host.clone()).await;
    let router = Bytes::from_static(HOSTILE_ROUTER);

    let err = catalog.load(Kind::Router, "Bad_Name", router.clone()).await.unwrap_err().to_string();
    assert!(err.contains("invalid plugin name"), "{err}");
    let err = catalog.load(Kind::Balancer, "mine", router.clone()).await.unwrap_err().to_string();
    assert!(err.contains("is a router") && err.contains("not a balancer"), "{err}");
    let err = catalog.load(Kind::Router, "bad", Bytes::from_static(FORBIDDEN_IMPORT)).await.unwrap_err();
    assert!(err.to_string().starts_with("plugin imports wasi:"), "{err}");
    let v1 = catalog.load(Kind::Router, "my-router", router.clone()).await.unwrap();
    // The file is named by its content and stored before the entry naming it.
    let path = format!("plugins/router/my-router/{}.wasm", sha256_hex(&router));
    assert_eq!((v1.version, v1.path.as_str()), (1, path.as_str()));
    let v2 = catalog.load(Kind::Router, "my-router", router.clone()).await.unwrap();
    assert_eq!((v2.version, v2.path.as_str()), (2, path.as_str()), "the same bytes, one file");
    let err = catalog.load(Kind::Discovery, "my-router", router.clone()).await.unwrap_err().to_string();
    assert!(err.contains("already the name of a router"), "{err}");
    let err = catalog.load(Kind::Balancer, "rendezvous", router.clone()).await.unwrap_err().to_string();
    assert!(err.contains("built-in router"), "{err}");

    // A proxy on its own connection: it starts on the configured built-in, as Wasm.
    let slot = Arc::new(RouterSlot::new(host.clone()).unwrap());
    let stop = CancellationToken::new();
    let slots: Vec<Arc<dyn ManagedSlot>> = vec![slot.clone()];
    let watcher =
        PluginWatcher::start(cluster.catalog(host.clone()).await, "proxy-1", slots, stop.clone()).await.unwrap();
    watcher.synced(Duration::from_secs(20)).await.unwrap();
    let status = slot.status();
    assert_eq!(
        (status.name.as_str(), status.version, status.engine.as_str()),
        ("rendezvous", VersionRef::Builtin, "wasm")
    );

    // A node with engine = "native" runs built-ins only.
    let native_config = crate::config::PluginsConfig { engine: "native".into(), ..Default::default() };
    let native_host = Arc::new(PluginHost::new(&native_config).unwrap());
    let native_slot = Arc::new(RouterSlot::new(native_host.clone()).unwrap());
    let slots: Vec<Arc<dyn ManagedSlot>> = vec![native_slot.clone()];
    let native_watcher =
        PluginWatcher::start(cluster.catalog(native_host).await, "proxy-native", slots, stop.clone()).await.unwrap();
    native_watcher.synced(Duration::from_secs(20)).await.unwrap();

    let choice = catalog.activate("my-router", VersionRef::Number(2), "test").await.unwrap();
    assert_eq!(choice.history.len(), 1);
    let took = wait_until(Duration::from_secs(5), || slot.source().version == VersionRef::Number(2))
        .await
        .expect("not met within 5s: slot.source().version == VersionRef::Number(2)");
    eprintln!("activation reached the node in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    wait_until(Duration::from_secs(5), || native_slot.status().apply_error.is_some())
        .await
        .expect("not met within 5s: native_slot.status().apply_error.is_some()");
    let native = native_slot.status();
    assert_eq!((native.engine.as_str(), native.name.as_str()), ("native", "rendezvous"));
    assert!(native.apply_error.unwrap().contains("plugins.engine = \"native\""));

    // A binary altered in the store is refused by the node, which keeps its version.
    // (Other bytes than v1 and v2, which share one file: files are named by their content.)
    let v3 = catalog.load(Kind::Router, "my-router", Bytes::from_static(EXAMPLE_ROUTER)).await.unwrap();
    let objects = crate::objects::Objects::open(&cluster.config).unwrap();
    objects.put(&v3.path, Bytes::from_static(EXAMPLE_ROUTER_ALTERED)).await.unwrap();
    catalog.activate("my-router", VersionRef::Number(3), "test").await.unwrap();
    wait_until(Duration::from_secs(5), || slot.status().apply_error.is_some())
        .await
        .expect("not met within 5s: slot.status().apply_error.is_some()");
    let kept = slot.status();
    assert_eq!(kept.version, VersionRef::Number(2));
    assert!(kept.apply_error.unwrap().contains("sha256"), "{:?}", slot.status());

    let listing = catalog.list().await.unwrap();
    assert_eq!(listing.versions.len(), 3);
    let router_choice = listing.active.iter().find(|a| a.kind == Kind::Router).unwrap();
    assert_eq!(router_choice.version, VersionRef::Number(3));
    assert!(listing.builtins.iter().any(|b| b.name == "rendezvous"));
    let nodes = catalog.list().await.unwrap().nodes;
    let node = nodes.iter().find(|n| n.node_id == "proxy-1").unwrap();
    assert_eq!(node.slots[0].version, VersionRef::Number(2));
    assert!(nodes.iter().any(|n| n.node_id == "proxy-native"));

    // Rollback walks the history back to the configured built-in, then refuses. (The generation
    // is read before the rollback: the watcher may apply it before this task runs again.)
    let generation = slot.status().generation;
    let back = catalog.rollback(Kind::Router, "test").await.unwrap();
    assert_eq!(back.version, VersionRef::Number(2));
    wait_until(Duration::from_secs(5), || slot.status().generation > generation)
        .await
        .expect("not met within 5s: slot.status().generation > generation");
    assert!(slot.status().apply_error.is_none());
    let back = catalog.rollback(Kind::Router, "test").await.unwrap();
    assert_eq!((back.name.as_str(), back.version), ("rendezvous", VersionRef::Builtin));
    wait_until(Duration::from_secs(5), || slot.source().version == VersionRef::Builtin)
        .await
        .expect("not met within 5s: slot.source().version == VersionRef::Builtin");
    wait_until(Duration::from_secs(5), || native_slot.status().apply_error.is_none())
        .await
        .expect("not met within 5s: native_slot.status().apply_error.is_none()");
    let err = catalog.rollback(Kind::Router, "test").await.unwrap_err().to_string();
    assert!(err.contains("already runs the configured built-in"), "{err}");
    let err = catalog.activate("nope", VersionRef::Number(1), "test").await.unwrap_err().to_string();
    assert!(err.contains("no plugin \"nope\" version 1"), "{err}");

    watcher.stop().await;
    native_watcher.stop().await;
    assert!(catalog.list().await.unwrap().nodes.is_empty());
    cluster.nats.stop().await;
}

/// Any bytes other than the catalogued ones.
const EXAMPLE_ROUTER_ALTERED: &[u8] = FORBIDDEN_IMPORT;
