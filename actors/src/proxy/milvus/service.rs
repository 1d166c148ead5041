//! One method per Milvus RPC: translate the request, call the proxy's own code path, translate
//! the answer. Errors become a failed `common.Status` in an OK reply (as Milvus does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quiver_runtime::bus::{valid_request_id, RequestContext};
use quiver_runtime::{Error, Result};
use quiver_schemas::protocol::{api, coord, Call, QueueCall};
use quiver_schemas::{
    CollectionDescription, CollectionName, CompactRequest, CreateCollection, CreateIndex, CreateScalarIndex, Delete,
    Distribution, DropScalarIndex, Empty, Get, Insert, MutationResult as QMutation, PartitionRequest, PartitionState,
    Query, Search, COUNT_STAR,
};
use tonic::{Request, Response, Status};

use super::convert::{self, kv, ok, status_of, META};
use super::indexes::{self, DropTarget};
use super::proto::common::{self, LoadState};
use super::proto::milvus::milvus_service_server::MilvusService;
use super::proto::milvus::*;
use super::proto::schema as ms;
use super::segments;
use crate::proxy::Proxy;

/// The only database Quiver has.
const DEFAULT_DB: &str = "default";
/// Version reported to clients: the Milvus API level served.
const API_VERSION: &str = "v2.5.0";

pub struct MilvusApi {
    proxy: Arc<Proxy>,
    identifiers: AtomicI64,
}

impl MilvusApi {
    pub fn new(proxy: Arc<Proxy>) -> MilvusApi {
        let seed = quiver_runtime::bus::now_ms() as i64;
        MilvusApi { proxy, identifiers: AtomicI64::new(seed) }
    }

    async fn describe(&self, name: &str, ctx: &RequestContext) -> Result<CollectionDescription> {
        self.proxy.forward::<coord::DescribeCollection>(&CollectionName { name: name.to_string() }, ctx).await
    }

    async fn layout(&self, name: &str, ctx: &RequestContext) -> Result<Arc<Distribution>> {
        self.proxy.refresh(name, ctx).await
    }

    /// The collection a request names, by name or else by id (older clients send only the id).
    /// Milvus serves only indexed collections; so does Quiver behind this API.
    async fn check_indexed(&self, name: &str, ctx: &RequestContext) -> Result<()> {
        let info = self.proxy.collection(name, ctx).await?;
        if info.index.is_none() {
            let field = info.vector_field().map(|f| f.name.clone()).unwrap_or_default();
            return Err(Error::InvalidArgument(format!(
                "there is no vector index on field: [{field}], please create index firstly: collection={name}"
            )));
        }
        Ok(())
    }

    /// Forwards a partition change (create, drop, load, release) to the coordinator.
    async fn partition_call<C: QueueCall<Request = PartitionRequest, Reply = Empty>>(
        &self,
        collection: String,
        names: Vec<String>,
        replicas: u32,
        ctx: &RequestContext,
    ) -> Result<common::Status> {
        name_check(&collection)?;
        let req = PartitionRequest { collection: collection.clone(), names, replicas };
        self.proxy.forward_change::<C>(&collection, &req, ctx).await?;
        Ok(ok())
    }

    async fn name_or_id(&self, name: String, id: i64, ctx: &RequestContext) -> Result<String> {
        if !name.is_empty() {
            return Ok(name);
        }
        let list = self.proxy.forward::<coord::ListCollections>(&Empty {}, ctx).await?;
        for n in list.names {
            if self.describe(&n, ctx).await.is_ok_and(|d| d.info.id as i64 == id) {
                return Ok(n);
            }
        }
        Err(Error::CollectionNotFound(format!("collection {id} not found")))
    }

    async fn compaction_job(&self, id: i64, ctx: &RequestContext) -> Result<quiver_schemas::CompactionState> {
        let id = u64::try_from(id)
            .map_err(|_| Error::InvalidArgument(format!("compaction id {id} is invalid: ids are not negative")))?;
        self.proxy.forward::<coord::CompactionState>(&quiver_schemas::CompactionJobId { id }, ctx).await
    }
}

/// Milvus' state of a compaction job.
fn compaction_state_of(job: &quiver_schemas::CompactionState) -> common::CompactionState {
    if job.is_done() {
        common::CompactionState::Completed
    } else {
        common::CompactionState::Executing
    }
}

/// The context of a gRPC call: its deadline (`grpc-timeout`, which clients set from their
/// `timeout=`) and its W3C trace context (`traceparent` metadata).
fn context_of<T>(req: &Request<T>) -> RequestContext {
    let meta = req.metadata();
    let mut ctx = match meta.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(grpc_timeout) {
        Some(timeout) => RequestContext::with_timeout(timeout),
        None => RequestContext::background(),
    };
    ctx.traceparent = meta.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
    // pymilvus sends `client_request_id=` as `client-request-id`; it is sent again unchanged
    // when pymilvus retries a call whose connection broke, so an insert with keys is stored once.
    ctx.request_id = meta
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| valid_request_id(id))
        .map(str::to_string);
    ctx
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Responses that carry a `common.Status`, so a failure can be answered uniformly.
trait Failed: Default {
    fn failed(status: common::Status) -> Self;
}

macro_rules! failed {
    ($($t:ty),* $(,)?) => {$(
        impl Failed for $t {
            fn failed(status: common::Status) -> Self {
                Self { status: Some(status), ..Default::default() }
            }
        }
    )*};
}

failed!(
    BoolResponse,
    DescribeCollectionResponse,
    GetCollectionStatisticsResponse,
    ShowCollectionsResponse,
    GetLoadingProgressResponse,
    GetLoadStateResponse,
    DescribeIndexResponse,
    MutationResult,
    SearchResults,
    FlushResponse,
    QueryResults,
    GetFlushStateResponse,
    GetReplicasResponse,
    ComponentStates,
    GetVersionResponse,
    CheckHealthResponse,
    ConnectResponse,
    AllocTimestampResponse,
    ListDatabasesResponse,
    DescribeDatabaseResponse,
    GetPersistentSegmentInfoResponse,
    GetQuerySegmentInfoResponse,
    ManualCompactionResponse,
    GetCompactionStateResponse,
    GetCompactionPlansResponse,
    GetPartitionStatisticsResponse,
    ShowPartitionsResponse,
);

impl Failed for common::Status {
    fn failed(status: common::Status) -> Self {
        status
    }
}

/// Answers `result`, a failure as a failed status; records the call's latency and outcome.
fn answer<T: Failed>(method: &'static str, started: Instant, result: Result<T>) -> Result<Response<T>, Status> {
    metrics::histogram!("quiver_milvus_request_seconds", "method" => method).record(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("quiver_milvus_requests_total", "method" => method, "outcome" => outcome).increment(1);
    Ok(Response::new(match result {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(method, error = %e, "Milvus API call failed");
            quiver_runtime::trace::record_error(&tracing::Span::current(), &e);
            T::failed(status_of(&e))
        }
    }))
}

/// Refuses databases other than `default` (from the request field or the `dbname` header).
fn check_db<T>(req: &Request<T>, field: &str) -> Result<()> {
    let header = req.metadata().get("dbname").and_then(|v| v.to_str().ok()).unwrap_or("");
    for db in [field, header] {
        if !db.is_empty() && db != DEFAULT_DB {
            return Err(Error::NotFound(format!("database not found[database={db}]: Quiver has only \"default\"")));
        }
    }
    Ok(())
}

fn name_check(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument("collection name should not be empty".into()));
    }
    Ok(())
}

fn mutation(pks: &[quiver_schemas::PrimaryKey], ts: u64) -> MutationResult {
    MutationResult {
        status: Some(ok()),
        i_ds: Some(convert::ids_to(pks)),
        succ_index: (0..pks.len() as u32).collect(),
        timestamp: ts,
        ..Default::default()
    }
}

/// A stable numeric id for a node name (Milvus node ids are integers).
pub(super) fn node_number(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

fn round(score: f32, digits: i32) -> f32 {
    if digits < 0 {
        return score;
    }
    let f = 10f64.powi(digits.min(10));
    ((f64::from(score) * f).round() / f) as f32
}

#[tonic::async_trait]
impl MilvusService for MilvusApi {
    async fn connect(&self, req: Request<ConnectRequest>) -> Result<Response<ConnectResponse>, Status> {
        let t = Instant::now();
        let result = check_db(&req, "").map(|()| ConnectResponse {
            status: Some(ok()),
            server_info: Some(common::ServerInfo {
                build_tags: format!("quiver {}", env!("CARGO_PKG_VERSION")),
                deploy_mode: "QUIVER".into(),
                ..Default::default()
            }),
            identifier: self.identifiers.fetch_add(1, Ordering::Relaxed),
        });
        answer("Connect", t, result)
    }

    async fn create_collection(
        &self,
        req: Request<CreateCollectionRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            name_check(&r.collection_name)?;
            let schema = convert::schema_from(&r.collection_name, &r.schema, r.shards_num, r.consistency_level)?;
            // Milvus serves a new collection only after LoadCollection; so does Quiver behind this
            // API. Creating an existing collection again (same schema) leaves its state alone.
            let existed = self.describe(&schema.name, &ctx).await.is_ok();
            self.proxy.forget(&schema.name);
            self.proxy.forward::<coord::CreateCollection>(&CreateCollection { schema }, &ctx).await?;
            if !existed {
                self.proxy.release(&r.collection_name, &ctx).await?;
            }
            Ok(ok())
        }
        .await;
        answer("CreateCollection", t, result)
    }

    async fn drop_collection(&self, req: Request<DropCollectionRequest>) -> Result<Response<common::Status>, Status> {
        super::authorize(&req, <api::DropCollection as Call>::METHOD, "PrivilegeDropCollection")?;
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let name = req.into_inner().collection_name;
            let out = self.proxy.forward::<coord::DropCollection>(&CollectionName { name: name.clone() }, &ctx).await;
            self.proxy.forget(&name);
            match out {
                // Dropping what does not exist succeeds, as in Milvus.
                Ok(_) | Err(Error::CollectionNotFound(_)) => Ok(ok()),
                Err(e) => Err(e),
            }
        }
        .await;
        answer("DropCollection", t, result)
    }

    async fn has_collection(&self, req: Request<HasCollectionRequest>) -> Result<Response<BoolResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            match self.describe(&req.get_ref().collection_name, &ctx).await {
                Ok(_) => Ok(BoolResponse { status: Some(ok()), value: true }),
                Err(Error::CollectionNotFound(_)) => Ok(BoolResponse { status: Some(ok()), value: false }),
                Err(e) => Err(e),
            }
        }
        .await;
        answer("HasCollection", t, result)
    }

    async fn describe_collection(
        &self,
        req: Request<DescribeCollectionRequest>,
    ) -> Result<Response<DescribeCollectionResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let d = self.describe(&req.get_ref().collection_name, &ctx).await?;
            let info = &d.info;
            Ok(DescribeCollectionResponse {
                status: Some(ok()),
                schema: Some(convert::schema_to(info)),
                collection_id: info.id as i64,
                virtual_channel_names: (0..info.schema.num_shards).map(|s| channel(info.id, s)).collect(),
                physical_channel_names: (0..info.schema.num_shards).map(|s| channel(info.id, s)).collect(),
                created_timestamp: info.created_ts,
                created_utc_timestamp: quiver_schemas::ts_physical_ms(info.created_ts),
                shards_num: info.schema.num_shards as i32,
                consistency_level: convert::consistency_to(info.schema.consistency) as i32,
                collection_name: info.schema.name.clone(),
                db_name: DEFAULT_DB.into(),
                num_partitions: info.partition_list().iter().filter(|p| p.state != PartitionState::Dropped).count()
                    as i64,
                update_timestamp: info.created_ts,
                ..Default::default()
            })
        }
        .await;
        answer("DescribeCollection", t, result)
    }

    async fn show_collections(
        &self,
        req: Request<ShowCollectionsRequest>,
    ) -> Result<Response<ShowCollectionsResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let list = self.proxy.forward::<coord::ListCollections>(&Empty {}, &ctx).await?;
            Ok(ShowCollectionsResponse { status: Some(ok()), collection_names: list.names, ..Default::default() })
        }
        .await;
        answer("ShowCollections", t, result)
    }

    async fn get_collection_statistics(
        &self,
        req: Request<GetCollectionStatisticsRequest>,
    ) -> Result<Response<GetCollectionStatisticsResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let d = self.describe(&req.get_ref().collection_name, &ctx).await?;
            Ok(GetCollectionStatisticsResponse { status: Some(ok()), stats: vec![kv("row_count", d.num_rows)] })
        }
        .await;
        answer("GetCollectionStatistics", t, result)
    }

    async fn load_collection(&self, req: Request<LoadCollectionRequest>) -> Result<Response<common::Status>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            if r.refresh {
                return self.refresh_load(&r.collection_name, &ctx).await;
            }
            self.check_indexed(&r.collection_name, &ctx).await?;
            self.proxy.load(&r.collection_name, r.replica_number.max(1) as u32, &ctx).await?;
            Ok(ok())
        }
        .await;
        answer("LoadCollection", t, result)
    }

    async fn release_collection(
        &self,
        req: Request<ReleaseCollectionRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            self.proxy.release(&req.get_ref().collection_name, &ctx).await?;
            Ok(ok())
        }
        .await;
        answer("ReleaseCollection", t, result)
    }

    async fn create_partition(&self, req: Request<CreatePartitionRequest>) -> Result<Response<common::Status>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            self.partition_call::<coord::CreatePartition>(r.collection_name, vec![r.partition_name], 0, &ctx).await
        }
        .await;
        answer("CreatePartition", t, result)
    }

    async fn drop_partition(&self, req: Request<DropPartitionRequest>) -> Result<Response<common::Status>, Status> {
        super::authorize(&req, <api::DropPartition as Call>::METHOD, "PrivilegeDropPartition")?;
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            self.partition_call::<coord::DropPartition>(r.collection_name, vec![r.partition_name], 0, &ctx).await
        }
        .await;
        answer("DropPartition", t, result)
    }

    async fn has_partition(&self, req: Request<HasPartitionRequest>) -> Result<Response<BoolResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.get_ref();
            let info = self.describe(&r.collection_name, &ctx).await?.info;
            Ok(BoolResponse { status: Some(ok()), value: info.partition(&r.partition_name).is_some() })
        }
        .await;
        answer("HasPartition", t, result)
    }

    async fn load_partitions(&self, req: Request<LoadPartitionsRequest>) -> Result<Response<common::Status>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            if r.refresh {
                return self.refresh_load(&r.collection_name, &ctx).await;
            }
            self.check_indexed(&r.collection_name, &ctx).await?;
            let replicas = r.replica_number.max(1) as u32;
            self.partition_call::<coord::LoadPartitions>(r.collection_name, r.partition_names, replicas, &ctx).await
        }
        .await;
        answer("LoadPartitions", t, result)
    }

    async fn release_partitions(
        &self,
        req: Request<ReleasePartitionsRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            self.partition_call::<coord::ReleasePartitions>(r.collection_name, r.partition_names, 0, &ctx).await
        }
        .await;
        answer("ReleasePartitions", t, result)
    }

    /// `row_count`: the partition's rows, counted by a query (the collection must be loaded;
    /// Milvus counts flushed rows, Quiver growing ones too).
    async fn get_partition_statistics(
        &self,
        req: Request<GetPartitionStatisticsRequest>,
    ) -> Result<Response<GetPartitionStatisticsResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            let query = Query {
                collection: r.collection_name,
                filter: String::new(),
                output_fields: vec![COUNT_STAR.into()],
                limit: 0,
                offset: 0,
                consistency: quiver_schemas::Consistency::Strong,
                partitions: vec![r.partition_name],
            };
            let rows = self.proxy.query(query, &ctx).await?.rows;
            let count = match rows.columns.first().and_then(|c| c.values.first()) {
                Some(quiver_schemas::ScalarValue::Int64(n)) => (*n).max(0) as u64,
                _ => 0,
            };
            Ok(GetPartitionStatisticsResponse { status: Some(ok()), stats: vec![kv("row_count", count)] })
        }
        .await;
        answer("GetPartitionStatistics", t, result)
    }

    async fn show_partitions(
        &self,
        req: Request<ShowPartitionsRequest>,
    ) -> Result<Response<ShowPartitionsResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            quiver_schemas::check_partition_names(&r.partition_names).map_err(Error::InvalidArgument)?;
            let name = self.name_or_id(r.collection_name, r.collection_id, &ctx).await?;
            let dist = self.layout(&name, &ctx).await?;
            let info = &dist.collection;
            let mut out = ShowPartitionsResponse { status: Some(ok()), ..Default::default() };
            for p in info.partition_list().into_iter().filter(|p| p.state != PartitionState::Dropped) {
                if !r.partition_names.is_empty() && !r.partition_names.contains(&p.name) {
                    continue;
                }
                let loaded = !dist.released && p.state == PartitionState::Loaded;
                out.partition_names.push(p.name);
                out.partition_i_ds.push(i64::from(p.id));
                out.created_timestamps.push(p.created_ts);
                out.created_utc_timestamps.push(quiver_schemas::ts_physical_ms(p.created_ts));
                #[allow(deprecated)]
                out.in_memory_percentages.push(if loaded { load_progress(&dist) } else { 0 });
            }
            Ok(out)
        }
        .await;
        answer("ShowPartitions", t, result)
    }

    async fn get_loading_progress(
        &self,
        req: Request<GetLoadingProgressRequest>,
    ) -> Result<Response<GetLoadingProgressResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let dist = self.layout(&req.get_ref().collection_name, &ctx).await?;
            let progress = load_progress(&dist);
            let refresh_progress = if dist.released { progress } else { segments::refresh_progress(&dist, progress) };
            Ok(GetLoadingProgressResponse { status: Some(ok()), progress, refresh_progress })
        }
        .await;
        answer("GetLoadingProgress", t, result)
    }

    async fn get_load_state(
        &self,
        req: Request<GetLoadStateRequest>,
    ) -> Result<Response<GetLoadStateResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let dist = self.layout(&req.get_ref().collection_name, &ctx).await?;
            let mut released = false;
            quiver_schemas::check_partition_names(&req.get_ref().partition_names).map_err(Error::InvalidArgument)?;
            for name in &req.get_ref().partition_names {
                let missing = || Error::InvalidArgument(dist.collection.missing_partition(name));
                let p = dist.collection.partition(name).ok_or_else(missing)?;
                released |= p.state != PartitionState::Loaded;
            }
            let state = if dist.released || released {
                LoadState::NotLoad
            } else if load_progress(&dist) < 100 {
                LoadState::Loading
            } else {
                LoadState::Loaded
            };
            Ok(GetLoadStateResponse { status: Some(ok()), state: state as i32 })
        }
        .await;
        answer("GetLoadState", t, result)
    }

    async fn create_index(&self, req: Request<CreateIndexRequest>) -> Result<Response<common::Status>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            let d = self.describe(&r.collection_name, &ctx).await?;
            let field = d.info.schema.fields.iter().find(|f| f.name == r.field_name);
            match field {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "cannot create index on non-exist field: {} (collection {:?})",
                        r.field_name, r.collection_name
                    )))
                }
                Some(f) if f.data_type != quiver_schemas::DataType::FloatVector => {
                    let index = indexes::scalar_index_from(f, &r.index_name, &r.extra_params)?;
                    let req = CreateScalarIndex { collection: r.collection_name.clone(), index };
                    self.proxy.forward_change::<coord::CreateScalarIndex>(&r.collection_name, &req, &ctx).await?;
                    return Ok(ok());
                }
                Some(f) => indexes::check_vector_request(f, &r.extra_params)?,
            }
            let mut params = convert::index_from(&r.extra_params)?;
            if r.index_name != r.field_name {
                params.name = r.index_name.clone();
            }
            let req = CreateIndex { collection: r.collection_name.clone(), params };
            let out = self.proxy.forward_change::<coord::CreateIndex>(&r.collection_name, &req, &ctx).await;
            out.map(|_| ok())
        }
        .await;
        answer("CreateIndex", t, result)
    }

    async fn describe_index(
        &self,
        req: Request<DescribeIndexRequest>,
    ) -> Result<Response<DescribeIndexResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            let dist = self.layout(&r.collection_name, &ctx).await?;
            let mut found = indexes::descriptions(&dist);
            found.retain(|d| {
                (r.index_name.is_empty() || r.index_name == d.index_name)
                    && (r.field_name.is_empty() || r.field_name == d.field_name)
            });
            if found.is_empty() {
                return Err(index_not_found(&r.collection_name));
            }
            Ok(DescribeIndexResponse { status: Some(ok()), index_descriptions: found })
        }
        .await;
        answer("DescribeIndex", t, result)
    }

    async fn drop_index(&self, req: Request<DropIndexRequest>) -> Result<Response<common::Status>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            let dist = self.layout(&r.collection_name, &ctx).await?;
            match indexes::drop_target(&dist, &r.index_name, &r.field_name)? {
                DropTarget::Vector => {
                    self.proxy.drop_index(&r.collection_name, &ctx).await?;
                }
                DropTarget::Scalar(name) => {
                    let req = DropScalarIndex { collection: r.collection_name.clone(), name };
                    self.proxy.forward_change::<coord::DropScalarIndex>(&r.collection_name, &req, &ctx).await?;
                }
                DropTarget::Nothing => {}
            }
            Ok(ok())
        }
        .await;
        answer("DropIndex", t, result)
    }

    async fn insert(&self, req: Request<InsertRequest>) -> Result<Response<MutationResult>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            let info = self.proxy.collection(&r.collection_name, &ctx).await?;
            let rows = convert::rows_from(&info, &r.fields_data, r.num_rows, false)?;
            let n = rows.num_rows() as i64;
            let insert = Insert { collection: r.collection_name, rows, partition: r.partition_name };
            let out: QMutation = self.proxy.insert(insert, &ctx).await?;
            Ok(MutationResult { insert_cnt: n, ..mutation(&out.pks, out.timestamp) })
        }
        .await;
        answer("Insert", t, result)
    }

    async fn upsert(&self, req: Request<UpsertRequest>) -> Result<Response<MutationResult>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            let info = self.proxy.collection(&r.collection_name, &ctx).await?;
            let rows = convert::rows_from(&info, &r.fields_data, r.num_rows, true)?;
            let n = rows.num_rows() as i64;
            let upsert = Insert { collection: r.collection_name, rows, partition: r.partition_name };
            let out = self.proxy.upsert(upsert, &ctx).await?;
            Ok(MutationResult { upsert_cnt: n, insert_cnt: n, delete_cnt: n, ..mutation(&out.pks, out.timestamp) })
        }
        .await;
        answer("Upsert", t, result)
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<MutationResult>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            if r.expr.trim().is_empty() {
                return Err(Error::InvalidArgument("delete needs a filter expression (expr)".into()));
            }
            let del =
                Delete { collection: r.collection_name, pks: Vec::new(), filter: r.expr, partition: r.partition_name };
            let out = self.proxy.delete(del, &ctx).await?;
            // pymilvus reads `delete_cnt`; the ids stay empty, as Milvus leaves them.
            Ok(MutationResult {
                status: Some(ok()),
                delete_cnt: out.count as i64,
                timestamp: out.timestamp,
                ..Default::default()
            })
        }
        .await;
        answer("Delete", t, result)
    }

    async fn search(&self, req: Request<SearchRequest>) -> Result<Response<SearchResults>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            self.run_search(r, &ctx).await
        }
        .await;
        answer("Search", t, result)
    }

    async fn hybrid_search(&self, req: Request<HybridSearchRequest>) -> Result<Response<SearchResults>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            self.run_hybrid(req.into_inner(), &ctx).await
        }
        .await;
        answer("HybridSearch", t, result)
    }

    async fn flush(&self, req: Request<FlushRequest>) -> Result<Response<FlushResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            let mut out = FlushResponse { status: Some(ok()), db_name: DEFAULT_DB.into(), ..Default::default() };
            let ctx = &ctx;
            let flush = |r: CollectionName| async move { self.proxy.forward::<coord::Flush>(&r, ctx).await };
            for name in r.collection_names {
                let flushed = self.proxy.read_awake(ctx, CollectionName { name: name.clone() }, flush).await?;
                let ids: Vec<i64> = flushed.segments.iter().map(|&s| s as i64).collect();
                let ts = self.proxy.alloc::<coord::AllocTs>(1, ctx).await?;
                out.coll_seg_i_ds.insert(name.clone(), ms::LongArray { data: ids.clone() });
                out.flush_coll_seg_i_ds.insert(name.clone(), ms::LongArray { data: ids });
                out.coll_seal_times.insert(name.clone(), (quiver_schemas::ts_physical_ms(ts) / 1000) as i64);
                out.coll_flush_ts.insert(name, ts);
            }
            Ok(out)
        }
        .await;
        answer("Flush", t, result)
    }

    async fn query(&self, req: Request<QueryRequest>) -> Result<Response<QueryResults>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            self.run_query(req.into_inner(), &ctx).await
        }
        .await;
        answer("Query", t, result)
    }

    async fn get_flush_state(
        &self,
        req: Request<GetFlushStateRequest>,
    ) -> Result<Response<GetFlushStateResponse>, Status> {
        let t = Instant::now();
        // Always true, and rightly so: a Quiver segment gets its id when it is sealed and is
        // reported only once its object is durable, so every id a Flush returned is flushed,
        // and Flush returns only after everything before it was sealed. Milvus' datacoord
        // also counts ids it does not know (compacted, dropped) as flushed; it says false
        // only for segments still growing, which in Quiver have no id to ask about.
        let result = check_db(&req, &req.get_ref().db_name)
            .map(|()| GetFlushStateResponse { status: Some(ok()), flushed: true });
        answer("GetFlushState", t, result)
    }

    async fn get_persistent_segment_info(
        &self,
        req: Request<GetPersistentSegmentInfoRequest>,
    ) -> Result<Response<GetPersistentSegmentInfoResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let dist = self.layout(&req.get_ref().collection_name, &ctx).await?;
            Ok(GetPersistentSegmentInfoResponse { status: Some(ok()), infos: segments::persistent(&dist) })
        }
        .await;
        answer("GetPersistentSegmentInfo", t, result)
    }

    async fn get_query_segment_info(
        &self,
        req: Request<GetQuerySegmentInfoRequest>,
    ) -> Result<Response<GetQuerySegmentInfoResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let name = &req.get_ref().collection_name;
            let dist = self.layout(name, &ctx).await?;
            if dist.released {
                return Err(Error::not_loaded(name));
            }
            Ok(GetQuerySegmentInfoResponse { status: Some(ok()), infos: segments::loaded(&dist) })
        }
        .await;
        answer("GetQuerySegmentInfo", t, result)
    }

    async fn manual_compaction(
        &self,
        req: Request<ManualCompactionRequest>,
    ) -> Result<Response<ManualCompactionResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            if r.major_compaction {
                return Err(Error::InvalidArgument(
                    "clustering compaction (is_clustering=True) is not supported: Quiver has no clustering keys; \
                     call compact without it to merge small segments and drop deleted rows"
                        .into(),
                ));
            }
            // `partition_id`, `channel` and `segment_ids` narrow Milvus' compaction; Quiver
            // compacts the whole collection (its only partition), which includes them. An L0
            // compaction (`l0Compaction`) applies deletes: Quiver's plain compaction does.
            // `target_size` (MB, Milvus 2.6) asks for a force merge into segments that size.
            let name = self.name_or_id(r.collection_name, r.collection_id, &ctx).await?;
            let request = match r.target_size {
                size if size > 0 => {
                    let info = self.proxy.collection(&name, &ctx).await?;
                    CompactRequest { name, force: true, target_rows: convert::rows_in_megabytes(&info, size as u64) }
                }
                _ => CompactRequest { name, ..CompactRequest::default() },
            };
            let job = self.proxy.forward::<coord::Compact>(&request, &ctx).await?;
            Ok(ManualCompactionResponse {
                status: Some(ok()),
                compaction_id: job.id as i64,
                compaction_plan_count: job.plans.len() as i32,
            })
        }
        .await;
        answer("ManualCompaction", t, result)
    }

    async fn get_compaction_state(
        &self,
        req: Request<GetCompactionStateRequest>,
    ) -> Result<Response<GetCompactionStateResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            let job = self.compaction_job(req.get_ref().compaction_id, &ctx).await?;
            let count = |state: &str| job.plans.iter().filter(|p| p.state == state).count() as i64;
            Ok(GetCompactionStateResponse {
                status: Some(ok()),
                state: compaction_state_of(&job) as i32,
                executing_plan_no: count(quiver_schemas::CompactionState::EXECUTING),
                timeout_plan_no: 0,
                completed_plan_no: count(quiver_schemas::CompactionState::COMPLETED),
                failed_plan_no: count(quiver_schemas::CompactionState::FAILED),
            })
        }
        .await;
        answer("GetCompactionState", t, result)
    }

    async fn get_compaction_state_with_plans(
        &self,
        req: Request<GetCompactionPlansRequest>,
    ) -> Result<Response<GetCompactionPlansResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            let job = self.compaction_job(req.get_ref().compaction_id, &ctx).await?;
            let merge_infos = job
                .plans
                .iter()
                .map(|p| CompactionMergeInfo {
                    sources: p.sources.iter().map(|&s| s as i64).collect(),
                    target: p.target as i64,
                })
                .collect();
            Ok(GetCompactionPlansResponse { status: Some(ok()), state: compaction_state_of(&job) as i32, merge_infos })
        }
        .await;
        answer("GetCompactionStateWithPlans", t, result)
    }

    async fn get_replicas(&self, req: Request<GetReplicasRequest>) -> Result<Response<GetReplicasResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = async {
            check_db(&req, &req.get_ref().db_name)?;
            let r = req.into_inner();
            let name = self.name_or_id(r.collection_name, r.collection_id, &ctx).await?;
            let dist = self.layout(&name, &ctx).await?;
            Ok(GetReplicasResponse { status: Some(ok()), replicas: replicas_of(&dist) })
        }
        .await;
        answer("GetReplicas", t, result)
    }

    async fn get_component_states(
        &self,
        _req: Request<GetComponentStatesRequest>,
    ) -> Result<Response<ComponentStates>, Status> {
        let t = Instant::now();
        let state = ComponentInfo {
            role: "proxy".into(),
            state_code: common::StateCode::Healthy as i32,
            node_id: node_number(&self.proxy.node.id),
            ..Default::default()
        };
        answer(
            "GetComponentStates",
            t,
            Ok(ComponentStates { state: Some(state), status: Some(ok()), ..Default::default() }),
        )
    }

    async fn get_version(&self, _req: Request<GetVersionRequest>) -> Result<Response<GetVersionResponse>, Status> {
        answer("GetVersion", Instant::now(), Ok(GetVersionResponse { status: Some(ok()), version: API_VERSION.into() }))
    }

    async fn check_health(&self, _req: Request<CheckHealthRequest>) -> Result<Response<CheckHealthResponse>, Status> {
        let t = Instant::now();
        let result = async {
            let nodes = self.proxy.node.shared.registry.nodes().await?;
            let mut reasons: Vec<String> =
                nodes.iter().filter(|n| !n.healthy).map(|n| format!("{} is unhealthy", n.node_id)).collect();
            for role in quiver_schemas::Role::ALL {
                if !nodes.iter().any(|n| n.role == role && n.healthy) {
                    reasons.push(format!("no healthy {} node", role.as_str()));
                }
            }
            Ok(CheckHealthResponse {
                status: Some(ok()),
                is_healthy: reasons.is_empty(),
                reasons,
                quota_states: vec![],
            })
        }
        .await;
        answer("CheckHealth", t, result)
    }

    async fn alloc_timestamp(
        &self,
        req: Request<AllocTimestampRequest>,
    ) -> Result<Response<AllocTimestampResponse>, Status> {
        let t = Instant::now();
        let ctx = context_of(&req);
        let result = self
            .proxy
            .alloc::<coord::AllocTs>(1, &ctx)
            .await
            .map(|ts| AllocTimestampResponse { status: Some(ok()), timestamp: ts });
        answer("AllocTimestamp", t, result)
    }

    async fn list_databases(
        &self,
        _req: Request<ListDatabasesRequest>,
    ) -> Result<Response<ListDatabasesResponse>, Status> {
        let out = ListDatabasesResponse {
            status: Some(ok()),
            db_names: vec![DEFAULT_DB.into()],
            created_timestamp: vec![0],
            db_ids: vec![1],
        };
        answer("ListDatabases", Instant::now(), Ok(out))
    }

    async fn describe_database(
        &self,
        req: Request<DescribeDatabaseRequest>,
    ) -> Result<Response<DescribeDatabaseResponse>, Status> {
        let t = Instant::now();
        let result = check_db(&req, &req.get_ref().db_name).map(|()| DescribeDatabaseResponse {
            status: Some(ok()),
            db_name: DEFAULT_DB.into(),
            db_id: 1,
            ..Default::default()
        });
        answer("DescribeDatabase", t, result)
    }
}

fn channel(collection: u64, shard: u32) -> String {
    format!("quiver-dml-{collection}-{shard}")
}

fn index_not_found(collection: &str) -> Error {
    Error::index_not_found(collection)
}

/// Percentage of the collection's shards and segments that have a serving node (in at least
/// one replica: a collection answers searches once one replica is loaded).
fn load_progress(dist: &Distribution) -> i64 {
    let mut shards: Vec<u32> = dist.shards.iter().map(|s| s.shard).collect();
    shards.dedup();
    let total = shards.len() + dist.segments.len();
    if total == 0 {
        return 100;
    }
    let served = shards.iter().filter(|&&s| dist.leaders_of(s).next().is_some()).count()
        + dist.segments.iter().filter(|s| !s.nodes.is_empty()).count();
    (served * 100 / total) as i64
}

/// The serving layout as Milvus replicas: one per replica group, with its nodes and, per
/// shard, the group's leader and the group's nodes holding the shard's segments.
fn replicas_of(dist: &Distribution) -> Vec<ReplicaInfo> {
    let mut shards: Vec<u32> = dist.shards.iter().map(|s| s.shard).collect();
    shards.dedup();
    dist.replicas
        .iter()
        .map(|group| {
            let in_group = |n: &str| group.nodes.iter().any(|g| g == n);
            let shard_replicas = shards
                .iter()
                .map(|&shard| {
                    let leader =
                        dist.leaders_of(shard).find(|l| l.replica == group.id).map(|l| l.leader.as_str()).unwrap_or("");
                    let mut holders: Vec<&str> = dist
                        .segments
                        .iter()
                        .filter(|p| p.segment.shard == shard)
                        .flat_map(|p| p.nodes.iter().map(String::as_str))
                        .filter(|n| in_group(n))
                        .chain((!leader.is_empty()).then_some(leader))
                        .collect();
                    holders.sort_unstable();
                    holders.dedup();
                    ShardReplica {
                        leader_id: node_number(leader),
                        leader_addr: leader.to_string(),
                        dm_channel_name: channel(dist.collection.id, shard),
                        node_ids: holders.into_iter().map(node_number).collect(),
                    }
                })
                .collect();
            ReplicaInfo {
                replica_id: i64::from(group.id) + 1,
                collection_id: dist.collection.id as i64,
                shard_replicas,
                node_ids: group.nodes.iter().map(|n| node_number(n)).collect(),
                resource_group_name: "__default_resource_group".into(),
                ..Default::default()
            }
        })
        .collect()
}

impl MilvusApi {
    /// `LoadCollection` with `refresh`: a loaded collection serves newly flushed segments as
    /// soon as they are placed (the coordinator does that on its own), so refreshing checks it
    /// is loaded and lets the client wait on `refresh_progress`. A released collection cannot
    /// be refreshed (Milvus: collection not loaded).
    async fn refresh_load(&self, name: &str, ctx: &RequestContext) -> Result<common::Status> {
        let dist = self.layout(name, ctx).await?;
        if dist.released {
            return Err(Error::not_loaded(name));
        }
        Ok(ok())
    }

    fn max_nq(&self) -> usize {
        self.proxy.node.shared.config.proxy.max_nq
    }

    fn consistency(
        &self,
        info: &quiver_schemas::CollectionInfo,
        level: i32,
        use_default: bool,
    ) -> quiver_schemas::Consistency {
        if use_default {
            info.schema.consistency
        } else {
            convert::consistency_of(level)
        }
    }

    async fn run_search(&self, r: SearchRequest, ctx: &RequestContext) -> Result<SearchResults> {
        let info = self.proxy.collection(&r.collection_name, ctx).await?;
        let knobs = convert::knobs_from(&r.search_params)?;
        let metric = crate::querynode::metric_of(&info);
        if let Some(m) = knobs.metric {
            if m != metric {
                return Err(Error::InvalidArgument(format!(
                    "metric type not match: invalid parameter[expected={}][actual={}]",
                    convert::metric_name(metric),
                    convert::metric_name(m)
                )));
            }
        }
        let max = self.proxy.node.shared.config.proxy.max_top_k;
        if knobs.top_k == 0 || knobs.top_k.saturating_add(knobs.offset) > max {
            return Err(Error::InvalidArgument(format!(
                "topk [{}] is invalid, it should be in range [1, {max}] (with offset {})",
                knobs.top_k, knobs.offset
            )));
        }
        let (vectors, nq) = convert::vectors_from(convert::placeholder_group(&r)?, info.dim(), self.max_nq())?;
        let (fields, with_vectors) = convert::output_fields(&info, &r.output_fields)?;
        let k = knobs.top_k.saturating_add(knobs.offset);
        let search = Search {
            collection: r.collection_name.clone(),
            dim: info.dim(),
            vectors,
            top_k: k,
            params: knobs.params,
            output_fields: fields.clone(),
            consistency: self.consistency(&info, r.consistency_level, r.use_default_consistency),
            filter: r.dsl,
            partitions: r.partition_names.clone(),
        };
        let consistency = search.consistency;
        let results = self.proxy.search(search, ctx).await?;
        let mut out = search_results(&info, results, nq, &knobs, &r.output_fields, &fields)?;
        if with_vectors {
            // Searches return scalars; the vectors of the hits come from one get by key.
            let data = out.results.get_or_insert_with(Default::default);
            let pks = ids_of(data.ids.as_ref());
            let get = Get { collection: r.collection_name, pks: pks.clone(), output_fields: Vec::new(), consistency };
            let found = match pks.is_empty() {
                true => Default::default(),
                false => self.proxy.get_in(get, &r.partition_names, ctx).await?.rows,
            };
            let dim = info.dim() as usize;
            let mut by_pk: HashMap<&quiver_schemas::PrimaryKey, &[f32]> = HashMap::with_capacity(found.pks.len());
            for (i, pk) in found.pks.iter().enumerate() {
                let v = found.vectors.get(i * dim..(i + 1) * dim).ok_or_else(|| {
                    Error::Internal(format!(
                        "get by key answered {} floats for {} rows of dimension {dim}",
                        found.vectors.len(),
                        found.pks.len()
                    ))
                })?;
                by_pk.insert(pk, v);
            }
            let mut vectors = Vec::with_capacity(pks.len() * dim);
            for pk in &pks {
                match by_pk.get(pk) {
                    Some(v) => vectors.extend_from_slice(v),
                    None => vectors.extend(std::iter::repeat_n(0.0, dim)),
                }
            }
            data.fields_data.push(convert::vector_column(&info, vectors));
            if let Some(v) = info.vector_field() {
                data.output_fields.push(v.name.clone());
            }
        }
        Ok(out)
    }

    async fn run_hybrid(&self, r: HybridSearchRequest, ctx: &RequestContext) -> Result<SearchResults> {
        let info = self.proxy.collection(&r.collection_name, ctx).await?;
        let params: HashMap<String, String> = r.rank_params.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
        let number = |key: &str, default: u32| -> Result<u32> {
            match params.get(key) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| {
                    Error::InvalidArgument(format!("hybrid search {key} {v:?} is not a number between 0 and 2^32"))
                }),
            }
        };
        let (limit, offset) = (number("limit", 10)?, number("offset", 0)?);
        let max = self.proxy.node.shared.config.proxy.max_top_k;
        if limit == 0 || u64::from(limit) + u64::from(offset) > u64::from(max) {
            return Err(Error::InvalidArgument(format!(
                "hybrid search limit {limit} with offset {offset} is invalid: limit + offset must be in [1, {max}] (proxy.max_top_k)"
            )));
        }
        let max_requests = self.proxy.node.shared.config.limits.max_hybrid_requests;
        if r.requests.is_empty() || r.requests.len() > max_requests {
            return Err(Error::InvalidArgument(format!(
                "hybrid search has {} sub-searches; it needs 1 to {max_requests} (limits.max_hybrid_requests)",
                r.requests.len()
            )));
        }
        let strategy = params.get("strategy").map(|s| s.to_ascii_lowercase()).unwrap_or_else(|| "rrf".into());
        let rank: serde_json::Value =
            params.get("params").and_then(|p| serde_json::from_str(p).ok()).unwrap_or(serde_json::Value::Null);
        let round_decimal = params.get("round_decimal").and_then(|v| v.parse().ok()).unwrap_or(-1);
        let (fields, _) = convert::output_fields(&info, &r.output_fields)?;
        let mut fused: Vec<HashMap<quiver_schemas::PrimaryKey, (f32, Vec<quiver_schemas::ScalarValue>)>> = Vec::new();
        for (i, mut sub) in r.requests.into_iter().enumerate() {
            sub.collection_name = r.collection_name.clone();
            sub.output_fields = r.output_fields.clone();
            sub.consistency_level = r.consistency_level;
            sub.use_default_consistency = r.use_default_consistency;
            if sub.partition_names.is_empty() {
                sub.partition_names = r.partition_names.clone();
            }
            let (_, nq) = convert::vectors_from(convert::placeholder_group(&sub)?, info.dim(), self.max_nq())?;
            let part = self.run_search(sub, ctx).await?;
            let weight = match strategy.as_str() {
                "weighted" => rank.get("weights").and_then(|w| w.get(i)).and_then(|w| w.as_f64()).unwrap_or(1.0),
                _ => 1.0,
            };
            let k_rrf = rank.get("k").and_then(|k| k.as_f64()).unwrap_or(60.0);
            let data = part.results.unwrap_or_default();
            let pks = ids_of(data.ids.as_ref());
            let mut at = 0usize;
            for q in 0..nq {
                if fused.len() <= q {
                    fused.push(HashMap::new());
                }
                let Some(fused) = fused.get_mut(q) else { break };
                let n = data.topks.get(q).copied().unwrap_or(0) as usize;
                for rank_pos in 0..n {
                    let j = at + rank_pos;
                    let Some(pk) = pks.get(j) else { break };
                    let raw = data.scores.get(j).copied().unwrap_or(0.0);
                    let score = if strategy == "weighted" {
                        (weight * f64::from(normalize_score(raw, crate::querynode::metric_of(&info)))) as f32
                    } else {
                        (1.0 / (k_rrf + rank_pos as f64 + 1.0)) as f32
                    };
                    let values = field_values(&data.fields_data, j);
                    let e = fused.entry(pk.clone()).or_insert((0.0, values));
                    e.0 += score;
                }
                at += n;
            }
        }
        let mut results = quiver_schemas::SearchResults::default();
        for per_query in fused {
            let mut all: Vec<(quiver_schemas::PrimaryKey, f32, Vec<quiver_schemas::ScalarValue>)> =
                per_query.into_iter().map(|(pk, (s, v))| (pk, s, v)).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let mut hits = quiver_schemas::Hits {
                columns: fields
                    .iter()
                    .map(|f| quiver_schemas::Column { name: f.clone(), values: Vec::new() })
                    .collect(),
                ..Default::default()
            };
            for (pk, s, values) in all.into_iter().take(limit.saturating_add(offset) as usize) {
                hits.pks.push(pk);
                hits.scores.push(s);
                for (c, v) in hits.columns.iter_mut().zip(values) {
                    c.values.push(v);
                }
            }
            results.results.push(hits);
        }
        let nq = results.results.len();
        let knobs = convert::Knobs { top_k: limit, offset, round_decimal, ..Default::default() };
        search_results(&info, results, nq, &knobs, &r.output_fields, &fields)
    }

    async fn run_query(&self, r: QueryRequest, ctx: &RequestContext) -> Result<QueryResults> {
        let info = self.proxy.collection(&r.collection_name, ctx).await?;
        let params: HashMap<String, String> =
            r.query_params.iter().map(|p| (p.key.to_ascii_lowercase(), p.value.clone())).collect();
        let number = |key: &str| -> Result<u64> {
            match params.get(key) {
                None => Ok(0),
                Some(v) => {
                    v.trim().parse::<u64>().map_err(|_| Error::InvalidArgument(format!("{key} {v:?} is not a number")))
                }
            }
        };
        let (limit, offset) = (number("limit")?, number("offset")?);
        let count = r.output_fields.iter().any(|f| f.trim() == COUNT_STAR);
        let vector = info.vector_field().map(|f| f.name.clone()).unwrap_or_default();
        let (mut fields, wants_vector) = if count {
            (vec![COUNT_STAR.to_string()], false)
        } else {
            convert::output_fields(&info, &r.output_fields)?
        };
        if wants_vector {
            fields.push(vector.clone());
        }
        let query = Query {
            collection: r.collection_name.clone(),
            filter: r.expr,
            output_fields: fields.clone(),
            limit,
            offset,
            consistency: self.consistency(&info, r.consistency_level, r.use_default_consistency),
            partitions: r.partition_names,
        };
        let rows = self.proxy.query(query, ctx).await?.rows;
        let pk_name = info.primary_field().map(|f| f.name.clone()).unwrap_or_default();
        let mut out = QueryResults {
            status: Some(ok()),
            collection_name: r.collection_name,
            primary_field_name: pk_name.clone(),
            ..Default::default()
        };
        if count {
            out.fields_data = rows.columns.iter().map(count_column).collect();
            out.output_fields = vec![COUNT_STAR.into()];
            return Ok(out);
        }
        out.fields_data.push(convert::pk_column(&info, &rows.pks));
        for c in &rows.columns {
            out.fields_data.push(convert::column_to(&info, c));
        }
        if wants_vector {
            out.fields_data.push(convert::vector_column(&info, rows.vectors));
        }
        out.output_fields = response_fields(&info, &r.output_fields, &fields, &pk_name);
        Ok(out)
    }
}

fn count_column(c: &quiver_schemas::Column) -> ms::FieldData {
    let n = match c.values.first() {
        Some(quiver_schemas::ScalarValue::Int64(n)) => *n,
        _ => 0,
    };
    ms::FieldData {
        r#type: ms::DataType::Int64 as i32,
        field_name: COUNT_STAR.into(),
        field: Some(ms::field_data::Field::Scalars(ms::ScalarField {
            data: Some(ms::scalar_field::Data::LongData(ms::LongArray { data: vec![n] })),
        })),
        ..Default::default()
    }
}

/// The `output_fields` a Milvus reply lists: the schema fields returned plus the dynamic keys
/// the client asked for (pymilvus picks those out of `$meta`).
fn response_fields(
    info: &quiver_schemas::CollectionInfo,
    requested: &[String],
    returned: &[String],
    pk: &str,
) -> Vec<String> {
    let mut out: Vec<String> = vec![pk.to_string()];
    for f in returned {
        if f != META && !out.contains(f) {
            out.push(f.clone());
        }
    }
    for f in requested {
        let f = f.trim();
        let dynamic = f != "*" && !f.is_empty() && info.schema.fields.iter().all(|x| x.name != f);
        if dynamic && !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    if requested.iter().any(|f| f.trim() == "*" || f.trim() == META) && returned.iter().any(|f| f == META) {
        out.push(META.into());
    }
    out
}

fn ids_of(ids: Option<&ms::IDs>) -> Vec<quiver_schemas::PrimaryKey> {
    match ids.and_then(|i| i.id_field.as_ref()) {
        Some(ms::i_ds::IdField::IntId(a)) => a.data.iter().map(|&i| quiver_schemas::PrimaryKey::Int64(i)).collect(),
        Some(ms::i_ds::IdField::StrId(a)) => {
            a.data.iter().map(|s| quiver_schemas::PrimaryKey::VarChar(s.clone())).collect()
        }
        None => Vec::new(),
    }
}

/// Row `j` of Milvus result columns back as Quiver values (for hybrid-search fusion).
fn field_values(fields: &[ms::FieldData], j: usize) -> Vec<quiver_schemas::ScalarValue> {
    use ms::scalar_field::Data;
    use quiver_schemas::ScalarValue as V;
    fields
        .iter()
        .map(|f| match &f.field {
            Some(ms::field_data::Field::Scalars(s)) => match &s.data {
                Some(Data::BoolData(a)) => a.data.get(j).map_or(V::Null, |v| V::Bool(*v)),
                Some(Data::LongData(a)) => a.data.get(j).map_or(V::Null, |v| V::Int64(*v)),
                Some(Data::FloatData(a)) => a.data.get(j).map_or(V::Null, |v| V::Float(*v)),
                Some(Data::DoubleData(a)) => a.data.get(j).map_or(V::Null, |v| V::Double(*v)),
                Some(Data::StringData(a)) => a.data.get(j).map_or(V::Null, |v| V::VarChar(v.clone())),
                Some(Data::JsonData(a)) => {
                    a.data.get(j).map_or(V::Null, |v| V::Json(String::from_utf8_lossy(v).into_owned()))
                }
                _ => V::Null,
            },
            _ => V::Null,
        })
        .collect()
}

/// Milvus' weighted ranker normalises each metric's score into [0, 1] before weighting.
fn normalize_score(score: f32, metric: quiver_schemas::MetricType) -> f32 {
    match metric {
        quiver_schemas::MetricType::L2 => 1.0 - 2.0 * score.max(0.0).atan() / std::f32::consts::PI,
        quiver_schemas::MetricType::Ip => 0.5 + score.atan() / std::f32::consts::PI,
        quiver_schemas::MetricType::Cosine => (score + 1.0) / 2.0,
    }
}

/// Quiver hits as Milvus `SearchResultData`: all queries' hits concatenated, `topks` per query.
/// The hits come from the proxy's merge of checked node replies: ids and scores of the same
/// length, one value per hit in every column. A list that breaks that is an internal error.
fn search_results(
    info: &quiver_schemas::CollectionInfo,
    results: quiver_schemas::SearchResults,
    nq: usize,
    knobs: &convert::Knobs,
    requested: &[String],
    fields: &[String],
) -> Result<SearchResults> {
    let offset = knobs.offset as usize;
    let mut pks = Vec::new();
    let mut scores = Vec::new();
    let mut topks = Vec::with_capacity(nq);
    let mut columns: Vec<quiver_schemas::Column> =
        fields.iter().map(|f| quiver_schemas::Column { name: f.clone(), values: Vec::new() }).collect();
    for q in 0..nq {
        let Some(h) = results.results.get(q) else {
            topks.push(0);
            continue;
        };
        let start = offset.min(h.pks.len());
        let end = start.saturating_add(knobs.top_k as usize).min(h.pks.len());
        let (Some(ids), Some(hit_scores)) = (h.pks.get(start..end), h.scores.get(start..end)) else {
            return Err(Error::Internal(format!(
                "search results of query {q} hold {} ids but {} scores",
                h.pks.len(),
                h.scores.len()
            )));
        };
        topks.push(ids.len() as i64);
        pks.extend_from_slice(ids);
        scores.extend(hit_scores.iter().map(|&s| round(s, knobs.round_decimal)));
        for (out, col) in columns.iter_mut().zip(&h.columns) {
            let Some(values) = col.values.get(start..end) else {
                return Err(Error::Internal(format!(
                    "search results of query {q}: column {:?} holds {} values for {} hits",
                    col.name,
                    col.values.len(),
                    h.pks.len()
                )));
            };
            out.values.extend_from_slice(values);
        }
    }
    let pk_name = info.primary_field().map(|f| f.name.clone()).unwrap_or_default();
    let data = ms::SearchResultData {
        num_queries: nq as i64,
        top_k: i64::from(knobs.top_k),
        fields_data: columns.iter().map(|c| convert::column_to(info, c)).collect(),
        scores: scores.clone(),
        ids: Some(convert::ids_to(&pks)),
        topks,
        output_fields: response_fields(info, requested, fields, &pk_name)
            .into_iter()
            .filter(|f| *f != pk_name || requested.iter().any(|r| r == &pk_name))
            .collect(),
        distances: scores,
        primary_field_name: pk_name,
        ..Default::default()
    };
    Ok(SearchResults {
        status: Some(ok()),
        results: Some(data),
        collection_name: info.schema.name.clone(),
        session_ts: 0,
    })
}
