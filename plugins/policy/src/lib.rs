//! Quiver's policy algorithms as plain Rust with no dependencies. The same code runs natively
//! (the built-in fallback in the proxy and coordinator) and inside the Wasm plugins built from
//! `plugins/*` with the plugin SDK, so there is exactly one copy of each algorithm.
//!
//! One module per policy kind, each mirroring its WIT interface in `wit/`:
//! - [`router`]: which node serves each sealed segment of a search (proxy).
//! - [`balancer`]: placement and move plans over query nodes (coordinator).
//! - [`discovery`]: membership and liveness from heartbeats (coordinator).
//! - [`autoscaler`]: replica size recommendations.
//!
//! [`builtin`] maps the names operators use in config to these implementations.

pub mod autoscaler;
pub mod balancer;
pub mod builtin;
pub mod discovery;
pub mod router;

/// 64-bit FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
