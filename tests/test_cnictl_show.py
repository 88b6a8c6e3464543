"""``cnictl show`` and ``cnictl gc --dry-run`` on a real node: bridge + portmap + firewall, two containers.

The node lives in a namespace of its own; plugins are the installed executables, run by cnictl in
the node namespace exactly as a runtime would. Drift is made by hand with the tools an operator
would use (``iptables-legacy -D``, ``ip link del``) and must be named by ``show``.
"""
from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from cnictl.cli import derive_container_id
from portmap import names
from tests.netenv import Node, node_env, normalize_save
from tests.test_resilience_common import tree
from tests.test_resilience_support import NO_HELPER, full_chain, install_conflist

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

NET = "shownet"
SUBNET = "10.93.0.0/24"
EXIT_DRIFT = 3


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("cshow", external=False) as node:
        install_conflist(node, full_chain(node, NET, "showbr0", SUBNET))
        yield node


def add(node: Node, ctr: str, publish: str) -> str:
    """ADD through cnictl; returns cnictl's stderr (the plugins' warnings)."""
    proc = node.cnictl("add", NET, ctr, "--publish", publish, env_extra=NO_HELPER)
    return proc.stderr.decode(errors="replace")


def cid(ctr: str) -> str:
    return derive_container_id(f"/run/netns/{ctr}")


def show(node: Node, *args: str) -> tuple[int, str]:
    proc = node.cnictl("show", *args, check=False, env_extra=NO_HELPER)
    assert proc.returncode in (0, EXIT_DRIFT), proc.stderr.decode(errors="replace")
    return proc.returncode, proc.stdout.decode()


def show_json(node: Node) -> tuple[int, dict[str, Any]]:
    code, out = show(node, "--json")
    return code, json.loads(out)


def by_container(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["containerID"]: a for a in report["attachments"]}


def snapshot(node: Node) -> dict[str, Any]:
    """Everything gc could change: records, claims, the result cache, both families' tables, links."""
    return {"state": tree(node.state_dir), "cache": tree(node.cache_dir), "v4": node.save(4), "v6": node.save(6),
            "nat": normalize_save(node.exec("iptables-legacy-save", "-t", "nat").stdout.decode()),
            "links": node.links(), "reservations": node.reservations(NET)}


def test_show_healthy_then_names_each_drift(node: Node) -> None:
    c1, c2 = node.container("c1"), node.container("c2")
    assert "hostPort conflict" not in add(node, c1, "8080:80/tcp")
    warning = add(node, c2, "8080:80/tcp")
    assert "hostPort conflict" in warning and cid(c1) in warning

    code, text = show(node)
    assert code == 0, text
    assert text.splitlines()[0].split()[:3] == ["NETWORK", "CONTAINER", "IFNAME"]
    assert cid(c1) in text and cid(c2) in text and "DRIFT" not in text
    assert f"8080/tcp (held by {cid(c1)}/eth0)" in text  # c2's port is c1's

    code, report = show_json(node)
    assert code == 0 and report["ok"] is True
    views = by_container(report)
    assert set(views) == {cid(c1), cid(c2)}
    for ctr in (c1, c2):
        view = views[cid(ctr)]
        assert view["status"] == "ok" and view["problems"] == []
        assert view["network"] == NET and view["ifname"] == "eth0" and view["netns"] == f"/run/netns/{ctr}"
        assert view["backend"] == "iptables" and view["origin"] == "current"
        assert sorted(view["plugins"]) == ["bridge", "firewall", "portmap"]
        assert view["addresses"] and view["addresses"][0].startswith("10.93.0.")
        assert view["hostLink"] in node.links() and view["bridge"] == "showbr0"
        assert f"nat/{names.dnat_chain(NET, cid(ctr))}" in view["chains"]
        assert "filter/CNI-FORWARD" in view["chains"]
    owner1 = f"{NET}/{cid(c1)}/eth0"
    assert views[cid(c1)]["hostPorts"] == [{"protocol": "tcp", "hostPort": 8080, "holder": owner1, "contested": False}]
    assert views[cid(c2)]["hostPorts"] == [{"protocol": "tcp", "hostPort": 8080, "holder": owner1, "contested": True}]

    # Drift by hand: c1 loses its DNAT rule, c2 its host veth (which takes the container end along).
    chain = names.dnat_chain(NET, cid(c1))
    nat = node.exec("iptables-legacy-save", "-t", "nat").stdout.decode().splitlines()
    dnat = [line for line in nat if line.startswith(f"-A {chain} ") and "-j DNAT" in line]
    assert len(dnat) == 1, nat
    node.exec("iptables-legacy", "-t", "nat", "-D", *shlex.split(dnat[0])[1:])
    host_veth = views[cid(c2)]["hostLink"]
    node.exec("ip", "link", "del", host_veth)

    code, text = show(node)
    assert code == EXIT_DRIFT, text
    lines = text.splitlines()
    assert sum("DRIFT" in line for line in lines) == 2
    assert any(line.strip().startswith("drift: portmap:") and chain in line and "DNAT" in line for line in lines), text
    assert any(line.strip().startswith("drift: bridge:") and host_veth in line for line in lines), text

    code, report = show_json(node)
    assert code == EXIT_DRIFT and report["ok"] is False
    views = by_container(report)
    first, second = views[cid(c1)], views[cid(c2)]
    assert first["status"] == "drift" and second["status"] == "drift"
    assert first["problems"] and all(p.startswith("portmap: ") and chain in p for p in first["problems"]), first
    assert f"bridge: host veth {host_veth} not found" in second["problems"]
    assert "bridge: interface eth0 not found in /run/netns/" + c2 in second["problems"]
    assert not any(p.startswith(("portmap", "firewall")) for p in second["problems"]), second  # their rules are intact

    code, text = show(node, NET)  # one network by name: the same report
    assert code == EXIT_DRIFT and chain in text


def test_gc_dry_run_lists_and_removes_nothing(node: Node) -> None:
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, c1, "8081:80/tcp")
    add(node, c2, "8082:80/tcp")
    host_veth = by_container(show_json(node)[1])[cid(c2)]["hostLink"]
    node.exec("ip", "link", "del", host_veth)  # c2 is the stale one: its link is gone
    before = snapshot(node)

    proc = node.cnictl("gc", NET, "--dry-run", "--valid", f"{cid(c1)}/eth0", env_extra=NO_HELPER)
    listed = proc.stdout.decode().splitlines()
    assert listed == [f"DEL  attachment {cid(c2)}/eth0: cached by the runtime, not valid (netns /run/netns/{c2})"]
    assert snapshot(node) == before

    proc = node.cnictl("gc", NET, "--dry-run", "--valid", f"{cid(c1)}/eth0", "--valid", f"{cid(c2)}/eth0",
                       env_extra=NO_HELPER)
    assert proc.stdout.decode() == ""  # everything valid: nothing to collect
    assert snapshot(node) == before

    # Without the cache entry (a runtime that forgot it) the plugins' GC would remove the records.
    os.unlink(os.path.join(node.cache_dir, "results", f"{NET}-{cid(c2)}-eth0"))
    before_gc = snapshot(node)
    proc = node.cnictl("gc", NET, "--dry-run", "--valid", f"{cid(c1)}/eth0", env_extra=NO_HELPER)
    listed = sorted(proc.stdout.decode().splitlines())
    address = by_container(show_json(node)[1])[cid(c2)]["addresses"][0].split("/")[0]
    assert listed == sorted([f"GC  {plugin} record of {cid(c2)}/eth0: not in the valid set"
                             for plugin in ("bridge", "portmap", "firewall")]
                            + [f"GC  host-local reservation {address} of {cid(c2)}/eth0: not in the valid set"])
    assert snapshot(node) == before_gc

    # And the real gc does what the dry run said.
    node.cnictl("gc", NET, "--valid", f"{cid(c1)}/eth0", env_extra=NO_HELPER)
    code, report = show_json(node)
    assert code == 0 and [a["containerID"] for a in report["attachments"]] == [cid(c1)]
    assert node.reservations(NET) == [report["attachments"][0]["addresses"][0].split("/")[0]]


def test_show_on_the_nftables_backend_names_a_removed_rule(node: Node) -> None:
    conflist = full_chain(node, "shownft", "shownft0", "10.94.0.0/24")
    for plugin in conflist["plugins"]:
        plugin.update({"bridge": {"ipMasqBackend": "nftables"}}.get(plugin["type"], {"backend": "nftables"}))
    install_conflist(node, conflist)
    c1 = node.container("n1")
    node.cnictl("add", "shownft", c1, "--publish", "8090:80/tcp", env_extra=NO_HELPER)
    code, report = show_json(node)
    assert code == 0 and report["ok"] is True, report
    view = by_container(report)[cid(c1)]
    assert view["backend"] == "nftables"
    from portmap import nft  # noqa: PLC0415

    dn = nft.dnat_chain_name("shownft", cid(c1))
    assert f"ip cni_hostport/{dn}" in view["chains"]
    node.exec("nft", "flush", "chain", "ip", "cni_hostport", dn)  # drift by hand: the container's DNAT goes
    code, report = show_json(node)
    assert code == EXIT_DRIFT and report["ok"] is False
    problems = by_container(report)[cid(c1)]["problems"]
    assert any(p.startswith("portmap: ") and f"missing from chain {dn}" in p for p in problems), problems
    node.cnictl("del", "shownft", c1, env_extra=NO_HELPER)
    assert "cni_hostport" not in node.nft_ruleset()
