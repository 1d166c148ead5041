"""The only module that knows the wire format: the plain types of :mod:`quiver_client.types` to
and from Cap'n Proto messages of ``quiver.capnp`` (a copy of ``schemas/quiver.capnp`` shipped in
the package; a test keeps the two equal). Messages are unpacked, flat (segment table +
segments), as ``capnp::serialize`` writes them.

Encoding builds nested dicts and hands them to pycapnp's ``new_message``; decoding goes through
the reader's ``to_dict()``, which leaves out unset pointer fields, hence the ``.get``\\ s.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import capnp
import numpy as np

from .errors import DecodeError
from .types import (
    ClusterStatus,
    CollectionDescription,
    CollectionInfo,
    CollectionSchema,
    Column,
    Consistency,
    DataType,
    Distribution,
    FieldSchema,
    FlushResult,
    GetResults,
    Hits,
    IndexParams,
    IndexType,
    Json,
    MetricType,
    MutationResult,
    NodeStatus,
    PrimaryKey,
    Query,
    QueryResults,
    RoleScaling,
    ReplicaGroup,
    Role,
    RowBatch,
    ScaleReply,
    Scalar,
    Search,
    SearchResults,
    SegmentInfo,
    SegmentPlacement,
    SegmentState,
    ShardPlacement,
    as_vectors,
)

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quiver.capnp")

capnp.remove_import_hook()
schema: Any = capnp.load(SCHEMA_PATH)

Dict_ = Dict[str, Any]

# Readers of big replies (8 MB of vectors) must not trip pycapnp's default traversal limit.
_TRAVERSAL_LIMIT_WORDS = 1 << 30


def encode(message: str, body: Dict_) -> bytes:
    """``body`` (nested dicts in Cap'n Proto field names) as a serialized ``message``."""
    return bytes(getattr(schema, message).new_message(**body).to_bytes())


def decode(message: str, data: bytes) -> Dict_:
    """A serialized ``message`` as nested dicts; :class:`DecodeError` if it is not one."""
    try:
        with getattr(schema, message).from_bytes(data, traversal_limit_in_words=_TRAVERSAL_LIMIT_WORDS) as reader:
            out: Dict_ = reader.to_dict()
            return out
    except Exception as e:  # pycapnp raises KjException and others
        raise DecodeError(f"reply is not a valid {message} message ({len(data)} bytes): {e}") from e


# ---- values and keys ---------------------------------------------------------------------


def pk_to_wire(pk: PrimaryKey) -> Dict_:
    if isinstance(pk, (bool, np.bool_)):
        raise TypeError(f"a primary key is an int or a str, not {pk!r}")
    if isinstance(pk, (int, np.integer)):
        return {"int64": int(pk)}
    if isinstance(pk, str):
        return {"varChar": pk}
    raise TypeError(f"a primary key is an int or a str, not {type(pk).__name__} {pk!r}")


def pk_from_wire(d: Dict_) -> PrimaryKey:
    if "varChar" in d:
        return str(d["varChar"])
    return int(d.get("int64", 0))


def scalar_to_wire(v: Scalar) -> Dict_:
    if v is None:
        return {"null": None}
    if isinstance(v, (bool, np.bool_)):
        return {"bool": bool(v)}
    if isinstance(v, (int, np.integer)):
        return {"int64": int(v)}
    if isinstance(v, (float, np.floating)):
        return {"double": float(v)}
    if isinstance(v, Json):
        return {"json": str(v)}
    if isinstance(v, str):
        return {"varChar": v}
    if isinstance(v, (dict, list, tuple)):
        return {"json": json.dumps(v)}
    raise TypeError(f"cannot send {type(v).__name__} {v!r} as a scalar value")


def scalar_from_wire(d: Dict_) -> Scalar:
    for kind, value in d.items():
        if kind == "null":
            return None
        if kind == "json":
            return json.loads(value)
        if kind in ("float", "double"):
            return float(value)
        return value
    return None


def column_to_wire(c: Column) -> Dict_:
    return {"name": c.name, "values": [scalar_to_wire(v) for v in c.values]}


def column_from_wire(d: Dict_) -> Column:
    return Column(d.get("name", ""), [scalar_from_wire(v) for v in d.get("values", [])])


def rows_to_wire(rows: RowBatch) -> Dict_:
    vectors = rows.vectors
    return {
        "pks": [pk_to_wire(p) for p in rows.pks],
        "dim": rows.dim,
        "vectors": vectors.ravel().tolist(),
        "columns": [column_to_wire(c) for c in rows.columns],
        "dynamic": list(rows.dynamic),
    }


def rows_from_wire(d: Dict_) -> RowBatch:
    dim = int(d.get("dim", 0))
    return RowBatch(
        pks=[pk_from_wire(p) for p in d.get("pks", [])],
        vectors=as_vectors(np.asarray(d.get("vectors", []), dtype=np.float32), dim),
        columns=[column_from_wire(c) for c in d.get("columns", [])],
        dynamic=list(d.get("dynamic", [])),
    )


# ---- schemas and collections ---------------------------------------------------------------


def field_to_wire(f: FieldSchema) -> Dict_:
    return {
        "name": f.name,
        "dataType": DataType(f.data_type).value,
        "isPrimary": f.is_primary,
        "autoId": f.auto_id,
        "dim": f.dim,
        "maxLength": f.max_length,
        "description": f.description,
    }


def field_from_wire(d: Dict_) -> FieldSchema:
    return FieldSchema(
        name=d.get("name", ""),
        data_type=DataType(d.get("dataType", "bool")),
        is_primary=bool(d.get("isPrimary", False)),
        auto_id=bool(d.get("autoId", False)),
        dim=int(d.get("dim", 0)),
        max_length=int(d.get("maxLength", 0)),
        description=d.get("description", ""),
    )


def schema_to_wire(s: CollectionSchema) -> Dict_:
    return {
        "name": s.name,
        "description": s.description,
        "fields": [field_to_wire(f) for f in s.fields],
        "enableDynamicField": s.enable_dynamic_field,
        "numShards": s.num_shards,
        "consistency": Consistency(s.consistency).value,
    }


def schema_from_wire(d: Dict_) -> CollectionSchema:
    return CollectionSchema(
        name=d.get("name", ""),
        description=d.get("description", ""),
        fields=[field_from_wire(f) for f in d.get("fields", [])],
        enable_dynamic_field=bool(d.get("enableDynamicField", False)),
        num_shards=int(d.get("numShards", 0)),
        consistency=Consistency(d.get("consistency", "bounded")),
    )


def index_to_wire(p: IndexParams) -> Dict_:
    return {
        "indexType": IndexType(p.index_type).value,
        "metric": MetricType(p.metric).value,
        "nlist": p.nlist,
        "m": p.m,
        "nbits": p.nbits,
        "efConstruction": p.ef_construction,
        "auto": p.auto,
        "name": p.name,
    }


def index_from_wire(d: Dict_) -> IndexParams:
    return IndexParams(
        index_type=IndexType(d.get("indexType", "flat")),
        metric=MetricType(d.get("metric", "l2")),
        nlist=int(d.get("nlist", 0)),
        m=int(d.get("m", 0)),
        nbits=int(d.get("nbits", 0)),
        ef_construction=int(d.get("efConstruction", 0)),
        auto=bool(d.get("auto", False)),
        name=d.get("name", ""),
    )


def _option(d: Optional[Dict_]) -> Any:
    """The value of a `{ none :Void; some :T }` union (None for `none`)."""
    return (d or {}).get("some")


def info_from_wire(d: Dict_) -> CollectionInfo:
    index = _option(d.get("index"))
    return CollectionInfo(
        id=int(d.get("id", 0)),
        schema=schema_from_wire(d.get("schema", {})),
        index=index_from_wire(index) if index is not None else None,
        created_ts=int(d.get("createdTs", 0)),
    )


def description_from_wire(d: Dict_) -> CollectionDescription:
    return CollectionDescription(
        info=info_from_wire(d.get("info", {})),
        num_rows=int(d.get("numRows", 0)),
        sealed_segments=int(d.get("sealedSegments", 0)),
    )


def segment_from_wire(d: Dict_) -> SegmentInfo:
    return SegmentInfo(
        id=int(d.get("id", 0)),
        collection=int(d.get("collection", 0)),
        shard=int(d.get("shard", 0)),
        rows=int(d.get("rows", 0)),
        start_seq=int(d.get("startSeq", 0)),
        end_seq=int(d.get("endSeq", 0)),
        data_path=d.get("dataPath", ""),
        index_path=_option(d.get("indexPath")),
        state=SegmentState(d.get("state", "flushed")),
        mem_size=int(d.get("memSize", 0)),
    )


def distribution_from_wire(d: Dict_) -> Distribution:
    return Distribution(
        collection=info_from_wire(d.get("collection", {})),
        shards=[
            ShardPlacement(
                int(s.get("shard", 0)), s.get("leader", ""), int(s.get("sealedSeq", 0)), int(s.get("replica", 0))
            )
            for s in d.get("shards", [])
        ],
        segments=[
            SegmentPlacement(segment_from_wire(s.get("segment", {})), list(s.get("nodes", [])))
            for s in d.get("segments", [])
        ],
        version=int(d.get("version", 0)),
        released=bool(d.get("released", False)),
        replicas=[ReplicaGroup(int(g.get("id", 0)), list(g.get("nodes", []))) for g in d.get("replicas", [])],
    )


def status_from_wire(d: Dict_) -> ClusterStatus:
    return ClusterStatus(
        cluster=d.get("cluster", ""),
        nodes=[
            NodeStatus(
                node_id=n.get("nodeId", ""),
                role=Role(n.get("role", "coordinator")),
                host=n.get("host", ""),
                pid=int(n.get("pid", 0)),
                healthy=bool(n.get("healthy", False)),
                mem_used=int(n.get("memUsed", 0)),
                mem_capacity=int(n.get("memCapacity", 0)),
                segments=int(n.get("segments", 0)),
                restarts=int(n.get("restarts", 0)),
                started_ms=int(n.get("startedMs", 0)),
                heartbeat_ms=int(n.get("heartbeatMs", 0)),
                detail=n.get("detail", ""),
                cpu_cores=float(n.get("cpuCores", 0.0)),
                cpu_busy=float(n.get("cpuBusy", 0.0)),
                host_agent=n.get("hostAgent", ""),
                faiss_simd=n.get("faissSimd", ""),
            )
            for n in d.get("nodes", [])
        ],
        roles=[role_scaling_from_wire(r) for r in d.get("roles", [])],
        hosts=[dict(h) for h in d.get("hosts", [])],
        notes=list(d.get("notes", [])),
    )


def role_scaling_from_wire(d: Dict_) -> RoleScaling:
    return RoleScaling(
        role=Role(d.get("role", "queryNode")),
        desired=int(d.get("desired", 0)),
        serving=int(d.get("serving", 0)),
        starting=int(d.get("starting", 0)),
        draining=int(d.get("draining", 0)),
        converged=bool(d.get("converged", False)),
        activity=d.get("activity", ""),
    )


def scale_reply_from_wire(d: Dict_) -> ScaleReply:
    return ScaleReply(
        role=Role(d.get("role", "queryNode")),
        replicas=int(d.get("replicas", 0)),
        previous=int(d.get("previous", 0)),
        warning=d.get("warning", ""),
    )


# ---- reads and writes ----------------------------------------------------------------------


def search_to_wire(s: Search) -> Dict_:
    vectors = as_vectors(s.vectors)
    return {
        "collection": s.collection,
        "dim": int(vectors.shape[1]),
        "vectors": vectors.ravel().tolist(),
        "topK": s.top_k,
        "params": {"nprobe": s.params.nprobe, "ef": s.params.ef},
        "outputFields": list(s.output_fields),
        "consistency": Consistency(s.consistency).value,
        "filter": s.filter,
        "partitions": list(s.partitions),
    }


def search_results_from_wire(d: Dict_) -> SearchResults:
    return SearchResults(
        [
            Hits(
                pks=[pk_from_wire(p) for p in h.get("pks", [])],
                scores=[float(x) for x in h.get("scores", [])],
                columns=[column_from_wire(c) for c in h.get("columns", [])],
            )
            for h in d.get("results", [])
        ]
    )


def query_to_wire(q: Query) -> Dict_:
    return {
        "collection": q.collection,
        "filter": q.filter,
        "outputFields": list(q.output_fields),
        "limit": q.limit,
        "offset": q.offset,
        "consistency": Consistency(q.consistency).value,
        "partitions": list(q.partitions),
    }


def query_results_from_wire(d: Dict_) -> QueryResults:
    return QueryResults(rows_from_wire(d.get("rows", {})))


def get_to_wire(collection: str, pks: Sequence[PrimaryKey], output_fields: Sequence[str], consistency: Consistency) -> Dict_:
    return {
        "collection": collection,
        "pks": [pk_to_wire(p) for p in pks],
        "outputFields": list(output_fields),
        "consistency": Consistency(consistency).value,
    }


def get_results_from_wire(d: Dict_) -> GetResults:
    return GetResults(rows_from_wire(d.get("rows", {})), [int(s) for s in d.get("seqs", [])])


def mutation_from_wire(d: Dict_) -> MutationResult:
    pks = [pk_from_wire(p) for p in d.get("pks", [])]
    return MutationResult(pks, int(d.get("timestamp", 0)), int(d.get("count", 0)) or len(pks))


def flush_from_wire(d: Dict_) -> FlushResult:
    return FlushResult([int(s) for s in d.get("segments", [])])


def names_from_wire(d: Dict_) -> List[str]:
    return list(d.get("names", []))
