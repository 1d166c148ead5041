//! Plugin administration (`quiver ctl plugin load|activate|rollback|list`): the coordinator
//! validates binaries and records choices in the cluster's catalog (object store + NATS KV);
//! every proxy and coordinator follows the choices with its own watcher.

use quiver_runtime::plugin::{Kind, VersionRef};
use quiver_runtime::{Error, Result};
use quiver_schemas::{PluginActivate, PluginReport, PluginRollback, PluginUpload};
use serde::Serialize;

use super::Coordinator;

fn report<T: Serialize>(value: &T) -> Result<PluginReport> {
    Ok(PluginReport { json: serde_json::to_string(value).map_err(Error::internal)? })
}

impl Coordinator {
    pub(super) async fn plugin_load(&self, req: PluginUpload) -> Result<PluginReport> {
        let kind: Kind = req.kind.parse()?;
        let version = self.policies.catalog.load(kind, &req.name, req.wasm.into()).await?;
        report(&version)
    }

    pub(super) async fn plugin_activate(&self, req: PluginActivate) -> Result<PluginReport> {
        let version: VersionRef = req.version.parse()?;
        let choice = self.policies.catalog.activate(&req.name, version, "quiver ctl").await?;
        tracing::info!(kind = %choice.kind, name = %choice.name, version = %choice.version, "plugin activated");
        report(&choice)
    }

    pub(super) async fn plugin_rollback(&self, req: PluginRollback) -> Result<PluginReport> {
        let kind: Kind = req.kind.parse()?;
        let choice = self.policies.catalog.rollback(kind, "quiver ctl").await?;
        tracing::info!(kind = %choice.kind, name = %choice.name, version = %choice.version, "plugin rolled back");
        report(&choice)
    }

    pub(super) async fn plugin_list(&self) -> Result<PluginReport> {
        report(&self.policies.catalog.list().await?)
    }
}
