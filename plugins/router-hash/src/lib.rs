//! The built-in `hash` router (modulo hashing, a fixed holder per segment) as a `router-policy`
//! component, which Quiver embeds (`quiver-plugins-bundled`) and loads like any other plugin.
//!
//! The algorithm is `quiver_policy::router::HashRouter`, the same code the native fallback runs;
//! this crate only exports it.

quiver_plugin_sdk::export_router!(quiver_plugin_sdk::router::HashRouter);
