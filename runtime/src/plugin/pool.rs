//! Warm instances of one compiled plugin version, and one call under the deadline.
//!
//! A call takes an idle instance (or instantiates one), sets the epoch deadline, calls, logs
//! what the plugin printed, checks the answer, and gives the instance back. An instance that
//! trapped, timed out or hit its memory cap is dropped (a component instance cannot be entered
//! after a trap), and so is one that answered invalidly (its state is suspect); one that served
//! `recycle_after_calls` calls is replaced, bounding leaks inside the guest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::{Engine, Store, Trap};

use super::bindings::KindExports;
use super::host::{CompiledPlugin, PluginHost, SandboxSettings};
use super::sandbox::Sandbox;
use super::slot::{FailureReason, PluginFailure};

/// A live instance and the calls it served.
struct Warm {
    store: Store<Sandbox>,
    exports: KindExports,
    calls: u32,
}

/// The instances of one plugin version in one slot.
pub(crate) struct InstancePool {
    plugin: Arc<CompiledPlugin>,
    /// `name@version`, for logs.
    label: String,
    engine: Engine,
    settings: SandboxSettings,
    deadline_ticks: u64,
    idle: Mutex<Vec<Warm>>,
    instantiations: AtomicU64,
}

impl InstancePool {
    pub(crate) fn new(host: &PluginHost, plugin: Arc<CompiledPlugin>, label: String) -> InstancePool {
        let settings = host.settings().clone();
        InstancePool {
            plugin,
            label,
            engine: host.engine().clone(),
            deadline_ticks: settings.deadline_ticks(),
            settings,
            idle: Mutex::new(Vec::new()),
            instantiations: AtomicU64::new(0),
        }
    }

    pub(crate) fn plugin(&self) -> &Arc<CompiledPlugin> {
        &self.plugin
    }

    /// Instances created so far (the first, and one after every failure or recycling).
    pub(crate) fn instantiations(&self) -> u64 {
        self.instantiations.load(Ordering::Relaxed)
    }

    /// Runs `f` on a warm instance under the call deadline and memory cap, and checks its
    /// answer with `check`. An instance whose answer is invalid is dropped like one that
    /// trapped: its state is suspect.
    pub(crate) fn call<R>(
        &self,
        f: impl FnOnce(&KindExports, &mut Store<Sandbox>) -> wasmtime::Result<R>,
        check: impl FnOnce(&R) -> Result<(), String>,
    ) -> Result<R, PluginFailure> {
        let mut warm = match self.take() {
            Some(warm) => warm,
            None => self.instantiate()?,
        };
        warm.store.data_mut().limits.memory_denied = false;
        warm.store.set_epoch_deadline(self.deadline_ticks);
        let outcome = f(&warm.exports, &mut warm.store);
        warm.store.data_mut().output.flush_to_log(&self.label);
        let value = outcome.map_err(|error| self.classify(&error, warm.store.data()))?;
        check(&value).map_err(PluginFailure::invalid_output)?;
        warm.calls += 1;
        self.give_back(warm);
        Ok(value)
    }

    fn take(&self) -> Option<Warm> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, warm: Warm) {
        if warm.calls >= self.settings.recycle_after_calls {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.settings.idle_instances {
                idle.push(warm);
            }
        }
    }

    fn instantiate(&self) -> Result<Warm, PluginFailure> {
        let mut store = Store::new(&self.engine, Sandbox::new(self.settings.memory_limit_bytes));
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        // Instantiation runs the component's start functions: under the deadline too.
        store.set_epoch_deadline(self.deadline_ticks);
        self.instantiations.fetch_add(1, Ordering::Relaxed);
        match self.plugin.pre.instantiate(&mut store) {
            Ok(exports) => Ok(Warm { store, exports, calls: 0 }),
            Err(error) => {
                let failure = self.classify(&error, store.data());
                Err(PluginFailure { detail: format!("instantiation failed: {}", failure.detail), ..failure })
            }
        }
    }

    /// Why a call failed: the deadline (epoch interrupt), the memory cap (a refused growth
    /// preceded the trap), or any other trap.
    fn classify(&self, error: &wasmtime::Error, sandbox: &Sandbox) -> PluginFailure {
        let trap = error.downcast_ref::<Trap>();
        if trap == Some(&Trap::Interrupt) {
            return PluginFailure {
                reason: FailureReason::Timeout,
                detail: format!("no answer within the call timeout of {:?}", self.settings.call_timeout),
            };
        }
        if sandbox.limits.memory_denied {
            return PluginFailure {
                reason: FailureReason::Memory,
                detail: format!(
                    "exceeded the memory cap of {} MiB (plugins.memory_limit_mb)",
                    self.settings.memory_limit_bytes >> 20
                ),
            };
        }
        let detail = match trap {
            Some(trap) => format!("trapped: {trap}"),
            None => format!("failed: {}", error.root_cause()),
        };
        PluginFailure { reason: FailureReason::Trap, detail: truncate(detail, 400) }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
