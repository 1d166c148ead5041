"""Fixtures: one real ``quiver standalone`` per test session.

The server is the binary in ``$QUIVER_BIN`` (default ``/tmp/quiver-bin/quiver``), run with its
own temp data dir, cluster name and free NATS port (config overrides through
``QUIVER_<SECTION>__<KEY>``, as the Rust integration harness does), metrics off. The session
waits until all five roles report healthy, and terminates the server at the end; if any test
failed, the tail of the server log is printed in the terminal summary.

Security is on by default, so the server generates its principals under its data dir and
every client here connects as ``admin`` (``Server.credentials_file``, passed as
``credentials_file=``).

Tests share the server and use their own collection names. ``QUIVER_PY_LOG`` sets the server's
``RUST_LOG`` (default ``info``); ``QUIVER_PY_KEEP=1`` keeps the temp dir.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Optional, TypeVar

import numpy as np
import pytest

import quiver_client as quiver

QUIVER_BIN = os.environ.get("QUIVER_BIN", "/tmp/quiver-bin/quiver")
READY_SECONDS = 30.0
ROLES = ["coordinator", "proxy", "datanode", "indexnode", "querynode"]

T = TypeVar("T")


@dataclass
class Server:
    url: str
    cluster: str
    pid: int
    log: Path
    #: The ``admin.credentials`` the server generated (security is on by default).
    credentials_file: Optional[str] = None
    #: The log's last lines, kept when the temp dir is removed at the end of the session.
    final_tail: Optional[str] = None

    def log_tail(self, lines: int = 80) -> str:
        if self.final_tail is not None:
            return self.final_tail
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(cannot read {self.log}: {e})"


_server: Optional[Server] = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: the server gets SIGKILL if pytest dies, so nothing is left behind.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, server: Server) -> None:
    start = time.monotonic()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"quiver exited with {proc.returncode} before listening on {port}:\n{server.log_tail()}")
        if time.monotonic() - start > READY_SECONDS:
            pytest.fail(f"nothing listens on port {port} after {READY_SECONDS}s:\n{server.log_tail()}")
        time.sleep(0.05)


async def _wait_ready(server: Server) -> None:
    """Polls `status` until every role of this very process is healthy."""
    start = time.monotonic()
    last = ""
    async with await quiver.AsyncClient.connect(
        server.url, server.cluster, timeout=3.0, connect_timeout=10.0, credentials_file=server.credentials_file
    ) as c:
        while time.monotonic() - start < READY_SECONDS:
            try:
                status = await c.status()
                healthy = {n.node_id for n in status.nodes if n.pid == server.pid and n.healthy}
                missing = [r for r in ROLES if f"standalone-{r}" not in healthy]
                if not missing:
                    return
                last = f"not yet healthy: {missing}"
            except quiver.ClientError as e:
                last = str(e)
            await asyncio.sleep(0.1)
    pytest.fail(f"cluster not ready after {READY_SECONDS}s: {last}\n{server.log_tail()}")


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    global _server
    if not (os.path.isfile(QUIVER_BIN) and os.access(QUIVER_BIN, os.X_OK)):
        pytest.fail(f"no quiver binary at {QUIVER_BIN}: build it and/or set QUIVER_BIN")
    tmp = Path(tempfile.mkdtemp(prefix="quiver-pytest-"))
    port = free_port()
    cluster = f"py_{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
    env.update(
        {
            "QUIVER_CLUSTER__NAME": cluster,
            "QUIVER_CLUSTER__DATA_DIR": str(tmp / "data"),
            "QUIVER_NATS__EMBEDDED_PORT": str(port),
            "QUIVER_METRICS__LISTEN": "",
            "RUST_LOG": os.environ.get("QUIVER_PY_LOG", "info"),
            "NO_COLOR": "1",
        }
    )
    log = tmp / "standalone.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [QUIVER_BIN, "standalone"], env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    admin = tmp / "data" / "credentials" / "admin.credentials"
    srv = Server(url=f"nats://127.0.0.1:{port}", cluster=cluster, pid=proc.pid, log=log, credentials_file=str(admin))
    _server = srv
    try:
        _wait_for_port(proc, port, srv)
        asyncio.run(_wait_ready(srv))
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        srv.final_tail = srv.log_tail()
        if not os.environ.get("QUIVER_PY_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if _server is not None and (terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")):
        terminalreporter.section(f"last lines of the server log ({_server.log})")
        terminalreporter.write_line(_server.log_tail())


@pytest.fixture(scope="session")
async def client(server: Server) -> AsyncIterator[quiver.AsyncClient]:
    c = await quiver.AsyncClient.connect(
        server.url, server.cluster, timeout=20.0, credentials_file=server.credentials_file
    )
    yield c
    await c.close()


# ---- helpers shared by the tests --------------------------------------------------------------


async def retry(what: str, call: Callable[[], Awaitable[T]], limit: float = 20.0) -> T:
    """Calls until it succeeds, retrying only retryable errors (the cluster may still be
    assigning a new collection), for at most `limit` seconds."""
    start = time.monotonic()
    while True:
        try:
            return await call()
        except quiver.ClientError as e:
            if not e.is_retryable or time.monotonic() - start > limit:
                raise AssertionError(f"{what}: {e!r} (after {time.monotonic() - start:.1f}s)") from e
        await asyncio.sleep(0.2)


async def eventually(what: str, check: Callable[[], Awaitable[Optional[str]]], limit: float = 30.0) -> None:
    """Polls `check` (None = done, else why not yet) until done or `limit` seconds."""
    start = time.monotonic()
    why: Optional[str] = "never checked"
    while time.monotonic() - start < limit:
        why = await check()
        if why is None:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not reached after {limit}s: {why}")


async def wait_segments(
    client: quiver.AsyncClient, collection: str, rows: int, state: quiver.SegmentState, limit: float = 30.0
) -> quiver.Distribution:
    """Waits until sealed segments holding `rows` rows are served, all in `state`."""
    out: list[quiver.Distribution] = []

    async def check() -> Optional[str]:
        d = await client.distribution(collection)
        served = sum(s.segment.rows for s in d.segments)
        states = [s.segment.state for s in d.segments]
        if served == rows and all(s == state for s in states):
            out.append(d)
            return None
        return f"{served} rows served, states {[s.value for s in states]}"

    await eventually(f"{collection}: {rows} rows in {state.value} segments", check, limit)
    return out[0]


def random_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the k nearest base rows (L2) of each query, by brute force."""
    d = (queries**2).sum(1)[:, None] - 2 * queries @ base.T + (base**2).sum(1)[None, :]
    return np.argsort(d, axis=1)[:, :k]
