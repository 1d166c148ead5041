//! The built-in `static` discovery (only the operator's static member list) as a `discovery-policy`
//! component, which Quiver embeds (`quiver-plugins-bundled`) and loads like any other plugin.
//!
//! The algorithm is `quiver_policy::discovery::StaticDiscovery`, the same code the native fallback
//! runs; this crate only exports it.

quiver_plugin_sdk::export_discovery!(quiver_plugin_sdk::discovery::StaticDiscovery);
