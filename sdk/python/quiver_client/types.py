"""Plain types of the API, mirroring ``schemas/src/types.rs`` one to one.

Python-side conventions:

* Enums carry the Cap'n Proto enumerant name as their value (``DataType.FLOAT_VECTOR.value ==
  "floatVector"``).
* A primary key is an ``int`` (Int64 key) or a ``str`` (VarChar key).
* A scalar cell is a plain Python value: ``None``, ``bool``, ``int`` (Int64), ``float`` (Double;
  the server converts numbers to the field's type), ``str`` (VarChar), or a ``dict``/``list``
  (a JSON document; :class:`Json` sends JSON text as is). JSON cells come back parsed.
* Vectors are ``numpy.float32`` arrays of shape ``(rows, dim)``; anything ``numpy.asarray``
  accepts is taken on input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__all__ = [
    "COUNT_STAR",
    "PrimaryKey",
    "Scalar",
    "Json",
    "DataType",
    "MetricType",
    "IndexType",
    "Consistency",
    "SegmentState",
    "Role",
    "FieldSchema",
    "CollectionSchema",
    "IndexParams",
    "Column",
    "RowBatch",
    "CollectionInfo",
    "CollectionDescription",
    "SegmentInfo",
    "SegmentPlacement",
    "ShardPlacement",
    "Distribution",
    "ReplicaGroup",
    "NodeStatus",
    "RoleScaling",
    "ClusterStatus",
    "ScaleReply",
    "SearchParams",
    "Search",
    "Hits",
    "SearchResults",
    "Query",
    "QueryResults",
    "GetResults",
    "MutationResult",
    "FlushResult",
    "Vectors",
    "as_vectors",
]

#: The output field that turns a query into a count.
COUNT_STAR = "count(*)"

PrimaryKey = Union[int, str]
Scalar = Any  # None | bool | int | float | str | dict | list | Json

Vectors = Union[npt.ArrayLike, np.ndarray]


class Json(str):
    """A JSON document given as text, sent as a JSON cell without re-encoding."""


class DataType(str, enum.Enum):
    BOOL = "bool"
    INT64 = "int64"
    FLOAT = "float"
    DOUBLE = "double"
    VARCHAR = "varChar"
    JSON = "json"
    FLOAT_VECTOR = "floatVector"


class MetricType(str, enum.Enum):
    L2 = "l2"
    IP = "ip"
    COSINE = "cosine"


class IndexType(str, enum.Enum):
    FLAT = "flat"
    IVF_FLAT = "ivfFlat"
    IVF_SQ8 = "ivfSq8"
    IVF_PQ = "ivfPq"
    HNSW = "hnsw"


class Consistency(str, enum.Enum):
    #: Sees every write acknowledged before the request.
    STRONG = "strong"
    #: Sees writes older than the configured staleness bound (the default, as in Milvus).
    BOUNDED = "bounded"
    #: Serves whatever the node has.
    EVENTUALLY = "eventually"


class SegmentState(str, enum.Enum):
    #: Flushed to the object store, no index yet (served by brute force).
    FLUSHED = "flushed"
    #: Flushed and indexed.
    INDEXED = "indexed"
    #: Replaced or dropped; kept for reference until garbage-collected.
    DROPPED = "dropped"


class Role(str, enum.Enum):
    COORDINATOR = "coordinator"
    PROXY = "proxy"
    DATA_NODE = "dataNode"
    INDEX_NODE = "indexNode"
    QUERY_NODE = "queryNode"


def as_vectors(vectors: Optional[Vectors], dim: Optional[int] = None) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 array of shape ``(rows, dim)``.

    A 1-D input is one vector, unless ``dim`` is given, in which case it is taken as row-major
    ``rows × dim`` floats (the Rust SDK's layout). ``None`` or an empty input is ``(0, dim)``.
    """
    if vectors is None:
        return np.zeros((0, dim or 0), dtype=np.float32)
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.size == 0:
        return arr.reshape(0, dim if dim is not None else (arr.shape[-1] if arr.ndim == 2 else 0))
    if arr.ndim == 1:
        if dim is None or dim == 0:
            return arr.reshape(1, -1)
        if arr.size % dim != 0:
            raise ValueError(f"{arr.size} floats are not a whole number of {dim}-dimensional vectors")
        return arr.reshape(-1, dim)
    if arr.ndim != 2:
        raise ValueError(f"vectors must be 1-D or 2-D (rows × dim); got shape {arr.shape}")
    return arr


@dataclass
class FieldSchema:
    name: str
    data_type: DataType
    is_primary: bool = False
    #: Primary key values are allocated by Quiver (int64 keys only).
    auto_id: bool = False
    #: Vector dimension (FLOAT_VECTOR only).
    dim: int = 0
    #: Maximum length in bytes (VARCHAR only; 0 = default 65535).
    max_length: int = 0
    description: str = ""


@dataclass
class CollectionSchema:
    name: str
    fields: List[FieldSchema] = field(default_factory=list)
    description: str = ""
    #: Keys not in the schema are kept in a dynamic JSON field.
    enable_dynamic_field: bool = False
    #: Number of shards (DML channels); 0 means the configured default.
    num_shards: int = 0
    #: Default read consistency (for Milvus clients that name none per request).
    consistency: Consistency = Consistency.BOUNDED

    def field(self, name: str) -> Optional[FieldSchema]:
        """The field called ``name``, if any."""
        return next((f for f in self.fields if f.name == name), None)


@dataclass
class IndexParams:
    """How the vectors of sealed segments are indexed. Unused parameters are ignored by the type."""

    index_type: IndexType
    metric: MetricType
    #: IVF: number of lists.
    nlist: int = 0
    #: IVF_PQ: number of sub-quantizers; HNSW: graph degree M.
    m: int = 0
    #: IVF_PQ: bits per code.
    nbits: int = 0
    #: HNSW: efConstruction.
    ef_construction: int = 0
    #: Asked for as AUTOINDEX (Milvus clients see that name; built as ``index_type``).
    auto: bool = False
    #: Index name given by a Milvus client (empty = the vector field's name).
    name: str = ""


@dataclass
class Column:
    """A named column of scalar values, one per row."""

    name: str
    values: List[Scalar]


@dataclass(eq=False)
class RowBatch:
    """Rows in columnar form: keys, a ``(rows, dim)`` float32 vector array, scalar columns and
    one dynamic-field JSON object (text) per row."""

    #: Empty when the collection allocates ids (``auto_id``).
    pks: List[PrimaryKey] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    columns: List[Column] = field(default_factory=list)
    #: Dynamic-field JSON object per row (empty when unused).
    dynamic: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vectors = as_vectors(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def num_rows(self) -> int:
        """Number of rows, taken from whichever part is present."""
        if self.vectors.shape[0] > 0:
            return int(self.vectors.shape[0])
        if self.pks:
            return len(self.pks)
        return len(self.columns[0].values) if self.columns else 0

    def __len__(self) -> int:
        return self.num_rows

    def column(self, name: str) -> List[Scalar]:
        """The values of column ``name``; ``KeyError`` if the batch has none."""
        for c in self.columns:
            if c.name == name:
                return c.values
        raise KeyError(f"no column {name!r} (have {[c.name for c in self.columns]})")

    def to_dicts(self) -> List[Dict[str, Scalar]]:
        """One dict per row: the primary key as ``"pk"``, the vector as ``"vector"`` (when
        present) and every column."""
        out: List[Dict[str, Scalar]] = []
        for i in range(self.num_rows):
            row: Dict[str, Scalar] = {}
            if self.pks:
                row["pk"] = self.pks[i]
            if self.vectors.shape[0] > i:
                row["vector"] = self.vectors[i]
            for c in self.columns:
                row[c.name] = c.values[i]
            out.append(row)
        return out

    def slice(self, start: int, end: int) -> "RowBatch":
        """Rows ``[start, end)``."""
        return RowBatch(
            pks=self.pks[start:end],
            vectors=self.vectors[start:end],
            columns=[Column(c.name, c.values[start:end]) for c in self.columns],
            dynamic=self.dynamic[start:end],
        )


@dataclass
class CollectionInfo:
    id: int
    schema: CollectionSchema
    index: Optional[IndexParams]
    created_ts: int

    @property
    def dim(self) -> int:
        """Dimension of the vector field (0 without one)."""
        return next((f.dim for f in self.schema.fields if f.data_type == DataType.FLOAT_VECTOR), 0)


@dataclass
class CollectionDescription:
    info: CollectionInfo
    num_rows: int
    sealed_segments: int


@dataclass
class SegmentInfo:
    """A sealed segment: rows of one shard between two log positions, in the object store."""

    id: int
    collection: int
    shard: int
    rows: int
    #: First and last stream sequence covered (inclusive).
    start_seq: int
    end_seq: int
    data_path: str
    index_path: Optional[str]
    state: SegmentState
    #: Approximate bytes in memory when loaded.
    mem_size: int


@dataclass
class SegmentPlacement:
    segment: SegmentInfo
    nodes: List[str]


@dataclass
class ShardPlacement:
    shard: int
    leader: str
    #: Highest sequence covered by a served sealed segment.
    sealed_seq: int
    #: The replica group whose leader this is.
    replica: int = 0


@dataclass
class ReplicaGroup:
    """One in-memory replica: the query nodes that together hold a full copy."""

    id: int
    nodes: List[str]


@dataclass
class Distribution:
    """The serving layout of one collection, as the coordinator knows it."""

    collection: CollectionInfo
    shards: List[ShardPlacement]
    segments: List[SegmentPlacement]
    #: Bumped on every change.
    version: int
    #: Released: not served until loaded again (reads are refused).
    released: bool = False
    #: The in-memory replica groups (one entry per leader and replica in ``shards``).
    replicas: List[ReplicaGroup] = field(default_factory=list)


@dataclass
class NodeStatus:
    node_id: str
    role: Role
    host: str
    pid: int
    healthy: bool
    #: Resident memory of the process, bytes.
    mem_used: int
    #: Memory budget for this node, bytes.
    mem_capacity: int
    segments: int
    restarts: int
    started_ms: int
    heartbeat_ms: int
    detail: str
    #: CPU cores the process may use (affinity, cgroup quota) and cores' worth it used lately.
    cpu_cores: float = 0.0
    cpu_busy: float = 0.0
    #: The host agent that started the process ("" if none).
    host_agent: str = ""
    #: The faiss SIMD build the process runs: "generic", "avx2" or "avx512" ("" if older).
    faiss_simd: str = ""


@dataclass
class RoleScaling:
    """One role's wanted and actual node count (``desired`` 0: never scaled)."""

    role: Role
    desired: int
    serving: int
    starting: int
    draining: int
    converged: bool
    #: What the scaler is doing for the role, for people.
    activity: str


@dataclass
class ClusterStatus:
    cluster: str
    nodes: List[NodeStatus]
    #: Wanted vs actual node count per scalable role.
    roles: List[RoleScaling] = field(default_factory=list)
    #: The host agents, as the wire's ``HostStatus`` fields (camelCase keys).
    hosts: List[Dict[str, Any]] = field(default_factory=list)
    #: Parts of the status that could not be read, and why.
    notes: List[str] = field(default_factory=list)


@dataclass
class ScaleReply:
    """What :meth:`scale` changed: ``previous`` 0 means no count was set before."""

    role: Role
    replicas: int
    previous: int
    warning: str


@dataclass
class SearchParams:
    """Search-time knobs; 0 = the index's default."""

    nprobe: int = 0
    ef: int = 0


@dataclass(eq=False)
class Search:
    """A top-k search of one or more query vectors (``(nq, dim)``, or one 1-D vector)."""

    collection: str
    vectors: Vectors
    top_k: int = 10
    params: SearchParams = field(default_factory=SearchParams)
    output_fields: Sequence[str] = ()
    consistency: Consistency = Consistency.BOUNDED
    #: Milvus boolean expression; only matching rows are searched (empty = all).
    filter: str = ""
    #: Search only these partitions (empty = every loaded one).
    partitions: Sequence[str] = ()

    def __post_init__(self) -> None:
        self.vectors = as_vectors(self.vectors)


@dataclass
class Hits:
    """One query vector's hits, best first."""

    pks: List[PrimaryKey]
    scores: List[float]
    #: Requested output fields, one value per hit.
    columns: List[Column]

    def __len__(self) -> int:
        return len(self.pks)

    def column(self, name: str) -> List[Scalar]:
        for c in self.columns:
            if c.name == name:
                return c.values
        raise KeyError(f"no column {name!r} (have {[c.name for c in self.columns]})")


@dataclass
class SearchResults:
    #: One entry per query vector, in request order.
    results: List[Hits]

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Hits:
        return self.results[i]

    def __iter__(self) -> Iterator[Hits]:
        return iter(self.results)


@dataclass
class Query:
    """Rows matching a filter (or their count, with the output field ``"count(*)"``)."""

    collection: str
    #: Milvus boolean expression; empty = every row (then ``limit`` is required).
    filter: str = ""
    #: Field names, ``"*"`` for every scalar field, or exactly ``"count(*)"``.
    output_fields: Sequence[str] = ()
    #: At most this many rows (0 = no limit).
    limit: int = 0
    #: Rows to skip, in primary-key order.
    offset: int = 0
    consistency: Consistency = Consistency.BOUNDED
    #: Read only these partitions (empty = every loaded one).
    partitions: Sequence[str] = ()


@dataclass
class QueryResults:
    """Matching rows in primary-key order, or one ``count(*)`` column with a single value."""

    rows: RowBatch

    @property
    def count(self) -> int:
        """The answer of a ``count(*)`` query."""
        return int(self.rows.column(COUNT_STAR)[0])

    def __len__(self) -> int:
        return self.rows.num_rows


@dataclass
class GetResults:
    """Rows found, in request order; unknown keys are skipped."""

    rows: RowBatch
    #: Log position that wrote each row.
    seqs: List[int]

    def __len__(self) -> int:
        return self.rows.num_rows


@dataclass
class MutationResult:
    #: Primary keys written (inserts) or targeted (deletes).
    pks: List[PrimaryKey]
    #: Hybrid timestamp (physical ms << 18 | logical) of the write.
    timestamp: int
    #: Rows written or deleted (a delete by filter lists no keys, as in Milvus).
    count: int = 0


@dataclass
class FlushResult:
    #: Ids of the segments sealed by this flush.
    segments: List[int]
