"""CHECK helpers shared by the main plugins that put one interface into the container (ptp, host-device):
find the container interface in prevResult and hold its addresses and routes against the container.

Messages follow the reference (and bridge's CHECK), code 999 for a container that drifted from prevResult.
"""
from __future__ import annotations

import ipaddress

from cni.errors import INTERNAL, INVALID_CONFIG, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.skel import Request
    from netlink.rtnl import Netlink


def drifted(msg: str) -> CNIError:
    return CNIError(INTERNAL, msg)


def container_entry(req: Request, interfaces: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """prevResult's entry for the container interface, and its index in ``interfaces``."""
    index = next((n for n, i in enumerate(interfaces) if i.get("name") == req.ifname and i.get("sandbox")), None)
    if index is None:
        raise CNIError(INVALID_CONFIG, f"prevResult has no interface {req.ifname} in a sandbox")
    entry = interfaces[index]
    if entry.get("sandbox") != req.netns:
        raise drifted(f"Sandbox in prevResult {entry.get('sandbox')} doesn't match configured netns: {req.netns}")
    return index, entry


def ips_of_interface(prev: dict[str, Any], iface_index: int) -> list[dict[str, Any]]:
    """prevResult's addresses of interface ``iface_index`` (an address naming no interface counts too)."""
    return [ip for ip in prev.get("ips") or [] if ip.get("interface") in (None, iface_index)]


def verify_addresses(ctr_nl: Netlink, link_index: int, ifname: str, ips: list[dict[str, Any]]) -> None:
    """Every one of ``ips`` is on the link."""
    present = {ipaddress.ip_interface(a.cidr) for a in ctr_nl.addrs(index=link_index)}
    for ip in ips:
        if ipaddress.ip_interface(ip["address"]) not in present:
            raise drifted(f"Failed to match addr {ip['address']} on interface {ifname}")


def verify_routes(ctr_nl: Netlink, routes: list[dict[str, Any]]) -> None:
    """Every prevResult route has a route to its destination (through its gateway, when it names one)."""
    from netlink.constants import AF_INET, AF_INET6  # noqa: PLC0415

    present: dict[str, set[str | None]] = {}
    for family in (AF_INET, AF_INET6):
        for route in ctr_nl.routes(family):
            present.setdefault(str(ipaddress.ip_network(route.dst, strict=False)), set()).add(route.gw)
    for route in routes:
        dst = str(ipaddress.ip_network(route["dst"], strict=False))
        gateways = present.get(dst)
        if gateways is None or (route.get("gw") and str(ipaddress.ip_address(route["gw"])) not in gateways):
            raise drifted(f"Failed to match route {route['dst']} in the container")
