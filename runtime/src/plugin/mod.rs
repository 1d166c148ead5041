//! Wasm policy plugins: routing, balancing, discovery and autoscaling policies that run as
//! sandboxed WebAssembly components (WIT package `quiver:policy@0.1.0` in `wit/`), swapped at
//! runtime, with the native built-in of the same algorithm (crate `quiver-policy`) answering
//! whenever a plugin fails.
//!
//! ```text
//!   quiver ctl plugin load / activate / rollback
//!          │
//!          ▼
//!   PluginCatalog ──► object store   plugins/<kind>/<name>/<sha256>.wasm
//!          └────────► KV quiver_<cluster>_plugins
//!                       catalog.<kind>.<name>.<version>   active.<kind>   node.<node-id>
//!                                                             │ watch          ▲ status
//!                                                             ▼                │
//!   every proxy / coordinator:  PluginWatcher: fetch, compile, self-test, swap ┘
//!                                                             │
//!   caller ──► PolicySlot (ArcSwap<Active>, generation) ──► InstancePool ──► warm instance
//!                 │                                                      (deadline, memory cap)
//!                 └─ trap / timeout / memory / invalid output ──► native built-in answers
//! ```
//!
//! Layout, one concern per file:
//! - [`host`]: [`PluginHost`], one per process: the wasmtime engine with epoch interruption
//!   and its ticker thread, the sandbox linker, the compile cache (by sha256), and the checks a
//!   component must pass before it runs (imports, exports).
//! - `sandbox`: the inert WASI subset a plugin may import, per-instance limits, captured output.
//! - `bindings`: the generated bindings of the four worlds and conversions to `quiver-policy`;
//!   `fast_route`: a one-pass canonical-ABI path for the router's per-search call.
//! - `pool`: warm instances of one compiled plugin and a single call under the deadline.
//! - [`slot`]: [`PolicySlot`], the never-failing entry point of one policy kind with fallback,
//!   failure counting, switch-off and hot swap; [`kinds`] adds the typed methods per kind.
//! - [`samples`]: the built-in inputs of the self-test every version passes before it is published.
//! - [`catalog`]: [`PluginCatalog`], versions in the object store and NATS KV, activation,
//!   rollback, listing, inspection.
//! - [`watch`]: [`PluginWatcher`], the per-process task applying the cluster's choice.
//!
//! The per-call cost of a Wasm plugin against its native twin is measured outside, by
//! `quiver-bench plugins` (tools/bench), through the public slot API.

mod bindings;
pub mod catalog;
mod fast_route;
pub mod host;
pub mod kinds;
mod pool;
pub mod samples;
mod sandbox;
pub mod slot;
pub mod watch;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use catalog::{
    ActiveChoice, BuiltinPlugin, CatalogListing, ChoiceRecord, Inspection, NodePlugins, PluginCatalog, PluginVersion,
};
pub use host::{CompiledPlugin, PluginHost, SandboxSettings};
pub use kinds::{AutoscalerSlot, BalancerSlot, DiscoverySlot, NativePolicy, RouterSlot};
pub use slot::{FailureReason, ManagedSlot, PluginFailure, PluginSource, PolicySlot, SlotStatus};
pub use watch::PluginWatcher;

/// The four policy kinds, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `quiver:policy/router`, called by the proxy once per search.
    Router,
    /// `quiver:policy/balancer`, called by the coordinator for placement and move plans.
    Balancer,
    /// `quiver:policy/discovery`, called by the coordinator every reconcile tick.
    Discovery,
    /// `quiver:policy/autoscaler`, size recommendations.
    Autoscaler,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 4] = [Kind::Router, Kind::Balancer, Kind::Discovery, Kind::Autoscaler];

    /// The kind's name in config, KV keys, metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Router => "router",
            Kind::Balancer => "balancer",
            Kind::Discovery => "discovery",
            Kind::Autoscaler => "autoscaler",
        }
    }

    /// The exported interface a plugin of this kind provides, without its version.
    pub fn interface(self) -> &'static str {
        match self {
            Kind::Router => "quiver:policy/router",
            Kind::Balancer => "quiver:policy/balancer",
            Kind::Discovery => "quiver:policy/discovery",
            Kind::Autoscaler => "quiver:policy/autoscaler",
        }
    }

    /// Names of the built-in policies of this kind; the first is the default.
    pub fn builtin_names(self) -> &'static [&'static str] {
        use quiver_policy::builtin;
        match self {
            Kind::Router => builtin::ROUTERS,
            Kind::Balancer => builtin::BALANCERS,
            Kind::Discovery => builtin::DISCOVERIES,
            Kind::Autoscaler => builtin::AUTOSCALERS,
        }
    }

    /// The built-in the operator configured for this kind (`[plugins] router = ...`).
    pub fn configured(self, config: &crate::config::PluginsConfig) -> &str {
        match self {
            Kind::Router => &config.router,
            Kind::Balancer => &config.balancer,
            Kind::Discovery => &config.discovery,
            Kind::Autoscaler => &config.autoscaler,
        }
    }

    /// The kind whose built-ins include `name`, if any.
    pub fn of_builtin(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.builtin_names().contains(&name))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown plugin kind {s:?}: use one of router, balancer, discovery, autoscaler"
            ))
        })
    }
}

/// The version of the WIT package this host speaks; plugins must export its interfaces.
pub const WIT_VERSION: &str = "0.1.0";

/// Checks a plugin name: 1 to 64 of `a-z`, `0-9` and `-`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("invalid plugin name {name:?}: use 1 to 64 characters of a-z, 0-9 and '-'")))
    }
}

/// Lower-case hex of a sha256 digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// The first 12 hex digits of a sha256, as shown in status lines.
pub fn short_sha(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// A plugin version as operators name it: `builtin` (bundled with the binary), `native` (the
/// same built-in algorithm compiled into the binary, run without the sandbox) or a number
/// assigned by `quiver ctl plugin load`. In JSON: the string `"builtin"` / `"native"` or the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionRef {
    /// The plugin bundled with this binary under a built-in name.
    Builtin,
    /// The built-in algorithm of that name compiled into the binary: no Wasm, no sandbox (an
    /// escape hatch, and the baseline for measuring the sandbox's cost).
    Native,
    /// A version loaded into the cluster's catalog (1, 2, ...).
    Number(u32),
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Builtin => f.write_str("builtin"),
            VersionRef::Native => f.write_str("native"),
            VersionRef::Number(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for VersionRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<VersionRef> {
        match s {
            "builtin" => return Ok(VersionRef::Builtin),
            "native" => return Ok(VersionRef::Native),
            _ => {}
        }
        s.trim_start_matches('v').parse().map(VersionRef::Number).map_err(|_| {
            Error::InvalidArgument(format!(
                "invalid plugin version {s:?}: use a number such as 3, \"builtin\" or \"native\""
            ))
        })
    }
}

impl Serialize for VersionRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            VersionRef::Builtin => serializer.serialize_str("builtin"),
            VersionRef::Native => serializer.serialize_str("native"),
            VersionRef::Number(n) => serializer.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for VersionRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<VersionRef, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(VersionRef::Number(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}
