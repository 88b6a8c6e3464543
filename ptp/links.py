"""The kernel side of ptp: routes and addresses on both ends of the veth pair.

The container end gets its IPAM address with the subnet's connected route replaced, as the reference
does, by a link-scoped route to the gateway and a route to the subnet *through* the gateway: every
packet, even to a neighbour in the same subnet, goes to the node, which routes it (there is no bridge).
The node end holds the gateway address as a host address (/32, /128) and a host route to each container
address. The veth pair itself is made by bridge.links (create_veth), shared with the bridge plugin.
"""
from __future__ import annotations

import ipaddress

from cni.errors import INTERNAL, CNIError
from netlink.constants import RT_SCOPE_LINK
from netlink.errors import NetlinkError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from netlink.records import Link
    from netlink.rtnl import Netlink

_EEXIST = 17
_ESRCH = 3
_ENODEV = 19


def host_prefix(version: int) -> int:
    return 32 if version == 4 else 128


def complete_gateways(ips: list[dict[str, Any]]) -> None:
    """Point every IP at the container interface (index 1 of the result) and give it a gateway: the
    IPAM's, else the subnet's first host (ptp cannot work without one: the node answers for it)."""
    for ip in ips:
        ip["interface"] = 1
        iface = ipaddress.ip_interface(ip["address"])
        if not ip.get("gateway"):
            ip["gateway"] = str(iface.network.network_address + 1)
        if ipaddress.ip_address(ip["gateway"]) == iface.ip:
            raise CNIError(INTERNAL, f"the container address {ip['address']} is its own gateway")


def configure_container(ctr_nl: Netlink, ifname: str, ips: list[dict[str, Any]],
                        routes: list[dict[str, Any]]) -> Link:
    """Link up, addresses, the routes through the gateway, then the configured routes."""
    link = ctr_nl.link_get(ifname)
    if link is None:
        raise CNIError(INTERNAL, f"container interface {ifname} not found after creation")
    ctr_nl.link_set(link.index, up=True)
    for ip in ips:
        # No DAD for IPv6: the routes below name the address as their source, which the kernel refuses
        # while it is tentative (even with accept_dad 0 it is, until the DAD work has run).
        ctr_nl.addr_add(link.index, ip["address"], nodad=":" in ip["address"])
    gateways: dict[int, str] = {}
    for ip in ips:
        iface = ipaddress.ip_interface(ip["address"])
        gw = ip["gateway"]
        gateways.setdefault(iface.version, gw)
        subnet = str(iface.network)
        if iface.network.prefixlen < host_prefix(iface.version):
            _route_del_quietly(ctr_nl, subnet, link.index)  # the connected route the address brought
        _route_add(ctr_nl, f"{gw}/{host_prefix(iface.version)}", None, link.index, str(iface.ip), RT_SCOPE_LINK)
        if iface.network.prefixlen < host_prefix(iface.version):
            _route_add(ctr_nl, subnet, gw, link.index, str(iface.ip))
    for route in routes:
        dst = ipaddress.ip_network(route["dst"], strict=False)
        _route_add(ctr_nl, str(dst), route.get("gw") or gateways.get(dst.version), link.index)
    return ctr_nl.link_get(ifname) or link


def configure_host(nl: Netlink, host_veth: str, ips: list[dict[str, Any]]) -> Link:
    """The node end: up, the gateway address(es) as host addresses, a host route to each container IP."""
    link = nl.link_get(host_veth)
    if link is None:
        raise CNIError(INTERNAL, f"host veth {host_veth} not found after creation")
    nl.link_set(link.index, up=True)
    for ip in ips:
        iface = ipaddress.ip_interface(ip["address"])
        bits = host_prefix(iface.version)
        try:
            nl.addr_add(link.index, f"{ip['gateway']}/{bits}", nodad=True)
        except NetlinkError as err:
            if err.errno != _EEXIST:  # two IPs of one family share the gateway
                raise
        _route_add(nl, f"{iface.ip}/{bits}", None, link.index)
    return nl.link_get(host_veth) or link


def delete_host_veth(nl: Netlink, name: str) -> None:
    """Remove a recorded host veth that outlived its container end (only a veth: a reused name is not ours)."""
    link = nl.link_get(name)
    if link is None or link.kind != "veth":
        return
    try:
        nl.link_del(link.index)
    except NetlinkError as err:
        if err.errno != _ENODEV:
            raise


def _route_add(nl: Netlink, dst: str, gw: str | None, oif: int, src: str | None = None,
               scope: int | None = None) -> None:
    try:
        nl.route_add(dst, gw=gw, oif=oif, src=src, scope=scope)
    except NetlinkError as err:
        if err.errno == _EEXIST:
            return
        via = f" via {gw}" if gw else ""
        raise CNIError(INTERNAL, f"failed to add route {dst}{via}: {err}") from None


def _route_del_quietly(nl: Netlink, dst: str, oif: int) -> None:
    try:
        nl.route_del(dst, oif=oif)
    except NetlinkError as err:
        if err.errno != _ESRCH:
            raise CNIError(INTERNAL, f"failed to delete route {dst}: {err}") from None
