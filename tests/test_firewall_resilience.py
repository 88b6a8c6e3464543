"""firewall under crashes, races, reused addresses, corrupt records and GC; and the example conflist
end to end through cnictl.

Every test runs once per backend (``[iptables]``, ``[nftables]``: the firewall's ``backend``, and for
the example conflist bridge's ``ipMasqBackend`` and portmap's ``backend`` too). "The tables" compared
are both legacy families and ``nft list ruleset``; what the iptables tests read from ``CNI-FORWARD``
(accepted addresses, isolated bridges, duplicates) is read on nftables from ``inet cni_firewall``
(its sets, its isolation chains, its chains' rules).
"""
from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cni import faults
from tests.netenv import EXTERNAL_NET, REPO, Node, node_env, request, server
from tests.test_firewall import fw, fw_conf, fw_ok, own_lines, records, touch_tables
from tests.test_resilience_common import BACKENDS, backend_options, duplicate_nft_rules, nft_ruleset, our_nft_tables

pytestmark = pytest.mark.root

FIREWALL_ADD_POINTS = [p for p in faults.POINTS if p.startswith("firewall.add.")] + \
                      ["chains.commit.before", "chains.commit.after"]
FIREWALL_DEL_POINTS = [p for p in faults.POINTS if p.startswith("firewall.del.")]


@pytest.fixture(params=BACKENDS)
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    with node_env("fw", external=False) as n:
        touch_tables(n)
        n.exec("iptables-legacy", "-P", "FORWARD", "DROP")
        n.backend = request.param
        yield n


def conf(node: Node, name: str = "fwnet", prev: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The firewall's config on the node's backend."""
    return fw_conf(node, name, prev=prev, **{"backend": node.backend, **extra})


def tables(node: Node) -> tuple[str, str, str]:
    """Both legacy families and the nftables ruleset (counters left out)."""
    return node.save(4), node.save(6), nft_ruleset(node)


def assert_as_before(node: Node, before: tuple[tuple[str, str, str], list[str]]) -> None:
    """The tables and records are what they were, or the differences are shown line by line."""
    now = tables(node), records(node)
    if now == before:
        return
    names = ("legacy v4", "legacy v6", "nft ruleset")
    diff = [f"{name}: {line}" for name, old, new in zip(names, before[0], now[0])
            for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)]
    raise AssertionError("the node is not as before:\n" + "\n".join(diff) + f"\nrecords {before[1]} -> {now[1]}")


def firewall_table(node: Node) -> str:
    return our_nft_tables(nft_ruleset(node)).get("inet cni_firewall", "")


def accepted(node: Node, family: int = 4) -> list[str]:
    """The container addresses the firewall lets through: ``-A CNI-FORWARD -s X -j ACCEPT`` on iptables,
    the elements of ``containers_ipv4``/``containers_ipv6`` on nftables (every one, duplicates kept)."""
    if node.backend == "iptables":
        found = [re.match(r"-A CNI-FORWARD -s (\S+) -j ACCEPT$", line) for line in own_lines(node, family)]
        return [m.group(1).rsplit("/", 1)[0] for m in found if m]
    found = re.search(rf"set containers_ipv{family} {{\n[^}}]*?elements = {{ ([^}}]*)}}", firewall_table(node))
    return [a.strip() for a in found.group(1).replace("\n", " ").split(",")] if found else []


def isolates(node: Node, bridge: str) -> bool:
    """Whether the firewall holds isolation rules for ``bridge``."""
    if node.backend == "iptables":
        return any(f"-o {bridge}" in line for line in own_lines(node))
    return f"chain isolation-{bridge} {{" in firewall_table(node)


def no_duplicates(node: Node) -> None:
    """No rule twice in a chain (and no address accepted twice)."""
    if node.backend == "iptables":
        assert duplicates(own_lines(node)) == duplicates(own_lines(node, 6)) == []
    else:
        assert duplicate_nft_rules(nft_ruleset(node)) == []
    for family in (4, 6):
        assert len(set(accepted(node, family))) == len(accepted(node, family)), accepted(node, family)


def prev_of(*addresses: str, bridge: str = "cni0") -> dict[str, Any]:
    """A bridge-like result: the bridge, a host veth, the container's eth0 holding the addresses."""
    return {"cniVersion": "1.0.0",
            "interfaces": [{"name": bridge}, {"name": "veth0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"interface": 2, "address": a} for a in addresses]}


def killed(node: Node, command: str, conf: dict[str, Any], cid: str, point: str) -> None:
    out, rc, err = node.run_plugin("firewall", command, conf, cid, env_extra={faults.ENV: point, "PYCNI_HELPER": "0"})
    assert rc == -9 and out is None, f"{command} did not reach {point}: rc={rc} {out} {err}"


def duplicates(lines: list[str]) -> list[str]:
    rules = [line for line in lines if line.startswith("-A ")]
    return sorted({line for line in rules if rules.count(line) > 1})


# --- crashes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("point", FIREWALL_ADD_POINTS)
@pytest.mark.parametrize("then", ["del", "retry"])
def test_killed_add_then_del_or_retry_restores(node: Node, point: str, then: str) -> None:
    before = tables(node), records(node)
    prev = prev_of("10.88.0.5/16", "fd00:88::5/64", bridge="br-k")
    fconf = conf(node, prev=prev, ingressPolicy="same-bridge")
    killed(node, "ADD", fconf, "k1", point)
    if then == "retry":  # the runtime runs the chain again: no duplicates, and CHECK is happy
        fw_ok(node, "ADD", fconf, "k1")
        no_duplicates(node)
        assert accepted(node, 4) == ["10.88.0.5"] and accepted(node, 6) == ["fd00:88::5"]
        assert isolates(node, "br-k")
        out, rc, err = fw(node, "CHECK", fconf, "k1")
        assert rc == 0, (out, err)
    fw_ok(node, "DEL", conf(node), "k1")  # bare: the runtime lost everything
    assert_as_before(node, before)


@pytest.mark.parametrize("point", FIREWALL_DEL_POINTS + ["chains.commit.after"])
def test_killed_del_then_del_again_restores(node: Node, point: str) -> None:
    before = tables(node), records(node)
    fw_ok(node, "ADD", conf(node, prev=prev_of("10.88.0.5/16", "fd00:88::5/64")), "k1")
    killed(node, "DEL", conf(node), "k1", point)
    fw_ok(node, "DEL", conf(node), "k1")
    assert_as_before(node, before)


def test_failed_add_leaves_no_partial_rules(node: Node) -> None:
    """The IPv6 commit fails after the IPv4 one went in: the IPv4 rules are taken out again, and the record."""
    if node.backend == "nftables":
        # Both families share one inet table: another container made it, then someone flushed its forward
        # chain and deleted the IPv6 set. The IPv4 element goes in; the IPv6 transaction cannot.
        fw_ok(node, "ADD", conf(node, prev=prev_of("10.88.0.9/16")), "k0")
        node.exec("nft", "flush", "chain", "inet", "cni_firewall", "forward")
        node.exec("nft", "delete", "set", "inet", "cni_firewall", "containers_ipv6")
    else:
        # An administrator's jump back into CNI-FORWARD: our admin jump would close a loop, which the
        # kernel refuses at commit time.
        node.exec("ip6tables-legacy", "-N", "CNI-ADMIN")
        node.exec("ip6tables-legacy", "-N", "CNI-FORWARD")
        node.exec("ip6tables-legacy", "-A", "CNI-ADMIN", "-j", "CNI-FORWARD")
    before = tables(node), records(node)
    out, rc, err = fw(node, "ADD", conf(node, prev=prev_of("10.88.0.5/16", "fd00:88::5/64")), "k1")
    assert rc == 1 and out is not None and out["code"] in (11, 999), (out, err)
    assert_as_before(node, before)
    assert "10.88.0.5" not in accepted(node, 4)


# --- addresses handed out again --------------------------------------------------------------------------

def test_del_of_a_stale_attachment_keeps_the_new_owners_rules(node: Node) -> None:
    before = tables(node), records(node)
    prev = prev_of("10.88.0.5/16")
    fw_ok(node, "ADD", conf(node, prev=prev), "old")
    fw_ok(node, "ADD", conf(node, prev=prev), "new")  # 10.88.0.5 handed out again; "old" was never deleted
    fw_ok(node, "DEL", conf(node), "old")
    out, rc, err = fw(node, "CHECK", conf(node, prev=prev), "new")
    assert rc == 0, (out, err)
    fw_ok(node, "DEL", conf(node, prev=prev), "old")  # repeated, now with the runtime's cached result
    out, rc, err = fw(node, "CHECK", conf(node, prev=prev), "new")
    assert rc == 0, (out, err)
    fw_ok(node, "DEL", conf(node), "new")
    assert_as_before(node, before)


# --- corrupt records -----------------------------------------------------------------------------------------

def _record_path(node: Node, cid: str, network: str = "fwnet") -> str:
    return os.path.join(node.state_dir, "firewall", network, cid, "eth0.json")


def test_corrupt_record_is_reported_and_del_falls_back_to_prev_result(node: Node) -> None:
    before = tables(node), records(node)
    prev = prev_of("10.88.0.5/16", "fd00:88::5/64")
    fw_ok(node, "ADD", conf(node, prev=prev), "c1")
    with open(_record_path(node, "c1"), "wb") as f:
        f.write(b'{"format": 1, "families": [')
    out, rc, err = fw(node, "DEL", conf(node, prev=prev), "c1")
    assert rc == 0 and out is None, (out, err)
    assert "corrupt ownership record" in err
    assert_as_before(node, before)


def test_a_corrupt_record_elsewhere_keeps_shared_isolation_rules(node: Node) -> None:
    """Another attachment's record on the same bridge cannot be read: its bridge rules must stay."""
    fconf = conf(node, ingressPolicy="same-bridge")
    fw_ok(node, "ADD", dict(fconf, prevResult=prev_of("10.88.0.5/16", bridge="br-c")), "c1")
    fw_ok(node, "ADD", dict(fconf, prevResult=prev_of("10.88.0.6/16", bridge="br-c")), "c2")
    with open(_record_path(node, "c2"), "wb") as f:
        f.write(b"garbage")
    fw_ok(node, "DEL", fconf, "c1")
    assert isolates(node, "br-c")
    assert accepted(node, 4) == ["10.88.0.6"]


def test_re_add_over_a_corrupt_record_rewrites_it(node: Node) -> None:
    before = tables(node), records(node)
    prev = prev_of("10.88.0.5/16")
    fw_ok(node, "ADD", conf(node, prev=prev), "c1")
    with open(_record_path(node, "c1"), "wb") as f:
        f.write(b"")
    out, rc, err = fw(node, "ADD", conf(node, prev=prev), "c1")
    assert rc == 0 and "corrupt ownership record" in err, (out, err)
    no_duplicates(node)
    assert accepted(node, 4) == ["10.88.0.5"]
    fw_ok(node, "DEL", conf(node), "c1")  # the rewritten record is enough again
    assert_as_before(node, before)


# --- races -------------------------------------------------------------------------------------------------------

def test_parallel_adds_and_dels_share_the_chains_correctly(node: Node) -> None:
    before = tables(node), records(node)
    attachments = []
    for i in range(12):
        policy = ("open", "same-bridge", "isolated")[i % 3]
        bridge = f"br-{i % 2}"
        prev = prev_of(f"10.88.{i % 2}.{10 + i}/16", f"fd00:88::{10 + i:x}/64", bridge=bridge)
        attachments.append((f"p{i}", conf(node, f"net{i % 2}", prev=prev, ingressPolicy=policy)))

    def add(item: tuple[str, dict[str, Any]]) -> tuple[Any, int, str]:
        return fw(node, "ADD", item[1], item[0])

    def delete(item: tuple[str, dict[str, Any]]) -> tuple[Any, int, str]:
        bare = {k: v for k, v in item[1].items() if k != "prevResult"}
        return fw(node, "DEL", bare, item[0])

    with ThreadPoolExecutor(max_workers=12) as pool:
        for out, rc, err in pool.map(add, attachments):
            assert rc == 0, (out, err)
    no_duplicates(node)
    for family in (4, 6):
        assert len(accepted(node, family)) == 12, accepted(node, family)
    assert isolates(node, "br-0") and isolates(node, "br-1")
    for cid, fconf in attachments:
        out, rc, err = fw(node, "CHECK", fconf, cid)
        assert rc == 0, (cid, out, err)
    # Half go while the other half come back: shared chains must survive the crossing.
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(delete, item) for item in attachments[:6]]
        futures += [pool.submit(add, item) for item in attachments[6:]]
        for future in futures:
            out, rc, err = future.result()
            assert rc == 0, (out, err)
    for cid, fconf in attachments[6:]:
        out, rc, err = fw(node, "CHECK", fconf, cid)
        assert rc == 0, (cid, out, err)
    with ThreadPoolExecutor(max_workers=12) as pool:
        for out, rc, err in pool.map(delete, attachments):
            assert rc == 0, (out, err)
    assert_as_before(node, before)


# --- GC ----------------------------------------------------------------------------------------------------------

def gc_conf(node: Node, network: str, valid: list[str]) -> dict[str, Any]:
    return conf(node, network, cniVersion="1.1.0",
                **{"cni.dev/valid-attachments": [{"containerID": cid, "ifname": "eth0"} for cid in valid]})


def test_gc_removes_what_the_runtime_no_longer_has(node: Node) -> None:
    before = tables(node), records(node)
    for cid, net, address in (("a", "n1", "10.88.0.5/16"), ("b", "n1", "10.88.0.6/16"),
                              ("c", "n1", "fd00:88::7/64"), ("d", "n2", "10.89.0.5/16")):
        fw_ok(node, "ADD", conf(node, net, prev=prev_of(address, bridge=f"br-{net}"), ingressPolicy="same-bridge"),
              cid)
    fw_ok(node, "GC", gc_conf(node, "n1", ["a"]), "")
    assert records(node) == ["n1/a/eth0.json", "n2/d/eth0.json"]
    assert sorted(accepted(node, 4)) == ["10.88.0.5", "10.89.0.5"]  # not 10.88.0.6
    assert accepted(node, 6) == []  # c was the only IPv6 attachment
    if node.backend == "iptables":
        assert own_lines(node, 6) == []  # nothing at all in the IPv6 filter table
    fw_ok(node, "GC", gc_conf(node, "n1", []), "")
    assert records(node) == ["n2/d/eth0.json"]
    assert not isolates(node, "br-n1") and isolates(node, "br-n2")
    fw_ok(node, "GC", gc_conf(node, "n2", []), "")
    assert_as_before(node, before)
    out, rc, _ = fw(node, "GC", conf(node, "n2", cniVersion="1.1.0"), "")
    assert rc == 1 and out is not None and out["code"] == 7  # no list of valid attachments: nothing is guessed


# --- the example conflist through cnictl ------------------------------------------------------------------------

@pytest.fixture(params=BACKENDS)
def example_node(request: pytest.FixtureRequest) -> Iterator[Node]:
    with node_env("fw") as n:
        touch_tables(n)
        n.backend = request.param
        yield n


def write_example(node: Node) -> str:
    with open(os.path.join(REPO, "examples", "20-portmap.conflist")) as f:
        conflist: dict[str, Any] = json.load(f)
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "firewall"]
    for plugin in conflist["plugins"]:
        plugin["stateDir"] = node.state_dir
        plugin.pop("logFile", None)  # the example logs to /var/log; the tests leave the machine alone
        plugin.update(backend_options(plugin["type"], node.backend))
        if "ipam" in plugin:
            plugin["ipam"]["dataDir"] = node.data_dir
    with open(os.path.join(node.netconf_dir, "20-portmap.conflist"), "w") as f:
        json.dump(conflist, f)
    return str(conflist["name"])


def test_example_conflist_end_to_end_with_cnictl(example_node: Node) -> None:
    node = example_node
    network = write_example(node)
    ctr = node.container("c1")
    before = tables(node)
    result = json.loads(node.cnictl("add", network, ctr, "--publish", "8080:80/tcp").stdout)
    address = result["ips"][0]["address"].split("/")[0]
    assert accepted(node, 4) == [address]
    with server(ctr, "tcp", 80, tag="ctr"):
        assert request(node.external, "tcp", f"{EXTERNAL_NET}.1", 8080) == f"ctr {EXTERNAL_NET}.2"
    if node.backend == "iptables":
        node.exec("iptables-legacy", "-P", "FORWARD", "DROP")  # from now on only the firewall's rules let it out
    # (On nftables an accept ends a packet's walk through our table only: no table's accept can open a
    # drop policy of another, so there the container's way out is shown with the table in place.)
    with server(node.external, "tcp", 9100, tag="ext"):
        assert request(ctr, "tcp", f"{EXTERNAL_NET}.2", 9100) == f"ext {EXTERNAL_NET}.1"
    node.cnictl("check", network, ctr)
    if node.backend == "iptables":
        node.exec("iptables-legacy", "-D", "CNI-FORWARD", "-s", f"{address}/32", "-j", "ACCEPT")
        missing = f"expected rule [-s {address}/32 -j ACCEPT] not found"
    else:
        node.exec("nft", "delete", "element", "inet", "cni_firewall", "containers_ipv4", f"{{ {address} }}")
        missing = f"expected element {address} not found in set containers_ipv4"
    failed = node.cnictl("check", network, ctr, check=False)
    assert failed.returncode != 0 and missing in (failed.stdout + failed.stderr).decode()
    node.cnictl("del", network, ctr)
    node.cnictl("del", network, ctr)  # again: nothing left to do, still fine
    node.exec("iptables-legacy", "-P", "FORWARD", "ACCEPT")
    assert tables(node) == before
    assert records(node) == []


def test_example_conflist_gc_through_cnictl(example_node: Node) -> None:
    node = example_node
    network = write_example(node)
    c1, c2 = node.container("c1"), node.container("c2")
    before = tables(node)
    node.cnictl("add", network, c1)
    node.cnictl("add", network, c2)
    assert len(records(node)) == 2
    node.cnictl("gc", network)  # nothing named valid: every cached attachment goes
    assert records(node) == []
    assert own_lines(node) == [] and firewall_table(node) == ""
    assert tables(node) == before
