"""RPCs MilvusClient does not expose, called on the raw gRPC stub pymilvus ships: CheckHealth,
GetVersion, AllocTimestamp, GetComponentStates, the `default`-only database rule, and
UNIMPLEMENTED for calls outside the served subset."""

import base64
import collections
from urllib.parse import urlparse

import grpc
import pytest
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc

from conftest import CLIENT_ARGS, SECURE

pytestmark = pytest.mark.skipif(SECURE, reason="secure mode: calls a plaintext stub")


class _Details(
    collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _Token(grpc.UnaryUnaryClientInterceptor):
    """Sends the suite's token as pymilvus does: `authorization: base64(token)` metadata."""

    def __init__(self, token):
        self.value = base64.b64encode(token.encode()).decode()

    def intercept_unary_unary(self, continuation, details, request):
        metadata = list(details.metadata or []) + [("authorization", self.value)]
        details = _Details(details.method, details.timeout, metadata, details.credentials,
                           details.wait_for_ready, details.compression)
        return continuation(details, request)


@pytest.fixture(scope="module")
def stub(uri):
    u = urlparse(uri)
    channel = grpc.insecure_channel(f"{u.hostname}:{u.port}")
    if CLIENT_ARGS.get("token"):  # security is on by default
        channel = grpc.intercept_channel(channel, _Token(CLIENT_ARGS["token"]))
    yield milvus_pb2_grpc.MilvusServiceStub(channel)
    channel.close()


def ok(status):
    return status.code == 0 and status.error_code == 0


def test_check_health_version_and_components(stub):
    health = stub.CheckHealth(milvus_pb2.CheckHealthRequest(), timeout=10)
    assert ok(health.status) and health.isHealthy, health
    assert list(health.reasons) == []
    version = stub.GetVersion(milvus_pb2.GetVersionRequest(), timeout=10)
    assert ok(version.status) and version.version.startswith("v2.5")
    states = stub.GetComponentStates(milvus_pb2.GetComponentStatesRequest(), timeout=10)
    assert states.state.state_code == common_pb2.StateCode.Healthy


def test_alloc_timestamp_is_monotonic(stub):
    ts = [stub.AllocTimestamp(milvus_pb2.AllocTimestampRequest(), timeout=10).timestamp for _ in range(5)]
    assert all(t > 0 for t in ts) and ts == sorted(ts) and len(set(ts)) == 5, ts


def test_only_the_default_database_exists(stub):
    dbs = stub.ListDatabases(milvus_pb2.ListDatabasesRequest(), timeout=10)
    assert ok(dbs.status) and list(dbs.db_names) == ["default"]
    r = stub.ShowCollections(milvus_pb2.ShowCollectionsRequest(db_name="other"), timeout=10)
    assert r.status.code != 0 and "database" in r.status.reason.lower() and "other" in r.status.reason
    r = stub.ShowCollections(milvus_pb2.ShowCollectionsRequest(), metadata=[("dbname", "other")], timeout=10)
    assert r.status.code != 0 and "other" in r.status.reason


def test_calls_outside_the_subset_are_unimplemented(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateAlias(milvus_pb2.CreateAliasRequest(collection_name="x", alias="a"), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # and the server keeps serving
    assert ok(stub.CheckHealth(milvus_pb2.CheckHealthRequest(), timeout=10).status)


def test_garbage_search_payload_is_a_clear_error(stub, client, name):
    client.create_collection(name, dimension=4)
    req = milvus_pb2.SearchRequest(
        collection_name=name,
        placeholder_group=b"\xff\xff\xff",
        search_params=[common_pb2.KeyValuePair(key="topk", value="3")],
        nq=1,
    )
    r = stub.Search(req, timeout=10)
    assert r.status.code == 1100 and "placeholder" in r.status.reason, r.status
    assert ok(stub.CheckHealth(milvus_pb2.CheckHealthRequest(), timeout=10).status)
