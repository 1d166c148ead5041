"""Quickstart: create a collection, insert, index, search, get, query, delete, drop.

Start a server first (`quiver standalone`), then:

    python examples/quickstart.py [nats://127.0.0.1:4222] [cluster]

Security is on by default, so it connects as the admin principal: the credentials file in
``QUIVER_CREDENTIALS``, else ``quiver-data/credentials/admin.credentials`` under the current
directory (where ``quiver standalone`` was started); none if neither exists (a server with
``security.enabled = false``).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import quiver_client as quiver
from quiver_client import Consistency, DataType, IndexType, MetricType, schema


def retry(call, limit: float = 20.0):  # type: ignore[no-untyped-def]
    """Retries retryable errors (a new collection takes a moment to get a data node)."""
    start = time.monotonic()
    while True:
        try:
            return call()
        except quiver.ClientError as e:
            if not e.is_retryable or time.monotonic() - start > limit:
                raise
            time.sleep(0.2)


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"
    cluster = sys.argv[2] if len(sys.argv) > 2 else "quiver"
    dim = 64
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1_000, dim)).astype(np.float32)

    credentials = os.environ.get("QUIVER_CREDENTIALS", "quiver-data/credentials/admin.credentials")
    credentials_file = credentials if os.path.exists(credentials) else None
    with quiver.Client.connect(url, cluster=cluster, credentials_file=credentials_file) as client:
        # `id` Int64 key + `vector` of 64 floats + dynamic fields, plus a `title`.
        docs = schema.simple("quickstart", dim, schema.field("title", DataType.VARCHAR, max_length=64))
        try:
            client.drop_collection("quickstart")
        except quiver.NotFound:
            pass
        retry(lambda: client.create_collection(docs))

        rows = schema.rows(
            range(1_000),
            vectors,
            fields={"title": [f"doc {i}" for i in range(1_000)]},
            dynamic=[{"lang": "en" if i % 2 else "de"} for i in range(1_000)],  # keys outside the schema
        )
        print("inserted", len(client.insert("quickstart", rows).pks), "rows")

        # Seal the rows into a segment and index it (built in the background).
        retry(lambda: client.flush("quickstart"))
        client.create_index("quickstart", schema.index(IndexType.HNSW, MetricType.L2, m=16, ef_construction=100))

        hits = client.search(
            schema.search("quickstart", vectors[:2], top_k=3, ef=64, output_fields=["title", "lang"],
                          consistency=Consistency.STRONG)
        )
        for q, h in enumerate(hits):
            print(f"query {q}:", list(zip(h.pks, np.round(h.scores, 3), h.column("title"), h.column("lang"))))

        got = client.get("quickstart", [5, 6], ["title"], Consistency.STRONG)
        print("get:", got.rows.to_dicts()[0]["title"], got.rows.vectors.shape)

        try:  # needs a server with `api.query`
            res = client.query(schema.query("quickstart", "id < 5", ["title"], consistency=Consistency.STRONG))
            print("query:", res.rows.pks, res.rows.column("title"))
            n = client.query(schema.query("quickstart", "lang == 'en'", ["count(*)"], consistency=Consistency.STRONG))
            print("count(*) where lang == 'en':", n.count)
        except quiver.InvalidArgument as e:
            print("query not served by this server:", e)

        client.delete("quickstart", [0, 1, 2])
        print("after delete:", client.get("quickstart", [0, 1, 2, 3], [], Consistency.STRONG).rows.pks)
        client.drop_collection("quickstart")


if __name__ == "__main__":
    main()
