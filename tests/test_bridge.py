"""bridge + host-local as real executables in a node namespace, with real traffic."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from cni import types
from tests import witness
from tests.netenv import EXTERNAL_NET, Node, node_env, ns_exec, request, server

pytestmark = pytest.mark.root


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("br") as n:
        yield n


def bridge_conf(node: Node, version: str = "1.0.0", ranges: list[list[dict[str, str]]] | None = None,
                **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": version, "name": "brnet", "type": "bridge", "bridge": "cni0",
        "isGateway": True, "ipMasq": os.environ.get("T_NOMASQ") is None, "hairpinMode": True, "stateDir": node.state_dir,
        "ipam": {"type": "host-local", "dataDir": node.data_dir,
                 "ranges": ranges or [[{"subnet": "10.88.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]},
    }
    conf.update(extra)
    return conf


def add(node: Node, conf: dict[str, Any], ctr: str, **kw: Any) -> dict[str, Any]:
    out, rc, err = node.run_plugin("bridge", "ADD", conf, ctr, **kw)
    assert rc == 0, (out, err)
    assert out is not None
    return out


def node_state(node: Node) -> dict[str, Any]:
    """Everything a container could leave behind on the node."""
    return {"links": [l for l in node.links() if l not in ("cni0",)],
            "v4": node.save(4), "v6": node.save(6),
            "reservations": node.reservations("brnet"),
            "records": sorted(os.path.join(d, f) for d, _, fs in os.walk(node.state_dir) for f in fs)}


def test_two_containers_get_distinct_addresses_and_reach_each_other(node: Node) -> None:
    conf = bridge_conf(node)
    c1, c2 = node.container("c1"), node.container("c2")
    r1, r2 = add(node, conf, c1), add(node, conf, c2)
    ip1 = r1["ips"][0]["address"].split("/")[0]
    ip2 = r2["ips"][0]["address"].split("/")[0]
    assert ip1 == "10.88.0.2" and ip2 == "10.88.0.3"
    assert [i["name"] for i in r1["interfaces"]][0] == "cni0"
    assert r1["interfaces"][1]["name"].startswith("veth") and r1["interfaces"][2]["sandbox"] == f"/run/netns/{c1}"
    assert r1["ips"][0]["interface"] == 2 and r1["ips"][0]["gateway"] == "10.88.0.1"
    types.validate_result(r1, "1.0.0")
    # Read back through pyroute2, an rtnetlink implementation independent of the plugin's own.
    assert witness.addresses(c1, "eth0", 4) == ["10.88.0.2/24"]
    assert witness.default_route(c1) == witness.WitnessedRoute(dst="0.0.0.0/0", gw="10.88.0.1", dev="eth0")
    host_veth = witness.link(node.ns, r1["interfaces"][1]["name"])
    assert host_veth is not None and (host_veth.kind, host_veth.master, host_veth.up) == ("veth", "cni0", True)
    assert witness.link(c1, "eth0").mac == r1["interfaces"][2]["mac"]
    with server(c2, "tcp", 7000, tag="c2"):
        assert request(c1, "tcp", ip2, 7000) == f"c2 {ip1}"
    with server(node.ns, "tcp", 7001, tag="node"):
        assert request(c1, "tcp", "10.88.0.1", 7001) == f"node {ip1}"


def test_ipmasq_hides_containers_behind_the_node(node: Node) -> None:
    c1 = node.container("c1")
    add(node, bridge_conf(node), c1)
    with server(node.external, "tcp", 7100, tag="ext"):
        assert request(c1, "tcp", f"{EXTERNAL_NET}.2", 7100) == f"ext {EXTERNAL_NET}.1"
    v4 = node.save(4)
    assert '-m comment --comment "name: \\"brnet\\" id: \\"' in v4
    assert "-j MASQUERADE" in v4


def test_del_leaves_the_node_as_it_was(node: Node) -> None:
    conf = bridge_conf(node)
    c0 = node.container("c0")
    add(node, conf, c0)  # the bridge and shared state exist before the baseline
    before = node_state(node)
    c1 = node.container("c1")
    add(node, conf, c1)
    assert node_state(node) != before
    out, rc, err = node.run_plugin("bridge", "DEL", conf, c1)
    assert rc == 0 and out is None, err
    assert node_state(node) == before
    out, rc, err = node.run_plugin("bridge", "DEL", conf, c1)  # again: still fine
    assert rc == 0, err


def test_del_after_netns_is_gone_and_with_empty_netns_leaks_nothing(node: Node) -> None:
    conf = bridge_conf(node)
    c0 = node.container("c0")
    add(node, conf, c0)
    before = node_state(node)
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, conf, c1)
    add(node, conf, c2)
    node.namespaces.remove(c1)
    node.namespaces.remove(c2)
    _, rc, err = node.run_plugin("bridge", "DEL", conf, c1)
    assert rc == 0, err
    env_no_netns = {"CNI_NETNS": ""}
    _, rc, err = node.run_plugin("bridge", "DEL", conf, c2, env_extra=env_no_netns)
    assert rc == 0, err
    assert node_state(node) == before


def test_check_passes_then_fails_when_the_address_is_gone(node: Node) -> None:
    conf = bridge_conf(node)
    c1 = node.container("c1")
    result = add(node, conf, c1)
    check_conf = dict(conf, prevResult=result)
    out, rc, err = node.run_plugin("bridge", "CHECK", check_conf, c1)
    assert rc == 0, (out, err)
    ns_exec(c1, "ip", "addr", "flush", "dev", "eth0")
    out, rc, _ = node.run_plugin("bridge", "CHECK", check_conf, c1)
    assert rc != 0 and out is not None and "10.88.0.2/24" in out["msg"]
    ns_exec(c1, "ip", "link", "del", "eth0")
    out, rc, _ = node.run_plugin("bridge", "CHECK", check_conf, c1)
    assert rc != 0 and out is not None and out["msg"] == "Interface name eth0 not found"


def test_dual_stack(node: Node) -> None:
    conf = bridge_conf(node, ranges=[[{"subnet": "10.88.0.0/24"}], [{"subnet": "fd00:88::/64"}]])
    conf["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    c1, c2 = node.container("c1"), node.container("c2")
    r1, r2 = add(node, conf, c1), add(node, conf, c2)
    assert [ip["address"] for ip in r1["ips"]] == ["10.88.0.2/24", "fd00:88::2/64"]
    with server(c2, "tcp", 7200, family=6, tag="c2"):
        assert request(c1, "tcp", "fd00:88::3", 7200, timeout=5) == "c2 fd00:88::2"
    with server(node.external, "tcp", 7201, family=6, tag="ext"):
        assert request(c1, "tcp", "2001:db8:51::2", 7201, timeout=5) == "ext 2001:db8:51::1"
    _, rc, err = node.run_plugin("bridge", "CHECK", dict(conf, prevResult=r1), c1)
    assert rc == 0, err
    for ctr in (c1, c2):
        _, rc, err = node.run_plugin("bridge", "DEL", conf, ctr)
        assert rc == 0, err
    assert "CNI-" not in node.save(6) and "CNI-" not in node.save(4)
    assert node.reservations("brnet") == []


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_version_matrix(node: Node, version: str) -> None:
    conf = bridge_conf(node, version=version)
    c1 = node.container("c1")
    result = add(node, conf, c1)
    types.validate_result(result, version)
    if version >= "0.4.0":
        _, rc, err = node.run_plugin("bridge", "CHECK", dict(conf, prevResult=result), c1)
        assert rc == 0, err
    _, rc, err = node.run_plugin("bridge", "DEL", dict(conf, prevResult=result), c1)
    assert rc == 0, err


def expect_error(node: Node, conf: dict[str, Any], ctr: str, code: int, msg_part: str, **kw: Any) -> None:
    before = node_state(node)
    out, rc, err = node.run_plugin("bridge", "ADD", conf, ctr, **kw)
    assert rc != 0, out
    assert out is not None and out["code"] == code, (out, err)
    assert msg_part in out["msg"] + out.get("details", ""), out
    assert "Traceback" not in json.dumps(out)
    assert node_state(node) == before


BAD_INPUTS = {
    "subnet-host-bits": ({"ranges": [[{"subnet": "10.88.0.5/24"}]]}, "", 7, "host bits set"),
    "subnet-too-small": ({"ranges": [[{"subnet": "10.88.0.0/31"}]]}, "", 7, "too small"),
    "overlapping-ranges": ({"ranges": [[{"subnet": "10.88.0.0/24"}], [{"subnet": "10.88.0.0/25"}]]}, "", 7, "overlap"),
    "unknown-cni-args": ({}, "FOO=bar", 4, "unknown args"),
    "requested-ip-outside-range": ({}, "IP=10.99.0.9", 7, "10.99.0.9"),
    "mtu-not-a-number": ({"mtu": "big"}, "", 7, "mtu"),
    "hairpin-and-promisc": ({"hairpinMode": True, "promiscMode": True}, "", 7, "hairpin"),
    "bridge-name-too-long": ({"bridge": "b" * 16}, "", 7, "bridge"),
    "vlan-out-of-range": ({"vlan": 5000}, "", 7, "vlan"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_leaves_nothing_behind(node: Node, case: str) -> None:
    overrides, cni_args, code, part = BAD_INPUTS[case]
    c0 = node.container("c0")
    add(node, bridge_conf(node), c0)  # so the bridge already exists in the baseline
    c1 = node.container("c1")
    ranges = overrides.pop("ranges", None)
    expect_error(node, bridge_conf(node, ranges=ranges, **overrides), c1, code, part, cni_args=cni_args)


def test_existing_interface_name_is_refused(node: Node) -> None:
    c0 = node.container("c0")
    add(node, bridge_conf(node), c0)
    c1 = node.container("c1")
    ns_exec(c1, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    expect_error(node, bridge_conf(node), c1, 4, "already exists")


def test_missing_netns_is_unknown_container(node: Node) -> None:
    out, rc, _ = node.run_plugin("bridge", "ADD", bridge_conf(node), "nonexistent-netns-x")
    assert rc == 1 and out is not None and out["code"] == 3
    assert node.reservations("brnet") == [] and [l for l in node.links() if l.startswith("veth")] == []


def test_exhausted_range_undoes_the_veth(node: Node) -> None:
    conf = bridge_conf(node, ranges=[[{"subnet": "10.77.0.0/30"}]])  # one usable address: .2
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, conf, c1)
    before = node_state(node)
    expect_error(node, conf, c2, 11, "no IP addresses available")
    assert node_state(node) == before
    assert json.loads(ns_exec(c2, "ip", "-j", "link", "show").stdout) and \
        [l["ifname"] for l in json.loads(ns_exec(c2, "ip", "-j", "link", "show").stdout)] == ["lo"]


def test_macspoofchk_drops_frames_with_another_source_mac(node: Node) -> None:
    conf = bridge_conf(node, macspoofchk=True)
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, bridge_conf(node), c2)
    r1 = add(node, conf, c1)
    assert "pycni_spoofcheck" in node.exec("nft", "list", "tables").stdout.decode()
    with server(c2, "tcp", 7300, tag="c2"):
        assert request(c1, "tcp", "10.88.0.2", 7300).startswith("c2")
        ns_exec(c1, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:99")
        assert request(c1, "tcp", "10.88.0.2", 7300, timeout=1.5).startswith(("ERROR", "TIMEOUT", "timed out"))
        ns_exec(c1, "ip", "link", "set", "eth0", "address", r1["interfaces"][2]["mac"])
        assert request(c1, "tcp", "10.88.0.2", 7300).startswith("c2")
        c3 = node.container("c3")  # the control: without macspoofchk a changed MAC still gets through
        add(node, bridge_conf(node), c3)
        ns_exec(c3, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:98")
        assert request(c3, "tcp", "10.88.0.2", 7300).startswith("c2")
    _, rc, err = node.run_plugin("bridge", "DEL", conf, c1)
    assert rc == 0, err
    assert "pycni_spoofcheck" not in node.exec("nft", "list", "tables").stdout.decode()
