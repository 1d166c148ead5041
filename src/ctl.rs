//! The command-line client: `quiver ctl …`, `quiver load`, `quiver search`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use quiver_client::schema;
use quiver_client::{Client, ConnectOptions, DataType, IndexParams, PrimaryKey, ScalarValue, SearchParams};

#[derive(Args, Clone)]
pub struct Conn {
    /// NATS URL of the cluster.
    #[arg(long, env = "QUIVER_URL", default_value = "nats://127.0.0.1:4222")]
    pub url: String,
    /// Cluster name.
    #[arg(long, env = "QUIVER_CLUSTER", default_value = "quiver")]
    pub cluster: String,
    /// Credentials file ("user:password") of the cluster: its `admin.credentials` (or
    /// `app.credentials`: data commands only). Default: `<data-dir>/credentials/admin.credentials`
    /// when that file exists, else none (a cluster with `security.enabled = false`).
    #[arg(long, env = "QUIVER_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// Data dir of the cluster (its `cluster.data_dir`), where the default credentials are
    /// looked for: `quiver standalone` run from the same directory keeps it in `quiver-data`.
    /// `QUIVER_SECURITY__CREDENTIALS_DIR` names the credentials directory itself.
    #[arg(long, env = "QUIVER_CLUSTER__DATA_DIR", default_value = "quiver-data")]
    pub data_dir: PathBuf,
    /// CA bundle (PEM) that signed the NATS server's certificate; the connection uses TLS.
    #[arg(long, env = "QUIVER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a NATS server that verifies clients (with --tls-key).
    #[arg(long, env = "QUIVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert.
    #[arg(long, env = "QUIVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl Conn {
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let mut options = ConnectOptions::default();
        let credentials = self.credentials_file();
        if let Some(path) = &credentials {
            options = options.credentials_file(path)?;
        }
        options.ca_file = self.tls_ca.clone();
        options.client_cert = self.tls_cert.clone().zip(self.tls_key.clone());
        let connected =
            tokio::time::timeout(Duration::from_secs(10), Client::connect_with(&self.url, &self.cluster, &options))
                .await
                .with_context(|| format!("no NATS server answered at {} within 10 s", self.url))?;
        match connected {
            Ok(client) => Ok(client),
            Err(e) if e.to_string().to_lowercase().contains("authorization violation") => {
                Err(anyhow::anyhow!("{e}: {}", self.refused_hint(credentials.as_deref())))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `--credentials`, else the cluster's admin credentials under the data dir if they exist.
    fn credentials_file(&self) -> Option<PathBuf> {
        self.credentials.clone().or_else(|| Some(self.default_credentials()).filter(|p| p.is_file()))
    }

    /// Where `admin.credentials` is looked for without `--credentials`.
    fn default_credentials(&self) -> PathBuf {
        let dir = std::env::var_os("QUIVER_SECURITY__CREDENTIALS_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.data_dir.join("credentials"));
        dir.join("admin.credentials")
    }

    /// What to do when the server refused the connection's credentials (or their absence).
    fn refused_hint(&self, used: Option<&std::path::Path>) -> String {
        match used {
            Some(path) => format!(
                "the server refused the credentials in {}: they belong to another cluster (or were \
                 regenerated); pass the right one with --credentials (QUIVER_CREDENTIALS)",
                path.display()
            ),
            None => format!(
                "the cluster requires credentials and there is none at {}: pass --credentials \
                 <data_dir>/credentials/admin.credentials of the cluster's server (QUIVER_CREDENTIALS), \
                 or --data-dir <its data dir> (QUIVER_CLUSTER__DATA_DIR)",
                self.default_credentials().display()
            ),
        }
    }
}

#[derive(Args)]
pub struct CtlArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Every node (role, host, lifecycle state, health, CPU, memory, segments, restarts, age),
    /// each role's wanted vs actual node count, the host agents, and what could not be read.
    Status {
        /// Print the cluster status as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Run N nodes of a role (proxy, datanode, indexnode, querynode; 1 ≤ N ≤
    /// scaling.max_replicas), and/or give its nodes a size (--cpu or --memory: they move
    /// together at scaling.memory_per_cpu_mb). The cluster converges on the last request
    /// (a resize is make-before-break); with --wait, shows progress until it has.
    Scale {
        role: String,
        #[arg(long, required_unless_present_any = ["cpu", "memory"])]
        replicas: Option<u32>,
        /// CPU cores of every node of the role ("2", "0.5").
        #[arg(long)]
        cpu: Option<f64>,
        /// Memory of every node of the role ("8GiB", "512MiB").
        #[arg(long, value_parser = parse_bytes)]
        memory: Option<u64>,
        /// Wait until the role serves N nodes of its size and nothing is starting or draining.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up (exit code 1) after this long ("90s", "10m").
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// The autoscaler: with no arguments, every role's size, bounds and metrics window;
    /// `history` lists its decisions; `ROLE --min-memory A --max-memory B` sets a role's bounds
    /// (min = max pins the size and turns autoscaling off for it), `ROLE --reset` goes back to
    /// the configured bounds.
    Autoscale {
        /// A role, or `history`.
        target: Option<String>,
        #[arg(long, value_parser = parse_bytes)]
        min_memory: Option<u64>,
        #[arg(long, value_parser = parse_bytes)]
        max_memory: Option<u64>,
        #[arg(long)]
        reset: bool,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Idling: whether the cluster's compute nodes are stopped for want of requests, the
    /// timeout in force, what keeps the cluster awake, the last wake's start-up time.
    Idling {
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recent segment hand-offs (sealedSegmentChangeInfo) and scaling steps, oldest first.
    Events {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drain one node (its id as `status` lists it): it takes no new work, hands off or
    /// finishes what it holds, and stops. With --wait, returns once it is gone.
    Drain {
        node: String,
        #[arg(long)]
        wait: bool,
    },
    /// List collections.
    Collections,
    /// Create a collection: Int64 key `id`, vector field `vector`, dynamic fields on.
    Create {
        name: String,
        #[arg(long)]
        dim: u32,
        #[arg(long, default_value_t = 0)]
        shards: u32,
    },
    /// Show a collection's schema, index and row count.
    Describe { name: String },
    /// Drop a collection and its data.
    Drop { name: String },
    /// Seal and persist everything inserted so far.
    Flush { name: String },
    /// Compact a collection now: merge small sealed segments, drop deleted rows. With --wait,
    /// returns once every plan is done (exit code 1 if one failed).
    Compact {
        name: String,
        #[arg(long)]
        wait: bool,
        /// Force merge: merge every segment of each shard, small or not, into segments of at
        /// most --target-rows rows (one per shard without it).
        #[arg(long)]
        force: bool,
        /// With --force: rows per merged segment at most (0 = no limit).
        #[arg(long, default_value_t = 0, requires = "force")]
        target_rows: u64,
        /// With --wait: give up (exit code 1) after this long.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Define the index of a collection (built for every sealed segment).
    Index(IndexArgs),
    /// Where each segment and shard of a collection is served.
    Segments { name: String },
    /// Serve a collection from query nodes, with N in-memory replicas on disjoint nodes (also
    /// changes the replica number of a loaded collection).
    Load {
        name: String,
        #[arg(long, default_value_t = 1)]
        replicas: u32,
    },
    /// Stop serving a collection from query nodes (inserts are still accepted).
    Release { name: String },
    /// A collection's replica groups: their query nodes and each shard's leader.
    Replicas { name: String },
    /// Policy plugins: list, validate, load, activate, roll back.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// The catalog, the active plugin of each kind and what every node runs.
    List {
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Check a plugin file locally (no cluster needed): kind, imports, exports, self-test.
    Validate { file: PathBuf },
    /// Validate a plugin file in the cluster and add it to the catalog as the next version of NAME.
    Load {
        /// router, balancer, discovery or autoscaler.
        kind: String,
        name: String,
        file: PathBuf,
    },
    /// Make NAME@VERSION the active plugin of its kind on every node (VERSION `builtin` for
    /// the bundled plugins, `native` for a built-in compiled into the binary, without sandbox).
    Activate {
        #[arg(value_name = "NAME@VERSION")]
        target: String,
    },
    /// Go back to the plugin that was active before the current one.
    Rollback { kind: String },
}

#[derive(Args, Clone)]
pub struct IndexArgs {
    pub name: String,
    /// FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ or HNSW.
    #[arg(long = "type", default_value = "HNSW")]
    pub index_type: String,
    /// L2, IP or COSINE.
    #[arg(long, default_value = "IP")]
    pub metric: String,
    #[arg(long, default_value_t = 0)]
    pub nlist: u32,
    /// PQ sub-quantizers or HNSW M.
    #[arg(long, default_value_t = 0)]
    pub m: u32,
    #[arg(long, default_value_t = 0)]
    pub nbits: u32,
    #[arg(long, default_value_t = 0)]
    pub ef_construction: u32,
}

pub fn parse_index(a: &IndexArgs) -> anyhow::Result<IndexParams> {
    Ok(IndexParams {
        nlist: a.nlist,
        m: a.m,
        nbits: a.nbits,
        ef_construction: a.ef_construction,
        ..schema::index_named(&a.index_type, &a.metric)?
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// A byte count as operators write it: `8GiB`, `512MiB`, `8G` (binary units: K, M, G, T with or
/// without `iB`), or plain bytes.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use B, KiB, MiB, GiB or TiB (e.g. 8GiB)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a size: write e.g. 8GiB or 512MiB"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

pub fn ctl(args: CtlArgs) -> anyhow::Result<i32> {
    if let CtlCommand::Plugin(PluginCommand::Validate { file }) = &args.command {
        return crate::plugin_cli::validate(file);
    }
    runtime()?.block_on(async move {
        let client = args.conn.connect().await?;
        match args.command {
            CtlCommand::Status { json } => crate::scale_cli::status(&client, json).await?,
            CtlCommand::Scale { role, replicas, cpu, memory, wait, timeout } => {
                let size = crate::scale_cli::size_arg(cpu, memory)?;
                let req = quiver_client::ScaleRequest { role, replicas: replicas.unwrap_or(0), size };
                return crate::scale_cli::scale(&client, &req, wait.then_some(timeout)).await;
            }
            CtlCommand::Idling { json } => crate::scale_cli::idling(&client, json).await?,
            CtlCommand::Autoscale { target, min_memory, max_memory, reset, json } => {
                crate::scale_cli::autoscale(&client, target, min_memory, max_memory, reset, json).await?
            }
            CtlCommand::Events { json } => crate::scale_cli::events(&client, json).await?,
            CtlCommand::Drain { node, wait } => {
                client.drain_node(&node).await?;
                println!("{node}: draining");
                if wait {
                    while client.status().await?.nodes.iter().any(|n| n.node_id == node) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    println!("{node}: stopped");
                }
            }
            CtlCommand::Collections => {
                for name in client.list_collections().await? {
                    println!("{name}");
                }
            }
            CtlCommand::Create { name, dim, shards } => {
                let mut s = schema::simple(&name, dim);
                s.num_shards = shards;
                client.create_collection(s).await?;
                println!("created {name}");
            }
            CtlCommand::Describe { name } => {
                let d = client.describe_collection(&name).await?;
                println!("collection {} (id {})", d.info.schema.name, d.info.id);
                println!(
                    "  shards: {}  sealed segments: {}  sealed rows: {}",
                    d.info.schema.num_shards, d.sealed_segments, d.num_rows
                );
                for f in &d.info.schema.fields {
                    let extra = match f.data_type {
                        DataType::FloatVector => format!(" dim={}", f.dim),
                        DataType::VarChar => format!(" max_length={}", f.max_length),
                        _ => String::new(),
                    };
                    let pk = if f.is_primary {
                        if f.auto_id {
                            " primary auto_id"
                        } else {
                            " primary"
                        }
                    } else {
                        ""
                    };
                    println!("  {:<20} {:?}{extra}{pk}", f.name, f.data_type);
                }
                match &d.info.index {
                    Some(i) => println!(
                        "  index: {:?} {:?} nlist={} m={} nbits={} efConstruction={}",
                        i.index_type, i.metric, i.nlist, i.m, i.nbits, i.ef_construction
                    ),
                    None => println!("  index: none (brute force)"),
                }
            }
            CtlCommand::Drop { name } => {
                client.drop_collection(&name).await?;
                println!("dropped {name}");
            }
            CtlCommand::Flush { name } => {
                let r = client.flush(&name).await?;
                println!("flushed {name}: {} new sealed segments {:?}", r.segments.len(), r.segments);
            }
            CtlCommand::Compact { name, wait, timeout, force, target_rows } => {
                let force = force.then_some(target_rows);
                return crate::compact_cli::compact(&client, &name, force, wait.then_some(timeout)).await;
            }
            CtlCommand::Index(a) => {
                client.create_index(&a.name, parse_index(&a)?).await?;
                println!("index defined on {}; sealed segments are being indexed", a.name);
            }
            CtlCommand::Segments { name } => {
                let d = client.distribution(&name).await?;
                println!("{:<8} {:<6} {:>9} {:>18} {:<9} NODES", "SEGMENT", "SHARD", "ROWS", "LOG RANGE", "STATE");
                for s in &d.segments {
                    let seg = &s.segment;
                    println!(
                        "{:<8} {:<6} {:>9} {:>18} {:<9} {}",
                        seg.id,
                        seg.shard,
                        seg.rows,
                        format!("{}..{}", seg.start_seq, seg.end_seq),
                        format!("{:?}", seg.state),
                        s.nodes.join(",")
                    );
                }
                for s in &d.shards {
                    println!(
                        "shard {} replica {} leader {} (growing after log position {})",
                        s.shard, s.replica, s.leader, s.sealed_seq
                    );
                }
            }
            CtlCommand::Load { name, replicas } => {
                client.load_collection(&name, replicas).await?;
                println!("{name}: loading with {replicas} replica(s); `quiver ctl replicas {name}` shows where");
            }
            CtlCommand::Release { name } => {
                client.release_collection(&name).await?;
                println!("{name}: released");
            }
            CtlCommand::Replicas { name } => {
                let d = client.distribution(&name).await?;
                if d.released {
                    println!("{name} is released (not served by query nodes)");
                }
                println!("{:<8} {:<6} {:<30} {:>9} NODES", "REPLICA", "SHARD", "LEADER", "SEGMENTS");
                for group in &d.replicas {
                    let mut shards: Vec<u32> = d.shards.iter().map(|s| s.shard).collect();
                    shards.dedup();
                    for shard in shards {
                        let leader = d.leaders_of(shard).find(|l| l.replica == group.id);
                        let held = d
                            .segments
                            .iter()
                            .filter(|s| s.segment.shard == shard && s.nodes.iter().any(|n| group.nodes.contains(n)))
                            .count();
                        println!(
                            "{:<8} {:<6} {:<30} {:>9} {}",
                            group.id,
                            shard,
                            leader.map_or("(none)", |l| l.leader.as_str()),
                            held,
                            group.nodes.join(",")
                        );
                    }
                }
            }
            CtlCommand::Plugin(command) => return plugin(&client, command).await,
        }
        Ok(0)
    })
}

async fn plugin(client: &Client, command: PluginCommand) -> anyhow::Result<i32> {
    use crate::plugin_cli::{print_choice, print_listing};
    match command {
        PluginCommand::List { json } => {
            let doc = client.plugin_list().await?;
            if json {
                println!("{doc}");
            } else {
                print_listing(&serde_json::from_str(&doc).context("the coordinator sent a malformed listing")?);
            }
        }
        // Normally dispatched before connecting (it needs no cluster); same thing here.
        PluginCommand::Validate { file } => return crate::plugin_cli::validate(&file),
        PluginCommand::Load { kind, name, file } => {
            let wasm = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let doc = client.plugin_load(&kind, &name, wasm).await?;
            let v: quiver_runtime::plugin::PluginVersion =
                serde_json::from_str(&doc).context("the coordinator sent a malformed answer")?;
            println!(
                "loaded {} {}@{} ({} bytes, sha256 {}); activate it with `quiver ctl plugin activate {}@{}`",
                v.kind.as_str(),
                v.name,
                v.version,
                v.size,
                &v.sha256[..v.sha256.len().min(12)],
                v.name,
                v.version
            );
        }
        PluginCommand::Activate { target } => {
            let Some((name, version)) = target.split_once('@') else {
                anyhow::bail!("expected NAME@VERSION (e.g. least-loaded@2 or rendezvous@builtin), got {target:?}");
            };
            print_choice("activated", &client.plugin_activate(name, version).await?)?;
        }
        PluginCommand::Rollback { kind } => print_choice("rolled back to", &client.plugin_rollback(&kind).await?)?,
    }
    Ok(0)
}

#[derive(Args)]
pub struct LoadArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    collection: String,
    /// .fvecs file of vectors; row numbers become primary keys.
    #[arg(long)]
    file: PathBuf,
    /// Optional TSV (`name<TAB>text` per row) stored in the dynamic fields `name` and `text`.
    #[arg(long)]
    tsv: Option<PathBuf>,
    #[arg(long, default_value_t = usize::MAX)]
    limit: usize,
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Flush when done (seal segments so they get indexed).
    #[arg(long)]
    flush: bool,
}

pub fn load(args: LoadArgs) -> anyhow::Result<i32> {
    let (dim, vectors) = quiver_client::fvecs::read_fvecs(&args.file, args.limit)?;
    let n = vectors.len() / dim;
    let texts: Vec<(String, String)> = match &args.tsv {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .lines()
            .take(n)
            .map(|l| {
                let (a, b) = l.split_once('\t').unwrap_or((l, ""));
                (a.to_string(), b.to_string())
            })
            .collect(),
        None => Vec::new(),
    };
    runtime()?.block_on(async move {
        let client = args.conn.connect().await?;
        if !client.list_collections().await?.contains(&args.collection) {
            client.create_collection(schema::simple(&args.collection, dim as u32)).await?;
            eprintln!("created collection {} (dim {dim})", args.collection);
        }
        let bar = indicatif::ProgressBar::new(n as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let started = Instant::now();
        let mut start = 0;
        while start < n {
            let end = (start + args.batch.max(1)).min(n);
            let mut rows = schema::rows(start as i64..end as i64, dim as u32, vectors[start * dim..end * dim].to_vec());
            if !texts.is_empty() {
                rows.dynamic = (start..end)
                    .map(|i| {
                        let (name, text) = texts.get(i).cloned().unwrap_or_default();
                        serde_json::json!({ "name": name, "text": text }).to_string()
                    })
                    .collect();
            }
            client.insert(&args.collection, rows).await?;
            bar.set_position(end as u64);
            start = end;
        }
        bar.finish();
        let secs = started.elapsed().as_secs_f64();
        eprintln!("inserted {n} rows in {secs:.1}s ({:.0} rows/s)", n as f64 / secs.max(1e-9));
        if args.flush {
            let r = client.flush(&args.collection).await?;
            eprintln!("flushed: sealed segments {:?}", r.segments);
        }
        Ok(0)
    })
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    collection: String,
    /// .fvecs file of query vectors.
    #[arg(long)]
    file: PathBuf,
    /// Number of queries to run (from the start of the file).
    #[arg(long, default_value_t = 1)]
    limit: usize,
    #[arg(short, long, default_value_t = 10)]
    k: u32,
    #[arg(long, default_value_t = 0)]
    nprobe: u32,
    #[arg(long, default_value_t = 0)]
    ef: u32,
    /// strong, bounded or eventually.
    #[arg(long, default_value = "bounded")]
    consistency: String,
    /// Output fields, comma separated (`*` for all).
    #[arg(long, default_value = "")]
    output: String,
    /// Ground truth (.ivecs) to report recall@k.
    #[arg(long)]
    groundtruth: Option<PathBuf>,
}

pub fn search(args: SearchArgs) -> anyhow::Result<i32> {
    let (dim, queries) = quiver_client::fvecs::read_fvecs(&args.file, args.limit)?;
    let nq = queries.len() / dim;
    let truth = match &args.groundtruth {
        Some(p) => Some(quiver_client::fvecs::read_ivecs(p, nq)?),
        None => None,
    };
    let consistency = schema::consistency_named(&args.consistency)?;
    let output: Vec<String> = args.output.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
    runtime()?.block_on(async move {
        let client = args.conn.connect().await?;
        let mut hits_total = 0usize;
        let mut latencies = Vec::with_capacity(nq);
        for q in 0..nq {
            let mut req =
                schema::search(&args.collection, dim as u32, queries[q * dim..(q + 1) * dim].to_vec(), args.k);
            req.params = SearchParams { nprobe: args.nprobe, ef: args.ef };
            req.consistency = consistency;
            req.output_fields = output.clone();
            let t = Instant::now();
            let res = client.search(&req).await?;
            latencies.push(t.elapsed());
            let hits = res.results.into_iter().next().unwrap_or_default();
            if let Some((tdim, ids)) = &truth {
                let gt: std::collections::HashSet<i64> =
                    ids[q * tdim..q * tdim + (args.k as usize).min(*tdim)].iter().map(|v| i64::from(*v)).collect();
                hits_total += hits.pks.iter().filter(|p| matches!(p, PrimaryKey::Int64(v) if gt.contains(v))).count();
            }
            if nq <= 5 {
                println!("query {q}:");
                for (i, (pk, score)) in hits.pks.iter().zip(&hits.scores).enumerate() {
                    let fields: Vec<String> =
                        hits.columns.iter().map(|c| format!("{}={}", c.name, show(c.values.get(i)))).collect();
                    let key = match pk {
                        PrimaryKey::Int64(v) => v.to_string(),
                        PrimaryKey::VarChar(s) => s.clone(),
                    };
                    println!("  {key:>8}  {score:>9.4}  {}", fields.join("  "));
                }
            }
        }
        latencies.sort();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        eprintln!("{nq} queries: p50 {:?}, p99 {:?}", pct(0.5), pct(0.99));
        if truth.is_some() {
            println!("recall@{}: {:.4}", args.k, hits_total as f64 / (nq * args.k as usize).max(1) as f64);
        }
        Ok(0)
    })
}

fn show(v: Option<&ScalarValue>) -> String {
    match v {
        None | Some(ScalarValue::Null) => "null".into(),
        Some(ScalarValue::Bool(b)) => b.to_string(),
        Some(ScalarValue::Int64(i)) => i.to_string(),
        Some(ScalarValue::Float(f)) => f.to_string(),
        Some(ScalarValue::Double(f)) => f.to_string(),
        Some(ScalarValue::VarChar(s)) | Some(ScalarValue::Json(s)) => s.clone(),
    }
}
