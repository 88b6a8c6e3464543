"""What ``cnictl show`` asks of the ptp plugin: how one attachment's record compares with the node.

What CHECK verifies, driven by the ownership record instead of prevResult: the host veth and the host
route to each recorded address, the container interface and its addresses (when the namespace is
known), the ipMasq rules.
"""
from __future__ import annotations

from bridge.drift import chains  # the same ipMasq layouts as bridge's: the same table/chain names
from cni.errors import CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.records import Attachment

__all__ = ["chains", "inspect"]


def inspect(att: Attachment, record: dict[str, Any], config: dict[str, Any], netns: str | None) -> list[str]:
    """What drifted from the record on the live node; empty when everything is in place."""
    from netlink.rtnl import Netlink  # noqa: PLC0415
    from ptp import check  # noqa: PLC0415

    problems: list[str] = []
    ips = [{"address": str(ip)} for ip in record.get("ips") or []]
    host_veth = record.get("hostVeth")
    if isinstance(host_veth, str) and host_veth:
        with Netlink.open() as nl:
            try:
                check.verify_host_veth(nl, [host_veth], ips)
            except CNIError as err:
                problems.append(err.msg)
    if netns:
        problems += _container_problems(netns, att.ifname, ips)
    if record.get("ipMasq") and ips:
        from bridge import ipmasq  # noqa: PLC0415

        backend = str(record.get("ipMasqBackend") or "iptables")
        problems += [f"ipMasq: {text}" for text in ipmasq.check(att.network, att.container_id, ips, backend)]
    return problems


def _container_problems(netns: str, ifname: str, ips: list[dict[str, Any]]) -> list[str]:
    from cni.prevcheck import verify_addresses  # noqa: PLC0415
    from netlink import netns as namespaces  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    if not namespaces.is_netns(netns):
        return [f"network namespace {netns} is gone"]
    with Netlink.open(netns) as ctr_nl:
        link = ctr_nl.link_get(ifname)
        if link is None or link.kind != "veth":
            return [f"container interface {ifname} not found in {netns}"]
        try:
            verify_addresses(ctr_nl, link.index, ifname, ips)
        except CNIError as err:
            return [err.msg]
    return []
