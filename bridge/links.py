"""The kernel side of the bridge plugin: the bridge, the veth pair, addresses, routes and sysctls.

Everything here talks rtnetlink through ``netlink`` (a small stdlib-only library: pyroute2 costs
more to import than the whole ADD may take). Functions take the netlink socket of the namespace
they act on: the node's (the plugin's own) or the container's.
"""
from __future__ import annotations

import ipaddress
import os

from cni.errors import INVALID_CONFIG, INVALID_ENV, CNIError
from netlink import netns, sysctl
from netlink.errors import NetlinkError
from netlink.rtnl import Netlink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bridge.config import BridgeConf
    from netlink.records import Link

HOST_VETH_PREFIX = "veth"
_ENODEV = 19
_EEXIST = 17


def ensure_bridge(nl: Netlink, conf: BridgeConf) -> Link:
    """The configured bridge, created (and brought up) when missing."""
    link = nl.link_get(conf.bridge)
    if link is None:
        try:
            nl.bridge_add(conf.bridge, mtu=conf.mtu, vlan_filtering=conf.vlan > 0)
        except NetlinkError as err:
            if err.errno != _EEXIST:  # a parallel ADD created it first: fine
                raise
        link = nl.link_get(conf.bridge)
        if link is None:
            raise CNIError(999, f"bridge {conf.bridge} vanished right after creation")
        # Router advertisements on the bridge would let containers reconfigure the node.
        _try_sysctl(f"net/ipv6/conf/{conf.bridge}/accept_ra", "0")
        _pin_mac(nl, link)
    if link.kind != "bridge":
        raise CNIError(INVALID_CONFIG, f'"{conf.bridge}" already exists but is not a bridge')
    if conf.vlan and not link.vlan_filtering:
        nl.bridge_set(link.index, vlan_filtering=True)
    if conf.promiscMode and not link.promisc:
        nl.link_set(link.index, promisc=True)
    if not link.up:
        nl.link_set(link.index, up=True)
    return nl.link_get(conf.bridge) or link


def _pin_mac(nl: Netlink, bridge: Link) -> None:
    """Give the bridge a MAC of its own: otherwise it takes its lowest port's and changes as ports come
    and go, which breaks the neighbours' caches and CHECK against prevResult."""
    mac = bridge.mac if bridge.mac and bridge.mac != "00:00:00:00:00:00" else None
    if mac is None:
        raw = bytearray(os.urandom(6))  # what secrets.token_bytes does, without importing random and hmac
        raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
        mac = ":".join(f"{b:02x}" for b in raw)
    nl.link_set(bridge.index, mac=mac)  # an explicitly set address stops the kernel re-deriving it


def new_host_veth_name() -> str:
    return HOST_VETH_PREFIX + os.urandom(4).hex()


def create_veth(ctr_nl: Netlink, ifname: str, host_name: str, mtu: int, mac: str | None) -> None:
    """Create ``ifname`` in the container namespace with its peer ``host_name`` in the node's."""
    if ctr_nl.link_get(ifname) is not None:
        raise CNIError(INVALID_ENV, f"container veth name provided ({ifname}) already exists")
    host_fd = netns.netns_fd(netns.CURRENT_NETNS_PATH)
    try:
        ctr_nl.veth_add(ifname, host_name, peer_netns_fd=host_fd, mtu=mtu, mac=mac)
    finally:
        os.close(host_fd)


def attach_host_veth(nl: Netlink, host_name: str, bridge: Link, conf: BridgeConf) -> Link:
    link = nl.link_get(host_name)
    if link is None:
        raise CNIError(999, f"host veth {host_name} not found after creation")
    nl.link_set(link.index, master=bridge.index)
    if conf.hairpinMode:
        nl.bridge_port_set(link.index, hairpin=True)
    if conf.vlan:
        nl.bridge_vlan_del(link.index, 1)
        nl.bridge_vlan_add(link.index, conf.vlan, pvid=True, untagged=True)
        # The bridge device itself must carry the VLAN for the gateway address to be reachable.
        nl.bridge_vlan_add(bridge.index, conf.vlan, pvid=False, untagged=True, self_=True)
    nl.link_set(link.index, up=True)
    return nl.link_get(host_name) or link


def configure_container(ctr_nl: Netlink, netns_path: str, ifname: str, ips: list[dict], routes: list[dict],
                        enabledad: bool) -> Link:
    """Addresses, sysctls, link up, routes inside the container."""
    link = ctr_nl.link_get(ifname)
    if link is None:
        raise CNIError(999, f"container interface {ifname} not found after creation")
    has_v6 = any(ipaddress.ip_interface(ip["address"]).version == 6 for ip in ips)
    set_container_sysctls(netns_path, ifname, has_v6, enabledad)
    for ip in ips:
        ctr_nl.addr_add(link.index, ip["address"])
    ctr_nl.link_set(link.index, up=True)
    gateways = {ipaddress.ip_interface(ip["address"]).version: ip.get("gateway") for ip in ips if ip.get("gateway")}
    for route in routes:
        dst = ipaddress.ip_network(route["dst"], strict=False)
        gw = route.get("gw") or gateways.get(dst.version)
        try:
            ctr_nl.route_add(str(dst), gw=gw, oif=link.index)
        except NetlinkError as err:
            raise CNIError(999, f"failed to add route {route}: {err}") from None
    return ctr_nl.link_get(ifname) or link


def set_container_sysctls(netns_path: str, ifname: str, has_v6: bool, enabledad: bool) -> None:
    """The container interface's sysctls before it gets addresses (shared with ptp and host-device)."""
    with netns.enter(netns_path):
        _try_sysctl(f"net/ipv4/conf/{ifname}/arp_notify", "1")
        if has_v6:
            _try_sysctl("net/ipv6/conf/lo/disable_ipv6", "0")
            _try_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "0")
            _try_sysctl(f"net/ipv6/conf/{ifname}/keep_addr_on_down", "1")
        if enabledad:
            _try_sysctl(f"net/ipv6/conf/{ifname}/enhanced_dad", "1")
            _try_sysctl(f"net/ipv6/conf/{ifname}/accept_dad", "1")
        else:
            _try_sysctl(f"net/ipv6/conf/{ifname}/accept_dad", "0")


def ensure_gateway_address(nl: Netlink, bridge: Link, gateway_cidr: str, force: bool) -> None:
    """Put ``gateway_cidr`` on the bridge. IPv4 allows one address unless ``force`` replaces it."""
    wanted = ipaddress.ip_interface(gateway_cidr)
    family = wanted.version
    existing = [ipaddress.ip_interface(a.cidr) for a in nl.addrs(index=bridge.index)
                if ipaddress.ip_interface(a.cidr).version == family]
    if wanted in existing:
        return
    for addr in existing:
        if family == 6:
            if addr.network.overlaps(wanted.network) and not addr.ip.is_link_local:
                if not force:
                    raise CNIError(INVALID_CONFIG, f'"{bridge.name}" already has an IP address overlapping {wanted}')
                nl.addr_del(bridge.index, str(addr))
            continue
        if not force:
            raise CNIError(INVALID_CONFIG, f'"{bridge.name}" already has an IP address different from {wanted}')
        nl.addr_del(bridge.index, str(addr))
    try:
        nl.addr_add(bridge.index, str(wanted))
    except NetlinkError as err:
        if err.errno != _EEXIST:  # a parallel ADD added the same gateway
            raise


def enable_forwarding(families: set[int]) -> None:
    if 4 in families:
        sysctl.write("net/ipv4/ip_forward", "1")
    if 6 in families:
        sysctl.write("net/ipv6/conf/all/forwarding", "1")


def delete_container_link(netns_path: str, ifname: str) -> list[str]:
    """Remove ``ifname`` from the container; returns its global addresses (empty when already gone)."""
    if not netns_path or not netns.is_netns(netns_path):
        return []
    with Netlink.open(netns_path) as ctr_nl:
        link = ctr_nl.link_get(ifname)
        if link is None:
            return []
        addrs = [a.cidr for a in ctr_nl.addrs(index=link.index) if a.scope == 0]
        try:
            ctr_nl.link_del(link.index)
        except NetlinkError as err:
            if err.errno != _ENODEV:
                raise
        return addrs


def delete_host_veth(nl: Netlink, name: str, bridge_name: str) -> None:
    """Remove a recorded host veth that outlived its container (only if it still is our bridge port)."""
    link = nl.link_get(name)
    if link is None or link.kind != "veth":
        return
    bridge = nl.link_get(bridge_name)
    if bridge is not None and link.master not in (None, bridge.index):
        return
    try:
        nl.link_del(link.index)
    except NetlinkError as err:
        if err.errno != _ENODEV:
            raise


def _try_sysctl(key: str, value: str) -> None:
    try:
        sysctl.write(key, value)
    except OSError:
        pass  # e.g. IPv6 disabled in this namespace: nothing to configure
