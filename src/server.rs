//! Running node processes: `quiver standalone` and `quiver run`.

use std::path::Path;

use anyhow::{bail, Context};
use quiver_actors::vector::{self, SimdChoice};
use quiver_runtime::nats_server::{EmbeddedNats, SyncInterval};
use quiver_runtime::{security, telemetry, trace, Config, Shared, Supervisor};
use quiver_schemas::Role;

/// All roles in one process; starts nats-server unless `nats.url` is set.
pub fn standalone(config: Option<&Path>, log_filter: &str) -> anyhow::Result<i32> {
    let config = Config::load(config, std::env::vars())?;
    serve(config, Role::ALL.to_vec(), true, log_filter)
}

/// Chosen roles as one node of a cluster.
pub fn run(config: Option<&Path>, roles: &[String], log_filter: &str) -> anyhow::Result<i32> {
    let config = Config::load(config, std::env::vars())?;
    let mut parsed = Vec::new();
    for r in roles {
        match Role::parse(r) {
            Some(role) if !parsed.contains(&role) => parsed.push(role),
            Some(_) => bail!("role {r:?} given twice"),
            None => bail!("unknown role {r:?}: use coordinator, proxy, datanode, indexnode or querynode"),
        }
    }
    if config.nats.url.is_empty() {
        bail!("`quiver run` needs nats.url (or QUIVER_NATS__URL): the nodes of a cluster share one NATS");
    }
    serve(config, parsed, false, log_filter)
}

/// `quiver config nats-auth`: the credentials (generated once) and the nats-server
/// configuration that enforces them, for a NATS server Quiver does not start itself.
pub fn nats_auth(config: Option<&Path>) -> anyhow::Result<i32> {
    let config = Config::load(config, std::env::vars())?;
    if !config.security.enabled {
        bail!("security.enabled is false: there are no principals to set up (the NATS server needs no authorization)");
    }
    let conf = security::nats_server_conf(&config)?;
    let dir = config.credentials_dir();
    eprintln!(
        "credentials in {}: give node.nk to every node (security.credentials_dir), admin.credentials to \
         operators, app.credentials to applications",
        std::path::absolute(&dir).unwrap_or(dir).display()
    );
    print!("{conf}");
    Ok(0)
}

fn node_base(config: &Config, standalone: bool) -> String {
    if !config.node.id.is_empty() {
        config.node.id.clone()
    } else if standalone {
        "standalone".into()
    } else {
        format!("{}-{}", telemetry::hostname(), std::process::id())
    }
}

fn serve(config: Config, roles: Vec<Role>, standalone: bool, log_filter: &str) -> anyhow::Result<i32> {
    let base = node_base(&config, standalone);
    let spans = trace::Exporter::start(&config.tracing, &config.cluster.name, &base)?;
    trace::init(log_filter, spans.as_ref());
    if !config.tracing.endpoint.is_empty() {
        tracing::info!(endpoint = %config.tracing.endpoint, sampling_ratio = config.tracing.sampling_ratio, "tracing on: spans go to the OTLP collector");
    }
    // Before anything runs faiss: a level this CPU lacks stops here, never as SIGILL later.
    let simd = config
        .node
        .faiss_simd
        .parse::<SimdChoice>()
        .map_err(anyhow::Error::from)
        .and_then(|choice| Ok(vector::select_simd(choice)?))
        .with_context(|| format!("node.faiss_simd = {:?}", config.node.faiss_simd))?;
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.node.io_threads())
        .thread_name("quiver-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let _io_guard = io.enter();
    if let Some(addr) = telemetry::install_prometheus(&config.metrics.listen)? {
        tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    }
    quiver_runtime::disk::create_dir_all(&config.cluster.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.cluster.data_dir.display()))?;
    warn_if_exposed(&config, &roles);
    let embedded = if standalone && config.nats.url.is_empty() {
        let store = config.cluster.data_dir.join("nats");
        let sync = SyncInterval::parse(&config.nats.sync_interval)?;
        // Credentials are generated (first start) before the server and the roles need them.
        let extra = security::nats_server_conf(&config)?;
        let nats = io.block_on(EmbeddedNats::start_with(
            &config.nats.server_bin,
            config.nats.embedded_port,
            &store,
            sync,
            extra,
        ))?;
        tracing::info!(url = nats.url(), "embedded nats-server started");
        Some(nats)
    } else {
        None
    };
    let url = embedded.as_ref().map(|n| n.url().to_string()).unwrap_or_else(|| config.nats.url.clone());
    let supervisor_cfg = config.supervisor.clone();
    let drain_timeout = config.node.drain_timeout;
    let cluster = config.cluster.name.clone();
    let shared = io.block_on(Shared::connect(config, &url, &format!("quiver-{base}")))?;
    let specs = roles.iter().map(|r| quiver_actors::role_spec(*r, format!("{base}-{}", r.as_str()))).collect();
    let signals = io.spawn(shutdown_signal());
    tracing::info!(cluster = %cluster, nats = %url, faiss_simd = %simd, brute_force = vector::brute_force_kernels(), roles = ?roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(), "Quiver starting");
    let system = actix::System::new();
    let code = system.block_on(async move {
        let mut supervisor = Supervisor::start(specs, shared, supervisor_cfg);
        let mut signals = std::pin::pin!(signals);
        let signalled = tokio::select! {
            ready = supervisor.ready() => {
                if ready {
                    tracing::info!("Quiver ready: every role serves");
                }
                false
            }
            _ = &mut signals => true,
        };
        let stop = async move {
            if !signalled {
                let _ = signals.await;
            }
        };
        tokio::select! {
            _ = stop => {
                // SIGTERM / SIGINT: drain (proxies, then workers, then the coordinator), each
                // phase bounded by node.drain_timeout; a second signal is not waited for.
                tracing::info!(?drain_timeout, "draining, then stopping");
                supervisor.drain(drain_timeout).await;
                0
            }
            code = supervisor.exited() => {
                supervisor.shutdown().await;
                code
            }
        }
    });
    if let Some(nats) = embedded {
        io.block_on(nats.stop());
    }
    tracing::info!(code, "Quiver stopped");
    // The last spans go out before the process exits.
    drop(spans);
    Ok(code)
}

/// A loud warning when the Milvus gRPC API or the HTTP admin API listens beyond this machine
/// while anyone may call it: whoever reaches the port could read, change or drop every
/// collection, or scale the cluster.
fn warn_if_exposed(config: &Config, roles: &[Role]) {
    if !config.security.enabled {
        tracing::warn!(
            "security.enabled = false: NATS and the Milvus gRPC API accept anyone who can reach them \
             (for a trusted network only; docs/security.md)"
        );
    }
    let grpc = roles.contains(&Role::Proxy) && config.proxy.grpc_port != 0;
    if grpc && !security::is_loopback(&config.proxy.grpc_host) && security::unauthenticated(config) {
        tracing::warn!(
            addr = %format!("{}:{}", config.proxy.grpc_host, config.proxy.grpc_port),
            "THE MILVUS gRPC API LISTENS ON A NON-LOOPBACK ADDRESS WITHOUT AUTHENTICATION: anyone who \
             reaches it can read, change and drop every collection. Set security.enabled = true (or \
             proxy.credentials), or proxy.grpc_host = \"127.0.0.1\" (docs/security.md)"
        );
    }
    if grpc && !security::is_loopback(&config.proxy.grpc_host) && !config.tls.grpc_enabled() {
        tracing::warn!(
            "the Milvus gRPC API listens on a non-loopback address without TLS: credentials and data \
             cross the network in clear text (set tls.grpc_cert_file and tls.grpc_key_file)"
        );
    }
    let http = roles.contains(&Role::Proxy) && config.proxy.http_port != 0;
    if http && !security::is_loopback(&config.proxy.http_host) && security::unauthenticated(config) {
        tracing::warn!(
            addr = %format!("{}:{}", config.proxy.http_host, config.proxy.http_port),
            "THE HTTP ADMIN API LISTENS ON A NON-LOOPBACK ADDRESS WITHOUT AUTHENTICATION: anyone who \
             reaches it can scale the cluster. Set security.enabled = true (or proxy.credentials), or \
             proxy.http_host = \"127.0.0.1\" (docs/security.md)"
        );
    }
    if http && !security::is_loopback(&config.proxy.http_host) && !config.tls.grpc_enabled() {
        tracing::warn!(
            "the HTTP admin API listens on a non-loopback address without TLS: credentials cross the \
             network in clear text (set tls.grpc_cert_file and tls.grpc_key_file: it then serves HTTPS)"
        );
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
