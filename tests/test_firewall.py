"""firewall as a real executable in a node namespace: exact tables, traffic through a DROP policy,
DEL with and without prevResult, CHECK, isolation, bad input."""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import EXTERNAL_NET, EXTERNAL_NET6, Node, node_env, request, server
from tests.reference_tables import REFERENCE_FILTER

pytestmark = pytest.mark.root

REF_FILTER = REFERENCE_FILTER.splitlines()


def touch_tables(node: Node) -> None:
    """Load filter and nat in both families first, as on any real node, so 'before' shows them."""
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        node.exec(tool, "-t", "filter", "-S")
        node.exec(tool, "-t", "nat", "-S")


@pytest.fixture
def open_node() -> Iterator[Node]:
    with node_env("fw") as n:
        touch_tables(n)
        yield n


@pytest.fixture
def node() -> Iterator[Node]:
    """A node whose FORWARD policy is DROP in both families, as Docker leaves it."""
    with node_env("fw") as n:
        touch_tables(n)
        n.exec("iptables-legacy", "-P", "FORWARD", "DROP")
        n.exec("ip6tables-legacy", "-P", "FORWARD", "DROP")
        yield n


def bridge_conf(node: Node, name: str = "fwnet", bridge: str = "cni0", subnet: str = "10.88.0.0/16",
                v6: bool = False) -> dict[str, Any]:
    first = subnet.split("/")[0][:-1] + "5"  # 10.88.0.0/16 -> 10.88.0.5, as in reference.md §2.4
    ranges: list[list[dict[str, str]]] = [[{"subnet": subnet, "rangeStart": first}]]
    routes = [{"dst": "0.0.0.0/0"}]
    if v6:
        ranges.append([{"subnet": "fd00:88::/64"}])
        routes.append({"dst": "::/0"})
    return {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge, "isGateway": True,
            "ipMasq": True, "hairpinMode": True, "stateDir": node.state_dir,
            "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": ranges, "routes": routes}}


def fw_conf(node: Node, name: str = "fwnet", prev: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    conf = {"cniVersion": "1.0.0", "name": name, "type": "firewall", "backend": "iptables",
            "stateDir": node.state_dir, **extra}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def bridge_add(node: Node, ctr: str, conf: dict[str, Any], cid: str | None = None) -> dict[str, Any]:
    result, rc, err = node.run_plugin("bridge", "ADD", conf, ctr, container_id=cid)
    assert rc == 0 and result is not None, (result, err)
    return result


def fw(node: Node, command: str, conf: dict[str, Any], ctr: str, cid: str | None = None
       ) -> tuple[dict[str, Any] | None, int, str]:
    return node.run_plugin("firewall", command, conf, ctr, container_id=cid)


def fw_ok(node: Node, command: str, conf: dict[str, Any], ctr: str, cid: str | None = None) -> dict[str, Any] | None:
    out, rc, err = fw(node, command, conf, ctr, cid)
    assert rc == 0, (out, err)
    if command == "ADD":
        assert out == conf["prevResult"]  # passed through unchanged
    else:
        assert out is None
    return out


def attach(node: Node, ctr: str, bconf: dict[str, Any], fconf: dict[str, Any], cid: str | None = None
           ) -> dict[str, Any]:
    result = bridge_add(node, ctr, bconf, cid)
    fw_ok(node, "ADD", dict(fconf, prevResult=result), ctr, cid)
    return result


def filter_block(node: Node, family: int = 4) -> list[str]:
    """The *filter section of the node's legacy tables, *filter to COMMIT, counters zeroed."""
    lines = node.save(family).splitlines()
    start = lines.index("*filter")
    return lines[start: lines.index("COMMIT", start) + 1]


def own_lines(node: Node, family: int = 4) -> list[str]:
    """The filter section without its header, built-in chain lines and COMMIT."""
    return [line for line in filter_block(node, family)[1:-1]
            if not line.startswith((":INPUT", ":FORWARD", ":OUTPUT"))]


def records(node: Node) -> list[str]:
    base = os.path.join(node.state_dir, "firewall")
    return sorted(os.path.relpath(os.path.join(d, f), base) for d, _, fs in os.walk(base) for f in fs)


def tables(node: Node) -> tuple[str, str]:
    return node.save(4), node.save(6)


def reaches(ctr: str, host: str, port: int, timeout: float = 1) -> bool:
    return not request(ctr, "tcp", host, port, timeout=timeout).startswith(("ERROR", "TIMEOUT"))


# --- layout ----------------------------------------------------------------------------------------

def test_reference_example_filter_table_line_for_line(open_node: Node) -> None:
    node = open_node
    c1 = node.container("c1")
    result = attach(node, c1, bridge_conf(node), fw_conf(node), cid="ctr1")
    assert result["ips"][0]["address"] == "10.88.0.5/16"
    assert filter_block(node) == REF_FILTER
    assert own_lines(node, 6) == []  # an IPv4-only container touches no ip6tables rule


def test_dual_stack_container_gets_rules_in_both_families(open_node: Node) -> None:
    node = open_node
    c1 = node.container("c1")
    result = attach(node, c1, bridge_conf(node, v6=True), fw_conf(node))
    assert [ip["address"] for ip in result["ips"]] == ["10.88.0.5/16", "fd00:88::2/64"]
    assert own_lines(node, 6) == [
        ":CNI-ADMIN - [0:0]",
        ":CNI-FORWARD - [0:0]",
        '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
        '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN',
        "-A CNI-FORWARD -d fd00:88::2/128 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A CNI-FORWARD -s fd00:88::2/128 -j ACCEPT",
    ]
    assert own_lines(node, 4) == REF_FILTER[4:-1]
    out, rc, err = fw(node, "CHECK", fw_conf(node, prev=result), c1)
    assert rc == 0, (out, err)
    fw_ok(node, "DEL", fw_conf(node), c1)  # no prevResult: the record knows both families
    assert own_lines(node, 4) == own_lines(node, 6) == []


def test_same_layout_as_the_reference_binary(open_node: Node) -> None:
    """The Debian reference firewall (nft backend) and ours (legacy), fed the same prevResult."""
    reference = "/usr/lib/cni/firewall"
    if not os.access(reference, os.X_OK):
        pytest.skip("no reference firewall binary")
    node = open_node
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "cni0"}, {"name": "veth1"},
                                                  {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"interface": 2, "address": "10.55.0.2/24", "gateway": "10.55.0.1"},
                    {"interface": 2, "address": "fd00:55::2/64"}]}
    for policy in ("open", "same-bridge"):
        ref_ns = node.container(f"ref{policy[:4]}")
        conf = fw_conf(node, prev=prev, ingressPolicy=policy)
        proc_env = node.plugin_env("ADD", ref_ns, container_id=f"c{policy[:4]}")
        proc = subprocess.run(["ip", "netns", "exec", ref_ns, reference], input=json.dumps(conf).encode(),
                              env=proc_env, capture_output=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        fw_ok(node, "ADD", conf, ref_ns, cid=f"c{policy[:4]}")
        for family, save in ((4, "iptables-nft-save"), (6, "ip6tables-nft-save")):
            theirs = subprocess.run(["ip", "netns", "exec", ref_ns, save, "-t", "filter"], capture_output=True,
                                    check=True).stdout.decode()
            theirs_lines = [line for line in theirs.splitlines() if line.startswith(("-A", ":CNI"))]
            if policy == "same-bridge":  # 1.1.1 comments every isolation rule as same-bridge; head as below
                theirs_lines = [line.replace("(ingressPolicy: same-bridge)", "(ingressPolicy: same-bridge|isolated)")
                                if "-i cni0 ! -o cni0" not in line else line for line in theirs_lines]
            ours = [line for line in own_lines(node, family) if line.startswith(("-A", ":CNI"))]
            assert ours == theirs_lines, (family, policy)
        fw_ok(node, "DEL", fw_conf(node, ingressPolicy=policy), ref_ns, cid=f"c{policy[:4]}")
        assert own_lines(node, 4) == own_lines(node, 6) == []


def test_isolated_policy_layout(open_node: Node) -> None:
    node = open_node
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "br-iso"}, {"name": "veth1"},
                                                  {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"interface": 2, "address": "10.66.0.2/24"}]}
    fw_ok(node, "ADD", fw_conf(node, prev=prev, ingressPolicy="isolated"), "ghost")
    shared = '-m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)"'
    mine = '-m comment --comment "CNI firewall plugin rules (ingressPolicy: isolated)"'
    assert own_lines(node) == [
        ":CNI-ADMIN - [0:0]",
        ":CNI-FORWARD - [0:0]",
        ":CNI-ISOLATION-STAGE-1 - [0:0]",
        ":CNI-ISOLATION-STAGE-2 - [0:0]",
        f"-A FORWARD {shared} -j CNI-ISOLATION-STAGE-1",
        '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
        '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN',
        "-A CNI-FORWARD -d 10.66.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A CNI-FORWARD -s 10.66.0.2/32 -j ACCEPT",
        f"-A CNI-ISOLATION-STAGE-1 -i br-iso -o br-iso {mine} -j DROP",
        f"-A CNI-ISOLATION-STAGE-1 -i br-iso ! -o br-iso {mine} -j CNI-ISOLATION-STAGE-2",
        f"-A CNI-ISOLATION-STAGE-1 {shared} -j RETURN",
        f"-A CNI-ISOLATION-STAGE-2 -o br-iso {shared} -j DROP",
        f"-A CNI-ISOLATION-STAGE-2 {shared} -j RETURN",
    ]
    out, rc, err = fw(node, "CHECK", fw_conf(node, prev=prev, ingressPolicy="isolated"), "ghost")
    assert rc == 0, (out, err)
    node.exec("iptables-legacy", "-D", "CNI-ISOLATION-STAGE-2", "-o", "br-iso", "-m", "comment", "--comment",
              "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)", "-j", "DROP")
    out, rc, _ = fw(node, "CHECK", fw_conf(node, prev=prev, ingressPolicy="isolated"), "ghost")
    assert rc == 1 and out is not None and out["msg"] == (
        "expected CNI-ISOLATION-STAGE-2 rule [-o br-iso -m comment --comment CNI firewall plugin rules "
        "(ingressPolicy: same-bridge|isolated) -j DROP] not found")
    fw_ok(node, "DEL", fw_conf(node), "ghost")
    assert own_lines(node) == []


# --- traffic through a DROP policy ----------------------------------------------------------------------

def test_container_reaches_the_outside_only_with_the_firewall_in_the_chain(node: Node) -> None:
    before = tables(node)
    c1 = node.container("c1")
    with server(node.external, "tcp", 9000, tag="ext4"), server(node.external, "tcp", 9000, family=6, tag="ext6"):
        result = bridge_add(node, c1, bridge_conf(node, v6=True), cid="ctr1")
        assert not reaches(c1, f"{EXTERNAL_NET}.2", 9000)  # the policy drops it: bridge alone is not enough
        assert not reaches(c1, f"{EXTERNAL_NET6}2", 9000)
        fw_ok(node, "ADD", fw_conf(node, prev=result), c1, cid="ctr1")
        assert request(c1, "tcp", f"{EXTERNAL_NET}.2", 9000) == f"ext4 {EXTERNAL_NET}.1"  # masqueraded
        assert request(c1, "tcp", f"{EXTERNAL_NET6}2", 9000) == f"ext6 {EXTERNAL_NET6}1"
        fw_ok(node, "DEL", fw_conf(node), c1, cid="ctr1")  # without prevResult
        assert not reaches(c1, f"{EXTERNAL_NET}.2", 9000)
        assert not reaches(c1, f"{EXTERNAL_NET6}2", 9000)
    _, rc, err = node.run_plugin("bridge", "DEL", bridge_conf(node, v6=True), c1, container_id="ctr1")
    assert rc == 0, err
    assert tables(node) == before
    assert records(node) == []


@pytest.mark.parametrize("with_prev", [True, False], ids=["prevResult", "bare"])
def test_del_restores_the_filter_table_byte_for_byte_and_repeats(node: Node, with_prev: bool) -> None:
    before = tables(node)
    c1, c2 = node.container("c1"), node.container("c2")
    r1 = attach(node, c1, bridge_conf(node, v6=True), fw_conf(node))
    r2 = attach(node, c2, bridge_conf(node, v6=True), fw_conf(node))
    for ctr, result in ((c1, r1), (c2, r2)):
        conf = fw_conf(node, prev=result if with_prev else None)
        fw_ok(node, "DEL", conf, ctr)
        fw_ok(node, "DEL", conf, ctr)  # a runtime may repeat DEL
    for ctr in (c1, c2):
        _, rc, err = node.run_plugin("bridge", "DEL", bridge_conf(node, v6=True), ctr)
        assert rc == 0, err
    assert tables(node) == before
    assert records(node) == []
    for ctr, result in ((c1, r1), (c2, r2)):  # still nothing to do, still success
        fw_ok(node, "DEL", fw_conf(node, prev=result), ctr)
        fw_ok(node, "DEL", fw_conf(node), ctr)
    assert tables(node) == before


def test_shared_chains_stay_while_any_container_needs_them(node: Node) -> None:
    c1, c2 = node.container("c1"), node.container("c2")
    attach(node, c1, bridge_conf(node), fw_conf(node))
    attach(node, c2, bridge_conf(node), fw_conf(node))
    fw_ok(node, "DEL", fw_conf(node), c1)
    lines = own_lines(node)
    assert "-A CNI-FORWARD -s 10.88.0.6/32 -j ACCEPT" in lines
    assert not any("10.88.0.5" in line for line in lines)
    assert '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD' in lines
    with server(node.external, "tcp", 9001, tag="ext"):
        assert request(c2, "tcp", f"{EXTERNAL_NET}.2", 9001) == f"ext {EXTERNAL_NET}.1"
    fw_ok(node, "DEL", fw_conf(node), c2)
    assert own_lines(node) == []


def test_re_add_replaces_instead_of_stacking(node: Node) -> None:
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]}
    for _ in range(3):
        fw_ok(node, "ADD", fw_conf(node, prev=prev), "ghost")
    lines = own_lines(node)
    assert len(lines) == len(set(lines)) == len(REF_FILTER[4:-1])
    moved = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.9/16"}, {"address": "fd00:88::9/64"}]}
    fw_ok(node, "ADD", fw_conf(node, prev=moved), "ghost")  # same attachment, other addresses
    assert not any("10.88.0.5" in line for line in own_lines(node))
    assert "-A CNI-FORWARD -s 10.88.0.9/32 -j ACCEPT" in own_lines(node)
    assert "-A CNI-FORWARD -s fd00:88::9/128 -j ACCEPT" in own_lines(node, 6)
    fw_ok(node, "ADD", fw_conf(node, prev={"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.9/16"}]}), "ghost")
    assert own_lines(node, 6) == []  # the family it no longer has is cleaned up, shared chains included
    fw_ok(node, "DEL", fw_conf(node), "ghost")
    assert own_lines(node) == [] and records(node) == []


# --- CHECK -----------------------------------------------------------------------------------------------

def test_check_passes_then_names_the_missing_rule(node: Node) -> None:
    c1 = node.container("c1")
    result = attach(node, c1, bridge_conf(node), fw_conf(node))
    conf = fw_conf(node, prev=result)
    out, rc, err = fw(node, "CHECK", conf, c1)
    assert rc == 0 and out is None, (out, err)
    node.exec("iptables-legacy", "-D", "CNI-FORWARD", "-s", "10.88.0.5/32", "-j", "ACCEPT")
    out, rc, _ = fw(node, "CHECK", conf, c1)
    assert rc == 1 and out is not None
    assert out["code"] == 999 and out["msg"] == "expected rule [-s 10.88.0.5/32 -j ACCEPT] not found"
    node.exec("iptables-legacy", "-D", "FORWARD", "-m", "comment", "--comment", "CNI firewall plugin rules",
              "-j", "CNI-FORWARD")
    out, rc, _ = fw(node, "CHECK", conf, c1)
    assert rc == 1 and out is not None and out["msg"] == (
        "expected FORWARD rule [-m comment --comment CNI firewall plugin rules -j CNI-FORWARD] not found; "
        "expected rule [-s 10.88.0.5/32 -j ACCEPT] not found")
    out, rc, _ = fw(node, "CHECK", fw_conf(node), c1)
    assert rc == 1 and out is not None and out["code"] == 7 and out["msg"] == "Required prevResult missing"
    fw_ok(node, "DEL", fw_conf(node), c1)


def test_check_with_a_custom_admin_chain(node: Node) -> None:
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]}
    fw_ok(node, "ADD", fw_conf(node, prev=prev, iptablesAdminChainName="MY-ADMIN"), "ghost")
    out, rc, err = fw(node, "CHECK", fw_conf(node, prev=prev, iptablesAdminChainName="MY-ADMIN"), "ghost")
    assert rc == 0, (out, err)
    out, rc, _ = fw(node, "CHECK", fw_conf(node, prev=prev), "ghost")  # CNI-ADMIN was never set up
    assert rc == 1 and out is not None and out["msg"] == (
        "expected CNI-FORWARD rule [-m comment --comment CNI firewall plugin admin overrides -j CNI-ADMIN] not found")
    fw_ok(node, "DEL", fw_conf(node), "ghost")
    assert own_lines(node) == []


# --- admin chain ---------------------------------------------------------------------------------------------

def test_admin_rules_and_references_survive_and_empty_admin_chains_go(node: Node) -> None:
    before = tables(node)
    prev1 = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]}
    prev2 = {"cniVersion": "1.0.0", "ips": [{"address": "10.89.0.5/16"}]}
    fw_ok(node, "ADD", fw_conf(node, prev=prev1), "a")
    fw_ok(node, "ADD", fw_conf(node, "other", prev=prev2, iptablesAdminChainName="MY-ADMIN"), "b")
    lines = own_lines(node)
    jumps = [line for line in lines if "admin overrides" in line]
    assert jumps == ['-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j MY-ADMIN',
                     '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN']
    fw_ok(node, "DEL", fw_conf(node), "a")
    fw_ok(node, "DEL", fw_conf(node, "other"), "b")
    assert tables(node) == before  # both admin chains were empty: gone with CNI-FORWARD

    fw_ok(node, "ADD", fw_conf(node, prev=prev1), "a")
    node.exec("iptables-legacy", "-A", "CNI-ADMIN", "-s", "192.0.2.7/32", "-j", "DROP")
    fw_ok(node, "DEL", fw_conf(node), "a")
    assert own_lines(node) == [":CNI-ADMIN - [0:0]", "-A CNI-ADMIN -s 192.0.2.7/32 -j DROP"]
    fw_ok(node, "ADD", fw_conf(node, prev=prev1), "a")  # the admin's rule is used again, not duplicated
    assert own_lines(node).count("-A CNI-ADMIN -s 192.0.2.7/32 -j DROP") == 1
    node.exec("iptables-legacy", "-F", "CNI-ADMIN")
    node.exec("iptables-legacy", "-A", "INPUT", "-j", "CNI-ADMIN")  # referenced elsewhere: kept
    fw_ok(node, "DEL", fw_conf(node), "a")
    assert own_lines(node) == [":CNI-ADMIN - [0:0]", "-A INPUT -j CNI-ADMIN"]


def test_a_rule_an_administrator_put_into_cni_forward_keeps_it(node: Node) -> None:
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]}
    fw_ok(node, "ADD", fw_conf(node, prev=prev), "a")
    node.exec("iptables-legacy", "-A", "CNI-FORWARD", "-s", "192.0.2.9/32", "-j", "ACCEPT")
    fw_ok(node, "DEL", fw_conf(node), "a")
    assert "-A CNI-FORWARD -s 192.0.2.9/32 -j ACCEPT" in own_lines(node)
    assert '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD' in own_lines(node)


# --- isolation -----------------------------------------------------------------------------------------------

def test_same_bridge_isolation_blocks_another_bridges_containers(node: Node) -> None:
    before = tables(node)
    a1, a2, b1 = node.container("a1"), node.container("a2"), node.container("b1")
    iso = {"ingressPolicy": "same-bridge"}
    neta = (bridge_conf(node, "neta", "br-a", "10.31.0.0/24"), fw_conf(node, "neta", **iso))
    netb = (bridge_conf(node, "netb", "br-b", "10.32.0.0/24"), fw_conf(node, "netb", **iso))
    attach(node, a1, *neta)
    attach(node, a2, *neta)
    attach(node, b1, *netb)
    with server(a1, "tcp", 7000, tag="a1"), server(b1, "tcp", 7000, tag="b1"), \
            server(node.external, "tcp", 7001, tag="ext"):
        assert request(a2, "tcp", "10.31.0.5", 7000) == "a1 10.31.0.6"  # same bridge
        assert not reaches(b1, "10.31.0.5", 7000)  # another isolated bridge
        assert not reaches(a1, "10.32.0.5", 7000)
        assert request(b1, "tcp", f"{EXTERNAL_NET}.2", 7001) == f"ext {EXTERNAL_NET}.1"  # the outside still works
        assert request(a1, "tcp", f"{EXTERNAL_NET}.2", 7001) == f"ext {EXTERNAL_NET}.1"
        fw_ok(node, "DEL", fw_conf(node, "netb"), b1)  # the last container of br-b: its rules go
        assert not any("br-b" in line for line in own_lines(node))
        assert any("-o br-a" in line for line in own_lines(node))
        assert not reaches(b1, f"{EXTERNAL_NET}.2", 7001)  # no firewall rules for b1: the policy drops it
        fw_ok(node, "DEL", fw_conf(node, "neta"), a1)  # a2 still needs br-a's rules
        assert any("-o br-a" in line for line in own_lines(node))
    fw_ok(node, "DEL", fw_conf(node, "neta"), a2)
    for ctr, conf in ((a1, neta[0]), (a2, neta[0]), (b1, netb[0])):
        _, rc, err = node.run_plugin("bridge", "DEL", conf, ctr)
        assert rc == 0, err
    assert tables(node) == before


def test_isolation_rules_follow_a_re_add_that_changes_policy(node: Node) -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "br-x"}], "ips": [{"address": "10.77.0.2/24"}]}
    other = {"cniVersion": "1.0.0", "interfaces": [{"name": "br-y"}], "ips": [{"address": "10.78.0.2/24"}]}
    fw_ok(node, "ADD", fw_conf(node, "nety", prev=other), "y")  # an open network keeps CNI-FORWARD alive
    fw_ok(node, "ADD", fw_conf(node, prev=prev, ingressPolicy="same-bridge"), "x")
    fw_ok(node, "ADD", fw_conf(node, prev=prev, ingressPolicy="isolated"), "x")
    lines = own_lines(node)
    assert not any("(ingressPolicy: same-bridge)" in line for line in lines)
    assert sum("-o br-x" in line and "DROP" in line for line in lines) == 2  # the isolated drop and stage 2's
    fw_ok(node, "ADD", fw_conf(node, prev=prev), "x")  # open again: the isolation chains go
    assert not any("ISOLATION" in line for line in own_lines(node))
    fw_ok(node, "DEL", fw_conf(node), "x")
    fw_ok(node, "DEL", fw_conf(node, "nety"), "y")
    assert own_lines(node) == []


# --- bad input -----------------------------------------------------------------------------------------------

PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "cni0"}, {"name": "veth1"},
                                              {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"interface": 2, "address": "10.88.0.5/16"}]}


@pytest.mark.parametrize("overrides,part", [
    ({"prevResult": None}, "missing prevResult from earlier plugin"),
    ({"iptablesAdminChainName": "bad name"}, "iptablesAdminChainName: invalid chain name 'bad name'"),
    ({"iptablesAdminChainName": "FORWARD"}, "iptablesAdminChainName: must be a chain of its own"),
    ({"iptablesAdminChainName": "x" * 29}, "iptablesAdminChainName"),
    ({"ingressPolicy": "closed"}, "ingressPolicy: unknown ingress policy, expected one of open, same-bridge, "
                                  "isolated (got 'closed')"),
    ({"backend": "firewalld"}, "backend: unrecognized backend 'firewalld': expected one of iptables, nftables"),
    ({"ingressPolicy": "same-bridge", "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]}},
     'interface needs to be set for ingress policy "same-bridge"'),
    ({"ingressPolicy": "same-bridge", "prevResult": dict(PREV, interfaces=[{"name": "br+"}, *PREV["interfaces"][1:]])},
     "interfaces.0.name: not a bridge name"),
], ids=["no-prev", "admin-space", "admin-builtin", "admin-long", "policy", "backend", "no-bridge", "wildcard-bridge"])
def test_bad_input_is_code_7_and_leaves_nothing(node: Node, overrides: dict[str, Any], part: str) -> None:
    before = tables(node)
    conf = dict(fw_conf(node, prev=PREV), **overrides)
    if conf["prevResult"] is None:
        del conf["prevResult"]
    out, rc, err = fw(node, "ADD", conf, "ghost")
    assert rc == 1 and out is not None and out["code"] == 7, (out, err)
    assert part in out["msg"], out["msg"]
    assert tables(node) == before
    assert records(node) == []


def test_versions_before_0_4_0_are_refused(node: Node) -> None:
    out, rc, _ = fw(node, "ADD", dict(fw_conf(node, prev=PREV), cniVersion="0.3.1"), "ghost")
    assert rc == 1 and out is not None and out["code"] == 1
    out, rc, _ = node.run_plugin("firewall", "VERSION", {}, "ghost")
    assert rc == 0 and out is not None and out["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]


def test_status_and_version_1_1_0(node: Node) -> None:
    out, rc, err = fw(node, "STATUS", fw_conf(node, cniVersion="1.1.0"), "")
    assert rc == 0 and out is None, (out, err)
    prev = dict(PREV, cniVersion="1.1.0")
    out, rc, err = fw(node, "ADD", fw_conf(node, prev=prev, cniVersion="1.1.0"), "ghost")
    assert rc == 0 and out is not None and out["ips"] == prev["ips"], (out, err)
    fw_ok(node, "DEL", fw_conf(node, cniVersion="1.1.0"), "ghost")
