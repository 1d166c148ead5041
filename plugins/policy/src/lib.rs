//! Quiver's policy algorithms as plain Rust with no dependencies, so the same code runs
//! natively in the proxy and coordinator and (in a later step) inside Wasm plugins.
//!
//! - [`Router`]: which node serves each sealed segment of a search (proxy). Default:
//!   [`Rendezvous`] — weighted rendezvous (HRW) hashing at segment level.
//! - [`Placement`]: which query node loads a new segment or leads a shard (coordinator).
//!   Default: [`MemoryPlacement`] — the node with the lowest memory use.

mod placement;
mod routing;

pub use placement::{MemoryPlacement, NodeMemory, Placement};
pub use routing::{hrw_score, NodeLoad, Rendezvous, Router, SegmentCandidates};

/// 64-bit FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
