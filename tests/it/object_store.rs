//! Objects in S3: a multi-process cluster with every segment and index in an S3-compatible store
//! (s3rver, see `quiver_testkit::s3`), the store SIGKILLed and restarted in the middle of a flush,
//! a store that cannot work (no such bucket, wrong keys) stopping a node at start with the
//! cause, and the sweep that deletes objects no segment names.

use std::path::Path;
use std::time::{Duration, Instant};

use quiver_client::{Consistency, PrimaryKey, SearchParams, SegmentState};
use quiver_testkit::s3;

use crate::common::data::{self, dataset};
use crate::common::{indexed_docs, retry, run, start_one_per_role, wait_for_port, Harness, READY};

/// Object keys (relative to `root`) the store holds, as s3rver lays them out on disk.
fn stored_objects(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Some(key) = path.to_str().and_then(|p| p.strip_suffix("._S3rver_object")) {
                out.push(key.trim_start_matches(&*root.to_string_lossy()).trim_start_matches('/').to_string());
            }
        }
    }
    out.sort();
    out
}

/// The port of the store `storage` (a cluster's `QUIVER_STORAGE__*` settings) points at.
fn s3_port(storage: &[(String, String)]) -> u16 {
    storage
        .iter()
        .find(|(k, _)| k == "QUIVER_STORAGE__ENDPOINT")
        .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
        .expect("s3 port")
}

/// A Strong search for base row `row` finds key `row` first.
async fn finds_itself(client: &quiver_client::Client, row: usize) {
    let req = data::search("docs", dataset().rows(row, row + 1), 3, SearchParams::default(), Consistency::Strong);
    let res = retry("search", Duration::from_secs(30), || client.search(&req)).await;
    assert_eq!(res.results[0].pks[0], PrimaryKey::Int64(row as i64), "search for row {row}");
}

#[test]
fn a_cluster_keeps_its_objects_in_s3_and_a_flush_outlives_a_store_restart() {
    run(Duration::from_secs(170), async {
        let mut h = Harness::new("s3");
        h.start_nats();
        let storage = h.start_s3();
        let mut env: Vec<(&str, &str)> = storage.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2000"));
        let (client, _) = start_one_per_role(&mut h, "coord", &env).await;

        let d = indexed_docs(&client, 4_000).await;
        finds_itself(&client, 1_234).await;

        // Every segment and index is in the bucket, under the cluster's prefix; none on local disk.
        let root = h.s3_dir().join(s3::BUCKET).join(&h.cluster);
        let objects = stored_objects(&root);
        for s in &d.segments {
            let dir = format!("collections/{}/segments/{}", s.segment.collection, s.segment.id);
            for what in ["data", "index"] {
                assert!(objects.contains(&format!("{dir}/{what}")), "{dir}/{what} is in the store: {objects:?}");
            }
        }
        let local = h.data_dir().join("objects");
        assert!(std::fs::read_dir(&local).map_or(true, |mut d| d.next().is_none()), "nothing in {}", local.display());

        // Rows acknowledged (they are in the NATS log), then the store dies and a flush is asked
        // for: it waits (the data node's put retries) and completes once the store is back.
        data::insert_rows(&client, "docs", 4_000, 5_500, 500).await;
        h.proc("s3").kill();
        let flusher = {
            let client = client.clone();
            tokio::spawn(async move { client.flush("docs").await })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!flusher.is_finished(), "a flush completed while the store was down: {:?}", flusher.await);
        h.proc("s3").restart().expect("restart s3rver");
        let port = s3_port(&storage);
        wait_for_port(h.proc("s3"), port, READY);
        let back = Instant::now();
        let flushed = tokio::time::timeout(Duration::from_secs(60), flusher).await.expect("flush ends").expect("join");
        let flushed = flushed.expect("the flush asked while the store was down completes once it is back");
        eprintln!("flush completed {:?} after the store came back: segments {:?}", back.elapsed(), flushed.segments);
        assert!(!flushed.segments.is_empty(), "the flush sealed the new rows");
        data::wait_segments(&client, "docs", 5_500, SegmentState::Indexed, Duration::from_secs(60)).await;
        assert_eq!(data::count(&client, "docs").await, 5_500, "every acknowledged row once");
        finds_itself(&client, 5_000).await;

        // A restarted query node loads everything again from the store.
        h.proc("qn").kill();
        h.proc("qn").restart().expect("restart the query node");
        data::wait_segments(&client, "docs", 5_500, SegmentState::Indexed, Duration::from_secs(60)).await;
        finds_itself(&client, 42).await;
        assert_eq!(data::count(&client, "docs").await, 5_500);
    });
}

#[test]
fn a_store_that_cannot_work_stops_a_node_at_start_with_the_cause() {
    run(Duration::from_secs(60), async {
        let mut h = Harness::new("s3_errors");
        h.start_nats();
        let storage = h.start_s3();
        let port = s3_port(&storage);
        let cases = [
            ("nobucket", "nobucket", s3::ACCESS_KEY, "s3://nobucket/p: the bucket does not exist"),
            ("badkeys", s3::BUCKET, "WRONG", "s3://quiver/p: access denied: check the credentials"),
        ];
        for (name, bucket, key, expected) in cases {
            let env = s3::storage_env(port, bucket, "p", key);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            h.start_node(name, &["datanode"], &env);
            let started = Instant::now();
            let status = loop {
                if let Some(status) = h.proc(name).try_wait().expect("wait") {
                    break status;
                }
                assert!(started.elapsed() < Duration::from_secs(30), "{name}: still running:\n{}", h.proc(name).log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let log = h.proc(name).log();
            assert!(!status.success(), "{name}: {status}\n{log}");
            assert!(log.contains(expected), "{name}: the error names the store and the cause ({expected}):\n{log}");
            eprintln!("{name}: stopped in {:?}", started.elapsed());
        }
    });
}

/// The store's own API against s3rver: a large object goes up in parts and comes back whole; a
/// store that stays down fails a put after its retries, naming the store and the cause.
#[test]
fn large_objects_go_up_in_parts_and_a_store_that_stays_down_fails_clearly() {
    run(Duration::from_secs(60), async {
        let mut h = Harness::new("s3_parts");
        let storage = h.start_s3();
        let mut config = quiver_runtime::Config::default();
        for (k, v) in &storage {
            let key = k.trim_start_matches("QUIVER_STORAGE__").to_lowercase();
            match key.as_str() {
                "url" => config.storage.url = v.clone(),
                "endpoint" => config.storage.endpoint = v.clone(),
                "region" => config.storage.region = v.clone(),
                "access_key_id" => config.storage.access_key_id = v.clone(),
                "secret_access_key" => config.storage.secret_access_key = v.clone(),
                _ => {}
            }
        }
        config.storage.multipart_threshold_mb = 5;
        config.storage.multipart_part_mb = 5;
        config.storage.max_retries = 3;
        let objects = quiver_runtime::Objects::open(&config).expect("open");
        quiver_runtime::Objects::check(&config).await.expect("the store works");

        // 13 MiB: three parts (5 + 5 + 3), which s3rver stores as one object.
        let big: Vec<u8> = (0..13u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        objects.put("big/object", big.clone().into()).await.expect("multipart put");
        let got = objects.get("big/object").await.expect("get");
        assert!(got.as_ref() == big.as_slice(), "the object comes back whole ({} of {} bytes)", got.len(), big.len());
        let stored = h.s3_dir().join(s3::BUCKET).join(&h.cluster).join("big/object._S3rver_object");
        assert_eq!(std::fs::metadata(&stored).map(|m| m.len()).ok(), Some(big.len() as u64), "{}", stored.display());
        objects.put("small", vec![7u8; 1000].into()).await.expect("single put");
        objects.delete("small").await.expect("delete");
        let missing = objects.get("small").await.expect_err("deleted");
        assert!(missing.to_string().contains("object small is missing from the object store"), "{missing}");

        h.proc("s3").kill();
        let started = Instant::now();
        let err = objects.put("during/outage", vec![1u8; 100].into()).await.expect_err("the store is down");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "object store {}: put during/outage: the store does not answer",
                config.storage.url
            )),
            "{text}"
        );
        eprintln!("a put failed after {:?} of retries: {text}", started.elapsed());
    });
}

/// Objects no segment names are deleted by the coordinator's sweep once older than
/// `storage.gc_tolerance`, and only those. Here they are left by deletes that failed: an index
/// dropped and a collection dropped while the store was down (the catalog changes, the deletes
/// give up after `storage.retry_timeout`).
#[test]
fn objects_no_segment_names_are_swept_once_old_enough() {
    run(Duration::from_secs(150), async {
        let mut h = Harness::new("s3_gc");
        h.start_nats();
        let storage = h.start_s3();
        let mut env: Vec<(&str, &str)> = storage.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend([
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "2000"),
            ("QUIVER_STORAGE__GC_INTERVAL", "1s"),
            ("QUIVER_STORAGE__GC_TOLERANCE", "5m"),
            ("QUIVER_STORAGE__RETRY_TIMEOUT", "1s"),
        ]);
        let (client, _) = start_one_per_role(&mut h, "coord", &env).await;
        let docs = indexed_docs(&client, 4_000).await;
        data::create_simple(&client, "other").await;
        data::insert_rows(&client, "other", 0, 1_000, 1_000).await;
        data::flush(&client, "other").await;
        data::wait_segments(&client, "other", 1_000, SegmentState::Flushed, Duration::from_secs(30)).await;
        let root = h.s3_dir().join(s3::BUCKET).join(&h.cluster);
        let kept: Vec<String> = docs
            .segments
            .iter()
            .map(|s| format!("collections/{}/segments/{}/data", s.segment.collection, s.segment.id))
            .collect();
        let before = stored_objects(&root);
        assert!(before.len() > kept.len() * 2, "data and index of docs, data of other: {before:?}");

        // The store goes down: the index and the collection are dropped all the same, their
        // objects stay behind.
        h.proc("s3").kill();
        client.release_collection("docs").await.expect("release");
        client.drop_index("docs").await.expect("drop the index while the store is down");
        client.drop_collection("other").await.expect("drop a collection while the store is down");
        h.proc("s3").restart().expect("restart s3rver");
        wait_for_port(h.proc("s3"), s3_port(&storage), READY);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(stored_objects(&root), before, "nothing younger than the tolerance is deleted");

        // Every object an hour old (by the store's clock, the file's mtime for s3rver): those no
        // segment names go, the segments' own stay.
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        for key in &before {
            let file = root.join(format!("{key}._S3rver_object"));
            std::fs::File::options().write(true).open(&file).and_then(|f| f.set_modified(old)).expect("age");
        }
        let swept = Instant::now();
        let segments = |root: &Path| -> Vec<String> {
            stored_objects(root).into_iter().filter(|k| k.starts_with("collections/")).collect()
        };
        crate::common::eventually("orphans swept", Duration::from_secs(30), || async {
            match segments(&root) {
                now if now == kept => Ok(()),
                now => Err(format!("stored {now:?}, want {kept:?}")),
            }
        })
        .await;
        eprintln!("{} objects no segment names swept within {:?}", before.len() - kept.len() - 1, swept.elapsed());

        // The collection is whole: loaded again and searched without its index.
        client.load_collection("docs", 1).await.expect("load");
        assert_eq!(data::count(&client, "docs").await, 4_000);
        finds_itself(&client, 1_234).await;
        assert_eq!(segments(&root), kept, "loading deletes nothing");
        assert!(stored_objects(&root).contains(&"quiver-check".to_string()), "the sweep stays in collections/");
    });
}
