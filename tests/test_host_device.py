"""host-device as a real executable in a node namespace: one end of a veth pair plays the node's NIC (its
peer sits in the external host), is moved into a container and back, with real traffic both times."""
from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cni import faults, types
from tests.netenv import Node, node_env, ns_exec, request, server
from tests.test_resilience_common import NO_HELPER, assert_same, container_links, run_plugin, tree, well_formed_error

pytestmark = pytest.mark.root

NETWORK = "hdnet"
NIC_ADDRESSES = ["192.0.2.10/24", "2001:db8:2::10/64"]
PEER = "192.0.2.20"  # the peer end's address, in the external host


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("hd") as n:
        add_nic(n, "hd0")
        yield n


def add_nic(node: Node, name: str, mtu: int = 1400, addresses: list[str] | None = None, peer: str = PEER) -> str:
    """A veth end ``name`` on the node (up, ``mtu``, addresses) whose peer is in the external host; its MAC."""
    peer_name = f"p-{name}"
    node.exec("ip", "link", "add", name, "mtu", str(mtu), "type", "veth", "peer", "name", peer_name,
              "netns", node.external)
    for cidr in NIC_ADDRESSES if addresses is None else addresses:
        node.exec("ip", "addr", "add", cidr, "dev", name, *(["nodad"] if ":" in cidr else []))
    node.exec("ip", "link", "set", name, "up")
    ns_exec(node.external, "ip", "addr", "add", f"{peer}/24", "dev", peer_name)
    ns_exec(node.external, "ip", "addr", "add", "2001:db8:2::20/64", "dev", peer_name, "nodad")
    ns_exec(node.external, "ip", "link", "set", peer_name, "up")
    return link_info(node.ns, name)["address"]


def link_info(ns: str, name: str) -> dict[str, Any]:
    return json.loads(ns_exec(ns, "ip", "-j", "addr", "show", "dev", name).stdout)[0]


def nic_state(ns: str, name: str) -> dict[str, Any]:
    """Name, MAC, MTU, up and global addresses of a link: what host-device must keep and restore."""
    info = link_info(ns, name)
    return {"name": info["ifname"], "mac": info["address"], "mtu": info["mtu"], "up": "UP" in info["flags"],
            "addresses": sorted(f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"]
                                if a.get("scope") == "global")}


def hd_conf(node: Node, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": version, "name": NETWORK, "type": "host-device", "device": "hd0",
                            "stateDir": node.state_dir}
    conf.update(extra)
    return conf


def with_ipam(node: Node, conf: dict[str, Any], subnet: str = "10.60.0.0/24") -> dict[str, Any]:
    return dict(conf, ipam={"type": "host-local", "dataDir": node.data_dir, "ranges": [[{"subnet": subnet}]],
                            "routes": [{"dst": "203.0.113.0/24"}]})


def add(node: Node, conf: dict[str, Any], ctr: str, **kw: Any) -> dict[str, Any]:
    out, rc, err = node.run_plugin("host-device", "ADD", conf, ctr, **kw)
    assert rc == 0, (out, err)
    assert out is not None
    return out


def delete(node: Node, conf: dict[str, Any], ctr: str, **kw: Any) -> str:
    out, rc, err = node.run_plugin("host-device", "DEL", conf, ctr, **kw)
    assert rc == 0 and out is None, (out, err)
    return err


def node_state(node: Node, *containers: str) -> dict[str, Any]:
    """The node's links as host-device must leave them (carrier and link-local addresses come and go with
    the peer, so they are left out), its IPAM reservations and records, the containers' links."""
    links = [link["ifname"] for link in json.loads(node.exec("ip", "-j", "link").stdout)]
    return {"links": {name: nic_state(node.ns, name) for name in links},
            "reservations": node.reservations(NETWORK), "state": tree(node.state_dir),
            "containers": {ns: container_links(ns) for ns in containers}}


def warm(node: Node, conf: dict[str, Any] | None = None) -> None:
    """One ADD and DEL, so the baseline holds the record store's (and IPAM's) directories."""
    c0 = node.container("c0")
    add(node, conf or hd_conf(node), c0)
    delete(node, conf or hd_conf(node), c0)
    node.namespaces.remove(c0)


def records(node: Node) -> list[str]:
    return [path for path in tree(os.path.join(node.state_dir, "host-device")) if path.endswith(".json")]


# --- behaviour ---------------------------------------------------------------------------------------

def test_moves_the_device_in_with_its_mac_mtu_and_addresses_and_back(node: Node) -> None:
    original = nic_state(node.ns, "hd0")
    c1 = node.container("c1")
    result = add(node, hd_conf(node), c1)
    types.validate_result(result, "1.0.0")
    assert result["interfaces"] == [{"name": "eth0", "mac": original["mac"], "sandbox": f"/run/netns/{c1}"}]
    assert result["ips"] == [{"address": a, "interface": 0} for a in NIC_ADDRESSES]
    assert "hd0" not in node.links()
    inside = nic_state(c1, "eth0")
    assert inside == dict(original, name="eth0")
    with server(node.external, "tcp", 7000, tag="ext"):
        assert request(c1, "tcp", PEER, 7000) == "ext 192.0.2.10"
        assert request(node.ns, "tcp", PEER, 7000, timeout=1).startswith(("ERROR", "TIMEOUT"))
    ns_exec(c1, "ip", "link", "set", "eth0", "mtu", "1300")  # changed in the container: DEL restores it
    ns_exec(c1, "ip", "addr", "add", "198.18.0.1/24", "dev", "eth0")
    delete(node, hd_conf(node), c1)
    assert nic_state(node.ns, "hd0") == original
    assert container_links(c1) == ["lo"]
    with server(node.external, "tcp", 7001, tag="ext"):
        assert request(node.ns, "tcp", PEER, 7001) == "ext 192.0.2.10"
    delete(node, hd_conf(node), c1)  # again: nothing to do


def test_a_macvlan_of_the_node_moves_in_and_back(node: Node) -> None:
    node.exec("ip", "link", "add", "mv0", "link", "ext0", "type", "macvlan", "mode", "bridge")
    node.exec("ip", "addr", "add", "198.51.100.50/24", "dev", "mv0")
    node.exec("ip", "link", "set", "mv0", "up")
    original = nic_state(node.ns, "mv0")
    c1 = node.container("c1")
    add(node, hd_conf(node, device="mv0"), c1)
    with server(node.external, "tcp", 7010, tag="ext"):
        assert request(c1, "tcp", "198.51.100.2", 7010) == "ext 198.51.100.50"
    delete(node, hd_conf(node, device="mv0"), c1)
    assert nic_state(node.ns, "mv0") == original


def test_a_device_that_was_down_comes_back_down(node: Node) -> None:
    node.exec("ip", "link", "set", "hd0", "down")
    original = nic_state(node.ns, "hd0")
    c1 = node.container("c1")
    add(node, hd_conf(node), c1)
    assert nic_state(c1, "eth0")["up"]  # as the reference: up in the container
    delete(node, hd_conf(node), c1)
    assert nic_state(node.ns, "hd0") == original


@pytest.mark.parametrize("selector", ["hwaddr", "kernelpath"])
def test_other_selectors(node: Node, selector: str) -> None:
    mac = link_info(node.ns, "hd0")["address"]
    conf = {k: v for k, v in hd_conf(node).items() if k != "device"}
    if selector == "hwaddr":
        conf["hwaddr"] = mac.upper()
    else:  # a virtual link's sysfs directory (a physical one's is its device's, with the link under net/)
        conf["kernelpath"] = "/sys/devices/virtual/net/hd0"
    c1 = node.container("c1")
    result = add(node, conf, c1)
    assert result["interfaces"][0]["mac"] == mac
    delete(node, conf, c1)
    assert "hd0" in node.links()


def test_with_ipam_the_container_gets_the_ipam_addresses(node: Node) -> None:
    original = nic_state(node.ns, "hd0")
    ns_exec(node.external, "ip", "addr", "add", "10.60.0.1/24", "dev", "p-hd0")
    conf = with_ipam(node, hd_conf(node))
    c1 = node.container("c1")
    result = add(node, conf, c1)
    assert result["ips"] == [{"address": "10.60.0.2/24", "gateway": "10.60.0.1", "interface": 0}]
    assert result["routes"] == [{"dst": "203.0.113.0/24"}]
    inside = nic_state(c1, "eth0")
    assert inside["addresses"] == ["10.60.0.2/24"] and inside["mac"] == original["mac"]
    assert "203.0.113.0/24 via 10.60.0.1 dev eth0" in ns_exec(c1, "ip", "route").stdout.decode()
    with server(node.external, "tcp", 7002, tag="ext"):
        assert request(c1, "tcp", "10.60.0.1", 7002) == "ext 10.60.0.2"
    _, rc, err = node.run_plugin("host-device", "CHECK", dict(conf, prevResult=result), c1)
    assert rc == 0, err
    assert node.reservations(NETWORK) == ["10.60.0.2"]
    delete(node, conf, c1)
    assert nic_state(node.ns, "hd0") == original
    assert node.reservations(NETWORK) == []


def test_check_against_prev_result(node: Node) -> None:
    conf = hd_conf(node)
    c1 = node.container("c1")
    result = add(node, conf, c1)
    check_conf = dict(conf, prevResult=result)
    out, rc, err = node.run_plugin("host-device", "CHECK", check_conf, c1)
    assert rc == 0 and out is None, (out, err)
    out, rc, _ = node.run_plugin("host-device", "CHECK", conf, c1)
    assert rc == 1 and out is not None and (out["code"], out["msg"]) == (7, "Required prevResult missing")
    ns_exec(c1, "ip", "addr", "del", "192.0.2.10/24", "dev", "eth0")
    out, rc, _ = node.run_plugin("host-device", "CHECK", check_conf, c1)
    assert rc == 1 and out is not None and out["msg"] == "Failed to match addr 192.0.2.10/24 on interface eth0"
    ns_exec(c1, "ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
    ns_exec(c1, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:42")
    out, rc, _ = node.run_plugin("host-device", "CHECK", check_conf, c1)
    assert rc == 1 and out is not None and "doesn't match container Mac: 02:00:00:00:00:42" in out["msg"]


# --- a device in use, a namespace gone ----------------------------------------------------------------

def test_a_device_in_another_container_is_refused(node: Node) -> None:
    warm(node)
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, hd_conf(node), c1)
    expect_error(node, hd_conf(node), c2, 7, 'failed to find host device: no link with device "hd0"')


def test_a_device_back_on_the_node_but_held_by_a_record_is_refused(node: Node) -> None:
    warm(node)
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, hd_conf(node), c1)
    # As after c1's namespace died with a physical device in it: the device is on the node again, c1's
    # DEL has not run.
    ns_exec(c1, "ip", "link", "set", "eth0", "netns", node.ns)
    node.exec("ip", "link", "set", "eth0", "name", "hd0")
    expect_error(node, hd_conf(node), c2, 7, f"device hd0 is in use by container {c1} (network {NETWORK}, "
                                             "interface eth0)")
    by_mac = {k: v for k, v in hd_conf(node).items() if k != "device"}
    expect_error(node, dict(by_mac, hwaddr=link_info(node.ns, "hd0")["address"]), c2, 7, "is in use by container")


def test_del_with_the_namespace_gone_the_virtual_device_died_with_it(node: Node) -> None:
    conf = with_ipam(node, hd_conf(node))
    c1 = node.container("c1")
    add(node, conf, c1)
    node.namespaces.remove(c1)
    err = delete(node, conf, c1)
    assert "device hd0" in err and "its namespace is gone, and a virtual device dies with it" in err
    assert "hd0" not in node.links()
    assert node.reservations(NETWORK) == [] and records(node) == []


def test_del_finds_a_returned_device_by_its_mac_and_restores_it(node: Node) -> None:
    """A physical device returns to the node by itself when its namespace dies, under another name and
    without its addresses: moved back by hand here, as a veth would otherwise die."""
    original = nic_state(node.ns, "hd0")
    c1 = node.container("c1")
    add(node, hd_conf(node), c1)
    ns_exec(c1, "ip", "link", "set", "eth0", "mtu", "1280")
    ns_exec(c1, "ip", "link", "set", "eth0", "netns", node.ns)
    node.exec("ip", "link", "set", "eth0", "name", "dev7")
    node.namespaces.remove(c1)
    delete(node, hd_conf(node), c1)
    assert nic_state(node.ns, "hd0") == original
    assert "dev7" not in node.links()


def test_del_with_an_empty_netns_restores_a_returned_device(node: Node) -> None:
    original = nic_state(node.ns, "hd0")
    c1 = node.container("c1")
    add(node, hd_conf(node), c1)
    ns_exec(c1, "ip", "link", "set", "eth0", "netns", node.ns)
    delete(node, hd_conf(node), c1, env_extra={"CNI_NETNS": ""})
    assert nic_state(node.ns, "hd0") == original


# --- the version matrix through cnictl -----------------------------------------------------------------

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.fixture(scope="module")
def shared_node() -> Iterator[Node]:
    with node_env("hv") as n:
        add_nic(n, "hd0")
        yield n


@pytest.mark.parametrize("version", VERSIONS)
def test_conflist_add_check_del_at_every_version(shared_node: Node, version: str) -> None:
    node = shared_node
    original = nic_state(node.ns, "hd0")
    network = f"h{version.replace('.', '')}"
    conflist = {"cniVersion": version, "name": network, "plugins": [
        {"type": "host-device", "device": "hd0", "stateDir": node.state_dir,
         "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": [[{"subnet": "10.61.0.0/24"}]]}}]}
    for name in os.listdir(node.netconf_dir):
        os.unlink(os.path.join(node.netconf_dir, name))
    with open(os.path.join(node.netconf_dir, "hd.conflist"), "w") as f:
        json.dump(conflist, f)
    ctr = node.container(f"v{VERSIONS.index(version)}")
    result = json.loads(node.cnictl("add", network, ctr).stdout)
    assert result["cniVersion"] == version
    types.validate_result(result, version)
    assert result["interfaces"][0]["mac"] == original["mac"] and result["ips"][0]["address"] == "10.61.0.2/24"
    if version >= "0.4.0":
        node.cnictl("check", network, ctr)
    node.cnictl("del", network, ctr)
    assert nic_state(node.ns, "hd0") == original and node.reservations(network) == []


# --- bad input: an error object, the right code, nothing changed ---------------------------------------

def expect_error(node: Node, conf: dict[str, Any], ctr: str, code: int, msg_part: str, **kw: Any) -> None:
    before = node_state(node, ctr)
    out, rc, err = node.run_plugin("host-device", "ADD", conf, ctr, **kw)
    assert rc == 1, (out, err)
    assert out is not None and out["code"] == code, (out, err)
    assert msg_part in out["msg"] + out.get("details", ""), out
    assert "Traceback" not in json.dumps(out) + err
    assert_same(before, node_state(node, ctr))


BAD_INPUTS: dict[str, tuple[dict[str, Any], str, int, str]] = {
    "no-selector": ({"device": None}, "", 7, 'specify either "device", "hwaddr", "kernelpath" or "pciBusID"'),
    "device-not-a-string": ({"device": 5}, "", 7, "invalid host-device config: device: expected a string (got 5)"),
    "device-name-too-long": ({"device": "d" * 16}, "", 7, "interface name is too long"),
    "no-such-device": ({"device": "nope0"}, "", 7, 'failed to find host device: no link with device "nope0"'),
    "loopback": ({"device": "lo"}, "", 7, "lo is the loopback device"),
    "bad-hwaddr": ({"device": None, "hwaddr": "02:00:zz:00:00:01"}, "", 7, "failed to parse MAC address"),
    "unknown-hwaddr": ({"device": None, "hwaddr": "02:00:00:00:00:01"}, "", 7, "hwaddr \"02:00:00:00:00:01\""),
    "kernelpath-outside-sys": ({"device": None, "kernelpath": "/etc/passwd"}, "", 7, "must be absolute and begin "
                                                                                    "with /sys/devices/"),
    "kernelpath-climbing": ({"device": None, "kernelpath": "/sys/devices/../../etc"}, "", 7, "/sys/devices/"),
    "bad-pci-address": ({"device": None, "pciBusID": "../../x"}, "", 7, "invalid PCI address"),
    "unknown-pci-address": ({"device": None, "pciBusID": "0000:7f:1f.7"}, "", 7, 'pciBusID "0000:7f:1f.7"'),
    "device-id-overrides-pci": ({"device": None, "pciBusID": "0000:7f:1f.7",
                                 "runtimeConfig": {"deviceID": "0000:7e:00.1"}}, "", 7, 'pciBusID "0000:7e:00.1"'),
    "ipam-not-an-object": ({"ipam": "host-local"}, "", 7, "ipam: expected an object"),
    "unknown-cni-args": ({}, "FOO=bar", 4, "unknown args"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_changes_nothing(node: Node, case: str) -> None:
    overrides, cni_args, code, part = BAD_INPUTS[case]
    warm(node)
    conf = {k: v for k, v in dict(hd_conf(node), **overrides).items() if v is not None}
    expect_error(node, conf, node.container("c1"), code, part, cni_args=cni_args)


def test_existing_interface_name_is_refused(node: Node) -> None:
    warm(node)
    c1 = node.container("c1")
    ns_exec(c1, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    expect_error(node, hd_conf(node), c1, 4, "container interface name provided (eth0) already exists")


def test_missing_netns_is_unknown_container(node: Node) -> None:
    warm(node)
    before = node_state(node)
    out, rc, _ = node.run_plugin("host-device", "ADD", hd_conf(node), "nonexistent-netns-x")
    assert rc == 1 and out is not None and out["code"] == 3
    assert_same(before, node_state(node))


def test_exhausted_ipam_puts_the_device_back(node: Node) -> None:
    add_nic(node, "hd1", addresses=["192.0.2.11/24"], peer="192.0.2.21")
    conf = with_ipam(node, hd_conf(node), subnet="10.62.0.0/30")  # one usable address: .2
    warm(node)
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, conf, c1)
    expect_error(node, dict(conf, device="hd1"), c2, 11, "no IP addresses available")
    assert container_links(c2) == ["lo"]


# --- concurrency and crashes --------------------------------------------------------------------------

def test_one_device_claimed_by_five_containers_at_once_goes_to_exactly_one(node: Node) -> None:
    warm(node)
    ctrs = [node.container(f"r{i}") for i in range(5)]
    with ThreadPoolExecutor(max_workers=5) as pool:
        outcomes = list(pool.map(lambda c: run_plugin(node, "host-device", "ADD", hd_conf(node), c), ctrs))
    winners = [c for c, (_, rc, _) in zip(ctrs, outcomes) if rc == 0]
    assert len(winners) == 1, outcomes
    for out, rc, err in outcomes:
        assert rc == 0 or (rc == 1 and well_formed_error(out, (7, 999))), (out, err)
    held = records(node)
    assert len(held) == 1 and winners[0] in held[0]
    for ctr in ctrs:
        delete(node, hd_conf(node), ctr)
    assert nic_state(node.ns, "hd0")["addresses"] == sorted(NIC_ADDRESSES)


def test_six_devices_in_and_out_in_parallel(node: Node) -> None:
    names = [f"hp{i}" for i in range(6)]
    for i, name in enumerate(names):
        add_nic(node, name, addresses=[f"192.0.2.{100 + i}/24"], peer=f"192.0.2.{200 + i}")
    warm(node)
    before = {name: nic_state(node.ns, name) for name in names}
    ctrs = [node.container(f"q{i}") for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        added = list(pool.map(lambda i: run_plugin(node, "host-device", "ADD", hd_conf(node, device=names[i]),
                                                   ctrs[i]), range(6)))
        assert all(rc == 0 for _, rc, _ in added), added
        deleted = list(pool.map(lambda i: run_plugin(node, "host-device", "DEL", hd_conf(node, device=names[i]),
                                                     ctrs[i]), range(6)))
    assert all(rc == 0 for _, rc, _ in deleted), deleted
    assert {name: nic_state(node.ns, name) for name in names} == before


ADD_POINTS = [p for p in faults.POINTS if p.startswith("hostdevice.add.")]


# Without IPAM an ADD never passes hostdevice.add.after-ipam.
CRASH_CASES = [(point, ipam) for point in ADD_POINTS for ipam in (False, True) if ipam or "ipam" not in point]


@pytest.mark.parametrize("point,ipam", CRASH_CASES, ids=[f"{p}-{'ipam' if i else 'no-ipam'}" for p, i in CRASH_CASES])
def test_killed_add_then_del_restores_the_node(node: Node, point: str, ipam: bool) -> None:
    conf = with_ipam(node, hd_conf(node)) if ipam else hd_conf(node)
    warm(node, conf)
    c1 = node.container("c1")
    before = node_state(node, c1)
    original = nic_state(node.ns, "hd0")
    out, rc, err = run_plugin(node, "host-device", "ADD", conf, c1, env_extra={faults.ENV: point})
    assert rc == -signal.SIGKILL and out is None, (rc, out, err)
    _, rc, err = run_plugin(node, "host-device", "DEL", conf, c1)
    assert rc == 0, err
    assert_same(before, node_state(node, c1))
    assert nic_state(node.ns, "hd0") == original
    add(node, conf, c1, env_extra=NO_HELPER)  # and the device can be added again


def test_killed_del_then_del_again(node: Node) -> None:
    conf = with_ipam(node, hd_conf(node))
    warm(node, conf)
    c1 = node.container("c1")
    before = node_state(node, c1)
    add(node, conf, c1)
    _, rc, _ = run_plugin(node, "host-device", "DEL", conf, c1, env_extra={faults.ENV: "hostdevice.del.after-move"})
    assert rc == -signal.SIGKILL
    assert len(node.reservations(NETWORK)) == 1
    _, rc, err = run_plugin(node, "host-device", "DEL", conf, c1)
    assert rc == 0, err
    assert_same(before, node_state(node, c1))


def test_gc_gives_back_the_devices_of_forgotten_attachments(node: Node) -> None:
    add_nic(node, "hd1", addresses=["192.0.2.11/24"], peer="192.0.2.21")
    originals = {name: nic_state(node.ns, name) for name in ("hd0", "hd1")}
    c1, c2 = node.container("c1"), node.container("c2")
    add(node, hd_conf(node, "1.1.0"), c1)
    add(node, hd_conf(node, "1.1.0", device="hd1"), c2)
    gc = dict(hd_conf(node, "1.1.0"), **{"cni.dev/valid-attachments": [{"containerID": c1, "ifname": "eth0"}]})
    out, rc, err = node.run_plugin("host-device", "GC", gc, "")
    assert rc == 0 and out is None, (out, err)
    assert nic_state(node.ns, "hd1") == originals["hd1"] and container_links(c2) == ["lo"]
    assert container_links(c1) == ["eth0", "lo"] and len(records(node)) == 1
    delete(node, hd_conf(node), c1)
    assert nic_state(node.ns, "hd0") == originals["hd0"]


@pytest.mark.parametrize("point", ADD_POINTS)
def test_killed_add_then_add_again_without_del(node: Node, point: str) -> None:
    """A runtime retrying the ADD that died: it succeeds, or fails with an error object; DEL then puts the
    device back as it was."""
    conf = with_ipam(node, hd_conf(node))
    warm(node, conf)
    c1 = node.container("c1")
    before = node_state(node, c1)
    _, rc, _ = run_plugin(node, "host-device", "ADD", conf, c1, env_extra={faults.ENV: point})
    assert rc == -signal.SIGKILL
    out, rc, err = run_plugin(node, "host-device", "ADD", conf, c1)
    if point == "hostdevice.add.after-record":  # nothing had changed yet: the retry just works
        assert rc == 0, (out, err)
    else:  # the dead ADD's eth0 (the device) is in the container already
        assert rc == 1 and out is not None and out["code"] == 4, (out, err)
    _, rc, err = run_plugin(node, "host-device", "DEL", conf, c1)
    assert rc == 0, err
    assert_same(before, node_state(node, c1))


def test_cnictl_show_reports_where_the_device_is(node: Node) -> None:
    with open(os.path.join(node.netconf_dir, "hd.conflist"), "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [hd_conf(node)]}, f)
    c1 = node.container("c1")
    node.cnictl("add", NETWORK, c1, env_extra=NO_HELPER)
    view = json.loads(node.cnictl("show", "--json", env_extra=NO_HELPER).stdout)["attachments"][0]
    assert view["status"] == "ok" and view["plugins"] == ["host-device"], view
    ns_exec(c1, "ip", "addr", "del", "192.0.2.10/24", "dev", "eth0")
    proc = node.cnictl("show", "--json", check=False, env_extra=NO_HELPER)
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["attachments"][0]["problems"] == ["host-device: address 192.0.2.10/24 missing on eth0"]
    ns_exec(c1, "ip", "link", "set", "eth0", "netns", node.ns)
    proc = node.cnictl("show", "--json", check=False, env_extra=NO_HELPER)
    mac = link_info(node.ns, "eth0")["address"]
    assert json.loads(proc.stdout)["attachments"][0]["problems"] == [
        f"host-device: device hd0 ({mac}) is back on the node as eth0: DEL restores it"]
    node.cnictl("del", NETWORK, c1, env_extra=NO_HELPER)
    assert "hd0" in node.links()


def test_through_the_resident_helper(node: Node) -> None:
    """The same ADD, CHECK, traffic and DEL with the executable handing the call to a (private) helper."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.netenv import REPO, wait_for  # noqa: PLC0415

    sock = os.path.join(node.work, "helper.sock")
    helper = subprocess.Popen([sys.executable, "-m", "cni.helper", "--socket", sock], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.exists(sock), timeout=20), "helper did not start"
        env = {"PYCNI_HELPER_SOCKET": sock}
        original = nic_state(node.ns, "hd0")
        c1 = node.container("c1")
        conf = {k: v for k, v in hd_conf(node).items() if k != "device"} | {"kernelpath": "/sys/devices/virtual/net/hd0"}
        result = add(node, conf, c1, env_extra=env)  # kernelpath: the helper sees the caller's /sys
        _, rc, err = node.run_plugin("host-device", "CHECK", dict(conf, prevResult=result), c1, env_extra=env)
        assert rc == 0, err
        with server(node.external, "tcp", 7710, tag="ext"):
            assert request(c1, "tcp", PEER, 7710) == "ext 192.0.2.10"
        delete(node, conf, c1, env_extra=env)
        assert nic_state(node.ns, "hd0") == original
        # Proof that the helper ran it: a worker killed half-way is reported as code 11, not a SIGKILL.
        out, rc, _ = node.run_plugin("host-device", "ADD", conf, c1,
                                     env_extra=dict(env, **{faults.ENV: "hostdevice.add.after-move"}))
        assert rc == 1 and out is not None and out["code"] == 11, out
        delete(node, conf, c1, env_extra=env)
        assert nic_state(node.ns, "hd0") == original
    finally:
        helper.kill()
        helper.wait()


# --- pure config logic ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,valid", [("0000:00:19.0", True), ("00:19.0", True), ("0000:ab:1F.7", True),
                                        ("0000:00:19.8", False), ("0000:00:19", False), ("../../x", False),
                                        ("0000:00:19.0/..", False), ("000:00:19.0", False), ("", False)])
def test_pci_addresses(text: str, valid: bool) -> None:
    from hostdevice.config import is_pci_address  # noqa: PLC0415

    assert is_pci_address(text) is valid


def test_selector_precedence_and_device_id() -> None:
    from hostdevice import config  # noqa: PLC0415

    conf = config.load({"name": "n", "device": "eth1", "hwaddr": "AA-BB-CC-DD-EE-FF", "pciBusID": "0000:00:01.0",
                        "runtimeConfig": {"deviceID": "0000:00:02.0"}})
    assert conf.selector() == 'device "eth1"'  # device first, as the reference
    assert conf.hwaddr == "aa:bb:cc:dd:ee:ff" and conf.pciBusID == "0000:00:02.0"  # deviceID wins over pciBusID
    assert config.load({"name": "n", "pciBusID": "0000:00:01.0"}).selector() == 'pciBusID "0000:00:01.0"'


def test_del_of_another_boots_record_leaves_the_device_alone(node: Node) -> None:
    """A record written in another boot describes a device state of that boot: DEL drops it without
    moving or reconfiguring anything."""
    c1 = node.container("c1")
    add(node, hd_conf(node), c1)
    [path] = records(node)
    full = os.path.join(node.state_dir, "host-device", path)
    with open(full) as f:
        record = json.load(f)
    record["origin"] = dict(record.get("origin") or {}, bootID="00000000-0000-0000-0000-000000000000")
    with open(full, "w") as f:
        json.dump(record, f)
    err = delete(node, hd_conf(node), c1)
    assert "another boot's or namespace's; leaving the device alone" in err
    assert container_links(c1) == ["eth0", "lo"] and records(node) == []
