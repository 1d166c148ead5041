//! A router plugin that misbehaves on demand, for testing the plugin host's defences (deadline,
//! memory cap, trap recovery, output validation, output size, captured stdio). Never load it in
//! a real cluster.
//!
//! The behaviour is chosen by `request.collection` (see [`Behaviour`]); any other collection is
//! routed correctly with rendezvous hashing, so the same instance can be checked to work before
//! and after an incident.

// Misbehaving is this crate's purpose: `panic!` is how it traps on request (collection 3).
#![allow(clippy::panic)]

use std::hint::black_box;
use std::io::Write;

use quiver_plugin_sdk::router::{Rendezvous, RouteRequest, Router};

/// What the plugin does for a request, keyed by `request.collection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Any other collection: answer correctly (rendezvous).
    Correct,
    /// 1: never return (the host's deadline must interrupt it).
    InfiniteLoop,
    /// 2: allocate and touch memory until allocation fails and the instance traps (the host's
    /// memory cap must stop it well before the machine runs out).
    MemoryBomb,
    /// 3: panic, which traps (`panic = "abort"`).
    Trap,
    /// 4: a correct answer plus one extra entry.
    WrongLength,
    /// 5: node 9999, which does not exist, for every segment.
    OutOfRange,
    /// 6: a list of 1 << 22 entries whatever the request.
    HugeOutput,
    /// 7: write 1 MiB to stdout and to stderr, then answer correctly.
    Chatty,
}

impl Behaviour {
    /// The behaviour for `collection`.
    pub fn for_collection(collection: u64) -> Behaviour {
        match collection {
            1 => Behaviour::InfiniteLoop,
            2 => Behaviour::MemoryBomb,
            3 => Behaviour::Trap,
            4 => Behaviour::WrongLength,
            5 => Behaviour::OutOfRange,
            6 => Behaviour::HugeOutput,
            7 => Behaviour::Chatty,
            _ => Behaviour::Correct,
        }
    }
}

/// The hostile router; see the crate docs.
pub struct HostileRouter;

impl Router for HostileRouter {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        match Behaviour::for_collection(request.collection) {
            Behaviour::Correct => Rendezvous.route(request),
            Behaviour::InfiniteLoop => spin(),
            Behaviour::MemoryBomb => exhaust_memory(),
            Behaviour::Trap => panic!("hostile router: deliberate trap (collection 3)"),
            Behaviour::WrongLength => {
                let mut routes = Rendezvous.route(request);
                routes.push(routes.first().copied().flatten());
                routes
            }
            Behaviour::OutOfRange => vec![Some(9999); request.segments.len()],
            Behaviour::HugeOutput => vec![Some(0); 1 << 22],
            Behaviour::Chatty => {
                let chunk = vec![b'x'; 1 << 20];
                // Errors are ignored: a host that closes or caps the streams must still get an
                // answer.
                let _ = std::io::stdout().write_all(&chunk).and_then(|()| std::io::stdout().flush());
                let _ = std::io::stderr().write_all(&chunk).and_then(|()| std::io::stderr().flush());
                Rendezvous.route(request)
            }
        }
    }
}

/// Loops forever without being optimised away.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates 1 MiB blocks and writes to every page of each (so the memory is really committed)
/// until allocation fails, which aborts and traps.
fn exhaust_memory() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        blocks.push(black_box(block));
    }
}

quiver_plugin_sdk::export_router!(HostileRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::router::NodeLoad;

    fn request(collection: u64) -> RouteRequest {
        let mut r = RouteRequest {
            collection,
            nodes: vec![NodeLoad::idle("a"), NodeLoad::idle("b")],
            ..RouteRequest::default()
        };
        r.push_segment(1, 10, [0, 1]);
        r.push_segment(2, 10, [1]);
        r
    }

    #[test]
    fn well_behaved_collections_route_correctly() {
        for collection in [0, 8, 42] {
            let r = request(collection);
            assert_eq!(HostileRouter.route(&r), Rendezvous.route(&r));
        }
    }

    #[test]
    fn bad_answers_are_rejected_by_the_check() {
        for collection in [4, 5, 6] {
            let r = request(collection);
            assert!(r.check(&HostileRouter.route(&r)).is_err(), "collection {collection}");
        }
        assert_eq!(HostileRouter.route(&request(6)).len(), 1 << 22);
    }
}
