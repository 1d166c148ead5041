"""Real sentence embeddings (pypi-minilm, 384 d): a 2k-row slice, HNSW / IP, recall@10 against
numpy brute force on the slice, texts come back as output fields."""

import os

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from pmutil import DATASET, STRONG, brute_force, read_fvecs, read_tsv, recall

N = 2000
NQ = 50


def test_real_embeddings_hnsw_ip(client, name):
    assert os.path.exists(os.path.join(DATASET, "base.fvecs")), f"dataset missing at {DATASET}"
    base = read_fvecs(os.path.join(DATASET, "base.fvecs"), N)
    queries = read_fvecs(os.path.join(DATASET, "query.fvecs"), NQ)
    texts = read_tsv(os.path.join(DATASET, "base.tsv"), N)
    dim = base.shape[1]
    assert dim == 384

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("package", DataType.VARCHAR, max_length=256)
    s.add_field("summary", DataType.VARCHAR, max_length=4096)
    ip = MilvusClient.prepare_index_params()
    ip.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params={"M": 16, "efConstruction": 200})
    client.create_collection(name, schema=s, index_params=ip, **STRONG)
    data = [{"id": i, "vector": base[i].tolist(), "package": texts[i][0], "summary": texts[i][1]} for i in range(N)]
    for i in range(0, N, 1000):
        assert client.insert(name, data[i : i + 1000])["insert_count"] == len(data[i : i + 1000])
    client.flush(name)

    res = client.search(
        name,
        data=queries.tolist(),
        limit=10,
        output_fields=["package", "summary"],
        search_params={"metric_type": "IP", "params": {"ef": 64}},
        **STRONG,
    )
    truth = brute_force(base, queries, 10, "IP")
    r = recall(res, truth)
    assert r >= 0.9, f"recall@10 {r:.3f}"
    top = res[0][0]
    assert top["entity"]["package"] == texts[top["id"]][0]
    assert top["entity"]["summary"] == texts[top["id"]][1]
    exp = float(np.dot(queries[0], base[top["id"]]))
    assert top["distance"] == pytest.approx(exp, abs=1e-3)
