"""The synchronous client: :class:`~quiver_client.aio.AsyncClient` driven by an event loop on a
daemon thread of its own, so it works from plain scripts, notebooks that already run a loop, and
several threads at once (calls from different threads run concurrently on that loop)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, List, Optional, Sequence, TypeVar, Union

from .aio import DEFAULT_TIMEOUT, DEFAULT_URL, AsyncClient
from .errors import ConnectError
from .types import (
    ClusterStatus,
    CollectionDescription,
    CollectionSchema,
    Consistency,
    Distribution,
    FlushResult,
    GetResults,
    IndexParams,
    MutationResult,
    PrimaryKey,
    Query,
    QueryResults,
    RoleScaling,
    RowBatch,
    ScaleReply,
    Search,
    SearchResults,
)

__all__ = ["Client"]

T = TypeVar("T")


class _LoopThread:
    """An asyncio loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.stopped = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="quiver-client-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.stopped:
            coro.close()
            raise ConnectError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C: do not leave the call running on the loop
            raise

    def stop(self) -> None:
        self.stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class Client:
    """A synchronous connection to a Quiver cluster; same operations as :class:`AsyncClient`.

    >>> import quiver_client as quiver
    >>> with quiver.Client.connect("nats://127.0.0.1:4222") as client:  # doctest: +SKIP
    ...     client.create_collection(quiver.schema.simple("docs", 384))
    """

    def __init__(self, inner: AsyncClient, loop: _LoopThread) -> None:
        self._inner = inner
        self._loop = loop

    @classmethod
    def connect(
        cls,
        url: Union[str, Sequence[str]] = DEFAULT_URL,
        cluster: str = "quiver",
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 5.0,
        **security: Any,
    ) -> "Client":
        """See :meth:`AsyncClient.connect` (``security``: its keyword-only credentials and TLS
        arguments)."""
        loop = _LoopThread()
        try:
            inner = loop.run(AsyncClient.connect(url, cluster, timeout, connect_timeout, **security))
        except BaseException:
            loop.stop()
            raise
        return cls(inner, loop)

    @property
    def aio(self) -> AsyncClient:
        """The underlying async client (use it only on this client's loop)."""
        return self._inner

    @property
    def cluster(self) -> str:
        return self._inner.cluster

    @property
    def timeout(self) -> float:
        return self._inner.timeout

    @property
    def max_payload(self) -> int:
        return self._inner.max_payload

    def with_timeout(self, timeout: float) -> "Client":
        """A client sharing this connection and loop with another per-call deadline (seconds)."""
        return Client(self._inner.with_timeout(timeout), self._loop)

    def with_traceparent(self, traceparent: Optional[str]) -> "Client":
        """A client sharing this connection and loop whose calls carry the W3C trace context
        ``traceparent`` (see :meth:`AsyncClient.with_traceparent`)."""
        return Client(self._inner.with_traceparent(traceparent), self._loop)

    def close(self) -> None:
        """Closes the connection and stops the loop thread (shared with :meth:`with_timeout`
        clients)."""
        if not self._loop.stopped:
            try:
                self._loop.run(self._inner.close())
            finally:
                self._loop.stop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call_raw(self, method: str, payload: bytes) -> bytes:
        return self._loop.run(self._inner.call_raw(method, payload))

    def create_collection(self, schema: CollectionSchema) -> None:
        self._loop.run(self._inner.create_collection(schema))

    def drop_collection(self, name: str) -> None:
        self._loop.run(self._inner.drop_collection(name))

    def describe_collection(self, name: str) -> CollectionDescription:
        return self._loop.run(self._inner.describe_collection(name))

    def list_collections(self) -> List[str]:
        return self._loop.run(self._inner.list_collections())

    def create_index(self, collection: str, params: IndexParams) -> None:
        self._loop.run(self._inner.create_index(collection, params))

    def drop_index(self, collection: str) -> None:
        self._loop.run(self._inner.drop_index(collection))

    def load_collection(self, collection: str, replicas: int = 1) -> None:
        self._loop.run(self._inner.load_collection(collection, replicas))

    def release_collection(self, collection: str) -> None:
        self._loop.run(self._inner.release_collection(collection))

    def create_partition(self, collection: str, name: str) -> None:
        self._loop.run(self._inner.create_partition(collection, name))

    def drop_partition(self, collection: str, name: str) -> None:
        self._loop.run(self._inner.drop_partition(collection, name))

    def load_partitions(self, collection: str, names: Sequence[str], replicas: int = 1) -> None:
        self._loop.run(self._inner.load_partitions(collection, names, replicas))

    def release_partitions(self, collection: str, names: Sequence[str]) -> None:
        self._loop.run(self._inner.release_partitions(collection, names))

    def list_partitions(self, collection: str) -> List[str]:
        return self._loop.run(self._inner.list_partitions(collection))

    def insert(self, collection: str, rows: RowBatch, partition: str = "") -> MutationResult:
        return self._loop.run(self._inner.insert(collection, rows, partition))

    def upsert(self, collection: str, rows: RowBatch, partition: str = "") -> MutationResult:
        return self._loop.run(self._inner.upsert(collection, rows, partition))

    def delete(self, collection: str, pks: Sequence[PrimaryKey]) -> MutationResult:
        return self._loop.run(self._inner.delete(collection, pks))

    def delete_where(self, collection: str, filter: str, partition: str = "") -> MutationResult:
        return self._loop.run(self._inner.delete_where(collection, filter, partition))

    def flush(self, collection: str) -> FlushResult:
        return self._loop.run(self._inner.flush(collection))

    def get(
        self,
        collection: str,
        pks: Sequence[PrimaryKey],
        output_fields: Sequence[str] = (),
        consistency: Consistency = Consistency.BOUNDED,
    ) -> GetResults:
        return self._loop.run(self._inner.get(collection, pks, output_fields, consistency))

    def search(self, search: Search) -> SearchResults:
        return self._loop.run(self._inner.search(search))

    def query(self, query: Query) -> QueryResults:
        return self._loop.run(self._inner.query(query))

    def distribution(self, collection: str) -> Distribution:
        return self._loop.run(self._inner.distribution(collection))

    def status(self) -> ClusterStatus:
        return self._loop.run(self._inner.status())

    def scale(self, role: str, replicas: int) -> ScaleReply:
        return self._loop.run(self._inner.scale(role, replicas))

    def scaling(self) -> List[RoleScaling]:
        return self._loop.run(self._inner.scaling())

    def events(self) -> Any:
        return self._loop.run(self._inner.events())

    def plugin_load(self, kind: str, name: str, wasm: bytes) -> Any:
        return self._loop.run(self._inner.plugin_load(kind, name, wasm))

    def plugin_activate(self, name: str, version: str) -> Any:
        return self._loop.run(self._inner.plugin_activate(name, version))

    def plugin_rollback(self, kind: str) -> Any:
        return self._loop.run(self._inner.plugin_rollback(kind))

    def plugin_list(self) -> Any:
        return self._loop.run(self._inner.plugin_list())
