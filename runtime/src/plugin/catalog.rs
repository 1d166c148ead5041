//! [`PluginCatalog`]: the cluster's plugin versions and choices, in the object store and the
//! KV bucket `quiver_<cluster>_plugins`.
//!
//! | key                          | value                                                    |
//! |------------------------------|----------------------------------------------------------|
//! | `catalog.<kind>.<name>.<v>`  | [`PluginVersion`]; the binary is at `plugins/<kind>/<name>/<sha256>.wasm` |
//! | `active.<kind>`              | [`ActiveChoice`]: what every node should run, with the history for rollback |
//! | `node.<node-id>`             | [`NodePlugins`]: what one process actually runs           |
//!
//! A missing `active.<kind>` means the configured built-in (`[plugins]`). Versions are never
//! overwritten: `load` claims the next number with a create-only KV write before it stores
//! the binary, so two concurrent loads cannot write the same object.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::host::{expect_kind, PluginHost};
use super::slot::SlotStatus;
use super::{check_name, sha256_hex, short_sha, Kind, VersionRef};
use crate::bus::{now_ms, Bus};
use crate::error::{Error, Result};
use crate::meta::JsonBucket;
use crate::objects::Objects;
use quiver_schemas::Subjects;

/// Previous choices kept per kind for rollback.
const HISTORY_MAX: usize = 20;
/// Attempts at a compare-and-set write before giving up (concurrent operators).
const CAS_ATTEMPTS: usize = 8;

/// A plugin version loaded into the catalog (`catalog.<kind>.<name>.<version>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// The policy kind it exports.
    pub kind: Kind,
    /// Its name, unique across kinds.
    pub name: String,
    /// 1 + the highest version of the name when it was loaded.
    pub version: u32,
    /// sha256 of the binary, hex.
    pub sha256: String,
    /// Size of the binary in bytes.
    pub size: u64,
    /// Object-store path of the binary.
    pub path: String,
    /// When it was loaded (ms since the Unix epoch).
    pub loaded_at_ms: u64,
}

/// A past choice, kept for rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChoiceRecord {
    /// Plugin name.
    pub name: String,
    /// `builtin` or the catalog version.
    pub version: VersionRef,
    /// sha256 of the binary, hex.
    pub sha256: String,
    /// When it was chosen (ms since the Unix epoch).
    pub changed_at_ms: u64,
    /// Who chose it (free text).
    pub by: String,
}

/// What every node should run for one kind (`active.<kind>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveChoice {
    /// The policy kind.
    pub kind: Kind,
    /// Plugin name.
    pub name: String,
    /// `builtin` or the catalog version.
    pub version: VersionRef,
    /// sha256 of the binary, hex (nodes check what they fetch against it).
    pub sha256: String,
    /// Earlier choices, oldest first; `rollback` returns to the last one.
    pub history: Vec<ChoiceRecord>,
    /// When it was chosen (ms since the Unix epoch; 0 for the configured default).
    pub changed_at_ms: u64,
    /// Who chose it (free text; `config` for the configured default).
    pub by: String,
}

impl ActiveChoice {
    fn record(&self) -> ChoiceRecord {
        ChoiceRecord {
            name: self.name.clone(),
            version: self.version,
            sha256: self.sha256.clone(),
            changed_at_ms: self.changed_at_ms,
            by: self.by.clone(),
        }
    }
}

/// A plugin bundled with this binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltinPlugin {
    /// The policy kind.
    pub kind: Kind,
    /// Its built-in name.
    pub name: String,
    /// sha256 of the bundled binary, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// What one process runs (`node.<node-id>`), refreshed every few seconds and on every swap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePlugins {
    /// The process's node id.
    pub node_id: String,
    /// When this record was written (ms since the Unix epoch).
    pub updated_at_ms: u64,
    /// One entry per slot the process owns.
    pub slots: Vec<SlotStatus>,
}

/// Everything `quiver ctl plugin list` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogListing {
    /// Loaded versions, by kind, name and version.
    pub versions: Vec<PluginVersion>,
    /// The choice per kind (the configured default where none was made).
    pub active: Vec<ActiveChoice>,
    /// Plugins bundled with this binary.
    pub builtins: Vec<BuiltinPlugin>,
    /// What each process runs.
    pub nodes: Vec<NodePlugins>,
}

/// What `quiver ctl plugin validate FILE` reports about a binary that passed the checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    /// The kind it exports.
    pub kind: Kind,
    /// Its imports (all within the sandbox's WASI subset).
    pub imports: Vec<String>,
    /// Its exports.
    pub exports: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// sha256, hex.
    pub sha256: String,
    /// Whether it answered the built-in sample inputs validly within the deadline.
    pub self_test_passed: bool,
    /// `passed in ...` or what went wrong.
    pub self_test: String,
}

impl PluginHost {
    /// Compiles and checks `wasm` and runs the self-test, for `quiver ctl plugin validate`.
    /// Refusals (not a component, forbidden import, no or several policy exports, wrong
    /// types) are errors; a failed self-test is reported in the result.
    pub fn inspect(&self, wasm: &[u8]) -> Result<Inspection> {
        let compiled = self.compile(wasm)?;
        let (self_test_passed, self_test) = match self.self_test(&compiled) {
            Ok(took) => (true, format!("passed in {took:.1?}")),
            Err(failure) => (false, failure.to_string()),
        };
        Ok(Inspection {
            kind: compiled.kind(),
            imports: compiled.imports().to_vec(),
            exports: compiled.exports().to_vec(),
            size: compiled.size() as u64,
            sha256: compiled.sha256().to_string(),
            self_test_passed,
            self_test,
        })
    }
}

/// The cluster's plugin catalog. Cheap to clone.
#[derive(Clone)]
pub struct PluginCatalog {
    bucket: JsonBucket,
    kv: kv::Store,
    objects: Objects,
    host: Arc<PluginHost>,
}

impl PluginCatalog {
    /// The KV bucket of `cluster`'s catalog.
    pub fn bucket_name(subjects: &Subjects) -> String {
        subjects.plugins_bucket()
    }

    /// Opens (creating if needed) the catalog bucket. `host` compiles and self-tests loads.
    pub async fn open(bus: &Bus, objects: Objects, host: Arc<PluginHost>, replicas: usize) -> Result<PluginCatalog> {
        let name = PluginCatalog::bucket_name(bus.subjects());
        let bucket = JsonBucket::open(bus, &name, Duration::ZERO, replicas).await?;
        let kv = bus
            .jetstream()
            .get_key_value(&name)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot open KV bucket {name}: {e}")))?;
        Ok(PluginCatalog { bucket, kv, objects, host })
    }

    /// The plugin host used for validation.
    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// Validates `wasm` (a component exporting `kind`, allowed imports only, self-test
    /// passed), stores it as the next version of `name` and records it in the catalog.
    pub async fn load(&self, kind: Kind, name: &str, wasm: Bytes) -> Result<PluginVersion> {
        check_name(name)?;
        if let Some(owner) = Kind::of_builtin(name).filter(|k| *k != kind) {
            return Err(Error::InvalidArgument(format!(
                "{name:?} is the name of a built-in {owner}; names are unique across kinds, choose another"
            )));
        }
        for other in Kind::ALL.into_iter().filter(|k| *k != kind) {
            if !self.bucket.keys(&format!("catalog.{other}.{name}.")).await?.is_empty() {
                return Err(Error::AlreadyExists(format!(
                    "{name:?} is already the name of a {other} plugin; names are unique across kinds, choose another"
                )));
            }
        }
        let host = self.host.clone();
        let bytes = wasm.clone();
        let compiled = tokio::task::spawn_blocking(move || -> Result<_> {
            let compiled = host.compile(&bytes)?;
            expect_kind(&compiled, kind)?;
            host.self_test(&compiled).map_err(|failure| {
                Error::InvalidArgument(format!("the plugin failed its self-test: {failure}; it was not loaded"))
            })?;
            Ok(compiled)
        })
        .await
        .map_err(Error::internal)??;
        // The file first, named by its content, then the catalog entry naming it: a crash in
        // between leaves a file no entry names, never an entry without its file; loads racing
        // for a version number cannot overwrite each other's bytes.
        let sha256 = compiled.sha256().to_string();
        let path = format!("plugins/{kind}/{name}/{sha256}.wasm");
        self.objects.put(&path, wasm.clone()).await?;
        let mut version = self.highest_version(kind, name).await? + 1;
        for _ in 0..CAS_ATTEMPTS {
            let entry = PluginVersion {
                kind,
                name: name.to_string(),
                version,
                sha256: sha256.clone(),
                size: wasm.len() as u64,
                path: path.clone(),
                loaded_at_ms: now_ms(),
            };
            let key = format!("catalog.{kind}.{name}.{version}");
            match self.bucket.update(&key, &entry, 0).await {
                Ok(_) => {
                    tracing::info!(%kind, name, version, sha256 = short_sha(&entry.sha256), "plugin loaded");
                    return Ok(entry);
                }
                // Someone loaded the same name concurrently: take the next number.
                Err(Error::Stale(_)) => version = self.highest_version(kind, name).await?.max(version) + 1,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!("could not claim a version number for {name}; try again")))
    }

    /// Makes every node run `name` at `version` (`builtin` for the bundled plugin). Activating
    /// the active version again re-enables it where it was switched off.
    pub async fn activate(&self, name: &str, version: VersionRef, by: &str) -> Result<ActiveChoice> {
        let builtin_kind = || {
            Kind::of_builtin(name).ok_or_else(|| {
                Error::NotFound(format!(
                    "there is no built-in plugin {name:?} (@{version}); built-in ones are {}",
                    builtin_names().join(", ")
                ))
            })
        };
        let (kind, sha256) = match version {
            // Compiled into the binary: no bytes to check.
            VersionRef::Native => (builtin_kind()?, String::new()),
            VersionRef::Builtin => {
                let kind = builtin_kind()?;
                (kind, sha256_hex(bundled(kind, name)?))
            }
            VersionRef::Number(n) => {
                let entry = self.version(name, n).await?;
                (entry.kind, entry.sha256)
            }
        };
        let by = by.to_string();
        self.update_active(kind, move |current| {
            let mut history = current.history.clone();
            if current.name != name || current.version != version {
                history.push(current.record());
            }
            trim(&mut history);
            Ok(ActiveChoice {
                kind,
                name: name.to_string(),
                version,
                sha256: sha256.clone(),
                history,
                changed_at_ms: now_ms(),
                by: by.clone(),
            })
        })
        .await
    }

    /// Returns `kind` to the previously active version, or to the configured built-in when
    /// there is no earlier choice. Fails when already at the configured built-in.
    pub async fn rollback(&self, kind: Kind, by: &str) -> Result<ActiveChoice> {
        let default = self.default_choice(kind)?;
        let by = by.to_string();
        self.update_active(kind, move |current| {
            let mut history = current.history.clone();
            let target = match history.pop() {
                Some(previous) => previous,
                None if current.name == default.name && current.version == default.version => {
                    return Err(Error::InvalidArgument(format!(
                        "the {kind} already runs the configured built-in {} and has no earlier version to roll \
                         back to",
                        default.name
                    )));
                }
                None => default.record(),
            };
            Ok(ActiveChoice {
                kind,
                name: target.name,
                version: target.version,
                sha256: target.sha256,
                history,
                changed_at_ms: now_ms(),
                by: by.clone(),
            })
        })
        .await
    }

    /// The catalog, the choice per kind, the bundled plugins and what every process runs.
    pub async fn list(&self) -> Result<CatalogListing> {
        let mut versions: Vec<PluginVersion> = self.bucket.values("catalog.").await?;
        versions.sort_by(|a, b| (a.kind, &a.name, a.version).cmp(&(b.kind, &b.name, b.version)));
        let mut active = Vec::new();
        for kind in Kind::ALL {
            active.push(match self.active(kind).await? {
                Some((choice, _)) => choice,
                None => self.default_choice(kind)?,
            });
        }
        let builtins = quiver_plugins_bundled::BUNDLED
            .iter()
            .filter_map(|b| {
                Some(BuiltinPlugin {
                    kind: b.kind.parse().ok()?,
                    name: b.name.to_string(),
                    sha256: sha256_hex(b.wasm),
                    size: b.wasm.len() as u64,
                })
            })
            .collect();
        let nodes = self.bucket.values("node.").await?;
        Ok(CatalogListing { versions, active, builtins, nodes })
    }

    /// [`PluginHost::inspect`] off the async runtime.
    pub async fn inspect(&self, wasm: Bytes) -> Result<Inspection> {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || host.inspect(&wasm)).await.map_err(Error::internal)?
    }

    /// The explicit choice for `kind` and its KV revision, if an operator made one.
    pub async fn active(&self, kind: Kind) -> Result<Option<(ActiveChoice, u64)>> {
        self.bucket.get_rev(&format!("active.{kind}")).await
    }

    /// The choice in force when none was made: the configured built-in.
    pub fn default_choice(&self, kind: Kind) -> Result<ActiveChoice> {
        let name = kind.configured(self.host.config()).to_string();
        let sha256 = bundled(kind, &name).map(sha256_hex).unwrap_or_default();
        Ok(ActiveChoice {
            kind,
            name,
            version: VersionRef::Builtin,
            sha256,
            history: Vec::new(),
            changed_at_ms: 0,
            by: "config".into(),
        })
    }

    /// The binary of a choice: bundled, or fetched from the object store and checked against
    /// the catalog's sha256.
    pub async fn fetch(&self, kind: Kind, name: &str, version: VersionRef) -> Result<Bytes> {
        match version {
            VersionRef::Builtin => Ok(Bytes::from_static(bundled(kind, name)?)),
            VersionRef::Native => Err(Error::InvalidArgument(format!(
                "{name}@native is compiled into the binary; there is nothing to fetch"
            ))),
            VersionRef::Number(n) => {
                let entry = self.version(name, n).await?;
                let wasm = self.objects.get(&entry.path).await?;
                let sha256 = sha256_hex(&wasm);
                if sha256 != entry.sha256 {
                    return Err(Error::Internal(format!(
                        "object {} has sha256 {}, the catalog says {}: the store was altered; load the plugin again",
                        entry.path,
                        short_sha(&sha256),
                        short_sha(&entry.sha256)
                    )));
                }
                Ok(wasm)
            }
        }
    }

    /// Records what a process runs.
    pub async fn record_node(&self, node: &NodePlugins) -> Result<()> {
        self.bucket.put(&node_key(&node.node_id), node).await.map(|_| ())
    }

    /// Removes a process's record (on clean shutdown).
    pub async fn remove_node(&self, node_id: &str) -> Result<()> {
        self.bucket.delete(&node_key(node_id)).await
    }

    /// A stream of changes to `active.*` (each key's current value first).
    pub(crate) async fn watch_active(&self) -> Result<kv::Watch> {
        self.kv.watch_with_history("active.*").await.map_err(|e| Error::Unavailable(format!("KV watch active.*: {e}")))
    }

    /// The catalog entry of `name` at `version`, whatever its kind.
    pub async fn version(&self, name: &str, version: u32) -> Result<PluginVersion> {
        check_name(name)?;
        for kind in Kind::ALL {
            if let Some(entry) = self.bucket.get(&format!("catalog.{kind}.{name}.{version}")).await? {
                return Ok(entry);
            }
        }
        let mut known = Vec::new();
        for kind in Kind::ALL {
            known.extend(self.versions_of(kind, name).await?);
        }
        let hint = if known.is_empty() {
            "no version of it is loaded (quiver ctl plugin load)".to_string()
        } else {
            format!("loaded versions are {}", known.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
        };
        Err(Error::NotFound(format!("no plugin {name:?} version {version}: {hint}")))
    }

    async fn versions_of(&self, kind: Kind, name: &str) -> Result<Vec<u32>> {
        let prefix = format!("catalog.{kind}.{name}.");
        let keys = self.bucket.keys(&prefix).await?;
        let mut versions: Vec<u32> = keys.iter().filter_map(|k| k.strip_prefix(&prefix)?.parse().ok()).collect();
        versions.sort_unstable();
        Ok(versions)
    }

    async fn highest_version(&self, kind: Kind, name: &str) -> Result<u32> {
        Ok(self.versions_of(kind, name).await?.last().copied().unwrap_or(0))
    }

    /// Compare-and-set of `active.<kind>`: `next` maps the current choice (the default when
    /// none) to the new one.
    async fn update_active(
        &self,
        kind: Kind,
        next: impl Fn(&ActiveChoice) -> Result<ActiveChoice>,
    ) -> Result<ActiveChoice> {
        let key = format!("active.{kind}");
        for _ in 0..CAS_ATTEMPTS {
            let (current, revision) = match self.active(kind).await? {
                Some(found) => found,
                None => (self.default_choice(kind)?, 0),
            };
            let choice = next(&current)?;
            match self.bucket.update(&key, &choice, revision).await {
                Ok(_) => {
                    tracing::info!(%kind, plugin = %choice.name, version = %choice.version, by = %choice.by,
                        "plugin choice changed");
                    return Ok(choice);
                }
                Err(Error::Stale(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!("the {kind} choice kept changing under us; try again")))
    }
}

fn trim(history: &mut Vec<ChoiceRecord>) {
    if history.len() > HISTORY_MAX {
        history.drain(..history.len() - HISTORY_MAX);
    }
}

/// The bundled binary of built-in `name`.
fn bundled(kind: Kind, name: &str) -> Result<&'static [u8]> {
    quiver_plugins_bundled::find(kind.as_str(), name).map(|b| b.wasm).ok_or_else(|| {
        Error::NotFound(format!(
            "no bundled {kind} plugin {name:?}; bundled ones are {}",
            kind.builtin_names().join(", ")
        ))
    })
}

fn builtin_names() -> Vec<&'static str> {
    Kind::ALL.into_iter().flat_map(|k| k.builtin_names().iter().copied()).collect()
}

/// KV keys allow `[-/_=.a-zA-Z0-9]`; anything else in a node id becomes `_`.
fn node_key(node_id: &str) -> String {
    let safe: String =
        node_id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_=".contains(c) { c } else { '_' }).collect();
    format!("node.{safe}")
}
