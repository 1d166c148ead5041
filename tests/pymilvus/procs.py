"""A multi-process Quiver cluster for the pymilvus tests that change one under load (drain,
scaling): an external nats-server with the cluster's generated principals, `quiver run` nodes and
host agents as processes of the test, `quiver ctl` as admin; and a pymilvus search + insert load.
"""

import json
import os
import socket
import subprocess
import tempfile
import threading
import time

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from conftest import _dies_with_us, _free_port, _quiver_bin, storage_env, wait_port
from pmutil import STRONG


class ProcCluster:
    """Processes of one cluster in a temp dir, each with its log `<dir>/<name>.log`."""

    def __init__(self, test, env=None):
        self.dir = tempfile.mkdtemp(prefix=f"quiver-pymilvus-{test}-")
        self.nats_port = _free_port()
        self.grpc_port = _free_port()
        self.name = f"pm{test}_{os.getpid()}"
        # Every process of the cluster shares its object store (S3 when the suite runs with --s3).
        self.extra_env = {**storage_env(), **(env or {})}
        self.procs = {}
        self.specs = {}
        # Every nats-server's client port (one unless `start_nats_cluster`).
        self.nats_ports = [self.nats_port]

    def _spawn(self, name, args, env):
        self.specs[name] = (args, env)
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(
            _dies_with_us(args), env=env, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()

    def kill(self, name):
        """SIGKILL of process `name` (waited for)."""
        self.procs[name].kill()
        self.procs[name].wait()

    def restart(self, name):
        """Starts process `name` again as it was started (a supervisor would): same arguments,
        environment, log and, for a nats-server, store."""
        args, env = self.specs[name]
        self._spawn(name, args, env)

    @property
    def nats_url(self):
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.nats_ports)

    def env(self, node=None, extra=None):
        """Environment of a Quiver process: none of the caller's QUIVER_* variables, the cluster's
        names and NATS, gRPC, HTTP and metrics off unless `extra` turns them on."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
        env.update({
            "QUIVER_CLUSTER__NAME": self.name,
            "QUIVER_CLUSTER__DATA_DIR": os.path.join(self.dir, "data"),
            "QUIVER_NATS__URL": self.nats_url,
            "QUIVER_METRICS__LISTEN": "",
            "QUIVER_PROXY__GRPC_PORT": "0",
            "QUIVER_PROXY__HTTP_PORT": "0",
            "RUST_LOG": "info",
        })
        env.update(self.extra_env)
        if node:
            env["QUIVER_NODE__ID"] = node
        env.update(extra or {})
        return env

    def _nats_auth(self):
        auth = subprocess.run(
            [_quiver_bin(), "config", "nats-auth"], env=self.env(), capture_output=True, text=True, timeout=60
        )
        assert auth.returncode == 0, f"quiver config nats-auth: {auth.stderr}"
        return auth.stdout

    def start_nats_cluster(self, n=3):
        """`n` nats-servers (`nats0`, …) as one NATS cluster: routes between all, JetStream on
        each with its own store, the cluster's principals; every node gets every URL. A killed
        server started again with `restart("natsI")` keeps its store and rejoins."""
        self.nats_ports = [self.nats_port] + [_free_port() for _ in range(n - 1)]
        routes = [_free_port() for _ in range(n)]
        auth = self._nats_auth()
        for i in range(n):
            others = ", ".join(f"nats-route://127.0.0.1:{routes[j]}" for j in range(n) if j != i)
            store = os.path.join(self.dir, f"nats-store-{i}")
            conf = os.path.join(self.dir, f"nats-server-{i}.conf")
            with open(conf, "w") as f:
                f.write(f"{auth}\nserver_name: nats{i}\nlisten: 127.0.0.1:{self.nats_ports[i]}\n"
                        f"jetstream {{ store_dir: {json.dumps(store)} }}\n"
                        f"cluster {{ name: {self.name}, listen: 127.0.0.1:{routes[i]}, routes: [{others}] }}\n")
            self._spawn(f"nats{i}", ["nats-server", "-c", conf], None)
        for port in self.nats_ports:
            wait_port(port)

    def start_nats(self):
        """nats-server with JetStream, configured by `quiver config nats-auth` (security is on)."""
        conf = os.path.join(self.dir, "nats-server.conf")
        with open(conf, "w") as f:
            f.write(self._nats_auth())
        store = os.path.join(self.dir, "nats")
        self._spawn(
            "nats", ["nats-server", "-c", conf, "-js", "-sd", store, "-a", "127.0.0.1", "-p", str(self.nats_port)], None
        )
        time.sleep(0.5)

    def start_node(self, node, role, extra=None):
        self._spawn(node, [_quiver_bin(), "run", "--role", role], self.env(node, extra))

    def start_host(self, host_id):
        self._spawn(host_id, [_quiver_bin(), "host", "--id", host_id], self.env())

    @property
    def uri(self):
        return f"http://127.0.0.1:{self.grpc_port}"

    def ctl(self, *args, timeout=240):
        out = subprocess.run(
            [_quiver_bin(), "ctl", "--url", self.nats_url, "--cluster", self.name,
             "--data-dir", os.path.join(self.dir, "data"), *args],
            capture_output=True, text=True, timeout=timeout,
        )
        assert out.returncode == 0, f"quiver ctl {args}: {out.stdout}{out.stderr}"
        return out.stdout

    def admin_token(self):
        with open(os.path.join(self.dir, "data", "credentials", "admin.credentials")) as f:
            return f.read().strip()

    def log(self, name):
        with open(os.path.join(self.dir, f"{name}.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_exit(self, name, timeout=60):
        code = self.procs[name].wait(timeout=timeout)
        assert code == 0, f"{name} exited with {code} after draining:\n{self.log(name)[-3000:]}"

    def milvus_client(self, ready=None, timeout=60, uri=None):
        """A pymilvus client on the proxy's gRPC port (or `uri`), as admin, once it answers (and
        `ready()` passes); stops the cluster if that does not happen within `timeout` seconds."""
        deadline = time.time() + timeout
        while True:
            try:
                client = MilvusClient(uri=uri or self.uri, timeout=5, token=self.admin_token())
                client.list_collections()
                if ready:
                    ready()
                return client
            except Exception:
                if time.time() > deadline:
                    self.stop()
                    raise
                time.sleep(0.5)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


class TcpFront:
    """A TCP load balancer in front of several proxies' gRPC ports, as a deployment puts one
    (an L4 balancer, a Kubernetes Service): each client connection goes to the next backend
    that accepts it. When a backend dies its connections are closed, so the gRPC client sees
    the connection break (UNAVAILABLE, which pymilvus retries) and reconnects through here to
    a live one. Test support, not part of Quiver."""

    def __init__(self, backends):
        self.backends = list(backends)
        self.port = _free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.turn = 0
        self.closed = False
        # Open connections per backend port.
        self.open = {port: 0 for port in self.backends}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client):
        for _ in range(len(self.backends)):
            port = self.backends[self.turn % len(self.backends)]
            self.turn += 1
            try:
                backend = socket.create_connection(("127.0.0.1", port), timeout=2)
                backend.settimeout(None)
                break
            except OSError:
                continue
        else:
            client.close()
            return
        with self.lock:
            self.open[port] += 1
        done = threading.Barrier(2, action=lambda: self._closed(port))
        for src, dst in ((client, backend), (backend, client)):
            threading.Thread(target=self._pump, args=(src, dst, done), daemon=True).start()

    def _closed(self, port):
        with self.lock:
            self.open[port] -= 1

    def busiest(self):
        """The backend port with the most open client connections."""
        with self.lock:
            return max(self.open, key=self.open.get)

    @staticmethod
    def _pump(src, dst, done):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        done.wait()

    def close(self):
        self.closed = True
        self.listener.close()


def base_rows(total, dim, seed):
    """`total` rows `{"id": i, "vector": ...}` of random vectors."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((total, dim), dtype=np.float32)
    return [{"id": i, "vector": v[i].tolist()} for i in range(total)]


def create_docs(client, rows, initial, dim):
    """Collection `docs` (id, vector; FLAT, L2) with `rows[:initial]` inserted, flushed, loaded."""
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="L2")
    # Not loaded on creation: a cluster that just started may not have counted its query nodes
    # yet. The load below waits for them (the server within the call's budget, this loop on a
    # start slower than that: "0 are alive").
    client.create_collection("docs", schema=schema)
    client.create_index("docs", index)
    for start in range(0, initial, 1000):
        client.insert("docs", rows[start:min(start + 1000, initial)])
    client.flush("docs")
    deadline = time.time() + 30
    while True:
        try:
            client.load_collection("docs")
            return
        except MilvusException as e:
            if "are alive" not in str(e) or time.time() > deadline:
                raise
            time.sleep(0.5)


class Load:
    """Two search threads (a base row's own vector must find that row first, 10 distinct hits)
    and one insert thread (rows `initial..total`, 100 at a time), until stopped."""

    def __init__(self, client, rows, initial, total, pause=0.03):
        self.client, self.rows, self.initial, self.total, self.pause = client, rows, initial, total, pause
        self.failures, self.searches, self.inserted = [], 0, initial
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._search, args=(t,)) for t in range(2)]
        self.threads.append(threading.Thread(target=self._insert))

    def _search(self, offset):
        i = offset
        while not self.stop_flag.is_set():
            row = (i * 37) % self.initial
            try:
                hits = self.client.search("docs", data=[self.rows[row]["vector"]], limit=10, **STRONG)[0]
                ids = [h["id"] for h in hits]
                if len(ids) != 10 or len(set(ids)) != 10 or ids[0] != row:
                    self.failures.append(f"row {row}: {ids}")
            except Exception as e:  # any error is a failure
                self.failures.append(f"search: {e}")
            self.searches += 1
            i += 1

    def _insert(self):
        at = self.initial
        while at < self.total and not self.stop_flag.is_set():
            try:
                self.client.insert("docs", self.rows[at:at + 100])
                at += 100
                self.inserted = at
            except Exception as e:
                self.failures.append(f"insert: {e}")
            time.sleep(self.pause)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def wait_inserted(self, timeout=90):
        deadline = time.time() + timeout
        while self.inserted < self.total and time.time() < deadline:
            time.sleep(0.2)

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join()
        return False

    def check(self, client):
        """After the load: every row inserted, nothing failed, every acknowledged row counted once."""
        assert self.inserted == self.total, f"only {self.inserted} rows inserted; failures: {self.failures[:5]}"
        assert not self.failures, f"{len(self.failures)} failures: {self.failures[:5]}"
        assert self.searches > 20, self.searches
        count = client.query("docs", filter="", output_fields=["count(*)"], **STRONG)[0]["count(*)"]
        assert count == self.total, f"{count} rows counted, {self.total} acknowledged"
