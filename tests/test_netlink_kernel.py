"""netlink against the real kernel, in throw-away network namespaces (run as root).

Every namespace is named ``nlt-<random>`` and deleted afterwards, even on failure.
Results are cross-checked with iproute2's JSON output (``ip -j``, ``bridge -j``).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from netlink import netns, sysctl
from netlink.constants import AF_INET, AF_INET6, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE
from netlink.errors import NetlinkError
from netlink.rtnl import Netlink

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

NETNS_DIR = "/run/netns"
MakeNetns = Callable[[], str]


# ------------------------------------------------------------------ helpers


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def ip_json(ns: str, *args: str) -> list[dict]:
    """``ip -n NS -j ARGS`` parsed."""
    return json.loads(_run("ip", "-n", ns, "-j", *args) or "[]")


def ip_link(ns: str, name: str) -> dict:
    [link] = ip_json(ns, "-d", "link", "show", "dev", name)
    return link


def link_names(ns: str) -> set[str]:
    return {link["ifname"] for link in ip_json(ns, "link", "show")}


def in_netns(ns: str, *argv: str) -> str:
    """Run a command inside ``ns`` (``ip netns exec`` also remounts /sys for it)."""
    return _run("ip", "netns", "exec", ns, *argv).strip()


def thread_netns_id() -> tuple[int, int]:
    st = os.stat(netns.CURRENT_NETNS_PATH)
    return st.st_dev, st.st_ino


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# ----------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def thread_stays_in_its_netns() -> Iterator[None]:
    """Every test must leave the test process in the namespace it started in."""
    before = thread_netns_id()
    yield
    assert thread_netns_id() == before, "test left the thread in another network namespace"


@pytest.fixture
def make_netns() -> Iterator[MakeNetns]:
    """Factory of fresh namespaces, all deleted at teardown."""
    created: list[str] = []

    def make() -> str:
        name = f"nlt-{uuid.uuid4().hex[:10]}"
        _run("ip", "netns", "add", name)
        created.append(name)
        return name

    try:
        yield make
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def ns(make_netns: MakeNetns) -> str:
    return make_netns()


def open_fresh(ns: str) -> Netlink:
    """A socket in the new namespace ``ns``, checked to be there before anything is changed.

    A fresh netns holds only ``lo``; seeing more would mean the socket landed in the
    test process's namespace, where the tests must never create links.
    """
    sock = Netlink.open(f"{NETNS_DIR}/{ns}")
    names = [link.name for link in sock.links()]
    if names != ["lo"]:
        sock.close()
        pytest.fail(f"socket for {ns} is not in a fresh namespace (links: {names})")
    return sock


@pytest.fixture
def nl(ns: str) -> Iterator[Netlink]:
    with open_fresh(ns) as sock:
        yield sock


@pytest.fixture
def peer_ns(make_netns: MakeNetns) -> str:
    return make_netns()


@pytest.fixture
def peer_fd(peer_ns: str) -> Iterator[int]:
    fd = netns.netns_fd(f"{NETNS_DIR}/{peer_ns}")
    try:
        yield fd
    finally:
        os.close(fd)


# ------------------------------------------------------------------- netns


class TestNetns:
    def test_enter_moves_the_thread_and_comes_back(self, ns: str) -> None:
        path = f"{NETNS_DIR}/{ns}"
        assert not netns.same_netns(path)
        with netns.enter(path):
            assert netns.same_netns(path)
            assert os.stat(path).st_ino == thread_netns_id()[1]
        assert not netns.same_netns(path)

    def test_enter_comes_back_after_an_exception(self, ns: str) -> None:
        before = thread_netns_id()
        with pytest.raises(RuntimeError), netns.enter(f"{NETNS_DIR}/{ns}"):
            raise RuntimeError("boom")
        assert thread_netns_id() == before

    def test_enter_nests(self, make_netns: MakeNetns) -> None:
        outer, inner = f"{NETNS_DIR}/{make_netns()}", f"{NETNS_DIR}/{make_netns()}"
        with netns.enter(outer):
            with netns.enter(inner):
                assert netns.same_netns(inner)
            assert netns.same_netns(outer)

    def test_enter_missing_path_raises_and_stays(self) -> None:
        before = thread_netns_id()
        with pytest.raises(FileNotFoundError), netns.enter(f"{NETNS_DIR}/nlt-does-not-exist"):
            pytest.fail("entered a missing namespace")
        assert thread_netns_id() == before

    def test_enter_ordinary_file_raises_einval(self, tmp_path: os.PathLike[str]) -> None:
        not_a_netns = os.path.join(tmp_path, "file")
        open(not_a_netns, "w").close()
        with pytest.raises(OSError) as info, netns.enter(not_a_netns):
            pytest.fail("entered a regular file")
        assert info.value.errno == 22  # EINVAL from setns

    def test_enter_affects_only_the_calling_thread(self, ns: str) -> None:
        path = f"{NETNS_DIR}/{ns}"
        entered, release = threading.Event(), threading.Event()
        seen_in_thread: list[bool] = []

        def worker() -> None:
            with netns.enter(path):
                seen_in_thread.append(netns.same_netns(path))
                entered.set()
                release.wait(5)

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            assert entered.wait(5)
            assert seen_in_thread == [True]
            assert not netns.same_netns(path)
        finally:
            release.set()
            thread.join()

    def test_is_netns(self, ns: str, tmp_path: os.PathLike[str]) -> None:
        regular = os.path.join(tmp_path, "file")
        open(regular, "w").close()
        assert netns.is_netns(f"{NETNS_DIR}/{ns}")
        assert netns.is_netns("/proc/self/ns/net")
        assert not netns.is_netns("/proc/self/ns/uts")
        assert not netns.is_netns(regular)
        assert not netns.is_netns(str(tmp_path))
        assert not netns.is_netns(f"{NETNS_DIR}/nlt-does-not-exist")

    def test_socket_stays_in_the_netns_it_was_opened_in(self, ns: str) -> None:
        with open_fresh(ns) as nl:
            nl.bridge_add("nltbr0")
        assert "nltbr0" in link_names(ns)


class TestSysctl:
    KEY = "net/ipv4/conf/lo/route_localnet"

    def test_write_and_read_are_per_netns(self, make_netns: MakeNetns) -> None:
        changed, untouched = make_netns(), make_netns()
        with netns.enter(f"{NETNS_DIR}/{changed}"):
            assert netns.same_netns(f"{NETNS_DIR}/{changed}")  # never write the host's sysctls
            sysctl.write(self.KEY, 1)
            assert sysctl.read(self.KEY) == "1"
        assert in_netns(changed, "sysctl", "-n", "net.ipv4.conf.lo.route_localnet") == "1"
        assert in_netns(untouched, "sysctl", "-n", "net.ipv4.conf.lo.route_localnet") == "0"
        with netns.enter(f"{NETNS_DIR}/{untouched}"):
            assert sysctl.read(self.KEY) == "0"

    def test_missing_key_raises(self, ns: str) -> None:
        with netns.enter(f"{NETNS_DIR}/{ns}"), pytest.raises(FileNotFoundError):
            sysctl.read("net/ipv4/conf/nlt-no-such-dev/forwarding")


# ------------------------------------------------------------------- links


class TestLinks:
    def test_bridge_add(self, nl: Netlink, ns: str) -> None:
        bridge = nl.bridge_add("nltbr0", mtu=1400)
        shown = ip_link(ns, "nltbr0")
        assert shown["linkinfo"]["info_kind"] == "bridge"
        assert (bridge.index, bridge.name, bridge.kind, bridge.mtu, bridge.mac) == (
            shown["ifindex"],
            "nltbr0",
            "bridge",
            1400,
            shown["address"],
        )
        assert shown["mtu"] == 1400
        assert not bridge.up and bridge.vlan_filtering is False
        assert nl.link_get("nltbr0") == nl.link_by_index(bridge.index)

    def test_existing_name_is_eexist(self, nl: Netlink) -> None:
        nl.bridge_add("nltbr0")
        with pytest.raises(NetlinkError) as info:
            nl.bridge_add("nltbr0")
        assert info.value.errno == 17 and "nltbr0" in str(info.value)
        with pytest.raises(NetlinkError) as info:
            nl.veth_add("nltbr0", "nltpeer0")
        assert info.value.errno == 17

    def test_missing_link_is_none_or_enodev(self, nl: Netlink) -> None:
        assert nl.link_get("nltmissing") is None
        assert nl.link_by_index(987654) is None
        for operation in (lambda: nl.link_del(987654), lambda: nl.link_set(987654, up=True)):
            with pytest.raises(NetlinkError) as info:
                operation()
            assert info.value.errno == 19

    def test_links_matches_ip(self, nl: Netlink, ns: str) -> None:
        nl.bridge_add("nltbr0")
        nl.veth_add("nltv0", "nltv1")
        ours = {(link.index, link.name, link.mtu, link.mac) for link in nl.links()}
        theirs = {
            (link["ifindex"], link["ifname"], link["mtu"], link["address"])
            for link in ip_json(ns, "link", "show")
        }
        assert ours == theirs and len(ours) == 4

    def test_veth_across_namespaces(self, nl: Netlink, ns: str, peer_ns: str, peer_fd: int) -> None:
        local = nl.veth_add(
            "nltv0",
            "eth0",
            peer_netns_fd=peer_fd,
            mtu=1450,
            mac="02:00:00:aa:00:01",
            peer_mac="02:00:00:bb:00:01",
        )
        assert link_names(ns) == {"lo", "nltv0"}
        assert link_names(peer_ns) == {"lo", "eth0"}
        mine, peer = ip_link(ns, "nltv0"), ip_link(peer_ns, "eth0")
        assert (local.kind, local.mtu, local.mac) == ("veth", 1450, "02:00:00:aa:00:01")
        assert (mine["mtu"], mine["address"]) == (1450, "02:00:00:aa:00:01")
        assert (peer["mtu"], peer["address"]) == (1450, "02:00:00:bb:00:01")
        assert local.link_index == peer["ifindex"] and local.link_netnsid is not None
        with Netlink.open(f"{NETNS_DIR}/{peer_ns}") as peer_nl:
            peer_link = peer_nl.link_get("eth0")
        assert peer_link is not None and peer_link.link_index == local.index

    def test_attach_to_bridge_with_hairpin_and_isolation(self, nl: Netlink, ns: str, peer_fd: int) -> None:
        bridge = nl.bridge_add("nltbr0")
        veth = nl.veth_add("nltv0", "eth0", peer_netns_fd=peer_fd)
        nl.link_set(veth.index, master=bridge.index, up=True)
        nl.link_set(bridge.index, up=True)
        nl.bridge_port_set(veth.index, hairpin=True, isolated=True)

        shown = ip_link(ns, "nltv0")
        assert shown["master"] == "nltbr0"
        assert shown["linkinfo"]["info_slave_data"]["hairpin"] is True
        assert shown["linkinfo"]["info_slave_data"]["isolated"] is True
        assert in_netns(ns, "cat", "/sys/class/net/nltv0/brport/hairpin_mode") == "1"
        [port] = json.loads(_run("bridge", "-n", ns, "-j", "-d", "link", "show", "dev", "nltv0"))
        assert port["hairpin"] is True
        link = nl.link_by_index(veth.index)
        assert link is not None
        assert (link.master, link.slave_kind, link.hairpin, link.isolated, link.up) == (
            bridge.index,
            "bridge",
            True,
            True,
            True,
        )

        nl.bridge_port_set(veth.index, hairpin=False)
        assert in_netns(ns, "cat", "/sys/class/net/nltv0/brport/hairpin_mode") == "0"
        assert ip_link(ns, "nltv0")["linkinfo"]["info_slave_data"]["isolated"] is True

        nl.link_set(veth.index, master=0)
        assert "master" not in ip_link(ns, "nltv0")
        with pytest.raises(NetlinkError):  # no longer a bridge port
            nl.bridge_port_set(veth.index, hairpin=True)

    def test_operstate_up_when_both_ends_up(self, nl: Netlink, peer_ns: str, peer_fd: int) -> None:
        veth = nl.veth_add("nltv0", "eth0", peer_netns_fd=peer_fd)
        assert veth.operstate == "DOWN"
        nl.link_set(veth.index, up=True)
        with Netlink.open(f"{NETNS_DIR}/{peer_ns}") as peer_nl:
            assert {link.name for link in peer_nl.links()} == {"lo", "eth0"}
            peer = peer_nl.link_get("eth0")
            assert peer is not None
            peer_nl.link_set(peer.index, up=True)
        assert wait_for(lambda: getattr(nl.link_by_index(veth.index), "operstate", None) == "UP")

    def test_link_set_mtu_mac_promisc_name_and_down(self, nl: Netlink, ns: str) -> None:
        bridge = nl.bridge_add("nltbr0")
        nl.link_set(bridge.index, up=True, mtu=1280, mac="02:12:34:56:78:9a", promisc=True, name="nltbr1")
        shown = ip_link(ns, "nltbr1")
        assert (shown["mtu"], shown["address"]) == (1280, "02:12:34:56:78:9a")
        assert {"UP", "PROMISC"} <= set(shown["flags"])
        link = nl.link_by_index(bridge.index)
        assert link is not None and (link.name, link.promisc, link.up) == ("nltbr1", True, True)

        nl.link_set(bridge.index, up=False, promisc=False)
        assert not {"UP", "PROMISC"} & set(ip_link(ns, "nltbr1")["flags"])

    def test_link_set_moves_and_renames_into_another_netns(
        self, nl: Netlink, ns: str, peer_ns: str, peer_fd: int
    ) -> None:
        veth = nl.veth_add("nltv0", "nltv1")
        nl.link_set(veth.index, netns_fd=peer_fd, name="eth0")
        assert link_names(ns) == {"lo", "nltv1"}
        assert link_names(peer_ns) == {"lo", "eth0"}

    def test_link_del_removes_both_veth_ends(self, nl: Netlink, ns: str, peer_ns: str, peer_fd: int) -> None:
        veth = nl.veth_add("nltv0", "eth0", peer_netns_fd=peer_fd)
        nl.link_del(veth.index)
        assert link_names(ns) == {"lo"}
        assert link_names(peer_ns) == {"lo"}
        assert nl.link_get("nltv0") is None


# ------------------------------------------------------------ bridge VLANs


def _kernel_has_vlan_filtering(ns: str) -> bool:
    probe = subprocess.run(
        ["ip", "-n", ns, "link", "add", "nltprobe", "type", "bridge", "vlan_filtering", "1"],
        capture_output=True,
    )
    subprocess.run(["ip", "-n", ns, "link", "del", "nltprobe"], capture_output=True)
    return probe.returncode == 0


class TestBridgeVlans:
    @pytest.fixture(autouse=True)
    def _needs_vlan_filtering(self, ns: str) -> None:
        if not _kernel_has_vlan_filtering(ns):
            pytest.skip(
                "kernel built without CONFIG_BRIDGE_VLAN_FILTERING (iproute2 cannot enable it either)"
            )

    def _bridge_vlans(self, ns: str, dev: str) -> dict[int, set[str]]:
        """{vid: flags} of ``dev`` per ``bridge -j vlan show``."""
        for entry in json.loads(_run("bridge", "-n", ns, "-j", "vlan", "show", "dev", dev) or "[]"):
            if entry["ifname"] == dev:
                return {vlan["vlan"]: set(vlan.get("flags", [])) for vlan in entry["vlans"]}
        return {}

    def test_vlan_filtering_on_create_and_toggle(self, nl: Netlink, ns: str) -> None:
        bridge = nl.bridge_add("nltbr0", vlan_filtering=True)
        assert bridge.vlan_filtering is True
        assert ip_link(ns, "nltbr0")["linkinfo"]["info_data"]["vlan_filtering"] == 1
        nl.bridge_set(bridge.index, vlan_filtering=False)
        assert ip_link(ns, "nltbr0")["linkinfo"]["info_data"]["vlan_filtering"] == 0
        assert nl.link_by_index(bridge.index).vlan_filtering is False  # type: ignore[union-attr]

    def test_port_vlans(self, nl: Netlink, ns: str) -> None:
        bridge = nl.bridge_add("nltbr0", vlan_filtering=True)
        veth = nl.veth_add("nltv0", "nltv1")
        nl.link_set(veth.index, master=bridge.index)
        nl.bridge_vlan_add(veth.index, 100, pvid=True, untagged=True)
        nl.bridge_vlan_add(veth.index, 200, vid_end=202)
        nl.bridge_vlan_del(veth.index, 1)
        assert self._bridge_vlans(ns, "nltv0") == {
            100: {"PVID", "Egress Untagged"},
            200: set(),
            201: set(),
            202: set(),
        }
        assert [(v.vid, v.pvid, v.untagged) for v in nl.bridge_vlans(veth.index)] == [
            (100, True, True),
            (200, False, False),
            (201, False, False),
            (202, False, False),
        ]
        nl.bridge_vlan_del(veth.index, 200, vid_end=202)
        assert set(self._bridge_vlans(ns, "nltv0")) == {100}

    def test_bridge_self_vlan(self, nl: Netlink, ns: str) -> None:
        bridge = nl.bridge_add("nltbr0", vlan_filtering=True)
        nl.bridge_vlan_add(bridge.index, 300, self_=True)
        assert 300 in self._bridge_vlans(ns, "nltbr0")
        nl.bridge_vlan_del(bridge.index, 300, self_=True)
        assert 300 not in self._bridge_vlans(ns, "nltbr0")


# --------------------------------------------------------------- addresses


def ip_addrs(ns: str, dev: str) -> dict[str, dict]:
    [link] = ip_json(ns, "addr", "show", "dev", dev)
    return {f"{a['local']}/{a['prefixlen']}": a for a in link["addr_info"]}


class TestAddresses:
    @pytest.fixture
    def dev(self, nl: Netlink) -> int:
        bridge = nl.bridge_add("nltbr0")
        nl.link_set(bridge.index, up=True)
        return bridge.index

    def test_ipv4_with_broadcast(self, nl: Netlink, ns: str, dev: int) -> None:
        nl.addr_add(dev, "10.88.0.1/16")
        nl.addr_add(dev, "192.0.2.1/31")
        shown = ip_addrs(ns, "nltbr0")
        assert shown["10.88.0.1/16"]["broadcast"] == "10.88.255.255"
        assert shown["10.88.0.1/16"]["scope"] == "global"
        assert "broadcast" not in shown["192.0.2.1/31"]

    def test_ipv6_nodad(self, nl: Netlink, ns: str, dev: int) -> None:
        nl.addr_add(dev, "fd00:88::1/64", nodad=True)
        shown = ip_addrs(ns, "nltbr0")["fd00:88::1/64"]
        assert shown["nodad"] is True and "tentative" not in shown

    def test_addrs_match_ip_and_filter(self, nl: Netlink, ns: str, dev: int) -> None:
        nl.addr_add(dev, "10.88.0.1/16")
        nl.addr_add(dev, "fd00:88::1/64", nodad=True)
        ours = {a.cidr: a for a in nl.addrs(dev)}
        assert set(ours) == set(ip_addrs(ns, "nltbr0"))  # includes the kernel's fe80:: address
        v4 = ours["10.88.0.1/16"]
        assert (v4.index, v4.family, v4.scope, v4.ip, v4.prefixlen) == (
            dev,
            AF_INET,
            RT_SCOPE_UNIVERSE,
            "10.88.0.1",
            16,
        )
        assert {a.cidr for a in nl.addrs(dev, AF_INET)} == {"10.88.0.1/16"}
        assert all(a.family == AF_INET6 for a in nl.addrs(family=AF_INET6))
        assert {a.cidr for a in nl.addrs(family=AF_INET)} == {"10.88.0.1/16"}  # lo is down: no 127.0.0.1
        assert not ours["fd00:88::1/64"].tentative

    def test_duplicate_delete_and_missing(self, nl: Netlink, ns: str, dev: int) -> None:
        nl.addr_add(dev, "10.88.0.1/16")
        with pytest.raises(NetlinkError) as info:
            nl.addr_add(dev, "10.88.0.1/16")
        assert info.value.errno == 17
        nl.addr_del(dev, "10.88.0.1/16")
        assert "10.88.0.1/16" not in ip_addrs(ns, "nltbr0")
        with pytest.raises(NetlinkError) as info:
            nl.addr_del(dev, "10.88.0.1/16")
        assert info.value.errno == 99  # EADDRNOTAVAIL

    def test_add_to_missing_link(self, nl: Netlink) -> None:
        with pytest.raises(NetlinkError) as info:
            nl.addr_add(987654, "10.88.0.1/16")
        assert info.value.errno == 19


# ------------------------------------------------------------------ routes


def ip_routes(ns: str, *args: str) -> list[dict]:
    return ip_json(ns, "route", "show", *args)


class TestRoutes:
    @pytest.fixture
    def dev(self, nl: Netlink) -> int:
        """An up veth with 10.88.0.5/16 and fd00:88::5/64 (its peer is up too, so it has carrier)."""
        veth = nl.veth_add("nltv0", "nltv1")
        peer = nl.link_get("nltv1")
        assert peer is not None
        nl.link_set(peer.index, up=True)
        nl.link_set(veth.index, up=True)
        nl.addr_add(veth.index, "10.88.0.5/16")
        nl.addr_add(veth.index, "fd00:88::5/64", nodad=True)
        return veth.index

    def test_ipv4_routes(self, nl: Netlink, ns: str, dev: int) -> None:
        nl.route_add("0.0.0.0/0", "10.88.0.1")
        nl.route_add("192.0.2.0/24", "10.88.0.1", priority=50, mtu=1300, advmss=1200)
        nl.route_add("198.51.100.7/24", oif=dev)  # host bits are cleared; no gw -> scope link
        nl.route_add("203.0.113.0/24", "10.88.0.1", table=100)

        shown = {r["dst"]: r for r in ip_routes(ns)}
        assert shown["default"]["gateway"] == "10.88.0.1" and shown["default"]["dev"] == "nltv0"
        assert shown["192.0.2.0/24"]["metric"] == 50
        assert shown["192.0.2.0/24"]["metrics"] == [{"mtu": 1300, "advmss": 1200}]
        assert shown["198.51.100.0/24"]["scope"] == "link"
        assert [r["dst"] for r in ip_routes(ns, "table", "100")] == ["203.0.113.0/24"]

        ours = {r.dst: r for r in nl.routes(AF_INET)}
        assert set(ours) == {"0.0.0.0/0", "192.0.2.0/24", "198.51.100.0/24", "10.88.0.0/16"}
        assert (ours["0.0.0.0/0"].gw, ours["0.0.0.0/0"].oif) == ("10.88.0.1", dev)
        assert (ours["192.0.2.0/24"].priority, ours["192.0.2.0/24"].mtu, ours["192.0.2.0/24"].advmss) == (
            50,
            1300,
            1200,
        )
        assert ours["198.51.100.0/24"].scope == RT_SCOPE_LINK and ours["198.51.100.0/24"].gw is None
        assert ours["10.88.0.0/16"].prefsrc == "10.88.0.5"
        [in_table_100] = nl.routes(AF_INET, table=100)
        assert (in_table_100.dst, in_table_100.table) == ("203.0.113.0/24", 100)
        assert {r.table for r in nl.routes(AF_INET, table=None)} >= {100, 254, 255}

    def test_ipv6_routes(self, nl: Netlink, ns: str, dev: int) -> None:
        nl.route_add("::/0", "fd00:88::1")
        nl.route_add("fd00:99::/64", "fd00:88::1", priority=20)
        shown = {r["dst"]: r for r in ip_json(ns, "-6", "route", "show")}
        assert shown["default"]["gateway"] == "fd00:88::1"
        assert shown["fd00:99::/64"]["metric"] == 20
        ours = {r.dst: r for r in nl.routes(AF_INET6)}
        assert ours["::/0"].gw == "fd00:88::1" and ours["::/0"].oif == dev
        assert ours["fd00:99::/64"].priority == 20
        assert {"fd00:88::/64", "fe80::/64"} <= set(ours)

    def test_route_get(self, nl: Netlink, ns: str, dev: int) -> None:
        nl.route_add("0.0.0.0/0", "10.88.0.1")
        nl.route_add("::/0", "fd00:88::1")
        via_default = nl.route_get("198.51.100.9")
        [expected] = ip_json(ns, "route", "get", "198.51.100.9")
        assert (via_default.oif, via_default.gw, via_default.prefsrc) == (
            dev,
            expected["gateway"],
            expected["prefsrc"],
        )
        on_link = nl.route_get("10.88.3.3")
        assert (on_link.oif, on_link.gw) == (dev, None)
        assert nl.route_get("2001:db8::1").oif == dev
        local = nl.route_get("10.88.0.5")
        assert local.oif == nl.link_get("lo").index  # type: ignore[union-attr]

    def test_route_get_unreachable(self, nl: Netlink) -> None:
        for address in ("198.51.100.9", "2001:db8::1"):
            with pytest.raises(NetlinkError) as info:
                nl.route_get(address)
            assert info.value.errno == 101  # ENETUNREACH

    def test_duplicate_and_delete(self, nl: Netlink, ns: str, dev: int) -> None:
        nl.route_add("192.0.2.0/24", "10.88.0.1")
        with pytest.raises(NetlinkError) as info:
            nl.route_add("192.0.2.0/24", "10.88.0.1")
        assert info.value.errno == 17
        nl.route_del("192.0.2.0/24")
        assert "192.0.2.0/24" not in {r["dst"] for r in ip_routes(ns)}
        with pytest.raises(NetlinkError) as info:
            nl.route_del("192.0.2.0/24")
        assert info.value.errno == 3  # ESRCH

    def test_gateway_must_be_reachable(self, nl: Netlink, dev: int) -> None:
        with pytest.raises(NetlinkError) as info:
            nl.route_add("192.0.2.0/24", "203.0.113.1")
        assert info.value.errno == 101 and "gateway" in str(info.value).lower()
