"""CHECK for the ptp plugin: both ends of the pair still look like prevResult says."""
from __future__ import annotations

import ipaddress

from cni.prevcheck import container_entry, drifted, ips_of_interface, verify_addresses, verify_routes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.skel import Request
    from netlink.rtnl import Netlink
    from ptp.config import PtpConf


def verify(req: Request, conf: PtpConf, masq_backend: str | None) -> None:
    from bridge import ipmasq  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    prev = req.prev_result or {}
    interfaces: list[dict[str, Any]] = prev.get("interfaces") or []
    ctr_index, ctr_entry = container_entry(req, interfaces)
    ips = ips_of_interface(prev, ctr_index)
    with Netlink.open(req.netns) as ctr_nl:
        link = ctr_nl.link_get(req.ifname)
        if link is None:
            raise drifted(f"Interface name {req.ifname} not found")
        if link.kind != "veth":
            raise drifted(f"Error: Container interface {req.ifname} not of type veth/p2p")
        if ctr_entry.get("mac") and link.mac != ctr_entry["mac"].lower():
            raise drifted(f"Interface MAC {link.mac} does not match prevResult MAC {ctr_entry['mac']}")
        verify_addresses(ctr_nl, link.index, req.ifname, ips)
        verify_routes(ctr_nl, prev.get("routes") or [])
    with Netlink.open() as nl:  # after the container: a deleted container end takes its peer along
        host_names = [i["name"] for i in interfaces if not i.get("sandbox") and i.get("name")]
        verify_host_veth(nl, host_names, ips)
    if conf.ipMasq:
        problems = ipmasq.check(req.network, req.container_id, ips, backend=masq_backend)
        if problems:
            raise drifted("ipMasq: " + "; ".join(problems))


def verify_host_veth(nl: Netlink, names: list[str], ips: list[dict[str, Any]]) -> None:
    """The node end exists, holds each gateway as a host address and routes each container address to itself."""
    from netlink.constants import AF_INET, AF_INET6  # noqa: PLC0415

    link = next((found for found in (nl.link_get(name) for name in names)
                 if found is not None and found.kind == "veth"), None)
    if link is None:
        raise drifted(f"no host veth of {names} found on the node")
    addresses = {ipaddress.ip_interface(a.cidr) for a in nl.addrs(index=link.index)}
    routed = {str(ipaddress.ip_network(r.dst, strict=False)) for family in (AF_INET, AF_INET6)
              for r in nl.routes(family) if r.oif == link.index}
    for ip in ips:
        iface = ipaddress.ip_interface(ip["address"])
        bits = iface.max_prefixlen
        if ip.get("gateway"):
            gateway = ipaddress.ip_interface(f"{ip['gateway']}/{bits}")
            if gateway not in addresses:
                raise drifted(f"host veth {link.name} does not hold the gateway address {gateway}")
        if f"{iface.ip}/{bits}" not in routed:
            raise drifted(f"no route to {iface.ip} through host veth {link.name}")
