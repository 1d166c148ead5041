//! The built-in `heartbeat` discovery (liveness from heartbeat silence; the default discovery) as a
//! `discovery-policy` component, which Quiver embeds (`quiver-plugins-bundled`) and loads like any
//! other plugin.
//!
//! The algorithm is `quiver_policy::discovery::HeartbeatDiscovery`, the same code the native
//! fallback runs; this crate only exports it.

quiver_plugin_sdk::export_discovery!(quiver_plugin_sdk::discovery::HeartbeatDiscovery);
