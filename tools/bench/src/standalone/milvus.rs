//! The pymilvus leg of `quiver-bench standalone --milvus`: unmodified
//! `pymilvus.MilvusClient.search` against the Milvus gRPC API of the same `quiver standalone`
//! the other legs use.
//!
//! The driver (`tools/bench/bench-pymilvus.py`, compiled into this binary and written to a temp
//! dir with the other Python legs' scripts, [`PyInputs`], so the bench runs from any directory)
//! gets the bench's own query vectors and ground truth as `.npy` files, runs one configuration
//! per invocation and prints one JSON line ([`DriverOutput`]). The same driver measures Milvus
//! 2.3.5 standalone ([`super::milvus_server`]), and the faiss-cpu leg ([`super::faiss_cpu`])
//! prints the same object. Around each invocation the bench reads the child's Prometheus endpoint:
//! `quiver_milvus_request_seconds{method="Search"}` `_sum` / `_count` give the mean time the
//! server spent per Search (tonic handler entry to reply), which splits the client-side latency
//! into "gRPC server path" and "pymilvus client + transport"; `quiver_milvus_requests_total`
//! shows any other RPC pymilvus made meanwhile and failed calls.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use quiver_client::MetricType;
use serde::Deserialize;

use super::{Data, LoadResult};

/// The pymilvus version the compatibility suite pins (tests/pymilvus/run.sh's default).
pub(super) const PYMILVUS_VERSION: &str = "2.5.14";
/// The Python scripts, compiled in so the bench does not depend on the working directory.
const SCRIPTS: [(&str, &str); 5] = [
    ("benchcommon.py", include_str!("../../benchcommon.py")),
    ("bench-pymilvus.py", include_str!("../../bench-pymilvus.py")),
    ("bench-faiss-cpu-threads.py", include_str!("../../bench-faiss-cpu-threads.py")),
    ("bench-milvus-server.py", include_str!("../../bench-milvus-server.py")),
    ("bench-milvus-load.py", include_str!("../../bench-milvus-load.py")),
];

/// What the driver prints (one JSON object); latencies in µs, absent when no call succeeded.
#[derive(Debug, Deserialize, PartialEq)]
pub(super) struct DriverOutput {
    pub threads: usize,
    pub calls: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub qps: f64,
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub mean_us: Option<f64>,
    pub recall: Option<f64>,
    pub queries_seen: usize,
}

impl DriverOutput {
    /// The last non-empty stdout line, as JSON (anything printed before it is ignored). Also what
    /// bench-faiss-cpu-threads.py prints per configuration.
    pub(super) fn parse(stdout: &str) -> anyhow::Result<DriverOutput> {
        let line = stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| anyhow!("the driver printed nothing on stdout"))?;
        serde_json::from_str(line).with_context(|| format!("cannot parse the driver's output {line:?}"))
    }

    pub(super) fn into_load_result(self) -> LoadResult {
        let nan = f64::NAN;
        LoadResult {
            threads: self.threads,
            calls: self.calls,
            errors: self.errors,
            first_error: self.first_error,
            qps: self.qps,
            p50_us: self.p50_us.unwrap_or(nan),
            p99_us: self.p99_us.unwrap_or(nan),
            mean_us: self.mean_us.unwrap_or(nan),
            recall: self.recall.unwrap_or(nan),
            queries_seen: self.queries_seen,
            cpu: None,
        }
    }
}

/// One pymilvus configuration's outcome.
pub(super) struct MilvusRow {
    /// Boolean expression sent with every search ("" = none).
    pub filter: String,
    pub result: LoadResult,
    pub p90_us: f64,
    pub server: Option<ServerShare>,
}

/// What the server's metrics say about a window.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ServerShare {
    /// Requests of the measured method in the window (warm-up and driver set-up calls included).
    pub calls: f64,
    /// Their mean server-side time, µs.
    pub mean_us: f64,
    /// Other Milvus RPCs in the window, by method.
    pub other: BTreeMap<String, f64>,
    /// Calls of any method that answered an error status.
    pub errors: f64,
}

// ---------------------------------------------------------------- Prometheus

/// The samples of metric `name` in a Prometheus text exposition: (labels, value).
pub(super) fn prom_series(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = if let Some(body) = rest.strip_prefix('{') {
            let Some(close) = body.rfind('}') else { continue };
            (parse_labels(&body[..close]), body[close + 1..].trim())
        } else if rest.starts_with(' ') {
            (BTreeMap::new(), rest.trim())
        } else {
            continue; // a longer name with this prefix
        };
        // An optional timestamp may follow the value.
        if let Some(v) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            out.push((labels, v));
        }
    }
    out
}

/// `a="x",b="y"` → {a: x, b: y} (escaped quotes and backslashes in values handled).
fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_string();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
    }
    out
}

/// Sum of the samples of `name` whose labels include every pair of `labels`.
pub(super) fn prom_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    prom_series(text, name)
        .into_iter()
        .filter(|(l, _)| labels.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
        .map(|(_, v)| v)
        .sum()
}

/// Which histogram and label a window is about.
#[derive(Clone, Copy)]
pub(super) struct Measured<'a> {
    /// Histogram name without `_sum` / `_count`.
    pub histogram: &'a str,
    /// Request counter by `method` and `outcome` (for other calls and errors), if any.
    pub counter: Option<&'a str>,
    pub method: &'a str,
    /// The role whose series count (`quiver_request_seconds` has one per role and method).
    pub role: Option<&'a str>,
}

/// The mean server time of `m.method` between two scrapes, other methods called, errors.
pub(super) fn server_share(before: &str, after: &str, m: Measured<'_>) -> ServerShare {
    let mut label = vec![("method", m.method)];
    label.extend(m.role.map(|r| ("role", r)));
    let sum = |t: &str| prom_value(t, &format!("{}_sum", m.histogram), &label);
    let count = |t: &str| prom_value(t, &format!("{}_count", m.histogram), &label);
    let calls = count(after) - count(before);
    let secs = sum(after) - sum(before);
    let mut share = ServerShare {
        calls,
        mean_us: if calls > 0.0 { secs / calls * 1e6 } else { f64::NAN },
        ..ServerShare::default()
    };
    if let Some(counter) = m.counter {
        let mut delta: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (sign, text) in [(-1.0, before), (1.0, after)] {
            for (labels, v) in prom_series(text, counter) {
                let method = labels.get("method").cloned().unwrap_or_default();
                let outcome = labels.get("outcome").cloned().unwrap_or_default();
                *delta.entry((method, outcome)).or_default() += sign * v;
            }
        }
        for ((method, outcome), d) in delta {
            if d <= 0.0 {
                continue;
            }
            if outcome == "error" {
                share.errors += d;
            }
            if method != m.method {
                *share.other.entry(method).or_default() += d;
            }
        }
    }
    share
}

/// GET http://addr/metrics (HTTP/1.0, so the body ends when the connection closes).
pub(super) fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("metrics at {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).with_context(|| format!("reading metrics from {addr}"))?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP answer from {addr}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("metrics at {addr} answered {:?}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

// ---------------------------------------------------------------- .npy files

/// An `.npy` (format 1.0) file of a C-order 2-D array: `descr` is the numpy dtype string
/// (`<f4`, `<i8`), `le_bytes` the elements, little-endian.
pub(super) fn npy(descr: &str, rows: usize, cols: usize, le_bytes: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple
    // of 64 bytes, ending in a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + le_bytes.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(le_bytes);
    out
}

fn npy_f32(rows: usize, cols: usize, v: &[f32]) -> Vec<u8> {
    npy("<f4", rows, cols, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
}

/// Ground truth as `nq × k` int64, each row cut or padded (with -1, never an id) to `k`.
fn npy_truth(truth: &[Vec<i64>], k: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(truth.len() * k * 8);
    for row in truth {
        for i in 0..k {
            bytes.extend_from_slice(&row.get(i).copied().unwrap_or(-1).to_le_bytes());
        }
    }
    npy("<i8", truth.len(), k, &bytes)
}

// ---------------------------------------------------------------- python

/// The python to run the driver with: `--python` / `QUIVER_BENCH_PYTHON` when given (used as
/// is), else the compatibility suite's venv for [`PYMILVUS_VERSION`], created or repaired the
/// way tests/pymilvus/run.sh does it.
pub(super) fn resolve_python(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    crate::pyvenv::Venv {
        name: format!("pymilvus-{PYMILVUS_VERSION}"),
        packages: &[format!("pymilvus=={PYMILVUS_VERSION}"), "numpy".into()],
        check: format!("import importlib.metadata as m, numpy; assert m.version('pymilvus') == '{PYMILVUS_VERSION}'"),
        who: "pymilvus",
        hint: "",
    }
    .python(given)
}

// ---------------------------------------------------------------- the driver

/// What the Python legs read, in a temp dir (removed on drop): their scripts ([`SCRIPTS`]), the
/// bench's query vectors (`queries.npy`, float32 nq × dim) and ground truth (`truth.npy`, int64
/// nq × k).
pub(super) struct PyInputs {
    dir: tempfile::TempDir,
}

impl PyInputs {
    pub(super) fn write(data: &Data, k: usize) -> anyhow::Result<PyInputs> {
        let dir = temp_dir("quiver-bench-py-")?;
        let inputs = PyInputs { dir };
        let write = |name: &str, bytes: &[u8]| {
            let p = inputs.path(name);
            std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
        };
        for (name, text) in SCRIPTS {
            write(name, text.as_bytes())?;
        }
        write("queries.npy", &npy_f32(data.nq, data.dim, &data.queries))?;
        write("truth.npy", &npy_truth(&data.truth, k))?;
        Ok(inputs)
    }

    /// A file in the dir (a script of [`SCRIPTS`], `queries.npy` or `truth.npy`).
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A fresh temp dir `<prefix><our pid>-<random>`, after removing those of earlier benches that
/// are gone (a Ctrl-C leaves them behind: the signal ends the bench before any destructor).
pub(super) fn temp_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let owner = name.to_str().and_then(|n| stale_owner(n, prefix));
            if owner.is_some_and(|pid| !quiver_testkit::process_alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir()
        .context("cannot create a temp dir")
}

/// The pid in a name [`temp_dir`] made with `prefix`.
fn stale_owner(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split_once('-')?.0.parse().ok()
}

/// How to call the driver on one server and collection.
pub(super) struct Driver {
    script: PathBuf,
    queries: PathBuf,
    truth: PathBuf,
    python: PathBuf,
    uri: String,
    collection: String,
    k: usize,
    metric: &'static str,
    ef: u32,
    nprobe: u32,
}

/// Search settings the driver sends with every call.
pub(super) struct DriverSearch {
    pub k: usize,
    pub metric: MetricType,
    pub ef: u32,
    pub nprobe: u32,
}

impl Driver {
    pub(super) fn new(
        python: PathBuf,
        uri: String,
        collection: &str,
        inputs: &PyInputs,
        search: DriverSearch,
    ) -> Driver {
        Driver {
            script: inputs.path("bench-pymilvus.py"),
            queries: inputs.path("queries.npy"),
            truth: inputs.path("truth.npy"),
            python,
            uri,
            collection: collection.to_string(),
            k: search.k,
            metric: metric_name(search.metric),
            ef: search.ef,
            nprobe: search.nprobe,
        }
    }

    /// Runs one configuration; fails when the driver cannot start or run at all (failed
    /// searches are counted in the output instead).
    pub(super) fn run(
        &self,
        threads: usize,
        filter: &str,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<DriverOutput> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .arg("--uri")
            .arg(&self.uri)
            .arg("--collection")
            .arg(&self.collection)
            .arg("--queries")
            .arg(&self.queries)
            .arg("--truth")
            .arg(&self.truth)
            .args(["--k", &self.k.to_string(), "--metric", self.metric])
            .args(["--ef", &self.ef.to_string(), "--nprobe", &self.nprobe.to_string()])
            .args(["--anns-field", "vector", "--consistency", "Eventually"])
            .args(["--filter", filter, "--threads", &threads.to_string()])
            .args(["--warmup", &warmup.as_secs_f64().to_string(), "--duration", &duration.as_secs_f64().to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        let started = Instant::now();
        let out = cmd.output().with_context(|| format!("cannot run {}", self.python.display()))?;
        if !out.status.success() {
            bail!(
                "the pymilvus driver failed ({}) after {:.1}s; stdout: {}",
                out.status,
                started.elapsed().as_secs_f64(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        DriverOutput::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Milvus' spelling of a metric.
pub(super) fn metric_name(m: MetricType) -> &'static str {
    match m {
        MetricType::L2 => "L2",
        MetricType::Ip => "IP",
        MetricType::Cosine => "COSINE",
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub(super) fn wait_listening(addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} (the Milvus gRPC API) after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn parses_the_driver_output() {
        let out =
            "warming up\n{\"threads\": 2, \"calls\": 1500, \"errors\": 1, \"first_error\": \"MilvusException: x\", \
                   \"qps\": 300.5, \"p50_us\": 1200.0, \"p90_us\": 1500.5, \"p99_us\": 2100.0, \"mean_us\": 1250.0, \
                   \"recall\": 0.9712, \"queries_seen\": 1000}\n\n";
        let d = DriverOutput::parse(out).unwrap();
        assert_eq!(d.threads, 2);
        assert_eq!(d.calls, 1500);
        assert_eq!(d.first_error.as_deref(), Some("MilvusException: x"));
        assert_eq!(d.p90_us, Some(1500.5));
        let r = d.into_load_result();
        assert_eq!((r.threads, r.calls, r.errors, r.queries_seen), (2, 1500, 1, 1000));
        assert!((r.p50_us - 1200.0).abs() < 1e-9 && (r.recall - 0.9712).abs() < 1e-9);
    }

    #[test]
    fn driver_output_without_successful_calls_has_nan_latencies() {
        let out = r#"{"threads": 1, "calls": 0, "errors": 1000, "first_error": "boom", "qps": 0.0,
                      "p50_us": null, "p90_us": null, "p99_us": null, "mean_us": null, "recall": null,
                      "queries_seen": 0}"#
            .replace('\n', " ");
        let r = DriverOutput::parse(&out).unwrap().into_load_result();
        assert!(r.p50_us.is_nan() && r.recall.is_nan());
        assert_eq!(r.errors, 1000);
    }

    #[test]
    fn rejects_missing_or_broken_driver_output() {
        assert!(DriverOutput::parse("  \n").is_err());
        assert!(DriverOutput::parse("Traceback (most recent call last):").is_err());
        assert!(DriverOutput::parse(r#"{"threads": 1}"#).is_err());
    }

    const METRICS: &str = r#"# TYPE quiver_milvus_request_seconds summary
quiver_milvus_request_seconds{method="Search",quantile="0.5"} 0.0004
quiver_milvus_request_seconds_sum{method="Search"} 1.5
quiver_milvus_request_seconds_count{method="Search"} 1000
quiver_milvus_request_seconds_sum{method="DescribeCollection"} 0.01
quiver_milvus_request_seconds_count{method="DescribeCollection"} 2
quiver_milvus_requests_total{method="Search",outcome="ok"} 1000
quiver_milvus_requests_total{method="DescribeCollection",outcome="ok"} 2
quiver_milvus_requests_total_extra 7
quiver_up 1
"#;

    #[test]
    fn reads_prometheus_samples() {
        let s = prom_series(METRICS, "quiver_milvus_request_seconds_sum");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0.get("method").map(String::as_str), Some("Search"));
        assert_eq!(prom_value(METRICS, "quiver_milvus_request_seconds_count", &[("method", "Search")]), 1000.0);
        // prefix of a longer name, quantile lines and absent metrics do not count
        assert_eq!(prom_value(METRICS, "quiver_milvus_requests_total", &[]), 1002.0);
        assert_eq!(prom_value(METRICS, "quiver_up", &[]), 1.0);
        assert_eq!(prom_value(METRICS, "absent", &[]), 0.0);
    }

    #[test]
    fn parses_escaped_label_values() {
        let l = parse_labels(r#"a="x\"y", b="back\\slash",c="""#);
        assert_eq!(l.get("a").map(String::as_str), Some("x\"y"));
        assert_eq!(l.get("b").map(String::as_str), Some("back\\slash"));
        assert_eq!(l.get("c").map(String::as_str), Some(""));
    }

    #[test]
    fn server_share_is_the_difference_of_two_scrapes() {
        let before = METRICS;
        let after = METRICS
            .replace("_sum{method=\"Search\"} 1.5", "_sum{method=\"Search\"} 2.0")
            .replace("_count{method=\"Search\"} 1000", "_count{method=\"Search\"} 2000")
            .replace("{method=\"Search\",outcome=\"ok\"} 1000", "{method=\"Search\",outcome=\"ok\"} 1998")
            .replace(
                "{method=\"DescribeCollection\",outcome=\"ok\"} 2",
                "{method=\"DescribeCollection\",outcome=\"ok\"} 5",
            )
            + "quiver_milvus_requests_total{method=\"Search\",outcome=\"error\"} 2\n";
        let m = Measured {
            histogram: "quiver_milvus_request_seconds",
            counter: Some("quiver_milvus_requests_total"),
            method: "Search",
            role: None,
        };
        let s = server_share(before, &after, m);
        assert_eq!(s.calls, 1000.0);
        assert!((s.mean_us - 500.0).abs() < 1e-6, "{}", s.mean_us);
        assert_eq!(s.errors, 2.0);
        assert_eq!(s.other.get("DescribeCollection"), Some(&3.0));
        assert!(!s.other.contains_key("Search"));
        // nothing happened: no mean
        assert!(server_share(before, before, m).mean_us.is_nan());
    }

    #[test]
    fn writes_npy_headers_numpy_can_read() {
        let f = npy_f32(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(&f[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([f[8], f[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "data must start 64-byte aligned");
        let header = std::str::from_utf8(&f[10..10 + hlen]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        assert_eq!(f.len(), 10 + hlen + 6 * 4);
        assert_eq!(&f[10 + hlen..10 + hlen + 4], &1.0f32.to_le_bytes());
    }

    #[test]
    fn truth_rows_are_cut_or_padded_to_k() {
        let f = npy_truth(&[vec![5, 6, 7], vec![9]], 2);
        let hlen = u16::from_le_bytes([f[8], f[9]]) as usize;
        let body: Vec<i64> = f[10 + hlen..].chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(body, vec![5, 6, 9, -1]);
        assert!(std::str::from_utf8(&f[10..10 + hlen]).unwrap().contains("'shape': (2, 2)"));
    }

    #[test]
    fn temp_dirs_name_their_owner() {
        assert_eq!(stale_owner("quiver-bench-py-1234-Ab9xQz", "quiver-bench-py-"), Some(1234));
        assert_eq!(stale_owner("quiver-bench-milvus-77-x", "quiver-bench-milvus-"), Some(77));
        // Other prefixes, and the Quiver child's dirs (quiver-bench-<pid>-<nanos>), are not ours.
        assert_eq!(stale_owner("quiver-bench-py-1234-x", "quiver-bench-milvus-"), None);
        assert_eq!(stale_owner("quiver-bench-9413-1796436617091133524", "quiver-bench-py-"), None);
        assert_eq!(stale_owner("quiver-bench-py-abc-x", "quiver-bench-py-"), None);
        assert_eq!(stale_owner("quiver-bench-py-", "quiver-bench-py-"), None);
        let dir = temp_dir("quiver-bench-unit-").unwrap();
        let name = dir.path().file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(stale_owner(&name, "quiver-bench-unit-"), Some(std::process::id()));
    }

    #[test]
    fn metric_names_are_milvus_spelling() {
        assert_eq!(metric_name(MetricType::Ip), "IP");
        assert_eq!(metric_name(MetricType::L2), "L2");
        assert_eq!(metric_name(MetricType::Cosine), "COSINE");
    }
}
