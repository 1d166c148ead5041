//! Search and insert load for tests that change a cluster under it (drain, scaling).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_client::{Client, Consistency, SearchParams};

use super::data::{self, dataset};

/// Search and insert load running until stopped. Every search looks for base rows that were
/// inserted before the load started: the row itself must be the best hit (exact results) and
/// all `k` hits distinct.
pub struct Load {
    stop: Arc<AtomicBool>,
    searches: Arc<AtomicU64>,
    /// Rows acknowledged so far: keys `from..inserted` (inserted in order, 200 at a time).
    pub inserted: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(client: &Client, known: usize, from: usize, to: usize) -> Load {
        Load::start_paced(client, known, from, to, Duration::from_millis(30))
    }

    /// [`Load::start`] with `pause` between inserts (a longer run within the dataset's rows).
    pub fn start_paced(client: &Client, known: usize, from: usize, to: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let searches = Arc::new(AtomicU64::new(0));
        let inserted = Arc::new(AtomicU64::new(from as u64));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = Vec::new();
        for t in 0..2usize {
            let (client, stop, searches, failures) = (client.clone(), stop.clone(), searches.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let ds = dataset();
                let mut i = t * 7919;
                while !stop.load(Ordering::Relaxed) {
                    let row = i % known;
                    let req =
                        data::search("docs", ds.row(row).to_vec(), 10, SearchParams::default(), Consistency::Strong);
                    match client.search(&req).await {
                        Ok(r) => {
                            let pks = r.results.first().map(|h| h.pks.clone()).unwrap_or_default();
                            let distinct: std::collections::HashSet<_> = pks.iter().collect();
                            if pks.len() != 10 || distinct.len() != 10 {
                                failures.lock().unwrap().push(format!(
                                    "row {row}: {} hits, {} distinct",
                                    pks.len(),
                                    distinct.len()
                                ));
                            } else if pks[0] != quiver_client::PrimaryKey::Int64(row as i64) {
                                failures.lock().unwrap().push(format!("row {row}: best hit {:?}", pks[0]));
                            }
                        }
                        Err(e) => failures.lock().unwrap().push(format!("search failed: {e}")),
                    }
                    searches.fetch_add(1, Ordering::Relaxed);
                    i += 13;
                }
            }));
        }
        let (client, stop2, inserted2, failures2) = (client.clone(), stop.clone(), inserted.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let ds = dataset();
            let mut at = from;
            while at < to && !stop2.load(Ordering::Relaxed) {
                let end = (at + 200).min(to);
                let rows = quiver_client::schema::rows(at as i64..end as i64, ds.dim32(), ds.rows(at, end));
                match client.insert("docs", rows).await {
                    Ok(_) => {
                        at = end;
                        inserted2.store(at as u64, Ordering::Relaxed);
                    }
                    Err(e) => failures2.lock().unwrap().push(format!("insert failed: {e}")),
                }
                tokio::time::sleep(pause).await;
            }
        }));
        Load { stop, searches, inserted, failures, tasks }
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        self.searches.load(Ordering::Relaxed)
    }
}
