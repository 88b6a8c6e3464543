"""firewall under crashes, races, reused addresses, corrupt records and GC; and the example conflist
end to end through cnictl."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cni import faults
from tests.netenv import EXTERNAL_NET, REPO, Node, node_env, request, server
from tests.test_firewall import fw, fw_conf, fw_ok, own_lines, records, tables, touch_tables

pytestmark = pytest.mark.root

FIREWALL_ADD_POINTS = [p for p in faults.POINTS if p.startswith("firewall.add.")] + \
                      ["chains.commit.before", "chains.commit.after"]
FIREWALL_DEL_POINTS = [p for p in faults.POINTS if p.startswith("firewall.del.")]


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("fw", external=False) as n:
        touch_tables(n)
        n.exec("iptables-legacy", "-P", "FORWARD", "DROP")
        yield n


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
    conf = fw_conf(node, prev=prev, ingressPolicy="same-bridge")
    killed(node, "ADD", conf, "k1", point)
    if then == "retry":  # the runtime runs the chain again: no duplicates, and CHECK is happy
        fw_ok(node, "ADD", conf, "k1")
        assert duplicates(own_lines(node)) == duplicates(own_lines(node, 6)) == []
        out, rc, err = fw(node, "CHECK", conf, "k1")
        assert rc == 0, (out, err)
    fw_ok(node, "DEL", fw_conf(node), "k1")  # bare: the runtime lost everything
    assert (tables(node), records(node)) == before


@pytest.mark.parametrize("point", FIREWALL_DEL_POINTS + ["chains.commit.after"])
def test_killed_del_then_del_again_restores(node: Node, point: str) -> None:
    before = tables(node), records(node)
    fw_ok(node, "ADD", fw_conf(node, prev=prev_of("10.88.0.5/16", "fd00:88::5/64")), "k1")
    killed(node, "DEL", fw_conf(node), "k1", point)
    fw_ok(node, "DEL", fw_conf(node), "k1")
    assert (tables(node), records(node)) == before


def test_failed_add_leaves_no_partial_rules(node: Node) -> None:
    """The IPv6 commit fails after the IPv4 one went in: the IPv4 rules are taken out again, and the record."""
    before = tables(node), records(node)
    # An administrator's jump back into CNI-FORWARD: our admin jump would close a loop, which the kernel
    # refuses at commit time.
    node.exec("ip6tables-legacy", "-N", "CNI-ADMIN")
    node.exec("ip6tables-legacy", "-N", "CNI-FORWARD")
    node.exec("ip6tables-legacy", "-A", "CNI-ADMIN", "-j", "CNI-FORWARD")
    v6_before = node.save(6)
    out, rc, err = fw(node, "ADD", fw_conf(node, prev=prev_of("10.88.0.5/16", "fd00:88::5/64")), "k1")
    assert rc == 1 and out is not None and out["code"] in (11, 999), (out, err)
    assert node.save(4) == before[0][0] and node.save(6) == v6_before
    assert records(node) == before[1]


# --- addresses handed out again --------------------------------------------------------------------------

def test_del_of_a_stale_attachment_keeps_the_new_owners_rules(node: Node) -> None:
    before = tables(node), records(node)
    prev = prev_of("10.88.0.5/16")
    fw_ok(node, "ADD", fw_conf(node, prev=prev), "old")
    fw_ok(node, "ADD", fw_conf(node, prev=prev), "new")  # 10.88.0.5 handed out again; "old" was never deleted
    fw_ok(node, "DEL", fw_conf(node), "old")
    out, rc, err = fw(node, "CHECK", fw_conf(node, prev=prev), "new")
    assert rc == 0, (out, err)
    fw_ok(node, "DEL", fw_conf(node, prev=prev), "old")  # repeated, now with the runtime's cached result
    out, rc, err = fw(node, "CHECK", fw_conf(node, prev=prev), "new")
    assert rc == 0, (out, err)
    fw_ok(node, "DEL", fw_conf(node), "new")
    assert (tables(node), records(node)) == before


# --- corrupt records -----------------------------------------------------------------------------------------

def _record_path(node: Node, cid: str, network: str = "fwnet") -> str:
    return os.path.join(node.state_dir, "firewall", network, cid, "eth0.json")


def test_corrupt_record_is_reported_and_del_falls_back_to_prev_result(node: Node) -> None:
    before = tables(node), records(node)
    prev = prev_of("10.88.0.5/16", "fd00:88::5/64")
    fw_ok(node, "ADD", fw_conf(node, prev=prev), "c1")
    with open(_record_path(node, "c1"), "wb") as f:
        f.write(b'{"format": 1, "families": [')
    out, rc, err = fw(node, "DEL", fw_conf(node, prev=prev), "c1")
    assert rc == 0 and out is None, (out, err)
    assert "corrupt ownership record" in err
    assert (tables(node), records(node)) == before


def test_a_corrupt_record_elsewhere_keeps_shared_isolation_rules(node: Node) -> None:
    """Another attachment's record on the same bridge cannot be read: its bridge rules must stay."""
    conf = fw_conf(node, ingressPolicy="same-bridge")
    fw_ok(node, "ADD", dict(conf, prevResult=prev_of("10.88.0.5/16", bridge="br-c")), "c1")
    fw_ok(node, "ADD", dict(conf, prevResult=prev_of("10.88.0.6/16", bridge="br-c")), "c2")
    with open(_record_path(node, "c2"), "wb") as f:
        f.write(b"garbage")
    fw_ok(node, "DEL", conf, "c1")
    assert any("-o br-c" in line for line in own_lines(node))
    assert "-A CNI-FORWARD -s 10.88.0.6/32 -j ACCEPT" in own_lines(node)


def test_re_add_over_a_corrupt_record_rewrites_it(node: Node) -> None:
    before = tables(node), records(node)
    prev = prev_of("10.88.0.5/16")
    fw_ok(node, "ADD", fw_conf(node, prev=prev), "c1")
    with open(_record_path(node, "c1"), "wb") as f:
        f.write(b"")
    out, rc, err = fw(node, "ADD", fw_conf(node, prev=prev), "c1")
    assert rc == 0 and "corrupt ownership record" in err, (out, err)
    assert duplicates(own_lines(node)) == []
    fw_ok(node, "DEL", fw_conf(node), "c1")  # the rewritten record is enough again
    assert (tables(node), records(node)) == before


# --- races -------------------------------------------------------------------------------------------------------

def test_parallel_adds_and_dels_share_the_chains_correctly(node: Node) -> None:
    before = tables(node), records(node)
    attachments = []
    for i in range(12):
        policy = ("open", "same-bridge", "isolated")[i % 3]
        bridge = f"br-{i % 2}"
        prev = prev_of(f"10.88.{i % 2}.{10 + i}/16", f"fd00:88::{10 + i:x}/64", bridge=bridge)
        attachments.append((f"p{i}", fw_conf(node, f"net{i % 2}", prev=prev, ingressPolicy=policy)))

    def add(item: tuple[str, dict[str, Any]]) -> tuple[Any, int, str]:
        return fw(node, "ADD", item[1], item[0])

    def delete(item: tuple[str, dict[str, Any]]) -> tuple[Any, int, str]:
        conf = {k: v for k, v in item[1].items() if k != "prevResult"}
        return fw(node, "DEL", conf, item[0])

    with ThreadPoolExecutor(max_workers=12) as pool:
        for out, rc, err in pool.map(add, attachments):
            assert rc == 0, (out, err)
    for family in (4, 6):
        lines = own_lines(node, family)
        assert duplicates(lines) == []
        assert sum("-s " in line and "-j ACCEPT" in line for line in lines) == 12
    for cid, conf in attachments:
        out, rc, err = fw(node, "CHECK", conf, cid)
        assert rc == 0, (cid, out, err)
    # Half go while the other half come back: shared chains must survive the crossing.
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(delete, item) for item in attachments[:6]]
        futures += [pool.submit(add, item) for item in attachments[6:]]
        for future in futures:
            out, rc, err = future.result()
            assert rc == 0, (out, err)
    for cid, conf in attachments[6:]:
        out, rc, err = fw(node, "CHECK", conf, cid)
        assert rc == 0, (cid, out, err)
    with ThreadPoolExecutor(max_workers=12) as pool:
        for out, rc, err in pool.map(delete, attachments):
            assert rc == 0, (out, err)
    assert (tables(node), records(node)) == before


# --- GC ----------------------------------------------------------------------------------------------------------

def gc_conf(node: Node, network: str, valid: list[str]) -> dict[str, Any]:
    return fw_conf(node, network, cniVersion="1.1.0",
                   **{"cni.dev/valid-attachments": [{"containerID": cid, "ifname": "eth0"} for cid in valid]})


def test_gc_removes_what_the_runtime_no_longer_has(node: Node) -> None:
    before = tables(node), records(node)
    for cid, net, address in (("a", "n1", "10.88.0.5/16"), ("b", "n1", "10.88.0.6/16"),
                              ("c", "n1", "fd00:88::7/64"), ("d", "n2", "10.89.0.5/16")):
        fw_ok(node, "ADD", fw_conf(node, net, prev=prev_of(address, bridge=f"br-{net}"), ingressPolicy="same-bridge"),
              cid)
    fw_ok(node, "GC", gc_conf(node, "n1", ["a"]), "")
    assert records(node) == ["n1/a/eth0.json", "n2/d/eth0.json"]
    lines = own_lines(node)
    assert "-A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT" in lines and "-A CNI-FORWARD -s 10.89.0.5/32 -j ACCEPT" in lines
    assert not any("10.88.0.6" in line for line in lines)
    assert own_lines(node, 6) == []  # c was the only IPv6 attachment
    fw_ok(node, "GC", gc_conf(node, "n1", []), "")
    assert records(node) == ["n2/d/eth0.json"]
    assert not any("br-n1" in line for line in own_lines(node)) and any("br-n2" in line for line in own_lines(node))
    fw_ok(node, "GC", gc_conf(node, "n2", []), "")
    assert (tables(node), records(node)) == before
    out, rc, _ = fw(node, "GC", fw_conf(node, "n2", cniVersion="1.1.0"), "")
    assert rc == 1 and out is not None and out["code"] == 7  # no list of valid attachments: nothing is guessed


# --- the example conflist through cnictl ------------------------------------------------------------------------

@pytest.fixture
def example_node() -> Iterator[Node]:
    with node_env("fw") as n:
        touch_tables(n)
        yield n


def write_example(node: Node) -> str:
    with open(os.path.join(REPO, "examples", "20-portmap.conflist")) as f:
        conflist: dict[str, Any] = json.load(f)
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "firewall"]
    for plugin in conflist["plugins"]:
        plugin["stateDir"] = node.state_dir
        plugin.pop("logFile", None)  # the example logs to /var/log; the tests leave the machine alone
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
    assert f"-A CNI-FORWARD -s {address}/32 -j ACCEPT" in own_lines(node)
    with server(ctr, "tcp", 80, tag="ctr"):
        assert request(node.external, "tcp", f"{EXTERNAL_NET}.1", 8080) == f"ctr {EXTERNAL_NET}.2"
    node.exec("iptables-legacy", "-P", "FORWARD", "DROP")  # from now on only the firewall's rules let it out
    with server(node.external, "tcp", 9100, tag="ext"):
        assert request(ctr, "tcp", f"{EXTERNAL_NET}.2", 9100) == f"ext {EXTERNAL_NET}.1"
    node.cnictl("check", network, ctr)
    node.exec("iptables-legacy", "-D", "CNI-FORWARD", "-s", f"{address}/32", "-j", "ACCEPT")
    failed = node.cnictl("check", network, ctr, check=False)
    assert failed.returncode != 0 and f"expected rule [-s {address}/32 -j ACCEPT] not found" in \
        (failed.stdout + failed.stderr).decode()
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
    assert own_lines(node) == []
    assert tables(node) == before
