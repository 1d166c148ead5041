//! The raw bindings `wit_bindgen` generates from `wit/`, one module per world.
//!
//! Plugin authors rarely need these: the `export_*!` macros implement the generated `Guest`
//! traits on top of the [`quiver_policy`] traits and convert between the two sets of types.
//! They are public because those macros expand in the author's crate and name these paths, and
//! so that an author who prefers the WIT types can implement a `Guest` trait directly and export
//! it with the world's own macro, e.g. `quiver_plugin_sdk::bindings::router::export!(MyGuest);`
//! (the types live in `exports::quiver::policy::<kind>`, also reachable as
//! `quiver_plugin_sdk::<kind>::wit`).
//!
//! `runtime_path` points the generated code at the SDK's re-export of wit-bindgen's runtime, so
//! a plugin crate depends on this SDK alone.

/// Bindings for the `router-policy` world, which exports `quiver:policy/router@0.1.0`.
pub mod router {
    wit_bindgen::generate!({
        world: "router-policy",
        path: "../../wit",
        runtime_path: "quiver_plugin_sdk::__rt",
        pub_export_macro: true,
        default_bindings_module: "quiver_plugin_sdk::bindings::router",
    });
}

/// Bindings for the `balancer-policy` world, which exports `quiver:policy/balancer@0.1.0`.
pub mod balancer {
    wit_bindgen::generate!({
        world: "balancer-policy",
        path: "../../wit",
        runtime_path: "quiver_plugin_sdk::__rt",
        pub_export_macro: true,
        default_bindings_module: "quiver_plugin_sdk::bindings::balancer",
    });
}

/// Bindings for the `discovery-policy` world, which exports `quiver:policy/discovery@0.1.0`.
pub mod discovery {
    wit_bindgen::generate!({
        world: "discovery-policy",
        path: "../../wit",
        runtime_path: "quiver_plugin_sdk::__rt",
        pub_export_macro: true,
        default_bindings_module: "quiver_plugin_sdk::bindings::discovery",
    });
}

/// Bindings for the `autoscaler-policy` world, which exports `quiver:policy/autoscaler@0.1.0`.
pub mod autoscaler {
    wit_bindgen::generate!({
        world: "autoscaler-policy",
        path: "../../wit",
        runtime_path: "quiver_plugin_sdk::__rt",
        pub_export_macro: true,
        default_bindings_module: "quiver_plugin_sdk::bindings::autoscaler",
    });
}
