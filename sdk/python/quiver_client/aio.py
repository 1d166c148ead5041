"""The asyncio client (the core; :mod:`quiver_client.sync` wraps it for synchronous code).

A call is one NATS request to ``quiver.<cluster>.api.<method>``, which every proxy serves in one
queue group, so no load balancer is needed. The request carries a Cap'n Proto body and a
``Quiver-Timeout-Ms`` header (the caller's budget in ms); a reply without a ``Quiver-Status``
header is a success whose payload is the response message, otherwise ``Quiver-Status`` holds the error code and
``Quiver-Error`` the reason (``schemas/src/status.rs``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import ssl
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar, Union

import nats.errors
from nats.aio.client import Client as Nats

from . import wire
from .errors import ConnectError, InvalidArgument, PermissionDenied, Timeout, Unavailable, error_from_status
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

__all__ = ["AsyncClient", "DEFAULT_URL", "DEFAULT_TIMEOUT"]

DEFAULT_URL = "nats://127.0.0.1:4222"
#: Per-call deadline, seconds (as in the Rust SDK).
DEFAULT_TIMEOUT = 60.0

HEADER_STATUS = "Quiver-Status"
HEADER_ERROR = "Quiver-Error"
HEADER_TIMEOUT = "Quiver-Timeout-Ms"
#: The status of a request the node that got it did not act on (schemas/src/status.rs).
STATUS_NOT_SERVED = "13"
HEADER_REQUEST_ID = "Quiver-Request-Id"
#: The W3C trace context of a call (:meth:`AsyncClient.with_traceparent`).
HEADER_TRACEPARENT = "traceparent"

#: Calls sent again, while the first send is still awaited, after ``_HEDGE_AFTER`` seconds
#: without an answer (then twice that, ``_MAX_SENDS`` sends in all): core NATS delivers at most
#: once, and a request or its answer on its way through a nats-server that died is lost without
#: a trace. The first answer is taken. Reads, and inserts that carry their keys (sent with a
#: request id, which the proxy turns into the log message's id: stored once), and upserts (the
#: same rows again leave the same rows).
_HEDGED = frozenset(
    ["describe_collection", "list_collections", "query", "get", "search", "distribution", "status", "insert", "upsert"]
)
_HEDGE_AFTER = 2.0
#: Request ids: the pid, when this module was loaded (ms) and a per-process counter.
_request_ids = itertools.count()
_STARTED_MS = int(time.time() * 1000)
_MAX_SENDS = 3

# Insert splitting, as in the Rust SDK: room left in each request for everything but the rows,
# an estimate of each row's overhead, and the server's default `proxy.max_insert_rows`.
_ENVELOPE_BYTES = 64 * 1024
_ROW_OVERHEAD_BYTES = 128
_MAX_INSERT_ROWS = 100_000

log = logging.getLogger("quiver_client")

T = TypeVar("T")


class _Unserved(Exception):
    """A request nothing acted on: sent again by ``call_raw`` while time is left."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Refusals:
    """The NATS server's permission violations on one connection. A refused publish gets no
    reply, only an error on the connection naming the subject (``Permissions Violation for
    Publish to "<subject>"``): a call waiting on that subject fails at once with it."""

    def __init__(self) -> None:
        self._waiting: Dict[str, List["asyncio.Future[str]"]] = {}

    def heard(self, text: str) -> None:
        # nats-py hands the server's error over lower-cased.
        text = text.lower()
        for subject, futures in self._waiting.items():
            if f'"{subject.lower()}"' in text:
                for future in futures:
                    if not future.done():
                        future.set_result(text)

    def watch(self, subject: str) -> "asyncio.Future[str]":
        future: "asyncio.Future[str]" = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(subject, []).append(future)
        return future

    def forget(self, subject: str, future: "asyncio.Future[str]") -> None:
        futures = self._waiting.get(subject, [])
        if future in futures:
            futures.remove(future)
        if not futures:
            self._waiting.pop(subject, None)
        future.cancel()


class AsyncClient:
    """A connection to a Quiver cluster. Create it with :meth:`connect`; close it with
    :meth:`close` or ``async with``."""

    def __init__(
        self,
        nc: Nats,
        cluster: str,
        timeout: float,
        traceparent: Optional[str] = None,
        refusals: Optional[_Refusals] = None,
    ) -> None:
        self._nc = nc
        self._refusals = refusals or _Refusals()
        self.cluster = cluster
        #: Per-call deadline, seconds.
        self.timeout = timeout
        #: W3C trace context sent with every call, or None.
        self.traceparent = traceparent

    @classmethod
    async def connect(
        cls,
        url: Union[str, Sequence[str]] = DEFAULT_URL,
        cluster: str = "quiver",
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 5.0,
        *,
        credentials_file: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        tls_ca_file: Optional[str] = None,
        tls_cert_file: Optional[str] = None,
        tls_key_file: Optional[str] = None,
    ) -> "AsyncClient":
        """Connects to the cluster ``cluster`` through the NATS server(s) at ``url`` (a list, or
        comma separated). Retries for up to ``connect_timeout`` seconds, then raises
        :class:`ConnectError`; once connected, it reconnects forever.

        A cluster with ``security.enabled`` needs a principal: ``credentials_file`` (the
        ``app.credentials`` or ``admin.credentials`` file Quiver generated, one line
        ``user:password``) or ``user`` and ``password``. ``tls_ca_file`` (the CA that signed the
        NATS server's certificate) turns TLS on; ``tls_cert_file`` and ``tls_key_file`` present a
        client certificate."""
        servers = [u.strip() for u in url.split(",")] if isinstance(url, str) else list(url)
        extra: Dict[str, Any] = {}
        if credentials_file:
            try:
                with open(credentials_file) as f:
                    user, _, password = f.read().strip().partition(":")
            except OSError as e:
                raise ConnectError(f"cannot read credentials {credentials_file}: {e}") from None
            if not user or not password:
                raise ConnectError(f"{credentials_file}: must hold one line 'user:password'")
        if user:
            # A principal may read only the replies under its own inbox prefix (docs/security.md).
            extra.update(user=user, password=password or "", inbox_prefix=f"_INBOX.{user}")
        if tls_ca_file or tls_cert_file:
            context = ssl.create_default_context(cafile=tls_ca_file)
            if tls_cert_file:
                context.load_cert_chain(tls_cert_file, tls_key_file)
            extra["tls"] = context

        refusals = _Refusals()

        async def on_error(e: Exception) -> None:
            if "permissions violation" in str(e).lower():
                refusals.heard(str(e))
            log.debug("NATS: %s", e)

        nc = Nats()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=servers,
                    name="quiver-client-python",
                    # nats-py annotates these as int but sleeps / waits on them: fractions work.
                    connect_timeout=min(connect_timeout, 2.0),  # type: ignore[arg-type]
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    error_cb=on_error,
                    **extra,
                ),
                connect_timeout,
            )
        except Exception as e:
            await nc.close()
            reason = f"no answer within {connect_timeout}s" if isinstance(e, asyncio.TimeoutError) else str(e)
            raise ConnectError(f"{','.join(servers)}: {reason}") from None
        return cls(nc, cluster, timeout, refusals=refusals)

    def with_timeout(self, timeout: float) -> "AsyncClient":
        """A client sharing this connection with another per-call deadline (seconds)."""
        return AsyncClient(self._nc, self.cluster, timeout, self.traceparent, self._refusals)

    def with_traceparent(self, traceparent: Optional[str]) -> "AsyncClient":
        """A client sharing this connection whose calls carry the W3C trace context
        ``traceparent`` (``00-<trace id>-<span id>-<flags>``, e.g. your current span's): with
        tracing on in the cluster (``tracing.endpoint``) each call's spans join that trace under
        that span, and its sampled flag decides whether they are recorded. None: no context."""
        return AsyncClient(self._nc, self.cluster, self.timeout, traceparent, self._refusals)

    async def close(self) -> None:
        """Closes the connection (shared with clients made by :meth:`with_timeout`)."""
        if not self._nc.is_closed:
            await self._nc.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def max_payload(self) -> int:
        """The largest message the NATS server accepts, bytes."""
        return int(self._nc.max_payload)

    # ---- transport ------------------------------------------------------------------------

    async def call_raw(self, method: str, payload: bytes, request_id: Optional[str] = None) -> bytes:
        """Sends raw bytes to an API method and returns the raw reply (tests use it to send
        malformed messages).

        A request nothing served (no proxy subscribed at that moment: one restarting, or
        reconnecting after its nats-server was lost; status 13 from a node that no longer acts
        for the service) was not acted on, so it is sent again, with a growing pause, within the
        client's timeout. Reads, and calls with a ``request_id``, are also sent again when they
        go unanswered for a while (``_HEDGED``). Any other outcome is final."""
        subject = f"quiver.{self.cluster}.api.{method}"
        deadline = time.monotonic() + self.timeout
        pause = 0.02
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            try:
                return await self._call_once(subject, method, payload, left, request_id)
            except _Unserved as unserved:
                if deadline - time.monotonic() <= pause:
                    raise unserved.error from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)

    async def _call_once(
        self, subject: str, method: str, payload: bytes, timeout: float, request_id: Optional[str] = None
    ) -> bytes:
        deadline = time.monotonic() + timeout
        hedged = method in _HEDGED and (method != "insert" or request_id is not None)

        def send() -> "asyncio.Task[Any]":
            left = max(deadline - time.monotonic(), 0.001)
            # The remaining budget, relative (clocks need not agree); the cluster stops working
            # on the request when it runs out.
            headers = {HEADER_TIMEOUT: str(int(left * 1000))}
            if request_id:
                headers[HEADER_REQUEST_ID] = request_id
            if self.traceparent:
                headers[HEADER_TRACEPARENT] = self.traceparent
            return asyncio.ensure_future(self._nc.request(subject, payload, timeout=left, headers=headers))

        refused = self._refusals.watch(subject)
        sends = {send()}
        silence = _HEDGE_AFTER
        next_send = time.monotonic() + silence
        try:
            while True:
                wait = next_send - time.monotonic() if hedged and len(sends) < _MAX_SENDS else None
                done, _ = await asyncio.wait({*sends, refused}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if refused in done:
                    raise PermissionDenied(f"{method}: the NATS server refused it for this connection: {refused.result()}")
                if not done:
                    if deadline - time.monotonic() > 0.001:
                        sends.add(send())
                    silence *= 2
                    next_send += silence
                    continue
                task = done.pop()
                sends.discard(task)
                try:
                    msg = task.result()
                    break
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                    # One send ran out of time, or found no proxy (a resend reaching a proxy
                    # that is draining), while another may still answer.
                    if sends:
                        continue
                    raise
        except nats.errors.NoRespondersError:
            raise _Unserved(
                Unavailable(f"no proxy serves {subject}: is Quiver running with cluster name {self.cluster!r}?")
            ) from None
        except nats.errors.TimeoutError:
            raise Timeout(f"{method} after {self.timeout}s") from None
        except nats.errors.MaxPayloadError:
            raise InvalidArgument(
                f"{method}: the request is {len(payload)} bytes, more than the NATS server's max_payload "
                f"of {self.max_payload} bytes; send smaller batches"
            ) from None
        except nats.errors.Error as e:
            raise Unavailable(f"{method}: {e}") from None
        finally:
            for task in sends:
                task.cancel()
            self._refusals.forget(subject, refused)
        headers = msg.headers or {}
        if HEADER_STATUS in headers:
            status = headers.get(HEADER_STATUS)
            error = error_from_status(status, headers.get(HEADER_ERROR, ""))
            if status == STATUS_NOT_SERVED:
                raise _Unserved(error)
            raise error
        return bytes(msg.data)

    async def _call(
        self,
        method: str,
        request: str,
        body: wire.Dict_,
        reply: str,
        convert: Callable[[wire.Dict_], T],
        request_id: Optional[str] = None,
    ) -> T:
        data = await self.call_raw(method, wire.encode(request, body), request_id)
        return convert(wire.decode(reply, data))

    async def _call_empty(self, method: str, request: str, body: wire.Dict_) -> None:
        await self._call(method, request, body, "Empty", lambda _: None)

    async def _plugin(self, method: str, request: str, body: wire.Dict_) -> Any:
        return await self._call(method, request, body, "PluginReport", lambda d: json.loads(d.get("json") or "null"))

    # ---- collections ----------------------------------------------------------------------

    async def create_collection(self, schema: CollectionSchema) -> None:
        await self._call_empty("create_collection", "CreateCollection", {"schema": wire.schema_to_wire(schema)})

    async def drop_collection(self, name: str) -> None:
        await self._call_empty("drop_collection", "CollectionName", {"name": name})

    async def describe_collection(self, name: str) -> CollectionDescription:
        return await self._call(
            "describe_collection", "CollectionName", {"name": name}, "CollectionDescription", wire.description_from_wire
        )

    async def list_collections(self) -> List[str]:
        return await self._call("list_collections", "Empty", {}, "CollectionList", wire.names_from_wire)

    async def create_index(self, collection: str, params: IndexParams) -> None:
        """Sets the collection's index; sealed segments get it built in the background."""
        body = {"collection": collection, "params": wire.index_to_wire(params)}
        await self._call_empty("create_index", "CreateIndex", body)

    async def drop_index(self, collection: str) -> None:
        """Drops the vector index of a released collection (segments are then searched exactly)."""
        await self._call_empty("drop_index", "CollectionName", {"name": collection})

    async def load_collection(self, collection: str, replicas: int = 1) -> None:
        """Serves a collection from ``replicas`` in-memory replica groups on disjoint query nodes
        (on a loaded collection, changes the number of replicas). Raises ``InvalidArgument`` when
        fewer query nodes than ``replicas`` are alive."""
        await self._call_empty("load_collection", "LoadCollection", {"name": collection, "replicas": replicas})

    async def release_collection(self, collection: str) -> None:
        """Stops serving a collection from query nodes; reads are refused until it is loaded
        again, inserts are still accepted."""
        await self._call_empty("release_collection", "CollectionName", {"name": collection})

    async def create_partition(self, collection: str, name: str) -> None:
        """Creates partition ``name`` (creating it again succeeds)."""
        await self._partitions("create_partition", collection, [name])

    async def drop_partition(self, collection: str, name: str) -> None:
        """Drops a released partition; its rows are never read again."""
        await self._partitions("drop_partition", collection, [name])

    async def load_partitions(self, collection: str, names: Sequence[str], replicas: int = 1) -> None:
        """Reads cover partitions ``names`` again; a released collection is loaded with only them."""
        await self._partitions("load_partitions", collection, list(names), replicas)

    async def release_partitions(self, collection: str, names: Sequence[str]) -> None:
        """Reads no longer cover partitions ``names``; with none left, the collection is released."""
        await self._partitions("release_partitions", collection, list(names))

    async def list_partitions(self, collection: str) -> List[str]:
        """The names of the collection's partitions, ``_default`` first."""
        body = {"name": collection}
        d = await self._call("describe_collection", "CollectionName", body, "CollectionDescription", lambda d: d)
        parts = d.get("info", {}).get("partitions", [])
        if not parts:
            return ["_default"]
        return [p["name"] for p in parts if p.get("state") != "dropped"]

    async def _partitions(self, method: str, collection: str, names: List[str], replicas: int = 0) -> None:
        body = {"collection": collection, "names": names, "replicas": replicas}
        await self._call_empty(method, "PartitionRequest", body)

    # ---- writes ---------------------------------------------------------------------------

    async def insert(self, collection: str, rows: RowBatch, partition: str = "") -> MutationResult:
        """Inserts rows (into ``partition``; empty = ``_default``); acknowledged once they are
        durable in the log. Batches larger than the server's message limit are sent as several
        requests (each atomic on its own)."""
        return await self._write("insert", collection, rows, partition)

    async def upsert(self, collection: str, rows: RowBatch, partition: str = "") -> MutationResult:
        """Inserts rows (into ``partition``) that replace the rows with the same keys (each row
        carries its key), whatever their partition. Readers see a key's old row or its new one,
        never neither. Acknowledged once durable in the log; batches larger than the server's
        message limit are sent as several requests (each atomic on its own)."""
        return await self._write("upsert", collection, rows, partition)

    async def _write(self, method: str, collection: str, rows: RowBatch, partition: str) -> MutationResult:
        n = rows.num_rows
        per_call = self._rows_per_insert(rows)
        if n <= per_call:
            return await self._insert_one(method, collection, rows, partition)
        out = MutationResult([], 0)
        for start in range(0, n, per_call):
            part = rows.slice(start, min(start + per_call, n))
            res = await self._insert_one(method, collection, part, partition)
            out.pks.extend(res.pks)
            out.timestamp = res.timestamp
            out.count += res.count
        return out

    def _rows_per_insert(self, rows: RowBatch) -> int:
        n = max(rows.num_rows, 1)
        # Unlike the Rust SDK, count text cells too: a batch of long titles must still fit.
        text = sum(len(v) for c in rows.columns for v in c.values if isinstance(v, str))
        text += sum(len(d) for d in rows.dynamic)
        row_bytes = rows.dim * 4 + _ROW_OVERHEAD_BYTES + text // n
        fit = max(self.max_payload - _ENVELOPE_BYTES, 0) // max(row_bytes, 1)
        return max(1, min(fit, _MAX_INSERT_ROWS))

    async def _insert_one(self, method: str, collection: str, rows: RowBatch, partition: str) -> MutationResult:
        body = {"collection": collection, "rows": wire.rows_to_wire(rows), "partition": partition}
        # Rows that carry their keys are stored once however often they are sent (each call's
        # rows fit one log message per shard, named after the request id and the keys).
        request_id = f"py{os.getpid()}.{_STARTED_MS}.{next(_request_ids)}" if rows.pks else None
        return await self._call(method, "Insert", body, "MutationResult", wire.mutation_from_wire, request_id)

    async def delete(self, collection: str, pks: Sequence[PrimaryKey]) -> MutationResult:
        """Deletes rows by primary key."""
        body = {"collection": collection, "pks": [wire.pk_to_wire(p) for p in pks], "filter": ""}
        return await self._call("delete", "Delete", body, "MutationResult", wire.mutation_from_wire)

    async def delete_where(self, collection: str, filter: str, partition: str = "") -> MutationResult:
        """Deletes every row matching a Milvus boolean expression (in ``partition``; empty =
        every partition), however many; the result's ``count`` says how many were deleted (its
        key list is empty, as in Milvus). A key deleted in a partition is deleted in all."""
        body = {"collection": collection, "pks": [], "filter": filter, "partition": partition}
        return await self._call("delete", "Delete", body, "MutationResult", wire.mutation_from_wire)

    async def flush(self, collection: str) -> FlushResult:
        """Seals and persists everything inserted so far."""
        return await self._call("flush", "CollectionName", {"name": collection}, "FlushResult", wire.flush_from_wire)

    # ---- reads ----------------------------------------------------------------------------

    async def get(
        self,
        collection: str,
        pks: Sequence[PrimaryKey],
        output_fields: Sequence[str] = (),
        consistency: Consistency = Consistency.BOUNDED,
    ) -> GetResults:
        """Rows by primary key, in request order (unknown keys are skipped), with their vectors
        and ``output_fields``."""
        body = wire.get_to_wire(collection, pks, output_fields, consistency)
        return await self._call("get", "Get", body, "GetResults", wire.get_results_from_wire)

    async def search(self, search: Search) -> SearchResults:
        """Top-k hits of each query vector (see :class:`Search`; ``schema.search`` builds one)."""
        return await self._call(
            "search", "Search", wire.search_to_wire(search), "SearchResults", wire.search_results_from_wire
        )

    async def query(self, query: Query) -> QueryResults:
        """Rows matching a filter (see :class:`Query`); ``output_fields=["count(*)"]`` counts
        them (``results.count``)."""
        return await self._call("query", "Query", wire.query_to_wire(query), "QueryResults", wire.query_results_from_wire)

    # ---- cluster --------------------------------------------------------------------------

    async def distribution(self, collection: str) -> Distribution:
        """Where each segment and shard of a collection is served."""
        return await self._call(
            "distribution", "CollectionName", {"name": collection}, "Distribution", wire.distribution_from_wire
        )

    async def status(self) -> ClusterStatus:
        """Every live node with its role, health, memory, segments and restarts."""
        return await self._call("status", "Empty", {}, "ClusterStatus", wire.status_from_wire)

    # ---- scaling (MISSION S3.1; docs/scaling.md) --------------------------------------------

    async def scale(self, role: str, replicas: int) -> ScaleReply:
        """Asks for ``replicas`` nodes of ``role`` (``proxy``, ``datanode``, ``indexnode`` or
        ``querynode``); admin only. Returns at once; :meth:`scaling` shows the convergence."""
        body = {"role": role, "replicas": int(replicas)}
        return await self._call("scale", "ScaleRequest", body, "ScaleReply", wire.scale_reply_from_wire)

    async def scaling(self) -> List[RoleScaling]:
        """Every scalable role's wanted and actual node count."""
        return await self._call(
            "scaling", "Empty", {}, "ScalingStatus", lambda d: [wire.role_scaling_from_wire(r) for r in d.get("roles", [])]
        )

    async def events(self) -> Any:
        """Recent hand-offs (``sealedSegmentChangeInfo``) and scaling steps, as the wire's
        ``ClusterEvents`` fields: ``{"handoffs": [...], "scaling": [...]}``."""
        return await self._call("events", "Empty", {}, "ClusterEvents", lambda d: d)

    # ---- plugins (answers are the coordinator's JSON documents, parsed) ------------------

    async def plugin_load(self, kind: str, name: str, wasm: bytes) -> Any:
        """Validates a policy plugin (a Wasm component) in the cluster and adds it to the
        catalog as the next version of ``name``. Returns the catalog entry."""
        return await self._plugin("plugin_load", "PluginUpload", {"kind": kind, "name": name, "wasm": bytes(wasm)})

    async def plugin_activate(self, name: str, version: str) -> Any:
        """Makes ``name@version`` the active plugin of its kind on every node (``"builtin"`` for
        the bundled plugins). Returns the new active choice."""
        return await self._plugin("plugin_activate", "PluginActivate", {"name": name, "version": version})

    async def plugin_rollback(self, kind: str) -> Any:
        """Goes back to the previously active plugin of ``kind``. Returns the new choice."""
        return await self._plugin("plugin_rollback", "PluginRollback", {"kind": kind})

    async def plugin_list(self) -> Any:
        """The plugin catalog, the active plugin per kind and what every node runs."""
        return await self._plugin("plugin_list", "Empty", {})
