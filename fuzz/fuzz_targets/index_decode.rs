//! Index objects as a query node loads them (`VectorIndex::from_bytes`): a damaged object must
//! be refused before faiss reads it, never crash the node.
//!
//! Input: byte 0 picks the mode.
//! - even: the rest is an index object as is (header, checksum, faiss payload);
//! - odd: a real index (byte 1 picks FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ or HNSW, with L2, IP or
//!   COSINE) is serialized, then damaged by the rest of the input read as (offset, xor) edits
//!   and a truncation; unless the damage undid itself it must be refused.
//!
//! Bytes that pass the checksum are faiss' to read, and faiss' reader trusts what it reads
//! (list sizes, neighbour ids): libFuzzer forges checksums from its comparison traces within
//! seconds and then makes faiss allocate gigabytes. The checksum guards against damage, not
//! against whoever can write the object store, so forged objects (and unchecksummed version-1
//! ones) are not handed to faiss here. An intact object must load and answer a search.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quiver_actors::fuzzing::check_index_object;
use quiver_actors::vector::VectorIndex;
use quiver_schemas::{IndexParams, IndexType, MetricType, SearchParams};

const DIM: usize = 4;
const KINDS: [IndexType; 5] =
    [IndexType::Flat, IndexType::IvfFlat, IndexType::IvfSq8, IndexType::IvfPq, IndexType::Hnsw];
const METRICS: [MetricType; 3] = [MetricType::L2, MetricType::Ip, MetricType::Cosine];

/// One serialized index per (kind, metric), built once.
fn objects() -> &'static Vec<Vec<u8>> {
    static OBJECTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        let vectors: Vec<f32> = (0..300 * DIM).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
        let mut out = Vec::new();
        for kind in KINDS {
            for metric in METRICS {
                let params = IndexParams {
                    index_type: kind,
                    metric,
                    nlist: 4,
                    m: 2,
                    nbits: 4,
                    ef_construction: 16,
                    auto: false,
                    name: String::new(),
                };
                let index =
                    VectorIndex::build(&params, DIM, &vectors).unwrap_or_else(|e| panic!("{kind:?}/{metric:?}: {e}"));
                out.push(index.to_bytes().unwrap_or_else(|e| panic!("{kind:?}/{metric:?}: {e}")));
            }
        }
        out
    })
}

fn search(index: &VectorIndex) {
    if index.dim() == 0 || index.dim() > 4096 {
        return;
    }
    let query = vec![0.25; index.dim()];
    let _ = index.search(&query, 5, &SearchParams::default());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        if check_index_object(rest).is_err() {
            assert!(VectorIndex::from_bytes(rest).is_err(), "from_bytes took an object its checks refuse");
        }
        return;
    }
    let Some((&which, edits)) = rest.split_first() else { return };
    let objects = objects();
    let original = &objects[usize::from(which) % objects.len()];
    let mut bytes = original.clone();
    let mut chunks = edits.chunks_exact(4);
    for edit in &mut chunks {
        let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) * usize::from(edit[2].max(1)) % bytes.len();
        bytes[at] ^= edit[3];
    }
    if let [cut, ..] = chunks.remainder() {
        bytes.truncate(bytes.len() - usize::from(*cut).min(bytes.len()));
    }
    if bytes == *original {
        let index =
            VectorIndex::from_bytes(&bytes).unwrap_or_else(|e| panic!("an intact index object was refused: {e}"));
        search(&index);
    } else if check_index_object(&bytes).is_err() {
        assert!(VectorIndex::from_bytes(&bytes).is_err(), "a damaged index object was accepted");
    }
});
