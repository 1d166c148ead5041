//! [`PluginWatcher`]: the task of each process that applies the cluster's plugin choices to
//! the slots the process owns, and records what it runs at `node.<node-id>`.
//!
//! At start and after every reconnect it applies the current choice of each kind (the
//! configured built-in where none was made), then follows a KV watch of `active.*`, so a
//! change reaches every process within moments. Applying fetches the binary, compiles it and
//! self-tests it off the async runtime, then swaps the slot; if any step fails the slot keeps
//! its version and the error is recorded in the slot's status (and so in `node.<node-id>`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::catalog::{ActiveChoice, NodePlugins, PluginCatalog};
use super::slot::{ManagedSlot, PluginSource, SlotStatus};
use super::{sha256_hex, short_sha, Kind, VersionRef};
use crate::bus::now_ms;
use crate::error::{Error, Result};
use crate::Shared;

/// How often a process refreshes its `node.<node-id>` record (counters, switch-offs) and
/// retries choices it could not apply for a transient reason.
const NODE_REFRESH: Duration = Duration::from_secs(5);
/// Pause before reopening a KV watch that ended.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

/// The running watcher of one process. Dropping it does not stop the task: call
/// [`PluginWatcher::stop`] (or cancel the token given to `start`).
pub struct PluginWatcher {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    synced: watch::Receiver<u64>,
}

impl PluginWatcher {
    /// Starts the watcher for `slots` (the proxy: its router slot; the coordinator: its
    /// balancer, discovery and autoscaler slots). Returns at once; the slots answer with their
    /// native built-in until the first choice is applied ([`PluginWatcher::synced`]).
    pub async fn start(
        catalog: PluginCatalog,
        node_id: &str,
        slots: Vec<Arc<dyn ManagedSlot>>,
        shutdown: CancellationToken,
    ) -> Result<PluginWatcher> {
        let stop = shutdown.child_token();
        let (synced_tx, synced) = watch::channel(0);
        let state = WatchState {
            catalog,
            node_id: node_id.to_string(),
            slots: slots.into_iter().map(|s| (s.kind(), s)).collect(),
            applied: HashMap::new(),
            synced: synced_tx,
        };
        let task = tokio::spawn(run(state, stop.clone()));
        Ok(PluginWatcher { stop, task, synced })
    }

    /// [`PluginWatcher::start`] with the catalog of `shared`'s cluster.
    pub async fn start_for(
        shared: &Shared,
        node_id: &str,
        slots: Vec<Arc<dyn ManagedSlot>>,
        shutdown: CancellationToken,
    ) -> Result<PluginWatcher> {
        let catalog = PluginCatalog::open(
            &shared.bus,
            shared.objects.clone(),
            shared.plugins.clone(),
            shared.config.nats.replicas,
        )
        .await?;
        PluginWatcher::start(catalog, node_id, slots, shutdown).await
    }

    /// Waits until the current choices were applied once (successfully or not), at most `limit`.
    pub async fn synced(&self, limit: Duration) -> Result<()> {
        let mut rx = self.synced.clone();
        tokio::time::timeout(limit, rx.wait_for(|rounds| *rounds > 0))
            .await
            .map_err(|_| Error::DeadlineExceeded(format!("plugin choices not applied within {limit:?}")))?
            .map_err(|_| Error::Unavailable("the plugin watcher stopped".into()))?;
        Ok(())
    }

    /// Stops the task and removes this process's `node.<node-id>` record.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

struct WatchState {
    catalog: PluginCatalog,
    node_id: String,
    slots: HashMap<Kind, Arc<dyn ManagedSlot>>,
    /// KV revision of the choice last applied per kind (0: the configured default).
    applied: HashMap<Kind, u64>,
    synced: watch::Sender<u64>,
}

async fn run(mut state: WatchState, stop: CancellationToken) {
    let mut refresh = tokio::time::interval(NODE_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        // Watch first, then read: a change in between arrives through the watch.
        let watch = state.catalog.watch_active().await;
        state.sync_all().await;
        state.synced.send_modify(|rounds| *rounds += 1);
        match watch {
            Ok(mut watch) => loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    entry = watch.next() => match entry {
                        Some(Ok(entry)) => state.on_entry(entry).await,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "plugin choice watch failed; reopening it");
                            break;
                        }
                        None => break,
                    },
                    _ = refresh.tick() => {
                        state.retry_pending().await;
                        state.record().await;
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot watch plugin choices; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(REWATCH_DELAY) => {}
        }
    }
    if let Err(e) = state.catalog.remove_node(&state.node_id).await {
        tracing::debug!(error = %e, "cannot remove this node's plugin record");
    }
}

impl WatchState {
    /// Applies the current choice of every kind this process has a slot for.
    async fn sync_all(&mut self) {
        let kinds: Vec<Kind> = self.slots.keys().copied().collect();
        for kind in kinds {
            self.sync(kind).await;
        }
        self.record().await;
    }

    async fn sync(&mut self, kind: Kind) {
        let current = match self.catalog.active(kind).await {
            Ok(Some((choice, revision))) => (choice, revision),
            Ok(None) => match self.catalog.default_choice(kind) {
                Ok(choice) => (choice, 0),
                Err(e) => return self.failed(kind, "the configured built-in", &e),
            },
            Err(e) => {
                tracing::warn!(%kind, error = %e, "cannot read the plugin choice; keeping the current version");
                return;
            }
        };
        self.apply(current.0, current.1).await;
    }

    /// Kinds whose choice could not be applied for a transient reason are tried again.
    async fn retry_pending(&mut self) {
        let pending: Vec<Kind> = self.slots.keys().filter(|k| !self.applied.contains_key(*k)).copied().collect();
        for kind in pending {
            self.sync(kind).await;
        }
    }

    async fn on_entry(&mut self, entry: kv::Entry) {
        let Some(kind) = entry.key.strip_prefix("active.").and_then(|k| k.parse::<Kind>().ok()) else { return };
        if !self.slots.contains_key(&kind) || self.applied.get(&kind) == Some(&entry.revision) {
            return;
        }
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<ActiveChoice>(&entry.value) {
                Ok(choice) => self.apply(choice, entry.revision).await,
                Err(e) => tracing::warn!(%kind, error = %e, "ignoring a corrupt plugin choice in KV"),
            },
            kv::Operation::Delete | kv::Operation::Purge => match self.catalog.default_choice(kind) {
                Ok(choice) => self.apply(choice, entry.revision).await,
                Err(e) => self.failed(kind, "the configured built-in", &e),
            },
        }
        self.record().await;
    }

    async fn apply(&mut self, choice: ActiveChoice, revision: u64) {
        let Some(slot) = self.slots.get(&choice.kind).cloned() else { return };
        let kind = choice.kind;
        if self.applied.get(&kind) == Some(&revision) {
            return;
        }
        let label = format!("{}@{}", choice.name, choice.version);
        match self.switch(&slot, &choice).await {
            Ok(status) => {
                slot.set_apply_error(None);
                tracing::info!(%kind, plugin = %label, generation = status.generation, engine = %status.engine,
                    "applied the cluster's plugin choice");
                self.applied.insert(kind, revision);
            }
            Err(e) => {
                self.failed(kind, &label, &e);
                if !e.is_retryable() {
                    self.applied.insert(kind, revision);
                }
            }
        }
    }

    fn failed(&self, kind: Kind, label: &str, error: &Error) {
        let Some(slot) = self.slots.get(&kind) else { return };
        let keeps = slot.source();
        let message =
            format!("cannot switch the {kind} to {label}: {error}; it keeps {}@{}", keeps.name, keeps.version);
        tracing::warn!(%kind, "{message}");
        slot.set_apply_error(Some(message));
    }

    async fn switch(&self, slot: &Arc<dyn ManagedSlot>, choice: &ActiveChoice) -> Result<SlotStatus> {
        let host = self.catalog.host().clone();
        let kind = choice.kind;
        // Natively: an operator's NAME@native, or a built-in on a node with plugins.engine = "native".
        let native = match choice.version {
            VersionRef::Native => Some(VersionRef::Native),
            VersionRef::Builtin if !host.wasm_enabled() && kind.builtin_names().contains(&choice.name.as_str()) => {
                Some(VersionRef::Builtin)
            }
            _ if !host.wasm_enabled() => {
                return Err(Error::InvalidArgument(
                    "plugins.engine = \"native\" on this node: only built-ins run here".into(),
                ))
            }
            _ => None,
        };
        if let Some(version) = native {
            let running = slot.source();
            if running.name == choice.name && running.version == version {
                return Ok(slot.status());
            }
            return slot.activate_native_as(&choice.name, version);
        }
        let wasm = self.catalog.fetch(kind, &choice.name, choice.version).await?;
        let sha256 = sha256_hex(&wasm);
        if !choice.sha256.is_empty() && sha256 != choice.sha256 {
            return Err(Error::InvalidArgument(format!(
                "the binary has sha256 {}, the choice says {}",
                short_sha(&sha256),
                short_sha(&choice.sha256)
            )));
        }
        let source = PluginSource { name: choice.name.clone(), version: choice.version, sha256 };
        let slot = slot.clone();
        tokio::task::spawn_blocking(move || {
            let compiled = host.compile(&wasm)?;
            slot.activate_wasm(compiled, source)
        })
        .await
        .map_err(Error::internal)?
    }

    /// Writes what this process runs to `node.<node-id>`.
    async fn record(&self) {
        let mut slots: Vec<SlotStatus> = self.slots.values().map(|s| s.status()).collect();
        slots.sort_by_key(|s| s.kind);
        let node = NodePlugins { node_id: self.node_id.clone(), updated_at_ms: now_ms(), slots };
        if let Err(e) = self.catalog.record_node(&node).await {
            tracing::debug!(error = %e, "cannot record this node's plugins");
        }
    }
}
