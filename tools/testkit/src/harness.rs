//! The integration tests' harness: real `quiver` and `nats-server` processes.
//!
//! Every test gets a [`Harness`]: its own temp dir (data dirs, NATS store, logs), its own
//! cluster name and free ports. Children write stdout and stderr to `<tempdir>/<name>.log`
//! (appended across restarts). When the harness is dropped every child is SIGKILLed; if the
//! test is failing (panicking) the tail of each log is printed first. Children also get
//! `PR_SET_PDEATHSIG`, so even a killed test runner leaves nothing behind.
//!
//! Tests are plain `#[test]` functions whose async body runs through [`run`], which applies a
//! hard time limit.
//!
//! Debugging aids (environment of the test run): `QUIVER_IT_KEEP=1` keeps the temp dir of a
//! failed test (`=all`: of every test); `QUIVER_IT_LOG` sets `RUST_LOG` of the quiver
//! processes (default `info`); `QUIVER_IT_DATASET` points at another copy of pypi-minilm.
//!
//! Like `assert!`, everything here fails the calling test with a message (a panic) rather than
//! returning errors: hence the lints allowed below, which hold for the product and the
//! benchmarks, not for test support.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use quiver_client::{Client, ClientError, ClusterStatus, ConnectOptions, Role};

use crate::process::{free_port, Proc};

/// How long a node may take to come up and report healthy.
pub const READY: Duration = Duration::from_secs(30);

/// The servers of a comma-separated NATS URL list.
fn nats_servers(urls: &str) -> Vec<String> {
    urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect()
}

/// Runs an async test body on a fresh tokio runtime; fails the test if it takes longer than
/// `limit`. The body stays alive while the failure unwinds, so harness logs get printed.
pub fn run<F: Future<Output = ()>>(limit: Duration, body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let start = Instant::now();
    rt.block_on(async move {
        let mut body = std::pin::pin!(body);
        if tokio::time::timeout(limit, body.as_mut()).await.is_err() {
            panic!("test did not finish within its time limit of {limit:?}");
        }
    });
    let name = std::thread::current().name().unwrap_or("test").to_string();
    eprintln!("{name}: passed in {:.1?}", start.elapsed());
}

/// Waits until something accepts connections on `127.0.0.1:port`, failing early if `proc`
/// (the process that should listen, or its parent) exits.
pub fn wait_for_port(proc: &mut Proc, port: u16, limit: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(proc.is_running(), "{} exited before listening on port {port}", proc.name);
        assert!(start.elapsed() < limit, "nothing listens on port {port} after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

/// The processes of one test, in one temp dir, under one cluster name.
pub struct Harness {
    pub dir: tempfile::TempDir,
    /// The `quiver` binary the harness runs.
    pub quiver: PathBuf,
    /// Cluster name (unique per test).
    pub cluster: String,
    /// Port of the NATS server (embedded in standalone, or the external one).
    pub nats_port: u16,
    /// How [`Harness::client`] connects (TLS, credentials). With security on, the cluster's
    /// generated admin credentials are used unless these name others.
    pub client_options: ConnectOptions,
    /// Client ports of the other servers of a NATS cluster ([`Harness::start_nats_cluster`]).
    pub more_nats_ports: Vec<u16>,
    /// The address the nats-server listens on and nodes connect to (`127.0.0.1`; a bridge's
    /// address when nodes run on [`crate::netns::Hosts`]).
    pub nats_host: String,
    /// Lines added to the nats-server configuration of [`Harness::start_nats`].
    pub nats_extra_conf: String,
    procs: Vec<Proc>,
}

impl Harness {
    /// An empty harness running the binary `quiver`: temp dir, cluster name and NATS port
    /// chosen, nothing started.
    pub fn new(quiver: &Path, test: &str) -> Harness {
        let dir = tempfile::Builder::new().prefix(&format!("quiver-it-{test}-")).tempdir().expect("tempdir");
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let cluster = format!("it_{test}_{}_{n}", std::process::id());
        Harness {
            dir,
            quiver: quiver.into(),
            cluster,
            nats_port: free_port().expect("free port"),
            client_options: ConnectOptions::default(),
            more_nats_ports: Vec::new(),
            nats_host: "127.0.0.1".into(),
            nats_extra_conf: String::new(),
            procs: Vec::new(),
        }
    }

    /// `quiver standalone` (every role, embedded nats-server on `nats_port`), with extra
    /// environment; returns once NATS accepts connections.
    pub fn standalone(quiver: &Path, test: &str, env: &[(&str, &str)]) -> Harness {
        let mut h = Harness::new(quiver, test);
        let mut all = h.quiver_env();
        all.push(("QUIVER_NATS__EMBEDDED_PORT".into(), h.nats_port.to_string()));
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let quiver = h.quiver.clone();
        h.add("standalone", &quiver, &["standalone"], all);
        let port = h.nats_port;
        wait_for_port(h.proc("standalone"), port, READY);
        h
    }

    /// Starts an external `nats-server` with JetStream (store in the temp dir) on `nats_port`,
    /// set up as `quiver standalone` sets up its own, since security is on by default: `quiver
    /// config nats-auth` generates the cluster's principals under the data dir (where the
    /// `quiver run` nodes, [`Harness::client`] and [`Harness::nats_as`] find them) and the
    /// authorization block the server enforces.
    pub fn start_nats(&mut self) {
        let conf = format!("{}\n{}\n", self.nats_auth(), self.nats_extra_conf);
        let conf_path = self.dir.path().join("nats-server.conf");
        std::fs::write(&conf_path, conf).expect("write the nats-server configuration");
        let store = self.dir.path().join("nats-store");
        let args = [
            "-c",
            &conf_path.display().to_string(),
            "-js",
            "-sd",
            &store.display().to_string(),
            "-a",
            // Loopback alone, unless nodes on other (namespace) hosts must reach it.
            if self.nats_host == "127.0.0.1" { "127.0.0.1" } else { "0.0.0.0" },
            "-p",
            &self.nats_port.to_string(),
        ];
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.add("nats", Path::new("nats-server"), &args, Vec::new());
        let port = self.nats_port;
        wait_for_port(self.proc("nats"), port, READY);
    }

    /// The cluster's principals (generated under the data dir by `quiver config nats-auth`) and
    /// the nats-server authorization block that enforces them.
    fn nats_auth(&self) -> String {
        let env = self.quiver_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, conf, stderr) = quiver_cli(&self.quiver, &["config", "nats-auth"], &env, self.dir.path());
        assert!(status.success(), "quiver config nats-auth: {status}\n{stderr}");
        conf
    }

    /// Starts a NATS cluster of `n` servers (processes `nats0`, `nats1`, …; routes between all,
    /// JetStream on each with its own store, the cluster's authorization) on `nats_port` and
    /// `more_nats_ports`; [`Harness::url`] then lists every server. Returns once each accepts
    /// connections. A killed server restarted with `proc("natsI").restart()` keeps its store
    /// and rejoins.
    pub fn start_nats_cluster(&mut self, n: usize) {
        let auth = self.nats_auth();
        self.more_nats_ports = (1..n).map(|_| free_port().expect("free port")).collect();
        let ports: Vec<u16> = std::iter::once(self.nats_port).chain(self.more_nats_ports.iter().copied()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port().expect("free port")).collect();
        for i in 0..n {
            let store = self.dir.path().join(format!("nats-store-{i}"));
            let others: Vec<String> =
                (0..n).filter(|j| *j != i).map(|j| format!("nats-route://127.0.0.1:{}", routes[j])).collect();
            let conf = format!(
                "{auth}\nserver_name: nats{i}\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: {store:?} }}\n\
                 cluster {{ name: {name:?}, listen: 127.0.0.1:{route}, routes: [{others}] }}\n",
                port = ports[i],
                store = store.display().to_string(),
                name = self.cluster,
                route = routes[i],
                others = others.join(", "),
            );
            let conf_path = self.dir.path().join(format!("nats-server-{i}.conf"));
            std::fs::write(&conf_path, conf).expect("write a nats-server configuration");
            self.add(
                &format!("nats{i}"),
                Path::new("nats-server"),
                &["-c", &conf_path.display().to_string()],
                Vec::new(),
            );
        }
        for (i, port) in ports.iter().enumerate() {
            wait_for_port(self.proc(&format!("nats{i}")), *port, READY);
        }
    }

    /// Starts `quiver run --role ...` as node `node_id` of this cluster (external NATS).
    pub fn start_node(&mut self, node_id: &str, roles: &[&str], env: &[(&str, &str)]) {
        self.start_node_on(None, node_id, roles, env);
    }

    /// [`Harness::start_node`] inside network namespace `netns` (a host of
    /// [`crate::netns::Hosts`]) when given: `ip netns exec <netns> quiver run ...`.
    pub fn start_node_on(&mut self, netns: Option<&str>, node_id: &str, roles: &[&str], env: &[(&str, &str)]) {
        let mut all = self.quiver_env();
        all.push(("QUIVER_NATS__URL".into(), self.url()));
        all.push(("QUIVER_NODE__ID".into(), node_id.into()));
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut args = vec!["run".to_string()];
        for r in roles {
            args.push("--role".into());
            args.push(r.to_string());
        }
        let quiver = self.quiver.clone();
        let Some(netns) = netns else {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            return self.add(node_id, &quiver, &args, all);
        };
        // `ip netns exec` enters the namespace and execs the program: the pid stays quiver's.
        let mut wrapped = vec!["netns".to_string(), "exec".into(), netns.into(), quiver.display().to_string()];
        wrapped.extend(args);
        let wrapped: Vec<&str> = wrapped.iter().map(String::as_str).collect();
        self.add(node_id, Path::new("ip"), &wrapped, all);
    }

    /// Starts any other `quiver` command (e.g. `host --id h1`) as process `name`, with the
    /// harness's environment, this cluster's external NATS (`QUIVER_NATS__URL`) and `env`.
    pub fn start_quiver(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) {
        let mut all = self.quiver_env();
        all.push(("QUIVER_NATS__URL".into(), self.url()));
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let quiver = self.quiver.clone();
        self.add(name, &quiver, args, all);
    }

    /// Starts a host agent, `quiver host --id <host_id>`, as process `name` (a restarted agent
    /// gets a new name and the same id); the node processes it starts inherit its environment.
    pub fn start_host(&mut self, name: &str, host_id: &str, env: &[(&str, &str)]) {
        self.start_quiver(name, &["host", "--id", host_id], env);
    }

    /// Starts an S3-compatible store (`s3rver`, see [`crate::s3`]) as process `s3`, objects
    /// under `<tempdir>/s3`, with bucket [`crate::s3::BUCKET`]; returns the `QUIVER_STORAGE__*`
    /// settings that put a cluster's objects in it (prefix: the cluster name). `proc("s3")`
    /// kills and restarts it; its objects stay.
    pub fn start_s3(&mut self) -> Vec<(String, String)> {
        let port = free_port().expect("free port");
        let dir = self.s3_dir();
        std::fs::create_dir_all(&dir).expect("s3 dir");
        let (dir, port_arg) = (dir.display().to_string(), port.to_string());
        let args = [
            "-d",
            &dir,
            "-a",
            "127.0.0.1",
            "-p",
            &port_arg,
            "--no-vhost-buckets",
            "--configure-bucket",
            crate::s3::BUCKET,
        ];
        self.add("s3", &crate::s3::s3rver_bin(), &args, Vec::new());
        wait_for_port(self.proc("s3"), port, READY);
        crate::s3::storage_env(port, crate::s3::BUCKET, &self.cluster, crate::s3::ACCESS_KEY)
    }

    /// Where the store [`Harness::start_s3`] started keeps its objects (s3rver's layout:
    /// `<bucket>/<key>._S3rver_object`).
    pub fn s3_dir(&self) -> PathBuf {
        self.dir.path().join("s3")
    }

    /// Environment every quiver process of this harness shares.
    fn quiver_env(&self) -> Vec<(String, String)> {
        vec![
            ("QUIVER_CLUSTER__NAME".into(), self.cluster.clone()),
            ("QUIVER_CLUSTER__DATA_DIR".into(), self.data_dir().display().to_string()),
            ("QUIVER_METRICS__LISTEN".into(), String::new()),
            // Tests run side by side: the Milvus gRPC API (default port 19530) stays off.
            ("QUIVER_PROXY__GRPC_PORT".into(), "0".into()),
            // Likewise the HTTP admin API (default port 19121); a test that uses it sets a free port.
            ("QUIVER_PROXY__HTTP_PORT".into(), "0".into()),
            // QUIVER_IT_LOG overrides the log filter of the quiver processes (debugging aid).
            ("RUST_LOG".into(), std::env::var("QUIVER_IT_LOG").unwrap_or_else(|_| "info".into())),
        ]
    }

    fn add(&mut self, name: &str, program: &Path, args: &[&str], env: Vec<(String, String)>) {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut p = Proc::new(name, program, args, env, log).without_quiver_env();
        p.spawn().unwrap_or_else(|e| panic!("{e}"));
        self.procs.push(p);
    }

    /// Starts another program of the test (`prometheus`, …) as process `name`, logging to
    /// `<dir>/<name>.log`, without the caller's `QUIVER_*` environment; stopped with the rest.
    pub fn start_program(&mut self, name: &str, program: &Path, args: &[&str]) {
        self.add(name, program, args, Vec::new());
    }

    /// The test's temp dir (logs, configuration files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The shared data dir of the cluster's quiver processes.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The NATS URL(s) of this cluster: every server of a NATS cluster, comma separated.
    pub fn url(&self) -> String {
        std::iter::once(self.nats_port)
            .chain(self.more_nats_ports.iter().copied())
            .map(|p| format!("nats://{}:{p}", self.nats_host))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A started process by name (`standalone`, `nats`, or a node id).
    pub fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name == name).unwrap_or_else(|| panic!("no process {name}"))
    }

    /// A credentials file the cluster generated (`security.enabled`): `admin` or `app`.
    pub fn credentials_file(&self, principal: &str) -> PathBuf {
        self.data_dir().join("credentials").join(format!("{principal}.credentials"))
    }

    /// A raw NATS connection as one of the cluster's principals: `node` (the nkey Quiver's own
    /// processes use: debug and fault-injection subjects, the DML streams, KV), `admin` or `app`
    /// (user and password, replies under `_INBOX.<user>` as the server permits). Without
    /// generated credentials (security off) an anonymous connection.
    pub async fn nats_as(&self, principal: &str) -> async_nats::Client {
        let dir = self.data_dir().join("credentials");
        let mut options = async_nats::ConnectOptions::new();
        if principal == "node" {
            let seed = dir.join("node.nk");
            if seed.exists() {
                let seed = std::fs::read_to_string(&seed).expect("read node.nk");
                options = options.nkey(seed.trim().to_string());
            }
        } else {
            let path = self.credentials_file(principal);
            if path.exists() {
                let text = std::fs::read_to_string(&path).expect("read credentials");
                let (user, password) = text.trim().split_once(':').expect("user:password");
                options = options
                    .user_and_password(user.into(), password.into())
                    .custom_inbox_prefix(format!("_INBOX.{user}"));
            }
        }
        options.connect(nats_servers(&self.url())).await.unwrap_or_else(|e| panic!("NATS connect as {principal}: {e}"))
    }

    /// A client of this cluster (20 s per call) with [`Harness::client_options`], as admin when
    /// the cluster generated credentials. Retries the connection for up to 15 s: a nats-server
    /// that is (re)starting may accept a TCP connection and then reset it.
    pub async fn client(&self) -> Client {
        let mut options = self.client_options.clone();
        let admin = self.credentials_file("admin");
        if options.user_password.is_none() && options.creds_file.is_none() && admin.exists() {
            options = options.credentials_file(&admin).expect("the cluster's admin credentials");
        }
        self.client_with(&options).await
    }

    /// A client of this cluster connecting with `options` (retries as [`Harness::client`]).
    pub async fn client_with(&self, options: &ConnectOptions) -> Client {
        let start = Instant::now();
        loop {
            let attempt =
                tokio::time::timeout(Duration::from_secs(5), Client::connect_with(&self.url(), &self.cluster, options))
                    .await;
            match attempt {
                Ok(Ok(c)) => return c.with_timeout(Duration::from_secs(20)),
                Ok(Err(e)) if start.elapsed() < Duration::from_secs(15) => {
                    eprintln!("connect to {} failed ({e}); retrying", self.url());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) if start.elapsed() < Duration::from_secs(15) => {}
                Ok(Err(e)) => panic!("connect: {e:?} (for {:?})", start.elapsed()),
                Err(_) => panic!("NATS connect timed out (for {:?})", start.elapsed()),
            }
        }
    }

    /// Pid of a running process by name.
    pub fn pid(&self, name: &str) -> u32 {
        let p = self.procs.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no process {name}"));
        p.pid().unwrap_or_else(|| panic!("{name} is not running"))
    }

    /// `(node id, pid)` of the five roles of the standalone process.
    pub fn standalone_nodes(&self) -> Vec<(String, u32)> {
        let pid = self.pid("standalone");
        Role::ALL.iter().map(|r| (format!("standalone-{}", r.as_str()), pid)).collect()
    }

    /// Polls `status` until every `(node id, pid)` is listed as healthy by that very process
    /// (so entries left by a killed incarnation do not count). Returns the status.
    pub async fn wait_ready(&self, client: &Client, nodes: &[(String, u32)], limit: Duration) -> ClusterStatus {
        let poll = client.clone().with_timeout(Duration::from_secs(3));
        let start = Instant::now();
        loop {
            let last = match poll.status().await {
                Ok(s) => {
                    let missing: Vec<&(String, u32)> = nodes
                        .iter()
                        .filter(|(id, pid)| !s.nodes.iter().any(|n| &n.node_id == id && n.pid == *pid && n.healthy))
                        .collect();
                    if missing.is_empty() {
                        return s;
                    }
                    format!("not yet ready: {missing:?}")
                }
                Err(e) => e.to_string(),
            };
            assert!(start.elapsed() < limit, "cluster not ready after {limit:?}: {last}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            eprintln!("==== test failed; cluster {} in {} ====", self.cluster, self.dir.path().display());
            for p in &self.procs {
                eprintln!("---- last lines of {} ({}) ----\n{}", p.name, p.log_path().display(), p.log_tail(60));
            }
        }
        // QUIVER_IT_KEEP=1 keeps the temp dir (logs, data) of failed tests, =all of every test.
        let keep = std::env::var("QUIVER_IT_KEEP").ok();
        if keep.as_deref() == Some("all") || (failed && keep.is_some()) {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("keeping {}", kept.keep().display());
        }
        for p in self.procs.iter_mut().rev() {
            p.kill();
        }
    }
}

/// Calls `f` until it succeeds; retries only errors the client calls retryable (Unavailable,
/// Timeout), for at most `limit`. Any other error fails the test at once.
pub async fn retry<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() && start.elapsed() < limit => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e:?} (after {:?})", start.elapsed()),
        }
    }
}

/// Polls `f` until it returns `Ok`, for at most `limit`; fails with the last `Err` text.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() < limit => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: still failing after {limit:?}: {e}"),
        }
    }
}

/// Runs the binary `quiver` to completion with `args` (QUIVER_* variables of the test process
/// removed); returns (exit status, stdout, stderr).
pub fn quiver_cli(quiver: &Path, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(quiver);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("QUIVER_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run quiver");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}
