//! Test helpers: a plugin host with chosen limits, and a real nats-server with JetStream on a
//! free port with its store in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use super::catalog::PluginCatalog;
use super::host::PluginHost;
use crate::bus::Bus;
use crate::config::{Config, PluginsConfig};
use crate::nats_server::{EmbeddedNats, SyncInterval};
use crate::objects::Objects;

/// A host with the default `[plugins]` except the call timeout.
pub(crate) fn host_with_timeout(call_timeout: Duration) -> Arc<PluginHost> {
    let config = PluginsConfig { call_timeout, ..PluginsConfig::default() };
    Arc::new(PluginHost::new(&config).unwrap())
}

/// A host with the default `[plugins]`.
pub(crate) fn host() -> Arc<PluginHost> {
    Arc::new(PluginHost::new(&PluginsConfig::default()).unwrap())
}

/// A running nats-server and the directories of one test cluster.
pub(crate) struct TestCluster {
    pub(crate) nats: EmbeddedNats,
    pub(crate) config: Config,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts nats-server (`-js`) on a free port; the object store is a temporary directory.
    pub(crate) async fn start(cluster: &str) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let nats =
            EmbeddedNats::start("nats-server", port, &dir.path().join("nats"), SyncInterval::Always).await.unwrap();
        let mut config = Config::default();
        config.cluster.name = cluster.to_string();
        config.cluster.data_dir = dir.path().join("data");
        TestCluster { nats, config, _dir: dir }
    }

    pub(crate) async fn bus(&self, name: &str) -> Bus {
        Bus::connect(self.nats.url(), &self.config.cluster.name, name, Duration::from_secs(5)).await.unwrap()
    }

    /// A catalog client on its own connection, validating with `host`.
    pub(crate) async fn catalog(&self, host: Arc<PluginHost>) -> PluginCatalog {
        let bus = self.bus("catalog").await;
        let objects = Objects::open(&self.config).unwrap();
        PluginCatalog::open(&bus, objects, host, 1).await.unwrap()
    }
}
