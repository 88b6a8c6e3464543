"""What ``cnictl show`` asks of the host-device plugin: whether the recorded device is where the record
says (in the container, under ``CNI_IFNAME``, with its recorded addresses) when the namespace is known,
and whether it has come back to the node before its DEL (its namespace died)."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.records import Attachment


def chains(att: Attachment, record: dict[str, Any]) -> list[str]:
    """host-device writes no rules."""
    return []


def inspect(att: Attachment, record: dict[str, Any], config: dict[str, Any], netns: str | None) -> list[str]:
    from netlink import netns as namespaces  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    device = record.get("device") or {}
    name, mac = device.get("name"), device.get("mac")
    netns = netns or str(record.get("netns") or "")
    with Netlink.open() as nl:
        back = next((link for link in nl.links() if mac and link.mac == mac and link.kind == device.get("kind")), None)
    if back is not None:
        return [f"device {name} ({mac}) is back on the node as {back.name}: DEL restores it"]
    if not netns or not namespaces.is_netns(netns):
        return [] if not netns else [f"network namespace {netns} is gone, and device {name} with it"]
    with Netlink.open(netns) as ctr_nl:
        link = ctr_nl.link_get(att.ifname)
        if link is None:
            return [f"device {name} not found as {att.ifname} in {netns}"]
        if mac and link.mac != mac:
            return [f"{att.ifname} in {netns} has MAC {link.mac}, the device {name} has {mac}"]
        present = {a.cidr for a in ctr_nl.addrs(index=link.index)}
        wanted = [str(a) for a in record.get("ips") or []] if record.get("ipam") else \
            [str(a) for a in device.get("addresses") or []]
        return [f"address {cidr} missing on {att.ifname}" for cidr in wanted if cidr not in present]
