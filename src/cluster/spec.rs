//! The cluster file (`quiver cluster … --config FILE`): TOML with unknown keys refused, checked
//! into a [`ClusterSpec`] with every path absolute. Relative paths in the file are relative to
//! the file's own directory, so the same file works from any working directory.
//!
//! Checking goes as far as loading each node's effective node configuration (the shared node
//! config file plus the environment the supervisor will give it) through
//! [`quiver_runtime::Config::load`], so a bad override fails here, naming the node and the key,
//! before anything is started.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use quiver_runtime::nats_server::SyncInterval;
use quiver_schemas::Role;
use serde::Deserialize;

/// Environment keys the cluster file itself decides for every node; `env` tables may not set them.
const RESERVED_ENV: [(&str, &str); 5] = [
    ("QUIVER_CLUSTER__NAME", "[cluster] name"),
    ("QUIVER_CLUSTER__DATA_DIR", "[cluster] data_dir"),
    ("QUIVER_NATS__URL", "[nats]"),
    ("QUIVER_NODE__ID", "the node's id"),
    ("QUIVER_NODE__HOST_AGENT", "[cluster] host_id"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    cluster: ClusterSection,
    #[serde(default)]
    nats: NatsSection,
    #[serde(default)]
    supervisor: SupervisorSection,
    #[serde(default, rename = "node")]
    nodes: Vec<NodeSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    /// Cluster name: every node's `cluster.name`.
    name: String,
    /// Shared data dir (object store, NATS store) and home of the cluster's logs and state.
    data_dir: PathBuf,
    /// Node configuration file every node loads; absent = the built-in defaults.
    config: Option<PathBuf>,
    /// Environment of every node (`QUIVER_<SECTION>__<KEY>` overrides, `RUST_LOG`, ...).
    #[serde(default)]
    env: BTreeMap<String, toml::Value>,
    /// Id of the supervisor's host agent (default `<name>-local`).
    host_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NatsSection {
    /// Start a nats-server with JetStream on 127.0.0.1 at this port (default 4222).
    port: Option<u16>,
    /// ... or use the NATS server(s) at this URL (comma separated) and start none.
    url: Option<String>,
    /// The nats-server binary to start.
    server_bin: Option<String>,
    /// How often the started nats-server fsyncs its JetStream store: "always" (default) or a
    /// duration; as `nats.sync_interval` of `quiver standalone`.
    sync_interval: Option<String>,
    /// How many nats-servers to start as one NATS cluster (1, 3 or 5; default 1), on client
    /// ports `port`, `port + 1`, …; with 3 or more the nodes keep 3 replicas of every stream.
    servers: Option<u16>,
    /// First cluster (route) port of the started servers, `route_port + i` for server `i`
    /// (default 6222); only with `servers` above 1.
    route_port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SupervisorSection {
    /// Delay before the first restart of a process that exited; doubles on each further exit.
    #[serde(with = "humantime_serde")]
    backoff_initial: Duration,
    /// Upper bound of the restart delay.
    #[serde(with = "humantime_serde")]
    backoff_max: Duration,
    /// A process that ran at least this long before exiting starts over at `backoff_initial`.
    #[serde(with = "humantime_serde")]
    backoff_reset_after: Duration,
    /// On `down`, how long processes get after SIGTERM before they are SIGKILLed.
    #[serde(with = "humantime_serde")]
    stop_grace: Duration,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        SupervisorSection {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            backoff_reset_after: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    id: String,
    #[serde(default)]
    roles: Vec<String>,
    /// Prometheus endpoint `host:port` of this node; absent or empty = off.
    metrics: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, toml::Value>,
}

/// A checked cluster file.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Absolute path of the cluster file.
    pub file: PathBuf,
    pub name: String,
    /// The id the supervisor serves as a host agent under (`[cluster] host_id`, default
    /// `<name>-local`): the scaler starts and stops nodes through it.
    pub host_id: String,
    /// Absolute shared data dir.
    pub data_dir: PathBuf,
    /// Absolute path of the node configuration file, if any.
    pub node_config: Option<PathBuf>,
    /// Environment of every node, before the node's own `env`.
    pub env: BTreeMap<String, String>,
    pub nats: NatsSpec,
    pub supervisor: SupervisorSpec,
    pub nodes: Vec<NodeSpec>,
}

/// Where the cluster's NATS comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum NatsSpec {
    /// The supervisor runs `servers` nats-servers with JetStream on `127.0.0.1:port` and the
    /// ports after it, routed to each other on `route_port` and after when more than one.
    Managed { port: u16, server_bin: String, sync_interval: SyncInterval, servers: u16, route_port: u16 },
    /// An existing NATS server (cluster).
    External { url: String },
}

/// Restart and stop timing of the cluster supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorSpec {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub backoff_reset_after: Duration,
    pub stop_grace: Duration,
}

/// One node process: `quiver run --role …` as node `id`.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    pub roles: Vec<Role>,
    /// `metrics.listen` of the node ("" = off).
    pub metrics: String,
    pub env: BTreeMap<String, String>,
}

impl NodeSpec {
    /// Role names, for display.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_string()).collect()
    }

    /// The id this node's role registers under (`<node id>-<role>`).
    pub fn registry_id(&self, role: Role) -> String {
        format!("{}-{}", self.id, role.as_str())
    }
}

impl ClusterSpec {
    /// Reads and checks a cluster file. Every error names the file and the offending key.
    pub fn load(path: &Path) -> anyhow::Result<ClusterSpec> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file = absolute(path)?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let parsed: ClusterFile =
            toml::from_str(&text).with_context(|| format!("{}: invalid cluster file", path.display()))?;
        let spec = ClusterSpec::check(parsed, file, &base).with_context(|| format!("{}", path.display()))?;
        spec.check_node_configs().with_context(|| format!("{}", path.display()))?;
        Ok(spec)
    }

    fn check(f: ClusterFile, file: PathBuf, base: &Path) -> anyhow::Result<ClusterSpec> {
        if !is_name(&f.cluster.name) {
            bail!("cluster.name: {:?} must be non-empty and use only letters, digits, '-' and '_'", f.cluster.name);
        }
        let host_id = f.cluster.host_id.unwrap_or_else(|| format!("{}-local", f.cluster.name));
        if !is_name(&host_id) {
            bail!("cluster.host_id: {host_id:?} must be non-empty and use only letters, digits, '-' and '_'");
        }
        if f.cluster.data_dir.as_os_str().is_empty() {
            bail!("cluster.data_dir: must not be empty");
        }
        let nats = match (f.nats.port, f.nats.url) {
            (Some(_), Some(_)) => {
                bail!("nats: set either `port` (start a nats-server) or `url` (use a running one), not both")
            }
            (None, Some(url)) => {
                if url.trim().is_empty() {
                    bail!("nats.url: must not be empty (or leave it out and set nats.port)");
                }
                if f.nats.server_bin.is_some() {
                    bail!("nats.server_bin: only used with nats.port (no nats-server is started for nats.url)");
                }
                if f.nats.sync_interval.is_some() {
                    bail!(
                        "nats.sync_interval: only used with nats.port; set `jetstream {{ sync_interval: always }}` \
                         in the configuration of the server at nats.url"
                    );
                }
                if f.nats.servers.is_some() || f.nats.route_port.is_some() {
                    bail!("nats.servers, nats.route_port: only used with nats.port (no nats-server is started for nats.url)");
                }
                NatsSpec::External { url }
            }
            (port, None) => {
                let port = port.unwrap_or(4222);
                if port == 0 {
                    bail!("nats.port: must be a fixed port (1-65535): the nodes are given its URL");
                }
                let sync_interval = SyncInterval::parse(f.nats.sync_interval.as_deref().unwrap_or("always"))?;
                let servers = f.nats.servers.unwrap_or(1);
                if ![1, 3, 5].contains(&servers) {
                    bail!(
                        "nats.servers: {servers}; start 1, 3 or 5 (a NATS cluster keeps working while a majority \
                         of its servers does)"
                    );
                }
                let route_port = f.nats.route_port.unwrap_or(6222);
                if servers == 1 && f.nats.route_port.is_some() {
                    bail!("nats.route_port: only used with nats.servers = 3 or 5");
                }
                if u32::from(port) + u32::from(servers) > 65_536 || u32::from(route_port) + u32::from(servers) > 65_536
                {
                    bail!("nats.port, nats.route_port: the {servers} servers' ports must stay below 65536");
                }
                let clients = port..port + servers;
                if servers > 1
                    && (route_port == 0
                        || clients.contains(&route_port)
                        || (route_port..route_port + servers).contains(&port))
                {
                    bail!("nats.route_port: {route_port} must be a fixed port whose {servers} ports do not overlap the client ports");
                }
                NatsSpec::Managed {
                    port,
                    server_bin: f.nats.server_bin.unwrap_or_else(|| "nats-server".into()),
                    sync_interval,
                    servers,
                    route_port,
                }
            }
        };
        let s = f.supervisor;
        if s.backoff_initial.is_zero() {
            bail!("supervisor.backoff_initial: must be greater than zero");
        }
        if s.backoff_initial > s.backoff_max {
            bail!("supervisor.backoff_initial: must not exceed supervisor.backoff_max");
        }
        let supervisor = SupervisorSpec {
            backoff_initial: s.backoff_initial,
            backoff_max: s.backoff_max,
            backoff_reset_after: s.backoff_reset_after,
            stop_grace: s.stop_grace,
        };
        let env = env_table("cluster.env", f.cluster.env)?;
        if f.nodes.is_empty() {
            bail!("node: no [[node]] tables; list the cluster's processes, each with an id and roles");
        }
        let mut nodes: Vec<NodeSpec> = Vec::with_capacity(f.nodes.len());
        for (i, n) in f.nodes.into_iter().enumerate() {
            let at = format!("node[{i}]");
            if !is_name(&n.id) {
                bail!("{at}.id: {:?} must be non-empty and use only letters, digits, '-' and '_'", n.id);
            }
            if let Some(j) = nodes.iter().position(|o| o.id == n.id) {
                bail!("{at}.id: {:?} is also the id of node[{j}]; node ids must be unique", n.id);
            }
            let at = format!("node {:?}", n.id);
            if n.roles.is_empty() {
                bail!(
                    "{at}: roles: missing or empty; list one or more of coordinator, proxy, datanode, \
                     indexnode, querynode"
                );
            }
            let mut roles = Vec::with_capacity(n.roles.len());
            for r in &n.roles {
                match Role::parse(r) {
                    Some(role) if roles.contains(&role) => bail!("{at}: roles: {r:?} listed twice"),
                    Some(role) => roles.push(role),
                    None => bail!(
                        "{at}: roles: unknown role {r:?}; use coordinator, proxy, datanode, indexnode or querynode"
                    ),
                }
            }
            let env = env_table(&format!("{at}: env"), n.env)?;
            nodes.push(NodeSpec { id: n.id, roles, metrics: n.metrics.unwrap_or_default(), env });
        }
        let with_role = |role: Role| nodes.iter().filter(|n| n.roles.contains(&role)).count();
        if with_role(Role::Coordinator) == 0 {
            bail!(
                "node: no node has the coordinator role; a cluster needs one (more are hot standbys: one acts, \
                 the others take over when it fails)"
            );
        }
        if with_role(Role::Proxy) == 0 {
            bail!("node: no node has the proxy role; clients (and `cluster up`) reach the cluster through a proxy");
        }
        Ok(ClusterSpec {
            file,
            name: f.cluster.name,
            host_id,
            data_dir: resolve(base, &f.cluster.data_dir),
            node_config: f.cluster.config.map(|c| resolve(base, &c)),
            env,
            nats,
            supervisor,
            nodes,
        })
    }

    /// Loads every node's effective configuration (as `quiver run` will) and checks that
    /// addresses which must differ between processes on one machine do.
    fn check_node_configs(&self) -> anyhow::Result<()> {
        if let Some(c) = &self.node_config {
            if !c.is_file() {
                bail!("cluster.config: {} is not a file", c.display());
            }
        }
        let mut metrics: HashMap<String, &str> = HashMap::new();
        let mut grpc: HashMap<String, &str> = HashMap::new();
        let mut http: HashMap<String, &str> = HashMap::new();
        let shared = self.shared_config()?;
        for node in &self.nodes {
            let config =
                quiver_runtime::Config::load(self.node_config.as_deref(), self.node_env(node)).with_context(|| {
                    format!(
                        "node {:?}: its node configuration (cluster.config, then [cluster] env, then its env) \
                         is invalid",
                        node.id
                    )
                })?;
            // The supervisor sets up NATS (credentials, TLS) from the cluster-wide settings.
            if config.security.enabled != shared.security.enabled
                || config.credentials_dir() != shared.credentials_dir()
            {
                bail!(
                    "node {:?}: [security] differs from the cluster's; set it for every node (cluster.config \
                     or [cluster] env), not in a node's env",
                    node.id
                );
            }
            let listen = &config.metrics.listen;
            if !listen.is_empty() && !listen.ends_with(":0") {
                if let Some(other) = metrics.insert(listen.clone(), &node.id) {
                    bail!(
                        "node {:?}: metrics: {listen} is also node {other:?}'s; give each node its own \
                         `metrics` address (or leave it out: no endpoint)",
                        node.id
                    );
                }
            }
            if node.roles.contains(&Role::Proxy) && config.proxy.grpc_port != 0 {
                let addr = format!("{}:{}", config.proxy.grpc_host, config.proxy.grpc_port);
                if let Some(other) = grpc.insert(addr.clone(), &node.id) {
                    bail!(
                        "node {:?}: the Milvus gRPC address {addr} is also node {other:?}'s; set \
                         QUIVER_PROXY__GRPC_PORT in the node's env (0 turns it off)",
                        node.id
                    );
                }
            }
            if node.roles.contains(&Role::Proxy) && config.proxy.http_port != 0 {
                let addr = format!("{}:{}", config.proxy.http_host, config.proxy.http_port);
                if let Some(other) = http.insert(addr.clone(), &node.id) {
                    bail!(
                        "node {:?}: the HTTP admin API address {addr} is also node {other:?}'s; set \
                         QUIVER_PROXY__HTTP_PORT in the node's env (0 turns it off)",
                        node.id
                    );
                }
            }
        }
        Ok(())
    }

    /// The configuration every node shares (cluster.config, then `[cluster] env`): what the
    /// supervisor sets its nats-server up from (`[security]`, `[tls]`), and how `cluster
    /// status` connects.
    pub fn shared_config(&self) -> anyhow::Result<quiver_runtime::Config> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("QUIVER_CLUSTER__NAME".into(), self.name.clone());
        env.insert("QUIVER_CLUSTER__DATA_DIR".into(), self.data_dir.display().to_string());
        env.insert("QUIVER_NATS__URL".into(), self.nats_url());
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        quiver_runtime::Config::load(self.node_config.as_deref(), env)
            .context("the cluster's node configuration (cluster.config, then [cluster] env) is invalid")
    }

    /// How clients of the cluster (`cluster status`) connect: as admin when security is on, over
    /// TLS with the cluster's CA when its nats-server uses TLS.
    pub fn client_options(&self) -> anyhow::Result<quiver_client::ConnectOptions> {
        let config = self.shared_config()?;
        let mut options = quiver_client::ConnectOptions::default();
        if config.security.enabled {
            let file = quiver_runtime::security::credentials_file(quiver_schemas::protocol::access::Principal::Admin);
            options = options.credentials_file(config.credentials_dir().join(file))?;
        }
        let tls = &config.tls;
        if !tls.nats_ca_file.as_os_str().is_empty() {
            options.ca_file = Some(tls.nats_ca_file.clone());
        }
        if !tls.nats_client_cert_file.as_os_str().is_empty() {
            options.client_cert = Some((tls.nats_client_cert_file.clone(), tls.nats_client_key_file.clone()));
        }
        options.require_tls = tls.nats_client_required();
        Ok(options)
    }

    /// The NATS URL the nodes (and the CLI) use.
    pub fn nats_url(&self) -> String {
        match &self.nats {
            NatsSpec::Managed { port, servers, .. } => {
                (*port..*port + servers).map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
            }
            NatsSpec::External { url } => url.clone(),
        }
    }

    /// The `QUIVER_*` environment of a node process: what the cluster file decides, then
    /// `[cluster] env`, then the node's `env` (later entries win).
    pub fn node_env(&self, node: &NodeSpec) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("QUIVER_CLUSTER__NAME".into(), self.name.clone());
        env.insert("QUIVER_CLUSTER__DATA_DIR".into(), self.data_dir.display().to_string());
        env.insert("QUIVER_NATS__URL".into(), self.nats_url());
        if let Some(replicas) = self.nats_replicas() {
            env.insert("QUIVER_NATS__REPLICAS".into(), replicas.to_string());
        }
        env.insert("QUIVER_NODE__ID".into(), node.id.clone());
        env.insert("QUIVER_NODE__HOST_AGENT".into(), self.host_id.clone());
        env.insert("QUIVER_METRICS__LISTEN".into(), node.metrics.clone());
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(node.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.into_iter().collect()
    }

    /// The environment of a node the scaler starts through the supervisor's host agent, before
    /// the agent adds the node's id, host agent, metrics and gRPC port: what the cluster file
    /// decides, then `[cluster] env`.
    pub fn scaled_node_env(&self) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("QUIVER_CLUSTER__NAME".into(), self.name.clone());
        env.insert("QUIVER_CLUSTER__DATA_DIR".into(), self.data_dir.display().to_string());
        env.insert("QUIVER_NATS__URL".into(), self.nats_url());
        if let Some(replicas) = self.nats_replicas() {
            env.insert("QUIVER_NATS__REPLICAS".into(), replicas.to_string());
        }
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.into_iter().collect()
    }

    /// Stream and KV replicas on a managed NATS cluster (3); `None`: the node default.
    fn nats_replicas(&self) -> Option<u16> {
        match self.nats {
            NatsSpec::Managed { servers, .. } if servers > 1 => Some(3),
            _ => None,
        }
    }

    /// `run [--config FILE]`: the arguments of a node the scaler starts, before its role.
    pub fn scaled_node_args(&self) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        if let Some(c) = &self.node_config {
            args.push("--config".into());
            args.push(c.display().to_string());
        }
        args
    }

    /// How the supervisor restarts processes (`[supervisor]`).
    pub fn restart_policy(&self) -> crate::process::RestartPolicy {
        crate::process::RestartPolicy {
            backoff_initial: self.supervisor.backoff_initial,
            backoff_max: self.supervisor.backoff_max,
            backoff_reset_after: self.supervisor.backoff_reset_after,
        }
    }

    /// Arguments of a node process after the binary.
    pub fn node_args(&self, node: &NodeSpec) -> Vec<String> {
        let mut args = self.scaled_node_args();
        for r in &node.roles {
            args.push("--role".into());
            args.push(r.as_str().into());
        }
        args
    }

    /// `<data_dir>/logs`: one log per process, the supervisor's included.
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The log of a node (or of `nats-server`, `supervisor`).
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{name}.log"))
    }

    /// `<data_dir>/cluster`: the supervisor's lock and state file.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("cluster")
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state_dir().join("supervisor.lock")
    }

    /// JetStream store of the managed nats-server.
    pub fn nats_store(&self) -> PathBuf {
        self.data_dir.join("nats")
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks an `env` table: names are environment variable names, `QUIVER_` ones are config
/// overrides (`QUIVER_<SECTION>__<KEY>`) other than those the cluster file decides, values
/// are strings, numbers or booleans.
fn env_table(at: &str, table: BTreeMap<String, toml::Value>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            bail!("{at}.{key}: not an environment variable name");
        }
        if let Some(rest) = key.strip_prefix(quiver_runtime::config::ENV_PREFIX) {
            if !rest.contains("__") {
                bail!(
                    "{at}.{key}: not a config override; those are QUIVER_<SECTION>__<KEY>, \
                     e.g. QUIVER_PROXY__GRPC_PORT"
                );
            }
            if let Some((_, owner)) = RESERVED_ENV.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                bail!("{at}.{key}: set by the cluster file ({owner}); remove it from env");
            }
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!("{at}.{key}: must be a string, number or boolean, not {}", other.type_str()),
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// `path` made absolute against the working directory, `.` components dropped.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    Ok(resolve(&cwd, path))
}

/// `path` made absolute against `base`, with `.` and `..` resolved lexically (it may not
/// exist yet), as `filepath.Clean` does.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(path).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<ClusterSpec> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, text).unwrap();
        ClusterSpec::load(&path)
    }

    fn err(text: &str) -> String {
        format!("{:#}", load(text).unwrap_err())
    }

    const MINIMAL: &str = r#"
        [cluster]
        name = "t"
        data_dir = "./data"
        [[node]]
        id = "all"
        roles = ["coordinator", "proxy", "datanode", "indexnode", "querynode"]
    "#;

    #[test]
    fn minimal_file_gets_defaults() {
        let spec = load(MINIMAL).unwrap();
        assert_eq!(
            spec.nats,
            NatsSpec::Managed {
                port: 4222,
                server_bin: "nats-server".into(),
                sync_interval: SyncInterval::Always,
                servers: 1,
                route_port: 6222
            }
        );
        assert!(spec.data_dir.is_absolute() && spec.data_dir.ends_with("data"), "{:?}", spec.data_dir);
        assert!(!spec.data_dir.components().any(|c| c == Component::CurDir));
        assert_eq!(resolve(Path::new("/a/b"), Path::new("../c/./d")), PathBuf::from("/a/c/d"));
        assert_eq!(resolve(Path::new("/a"), Path::new("/x/../y")), PathBuf::from("/y"));
        assert_eq!(spec.supervisor.backoff_initial, Duration::from_secs(1));
        let env = spec.node_env(&spec.nodes[0]);
        assert!(env.contains(&("QUIVER_NODE__ID".into(), "all".into())));
        assert!(env.contains(&("QUIVER_METRICS__LISTEN".into(), String::new())));
        assert!(env.contains(&("QUIVER_NATS__URL".into(), "nats://127.0.0.1:4222".into())));
        assert_eq!(spec.host_id, "t-local");
        assert!(env.contains(&("QUIVER_NODE__HOST_AGENT".into(), "t-local".into())));
        assert!(!spec.scaled_node_env().iter().any(|(k, _)| k == "QUIVER_NODE__ID"));
        assert_eq!(spec.node_args(&spec.nodes[0]).iter().filter(|a| *a == "--role").count(), 5);
    }

    #[test]
    fn the_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster.toml");
        let spec = ClusterSpec::load(&path).unwrap();
        assert_eq!(spec.nodes.iter().filter(|n| n.roles.contains(&Role::QueryNode)).count(), 3);
    }

    #[test]
    fn node_env_overrides_cluster_env() {
        let spec = load(&format!(
            "{MINIMAL}\n env = {{ QUIVER_PROXY__GRPC_PORT = 0, RUST_LOG = \"debug\" }}\n \
             [cluster.env]\n QUIVER_PROXY__GRPC_PORT = 19531\n RUST_LOG = \"info\"\n"
        ))
        .unwrap();
        let env = spec.node_env(&spec.nodes[0]);
        assert!(env.contains(&("QUIVER_PROXY__GRPC_PORT".into(), "0".into())), "{env:?}");
        assert!(env.contains(&("RUST_LOG".into(), "debug".into())), "{env:?}");
    }

    #[test]
    fn bad_files_name_the_key() {
        assert!(err("[cluster]\nname = \"t\"\ndata_dir = \"d\"\nbogus = 1\n").contains("bogus"));
        let no_roles = "[cluster]\nname = \"t\"\ndata_dir = \"d\"\n[[node]]\nid = \"a\"\n";
        assert!(err(no_roles).contains("roles"), "{}", err(no_roles));
        let dup = format!("{MINIMAL}\n[[node]]\nid = \"all\"\nroles = [\"querynode\"]\n");
        assert!(err(&dup).contains("node[1].id"), "{}", err(&dup));
        let two = format!("{MINIMAL}\n[nats]\nport = 4333\nurl = \"nats://h:4222\"\n");
        assert!(err(&two).contains("either `port`"), "{}", err(&two));
        let sync = format!("{MINIMAL}\n[nats]\nsync_interval = \"sometimes\"\n");
        assert!(err(&sync).contains("nats.sync_interval"), "{}", err(&sync));
        let reserved = MINIMAL.replace("roles = [", "env = { QUIVER_NODE__ID = \"x\" }\n roles = [");
        assert!(err(&reserved).contains("QUIVER_NODE__ID"), "{}", err(&reserved));
        let unknown_override = MINIMAL.replace("roles = [", "env = { QUIVER_PROXY__NO_SUCH = 1 }\n roles = [");
        assert!(err(&unknown_override).contains("no_such"), "{}", err(&unknown_override));
        let bad_host = MINIMAL.replace("data_dir", "host_id = \"a.b\"\n data_dir");
        assert!(err(&bad_host).contains("cluster.host_id"), "{}", err(&bad_host));
        let bad_role = MINIMAL.replace("\"querynode\"", "\"qnode\"");
        assert!(err(&bad_role).contains("qnode"));
        let no_proxy = MINIMAL.replace("\"proxy\", ", "");
        assert!(err(&no_proxy).contains("proxy"));
        let no_coordinator = MINIMAL.replace("\"coordinator\", ", "");
        assert!(err(&no_coordinator).contains("no node has the coordinator role"), "{}", err(&no_coordinator));
        // A second coordinator is a hot standby.
        let standby = format!("{MINIMAL}\n[[node]]\nid = \"standby\"\nroles = [\"coordinator\"]\n");
        assert_eq!(load(&standby).map(|s| s.nodes.len()).ok(), Some(2), "two coordinators");
        let metrics = format!(
            "{}\nmetrics = \"127.0.0.1:9200\"\n\
             [[node]]\nid = \"q\"\nroles = [\"querynode\"]\nmetrics = \"127.0.0.1:9200\"\n",
            MINIMAL.trim_end()
        );
        assert!(err(&metrics).contains("127.0.0.1:9200"), "{}", err(&metrics));
    }
}
