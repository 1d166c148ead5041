//! [`PluginHost`]: the wasmtime engine of a process, its epoch ticker, the sandbox linker and
//! the compile cache. Compiling checks everything that can be checked without running the
//! plugin: it is a component, it imports only the sandbox's WASI subset, and it exports
//! exactly one `quiver:policy` interface with the types this host expects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use super::bindings::KindPre;
use super::kinds::self_test;
use super::pool::InstancePool;
use super::sandbox::{self, Sandbox};
use super::slot::PluginFailure;
use super::{sha256_hex, short_sha, Kind, WIT_VERSION};
use crate::config::PluginsConfig;
use crate::error::{Error, Result};

/// The epoch advances every `call_timeout / TICKS_PER_TIMEOUT`, clamped to this range: fine
/// enough that a call is interrupted within ~10 % of its deadline, coarse enough that the
/// ticker thread costs nothing measurable (a 50 ms timeout ticks every 5 ms).
const TICKS_PER_TIMEOUT: u32 = 10;
const EPOCH_TICK_MIN: Duration = Duration::from_millis(1);
const EPOCH_TICK_MAX: Duration = Duration::from_millis(10);

/// Compiled plugins kept for reuse (a swap back to a recent version does not recompile).
const CACHE_ENTRIES: usize = 32;

/// Per-call and per-instance limits, from `[plugins]` in the config.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// Deadline of one call; past it the call is interrupted.
    pub call_timeout: Duration,
    /// Linear-memory cap of one instance, in bytes.
    pub memory_limit_bytes: usize,
    /// Failed calls in a row after which a plugin is switched off.
    pub max_consecutive_failures: u32,
    /// An instance is replaced by a fresh one after this many calls (bounds leaks in the guest).
    pub recycle_after_calls: u32,
    /// Warm instances kept per plugin version; more concurrent calls instantiate extra ones.
    pub idle_instances: usize,
    /// How often the epoch advances; call deadlines are counted in these ticks.
    pub epoch_tick: Duration,
}

impl SandboxSettings {
    /// The settings `[plugins]` asks for.
    pub fn from_config(config: &PluginsConfig) -> SandboxSettings {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        SandboxSettings {
            call_timeout: config.call_timeout,
            memory_limit_bytes: usize::try_from(config.memory_limit_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            max_consecutive_failures: config.max_consecutive_failures.max(1),
            recycle_after_calls: 10_000,
            idle_instances: (cpus * 2).clamp(2, 16),
            epoch_tick: (config.call_timeout / TICKS_PER_TIMEOUT).clamp(EPOCH_TICK_MIN, EPOCH_TICK_MAX),
        }
    }

    /// The call deadline in epoch ticks (at least one).
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (self.call_timeout.as_nanos().div_ceil(tick) as u64).max(1)
    }
}

/// A plugin binary compiled, checked and ready to instantiate. Shared by every slot and
/// version that uses the same bytes (the cache is keyed by sha256).
pub struct CompiledPlugin {
    kind: Kind,
    sha256: String,
    size: usize,
    imports: Vec<String>,
    exports: Vec<String>,
    pub(crate) pre: KindPre,
}

impl CompiledPlugin {
    /// The policy kind, from the interface the component exports.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// sha256 of the binary, lower-case hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Size of the binary in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The component's imports, e.g. `wasi:io/streams@0.2.4`.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// The component's exports, e.g. `quiver:policy/router@0.1.0`.
    pub fn exports(&self) -> &[String] {
        &self.exports
    }
}

impl std::fmt::Debug for CompiledPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompiledPlugin({} {} {} bytes)", self.kind, short_sha(&self.sha256), self.size)
    }
}

/// The process's plugin engine. Create one per process ([`crate::Shared`] holds it) and share
/// it through an `Arc`; dropping it stops the epoch ticker.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<Sandbox>,
    settings: SandboxSettings,
    config: PluginsConfig,
    cache: Mutex<HashMap<String, (u64, Arc<CompiledPlugin>)>>,
    /// Started by the first compile: processes that never run a plugin never tick.
    ticker: Mutex<Option<Ticker>>,
}

impl PluginHost {
    /// Creates the engine (epoch interruption on) and the sandbox linker. The epoch ticker
    /// thread starts with the first compile.
    pub fn new(config: &PluginsConfig) -> Result<PluginHost> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true);
        wasm.epoch_interruption(true);
        let engine =
            Engine::new(&wasm).map_err(|e| Error::Internal(format!("cannot create the Wasm engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        sandbox::add_to_linker(&mut linker)
            .map_err(|e| Error::Internal(format!("cannot set up the plugin sandbox: {e:#}")))?;
        Ok(PluginHost {
            engine,
            linker,
            settings: SandboxSettings::from_config(config),
            config: config.clone(),
            cache: Mutex::new(HashMap::new()),
            ticker: Mutex::new(None),
        })
    }

    /// The limits every call and instance runs under.
    pub fn settings(&self) -> &SandboxSettings {
        &self.settings
    }

    /// The `[plugins]` section this host was created from.
    pub fn config(&self) -> &PluginsConfig {
        &self.config
    }

    /// Whether plugins run as Wasm (`engine = "wasm"`) rather than natively.
    pub fn wasm_enabled(&self) -> bool {
        self.config.engine != "native"
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles and checks a plugin binary, or returns the cached result for the same bytes.
    /// Slow (tens to hundreds of ms): call it off the hot path, e.g. in `spawn_blocking`.
    pub fn compile(&self, wasm: &[u8]) -> Result<Arc<CompiledPlugin>> {
        if !wasm.starts_with(b"\0asm") {
            return Err(Error::InvalidArgument(format!(
                "not a WebAssembly component: the {} bytes do not start with the \\0asm magic \
                 (build the plugin with `cargo build --target wasm32-wasip2` and pass the .wasm file)",
                wasm.len()
            )));
        }
        self.start_ticker()?;
        let sha256 = sha256_hex(wasm);
        if let Some(hit) = self.cached(&sha256) {
            return Ok(hit);
        }
        let compiled = Arc::new(self.compile_uncached(wasm, sha256.clone())?);
        let mut cache = self.cache.lock().map_err(|_| Error::internal("plugin cache lock poisoned"))?;
        let stamp = cache.values().map(|(s, _)| *s).max().unwrap_or(0) + 1;
        if cache.len() >= CACHE_ENTRIES {
            if let Some(oldest) = cache.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| k.clone()) {
                cache.remove(&oldest);
            }
        }
        cache.insert(sha256, (stamp, compiled.clone()));
        Ok(compiled)
    }

    /// Compiles the plugin bundled with this binary as built-in `name` of `kind`.
    pub fn compile_bundled(&self, kind: Kind, name: &str) -> Result<Arc<CompiledPlugin>> {
        let bundled = quiver_plugins_bundled::find(kind.as_str(), name).ok_or_else(|| {
            Error::NotFound(format!(
                "no built-in {kind} plugin named {name:?}; built-in ones are {}",
                kind.builtin_names().join(", ")
            ))
        })?;
        let compiled = self.compile(bundled.wasm)?;
        expect_kind(&compiled, kind)?;
        Ok(compiled)
    }

    /// Runs the built-in sample inputs of the plugin's kind through a fresh instance under
    /// the call deadline and memory cap; returns how long it took.
    pub fn self_test(&self, plugin: &Arc<CompiledPlugin>) -> std::result::Result<Duration, PluginFailure> {
        let label = format!("self-test:{}", short_sha(plugin.sha256()));
        let pool = InstancePool::new(self, plugin.clone(), label);
        let start = Instant::now();
        self_test(plugin.kind(), &pool)?;
        Ok(start.elapsed())
    }

    /// Deadlines only work while the epoch advances: every instance comes from a compiled
    /// plugin, so starting here covers every call.
    fn start_ticker(&self) -> Result<()> {
        let mut ticker = self.ticker.lock().map_err(|_| Error::internal("plugin ticker lock poisoned"))?;
        if ticker.is_none() {
            *ticker = Some(Ticker::start(self.engine.clone(), self.settings.epoch_tick)?);
        }
        Ok(())
    }

    fn cached(&self, sha256: &str) -> Option<Arc<CompiledPlugin>> {
        let mut cache = self.cache.lock().ok()?;
        let stamp = cache.values().map(|(s, _)| *s).max().unwrap_or(0) + 1;
        let entry = cache.get_mut(sha256)?;
        entry.0 = stamp;
        Some(entry.1.clone())
    }

    fn compile_uncached(&self, wasm: &[u8], sha256: String) -> Result<CompiledPlugin> {
        if is_core_module(wasm) {
            return Err(Error::InvalidArgument(
                "this is a core WebAssembly module, not a component: build the plugin with \
                 `cargo build --target wasm32-wasip2` (see docs/plugins.md)"
                    .into(),
            ));
        }
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| Error::InvalidArgument(format!("not a valid WebAssembly component: {e:#}")))?;
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        sandbox::check_imports(imports.iter().map(String::as_str)).map_err(Error::InvalidArgument)?;
        let kind = kind_of_exports(&exports)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            Error::InvalidArgument(format!("the plugin's imports do not match what Quiver provides: {e:#}"))
        })?;
        let pre = KindPre::new(kind, instance_pre).map_err(|e| {
            Error::InvalidArgument(format!(
                "the plugin exports {}@{WIT_VERSION} with types that differ from Quiver's WIT: {e:#} \
                 (rebuild it against the wit/ of this Quiver version)",
                kind.interface()
            ))
        })?;
        Ok(CompiledPlugin { kind, sha256, size: wasm.len(), imports, exports, pre })
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.get_mut().ok().and_then(Option::take) {
            ticker.stop();
        }
    }
}

/// Refuses a compiled plugin of another kind than `kind`.
pub(crate) fn expect_kind(compiled: &CompiledPlugin, kind: Kind) -> Result<()> {
    if compiled.kind() == kind {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "the plugin is a {} (it exports {}), not a {kind}",
            compiled.kind(),
            compiled.exports().join(", ")
        )))
    }
}

/// The kind of a component from its exports: exactly one `quiver:policy` interface of this
/// host's WIT version.
fn kind_of_exports(exports: &[String]) -> Result<Kind> {
    let ours: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| exports.iter().any(|e| *e == format!("{}@{WIT_VERSION}", k.interface())))
        .collect();
    let listed = if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") };
    match ours.as_slice() {
        [kind] => Ok(*kind),
        [] => Err(Error::InvalidArgument(format!(
            "the plugin exports {listed}, but a policy plugin must export one of quiver:policy/{{router,balancer,\
             discovery,autoscaler}}@{WIT_VERSION} (build it with the world of its kind from wit/)"
        ))),
        _ => Err(Error::InvalidArgument(format!(
            "the plugin exports {listed}: more than one policy interface; build one plugin per policy kind"
        ))),
    }
}

/// A core module starts with the magic and version 1, layer 0; a component has layer 1.
fn is_core_module(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[..4] == *b"\0asm" && wasm[4..8] == [1, 0, 0, 0]
}

/// The thread advancing the engine's epoch every `epoch_tick`; calls past their deadline
/// trap at the next check in the guest's loops and function entries.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("quiver-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the plugin epoch thread: {e}")))?;
        Ok(Ticker { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_counted_in_ticks() {
        let config = |call_timeout| PluginsConfig { call_timeout, ..PluginsConfig::default() };
        let default = SandboxSettings::from_config(&config(Duration::from_millis(50)));
        assert_eq!((default.epoch_tick, default.deadline_ticks()), (Duration::from_millis(5), 10));
        let tiny = SandboxSettings::from_config(&config(Duration::from_micros(10)));
        assert_eq!((tiny.epoch_tick, tiny.deadline_ticks()), (Duration::from_millis(1), 1));
        let long = SandboxSettings::from_config(&config(Duration::from_secs(2)));
        assert_eq!((long.epoch_tick, long.deadline_ticks()), (Duration::from_millis(10), 200));
    }

    #[test]
    fn exports_name_one_kind() {
        let one = vec!["quiver:policy/router@0.1.0".to_string()];
        assert_eq!(kind_of_exports(&one).unwrap(), Kind::Router);
        let none = vec!["test:p/router@0.1.0".to_string()];
        let err = kind_of_exports(&none).unwrap_err().to_string();
        assert!(err.contains("exports test:p/router@0.1.0"), "{err}");
        let two = vec!["quiver:policy/router@0.1.0".to_string(), "quiver:policy/balancer@0.1.0".to_string()];
        assert!(kind_of_exports(&two).unwrap_err().to_string().contains("more than one"));
        assert!(kind_of_exports(&[]).unwrap_err().to_string().contains("exports nothing"));
    }

    #[test]
    fn host_drop_stops_the_ticker() {
        let host = PluginHost::new(&PluginsConfig::default()).unwrap();
        assert!(host.ticker.lock().unwrap().is_none(), "no ticker before the first compile");
        host.compile_bundled(Kind::Router, "rendezvous").unwrap();
        assert!(host.ticker.lock().unwrap().is_some());
        let before = std::time::Instant::now();
        drop(host);
        assert!(before.elapsed() < Duration::from_secs(1));
    }
}
