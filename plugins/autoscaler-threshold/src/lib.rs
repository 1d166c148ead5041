//! The built-in `threshold` autoscaler (CPU and memory thresholds over a metrics window; the
//! default autoscaler) as an `autoscaler-policy` component, which Quiver embeds
//! (`quiver-plugins-bundled`) and loads like any other plugin.
//!
//! The algorithm is `quiver_policy::autoscaler::ThresholdAutoscaler`, the same code the native
//! fallback runs; this crate only exports it.

quiver_plugin_sdk::export_autoscaler!(quiver_plugin_sdk::autoscaler::ThresholdAutoscaler);
