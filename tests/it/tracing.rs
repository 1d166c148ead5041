//! Distributed tracing across a multi-process cluster (MISSION S4.5): a real OTLP/gRPC
//! receiver (a small collector this test runs, built on `opentelemetry-proto`'s service) takes
//! the spans every process exports, and a search's span tree is checked: the proxy's server
//! span under the client's own span (its `traceparent` is honoured), `get_routing`, one
//! `do_search` per query node holding segments (tagged with the node, segments, nq, top-k, rows
//! searched and status), each with that node's server span beneath (from that node's process,
//! with `wait_consistency` and its `search_segment` spans), and `do_merge`; a caller's
//! "not sampled" is obeyed everywhere, and a search without a context is traced from the proxy.
//! The same through the Milvus gRPC API: the client's `traceparent` metadata is the parent of
//! the call's `milvus.Search` span, with the same steps beneath.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use quiver_actors::proxy::milvus::proto::milvus::milvus_service_client::MilvusServiceClient;
use quiver_client::{Consistency, SearchParams};
use quiver_testkit::otlp::{Collector, Received};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::common::data::{self, dataset};
use crate::common::{
    eventually, flushed_docs, free_port, metric_value, metrics_text, run, start_nodes, Harness, READY, TWO_QUERY_NODES,
};
use crate::hostile::{floats, kv, placeholder, search_req};

fn children<'a>(spans: &'a [Received], parent: &Received, name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.parent == parent.span_id && s.name == name).collect()
}

fn number(span: &Received, key: &str) -> u64 {
    span.attributes.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{key} of {span:?}"))
}

#[test]
fn a_search_is_one_trace_across_proxy_and_query_nodes() {
    run(Duration::from_secs(120), async {
        let collector = Collector::start(true).await.expect("start the collector");
        let mut h = Harness::new("tracing");
        h.start_nats();
        let endpoint = collector.endpoint();
        let grpc = free_port().expect("free port").to_string();
        let env = [
            ("QUIVER_TRACING__ENDPOINT", endpoint.as_str()),
            ("QUIVER_PROXY__GRPC_PORT", grpc.as_str()),
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2500"),
            ("QUIVER_PLUGINS__BALANCER", "row-count"),
        ];
        let (client, _) = start_nodes(&mut h, &TWO_QUERY_NODES, &env).await;
        let n = 10_000;
        let dist = flushed_docs(&client, n).await;
        let holders: BTreeSet<String> = dist.segments.iter().flat_map(|s| s.nodes.iter().cloned()).collect();
        assert_eq!(holders.len(), 2, "segments on both query nodes: {dist:?}");

        // The application's own span: the search's spans must join its trace beneath it.
        let (trace_id, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        let traced = client.clone().with_traceparent(format!("00-{trace_id}-{client_span}-01"));
        let queries = dataset().queries(3);
        let search = data::search("docs", queries, 10, SearchParams::default(), Consistency::Strong);
        let found = traced.search(&search).await.expect("search");
        assert_eq!(found.results.len(), 3);

        let spans = eventually("the search's spans at the collector", Duration::from_secs(30), || async {
            let spans = collector.trace(trace_id);
            let searches = spans.iter().filter(|s| s.name == "querynode.search").count();
            let merged = spans.iter().any(|s| s.name == "do_merge");
            if searches >= 2 && merged {
                Ok(spans)
            } else {
                Err(format!("{} spans so far: {:?}", spans.len(), spans.iter().map(|s| &s.name).collect::<Vec<_>>()))
            }
        })
        .await;
        let tree: Vec<String> =
            spans.iter().map(|s| format!("{} {} <- {} ({})", s.name, s.span_id, s.parent, s.process)).collect();

        // The root: the proxy's server span, a child of the client's span.
        let roots: Vec<&Received> = spans.iter().filter(|s| s.parent == client_span).collect();
        assert_eq!(roots.len(), 1, "one span under the client's: {tree:#?}");
        let root = roots[0];
        assert_eq!(root.name, "proxy.search", "{tree:#?}");
        assert_eq!(root.process, "proxy");
        assert_eq!(root.attributes.get("otel.kind").map(String::as_str), None, "kind is the span's, not a tag");

        assert!(!children(&spans, root, "get_routing").is_empty(), "get_routing under the root: {tree:#?}");
        assert_eq!(children(&spans, root, "do_merge").len(), 1, "one do_merge under the root: {tree:#?}");
        let calls = children(&spans, root, "do_search");
        let called: BTreeSet<String> = calls.iter().map(|s| s.attributes["node"].clone()).collect();
        assert_eq!(called, holders, "one do_search per query node holding segments: {tree:#?}");
        assert_eq!(calls.len(), 2, "{tree:#?}");
        for call in calls {
            let node = &call.attributes["node"];
            let held = dist.segments.iter().filter(|s| s.nodes.contains(node)).count() as u64;
            assert!(number(call, "segments") >= held.min(1), "segments tag of {call:?}");
            assert_eq!(number(call, "nq"), 3);
            assert_eq!(number(call, "top_k"), 10);
            let rows: u64 = dist.segments.iter().filter(|s| s.nodes.contains(node)).map(|s| s.segment.rows).sum();
            assert!(number(call, "rows_searched") >= rows, "rows_searched of {call:?}: the node holds {rows}");
            assert_eq!(call.attributes.get("status").map(String::as_str), Some("ok"), "{call:?}");
            assert_ne!(call.status_code, 2, "{call:?}");
            // Beneath it: that node's own server span, sent by that node's process.
            let served = children(&spans, call, "querynode.search");
            assert_eq!(served.len(), 1, "{node}'s server span under its do_search: {tree:#?}");
            let served = served[0];
            assert_eq!(format!("{}-querynode", served.process), *node, "the span comes from {node}'s process");
            assert_eq!(children(&spans, served, "wait_consistency").len(), 1, "strong read waits: {tree:#?}");
            let pieces = children(&spans, served, "search_segment");
            assert!(!pieces.is_empty(), "{node}'s per-segment spans: {tree:#?}");
            let segments: BTreeSet<u64> = pieces.iter().map(|p| number(p, "segment")).collect();
            let sealed: BTreeSet<u64> =
                dist.segments.iter().filter(|s| s.nodes.contains(node)).map(|s| s.segment.id).collect();
            assert!(sealed.is_subset(&segments), "{node} searched {segments:?}, holds {sealed:?}");
        }

        // The same search through the Milvus gRPC API, the client's context in gRPC metadata
        // (`traceparent`, as OpenTelemetry's gRPC instrumentation sends it).
        let grpc_trace = "6bf92f3577b34da6a3ce929d0e0e4738";
        let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc}")).expect("uri").connect_lazy();
        let token = std::fs::read_to_string(h.credentials_file("app")).expect("app credentials");
        let token: MetadataValue<Ascii> = STANDARD.encode(token.trim()).parse().expect("metadata value");
        let parent: MetadataValue<Ascii> = format!("00-{grpc_trace}-{client_span}-01").parse().expect("metadata value");
        let mut milvus = MilvusServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", token.clone());
            req.metadata_mut().insert("traceparent", parent.clone());
            Ok(req)
        });
        let group = placeholder(vec![floats(&dataset().queries(1))], 101);
        let request = search_req("docs", vec![kv("topk", "10"), kv("params", "{}")], group);
        let reply = milvus.search(request).await.expect("gRPC search").into_inner();
        assert_eq!(reply.status.clone().unwrap_or_default().code, 0, "{:?}", reply.status);
        let spans = eventually("the gRPC search's spans", Duration::from_secs(30), || async {
            let spans = collector.trace(grpc_trace);
            let searches = spans.iter().filter(|s| s.name == "querynode.search").count();
            if searches >= 2 && spans.iter().any(|s| s.name == "do_merge") {
                Ok(spans)
            } else {
                Err(format!("{} spans so far", spans.len()))
            }
        })
        .await;
        let tree: Vec<String> = spans.iter().map(|s| format!("{} {} <- {}", s.name, s.span_id, s.parent)).collect();
        let roots: Vec<&Received> = spans.iter().filter(|s| s.parent == client_span).collect();
        assert_eq!(roots.len(), 1, "{tree:#?}");
        assert_eq!((roots[0].name.as_str(), roots[0].process.as_str()), ("milvus.Search", "proxy"), "{tree:#?}");
        let calls = children(&spans, roots[0], "do_search");
        assert_eq!(calls.len(), 2, "one do_search per query node under the gRPC call: {tree:#?}");
        for call in calls {
            assert_eq!(children(&spans, call, "querynode.search").len(), 1, "{tree:#?}");
        }
        assert_eq!(children(&spans, roots[0], "do_merge").len(), 1, "{tree:#?}");

        // A caller that says "not sampled" is obeyed by every process: no spans of its trace.
        let unsampled = "5bf92f3577b34da6a3ce929d0e0e4737";
        let quiet = client.clone().with_traceparent(format!("00-{unsampled}-{client_span}-00"));
        quiet.search(&search).await.expect("search");

        // A search without a trace context starts a trace of its own at the proxy.
        client
            .search(&data::search("docs", dataset().queries(1), 5, SearchParams::default(), Consistency::Eventually))
            .await
            .expect("search");
        eventually("an untraced client's search traced from the proxy", Duration::from_secs(30), || async {
            let all = collector.spans();
            let ids: std::collections::HashSet<&str> = all.iter().map(|s| s.span_id.as_str()).collect();
            let roots = all.iter().filter(|s| s.name == "proxy.search" && !ids.contains(s.parent.as_str()));
            let own = roots.filter(|s| s.trace_id != trace_id && s.parent.is_empty()).count();
            if own >= 1 {
                Ok(())
            } else {
                Err("no proxy.search span without a parent yet".to_string())
            }
        })
        .await;
        // (Every process sends its spans each second: the unsampled search's would be in by now.)
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(collector.trace(unsampled).is_empty(), "spans of an unsampled trace: {:?}", collector.trace(unsampled));
    });
}

/// A collector that is not there costs nothing but the spans: requests succeed, and the process
/// counts the batches it could not send (`quiver_trace_export_failures_total`) and says so.
#[test]
fn a_missing_collector_drops_spans_and_is_counted() {
    run(Duration::from_secs(60), async {
        let (gone, metrics) = (free_port().expect("free port"), free_port().expect("free port"));
        let (endpoint, listen) = (format!("http://127.0.0.1:{gone}"), format!("127.0.0.1:{metrics}"));
        let h = Harness::standalone(
            "trace-no-collector",
            &[("QUIVER_TRACING__ENDPOINT", endpoint.as_str()), ("QUIVER_METRICS__LISTEN", listen.as_str())],
        );
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, "docs").await;
        data::insert_rows(&client, "docs", 0, 1_000, 500).await;
        let search = data::search("docs", dataset().queries(1), 5, SearchParams::default(), Consistency::Strong);
        client.search(&search).await.expect("a search while the collector is missing");
        eventually("the failed exports counted", Duration::from_secs(30), || async {
            let text = metrics_text(metrics).await?;
            match metric_value(&text, "quiver_trace_export_failures_total") {
                n if n >= 1.0 => Ok(()),
                _ => Err("no failed export counted yet".to_string()),
            }
        })
        .await;
        client.search(&search).await.expect("still serving");
        let log = std::fs::read_to_string(h.dir().join("standalone.log")).unwrap_or_default();
        assert!(log.contains("could not send spans to the trace collector"), "the failure is logged");
    });
}
