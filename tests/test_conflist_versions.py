"""The example conflists through cnictl at every cniVersion from 0.3.0 to 1.1.0."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from cni import types
from tests.netenv import EXTERNAL_NET, REPO, Node, node_env, request, server

pytestmark = pytest.mark.root

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with node_env("cv") as n:
        yield n


def write_conflist(node: Node, version: str) -> str:
    with open(os.path.join(REPO, "examples", "20-portmap.conflist")) as f:
        conflist: dict[str, Any] = json.load(f)
    conflist["cniVersion"] = version
    conflist["name"] = f"v{version.replace('.', '')}"
    if version < "0.4.0":  # the firewall plugin speaks 0.4.0 and newer, like the reference's
        conflist["plugins"] = [p for p in conflist["plugins"] if p["type"] != "firewall"]
    for plugin in conflist["plugins"]:
        plugin["stateDir"] = node.state_dir
        plugin.pop("logFile", None)  # the example logs to /var/log; the tests leave the machine alone
        if "ipam" in plugin:
            plugin["ipam"]["dataDir"] = node.data_dir
            plugin["ipam"]["ranges"] = [[{"subnet": f"10.{90 + VERSIONS.index(version)}.0.0/24"}]]
        if plugin["type"] == "bridge":
            plugin["bridge"] = f"cv{VERSIONS.index(version)}"
    for name in os.listdir(node.netconf_dir):
        os.unlink(os.path.join(node.netconf_dir, name))
    with open(os.path.join(node.netconf_dir, "net.conflist"), "w") as f:
        json.dump(conflist, f)
    return conflist["name"]


@pytest.mark.parametrize("version", VERSIONS)
def test_conflist_add_check_del_at_every_version(node: Node, version: str) -> None:
    network = write_conflist(node, version)
    ctr = node.container(f"x{VERSIONS.index(version)}")
    port = 8100 + VERSIONS.index(version)
    result = json.loads(node.cnictl("add", network, ctr, "--publish", f"{port}:80/tcp").stdout)
    assert result["cniVersion"] == version
    types.validate_result(result, version)
    with server(ctr, "tcp", 80, tag=version):
        assert request(node.external, "tcp", f"{EXTERNAL_NET}.1", port) == f"{version} {EXTERNAL_NET}.2"
    if version >= "0.4.0":
        node.cnictl("check", network, ctr)
    node.cnictl("del", network, ctr)
    assert "CNI-DN-" not in node.save(4) and node.reservations(network) == []
