"""A cluster with ``security.enabled`` and NATS over TLS (its own standalone, certificates made
with the ``openssl`` CLI): no credentials, no connection; the ``app`` principal works on data
but its drop is refused by the NATS server (no reply: the call times out); ``admin`` drops."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Tuple

import pytest

import quiver_client as quiver

from .conftest import QUIVER_BIN, Server, _die_with_parent, _wait_for_port, free_port


def _certs(d: Path) -> Tuple[str, str, str]:
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
    )

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Quiver test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem",
        "-days", "2", "-extfile", "ext.cnf")
    return str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem")


@pytest.fixture(scope="module")
def secured() -> Iterator[Tuple[Server, Path, str]]:
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl CLI for test certificates")
    tmp = Path(tempfile.mkdtemp(prefix="quiver-pytest-sec-"))
    (tmp / "certs").mkdir()
    ca, cert, key = _certs(tmp / "certs")
    port = free_port()
    cluster = f"pysec_{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
    env.update(
        {
            "QUIVER_CLUSTER__NAME": cluster,
            "QUIVER_CLUSTER__DATA_DIR": str(tmp / "data"),
            "QUIVER_NATS__EMBEDDED_PORT": str(port),
            "QUIVER_METRICS__LISTEN": "",
            "QUIVER_PROXY__GRPC_PORT": "0",
            "QUIVER_SECURITY__ENABLED": "true",
            "QUIVER_TLS__NATS_SERVER_CERT_FILE": cert,
            "QUIVER_TLS__NATS_SERVER_KEY_FILE": key,
            "QUIVER_TLS__NATS_CA_FILE": ca,
        }
    )
    log = tmp / "standalone.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [QUIVER_BIN, "standalone"], env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    srv = Server(url=f"nats://127.0.0.1:{port}", cluster=cluster, pid=proc.pid, log=log)
    try:
        _wait_for_port(proc, port, srv)
        yield srv, tmp / "data" / "credentials", ca
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_principals_over_tls(secured: Tuple[Server, Path, str]) -> None:
    srv, creds, ca = secured
    with pytest.raises(quiver.ConnectError):
        await quiver.AsyncClient.connect(srv.url, srv.cluster, connect_timeout=3.0, tls_ca_file=ca)
    admin = await quiver.AsyncClient.connect(
        srv.url, srv.cluster, timeout=20.0, connect_timeout=15.0,
        credentials_file=str(creds / "admin.credentials"), tls_ca_file=ca,
    )
    app = await quiver.AsyncClient.connect(
        srv.url, srv.cluster, timeout=3.0, connect_timeout=15.0,
        credentials_file=str(creds / "app.credentials"), tls_ca_file=ca,
    )
    try:
        # The roles may still be starting: retry until the collection is created.
        for _ in range(100):
            try:
                await app.with_timeout(5.0).create_collection(quiver.schema.simple("docs", 4))
                break
            except quiver.ClientError as e:
                if not e.is_retryable:
                    raise
        assert "docs" in await app.list_collections()
        with pytest.raises(quiver.ClientError):
            await app.drop_collection("docs")  # refused by NATS: no reply
        assert "docs" in await admin.list_collections()
        await admin.drop_collection("docs")
        assert "docs" not in await admin.list_collections()
    finally:
        await app.close()
        await admin.close()
