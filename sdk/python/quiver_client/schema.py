"""Helpers to build schemas, index parameters, rows, searches and queries (the Rust SDK's
``quiver_client::schema``)."""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Optional, Sequence

from .types import (
    CollectionSchema,
    Column,
    Consistency,
    DataType,
    FieldSchema,
    IndexParams,
    IndexType,
    MetricType,
    PrimaryKey,
    Query,
    RowBatch,
    Scalar,
    Search,
    SearchParams,
    Vectors,
    as_vectors,
)

__all__ = ["field", "simple", "index", "rows", "search", "query"]


def field(name: str, data_type: DataType, **kwargs: Any) -> FieldSchema:
    """A field with everything but name and type defaulted (override with keywords:
    ``field("title", DataType.VARCHAR, max_length=64)``)."""
    return FieldSchema(name=name, data_type=data_type, **kwargs)


def simple(name: str, dim: int, *extra: FieldSchema) -> CollectionSchema:
    """``id`` (Int64 primary key, user-supplied) + ``vector`` of ``dim`` floats + dynamic
    fields, then any ``extra`` fields."""
    return CollectionSchema(
        name=name,
        fields=[
            FieldSchema("id", DataType.INT64, is_primary=True),
            FieldSchema("vector", DataType.FLOAT_VECTOR, dim=dim),
            *extra,
        ],
        enable_dynamic_field=True,
    )


def index(index_type: IndexType, metric: MetricType, **kwargs: int) -> IndexParams:
    """Index parameters with defaults for everything but type and metric
    (``index(IndexType.HNSW, MetricType.IP, m=16, ef_construction=100)``)."""
    return IndexParams(index_type=index_type, metric=metric, **kwargs)


def rows(
    ids: Optional[Iterable[PrimaryKey]],
    vectors: Vectors,
    fields: Optional[Mapping[str, Sequence[Scalar]]] = None,
    dynamic: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
) -> RowBatch:
    """Rows with keys ``ids`` (``None`` for an ``auto_id`` collection), ``vectors`` of shape
    ``(rows, dim)``, scalar ``fields`` by name and per-row ``dynamic`` dicts (keys outside the
    schema; ``None`` for a row without any)."""
    return RowBatch(
        pks=list(ids) if ids is not None else [],
        vectors=as_vectors(vectors),
        columns=[Column(name, list(values)) for name, values in (fields or {}).items()],
        dynamic=[json.dumps(d) if d else "" for d in dynamic] if dynamic is not None else [],
    )


def search(
    collection: str,
    vectors: Vectors,
    top_k: int = 10,
    *,
    filter: str = "",
    output_fields: Sequence[str] = (),
    nprobe: int = 0,
    ef: int = 0,
    consistency: Consistency = Consistency.BOUNDED,
    partitions: Sequence[str] = (),
) -> Search:
    """A top-k search of ``vectors`` (``(nq, dim)``, or one 1-D vector), in ``partitions``
    (empty = every loaded one)."""
    return Search(
        collection=collection,
        vectors=vectors,
        top_k=top_k,
        params=SearchParams(nprobe=nprobe, ef=ef),
        output_fields=list(output_fields),
        consistency=consistency,
        filter=filter,
        partitions=list(partitions),
    )


def query(
    collection: str,
    filter: str = "",
    output_fields: Sequence[str] = (),
    limit: int = 0,
    *,
    offset: int = 0,
    consistency: Consistency = Consistency.BOUNDED,
    partitions: Sequence[str] = (),
) -> Query:
    """A query for rows matching ``filter`` (empty = every row, then give a ``limit``) in
    ``partitions`` (empty = every loaded one)."""
    return Query(collection, filter, list(output_fields), limit, offset, consistency, list(partitions))
