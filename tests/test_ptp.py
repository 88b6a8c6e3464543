"""ptp + host-local as real executables in a node namespace, with real traffic: containers reach each other,
the node and an external host only through the node's routing; DEL is exact (namespace gone, crashes)."""
from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cni import faults, types
from tests.netenv import EXTERNAL_NET, REPO, Node, node_env, ns_exec, request, server
from tests.test_resilience_common import NO_HELPER, assert_same, container_links, run_plugin, tree

pytestmark = pytest.mark.root

NETWORK = "ptpnet"
SUBNET = "10.70.0.0/24"


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("pt") as n:
        yield n


def ptp_conf(node: Node, version: str = "1.0.0", ranges: list[list[dict[str, str]]] | None = None,
             **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": version, "name": NETWORK, "type": "ptp", "ipMasq": True, "stateDir": node.state_dir,
        "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": ranges or [[{"subnet": SUBNET}]],
                 "routes": [{"dst": "0.0.0.0/0"}]},
    }
    conf.update(extra)
    return conf


def add(node: Node, conf: dict[str, Any], ctr: str, **kw: Any) -> dict[str, Any]:
    out, rc, err = node.run_plugin("ptp", "ADD", conf, ctr, **kw)
    assert rc == 0, (out, err)
    assert out is not None
    return out


def delete(node: Node, conf: dict[str, Any], ctr: str, **kw: Any) -> str:
    out, rc, err = node.run_plugin("ptp", "DEL", conf, ctr, **kw)
    assert rc == 0 and out is None, (out, err)
    return err


def node_state(node: Node, *containers: str) -> dict[str, Any]:
    """Everything a ptp attachment could leave behind on the node (and in its containers)."""
    return {"links": node.links(), "v4": node.save(4), "v6": node.save(6),
            "routes4": node.exec("ip", "route").stdout.decode(),
            "routes6": node.exec("ip", "-6", "route").stdout.decode(),
            "addresses": node.exec("ip", "-br", "addr").stdout.decode(),
            "nft": node.exec("nft", "list", "ruleset").stdout.decode(),
            "reservations": node.reservations(NETWORK), "state": tree(node.state_dir),
            "containers": {ns: container_links(ns) for ns in containers}}


def warm(node: Node, conf: dict[str, Any] | None = None) -> None:
    """One ADD and DEL, so the baseline holds what stays for good (ip_forward, the record store's directory)."""
    c0 = node.container("c0")
    add(node, conf or ptp_conf(node), c0)
    delete(node, conf or ptp_conf(node), c0)
    node.namespaces.remove(c0)


def address(result: dict[str, Any], n: int = 0) -> str:
    return result["ips"][n]["address"].split("/")[0]


# --- behaviour ---------------------------------------------------------------------------------------

def test_containers_reach_each_other_the_node_and_the_outside_through_the_node(node: Node) -> None:
    conf = ptp_conf(node)
    c1, c2, c3 = node.container("c1"), node.container("c2"), node.container("c3")
    r1, r2, _ = add(node, conf, c1), add(node, conf, c2), add(node, conf, c3)
    ip1, ip2 = address(r1), address(r2)
    assert (ip1, ip2) == ("10.70.0.2", "10.70.0.3")
    types.validate_result(r1, "1.0.0")
    host, ctr = r1["interfaces"]
    assert host["name"].startswith("veth") and "sandbox" not in host and len(host["mac"]) == 17
    assert ctr == {"name": "eth0", "mac": ctr["mac"], "sandbox": f"/run/netns/{c1}"}
    assert r1["ips"] == [{"address": "10.70.0.2/24", "gateway": "10.70.0.1", "interface": 1}]
    assert r1["routes"] == [{"dst": "0.0.0.0/0"}]
    # The reference's layout: the gateway is link-scoped, the subnet and the default go through it.
    routes = ns_exec(c1, "ip", "route").stdout.decode()
    assert "10.70.0.1 dev eth0 scope link src 10.70.0.2" in routes
    assert "10.70.0.0/24 via 10.70.0.1 dev eth0 src 10.70.0.2" in routes
    assert "default via 10.70.0.1 dev eth0" in routes
    host_addrs = node.exec("ip", "-br", "addr", "show", host["name"]).stdout.decode()
    assert "10.70.0.1/32" in host_addrs
    assert f"10.70.0.2 dev {host['name']} scope link" in node.exec("ip", "route").stdout.decode()
    assert node.exec("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == b"1"
    with server(c2, "tcp", 7000, tag="c2"):
        assert request(c1, "tcp", ip2, 7000) == f"c2 {ip1}"  # routed by the node, not masqueraded
        assert request(node.ns, "tcp", ip2, 7000) == "c2 10.70.0.1"
    with server(node.ns, "tcp", 7001, tag="node"):
        assert request(c1, "tcp", "10.70.0.1", 7001) == f"node {ip1}"
    with server(node.external, "tcp", 7002, tag="ext"):
        assert request(c1, "tcp", f"{EXTERNAL_NET}.2", 7002) == f"ext {EXTERNAL_NET}.1"  # ipMasq
        assert request(c2, "tcp", f"{EXTERNAL_NET}.2", 7002) == f"ext {EXTERNAL_NET}.1"


def test_without_ipmasq_the_outside_sees_the_container_address(node: Node) -> None:
    c1 = node.container("c1")
    add(node, ptp_conf(node, ipMasq=False), c1)
    assert "MASQUERADE" not in node.save(4)
    with server(node.external, "tcp", 7003, tag="ext"):  # it routes 10.70/24 back through the node
        assert request(c1, "tcp", f"{EXTERNAL_NET}.2", 7003) == "ext 10.70.0.2"


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_ipmasq_backends(node: Node, backend: str) -> None:
    conf = ptp_conf(node, ipMasqBackend=backend, ranges=[[{"subnet": SUBNET}], [{"subnet": "fd00:70::/64"}]])
    conf["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    warm(node, conf)
    before = node_state(node)
    c1, c2 = node.container("c1"), node.container("c2")
    result = add(node, conf, c1)
    add(node, conf, c2)
    nft = node.exec("nft", "list", "ruleset").stdout.decode()
    assert ("cni_plugins_masquerade" in nft) == (backend == "nftables")
    assert ("MASQUERADE" in node.save(4) + node.save(6)) == (backend == "iptables")
    with server(node.external, "tcp", 7004, tag="ext"):
        assert request(c1, "tcp", f"{EXTERNAL_NET}.2", 7004) == f"ext {EXTERNAL_NET}.1"
    with server(node.external, "tcp", 7005, family=6, tag="ext"):
        assert request(c1, "tcp", "2001:db8:51::2", 7005, timeout=5) == "ext 2001:db8:51::1"
    _, rc, err = node.run_plugin("ptp", "CHECK", dict(conf, prevResult=result), c1)
    assert rc == 0, err
    delete(node, conf, c1)
    node.namespaces.remove(c2)
    delete(node, {k: v for k, v in conf.items() if k != "ipMasqBackend"}, c2)  # the record knows the backend
    assert_same(before, node_state(node))


def test_dual_stack(node: Node) -> None:
    conf = ptp_conf(node, ranges=[[{"subnet": SUBNET}], [{"subnet": "fd00:70::/64"}]])
    conf["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    c1, c2 = node.container("c1"), node.container("c2")
    r1, _ = add(node, conf, c1), add(node, conf, c2)
    assert [ip["address"] for ip in r1["ips"]] == ["10.70.0.2/24", "fd00:70::2/64"]
    assert r1["ips"][1]["gateway"] == "fd00:70::1"
    host = r1["interfaces"][0]["name"]
    assert "fd00:70::1/128" in node.exec("ip", "-br", "addr", "show", host).stdout.decode()
    assert "fd00:70::1 dev eth0" in ns_exec(c1, "ip", "-6", "route").stdout.decode()
    with server(c2, "tcp", 7200, family=6, tag="c2"):
        assert request(c1, "tcp", "fd00:70::3", 7200, timeout=5) == "c2 fd00:70::2"
    with server(node.external, "tcp", 7201, family=6, tag="ext"):
        assert request(c1, "tcp", "2001:db8:51::2", 7201, timeout=5) == "ext 2001:db8:51::1"
    _, rc, err = node.run_plugin("ptp", "CHECK", dict(conf, prevResult=r1), c1)
    assert rc == 0, err
    for ctr in (c1, c2):
        delete(node, conf, ctr)
    assert "CNI-" not in node.save(6) and "CNI-" not in node.save(4)
    assert node.reservations(NETWORK) == []


def test_mtu_and_dns(node: Node) -> None:
    dns = {"nameservers": ["10.70.0.53"], "search": ["example.org"]}
    c1 = node.container("c1")
    result = add(node, ptp_conf(node, mtu=1400, dns=dns), c1)
    assert result["dns"] == dns
    assert json.loads(ns_exec(c1, "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"] == 1400
    host = result["interfaces"][0]["name"]
    assert json.loads(node.exec("ip", "-j", "link", "show", host).stdout)[0]["mtu"] == 1400


def test_del_leaves_the_node_as_it_was_and_is_idempotent(node: Node) -> None:
    conf = ptp_conf(node)
    warm(node)
    c1 = node.container("c1")
    before = node_state(node, c1)
    add(node, conf, c1)
    assert node_state(node, c1) != before
    delete(node, conf, c1)
    assert_same(before, node_state(node, c1))
    delete(node, conf, c1)  # again: still fine
    delete(node, {k: v for k, v in conf.items() if k != "ipam"} | {"ipam": {}}, c1)  # a config without IPAM too


def test_del_with_the_namespace_gone_or_empty_leaks_nothing(node: Node) -> None:
    conf = ptp_conf(node)
    warm(node)
    before = node_state(node)
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, conf, c1)
    add(node, conf, c2)
    assert node.save(4).count("-j MASQUERADE") == 2
    node.namespaces.remove(c1)
    node.namespaces.remove(c2)
    delete(node, conf, c1)
    delete(node, conf, c2, env_extra={"CNI_NETNS": ""})
    assert_same(before, node_state(node))


def test_check_against_prev_result(node: Node) -> None:
    conf = ptp_conf(node)
    c1 = node.container("c1")
    result = add(node, conf, c1)
    check_conf = dict(conf, prevResult=result)
    out, rc, err = node.run_plugin("ptp", "CHECK", check_conf, c1)
    assert rc == 0 and out is None, (out, err)
    out, rc, _ = node.run_plugin("ptp", "CHECK", conf, c1)
    assert rc == 1 and out is not None and (out["code"], out["msg"]) == (7, "Required prevResult missing")
    host = result["interfaces"][0]["name"]
    node.exec("ip", "route", "del", "10.70.0.2/32", "dev", host)
    out, rc, _ = node.run_plugin("ptp", "CHECK", check_conf, c1)
    assert rc == 1 and out is not None and out["msg"] == f"no route to 10.70.0.2 through host veth {host}"
    node.exec("ip", "route", "add", "10.70.0.2/32", "dev", host)
    ns_exec(c1, "ip", "route", "del", "default")
    out, rc, _ = node.run_plugin("ptp", "CHECK", check_conf, c1)
    assert rc == 1 and out is not None and out["msg"] == "Failed to match route 0.0.0.0/0 in the container"
    ns_exec(c1, "ip", "addr", "flush", "dev", "eth0")
    out, rc, _ = node.run_plugin("ptp", "CHECK", check_conf, c1)
    assert rc == 1 and out is not None and out["msg"] == "Failed to match addr 10.70.0.2/24 on interface eth0"
    ns_exec(c1, "ip", "link", "del", "eth0")
    out, rc, _ = node.run_plugin("ptp", "CHECK", check_conf, c1)
    assert rc == 1 and out is not None and out["msg"] == "Interface name eth0 not found"


def test_check_notices_a_missing_masquerade_chain(node: Node) -> None:
    conf = ptp_conf(node)
    c1 = node.container("c1")
    result = add(node, conf, c1)
    chain = next(line.split()[0][1:] for line in node.save(4).splitlines() if line.startswith(":CNI-"))
    node.exec("iptables-legacy", "-t", "nat", "-F", chain)
    out, rc, _ = node.run_plugin("ptp", "CHECK", dict(conf, prevResult=result), c1)
    assert rc == 1 and out is not None and out["msg"].startswith("ipMasq: ")


# --- the version matrix through cnictl and the example conflist --------------------------------------

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def write_conflist(node: Node, version: str) -> str:
    with open(os.path.join(REPO, "examples", "ptp-portmap.conflist")) as f:
        conflist: dict[str, Any] = json.load(f)
    assert [p["type"] for p in conflist["plugins"]] == ["ptp", "portmap"]
    conflist["cniVersion"] = version
    conflist["name"] = f"p{version.replace('.', '')}"
    for plugin in conflist["plugins"]:
        plugin["stateDir"] = node.state_dir
        if "ipam" in plugin:
            plugin["ipam"]["dataDir"] = node.data_dir
            plugin["ipam"]["ranges"] = [[{"subnet": f"10.{80 + VERSIONS.index(version)}.0.0/24"}]]
    for name in os.listdir(node.netconf_dir):
        os.unlink(os.path.join(node.netconf_dir, name))
    with open(os.path.join(node.netconf_dir, "ptp.conflist"), "w") as f:
        json.dump(conflist, f)
    return conflist["name"]


@pytest.fixture(scope="module")
def shared_node() -> Iterator[Node]:
    with node_env("pv") as n:
        yield n


@pytest.mark.parametrize("version", VERSIONS)
def test_conflist_add_check_del_at_every_version(shared_node: Node, version: str) -> None:
    node = shared_node
    network = write_conflist(node, version)
    ctr = node.container(f"v{VERSIONS.index(version)}")
    port = 8200 + VERSIONS.index(version)
    result = json.loads(node.cnictl("add", network, ctr, "--publish", f"{port}:80/tcp").stdout)
    assert result["cniVersion"] == version
    types.validate_result(result, version)
    assert result["interfaces"][1]["sandbox"] == f"/run/netns/{ctr}"
    with server(ctr, "tcp", 80, tag=version):
        assert request(node.external, "tcp", f"{EXTERNAL_NET}.1", port) == f"{version} {EXTERNAL_NET}.2"
    with server(node.external, "tcp", 7400, tag="ext"):
        assert request(ctr, "tcp", f"{EXTERNAL_NET}.2", 7400) == f"ext {EXTERNAL_NET}.1"
    if version >= "0.4.0":
        node.cnictl("check", network, ctr)
    node.cnictl("del", network, ctr)
    assert "CNI-" not in node.save(4) and node.reservations(network) == []
    assert [link for link in node.links() if link.startswith("veth")] == []


# --- bad input: an error object, the right code, nothing left behind ----------------------------------

def expect_error(node: Node, conf: dict[str, Any], ctr: str, code: int, msg_part: str, **kw: Any) -> None:
    before = node_state(node, ctr)
    out, rc, err = node.run_plugin("ptp", "ADD", conf, ctr, **kw)
    assert rc == 1, (out, err)
    assert out is not None and out["code"] == code, (out, err)
    assert msg_part in out["msg"] + out.get("details", ""), out
    assert "Traceback" not in json.dumps(out) + err
    assert_same(before, node_state(node, ctr))


BAD_INPUTS: dict[str, tuple[dict[str, Any], str, int, str]] = {
    "mtu-not-a-number": ({"mtu": "big"}, "", 7, "invalid ptp config: mtu: expected an integer from 0 to 65535 "
                                                "(got 'big')"),
    "mtu-out-of-range": ({"mtu": 70000}, "", 7, "mtu"),
    "ipmasq-not-a-bool": ({"ipMasq": "yes"}, "", 7, "ipMasq: expected true or false"),
    "ipmasq-backend-unknown": ({"ipMasqBackend": "pf"}, "", 7,
                               "ipMasqBackend: expected \"iptables\" or \"nftables\" (got 'pf')"),
    "dns-not-an-object": ({"dns": ["10.0.0.53"]}, "", 7, "dns: expected an object"),
    "no-ipam": ({"ipam": {}}, "", 7, "ptp needs an IPAM plugin"),
    "ipam-not-found": ({"ipam": {"type": "no-such-ipam"}}, "", 7, 'failed to find plugin "no-such-ipam"'),
    "subnet-host-bits": ({"ranges": [[{"subnet": "10.70.0.5/24"}]]}, "", 7, "host bits set"),
    "unknown-cni-args": ({}, "FOO=bar", 4, "unknown args"),
    "requested-ip-outside-range": ({}, "IP=10.99.0.9", 7, "10.99.0.9"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_leaves_nothing_behind(node: Node, case: str) -> None:
    overrides, cni_args, code, part = BAD_INPUTS[case]
    overrides = dict(overrides)
    warm(node)
    c1 = node.container("c1")
    ranges = overrides.pop("ranges", None)
    expect_error(node, ptp_conf(node, ranges=ranges, **overrides), c1, code, part, cni_args=cni_args)


def test_existing_interface_name_is_refused(node: Node) -> None:
    warm(node)
    c1 = node.container("c1")
    ns_exec(c1, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    expect_error(node, ptp_conf(node), c1, 4, "container veth name provided (eth0) already exists")


def test_missing_netns_is_unknown_container(node: Node) -> None:
    warm(node)
    before = node_state(node)
    out, rc, _ = node.run_plugin("ptp", "ADD", ptp_conf(node), "nonexistent-netns-x")
    assert rc == 1 and out is not None and out["code"] == 3
    assert_same(before, node_state(node))


def test_exhausted_range_undoes_the_veth(node: Node) -> None:
    conf = ptp_conf(node, ranges=[[{"subnet": "10.77.0.0/30"}]])  # one usable address: .2
    warm(node, conf)
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, conf, c1)
    expect_error(node, conf, c2, 11, "no IP addresses available")
    assert container_links(c2) == ["lo"]


# --- concurrency and crashes --------------------------------------------------------------------------

def test_twenty_parallel_adds_then_dels(node: Node) -> None:
    conf = ptp_conf(node, ranges=[[{"subnet": "10.71.0.0/24"}]])
    warm(node, conf)
    ctrs = [node.container(f"p{i}") for i in range(20)]
    before = node_state(node, *ctrs)

    def run(command: str, ctr: str) -> tuple[Any, int, str]:
        return run_plugin(node, "ptp", command, conf, ctr)

    with ThreadPoolExecutor(max_workers=20) as pool:
        added = list(pool.map(lambda c: run("ADD", c), ctrs))
    assert all(rc == 0 for _, rc, _ in added), [(out, err[-500:]) for out, rc, err in added if rc]
    ips = {address(out) for out, _, _ in added}
    assert len(ips) == 20
    assert node.save(4).count("-j MASQUERADE") == 20
    # Every container reaches its neighbour through the node.
    with server(ctrs[0], "tcp", 7500, tag="p0"):
        for ctr, (out, _, _) in list(zip(ctrs, added))[1:4]:
            assert request(ctr, "tcp", address(added[0][0]), 7500) == f"p0 {address(out)}"
    with ThreadPoolExecutor(max_workers=20) as pool:
        deleted = list(pool.map(lambda c: run("DEL", c), ctrs))
    assert all(rc == 0 and out is None for out, rc, _ in deleted), [err[-500:] for _, rc, err in deleted if rc]
    assert_same(before, node_state(node, *ctrs))


def test_twenty_concurrent_lifecycles(node: Node) -> None:
    """ADD, traffic to the node, DEL, twenty containers at once: the node ends as it began."""
    conf = ptp_conf(node, ranges=[[{"subnet": "10.72.0.0/24"}]])
    warm(node, conf)
    ctrs = [node.container(f"l{i}") for i in range(20)]
    before = node_state(node, *ctrs)

    def lifecycle(ctr: str) -> str:
        out, rc, err = run_plugin(node, "ptp", "ADD", conf, ctr)
        if rc != 0:
            return f"ADD {rc}: {out} {err[-300:]}"
        answer = request(ctr, "tcp", "10.72.0.1", 7600, timeout=5)
        if answer != f"node {address(out)}":
            return f"traffic: {answer}"
        out, rc, err = run_plugin(node, "ptp", "DEL", conf, ctr)
        if rc != 0:
            return f"DEL {rc}: {out} {err[-300:]}"
        return "ok"

    with server(node.ns, "tcp", 7600, tag="node"), ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(lifecycle, ctrs))
    assert outcomes == ["ok"] * 20, outcomes
    assert_same(before, node_state(node, *ctrs))


ADD_POINTS = [p for p in faults.POINTS if p.startswith("ptp.add.")]


@pytest.mark.parametrize("point", ADD_POINTS)
def test_killed_add_then_del_restores_the_node(node: Node, point: str) -> None:
    conf = ptp_conf(node)
    warm(node)
    c1 = node.container("c1")
    before = node_state(node, c1)
    out, rc, err = run_plugin(node, "ptp", "ADD", conf, c1, env_extra={faults.ENV: point})
    assert rc == -signal.SIGKILL and out is None, (rc, out, err)
    _, rc, err = run_plugin(node, "ptp", "DEL", conf, c1)  # bare: no prevResult, as after a lost result
    assert rc == 0, err
    assert_same(before, node_state(node, c1))
    result = add(node, conf, c1, env_extra=NO_HELPER)  # and the container can be added again
    assert node.reservations(NETWORK) == [address(result)]


@pytest.mark.parametrize("point", ADD_POINTS)
def test_killed_add_with_the_namespace_gone_then_del(node: Node, point: str) -> None:
    conf = ptp_conf(node)
    warm(node)
    before = node_state(node)
    c1 = node.container("c1")
    _, rc, _ = run_plugin(node, "ptp", "ADD", conf, c1, env_extra={faults.ENV: point})
    assert rc == -signal.SIGKILL
    node.namespaces.remove(c1)
    _, rc, err = run_plugin(node, "ptp", "DEL", conf, c1)
    assert rc == 0, err
    assert_same(before, node_state(node))


def test_killed_del_then_del_again(node: Node) -> None:
    conf = ptp_conf(node)
    warm(node)
    c1 = node.container("c1")
    before = node_state(node, c1)
    add(node, conf, c1)
    _, rc, _ = run_plugin(node, "ptp", "DEL", conf, c1, env_extra={faults.ENV: "ptp.del.after-ipam"})
    assert rc == -signal.SIGKILL
    _, rc, err = run_plugin(node, "ptp", "DEL", conf, c1)
    assert rc == 0, err
    assert_same(before, node_state(node, c1))


def test_gc_removes_what_forgotten_attachments_own(node: Node) -> None:
    conf = ptp_conf(node, "1.1.0")
    warm(node, conf)
    before = node_state(node)
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, conf, c1)
    add(node, conf, c2)
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": c1, "ifname": "eth0"}]})
    out, rc, err = node.run_plugin("ptp", "GC", gc, "")
    assert rc == 0 and out is None, (out, err)
    assert container_links(c2) == ["lo"] and container_links(c1) == ["eth0", "lo"]
    assert node.save(4).count("-j MASQUERADE") == 1 and len(node.reservations(NETWORK)) == 1
    delete(node, conf, c1)
    assert_same(before, node_state(node))


@pytest.mark.parametrize("point", ADD_POINTS)
def test_killed_add_then_add_again_without_del(node: Node, point: str) -> None:
    """A runtime retrying the ADD that died: it succeeds, or fails with an error object; DEL then cleans up."""
    conf = ptp_conf(node)
    warm(node)
    c1 = node.container("c1")
    before = node_state(node, c1)
    _, rc, _ = run_plugin(node, "ptp", "ADD", conf, c1, env_extra={faults.ENV: point})
    assert rc == -signal.SIGKILL
    out, rc, err = run_plugin(node, "ptp", "ADD", conf, c1)
    if point == "ptp.add.after-record":  # nothing existed yet: the retry just works
        assert rc == 0, (out, err)
    else:  # the dead ADD's eth0 is still there
        assert rc == 1 and out is not None and out["code"] == 4, (out, err)
    _, rc, err = run_plugin(node, "ptp", "DEL", conf, c1)
    assert rc == 0, err
    assert_same(before, node_state(node, c1))


def test_cnictl_show_reports_a_ptp_attachment_and_its_drift(node: Node) -> None:
    network = write_conflist(node, "1.0.0")
    c1 = node.container("c1")
    node.cnictl("add", network, c1, env_extra=NO_HELPER)
    proc = node.cnictl("show", "--json", env_extra=NO_HELPER)
    view = json.loads(proc.stdout)["attachments"][0]
    assert view["status"] == "ok" and "ptp" in view["plugins"], view
    assert view["hostLink"].startswith("veth") and view["addresses"] == ["10.83.0.2/24"]
    assert view["chains"] and view["chains"][0].startswith("nat/CNI-")
    node.exec("ip", "route", "del", "10.83.0.2/32", "dev", view["hostLink"])
    proc = node.cnictl("show", "--json", check=False, env_extra=NO_HELPER)
    assert proc.returncode == 3
    problems = json.loads(proc.stdout)["attachments"][0]["problems"]
    assert f"ptp: no route to 10.83.0.2 through host veth {view['hostLink']}" in problems, problems
    node.cnictl("del", network, c1, env_extra=NO_HELPER)


def test_through_the_resident_helper(node: Node) -> None:
    """The same ADD, CHECK, traffic and DEL with the executables handing the call to a (private) helper."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.netenv import wait_for  # noqa: PLC0415

    sock = os.path.join(node.work, "helper.sock")
    helper = subprocess.Popen([sys.executable, "-m", "cni.helper", "--socket", sock], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.exists(sock), timeout=20), "helper did not start"
        env = {"PYCNI_HELPER_SOCKET": sock}
        conf = ptp_conf(node)
        warm(node)
        c1, c2 = node.container("c1"), node.container("c2")
        before = node_state(node, c1, c2)
        r1, r2 = add(node, conf, c1, env_extra=env), add(node, conf, c2, env_extra=env)
        _, rc, err = node.run_plugin("ptp", "CHECK", dict(conf, prevResult=r1), c1, env_extra=env)
        assert rc == 0, err
        with server(c2, "tcp", 7700, tag="c2"):
            assert request(c1, "tcp", address(r2), 7700) == f"c2 {address(r1)}"
        for ctr in (c1, c2):
            delete(node, conf, ctr, env_extra=env)
        assert_same(before, node_state(node, c1, c2))
        # Proof that the helper ran it: a worker killed half-way is reported as code 11, not a SIGKILL.
        out, rc, _ = node.run_plugin("ptp", "ADD", conf, c1, env_extra=dict(env, **{faults.ENV: "ptp.add.after-ipam"}))
        assert rc == 1 and out is not None and out["code"] == 11, out
        delete(node, conf, c1, env_extra=env)
        assert_same(before, node_state(node, c1, c2))
    finally:
        helper.kill()
        helper.wait()


def test_operator_log(node: Node) -> None:
    """logFile/logLevel: one line per call, what ADD created at debug, and a DEL that finds nothing says so."""
    log_file = os.path.join(node.work, "pycni.log")
    conf = ptp_conf(node, logFile=log_file, logLevel="debug")
    c1 = node.container("c1")
    add(node, conf, c1)
    delete(node, conf, c1)
    delete(node, conf, c1)
    with open(log_file) as f:
        lines = [json.loads(line) for line in f]
    ptp_lines = [line for line in lines if line.get("plugin") == "ptp"]
    events = [line.get("event") for line in ptp_lines]
    assert "links created" in events and "addresses set" in events and "nothing to remove" in events, lines
    assert [line["command"] for line in ptp_lines if line.get("outcome") == "ok"] == ["ADD", "DEL", "DEL"]
