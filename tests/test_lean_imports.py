"""A plugin exec (direct mode) imports the netfilter libraries only when it touches a table.

Each command runs as the installed executable under ``python -X importtime`` in a node namespace;
the modules it imported are read from that report.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import PYTHON, Node, node_env, ns_exec

pytestmark = pytest.mark.root

NETFILTER = {"iptc", "chains.table", "chains.libiptc", "chains.codec"}
NEVER = {"hashlib", "secrets", "copy", "typing", "pydantic"}  # on no plugin path at all


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with node_env("li", external=False) as n:
        yield n


def imported(node: Node, plugin: str, command: str, conf: dict[str, Any], ctr: str) -> tuple[set[str], Any]:
    env = dict(node.plugin_env(command, ctr), PYCNI_HELPER="0")
    proc = ns_exec(node.ns, PYTHON, "-X", "importtime", "-I", "-S", os.path.join(node.bin_dir, plugin),
                   input=json.dumps(conf).encode(), env=env, check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.decode().splitlines()
               if line.startswith("import time:") and line.count("|") == 2}
    assert "cni.skel" in modules  # the report was read
    return modules, json.loads(proc.stdout) if proc.stdout.strip() else None


def confs(node: Node, masq: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    bridge = {"cniVersion": "1.0.0", "name": f"li{int(masq)}", "type": "bridge", "bridge": f"li{int(masq)}",
              "isGateway": True, "ipMasq": masq, "stateDir": node.state_dir,
              "ipam": {"type": "host-local", "dataDir": node.data_dir,
                       "ranges": [[{"subnet": f"10.{70 + masq}.0.0/24"}]]}}
    portmap = {"cniVersion": "1.0.0", "name": bridge["name"], "type": "portmap", "stateDir": node.state_dir}
    return bridge, portmap


def test_no_table_no_netfilter_modules(node: Node) -> None:
    ctr = node.container("c0")
    bridge, portmap = confs(node, masq=False)
    seen: dict[str, set[str]] = {}
    modules, result = imported(node, "bridge", "ADD", bridge, ctr)
    seen["bridge ADD without ipMasq"] = modules
    for plugin, command, conf in [
        ("bridge", "CHECK", dict(bridge, prevResult=result)),
        ("portmap", "ADD", dict(portmap, prevResult=result)),  # no mappings
        ("portmap", "CHECK", dict(portmap, prevResult=result)),
        ("portmap", "DEL", portmap),  # no record
        ("bridge", "DEL", bridge),
        ("bridge", "DEL", bridge),  # again: no record
        ("bridge", "VERSION", {}),
    ]:
        seen[f"{plugin} {command}"] = imported(node, plugin, command, conf, ctr)[0]
    for what, modules in seen.items():
        assert not modules & (NETFILTER | NEVER), (what, sorted(modules & (NETFILTER | NEVER)))


def test_a_table_loads_them_but_nothing_it_does_not_use(node: Node) -> None:
    ctr = node.container("c1")
    bridge, portmap = confs(node, masq=True)
    portmap["runtimeConfig"] = {"portMappings": [{"hostPort": 8080, "containerPort": 80}]}
    modules, result = imported(node, "bridge", "ADD", bridge, ctr)
    assert NETFILTER <= modules and not modules & NEVER, sorted(modules & NEVER)
    for plugin, command, conf in [("portmap", "ADD", dict(portmap, prevResult=result)), ("portmap", "DEL", portmap),
                                  ("bridge", "DEL", bridge)]:
        modules = imported(node, plugin, command, conf, ctr)[0]
        assert NETFILTER <= modules and not modules & NEVER, (plugin, command, sorted(modules & NEVER))
