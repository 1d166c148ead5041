//! The built-in `least-loaded` router (the holder with the lowest expected cost from its requests
//! in flight and latency) as a `router-policy` component, which Quiver embeds
//! (`quiver-plugins-bundled`) and loads like any other plugin.
//!
//! The algorithm is `quiver_policy::router::LeastLoaded`, the same code the native fallback runs;
//! this crate only exports it.

quiver_plugin_sdk::export_router!(quiver_plugin_sdk::router::LeastLoaded);
