"""An independent witness: what a network namespace holds, read through pyroute2.

The plugins talk to the kernel through the project's own ``netlink`` package; reading their work
back through that same package would let one bug hide another. These helpers read links,
addresses and routes of a named namespace (``ip netns`` name) with pyroute2 instead, a separate
rtnetlink implementation, and return plain values the tests can compare.

pyroute2 is a test dependency only: no plugin imports it.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import NetNS

IFF_UP = 0x1
IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200
RT_TABLE_MAIN = 254


@dataclass(frozen=True)
class WitnessedLink:
    index: int
    name: str
    up: bool  # administratively (IFF_UP)
    mtu: int
    mac: str
    promisc: bool
    allmulti: bool
    txqlen: int
    master: str | None  # the master's name (a bridge), when enslaved
    kind: str | None  # IFLA_INFO_KIND: "veth", "bridge"...; None for lo


@dataclass(frozen=True)
class WitnessedRoute:
    dst: str  # "0.0.0.0/0", "10.88.0.0/24"
    gw: str | None
    dev: str | None


def _kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def links(netns: str) -> dict[str, WitnessedLink]:
    """Every link of the namespace, by name."""
    with NetNS(netns) as ns:
        raw = list(ns.get_links())
    names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in raw}
    found = {}
    for msg in raw:
        flags = msg["flags"]
        master = msg.get_attr("IFLA_MASTER")
        name = msg.get_attr("IFLA_IFNAME")
        found[name] = WitnessedLink(
            index=msg["index"], name=name, up=bool(flags & IFF_UP), mtu=msg.get_attr("IFLA_MTU"),
            mac=msg.get_attr("IFLA_ADDRESS") or "", promisc=bool(flags & IFF_PROMISC),
            allmulti=bool(flags & IFF_ALLMULTI), txqlen=msg.get_attr("IFLA_TXQLEN"),
            master=names.get(master) if master else None, kind=_kind(msg))
    return found


def link(netns: str, name: str) -> WitnessedLink | None:
    return links(netns).get(name)


def addresses(netns: str, name: str, family: int | None = None) -> list[str]:
    """The addresses of link ``name`` as CIDRs (``"10.88.0.2/24"``), optionally of one family (4 or 6)."""
    wanted = {None: None, 4: socket.AF_INET, 6: socket.AF_INET6}[family]
    with NetNS(netns) as ns:
        index = {m.get_attr("IFLA_IFNAME"): m["index"] for m in ns.get_links()}.get(name)
        if index is None:
            return []
        msgs = list(ns.get_addr(index=index))
    return [f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}" for m in msgs
            if wanted is None or m["family"] == wanted]


def routes(netns: str, family: int = 4) -> list[WitnessedRoute]:
    """The main table's routes of one family (4 or 6)."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    zero = "0.0.0.0" if family == 4 else "::"
    with NetNS(netns) as ns:
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ns.get_links()}
        msgs = list(ns.get_routes(family=af, table=RT_TABLE_MAIN))
    found = []
    for m in msgs:
        oif = m.get_attr("RTA_OIF")
        found.append(WitnessedRoute(dst=f"{m.get_attr('RTA_DST') or zero}/{m['dst_len']}",
                                    gw=m.get_attr("RTA_GATEWAY"), dev=names.get(oif) if oif else None))
    return found


def default_route(netns: str, family: int = 4) -> WitnessedRoute | None:
    default = "0.0.0.0/0" if family == 4 else "::/0"
    return next((r for r in routes(netns, family) if r.dst == default), None)


def sysctl(netns: str, key: str) -> str:
    """A /proc/sys value as the namespace sees it (``key`` dotted, e.g. ``net.core.somaxconn``),
    read by a process in the namespace rather than by a plugin: whitespace normalised to spaces."""
    import subprocess  # noqa: PLC0415

    path = "/proc/sys/" + key.replace(".", "/")
    proc = subprocess.run(["ip", "netns", "exec", netns, "cat", path], capture_output=True, check=True)
    return " ".join(proc.stdout.decode().split())
