//! Quiver's roles, each an actix actor supervised by the runtime:
//!
//! - [`coordinator`]: metadata, TSO and ids, segment lifecycle, placement, index tasks.
//! - [`proxy`]: the native NATS API, validation, the write path, scatter/gather reads.
//! - [`datanode`]: consumes the DML log, seals and flushes segments.
//! - [`indexnode`]: builds faiss indexes of sealed segments.
//! - [`querynode`]: serves sealed segments and growing rows; answers searches and gets.
//!
//! Shared pieces: [`node`] (the actor every role runs as), [`limits`] (what one read may ask
//! for, checked by proxy and query node alike), [`dml`] (reading shard logs),
//! [`rows`] (row storage and the segment file format), [`filter`] (evaluating filter
//! expressions into row bitmaps), [`vector`] (faiss indexes). `fuzzing` (hidden) is test
//! support: it reaches the private conversion and validation functions for the fuzz targets in
//! `fuzz/`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod coordinator;
pub mod datanode;
pub mod dml;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod indexnode;
pub mod limits;
pub mod node;
pub mod policies;
pub mod proxy;
pub mod querynode;
pub mod rows;
pub mod vector;

use std::sync::Arc;

use quiver_runtime::{RoleSpec, StartFn};
use quiver_schemas::{MetricType, Role};

/// Metric used by collections that have no index yet (as Milvus' AUTOINDEX default).
pub const DEFAULT_METRIC: MetricType = MetricType::Cosine;

/// The supervised spec of one role of this process.
pub fn role_spec(role: Role, node_id: String) -> RoleSpec {
    let start: StartFn = match role {
        Role::Coordinator => Arc::new(coordinator::start),
        Role::Proxy => Arc::new(proxy::start),
        Role::DataNode => Arc::new(datanode::start),
        Role::IndexNode => Arc::new(indexnode::start),
        Role::QueryNode => Arc::new(querynode::start),
    };
    RoleSpec { role, node_id, start }
}
