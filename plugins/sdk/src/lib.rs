//! The Quiver plugin SDK: write a routing, balancing, discovery or autoscaling policy in plain
//! Rust and ship it as a sandboxed WebAssembly component that Quiver loads at run time.
//!
//! A plugin implements one trait from [`quiver_policy`] — the same traits Quiver's built-in
//! policies implement — and exports it with one macro. The macro generates the component's
//! `quiver:policy` export and converts the host's WIT values to the policy types and back, so
//! the plugin never sees WIT. Because the trait is plain Rust, a plugin's unit tests run natively
//! with `cargo test`.
//!
//! | kind | world | trait | export macro | built-ins |
//! |------|-------|-------|--------------|-----------|
//! | [`router`] | `router-policy` | [`router::Router`] | [`export_router!`] | `Rendezvous`, `RoundRobin`, `HashRouter`, `LeastLoaded` |
//! | [`balancer`] | `balancer-policy` | [`balancer::Balancer`] | [`export_balancer!`] | `MemoryBalancer`, `RowCountBalancer` |
//! | [`discovery`] | `discovery-policy` | [`discovery::Discovery`] | [`export_discovery!`] | `HeartbeatDiscovery`, `StaticDiscovery` |
//! | [`autoscaler`] | `autoscaler-policy` | [`autoscaler::Autoscaler`] | [`export_autoscaler!`] | `ThresholdAutoscaler` |
//!
//! # Example: a router plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "my-router"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! quiver-plugin-sdk = { path = "…/plugins/sdk" }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use quiver_plugin_sdk::router::{Rendezvous, RouteRequest, Router};
//!
//! /// Rendezvous hashing, but a segment stays off nodes with more than 8 requests in flight
//! /// whenever one of its holders is less busy.
//! struct SpillBusy;
//!
//! impl Router for SpillBusy {
//!     fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
//!         let preferred = Rendezvous.route(request);
//!         let busy = |i: u32| request.nodes.get(i as usize).is_none_or(|n| n.in_flight > 8);
//!         request
//!             .segments
//!             .iter()
//!             .zip(preferred)
//!             .map(|(segment, choice)| match choice {
//!                 Some(node) if busy(node) => {
//!                     request.holders_of(segment).iter().copied().find(|&h| !busy(h)).or(choice)
//!                 }
//!                 _ => choice,
//!             })
//!             .collect()
//!     }
//! }
//!
//! quiver_plugin_sdk::export_router!(SpillBusy);
//!
//! # fn main() {
//! // The trait is plain Rust: test it natively.
//! let mut request = RouteRequest::default();
//! request.nodes = vec![
//!     quiver_plugin_sdk::router::NodeLoad::idle("a"),
//!     quiver_plugin_sdk::router::NodeLoad::idle("b"),
//! ];
//! request.push_segment(1, 1000, [0, 1]);
//! let routes = SpillBusy.route(&request);
//! assert!(request.check(&routes).is_ok());
//! # }
//! ```
//!
//! Build the component with the `wasm32-wasip2` target (`rustup target add wasm32-wasip2`):
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2   # target/wasm32-wasip2/release/my_router.wasm
//! ```
//!
//! then check it against recorded inputs with `quiver plugin test` and load it with
//! `quiver ctl plugin load router my-router FILE` (see `examples/plugin-router`).
//!
//! # Rules a plugin must follow
//!
//! - Be a pure function of its inputs. The host provides no filesystem, network, clock or
//!   randomness and refuses components that import them (`std::fs`, `std::time::SystemTime`,
//!   `std::net` …); the time, where a policy needs it, is an input.
//! - Answer within the host's deadline and memory limit. A trap, a timeout or an answer the
//!   host's checks reject (see `RouteRequest::check`, `ClusterView::check_plan`) makes the host
//!   fall back to the built-in policy for that call, and the failure is counted.
//! - Keep state out of the policy: the host may re-instantiate a plugin at any time.
//!
//! # Layout
//!
//! - [`router`], [`balancer`], [`discovery`], [`autoscaler`]: per kind, the policy types,
//!   trait and built-ins (re-exported from [`quiver_policy`]), `From` conversions to and from the
//!   WIT types (the kind's `wit` module), a `*_wit` function that is what the export does, and
//!   the export macro.
//! - [`bindings`]: the raw wit-bindgen output for the four worlds in `wit/`.

// The generated bindings name this crate by path (`runtime_path`, `default_bindings_module`),
// which must resolve inside the SDK as well as in plugin crates.
extern crate self as quiver_plugin_sdk;

pub mod autoscaler;
pub mod balancer;
pub mod bindings;
pub mod discovery;
pub mod router;

/// The policy crate itself, for anything not re-exported by the kind modules (e.g.
/// [`quiver_policy::fnv1a`], [`quiver_policy::builtin`]).
pub use quiver_policy as policy;

/// wit-bindgen's runtime support, named by the generated bindings (`runtime_path`) so that
/// plugin crates need no direct wit-bindgen dependency.
#[doc(hidden)]
pub use wit_bindgen::rt as __rt;
