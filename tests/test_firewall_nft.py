"""firewall on nftables as a real executable in a node namespace: the table rule for rule, isolation
with traffic, exact DEL, CHECK naming what is missing, admin rules kept, backends switched."""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import EXTERNAL_NET, Node, node_env, request, server
from tests.test_firewall import attach, bridge_conf, fw, fw_conf, fw_ok, reaches, records, touch_tables

pytestmark = pytest.mark.root


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("fn") as n:
        yield n


def nft_conf(node: Node, name: str = "fwnet", **extra: Any) -> dict[str, Any]:
    return fw_conf(node, name, **{"backend": "nftables", **extra})


def table(node: Node) -> str:
    out = node.exec("nft", "list", "table", "inet", "cni_firewall", check=False)
    return out.stdout.decode() if out.returncode == 0 else ""


def state(node: Node) -> dict[str, Any]:
    return {"nft": node.nft_ruleset(), "v4": node.save(4), "v6": node.save(6), "records": records(node)}


EXPECTED = """table inet cni_firewall {
	comment "pycni firewall plugin"
	set containers_ipv4 {
		type ipv4_addr
		elements = { 10.88.0.5 }
	}

	set containers_ipv6 {
		type ipv6_addr
	}

	set isolating_bridges {
		type ifname
	}

	map isolation {
		type ifname : verdict
	}

	chain CNI-ADMIN {
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname vmap @isolation
		jump CNI-ADMIN
		ip daddr @containers_ipv4 ct state established,related accept
		ip saddr @containers_ipv4 accept
		ip6 daddr @containers_ipv6 ct state established,related accept
		ip6 saddr @containers_ipv6 accept
	}
}
"""


def test_table_rule_for_rule_then_del_removes_it(node: Node) -> None:
    before = state(node)
    c1 = node.container("c1")
    result = attach(node, c1, dict(bridge_conf(node), ipMasq=False), nft_conf(node))
    assert table(node) == EXPECTED
    assert "CNI-FORWARD" not in node.save(4)  # nothing in the legacy tables
    out, rc, err = fw(node, "CHECK", nft_conf(node, prev=result), c1)
    assert rc == 0, (out, err)
    fw_ok(node, "DEL", nft_conf(node), c1)  # without prevResult: the record says what to remove
    _, rc, err = node.run_plugin("bridge", "DEL", dict(bridge_conf(node), ipMasq=False), c1)
    assert rc == 0, err
    assert state(node) == before
    fw_ok(node, "DEL", nft_conf(node), c1)  # repeated
    assert state(node) == before


def test_check_names_the_missing_element_and_rule(node: Node) -> None:
    c1 = node.container("c1")
    result = attach(node, c1, dict(bridge_conf(node), ipMasq=False), nft_conf(node))
    node.exec("nft", "delete", "element", "inet", "cni_firewall", "containers_ipv4", "{ 10.88.0.5 }")
    out, rc, _ = fw(node, "CHECK", nft_conf(node, prev=result), c1)
    assert rc != 0 and out is not None
    assert "expected element 10.88.0.5 not found in set containers_ipv4" in out["msg"]
    listing = node.exec("nft", "-a", "list", "chain", "inet", "cni_firewall", "forward").stdout.decode()
    handle = re.search(r"ip saddr @containers_ipv4 accept # handle (\d+)", listing).group(1)
    node.exec("nft", "delete", "rule", "inet", "cni_firewall", "forward", "handle", handle)
    out, rc, _ = fw(node, "CHECK", nft_conf(node, prev=result), c1)
    assert rc != 0 and out is not None and "expected rule [ip saddr @containers_ipv4 accept] not found" in out["msg"]


def test_isolation_blocks_another_bridges_containers_with_traffic(node: Node) -> None:
    before = state(node)
    a1, a2, b1 = node.container("a1"), node.container("a2"), node.container("b1")
    neta = (dict(bridge_conf(node, "neta", "br-a", "10.31.0.0/24"), ipMasqBackend="nftables"),
            nft_conf(node, "neta", ingressPolicy="same-bridge"))
    netb = (dict(bridge_conf(node, "netb", "br-b", "10.32.0.0/24"), ipMasqBackend="nftables"),
            nft_conf(node, "netb", ingressPolicy="isolated"))
    attach(node, a1, *neta)
    attach(node, a2, *neta)
    attach(node, b1, *netb)
    assert 'chain isolation-br-a {\n\t\toifname "br-a" return\n\t\toifname @isolating_bridges drop' in table(node)
    assert 'chain isolation-br-b {\n\t\toifname "br-b" drop' in table(node)
    with server(a1, "tcp", 7000, tag="a1"), server(b1, "tcp", 7000, tag="b1"), \
            server(node.external, "tcp", 7001, tag="ext"):
        assert request(a2, "tcp", "10.31.0.5", 7000) == "a1 10.31.0.6"  # same bridge, same-bridge policy
        assert not reaches(b1, "10.31.0.5", 7000)  # another isolating bridge
        assert not reaches(a1, "10.32.0.5", 7000)
        assert request(a1, "tcp", f"{EXTERNAL_NET}.2", 7001) == f"ext {EXTERNAL_NET}.1"  # the outside works
        fw_ok(node, "DEL", nft_conf(node, "netb"), b1)  # the last container of br-b: its chain goes
        assert "br-b" not in table(node) and "isolation-br-a" in table(node)
        fw_ok(node, "DEL", nft_conf(node, "neta"), a1)  # a2 still needs br-a's chain
        assert "isolation-br-a" in table(node)
        assert request(a2, "tcp", "10.31.0.5", 7000) == "a1 10.31.0.6"
    fw_ok(node, "DEL", nft_conf(node, "neta"), a2)
    for ctr, conf in ((a1, neta[0]), (a2, neta[0]), (b1, netb[0])):
        _, rc, err = node.run_plugin("bridge", "DEL", conf, ctr)
        assert rc == 0, err
    assert table(node) == ""
    assert state(node) == before


def test_admin_rules_keep_the_table(node: Node) -> None:
    c1 = node.container("c1")
    attach(node, c1, dict(bridge_conf(node), ipMasq=False), nft_conf(node))
    node.exec("nft", "add", "rule", "inet", "cni_firewall", "CNI-ADMIN", "ip", "saddr", "192.0.2.1", "drop")
    fw_ok(node, "DEL", nft_conf(node), c1)
    assert "ip saddr 192.0.2.1 drop" in table(node)  # the administrator's rule stays, and so does the table
    assert "10.88.0.5" not in table(node)


def test_a_backend_switch_between_add_and_del_leaves_both_clean(node: Node) -> None:
    touch_tables(node)  # the legacy tables exist on such a node already
    before = state(node)
    c1 = node.container("c1")
    result = attach(node, c1, dict(bridge_conf(node), ipMasq=False), fw_conf(node))  # iptables
    assert "10.88.0.5/32" in node.save(4)
    fw_ok(node, "ADD", nft_conf(node, prev=result), c1)  # the config now says nftables: the rules move
    assert "10.88.0.5/32" not in node.save(4) and "10.88.0.5" in table(node)
    fw_ok(node, "DEL", fw_conf(node), c1)  # a DEL with the old config removes them from where they are
    _, rc, err = node.run_plugin("bridge", "DEL", dict(bridge_conf(node), ipMasq=False), c1)
    assert rc == 0, err
    assert state(node) == before


def test_a_foreign_table_of_that_name_is_left_alone(node: Node) -> None:
    node.exec("nft", "add", "table", "inet", "cni_firewall")
    before = state(node)
    c1 = node.container("c1")
    result = bridge_add_only(node, c1)
    out, rc, _ = fw(node, "ADD", nft_conf(node, prev=result), c1)
    assert rc != 0 and out is not None and "not created by pycni" in out["msg"]
    assert state(node) == before


def bridge_add_only(node: Node, ctr: str) -> dict[str, Any]:
    result, rc, err = node.run_plugin("bridge", "ADD", dict(bridge_conf(node), ipMasq=False), ctr)
    assert rc == 0 and result is not None, err
    return result
