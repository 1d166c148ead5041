//! Every bus message type's `Wire::from_bytes`, and every service's `ServiceRequest::decode`,
//! on arbitrary bytes: no panic, and whatever decodes re-encodes to bytes that decode to the
//! same value (and re-encode to the same bytes: encoding is deterministic).
//!
//! Input: byte 0 picks the message type (index into the list below, which the seed generator
//! `src/bin/seed_corpus.rs` follows) or, past it, a service, and byte 1 one of its methods;
//! the rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_schemas::protocol::{
    ApiRequest, CoordRequest, DataNodeRequest, HostRequest, IndexNodeRequest, NodeControlRequest, QueryNodeRequest,
    ServiceRequest,
};
use quiver_schemas::*;

fn round_trip<T: Wire + std::fmt::Debug>(bytes: &[u8]) {
    let Ok(value) = T::from_bytes(bytes) else { return };
    let encoded = value.to_bytes();
    let again = T::from_bytes(&encoded)
        .unwrap_or_else(|e| panic!("{} re-encoded from {value:?} does not decode: {e}", std::any::type_name::<T>()));
    quiver_fuzz::same_debug(std::any::type_name::<T>(), &value, &again);
    assert_eq!(encoded, again.to_bytes(), "{}: encoding is not deterministic", std::any::type_name::<T>());
}

fn service<S: ServiceRequest>(method: u8, payload: &[u8]) {
    let name = S::METHODS[usize::from(method) % S::METHODS.len()];
    if let Ok(req) = S::decode(name, payload) {
        assert_eq!(req.method(), name);
    }
    // Unknown methods are refused, never panicked on.
    assert!(S::decode("no_such_method", payload).is_err());
}

macro_rules! dispatch {
    ($pick:expr, $bytes:expr; $($ty:ty),* $(,)?) => {{
        let types: &[fn(&[u8])] = &[$(round_trip::<$ty>),*];
        match types.get(usize::from($pick)) {
            Some(f) => {
                f($bytes);
                true
            }
            None => false,
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let handled = dispatch!(pick, rest;
        CreateCollection, CollectionName, Empty, CollectionList, CollectionDescription, CreateIndex, Insert,
        Delete, MutationResult, Get, Search, Query, QueryResults, SearchResults, NodeSearchResults, FlushResult,
        ClusterStatus, PluginUpload, PluginActivate, PluginRollback, PluginReport, Alloc, AllocRange, Stall,
        DmlEntry, SegmentFlushed, BuildIndex, IndexBuilt, LoadSegments, ReleaseSegments, NodeSearch, NodeGet,
        NodeQuery, GetResults, Distribution, LoadCollection, NodeStatus, WatchChannels, ScaleRequest, ScaleReply,
        ScalingStatus, ClusterEvents, SegmentChangeInfo, StartNode, StopNode, AutoscaleRequest, AutoscaleStatus,
        IdlingStatus,
    );
    if handled {
        return;
    }
    let Some((&method, payload)) = rest.split_first() else { return };
    match pick % 7 {
        0 => service::<ApiRequest>(method, payload),
        1 => service::<CoordRequest>(method, payload),
        2 => service::<QueryNodeRequest>(method, payload),
        3 => service::<DataNodeRequest>(method, payload),
        4 => service::<IndexNodeRequest>(method, payload),
        5 => service::<NodeControlRequest>(method, payload),
        _ => service::<HostRequest>(method, payload),
    }
});
