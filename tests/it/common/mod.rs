//! The integration tests run on `quiver-testkit` (real nats-server and quiver processes, free
//! ports, SIGKILL, logs; see its docs). This module hands it the `quiver` binary cargo built for
//! this test target, so the tests always run the fresh build, whatever `QUIVER_BIN` says.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::ExitStatus;

pub mod load;

pub use quiver_testkit::data;
pub use quiver_testkit::{
    child_pids, eventually, free_port, process_alive, process_name, retry, run, wait_for_port, READY,
};

/// The `quiver` binary under test.
pub const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");

/// A [`quiver_testkit::Harness`] running [`QUIVER`].
pub struct Harness(quiver_testkit::Harness);

impl Harness {
    /// An empty harness: temp dir, cluster name and NATS port chosen, nothing started.
    pub fn new(test: &str) -> Harness {
        Harness(quiver_testkit::Harness::new(Path::new(QUIVER), test))
    }

    /// `quiver standalone` with extra environment; returns once NATS accepts connections.
    pub fn standalone(test: &str, env: &[(&str, &str)]) -> Harness {
        Harness(quiver_testkit::Harness::standalone(Path::new(QUIVER), test, env))
    }
}

impl Deref for Harness {
    type Target = quiver_testkit::Harness;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Runs [`QUIVER`] to completion (see [`quiver_testkit::quiver_cli`]).
pub fn quiver_cli(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (ExitStatus, String, String) {
    quiver_testkit::quiver_cli(Path::new(QUIVER), args, env, cwd)
}

/// Calls API method `method` as the `node` principal, which may publish to any subject of the
/// cluster (an `admin` or `app` client may publish only to the API's own methods, so the NATS
/// server refuses an unknown method before any proxy sees it); returns the proxy's error text
/// (empty if it answered without one).
pub async fn api_error_as_node(h: &Harness, method: &str, payload: Vec<u8>) -> String {
    let node = h.nats_as("node").await;
    let subject = quiver_client::Subjects::new(&h.cluster).api(method);
    let reply = tokio::time::timeout(std::time::Duration::from_secs(20), node.request(subject, payload.into()))
        .await
        .expect("the proxy answers within 20 s")
        .expect("a reply");
    reply
        .headers
        .as_ref()
        .and_then(|headers| headers.get(quiver_schemas::status::HEADER_ERROR))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

/// The embedded nats-server child of a process.
pub fn nats_child(pid: u32) -> Option<u32> {
    child_pids(pid).into_iter().find(|c| process_name(*c).as_deref() == Some("nats-server") && process_alive(*c))
}

/// Starts the (killed) standalone process again and answers a client once every role of it
/// serves.
pub async fn restart_standalone(h: &mut Harness) -> quiver_client::Client {
    h.proc("standalone").restart().expect("restart");
    let port = h.nats_port;
    wait_for_port(h.proc("standalone"), port, READY);
    let client = h.client().await;
    h.wait_ready(&client, &h.standalone_nodes(), READY).await;
    client
}

/// SIGKILLs the standalone process and waits until its embedded nats-server has died with it
/// (PR_SET_PDEATHSIG), so nothing is left writing to the data dir.
pub async fn kill_standalone(h: &mut Harness) {
    let nats = nats_child(h.pid("standalone")).expect("standalone runs a nats-server child");
    h.proc("standalone").kill();
    eventually("embedded nats-server gone", std::time::Duration::from_secs(5), || async {
        if process_alive(nats) {
            Err(format!("nats-server {nats} still alive"))
        } else {
            Ok(())
        }
    })
    .await;
}

/// `GET /metrics` over a plain TCP connection (no HTTP client dependency for one request).
pub async fn metrics_text(port: u16) -> Result<String, String> {
    http_get(port, "/metrics").await
}

/// `GET path` (HTTP/1.0, headers and body as text) on 127.0.0.1:`port`.
pub async fn http_get(port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.map_err(|e| e.to_string())?;
    Ok(body)
}

/// The value of the metric line starting with `series` (name and labels), 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// One process per role, as (process name, role): the multi-process cluster most tests start.
pub const ONE_PER_ROLE: [(&str, &str); 5] =
    [("coord", "coordinator"), ("proxy", "proxy"), ("dn", "datanode"), ("ixn", "indexnode"), ("qn", "querynode")];

/// A cluster with two query nodes, one process per node, as (process name, role).
pub const TWO_QUERY_NODES: [(&str, &str); 6] = [
    ("coord", "coordinator"),
    ("proxy", "proxy"),
    ("qn1", "querynode"),
    ("qn2", "querynode"),
    ("dn", "datanode"),
    ("ixn", "indexnode"),
];

/// Starts one node of each role ([`ONE_PER_ROLE`], the coordinator's id replaced by
/// `coordinator`) with `env`, waits until each serves; returns a client and the (node id, pid)
/// of each.
pub async fn start_one_per_role(
    h: &mut Harness,
    coordinator: &str,
    env: &[(&str, &str)],
) -> (quiver_client::Client, Vec<(String, u32)>) {
    let ids: Vec<(&str, &str)> =
        ONE_PER_ROLE.iter().map(|&(id, role)| (if role == "coordinator" { coordinator } else { id }, role)).collect();
    start_nodes(h, &ids, env).await
}

/// Starts one process per (process name, role) of `procs` with `env`, waits until each
/// serves; returns a client and the (node id, pid) of each.
pub async fn start_nodes(
    h: &mut Harness,
    procs: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (quiver_client::Client, Vec<(String, u32)>) {
    for &(id, role) in procs {
        h.start_node(id, &[role], env);
    }
    let client = h.client().await;
    let nodes: Vec<(String, u32)> = procs.iter().map(|(id, role)| (format!("{id}-{role}"), h.pid(id))).collect();
    h.wait_ready(&client, &nodes, READY).await;
    (client, nodes)
}

/// Collection `docs` with base rows `0..rows` inserted and flushed; returns the served layout
/// once every row is in a flushed segment.
pub async fn flushed_docs(client: &quiver_client::Client, rows: usize) -> quiver_client::Distribution {
    use std::time::Duration;
    data::create_simple(client, "docs").await;
    data::insert_rows(client, "docs", 0, rows, 2_000).await;
    data::flush(client, "docs").await;
    data::wait_segments(client, "docs", rows as u64, quiver_client::SegmentState::Flushed, Duration::from_secs(30))
        .await
}

/// Collection `docs` with base rows `0..rows` flushed, an HNSW index built on every segment and
/// loaded with one replica; returns the served layout once every row is in an indexed segment.
pub async fn indexed_docs(client: &quiver_client::Client, rows: usize) -> quiver_client::Distribution {
    use quiver_client::{IndexType, MetricType, SegmentState};
    use std::time::Duration;
    data::create_simple(client, "docs").await;
    data::insert_rows(client, "docs", 0, rows, 1_000).await;
    data::flush(client, "docs").await;
    client.create_index("docs", data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 100)).await.expect("index");
    retry("load", Duration::from_secs(10), || client.load_collection("docs", 1)).await;
    data::wait_segments(client, "docs", rows as u64, SegmentState::Indexed, Duration::from_secs(60)).await
}
