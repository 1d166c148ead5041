"""Fixtures of the pymilvus compatibility suite.

The suite talks to a Milvus-compatible gRPC endpoint through `pymilvus.MilvusClient`:

* `QUIVER_MILVUS_URI=http://host:19530` — use that running server (Quiver or a real Milvus);
* otherwise start `quiver standalone` from `QUIVER_BIN` (or `quiver` on PATH) with a temp data
  dir and free ports (embedded NATS, gRPC; metrics off), wait until `MilvusClient(uri)` connects
  (60 s), and stop it at the end (SIGTERM, then SIGKILL). Its log is printed when a test failed.
  Security is on by default, so every suite client connects as the admin principal the server
  generated: `token="admin:<password>"`, read from `<data_dir>/credentials/admin.credentials`.

`QUIVER_PYMILVUS_TRACE=FILE` appends one JSON line per RPC pymilvus makes (test, rpc, set request
fields, response fields): the exact protocol the tests exercise.

`QUIVER_PYMILVUS_SECURE=1` (`run.sh VERSION --secure`): the server started here also runs
TLS on gRPC and NATS (a throw-away CA made with the `openssl` CLI), and every client connects as
`MilvusClient(uri="https://…", token="admin:<password>", server_pem_path=<CA>)`. Tests that start servers of their own or use a plaintext stub are
skipped. Against a running server, `QUIVER_MILVUS_TOKEN` and `QUIVER_MILVUS_SERVER_PEM` give the
token and CA.

`QUIVER_PYMILVUS_S3=1` (`run.sh VERSION --s3`): every server and cluster the suite starts keeps
its objects in an S3-compatible store, an `s3rver` (npm, installed by `scripts/install-deps.sh`
under `~/.cache/quiver-npm`; `QUIVER_S3RVER` names another) the suite starts once, each server
under a prefix of its own in bucket `quiver`.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
from pymilvus import MilvusClient

START_TIMEOUT = 60.0
SECURE = os.environ.get("QUIVER_PYMILVUS_SECURE") == "1"
S3 = os.environ.get("QUIVER_PYMILVUS_S3") == "1"
_s3 = {}
#: Arguments every suite client passes to MilvusClient besides the uri (token, CA in secure mode).
CLIENT_ARGS = {}
_failed = []
_current_test = {"name": ""}


_next_port = {"n": (os.getpid() * 7919) % 12000}


def _free_port():
    """A free port below Linux's ephemeral range (32768 and up), taken in turn: a port the
    kernel picked can be handed to another process's outgoing connection before the server
    meant for it binds it (a nats-server's route port taken by another server's route)."""
    for _ in range(12000):
        port = 20000 + _next_port["n"] % 12000
        _next_port["n"] += 1
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quiver_bin():
    b = os.environ.get("QUIVER_BIN") or shutil.which("quiver")
    if not b:
        cand = os.path.expanduser("~/.cache/quiver-target/release/quiver")
        b = cand if os.path.exists(cand) else None
    if not b:
        pytest.exit("set QUIVER_MILVUS_URI (running server) or QUIVER_BIN (quiver binary to start)", 2)
    return b


def _dies_with_us(cmd):
    """`cmd` such that the process dies with the test runner, even if pytest is SIGKILLed
    (PR_SET_PDEATHSIG through util-linux's setpriv, which then execs `cmd`). Not through
    Popen's preexec_fn: that runs Python in a child forked from a process whose gRPC threads
    (pymilvus) are running, and grpcio's fork handlers can abort that child before it execs
    (seen as a node of a test cluster that never started)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else list(cmd)


def wait_port(port, timeout=30, what="anything"):
    """Waits until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.time() < deadline, f"{what} does not listen on {port} after {timeout} s"
            time.sleep(0.1)


def _s3rver_bin():
    b = os.environ.get("QUIVER_S3RVER") or os.path.expanduser("~/.cache/quiver-npm/node_modules/.bin/s3rver")
    if not os.path.exists(b):
        pytest.exit(f"{b} does not exist: run scripts/install-deps.sh (it installs s3rver) or set QUIVER_S3RVER", 2)
    return b


def storage_env():
    """`QUIVER_STORAGE__*` settings for a fresh prefix in the suite's S3 store (started on first
    use, stopped when the suite ends), or nothing unless `QUIVER_PYMILVUS_S3=1`."""
    if not S3:
        return {}
    if "port" not in _s3:
        directory = tempfile.mkdtemp(prefix="quiver-pymilvus-s3-")
        port = _free_port()
        log = open(os.path.join(directory, "s3rver.log"), "ab")
        args = [_s3rver_bin(), "-d", directory, "-a", "127.0.0.1", "-p", str(port), "--no-vhost-buckets",
                "--configure-bucket", "quiver"]
        _s3.update(proc=subprocess.Popen(_dies_with_us(args), stdout=log, stderr=subprocess.STDOUT), port=port,
                   dir=directory)

        # s3rver 3.7.1 dies (an unhandled ENOENT) when an object is uploaded under a prefix whose
        # directory another request is removing (an index build finishing for a collection a
        # test just dropped). A real S3 does not go away: start it again, on the same port and
        # directory, so its objects stay.
        def keep_running():
            while True:
                code = _s3["proc"].wait()
                if _s3.get("stopping"):
                    return
                log.write(f"\n[conftest] s3rver exited with {code}; starting it again\n".encode())
                log.flush()
                time.sleep(0.2)
                _s3["proc"] = subprocess.Popen(_dies_with_us(args), stdout=log, stderr=subprocess.STDOUT)

        threading.Thread(target=keep_running, daemon=True).start()
        wait_port(port, what=f"s3rver (see {directory}/s3rver.log)")
    return {
        "QUIVER_STORAGE__URL": f"s3://quiver/{uuid.uuid4().hex}",
        "QUIVER_STORAGE__ENDPOINT": f"http://127.0.0.1:{_s3['port']}",
        "QUIVER_STORAGE__ACCESS_KEY_ID": "S3RVER",
        "QUIVER_STORAGE__SECRET_ACCESS_KEY": "S3RVER",
    }


def pytest_sessionfinish(session, exitstatus):
    _s3["stopping"] = True
    proc = _s3.get("proc")
    if proc is not None:
        proc.kill()
        proc.wait()
        if exitstatus == 0:
            shutil.rmtree(_s3["dir"], ignore_errors=True)


def _make_certs(directory):
    """A CA and a certificate for localhost / 127.0.0.1 signed by it (PEM files), with openssl."""
    os.makedirs(directory, exist_ok=True)
    p = lambda name: os.path.join(directory, name)  # noqa: E731
    with open(p("ext.cnf"), "w") as f:
        f.write(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2",
        "-subj", "/CN=Quiver test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p("key.pem"), "-out", p("req.csr"), "-subj", "/CN=localhost")
    run("x509", "-req", "-in", p("req.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial",
        "-out", p("cert.pem"), "-days", "2", "-extfile", p("ext.cnf"))
    return p("ca.pem"), p("cert.pem"), p("key.pem")


class _Server:
    def __init__(self, extra_env=None, client_args=None, secure=False):
        self.extra_env = dict(extra_env or {})
        self.client_args = dict(client_args or {})
        self.secure = secure
        self.dir = tempfile.mkdtemp(prefix="quiver-pymilvus-")
        self.log_path = os.path.join(self.dir, "standalone.log")
        self.grpc_port = _free_port()
        self.nats_port = _free_port()
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
        env.update(
            {
                "QUIVER_CLUSTER__NAME": f"pymilvus_{os.getpid()}",
                "QUIVER_CLUSTER__DATA_DIR": os.path.join(self.dir, "data"),
                "QUIVER_NATS__EMBEDDED_PORT": str(self.nats_port),
                "QUIVER_PROXY__GRPC_PORT": str(self.grpc_port),
                "QUIVER_PROXY__HTTP_PORT": "0",
                "QUIVER_METRICS__LISTEN": "",
                # Tests count segments after flushes; compaction runs when they ask for it.
                "QUIVER_COMPACTION__ENABLED": "false",
                "RUST_LOG": os.environ.get("QUIVER_PYMILVUS_LOG", "info"),
            }
        )
        env.update(storage_env())
        if self.secure:
            ca, cert, key = _make_certs(os.path.join(self.dir, "certs"))
            self.ca = ca
            env.update(
                {
                    "QUIVER_TLS__GRPC_CERT_FILE": cert,
                    "QUIVER_TLS__GRPC_KEY_FILE": key,
                    "QUIVER_TLS__NATS_SERVER_CERT_FILE": cert,
                    "QUIVER_TLS__NATS_SERVER_KEY_FILE": key,
                    "QUIVER_TLS__NATS_CA_FILE": ca,
                }
            )
        env.update(self.extra_env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            _dies_with_us([_quiver_bin(), "standalone"]),
            env=env,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        scheme = "https" if self.secure else "http"
        return f"{scheme}://127.0.0.1:{self.grpc_port}"

    def security_on(self):
        """Whether the server generates principals (the default, unless turned off)."""
        return self.extra_env.get("QUIVER_SECURITY__ENABLED", "true") != "false"

    def credentials(self, principal):
        """`user:password` of a principal the server generated, once it exists."""
        path = os.path.join(self.dir, "data", "credentials", f"{principal}.credentials")
        deadline = time.time() + START_TIMEOUT
        while not os.path.exists(path):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"no {path} after starting the server\n{self.log_tail()}")
            time.sleep(0.2)
        with open(path) as f:
            return f.read().strip()

    def wait_ready(self, uri):
        if self.security_on() and not ({"token", "user"} & set(self.client_args)):
            self.client_args["token"] = self.credentials("admin")
        if self.secure:
            self.client_args.setdefault("server_pem_path", self.ca)
        deadline = time.time() + START_TIMEOUT
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"quiver standalone exited ({self.proc.returncode}) before serving gRPC\n{self.log_tail()}")
            try:
                c = MilvusClient(uri=uri, timeout=5, **self.client_args)
                c.list_collections()
                c.close()
                return
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.5)
        raise RuntimeError(f"no Milvus gRPC answer on {uri} after {START_TIMEOUT:.0f}s (last error: {last})\n{self.log_tail()}")

    def log_tail(self, lines=200):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "----- quiver standalone log (tail) -----\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _install_tracer(path):
    """Wraps every MilvusService stub method to log request/response fields as JSON lines."""
    from google.protobuf.json_format import MessageToDict
    from pymilvus.grpc_gen import milvus_pb2_grpc

    def fields(msg, limit=600):
        try:
            d = MessageToDict(msg, preserving_proto_field_name=True)
        except Exception:
            return str(type(msg))
        s = json.dumps(d)
        return d if len(s) <= limit else {k: (v if len(json.dumps(v)) < 200 else "<%d chars>" % len(json.dumps(v))) for k, v in d.items()}

    def record(name, req, resp):
        with open(path, "a") as f:
            f.write(json.dumps({"test": _current_test["name"], "rpc": name, "req": fields(req), "resp": fields(resp) if resp is not None else None}) + "\n")

    class Wrapped:
        def __init__(self, name, inner):
            self.name, self.inner = name, inner

        def __call__(self, request=None, *a, **kw):
            resp = self.inner(request, *a, **kw)
            record(self.name, request, resp)
            return resp

        def future(self, request=None, *a, **kw):
            fut = self.inner.future(request, *a, **kw)
            try:
                record(self.name, request, fut.result())
            except Exception:
                record(self.name, request, None)
            return fut

    orig = milvus_pb2_grpc.MilvusServiceStub.__init__

    def init(self, channel):
        orig(self, channel)
        for k, v in list(vars(self).items()):
            if k[0].isupper():
                setattr(self, k, Wrapped(k, v))

    milvus_pb2_grpc.MilvusServiceStub.__init__ = init


if os.environ.get("QUIVER_PYMILVUS_TRACE"):
    _install_tracer(os.environ["QUIVER_PYMILVUS_TRACE"])


_server = None


@pytest.fixture(scope="session")
def uri():
    global _server
    given = os.environ.get("QUIVER_MILVUS_URI")
    if given:
        if os.environ.get("QUIVER_MILVUS_TOKEN"):
            CLIENT_ARGS["token"] = os.environ["QUIVER_MILVUS_TOKEN"]
        if os.environ.get("QUIVER_MILVUS_SERVER_PEM"):
            CLIENT_ARGS["server_pem_path"] = os.environ["QUIVER_MILVUS_SERVER_PEM"]
        yield given
        return
    _server = _Server(secure=SECURE)
    u = _server.start()
    try:
        _server.wait_ready(u)
        CLIENT_ARGS.update(_server.client_args)
        yield u
    finally:
        _server.stop()
        if _failed:
            print("\n" + _server.log_tail())
        if os.environ.get("QUIVER_PYMILVUS_KEEP") or _failed:
            print(f"quiver data and log kept in {_server.dir}")
        else:
            shutil.rmtree(_server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def client(uri):
    c = MilvusClient(uri=uri, **CLIENT_ARGS)
    yield c
    c.close()


@pytest.fixture(scope="session")
def secure_server(uri):
    """The suite's own server in secure mode (skips otherwise)."""
    if not SECURE or _server is None:
        pytest.skip("secure mode only (QUIVER_PYMILVUS_SECURE=1, a server the suite starts)")
    return _server


@pytest.fixture
def name(client, request):
    """A unique collection name for the test, dropped at the end."""
    n = ("t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_"))[:180]
    n = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in n) + "_" + uuid.uuid4().hex[:8]
    yield n
    try:
        if client.has_collection(n):
            client.drop_collection(n)
    except Exception:
        pass


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _current_test["name"] = item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        _failed.append(item.nodeid)
