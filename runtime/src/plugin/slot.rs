//! [`PolicySlot`]: where a role calls one policy kind. Its methods never fail: the active Wasm
//! plugin answers under the deadline and memory cap, and on a trap, timeout, memory-cap hit or
//! invalid answer the native built-in answers instead. The failure is counted and logged
//! (the first, then every 100th); after `max_consecutive_failures` in a row the plugin is
//! switched off and the built-in answers alone until the slot is swapped again.
//!
//! ```text
//!            activate_wasm / activate_native / rollback (self-test first, off the hot path)
//!                                  │
//!   ArcSwap<Active> ◄── publish ───┘  generation + 1, previous kept for rollback
//!        │ load (in-flight calls keep their Arc and finish on the old version)
//!        ▼
//!   wasm ok ──► answer            wasm fails ──► native answers, failures += 1
//!                                   └─ failures in a row ≥ max ──► disabled (native only)
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::host::{expect_kind, CompiledPlugin, PluginHost};
use super::kinds::{self_test, NativePolicy};
use super::pool::InstancePool;
use super::{short_sha, Kind, VersionRef};
use crate::error::{Error, Result};

/// Why a plugin call did not produce a usable answer (the `reason` label of
/// `quiver_plugin_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureReason {
    /// The plugin trapped (panic, `unreachable`, stack overflow, exit, failed instantiation).
    Trap,
    /// The plugin did not answer within `plugins.call_timeout`.
    Timeout,
    /// The plugin tried to grow past `plugins.memory_limit_mb`.
    Memory,
    /// The plugin answered, but the answer broke the contract (wrong length, unknown node, ...).
    InvalidOutput,
    /// No Wasm plugin is active in the slot (only from the `try_*` diagnostics calls).
    NotLoaded,
}

impl FailureReason {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Trap => "trap",
            FailureReason::Timeout => "timeout",
            FailureReason::Memory => "memory",
            FailureReason::InvalidOutput => "invalid-output",
            FailureReason::NotLoaded => "not-loaded",
        }
    }
}

/// A failed plugin call: why, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct PluginFailure {
    /// The class of failure.
    pub reason: FailureReason,
    /// What happened, for operators.
    pub detail: String,
}

impl PluginFailure {
    pub(crate) fn invalid_output(why: String) -> PluginFailure {
        PluginFailure { reason: FailureReason::InvalidOutput, detail: format!("invalid answer: {why}") }
    }
}

/// Which plugin version a slot runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSource {
    /// The plugin's name (a built-in name, or one given at `load`).
    pub name: String,
    /// `builtin` or the catalog version.
    pub version: VersionRef,
    /// sha256 of the Wasm binary (hex); empty for a native built-in.
    pub sha256: String,
}

impl PluginSource {
    /// The native or bundled built-in `name`.
    pub fn builtin(name: &str) -> PluginSource {
        PluginSource { name: name.to_string(), version: VersionRef::Builtin, sha256: String::new() }
    }
}

/// A slot's state for `quiver ctl plugin list` and the node record in KV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// The policy kind.
    pub kind: Kind,
    /// Name of the active plugin.
    pub name: String,
    /// `builtin` or the catalog version.
    pub version: VersionRef,
    /// First 12 hex digits of the binary's sha256 (empty when native).
    pub sha256: String,
    /// Increases with every swap in this process.
    pub generation: u64,
    /// `wasm` or `native`.
    pub engine: String,
    /// The built-in answering when the plugin fails.
    pub fallback: String,
    /// Whether the plugin was switched off after too many failures in a row.
    pub disabled: bool,
    /// Why it was switched off.
    pub disabled_reason: Option<String>,
    /// Failed calls in a row right now.
    pub consecutive_failures: u32,
    /// Calls since this version was activated.
    pub calls: u64,
    /// Calls the built-in answered instead of the plugin (failed or switched off).
    pub fallbacks: u64,
    /// Failed plugin calls since activation.
    pub failures: u64,
    /// Calls since the slot was created, over every version.
    pub total_calls: u64,
    /// Built-in answers since the slot was created, over every version.
    pub total_fallbacks: u64,
    /// Failed plugin calls since the slot was created, over every version.
    pub total_failures: u64,
    /// The last failure, if any.
    pub last_failure: Option<String>,
    /// The last version this process could not switch to (it kept this one), if any.
    pub apply_error: Option<String>,
}

/// Counters of one active version; a swap starts afresh.
#[derive(Default)]
struct Health {
    calls: AtomicU64,
    fallbacks: AtomicU64,
    failures: AtomicU64,
    consecutive: AtomicU32,
    disabled: OnceLock<String>,
    last_failure: Mutex<Option<String>>,
}

/// The version a slot publishes.
struct Active<N: ?Sized> {
    generation: u64,
    source: PluginSource,
    /// `None`: the native built-in answers every call (engine = native).
    pool: Option<Arc<InstancePool>>,
    native: Arc<N>,
    native_name: String,
    health: Health,
    calls_total: metrics::Counter,
    call_seconds: metrics::Histogram,
}

/// The entry point of one policy kind in one role: [`super::RouterSlot`] in the proxy,
/// [`super::BalancerSlot`], [`super::DiscoverySlot`] and [`super::AutoscalerSlot`] in the
/// coordinator. Cheap to call from many threads at once.
pub struct PolicySlot<N: NativePolicy + ?Sized> {
    host: Arc<PluginHost>,
    default_name: String,
    active: ArcSwap<Active<N>>,
    previous: Mutex<Option<Arc<Active<N>>>>,
    generation: AtomicU64,
    swapping: Mutex<()>,
    apply_error: Mutex<Option<String>>,
    total_calls: AtomicU64,
    total_fallbacks: AtomicU64,
    total_failures: AtomicU64,
}

impl<N: NativePolicy + ?Sized> PolicySlot<N> {
    /// A slot answering with the configured built-in (`[plugins] <kind> = ...`), natively. The
    /// [`super::PluginWatcher`] then swaps in the cluster's choice (as Wasm unless
    /// `engine = "native"`).
    pub fn new(host: Arc<PluginHost>) -> Result<PolicySlot<N>> {
        let default_name = N::KIND.configured(host.config()).to_string();
        let native = native_builtin::<N>(&default_name)?;
        let active = Active::build(0, PluginSource::builtin(&default_name), None, native, default_name.clone());
        Ok(PolicySlot {
            host,
            default_name,
            active: ArcSwap::from_pointee(active),
            previous: Mutex::new(None),
            generation: AtomicU64::new(0),
            swapping: Mutex::new(()),
            apply_error: Mutex::new(None),
            total_calls: AtomicU64::new(0),
            total_fallbacks: AtomicU64::new(0),
            total_failures: AtomicU64::new(0),
        })
    }

    /// The policy kind of this slot.
    pub fn kind(&self) -> Kind {
        N::KIND
    }

    /// The plugin host the slot compiles and runs on.
    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// Which version is active.
    pub fn source(&self) -> PluginSource {
        self.active.load().source.clone()
    }

    /// Self-tests `plugin` and publishes it: calls that start afterwards run on it, calls in
    /// flight finish on the version they started with. On any error the slot keeps its version.
    pub fn activate_wasm(&self, plugin: Arc<CompiledPlugin>, source: PluginSource) -> Result<SlotStatus> {
        expect_kind(&plugin, N::KIND)?;
        let label = format!("{}@{}", source.name, source.version);
        let pool = Arc::new(InstancePool::new(&self.host, plugin, label.clone()));
        self_test(N::KIND, &pool).map_err(|failure| {
            Error::InvalidArgument(format!("plugin {label} failed its self-test ({failure}); it was not activated"))
        })?;
        let fallback = self.fallback_name(&source.name);
        let native = native_builtin::<N>(&fallback)?;
        let source = PluginSource { sha256: pool.plugin().sha256().to_string(), ..source };
        Ok(self.publish(|generation| Active::build(generation, source, Some(pool), native, fallback)))
    }

    /// Publishes the native built-in `name` (no Wasm at all).
    pub fn activate_native(&self, name: &str) -> Result<SlotStatus> {
        self.activate_native_as(name, VersionRef::Builtin)
    }

    /// Publishes the native built-in `name`, reporting it as `version` (`builtin` when the
    /// node runs natively by config, `native` when an operator chose `name@native`).
    pub fn activate_native_as(&self, name: &str, version: VersionRef) -> Result<SlotStatus> {
        let native = native_builtin::<N>(name)?;
        let source = PluginSource { version, ..PluginSource::builtin(name) };
        Ok(self.publish(|generation| Active::build(generation, source, None, native, name.to_string())))
    }

    /// Goes back to the version active before the last swap in this process (with fresh
    /// counters, so a switched-off plugin runs again).
    pub fn rollback(&self) -> Result<SlotStatus> {
        let previous = self.previous.lock().map_err(|_| Error::internal("slot lock poisoned"))?.clone();
        let Some(previous) = previous else {
            return Err(Error::NotFound(format!("the {} slot has no previous version to roll back to", N::KIND)));
        };
        Ok(self.publish(|generation| {
            Active::build(
                generation,
                previous.source.clone(),
                previous.pool.clone(),
                previous.native.clone(),
                previous.native_name.clone(),
            )
        }))
    }

    /// Records that this process could not switch to a version (it keeps the current one),
    /// or, with `None`, that it runs what the cluster chose.
    pub fn set_apply_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.apply_error.lock() {
            *slot = error;
        }
    }

    /// The slot's state for status pages and `quiver ctl plugin list`.
    pub fn status(&self) -> SlotStatus {
        let active = self.active.load();
        let health = &active.health;
        SlotStatus {
            kind: N::KIND,
            name: active.source.name.clone(),
            version: active.source.version,
            sha256: short_sha(&active.source.sha256).to_string(),
            generation: active.generation,
            engine: if active.pool.is_some() { "wasm" } else { "native" }.to_string(),
            fallback: active.native_name.clone(),
            disabled: health.disabled.get().is_some(),
            disabled_reason: health.disabled.get().cloned(),
            consecutive_failures: health.consecutive.load(Ordering::Relaxed),
            calls: health.calls.load(Ordering::Relaxed),
            fallbacks: health.fallbacks.load(Ordering::Relaxed),
            failures: health.failures.load(Ordering::Relaxed),
            total_calls: self.total_calls.load(Ordering::Relaxed),
            total_fallbacks: self.total_fallbacks.load(Ordering::Relaxed),
            total_failures: self.total_failures.load(Ordering::Relaxed),
            last_failure: health.last_failure.lock().ok().and_then(|f| f.clone()),
            apply_error: self.apply_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Instances the active version created so far (0 when native); a failed call drops its
    /// instance, so this grows by one per failure.
    pub fn instantiations(&self) -> u64 {
        self.active.load().pool.as_ref().map_or(0, |p| p.instantiations())
    }

    /// The fallback of a plugin: the built-in of the same name, else the configured default.
    fn fallback_name(&self, plugin: &str) -> String {
        if N::KIND.builtin_names().contains(&plugin) {
            plugin.to_string()
        } else {
            self.default_name.clone()
        }
    }

    fn publish(&self, build: impl FnOnce(u64) -> Active<N>) -> SlotStatus {
        // One swap at a time, so `previous` is the version this one replaced.
        let _one_at_a_time = self.swapping.lock();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let next = Arc::new(build(generation));
        tracing::info!(
            kind = %N::KIND,
            plugin = %next.source.name,
            version = %next.source.version,
            sha256 = short_sha(&next.source.sha256),
            generation,
            engine = if next.pool.is_some() { "wasm" } else { "native" },
            "policy plugin activated"
        );
        metrics::gauge!("quiver_plugin_switched_off", "kind" => N::KIND.as_str()).set(0.0);
        let old = self.active.swap(next);
        if let Ok(mut previous) = self.previous.lock() {
            *previous = Some(old);
        }
        if let Ok(mut error) = self.apply_error.lock() {
            *error = None;
        }
        self.status()
    }

    /// Calls the active plugin, falling back to the native built-in. `wasm` must validate
    /// the answer; `native` computes the built-in's.
    pub(crate) fn invoke<R>(
        &self,
        wasm: impl FnOnce(&InstancePool) -> Result<R, PluginFailure>,
        native: impl FnOnce(&N) -> R,
    ) -> R {
        let active = self.active.load();
        match self.call_active(&active, wasm) {
            Some(Ok(answer)) => return answer,
            Some(Err(_)) => self.count_fallback(&active),
            None => {}
        }
        native(&active.native)
    }

    /// Like [`Self::invoke`], but a failing call of the active Wasm plugin is returned as the
    /// error (and counted as a failure, which may switch the plugin off) instead of being
    /// answered by the native built-in: for decisions where "no answer" must change nothing
    /// (the autoscaler). A plugin already switched off, or a native slot, answers natively.
    pub(crate) fn invoke_strict<R>(
        &self,
        wasm: impl FnOnce(&InstancePool) -> Result<R, PluginFailure>,
        native: impl FnOnce(&N) -> R,
    ) -> Result<R, PluginFailure> {
        let active = self.active.load();
        match self.call_active(&active, wasm) {
            Some(result) => result,
            None => Ok(native(&active.native)),
        }
    }

    /// Counts a call and asks the active Wasm plugin, if there is one and it is not switched
    /// off: its answer, or its failure (recorded, which may switch it off). `None` when the
    /// native built-in must answer (a switched-off plugin's call counts as a fallback).
    fn call_active<R>(
        &self,
        active: &Active<N>,
        wasm: impl FnOnce(&InstancePool) -> Result<R, PluginFailure>,
    ) -> Option<Result<R, PluginFailure>> {
        let _span =
            tracing::debug_span!("plugin_call", kind = N::KIND.as_str(), plugin = %active.source.name).entered();
        active.calls_total.increment(1);
        active.health.calls.fetch_add(1, Ordering::Relaxed);
        self.total_calls.fetch_add(1, Ordering::Relaxed);
        let pool = active.pool.as_deref()?;
        if active.health.disabled.get().is_some() {
            self.count_fallback(active);
            return None;
        }
        let start = Instant::now();
        let outcome = wasm(pool);
        active.call_seconds.record(start.elapsed().as_secs_f64());
        Some(match outcome {
            Ok(answer) => {
                if active.health.consecutive.load(Ordering::Relaxed) != 0 {
                    active.health.consecutive.store(0, Ordering::Relaxed);
                }
                Ok(answer)
            }
            Err(failure) => {
                self.record_failure(active, failure.clone());
                Err(failure)
            }
        })
    }

    /// Counts an answer of the native built-in in place of the Wasm plugin.
    fn count_fallback(&self, active: &Active<N>) {
        metrics::counter!("quiver_plugin_fallbacks_total", "kind" => N::KIND.as_str()).increment(1);
        active.health.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.total_fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls only the active Wasm plugin: no fallback, nothing counted (`quiver plugin test`).
    pub(crate) fn try_invoke<R>(
        &self,
        wasm: impl FnOnce(&InstancePool) -> Result<R, PluginFailure>,
    ) -> Result<R, PluginFailure> {
        let active = self.active.load();
        match active.pool.as_deref() {
            Some(pool) => wasm(pool),
            None => Err(PluginFailure {
                reason: FailureReason::NotLoaded,
                detail: format!("the {} slot runs the native {}, not a Wasm plugin", N::KIND, active.native_name),
            }),
        }
    }

    fn record_failure(&self, active: &Active<N>, failure: PluginFailure) {
        let health = &active.health;
        let total = health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let streak = health.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        self.total_failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "quiver_plugin_failures_total",
            "kind" => N::KIND.as_str(),
            "plugin" => active.source.name.clone(),
            "reason" => failure.reason.as_str(),
        )
        .increment(1);
        if total == 1 || total.is_multiple_of(100) {
            tracing::warn!(
                kind = %N::KIND,
                plugin = %active.source.name,
                version = %active.source.version,
                reason = failure.reason.as_str(),
                failures = total,
                in_a_row = streak,
                "policy plugin call failed; the built-in {} answered instead: {}",
                active.native_name,
                failure.detail
            );
        }
        let max = self.host.settings().max_consecutive_failures;
        if streak >= max {
            let why = format!("{streak} failed calls in a row, the last: {failure}");
            if health.disabled.set(why.clone()).is_ok() {
                metrics::gauge!("quiver_plugin_switched_off", "kind" => N::KIND.as_str()).set(1.0);
                tracing::error!(
                    kind = %N::KIND,
                    plugin = %active.source.name,
                    version = %active.source.version,
                    "policy plugin switched off ({why}); the built-in {} answers until an operator activates \
                     or rolls back a version (quiver ctl plugin activate / rollback)",
                    active.native_name
                );
            }
        }
        if let Ok(mut last) = health.last_failure.lock() {
            *last = Some(failure.to_string());
        }
    }
}

impl<N: NativePolicy + ?Sized> Active<N> {
    fn build(
        generation: u64,
        source: PluginSource,
        pool: Option<Arc<InstancePool>>,
        native: Arc<N>,
        native_name: String,
    ) -> Active<N> {
        let kind = N::KIND.as_str();
        let calls_total =
            metrics::counter!("quiver_plugin_calls_total", "kind" => kind, "plugin" => source.name.clone());
        let call_seconds = metrics::histogram!("quiver_plugin_call_seconds", "kind" => kind);
        Active { generation, source, pool, native, native_name, health: Health::default(), calls_total, call_seconds }
    }
}

fn native_builtin<N: NativePolicy + ?Sized>(name: &str) -> Result<Arc<N>> {
    N::builtin(name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "no built-in {} named {name:?}; built-in ones are {}",
            N::KIND,
            N::KIND.builtin_names().join(", ")
        ))
    })
}

/// A slot of any kind, as the [`super::PluginWatcher`] and status pages see it.
pub trait ManagedSlot: Send + Sync {
    /// The policy kind.
    fn kind(&self) -> Kind;
    /// Which version is active.
    fn source(&self) -> PluginSource;
    /// The slot's state.
    fn status(&self) -> SlotStatus;
    /// See [`PolicySlot::activate_wasm`].
    fn activate_wasm(&self, plugin: Arc<CompiledPlugin>, source: PluginSource) -> Result<SlotStatus>;
    /// See [`PolicySlot::activate_native_as`].
    fn activate_native_as(&self, name: &str, version: VersionRef) -> Result<SlotStatus>;
    /// See [`PolicySlot::set_apply_error`].
    fn set_apply_error(&self, error: Option<String>);
}

impl<N: NativePolicy + ?Sized> ManagedSlot for PolicySlot<N> {
    fn kind(&self) -> Kind {
        N::KIND
    }

    fn source(&self) -> PluginSource {
        PolicySlot::source(self)
    }

    fn status(&self) -> SlotStatus {
        PolicySlot::status(self)
    }

    fn activate_wasm(&self, plugin: Arc<CompiledPlugin>, source: PluginSource) -> Result<SlotStatus> {
        PolicySlot::activate_wasm(self, plugin, source)
    }

    fn activate_native_as(&self, name: &str, version: VersionRef) -> Result<SlotStatus> {
        PolicySlot::activate_native_as(self, name, version)
    }

    fn set_apply_error(&self, error: Option<String>) {
        PolicySlot::set_apply_error(self, error)
    }
}
