"""The kernel side of host-device: finding the node's link, moving it in and out, putting it back as it was.

Moving a link to another namespace brings it down and drops its addresses (and their routes); the
kernel keeps its MAC, MTU and ifindex-independent settings. So what the link was on the node (name,
MTU, addresses, up or down) is remembered in the ownership record (:func:`snapshot`) and restored by
:func:`give_back`, which finds the link again by its MAC and kind wherever it is: in the container
under ``CNI_IFNAME``, or already on the node (a physical device returns to the initial namespace by
itself when its namespace dies, under whatever name is free there).
"""
from __future__ import annotations

import os
import sys

from cni.errors import INTERNAL, INVALID_CONFIG, CNIError
from netlink import netns
from netlink.constants import IFF_LOOPBACK, RT_SCOPE_UNIVERSE
from netlink.errors import NetlinkError
from netlink.rtnl import Netlink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hostdevice.config import HostDeviceConf
    from netlink.records import Link

SYS_BUS_PCI = "/sys/bus/pci/devices"
_EEXIST = 17


def find(nl: Netlink, conf: HostDeviceConf) -> Link:
    """The node link the config selects; code 7 when the node's namespace has no such link."""
    link: Link | None = None
    if conf.device:
        link = nl.link_get(conf.device)
    elif conf.hwaddr:
        link = next((candidate for candidate in nl.links() if candidate.mac == conf.hwaddr), None)
    elif conf.kernelpath:
        link = _first_link(nl, _names_under_kernelpath(conf.kernelpath))
    else:
        link = _first_link(nl, _names_under_pci(conf.pciBusID))
    if link is None:
        raise CNIError(INVALID_CONFIG, f"failed to find host device: no link with {conf.selector()} "
                                       "in the node's network namespace")
    if link.flags & IFF_LOOPBACK:
        raise CNIError(INVALID_CONFIG, f"failed to find host device: {link.name} is the loopback device")
    return link


def _first_link(nl: Netlink, names: list[str]) -> Link | None:
    for name in names:
        link = nl.link_get(name)
        if link is not None:
            return link
    return None


def _names_under_kernelpath(path: str) -> list[str]:
    """The interfaces a sysfs device directory holds (``<path>/net/*``), or the one it is (``.../net/<name>``)."""
    path = path.rstrip("/")
    parent, name = os.path.split(path)
    if os.path.basename(parent) == "net":
        return [name]
    return _listdir(os.path.join(path, "net"))


def _names_under_pci(address: str) -> list[str]:
    """The interfaces of a PCI function: ``<device>/net/*``, or ``<device>/virtio*/net/*`` for virtio-net."""
    device = os.path.join(SYS_BUS_PCI, address)
    names = _listdir(os.path.join(device, "net"))
    if not names:
        for entry in _listdir(device):
            if entry.startswith("virtio"):
                names += _listdir(os.path.join(device, entry, "net"))
    return names


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def snapshot(nl: Netlink, link: Link) -> dict[str, Any]:
    """What DEL needs to put the link back as it is now."""
    addresses = [a.cidr for a in nl.addrs(index=link.index) if a.scope == RT_SCOPE_UNIVERSE]
    return {"name": link.name, "mac": link.mac, "kind": link.kind, "index": link.index, "mtu": link.mtu,
            "up": link.up, "addresses": addresses}


def move_in(nl: Netlink, link: Link, netns_path: str, ifname: str) -> None:
    """Move ``link`` into the container, renamed ``ifname`` in the same request (the move brings it down)."""
    fd = netns.netns_fd(netns_path)
    try:
        nl.link_set(link.index, netns_fd=fd, name=ifname)
    except NetlinkError as err:
        raise CNIError(INTERNAL, f"failed to move link {link.name} into {netns_path} as {ifname}: {err}") from None
    finally:
        os.close(fd)


def add_addresses(nl: Netlink, index: int, addresses: list[str]) -> None:
    """Add ``addresses`` to the link (present ones are fine); IPv6 ones without DAD: they were in use already."""
    for cidr in addresses:
        try:
            nl.addr_add(index, cidr, nodad=":" in cidr)
        except NetlinkError as err:
            if err.errno != _EEXIST:
                raise CNIError(INTERNAL, f"failed to add address {cidr}: {err}") from None


def give_back(netns_path: str, ifname: str, device: dict[str, Any]) -> bool:
    """Put the recorded device back on the node as it was; False when it is nowhere to be found."""
    with Netlink.open() as nl:
        if netns_path and netns.is_netns(netns_path):
            with Netlink.open(netns_path) as ctr_nl:
                link = _find_again(ctr_nl, device, ifname)
                if link is not None:
                    _move_out(ctr_nl, link, device)
        link = _find_again(nl, device, device.get("name"))
        if link is None:
            return False
        _restore(nl, link, device)
        return True


def _find_again(nl: Netlink, device: dict[str, Any], name: object) -> Link | None:
    """The recorded device in ``nl``'s namespace: by MAC and kind (``name`` first, if it matches), else by name."""
    mac, kind = device.get("mac"), device.get("kind")
    if isinstance(name, str) and name:
        link = nl.link_get(name)
        if link is not None and link.kind == kind and (not mac or link.mac == mac):
            return link
    if not mac:
        return None
    # Another kind with the same MAC is not the device: VLANs on top of it share its address.
    return next((link for link in nl.links() if link.mac == mac and link.kind == kind), None)


def _move_out(ctr_nl: Netlink, link: Link, device: dict[str, Any]) -> None:
    """Move the link from the container to the node, under its original name in the same request."""
    fd = netns.netns_fd(netns.CURRENT_NETNS_PATH)  # the node's: this thread has not left it
    try:
        ctr_nl.link_set(link.index, netns_fd=fd, name=str(device["name"]))
    except NetlinkError as err:
        if err.errno != _EEXIST:
            raise CNIError(INTERNAL, f"failed to move {link.name} back to the node: {err}") from None
        # The original name was taken on the node meanwhile: move it under its container name.
        print(f"host-device: {device['name']} is taken on the node; {link.name} returns under its container name",
              file=sys.stderr)
        try:
            ctr_nl.link_set(link.index, netns_fd=fd)
        except NetlinkError as again:
            raise CNIError(INTERNAL, f"failed to move {link.name} back to the node: {again}") from None
    finally:
        os.close(fd)


def _restore(nl: Netlink, link: Link, device: dict[str, Any]) -> None:
    """Name, MTU, addresses and up/down state as recorded."""
    name = str(device["name"])
    if link.name != name and nl.link_get(name) is None:
        nl.link_set(link.index, up=False)  # a link is renamed only while down
        nl.link_set(link.index, name=name)
    mtu = device.get("mtu")
    if isinstance(mtu, int) and mtu and link.mtu != mtu:
        nl.link_set(link.index, mtu=mtu)
    add_addresses(nl, link.index, [str(a) for a in device.get("addresses") or []])
    if device.get("up"):
        nl.link_set(link.index, up=True)
