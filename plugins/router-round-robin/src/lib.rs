//! The built-in `round-robin` router (segments take turns over their holders from one search to the
//! next) as a `router-policy` component, which Quiver embeds (`quiver-plugins-bundled`) and loads
//! like any other plugin.
//!
//! The algorithm is `quiver_policy::router::RoundRobin`, the same code the native fallback runs;
//! this crate only exports it.

quiver_plugin_sdk::export_router!(quiver_plugin_sdk::router::RoundRobin);
