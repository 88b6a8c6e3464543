"""The loopback plugin's commands: ADD brings ``lo`` up, DEL takes it down, CHECK wants it up.

Runtimes exec this for every pod sandbox, so it is kept the cheapest plugin of the suite: besides
what the skeleton needs it loads only the stdlib-only ``netlink`` package, and only the commands
that talk to the kernel load even that. It owns no state: ``lo`` exists in every namespace, so
there is nothing to record and nothing to leave behind.

Like the reference, ADD returns (from result version 0.3.0 on) the interface ``lo`` and the
first IPv4 and IPv6 address found on it (``127.0.0.1/8``; ``::1/128`` where IPv6 is enabled),
or passes a ``prevResult`` through unchanged. For 0.1.0/0.2.0 the skeleton lowers that to
``ip4``/``ip6`` as the spec says (Debian's 1.1.1 binary prints the 1.0.0 shape labelled 0.2.0).
"""
from __future__ import annotations

from cni import skel
from cni.errors import INTERNAL, UNKNOWN_CONTAINER, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.skel import Request
    from netlink.records import Addr, Link
    from netlink.rtnl import Netlink

LOOPBACK = "lo"
LOOPBACK_MAC = "00:00:00:00:00:00"
_ENOENT = 2
_EINVAL = 22  # setns on a file that is not a namespace (an unmounted /run/netns entry)


def _open_netns(netns: str) -> Netlink:
    """A netlink socket in ``netns``; UNKNOWN_CONTAINER (3) when it is not there."""
    from netlink.rtnl import Netlink  # noqa: PLC0415 - VERSION never needs netlink

    try:
        return Netlink.open(netns)
    except OSError as exc:
        raise CNIError(UNKNOWN_CONTAINER, f"failed to open netns {netns!r}: {exc.strerror or exc}") from None


def _loopback_link(nl: Netlink) -> Link:
    link = nl.link_get(LOOPBACK)
    if link is None:
        raise CNIError(INTERNAL, "no loopback interface in the namespace")
    return link


def _is_loopback_address(addr: Addr) -> bool:
    if addr.family == 2:  # AF_INET: all of 127.0.0.0/8
        return addr.ip.startswith("127.")
    return addr.ip == "::1"


def cmd_add(req: Request) -> dict[str, Any]:
    with _open_netns(req.netns) as nl:
        link = _loopback_link(nl)
        nl.link_set(link.index, up=True)
        addrs = nl.addrs(index=link.index)  # IPv4 before IPv6, in the order they were added
    strange = [a.cidr for a in addrs if not _is_loopback_address(a)]
    if strange:
        raise CNIError(INTERNAL, f"loopback interface found with non-loopback address {strange[0]!r}")
    if req.prev_result is not None:
        return req.prev_result  # a chained loopback passes the previous result through
    ips = []
    for family in (2, 10):  # the first address of each family, as the reference reports
        first = next((a for a in addrs if a.family == family), None)
        if first is not None:
            ips.append({"interface": 0, "address": first.cidr})
    result: dict[str, Any] = {"cniVersion": req.cni_version,
                              "interfaces": [{"name": LOOPBACK, "mac": LOOPBACK_MAC, "sandbox": req.netns}]}
    if ips:
        result["ips"] = ips
    return result


def cmd_del(req: Request) -> None:
    """Take ``lo`` down; a namespace that is missing, empty or already gone needs nothing."""
    if not req.netns:
        return
    from netlink.rtnl import Netlink  # noqa: PLC0415

    try:
        nl = Netlink.open(req.netns)
    except OSError as exc:
        if exc.errno in (_ENOENT, _EINVAL):
            return
        raise CNIError(INTERNAL, f"failed to open netns {req.netns!r}: {exc.strerror or exc}") from None
    with nl:
        link = nl.link_get(LOOPBACK)
        if link is not None and link.up:
            nl.link_set(link.index, up=False)


def cmd_check(req: Request) -> None:
    with _open_netns(req.netns) as nl:
        link = _loopback_link(nl)
    if not link.up:
        raise CNIError(INTERNAL, "loopback interface is down")


PLUGIN = skel.Plugin(name="loopback", add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    skel.run(PLUGIN)
