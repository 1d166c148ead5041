//! A router plugin that reaches for the filesystem and the wall clock, so its component imports
//! `wasi:filesystem` and `wasi:clocks`. Plugins must be pure functions of their inputs: the host
//! has to refuse to load this component. Test-only.

use std::time::SystemTime;

use quiver_plugin_sdk::router::{Rendezvous, RouteRequest, Router};

/// Reads a file and the clock, then routes with rendezvous hashing (so a host that wrongly
/// loaded it would still get plausible answers, and only the import check catches it).
pub struct ForbiddenImportRouter;

impl Router for ForbiddenImportRouter {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        let file = std::fs::read("/etc/hostname").map(|bytes| bytes.len()).unwrap_or(0);
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        // Keep both calls (and so both imports) in the optimised component.
        std::hint::black_box((file, now));
        Rendezvous.route(request)
    }
}

quiver_plugin_sdk::export_router!(ForbiddenImportRouter);
