"""Offline tests: the shipped schema, encoding round trips, errors, vector shapes, batch splitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quiver_client as quiver
from quiver_client import wire
from quiver_client.errors import error_from_status
from quiver_client.schema import rows, search, simple

REPO_SCHEMA = Path(__file__).resolve().parents[3] / "schemas" / "quiver.capnp"


def test_shipped_schema_equals_the_repository_schema() -> None:
    if not REPO_SCHEMA.exists():
        pytest.skip(f"not in a Quiver checkout ({REPO_SCHEMA} missing)")
    shipped = Path(wire.SCHEMA_PATH).read_bytes()
    assert shipped == REPO_SCHEMA.read_bytes(), (
        "sdk/python/quiver_client/quiver.capnp differs from schemas/quiver.capnp: "
        "cp schemas/quiver.capnp sdk/python/quiver_client/"
    )


def test_scalars_and_keys_round_trip() -> None:
    values = [None, True, -7, 2.5, "x", {"a": [1, 2]}, [1, "b"]]
    back = [wire.scalar_from_wire(wire.scalar_to_wire(v)) for v in values]
    assert back == values
    assert wire.scalar_to_wire(quiver.Json('{"k":1}')) == {"json": '{"k":1}'}
    assert wire.scalar_to_wire(np.int32(3)) == {"int64": 3}
    assert wire.scalar_to_wire(np.float32(0.5)) == {"double": 0.5}
    keys: list[quiver.PrimaryKey] = [5, "five"]
    for pk in keys:
        assert wire.pk_from_wire(wire.pk_to_wire(pk)) == pk
    with pytest.raises(TypeError):
        wire.pk_to_wire(True)
    with pytest.raises(TypeError):
        wire.scalar_to_wire(object())


def test_insert_message_round_trips() -> None:
    v = np.arange(12, dtype=np.float32).reshape(3, 4)
    batch = rows([1, 2, 3], v, fields={"title": ["a", "b", "c"]}, dynamic=[{"n": 1}, None, {"n": 3}])
    data = wire.encode("Insert", {"collection": "c", "rows": wire.rows_to_wire(batch)})
    back = wire.rows_from_wire(wire.decode("Insert", data)["rows"])
    assert back.pks == [1, 2, 3]
    assert back.vectors.shape == (3, 4) and np.array_equal(back.vectors, v)
    assert back.column("title") == ["a", "b", "c"]
    assert back.dynamic == ['{"n": 1}', "", '{"n": 3}']


def test_schema_and_search_messages() -> None:
    s = simple("docs", 8, quiver.schema.field("title", quiver.DataType.VARCHAR, max_length=16))
    d = wire.decode("CreateCollection", wire.encode("CreateCollection", {"schema": wire.schema_to_wire(s)}))
    assert wire.schema_from_wire(d["schema"]) == s
    q = search("docs", [0.0] * 8, 5, filter="id > 3", output_fields=["title"], ef=32)
    d = wire.decode("Search", wire.encode("Search", wire.search_to_wire(q)))
    assert d["dim"] == 8 and d["topK"] == 5 and d["filter"] == "id > 3" and d["params"]["ef"] == 32


def test_decode_of_garbage_is_a_decode_error() -> None:
    with pytest.raises(quiver.DecodeError) as e:
        wire.decode("SearchResults", b"\x01\x02\x03")
    assert "SearchResults" in str(e.value)
    assert not e.value.is_retryable


def test_vector_shapes() -> None:
    assert quiver.as_vectors([1, 2, 3]).shape == (1, 3)
    assert quiver.as_vectors([1, 2, 3, 4], dim=2).shape == (2, 2)
    assert quiver.as_vectors(None, dim=4).shape == (0, 4)
    assert quiver.as_vectors(np.zeros((5, 3), dtype=np.float64)).dtype == np.float32
    with pytest.raises(ValueError):
        quiver.as_vectors([1, 2, 3], dim=2)
    with pytest.raises(ValueError):
        quiver.as_vectors(np.zeros((2, 2, 2)))


def test_status_codes_map_to_exceptions() -> None:
    cases = {
        "1": quiver.InvalidArgument,
        "2": quiver.NotFound,
        "3": quiver.AlreadyExists,
        "4": quiver.Unavailable,
        "5": quiver.Timeout,
        "6": quiver.Internal,
        "7": quiver.Unavailable,
        "99": quiver.Internal,
        "junk": quiver.Internal,
    }
    for code, cls in cases.items():
        err = error_from_status(code, "why")
        assert type(err) is cls and err.message == "why"
        assert err.is_retryable == (cls in (quiver.Unavailable, quiver.Timeout))
        assert isinstance(err, quiver.ClientError)
    assert str(error_from_status("2", 'collection "x"')) == 'not found: collection "x"'


def test_rows_per_insert_stays_under_max_payload() -> None:
    class Fake(quiver.AsyncClient):
        @property
        def max_payload(self) -> int:
            return 1 << 20

    c = Fake(None, "quiver", 1.0)  # type: ignore[arg-type]
    batch = rows(range(10_000), np.zeros((10_000, 256), dtype=np.float32))
    per_call = c._rows_per_insert(batch)
    assert per_call * (256 * 4) < (1 << 20)
    assert per_call > 500
    long_titles = rows(range(100), np.zeros((100, 4)), fields={"t": ["x" * 50_000] * 100})
    assert c._rows_per_insert(long_titles) < 20
