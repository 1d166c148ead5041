//! The built-in `memory` balancer (evens out memory use, Milvus' rules; the default balancer) as a
//! `balancer-policy` component, which Quiver embeds (`quiver-plugins-bundled`) and loads like any
//! other plugin.
//!
//! The algorithm is `quiver_policy::balancer::MemoryBalancer`, the same code the native fallback
//! runs; this crate only exports it.

quiver_plugin_sdk::export_balancer!(quiver_plugin_sdk::balancer::MemoryBalancer);
