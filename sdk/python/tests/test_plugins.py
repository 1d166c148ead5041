"""Plugin administration: list, activate a built-in, reject a non-component; with
`QUIVER_TEST_PLUGIN_WASM` (a router plugin .wasm), load, activate and roll back too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import quiver_client as quiver


async def test_plugin_admin(client: quiver.AsyncClient) -> None:
    listing = await client.plugin_list()
    assert isinstance(listing, dict) and listing
    active = await client.plugin_activate("round-robin", "builtin")
    assert active["kind"] == "router" and active["name"] == "round-robin" and active["version"] == "builtin"
    back = await client.plugin_rollback("router")
    assert back["name"] == "rendezvous"
    with pytest.raises(quiver.InvalidArgument) as info:
        await client.plugin_load("router", "junk", b"not wasm")
    assert "WebAssembly" in info.value.message
    with pytest.raises(quiver.ClientError):
        await client.plugin_activate("no-such-plugin", "1")

    wasm = os.environ.get("QUIVER_TEST_PLUGIN_WASM")
    if not wasm:
        pytest.skip("set QUIVER_TEST_PLUGIN_WASM to a router plugin .wasm to test plugin_load")
    entry = await client.plugin_load("router", "py-router", Path(wasm).read_bytes())
    version = str(entry["version"])
    chosen = await client.plugin_activate("py-router", version)
    assert chosen["name"] == "py-router"
    assert (await client.plugin_rollback("router"))["name"] == "rendezvous"
