"""Authentication: with `[proxy] credentials` set, pymilvus must present one of them (as
`token="user:password"`, `user=`/`password=`, or an API token); anything else is refused and the
server stays up. Starts its own server (credentials are a start-up setting)."""

import os

import grpc
import pytest
from pymilvus import MilvusClient, MilvusException

from conftest import SECURE, _Server
from pmutil import PYMILVUS

pytestmark = pytest.mark.skipif(SECURE, reason="secure mode: starts a server of its own with [proxy] credentials")

CREDENTIALS = '["root:Milvus", "sk-quiver-test-token"]'


@pytest.fixture(scope="module")
def secured():
    if os.environ.get("QUIVER_MILVUS_URI"):
        pytest.skip("needs a server of its own started with credentials (runs when the suite starts Quiver)")
    server = _Server(extra_env={"QUIVER_PROXY__CREDENTIALS": CREDENTIALS}, client_args={"token": "root:Milvus"})
    uri = server.start()
    try:
        server.wait_ready(uri)
        yield uri
    finally:
        server.stop()


@pytest.mark.parametrize(
    "args",
    [{"token": "root:Milvus"}, {"user": "root", "password": "Milvus"}, {"token": "sk-quiver-test-token"}],
    ids=["token-user-password", "user-and-password", "api-token"],
)
def test_accepted_credentials(secured, args):
    c = MilvusClient(uri=secured, timeout=10, **args)
    name = "auth_" + "_".join(sorted(args))
    c.create_collection(name, dimension=4)
    assert name in c.list_collections()
    c.drop_collection(name)
    c.close()


@pytest.mark.parametrize(
    "args",
    [{}, {"token": "root:wrong"}, {"user": "root", "password": "nope"}, {"token": "sk-other"}],
    ids=["none", "wrong-password", "wrong-user-password", "unknown-token"],
)
def test_refused_credentials(secured, args):
    # As with Milvus, a refused call is gRPC UNAUTHENTICATED, which pymilvus raises as is.
    with pytest.raises((MilvusException, grpc.RpcError)) as e:
        c = MilvusClient(uri=secured, timeout=10, **args)
        c.list_collections()
    msg = str(e.value).lower()
    if PYMILVUS >= (2, 6):
        # pymilvus 2.6 and 3 wrap every failed Connect, UNAUTHENTICATED included, as code 2 (they do the
        # same against Milvus); the server's reason is in its log and in pymilvus' debug log.
        assert "auth" in msg or "fail connecting" in msg, msg
    else:
        assert "auth" in msg or "unauthenticated" in msg, msg
    # the server still serves authenticated clients
    ok = MilvusClient(uri=secured, timeout=10, token="root:Milvus")
    ok.list_collections()
    ok.close()
