//! A power cut, not only a crash: `quiver standalone` keeps its data (the embedded
//! nats-server's JetStream store and the local object store) on `quiver-powercut`, a FUSE file
//! system that throws away every write not made durable by fsync (file content) or fsync of
//! the directory (creates, renames) when the power is cut. Every acknowledged insert must be
//! there after the restart: in the log, or in a sealed segment whose inserts were purged from
//! the log.
//!
//! Two such file systems, cut together: the data dir (with the JetStream store) keeps the
//! names of what was fsynced, as Linux's journaling file systems do ([`Semantics::Linux`]:
//! nats-server 2.15 never fsyncs the directories it creates, so under strict POSIX rules no
//! stream would survive); the object store (`storage.url = file://…`) is strictly POSIX
//! ([`Semantics::Posix`]), so every fsync Quiver itself needs is checked.
//!
//! Needs root and /dev/fuse (CI runs as root); without them it fails, saying so.
//!
//! `QUIVER_IT_POWERCUT_SYNC_INTERVAL` sets `nats.sync_interval` of the run (default: the
//! product's default, "always"); with "2m" (nats-server's own default) the test shows what a
//! power cut loses when the log is not fsynced before acknowledging.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quiver_client::{schema, Client, Consistency, PrimaryKey};
use quiver_powercut::{Disk, Semantics};

use crate::common::data::{self, dataset};
use crate::common::{eventually, kill_standalone, restart_standalone, retry, run, Harness, READY};

const COLLECTION: &str = "powercut";

fn mount(backing: &Path, at: &Path, semantics: Semantics) -> Disk {
    Disk::mount(backing, at, semantics).unwrap_or_else(|e| {
        panic!(
            "cannot mount the power-cut FUSE file system at {} ({e}); this test needs root and /dev/fuse \
             (in a container: --device /dev/fuse --cap-add SYS_ADMIN)",
            at.display()
        )
    })
}

/// Rows `keys` of the dataset, keyed by row number.
fn rows(keys: std::ops::Range<usize>) -> quiver_client::RowBatch {
    let ds = dataset();
    schema::rows(keys.start as i64..keys.end as i64, ds.dim32(), ds.rows(keys.start, keys.end))
}

/// Inserts `keys` in batches of `batch`; returns the keys acknowledged.
async fn insert(client: &Client, keys: std::ops::Range<usize>, batch: usize, acked: &mut Vec<usize>) {
    let mut at = keys.start;
    while at < keys.end {
        let to = (at + batch).min(keys.end);
        let res = retry("insert", Duration::from_secs(20), || client.insert(COLLECTION, rows(at..to))).await;
        assert_eq!(res.pks.len(), to - at, "insert acknowledged every row");
        acked.extend(at..to);
        at = to;
    }
}

#[test]
fn power_cut_loses_no_acknowledged_insert() {
    run(Duration::from_secs(300), async {
        assert!(
            Path::new("/dev/fuse").exists(),
            "the power-cut test needs /dev/fuse (and root) to mount its FUSE file system"
        );
        // Declared before the harness, so they are dropped (unmounted) after the harness
        // killed the processes that use them.
        let disk = tempfile::Builder::new().prefix("quiver-it-powercut-disk-").tempdir().expect("tempdir");
        let disks = [("data", Semantics::Linux), ("objects", Semantics::Posix)].map(|(name, semantics)| {
            let (backing, at) = (disk.path().join(format!("{name}-disk")), disk.path().join(name));
            std::fs::create_dir_all(&backing).expect("backing dir");
            std::fs::create_dir_all(&at).expect("mount point");
            (backing, at, semantics)
        });
        let mut mounts: Vec<Disk> = disks.iter().map(|(b, at, s)| mount(b, at, *s)).collect();
        let data_dir = disks[0].1.join("quiver").display().to_string();
        let objects = format!("file://{}", disks[1].1.join("objects").display());
        let sync = std::env::var("QUIVER_IT_POWERCUT_SYNC_INTERVAL").unwrap_or_else(|_| "always".into());
        let env = [
            ("QUIVER_CLUSTER__DATA_DIR", data_dir.as_str()),
            ("QUIVER_STORAGE__URL", objects.as_str()),
            ("QUIVER_NATS__SYNC_INTERVAL", sync.as_str()),
            // Size seals as well as flushes.
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", "700"),
        ];
        let mut h = Harness::standalone("powercut", &env);
        // The credentials live on the power-cut disk too, and must survive the cut: with new
        // ones generated at the restart, this client would be locked out.
        let admin = std::path::Path::new(&data_dir).join("credentials").join("admin.credentials");
        h.client_options =
            quiver_client::ConnectOptions::default().credentials_file(&admin).expect("admin credentials on the disk");
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        data::create_simple(&client, COLLECTION).await;

        // Inserts with flushes running beside them: segments seal, a query node loads them and
        // the coordinator purges their inserts from the log, while newer inserts are only in
        // the log.
        let stop = Arc::new(AtomicBool::new(false));
        let flusher = tokio::spawn({
            let (client, stop) = (client.clone(), stop.clone());
            async move {
                let mut flushes = 0;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if client.flush(COLLECTION).await.is_ok() {
                        flushes += 1;
                    }
                }
                flushes
            }
        });
        let mut acked = Vec::new();
        insert(&client, 0..3_000, 100, &mut acked).await;
        // At least one segment is served and its inserts purged from the log (best effort
        // right after the layout changes), so segments must carry those rows across the cut.
        let purged = eventually("a sealed segment served (its inserts purged)", Duration::from_secs(60), || async {
            let d = client.distribution(COLLECTION).await.map_err(|e| e.to_string())?;
            let sealed: u64 = d.shards.iter().map(|s| s.sealed_seq).max().unwrap_or(0);
            (sealed > 0).then_some(d.segments.len()).ok_or(format!("sealed_seq 0, {} segments", d.segments.len()))
        })
        .await;
        insert(&client, 3_000..4_000, 100, &mut acked).await;
        stop.store(true, Ordering::Relaxed);
        let flushes = flusher.await.expect("flusher");
        // The last rows are acknowledged but in no segment: only the log has them.
        insert(&client, 4_000..4_500, 50, &mut acked).await;
        eprintln!(
            "powercut: {} rows acknowledged, {flushes} flushes, {purged} segments served before the cut",
            acked.len()
        );
        drop(client);

        // The power cut: every process dies at once, the disk keeps only what was fsynced.
        kill_standalone(&mut h).await;
        for (m, (_, at, _)) in mounts.drain(..).zip(&disks) {
            let lost = m.power_cut().expect("power cut");
            eprintln!(
                "powercut: under {} the cut dropped the unsynced content of {:?} and entries of {:?}",
                at.display(),
                lost.files,
                lost.dirs
            );
        }
        mounts = disks.iter().map(|(b, at, s)| mount(b, at, *s)).collect();
        let client = restart_standalone(&mut h).await;

        assert_eq!(
            data::count(&client, COLLECTION).await,
            acked.len() as i64,
            "every acknowledged row is there after the power cut, once"
        );
        let ds = dataset();
        for chunk in acked.chunks(500) {
            let keys: Vec<PrimaryKey> = chunk.iter().map(|k| PrimaryKey::Int64(*k as i64)).collect();
            let got = retry("get", Duration::from_secs(15), || {
                client.get(COLLECTION, keys.clone(), Vec::new(), Consistency::Strong)
            })
            .await;
            assert_eq!(got.rows.pks, keys, "acknowledged keys {}..={} are present", chunk[0], chunk[chunk.len() - 1]);
            let (first, last) = (chunk[0], chunk[chunk.len() - 1] + 1);
            assert_eq!(got.rows.vectors, ds.rows(first, last), "vectors of {first}..{last}");
        }

        // Sealing what is left gives every row exactly once, in segments with distinct ids.
        data::flush(&client, COLLECTION).await;
        let total = acked.len() as u64;
        let d = data::wait_segments(
            &client,
            COLLECTION,
            total,
            quiver_client::SegmentState::Flushed,
            Duration::from_secs(30),
        )
        .await;
        let ids: HashSet<u64> = d.segments.iter().map(|s| s.segment.id).collect();
        assert_eq!(ids.len(), d.segments.len(), "no segment id twice: {:?}", d.segments);
        drop(client);
        drop(h);
        for m in mounts {
            m.unmount().expect("unmount");
        }
    });
}
