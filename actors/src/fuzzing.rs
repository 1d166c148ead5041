//! Test support, not API: the functions the fuzz targets in `fuzz/` (docs/fuzzing.md) drive
//! with hostile input, re-exported from the private modules that own them. Everything here
//! takes untrusted bytes or values straight from a request, a bus message or a stored object.

/// The Milvus request conversions ([`crate::proxy::milvus`]'s `convert`) and the generated
/// protobuf types they read.
pub mod milvus {
    pub use crate::proxy::milvus::convert::{
        consistency_of, consistency_to, index_from, index_to, knobs_from, metric_from, output_fields,
        placeholder_group, rows_from, schema_from, schema_to, vectors_from, Knobs, PlaceholderGroup, PlaceholderValue,
    };
    pub use crate::proxy::milvus::proto;
}

/// What the proxy checks after converting a request, and what the coordinator checks before
/// it stores a schema or an index definition.
pub mod validate {
    pub use crate::coordinator::catalog::{validate_index, validate_schema};
    pub use crate::proxy::validate::{check_insert, check_output_fields, check_search};
}

/// The checks `VectorIndex::from_bytes` makes on an index object (header, checksum) before
/// faiss reads anything; `Ok` for objects faiss would be given.
pub fn check_index_object(bytes: &[u8]) -> Result<(), crate::vector::VectorError> {
    crate::vector::plan::split_object(bytes).map(drop)
}
