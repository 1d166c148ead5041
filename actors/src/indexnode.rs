//! The index node: takes index-build tasks from its queue group, builds the faiss index of a
//! sealed segment and stores it next to the segment in the object store.

use std::rc::Rc;
use std::time::Instant;

use async_nats::Message;
use futures::future::LocalBoxFuture;
use quiver_runtime::{Error, Result, RoleContext};
use quiver_schemas::{BuildIndex, IndexBuilt};

use crate::node::{start_role, Node, RoleHandler};
use crate::rows::decode_segment;
use crate::vector::VectorIndex;

pub struct IndexNode {
    node: Node,
    building: std::cell::Cell<u32>,
}

/// Starts the index node role on the current arbiter.
pub fn start(rc: RoleContext) {
    start_role(rc, Box::new(|node| Box::pin(async move { Ok(IndexNode { node, building: Default::default() }) })));
}

impl IndexNode {
    async fn build(&self, task: BuildIndex) -> Result<IndexBuilt> {
        let started = Instant::now();
        let seg = &task.segment;
        let bytes = self.node.shared.objects.get(&seg.data_path).await?;
        self.building.set(self.building.get() + 1);
        let params = task.params.clone();
        let built = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let (_, rows) = decode_segment(&bytes)?;
            let index = VectorIndex::build(&params, rows.dim, &rows.vectors)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            index.to_bytes().map_err(|e| Error::Internal(e.to_string()))
        })
        .await;
        self.building.set(self.building.get().saturating_sub(1));
        let index_bytes = built.map_err(Error::internal)??;
        let index_path = format!("collections/{}/segments/{}/index", seg.collection, seg.id);
        self.node.shared.objects.put(&index_path, index_bytes.into()).await?;
        let build_ms = started.elapsed().as_millis() as u64;
        tracing::info!(segment = seg.id, rows = seg.rows, build_ms, "index built");
        Ok(IndexBuilt { segment: seg.id, collection: seg.collection, index_path, build_ms })
    }
}

impl RoleHandler for IndexNode {
    fn subscriptions(&self, node: &Node) -> Vec<(String, Option<String>)> {
        vec![(node.shared.bus.subjects().index_build(), Some("indexnode".into()))]
    }

    fn handle(self: Rc<Self>, msg: Message) -> LocalBoxFuture<'static, ()> {
        Box::pin(async move {
            let node = self.node.clone();
            node.serve(&msg, |t| self.build(t)).await;
        })
    }

    fn heartbeat(&self) -> (u32, String) {
        (0, format!("{} builds running", self.building.get()))
    }
}
