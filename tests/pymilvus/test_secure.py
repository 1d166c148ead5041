"""Secure mode only (`run.sh VERSION --secure`): the server runs with `security.enabled` and TLS
on gRPC and NATS. The suite's other tests connect as admin over TLS; these check that the app
principal cannot drop a collection (PERMISSION_DENIED, as Milvus answers), that a wrong token is
refused, and that a plaintext connection to the TLS port gets nowhere."""

import grpc
import pytest
from pymilvus import MilvusClient, MilvusException


def test_app_token_works_on_data_but_cannot_drop(secure_server, uri, client, name):
    app = MilvusClient(uri=uri, token=secure_server.credentials("app"), server_pem_path=secure_server.ca, timeout=10)
    app.create_collection(name, dimension=4)
    app.insert(name, [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}])
    assert name in app.list_collections()
    with pytest.raises((MilvusException, grpc.RpcError)) as e:
        app.drop_collection(name)
    assert "permission" in str(e.value).lower(), e.value
    app.close()
    assert client.has_collection(name)  # the admin still sees it (and the fixture drops it)


def test_wrong_token_is_refused(secure_server, uri):
    user = secure_server.credentials("app").split(":")[0]
    with pytest.raises((MilvusException, grpc.RpcError)):
        c = MilvusClient(uri=uri, token=f"{user}:wrong", server_pem_path=secure_server.ca, timeout=10)
        c.list_collections()


def test_plaintext_is_refused(secure_server, uri):
    with pytest.raises((MilvusException, grpc.RpcError)):
        c = MilvusClient(uri=uri.replace("https://", "http://"), token=secure_server.credentials("admin"), timeout=5)
        c.list_collections()
