"""Records and hostPort claims that know the boot and the network namespace they describe.

A node that loses its tables and namespaces without DELs (a reboot with /var/lib kept, a node
namespace deleted) leaves records behind. They must not keep the next node's rules or claims alive:
a container that gets a dead container's address must be DELed exactly, one that asks for a dead
container's hostPort gets it, and GC collects the dead records without touching the tables.

The first tests are pure logic on temporary directories; the last one plays the whole story on real
node namespaces with the installed plugins.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from cni import records
from cni.gc import collectable
from cni.records import Attachment, RecordStore
from cnictl.cli import derive_container_id
from firewall import ownership
from firewall.ownership import Holdings
from portmap import claims
from portmap.config import PortMapping
from tests.netenv import EXTERNAL_NET, Node, _add_external_host, node_env, ns_exec, request, server
from tests.test_resilience_common import tree
from tests.test_resilience_support import NO_HELPER, full_chain, install_conflist

OTHER_BOOT = {"bootID": "00000000-0000-0000-0000-000000000000"}


@pytest.fixture
def root() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pycni-boot-") as path:
        yield path


def _rewrite_origin(store: RecordStore, att: Attachment, origin: dict[str, Any] | None) -> None:
    """Make a record look as if written elsewhere (or, with None, by a version without origins)."""
    path = store.path(att)
    with open(path) as f:
        data = json.load(f)
    if origin is None:
        data.pop(records.ORIGIN_KEY, None)
    else:
        data[records.ORIGIN_KEY] = origin
    with open(path, "w") as f:
        json.dump(data, f)


# --- pure logic --------------------------------------------------------------------------------

def test_a_record_names_this_boot_and_namespace(root: str) -> None:
    store, att = RecordStore(root, "firewall"), Attachment("net", "c1", "eth0")
    store.save(att, {"families": {}})
    origin = store.load(att)[records.ORIGIN_KEY]  # type: ignore[index]
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert origin["bootID"] == f.read().strip()
    st = os.stat("/proc/self/ns/net")
    assert origin["netns"] == f"{st.st_dev}:{st.st_ino}"
    assert isinstance(origin.get("netnsCookie"), int)
    assert records.origin_of(store.load(att) or {}) == "current"
    assert records.current_origin() is records.current_origin()  # read once per process


@pytest.mark.parametrize("origin, label, foreign", [
    (None, "unknown", False),  # written by an earlier version: trusted as before
    (OTHER_BOOT, "another boot", True),
    ("other-netns", "another network namespace", True),
    ("other-cookie", "another network namespace", True),  # an inode number reused within a boot
])
def test_origin_labels(root: str, origin: Any, label: str, foreign: bool) -> None:
    here = records.current_origin()
    if origin == "other-netns":
        origin = dict(here, netns="4:1")
    elif origin == "other-cookie":
        origin = dict(here, netnsCookie=here.get("netnsCookie", 0) + 1)
    store, att = RecordStore(root, "bridge"), Attachment("net", "c1", "eth0")
    store.save(att, {"ips": []})
    _rewrite_origin(store, att, origin)
    data = store.load(att) or {}
    assert records.origin_of(data) == label
    assert records.is_foreign(data) is foreign


def test_firewall_ignores_foreign_records_and_trusts_old_ones(root: str) -> None:
    store = RecordStore(root, ownership.OWNER)
    dead, old, live = (Attachment("net", cid, "eth0") for cid in ("dead", "old", "live"))
    for att, address in ((dead, "10.1.0.2"), (old, "10.1.0.3"), (live, "10.1.0.2")):
        ownership.save(store, att, {4: Holdings([address]), 6: Holdings()})
    _rewrite_origin(store, dead, OTHER_BOOT)
    _rewrite_origin(store, old, None)
    # The live container's DEL: only the old (unknown-origin) record still claims an address.
    assert ownership.claims(store, {live}, 4).addresses == ["10.1.0.3"]
    assert ownership.load(store, dead) == ownership.empty()  # holds nothing here
    assert ownership.load(store, old)[4].addresses == ["10.1.0.3"]  # type: ignore[index]


def test_gc_collects_foreign_records_even_when_listed(root: str) -> None:
    store = RecordStore(root, "portmap")
    dead, old, gone = (Attachment("net", cid, "eth0") for cid in ("dead", "old", "gone"))
    for att in (dead, old, gone):
        store.save(att, {"families": [4]})
    _rewrite_origin(store, dead, OTHER_BOOT)
    _rewrite_origin(store, old, None)
    valid = {("dead", "eth0"), ("old", "eth0")}
    assert sorted(collectable(store, "net", valid)) == [(dead, True), (gone, False)]


def _mapping(port: int) -> PortMapping:
    from portmap import config  # noqa: PLC0415

    conf = config.load({"cniVersion": "1.0.0", "name": "net", "runtimeConfig": {
        "portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}})
    return conf.mappings[0]


def test_a_foreign_claim_is_taken_over_an_old_one_is_not(root: str, capsys: pytest.CaptureFixture[str]) -> None:
    dead, old, new = (Attachment("net", cid, "eth0") for cid in ("dead", "old", "new"))
    claims_dir = os.path.join(root, claims.CLAIMS_DIR)
    held, _ = claims.claim(root, dead, [4], [_mapping(8080)])
    assert held == ["4-tcp-any-8080"]
    with open(os.path.join(claims_dir, "4-tcp-any-8080"), "w") as f:  # the dead node's claim
        f.write(f"net/dead/eth0\nboot={OTHER_BOOT['bootID']} netns=4:1 cookie=1\n")
    with open(os.path.join(claims_dir, "4-tcp-any-8081"), "w") as f:  # an earlier version's claim
        f.write("net/old/eth0")

    held, conflicts = claims.claim(root, new, [4], [_mapping(8080), _mapping(8081)])
    assert held == ["4-tcp-any-8080"] and len(conflicts) == 1 and "net/old/eth0" in conflicts[0]
    assert "hostPort conflict" in capsys.readouterr().err
    holders = claims.holders(root)
    assert holders["4-tcp-any-8080"] == ("net/new/eth0", records.current_origin())
    assert holders["4-tcp-any-8081"] == ("net/old/eth0", None)

    claims.release(root, dead, ["4-tcp-any-8080"], dict(OTHER_BOOT))  # the dead one's GC: not its claim now
    claims.release(root, new, ["4-tcp-any-8081"])  # not the new one's to release
    assert set(claims.holders(root)) == {"4-tcp-any-8080", "4-tcp-any-8081"}
    claims.release(root, old, ["4-tcp-any-8081"])  # unknown origin: released by name, as before
    claims.release(root, new, ["4-tcp-any-8080"])
    assert claims.holders(root) == {}


# --- the dead node, for real -------------------------------------------------------------------

NET = "bootnet"
SUBNET = "10.94.0.0/24"
NODE_V4 = f"{EXTERNAL_NET}.1"
A_IP, B_IP = "10.94.0.10", "10.94.0.11"
A_PORT, B_PORT = 8080, 8081
PLUGINS = ("bridge", "portmap", "firewall")


def _add(node: Node, ctr: str, port: int, ip: str) -> str:
    proc = node.cnictl("add", NET, ctr, "--publish", f"{port}:80/tcp", "--args", f"IP={ip}", env_extra=NO_HELPER)
    assert json.loads(proc.stdout)["ips"][0]["address"] == f"{ip}/24"
    return proc.stderr.decode(errors="replace")


def _cid(ctr: str) -> str:
    return derive_container_id(f"/run/netns/{ctr}")


def _recorded(node: Node) -> dict[str, list[str]]:
    """Container IDs with a record, per plugin."""
    return {plugin: sorted(att.container_id for att in RecordStore(node.state_dir, plugin).attachments(NET))
            for plugin in PLUGINS}


def _tables(node: Node) -> dict[str, str]:
    return {"v4": node.save(4), "v6": node.save(6)}


def _forward_rules(node: Node, address: str) -> list[str]:
    text = node.exec("iptables-legacy-save", "-t", "filter").stdout.decode()
    return [line for line in text.splitlines() if line.startswith("-A CNI-FORWARD") and f"{address}/32" in line]


def _restart_node(node: Node) -> None:
    """The node goes down without a single DEL: its namespace, its containers' and the external host's
    are destroyed; the state, IPAM and cache directories (outside every namespace) stay. Then a new node
    namespace comes up in its place."""
    for name in [node.external, *node.containers, node.ns]:
        node.namespaces.remove(name)
    node.containers.clear()
    node.ns = node.namespaces.add("node2")
    node.external = _add_external_host(node.namespaces, node.ns)


def _forget_dead_addresses(node: Node, conflist: dict[str, Any]) -> None:
    """The IPAM store lets the dead node's addresses go (a runtime's IPAM-level cleanup after the reboot),
    while the other plugins' records stay: host-local's GC, with nothing valid yet."""
    request = {"cniVersion": "1.1.0", "name": NET, "ipam": conflist["plugins"][0]["ipam"],
               "cni.dev/valid-attachments": []}
    out, code, err = node.run_plugin("host-local", "GC", request, "", ifname="", env_extra=NO_HELPER)
    assert code == 0, (out, err)
    assert node.reservations(NET) == []


def test_a_dead_node_keeps_no_rule_or_claim_alive_and_gc_collects_it() -> None:
    with node_env("rboot") as node:
        conflist = full_chain(node, NET, "bootbr0", SUBNET)
        install_conflist(node, conflist)
        a1, b1 = node.container("a1"), node.container("b1")
        _add(node, a1, A_PORT, A_IP)
        _add(node, b1, B_PORT, B_IP)
        dead = sorted([_cid(a1), _cid(b1)])
        assert _recorded(node) == {plugin: dead for plugin in PLUGINS}

        _restart_node(node)
        _forget_dead_addresses(node, conflist)

        # The new node runs containers through the same addresses and hostPorts.
        a2, b2 = node.container("a2"), node.container("b2")
        warnings = _add(node, b2, B_PORT, B_IP)
        with_b2 = _tables(node)
        warnings += _add(node, a2, A_PORT, A_IP)
        assert "hostPort conflict" not in warnings, warnings  # a dead holder yields its claim
        holders = claims.holders(node.state_dir)
        assert holders == {f"4-tcp-any-{A_PORT}": (f"{NET}/{_cid(a2)}/eth0", holders[f"4-tcp-any-{A_PORT}"][1]),
                           f"4-tcp-any-{B_PORT}": (f"{NET}/{_cid(b2)}/eth0", holders[f"4-tcp-any-{B_PORT}"][1])}
        assert all(origin and "netnsCookie" in origin for _, origin in holders.values())
        assert _forward_rules(node, A_IP) and _forward_rules(node, B_IP)
        with server(a2, "tcp", 80, tag="a2"), server(b2, "tcp", 80, tag="b2"):
            assert request(node.external, "tcp", NODE_V4, A_PORT).startswith("a2 ")
            assert request(node.external, "tcp", NODE_V4, B_PORT).startswith("b2 ")

        # show: the new containers are fine, the dead records are named as such (and are drift).
        proc = node.cnictl("show", "--json", check=False, env_extra=NO_HELPER)
        report = json.loads(proc.stdout)
        assert proc.returncode == 3
        origins = {a["containerID"]: a["origin"] for a in report["attachments"]}
        assert origins == {_cid(a2): "current", _cid(b2): "current", **{c: "another network namespace" for c in dead}}
        assert all(a["status"] == "ok" for a in report["attachments"] if a["containerID"] in (_cid(a2), _cid(b2)))

        # A DEL of a2 removes exactly its own rules (the dead a1 record claims the same address: no matter).
        node.cnictl("del", NET, a2, env_extra=NO_HELPER)
        assert _tables(node) == with_b2
        assert not _forward_rules(node, A_IP) and _forward_rules(node, B_IP)
        assert set(claims.holders(node.state_dir)) == {f"4-tcp-any-{B_PORT}"}

        # GC. The runtime forgot a1 but (wrongly) still lists it valid; b1 is in its cache, not valid.
        os.unlink(os.path.join(node.cache_dir, "results", f"{NET}-{_cid(a1)}-eth0"))
        valid = ["--valid", f"{_cid(b2)}/eth0", "--valid", f"{_cid(a1)}/eth0"]
        before_gc = {"tables": _tables(node), "links": node.links(), "cache": tree(node.cache_dir)}
        plan = node.cnictl("gc", NET, "--dry-run", *valid, env_extra=NO_HELPER).stdout.decode().splitlines()
        assert plan[0].startswith(f"DEL  attachment {_cid(b1)}/eth0: cached by the runtime, not valid")
        assert sorted(plan[1:]) == sorted(
            f"GC  {plugin} record of {_cid(a1)}/eth0: written in another network namespace; only the record goes, "
            "no table is touched" for plugin in PLUGINS)
        assert before_gc == {"tables": _tables(node), "links": node.links(), "cache": tree(node.cache_dir)}

        node.cnictl("gc", NET, *valid, env_extra=NO_HELPER)
        assert _recorded(node) == {plugin: [_cid(b2)] for plugin in PLUGINS}
        assert set(claims.holders(node.state_dir)) == {f"4-tcp-any-{B_PORT}"}
        assert _tables(node) == before_gc["tables"]  # dead records removed, no table touched
        with server(b2, "tcp", 80, tag="b2"):
            assert request(node.external, "tcp", NODE_V4, B_PORT).startswith("b2 ")
        proc = node.cnictl("show", env_extra=NO_HELPER)
        assert "DRIFT" not in proc.stdout.decode() and _cid(b2) in proc.stdout.decode()


def test_records_name_the_node_namespace_through_the_helper_too() -> None:
    """The resident helper runs in the machine's own namespace and forks a worker per call that joins the
    caller's: the origin is read in the worker, after it joined, never inherited from the helper."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.netenv import REPO, wait_for  # noqa: PLC0415

    with node_env("rbhelp", external=False) as node:
        sock, served = os.path.join(node.work, "helper.sock"), os.path.join(node.work, "served.log")
        helper = subprocess.Popen([sys.executable, "-m", "cni.helper", "--socket", sock], cwd=REPO,
                                  env=dict(os.environ, PYCNI_HELPER_RSS_LOG=served),  # a line per call served
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: os.path.exists(sock), timeout=20), "helper did not start"
            conf = {"cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "rbbr0", "stateDir": node.state_dir,
                    "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": [[{"subnet": SUBNET}]]}}
            ways = {"helper": {"PYCNI_HELPER_SOCKET": sock}, "helper again": {"PYCNI_HELPER_SOCKET": sock},
                    "direct": NO_HELPER}
            for way, env in ways.items():
                ctr = node.container(way.replace(" ", ""))
                _, code, err = node.run_plugin("bridge", "ADD", conf, ctr, env_extra=env)
                assert code == 0, err
        finally:
            helper.kill()
            helper.wait()
        with open(served) as f:
            assert [line.split()[:2] for line in f] == [["bridge", "ADD"]] * 2  # the helper did serve those two
        store = RecordStore(node.state_dir, "bridge")
        origins = [(store.load(att) or {})[records.ORIGIN_KEY] for att in store.attachments(NET)]
        st = os.stat(f"/run/netns/{node.ns}")
        assert len(origins) == 3 and all(origin == origins[0] for origin in origins), origins
        assert origins[0]["netns"] == f"{st.st_dev}:{st.st_ino}"
        assert origins[0] != records.current_origin()  # this test's own namespace is not the node's


def test_host_device_is_not_refused_for_a_record_of_another_boot() -> None:
    """host-device refuses a device another attachment's record holds (that DEL has yet to restore it);
    a record written in another boot holds nothing: the device is the new boot's."""
    from tests.test_host_device import add, add_nic, expect_error, hd_conf  # noqa: PLC0415

    with node_env("rbhd") as node:
        add_nic(node, "hd0")
        c1, c2 = node.container("c1"), node.container("c2")
        add(node, hd_conf(node), c1)
        ns_exec(c1, "ip", "link", "set", "eth0", "netns", node.ns)  # back on the node, c1's DEL not run
        node.exec("ip", "link", "set", "eth0", "name", "hd0")
        expect_error(node, hd_conf(node), c2, 7, "device hd0 is in use by container")
        store = RecordStore(node.state_dir, "host-device")
        [held] = list(store.attachments())
        _rewrite_origin(store, held, OTHER_BOOT)
        add(node, hd_conf(node), c2)
        assert ns_exec(c2, "ip", "link", "show", "eth0").returncode == 0
