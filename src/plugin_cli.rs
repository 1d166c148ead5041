//! Plugin commands that run locally: `quiver ctl plugin validate FILE` and
//! `quiver plugin test FILE --inputs FILE`, plus the printers for `quiver ctl plugin list`.
//!
//! Recorded inputs are JSON Lines, one call per line, keyed by the call's name:
//! `{"route": RouteRequest}`, `{"place": {"view": ClusterView, "items": [PlacementItem]}}`,
//! `{"plan": {"view": ClusterView, "settings": BalanceSettings}}`,
//! `{"classify": {"nodes": [NodeRecord], "settings": DiscoverySettings}}`,
//! `{"recommend": {"window": [MetricSample], "current": ReplicaSize, "settings": AutoscaleSettings}}`
//! with the field names of the `quiver-policy` types. `quiver plugin sample KIND` prints some.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use quiver_policy::autoscaler::{AutoscaleSettings, MetricSample, ReplicaSize};
use quiver_policy::balancer::{BalanceSettings, ClusterView, PlacementItem};
use quiver_policy::discovery::{DiscoverySettings, NodeRecord};
use quiver_policy::router::RouteRequest;
use quiver_runtime::config::PluginsConfig;
use quiver_runtime::plugin::{
    ActiveChoice, AutoscalerSlot, BalancerSlot, CatalogListing, DiscoverySlot, Kind, PluginHost, PluginSource,
    RouterSlot,
};
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginLocal,
}

#[derive(Subcommand)]
enum PluginLocal {
    /// Run a plugin file against recorded inputs in the sandbox (deadline and memory cap as
    /// configured) and print each answer, or the failure, as JSON Lines.
    Test {
        file: PathBuf,
        /// JSON Lines of recorded calls (see `quiver plugin sample`).
        #[arg(long)]
        inputs: PathBuf,
        /// Also run this built-in policy on every input and report where the answers differ.
        #[arg(long)]
        compare: Option<String>,
        /// Configuration file for the sandbox settings ([plugins] call_timeout, memory_limit_mb).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print sample inputs of a kind (router, balancer, discovery, autoscaler) as JSON Lines.
    Sample { kind: String },
}

/// One recorded call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Route(RouteRequest),
    Place { view: ClusterView, items: Vec<PlacementItem> },
    Plan { view: ClusterView, settings: BalanceSettings },
    Classify { nodes: Vec<NodeRecord>, settings: DiscoverySettings },
    Recommend { window: Vec<MetricSample>, current: ReplicaSize, settings: AutoscaleSettings },
}

impl Call {
    fn kind(&self) -> Kind {
        match self {
            Call::Route(_) => Kind::Router,
            Call::Place { .. } | Call::Plan { .. } => Kind::Balancer,
            Call::Classify { .. } => Kind::Discovery,
            Call::Recommend { .. } => Kind::Autoscaler,
        }
    }
}

/// A slot of whichever kind the plugin file exports.
enum AnySlot {
    Router(RouterSlot),
    Balancer(BalancerSlot),
    Discovery(DiscoverySlot),
    Autoscaler(AutoscalerSlot),
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

impl AnySlot {
    /// Runs `call` in the sandbox: the answer as JSON, or the failure.
    fn run(&self, call: &Call) -> Result<serde_json::Value, String> {
        let fail = |f: quiver_runtime::plugin::PluginFailure| f.to_string();
        match (self, call) {
            (AnySlot::Router(s), Call::Route(r)) => s.try_route(r).map(|v| to_json(&v)).map_err(fail),
            (AnySlot::Balancer(s), Call::Place { view, items }) => {
                s.try_place(view, items).map(|v| to_json(&v)).map_err(fail)
            }
            (AnySlot::Balancer(s), Call::Plan { view, settings }) => {
                s.try_plan(view, settings).map(|v| to_json(&v)).map_err(fail)
            }
            (AnySlot::Discovery(s), Call::Classify { nodes, settings }) => {
                s.try_classify(nodes, settings).map(|v| to_json(&v)).map_err(fail)
            }
            (AnySlot::Autoscaler(s), Call::Recommend { window, current, settings }) => {
                s.try_recommend(window, current, settings).map(|v| to_json(&v)).map_err(fail)
            }
            _ => Err(format!("this input is for a {} plugin", call.kind().as_str())),
        }
    }
}

/// The same call answered by a built-in policy, natively.
fn run_builtin(name: &str, call: &Call) -> anyhow::Result<serde_json::Value> {
    use quiver_policy::builtin;
    let unknown = || anyhow::anyhow!("no built-in {} policy named {name:?}", call.kind().as_str());
    Ok(match call {
        Call::Route(r) => to_json(&builtin::router(name).ok_or_else(unknown)?.route(r)),
        Call::Place { view, items } => to_json(&builtin::balancer(name).ok_or_else(unknown)?.place(view, items)),
        Call::Plan { view, settings } => to_json(&builtin::balancer(name).ok_or_else(unknown)?.plan(view, settings)),
        Call::Classify { nodes, settings } => {
            to_json(&builtin::discovery(name).ok_or_else(unknown)?.classify(nodes, settings))
        }
        Call::Recommend { window, current, settings } => {
            to_json(&builtin::autoscaler(name).ok_or_else(unknown)?.recommend(window, current, settings))
        }
    })
}

fn host(config: Option<&Path>) -> anyhow::Result<Arc<PluginHost>> {
    let plugins = match config {
        Some(p) => quiver_runtime::Config::load(Some(p), std::env::vars())?.plugins,
        None => PluginsConfig::default(),
    };
    // Local runs always use the sandbox, whatever the config's engine says.
    let plugins = PluginsConfig { engine: "wasm".into(), ..plugins };
    Ok(Arc::new(PluginHost::new(&plugins)?))
}

fn read_plugin(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read plugin file {}", file.display()))
}

/// `quiver ctl plugin validate FILE`.
pub fn validate(file: &Path) -> anyhow::Result<i32> {
    let wasm = read_plugin(file)?;
    let host = host(None)?;
    let report = host.inspect(&wasm).map_err(|e| anyhow::anyhow!("{}: refused: {e}", file.display()))?;
    println!("{}: {} plugin, {} bytes, sha256 {}", file.display(), report.kind.as_str(), report.size, report.sha256);
    println!("  exports: {}", report.exports.join(", "));
    println!("  imports: {}", if report.imports.is_empty() { "none".into() } else { report.imports.join(", ") });
    println!("  self-test: {}", report.self_test);
    Ok(if report.self_test_passed { 0 } else { 1 })
}

/// `quiver plugin ...`.
pub fn run(args: PluginArgs) -> anyhow::Result<i32> {
    match args.command {
        PluginLocal::Sample { kind } => {
            let kind: Kind = kind.parse()?;
            for call in samples(kind) {
                println!("{}", serde_json::to_string(&call)?);
            }
            Ok(0)
        }
        PluginLocal::Test { file, inputs, compare, config } => {
            test(&file, &inputs, compare.as_deref(), config.as_deref())
        }
    }
}

fn test(file: &Path, inputs: &Path, compare: Option<&str>, config: Option<&Path>) -> anyhow::Result<i32> {
    let wasm = read_plugin(file)?;
    let host = host(config)?;
    let compiled = host.compile(&wasm).map_err(|e| anyhow::anyhow!("{}: refused: {e}", file.display()))?;
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").to_string();
    let source = PluginSource { name: name.clone(), ..PluginSource::builtin(&name) };
    let slot = match compiled.kind() {
        Kind::Router => {
            let s = RouterSlot::new(host.clone())?;
            s.activate_wasm(compiled, source)?;
            AnySlot::Router(s)
        }
        Kind::Balancer => {
            let s = BalancerSlot::new(host.clone())?;
            s.activate_wasm(compiled, source)?;
            AnySlot::Balancer(s)
        }
        Kind::Discovery => {
            let s = DiscoverySlot::new(host.clone())?;
            s.activate_wasm(compiled, source)?;
            AnySlot::Discovery(s)
        }
        Kind::Autoscaler => {
            let s = AutoscalerSlot::new(host.clone())?;
            s.activate_wasm(compiled, source)?;
            AnySlot::Autoscaler(s)
        }
    };
    let reader = std::io::BufReader::new(
        std::fs::File::open(inputs).with_context(|| format!("cannot read inputs {}", inputs.display()))?,
    );
    let (mut calls, mut failed, mut differ) = (0, 0, 0);
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let call: Call = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a recorded call", inputs.display(), n + 1))?;
        calls += 1;
        let started = Instant::now();
        let answer = slot.run(&call);
        let micros = started.elapsed().as_secs_f64() * 1e6;
        let mut out = serde_json::json!({ "line": n + 1, "micros": (micros * 10.0).round() / 10.0 });
        match &answer {
            Ok(v) => out["answer"] = v.clone(),
            Err(e) => {
                failed += 1;
                out["failure"] = e.clone().into();
            }
        }
        if let (Some(builtin), Ok(v)) = (compare, &answer) {
            let expected = run_builtin(builtin, &call)?;
            let same = &expected == v;
            out["same_as_builtin"] = same.into();
            if !same {
                differ += 1;
                out[builtin] = expected;
            }
        }
        println!("{out}");
    }
    let mut summary = format!("{calls} calls, {failed} failed");
    if let Some(b) = compare {
        summary.push_str(&format!(", {differ} answered differently from built-in {b}"));
    }
    eprintln!("{summary}");
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Sample inputs of a kind, for `quiver plugin sample`.
fn samples(kind: Kind) -> Vec<Call> {
    use quiver_runtime::plugin::samples;
    match kind {
        Kind::Router => samples::route_requests().into_iter().map(Call::Route).collect(),
        Kind::Balancer => {
            let (view, items) = samples::cluster_view();
            vec![
                Call::Place { view: view.clone(), items },
                Call::Plan { view, settings: quiver_policy::balancer::BalanceSettings::default() },
            ]
        }
        Kind::Discovery => {
            let (nodes, settings) = samples::node_records();
            vec![Call::Classify { nodes, settings }]
        }
        Kind::Autoscaler => samples::metrics_windows()
            .into_iter()
            .map(|(window, current, settings)| Call::Recommend { window, current, settings })
            .collect(),
    }
}

/// Prints `quiver ctl plugin list`.
pub fn print_listing(l: &CatalogListing) {
    println!("{:<11} {:<20} {:<9} {:<13} SINCE", "KIND", "ACTIVE", "VERSION", "SHA256");
    for a in &l.active {
        println!(
            "{:<11} {:<20} {:<9} {:<13} {}",
            a.kind.as_str(),
            a.name,
            a.version.to_string(),
            &a.sha256[..a.sha256.len().min(12)],
            if a.changed_at_ms == 0 {
                "(config default)".to_string()
            } else {
                format!("{} by {}", a.changed_at_ms, a.by)
            }
        );
    }
    println!();
    println!("{:<11} {:<20} {:<9} {:>9} SHA256", "KIND", "PLUGIN", "VERSION", "BYTES");
    for b in &l.builtins {
        println!(
            "{:<11} {:<20} {:<9} {:>9} {}",
            b.kind.as_str(),
            b.name,
            "builtin",
            b.size,
            &b.sha256[..b.sha256.len().min(12)]
        );
    }
    for v in &l.versions {
        println!(
            "{:<11} {:<20} {:<9} {:>9} {}",
            v.kind.as_str(),
            v.name,
            v.version,
            v.size,
            &v.sha256[..v.sha256.len().min(12)]
        );
    }
    println!();
    println!(
        "{:<28} {:<11} {:<24} {:>4} {:<7} {:>10} {:>9}  STATE",
        "NODE", "KIND", "RUNNING", "GEN", "ENGINE", "CALLS", "FALLBACKS"
    );
    for n in &l.nodes {
        for s in &n.slots {
            let state = if s.disabled {
                format!("SWITCHED OFF: {}", s.disabled_reason.clone().unwrap_or_default())
            } else if let Some(e) = &s.apply_error {
                format!("kept this version: {e}")
            } else {
                "ok".to_string()
            };
            println!(
                "{:<28} {:<11} {:<24} {:>4} {:<7} {:>10} {:>9}  {}",
                n.node_id,
                s.kind.as_str(),
                format!("{}@{}", s.name, s.version),
                s.generation,
                s.engine,
                s.calls,
                s.fallbacks,
                state
            );
        }
    }
}

/// Prints an activation or rollback answer.
pub fn print_choice(verb: &str, doc: &str) -> anyhow::Result<()> {
    let a: ActiveChoice = serde_json::from_str(doc).context("the coordinator sent a malformed answer")?;
    println!(
        "{verb} {} {}@{}; every proxy and coordinator switches within about a second (`quiver ctl plugin list`)",
        a.kind.as_str(),
        a.name,
        a.version
    );
    Ok(())
}
