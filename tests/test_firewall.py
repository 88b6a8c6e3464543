"""firewall behind bridge: accept rules that let containers through a DROP FORWARD policy."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import EXTERNAL_NET, Node, node_env, ns_exec, request, server

pytestmark = pytest.mark.root

REF_FILTER = [  # ../shared/reference.md §2.4, the firewall's part
    ":CNI-ADMIN - [0:0]",
    ":CNI-FORWARD - [0:0]",
    '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
    '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN',
    "-A CNI-FORWARD -d 10.88.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT",
]


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("fw") as n:
        for tool in ("iptables-legacy", "ip6tables-legacy"):
            n.exec(tool, "-t", "filter", "-S")
            n.exec(tool, "-t", "nat", "-S")
            n.exec(tool, "-P", "FORWARD", "DROP")  # as Docker leaves it
        yield n


def bridge_conf(node: Node, name: str = "fwnet", bridge: str = "cni0", subnet: str = "10.88.0.0/16",
                v6: bool = False) -> dict[str, Any]:
    ranges = [[{"subnet": subnet, "rangeStart": subnet.replace("0.0/16", "0.5").replace("0/24", "5")}]]
    routes = [{"dst": "0.0.0.0/0"}]
    if v6:
        ranges.append([{"subnet": "fd00:88::/64"}])
        routes.append({"dst": "::/0"})
    return {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge, "isGateway": True,
            "ipMasq": True, "stateDir": node.state_dir,
            "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": ranges, "routes": routes}}


def fw_conf(node: Node, name: str = "fwnet", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "type": "firewall", "stateDir": node.state_dir, **extra}


def attach(node: Node, ctr: str, bconf: dict[str, Any], fconf: dict[str, Any], cid: str | None = None
           ) -> dict[str, Any]:
    result, rc, err = node.run_plugin("bridge", "ADD", bconf, ctr, container_id=cid)
    assert rc == 0 and result is not None, err
    out, rc, err = node.run_plugin("firewall", "ADD", dict(fconf, prevResult=result), ctr, container_id=cid)
    assert rc == 0 and out == result, err
    return result


def filter_lines(node: Node, family: int = 4) -> list[str]:
    text = node.save(family)
    part = text.split("*filter", 1)[1].split("COMMIT", 1)[0]
    return [line for line in part.strip().splitlines() if not line.startswith((":INPUT", ":FORWARD", ":OUTPUT"))]


def test_reference_layout_and_traffic_through_a_drop_policy(node: Node) -> None:
    before = node.save(4)
    c1 = node.container("c1")
    with server(node.external, "tcp", 9000, tag="ext"):
        result, rc, err = node.run_plugin("bridge", "ADD", bridge_conf(node), c1, container_id="ctr1")
        assert rc == 0 and result is not None, err
        assert request(c1, "tcp", f"{EXTERNAL_NET}.2", 9000, timeout=1).startswith(("ERROR", "TIMEOUT"))
        out, rc, err = node.run_plugin("firewall", "ADD", dict(fw_conf(node), prevResult=result), c1,
                                       container_id="ctr1")
        assert rc == 0 and out == result, err
        assert request(c1, "tcp", f"{EXTERNAL_NET}.2", 9000) == f"ext {EXTERNAL_NET}.1"
    assert filter_lines(node) == REF_FILTER
    _, rc, err = node.run_plugin("firewall", "DEL", fw_conf(node), c1, container_id="ctr1")  # no prevResult
    assert rc == 0, err
    _, rc, err = node.run_plugin("bridge", "DEL", bridge_conf(node), c1, container_id="ctr1")
    assert rc == 0, err
    assert node.save(4) == before
    _, rc, err = node.run_plugin("firewall", "DEL", fw_conf(node), c1, container_id="ctr1")
    assert rc == 0, err


def test_dual_stack_check_and_precise_failure(node: Node) -> None:
    c1 = node.container("c1")
    result = attach(node, c1, bridge_conf(node, v6=True), fw_conf(node))
    v6 = filter_lines(node, 6)
    assert "-A CNI-FORWARD -s fd00:88::2/128 -j ACCEPT" in v6
    conf = dict(fw_conf(node), prevResult=result)
    out, rc, err = node.run_plugin("firewall", "CHECK", conf, c1)
    assert rc == 0, (out, err)
    node.exec("ip6tables-legacy", "-D", "CNI-FORWARD", "-s", "fd00:88::2/128", "-j", "ACCEPT")
    out, rc, _ = node.run_plugin("firewall", "CHECK", conf, c1)
    assert rc != 0 and out is not None and out["msg"] == "expected rule [-s fd00:88::2/128 -j ACCEPT] not found"


def test_shared_chains_stay_while_any_container_needs_them(node: Node) -> None:
    c1, c2 = node.container("c1"), node.container("c2")
    attach(node, c1, bridge_conf(node), fw_conf(node))
    attach(node, c2, bridge_conf(node), fw_conf(node))
    _, rc, err = node.run_plugin("firewall", "DEL", fw_conf(node), c1)
    assert rc == 0, err
    lines = filter_lines(node)
    assert "-A CNI-FORWARD -s 10.88.0.6/32 -j ACCEPT" in lines and "-A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT" \
        not in lines
    _, rc, err = node.run_plugin("firewall", "DEL", fw_conf(node), c2)
    assert rc == 0, err
    assert filter_lines(node) == []


def test_admin_rules_survive(node: Node) -> None:
    c1 = node.container("c1")
    attach(node, c1, bridge_conf(node), fw_conf(node))
    node.exec("iptables-legacy", "-A", "CNI-ADMIN", "-s", "192.0.2.7/32", "-j", "DROP")
    _, rc, err = node.run_plugin("firewall", "DEL", fw_conf(node), c1)
    assert rc == 0, err
    assert filter_lines(node) == [":CNI-ADMIN - [0:0]", "-A CNI-ADMIN -s 192.0.2.7/32 -j DROP"]


def test_same_bridge_isolation_blocks_another_bridge(node: Node) -> None:
    a1, b1 = node.container("a1"), node.container("b1")
    attach(node, a1, bridge_conf(node, "neta", "br-a", "10.31.0.0/24"), fw_conf(node, "neta", ingressPolicy="same-bridge"))
    attach(node, b1, bridge_conf(node, "netb", "br-b", "10.32.0.0/24"), fw_conf(node, "netb", ingressPolicy="same-bridge"))
    with server(a1, "tcp", 7000, tag="a1"):
        assert request(b1, "tcp", "10.31.0.5", 7000, timeout=1).startswith(("ERROR", "TIMEOUT"))
        for ctr, name in ((b1, "netb"),):
            _, rc, err = node.run_plugin("firewall", "DEL", fw_conf(node, name), ctr)
            assert rc == 0, err
    _, rc, err = node.run_plugin("firewall", "DEL", fw_conf(node, "neta"), a1)
    assert rc == 0, err
    assert filter_lines(node) == []


@pytest.mark.parametrize("overrides,prev,part", [
    ({}, False, "missing prevResult from earlier plugin"),
    ({"iptablesAdminChainName": "bad name"}, True, "iptablesAdminChainName"),
    ({"ingressPolicy": "closed"}, True, "ingressPolicy"),
])
def test_bad_input(node: Node, overrides: dict[str, Any], prev: bool, part: str) -> None:
    c1 = node.container("c1")
    result, rc, err = node.run_plugin("bridge", "ADD", bridge_conf(node), c1)
    assert rc == 0, err
    before = node.save(4)
    conf = dict(fw_conf(node), **overrides)
    if prev:
        conf["prevResult"] = result
    out, rc, _ = node.run_plugin("firewall", "ADD", conf, c1)
    assert rc == 1 and out is not None and out["code"] == 7 and part in out["msg"]
    assert node.save(4) == before
    ns_exec(c1, "true")
