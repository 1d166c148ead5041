//! The index node: takes index-build tasks from its queue group, builds the faiss index of a
//! sealed segment and stores it next to the segment in the object store.

use std::rc::Rc;
use std::time::Instant;

use futures::future::LocalBoxFuture;
use quiver_runtime::bus::RequestContext;
use quiver_runtime::{telemetry, Error, Result, RoleContext};
use quiver_schemas::protocol::{keys, IndexNodeRequest};
use quiver_schemas::{BuildIndex, IndexBuilt};

use crate::node::{start_role, Node, RoleHandler};
use crate::rows::decode_segment;
use crate::vector::{BuildOptions, VectorIndex};

pub struct IndexNode {
    node: Node,
    building: std::cell::Cell<u32>,
}

/// Starts the index node role on the current arbiter.
pub fn start(rc: RoleContext) {
    start_role(rc, Box::new(|node| Box::pin(async move { Ok(IndexNode { node, building: Default::default() }) })));
}

impl IndexNode {
    /// OpenMP threads of one build: `indexnode.build_threads`, 0 = every core this process may
    /// use (a fractional cgroup quota rounds up).
    fn build_threads(&self) -> usize {
        match self.node.shared.config.indexnode.build_threads {
            0 => (telemetry::cpu_cores_allowed().ceil() as usize).max(1),
            n => n,
        }
    }

    async fn build(&self, task: BuildIndex) -> Result<IndexBuilt> {
        let started = Instant::now();
        let seg = &task.segment;
        let bytes = self.node.shared.objects.get(&seg.data_path).await?;
        self.building.set(self.building.get() + 1);
        let params = task.params.clone();
        let options = BuildOptions { simd: None, threads: Some(self.build_threads()) };
        let built = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let (_, rows) = decode_segment(&bytes)?;
            // The parameters were validated when the index was defined: a failure here is ours.
            let index = VectorIndex::build_with(&options, &params, rows.dim, &rows.vectors)
                .map_err(|e| Error::Internal(format!("faiss could not build the index: {e}")))?;
            index.to_bytes().map_err(|e| Error::Internal(e.to_string()))
        })
        .await;
        self.building.set(self.building.get().saturating_sub(1));
        let index_bytes = built.map_err(Error::internal)??;
        let index_path = keys::paths::segment_index(seg.collection, seg.id);
        self.node.shared.objects.put(&index_path, index_bytes.into()).await?;
        let build_ms = started.elapsed().as_millis() as u64;
        tracing::info!(segment = seg.id, rows = seg.rows, build_ms, threads = options.threads, "index built");
        Ok(IndexBuilt { segment: seg.id, collection: seg.collection, index_path, build_ms })
    }
}

/// Draining leaves the queue group, so no new build arrives; builds already running finish
/// (waited for as running requests). One cut off by `node.drain_timeout` is not lost: the
/// coordinator's request times out and it asks another index node.
impl RoleHandler for IndexNode {
    type Request = IndexNodeRequest;

    fn handle(self: Rc<Self>, req: IndexNodeRequest, _ctx: RequestContext) -> LocalBoxFuture<'static, Result<Vec<u8>>> {
        Box::pin(async move {
            match req {
                IndexNodeRequest::Build(r) => r.serve(|t| self.build(t)).await,
            }
        })
    }

    fn heartbeat(&self) -> (u32, String) {
        (0, format!("{} builds running", self.building.get()))
    }
}
