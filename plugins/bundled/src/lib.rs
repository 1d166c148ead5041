//! Quiver's default policy plugins as WebAssembly components, compiled at build time and
//! embedded in the binary, so a node can load the built-in policies through the same plugin
//! host as third-party ones (and fall back to them) without any file on disk.
//!
//! `build.rs` compiles the plugin crates under `plugins/` and `examples/plugin-router` for
//! `wasm32-wasip2` with the `plugin` profile (one nested cargo build, in
//! `<target dir>/wasm-plugins`); this file only embeds the results:
//! - [`BUNDLED`]: the nine defaults, one per built-in policy name; look one up with [`find`].
//! - [`EXAMPLE_ROUTER`]: the example latency-aware router, for tests and demos.
//! - [`testing`]: components that misbehave on purpose, for the host's tests.
//!
//! Building this crate needs the `wasm32-wasip2` target (`scripts/install-deps.sh` adds it).

use std::fmt;

/// Embeds a component built by `build.rs`.
macro_rules! component {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// A default policy plugin: one of the built-in policies compiled to a component.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bundled {
    /// The policy kind, which is also the WIT interface it exports: `"router"`, `"balancer"`,
    /// `"discovery"` or `"autoscaler"`.
    pub kind: &'static str,
    /// The built-in policy's name as operators write it in config (`quiver_policy::builtin`),
    /// e.g. `"rendezvous"`, `"round-robin"`, `"memory"`, `"heartbeat"`, `"threshold"`.
    pub name: &'static str,
    /// The component (a `wasm32-wasip2` `.wasm` file).
    pub wasm: &'static [u8],
}

impl fmt::Debug for Bundled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundled")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("wasm", &format_args!("<{} bytes>", self.wasm.len()))
            .finish()
    }
}

/// The nine default plugins, in the order of `quiver_policy::builtin`'s name lists (the first of
/// each kind is that kind's default).
pub const BUNDLED: &[Bundled] = &[
    Bundled { kind: "router", name: "rendezvous", wasm: component!("quiver_plugin_router_rendezvous.wasm") },
    Bundled { kind: "router", name: "round-robin", wasm: component!("quiver_plugin_router_round_robin.wasm") },
    Bundled { kind: "router", name: "hash", wasm: component!("quiver_plugin_router_hash.wasm") },
    Bundled { kind: "router", name: "least-loaded", wasm: component!("quiver_plugin_router_least_loaded.wasm") },
    Bundled { kind: "balancer", name: "memory", wasm: component!("quiver_plugin_balancer_memory.wasm") },
    Bundled { kind: "balancer", name: "row-count", wasm: component!("quiver_plugin_balancer_row_count.wasm") },
    Bundled { kind: "discovery", name: "heartbeat", wasm: component!("quiver_plugin_discovery_heartbeat.wasm") },
    Bundled { kind: "discovery", name: "static", wasm: component!("quiver_plugin_discovery_static.wasm") },
    Bundled { kind: "autoscaler", name: "threshold", wasm: component!("quiver_plugin_autoscaler_threshold.wasm") },
];

/// The default plugin of `kind` named `name`, if there is one.
pub fn find(kind: &str, name: &str) -> Option<&'static Bundled> {
    BUNDLED.iter().find(|b| b.kind == kind && b.name == name)
}

/// `examples/plugin-router`: a latency-aware router ("avoid slow nodes"), the example plugin
/// authors start from. Exports `quiver:policy/router`.
pub const EXAMPLE_ROUTER: &[u8] = component!("quiver_example_plugin_router.wasm");

/// Components for testing the plugin host. Never load them in a real cluster.
pub mod testing {
    /// `plugins/testing/hostile-router`: a router that misbehaves according to
    /// `request.collection`: 1 loops forever, 2 allocates until it traps, 3 traps (panics),
    /// 4 returns one entry too many, 5 returns node 9999 for every segment, 6 returns 1 << 22
    /// entries, 7 writes 1 MiB to stdout and to stderr and then answers correctly; any other
    /// collection is routed correctly with rendezvous hashing.
    pub const HOSTILE_ROUTER: &[u8] = component!("quiver_plugin_hostile_router.wasm");

    /// `plugins/testing/forbidden-import`: a router that reads a file and the wall clock, so the
    /// component imports `wasi:filesystem/{types,preopens}` and
    /// `wasi:clocks/{wall-clock,monotonic-clock}`. The host must refuse to load it.
    pub const FORBIDDEN_IMPORT: &[u8] = component!("quiver_plugin_forbidden_import.wasm");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component starts with the wasm magic and the component-model layer (0x0d 0x00, 0x01 0x00).
    fn is_component(wasm: &[u8]) -> bool {
        wasm.starts_with(b"\0asm\x0d\x00\x01\x00")
    }

    #[test]
    fn every_component_is_embedded() {
        for b in BUNDLED {
            assert!(is_component(b.wasm), "{b:?}");
        }
        assert!(is_component(EXAMPLE_ROUTER));
        assert!(is_component(testing::HOSTILE_ROUTER));
        assert!(is_component(testing::FORBIDDEN_IMPORT));
    }

    #[test]
    fn find_knows_every_default_by_its_config_name() {
        assert_eq!(BUNDLED.len(), 9);
        assert_eq!(find("router", "rendezvous").map(|b| b.name), Some("rendezvous"));
        assert_eq!(find("autoscaler", "threshold").map(|b| b.kind), Some("autoscaler"));
        assert!(find("router", "memory").is_none());
        let builtin = [
            ("router", quiver_policy::builtin::ROUTERS),
            ("balancer", quiver_policy::builtin::BALANCERS),
            ("discovery", quiver_policy::builtin::DISCOVERIES),
            ("autoscaler", quiver_policy::builtin::AUTOSCALERS),
        ];
        let expected: Vec<(&str, &str)> =
            builtin.iter().flat_map(|(kind, names)| names.iter().map(move |name| (*kind, *name))).collect();
        let bundled: Vec<(&str, &str)> = BUNDLED.iter().map(|b| (b.kind, b.name)).collect();
        assert_eq!(bundled, expected);
        assert!(find("balancer", "nope").is_none());
    }
}
